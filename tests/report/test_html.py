"""write_report: one self-contained page per run dir, every section graceful when data is absent."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from babysit.errors import BabysitError
from babysit.report._page import PAGES, Html, Image, ReportError, render_page, section
from babysit.report._run_data import load_run
from babysit.report.html import write_report
from babysit.report.plots import to_png

RUN_FIGURES = {
    "loss",
    "accuracy",
    "schedule",
    "update_ratio",
    "act_stats",
    "grad_norm",
    "act_hist",
    "grad_hist",
    "filters",
}


class _Page(HTMLParser):
    """Tags, image sources by figure id, section ids in order, and the text of each section."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.images: dict[str, str] = {}
        self.sections: list[str] = []
        self.text: dict[str, list[str]] = {}
        self._figure = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.sections.append(str(a["id"]))
        if tag == "figure":
            self._figure = str(a["id"]).removeprefix("fig-")
        if tag == "img":
            self.images[self._figure] = str(a["src"])

    def handle_data(self, data: str) -> None:
        if self.sections:
            self.text.setdefault(self.sections[-1], []).append(data)

    def section_text(self, name: str) -> str:
        return " ".join(self.text.get(name, []))


@pytest.fixture(scope="module")
def reported(full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the full run with its report written once: (run dir, report text)."""
    run = Path(shutil.copytree(full_run, tmp_path_factory.mktemp("reported") / "run"))
    report = write_report(run)
    assert report == run / "report.html"
    return run, report.read_text(encoding="utf-8")


def test_full_run_page_embeds_every_figure_and_saves_it(reported: tuple[Path, str]) -> None:
    run, text = reported
    page = _Page(text)
    assert set(page.images) == RUN_FIGURES
    for name, src in page.images.items():
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == (run / "plots" / f"{name}.png").read_bytes()
    assert sorted(p.stem for p in (run / "plots").glob("*.png")) == sorted(RUN_FIGURES)


def test_page_is_self_contained(reported: tuple[Path, str]) -> None:
    text = reported[1]
    page = _Page(text)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text
    urls = [a.get("src") or a.get("href") or "" for _, a in page.tags]
    assert all(u.startswith(("data:", "#")) for u in urls if u)
    csp = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in str(csp[0]["content"])


def test_findings_come_first_in_the_monitors_order(
    reported: tuple[Path, str], findings: list[dict[str, Any]]
) -> None:
    text = reported[1]
    page = _Page(text)
    assert page.sections[0] == "findings"
    # findings.json is ranked by the monitor (by cause: the first is the one to act on);
    # the page keeps that order (the fixture's is info, warning, error: not by severity)
    expected = [f["code"] for f in findings]
    found = [c for c in expected if c in text]
    assert found == expected
    positions = [text.index(f"<code>{c}</code>") for c in expected]
    assert positions == sorted(positions) and positions[-1] < text.index("<img")
    for f in findings:
        assert f["advice"] in page.section_text("findings")


def test_config_gradcheck_and_sanity_tables(
    reported: tuple[Path, str], gradcheck_report: dict[str, Any]
) -> None:
    page = _Page(reported[1])
    summary = page.section_text("summary")
    assert "optim.lr" in summary and "0.05" in summary and "model.hidden" in summary
    gradcheck = page.section_text("gradcheck")
    for p in gradcheck_report["params"]:
        assert p["name"] in gradcheck and f"{p['max_rel_error']:.4g}" in gradcheck
    rows = [a.get("class") for t, a in page.tags if t == "tr" and a.get("class")]
    assert "fail" in rows and "warn" in rows
    assert "chance_loss" in page.section_text("sanity") and "2.302" in page.section_text("sanity")


def test_summary_reports_the_best_val_accuracy(reported: tuple[Path, str]) -> None:
    run, text = reported
    lines = (run / "metrics.jsonl").read_text().splitlines()
    val = [json.loads(ln)["val_acc"] for ln in lines if '"kind":"epoch"' in ln]
    summary = _Page(text).section_text("summary")
    assert f"{val[-1]:.4g} / {max(val):.4g}" in summary


def test_steps_are_mapped_to_epochs(full_run: Path) -> None:
    run = load_run(full_run)
    assert run.unit == "epoch"
    loss = run.batch["loss"]
    # the fixture logs 28 steps per epoch, epoch = step / 28 (no downsampling at this size)
    np.testing.assert_allclose(loss.x, np.arange(1, loss.total + 1) / 28)
    val = run.epochs["val_acc"]
    np.testing.assert_allclose(val.x, np.arange(1, 7))  # epoch ends, from their steps


def test_user_loop_with_only_batch_and_epoch_records(
    tmp_path: Path, make_run: Callable[..., Path]
) -> None:
    run = make_run(tmp_path / "loop", epochs=2, extras=False)
    page = _Page(write_report(run).read_text(encoding="utf-8"))
    assert set(page.images) == {"loss", "accuracy", "schedule"}
    assert page.sections[0] == "findings" and "No findings.json" in page.section_text("findings")
    names = ("update_ratio", "activations", "act_hist", "filters", "gradcheck", "sanity")
    for name in (*names, "averaged"):
        assert page.section_text(name).strip(), f"section {name} says why it is empty"
    assert "No config.toml" in page.section_text("summary")


def test_averaged_weights_are_drawn_beside_the_raw_ones_and_compared(tmp_path: Path) -> None:
    run = tmp_path / "ema"
    run.mkdir()
    raw, ema = [0.80, 0.90, 0.85], [0.70, 0.88, 0.93]  # raw peaks at epoch 2, ema at 3
    lines = [
        json.dumps(
            {
                "kind": "epoch",
                "epoch": e,
                "step": 10 * e,
                "val_loss": 1.0 / e,
                "val_acc": r,
                "swa_val_loss": 0.9 / e,
                "swa_val_acc": a,
            }
        )
        for e, (r, a) in enumerate(zip(raw, ema, strict=True), start=1)
    ]
    steps = [
        json.dumps({"kind": "batch", "step": s, "epoch": s / 10, "loss": 1.0}) for s in range(1, 31)
    ]
    (run / "metrics.jsonl").write_text("\n".join(steps + lines) + "\n")
    page = _Page(write_report(run).read_text(encoding="utf-8"))
    assert "averaged" in page.images and (run / "plots" / "averaged.png").is_file()
    text = page.section_text("averaged")
    assert "Best val_acc: swa 0.93 (epoch 3) vs raw 0.9 (epoch 2), +0.03" in text
    assert "0.3 (epoch 3)" in text and "+0.03" in text  # val_loss 0.9 / 3 vs 1 / 3


def test_loss_only_loop_is_plotted_against_the_iteration(tmp_path: Path) -> None:
    run = tmp_path / "own"
    run.mkdir()
    losses = 2.3 * np.exp(-np.arange(300) / 80)
    lines = [json.dumps({"kind": "batch", "step": i, "loss": v}) for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    data = load_run(run)
    assert data.unit == "iteration"
    np.testing.assert_array_equal(data.batch["loss"].mean, losses)
    page = _Page(write_report(run).read_text(encoding="utf-8"))
    assert set(page.images) == {"loss"}


def test_diverged_run_renders_with_nonfinite_losses(tmp_path: Path) -> None:
    run = tmp_path / "diverged"
    run.mkdir()
    records = [
        {"kind": "batch", "step": i, "epoch": i / 10, "loss": 2.0 / (i + 1)} for i in range(40)
    ]
    records += [
        {"kind": "batch", "step": 40 + i, "epoch": 4 + i / 10, "loss": "inf"} for i in range(5)
    ]
    records.append({"kind": "batch", "step": 45, "epoch": 4.5, "loss": "nan"})
    records.append({"kind": "event", "step": 44, "what": "diverged"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load_run(run)
    assert data.batch["loss"].nonfinite == 6 and data.events["diverged"] == [pytest.approx(4.4)]
    summary = _Page(write_report(run).read_text(encoding="utf-8")).section_text("summary")
    assert "non-finite losses 6" in " ".join(summary.split())


def test_filter_paths_outside_the_run_dir_are_not_embedded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(to_png(_tiny_figure()))
    records = [
        {"kind": "batch", "step": 1, "epoch": 0.1, "loss": 2.3},
        {"kind": "probe", "step": 1, "name": "filters", "values": {"path": "../secret.png"}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = _Page(write_report(run).read_text(encoding="utf-8"))
    assert "filters" not in page.images
    assert "outside the run dir" in page.section_text("filters")


def _tiny_figure() -> object:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().plot([0, 1])
    return fig


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: _replace_by_file(d), "not a directory"),
        (lambda d: None, "no metrics.jsonl"),
    ],
)
def test_bad_run_dir_raises_one_line_and_writes_nothing(
    tmp_path: Path, setup: Callable[[Path], None], fragment: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if fragment != "no metrics.jsonl":
        (run / "metrics.jsonl").write_text('{"kind": "batch", "step": 1, "loss": 1.0}\n')
    setup(run)
    with pytest.raises(ReportError) as info:
        write_report(run)
    assert isinstance(info.value, BabysitError)
    message = str(info.value)
    assert fragment in message and "\n" not in message and str(run) in message
    assert not (run / "report.html").exists() and not (run / "plots").exists()


def _replace_by_file(run: Path) -> None:
    """The user passed a file (here: a metrics.jsonl itself) where a run dir belongs."""
    (run / "metrics.jsonl").unlink()
    run.rmdir()
    run.write_text('{"kind": "batch", "step": 1, "loss": 1.0}\n')


def test_report_is_replaced_atomically(run_copy: Callable[[], Path]) -> None:
    run = run_copy()
    (run / "report.html").write_text("stale")
    write_report(run)
    assert (run / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not [p.name for p in run.rglob("*.tmp")]


def test_long_stream_is_downsampled_and_keeps_its_extremes(tmp_path: Path) -> None:
    run = tmp_path / "long"
    run.mkdir()
    n, spike = 60_000, 41_234
    with open(run / "metrics.jsonl", "w") as f:
        for i in range(n):
            loss = 50.0 if i == spike else 1.0 + math.sin(i / 500)
            f.write(f'{{"kind":"batch","step":{i},"epoch":{i / 1000},"loss":{loss},"lr":0.1}}\n')
    loss = load_run(run).batch["loss"]
    assert len(loss) <= 1025 and loss.width > 1 and loss.total == n
    assert np.nanmax(loss.hi) == 50.0 and np.nanmin(loss.lo) == pytest.approx(0.0, abs=1e-4)


@pytest.fixture
def study_page() -> Iterator[str]:
    """A throwaway page name, taken out of PAGES again after the test."""
    yield "test-study"
    PAGES.remove("test-study")


def test_a_new_page_is_new_sections_on_the_same_machinery(tmp_path: Path, study_page: str) -> None:
    @section(study_page, "best", title="Best trial")
    def best(study: dict[str, float]) -> list[Html | Image]:
        return [Html(f"<p>best lr {study['lr']}</p>"), Image("trials", to_png(_tiny_figure()), "x")]

    with pytest.raises(ValueError, match="'best' is registered twice"):
        section(study_page, "best", title="again")(best)
    out = render_page(study_page, {"lr": 3e-4}, tmp_path, title="study <1>")
    page = _Page(out.read_text(encoding="utf-8"))
    assert page.sections == ["best"] and set(page.images) == {"trials"}
    assert "study &lt;1&gt;" in out.read_text() and (tmp_path / "plots" / "trials.png").is_file()


def test_report_of_a_loop_watched_by_the_real_monitor(tmp_path: Path) -> None:
    """The agreed record formats, as babysit.watch really writes them, give every probe figure."""
    try:
        from babysit.monitor.watch import watch
    except ImportError as exc:
        pytest.skip(f"babysit.monitor.watch is not available yet ({exc})")
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = tmp_path / "watched"
    with watch(model, opt, log_dir=run, every=10, steps_per_epoch=28, image_shape=(8, 8)) as mon:
        for _ in range(3):
            for idx in torch.randperm(1400).split(50):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                mon.step(loss)
            with torch.no_grad():
                val_acc = (model(x[1400:]).argmax(1) == y[1400:]).double().mean().item()
            mon.log_epoch(val_acc=val_acc)
    data = load_run(run)
    assert data.unit == "epoch" and data.batch["loss"].total == 3 * 28
    page = _Page(write_report(run).read_text(encoding="utf-8"))
    assert {"update_ratio", "act_stats", "grad_norm", "act_hist", "grad_hist", "filters"} <= set(
        page.images
    )


def test_the_report_reads_the_probe_registry_without_loading_torch() -> None:
    """babysit report answers a bad run dir before torch loads (as the CLI does for configs)."""
    code = (
        "import sys; import babysit.report.html; from babysit.monitor.probes import PROBES;"
        " assert PROBES and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
