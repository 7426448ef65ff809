# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The compiled helpers of core/_lifting_kernels.py give numpy's values exactly.

test/test_lifting_equivalence.py checks whole lifts against the numpy lifter; this checks the
pieces whose exactness the lifter's identical results rest on (numpy's summation order, exact
order statistics) and the fallbacks that real frames rarely reach: a percentile bound that a
strided sample got wrong, and histogram bins that do not order the depths.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from spatial_vlm_ros.core import _lifting_kernels as kernels
from spatial_vlm_ros.core.lifting import lift_boxes, warm_up
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=600), cut=st.integers(0, 600))
def test_segment_sums_are_numpys_reduceat_bit_for_bit(values, cut):
    array = np.array(values)
    cut = min(cut, array.size - 1)
    starts = np.array([0, cut]) if cut else np.array([0])
    expected = np.add.reduceat(array, starts)
    bounds = [*starts.tolist(), array.size]
    for segment, want in enumerate(expected.tolist()):
        got = kernels._reduceat_sum(array, bounds[segment], bounds[segment + 1])
        assert got == want or (np.isnan(got) and np.isnan(want))


def test_segment_sums_differ_from_a_plain_running_sum():
    # The test above can fail: numpy's pairwise order is not a running sum.
    array = np.random.default_rng(3).normal(size=1000) * 1e3
    running = 0.0
    for value in array.tolist():
        running += value
    assert kernels._reduceat_sum(array, 0, array.size) == np.add.reduceat(array, [0])[0]
    assert running != np.add.reduceat(array, [0])[0]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 40), min_size=1, max_size=300), data=st.data())
def test_selection_is_an_exact_order_statistic(values, data):
    array = np.array(values, dtype=np.float64) * 0.001  # many ties, as quantized depths
    rank = data.draw(st.integers(0, array.size - 1))
    assert kernels._select(array.copy(), 0, array.size, rank) == np.sort(array)[rank]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(1000, 1100), min_size=1, max_size=300))
def test_median_and_mad_of_counted_values_are_numpys(values):
    depths = np.array(values, dtype=np.float64) / 1000.0
    distinct, counts = np.unique(depths, return_counts=True)
    median = kernels._median_of_counted(distinct, counts, distinct.size, depths.size)
    assert median == np.median(depths)
    mad = kernels._mad_of_counted(distinct, counts, distinct.size, depths.size, median)
    assert mad == np.median(np.abs(depths - median))


def _exact_extremes(values: np.ndarray) -> tuple[float, float, int, int]:
    count = values.size
    low_rank, high_rank = int(0.02 * (count - 1)), int(np.ceil(0.98 * (count - 1)))
    ordered = np.sort(values)
    return ordered[low_rank], ordered[high_rank], low_rank, high_rank


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 5000))
def test_percentiles_from_sampled_bounds_are_exact(seed, count):
    values = np.round(np.random.default_rng(seed).normal(0.0, 0.2, count), 3)
    low, high, low_rank, high_rank = _exact_extremes(values)
    scratch, candidates = np.empty(count), np.empty(count)
    got = kernels._extremes(values, count, low_rank, high_rank, scratch, candidates)
    assert got == (low, high)


def test_percentiles_stay_exact_when_the_sample_misleads():
    # The strided sample holds every smallest and largest value, so its bounds enclose too
    # few values: the kernel must notice and select among all of them.
    count = 2560
    step = count // kernels._EXTREME_SAMPLES
    values = np.full(count, 5.0) + np.arange(count) * 1e-6
    values[::step][:20] = -np.arange(20.0) - 10.0
    values[::step][-20:] = np.arange(20.0) + 100.0
    low, high, low_rank, high_rank = _exact_extremes(values)
    got = kernels._extremes(values, count, low_rank, high_rank, np.empty(count), np.empty(count))
    assert got == (low, high)


def test_counted_values_are_sorted_even_when_the_bins_do_not_order_them():
    distinct = np.array([1.0, 1.5, 2.0, 2.5, 3.0])
    multiplicity = np.array([2, 1, 4, 1, 3])
    touched = np.array([4, 0, 2, 1, 3])
    for bins in ([2, 0, 1, 0, 1], [0, 2, 1, 2, 1]):  # monotonic, then not
        sorted_values, sorted_counts = np.empty(5), np.empty(5, dtype=np.int64)
        total = kernels._sort_counted(
            distinct,
            multiplicity.copy(),
            touched,
            np.array(bins),
            5,
            3,
            np.empty(5, dtype=np.int64),
            sorted_values,
            sorted_counts,
        )
        assert total == 11
        assert sorted_values.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0]
        assert sorted_counts.tolist() == [2, 1, 4, 1, 3]


def test_warm_up_prepares_both_depth_types():
    assert warm_up((np.float32, np.float64)) >= 0.0
    intrinsics = CameraIntrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    for dtype in (np.float32, np.float64):
        depth = np.full((48, 64), 2.0, dtype=dtype)
        (lifted,) = lift_boxes(depth, intrinsics, [PixelBox(10, 10, 30, 30)])
        assert lifted.position[2] == pytest.approx(2.0)
        assert lifted.depth_samples == 400
