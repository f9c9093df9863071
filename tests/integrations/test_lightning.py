"""babysit.integrations.lightning.Babysit in real Lightning fits (no mocks) on digits."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.data import load_digits

from .conftest import check_run_dir, codes, records

L = pytest.importorskip(
    "lightning", reason="lightning is not installed: pip install 'babysit[lightning]'"
)
from babysit.integrations import ChecksFailed  # noqa: E402
from babysit.integrations.lightning import Babysit  # noqa: E402

pytestmark = pytest.mark.slow
BATCH = 32


class DigitsNet(L.LightningModule):  # type: ignore[misc,name-defined]
    """An MLP on the 8x8 digits; ``softmax_twice`` plants the classic double-softmax bug."""

    def __init__(self, lr: float, softmax_twice: bool = False) -> None:
        super().__init__()
        self.lr, self.softmax_twice = lr, softmax_twice
        torch.manual_seed(0)  # the same initial weights in every fit
        self.net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        loss = F.cross_entropy(out.softmax(1) if self.softmax_twice else out, y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        out = self(x)
        self.log("val_loss", F.cross_entropy(out, y))
        self.log("val_acc", (out.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _loaders() -> tuple[Any, Any]:
    d = load_digits()
    train = torch.utils.data.DataLoader(list(zip(*d.train, strict=True)), BATCH, shuffle=True)
    val = torch.utils.data.DataLoader(list(zip(*d.val, strict=True)), 256)
    return train, val


def fit(module: Any, callback: Babysit | None, **trainer: Any) -> Any:
    """The usual Lightning code, with the callback added."""
    L.seed_everything(0, verbose=False)
    train, val = _loaders()
    options = {"max_epochs": 3, "accelerator": "cpu", "logger": False}
    options |= {"enable_checkpointing": False, "enable_progress_bar": False}
    options |= {"enable_model_summary": False, **trainer}
    t = L.Trainer(callbacks=[callback] if callback else [], **options)
    t.fit(module, train, val)
    return t


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Babysit, Any]:
    cb = Babysit(tmp_path_factory.mktemp("pl") / "healthy", sanity=True, gradcheck=True)
    return cb, fit(DigitsNet(1e-3), cb)


def _steps(trainer: Any) -> int:
    return 3 * math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)


def test_healthy_fit_writes_metrics_findings_report_and_has_no_warnings(
    healthy: tuple[Babysit, Any],
) -> None:
    cb, trainer = healthy
    assert cb.log_dir is not None
    findings = check_run_dir(cb.log_dir, batches=_steps(trainer))
    assert codes(findings) == []
    assert [f.code for f in cb.findings] == [f["code"] for f in findings]
    epochs = records(cb.log_dir, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all({"val_acc", "val_loss", "train_loss"} <= set(e) for e in epochs)
    assert epochs[-1]["val_acc"] > 0.8  # it learned: the monitor watched a real fit
    # the checks ran on the first batch and passed
    assert json.loads((cb.log_dir / "sanity.json").read_text())["passed"]
    assert json.loads((cb.log_dir / "gradcheck.json").read_text())["passed"]


def test_a_learning_rate_100x_too_high_is_named(tmp_path: Path) -> None:
    cb = Babysit(tmp_path / "high")
    trainer = fit(DigitsNet(1e-1), cb)
    assert "lr_too_high" in codes(check_run_dir(tmp_path / "high", batches=_steps(trainer)))


def test_accumulation_records_one_step_per_optimizer_step(tmp_path: Path) -> None:
    """3 micro-batches per step: the records follow optimizer steps, each with the mean loss
    of its micro-batches (Lightning hands the callback the loss divided by 3)."""
    losses: list[float] = []

    class Recording(DigitsNet):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            losses.append(float(loss.detach()))
            return loss

    cb = Babysit(tmp_path / "acc")
    trainer = fit(Recording(1e-3), cb, accumulate_grad_batches=3, max_epochs=1)
    batches = records(tmp_path / "acc", "batch")
    assert len(batches) == trainer.global_step == math.ceil(len(losses) / 3)
    means = [sum(losses[i : i + 3]) / len(losses[i : i + 3]) for i in range(0, len(losses), 3)]
    assert [b["loss"] for b in batches] == pytest.approx(means, rel=1e-5)


def test_bf16_mixed_precision(tmp_path: Path) -> None:
    cb = Babysit(tmp_path / "bf16")
    trainer = fit(DigitsNet(1e-3), cb, precision="bf16-mixed", max_epochs=1)
    assert trainer.global_step > 0
    assert len(records(tmp_path / "bf16", "batch")) == trainer.global_step
    probes = {r["name"] for r in records(tmp_path / "bf16", "probe")}
    assert "update_ratio" in probes  # the step hooks read the (float32) updates


def test_failed_sanity_check_stops_the_fit_with_the_report(tmp_path: Path) -> None:
    cb = Babysit(tmp_path / "bug", sanity=True)
    module = DigitsNet(1e-3, softmax_twice=True)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ChecksFailed, match="overfit_small") as err:
        fit(module, cb)
    assert "before its first step" in str(err.value)
    sanity = json.loads((tmp_path / "bug" / "sanity.json").read_text())
    assert not sanity["passed"]
    assert (tmp_path / "bug" / "report.html").is_file()
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_default_dir_without_a_logger_and_with_one(tmp_path: Path) -> None:
    cb = Babysit()
    fit(DigitsNet(1e-3), cb, max_epochs=1, default_root_dir=tmp_path)
    assert cb.log_dir == tmp_path / "babysit"
    assert (tmp_path / "babysit" / "report.html").is_file()
    from lightning.pytorch.loggers import CSVLogger

    cb = Babysit()
    trainer = fit(DigitsNet(1e-3), cb, max_epochs=1, logger=CSVLogger(tmp_path / "csv"))
    assert cb.log_dir == Path(trainer.log_dir)
    assert (cb.log_dir / "report.html").is_file() and (cb.log_dir / "metrics.csv").is_file()


def test_chromium_opens_the_report(healthy: tuple[Babysit, Any], browser: Any) -> None:
    cb, _ = healthy
    assert cb.log_dir is not None
    _check_report_in_browser(browser, cb.log_dir / "report.html", "report-lightning.png")


def _import_browser_check() -> tuple[Callable[..., Any], Any]:
    from ..report.test_report_browser import _check_report_in_browser, browser

    return _check_report_in_browser, browser


_check_report_in_browser, browser = _import_browser_check()


DDP_FIT = """
import sys
sys.path.insert(0, {root!r})
import lightning as L
from babysit.integrations.lightning import Babysit
from tests.integrations.test_lightning import DigitsNet, _loaders

