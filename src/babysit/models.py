"""Model builders registered by name: ``softmax``, ``mlp``, ``convnet``.

A builder is a function with keyword-only options, each with a default, plus ``input_shape``
and ``num_classes``; its signature is the list of keys a config's ``[model]`` table may set::

    @register_model("mlp")
    def mlp(*, input_shape, num_classes, hidden=(100,), activation="relu", ...) -> nn.Module

Initialisation is explicit (torch's default init is never relied on). A weight tensor with
fan_in inputs per unit gets N(0, s^2) with
  he:     s = sqrt(2 / fan_in)   (He et al. 2015; for relu / leaky_relu)
  xavier: s = sqrt(1 / fan_in)   (the notes' calibration w = randn(n) / sqrt(n); Glorot's
                                  sqrt(2 / (fan_in + fan_out)) is not what is used)
  normal: s = init_std
times ``init_scale`` on every layer. The output layer is scaled by ``out_scale`` on top,
0.01 by default for he / xavier: the notes want small output weights at init so that the
class scores are near zero and the initial loss is at chance (ln C, 2.302 for 10 classes).
For ``normal`` the output layer keeps init_std * init_scale (out_scale 1) unless given.
Hidden biases are ``bias_init`` (0; a negative value plants dead relus), output biases 0.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from babysit.errors import ConfigError

__all__ = ["ACTIVATIONS", "INITS", "MODELS", "InitScheme", "build_model", "register_model"]

ModelBuilder = Callable[..., nn.Module]
MODELS: dict[str, ModelBuilder] = {}

# nn modules, not functionals, so that forward hooks (monitor probes) can see every activation.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class InitScheme:
    """Weight std as a function of (fan_in, init_std), and the default output-layer scale."""

    std: Callable[[int, float], float]
    out_scale: float


INITS: dict[str, InitScheme] = {
    "he": InitScheme(lambda fan_in, _: math.sqrt(2.0 / fan_in), out_scale=0.01),
    "xavier": InitScheme(lambda fan_in, _: math.sqrt(1.0 / fan_in), out_scale=0.01),
    "normal": InitScheme(lambda _, init_std: init_std, out_scale=1.0),
}

_SHAPE_ARGS = ("input_shape", "num_classes")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder under ``name``; its keyword-only options become the allowed keys."""

    def register(fn: ModelBuilder) -> ModelBuilder:
        params = inspect.signature(fn).parameters
        bad = [
            p.name
            for p in params.values()
            if p.kind is not inspect.Parameter.KEYWORD_ONLY
            or (p.default is inspect.Parameter.empty and p.name not in _SHAPE_ARGS)
        ]
        if bad or not set(_SHAPE_ARGS) <= set(params):
            raise TypeError(
                f"model builder {name!r}: every parameter must be keyword-only with a default,"
                f" plus input_shape and num_classes (offending: {', '.join(bad) or 'none'})"
            )
        MODELS[name] = fn
        return fn

    return register


def allowed_keys(name: str) -> list[str]:
    """The config keys a registered model accepts, sorted."""
    return sorted(p for p in inspect.signature(MODELS[name]).parameters if p not in _SHAPE_ARGS)


