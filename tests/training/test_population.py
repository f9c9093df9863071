"""Population training: each member equals its model trained alone (the oracle), per rule.

The oracle is a plain loop written here: the model built under the member's seed, the
trainer's data order for that seed (a seeded generator over ``splits.Batches``), autograd
on data loss + penalty, and ``rules.step`` with the member's hyperparameters, the lr from
the schedule function at ``t = step / steps_per_epoch``. babysit.train (torch.optim) is
the second oracle where rules.py says the two agree (a constant lr; Adam with any lr).
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.config import Config
from babysit.errors import ConfigError
from babysit.models import build_model
from babysit.monitor.log import SETUP_EVENTS, read_metrics
from babysit.optim import rules
from babysit.optim.hparams import RULE_HPARAMS, SCHEDULE_KINDS
from babysit.optim.schedules import SCHEDULES, momentum_at
from babysit.report.html import write_report
from babysit.splits import Batches
from babysit.tasks import Task
from babysit.training._population_members import plan_groups
from babysit.training._population_model import (
    RateDropout,
    build_models,
    bytes_per_member,
    stack,
)
from babysit.training._population_stacked import supports
from babysit.training.checkpoint import list_checkpoints, load_checkpoint
from babysit.training.population import train_population
from babysit.training.run import train

ENGINES = ("stacked", "vmap", "sequential")


def _task(dtype: torch.dtype = torch.float64, n: int = 40, model: str = "mlp") -> Task:
    """A tiny 3-class problem on 6 features: 5 steps per epoch at batch size 8."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 24, 6, generator=g, dtype=dtype)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return build_model(model, cfg, input_shape=(6,), num_classes=3).to(dtype)

    return Task(
        model_factory=factory,
        train=(x[:n], y[:n]),
        val=(x[n:], y[n:]),
        loss_fn=F.cross_entropy,
        num_classes=3,
    )


def _base(rule: str, **train: Any) -> dict[str, Any]:
    return {
        "model": {"hidden": [5]},
        "optim": {"rule": rule, "lr": 0.05},
        "schedule": {"kind": "step", "every": 1.0, "factor": 0.5},
        "train": {"epochs": 2, "batch_size": 8, "reg": 1e-3, "seed": 0, **train},
    }


# Three members that differ in every per-member respect: lr, reg (0 too), the rule's
# hyperparameters, the schedule's keys, the momentum ramp, init scale, seed.
MEMBERS: list[dict[str, Any]] = [
    {"optim.lr": 0.05, "schedule.mu_start": 0.5, "schedule.mu_epochs": 1.0},
    {
        "optim.lr": 0.02,
        "train.reg": 0.0,
        "optim.mu": 0.5,
        "optim.beta1": 0.8,
        "optim.beta2": 0.99,
        "optim.eps": 1e-6,
        "optim.decay_rate": 0.9,
        "train.seed": 1,
    },
    {"optim.lr": 0.1, "train.reg": 1e-2, "model.init_scale": 0.5, "schedule.factor": 0.3},
]


def _member_config(base: Mapping[str, Any], params: Mapping[str, Any]) -> Config:
    data = copy.deepcopy(dict(base))
    for key, value in params.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    return Config.from_dict(data)


def _oracle(task: Task, config: Config) -> tuple[list[float], dict[str, torch.Tensor]]:
    """One model trained alone with rules.step: (loss at every step, final weights)."""
    cfg, opt, sched = config.train, config.optim, config.schedule
    torch.manual_seed(cfg.seed)
    model = task.model_factory(config.model_table())
    batches = Batches(
        task.train, cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed)
    )
    w = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = rules.init_state(opt.rule, w)
    fn_keys = {k: getattr(sched, k) for k in SCHEDULE_KINDS[sched.kind].keys}
    momentum = RULE_HPARAMS[opt.rule].momentum
    losses: list[float] = []
    step = 0
    for _ in range(cfg.epochs):
        for x, y in batches:
            with torch.no_grad():
                for k, p in model.named_parameters():
                    p.copy_(w[k])
            model.zero_grad()
            loss = task.loss_fn(model(x), y)
            if cfg.reg > 0:
                loss = loss + task.reg_fn(model, cfg.reg)
            loss.backward()
            t = step / len(batches)
            hp = {name: getattr(opt, name) for name in RULE_HPARAMS[opt.rule].hparams}
            hp["lr"] = SCHEDULES[sched.kind](opt.lr, t, **fn_keys)
            if momentum is not None:
                hp[momentum] = momentum_at(
                    t, mu=getattr(opt, momentum), mu_start=sched.mu_start, mu_epochs=sched.mu_epochs
                )
            grads = {k: p.grad for k, p in model.named_parameters()}
            w, state = rules.step(opt.rule, w, grads, state, **hp)  # type: ignore[assignment]
            losses.append(loss.item())
            step += 1
    return losses, {**w, **{k: b.detach().clone() for k, b in model.named_buffers()}}


