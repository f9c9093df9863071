"""babysit.watch() in plain PyTorch loops, checked against values computed independently."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from babysit.errors import ConfigError
from babysit.monitor.diagnose import diagnose
from babysit.monitor.log import MetricsWriter, read_metrics
from babysit.monitor.watch import watch


def _mlp(seed: int = 0, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 3))


def _batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _probes(path: Path, name: str) -> list[dict[str, Any]]:
    return [r for r in read_metrics(path, kind="probe") if r["name"] == name]


def _train_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_batch_records_have_fractional_epochs_lr_mu_and_the_losses(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    with watch(model, opt, log_dir=tmp_path, steps_per_epoch=4) as mon:
        for i in range(6):
            x, y = _batch(seed=i)
            loss = _train_step(model, opt, x, y)
            losses.append(loss.item())
            mon.step(loss, data_loss=loss, reg_loss=0.0)
    batches = list(read_metrics(tmp_path / "metrics.jsonl", kind="batch"))
    assert [b["step"] for b in batches] == [1, 2, 3, 4, 5, 6]
    assert [b["epoch"] for b in batches] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert [b["loss"] for b in batches] == pytest.approx(losses, rel=1e-6)
    assert [b["data_loss"] for b in batches] == pytest.approx(losses, rel=1e-6)
    assert all(b["lr"] == 0.1 and b["mu"] == 0.9 and b["reg_loss"] == 0.0 for b in batches)


@pytest.mark.parametrize(
    ("make", "mu"),
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.8, 0.99)), 0.8),
        (lambda p: torch.optim.Adagrad(p, lr=1e-2), None),
    ],
)
def test_mu_is_adams_beta1_and_absent_for_adagrad(
    tmp_path: Path, make: Any, mu: float | None
) -> None:
    model = _mlp()
    opt = make(model.parameters())
    with watch(model, opt, log_dir=tmp_path) as mon:
        mon.step(_train_step(model, opt, *_batch()))
    (batch,) = read_metrics(tmp_path / "metrics.jsonl", kind="batch")
    assert batch["mu"] == mu


def test_first_log_epoch_sets_steps_per_epoch_and_flushes(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, log_dir=tmp_path)
    for _ in range(5):
        mon.step(_train_step(model, opt, *_batch()))
    mon.log_epoch(val_acc=0.5, val_loss=torch.tensor(1.25))
    seen = list(read_metrics(tmp_path / "metrics.jsonl"))  # readable before close
    assert seen[-1] == {"kind": "epoch", "epoch": 1, "step": 5, "val_acc": 0.5, "val_loss": 1.25}
    assert [r["step"] for r in seen if r["kind"] == "batch"] == [1, 2, 3, 4, 5]
    for _ in range(3):
        mon.step(_train_step(model, opt, *_batch()))
    mon.log_epoch(val_acc=0.6)
    mon.log_epoch(epoch=7, val_acc=0.7)
    mon.close()
    records = list(read_metrics(tmp_path / "metrics.jsonl"))
    epochs = [r.get("epoch") for r in records if r["kind"] == "batch"]
    assert epochs == [None] * 5 + [6 / 5, 7 / 5, 8 / 5]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 7]


def test_update_ratio_is_lr_grad_over_weight_for_sgd(tmp_path: Path) -> None:
    model = _mlp()
    with torch.no_grad():
        model[0].bias.zero_()  # a zero bias: its ratio is meaningless, reported as None
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    with watch(model, opt, log_dir=tmp_path) as mon:
        loss = F.cross_entropy(model(_batch()[0]), _batch()[1])
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.detach().double().clone() for n, p in model.named_parameters()}
        opt.step()
        mon.step(loss)
    (weights,) = _probes(tmp_path / "metrics.jsonl", "update_ratio")
    (one_dim,) = _probes(tmp_path / "metrics.jsonl", "update_ratio_1d")
    assert weights["step"] == 1 and set(weights["values"]) == {"0.weight", "2.weight"}
    for name, ratio in weights["values"].items():  # the notes: ||lr dW|| / ||W||
        expected = 0.05 * grads[name].norm() / before[name].norm()
        assert ratio == pytest.approx(expected.item(), rel=1e-5)
    assert one_dim["values"]["0.bias"] is None
    expected = 0.05 * grads["2.bias"].norm() / before["2.bias"].norm()
    assert one_dim["values"]["2.bias"] == pytest.approx(expected.item(), rel=1e-5)


def _planted_relu() -> nn.Sequential:
    """Units 0-2 of the hidden layer are dead (bias -100), 3-9 always active (bias +100)."""
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        model[0].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        model[0].bias.copy_(torch.tensor([-100.0] * 3 + [100.0] * 7))
    return model


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        planted = _planted_relu()
        self.fc1, self.fc2 = planted[0], planted[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


@pytest.mark.parametrize(("make", "key"), [(_planted_relu, "1"), (_FunctionalRelu, "fc2.input")])
def test_act_stats_of_planted_dead_units(tmp_path: Path, make: Any, key: str) -> None:
    model = make()
    x, y = _batch(32)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    oracle = torch.relu(x.double() @ first.weight.double().T + first.bias.double())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with watch(model, opt, log_dir=tmp_path, window=32) as mon:  # the window is this batch
        mon.step(_train_step(model, opt, x, y))
    (stats,) = _probes(tmp_path / "metrics.jsonl", "act_stats")
    assert list(stats["values"]) == [key]  # nn.ReLU's output is not counted again at fc2
    values = stats["values"][key]
    assert values["dead"] == pytest.approx(0.3)
    assert values["mean"] == pytest.approx(oracle.mean().item(), rel=1e-5)
    assert values["std"] == pytest.approx(oracle.std(unbiased=False).item(), rel=1e-4)
    assert values["saturated"] is None


def test_act_stats_of_planted_saturated_tanh(tmp_path: Path) -> None:
    model = _mlp(act=nn.Tanh)
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].bias.copy_(torch.tensor([10.0, -10.0, 10.0, -10.0, 0.0, 0.0, 0.0, 0.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with watch(model, opt, log_dir=tmp_path, window=16) as mon:
        mon.step(_train_step(model, opt, *_batch()))
    (stats,) = _probes(tmp_path / "metrics.jsonl", "act_stats")
    assert stats["values"]["1"]["saturated"] == pytest.approx(0.5)
    assert stats["values"]["1"]["dead"] is None


def test_grad_norm_is_the_norm_of_dloss_dlayer_output(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = _batch(16)
    twin = copy.deepcopy(model).double()  # oracle: the same forward in float64, outputs kept
    outs, h = [], x.double()
    for layer in twin:
        h = layer(h)
        if isinstance(layer, nn.Linear):
            outs.append(h)
    grads = torch.autograd.grad(F.cross_entropy(h, y), outs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, log_dir=tmp_path, window=16) as mon:
        mon.step(_train_step(model, opt, x, y))
    (record,) = _probes(tmp_path / "metrics.jsonl", "grad_norm")
    assert list(record["values"]) == ["0", "2", "4"]  # forward order
    assert list(record["values"].values()) == pytest.approx(
        [g.norm().item() for g in grads], rel=1e-4
    )


def test_histograms_match_numpy_on_the_first_window(tmp_path: Path) -> None:
    model = _mlp()
    x, y = _batch(16)
    with torch.no_grad():
        hidden = torch.relu(model[0](x)).numpy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, log_dir=tmp_path, window=16, bins=10) as mon:
        mon.step(_train_step(model, opt, x, y))
    (acts,) = _probes(tmp_path / "metrics.jsonl", "act_hist")
    counts, edges = np.histogram(hidden, bins=10, range=(hidden.min(), hidden.max()))
    assert acts["values"]["1"]["counts"] == counts.tolist()
    assert acts["values"]["1"]["edges"] == pytest.approx(edges.tolist(), rel=1e-6)
    (grads,) = _probes(tmp_path / "metrics.jsonl", "grad_hist")
    assert [sum(h["counts"]) for h in grads["values"].values()] == [16 * 8, 16 * 3]


def _hook_count(model: nn.Module, opt: torch.optim.Optimizer) -> int:
    module_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return module_hooks + len(opt._optimizer_step_pre_hooks) + len(opt._optimizer_step_post_hooks)


def test_hooks_exist_only_in_windows_and_close_removes_every_one(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, log_dir=tmp_path, every=4, window=16)
    assert _hook_count(model, opt) > 2  # a window is open at step 1
    mon.step(_train_step(model, opt, *_batch()))
    assert _hook_count(model, opt) == 2  # between windows: only the optimizer's two
    for _ in range(3):
        mon.step(_train_step(model, opt, *_batch()))
    assert _hook_count(model, opt) > 2  # the next window opened after step 4
    mon.close()
    mon.close()  # idempotent
    assert _hook_count(model, opt) == 0
    mon.step(1.0)  # ignored once closed
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", kind="batch")] == [
        1,
        2,
        3,
        4,
    ]


def test_a_given_writer_is_flushed_but_not_closed(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    with watch(model, opt, writer=writer) as mon:
        mon.step(_train_step(model, opt, *_batch()))
    writer.write({"kind": "event", "step": 1, "what": "after"})  # still open
    writer.close()
    kinds = [r["kind"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert kinds[0] == "event" and "batch" in kinds and kinds[-1] == "event"


def _ratio(before: dict[str, torch.Tensor], model: nn.Module, name: str) -> float:
    after = dict(model.named_parameters())[name].detach().double()
    return ((after - before[name]).norm() / before[name].norm()).item()


def test_a_step_skipped_by_grad_scaler_is_not_measured(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    x, y = _batch()
    with watch(model, opt, log_dir=tmp_path, window=64) as mon:
        for scale in (math.inf, 1.0):  # the first step overflows: the scaler skips it
            before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
            loss = F.cross_entropy(model(x), y) * scale
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            mon.step(loss)
    (record,) = _probes(tmp_path / "metrics.jsonl", "update_ratio")
    assert record["step"] == 2
    assert record["values"]["0.weight"] == pytest.approx(
        _ratio(before, model, "0.weight"), rel=1e-5
    )


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_gradient_accumulation_measures_the_applied_step(
    tmp_path: Path, with_optimizer: bool
) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt if with_optimizer else None, log_dir=tmp_path, window=1000)
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    for micro in range(1, 4):  # three micro-batches, one optimizer step
        loss = F.cross_entropy(model(_batch(seed=micro)[0]), _batch(seed=micro)[1]) / 3
        loss.backward()
        if micro == 3:
            opt.step()
            opt.zero_grad()
        mon.step(loss)
    mon.close()
    (record,) = _probes(tmp_path / "metrics.jsonl", "update_ratio")
    assert record["step"] == 3
    assert record["values"]["2.weight"] == pytest.approx(
        _ratio(before, model, "2.weight"), rel=1e-5
    )


def test_first_layer_filters_are_saved_for_conv_and_image_inputs(tmp_path: Path) -> None:
    from PIL import Image

    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    dense = nn.Sequential(nn.Flatten(), nn.Linear(64, 9), nn.ReLU(), nn.Linear(9, 2))
    flat = nn.Sequential(nn.Linear(64, 9), nn.ReLU(), nn.Linear(9, 2))
    for name, model, x in [
        ("conv", conv, torch.randn(8, 3, 8, 8)),
        ("dense", dense, torch.randn(8, 1, 8, 8)),
        ("flat", flat, torch.randn(8, 64)),
    ]:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with watch(model, opt, log_dir=tmp_path / name, window=8) as mon:
            mon.step(_train_step(model, opt, x, torch.zeros(8, dtype=torch.long)))
        paths = [r["values"]["path"] for r in _probes(tmp_path / name / "metrics.jsonl", "filters")]
        if name == "flat":  # (N, 64) inputs are not images unless image_shape is given
            assert paths == []
            continue
        assert paths == ["filters/step=000001.png"]
        image = np.asarray(Image.open(tmp_path / name / paths[0]))
        tiles = 2 if name == "conv" else 3  # 4 filters: 2x2 grid; 9 filters: 3x3 grid
        tile = 3 if name == "conv" else 8
        side = tiles * (tile + 1) + 1
        scale = math.ceil(256 / side)
        assert image.shape[:2] == (side * scale, side * scale)
        assert image.ndim == (3 if name == "conv" else 2)  # 3 input channels: colour


def test_live_findings_equal_the_post_hoc_diagnosis(tmp_path: Path) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    with watch(model, opt, log_dir=tmp_path, steps_per_epoch=5, chance_loss=math.log(3)) as mon:
        for i in range(10):
            mon.step(_train_step(model, opt, *_batch(seed=i)))
    live = mon.findings()
    post = diagnose(read_metrics(tmp_path / "metrics.jsonl"))
    assert [str(f) for f in live] == [str(f) for f in post]
    assert live[0].code == "diverged" and live[0].severity == "error"


def test_bad_options_raise_config_error(tmp_path: Path) -> None:
    model = _mlp()
    with pytest.raises(ConfigError, match="every=0"):
        watch(model, log_dir=tmp_path, every=0)
    with pytest.raises(ConfigError, match="log_dir"):
        watch(model, tensorboard=True)
    with pytest.raises(ConfigError, match="window=0"):
        watch(model, log_dir=tmp_path / "run", window=0)
    assert not (tmp_path / "run").exists()  # bad input: nothing written


def _ddp_worker(rank: int, root: str, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = nn.parallel.DistributedDataParallel(_mlp())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with watch(model, opt, log_dir=Path(root) / f"rank{rank}") as mon:
            for i in range(3):
                mon.step(_train_step(model, opt, *_batch(seed=rank * 10 + i)))
            mon.log_epoch(val_acc=0.5)
    finally:
        dist.destroy_process_group()


def test_only_rank_zero_logs_under_ddp(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(str(tmp_path), port), nprocs=2, join=True)
    kinds = [r["kind"] for r in read_metrics(tmp_path / "rank0" / "metrics.jsonl")]
    assert kinds.count("batch") == 3 and kinds.count("epoch") == 1 and "probe" in kinds
    assert not (tmp_path / "rank1").exists()
