"""Gradient-check results: the notes' relative-error scale, ParamCheck rows, GradcheckReport."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from babysit._io import json_safe

__all__ = ["SCALES", "GradcheckReport", "ParamCheck", "Scale", "coordinate_verdict", "worst_of"]

VERDICTS = ("ok", "inconclusive", "warn", "fail")  # from best to worst


@dataclass(frozen=True)
class Scale:
    """The notes' relative-error scale: > fail "probably wrong", > warn "uncomfortable",
    between ok and warn "usually okay for objectives with kinks", < ok "be happy"."""

    fail: float
    warn: float
    ok: float


# float64 is the notes' scale. float32: "relative errors as high as 1e-2 even with a correct
# gradient" in single precision, so every bound moves up (1e-2 is only a warning there).
SCALES: dict[str, Scale] = {
    "float64": Scale(fail=1e-2, warn=1e-4, ok=1e-7),
    "float32": Scale(fail=1e-1, warn=1e-2, ok=1e-4),
}


def coordinate_verdict(error: float, kink: bool, scale: Scale) -> str:
    """Verdict of one checked coordinate (or direction) from its relative error.

    ``kink``: the evaluation crossed a kink and ``error`` is the subgradient error, for which
    the notes' band ok..warn is acceptable; a smooth coordinate in that band is a warning.
    """
    if error > scale.fail:
        return "fail"
    if error > scale.warn or (error > scale.ok and not kink):
        return "warn"
    return "ok"


def worst_of(verdicts: list[str]) -> str:
    """The worst verdict in ``verdicts`` ("ok" for none)."""
    return max(verdicts, key=VERDICTS.index, default="ok")


@dataclass
class ParamCheck:
    """One row of the report: one tensor (a parameter, or the inputs), one loss part.

    ``max_rel_error``: the largest relative error net of round-off (what the verdict reads).
    ``worst`` holds the raw numbers of the worst coordinate (the notes: look at them):
    ``index`` (a tuple, or "direction" for the random-direction check), ``analytic``,
    ``numeric`` (centered difference), ``h`` (the step used there), ``rel_error``,
    ``raw_rel_error`` (before the round-off allowance), ``kink``, and for a kink the one-sided
    differences ``one_sided = [backward, forward]``.
    """

    name: str
    shape: tuple[int, ...]
    part: str  # "total" | "data" | "reg"
    checked: int  # sampled coordinates + 1 random direction
    max_rel_error: float
    kinks: int
    verdict: str  # "ok" | "warn" | "fail" | "inconclusive"
    worst: dict[str, Any]
    stage: str = "init"  # "init" | "burn_in"
    h: float = 1e-5
    advice: str = ""


@dataclass
class GradcheckReport:
    """Per-tensor verdicts of a gradient check; ``passed`` iff no row is "fail".

    ``thresholds``: the scale and floors used (JSON-able); ``warnings``: what babysit noticed
    and what it did about it (loss scaled, h enlarged, regularisation overwhelming the data).
    """

    params: list[ParamCheck]
    thresholds: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(p.verdict != "fail" for p in self.params)

    @property
    def failures(self) -> list[ParamCheck]:
        return [p for p in self.params if p.verdict == "fail"]

    def row(self, name: str, part: str = "total", stage: str = "init") -> ParamCheck:
        """The row of tensor ``name`` for one loss part and stage (KeyError if absent)."""
        for p in self.params:
            if (p.name, p.part, p.stage) == (name, part, stage):
                return p
        raise KeyError(f"no gradcheck row for {name!r} (part={part!r}, stage={stage!r})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (gradcheck.json, the HTML report); NaN/inf as strings (json_safe)."""
        return json_safe(
            {
                "passed": self.passed,
                "thresholds": self.thresholds,
                "warnings": list(self.warnings),
                "params": [asdict(p) for p in self.params],
            }
        )

    def table(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of the report's table (also rendered by the CLI)."""
        return table(self)

    def footer(self) -> list[str]:
        return footer(self)

    def __str__(self) -> str:
        return render(self)


def _num(x: Any) -> str:
    return f"{x:.6e}" if isinstance(x, float) else str(x)


def table(report: GradcheckReport) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per tensor and part (and stage, when burn-in ran)."""
    stages = len({p.stage for p in report.params}) > 1
    parts = len({p.part for p in report.params}) > 1
    head = ["stage"] * stages + ["part"] * parts
    head += ["parameter", "shape", "checked", "max rel error", "kinks", "verdict", "worst"]
    rows = []
    for p in report.params:
        w = p.worst
        where = "direction" if w.get("index") == "direction" else str(list(w.get("index", ())))
        worst = f"{where} analytic={_num(w.get('analytic'))} numeric={_num(w.get('numeric'))}"
        worst += f" (raw {w.get('raw_rel_error', 0.0):.1e}) h={w.get('h', p.h):.0e}"
        if w.get("one_sided"):
            worst += " kink, one-sided " + "..".join(_num(s) for s in w["one_sided"])
        cells = [p.stage] * stages + [p.part] * parts
        cells += [p.name, "x".join(map(str, p.shape)) or "scalar", str(p.checked)]
        cells += [f"{p.max_rel_error:.2e}", str(p.kinks), p.verdict, worst]
        rows.append(cells)
    return head, rows


def footer(report: GradcheckReport) -> list[str]:
    """The lines under the table: thresholds, warnings, advice, and the overall result."""
    t = report.thresholds
    lines = [
        f"thresholds ({t.get('dtype')}): fail > {t.get('fail'):.0e}, warn > {t.get('warn'):.0e},"
        f" ok < {t.get('ok'):.0e} ({t.get('ok'):.0e}..{t.get('warn'):.0e} only across kinks);"
        f" errors net of round-off; floor {t.get('floor'):.0e} x max|grad| per tensor"
    ]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"advice ({p.name}, {p.part}): {p.advice}" for p in report.params if p.advice]
    failed = sorted({f"{p.name} ({p.part})" for p in report.failures})
    lines.append("passed" if report.passed else "FAILED: " + ", ".join(failed))
    return lines


def render(report: GradcheckReport) -> str:
    """Plain-text table: one row per tensor and part, then thresholds, warnings, advice."""
    head, rows = table(report)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(0, "  ".join(c.ljust(n) for c, n in zip(head, widths, strict=True)).rstrip())
    return "\n".join(lines + footer(report))