def build_model(
    name: str, cfg: Mapping[str, Any], *, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build the registered model ``name`` from a ``[model]`` table; ConfigError on bad input."""
    if name not in MODELS:
        raise ConfigError(
            f"model {name!r} is not registered; use one of: {', '.join(sorted(MODELS))}"
        )
    allowed = allowed_keys(name)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown key {unknown[0]!r} = {cfg[unknown[0]]!r};"
            f" allowed keys: {', '.join(allowed)}"
        )
    return MODELS[name](**cfg, input_shape=tuple(input_shape), num_classes=num_classes)


# --- option checks: each names the model, key, value and what is allowed --------------------


def _choice(model: str, key: str, value: Any, allowed: Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(
            f"model {model!r}: {key} = {value!r} is not allowed; use one of: {', '.join(allowed)}"
        )
    return value


def _number(model: str, key: str, value: Any, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite real in [low, high)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value < high:
        raise ConfigError(
            f"model {model!r}: {key} = {value!r} is not allowed;"
            f" use a number in [{low:g}, {high:g})"
        )
    return float(value)


def _widths(model: str, key: str, value: Any) -> list[int]:
    is_list = isinstance(value, Sequence) and not isinstance(value, str)
    if not is_list or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ConfigError(
            f"model {model!r}: {key} = {value!r} is not allowed; use a list of positive ints,"
            " e.g. [100]"
        )
    return list(value)


@dataclass(frozen=True)
class _Init:
    """Resolved init options: weight std per layer is scheme.std(fan_in) * scale."""

    scheme: InitScheme
    init_std: float
    scale: float
    out_scale: float
    bias: float

    def apply(self, layer: nn.Linear | nn.Conv2d, *, output: bool = False) -> None:
        """Fill ``layer`` in place: weights N(0, std^2), bias constant."""
        fan_in = layer.weight[0].numel()  # in_features, or in_channels * k * k
        std = self.scheme.std(fan_in, self.init_std) * self.scale
        with torch.no_grad():
            layer.weight.normal_(0.0, std * self.out_scale if output else std)
            if layer.bias is not None:
                layer.bias.fill_(0.0 if output else self.bias)


def _init(
    model: str, init: Any, init_std: Any, init_scale: Any, out_scale: Any, bias_init: Any
) -> _Init:
    scheme = INITS[_choice(model, "init", init, INITS)]
    if out_scale is not None:
        out_scale = _number(model, "out_scale", out_scale)
    return _Init(
        scheme=scheme,
        init_std=_number(model, "init_std", init_std),
        scale=_number(model, "init_scale", init_scale),
        out_scale=scheme.out_scale if out_scale is None else out_scale,
        bias=_number(model, "bias_init", bias_init, low=-math.inf),
    )


def _dense(
    layers: OrderedDict[str, nn.Module],
    fan_in: int,
    hidden: list[int],
    num_classes: int,
    *,
    act: Callable[[], nn.Module],
    dropout: float,
    init: _Init,
    drop_input: bool,
) -> None:
    """Append fc1, act1, [drop1], ..., out. Dropout feeds every Linear but one that sees data."""
    widths = [fan_in, *hidden]
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths), start=1):
        if dropout > 0 and (drop_input or i > 1):
            layers[f"drop{i - 1}"] = nn.Dropout(dropout)
        layers[f"fc{i}"] = fc = nn.Linear(n_in, n_out)
        init.apply(fc)
        layers[f"act{i}"] = act()
    if dropout > 0 and (drop_input or hidden):
        layers[f"drop{len(hidden)}"] = nn.Dropout(dropout)
    layers["out"] = out = nn.Linear(widths[-1], num_classes)
    init.apply(out, output=True)


@register_model("softmax")
def softmax(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    init: str = "he",
    init_std: float = 0.01,
    init_scale: float = 1.0,
    out_scale: float | None = None,
) -> nn.Module:
    """Linear classifier: flatten, Linear(prod(input_shape), C); its one layer is the output."""
    spec = _init("softmax", init, init_std, init_scale, out_scale, 0.0)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    _dense(
        layers,
        math.prod(input_shape),
        [],
        num_classes,
        act=nn.Identity,
        dropout=0.0,
        init=spec,
        drop_input=False,
    )
    return nn.Sequential(layers)


@register_model("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (100,),
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "he",
    init_std: float = 0.01,
    init_scale: float = 1.0,
    bias_init: float = 0.0,
    out_scale: float | None = None,
) -> nn.Module:
    """Fully connected net: flatten, (Linear, activation, [Dropout]) per hidden width, Linear."""
    widths = _widths("mlp", "hidden", hidden)
    act = ACTIVATIONS[_choice("mlp", "activation", activation, ACTIVATIONS)]
    p = _number("mlp", "dropout", dropout, high=1.0)
    spec = _init("mlp", init, init_std, init_scale, out_scale, bias_init)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    _dense(
        layers,
        math.prod(input_shape),
        widths,
        num_classes,
        act=act,
        dropout=p,
        init=spec,
        drop_input=False,
    )
    return nn.Sequential(layers)


@register_model("convnet")
def convnet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
    init: str = "he",
    init_std: float = 0.01,
    init_scale: float = 1.0,
    bias_init: float = 0.0,
    out_scale: float | None = None,
) -> nn.Module:
    """Small convnet: (Conv3x3 pad 1, activation, MaxPool2d(2)) per channel count, then an mlp.

    On (C, H, W) each stage halves H and W, so the conv stack flattens to
    channels[-1] * (H // 2**k) * (W // 2**k) features for k stages; dropout (when > 0) feeds
    every Linear layer, including the first.
    """
    stages = _widths("convnet", "channels", channels)
    widths = _widths("convnet", "hidden", hidden)
    act = ACTIVATIONS[_choice("convnet", "activation", activation, ACTIVATIONS)]
    p = _number("convnet", "dropout", dropout, high=1.0)
    spec = _init("convnet", init, init_std, init_scale, out_scale, bias_init)
    if len(input_shape) != 3:
        raise ConfigError(
            f"model 'convnet': input_shape {tuple(input_shape)} is not (channels, height, width);"
            " use mlp for flat inputs or load images with image=True"
        )
    c, h, w = input_shape
    if min(h, w) // 2 ** len(stages) < 1:
        raise ConfigError(
            f"model 'convnet': channels = {stages} has {len(stages)} pooling stages, too many for"
            f" {h}x{w} inputs; use at most {int(math.log2(min(h, w)))}"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, c_out in enumerate(stages, start=1):  # (B, c, h, w) -> (B, c_out, h // 2, w // 2)
        layers[f"conv{i}"] = conv = nn.Conv2d(c, c_out, kernel_size=3, padding=1)
        spec.apply(conv)
        layers[f"conv_act{i}"] = act()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        c, h, w = c_out, h // 2, w // 2
    layers["flatten"] = nn.Flatten()  # (B, c * h * w)
    _dense(layers, c * h * w, widths, num_classes, act=act, dropout=p, init=spec, drop_input=True)
    return nn.Sequential(layers)