def _trajectory(member_dir: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A member's losses at every step (metrics.jsonl) and its last checkpoint's weights."""
    losses = [r["loss"] for r in read_metrics(member_dir / "metrics.jsonl", kind="batch")]
    last = list_checkpoints(member_dir / "checkpoints")[-1]
    return losses, load_checkpoint(last.path)["model"]


def _assert_same(a: tuple, b: tuple, tol: float) -> None:
    assert len(a[0]) == len(b[0])
    torch.testing.assert_close(torch.tensor(a[0]), torch.tensor(b[0]), rtol=tol, atol=tol)
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        torch.testing.assert_close(a[1][k].double(), b[1][k].double(), rtol=tol, atol=tol)


# --- equivalence: every rule, every engine ----------------------------------------------
@pytest.mark.parametrize("rule", rules.RULES)
def test_each_member_equals_rules_step_alone_in_float64(tmp_path: Path, rule: str) -> None:
    task = _task()
    base = _base(rule)
    result = train_population(base, MEMBERS, task=task, out=tmp_path / "pop", device="cpu")
    assert not any(result.diverged)
    for params, member in zip(MEMBERS, result.members, strict=True):
        assert member.dir is not None
        expected = _oracle(task, _member_config(base, params))
        _assert_same(_trajectory(member.dir), expected, 1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rule", ["momentum", "adam"])
def test_every_engine_gives_the_oracle_with_one_data_order(
    tmp_path: Path, engine: str, rule: str
) -> None:
    task = _task()
    base = _base(rule)
    members = [{k: v for k, v in m.items() if k != "train.seed"} for m in MEMBERS]
    result = train_population(
        base, members, task=task, out=tmp_path / "pop", device="cpu", engine=engine
    )
    for params, member in zip(members, result.members, strict=True):
        assert member.dir is not None
        expected = _oracle(task, _member_config(base, params))
        _assert_same(_trajectory(member.dir), expected, 1e-10)


def _image_task(n: int = 40) -> Task:
    """The tiny 3-class problem on 1x6x6 images, for the convnet (float64)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 24, 1, 6, 6, generator=g, dtype=torch.float64)
    y = (x[:, 0, 0, 0] > 0).long() + (x[:, 0, 2, 3] > 0.5).long()

    def factory(cfg: dict[str, Any]) -> nn.Module:
        return build_model("convnet", cfg, input_shape=(1, 6, 6), num_classes=3).double()

    return Task(factory, (x[:n], y[:n]), (x[n:], y[n:]), F.cross_entropy, num_classes=3)


@pytest.mark.parametrize("engine", ENGINES)
def test_convnet_members_equal_the_oracle_on_every_engine(tmp_path: Path, engine: str) -> None:
    """Conv2d and MaxPool2d on stacked members (one grouped convolution), shared and
    per-member data orders (the seeds differ), against each model trained alone."""
    task = _image_task()
    base = {**_base("adam"), "model": {"channels": [3, 4], "hidden": [5]}}
    result = train_population(
        base, MEMBERS, task=task, out=tmp_path / "pop", device="cpu", engine=engine
    )
    assert supports(task.model_factory({"channels": [3, 4], "hidden": [5]}))  # the fast path
    for params, member in zip(MEMBERS, result.members, strict=True):
        assert member.dir is not None
        expected = _oracle(task, _member_config(base, params))
        _assert_same(_trajectory(member.dir), expected, 1e-10)


@pytest.mark.parametrize("rule", rules.RULES)
def test_float32_members_stay_within_1e_4_over_50_steps(tmp_path: Path, rule: str) -> None:
    task = _task(torch.float32)
    lr = 1e-2 if rule in ("adam", "adagrad", "rmsprop") else 0.05
    base = _base(rule, epochs=10)  # 5 steps per epoch: 50 steps
    base["schedule"] = {"kind": "none"}
    members = [{"optim.lr": lr}, {"optim.lr": lr / 2, "train.seed": 3}]
    result = train_population(base, members, task=task, out=tmp_path / "pop", device="cpu")
    for params, member in zip(members, result.members, strict=True):
        assert member.dir is not None
        got = _trajectory(member.dir)
        assert len(got[0]) == 50
        _assert_same(got, _oracle(task, _member_config(base, params)), 1e-4)


