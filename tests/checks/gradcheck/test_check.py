"""babysit.gradcheck: formulas, known derivatives, what the check runs on, the report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from babysit.checks.gradcheck.check import (
    gradcheck,
    gradcheck_fn,
    gradcheck_task,
    numerical_gradient,
    rel_error,
)
from babysit.errors import ConfigError, DataError
from babysit.tasks import Task

# Functions with derivatives known in closed form (the oracle: calculus, not autograd).
KNOWN = {
    "poly": (lambda x: (3 * x**3 - 2 * x**2 + x).sum(), lambda x: 9 * x**2 - 4 * x + 1),
    "exp": (lambda x: x.exp().sum(), lambda x: x.exp()),
    "logsumexp": (lambda x: x.exp().sum().log(), lambda x: x.exp() / x.exp().sum()),
}


def mlp(act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, 4))


def data(n: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_rel_error_is_the_notes_symmetric_formula() -> None:
    assert rel_error(1.0, 1.1) == pytest.approx(0.1 / 1.1)
    assert rel_error(1.1, 1.0) == pytest.approx(0.1 / 1.1)
    assert rel_error(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0])) == pytest.approx(1 / 3)
    assert rel_error(0.0, 1e-20) == 1.0  # one zero: |a-b| / max = 1


def test_rel_error_both_zero_counts_as_zero() -> None:
    assert rel_error(torch.zeros(3), torch.zeros(3)) == 0.0
    assert rel_error(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])) == 0.0


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_numerical_gradient_matches_known_derivatives(name: str) -> None:
    f, df = KNOWN[name]
    x = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert rel_error(numerical_gradient(f, x), df(x)) < 1e-8


def test_numerical_gradient_is_centered_not_one_sided() -> None:
    # For x**2 the centered difference is exact; the one-sided one is off by h.
    x = torch.tensor([0.3, -1.7], dtype=torch.float64)
    got = numerical_gradient(lambda t: (t**2).sum(), x, h=1e-4)
    assert (got - 2 * x).abs().max() < 1e-9


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_gradcheck_fn_is_ok_on_known_functions(name: str) -> None:
    f, df = KNOWN[name]
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for analytic in (None, df(x)):  # autograd, then the closed form
        report = gradcheck_fn(f, x, analytic=analytic)
        (row,) = report.params
        assert report.passed and row.verdict == "ok" and row.max_rel_error < 1e-7
        assert row.checked == 15 + 1  # every element, plus the direction (no small entries)


def test_gradcheck_fn_fails_a_wrong_analytic_gradient() -> None:
    f, df = KNOWN["poly"]
    x = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    wrong = df(x) - 1.0  # forgot the "+ x" term
    report = gradcheck_fn(f, x, analytic=wrong)
    assert not report.passed and report.params[0].verdict == "fail"


def test_gradcheck_fn_both_zero_is_ok() -> None:
    report = gradcheck_fn(lambda x: (0.0 * x).sum() + 2.0, torch.randn(4, dtype=torch.float64))
    assert report.passed and report.params[0].max_rel_error == 0.0
    assert report.params[0].worst["analytic"] == 0.0 == report.params[0].worst["numeric"]


def test_gradcheck_fn_num_checks_samples_coordinates() -> None:
    x = torch.linspace(-6, 1, 50, dtype=torch.float64)  # exp: entries below 1 % of the max
    report = gradcheck_fn(KNOWN["exp"][0], x, num_checks=3)
    assert report.params[0].checked == 3 + 2  # and both directions


def test_correct_tanh_mlp_in_float64_is_ok_on_every_tensor() -> None:
    torch.manual_seed(0)
    model = mlp()
    report = gradcheck(model, F.cross_entropy, *data())
    names = [n for n, _ in model.named_parameters()]
    assert [p.name for p in report.params] == [*names, "whole batch"]
    for p in report.params:
        assert (p.verdict, p.kinks, p.part, p.stage) == ("ok", 0, "total", "init")
        assert p.max_rel_error < 1e-7
        # Both directions settle a smooth tensor: no coordinate needed (the small entries'
        # direction exists where some entries are below 1 % of the largest).
        assert p.checked in (1, 2) and p.worst["index"] in ("direction", "small entries")
        assert {"index", "analytic", "numeric", "h"} <= set(p.worst)
    assert report.thresholds["fail"] == 1e-4 and report.thresholds["ok"] == 1e-7


def test_users_model_dtype_mode_values_and_rng_are_left_as_they_were() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 4))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = gradcheck(model, F.cross_entropy, *data(), burn_in_steps=3)
    assert report.passed
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_uses_only_the_first_four_datapoints_by_default() -> None:
    seen: list[int] = []

    def loss(out: Tensor, y: Tensor) -> Tensor:
        seen.append(out.shape[0])
        return F.cross_entropy(out, y)

    report = gradcheck(mlp(), loss, *data(8), batched=False)
    # Every tensor on the first 4; the whole batch of 8 along one direction (its own row).
    assert set(seen) == {4, 8} and report.thresholds["datapoints"] == 4
    assert report.thresholds["batch"] == 8 and report.row("whole batch").shape == (8,)
    assert "samples: 4 of 8" in str(report)
    seen.clear()
    report = gradcheck(mlp(), loss, *data(8), datapoints=None, batched=False)
    assert set(seen) == {8} and "whole batch" not in {p.name for p in report.params}


def test_reg_gives_data_reg_and_total_rows() -> None:
    torch.manual_seed(0)
    report = gradcheck(mlp(), F.cross_entropy, *data(), reg=1e-2)
    assert report.passed
    assert [p.part for p in report.params] == ["data"] * 6 + ["reg"] * 6 + ["total"] * 7
    # l2_weights leaves biases out: their reg gradient is exactly zero, numerically too.
    bias = report.row("0.bias", part="reg")
    assert bias.worst["analytic"] == 0.0 == bias.worst["numeric"] and bias.verdict == "ok"


def test_reg_part_is_linear_in_reg_and_checked_alone() -> None:
    # reg * sum(w**2): the reg row's values double with reg, whatever the data (the same
    # seeded directions both times), and numeric matches analytic.
    torch.manual_seed(0)
    model = mlp().double()
    rows = [gradcheck(model, F.cross_entropy, *data(), reg=r).row("2.weight", part="reg")
            for r in (1e-2, 2e-2)]  # fmt: skip
    a, b = (row.worst for row in rows)
    assert a["index"] == b["index"] and b["analytic"] == pytest.approx(2 * a["analytic"], rel=1e-12)
    assert a["numeric"] == pytest.approx(a["analytic"], rel=1e-7) and a["analytic"] != 0


def test_warns_when_the_reg_gradient_overwhelms_the_data_gradient() -> None:
    report = gradcheck(mlp(), F.cross_entropy, *data(), reg=100.0)
    assert any("reg gradient of 0.weight" in w for w in report.warnings)
    quiet = gradcheck(mlp(), F.cross_entropy, *data(), reg=1e-6)
    assert not any("reg gradient" in w for w in quiet.warnings)


def test_burn_in_checks_again_after_the_loss_went_down() -> None:
    torch.manual_seed(0)
    report = gradcheck(mlp(), F.cross_entropy, *data(32), burn_in_steps=30, burn_in_lr=1e-2)
    assert report.passed
    assert [p.stage for p in report.params] == ["init"] * 7 + ["burn_in"] * 7
    (note,) = [w for w in report.warnings if w.startswith("burn-in")]
    before, after = (float(s) for s in note.split("loss ")[1].split(" -> "))
    assert after < before
    # The second check ran at other parameters: the same coordinate has another gradient.
    a, b = report.row("4.bias"), report.row("4.bias", stage="burn_in")
    assert a.worst["analytic"] != b.worst["analytic"] or a.worst["index"] != b.worst["index"]


def test_wrt_inputs_checks_the_input_gradient() -> None:
    torch.manual_seed(0)
    report = gradcheck(mlp(), F.cross_entropy, *data(), wrt="inputs")
    row, whole = report.params
    assert (row.name, row.shape, row.verdict) == ("inputs", (4, 6), "ok")
    assert (whole.name, whole.shape, whole.verdict) == ("whole batch", (8,), "ok")


def test_h_auto_tries_the_notes_steps_and_reports_which() -> None:
    report = gradcheck(mlp(), F.cross_entropy, *data(), h="auto")
    assert report.thresholds["h"] == "auto" and report.passed
    assert all(p.h in (1e-4, 1e-5, 1e-6) for p in report.params)


def test_float32_is_allowed_with_the_looser_scale_and_a_warning() -> None:
    torch.manual_seed(0)
    report = gradcheck(mlp(), F.cross_entropy, *data(), dtype=torch.float32)
    assert report.passed and report.thresholds["dtype"] == "float32"
    assert report.thresholds["fail"] == 1e-2 > 1e-4 and report.thresholds["ok"] == 1e-4
    assert any("float32" in w for w in report.warnings)


def test_tiny_gradients_scale_the_loss_and_say_so() -> None:
    torch.manual_seed(0)

    def tiny(out: Tensor, y: Tensor) -> Tensor:
        return 1e-14 * F.cross_entropy(out, y)

    report = gradcheck(mlp(), tiny, *data())
    assert report.passed and all(p.verdict == "ok" for p in report.params)
    assert any("tiny" in w and "scaled by 2**" in w for w in report.warnings)
    assert all(abs(p.worst["analytic"]) < 1e-10 for p in report.params)  # raw, unscaled


def test_dropout_is_switched_off_and_batchnorm_left_alone() -> None:
    model = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 4)
    ).train()
    norm, drop = model[1], model[3]
    assert isinstance(norm, nn.BatchNorm1d) and norm.running_mean is not None
    seen: dict[str, list[bool]] = {"norm": [], "drop": []}
    # A hook's closure survives the deep copy: it reports the copy's modes during the check.
    norm.register_forward_pre_hook(lambda m, _: seen["norm"].append(m.training))
    drop.register_forward_pre_hook(lambda m, _: seen["drop"].append(m.training))
    running = norm.running_mean.clone()
    report = gradcheck(model, F.cross_entropy, *data(), batched=False)
    assert report.passed
    assert seen["drop"] and not any(seen["drop"]) and seen["norm"] and all(seen["norm"])
    assert torch.equal(norm.running_mean, running) and drop.training


def test_keep_dropout_reseeds_so_the_masks_match() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 4))
    report = gradcheck(model, F.cross_entropy, *data(), keep_dropout=True)
    # Without the reseed every evaluation would draw another mask and nothing would match.
    assert report.passed and all(p.verdict == "ok" for p in report.params)


def test_report_to_dict_is_strict_json_and_str_is_a_table() -> None:
    report = gradcheck(mlp(), F.cross_entropy, *data(), reg=1e-3)
    blob = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert blob["passed"] is True and len(blob["params"]) == 19
    assert blob["params"][0]["shape"] == [16, 6] and "thresholds" in blob
    text = str(report)
    assert text.splitlines()[0].split()[:4] == ["part", "parameter", "shape", "checked"]
    assert "0.weight" in text and "thresholds (float64)" in text and text.endswith("passed")


@pytest.mark.parametrize("kind", ["tuple", "dataset", "loader"])
def test_gradcheck_task_takes_a_few_datapoints_of_train_eval(kind: str) -> None:
    x, y = data(20)
    split = {
        "tuple": (x, y),
        "dataset": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=3),
    }[kind]
    task = Task(lambda cfg: mlp(), split, split, F.cross_entropy, num_classes=4)
    rng = torch.get_rng_state()
    report = gradcheck_task(task, {}, seed=5)
    again = gradcheck_task(task, {}, seed=5)
    assert report.passed and report.thresholds["datapoints"] == 4
    assert torch.equal(torch.get_rng_state(), rng)
    # Built under manual_seed(5): the same model both times, hence the same raw numbers.
    assert [p.worst for p in report.params] == [p.worst for p in again.params]


def test_gradcheck_task_uses_the_tasks_reg_fn() -> None:
    def reg_fn(model: nn.Module, strength: float) -> Tensor:
        return strength * model.get_parameter("0.weight").abs().pow(3).sum()

    task = Task(lambda cfg: mlp(), data(), data(), F.cross_entropy, reg_fn=reg_fn)
    report = gradcheck_task(task, {}, reg=1e-1)
    assert report.passed
    assert report.row("0.weight", part="reg").worst["analytic"] != 0.0
    assert report.row("2.weight", part="reg").worst["analytic"] == 0.0


@pytest.mark.parametrize(
    "options",
    [{"wrt": "bogus"}, {"h": -1.0}, {"h": "big"}, {"dtype": torch.float16}, {"datapoints": 0}],
)
def test_bad_options_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        gradcheck(mlp(), F.cross_entropy, *data(), **options)


def test_non_scalar_loss_and_bad_data_raise_data_error() -> None:
    with pytest.raises(DataError, match="scalar"):
        gradcheck(mlp(), lambda o, y: F.cross_entropy(o, y, reduction="none"), *data())
    task = Task(lambda cfg: mlp(), {"x": 1}, None, F.cross_entropy)
    with pytest.raises(DataError, match=r"gradcheck: split .train. is a dict"):
        gradcheck_task(task, {})


def test_babysit_gradcheck_is_the_function_even_after_internal_imports() -> None:
    import babysit
    import babysit.checks.gradcheck.check  # the CLI and the trainer import this module

    assert babysit.gradcheck is babysit.checks.gradcheck.check.gradcheck
    assert babysit.gradcheck(mlp(), F.cross_entropy, *data()).passed