if __name__ == "__main__":
    L.seed_everything(0, verbose=False)
    train, val = _loaders()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Babysit({run!r}, sanity=True)],
    )
    trainer.fit(DigitsNet(1e-3, softmax_twice={bug!r}), train, val)
"""


@pytest.mark.parametrize("bug", [False, True], ids=["healthy", "planted-bug"])
def test_ddp_two_processes_rank_zero_logs_and_every_rank_stops(tmp_path: Path, bug: bool) -> None:
    """Two CPU processes (gloo): only rank 0 writes; the checks run on rank 0 and a failure
    stops both ranks (no hang at the next collective)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "fit.py"
    script.write_text(DDP_FIT.format(root=root, run=str(tmp_path / "run"), bug=bug))
    src = str(Path(root) / "src")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    run = tmp_path / "run"
    assert json.loads((run / "sanity.json").read_text())["passed"] is (not bug)
    if bug:
        assert result.returncode != 0
        assert "ChecksFailed" in result.stderr and "before its first step" in result.stderr
        assert records(run, "batch") == []
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        # 1078 examples over 2 ranks, batch 32: 17 steps per epoch on each rank, rank 0 logs
        assert len(records(run, "batch")) == 2 * 17
        assert [e["what"] for e in records(run, "event")].count("watch") == 1
        assert (run / "report.html").is_file()


def test_the_checks_leave_the_fit_as_it_was(healthy: tuple[Babysit, Any], tmp_path: Path) -> None:
    """The same fit without the checks takes the same steps: the checks ran on copies, with
    the random state put back (the later epochs' shuffling draws from it)."""
    cb, trainer = healthy
    assert cb.log_dir is not None
    fit(DigitsNet(1e-3), Babysit(tmp_path / "plain"))
    with_checks = [b["loss"] for b in records(cb.log_dir, "batch")]
    without = [b["loss"] for b in records(tmp_path / "plain", "batch")]
    assert len(without) == _steps(trainer) and with_checks == without
