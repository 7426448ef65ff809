# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Lift a 2D box to a 3D position with a registered depth image.

A box from a detector or a VLM contains more than its object: background behind it, the surface
it stands on, flying pixels at depth edges, and sometimes a nearer occluder. The centre pixel
and the box median both fail there. :func:`lift_box` instead

1. samples the box (strided when it is large), keeps depths inside ``[min_depth_m,
   max_depth_m]`` and weights each sample with a Gaussian centred on the box (objects sit in the
   middle of their box; clutter, background and occluders crowd its border);
2. builds that weighted histogram over a noise-adapted depth coordinate whose bins are 1 % of
   the depth near the camera and ``bin_noise_sigmas`` sensor-noise sigmas far away (so bins
   follow the Kinect-style noise ``sigma_z = k z^2`` and its disparity quantization), smooths
   it, and splits it into depth clusters at valleys deeper than ``valley_ratio`` of the lower
   neighbouring peak;
3. scores each cluster by its weighted mass times its *figure-ground contrast*: how much more
   of the box than of a thin ring around the box (``context_ring``) lies at that depth.
   Background, the supporting surface and occluders continue outside the box; the boxed object
   does not. This is what keeps thin, open objects (an office chair over a floor, a chair back
   over a table) and partly occluded ones from being lifted to whatever dominates their box;
4. trims the winning cluster to a median +- ``band_mads`` MAD band (floored by the sensor
   noise) to drop flying pixels at its edges, and back-projects the remaining pixels.

The result is the centroid of the object's visible surface in the camera optical frame (x
right, y down, z forward), weighted by a taper that fades the outer ``border_taper`` of the box
(where the supporting surface enters a loose box at the object's own depth); the 2-98 %
extent of those points; and a covariance of the *centroid*: a sensor floor (pixel quantization
and ``sigma_z = k z^2`` through the pinhole Jacobian) plus the spread of the object's points
over a capped number of effective samples (pixels of one surface share their segmentation
error, so the cloud does not average down like independent draws). docs/ACCURACY.md has the
measurements behind each choice.

:func:`lift_boxes` lifts all boxes of one frame together and resolves occlusions between them:
when one box's chosen surface is really a nearer object that has its own box (most of the
claimed pixels lie inside that other box, which that surface fills better), the box is lifted
again without the other object's pixels (:class:`DepthExclusion`), so a partly hidden object is
placed at its own visible surface instead of its occluder's.

The work is laid out for speed, not per box: the boxes of one call share every array pass (one
noise-adapted coordinate computation over all their samples, one joint histogram with a gap
between boxes, one weight table per image axis) and only what is sequential by nature (merging
histogram peaks, order statistics) runs per box. The result for a box is the one it gets when
lifted alone; test/test_lifting_equivalence.py checks it against the one-box-at-a-time version
this replaced, and docs/PERFORMANCE.md has the timings.

The two baselines the benchmark compares against (centre pixel, box median) live in
bench/lifting_baselines.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    FloatArray,
    Lifted3D,
    PixelBox,
    SpatialVlmError,
)

_MAD_TO_SIGMA = 1.4826
_SMOOTHING_KERNEL = np.array([0.054, 0.242, 0.399, 0.242, 0.054])  # Gaussian, sigma = 1 bin


class LiftingError(SpatialVlmError):
    """The depth image, intrinsics, box or configuration given to the lifter is malformed."""


