"""Running averages of the weights (train.ema / train.swa) against float64 loops over the
weights each step produced: the warmed-up EMA, SWA's mean, batch-norm statistics from a plain
pass, averaged checkpoints, resume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import babysit
from babysit.config import load_config
from babysit.data import load_digits
from babysit.monitor.log import read_metrics
from babysit.splits import Batches
from babysit.tasks import task_for
from babysit.training.averaging import ema_decay
from babysit.training.callbacks import Callback
from babysit.training.checkpoint import checkpoint_name, list_checkpoints, load_checkpoint
from babysit.training.evaluate import evaluate
from babysit.training.run import train

Weights = dict[str, torch.Tensor]
STEPS_PER_EPOCH = 17  # ceil(1079 / 64): digits' train split in batches of 64


class _Record(Callback):
    """The raw model's weights and buffers after every optimizer step, in float64."""

    def __init__(self) -> None:
        self.weights: list[Weights] = []

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        state = trainer.model.state_dict().items()
        self.weights.append(
            {k: v.detach().double() if v.is_floating_point() else v.clone() for k, v in state}
        )


def _ema_oracle(weights: list[Weights], decay: float, *, warm: bool = True) -> Weights:
    """The first step's weights, then avg <- d_t avg + (1 - d_t) w, d_t = min(d, (1+t)/(10+t))."""
    avg = {k: v.clone() for k, v in weights[0].items()}
    for t, w in enumerate(weights[1:], start=1):
        d = min(decay, (1 + t) / (10 + t)) if warm else decay
        for k, v in w.items():
            avg[k] = d * avg[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    return avg


def _last(run_dir: Path, sub: str = "") -> dict[str, Any]:
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints" / sub)[-1].path)


def _assert_close(got: Weights, want: Weights) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k].to(want[k].dtype), want[k], rtol=1e-5, atol=1e-6)


def _far(got: Weights, want: Weights) -> bool:
    return any(not torch.allclose(got[k].double(), want[k].double(), atol=1e-4) for k in want)


def _bn_task(dropout: float = 0.0) -> babysit.Task:
    """Digits through Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear (has BN buffers)."""
    splits = load_digits()

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 10)
        )

    return babysit.Task(
        model_factory=factory,
        train=splits.train,
        val=splits.val,
        loss_fn=nn.functional.cross_entropy,
        num_classes=10,
    )


