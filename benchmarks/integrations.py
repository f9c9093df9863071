"""What each framework adapter costs a fit: the same fit plain and with babysit, in one run.

    .venv/bin/python benchmarks/integrations.py              # 3 rounds, CPU, one thread
    .venv/bin/python benchmarks/integrations.py --rounds 5

(a) Lightning: the digits MLP (64 -> 100 -> 10, Adam 1e-3, batch 32), 3 epochs with
    validation (102 optimizer steps), ``Trainer(accelerator="cpu", logger=False)``; with
    ``callbacks=[Babysit()]``.
(b) Hugging Face: the tiny BERT of tests/integrations/test_hf.py (hidden 32, 2 layers) on
    synthetic token ids, 100 steps of batch 16, an evaluation every 25 steps; with
    ``callbacks=[BabysitCallback()]``.

Each round runs both modes back to back; the figure is the median over rounds of
babysit's time / the plain time of the same round (pairing cancels the drift of a shared
machine). The clock is this process's CPU time (``time.process_time``, one torch thread,
no loader workers), which other users of the machine do not inflate. The babysit time
includes everything the callback does: the monitor, findings.json, and report.html with
its plots, whose share is shown apart ("report") because a short fit's overhead is mostly
that fixed cost; "ratio without report" is (babysit - report) / plain.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fits: tests.integrations


def _lightning(out: Path, babysit: bool) -> float | None:
    import lightning as L
    from tests.integrations.test_lightning import DigitsNet, _loaders

    from babysit.integrations.lightning import Babysit

    L.seed_everything(0, verbose=False)
    train, val = _loaders()
    callback = Babysit(out / "babysit") if babysit else None
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback] if callback else [],
    )
    trainer.fit(DigitsNet(1e-3), train, val)
    return callback.session.report_seconds if callback else None


def _hf(out: Path, babysit: bool) -> float | None:
    from tests.integrations.test_hf import fit

    from babysit.integrations.hf import BabysitCallback

    callback = BabysitCallback() if babysit else None
    fit(out, 1e-3, callback, logging_strategy="no")
    return callback.session.report_seconds if callback else None


FITS: dict[str, Callable[[Path, bool], float | None]] = {
    "Lightning digits MLP, 3 epochs": _lightning,
    "HF tiny BERT, 100 steps": _hf,
}


def _timed(fit: Callable[[Path, bool], float | None], babysit: bool) -> tuple[float, float]:
    """(CPU seconds of the fit, of which writing report.html; 0 when plain)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        report = fit(Path(tmp), babysit)
        return time.process_time() - start, report or 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import lightning  # noqa: F401  (its loggers are set up on import)

    for name in ("lightning.pytorch", "lightning.fabric", "transformers", "babysit"):
        logging.getLogger(name).setLevel(logging.ERROR)
    head = f"{'fit':32} {'plain s':>8} {'babysit s':>10} {'ratio':>6} {'(q1..q3)':>12}"
    print(f"{head} {'report s':>9} {'ratio without report':>21}")
    for name, fit in FITS.items():
        _timed(fit, True)  # warm-up: imports, first-call costs
        plain, watched, ratios, reports, net = [], [], [], [], []
        for _ in range(args.rounds):
            p, _ = _timed(fit, False)
            w, r = _timed(fit, True)
            plain.append(p)
            watched.append(w)
            ratios.append(w / p)
            reports.append(r)
            net.append((w - r) / p)
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(
            f"{name:32} {statistics.median(plain):8.2f} {statistics.median(watched):10.2f} "
            f"{statistics.median(ratios):5.2f}x {q[0]:5.2f}..{q[2]:<5.2f} "
            f"{statistics.median(reports):9.2f} {statistics.median(net):20.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