@dataclass(frozen=True)
class LiftingConfig:
    """Parameters of :func:`lift_box`; the defaults suit Kinect/RealSense-class depth."""

    min_depth_m: float = 0.1  # depths outside [min, max] are treated as invalid
    max_depth_m: float = 10.0
    min_valid_ratio: float = 0.02  # object pixels / box pixels needed for a position
    min_samples: int = 12  # object pixels needed for a position
    center_sigma: float = 0.5  # centre-weight Gaussian sigma, as a fraction of the half box
    bin_relative_width: float = 0.01  # histogram bin width near the camera, fraction of depth
    bin_noise_sigmas: float = 2.0  # histogram bin width far away, in sensor-noise sigmas
    valley_ratio: float = 0.5  # split clusters at valleys below this fraction of the lower peak
    context_ring: float = 0.1  # width of the context ring around the box, fraction of its size
    contrast_floor: float = 0.02  # cluster score = mass * (floor + (1 - floor) * contrast)
    band_mads: float = 8.0  # keep cluster depths within median +- band_mads * sigma_MAD
    band_noise_sigmas: float = 3.0  # ... but never narrower than this many sensor-noise sigmas
    depth_noise_coefficient: float = 1.5e-3  # sensor depth noise sigma_z = k * z^2 (1/m)
    pixel_sigma: float = 1.0  # uncertainty of the object's pixel centre (pixels)
    border_taper: float = 0.2  # centroid weights fall to 0 over this outer fraction of the box
    effective_samples: int = 10  # cap on independent samples when averaging the point spread
    max_samples: int = 8192  # larger boxes are sampled with a stride to bound the cost
    # lift_boxes: a box whose chosen surface lies at least this share inside another box, which
    # that surface fills better, is lifted again without the other object's pixels.
    occlusion_share: float = 0.5
    # ... unless the two boxes overlap this much (intersection over union) or more: then they
    # hold the same object (one object named twice), not an occluder and a hidden object.
    same_object_iou: float = 0.7
    # ... then the pixels inside the other box that are nearer than that object's far side are
    # left out; the far side is the farthest claimed pixel plus this fraction of the object's
    # width or height (a turned box shows a second face behind the one it was lifted to).
    occluder_depth_factor: float = 0.5

    def __post_init__(self) -> None:
        numbers = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LiftingError(f'LiftingConfig.{name} must be a number, got {value!r}')
            if not math.isfinite(value):
                raise LiftingError(f'LiftingConfig.{name} must be finite, got {value!r}')
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise LiftingError(
                f'need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}'
            )
        if not 0.0 <= self.min_valid_ratio <= 1.0:
            raise LiftingError(f'min_valid_ratio must be in [0, 1], got {self.min_valid_ratio}')
        if not 0.0 < self.valley_ratio <= 1.0:
            raise LiftingError(f'valley_ratio must be in (0, 1], got {self.valley_ratio}')
        if not 0.0 <= self.contrast_floor <= 1.0:
            raise LiftingError(f'contrast_floor must be in [0, 1], got {self.contrast_floor}')
        if self.context_ring < 0.0:
            raise LiftingError(f'context_ring must be >= 0, got {self.context_ring}')
        positive = (
            'center_sigma',
            'bin_relative_width',
            'bin_noise_sigmas',
            'band_mads',
            'band_noise_sigmas',
            'depth_noise_coefficient',
        )
        for name in positive:
            if getattr(self, name) <= 0.0:
                raise LiftingError(f'LiftingConfig.{name} must be > 0, got {getattr(self, name)}')
        if not 0.0 < self.occlusion_share <= 1.0:
            raise LiftingError(f'occlusion_share must be in (0, 1], got {self.occlusion_share}')
        if not 0.0 < self.same_object_iou <= 1.0:
            raise LiftingError(f'same_object_iou must be in (0, 1], got {self.same_object_iou}')
        if self.occluder_depth_factor < 0.0:
            raise LiftingError(
                f'occluder_depth_factor must be >= 0, got {self.occluder_depth_factor}'
            )
        if not 0.0 <= self.border_taper <= 1.0:
            raise LiftingError(f'border_taper must be in [0, 1], got {self.border_taper}')
        if self.pixel_sigma < 0.0:
            raise LiftingError(f'pixel_sigma must be >= 0, got {self.pixel_sigma}')
        for name in ('min_samples', 'effective_samples', 'max_samples'):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise LiftingError(f'LiftingConfig.{name} must be an integer >= 1, got {value}')


DEFAULT_LIFTING_CONFIG = LiftingConfig()


@dataclass(frozen=True)
class DepthExclusion:
    """Pixels inside ``box`` whose depth lies in ``[near_m, far_m]`` belong to another object
    (a nearer one that covers part of the box being lifted) and are left out."""

    box: PixelBox
    near_m: float
    far_m: float


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


def empty_lift(valid_depth_ratio: float = 0.0, depth_samples: int = 0) -> Lifted3D:
    """A :class:`Lifted3D` without a position (too little depth support)."""
    return Lifted3D(None, None, None, float(valid_depth_ratio), int(depth_samples))


def depth_noise_sigma(depth_m: float | FloatArray, coefficient: float) -> float | FloatArray:
    """Kinect-style axial noise ``sigma_z = k z^2`` (Khoshelham & Elberink 2012: k ~ 1.4e-3)."""
    return coefficient * np.square(depth_m)


def _check_depth(depth_m: npt.ArrayLike, intrinsics: CameraIntrinsics) -> npt.NDArray[np.floating]:
    if not isinstance(intrinsics, CameraIntrinsics):
        raise LiftingError(f'intrinsics must be CameraIntrinsics, got {type(intrinsics).__name__}')
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise LiftingError(f'depth image must be 2D (h, w), got shape {depth.shape}')
    if not np.issubdtype(depth.dtype, np.floating):
        raise LiftingError(f'depth image must be float metres (NaN invalid), got {depth.dtype}')
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise LiftingError(
            f'depth image shape {depth.shape} does not match the intrinsics '
            f'({intrinsics.height}, {intrinsics.width})'
        )
    focal = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    if (
        not all(math.isfinite(value) for value in focal)
        or intrinsics.fx <= 0
        or intrinsics.fy <= 0
    ):
        raise LiftingError(f'intrinsics must be finite with fx, fy > 0, got {intrinsics}')
    return depth


def _check_box(box: PixelBox) -> None:
    if not isinstance(box, PixelBox):
        raise LiftingError(f'box must be PixelBox, got {type(box).__name__}')
    corners = box.as_list()
    if not all(math.isfinite(value) for value in corners):
        raise LiftingError(f'box has non-finite coordinates: {corners}')
    if box.x_max < box.x_min or box.y_max < box.y_min:
        raise LiftingError(f'box is inverted (need x_min <= x_max, y_min <= y_max): {corners}')


def _check_inputs(
    depth_m: npt.ArrayLike, intrinsics: CameraIntrinsics, box: PixelBox
) -> npt.NDArray[np.floating]:
    depth = _check_depth(depth_m, intrinsics)
    _check_box(box)
    return depth


def _pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    """Pixel indices ``[first, stop)`` whose centres (index + 0.5) lie in ``[low, high)``."""
    first = min(max(math.ceil(low - 0.5), 0), size)
    stop = min(max(math.ceil(high - 0.5), 0), size)
    return first, max(first, stop)


