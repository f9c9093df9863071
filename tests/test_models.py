"""Model builders: init statistics against the formulas, chance loss, forward against torch ops."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from babysit import models
from babysit._registry import Registry
from babysit.data import load_digits
from babysit.errors import ConfigError
from babysit.models import ACTIVATIONS, MODELS, build_model, register_model

LN10 = math.log(10)  # the notes' chance loss for 10 classes: -ln(1/10) = 2.302


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return load_digits(seed=0).train


def _initial_loss(cfg: dict, seed: int, digits: tuple[torch.Tensor, torch.Tensor]) -> float:
    torch.manual_seed(seed)
    model = build_model("mlp", cfg, input_shape=(64,), num_classes=10)
    with torch.no_grad():
        return F.cross_entropy(model(digits[0]), digits[1]).item()


@pytest.mark.parametrize("seed", range(5))
def test_digits_mlp_initial_loss_is_at_chance(seed: int, digits: tuple) -> None:
    loss = _initial_loss({}, seed, digits)  # 64 -> [100] relu -> 10, he, out_scale 0.01
    assert abs(loss - LN10) / LN10 < 0.02


def test_full_size_output_weights_start_far_above_chance(digits: tuple) -> None:
    # measured on the seed-0 digits train set: 3.06, 2.81, 3.22, 2.88, 2.98 for seeds 0..4
    losses = [_initial_loss({"out_scale": 1.0}, seed, digits) for seed in range(5)]
    assert min(losses) > 2.4 and sum(losses) / 5 > 2.7


def test_softmax_is_one_linear_layer_starting_at_chance(digits: tuple) -> None:
    torch.manual_seed(0)
    model = build_model("softmax", {}, input_shape=(1, 8, 8), num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and (linears[0].in_features, linears[0].out_features) == (64, 10)
    x, y = digits
    with torch.no_grad():
        out = model(x.reshape(-1, 1, 8, 8))
        assert torch.allclose(out, x @ linears[0].weight.T + linears[0].bias, atol=1e-6)
        assert abs(F.cross_entropy(out, y).item() - LN10) / LN10 < 0.02


# --- init statistics: empirical std of a big layer against the formula ---------------------

FAN = 1000


@pytest.mark.parametrize(
    "cfg, hidden_std, out_std",
    [
        ({"init": "he"}, math.sqrt(2 / FAN), 0.01 * math.sqrt(2 / FAN)),
        ({"init": "xavier"}, math.sqrt(1 / FAN), 0.01 * math.sqrt(1 / FAN)),
        ({"init": "normal", "init_std": 0.05}, 0.05, 0.05),
        ({"init": "he", "init_scale": 10.0}, 10 * math.sqrt(2 / FAN), 0.1 * math.sqrt(2 / FAN)),
        ({"init": "normal", "init_scale": 0.01}, 1e-4, 1e-4),
        ({"init": "normal", "out_scale": 0.5}, 0.01, 0.005),
        ({"init": "he", "out_scale": 1.0}, math.sqrt(2 / FAN), math.sqrt(2 / FAN)),
    ],
)
def test_mlp_weight_std_matches_the_formula(cfg: dict, hidden_std: float, out_std: float) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [FAN], **cfg}, input_shape=(FAN,), num_classes=FAN)
    fc1, out = model.fc1.weight, model.out.weight  # (1000, 1000) each: 1e6 samples
    assert fc1.std().item() == pytest.approx(hidden_std, rel=0.01)
    assert out.std().item() == pytest.approx(out_std, rel=0.01)
    assert abs(fc1.mean().item()) < 0.01 * hidden_std
    # gaussian, not torch's default kaiming-uniform (whose |w| never exceeds sqrt(3) std)
    assert fc1.abs().max().item() > 4 * hidden_std


def test_conv_fan_in_counts_the_kernel() -> None:
    torch.manual_seed(0)
    model = build_model("convnet", {"channels": [64, 256]}, input_shape=(3, 8, 8), num_classes=10)
    weight = model.conv2.weight  # (256, 64, 3, 3): fan_in = 64 * 3 * 3
    assert weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert model.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.05)


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_biases_are_bias_init_in_hidden_layers_and_zero_at_the_output(name: str) -> None:
    model = build_model(name, {"bias_init": -5.0}, input_shape=(1, 8, 8), num_classes=10)
    for layer_name, layer in model.named_children():
        if isinstance(layer, nn.Linear | nn.Conv2d):
            want = 0.0 if layer_name == "out" else -5.0
            assert torch.all(layer.bias == want), layer_name


def test_negative_bias_init_kills_relus_on_digits(digits: tuple) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", {"bias_init": -5.0}, input_shape=(64,), num_classes=10)
    with torch.no_grad():
        hidden = model.act1(model.fc1(digits[0]))  # (N, 100)
    assert (hidden == 0).float().mean().item() > 0.95


# --- architecture: forward against explicit torch ops ---------------------------------------

FUNCTIONAL = {
    "relu": (nn.ReLU, F.relu),
    "tanh": (nn.Tanh, torch.tanh),
    "sigmoid": (nn.Sigmoid, torch.sigmoid),
    "leaky_relu": (nn.LeakyReLU, lambda z: F.leaky_relu(z, 0.01)),
}


def test_every_registered_activation_is_covered() -> None:
    assert set(ACTIVATIONS) == set(FUNCTIONAL)


@pytest.mark.parametrize("activation", sorted(FUNCTIONAL))
def test_mlp_forward_is_linear_activation_linear(activation: str) -> None:
    torch.manual_seed(0)
    module_cls, fn = FUNCTIONAL[activation]
    model = build_model(
        "mlp",
        {"hidden": [30, 20], "activation": activation, "out_scale": 1.0, "bias_init": 0.1},
        input_shape=(2, 3, 4),
        num_classes=5,
    )
    assert sum(isinstance(m, module_cls) for m in model.modules()) == 2  # visible to hooks
    x = torch.randn(7, 2, 3, 4)
    h = x.reshape(7, 24)
    for fc in (model.fc1, model.fc2):
        h = fn(h @ fc.weight.T + fc.bias)
    want = h @ model.out.weight.T + model.out.bias
    with torch.no_grad():
        assert torch.allclose(model(x), want, atol=1e-5)


@pytest.mark.parametrize("input_shape, flat", [((1, 8, 8), 32 * 2 * 2), ((3, 32, 32), 32 * 8 * 8)])
def test_convnet_shapes(input_shape: tuple[int, ...], flat: int) -> None:
    model = build_model("convnet", {}, input_shape=input_shape, num_classes=10)
    assert model.fc1.in_features == flat
    assert model(torch.randn(4, *input_shape)).shape == (4, 10)


def test_convnet_forward_is_conv_relu_pool_then_dense() -> None:
    torch.manual_seed(0)
    model = build_model(
        "convnet", {"channels": [4, 6], "hidden": [12]}, input_shape=(3, 8, 8), num_classes=5
    )
    x = torch.randn(2, 3, 8, 8)
    h = x
    for conv in (model.conv1, model.conv2):
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
    h = F.relu(h.flatten(1) @ model.fc1.weight.T + model.fc1.bias)
    want = h @ model.out.weight.T + model.out.bias
    with torch.no_grad():
        assert torch.allclose(model(x), want, atol=1e-5)


def test_dropout_is_active_in_train_mode_only() -> None:
    torch.manual_seed(0)
    cfg = {"hidden": [1000], "activation": "sigmoid", "dropout": 0.5}
    model = build_model("mlp", cfg, input_shape=(10,), num_classes=3)
    seen: list[torch.Tensor] = []
    model.drop1.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.randn(64, 10)
    model.train()
    model(x)
    with torch.no_grad():
        sig = torch.sigmoid(model.fc1(x))  # (64, 1000), never exactly 0
    dropped = seen[-1] == 0
    assert dropped.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.allclose(seen[-1][~dropped], 2 * sig[~dropped])  # inverted dropout: / (1 - p)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.allclose(seen[-1], sig)


def test_no_dropout_modules_without_dropout() -> None:
    for name in ("mlp", "convnet"):
        model = build_model(name, {}, input_shape=(1, 8, 8), num_classes=10)
        assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_convnet_dropout_feeds_every_linear() -> None:
    model = build_model("convnet", {"dropout": 0.3}, input_shape=(1, 8, 8), num_classes=10)
    kinds = [type(m) for m in model.children()]
    for i, kind in enumerate(kinds):
        if kind is nn.Linear:
            assert kinds[i - 1] is nn.Dropout


# --- registry and errors -----------------------------------------------------------------


def test_registry_holds_the_bundled_models() -> None:
    assert {"softmax", "mlp", "convnet"} <= set(MODELS)


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'.*softmax, mlp, convnet"):
        build_model("resnet", {}, input_shape=(64,), num_classes=10)


def test_unknown_key_lists_the_allowed_keys() -> None:
    with pytest.raises(ConfigError, match="unknown key 'hiden' = \\[50\\]") as err:
        build_model("mlp", {"hiden": [50]}, input_shape=(64,), num_classes=10)
    for key in ("activation", "bias_init", "dropout", "hidden", "init", "out_scale"):
        assert key in str(err.value)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("activation", "gelu", "relu, tanh, sigmoid, leaky_relu"),
        ("init", "kaiming", "he, xavier, normal"),
        ("dropout", 1.0, "[0, 1)"),
        ("dropout", -0.1, "[0, 1)"),
        ("dropout", True, "[0, 1)"),
        ("hidden", [100, 0], "positive ints"),
        ("hidden", "100", "positive ints"),
        ("init_std", -0.01, "number"),
        ("init_scale", float("nan"), "number"),
        ("out_scale", -1.0, "number"),
    ],
)
def test_bad_values_name_key_value_and_allowed(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model("mlp", {key: value}, input_shape=(64,), num_classes=10)
    message = str(err.value)
    assert f"{key} = {value!r}" in message and allowed in message and "'mlp'" in message


def test_convnet_rejects_flat_inputs_and_too_many_stages() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("convnet", {}, input_shape=(64,), num_classes=10)
    with pytest.raises(ConfigError, match="at most 3"):
        build_model("convnet", {"channels": [8, 8, 8, 8]}, input_shape=(1, 8, 8), num_classes=10)
    model = build_model("convnet", {"channels": [8, 8, 8]}, input_shape=(1, 8, 8), num_classes=10)
    assert model.fc1.in_features == 8  # 8x8 -> 1x1 after three pools


def test_register_model_adds_a_builder_with_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    scratch: Registry[Callable[..., nn.Module]] = Registry("model", error=ConfigError)
    for name, builder in MODELS.items():
        scratch.add(name, builder)
    monkeypatch.setattr(models, "MODELS", scratch)

    @register_model("tiny")
    def tiny(*, input_shape: tuple[int, ...], num_classes: int, width: int = 3) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    assert models.MODELS["tiny"] is tiny and "tiny" not in MODELS
    assert build_model("tiny", {"width": 5}, input_shape=(4,), num_classes=2)(
        torch.zeros(1, 4)
    ).shape == (1, 2)
    with pytest.raises(ConfigError, match="allowed keys: width"):
        build_model("tiny", {"depth": 2}, input_shape=(4,), num_classes=2)


def test_register_model_rejects_options_without_defaults() -> None:
    with pytest.raises(TypeError, match="keyword-only with a default"):

        @register_model("broken")
        def broken(*, input_shape: tuple[int, ...], num_classes: int, width: int) -> nn.Module:
            return nn.Identity()

    assert "broken" not in MODELS