def _with(config: dict[str, Any], **train_keys: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["train"].update(train_keys)
    return cfg


def test_ema_decay_is_warmed_up_then_capped() -> None:
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay(0.8, 35) == 0.8 and ema_decay(0.8, 10**6) == 0.8


def test_ema_weights_and_buffers_equal_a_float64_loop(tmp_path: Path, tiny_config: dict) -> None:
    seen = _Record()
    decay = 0.8  # reached at t = 35 of 50 updates: epoch 1 is all warm-up, epoch 3 capped
    cfg = _with(tiny_config, ema=decay, keep_last=3)
    train(cfg, task=_bn_task(), out=tmp_path / "r", quiet=True, callbacks=[seen])
    assert len(seen.weights) == 3 * STEPS_PER_EPOCH
    first, _, last = (
        load_checkpoint(c.path)["model"]
        for c in list_checkpoints(tmp_path / "r" / "checkpoints" / "ema")
    )
    want = _ema_oracle(seen.weights, decay)
    assert {"1.running_mean", "1.running_var"} <= want.keys()  # buffers averaged too
    _assert_close(last, want)
    assert torch.equal(last["1.num_batches_tracked"], seen.weights[-1]["1.num_batches_tracked"])
    _assert_close(first, _ema_oracle(seen.weights[:STEPS_PER_EPOCH], decay))
    # the oracle tells the warm-up from a plain decay, the cap from none, the average from w
    assert _far(first, _ema_oracle(seen.weights[:STEPS_PER_EPOCH], decay, warm=False))
    assert _far(last, _ema_oracle(seen.weights, 1.0))
    assert _far(last, seen.weights[-1])


def test_swa_is_the_mean_of_the_weights_after_swa_start(tmp_path: Path, tiny_config: dict) -> None:
    seen = _Record()
    run = train(
        _with(tiny_config, swa=True, swa_start=1.5),
        out=tmp_path / "r",
        quiet=True,
        callbacks=[seen],
    )
    start = round(1.5 * STEPS_PER_EPOCH)  # 26: steps 27..51 are averaged
    after = seen.weights[start:]
    want = {k: torch.stack([w[k] for w in after]).mean(0) for k in after[0]}
    _assert_close(_last(run.dir, "swa")["model"], want)
    epochs = [r for r in run.metrics if r["kind"] == "epoch"]
    assert "swa_val_acc" not in epochs[0]  # no average before swa_start
    assert all({"swa_val_loss", "swa_val_acc"} <= r.keys() for r in epochs[1:])
    assert {c.epoch for c in list_checkpoints(run.dir / "checkpoints" / "swa")} <= {2, 3}


def test_swa_default_start_is_three_quarters_of_the_epochs(
    tmp_path: Path, tiny_config: dict
) -> None:
    run = train(_with(tiny_config, swa=True, epochs=4), out=tmp_path / "r", quiet=True)
    assert _last(run.dir, "swa")["updates"] == 4 * STEPS_PER_EPOCH - 3 * STEPS_PER_EPOCH
    assert [("swa_val_acc" in r) for r in run.metrics if r["kind"] == "epoch"] == [
        False,
        False,
        False,
        True,
    ]


def test_swa_recomputes_batch_norm_statistics_with_a_plain_pass(
    tmp_path: Path, tiny_config: dict
) -> None:
    task = _bn_task()
    run = train(
        _with(tiny_config, swa=True, swa_start=1), task=task, out=tmp_path / "r", quiet=True
    )
    model = _last(run.dir, "swa")["model"]
    x = task.train[0].double()  # (1079, 64); update_bn: batches of train.batch_size, in order
    h = x @ model["0.weight"].double().T + model["0.bias"].double()  # (N, 16), BN's input
    batches = h.split(64)
    mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(model["1.running_mean"].double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model["1.running_var"].double(), var, rtol=1e-5, atol=1e-6)


def test_averaging_leaves_the_raw_training_unchanged(tmp_path: Path, tiny_config: dict) -> None:
    """update_bn's forward (dropout on) draws in a forked RNG: the raw run is bit-identical."""

    def raw(cfg: dict[str, Any], name: str) -> list[dict[str, Any]]:
        run = train(cfg, task=_bn_task(dropout=0.3), out=tmp_path / name, quiet=True)
        return [
            {k: v for k, v in r.items() if not k.startswith("swa_")}
            for r in run.metrics
            if r["kind"] in ("batch", "epoch")
        ]

    assert raw(_with(tiny_config, swa=True, swa_start=1), "swa") == raw(tiny_config, "plain")


def test_swa_lr_is_the_lr_of_every_averaged_step(tmp_path: Path, tiny_config: dict) -> None:
    run = train(
        _with(tiny_config, swa=True, swa_start=1, swa_lr=1e-3), out=tmp_path / "r", quiet=True
    )
    lrs = {r["step"]: r["lr"] for r in run.metrics if r["kind"] == "batch"}
    assert {lrs[s] for s in range(1, STEPS_PER_EPOCH + 1)} == {3e-3}  # optim.lr before
    assert {lrs[s] for s in range(STEPS_PER_EPOCH + 1, 3 * STEPS_PER_EPOCH + 1)} == {1e-3}


def test_averaged_checkpoints_are_named_kept_and_load_into_the_model(
    tmp_path: Path, tiny_config: dict
) -> None:
    cfg = _with(tiny_config, ema=0.9, epochs=5, keep_best=1, keep_last=2)
    run = train(cfg, out=tmp_path / "r", quiet=True)
    epochs = {r["epoch"]: r for r in run.metrics if r["kind"] == "epoch"}
    assert all({"ema_val_loss", "ema_val_acc"} <= r.keys() for r in epochs.values())
    best = max(epochs.values(), key=lambda r: (r["ema_val_acc"], -r["epoch"]))
    assert run.averaged_best == {
        "kind": "ema",
        "epoch": best["epoch"],
        "step": best["step"],
        "val_loss": best["ema_val_loss"],
        "val_acc": best["ema_val_acc"],
    }
    kept = {best["epoch"], 4, 5}
    names = {checkpoint_name(e, "val_acc", epochs[e]["ema_val_acc"]) for e in kept}
    ema_dir = run.dir / "checkpoints" / "ema"
    assert {p.name for p in ema_dir.iterdir()} == names  # no temp files either
    config = load_config(cfg)
    task = task_for(config)
    val = Batches(task.val, 1024, shuffle=False, name="val")
    for c in list_checkpoints(ema_dir):
        state = load_checkpoint(c.path)  # weights_only=True
        model = task.model_factory(config.model_table())
        model.load_state_dict(state["model"])  # strict: the task's own model
        loss, acc = evaluate(model, val, task.loss_fn, "acc")
        assert (loss, acc) == pytest.approx(
            (epochs[c.epoch]["ema_val_loss"], epochs[c.epoch]["ema_val_acc"]), abs=1e-6
        )
    # the raw checkpoints are untouched: named by the raw score
    raw = list_checkpoints(run.dir / "checkpoints")[-1]
    assert raw.path.name == checkpoint_name(5, "val_acc", epochs[5]["val_acc"])
    events = [r["path"] for r in run.metrics if r.get("what") == "checkpoint"]
    assert events[:2] == [
        f"ema/{checkpoint_name(1, 'val_acc', epochs[1]['ema_val_acc'])}",
        checkpoint_name(1, "val_acc", epochs[1]["val_acc"]),
    ]


class _Kill(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("keys", [{"ema": 0.95}, {"swa": True, "swa_start": 1}])
def test_resume_continues_the_average_exactly(
    tmp_path: Path, tiny_config: dict, keys: dict[str, Any]
) -> None:
    cfg = _with(tiny_config, epochs=4, **keys)
    cfg["model"]["dropout"] = 0.2
    kind = "ema" if "ema" in keys else "swa"
    full = train(cfg, out=tmp_path / "full", quiet=True)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=killed, quiet=True, callbacks=[_Kill(2 * STEPS_PER_EPOCH + 5)])
    resumed = train(None, out=killed, resume=True, quiet=True)
    a, b = _last(full.dir, kind), _last(resumed.dir, kind)
    assert a["updates"] == b["updates"] and a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed.averaged_best == full.averaged_best is not None

    def records(d: Path) -> list[dict[str, Any]]:
        return [r for r in read_metrics(d / "metrics.jsonl") if r["kind"] in ("batch", "epoch")]

    assert records(resumed.dir) == records(full.dir)
    names = [c.path.name for c in list_checkpoints(full.dir / "checkpoints" / kind)]
    assert [c.path.name for c in list_checkpoints(killed / "checkpoints" / kind)] == names
