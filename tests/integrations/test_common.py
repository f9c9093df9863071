"""The adapters' shared parts, without any framework: imports, options, metric names, steps."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from babysit.errors import BabysitError, ConfigError
from babysit.integrations import ChecksFailed, MissingExtraError
from babysit.integrations._common import WATCH_OPTIONS, Session, epoch_metrics

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
    )


def test_import_babysit_imports_no_framework() -> None:
    result = _python(
        """
        import sys
        import babysit, babysit.integrations
        babysit.watch, babysit.write_report, babysit.sanity_check, babysit.gradcheck
        print(sorted(m for m in ("lightning", "pytorch_lightning", "transformers", "accelerate")
                     if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("adapter", "framework", "extra"),
    [("lightning", "lightning", "lightning"), ("hf", "transformers", "hf")],
)
def test_an_adapter_without_its_framework_names_the_extra(
    adapter: str, framework: str, extra: str
) -> None:
    """The framework made unimportable (sys.modules[name] = None) as if not installed."""
    result = _python(
        f"""
        import sys
        sys.modules["{framework}"] = None
        from babysit.integrations import MissingExtraError
        try:
            import babysit.integrations.{adapter}
        except MissingExtraError as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert "\n" not in line and line.endswith(f"pip install 'babysit[{extra}]'"), line


def test_errors_are_babysit_errors() -> None:
    assert issubclass(MissingExtraError, BabysitError) and issubclass(
        MissingExtraError, ImportError
    )
    assert issubclass(ChecksFailed, BabysitError)


def test_unknown_option_is_refused_before_the_fit() -> None:
    with pytest.raises(ConfigError, match="evry"):
        Session(None, sanity=False, gradcheck=False, options={"evry": 5}, where="Babysit")
    assert {"every", "window", "chance_loss", "image_shape", "tensorboard"} <= WATCH_OPTIONS
    assert not {"model", "optimizer", "log_dir", "steps_per_epoch"} & WATCH_OPTIONS


def test_epoch_metrics_take_the_names_the_rules_read() -> None:
    got = epoch_metrics(
        {
            "eval_loss": 0.5,
            "eval_accuracy": torch.tensor(0.75),
            "val/acc": 0.7,
            "train_loss": torch.tensor(0.4),
            "eval_runtime": 1.0,
            "eval_samples_per_second": 3.0,
            "epoch": 2.0,
            "step": 7,
            "vector": torch.ones(3),
            "flag": True,
            "name": "x",
        }
    )
    assert got == {"val_loss": 0.5, "val_acc": 0.7, "train_loss": pytest.approx(0.4)}


def test_a_step_records_the_mean_of_its_micro_batches(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    session = Session(tmp_path, sanity=False, gradcheck=False, options={}, where="test")
    session.attach(model, opt, tmp_path / "unused", total_steps=100.0)
    assert session.dir == tmp_path and session.monitor is not None
    assert session.monitor.every == 10  # 100 steps: 10 capture windows
    session.step()  # no micro-batch yet: nothing recorded
    for loss in (1.0, 2.0, 6.0):
        session.add_loss(torch.tensor(loss))
    session.step()
    session.add_loss(5.0)
    session.step()
    session.add_loss(7.0)  # after the last optimizer step: never stepped, not recorded
    session.finish()
    batches = [b for b in session.monitor.metrics.curve.values]
    assert batches == [3.0, 5.0]
    assert session.report == tmp_path / "report.html" and session.report.is_file()
    assert session.summary()[0].startswith("babysit: ")
    session.add_loss(1.0)
    session.step()  # after finish: ignored, no error


def test_a_session_attached_again_starts_afresh(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    session = Session(tmp_path, sanity=True, gradcheck=False, options={"every": 5}, where="t")
    for run in range(2):
        session.attach(model, opt, tmp_path, start_step=10 * run)
        assert session.wants_checks and not session.finished
        assert session.monitor is not None and session.monitor.every == 5  # given: kept
        session.add_loss(float(run + 1))
        session.step()
        session.finish()
        assert session.monitor.metrics.curve.values == [float(run + 1)]
    assert '"step":11' in (tmp_path / "metrics.jsonl").read_text()  # resumed numbering
