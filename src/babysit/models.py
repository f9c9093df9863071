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
from typing import Any, cast

import torch
from torch import nn

from babysit._memory import check_fits
from babysit._registry import Registry
from babysit.errors import ConfigError
from babysit.optim.hparams import HPARAMS

__all__ = ["ACTIVATIONS", "INITS", "MODELS", "InitScheme", "build_model", "register_model"]

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", error=ConfigError)

# nn modules, not functionals, so that forward hooks (monitor probes) can see every activation.
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation", error=ConfigError)
ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("tanh", nn.Tanh)
ACTIVATIONS.add("sigmoid", nn.Sigmoid)
ACTIVATIONS.add("leaky_relu", nn.LeakyReLU)


@dataclass(frozen=True)
class InitScheme:
    """Weight std as a function of (fan_in, init_std), and the default output-layer scale."""

    std: Callable[[int, float], float]
    out_scale: float


INITS: Registry[InitScheme] = Registry("init", error=ConfigError)
INITS.add("he", InitScheme(lambda fan_in, _: math.sqrt(2.0 / fan_in), out_scale=0.01))
INITS.add("xavier", InitScheme(lambda fan_in, _: math.sqrt(1.0 / fan_in), out_scale=0.01))
INITS.add("normal", InitScheme(lambda _, init_std: init_std, out_scale=1.0))
_DROPOUT = HPARAMS["model.dropout"]  # its range and default: optim/hparams.py
_NO_DROPOUT = cast(float, _DROPOUT.default)

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
        MODELS.add(name, fn)
        return fn

    return register


def allowed_keys(name: str) -> list[str]:
    """The config keys a registered model accepts, sorted."""
    return sorted(p for p in inspect.signature(MODELS[name]).parameters if p not in _SHAPE_ARGS)


def build_model(
    name: str, cfg: Mapping[str, Any], *, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build the registered model ``name`` from a ``[model]`` table; ConfigError on bad input."""
    builder = MODELS.get_or_raise(name)
    allowed = allowed_keys(name)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown key {unknown[0]!r} = {cfg[unknown[0]]!r};"
            f" allowed keys: {', '.join(allowed)}"
        )
    with torch.device("meta"):  # sized before it is allocated: no memory behind meta tensors
        sized = builder(**cfg, input_shape=tuple(input_shape), num_classes=num_classes)
    n = sum(p.numel() for p in sized.parameters())
    table = ", ".join(f"{k} = {v!r}" for k, v in cfg.items()) or "defaults"
    table = table if len(table) < 200 else table[:200] + " ..."
    check_fits(
        f"model {name!r} ({table}: {n:,} parameters, with their gradients)",
        2 * sum(p.numel() * p.element_size() for p in sized.parameters()),
        fix="make the model smaller",
    )
    return builder(**cfg, input_shape=tuple(input_shape), num_classes=num_classes)


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


def _init(model: str, o: Mapping[str, Any]) -> _Init:
    """Check the init options in ``o`` (init, init_std, init_scale, out_scale, bias_init)."""
    scheme = INITS[_choice(model, "init", o["init"], INITS)]
    out_scale = o["out_scale"]
    return _Init(
        scheme=scheme,
        init_std=_number(model, "init_std", o["init_std"]),
        scale=_number(model, "init_scale", o["init_scale"]),
        out_scale=scheme.out_scale if out_scale is None else _number(model, "out_scale", out_scale),
        bias=_number(model, "bias_init", o.get("bias_init", 0.0), low=-math.inf),
    )


@dataclass(frozen=True)
class _Dense:
    """Resolved options of a fully connected stack: hidden widths, activation, dropout, init."""

    hidden: list[int]
    act: Callable[[], nn.Module]
    dropout: float
    init: _Init

    @classmethod
    def of(cls, model: str, o: Mapping[str, Any]) -> _Dense:
        """Check a builder's options ``o`` (ConfigError naming the model, key and value)."""
        reason = _DROPOUT.problem(o["dropout"], name="dropout")
        if reason is not None:
            raise ConfigError(f"model {model!r}: dropout = {o['dropout']!r} is {reason}")
        return cls(
            hidden=_widths(model, "hidden", o["hidden"]),
            act=ACTIVATIONS[_choice(model, "activation", o["activation"], ACTIVATIONS)],
            dropout=float(o["dropout"]),
            init=_init(model, o),
        )

    def append(
        self,
        layers: OrderedDict[str, nn.Module],
        fan_in: int,
        num_classes: int,
        *,
        drop_input: bool,
    ) -> None:
        """Append fc1, act1, [drop1], ..., out. Dropout feeds every Linear but one that sees
        data (unless ``drop_input``)."""
        widths = [fan_in, *self.hidden]
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths), start=1):
            if self.dropout > 0 and (drop_input or i > 1):
                layers[f"drop{i - 1}"] = nn.Dropout(self.dropout)
            layers[f"fc{i}"] = fc = nn.Linear(n_in, n_out)
            self.init.apply(fc)
            layers[f"act{i}"] = self.act()
        if self.dropout > 0 and (drop_input or self.hidden):
            layers[f"drop{len(self.hidden)}"] = nn.Dropout(self.dropout)
        layers["out"] = out = nn.Linear(widths[-1], num_classes)
        self.init.apply(out, output=True)


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
    spec = _init("softmax", locals())  # the options as given
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    _Dense([], nn.Identity, 0.0, spec).append(
        layers, math.prod(input_shape), num_classes, drop_input=False
    )
    return nn.Sequential(layers)


@register_model("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (100,),
    activation: str = "relu",
    dropout: float = _NO_DROPOUT,
    init: str = "he",
    init_std: float = 0.01,
    init_scale: float = 1.0,
    bias_init: float = 0.0,
    out_scale: float | None = None,
) -> nn.Module:
    """Fully connected net: flatten, (Linear, activation, [Dropout]) per hidden width, Linear."""
    dense = _Dense.of("mlp", locals())  # the options as given
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    dense.append(layers, math.prod(input_shape), num_classes, drop_input=False)
    return nn.Sequential(layers)


@register_model("convnet")
def convnet(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = _NO_DROPOUT,
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
    dense = _Dense.of("convnet", locals())  # the options it shares with mlp, as given
    stages = _widths("convnet", "channels", channels)
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
        dense.init.apply(conv)
        layers[f"conv_act{i}"] = dense.act()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        c, h, w = c_out, h // 2, w // 2
    layers["flatten"] = nn.Flatten()  # (B, c * h * w)
    dense.append(layers, c * h * w, num_classes, drop_input=True)
    return nn.Sequential(layers)
