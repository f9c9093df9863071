"""babysit.optim.rules against torch.optim (float64), the notes' formulas and the contract."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from babysit.errors import ConfigError
from babysit.optim import rules
from babysit.optim.rules import Params

# Hyperparameters (non-default where the rule has them, so a wrong mapping shows) and the
# torch.optim twin built from the same numbers, in the notes' names -> torch's names.
HP: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.1},
    "momentum": {"lr": 0.05, "mu": 0.8},
    "nesterov": {"lr": 0.05, "mu": 0.8},
    "adagrad": {"lr": 0.1, "eps": 1e-6},
    # decay_rate 0.999, not 0.9: a short memory makes RMSprop sign-like and chaotic near a
    # minimum, where a 1-ulp difference in the two codes' rounding grows to 1e-7 in 100 steps
    "rmsprop": {"lr": 0.01, "decay_rate": 0.999, "eps": 1e-6},
    "adam": {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
}
TWIN: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda p, h: torch.optim.SGD(p, lr=h["lr"]),
    "momentum": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["mu"]),
    "nesterov": lambda p, h: torch.optim.SGD(p, lr=h["lr"], momentum=h["mu"], nesterov=True),
    "adagrad": lambda p, h: torch.optim.Adagrad(p, lr=h["lr"], eps=h["eps"]),
    "rmsprop": lambda p, h: torch.optim.RMSprop(p, lr=h["lr"], alpha=h["decay_rate"], eps=h["eps"]),
    "adam": lambda p, h: torch.optim.Adam(
        p, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"]
    ),
}


def _data(n: int = 48, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes, learnable
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[dict[str, Tensor]], Tensor]:
    def loss(params: dict[str, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return loss


def _ours(rule: str, steps: int, lrs: list[float] | None = None, rescale: bool = False) -> dict:
    """Train _model() with rules.step; lrs[i] is the lr of step i (default: HP's lr)."""
    model, (x, y) = _model(), _data()
    loss = _loss_fn(model, x, y)
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = rules.init_state(rule, w)
    prev_lr = None
    for i in range(steps):
        hp = dict(HP[rule], lr=lrs[i] if lrs else HP[rule]["lr"])
        if rescale and prev_lr is not None and "v" in state:
            # the notes' velocity carries the old lr; torch's buffer takes the new one
            state = {"v": {k: v * (hp["lr"] / prev_lr) for k, v in state["v"].items()}}
        w, state = rules.step(rule, w, grad(loss)(w), state, **hp)
        prev_lr = hp["lr"]
    return w


def _torch(rule: str, steps: int, lrs: list[float] | None = None) -> dict[str, Tensor]:
    model, (x, y) = _model(), _data()
    opt = TWIN[rule](model.parameters(), HP[rule])
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lrs[i] if lrs else HP[rule]["lr"]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def _max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[k] - b[k]).detach().abs().max()) for k in a)


@pytest.mark.parametrize("rule", sorted(TWIN))
def test_rule_matches_torch_optim_at_constant_lr(rule: str) -> None:
    ours, theirs = _ours(rule, 100), _torch(rule, 100)
    start = {k: v.detach() for k, v in _model().named_parameters()}
    assert _max_diff(theirs, start) > 1e-2  # the run really moved the weights
    assert _max_diff(ours, theirs) < 1e-10


