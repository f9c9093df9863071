"""Population-based training: the exploit/explore step alone, then inside a population."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import ConfigError
from babysit.models import build_model
from babysit.monitor.log import read_metrics
from babysit.optim.rules import init_state
from babysit.report.html import write_report
from babysit.tasks import Task
from babysit.training._population_model import Stack
from babysit.training._population_pbt import PBT, Copy, choose, copy_rows, explore, plan
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.population import train_population
from babysit.tuning.dimensions import Limits, Range

SCORES = [0.5, 0.9, math.nan, 0.7, 0.1, 0.8, 0.3, 0.6]  # row 2 diverged (NaN score)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- which rows copy which ------------------------------------------------------------
def test_the_worst_quantile_and_the_diverged_copy_the_best() -> None:
    # 7 live rows, q = floor(0.25 * 7) = 1: row 4 (0.1) is the worst, row 1 (0.9) the best
    assert choose(SCORES, direction="max", quantile=0.25, rng=_rng()) == [(2, 1), (4, 1)]
    # "min": lower is better, so row 1 (0.9) is the worst and row 4 the best
    assert choose(SCORES, direction="min", quantile=0.25, rng=_rng()) == [(1, 4), (2, 4)]


def test_a_larger_quantile_draws_each_source_from_the_best_rows() -> None:
    # q = min(7 // 2, floor(0.5 * 7)) = 3: best rows 1, 5, 3; worst rows 0, 6, 4
    sources: set[int] = set()
    for seed in range(20):
        pairs = choose(SCORES, direction="max", quantile=0.5, rng=_rng(seed))
        assert [dst for dst, _ in pairs] == [0, 2, 4, 6]
        assert pairs == choose(SCORES, direction="max", quantile=0.5, rng=_rng(seed))
        sources |= {src for _, src in pairs}
    assert sources == {1, 3, 5}  # uniform over the best quantile: each is drawn


@pytest.mark.parametrize(
    ("scores", "pairs"),
    [
        ([None, None], []),  # nothing live: nothing to copy
        ([0.4, None, math.inf], [(1, 0), (2, 0)]),  # one live row: only the diverged copy
        ([0.4, 0.6], [(0, 1)]),  # two live rows: q = 1
        ([0.4], []),
    ],
)
def test_small_populations(scores: list[float | None], pairs: list[tuple[int, int]]) -> None:
    assert choose(scores, direction="max", quantile=0.25, rng=_rng()) == pairs


# --- the new values --------------------------------------------------------------------
SPACE = {
    "optim.lr": Range("loguniform", 1e-3, 1e-1, log=True),
    "optim.mu": Range("uniform", 0.5, 0.99),
    "model.dropout": Range("uniform", 0.1, 0.6),
}
VALUES = {"optim.lr": 0.1, "optim.mu": 0.9, "model.dropout": 0.5}


def test_perturbed_values_stay_inside_each_keys_limits() -> None:
    up, drawn = explore(VALUES, SPACE, perturb=(2.0,), resample=0.0, rng=_rng())
    # lr has no upper limit; mu and dropout must stay < 1: halfway from the old value to 1
    assert up == {"optim.lr": 0.2, "optim.mu": 0.95, "model.dropout": 0.75} and drawn == ()
    down, _ = explore(VALUES, SPACE, perturb=(0.5,), resample=0.0, rng=_rng())
    assert down == pytest.approx({"optim.lr": 0.05, "optim.mu": 0.45, "model.dropout": 0.25})


def test_each_value_is_perturbed_by_a_factor_or_resampled_from_its_range() -> None:
    factors: set[float] = set()
    for seed in range(30):
        new, drawn = explore(VALUES, SPACE, perturb=(0.8, 1.2), resample=0.25, rng=_rng(seed))
        assert (new, drawn) == explore(
            VALUES, SPACE, perturb=(0.8, 1.2), resample=0.25, rng=_rng(seed)
        )
        for key, value in new.items():
            if key in drawn:
                assert SPACE[key].low <= value <= SPACE[key].high
            elif value == (VALUES[key] + 1) / 2:  # mu 0.9 * 1.2 >= 1: clipped below 1
                assert key == "optim.mu"
            else:
                factors.add(round(value / VALUES[key], 12))
    assert factors == {0.8, 1.2}


def test_plan_records_before_and_after() -> None:
    values = [{"optim.lr": 0.01 * (i + 1)} for i in range(4)]
    copies = plan(
        [0.2, 0.9, 0.5, 0.4],
        values,
        PBT(perturb=(1.2,), resample=0.0),
        {"optim.lr": SPACE["optim.lr"]},
        direction="max",
        rng=_rng(),
    )
    assert copies == [Copy(0, 1, {"optim.lr": 0.01}, {"optim.lr": pytest.approx(0.024)})]


# --- the index copy ----------------------------------------------------------------------
def test_copy_rows_copies_weights_buffers_and_rule_state_in_place_of_rows() -> None:
    params = {"w": torch.arange(12.0).view(4, 3), "b": torch.arange(4.0)}
    state = init_state("adam", params)
    state["m"] = {k: v + 100 for k, v in params.items()}
    state["v"] = {k: v + 200 for k, v in params.items()}
    state["t"] = 7
    stack = Stack(
        template=nn.Identity(),
        params=params,
        buffers={"drop.rate": torch.tensor([0.1, 0.2, 0.3, 0.4])},
        state_keys=["w", "b"],
        state=state,
    )
    copy_rows(stack, [Copy(0, 2, {}, {}), Copy(3, 1, {}, {})])
    rows = [2, 1, 2, 1]  # row i now holds old row rows[i]
    assert torch.equal(stack.params["w"], torch.arange(12.0).view(4, 3)[rows])
    assert torch.equal(stack.params["b"], torch.tensor(rows, dtype=torch.float))
    assert torch.equal(stack.buffers["drop.rate"], torch.tensor([0.3, 0.2, 0.3, 0.2]))
    assert torch.equal(stack.state["m"]["w"], torch.arange(12.0).view(4, 3)[rows] + 100)
    assert torch.equal(stack.state["v"]["b"], torch.tensor(rows, dtype=torch.float) + 200)
    assert stack.state["t"] == 7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "every=0"),
        ({"quantile": 0.6}, r"quantile=0.6 is not in \(0, 0.5\]"),
        ({"resample": 1.5}, "resample=1.5"),
        ({"perturb": ()}, "perturb"),
        ({"perturb": (0.8, -1.0)}, "perturb"),
        ({"space": {"model.hidden": Range("intuniform", 8, 64, integer=True)}}, "model.hidden"),
        ({"space": {"train.seed": Range("intuniform", 0, 9, integer=True)}}, "train.seed"),
    ],
)
def test_bad_pbt_settings_are_one_config_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        PBT(**kwargs)
    assert "\n" not in str(info.value)


def test_limits_of_an_open_end_keep_a_clipped_value_inside() -> None:
    assert Limits(0.0, 1.0, high_open=True).clip(1.3, inner=0.9) == pytest.approx(0.95)


# --- inside a population ---------------------------------------------------------------
def _task() -> Task:
    """A tiny 3-class problem on 6 features: 5 steps per epoch at batch size 8."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return build_model("mlp", cfg, input_shape=(6,), num_classes=3).to(torch.float64)

    return Task(
        model_factory=factory,
        train=(x[:40], y[:40]),
        val=(x[40:], y[40:]),
        loss_fn=F.cross_entropy,
        num_classes=3,
    )


