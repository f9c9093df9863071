"""A user task: your own model, data and loss, as babysit sees them.

Use it with `babysit train examples/my-task.toml`
(task.name = "examples/my_task.py:make_task", or "my_task:make_task" from examples/).
"""

import torch
from torch import nn

import babysit


class TwoLayerNet(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@babysit.task
def make_task(n: int = 300, seed: int = 0) -> babysit.Task:
    """Three Gaussian blobs in 2-D, split 200 / 100 into train / val."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]])
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + 0.7 * torch.randn(n, 2, generator=g)
    return babysit.Task(
        model_factory=lambda cfg: TwoLayerNet(**cfg),  # cfg is the config's [model] table
        train=(x[:200], y[:200]),
        val=(x[200:], y[200:]),
        loss_fn=nn.functional.cross_entropy,
        num_classes=3,
    )