@pytest.mark.parametrize("rule", ["momentum", "nesterov"])
def test_momentum_with_changing_lr_differs_from_torch_only_by_velocity_lr(rule: str) -> None:
    lrs = [0.05 * 0.5 ** (i // 20) for i in range(100)]  # step decay: halve every 20 steps
    theirs = _torch(rule, 100, lrs)
    assert _max_diff(_ours(rule, 100, lrs), theirs) > 1e-4
    assert _max_diff(_ours(rule, 100, lrs, rescale=True), theirs) < 1e-10


@pytest.mark.parametrize("rule", sorted(TWIN))
def test_population_with_per_member_hparams_matches_separate_torch_optims(rule: str) -> None:
    members = [_model(seed) for seed in range(3)]
    x, y = _data()
    scale = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    hp: dict[str, float | Tensor] = {**HP[rule], "lr": HP[rule]["lr"] * scale}
    if "mu" in hp:
        hp["mu"] = torch.tensor([0.5, 0.8, 0.9], dtype=torch.float64)
    stacked, _ = stack_module_state(members)  # every tensor (P=3, ...)
    w = {k: v.detach() for k, v in stacked.items()}
    base = copy.deepcopy(members[0]).to("meta")
    per_member_grad = vmap(grad(lambda p: _loss_fn(base, x, y)(p)))
    state = rules.init_state(rule, w)
    for _ in range(20):
        w, state = rules.step(rule, w, per_member_grad(w), state, **hp)
    for i, model in enumerate(members):
        h = {k: float(v[i]) if isinstance(v, Tensor) else v for k, v in hp.items()}
        opt = TWIN[rule](model.parameters(), h)
        for _ in range(20):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert _max_diff({k: v[i] for k, v in w.items()}, dict(model.named_parameters())) < 1e-10


def test_adam_first_step_moves_each_weight_by_lr_thanks_to_bias_correction() -> None:
    # t = 1: m/(1-beta1) = dw and v/(1-beta2) = dw**2, so the step is lr * dw / (|dw| + eps)
    w, dw = torch.zeros(5, dtype=torch.float64), torch.tensor([-3.0, -1e-2, 1e-3, 2.0, 50.0])
    w1, state = rules.step("adam", w, dw.double(), rules.init_state("adam", w), lr=1e-3)
    assert state["t"] == 1
    assert torch.allclose(w1, -1e-3 * torch.sign(dw).double(), rtol=1e-5, atol=0)


def test_rmsprop_uses_the_updated_cache() -> None:
    w, dw = torch.zeros(3, dtype=torch.float64), torch.tensor([2.0, -4.0, 1.0]).double()
    w1, state = rules.step("rmsprop", w, dw, rules.init_state("rmsprop", w), lr=0.1, eps=1e-12)
    # cache = (1 - 0.99) * dw**2 after one step; the update divides by its square root
    assert torch.allclose(state["cache"], 0.01 * dw**2)
    assert torch.allclose(w1, -0.1 * torch.sign(dw) / math.sqrt(0.01))


def test_init_state_has_the_documented_keys() -> None:
    w = {"a": torch.ones(2, 3), "b": torch.ones(3)}
    keys = {r: set(rules.init_state(r, w)) for r in rules.RULES}
    assert keys["sgd"] == set()
    assert keys["momentum"] == keys["nesterov"] == {"v"}
    assert keys["adagrad"] == keys["rmsprop"] == {"cache"}
    assert keys["adam"] == {"m", "v", "t"} and rules.init_state("adam", w)["t"] == 0


# --- contract: every registered rule -------------------------------------------------------

LR_FOR_CONTRACT = {"sgd": 0.5, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.3}


def _descend(rule: str, loss: Callable[[Params], Tensor], w: Params, steps: int) -> float:
    """loss after ``steps`` steps of ``rule`` from w, as a fraction of the loss at w."""
    state, start = rules.init_state(rule, w), float(loss(w))
    for _ in range(steps):
        w, state = rules.step(rule, w, grad(loss)(w), state, lr=LR_FOR_CONTRACT.get(rule, 0.02))
    return float(loss(w)) / start


@pytest.mark.parametrize("rule", rules.RULES)
def test_rule_reduces_a_quadratic_with_unequal_curvatures(rule: str) -> None:
    curv = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)  # lr 0.5 is stable for sgd
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def f(w: Tensor) -> Tensor:
        return 0.5 * (curv * (w - target) ** 2).sum()

    assert _descend(rule, f, torch.zeros(3, dtype=torch.float64), 300) < 0.01


@pytest.mark.parametrize("rule", rules.RULES)
def test_rule_reduces_a_tiny_classifiers_loss(rule: str) -> None:
    model, (x, y) = _model(), _data()
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert _descend(rule, _loss_fn(model, x, y), w, 100) < 0.5


@pytest.mark.parametrize("rule", rules.RULES)
def test_step_does_not_modify_its_inputs(rule: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = {"a": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}
    state = rules.init_state(rule, w)
    for _ in range(2):  # non-zero state
        dw = {k: torch.randn(v.shape, generator=g) for k, v in w.items()}
        w, state = rules.step(rule, w, dw, state, lr=0.1)
    dw = {k: torch.randn(v.shape, generator=g) for k, v in w.items()}
    before = copy.deepcopy((w, dw, state))
    w_new, _ = rules.step(rule, w, dw, state, lr=0.1)
    assert _max_diff(w_new, w) > 0
    for now, then in zip((w, dw), before[:2], strict=True):
        assert all(torch.equal(now[k], then[k]) for k in now)
    assert repr(state) == repr(before[2])


@pytest.mark.parametrize("rule", rules.RULES)
def test_state_round_trips_through_a_weights_only_checkpoint(rule: str) -> None:
    model, (x, y) = _model(), _data()
    loss = _loss_fn(model, x, y)
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    state = rules.init_state(rule, w)
    straight_w, straight_s = w, state
    for _ in range(10):
        straight_w, straight_s = rules.step(
            rule, straight_w, grad(loss)(straight_w), straight_s, lr=0.01
        )
    for i in range(10):
        if i == 5:  # save and restore mid-run, as a resumed run does
            buf = io.BytesIO()
            torch.save({"w": w, "state": state}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            w, state = saved["w"], saved["state"]
        w, state = rules.step(rule, w, grad(loss)(w), state, lr=0.01)
    assert all(torch.equal(w[k], straight_w[k]) for k in w)
    assert repr(state) == repr(straight_s)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "hp", "named"),
    [
        ("sgd", {"lr": 0.0}, "lr=0.0"),
        ("sgd", {"lr": -0.1}, "lr=-0.1"),
        ("sgd", {"lr": math.nan}, "lr=nan"),
        ("rmsprop", {"lr": 0.1, "decay_rate": 1.0}, "decay_rate=1.0"),
        ("adam", {"lr": 0.1, "beta1": 1.5}, "beta1=1.5"),
        ("adam", {"lr": 0.1, "beta2": 0.0}, "beta2=0.0"),
        ("adagrad", {"lr": 0.1, "eps": 0.0}, "eps=0.0"),
        ("momentum", {"lr": 0.1, "mu": -0.5}, "mu=-0.5"),
        ("sgd", {"lr": torch.tensor([0.1, -2.0])}, "lr=-2.0 (population member 1)"),
        ("sgd", {"lr": 0.1, "momentum": 0.9}, "'momentum'"),
        ("sgd", {}, "lr is required"),
    ],
)
def test_bad_hyperparameter_raises_config_error_naming_the_value(
    rule: str, hp: dict, named: str
) -> None:
    w = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        rules.step(rule, w, w, rules.init_state(rule, w), **hp)


def test_unknown_rule_names_the_allowed_rules() -> None:
    with pytest.raises(ConfigError, match=r"'lbfgs2'.*sgd, momentum, nesterov"):
        rules.init_state("lbfgs2", torch.zeros(2))


def test_population_size_mismatch_names_the_hyperparameter() -> None:
    w = {"a": torch.zeros(4, 3), "b": torch.zeros(4)}
    with pytest.raises(ConfigError, match=r"mu has shape \(3,\).*\(4, 3\)"):
        rules.step("momentum", w, w, rules.init_state("momentum", w), lr=0.1, mu=torch.ones(3) / 2)


def test_dw_that_does_not_match_w_is_refused() -> None:
    w = {"a": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="shape"):
        rules.step("sgd", w, {"a": torch.zeros(3, 2)}, {}, lr=0.1)
    with pytest.raises(ValueError, match="keys"):
        rules.step("sgd", w, {"b": torch.zeros(2, 3)}, {}, lr=0.1)