# --- torch.optim (babysit.train) where the two agree -------------------------------------
def _records(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def _same_run(single: Path, member: Path, tol: float) -> None:
    """Same batch losses, epoch records, events and final weights as a babysit.train run."""
    for kind, keys in (("batch", ("step", "loss", "data_loss", "reg_loss", "lr")), ("epoch", None)):
        a, b = _records(single, kind), _records(member, kind)
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b, strict=True):
            assert ra.keys() == rb.keys()
            for key in keys or [k for k in ra if k != "kind"]:
                assert ra[key] == pytest.approx(rb[key], rel=tol, abs=tol), (kind, key)
    events = [
        (r["what"], r["step"])
        for r in _records(single, "event")
        if r["what"] not in SETUP_EVENTS  # the monitor's own (a population has no monitor)
    ]
    assert [(r["what"], r["step"]) for r in _records(member, "event")][2:] == events
    assert [c.path.name for c in list_checkpoints(single / "checkpoints")] == [
        c.path.name for c in list_checkpoints(member / "checkpoints")
    ]
    _, got = _trajectory(member)
    _, want = _trajectory(single)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=tol, atol=tol)


def _digits(rule: str, lr: float, **train: Any) -> dict[str, Any]:
    return {
        "task": {"name": "digits-mlp"},
        "model": {"hidden": [16]},
        "optim": {"rule": rule, "lr": lr},
        "train": {"epochs": 2, "batch_size": 64, "seed": 0, "report": False, **train},
    }


@pytest.mark.parametrize("rule", rules.RULES)
def test_member_equals_babysit_train_at_a_constant_lr(tmp_path: Path, rule: str) -> None:
    lr = 3e-3 if rule in ("adam", "rmsprop") else 0.05
    config = _digits(rule, lr)
    single = train(config, out=tmp_path / "single", quiet=True)
    pop = train_population(config, [{"optim.lr": lr * 3}, {}], out=tmp_path / "pop", device="cpu")
    member = pop.members[1]
    assert member.dir is not None
    _same_run(single.dir, member.dir, 1e-4)
    assert member.best == pytest.approx(single.best, rel=1e-4)


def test_adam_with_plateau_clip_and_early_stop_equals_babysit_train(tmp_path: Path) -> None:
    """Adam takes any lr as torch does; the plateau, clipping and early stopping as the trainer."""
    config = _digits("adam", 0.02, epochs=6, clip_grad=0.5, early_stop=1)
    config["schedule"] = {"kind": "plateau", "patience": 1, "factor": 0.5, "threshold": 0.01}
    single = train(config, out=tmp_path / "single", quiet=True)
    assert single.stopped == "early_stop"  # the case is exercised
    pop = train_population(config, [{}, {"train.early_stop": None}], out=tmp_path / "pop")
    member = pop.members[0]
    assert member.stopped == "early_stop" and member.dir is not None
    _same_run(single.dir, member.dir, 1e-4)
    assert len(pop.members[1].epochs) == 6  # the other member trained on


# --- divergence ----------------------------------------------------------------------------
def test_a_diverging_member_is_frozen_and_leaves_the_others_unchanged(tmp_path: Path) -> None:
    task = _task()
    base = _base("momentum", epochs=3)
    calm = [MEMBERS[0], MEMBERS[2]]
    wild = {"optim.lr": 1e150}  # float64: the logits overflow within a few steps
    alone = train_population(base, calm, task=task, out=tmp_path / "calm")
    mixed = train_population(base, [calm[0], wild, calm[1]], task=task, out=tmp_path / "mixed")
    assert mixed.diverged == [False, True, False]
    boom = mixed.members[1]
    assert boom.stopped == "diverged" and boom.diverged_step is not None and boom.best == {}
    records = list(read_metrics(tmp_path / "mixed" / "m1" / "metrics.jsonl"))
    event = next(r for r in records if r["kind"] == "event" and r["what"] == "diverged")
    assert event["step"] == boom.diverged_step and not math.isfinite(event["loss"])
    assert max(r["step"] for r in records if r["kind"] == "batch") == boom.diverged_step - 1
    for a, b in zip(alone.members, [mixed.members[0], mixed.members[2]], strict=True):
        assert a.dir is not None and b.dir is not None
        _assert_same(_trajectory(a.dir), _trajectory(b.dir), 1e-10)
        for ra, rb in zip(a.epochs, b.epochs, strict=True):
            assert ra == pytest.approx(rb, rel=1e-10)


