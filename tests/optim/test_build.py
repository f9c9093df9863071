"""babysit.optim.build: the notes' names reach torch.optim; LRController vs torch schedulers."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn

from babysit.errors import ConfigError
from babysit.optim import rules
from babysit.optim.build import OPTIMIZERS, LRController, create_optimizer, list_optimizers

# Non-default values, so a name mapped to the wrong torch argument shows.
HP = {"lr": 0.02, "mu": 0.7, "decay_rate": 0.999, "eps": 1e-5, "beta1": 0.8, "beta2": 0.99}


def _params(seed: int = 0) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(4, 3, dtype=torch.float64))]


def test_list_optimizers_has_every_rule_of_the_design() -> None:
    assert list_optimizers()[:6] == ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]


@pytest.mark.parametrize(
    ("rule", "cls", "expected"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0, "nesterov": False}),
        ("momentum", torch.optim.SGD, {"momentum": 0.7, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.7, "nesterov": True}),
        ("adagrad", torch.optim.Adagrad, {"eps": 1e-5, "lr_decay": 0}),
        ("rmsprop", torch.optim.RMSprop, {"alpha": 0.999, "eps": 1e-5, "momentum": 0}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-5}),
    ],
)
def test_create_optimizer_maps_the_notes_names_to_torch(
    rule: str, cls: type, expected: dict[str, Any]
) -> None:
    opt = create_optimizer(_params(), rule, HP)
    group = opt.param_groups[0]
    assert type(opt) is cls and group["lr"] == 0.02
    assert {k: group[k] for k in expected} == expected


def test_adagrad_gets_the_notes_eps_not_torchs_default() -> None:
    opt = create_optimizer(_params(), "adagrad", {"lr": 0.1})
    assert opt.param_groups[0]["eps"] == 1e-8  # torch's own default would be 1e-10


@pytest.mark.parametrize("rule", [r for r in list_optimizers() if r in rules.RULES])
def test_created_optimizer_follows_the_pure_rule_of_the_same_name(rule: str) -> None:
    (p,) = _params()
    w = p.detach().clone()
    target = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(4, 3)
    opt = create_optimizer([p], rule, HP)
    state = rules.init_state(rule, w)
    for _ in range(30):
        opt.zero_grad()
        (0.5 * ((p - target) ** 2).sum()).backward()
        opt.step()
        w, state = rules.step(rule, w, w - target, state, **HP)  # same quadratic's gradient
    assert float((w - p.detach()).abs().max()) < 1e-10


@pytest.mark.parametrize("rule", list_optimizers())
def test_every_optimizer_reduces_a_quadratic_with_default_hparams(rule: str) -> None:
    spec = OPTIMIZERS[rule]
    assert spec.name == rule and set(spec.hparams) <= set(rules.HP_DEFAULTS)
    (p,) = _params()
    opt = create_optimizer([p], rule, {"lr": 0.1})
    start = float((p.detach() ** 2).sum())

    def closure() -> torch.Tensor:  # every torch.optim rule accepts one; L-BFGS needs it
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    for _ in range(200):
        opt.step(closure)
    assert float((p.detach() ** 2).sum()) < 0.05 * start


@pytest.mark.parametrize(
    ("rule", "hp", "named"),
    [
        ("adam2", {"lr": 0.1}, r"'adam2'.*sgd, momentum, nesterov, adagrad, rmsprop, adam"),
        ("sgd", {"lr": 0.0}, "lr=0.0"),
        ("adam", {"lr": 0.1, "beta2": 1.0}, "beta2=1.0"),
        ("rmsprop", {"lr": 0.1, "decay_rate": 0.0}, "decay_rate=0.0"),
        ("adagrad", {"lr": 0.1, "eps": -1e-8}, "eps=-1e-08"),
        ("nesterov", {"lr": 0.1, "mu": 0.0}, "mu=0.0"),
        ("sgd", {"lr": 0.1, "learning_rate": 0.1}, "'learning_rate'"),
        ("momentum", {"mu": 0.9}, "lr is required"),
    ],
)
def test_bad_optimizer_config_raises_config_error_naming_it(
    rule: str, hp: dict[str, float], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        create_optimizer(_params(), rule, hp)


# --- LRController --------------------------------------------------------------------------


def _controller(
    kind: str, *, rule: str = "sgd", mu: float | None = None, spe: int = 4, **keys: Any
) -> tuple[LRController, torch.optim.Optimizer]:
    opt = create_optimizer(_params(), rule, {"lr": 0.1, "mu": 0.9})
    return LRController(opt, kind=kind, lr0=0.1, steps_per_epoch=spe, mu=mu, keys=keys), opt


def _torch_lrs(make: Any, epochs: int, metrics: list[float] | None = None) -> list[float]:
    """lr of each epoch under a torch scheduler stepped once per epoch (the oracle)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched, out = make(opt), []
    for e in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradients: changes nothing, keeps torch's call-order check quiet
        sched.step(*([metrics[e]] if metrics else []))
    return out


