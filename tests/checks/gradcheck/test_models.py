"""Correct models people train, built from the setups that once gave false alarms: max-pool
ties on flat backgrounds, zero biases with black borders and padding samples, BatchNorm, several
units at kinks, kinks the recorder does not know, scaled parameters, a small transformer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from babysit.checks.gradcheck.check import gradcheck


def flat_background(n: int, seed: int, size: int = 12) -> tuple[Tensor, Tensor]:
    """MNIST-like: a constant background (normalised 0 -> -0.42) and a patch of strokes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(1, size // 2, (2,), generator=g).tolist()
        patch = torch.rand(5, 5, generator=g) * (torch.rand(5, 5, generator=g) > 0.5)
        x[i, 0, r : r + 5, c : c + 5] = patch
    return (x - 0.1307) / 0.3081, torch.randint(0, 10, (n,), generator=g)


class ExamplesNet(nn.Module):
    """The PyTorch examples' MNIST net, narrowed: conv-relu-conv-relu-maxpool-fc-relu-fc."""

    def __init__(self, size: int = 12) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)
        self.fc1, self.fc2 = nn.Linear(8 * ((size - 4) // 2) ** 2, 16), nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


def test_max_pool_ties_on_flat_backgrounds_never_fail_and_never_enlarge_h() -> None:
    # The flat background makes whole max-pool windows equal: kinks *at* the point, which a
    # step cannot avoid. Once called "round-off dominated" (h enlarged 100x: a false fail).
    for seed in range(6):
        torch.manual_seed(seed)
        x, y = flat_background(6, seed)
        report = gradcheck(ExamplesNet(), F.nll_loss, x, y, wrt="inputs", seed=seed)
        assert report.passed, f"seed {seed}\n{report}"
        assert report.row("inputs").verdict in ("ok", "inconclusive")
        assert report.thresholds["ties"].get("max_pool2d_with_indices", 0) > 0
        assert not any("enlarged" in w for w in report.warnings)
        assert any(w.startswith("ties at the checked point") for w in report.warnings)


def black_borders(n: int, seed: int, size: int = 10) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    x[:, :, 3:-3, 3:-3] = torch.randn(n, 3, size - 6, size - 6, generator=g)
    return x, torch.randint(0, 4, (n,), generator=g)


def zero_biases(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def test_zero_biases_on_black_borders_never_fail() -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        model = zero_biases(
            nn.Sequential(
                nn.Conv2d(3, 6, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(6, 8, 3, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(8 * 25, 4),
            )
        )
        report = gradcheck(model, F.cross_entropy, *black_borders(8, seed), seed=seed)
        assert report.passed, f"seed {seed}\n{report}"
        assert "relu" in report.thresholds["ties"]  # u = w * 0 + 0: exactly at the kink


def test_zero_biases_and_an_all_zero_padding_sample_never_fail() -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        model = zero_biases(
            nn.Sequential(
                nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
            )
        )
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        x[1] = 0.0  # a padding sample among the checked datapoints
        report = gradcheck(model, F.cross_entropy, x, y, seed=seed)
        assert report.passed, f"seed {seed}\n{report}"


class BasicBlock(nn.Module):
    """The CIFAR ResNet's block (kuangliu/pytorch-cifar): conv-BN-relu-conv-BN + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


def resnet_block_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        BasicBlock(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def test_batchnorm_resnet_block_gets_a_verdict_for_every_tensor_by_default() -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        model = resnet_block_net().train()
        x, y = torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))
        running = [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        report = gradcheck(model, F.cross_entropy, x, y, seed=seed)  # 4 datapoints
        assert report.passed and {p.verdict for p in report.params} == {"ok"}, str(report)
        assert any(w.startswith("BatchNorm in train mode") for w in report.warnings)
        after = [m.running_mean for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))


def test_a_bias_before_batchnorm_has_a_zero_gradient_and_is_said_so() -> None:
    # Under batch statistics the mean is subtracted: the Linear's bias does not change the
    # loss, its gradient is exactly 0 (round-off analytically). Once: "round-off dominated".
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 4))
    report = gradcheck(model, F.cross_entropy, torch.randn(8, 6), torch.randint(0, 4, (8,)))
    assert report.passed and report.row("0.bias").verdict == "ok"
    assert any("0.bias: the gradient is zero to round-off" in w for w in report.warnings)


# Each places unit(s) of the first layer's output within 1e-8 of a kink on sample 0.
def _placed(act: Callable[[Tensor], Tensor]) -> Callable[[int], nn.Module]:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(6, 16), nn.Linear(16, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.out(act(self.fc(x)))

    def make(units: int) -> nn.Module:
        net = Net().double()
        with torch.no_grad():
            u = net.fc(X[:1])[0]
            signs = [1e-8, -1e-8] * units  # at +d and -d of the kink, alternately
            for i in range(units):
                net.fc.bias[i] += KINK_AT - u[i] + signs[i] * (i + 1) / units
        return net

    return make


KINK_AT = 0.0
X = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
Y = torch.tensor([0, 2, 1, 3])
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "abs": torch.abs,
    "clamp": lambda t: t.clamp(min=0, max=3),
    "where": lambda t: torch.where(t > 0, t, 0.2 * t),
    "maximum": lambda t: torch.maximum(t, 0.1 * t),
    "max_pool": lambda t: pool_with_zero(t),
}


def pool_with_zero(t: Tensor) -> Tensor:
    """max(t, 0) as a max-pool over (t_i, 0) pairs."""
    pairs = torch.stack([t, torch.zeros_like(t)], -1).flatten(-2)  # (N, 2C)
    return F.max_pool1d(pairs[:, None], 2)[:, 0]


@pytest.mark.parametrize("units", [4, 2])
@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
def test_several_units_near_kinks_on_both_sides_never_fail(op: str, units: int) -> None:
    make = _placed(ACTIVATIONS[op])
    for seed in range(50):
        torch.manual_seed(seed)
        report = gradcheck(make(units), F.cross_entropy, X, Y, seed=seed, coords_per_param=16)
        assert report.passed, f"{op} x{units} seed {seed}\n{report}"


class CdistNet(nn.Module):
    """Scores from L1 distances to learned prototypes (torch.cdist p=1)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 5)
        self.protos = nn.Parameter(torch.randn(4, 5))

    def forward(self, x: Tensor) -> Tensor:
        return -torch.cdist(self.embed(x), self.protos, p=1)


def multilabel(scores: Tensor, y: Tensor) -> Tensor:
    target = torch.full_like(scores, -1, dtype=torch.long)
    target[:, 0], target[:, 1] = y, (y + 1) % scores.shape[1]
    return F.multilabel_margin_loss(scores, target)


def test_kinks_of_cdist_and_multilabel_margin_never_fail() -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        for model, loss in ((CdistNet(), F.cross_entropy), (nn.Linear(6, 4), multilabel)):
            report = gradcheck(model, loss, x, y, seed=seed)
            assert report.passed and not any("enlarged" in w for w in report.warnings), str(report)


def test_large_inputs_with_small_weights_are_ok() -> None:
    # inputs x 1e3, first-layer weights x 1e-3: the same function; steps follow the scale.
    for seed in range(5):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
        with torch.no_grad():
            model[0].weight.mul_(1e-3)
        g = torch.Generator().manual_seed(seed)
        x, y = 1e3 * torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        report = gradcheck(model, F.cross_entropy, x, y, seed=seed)
        assert {p.verdict for p in report.params} == {"ok"}, str(report)


class TinyGPT(nn.Module):
    """nanoGPT's shape in miniature: embeddings, a causal attention block, GELU MLP, tied head."""

    def __init__(self, vocab: int = 17, d: int = 16, t: int = 6) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t, d)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.ndim == 2 else None

    def forward(self, idx: Tensor) -> Tensor:
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t))
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, 2, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, -1))
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return self.head(self.lnf(x))