# --- memory --------------------------------------------------------------------------------
def test_a_tiny_memory_budget_trains_in_chunks_with_the_same_results(tmp_path: Path) -> None:
    task = _task()
    base = _base("adam")
    whole = train_population(base, MEMBERS, task=task, out=tmp_path / "whole")
    chunked = train_population(base, MEMBERS, task=task, out=tmp_path / "chunks", memory_budget=1)
    assert any("chunks of <= 1" in note for note in chunked.notes)
    assert not whole.notes
    for a, b in zip(whole.members, chunked.members, strict=True):
        assert a.dir is not None and b.dir is not None
        _assert_same(_trajectory(a.dir), _trajectory(b.dir), 1e-10)


def test_bytes_per_member_counts_weights_state_and_activations() -> None:
    task = _task(torch.float32)
    model = task.model_factory({"hidden": [5]})
    params = sum(p.numel() for p in model.parameters()) * 4
    x, y = task.train[0][:8], task.train[1][:8]
    sgd = bytes_per_member(model, task, "sgd", (x, y), batch_size=8, eval_batch_size=8)
    adam = bytes_per_member(model, task, "adam", (x, y), batch_size=8, eval_batch_size=8)
    assert adam - sgd == 4 * params  # two slots, old and new
    big = bytes_per_member(model, task, "sgd", (x, y), batch_size=8, eval_batch_size=800)
    assert big > sgd + 100 * 8 * 5 * 4  # activations grow with the batch


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_frozen_rows_keep_their_weights_and_state_either_way(rule: str) -> None:
    """The CPU's row copy and the GPU's select (no host sync) freeze the same rows."""
    task = _task()
    group = plan_groups(Config.from_dict(_base(rule)), [{}, {"train.seed": 1}, {}])[0]
    results = []
    for sync in (True, False):
        st = stack(build_models(task, group.members), torch.device("cpu"), rule)
        grads = {k: torch.ones_like(v) for k, v in st.params.items()}
        old = {k: v.clone() for k, v in st.params.items()}
        new, state = rules.step(rule, st.params, grads, st.state, lr=0.1)
        assert isinstance(new, dict)
        st.update(new, state, torch.tensor([True, False, True]), sync=sync)
        for k, v in st.params.items():
            assert torch.equal(v[1], old[k][1]) and not torch.equal(v[0], old[k][0])
        results.append(st)
    for k in results[0].params:
        assert torch.equal(results[0].params[k], results[1].params[k])
    for slot, value in results[0].state.items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert torch.equal(v, results[1].state[slot][k])
                assert not v[1].any()  # the frozen member's slots stay at their zeros


# --- fallback ------------------------------------------------------------------------------
class _Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot batch ``if x.sum() > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return self.fc(-x)


def test_a_model_vmap_cannot_batch_runs_members_one_after_another(tmp_path: Path) -> None:
    task = _task()
    task.model_factory = lambda cfg: _Branchy()
    base = _base("momentum")
    with pytest.warns(UserWarning, match="one after another"):
        result = train_population(base, MEMBERS[:2], task=task, out=tmp_path / "pop")
    assert any("vmap cannot batch _Branchy" in n and "control flow" in n for n in result.notes)
    for params, member in zip(MEMBERS[:2], result.members, strict=True):
        assert member.dir is not None
        cfg = _member_config(base, {k: v for k, v in params.items() if k != "model.init_scale"})
        _assert_same(_trajectory(member.dir), _oracle(task, cfg), 1e-10)


class _LateBranch(nn.Module):
    """Batches through the probe, then takes a data-dependent branch vmap refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3, dtype=torch.float64)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 6 and x.sum() > 0:  # the same output either way
            return self.fc(x)
        return self.fc(x)


def test_a_batched_engine_failing_after_its_probe_falls_back_to_sequential(
    tmp_path: Path,
) -> None:
    task = _task()
    task.model_factory = lambda cfg: _LateBranch()
    base = _base("adam")
    members = [{"optim.lr": 0.05}, {"optim.lr": 0.01, "train.seed": 2}]
    with pytest.warns(UserWarning, match="one after another"):
        result = train_population(base, members, task=task, out=tmp_path / "pop")
    assert any(n.startswith("population: vmap failed on _LateBranch") for n in result.notes)
    for params, member in zip(members, result.members, strict=True):
        assert member.dir is not None
        _assert_same(_trajectory(member.dir), _oracle(task, _member_config(base, params)), 1e-10)


class _OutOfMemoryOnce(nn.Module):
    """Raises CUDA's out-of-memory error once: at its second call (after the memory
    estimate's, in the first chunk's probe)."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _OutOfMemoryOnce.calls += 1
        if _OutOfMemoryOnce.calls == 2:
            raise torch.OutOfMemoryError("CUDA out of memory (a test)")
        return self.fc(x)


