"""Gradient-check results: the notes' relative-error scale, ParamCheck rows, GradcheckReport."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from babysit._io import json_safe

__all__ = ["SCALES", "VERDICTS", "GradcheckReport", "ParamCheck", "Scale", "worst_of"]

VERDICTS = ("ok", "inconclusive", "warn", "fail")  # from best to worst


@dataclass(frozen=True)
class Scale:
    """Bounds on relative errors *net of the measured round-off and truncation* (what floating
    point can explain is subtracted first, see ``leaf.py``): above ``fail`` the gradient is
    wrong; below ``ok`` it is right; between, a small but real discrepancy ("warn"), or the
    notes' "okay for objectives with kinks" when a kink was crossed.

    The notes' raw scale (> 1e-2 probably wrong, 1e-2..1e-4 uncomfortable, 1e-4..1e-7 okay
    with kinks, < 1e-7 happy) allows for the numerical error a naive check cannot separate
    from a bug; once it is measured and subtracted, what is left above 1e-4 is a bug.
    """

    fail: float
    ok: float


# float32: "relative errors as high as 1e-2 even with a correct gradient" (the notes).
SCALES: dict[str, Scale] = {
    "float64": Scale(fail=1e-4, ok=1e-7),
    "float32": Scale(fail=1e-2, ok=1e-4),
}


def worst_of(verdicts: list[str]) -> str:
    """The worst verdict in ``verdicts`` ("ok" for none)."""
    return max(verdicts, key=VERDICTS.index, default="ok")


@dataclass
class ParamCheck:
    """One row of the report: one tensor (a parameter, or the inputs), one loss part; or the
    whole batch (``name`` "whole batch": one direction over every tensor, every sample).

    ``checked``: probes judged (random directions, then coordinates where a direction did not
    settle the tensor). ``max_rel_error``: the largest relative error net of the measured
    round-off and truncation (what the verdict reads; inconclusive probes left out unless all
    are). ``worst`` holds the raw numbers of the worst probe (the notes: look at them):
    ``index`` (a tuple, "direction" or "small entries"), ``analytic``, ``numeric`` (centered
    difference), ``h`` (the step used there), ``rel_error``, ``raw_rel_error`` (plain
    |a - n| / max(|a|, |n|)), ``kink``, ``verdict``, ``note``, and at a kink at x the one-sided
    differences ``one_sided = [backward, forward]``. ``verdict``: "ok", "warn", "fail", or
    "inconclusive": most probes sit on a kink exactly at the checked point (ties), where the
    analytic value is not between the one-sided slopes, so neither right nor wrong can be said.
    """

    name: str
    shape: tuple[int, ...]
    part: str  # "total" | "data" | "reg"
    checked: int  # probes: directions, and coordinates where needed
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
        index = w.get("index", ())
        where = index if isinstance(index, str) else str(list(index))
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
    """The lines under the table: thresholds, samples, warnings, advice, the overall result."""
    t = report.thresholds
    lines = [
        f"thresholds ({t.get('dtype')}): relative errors net of the measured round-off and "
        f"truncation: fail > {t.get('fail'):.0e}, ok < {t.get('ok'):.0e} (between: warn, or ok "
        "across a kink); inconclusive: a kink exactly at the point, not bracketed"
    ]
    if "datapoints" in t:
        lines.append(
            f"samples: {t['datapoints']} of {t.get('batch', t['datapoints'])} checked tensor by "
            "tensor" + (", all along one direction (whole batch)" if t.get("whole_batch") else "")
        )
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
