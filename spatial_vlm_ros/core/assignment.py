# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Optimal one-to-one assignment with a gate and forbidden pairs, on scipy's solver.

``scipy.optimize.linear_sum_assignment`` (the shortest augmenting path method of Crouse 2016)
solves the square or rectangular problem; this module adds what the object memory needs around
it: forbidden pairs (``inf``), and a price for leaving a row unmatched, so that a pair is only
made when it is cheaper than no pair (a gate).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment


def optimal_assignment(
    cost: npt.ArrayLike, unmatched_cost: float = math.inf
) -> list[tuple[int, int]]:
    """
    Pairs ``(row, column)`` minimizing the summed cost, each row and column used at most once.

    ``cost`` is (n_rows, n_columns); ``inf`` (or NaN) marks a forbidden pair. Leaving a row
    unmatched costs ``unmatched_cost``: a pair is only made when it is cheaper than leaving its
    row unmatched, so with a gate as ``unmatched_cost`` the result never contains a pair beyond
    the gate. With the default ``inf`` as many rows as possible are matched. The pairs are
    sorted by row.
    """
    matrix = np.array(cost, dtype=np.float64, ndmin=2)
    if matrix.ndim != 2:
        raise ValueError(f'cost must be 2D, got shape {matrix.shape}')
    rows, columns = matrix.shape
    if rows == 0 or columns == 0:
        return []
    matrix[~np.isfinite(matrix)] = math.inf
    if math.isfinite(unmatched_cost):
        # One private "unmatched" column per row, at the price of leaving that row alone.
        dummies = np.full((rows, rows), math.inf)
        np.fill_diagonal(dummies, unmatched_cost)
        matrix = np.hstack((matrix, dummies))
    allowed = np.isfinite(matrix)
    if not allowed.any():
        return []
    # Forbidden pairs get a cost above any sum of allowed ones, so the solver takes one only
    # when a row has nothing else (scipy refuses infeasible inf matrices); such pairs are
    # dropped from the answer. The solver thus matches as many rows as the allowed pairs let it,
    # at the least total cost.
    finite = matrix[allowed]
    big = (float(np.abs(finite).max()) + 1.0) * (rows + 1) * 2.0
    chosen_rows, chosen_columns = linear_sum_assignment(np.where(allowed, matrix, big))
    return sorted(
        (int(r), int(c))
        for r, c in zip(chosen_rows, chosen_columns, strict=True)
        if c < columns and allowed[r, c]
    )