def test_a_chunk_out_of_memory_is_halved_and_retried(tmp_path: Path) -> None:
    task = _task()
    task.model_factory = lambda cfg: _OutOfMemoryOnce()
    base = _base("sgd")
    members = [{"optim.lr": 0.05}, {"optim.lr": 0.01}]
    result = train_population(base, members, task=task, out=tmp_path / "pop")
    assert any("out of memory with 2 members at once; retried as 1 + 1" in n for n in result.notes)
    for params, member in zip(members, result.members, strict=True):
        assert member.dir is not None
        _assert_same(_trajectory(member.dir), _oracle(task, _member_config(base, params)), 1e-10)


def test_batch_norm_members_keep_their_own_running_statistics(tmp_path: Path) -> None:
    """vmap updates each member's buffers in place; nothing else may touch them."""
    task = _task()
    task.model_factory = lambda cfg: nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)
    ).double()
    base = _base("momentum")
    result = train_population(base, MEMBERS, task=task, out=tmp_path / "pop")
    for params, member in zip(MEMBERS, result.members, strict=True):
        assert member.dir is not None
        got = _trajectory(member.dir)
        assert int(got[1]["1.num_batches_tracked"]) == 10  # 2 epochs of 5 steps
        _assert_same(got, _oracle(task, _member_config(base, params)), 1e-10)
    events = read_metrics(tmp_path / "pop" / "m0" / "metrics.jsonl", kind="event")
    assert next(e for e in events if e["what"] == "population")["engine"] == "vmap"


# --- run dirs ------------------------------------------------------------------------------
def test_member_dirs_are_run_dirs_that_reports_and_models_read(tmp_path: Path) -> None:
    task = _task(torch.float32)
    result = train_population(_base("adam"), MEMBERS, task=task, out=tmp_path / "pop")
    member = result.members[2]
    assert member.dir == tmp_path / "pop" / "m2"
    assert {p.name for p in member.dir.iterdir()} >= {
        "config.toml",
        "metrics.jsonl",
        "findings.json",
    }
    assert write_report(member.dir).is_file()
    ckpt = list_checkpoints(member.dir / "checkpoints")[-1]
    assert ckpt.metric == "val_acc" and ckpt.value == pytest.approx(
        member.best["val_acc"], abs=1e-4
    )
    state = torch.load(ckpt.path, weights_only=True)
    model = task.model_factory(Config.from_dict(_load_toml(member.dir)).model_table())
    model.load_state_dict(state["model"])  # strict: the factory's keys exactly
    summary = (tmp_path / "pop" / "population.json").read_text()
    assert '"dir": "m2"' in summary


def _load_toml(directory: Path) -> dict[str, Any]:
    return tomllib.loads((directory / "config.toml").read_text())


def test_a_member_dir_that_is_not_empty_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "pop" / "m1").mkdir(parents=True)
    (tmp_path / "pop" / "m1" / "x").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        train_population(_base("sgd"), [{}, {}], task=_task(), out=tmp_path / "pop")
    assert not (tmp_path / "pop" / "m0").exists()


def test_named_members_go_into_a_shared_dir_without_a_summary(tmp_path: Path) -> None:
    """A search's trials dir: other runs are there already, each trial names its dir."""
    trials = tmp_path / "trials"
    (trials / "s0-0").mkdir(parents=True)
    (trials / "s0-0" / "metrics.jsonl").write_text("")
    names = ["s1-0", "s1-1"]
    result = train_population(_base("sgd"), [{}, {}], task=_task(), out=trials, names=names)
    assert [m.dir for m in result.members] == [trials / n for n in names]
    assert sorted(p.name for p in trials.iterdir()) == ["s0-0", "s1-0", "s1-1"]
    with pytest.raises(ConfigError, match="different names"):
        train_population(_base("sgd"), [{}, {}], task=_task(), out=trials, names=["a", "a"])


