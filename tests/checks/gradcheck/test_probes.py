"""Probes: coordinates stratified by magnitude, directions with power-of-two moves, exact grids."""

from __future__ import annotations

import itertools
import math

import torch

from babysit.checks.gradcheck.evaluate import Objective
from babysit.checks.gradcheck.probes import SMALL, directions, leaf_probes, sample_coordinates


def test_sample_coordinates_are_distinct_seeded_and_include_signal() -> None:
    g = torch.zeros(10_000, dtype=torch.float64)
    g[[17, 4242, 9999]] = torch.tensor([5.0, -3.0, 1.0], dtype=torch.float64)  # signal: 3 only
    a = sample_coordinates(g, 10, torch.Generator().manual_seed(1))
    b = sample_coordinates(g, 10, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
    # Uniform sampling alone would find one of 3 in 10,000 with chance ~0.3%.
    assert {17, 4242, 9999} <= set(a.tolist())
    small = sample_coordinates(torch.ones(7), 10, torch.Generator().manual_seed(1))
    assert small.tolist() == list(range(7))


def test_sample_coordinates_reach_small_entries_and_zeros() -> None:
    # 99 % of the entries are large; 1 % lie in the decades 1e-3..1e-6 below the max, and a
    # few are exact zeros: magnitude-proportional or uniform draws would almost never pick them.
    gen = torch.Generator().manual_seed(0)
    g = 1 + torch.rand(10_000, generator=gen, dtype=torch.float64)
    small = torch.randperm(10_000, generator=gen)[:100]
    g[small] = 10 ** -torch.linspace(3, 6, 100, dtype=torch.float64)
    g[small[:5]] = 0.0
    for seed in range(10):
        got = set(sample_coordinates(g, 10, torch.Generator().manual_seed(seed)).tolist())
        assert got & set(small[:5].tolist())  # a zero
        assert len(got & set(small[5:].tolist())) >= 3  # decades 1e-3, 1e-4, 1e-5 (or 1e-6)


def test_skipped_coordinates_are_never_sampled() -> None:
    g = torch.ones(20, dtype=torch.float64)
    skip = torch.zeros(20, dtype=torch.bool)
    skip[:15] = True
    got = sample_coordinates(g, 10, torch.Generator().manual_seed(0), skip)
    assert got.tolist() == list(range(15, 20))


def test_directions_move_by_powers_of_two_and_small_entries_alone() -> None:
    gen = torch.Generator().manual_seed(0)
    leaf = torch.randn(8, 25, dtype=torch.float64)
    g = torch.randn(200, dtype=torch.float64)
    g[:30] *= 1e-4  # small entries
    (name, u), (name2, u_small) = directions(g, leaf, 1e-5, 2.0, gen, None)
    assert (name, name2) == ("direction", "small entries")
    size = u.abs().unique()
    assert size.numel() == 1 and math.log2(float(size)).is_integer()
    # h c / sqrt(fan_in) = 1e-5 * 2 / 5, rounded to a power of two
    assert 2**-0.5 <= float(size) / (1e-5 * 2.0 / 5) <= 2**0.5
    moved = u_small.reshape(-1) != 0
    assert torch.equal(moved, g.abs() <= SMALL * g.abs().max())
    assert torch.equal(u_small.reshape(-1)[moved], u.reshape(-1)[moved])


def test_leaf_probes_steps_give_an_exact_grid() -> None:
    # x +- s and x +- 2s exactly representable: the fourth difference of a cubic is then 0.
    x = torch.tensor([0.3, -1.7, 123.456, 1e-3], dtype=torch.float64, requires_grad=True)
    obj = Objective(["x"], [x], lambda: (x**3).sum())
    pr = leaf_probes(obj, 0, 3 * x.detach() ** 2, h=1e-5, count=4, seed=0)
    for j in range(pr.m):
        grid = [pr.theta[j] + c * pr.step[j] for c in (-2.0, -1.0, 0.0, 1.0, 2.0)]
        diffs = [float(b - a) for a, b in itertools.pairwise(grid)]
        assert len(set(diffs)) == 1 and diffs[0] == float(pr.step[j])
    assert torch.allclose(pr.analytic[: pr.m], 3 * pr.theta.detach() ** 2)
