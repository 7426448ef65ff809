# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Compiled (numba) passes of :mod:`spatial_vlm_ros.core.lifting`.

The lifter's per-sample work (read the box lattice, histogram, cluster choice, median and MAD,
back-projection, moments, percentiles) runs here in three compiled passes over the samples;
``lifting.py`` keeps the orchestration and the few steps whose floating-point results are
numpy's own (``np.log`` of the distinct depths, ``np.exp``/``np.cos`` of the axis weights,
``np.convolve`` of the histograms), so every value is bit for bit what the numpy lifter it
replaced computed (test/test_lifting_equivalence.py checks it against that lifter).

Sums that decide which pixels are kept (cluster masses, centroid weights) reproduce numpy's
``add.reduceat`` summation order exactly (:func:`_reduceat_sum`); order statistics (median, MAD,
percentiles) are exact selections, so their values do not depend on the algorithm.

Compiled once per machine and cached beside this file (or in numba's user cache directory
where that is not writable); :func:`spatial_vlm_ros.core.lifting.warm_up` loads them before
the first frame.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

_JIT: dict[str, Any] = {'cache': True, 'nogil': True, 'error_model': 'numpy'}

# Hash of a depth value's bit pattern (Fibonacci hashing, Knuth).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.int32(-1)
_INITIAL_TABLE_BITS = 12

# Status of a box after sampling.
NO_WINDOW = 0  # the box covers no pixel centre of the image
TOO_FEW = 1  # fewer than min_samples valid samples
SAMPLED = 2


@numba.njit(**_JIT)
def _pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    """lifting._pixel_range: pixel indices [first, stop) whose centres lie in [low, high)."""
    first = min(max(np.ceil(low - 0.5), 0.0), float(size))
    stop = min(max(np.ceil(high - 0.5), 0.0), float(size))
    return int(first), int(max(first, stop))


@numba.njit(**_JIT)
def _grown(keys: Array, slots: Array, count: int, more: int) -> tuple[Array, Array]:
    """
    Return the hash table rebuilt with four times the slots.

    ``keys``: bit patterns, ``slots``: indices among the distinct values; the slots grow until
    ``more`` new values keep it at most half full.
    """
    while 2 * (count + more) > slots.size:
        size = 4 * slots.size
        new_keys = np.zeros(size, dtype=np.uint64)
        new_slots = np.full(size, _EMPTY, dtype=np.int32)
        shift = _shift(size)
        for index in range(slots.size):
            if slots[index] != _EMPTY:
                position = np.int64((keys[index] * _GOLDEN) >> shift)
                while new_slots[position] != _EMPTY:
                    position = (position + 1) & (size - 1)
                new_keys[position] = keys[index]
                new_slots[position] = slots[index]
        keys, slots = new_keys, new_slots
    return keys, slots


@numba.njit(**_JIT)
def _shift(size: int) -> np.uint64:
    """Right shift that maps a 64-bit product to a slot of a table of ``size`` (2^k) slots."""
    bits = 0
    while (1 << bits) < size:
        bits += 1
    return np.uint64(64 - bits)


@numba.njit(inline='always', **_JIT)
def _distinct_index(
    keys: Array,
    slots: Array,
    mask: int,
    shift: np.uint64,
    distinct: Array,
    count: int,
    bits: Any,
    value: float,
) -> tuple[int, int]:
    """
    Return the index of the depth value with bit pattern ``bits`` and the new count.

    The index is among the ``count`` distinct values so far; a new value is added (to
    ``distinct`` and the hash table ``keys``/``slots``).
    """
    key = np.uint64(bits)
    position = np.int64((key * _GOLDEN) >> shift)
    while True:
        slot = slots[position]
        if slot == _EMPTY:
            slots[position], keys[position] = count, key
            distinct[count] = value
            return count, count + 1
        if keys[position] == key:
            return slot, count
        position = (position + 1) & mask


@numba.njit(**_JIT)
def _excluded(
    row_centre: float,
    column_centre: float,
    value: float,
    corners: Array,
    near: Array,
    far: Array,
    first: int,
    stop: int,
) -> bool:
    """
    Tell whether a sample lies in one of the exclusions ``first`` to ``stop``.

    It does when its pixel centre is inside the exclusion's box and its depth in the
    exclusion's range.
    """
    for other in range(first, stop):
        if (
            row_centre >= corners[other, 1]
            and row_centre < corners[other, 3]
            and column_centre >= corners[other, 0]
            and column_centre < corners[other, 2]
            and value >= near[other]
            and value <= far[other]
        ):
            return True
    return False