def _base(epochs: int, **model: Any) -> dict[str, Any]:
    return {
        "model": {"hidden": [5], **model},
        "optim": {"rule": "momentum", "mu": 0.9},
        "train": {"epochs": epochs, "batch_size": 8, "reg": 1e-3, "seed": 0, "keep_last": 9},
    }


LRS = [0.02, 0.2, 0.05, 0.1]


def _checkpoint(directory: Path, epoch: int) -> dict[str, Any]:
    found = next(c for c in list_checkpoints(directory / "checkpoints") if c.epoch == epoch)
    return load_checkpoint(found.path)


def test_an_exact_copy_then_trains_exactly_as_its_source(tmp_path: Path) -> None:
    """perturb = (1.0,): the copy takes every bit of its source's state (weights, the
    momentum velocity, lr, and mu, which is not explored here), so with one data order the
    two train identically after."""
    pbt = PBT(every=1, perturb=(1.0,), resample=0.0, seed=3, space={"optim.lr": SPACE["optim.lr"]})
    members = [{"optim.lr": lr, "optim.mu": 0.5 + 0.1 * i} for i, lr in enumerate(LRS)]
    result = train_population(_base(2), members, task=_task(), out=tmp_path / "p", pbt=pbt)
    copied = [(m.index, e) for m in result.members for e in m.lineage]
    assert len(copied) == 1  # q = floor(0.25 * 4) = 1: one copy, after epoch 1 (of 2)
    dst, event = copied[0]
    src = event["source"]
    losses = [m.epochs[0]["val_loss"] for m in result.members]
    scores = [m.epochs[0]["val_acc"] for m in result.members]
    assert scores[dst] == min(scores) and scores[src] == max(scores)
    assert event["epoch"] == 1 and event["score"] == scores[dst]
    assert event["before"] == {"optim.lr": LRS[dst]} and event["after"] == {"optim.lr": LRS[src]}
    a, b = result.members[dst], result.members[src]
    assert losses[dst] != losses[src]  # they differed before; the destination's past is kept
    assert a.epochs[1] == b.epochs[1]  # and train identically after
    ca, cb = _checkpoint(a.dir, 2), _checkpoint(b.dir, 2)  # type: ignore[arg-type]
    for key, value in ca["model"].items():
        assert torch.equal(value, cb["model"][key])
    for key, value in ca["population"]["state"]["v"].items():
        assert torch.equal(value, cb["population"]["state"]["v"][key])
    assert ca["population"]["hparams"] == cb["population"]["hparams"]


