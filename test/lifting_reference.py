# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The per-box lifter as it was before it was vectorized (commit 9a65d9d), kept as an oracle.

core/lifting.py lifts every box of a frame in shared array passes; this is the straightforward
one-box-at-a-time version of the same algorithm (docs/ACCURACY.md), unchanged except for
imports. test/test_lifting_equivalence.py checks that both give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.lifting import (
    DEFAULT_LIFTING_CONFIG,
    DepthExclusion,
    LiftingConfig,
    _check_inputs,
    _pixel_range,
    depth_noise_sigma,
    empty_lift,
    sensor_covariance,
)
from spatial_vlm_ros.core.types import CameraIntrinsics, FloatArray, Lifted3D, PixelBox

_MAD_TO_SIGMA = 1.4826
_SMOOTHING_KERNEL = np.array([0.054, 0.242, 0.399, 0.242, 0.054])


@dataclass(frozen=True)
class _BoxSamples:
    """Strided pixel samples of one box: grid coordinates and valid depths."""

    us: npt.NDArray[np.float64]  # (n_valid,) pixel column of each valid sample
    vs: npt.NDArray[np.float64]  # (n_valid,) pixel row of each valid sample
    depths: npt.NDArray[np.float64]  # (n_valid,) metres
    weights: npt.NDArray[np.float64]  # (n_valid,) centre weights in (0, 1], cluster choice
    taper: npt.NDArray[np.float64]  # (n_valid,) border-taper weights in (0, 1], centroid
    context_depths: npt.NDArray[np.float64]  # valid depths of the ring around the box
    box_pixels: int  # samples in the box, valid or not


@dataclass(frozen=True)
class _Support:
    """The pixels a lift used, for resolving occlusions: where they are, and the depth range of
    the surface (nearest and farthest pixel, widened by the sensor noise at both ends)."""

    us: npt.NDArray[np.float64]
    vs: npt.NDArray[np.float64]
    near_m: float
    far_m: float

    def share_inside(self, box: PixelBox) -> float:
        """Fraction of the pixels whose centres lie in ``box``."""
        inside = _centres_inside(self.us, box.x_min, box.x_max)
        inside &= _centres_inside(self.vs, box.y_min, box.y_max)
        return float(np.count_nonzero(inside)) / max(self.us.size, 1)


def _centres_inside(indices: FloatArray, low: float, high: float) -> npt.NDArray[np.bool_]:
    """Pixel ``i`` spans ``[i, i + 1)``; it is inside ``[low, high)`` when its centre is."""
    return (indices + 0.5 >= low) & (indices + 0.5 < high)


