# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Optimal one-to-one assignment (the Hungarian method) for small cost matrices.

scipy's ``linear_sum_assignment`` would do, but scipy is not a dependency of the package and a
frame has tens of objects, where this O(n^2 m) version with potentials (Kuhn-Munkres as in
Jonker and Volgenant's shortest augmenting path form) takes well under a millisecond.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def optimal_assignment(
    cost: npt.ArrayLike, unmatched_cost: float = math.inf
) -> list[tuple[int, int]]:
    """Pairs ``(row, column)`` minimizing the summed cost, each row and column used at most once.

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
    # Forbidden pairs get a cost above any sum of allowed ones, so the solver only takes them
    # when a row has nothing else; those pairs are dropped from the answer.
    finite = matrix[allowed]
    big = (float(np.abs(finite).max()) + 1.0) * (rows + 1) * 2.0
    padded = np.where(allowed, matrix, big)
    transposed = rows > padded.shape[1]
    if transposed:
        padded = padded.T
    assignment = _hungarian(padded)
    pairs = []
    for row, column in enumerate(assignment):
        r, c = (column, row) if transposed else (row, column)
        if c < columns and allowed[r, c]:
            pairs.append((r, c))
    return sorted(pairs)


def _hungarian(cost: npt.NDArray[np.float64]) -> list[int]:
    """Column assigned to each row of ``cost`` (n_rows <= n_columns, all finite)."""
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.intp)  # owner[j]: 1-based row holding column j (0: none)
    way = np.zeros(m + 1, dtype=np.intp)
    for row in range(1, n + 1):
        owner[0] = row
        column = 0
        slack = np.full(m + 1, math.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[column] = True
            current = owner[column]
            reduced = cost[current - 1] - u[current] - v[1:]
            free = ~used[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.where(free, slack[1:], math.inf)
            nearest = int(np.argmin(candidates)) + 1
            delta = candidates[nearest - 1]
            u[owner[used]] += delta
            v[used] -= delta
            slack[1:][free] -= delta
            column = nearest
            if owner[column] == 0:
                break
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    result = [0] * n
    for column in range(1, m + 1):
        if owner[column]:
            result[owner[column] - 1] = column - 1
    return result