def lm_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def test_a_small_transformer_is_ok_on_every_tensor_not_warn() -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        idx, y = (
            torch.randint(0, 17, (4, 6), generator=g),
            torch.randint(0, 17, (4, 6), generator=g),
        )
        model = TinyGPT()
        report = gradcheck(model, lm_loss, idx, y, seed=seed)
        names = [n for n, _ in model.named_parameters()]
        assert [p.name for p in report.params] == names  # the tied head once
        assert {p.verdict for p in report.params} == {"ok"}, str(report)


# --- samples beyond the checked datapoints; padding rows ----------------------------------


class LateSamplesBug(torch.autograd.Function):
    """Identity whose backward drops the gradient of samples 5..8 (a length-sorted batch)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        g = g.clone()
        g[4:] = 0
        return g


class LateSamplesNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return LateSamplesBug.apply(self.fc(x))


def test_a_bug_in_samples_beyond_the_checked_datapoints_fails_the_whole_batch_row() -> None:
    for seed in range(10):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        report = gradcheck(LateSamplesNet(), F.cross_entropy, x, y, seed=seed)
        assert not report.passed and report.row("whole batch").verdict == "fail", str(report)
        assert {report.row(n).verdict for n in ("fc.weight", "fc.bias")} == {"ok"}  # samples 1-4
        assert "samples: 4 of 8" in str(report)


def test_an_embedding_padding_row_is_left_out_and_said_so() -> None:
    for seed in range(5):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Flatten(), nn.Linear(12, 3))
        with torch.no_grad():
            model[0].weight[0] = torch.randn(4)  # padded positions reach the loss
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, 10, (6, 3), generator=g)
        idx[:, -1] = 0  # padding
        report = gradcheck(model, F.cross_entropy, idx, torch.randint(0, 3, (6,), generator=g))
        assert report.passed and report.row("0.weight").verdict == "ok", str(report)
        assert any("0.weight: row 0 (padding_idx)" in w for w in report.warnings)