def test_perturbed_copies_record_lineage_events_and_final_values(tmp_path: Path) -> None:
    pbt = PBT(every=1, perturb=(2.0,), resample=0.0, seed=1)
    result = train_population(
        _base(4), [{"optim.lr": lr} for lr in LRS], task=_task(), out=tmp_path / "p", pbt=pbt
    )
    events = [e for m in result.members for e in m.lineage]
    assert sorted(e["epoch"] for e in events) == [1, 2, 3]  # not after the last epoch
    for m in result.members:
        lr = LRS[m.index]
        for e in m.lineage:
            assert e["before"] == {"optim.lr": pytest.approx(lr)}
            lr = e["after"]["optim.lr"]
        assert m.final == {"optim.lr": pytest.approx(lr)}
        hparams = _checkpoint(m.dir, 4)["population"]["hparams"]  # type: ignore[arg-type]
        assert hparams["lr"] == pytest.approx(lr)
        exploits = [r for r in read_metrics(m.dir / "metrics.jsonl") if r.get("what") == "exploit"]
        assert [r["epoch"] for r in exploits] == [e["epoch"] for e in m.lineage]
        assert all(r["source_dir"] == f"m{r['source']}" for r in exploits)
    # each copy's value doubles its source's value at that time
    for e in events:
        source_lr = _value_at(result, e["source"], e["epoch"], "optim.lr", LRS[e["source"]])
        assert e["after"]["optim.lr"] == pytest.approx(2 * source_lr)
    copied = next(m for m in result.members if m.lineage)
    page = write_report(copied.dir).read_text()  # type: ignore[arg-type]
    assert "events: exploit</td><td>" + str(len(copied.lineage)) in page  # its run page says so
    summary = json.loads((tmp_path / "p" / "population.json").read_text())
    assert [m["lineage"] for m in summary["members"]] == [m.lineage for m in result.members]
    again = train_population(_base(4), [{"optim.lr": lr} for lr in LRS], task=_task(), pbt=pbt)
    assert [m.lineage for m in again.members] == [m.lineage for m in result.members]
    assert again.values == result.values  # seeded: the same copies, the same training


def _value_at(result: Any, index: int, epoch: int, key: str, initial: float) -> float:
    """Member ``index``'s value of ``key`` in ``epoch`` (its copies at earlier epochs' ends)."""
    value = initial
    for e in result.members[index].lineage:
        if e["epoch"] < epoch:
            value = e["after"][key]
    return float(value)


def test_a_diverged_member_waits_for_the_next_exploit_step_and_is_replaced(
    tmp_path: Path,
) -> None:
    members = [{"optim.lr": lr} for lr in (0.05, 0.1, 1e100, 0.08)]
    pbt = PBT(every=2, seed=0)
    result = train_population(_base(4), members, task=_task(), out=tmp_path / "p", pbt=pbt)
    blown = result.members[2]
    assert blown.stopped is None and not blown.diverged
    event = blown.lineage[0]
    assert event["epoch"] == 2 and event["diverged"] and event["score"] is None
    assert [r["epoch"] for r in blown.epochs] == [3, 4]  # frozen in epochs 1 and 2
    assert math.isfinite(blown.best["val_loss"])
    records = list(read_metrics(blown.dir / "metrics.jsonl"))  # type: ignore[operator]
    whats = [r.get("what") for r in records if r["kind"] == "event"]
    assert whats.count("diverged") == 1 and whats.count("exploit") == 1
    assert whats.index("diverged") < whats.index("exploit")
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [3, 4]
    # without an exploit step ahead a divergence stops the member, as without PBT
    late = train_population(_base(2), members, task=_task(), pbt=PBT(every=2))
    alone = train_population(_base(2), members, task=_task())
    assert late.members[2].diverged and not late.members[2].lineage
    assert late.members[2].diverged_step == alone.members[2].diverged_step is not None


def test_dropout_copies_are_explored_in_the_rate_buffers(tmp_path: Path) -> None:
    members = [{"optim.lr": lr, "model.dropout": 0.2 + 0.1 * i} for i, lr in enumerate(LRS)]
    pbt = PBT(every=1, perturb=(1.5,), resample=0.0, seed=2)
    result = train_population(_base(3, dropout=0.3), members, task=_task(), pbt=pbt)
    events = [e for m in result.members for e in m.lineage]
    assert len(events) == 2 and all(
        set(e["after"]) == {"optim.lr", "model.dropout"} for e in events
    )
    for e in events:
        old = _value_at(result, e["source"], e["epoch"], "model.dropout", 0.2 + 0.1 * e["source"])
        want = 1.5 * old if 1.5 * old < 1 else (old + 1) / 2  # dropout < 1: halfway to 1
        assert e["after"]["model.dropout"] == pytest.approx(want)
    for m in result.members:  # final values are read back from the rate buffers
        want = m.lineage[-1]["after"] if m.lineage else members[m.index]
        assert m.final == pytest.approx(want)