@dataclass(frozen=True)
class _Window:
    """The sample lattice of one box, clipped to the image: rows ``y0:y1:stride`` and columns
    ``x0:x1:stride``, the stride chosen so that at most ``max_samples`` pixels are read."""

    x0: int
    x1: int
    y0: int
    y1: int
    stride: int

    @property
    def columns(self) -> int:
        return -(-(self.x1 - self.x0) // self.stride)

    @property
    def rows(self) -> int:
        return -(-(self.y1 - self.y0) // self.stride)

    def crop(self, depth: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
        return depth[self.y0 : self.y1 : self.stride, self.x0 : self.x1 : self.stride]

    def ring(self, depth: npt.NDArray[np.floating], context_ring: float) -> list[np.ndarray]:
        """The lattice extended by ``context_ring`` times the box size on every side, without
        the box itself, as four views (above, below, left, right): the figure-ground context.

        The ring is sampled on the box's lattice, so ring and box densities compare.
        """
        height, width = depth.shape
        x0, x1, y0, y1, stride = self.x0, self.x1, self.y0, self.y1, self.stride
        pad_x = max(round(context_ring * (x1 - x0)), 2)
        pad_y = max(round(context_ring * (y1 - y0)), 2)
        outer_x1, outer_y1 = min(x1 + pad_x, width), min(y1 + pad_y, height)
        first_x = x0 - ((x0 - max(x0 - pad_x, 0)) // stride) * stride
        first_y = y0 - ((y0 - max(y0 - pad_y, 0)) // stride) * stride
        after_x = x0 + self.columns * stride  # the first lattice column at or after x1
        after_y = y0 + self.rows * stride
        return [
            depth[first_y:y0:stride, first_x:outer_x1:stride],
            depth[after_y:outer_y1:stride, first_x:outer_x1:stride],
            depth[y0:y1:stride, first_x:x0:stride],
            depth[y0:y1:stride, after_x:outer_x1:stride],
        ]


def _window(box: PixelBox, width: int, height: int, config: LiftingConfig) -> _Window | None:
    x0, x1 = _pixel_range(box.x_min, box.x_max, width)
    y0, y1 = _pixel_range(box.y_min, box.y_max, height)
    area = (x1 - x0) * (y1 - y0)
    if area == 0:
        return None
    return _Window(x0, x1, y0, y1, max(1, math.ceil(math.sqrt(area / config.max_samples))))


@dataclass(frozen=True)
class _Axis:
    """One image axis of every box's lattice, box after box (box ``b`` owns the entries from
    ``offsets[b]``): pixel index, centre weight and border taper of each lattice row (or
    column). Both weights are separable, so a sample's weight is its row's times its column's.
    """

    coordinates: FloatArray
    weights: FloatArray
    taper: FloatArray
    offsets: list[int]


def _axis(
    windows: Sequence[tuple[int, int, int]],
    bounds: Sequence[tuple[float, float]],
    config: LiftingConfig,
) -> _Axis:
    """``windows`` holds (first, stop, stride) per box, ``bounds`` its box edges (low, high)."""
    counts = [-(-(stop - first) // stride) for first, stop, stride in windows]
    offsets = [0, *np.cumsum(counts).tolist()]
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
    first = np.repeat([first for first, _, _ in windows], counts)
    coordinates = (first + np.repeat([stride for _, _, stride in windows], counts) * index).astype(
        np.float64
    )
    # The same expressions per box as a scalar-per-box computation would use, so every weight
    # is bit for bit what lifting the box alone gives.
    centers = np.repeat([0.5 * (low + high) - 0.5 for low, high in bounds], counts)
    sigmas = np.repeat(
        [max(config.center_sigma * 0.5 * (high - low), 0.5) for low, high in bounds], counts
    )
    weights = np.exp(-0.5 * np.square((coordinates - centers) / sigmas))
    taper = config.border_taper
    if taper <= 0.0:
        tapers = np.ones_like(coordinates)
    else:
        halves = np.repeat([max(0.5 * (high - low), 0.5) for low, high in bounds], counts)
        normalized = np.abs(coordinates - centers) / halves
        ramp = np.clip((normalized - (1.0 - taper)) / taper, 0.0, 1.0)
        # The floor keeps a 1-pixel-wide box from having zero total weight.
        tapers = 0.5 * (1.0 + np.cos(np.pi * ramp)) + 1e-6
    return _Axis(coordinates, weights, tapers, offsets)


def _exclusion_mask(
    crop: npt.NDArray[np.floating],
    rows: FloatArray,
    columns: FloatArray,
    exclusions: Sequence[DepthExclusion],
) -> npt.NDArray[np.bool_]:
    """Lattice samples that belong to an excluded (occluding) object."""
    excluded = np.zeros(crop.shape, dtype=bool)
    for exclusion in exclusions:
        other = exclusion.box
        in_other = (
            _centres_inside(rows, other.y_min, other.y_max)[:, None]
            & _centres_inside(columns, other.x_min, other.x_max)[None, :]
        )
        excluded |= in_other & (crop >= exclusion.near_m) & (crop <= exclusion.far_m)
    return excluded


def _exclusive_cumsum(counts: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    starts = np.zeros(counts.size, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


@dataclass(frozen=True)
class _Samples:
    """The valid depth samples of every box still being lifted, concatenated box after box.

    Box slot ``b`` (``indices[b]`` in the caller's list) owns samples ``starts[b]`` to
    ``starts[b] + counts[b]``, and its context ring the next ``context_counts[b]`` context
    depths.
    """

    indices: list[int]
    box_pixels: npt.NDArray[np.intp]  # (B,) lattice samples in the box, valid or not
    counts: npt.NDArray[np.intp]  # (B,)
    starts: npt.NDArray[np.intp]  # (B,)
    depths: FloatArray  # (n,) metres
    rows: npt.NDArray[np.intp]  # (n,) entry in the row _Axis
    columns: npt.NDArray[np.intp]  # (n,) entry in the column _Axis
    context_depths: FloatArray  # valid depths of the context rings
    context_counts: npt.NDArray[np.intp]  # (B,)

    def per_sample(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One value per box, repeated for each of its samples (cheaper than indexing)."""
        return np.repeat(values, self.counts)

    def per_context(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.repeat(values, self.context_counts)


def _sample(
    depth: npt.NDArray[np.floating],
    windows: Sequence[tuple[int, _Window]],
    rows: _Axis,
    columns: _Axis,
    config: LiftingConfig,
    exclusions: Sequence[Sequence[DepthExclusion]] | None,
    results: list[tuple[Lifted3D, _Support | None]],
) -> _Samples | None:
    """Read each box's lattice once; boxes with too few valid samples get their result here."""
    indices: list[int] = []
    pixels: list[int] = []
    depth_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []
    column_parts: list[np.ndarray] = []
    rings: list[np.ndarray] = []
    ring_sizes: list[int] = []
    low, high = config.min_depth_m, config.max_depth_m
    for slot, (index, window) in enumerate(windows):
        crop = window.crop(depth)
        # NaN fails both comparisons, so this also drops holes (and +-inf fails one).
        valid = crop >= low
        valid &= crop <= high
        if exclusions is not None and exclusions[index]:
            row_first, column_first = rows.offsets[slot], columns.offsets[slot]
            valid &= ~_exclusion_mask(
                crop,
                rows.coordinates[row_first : row_first + window.rows],
                columns.coordinates[column_first : column_first + window.columns],
                exclusions[index],
            )
        flat_index = np.flatnonzero(valid)
        count = flat_index.size
        if count < config.min_samples:
            results[index] = (empty_lift(count / crop.size, count), None)
            continue
        indices.append(index)
        pixels.append(crop.size)
        depth_parts.append(crop[valid])
        # (row, column) of each valid sample, as entries of the axis tables.
        row_index = flat_index // window.columns
        column_index = flat_index - row_index * window.columns
        row_index += rows.offsets[slot]
        column_index += columns.offsets[slot]
        row_parts.append(row_index)
        column_parts.append(column_index)
        if config.context_ring > 0.0:
            ring = window.ring(depth, config.context_ring)
            rings.extend(ring)
            ring_sizes.append(sum(part.size for part in ring))
    if not indices:
        return None
    counts = np.array([part.size for part in depth_parts], dtype=np.intp)
    context_depths, context_counts = np.zeros(0), np.zeros(len(indices), dtype=np.intp)
    if rings:
        # Ring depths are compared after conversion to float64; only their histogram counts
        # matter, so their order within a box does not.
        context_depths = np.concatenate(rings, axis=None, dtype=np.float64)
        valid_context = context_depths >= low
        valid_context &= context_depths <= high
        valid_so_far = np.concatenate(([0], np.cumsum(valid_context)))
        context_counts = np.diff(valid_so_far[np.cumsum([0, *ring_sizes])])
        context_depths = np.compress(valid_context, context_depths)
    return _Samples(
        indices=indices,
        box_pixels=np.array(pixels, dtype=np.intp),
        counts=counts,
        starts=_exclusive_cumsum(counts),
        depths=np.concatenate(depth_parts, dtype=np.float64),
        rows=np.concatenate(row_parts),
        columns=np.concatenate(column_parts),
        context_depths=context_depths,
        context_counts=context_counts,
    )


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


def _merge_peaks(
    smoothed: list[float],
    peaks: list[int],
    gap_minima: list[float],
    first_peak: int,
    stop_peak: int,
    valley_ratio: float,
) -> list[int]:
    """Merge peaks ``first_peak`` to ``stop_peak`` (indices into ``peaks``, all of one box)
    across shallow valleys; returns the bin after the deepest valley between each pair of
    surviving neighbours (where the next cluster starts).

    ``gap_minima[k]`` is the lowest smoothed value from peak ``k`` to peak ``k + 1``, so the
    valley between any two peaks is the lowest of the gaps between them. Plain Python: a box
    has a few to a few tens of peaks, where numpy's per-call cost would dominate.
    """
    heights = [smoothed[peak] for peak in peaks[first_peak:stop_peak]]
    gaps = gap_minima[first_peak:stop_peak]
    # A stack of surviving peaks: a new peak merges into the previous one when the valley
    # between them is shallow compared to the lower of the two.
    stack: list[int] = [0]
    for current in range(1, len(heights)):
        while stack:
            previous = stack[-1]
            valley = min(gaps[previous:current])
            if valley >= valley_ratio * min(heights[previous], heights[current]):
                stack.pop()
                current = previous if heights[previous] >= heights[current] else current
            else:
                break
        stack.append(current)
    starts = []
    for left, right in zip(stack[:-1], stack[1:], strict=True):
        # The first lowest bin between the two: in the first gap that reaches the minimum.
        between = gaps[left:right]
        gap = first_peak + left + between.index(min(between))
        bins = smoothed[peaks[gap] : peaks[gap + 1] + 1]
        starts.append(peaks[gap] + bins.index(min(bins)) + 1)
    return starts


def _median(values: FloatArray) -> float:
    """``np.median`` of a non-empty float array (the same selection and the same mean of the
    two middle values), without its per-call overhead."""
    half = values.size // 2
    # One selection (numpy's vectorized one, which a second index would forgo); the element
    # below the middle is then the largest of the lower part.
    ordered = np.partition(values, half)
    if values.size % 2:
        return float(ordered[half])
    return float((ordered[:half].max() + ordered[half]) / 2.0)


# Empty bins between two boxes' histograms in the joint histogram: the smoothing kernel reaches
# two bins out, so a box's smoothed histogram never sees its neighbour's bins.
_HISTOGRAM_GAP = 2


@dataclass(frozen=True)
class _Histograms:
    """Every box's depth histogram in one array, box after box with empty gaps between them.

    Box slot ``b`` owns bins ``offsets[b]`` to ``offsets[b] + sizes[b]``; ``bins`` is each
    sample's bin within its box.
    """

    bins: npt.NDArray[np.intp]
    joint: npt.NDArray[np.intp]  # each sample's bin in the joint histogram
    origins: FloatArray  # (B,) coordinate of each box's bin 0
    sizes: npt.NDArray[np.intp]
    offsets: npt.NDArray[np.intp]
    weighted: FloatArray  # centre-weighted sample mass per bin
    counts: npt.NDArray[np.intp]  # samples per bin


def _histograms(samples: _Samples, weights: FloatArray, config: LiftingConfig) -> _Histograms:
    coordinate = _noise_adapted_coordinate(samples.depths, config)
    origins = np.minimum.reduceat(coordinate, samples.starts)
    bins = np.floor(coordinate - samples.per_sample(origins)).astype(np.intp)
    sizes = np.maximum.reduceat(bins, samples.starts) + 1
    offsets = _exclusive_cumsum(sizes + _HISTOGRAM_GAP) + _HISTOGRAM_GAP
    total = int(offsets[-1] + sizes[-1]) + _HISTOGRAM_GAP
    joint = bins + samples.per_sample(offsets)
    return _Histograms(
        bins=bins,
        joint=joint,
        origins=origins,
        sizes=sizes,
        offsets=offsets,
        weighted=np.bincount(joint, weights=weights, minlength=total),
        counts=np.bincount(joint, minlength=total),
    )


def _cluster_starts(histograms: _Histograms, config: LiftingConfig) -> list[list[int]]:
    """The first joint bin of every depth cluster of every box."""
    offsets, sizes = histograms.offsets.tolist(), histograms.sizes.tolist()
    # Smoothing all histograms in one convolution gives each box exactly what its own
    # convolution would (the gaps are zeros); 'full' then trim keeps a histogram's length even
    # when it is shorter than the kernel, where numpy convolves in another order: those few
    # are smoothed on their own.
    smoothed = np.convolve(histograms.weighted, _SMOOTHING_KERNEL, mode='full')[2:-2]
    for offset, size in zip(offsets, sizes, strict=True):
        if size < _SMOOTHING_KERNEL.size:
            own = histograms.weighted[offset : offset + size]
            smoothed[offset : offset + size] = np.convolve(own, _SMOOTHING_KERNEL, 'full')[2:-2]
    # A peak is higher than its left neighbour and at least as high as its right one, with
    # nothing (-1) beyond a box's ends.
    edges = np.zeros(smoothed.size + 1, dtype=np.intp)
    np.add.at(edges, histograms.offsets, 1)
    np.add.at(edges, histograms.offsets + histograms.sizes, -1)
    bounded = np.concatenate(([-1.0], np.where(np.cumsum(edges[:-1]) > 0, smoothed, -1.0), [-1.0]))
    inner = bounded[1:-1]
    peaks = np.flatnonzero((inner > bounded[:-2]) & (inner >= bounded[2:]) & (inner > 0.0))
    if peaks.size == 0:
        return [[offset] for offset in offsets]
    gap_minima = np.minimum(np.minimum.reduceat(smoothed, peaks)[:-1], smoothed[peaks[1:]])
    splits = [*np.searchsorted(peaks, histograms.offsets).tolist(), peaks.size]
    peak_list, smoothed_list, gap_list = peaks.tolist(), smoothed.tolist(), gap_minima.tolist()
    return [
        [offset]
        + (
            _merge_peaks(
                smoothed_list,
                peak_list,
                gap_list,
                splits[slot],
                splits[slot + 1],
                config.valley_ratio,
            )
            if splits[slot + 1] > splits[slot]
            else []
        )
        for slot, offset in enumerate(offsets)
    ]


def _chosen_clusters(
    samples: _Samples, histograms: _Histograms, config: LiftingConfig
) -> npt.NDArray[np.bool_]:
    """Which joint bins belong to their box's winning cluster: the largest mass times
    figure-ground contrast."""
    starts = _cluster_starts(histograms, config)
    clusters_per_box = [len(box_starts) for box_starts in starts]
    ends = (histograms.offsets + histograms.sizes).tolist()
    # Segments of the joint histogram: the leading gap, then per box its clusters and the gap
    # after it; only the clusters are used.
    segments = [0]
    cluster_segment: list[int] = []
    for box_starts, end in zip(starts, ends, strict=True):
        cluster_segment.extend(range(len(segments), len(segments) + len(box_starts)))
        segments.extend(box_starts)
        segments.append(end)
    segment_starts = np.array(segments, dtype=np.intp)
    clusters = np.array(cluster_segment, dtype=np.intp)
    cluster_low = segment_starts[clusters]
    cluster_high = segment_starts[clusters + 1]
    cluster_box = np.repeat(np.arange(len(starts)), clusters_per_box)
    masses = np.add.reduceat(histograms.weighted, segment_starts)[clusters]
    contrast = np.ones(clusters.size)
    if samples.context_depths.size:
        context_bins = np.floor(
            _noise_adapted_coordinate(samples.context_depths, config)
            - samples.per_context(histograms.origins)
        ).astype(np.intp)
        in_range = context_bins >= 0
        in_range &= context_bins < samples.per_context(histograms.sizes)
        context_joint = np.compress(
            in_range, context_bins + samples.per_context(histograms.offsets)
        )
        context_counts = np.add.reduceat(
            np.bincount(context_joint, minlength=histograms.counts.size), segment_starts
        )[clusters]
        context_sizes = samples.context_counts[cluster_box]
        inside_counts = np.add.reduceat(histograms.counts, segment_starts)[clusters]
        inside_share = inside_counts / samples.counts[cluster_box]
        context_share = context_counts / np.maximum(context_sizes, 1)
        with_context = context_sizes >= config.min_samples
        contrast[with_context] = np.clip(
            1.0 - context_share / np.maximum(inside_share, 1e-12), 0.0, 1.0
        )[with_context]
    floor = config.contrast_floor
    scores = masses * (floor + (1.0 - floor) * contrast)
    # The first best-scoring cluster of each box (np.argmax's tie rule).
    box_first_cluster = _exclusive_cumsum(np.array(clusters_per_box, dtype=np.intp))
    best = np.maximum.reduceat(scores, box_first_cluster)
    candidates = np.where(scores == best[cluster_box], np.arange(scores.size), scores.size)
    chosen = np.minimum.reduceat(candidates, box_first_cluster)
    in_chosen = np.zeros(histograms.counts.size, dtype=bool)
    for low, high in zip(cluster_low[chosen].tolist(), cluster_high[chosen].tolist(), strict=True):
        in_chosen[low:high] = True
    return in_chosen


def _object_masks(
    samples: _Samples, weights: FloatArray, config: LiftingConfig
) -> npt.NDArray[np.bool_]:
    """Which valid samples belong to each box's object (see the module docstring), for all
    boxes at once."""
    histograms = _histograms(samples, weights, config)
    in_cluster = _chosen_clusters(samples, histograms, config).take(histograms.joint)
    # Median and MAD of each box's chosen cluster; the band around the median drops flying
    # pixels at the cluster's edges.
    cluster_depths = np.compress(in_cluster, samples.depths)
    cluster_counts = np.add.reduceat(in_cluster, samples.starts, dtype=np.intp)
    parts = [
        slice(first, first + count)
        for first, count in zip(
            _exclusive_cumsum(cluster_counts).tolist(), cluster_counts.tolist(), strict=True
        )
    ]
    medians = np.array(
        [_median(cluster_depths[part]) if part.stop > part.start else np.nan for part in parts]
    )
    deviations = np.abs(cluster_depths - np.repeat(medians, cluster_counts))
    mads = np.array(
        [_median(deviations[part]) if part.stop > part.start else np.nan for part in parts]
    )
    mad_sigma = _MAD_TO_SIGMA * mads
    noise_sigma = depth_noise_sigma(medians, config.depth_noise_coefficient)
    half_band = np.maximum(config.band_mads * mad_sigma, config.band_noise_sigmas * noise_sigma)
    with np.errstate(invalid='ignore'):
        in_band = np.abs(samples.depths - samples.per_sample(medians))
        in_band = in_band <= samples.per_sample(half_band)
    return in_cluster & in_band


def _back_project(
    us: FloatArray, vs: FloatArray, depths: FloatArray, intrinsics: CameraIntrinsics
) -> FloatArray:
    xs = (us - intrinsics.cx) * depths / intrinsics.fx
    ys = (vs - intrinsics.cy) * depths / intrinsics.fy
    return np.column_stack((xs, ys, depths))


def sensor_covariance(
    position: FloatArray, intrinsics: CameraIntrinsics, config: LiftingConfig
) -> FloatArray:
    """Covariance floor of a point at ``position`` from pixel and depth noise (pinhole Jacobian).

    With ``x = (u - cx) z / fx`` and ``y = (v - cy) z / fy``, the Jacobian of (x, y, z) with
    respect to (u, v, z) is ``[[z/fx, 0, x/z], [0, z/fy, y/z], [0, 0, 1]]``.
    """
    x, y, z = (float(value) for value in position)
    jacobian = np.array(
        [
            [z / intrinsics.fx, 0.0, x / z],
            [0.0, z / intrinsics.fy, y / z],
            [0.0, 0.0, 1.0],
        ]
    )
    sigma_z = float(depth_noise_sigma(z, config.depth_noise_coefficient))
    measurement = np.diag([config.pixel_sigma**2, config.pixel_sigma**2, sigma_z**2])
    return jacobian @ measurement @ jacobian.T


def _lift_many(
    depth: npt.NDArray[np.floating],
    intrinsics: CameraIntrinsics,
    boxes: Sequence[PixelBox],
    config: LiftingConfig,
    exclusions: Sequence[Sequence[DepthExclusion]] | None = None,
) -> list[tuple[Lifted3D, _Support | None]]:
    """Lift every box of one (checked) depth image; ``exclusions[i]`` applies to box ``i``.

    The result for each box is exactly what lifting it alone gives: the boxes share array
    passes (one histogram array, one coordinate computation, one weight table), never data.
    """
    height, width = depth.shape
    results: list[tuple[Lifted3D, _Support | None]] = [(empty_lift(), None)] * len(boxes)
    windows = [
        (index, window)
        for index, box in enumerate(boxes)
        if (window := _window(box, width, height, config)) is not None
    ]
    if not windows:
        return results
    placed = [boxes[index] for index, _ in windows]
    # Rows of every box, then columns of every box, in one table.
    axes = _axis(
        [(w.y0, w.y1, w.stride) for _, w in windows]
        + [(w.x0, w.x1, w.stride) for _, w in windows],
        [(box.y_min, box.y_max) for box in placed] + [(box.x_min, box.x_max) for box in placed],
        config,
    )
    rows = replace(axes, offsets=axes.offsets[: len(windows)])
    columns = replace(axes, offsets=axes.offsets[len(windows) :])
    with np.errstate(invalid='ignore'):
        samples = _sample(depth, windows, rows, columns, config, exclusions, results)
    if samples is None:
        return results
    weights = rows.weights.take(samples.rows) * columns.weights.take(samples.columns)
    mask = _object_masks(samples, weights, config)
    counts = np.add.reduceat(mask, samples.starts, dtype=np.intp)
    ratios = counts / samples.box_pixels
    lifted = (counts >= config.min_samples) & (ratios >= config.min_valid_ratio)
    selected = np.flatnonzero(mask & samples.per_sample(lifted))
    sample_rows, sample_columns = samples.rows.take(selected), samples.columns.take(selected)
    us = columns.coordinates.take(sample_columns)
    vs = rows.coordinates.take(sample_rows)
    depths = samples.depths.take(selected)
    # (3, n): x, y, z rows, so that per-axis work runs along contiguous memory.
    points = np.stack(
        (
            (us - intrinsics.cx) * depths / intrinsics.fx,
            (vs - intrinsics.cy) * depths / intrinsics.fy,
            depths,
        )
    )
    taper = rows.taper.take(sample_rows) * columns.taper.take(sample_columns)
    described = iter(
        ()
        if not selected.size
        else _describe(points, taper, us, vs, counts[lifted], intrinsics, config)
    )
    for slot, index in enumerate(samples.indices):
        count, ratio = int(counts[slot]), float(ratios[slot])
        if not lifted[slot]:
            results[index] = (empty_lift(ratio, count), None)
            continue
        position, covariance, size, support = next(described)
        results[index] = (Lifted3D(position, covariance, size, ratio, count), support)
    return results


def _describe(
    points: FloatArray,
    taper: FloatArray,
    us: FloatArray,
    vs: FloatArray,
    counts: npt.NDArray[np.intp],
    intrinsics: CameraIntrinsics,
    config: LiftingConfig,
) -> list[tuple[FloatArray, FloatArray, FloatArray, _Support]]:
    """Centroid, covariance, extent and support of each object's back-projected pixels.

    ``points`` (3, n) holds every object's pixels, object after object (``counts`` each),
    weighted by the border ``taper``.
    """
    starts = _exclusive_cumsum(counts)
    parts = [
        slice(first, first + count)
        for first, count in zip(starts.tolist(), counts.tolist(), strict=True)
    ]
    total_weight = np.add.reduceat(taper, starts)
    centroids = np.add.reduceat(points * taper, starts, axis=1) / total_weight  # (3, B)
    centered = points - np.repeat(centroids, counts, axis=1)
    weighted = centered * taper
    # Weighted second moments about the centroid, (3, 3, B): one small product per object.
    spread = np.stack([weighted[:, part] @ centered[:, part].T for part in parts], axis=2)
    spread /= total_weight
    effective = np.minimum(counts, config.effective_samples)
    covariances = _sensor_covariances(centroids, intrinsics, config) + spread / effective
    covariances = 0.5 * (covariances + covariances.transpose(1, 0, 2))
    # Nearest and farthest pixel, widened by the sensor noise, for resolving occlusions.
    near = np.minimum.reduceat(points[2], starts)
    far = np.maximum.reduceat(points[2], starts)
    near -= config.band_noise_sigmas * depth_noise_sigma(near, config.depth_noise_coefficient)
    far += config.band_noise_sigmas * depth_noise_sigma(far, config.depth_noise_coefficient)
    described = []
    positions = centroids.T.copy()
    covariances = covariances.transpose(2, 0, 1).copy()
    for index, part in enumerate(parts):
        count = part.stop - part.start
        # 2nd-98th percentile extent: robust to the few stray pixels a min-max would catch.
        low_rank, high_rank = int(0.02 * (count - 1)), int(math.ceil(0.98 * (count - 1)))
        ranked = np.partition(points[:, part], (low_rank, high_rank), axis=1)
        size = ranked[:, high_rank] - ranked[:, low_rank]
        support = _Support(us[part], vs[part], float(near[index]), float(far[index]))
        described.append((positions[index], covariances[index], size, support))
    return described


def _sensor_covariances(
    positions: FloatArray, intrinsics: CameraIntrinsics, config: LiftingConfig
) -> FloatArray:
    """:func:`sensor_covariance` of each column of ``positions`` (3, B), as (3, 3, B)."""
    x, y, z = positions
    pixel = config.pixel_sigma**2
    depth = depth_noise_sigma(z, config.depth_noise_coefficient) ** 2
    along_x, along_y = z / intrinsics.fx, z / intrinsics.fy  # d(x, y) / d(u, v)
    slope_x, slope_y = x / z, y / z  # d(x, y) / dz
    covariances = np.empty((3, 3, positions.shape[1]))
    covariances[0, 0] = along_x * pixel * along_x + slope_x * depth * slope_x
    covariances[1, 1] = along_y * pixel * along_y + slope_y * depth * slope_y
    covariances[2, 2] = depth
    covariances[0, 1] = covariances[1, 0] = slope_x * depth * slope_y
    covariances[0, 2] = covariances[2, 0] = slope_x * depth
    covariances[1, 2] = covariances[2, 1] = slope_y * depth
    return covariances


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
    return _lift_many(depth, intrinsics, [box], config, [exclusions])[0][0]


def _occlusions(
    boxes: Sequence[PixelBox],
    first: Sequence[tuple[Lifted3D, _Support | None]],
    config: LiftingConfig,
) -> dict[int, list[DepthExclusion]]:
    """For each box lifted to the surface of another boxed object, that object's pixels.

    Box ``i`` took the surface of box ``j`` when the two lifted surfaces share depths, the
    boxes overlap with an intersection over union below ``same_object_iou``, most of the
    pixels box ``i`` claimed lie inside box ``j``, and that surface fills box ``j`` better
    than box ``i`` (an occluder fills its own box; the box it covers keeps the rest of its
    area for the hidden object). Two objects side by side at one depth claim mostly their own
    pixels and are left alone.
    """
    corners = np.array([box.as_list() for box in boxes], dtype=np.float64)
    x_min, y_min, x_max, y_max = corners.T
    overlap = np.maximum(
        0.0, np.minimum(x_max[:, None], x_max) - np.maximum(x_min[:, None], x_min)
    ) * np.maximum(0.0, np.minimum(y_max[:, None], y_max) - np.maximum(y_min[:, None], y_min))
    areas = (x_max - x_min) * (y_max - y_min)
    union = areas[:, None] + areas - overlap
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, overlap / union, 0.0)
    supported = np.array([support is not None for _, support in first])
    near = np.array([support.near_m if support else np.nan for _, support in first])
    far = np.array([support.far_m if support else np.nan for _, support in first])
    ratios = np.array([lifted.valid_depth_ratio for lifted, _ in first])
    with np.errstate(invalid='ignore'):
        candidates = (
            supported[:, None]
            & supported
            & (iou != 0.0)  # apart ...
            & (iou < config.same_object_iou)  # ... or the same object boxed twice
            & ~((far[:, None] < near) | (far < near[:, None]))  # the surfaces share depths
            & (ratios > ratios[:, None])  # the other box is filled better by it
        )
    np.fill_diagonal(candidates, False)
    exclusions: dict[int, list[DepthExclusion]] = {}
    for index, other in zip(*np.nonzero(candidates), strict=True):
        support = first[index][1]
        assert support is not None  # candidates have support
        if support.share_inside(boxes[other]) >= config.occlusion_share:
            exclusion = _occluder_exclusion(boxes[other], first[other], config)
            exclusions.setdefault(int(index), []).append(exclusion)
    return exclusions


def _occluder_exclusion(
    box: PixelBox, lifted: tuple[Lifted3D, _Support | None], config: LiftingConfig
) -> DepthExclusion:
    """The pixels of the occluder in ``box``: everything inside its box up to its far side.

    Anything nearer than the occluder's surface inside its box is not the hidden object either
    (that object is behind the surface it was wrongly lifted to).
    """
    occluder, support = lifted
    assert support is not None and occluder.size is not None  # checked by _occlusions
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
    (see :func:`_occlusions`) is lifted again with that object's pixels excluded; the
    second result stands, including "no position" when too little of the hidden object is
    visible, because the first one described the occluder. All boxes share each pass over the
    samples, so lifting a frame's boxes together costs far less than lifting them one by one.
    """
    if not boxes:
        return []
    depth = _check_depth(depth_m, intrinsics)
    for box in boxes:
        _check_box(box)
    first = _lift_many(depth, intrinsics, boxes, config)
    results = [lifted for lifted, _ in first]
    if not resolve_occlusions or len(boxes) < 2:
        return results
    exclusions = _occlusions(boxes, first, config)
    if exclusions:
        again = sorted(exclusions)
        redone = _lift_many(
            depth,
            intrinsics,
            [boxes[index] for index in again],
            config,
            [exclusions[index] for index in again],
        )
        for index, (lifted, _) in zip(again, redone, strict=True):
            results[index] = lifted
    return results