def _box_samples(
    depth: npt.NDArray[np.floating],
    box: PixelBox,
    config: LiftingConfig,
    exclusions: Sequence[DepthExclusion] = (),
) -> _BoxSamples | None:
    height, width = depth.shape
    x0, x1 = _pixel_range(box.x_min, box.x_max, width)
    y0, y1 = _pixel_range(box.y_min, box.y_max, height)
    area = (x1 - x0) * (y1 - y0)
    if area == 0:
        return None
    stride = max(1, math.ceil(math.sqrt(area / config.max_samples)))
    crop = depth[y0:y1:stride, x0:x1:stride]
    columns = np.arange(x0, x1, stride, dtype=np.float64)
    rows = np.arange(y0, y1, stride, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(crop) & (crop >= config.min_depth_m) & (crop <= config.max_depth_m)
        for exclusion in exclusions:
            other = exclusion.box
            in_other = (
                _centres_inside(rows, other.y_min, other.y_max)[:, None]
                & _centres_inside(columns, other.x_min, other.x_max)[None, :]
            )
            valid &= ~(in_other & (crop >= exclusion.near_m) & (crop <= exclusion.far_m))
    row_index, column_index = np.nonzero(valid)
    # Weights are centred on the box centre in index coordinates (pixel i spans [i, i + 1)).
    center_u = 0.5 * (box.x_min + box.x_max) - 0.5
    center_v = 0.5 * (box.y_min + box.y_max) - 0.5
    sigma_u = max(config.center_sigma * 0.5 * box.width, 0.5)
    sigma_v = max(config.center_sigma * 0.5 * box.height, 0.5)
    weight_u = np.exp(-0.5 * np.square((columns - center_u) / sigma_u))
    weight_v = np.exp(-0.5 * np.square((rows - center_v) / sigma_v))
    taper_u = _border_taper(columns, box.x_min, box.x_max, config.border_taper)
    taper_v = _border_taper(rows, box.y_min, box.y_max, config.border_taper)
    return _BoxSamples(
        us=columns[column_index],
        vs=rows[row_index],
        depths=crop[row_index, column_index].astype(np.float64),
        weights=weight_v[row_index] * weight_u[column_index],
        taper=taper_v[row_index] * taper_u[column_index],
        context_depths=_context_depths(depth, (x0, x1, y0, y1), stride, config),
        box_pixels=int(crop.size),
    )


def _context_depths(
    depth: npt.NDArray[np.floating],
    window: tuple[int, int, int, int],
    stride: int,
    config: LiftingConfig,
) -> FloatArray:
    """Valid depths in a ring of ``context_ring`` times the box size around the box."""
    if config.context_ring <= 0.0:
        return np.zeros(0)
    height, width = depth.shape
    x0, x1, y0, y1 = window
    pad_x = max(round(config.context_ring * (x1 - x0)), 2)
    pad_y = max(round(config.context_ring * (y1 - y0)), 2)
    outer_x0, outer_x1 = max(x0 - pad_x, 0), min(x1 + pad_x, width)
    outer_y0, outer_y1 = max(y0 - pad_y, 0), min(y1 + pad_y, height)
    # Sample on the same lattice as the box so the ring and box densities compare.
    first_x = x0 - ((x0 - outer_x0) // stride) * stride
    first_y = y0 - ((y0 - outer_y0) // stride) * stride
    outer = depth[first_y:outer_y1:stride, first_x:outer_x1:stride]
    columns = np.arange(first_x, outer_x1, stride)
    rows = np.arange(first_y, outer_y1, stride)
    in_box = ((rows >= y0) & (rows < y1))[:, None] & ((columns >= x0) & (columns < x1))[None, :]
    ring = outer[~in_box].astype(np.float64)
    with np.errstate(invalid='ignore'):
        return ring[
            np.isfinite(ring) & (ring >= config.min_depth_m) & (ring <= config.max_depth_m)
        ]


def _noise_adapted_coordinate(depths: FloatArray, config: LiftingConfig) -> FloatArray:
    """Monotonic depth coordinate in which one unit is one histogram bin.

    The bin width is ``max(r z, c k z^2)``: relative (log depth) near the camera, where noise is
    small, and constant in inverse depth (disparity) beyond the crossover, where the sensor's
    noise and quantization live.
    """
    relative = config.bin_relative_width
    noise = config.bin_noise_sigmas * config.depth_noise_coefficient
    crossover = relative / noise
    near = np.log(np.minimum(depths, crossover)) / relative
    far = (1.0 / crossover - 1.0 / np.maximum(depths, crossover)) / noise
    return near + far


def _cluster_bounds(smoothed: FloatArray, valley_ratio: float) -> list[tuple[int, int]]:
    """Split a smoothed 1D histogram into ``[start, stop)`` bin ranges at deep valleys."""
    padded = np.concatenate(([-1.0], smoothed, [-1.0]))
    is_peak = (padded[1:-1] > padded[:-2]) & (padded[1:-1] >= padded[2:]) & (smoothed > 0.0)
    peaks = np.flatnonzero(is_peak)
    if peaks.size == 0:
        return [(0, smoothed.size)]
    # A stack of surviving peaks: a new peak merges into the previous one when the valley
    # between them is shallow compared to the lower of the two.
    stack: list[int] = [int(peaks[0])]
    for peak in peaks[1:]:
        current = int(peak)
        while stack:
            previous = stack[-1]
            valley = float(smoothed[previous : current + 1].min())
            if valley >= valley_ratio * min(smoothed[previous], smoothed[current]):
                stack.pop()
                current = previous if smoothed[previous] >= smoothed[current] else current
            else:
                break
        stack.append(current)
    bounds: list[tuple[int, int]] = []
    start = 0
    for left, right in zip(stack[:-1], stack[1:], strict=True):
        valley_bin = left + int(np.argmin(smoothed[left : right + 1]))
        bounds.append((start, valley_bin + 1))
        start = valley_bin + 1
    bounds.append((start, smoothed.size))
    return bounds


def _object_mask(samples: _BoxSamples, config: LiftingConfig) -> npt.NDArray[np.bool_]:
    """Which valid samples belong to the object (see the module docstring)."""
    coordinate = _noise_adapted_coordinate(samples.depths, config)
    origin = float(coordinate.min())
    bins = np.floor(coordinate - origin).astype(np.intp)
    histogram = np.bincount(bins, weights=samples.weights)
    bin_count = histogram.size
    # 'full' then trim keeps the histogram's length even when it is shorter than the kernel.
    smoothed = np.convolve(histogram, _SMOOTHING_KERNEL, mode='full')[2:-2]
    bounds = _cluster_bounds(smoothed, config.valley_ratio)
    starts = np.array([start for start, _ in bounds], dtype=np.intp)
    masses = np.add.reduceat(histogram, starts)
    inside_counts = np.add.reduceat(np.bincount(bins, minlength=bin_count), starts)
    contrast = np.ones(len(bounds))
    if samples.context_depths.size >= config.min_samples:
        context_bins = np.floor(
            _noise_adapted_coordinate(samples.context_depths, config) - origin
        ).astype(np.intp)
        context_bins = context_bins[(context_bins >= 0) & (context_bins < bin_count)]
        context_counts = np.add.reduceat(np.bincount(context_bins, minlength=bin_count), starts)
        inside_share = inside_counts / samples.depths.size
        context_share = context_counts / samples.context_depths.size
        contrast = np.clip(1.0 - context_share / np.maximum(inside_share, 1e-12), 0.0, 1.0)
    floor = config.contrast_floor
    scores = masses * (floor + (1.0 - floor) * contrast)
    start, stop = bounds[int(np.argmax(scores))]
    in_cluster = (bins >= start) & (bins < stop)
    cluster_depths = samples.depths[in_cluster]
    median = float(np.median(cluster_depths))
    mad_sigma = _MAD_TO_SIGMA * float(np.median(np.abs(cluster_depths - median)))
    noise_sigma = float(depth_noise_sigma(median, config.depth_noise_coefficient))
    half_band = max(config.band_mads * mad_sigma, config.band_noise_sigmas * noise_sigma)
    return in_cluster & (np.abs(samples.depths - median) <= half_band)


def _border_taper(coordinates: FloatArray, low: float, high: float, taper: float) -> FloatArray:
    """Centroid weights along one image axis: 1 inside ``[low, high)``'s inner part, falling
    (cosine) to 0 over its outer ``taper`` fraction on both sides.

    Pixels that share the object's depth but are not the object (the surface it stands on, a
    neighbour touching it) enter a loose box mostly along its border; the object itself mostly
    fills the inside. A narrow taper trades a little of the object's rim for much less of that
    contamination (docs/ACCURACY.md has the measurements).
    """
    if taper <= 0.0:
        return np.ones_like(coordinates)
    center = 0.5 * (low + high) - 0.5
    normalized = np.abs(coordinates - center) / max(0.5 * (high - low), 0.5)
    ramp = np.clip((normalized - (1.0 - taper)) / taper, 0.0, 1.0)
    # The floor keeps a 1-pixel-wide box from having zero total weight.
    return 0.5 * (1.0 + np.cos(np.pi * ramp)) + 1e-6


def _back_project(
    us: FloatArray, vs: FloatArray, depths: FloatArray, intrinsics: CameraIntrinsics
) -> FloatArray:
    xs = (us - intrinsics.cx) * depths / intrinsics.fx
    ys = (vs - intrinsics.cy) * depths / intrinsics.fy
    return np.column_stack((xs, ys, depths))


def lift_box(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    box: PixelBox,
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
    exclusions: Sequence[DepthExclusion] = (),
) -> Lifted3D:
    """Centroid, extent and centroid covariance of the object's visible surface in ``box``.

    ``depth_m`` is the depth image (float metres, NaN invalid) described by ``intrinsics``;
    ``box`` is in that image's pixels (half-open, clipped to the image here). ``exclusions``
    name pixels of other objects to leave out (see :func:`lift_boxes`). Returns a
    :class:`Lifted3D` in the camera optical frame, with ``position`` None when fewer than
    ``config.min_samples`` pixels or less than ``config.min_valid_ratio`` of the box supported
    the object. Raises :class:`LiftingError` for malformed inputs.
    """
    depth = _check_inputs(depth_m, intrinsics, box)
    return _lift_checked(depth, intrinsics, box, config, exclusions)[0]


def _lift_checked(
    depth: npt.NDArray[np.floating],
    intrinsics: CameraIntrinsics,
    box: PixelBox,
    config: LiftingConfig,
    exclusions: Sequence[DepthExclusion] = (),
) -> tuple[Lifted3D, _Support | None]:
    samples = _box_samples(depth, box, config, exclusions)
    if samples is None:
        return empty_lift(), None
    if samples.depths.size < config.min_samples:
        return empty_lift(samples.depths.size / samples.box_pixels, samples.depths.size), None
    mask = _object_mask(samples, config)
    count = int(np.count_nonzero(mask))
    ratio = count / samples.box_pixels
    if count < config.min_samples or ratio < config.min_valid_ratio:
        return empty_lift(ratio, count), None
    us, vs, object_depths = samples.us[mask], samples.vs[mask], samples.depths[mask]
    points = _back_project(us, vs, object_depths, intrinsics)
    taper = samples.taper[mask]
    total_weight = float(taper.sum())
    centroid = (taper @ points) / total_weight
    centered = points - centroid
    spread = (centered.T * taper) @ centered / total_weight
    effective = min(count, config.effective_samples)
    covariance = sensor_covariance(centroid, intrinsics, config) + spread / effective
    # 2nd-98th percentile extent: robust to the few stray pixels a full min-max would catch.
    low_rank, high_rank = int(0.02 * (count - 1)), int(math.ceil(0.98 * (count - 1)))
    ranked = np.partition(points, (low_rank, high_rank), axis=0)
    low, high = ranked[low_rank], ranked[high_rank]
    lifted = Lifted3D(
        position=centroid,
        covariance=0.5 * (covariance + covariance.T),
        size=high - low,
        valid_depth_ratio=float(ratio),
        depth_samples=count,
    )
    near, far = float(object_depths.min()), float(object_depths.max())
    noise = config.band_noise_sigmas * depth_noise_sigma(
        np.array([near, far]), config.depth_noise_coefficient
    )
    return lifted, _Support(us, vs, near - float(noise[0]), far + float(noise[1]))


def _intersection_over_union(first: PixelBox, second: PixelBox) -> float:
    overlap_x = max(0.0, min(first.x_max, second.x_max) - max(first.x_min, second.x_min))
    overlap_y = max(0.0, min(first.y_max, second.y_max) - max(first.y_min, second.y_min))
    overlap = overlap_x * overlap_y
    union = first.width * first.height + second.width * second.height - overlap
    return overlap / union if union > 0 else 0.0


def _took_surface_of(
    index: int,
    other: int,
    boxes: Sequence[PixelBox],
    first: Sequence[tuple[Lifted3D, _Support | None]],
    config: LiftingConfig,
) -> bool:
    """Whether box ``index`` was lifted to the surface of the object in box ``other``.

    That is the case when the two lifted surfaces share depths, most of the pixels box
    ``index`` claimed lie inside box ``other``, and that surface fills box ``other`` better
    than box ``index`` (an occluder fills its own box; the box it covers keeps the rest of
    its area for the hidden object). Two objects side by side at one depth claim mostly
    their own pixels and are left alone.
    """
    lifted, support = first[index]
    other_lifted, other_support = first[other]
    if support is None or other_support is None or index == other:
        return False
    overlap = _intersection_over_union(boxes[index], boxes[other])
    if overlap == 0.0 or overlap >= config.same_object_iou:
        return False  # apart, or the same object boxed twice (e.g. named twice)
    if support.far_m < other_support.near_m or other_support.far_m < support.near_m:
        return False
    if support.share_inside(boxes[other]) < config.occlusion_share:
        return False
    return other_lifted.valid_depth_ratio > lifted.valid_depth_ratio


def _occluder_exclusion(
    box: PixelBox, lifted: tuple[Lifted3D, _Support | None], config: LiftingConfig
) -> DepthExclusion:
    """The pixels of the occluder in ``box``: everything inside its box up to its far side.

    Anything nearer than the occluder's surface inside its box is not the hidden object either
    (that object is behind the surface it was wrongly lifted to).
    """
    occluder, support = lifted
    assert support is not None and occluder.size is not None  # checked by _took_surface_of
    far = support.far_m
    depth_extra = config.occluder_depth_factor * float(max(occluder.size[0], occluder.size[1]))
    return DepthExclusion(box, 0.0, far + depth_extra)


def lift_boxes(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    boxes: Sequence[PixelBox],
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
    resolve_occlusions: bool = True,
) -> list[Lifted3D]:
    """:func:`lift_box` for each box of one depth image, in order, resolving occlusions.

    Each box is lifted on its own first. A box that took the surface of another boxed object
    (see :func:`_took_surface_of`) is lifted again with that object's pixels excluded; the
    second result stands, including "no position" when too little of the hidden object is
    visible, because the first one described the occluder.
    """
    checked = [_check_inputs(depth_m, intrinsics, box) for box in boxes]
    first = [
        _lift_checked(depth, intrinsics, box, config)
        for depth, box in zip(checked, boxes, strict=True)
    ]
    results = [lifted for lifted, _ in first]
    if not resolve_occlusions:
        return results
    for index, box in enumerate(boxes):
        exclusions = []
        for other in range(len(boxes)):
            if _took_surface_of(index, other, boxes, first, config):
                exclusions.append(_occluder_exclusion(boxes[other], first[other], config))
        if exclusions:
            results[index] = _lift_checked(checked[index], intrinsics, box, config, exclusions)[0]
    return results