@numba.njit(**_JIT)
def sample_boxes(
    depth: Array,
    depth_bits: Array,
    corners: Array,
    low: Any,
    high: Any,
    low64: float,
    high64: float,
    max_samples: int,
    min_samples: int,
    context_ring: float,
    center_sigma: float,
    exclusion_offsets: Array,
    exclusion_corners: Array,
    exclusion_near: Array,
    exclusion_far: Array,
) -> tuple[Array, ...]:
    """
    Read every box's sample lattice (and its context ring) once.

    ``depth`` is the (h, w) image, ``depth_bits`` the same memory as unsigned integers (the
    key of each distinct depth value); ``corners`` (B, 4) the boxes (x_min, y_min, x_max,
    y_max). ``low``/``high`` are the depth limits in the image's dtype (numpy compares a
    float32 image with a Python float in float32), ``low64``/``high64`` in float64 (the ring is
    compared after conversion). Box ``b`` leaves out the pixels of exclusions
    ``exclusion_offsets[b]`` to ``exclusion_offsets[b + 1]``.

    Returns the status, lattice size and windows of each box, the axis tables (every box's
    rows, then every box's columns: pixel index, centre, sigma and half size of its box), each
    sampled box's valid samples (distinct-value index, row entry, column entry) and context
    ring values (distinct-value index), and the distinct depth values in float64.
    """
    height, width = depth.shape
    boxes = corners.shape[0]
    status = np.zeros(boxes, dtype=np.int64)
    lattice = np.zeros(boxes, dtype=np.int64)
    windows = np.zeros((boxes, 5), dtype=np.int64)
    row_counts = np.zeros(boxes, dtype=np.int64)
    column_counts = np.zeros(boxes, dtype=np.int64)
    sample_capacity = 0
    ring_capacity = 0
    for box in range(boxes):
        x0, x1 = _pixel_range(corners[box, 0], corners[box, 2], width)
        y0, y1 = _pixel_range(corners[box, 1], corners[box, 3], height)
        area = (x1 - x0) * (y1 - y0)
        if area == 0:
            continue
        stride = max(1, math.ceil(math.sqrt(area / max_samples)))
        windows[box, 0], windows[box, 1], windows[box, 2] = x0, x1, y0
        windows[box, 3], windows[box, 4] = y1, stride
        columns = -(-(x1 - x0) // stride)
        rows = -(-(y1 - y0) // stride)
        row_counts[box], column_counts[box] = rows, columns
        lattice[box] = rows * columns
        status[box] = SAMPLED
        sample_capacity += rows * columns
        if context_ring > 0.0:
            pad_x = max(int(np.rint(context_ring * (x1 - x0))), 2)
            pad_y = max(int(np.rint(context_ring * (y1 - y0))), 2)
            ring_capacity += (rows + 2 * (pad_y // stride + 1)) * (
                columns + 2 * (pad_x // stride + 1)
            )
    # Axis tables: rows of every box, then columns of every box.
    axis_offsets = np.zeros(2 * boxes + 1, dtype=np.int64)
    for box in range(boxes):
        axis_offsets[box + 1] = axis_offsets[box] + row_counts[box]
    for box in range(boxes):
        axis_offsets[boxes + box + 1] = axis_offsets[boxes + box] + column_counts[box]
    entries = axis_offsets[2 * boxes]
    coordinates = np.empty(entries)
    centers = np.empty(entries)
    sigmas = np.empty(entries)
    halves = np.empty(entries)
    for axis in range(2):
        for box in range(boxes):
            first = axis_offsets[axis * boxes + box]
            stop = axis_offsets[axis * boxes + box + 1]
            if stop == first:
                continue
            # The same expressions, in the same order, as the per-box Python arithmetic.
            low_edge = corners[box, 1 - axis]
            high_edge = corners[box, 3 - axis]
            start = windows[box, 2 - 2 * axis]
            stride = windows[box, 4]
            center = 0.5 * (low_edge + high_edge) - 0.5
            sigma = max(center_sigma * 0.5 * (high_edge - low_edge), 0.5)
            half = max(0.5 * (high_edge - low_edge), 0.5)
            for index in range(stop - first):
                coordinates[first + index] = float(start + stride * index)
                centers[first + index] = center
                sigmas[first + index] = sigma
                halves[first + index] = half

    sample_values = np.empty(sample_capacity, dtype=np.int32)
    sample_rows = np.empty(sample_capacity, dtype=np.int32)
    sample_columns = np.empty(sample_capacity, dtype=np.int32)
    sample_starts = np.zeros(boxes + 1, dtype=np.int64)
    ring_values = np.empty(ring_capacity, dtype=np.int32)
    ring_starts = np.zeros(boxes + 1, dtype=np.int64)
    keys = np.zeros(1 << _INITIAL_TABLE_BITS, dtype=np.uint64)
    slots = np.full(1 << _INITIAL_TABLE_BITS, _EMPTY, dtype=np.int32)
    distinct = np.empty(sample_capacity + ring_capacity)
    count = 0
    written = 0
    ring_written = 0
    for box in range(boxes):
        sample_starts[box] = written
        ring_starts[box] = ring_written
        if status[box] != SAMPLED:
            sample_starts[box + 1] = written
            ring_starts[box + 1] = ring_written
            continue
        x0, x1, y0 = windows[box, 0], windows[box, 1], windows[box, 2]
        y1, stride = windows[box, 3], windows[box, 4]
        row_first = axis_offsets[box]
        column_first = axis_offsets[boxes + box]
        columns = column_counts[box]
        excluded_first = exclusion_offsets[box]
        excluded_stop = exclusion_offsets[box + 1]
        start = written
        for row in range(row_counts[box]):
            y = y0 + row * stride
            if 2 * (count + columns) > slots.size:
                keys, slots = _grown(keys, slots, count, columns)
            mask, shift = slots.size - 1, _shift(slots.size)
            row_centre = float(y) + 0.5
            for column in range(columns):
                x = x0 + column * stride
                value = depth[y, x]
                # NaN fails both comparisons, so this also drops holes.
                if not (value >= low and value <= high):
                    continue
                if excluded_stop > excluded_first and _excluded(
                    row_centre,
                    float(x) + 0.5,
                    value,
                    exclusion_corners,
                    exclusion_near,
                    exclusion_far,
                    excluded_first,
                    excluded_stop,
                ):
                    continue
                slot, count = _distinct_index(
                    keys, slots, mask, shift, distinct, count, depth_bits[y, x], float(value)
                )
                sample_values[written] = slot
                sample_rows[written] = row_first + row
                sample_columns[written] = column_first + column
                written += 1
        sample_starts[box + 1] = written
        if written - start < min_samples:
            status[box] = TOO_FEW
            continue
        if context_ring > 0.0:
            pad_x = max(int(np.rint(context_ring * (x1 - x0))), 2)
            pad_y = max(int(np.rint(context_ring * (y1 - y0))), 2)
            outer_x1, outer_y1 = min(x1 + pad_x, width), min(y1 + pad_y, height)
            first_x = x0 - ((x0 - max(x0 - pad_x, 0)) // stride) * stride
            first_y = y0 - ((y0 - max(y0 - pad_y, 0)) // stride) * stride
            after_x = x0 + columns * stride
            after_y = y0 + row_counts[box] * stride
            # Above, below, left, right of the box, on the box's lattice.
            for part in range(4):
                if part == 0:
                    ys, ye, xs, xe = first_y, y0, first_x, outer_x1
                elif part == 1:
                    ys, ye, xs, xe = after_y, outer_y1, first_x, outer_x1
                elif part == 2:
                    ys, ye, xs, xe = y0, y1, first_x, x0
                else:
                    ys, ye, xs, xe = y0, y1, after_x, outer_x1
                for y in range(ys, min(ye, height), stride):
                    more = columns + 2 * (pad_x // stride + 1)
                    if 2 * (count + more) > slots.size:
                        keys, slots = _grown(keys, slots, count, more)
                    mask, shift = slots.size - 1, _shift(slots.size)
                    for x in range(xs, min(xe, width), stride):
                        value64 = float(depth[y, x])
                        if not (value64 >= low64 and value64 <= high64):
                            continue
                        slot, count = _distinct_index(
                            keys, slots, mask, shift, distinct, count, depth_bits[y, x], value64
                        )
                        ring_values[ring_written] = slot
                        ring_written += 1
        ring_starts[box + 1] = ring_written
    return (
        status,
        lattice,
        windows,
        axis_offsets,
        coordinates,
        centers,
        sigmas,
        halves,
        sample_values[:written],
        sample_rows[:written],
        sample_columns[:written],
        sample_starts,
        ring_values[:ring_written],
        ring_starts,
        distinct[:count],
    )


@numba.njit(**_JIT)
def histograms(
    status: Array,
    sample_values: Array,
    sample_rows: Array,
    sample_columns: Array,
    sample_starts: Array,
    ring_values: Array,
    ring_starts: Array,
    coordinates: Array,
    weights: Array,
    gap: int,
) -> tuple[Array, ...]:
    """
    Each sampled box's histogram over the noise-adapted coordinate, all in one joint array.

    ``coordinates`` holds the coordinate of each distinct depth value, ``weights`` the centre
    weight of each axis entry. Box ``b`` owns joint bins ``offsets[b]`` to ``offsets[b] +
    sizes[b]``, with ``gap`` empty bins between boxes. Returns each sample's bin within its
    box, the offsets and sizes, the centre-weighted mass and the sample count of each joint
    bin, and how many context samples fall into each joint bin.
    """
    boxes = status.size
    sample_bins = np.empty(sample_values.size, dtype=np.int32)
    origins = np.zeros(boxes)
    sizes = np.zeros(boxes, dtype=np.int64)
    offsets = np.zeros(boxes, dtype=np.int64)
    total = gap
    for box in range(boxes):
        offsets[box] = total
        if status[box] != SAMPLED:
            continue
        first, stop = sample_starts[box], sample_starts[box + 1]
        origin = coordinates[sample_values[first]]
        for index in range(first + 1, stop):
            origin = min(origin, coordinates[sample_values[index]])
        largest = 0
        for index in range(first, stop):
            found = int(math.floor(coordinates[sample_values[index]] - origin))
            sample_bins[index] = found
            largest = max(largest, found)
        origins[box] = origin
        sizes[box] = largest + 1
        total += largest + 1 + gap
    weighted = np.zeros(total)
    counts = np.zeros(total, dtype=np.int64)
    context = np.zeros(total, dtype=np.int64)
    for box in range(boxes):
        if status[box] != SAMPLED:
            continue
        offset = offsets[box]
        # In sample order, as np.bincount accumulates.
        for index in range(sample_starts[box], sample_starts[box + 1]):
            joint = offset + sample_bins[index]
            weighted[joint] += weights[sample_rows[index]] * weights[sample_columns[index]]
            counts[joint] += 1
        origin, size = origins[box], sizes[box]
        for index in range(ring_starts[box], ring_starts[box + 1]):
            found = int(math.floor(coordinates[ring_values[index]] - origin))
            if 0 <= found < size:
                context[offset + found] += 1
    return sample_bins, offsets, sizes, weighted, counts, context


@numba.njit(**_JIT)
def _pairwise_sum(values: Array, first: int, count: int) -> float:
    """
    Sum ``values[first:first + count]`` as numpy's pairwise summation does.

    Blocks of 128, eight accumulators: what numpy's add reductions use.
    """
    if count < 8:
        result = 0.0
        for index in range(first, first + count):
            result += values[index]
        return result
    if count <= 128:
        r0, r1, r2, r3 = values[first], values[first + 1], values[first + 2], values[first + 3]
        r4, r5, r6, r7 = values[first + 4], values[first + 5], values[first + 6], values[first + 7]
        index = first + 8
        unrolled = first + count - count % 8
        while index < unrolled:
            r0 += values[index]
            r1 += values[index + 1]
            r2 += values[index + 2]
            r3 += values[index + 3]
            r4 += values[index + 4]
            r5 += values[index + 5]
            r6 += values[index + 6]
            r7 += values[index + 7]
            index += 8
        result = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while index < first + count:
            result += values[index]
            index += 1
        return result
    half = count // 2
    half -= half % 8
    return _pairwise_sum(values, first, half) + _pairwise_sum(values, first + half, count - half)


@numba.njit(**_JIT)
def _reduceat_sum(values: Array, first: int, stop: int) -> float:
    """
    One segment of ``np.add.reduceat(values, ...)``.

    The first element, plus the pairwise sum of the rest (``values[first]`` alone for an empty
    segment, numpy's rule).
    """
    if stop <= first + 1:
        return values[first]
    return values[first] + _pairwise_sum(values, first + 1, stop - first - 1)


@numba.njit(**_JIT)
def _select(values: Array, first: int, stop: int, rank: int) -> float:
    """
    Return the ``rank``-th smallest of ``values[first:stop]`` (absolute index ``rank``).

    In place (Hoare's selection: smaller-or-equal values end up before ``rank``,
    larger-or-equal after).
    """
    left, right = first, stop - 1
    while left < right:
        middle = (left + right) >> 1
        # Median of three as the pivot.
        if values[middle] < values[left]:
            values[middle], values[left] = values[left], values[middle]
        if values[right] < values[left]:
            values[right], values[left] = values[left], values[right]
        if values[right] < values[middle]:
            values[right], values[middle] = values[middle], values[right]
        pivot = values[middle]
        i, j = left, right
        while i <= j:
            while values[i] < pivot:
                i += 1
            while pivot < values[j]:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if j < rank:
            left = i
        if rank < i:
            right = j
    return values[rank]


@numba.njit(**_JIT)
def _cluster_bounds(
    smoothed: Array, offset: int, size: int, valley_ratio: float, peaks: Array, starts: Array
) -> int:
    """
    Split one box's smoothed histogram (joint bins ``offset`` to ``offset + size``) at valleys.

    Only deep valleys split. Writes the first bin of each cluster (relative to ``offset``) into
    ``starts`` and returns how many there are. ``peaks`` is scratch space of at least ``size``
    entries.
    """
    count = 0
    for index in range(size):
        value = smoothed[offset + index]
        left = smoothed[offset + index - 1] if index > 0 else -1.0
        right = smoothed[offset + index + 1] if index + 1 < size else -1.0
        if value > left and value >= right and value > 0.0:
            peaks[count] = index
            count += 1
    starts[0] = 0
    if count == 0:
        return 1
    # A stack of surviving peaks (reused in place: entries below ``stacked``); a new peak
    # merges into the previous one when the valley between them is shallow.
    stacked = 1
    for peak in range(1, count):
        current = peaks[peak]
        while stacked > 0:
            previous = peaks[stacked - 1]
            valley = smoothed[offset + previous]
            for index in range(previous + 1, current + 1):
                valley = min(valley, smoothed[offset + index])
            lower = min(smoothed[offset + previous], smoothed[offset + current])
            if valley >= valley_ratio * lower:
                stacked -= 1
                if smoothed[offset + previous] >= smoothed[offset + current]:
                    current = previous
            else:
                break
        peaks[stacked] = current
        stacked += 1
    clusters = 1
    for pair in range(stacked - 1):
        left, right = peaks[pair], peaks[pair + 1]
        lowest = left
        for index in range(left + 1, right + 1):
            if smoothed[offset + index] < smoothed[offset + lowest]:
                lowest = index
        starts[clusters] = lowest + 1
        clusters += 1
    return clusters


@numba.njit(**_JIT)
def _sort_counted(
    distinct: Array,
    multiplicity: Array,
    touched_values: Array,
    touched_bins: Array,
    touched: int,
    bins: int,
    bucket_starts: Array,
    sorted_values: Array,
    sorted_counts: Array,
) -> int:
    """
    Sort the ``touched`` distinct values into ``sorted_values`` and ``sorted_counts``.

    The values are indices ``touched_values`` into ``distinct``, each in histogram bin
    ``touched_bins``, occurring ``multiplicity`` times. Resets their multiplicity and returns
    the total count.

    The histogram coordinate grows with depth, so the bins order the values: a counting sort
    by bin, then an insertion sort within each bin (a few values each). Should the bins not
    order them (a non-monotonic logarithm would do that), the whole list is sorted instead.
    """
    for index in range(bins + 1):
        bucket_starts[index] = 0
    for index in range(touched):
        bucket_starts[touched_bins[index] + 1] += 1
    for index in range(bins):
        bucket_starts[index + 1] += bucket_starts[index]
    total = 0
    for index in range(touched):
        value_index = touched_values[index]
        position = bucket_starts[touched_bins[index]]
        bucket_starts[touched_bins[index]] += 1
        sorted_values[position] = distinct[value_index]
        sorted_counts[position] = multiplicity[value_index]
        total += multiplicity[value_index]
        multiplicity[value_index] = 0
    # bucket_starts[b] now holds the end of bucket b; sort each bucket by insertion.
    first = 0
    ordered = True
    for bucket in range(bins):
        stop = bucket_starts[bucket]
        for index in range(first + 1, stop):
            value, occurrences = sorted_values[index], sorted_counts[index]
            position = index - 1
            while position >= first and sorted_values[position] > value:
                sorted_values[position + 1] = sorted_values[position]
                sorted_counts[position + 1] = sorted_counts[position]
                position -= 1
            sorted_values[position + 1], sorted_counts[position + 1] = value, occurrences
        if first > 0 and stop > first and sorted_values[first - 1] > sorted_values[first]:
            ordered = False
        if stop > first:
            first = stop
    if not ordered:
        order = np.argsort(sorted_values[:touched])
        values = sorted_values[:touched][order]
        counts = sorted_counts[:touched][order]
        sorted_values[:touched] = values
        sorted_counts[:touched] = counts
    return total


# _extremes: at most this many values are sampled to bound the wanted ranks, and the bounds
# sit this many sample ranks beyond the estimate (about four standard deviations of a
# 2 % rank in a 256-value sample), so that the scan that checks them rarely fails.
_EXTREME_SAMPLES = 256
_EXTREME_MARGIN = 10


@numba.njit(**_JIT)
def _extremes(
    values: Array, count: int, low_rank: int, high_rank: int, scratch: Array, candidates: Array
) -> tuple[float, float]:
    """
    Return the ``low_rank``-th and ``high_rank``-th smallest of ``values[:count]`` (exact).

    Both ranks lie near the ends (2 % and 98 %): a strided sample of the values gives a
    bound beyond each, one scan keeps the values beyond the bounds, and a selection among
    those few gives the ranks. A bound that turns out too tight (the scan finds too few
    values beyond it) falls back to a selection among all values.
    """
    step = max(1, count // _EXTREME_SAMPLES)
    sampled = 0
    for index in range(0, count, step):
        scratch[sampled] = values[index]
        sampled += 1
    low_sample = min(low_rank * sampled // count + _EXTREME_MARGIN, sampled - 1)
    high_sample = max(high_rank * sampled // count - _EXTREME_MARGIN, 0)
    low_bound = _select(scratch, 0, sampled, low_sample)
    high_bound = _select(scratch, 0, sampled, high_sample)
    below, above = 0, 0
    for index in range(count):
        value = values[index]
        if value <= low_bound:
            scratch[below] = value
            below += 1
        if value >= high_bound:
            candidates[above] = value
            above += 1
    if below <= low_rank:
        below = count
        scratch[:count] = values[:count]
    if above < count - high_rank:
        above = count
        candidates[:count] = values[:count]
    low_value = _select(scratch, 0, below, low_rank)
    high_value = _select(candidates, 0, above, high_rank - (count - above))
    return low_value, high_value


@numba.njit(**_JIT)
def _counted_rank(values: Array, counts: Array, first: int, stop: int, rank: int) -> float:
    """
    Return the ``rank``-th smallest (0-based) of sorted distinct ``values[first:stop]``.

    Value ``i`` occurs ``counts[i]`` times.
    """
    seen = 0
    for index in range(first, stop):
        seen += counts[index]
        if seen > rank:
            return values[index]
    return values[stop - 1]


@numba.njit(**_JIT)
def _median_of_counted(values: Array, counts: Array, distinct: int, total: int) -> float:
    """
    np.median of ``total`` values given as sorted distinct ``values`` with ``counts``.

    The middle one, or the mean of the two middle ones.
    """
    half = total // 2
    upper = _counted_rank(values, counts, 0, distinct, half)
    if total % 2:
        return upper
    return (_counted_rank(values, counts, 0, distinct, half - 1) + upper) / 2.0


@numba.njit(**_JIT)
def _mad_of_counted(
    values: Array, counts: Array, distinct: int, total: int, median: float
) -> float:
    """
    np.median of ``abs(values - median)`` over the counted values.

    The deviations grow outward from the median on both sides, so merging the two sides lists them
    in order.
    """
    half = total // 2
    wanted = half - 1 if total % 2 == 0 else half
    right = 0
    while right < distinct and values[right] < median:
        right += 1
    left = right - 1
    seen = 0
    lower = 0.0
    while True:
        right_deviation = abs(values[right] - median) if right < distinct else np.inf
        left_deviation = abs(values[left] - median) if left >= 0 else np.inf
        if right_deviation <= left_deviation:
            deviation, occurrences = right_deviation, counts[right]
            right += 1
        else:
            deviation, occurrences = left_deviation, counts[left]
            left -= 1
        if seen <= wanted < seen + occurrences:
            lower = deviation
        if seen <= half < seen + occurrences:
            return deviation if total % 2 else (lower + deviation) / 2.0
        seen += occurrences


@numba.njit(**_JIT)
def describe_boxes(
    status: Array,
    lattice: Array,
    sample_values: Array,
    sample_rows: Array,
    sample_columns: Array,
    sample_starts: Array,
    sample_bins: Array,
    ring_starts: Array,
    distinct: Array,
    offsets: Array,
    sizes: Array,
    weighted: Array,
    counts: Array,
    context: Array,
    smoothed: Array,
    axis_coordinates: Array,
    taper: Array,
    intrinsics: Array,
    settings: Array,
) -> tuple[Array, ...]:
    """
    Choose each box's object pixels and describe them (see lifting.py's module docstring).

    ``intrinsics`` is (fx, fy, cx, cy); ``settings`` (valley_ratio, contrast_floor, min_samples,
    min_valid_ratio, band_mads, band_noise_sigmas, depth_noise_coefficient, pixel_sigma,
    effective_samples). Returns per box the object pixel count, whether it has a position,
    the position (3), covariance (3, 3), size (3), the nearest and farthest object depth
    widened by the sensor noise, and the object pixels' image coordinates (u, v) box after
    box (``support_starts``).
    """
    valley_ratio, floor, min_samples = settings[0], settings[1], settings[2]
    min_valid_ratio, band_mads, band_noise_sigmas = settings[3], settings[4], settings[5]
    noise_coefficient, pixel_sigma, effective_samples = settings[6], settings[7], settings[8]
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    boxes = status.size
    kept = np.zeros(boxes, dtype=np.int64)
    positioned = np.zeros(boxes, dtype=np.bool_)
    positions = np.full((boxes, 3), np.nan)
    covariances = np.full((boxes, 3, 3), np.nan)
    extents = np.full((boxes, 3), np.nan)
    near = np.full(boxes, np.nan)
    far = np.full(boxes, np.nan)
    support_starts = np.zeros(boxes + 1, dtype=np.int64)
    largest_box = 0
    largest_histogram = 1
    for box in range(boxes):
        largest_box = max(largest_box, sample_starts[box + 1] - sample_starts[box])
        largest_histogram = max(largest_histogram, sizes[box])
    scratch = np.empty(largest_box)
    candidates = np.empty(largest_box)
    xs = np.empty(largest_box)
    ys = np.empty(largest_box)
    zs = np.empty(largest_box)
    weighted_x = np.empty(largest_box)
    weighted_y = np.empty(largest_box)
    weighted_z = np.empty(largest_box)
    tapers = np.empty(largest_box)
    peaks = np.empty(largest_histogram, dtype=np.int64)
    starts = np.empty(largest_histogram + 1, dtype=np.int64)
    support_u = np.empty(sample_values.size)
    support_v = np.empty(sample_values.size)
    multiplicity = np.zeros(distinct.size, dtype=np.int64)
    touched_values = np.empty(distinct.size, dtype=np.int64)
    touched_bins = np.empty(distinct.size, dtype=np.int64)
    bucket_starts = np.empty(largest_histogram + 2, dtype=np.int64)
    sorted_values = np.empty(distinct.size)
    sorted_counts = np.empty(distinct.size, dtype=np.int64)
    supported = 0
    for box in range(boxes):
        support_starts[box] = supported
        if status[box] != 2:
            support_starts[box + 1] = supported
            continue
        first, stop = sample_starts[box], sample_starts[box + 1]
        samples = stop - first
        offset, size = offsets[box], sizes[box]
        clusters = _cluster_bounds(smoothed, offset, size, valley_ratio, peaks, starts)
        starts[clusters] = size
        context_size = ring_starts[box + 1] - ring_starts[box]
        best_score = -np.inf
        chosen = 0
        for cluster in range(clusters):
            low, high = offset + starts[cluster], offset + starts[cluster + 1]
            mass = _reduceat_sum(weighted, low, high)
            contrast = 1.0
            if context_size >= min_samples:
                inside = 0
                outside = 0
                for index in range(low, max(high, low + 1)):
                    inside += counts[index]
                    outside += context[index]
                inside_share = inside / samples
                context_share = outside / max(context_size, 1)
                contrast = 1.0 - context_share / max(inside_share, 1e-12)
                contrast = min(max(contrast, 0.0), 1.0)
            score = mass * (floor + (1.0 - floor) * contrast)
            if cluster == 0 or score > best_score:
                best_score, chosen = score, cluster
        cluster_low, cluster_high = starts[chosen], starts[chosen + 1]
        # The chosen cluster's depths as distinct values with counts, sorted: median, MAD, the
        # band around the median (which drops flying pixels at the cluster's edges), the
        # object pixel count and the depth percentiles follow from cumulative counts.
        touched = 0
        for index in range(first, stop):
            found = sample_bins[index]
            if cluster_low <= found < cluster_high:
                value_index = sample_values[index]
                if multiplicity[value_index] == 0:
                    touched_values[touched] = value_index
                    touched_bins[touched] = found - cluster_low
                    touched += 1
                multiplicity[value_index] += 1
        in_cluster = _sort_counted(
            distinct,
            multiplicity,
            touched_values,
            touched_bins,
            touched,
            cluster_high - cluster_low,
            bucket_starts,
            sorted_values,
            sorted_counts,
        )
        if in_cluster == 0:
            support_starts[box + 1] = supported
            continue
        median = _median_of_counted(sorted_values, sorted_counts, touched, in_cluster)
        mad = _mad_of_counted(sorted_values, sorted_counts, touched, in_cluster, median)
        mad_sigma = 1.4826 * mad
        noise_sigma = noise_coefficient * (median * median)
        half_band = max(band_mads * mad_sigma, band_noise_sigmas * noise_sigma)
        band_first, band_stop = touched, 0
        count = 0
        for index in range(touched):
            if abs(sorted_values[index] - median) <= half_band:
                band_first = min(band_first, index)
                band_stop = index + 1
                count += sorted_counts[index]
        kept[box] = count
        ratio = count / lattice[box]
        if count < min_samples or ratio < min_valid_ratio:
            support_starts[box + 1] = supported
            continue
        band_low, band_high = sorted_values[band_first], sorted_values[band_stop - 1]
        us = support_u[supported : supported + count]
        vs = support_v[supported : supported + count]
        written = 0
        for index in range(first, stop):
            if cluster_low <= sample_bins[index] < cluster_high:
                value = distinct[sample_values[index]]
                if band_low <= value <= band_high:
                    row, column = sample_rows[index], sample_columns[index]
                    us[written] = axis_coordinates[column]
                    vs[written] = axis_coordinates[row]
                    zs[written] = value
                    tapers[written] = taper[row] * taper[column]
                    written += 1
        positioned[box] = True
        supported += count
        support_starts[box + 1] = supported
        # Back-projection, and the points times their taper (summed for the centroid).
        for index in range(count):
            x = (us[index] - cx) * zs[index] / fx
            y = (vs[index] - cy) * zs[index] / fy
            xs[index], ys[index] = x, y
            weight = tapers[index]
            weighted_x[index] = x * weight
            weighted_y[index] = y * weight
            weighted_z[index] = zs[index] * weight
        total_weight = _reduceat_sum(tapers, 0, count)
        cx_, cy_, cz_ = (
            _reduceat_sum(weighted_x, 0, count) / total_weight,
            _reduceat_sum(weighted_y, 0, count) / total_weight,
            _reduceat_sum(weighted_z, 0, count) / total_weight,
        )
        positions[box, 0], positions[box, 1], positions[box, 2] = cx_, cy_, cz_
        # Weighted second moments about the centroid.
        sxx = sxy = sxz = syy = syz = szz = 0.0
        for index in range(count):
            dx, dy, dz = xs[index] - cx_, ys[index] - cy_, zs[index] - cz_
            weight = tapers[index]
            wx, wy, wz = dx * weight, dy * weight, dz * weight
            sxx += wx * dx
            sxy += wx * dy
            sxz += wx * dz
            syy += wy * dy
            syz += wy * dz
            szz += wz * dz
        spread = np.empty((3, 3))
        spread[0, 0], spread[1, 1], spread[2, 2] = sxx, syy, szz
        spread[0, 1] = spread[1, 0] = sxy
        spread[0, 2] = spread[2, 0] = sxz
        spread[1, 2] = spread[2, 1] = syz
        centroid = positions[box]
        effective = min(count, effective_samples)
        # The sensor floor (lifting._sensor_covariances), term by term.
        x, y, z = centroid[0], centroid[1], centroid[2]
        pixel = pixel_sigma**2
        depth_variance = (noise_coefficient * (z * z)) ** 2
        along_x, along_y = z / fx, z / fy
        slope_x, slope_y = x / z, y / z
        sensor = np.empty((3, 3))
        sensor[0, 0] = along_x * pixel * along_x + slope_x * depth_variance * slope_x
        sensor[1, 1] = along_y * pixel * along_y + slope_y * depth_variance * slope_y
        sensor[2, 2] = depth_variance
        sensor[0, 1] = sensor[1, 0] = slope_x * depth_variance * slope_y
        sensor[0, 2] = sensor[2, 0] = slope_x * depth_variance
        sensor[1, 2] = sensor[2, 1] = slope_y * depth_variance
        full = np.empty((3, 3))
        for a in range(3):
            for b in range(3):
                full[a, b] = sensor[a, b] + (spread[a, b] / total_weight) / effective
        for a in range(3):
            for b in range(3):
                covariances[box, a, b] = 0.5 * (full[a, b] + full[b, a])
        # 2nd-98th percentile extent: robust to the few stray pixels a min-max would catch.
        low_rank = int(0.02 * (count - 1))
        high_rank = int(math.ceil(0.98 * (count - 1)))
        for axis in range(2):
            low_value, high_value = _extremes(
                xs if axis == 0 else ys, count, low_rank, high_rank, scratch, candidates
            )
            extents[box, axis] = high_value - low_value
        extents[box, 2] = _counted_rank(
            sorted_values, sorted_counts, band_first, band_stop, high_rank
        ) - _counted_rank(sorted_values, sorted_counts, band_first, band_stop, low_rank)
        nearest, farthest = band_low, band_high
        near[box] = nearest - band_noise_sigmas * (noise_coefficient * (nearest * nearest))
        far[box] = farthest + band_noise_sigmas * (noise_coefficient * (farthest * farthest))
    return (
        kept,
        positioned,
        positions,
        covariances,
        extents,
        near,
        far,
        support_starts,
        support_u[:supported],
        support_v[:supported],
    )


@numba.njit(**_JIT)
def shares_inside(
    support_u: Array,
    support_v: Array,
    starts: Array,
    subjects: Array,
    others: Array,
    corners: Array,
) -> Array:
    """
    For each pair (``subjects[k]``, ``others[k]``).

    The share of the subject box's object pixels (``support_u``/``support_v`` from
    ``starts[subject]``) whose centres lie in the other box (``corners``: x_min, y_min, x_max,
    y_max).
    """
    shares = np.empty(subjects.size)
    for pair in range(subjects.size):
        subject, other = subjects[pair], others[pair]
        x_min, y_min = corners[other, 0], corners[other, 1]
        x_max, y_max = corners[other, 2], corners[other, 3]
        first, stop = starts[subject], starts[subject + 1]
        inside = 0
        for index in range(first, stop):
            u, v = support_u[index] + 0.5, support_v[index] + 0.5
            if u >= x_min and u < x_max and v >= y_min and v < y_max:
                inside += 1
        shares[pair] = inside / max(stop - first, 1)
    return shares