# --- dropout -------------------------------------------------------------------------------
def test_dropout_rates_are_per_member_and_masks_differ(tmp_path: Path) -> None:
    task = _task()
    base = _base("sgd", epochs=1)
    base["model"]["dropout"] = 0.5
    same = [{}, {}, {"model.dropout": 0.2}]
    for engine in ("stacked", "vmap"):
        result = train_population(base, same, task=task, engine=engine)
        a, b, c = (m.epochs[0]["train_loss"] for m in result.members)
        assert a != b  # the same seed and rate, different masks
        assert len({a, b, c}) == 3
    # a rate of 0 drops nothing: equal to the model without dropout
    off = train_population(base, [{"model.dropout": 0.0}], task=task)
    plain = _base("sgd", epochs=1)
    alone = train_population(plain, [{}], task=task)
    assert off.members[0].epochs == alone.members[0].epochs


def test_rate_dropout_keeps_one_minus_rate_and_rescales() -> None:
    drop = RateDropout(0.25)
    x = torch.ones(200_000, dtype=torch.float64)
    y = drop(x)
    kept = y != 0
    assert kept.double().mean().item() == pytest.approx(0.75, abs=0.01)
    assert torch.all(y[kept] == 1 / 0.75)
    assert torch.equal(drop.eval()(x), x)
    assert "rate" not in drop.state_dict()


# --- members and groups ------------------------------------------------------------------
def test_members_with_another_architecture_train_as_their_own_population(tmp_path: Path) -> None:
    task = _task()
    base = _base("sgd")
    members = [{}, {"model.hidden": [7]}, {"optim.lr": 0.01}]
    result = train_population(base, members, task=task, out=tmp_path / "pop")
    for params, member in zip(members, result.members, strict=True):
        assert member.dir is not None
        _assert_same(_trajectory(member.dir), _oracle(task, _member_config(base, params)), 1e-10)
    sizes = [
        next(r for r in read_metrics(m.dir / "metrics.jsonl") if r.get("what") == "population")[
            "size"
        ]
        for m in result.members
        if m.dir is not None
    ]
    assert sizes == [2, 1, 2]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"optim.lr": -1.0}, r"population member 1: optim.lr=-1.0 is not a number > 0"),
        ({"optim.rule": "lbfgs"}, "no pure update rule"),
        ({"task.name": "spiral-mlp"}, "cannot differ between members"),
        ({"train.epochs": 0}, "train.epochs"),
        ({"lr": 0.1}, "not a dotted config key"),
        ({"train.ema": 0.99}, "member 1: train.ema=0.99: a population does not keep a running"),
        ({"train.swa": True}, "member 1: train.swa=True: a population does not keep a running"),
    ],
)
def test_a_bad_member_is_refused_in_one_line(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train_population(_base("sgd"), [{}, params], task=_task())


def test_on_epoch_can_prune_members(tmp_path: Path) -> None:
    seen: list[tuple[int, list[int]]] = []

    def prune_worst(epoch: int, records: Mapping[int, dict[str, Any]]) -> list[int]:
        seen.append((epoch, sorted(records)))
        return [min(records, key=lambda i: records[i]["val_acc"])] if epoch == 1 else []

    result = train_population(
        _base("sgd", epochs=3), MEMBERS, task=_task(), out=tmp_path / "pop", on_epoch=prune_worst
    )
    pruned = [m for m in result.members if m.stopped == "pruned"]
    assert len(pruned) == 1 and len(pruned[0].epochs) == 1
    assert [e for e, _ in seen] == [1, 2, 3] and len(seen[1][1]) == 2
    assert pruned[0].dir is not None
    events = [r["what"] for r in read_metrics(pruned[0].dir / "metrics.jsonl", kind="event")]
    assert events[-1] == "pruned"


@pytest.mark.parametrize(
    ("train", "on"), [({"ema": 0.999}, "train.ema=0.999"), ({"swa": True}, "train.swa=true")]
)
def test_a_base_config_with_averaging_is_refused_in_one_line(
    tmp_path: Path, train: dict[str, Any], on: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{on}: a population does not keep a running average"):
        train_population(_base("sgd", **train), [{}], task=_task(), out=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_fractional_epochs_are_refused_with_one_line(tmp_path: Path) -> None:
    from babysit.errors import ConfigError
    from babysit.training.population import train_population

    config = {"task": {"name": "digits-mlp"}, "model": {"hidden": [8]}, "train": {"epochs": 0.5}}
    with pytest.raises(ConfigError, match=r"train.epochs=0.5: a population trains whole epochs"):
        train_population(config, [{"optim.lr": 1e-3}], out=tmp_path / "p")
    assert not (tmp_path / "p").exists()