def test_step_schedule_matches_torch_step_lr() -> None:
    ctrl, opt = _controller("step", every=2, factor=0.5)
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5), 9)
    for s in range(36):  # 9 epochs of 4 steps: lr changes only at epoch boundaries
        lr, mu = ctrl.at_step(s)
        assert lr == opt.param_groups[0]["lr"] == pytest.approx(want[s // 4], rel=1e-12)
        assert mu is None


def test_exp_schedule_matches_torch_exponential_lr_at_whole_epochs() -> None:
    ctrl, _ = _controller("exp", k=0.3)
    want = _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, math.exp(-0.3)), 8)
    got = [ctrl.at_step(4 * e)[0] for e in range(8)]
    assert got == pytest.approx(want, rel=1e-12)
    assert ctrl.at_step(2)[0] == pytest.approx(0.1 * math.exp(-0.15), rel=1e-12)  # t = 0.5


def test_inv_schedule_uses_fractional_epochs() -> None:
    ctrl, opt = _controller("inv", k=1.0, spe=4)
    assert [ctrl.at_step(s)[0] for s in (0, 2, 4, 12)] == pytest.approx(
        [0.1, 0.1 / 1.5, 0.05, 0.025]
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_plateau_controller_matches_torch_reduce_lr_on_plateau() -> None:
    metrics = [0.5, 0.6, 0.6, 0.6, 0.6, 0.61, 0.61, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    ctrl, opt = _controller("plateau", patience=2, factor=0.5, threshold=1e-3)
    want = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
            o, mode="max", factor=0.5, patience=2, threshold=1e-3, threshold_mode="abs"
        ),
        len(metrics),
        metrics,
    )
    got = []
    for e, m in enumerate(metrics):
        got.append(ctrl.at_step(4 * e)[0])
        assert opt.param_groups[0]["lr"] == got[-1]
        ctrl.end_epoch(m, mode="max")
    assert len(set(want)) >= 3 and got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("rule", "read"), [("nesterov", "momentum"), ("adam", "betas")])
def test_momentum_schedule_reaches_the_optimizer(rule: str, read: str) -> None:
    ctrl, opt = _controller("none", rule=rule, mu=0.99, mu_start=0.5, mu_epochs=2)
    mus = [ctrl.at_step(s)[1] for s in (0, 2, 4, 8, 20)]  # t = 0, 0.5, 1, 2, 5
    assert mus == pytest.approx([0.5, 0.6225, 0.745, 0.99, 0.99], rel=1e-12)
    group = opt.param_groups[0]
    assert group[read] == ((0.99, 0.999) if read == "betas" else 0.99)


def test_without_mu_the_optimizers_momentum_is_left_alone() -> None:
    ctrl, opt = _controller("step", rule="momentum", mu=None)
    assert ctrl.at_step(3) == (0.1, None) and opt.param_groups[0]["momentum"] == 0.9


def test_momentum_for_a_rule_without_momentum_is_refused() -> None:
    with pytest.raises(ConfigError, match="Adagrad has no momentum"):
        _controller("none", rule="adagrad", mu=0.9)


def test_controller_state_round_trips_through_a_weights_only_checkpoint() -> None:
    metrics = [0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    straight, _ = _controller("plateau", patience=1)
    want = []
    for m in metrics:
        want.append(straight.at_step(0)[0])
        straight.end_epoch(m, mode="max")
    first, _ = _controller("plateau", patience=1)
    got = []
    for m in metrics[:4]:
        got.append(first.at_step(0)[0])
        first.end_epoch(m, mode="max")
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second, opt = _controller("plateau", patience=1)
    second.load_state_dict(torch.load(buf, weights_only=True))
    assert opt.param_groups[0]["lr"] == got[-1] == 0.05  # re-applied on load (was 0.1)
    for m in metrics[4:]:
        got.append(second.at_step(0)[0])
        second.end_epoch(m, mode="max")
    assert got == want and len(set(want)) >= 3


def test_loading_another_kinds_state_is_refused() -> None:
    ctrl, _ = _controller("step")
    other, _ = _controller("exp")
    with pytest.raises(ConfigError, match=r"'step'.*'exp'"):
        other.load_state_dict(ctrl.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"kind": "cosine"}, "'cosine'"),
        ({"lr0": 0.0}, "lr0=0.0"),
        ({"steps_per_epoch": 0}, "steps_per_epoch=0"),
        ({"keys": {"factor": 2.0}}, "factor=2.0"),
    ],
)
def test_bad_controller_arguments_raise_config_error(kwargs: dict, named: str) -> None:
    args: dict[str, Any] = {"kind": "step", "lr0": 0.1, "steps_per_epoch": 4, "mu": None}
    args["keys"] = {}
    with pytest.raises(ConfigError, match=named):
        LRController(create_optimizer(_params(), "sgd", {"lr": 0.1}), **{**args, **kwargs})
