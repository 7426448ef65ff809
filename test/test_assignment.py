# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The optimal assignment (scipy's solver with a gate and forbidden pairs) against brute force
on small random matrices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from spatial_vlm_ros.core.assignment import optimal_assignment


def brute_force(cost: np.ndarray, unmatched_cost: float) -> float:
    """Lowest total over every partial one-to-one matching (unmatched rows pay their price)."""
    rows, columns = cost.shape
    best = math.inf
    options = list(range(columns)) + [None] * rows
    for choice in itertools.permutations(options, rows):
        total = 0.0
        for row, column in enumerate(choice):
            total += unmatched_cost if column is None else cost[row, column]
        best = min(best, total)
    return best


def total(cost: np.ndarray, pairs: list[tuple[int, int]], unmatched_cost: float) -> float:
    matched = {row for row, _ in pairs}
    return sum(cost[r, c] for r, c in pairs) + unmatched_cost * (cost.shape[0] - len(matched))


@pytest.mark.parametrize('seed', range(60))
def test_matches_brute_force_with_gate_and_forbidden_pairs(seed):
    rng = np.random.default_rng(seed)
    rows, columns = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    cost = rng.uniform(0.0, 10.0, (rows, columns))
    cost[rng.random((rows, columns)) < 0.3] = math.inf
    gate = 6.0
    pairs = optimal_assignment(cost, unmatched_cost=gate)
    assert len({r for r, _ in pairs}) == len(pairs) and len({c for _, c in pairs}) == len(pairs)
    assert all(math.isfinite(cost[r, c]) and cost[r, c] <= gate for r, c in pairs)
    assert total(cost, pairs, gate) == pytest.approx(brute_force(cost, gate))


def test_without_a_gate_it_matches_as_many_rows_as_possible():
    cost = np.array([[1.0, 2.0], [1.0, math.inf], [5.0, 9.0]])
    pairs = optimal_assignment(cost)
    assert pairs == [(0, 1), (1, 0)]  # row 1 can only take column 0; row 0 moves over


def test_the_cheaper_global_choice_beats_the_greedy_one():
    # Greedy takes (0, 0) at cost 1 and leaves row 1 with 10; the optimum is 2 + 2.
    cost = np.array([[1.0, 2.0], [2.0, 10.0]])
    assert optimal_assignment(cost) == [(0, 1), (1, 0)]


def test_empty_and_all_forbidden():
    assert optimal_assignment(np.zeros((0, 3))) == []
    assert optimal_assignment(np.full((2, 2), math.inf), unmatched_cost=1.0) == []


def brute_force_most_rows(cost: np.ndarray) -> tuple[int, float]:
    """(most rows matched through allowed pairs, least total cost among those matchings)."""
    rows, columns = cost.shape
    best = (0, 0.0)
    options = list(range(columns)) + [None] * rows
    for choice in itertools.permutations(options, rows):
        pairs = [(r, c) for r, c in enumerate(choice) if c is not None]
        if any(not math.isfinite(cost[r, c]) for r, c in pairs):
            continue
        candidate = (len(pairs), sum(cost[r, c] for r, c in pairs))
        if candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] < best[1]):
            best = candidate
    return best


@pytest.mark.parametrize('seed', range(40))
def test_without_a_gate_matches_brute_force_on_rectangular_matrices(seed):
    rng = np.random.default_rng(100 + seed)
    rows, columns = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    cost = rng.uniform(0.0, 10.0, (rows, columns))
    cost[rng.random((rows, columns)) < 0.4] = math.inf
    pairs = optimal_assignment(cost)
    assert len({r for r, _ in pairs}) == len(pairs) and len({c for _, c in pairs}) == len(pairs)
    assert all(math.isfinite(cost[r, c]) for r, c in pairs)
    count, least = brute_force_most_rows(cost)
    assert len(pairs) == count
    assert sum(cost[r, c] for r, c in pairs) == pytest.approx(least)
