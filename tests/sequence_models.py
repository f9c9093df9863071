"""A tiny GPT-like language model and its data, shared by the sequence-model tests.

The model has nanoGPT's interface, ``forward(idx, targets=None) -> (logits, loss)`` with
logits (B, T, V) and the loss ignoring targets of -1; :class:`LogitsOnly` is the few-line
wrapper a user writes to hand it to babysit. The data: sequences whose next token is the
sum of the two before it mod V (the first target is a coin toss: reachable accuracy
(T - 1) / T + 1 / (V T)), so per-token accuracy can climb far above chance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from babysit.tasks import Task

VOCAB, BLOCK = 11, 8


class Block(nn.Module):
    """Pre-norm causal self-attention and an MLP, as nanoGPT's Block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return h + self.mlp(self.ln2(h))


class TinyGPT(nn.Module):
    """Token and position embeddings, one block, a final LayerNorm and the LM head."""

    def __init__(self, vocab: int = VOCAB, block: int = BLOCK, dim: int = 32) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
        self.block, self.ln = Block(dim, heads=2), nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        with torch.no_grad():  # small last layer: the loss at init is ln V (nanoGPT: 0.02 std)
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        logits = self.head(self.ln(self.block(h)))  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, lm_loss(logits, targets)


class LogitsOnly(nn.Module):
    """The wrapper: babysit wants the logits; the loss goes in Task.loss_fn."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.gpt(idx)[0]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nanoGPT's loss: cross-entropy over the flattened tokens, -1 ignored."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)


def sequences(n: int, *, seed: int, vocab: int = VOCAB, block: int = BLOCK) -> torch.Tensor:
    """(n, block + 1) tokens: two random ones, then each the sum of the two before mod V."""
    g = torch.Generator().manual_seed(seed)
    s = torch.zeros(n, block + 1, dtype=torch.long)
    s[:, :2] = torch.randint(0, vocab, (n, 2), generator=g)
    for t in range(2, block + 1):
        s[:, t] = (s[:, t - 1] + s[:, t - 2]) % vocab
    return s


def lm_pairs(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) = (tokens[:, :-1], tokens[:, 1:]): inputs and next-token targets, (n, T) each."""
    s = sequences(n, seed=seed)
    return s[:, :-1].clone(), s[:, 1:].clone()  # apart: padding y must not change x


def lm_task(n_train: int = 256, n_val: int = 64, **kw: object) -> Task:
    """The tiny GPT on sum-of-two-before sequences, as a babysit Task."""

    def factory(cfg: dict[str, object]) -> nn.Module:
        return LogitsOnly(TinyGPT())

    return Task(
        model_factory=factory,
        train=lm_pairs(n_train, seed=0),
        val=lm_pairs(n_val, seed=1),
        loss_fn=lm_loss,
        num_classes=VOCAB,
        **kw,  # type: ignore[arg-type]
    )
