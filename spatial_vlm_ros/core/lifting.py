# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Lift a 2D box to a 3D position with a registered depth image.

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

The per-sample work runs in compiled passes (core/_lifting_kernels.py, numba) shared by all
boxes of one call: one read of every box's lattice with a table of the frame's distinct depths,
one joint histogram with a gap between boxes, one weight table per image axis; this module keeps
the orchestration and the numpy steps between the passes (the logarithm of each distinct depth,
the axis weights, the histogram smoothing), so every value is numpy's. :func:`warm_up` loads
(or compiles) the kernels ahead of the first frame. The result for a box is the one it gets
when lifted alone; test/test_lifting_equivalence.py checks it against the one-box-at-a-time
version, and docs/PERFORMANCE.md has the timings.

The two baselines the benchmark compares against (centre pixel, box median) live in
bench/lifting_baselines.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import functools
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core import _lifting_kernels as kernels
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
    """
    Pixels of another object, left out of the box being lifted.

    Those inside ``box`` whose depth lies in ``[near_m, far_m]`` belong to a nearer object that
    covers part of the box being lifted.
    """

    box: PixelBox
    near_m: float
    far_m: float


@dataclass(frozen=True)
class _Lifts:
    """
    What :func:`_lift_many` found for each of its boxes, as arrays (box ``i`` in row ``i``).

    Boxes without a position have NaN there. ``support_u``/``support_v`` hold the image
    coordinates of the pixels each positioned box was lifted from, box after box (``starts``),
    and ``near``/``far`` their depth range widened by the sensor noise at both ends: what
    resolving occlusions needs.
    """

    depth_samples: npt.NDArray[np.int64]
    ratios: FloatArray
    positioned: npt.NDArray[np.bool_]
    positions: FloatArray  # (B, 3)
    covariances: FloatArray  # (B, 3, 3)
    sizes: FloatArray  # (B, 3)
    near: FloatArray
    far: FloatArray
    starts: npt.NDArray[np.int64]  # (B + 1,)
    support_u: FloatArray
    support_v: FloatArray

    def lifted(self) -> list[Lifted3D]:
        """One :class:`Lifted3D` per box."""
        samples, ratios = self.depth_samples.tolist(), self.ratios.tolist()
        return [
            Lifted3D(
                self.positions[index], self.covariances[index], self.sizes[index], ratio, count
            )
            if positioned
            else empty_lift(ratio, count)
            for index, (positioned, ratio, count) in enumerate(
                zip(self.positioned.tolist(), ratios, samples, strict=True)
            )
        ]


def empty_lift(valid_depth_ratio: float = 0.0, depth_samples: int = 0) -> Lifted3D:
    """Return a :class:`Lifted3D` without a position (too little depth support)."""
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


def _check_boxes(boxes: Sequence[PixelBox]) -> FloatArray:
    """:func:`_check_box` of every box (the first bad one raises); their corners as (B, 4)."""
    if all(type(box) is PixelBox for box in boxes):
        try:
            corners = np.array(
                [(box.x_min, box.y_min, box.x_max, box.y_max) for box in boxes],
                dtype=np.float64,
            )
        except (TypeError, ValueError):  # not numbers: _check_box says which box
            corners = np.full((len(boxes), 4), np.nan)
        x_min, y_min, x_max, y_max = corners.T
        if np.isfinite(corners).all() and (x_max >= x_min).all() and (y_max >= y_min).all():
            return corners
    for box in boxes:
        _check_box(box)
    return np.array([box.as_list() for box in boxes], dtype=np.float64)


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
    """
    The sample lattice of one box, clipped to the image.

    Rows ``y0:y1:stride`` and columns ``x0:x1:stride``, the stride chosen so that at most
    ``max_samples`` pixels are read.
    """

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
        """
        Return the figure-ground context: four views (above, below, left, right).

        The lattice extended by ``context_ring`` times the box size on every side, without the
        box itself.

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


def _back_project(
    us: FloatArray, vs: FloatArray, depths: FloatArray, intrinsics: CameraIntrinsics
) -> FloatArray:
    xs = (us - intrinsics.cx) * depths / intrinsics.fx
    ys = (vs - intrinsics.cy) * depths / intrinsics.fy
    return np.column_stack((xs, ys, depths))


def sensor_covariance(
    position: FloatArray, intrinsics: CameraIntrinsics, config: LiftingConfig
) -> FloatArray:
    """
    Covariance floor of a point at ``position`` from pixel and depth noise (pinhole Jacobian).

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


def _noise_adapted_coordinate(depths: FloatArray, config: LiftingConfig) -> FloatArray:
    """
    Monotonic depth coordinate in which one unit is one histogram bin.

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


# Empty bins between two boxes' histograms in the joint histogram: the smoothing kernel reaches
# two bins out, so a box's smoothed histogram never sees its neighbour's bins.
_HISTOGRAM_GAP = 2


def _kernel_depth(depth: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """
    Return the depth image as the kernels read it.

    C-contiguous float32 or float64 (float16 widens to float32 exactly; wider floats are read as
    float64).
    """
    dtype = np.float32 if depth.dtype.itemsize <= 4 else np.float64
    return np.ascontiguousarray(depth, dtype=dtype)


def _as_image_dtype(value: float, depth: npt.NDArray[np.floating], kernel_dtype: Any) -> Any:
    """
    ``value`` as numpy compares it with the image.

    A Python float is cast to the image's dtype first (NEP 50), then widened exactly to the
    kernel's dtype.
    """
    return _cast(float(value), depth.dtype, np.dtype(kernel_dtype))


@functools.lru_cache(maxsize=256)
def _cast(value: float, image_dtype: np.dtype, kernel_dtype: np.dtype) -> Any:
    with np.errstate(over='ignore'):
        return kernel_dtype.type(image_dtype.type(value))


def _exclusion_arrays(
    exclusions: Sequence[Sequence[DepthExclusion]] | None,
    boxes: int,
    depth: npt.NDArray[np.floating],
    kernel_dtype: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (per box), corners, near and far limits of every exclusion, for the kernel."""
    offsets = np.zeros(boxes + 1, dtype=np.int64)
    corners: list[list[float]] = []
    near: list[Any] = []
    far: list[Any] = []
    for index in range(boxes):
        for exclusion in exclusions[index] if exclusions is not None else ():
            corners.append(exclusion.box.as_list())
            near.append(_as_image_dtype(exclusion.near_m, depth, kernel_dtype))
            far.append(_as_image_dtype(exclusion.far_m, depth, kernel_dtype))
        offsets[index + 1] = len(corners)
    return (
        offsets,
        np.array(corners, dtype=np.float64).reshape(-1, 4),
        np.array(near, dtype=kernel_dtype),
        np.array(far, dtype=kernel_dtype),
    )


def _axis_weights(
    coordinates: FloatArray,
    centers: FloatArray,
    sigmas: FloatArray,
    halves: FloatArray,
    config: LiftingConfig,
) -> tuple[FloatArray, FloatArray]:
    """
    Return the centre weight and border taper of every lattice row and column.

    Both are separable, so a sample's weight is its row's times its column's.
    """
    weights = np.exp(-0.5 * np.square((coordinates - centers) / sigmas))
    taper = config.border_taper
    if taper <= 0.0:
        return weights, np.ones_like(coordinates)
    normalized = np.abs(coordinates - centers) / halves
    ramp = np.minimum(np.maximum((normalized - (1.0 - taper)) / taper, 0.0), 1.0)  # clip
    # The floor keeps a 1-pixel-wide box from having zero total weight.
    return weights, 0.5 * (1.0 + np.cos(np.pi * ramp)) + 1e-6


def _smooth(weighted: FloatArray, offsets: np.ndarray, sizes: np.ndarray) -> FloatArray:
    """
    Smooth every box's histogram with the Gaussian kernel in one convolution.

    The gaps are zeros, so each box gets exactly what its own convolution gives; 'full' then
    trim keeps a histogram's length even when it is shorter than the kernel, where numpy
    convolves in another order: those few are smoothed on their own.
    """
    smoothed = np.convolve(weighted, _SMOOTHING_KERNEL, mode='full')[2:-2]
    for box in np.flatnonzero((sizes > 0) & (sizes < _SMOOTHING_KERNEL.size)).tolist():
        offset, size = int(offsets[box]), int(sizes[box])
        own = weighted[offset : offset + size]
        smoothed[offset : offset + size] = np.convolve(own, _SMOOTHING_KERNEL, 'full')[2:-2]
    return smoothed


def _lift_many(
    depth: npt.NDArray[np.floating],
    intrinsics: CameraIntrinsics,
    corners: FloatArray,
    config: LiftingConfig,
    exclusions: Sequence[Sequence[DepthExclusion]] | None = None,
) -> _Lifts:
    """
    Lift every box (``corners`` (B, 4): x_min, y_min, x_max, y_max) of one checked depth image.

    ``exclusions[i]`` applies to box ``i``.

    The result for each box is exactly what lifting it alone gives: the boxes share the
    compiled passes (_lifting_kernels.py), never data.
    """
    image = _kernel_depth(depth)
    dtype = image.dtype
    bits = image.view(np.uint32 if dtype == np.float32 else np.uint64)
    boxes = corners.shape[0]
    (
        status,
        lattice,
        _,
        _,
        axis_coordinates,
        centers,
        sigmas,
        halves,
        sample_values,
        sample_rows,
        sample_columns,
        sample_starts,
        ring_values,
        ring_starts,
        distinct,
    ) = kernels.sample_boxes(
        image,
        bits,
        corners,
        _as_image_dtype(config.min_depth_m, depth, dtype),
        _as_image_dtype(config.max_depth_m, depth, dtype),
        float(config.min_depth_m),
        float(config.max_depth_m),
        int(config.max_samples),
        int(config.min_samples),
        float(config.context_ring),
        float(config.center_sigma),
        *_exclusion_arrays(exclusions, boxes, depth, dtype),
    )
    depth_samples = np.diff(sample_starts)
    sampled = status == kernels.SAMPLED
    if not sampled.any():
        ratios = np.where(status == kernels.TOO_FEW, depth_samples / np.maximum(lattice, 1), 0.0)
        return _no_positions(boxes, depth_samples, ratios)
    coordinates = _noise_adapted_coordinate(distinct, config)
    if not np.all(np.isfinite(coordinates)):
        raise LiftingError(
            'a depth of 0 m is inside [min_depth_m, max_depth_m]: the histogram coordinate '
            '(log depth) is undefined there; use min_depth_m > 0'
        )
    weights, taper = _axis_weights(axis_coordinates, centers, sigmas, halves, config)
    sample_bins, offsets, sizes, weighted, bin_counts, context = kernels.histograms(
        status,
        sample_values,
        sample_rows,
        sample_columns,
        sample_starts,
        ring_values,
        ring_starts,
        coordinates,
        weights,
        _HISTOGRAM_GAP,
    )
    # (object pixels, positioned, positions, covariances, sizes, near, far, support starts,
    # support u, support v) of each box.
    described = kernels.describe_boxes(
        status,
        lattice,
        sample_values,
        sample_rows,
        sample_columns,
        sample_starts,
        sample_bins,
        ring_starts,
        distinct,
        offsets,
        sizes,
        weighted,
        bin_counts,
        context,
        _smooth(weighted, offsets, sizes),
        axis_coordinates,
        taper,
        np.array([intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy], dtype=np.float64),
        _settings(config),
    )
    # Sampled boxes report the object pixels, boxes with too few valid samples those.
    depth_samples = np.where(sampled, described[0], depth_samples)
    ratios = np.where(status == kernels.NO_WINDOW, 0.0, depth_samples / np.maximum(lattice, 1))
    return _Lifts(depth_samples, ratios, *described[1:])


def _no_positions(boxes: int, depth_samples: npt.NDArray[np.int64], ratios: FloatArray) -> _Lifts:
    nan3 = np.full((boxes, 3), np.nan)
    return _Lifts(
        depth_samples,
        ratios,
        np.zeros(boxes, dtype=bool),
        nan3,
        np.full((boxes, 3, 3), np.nan),
        nan3.copy(),
        np.full(boxes, np.nan),
        np.full(boxes, np.nan),
        np.zeros(boxes + 1, dtype=np.int64),
        np.zeros(0),
        np.zeros(0),
    )


@functools.lru_cache(maxsize=16)
def _settings(config: LiftingConfig) -> FloatArray:
    """Return the configuration values :func:`kernels.describe_boxes` reads, in its order."""
    return np.array(
        [
            config.valley_ratio,
            config.contrast_floor,
            config.min_samples,
            config.min_valid_ratio,
            config.band_mads,
            config.band_noise_sigmas,
            config.depth_noise_coefficient,
            config.pixel_sigma,
            config.effective_samples,
        ],
        dtype=np.float64,
    )


def lift_box(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    box: PixelBox,
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
    exclusions: Sequence[DepthExclusion] = (),
) -> Lifted3D:
    """
    Centroid, extent and centroid covariance of the object's visible surface in ``box``.

    ``depth_m`` is the depth image (float metres, NaN invalid) described by ``intrinsics``;
    ``box`` is in that image's pixels (half-open, clipped to the image here). ``exclusions``
    name pixels of other objects to leave out (see :func:`lift_boxes`). Returns a
    :class:`Lifted3D` in the camera optical frame, with ``position`` None when fewer than
    ``config.min_samples`` pixels or less than ``config.min_valid_ratio`` of the box supported
    the object. Raises :class:`LiftingError` for malformed inputs.
    """
    depth = _check_inputs(depth_m, intrinsics, box)
    corners = np.array([box.as_list()], dtype=np.float64)
    return _lift_many(depth, intrinsics, corners, config, [exclusions]).lifted()[0]


def _occlusions(
    boxes: Sequence[PixelBox], corners: FloatArray, first: _Lifts, config: LiftingConfig
) -> dict[int, list[DepthExclusion]]:
    """
    For each box lifted to the surface of another boxed object, that object's pixels.

    Box ``i`` took the surface of box ``j`` when the two lifted surfaces share depths, the
    boxes overlap with an intersection over union below ``same_object_iou``, most of the
    pixels box ``i`` claimed lie inside box ``j``, and that surface fills box ``j`` better
    than box ``i`` (an occluder fills its own box; the box it covers keeps the rest of its
    area for the hidden object). Two objects side by side at one depth claim mostly their own
    pixels and are left alone.
    """
    x_min, y_min, x_max, y_max = corners.T
    overlap = np.maximum(
        0.0, np.minimum(x_max[:, None], x_max) - np.maximum(x_min[:, None], x_min)
    ) * np.maximum(0.0, np.minimum(y_max[:, None], y_max) - np.maximum(y_min[:, None], y_min))
    areas = (x_max - x_min) * (y_max - y_min)
    union = areas[:, None] + areas - overlap
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, overlap / union, 0.0)
    supported, near, far, ratios = first.positioned, first.near, first.far, first.ratios
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
    subjects, others = np.nonzero(candidates)
    if not subjects.size:
        return {}
    # Share of each candidate's claimed pixels whose centres lie in the other box.
    shares = kernels.shares_inside(
        first.support_u, first.support_v, first.starts, subjects, others, corners
    )
    exclusions: dict[int, list[DepthExclusion]] = {}
    for index, other, share in zip(
        subjects.tolist(), others.tolist(), shares.tolist(), strict=True
    ):
        if share >= config.occlusion_share:
            exclusion = _occluder_exclusion(boxes[other], first, other, config)
            exclusions.setdefault(index, []).append(exclusion)
    return exclusions


def _occluder_exclusion(
    box: PixelBox, first: _Lifts, occluder: int, config: LiftingConfig
) -> DepthExclusion:
    """
    Return the pixels of the occluder in ``box``: everything inside its box up to its far side.

    Anything nearer than the occluder's surface inside its box is not the hidden object either
    (that object is behind the surface it was wrongly lifted to).
    """
    far = float(first.far[occluder])
    size = first.sizes[occluder]
    depth_extra = config.occluder_depth_factor * float(max(size[0], size[1]))
    return DepthExclusion(box, 0.0, far + depth_extra)


def lift_boxes(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    boxes: Sequence[PixelBox],
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
    resolve_occlusions: bool = True,
) -> list[Lifted3D]:
    """
    :func:`lift_box` for each box of one depth image, in order, resolving occlusions.

    Each box is lifted on its own first. A box that took the surface of another boxed object
    (see :func:`_occlusions`) is lifted again with that object's pixels excluded; the
    second result stands, including "no position" when too little of the hidden object is
    visible, because the first one described the occluder. All boxes share each pass over the
    samples, so lifting a frame's boxes together costs far less than lifting them one by one.
    """
    if not boxes:
        return []
    depth = _check_depth(depth_m, intrinsics)
    corners = _check_boxes(boxes)
    first = _lift_many(depth, intrinsics, corners, config)
    results = first.lifted()
    if not resolve_occlusions or len(boxes) < 2:
        return results
    exclusions = _occlusions(boxes, corners, first, config)
    if exclusions:
        again = sorted(exclusions)
        redone = _lift_many(
            depth, intrinsics, corners[again], config, [exclusions[index] for index in again]
        )
        for index, lifted in zip(again, redone.lifted(), strict=True):
            results[index] = lifted
    return results


def warm_up(dtypes: Sequence[npt.DTypeLike] = (np.float32,)) -> float:
    """
    Compile the lifting kernels, or load them from numba's cache, before the first frame.

    For depth images of ``dtypes`` (float32: what decoded frames hold), so that the first frame
    does not pay it; returns the seconds it took (docs/PERFORMANCE.md: about 1 s from the
    cache, tens of seconds for a first compile).
    """
    started = time.perf_counter()
    intrinsics = CameraIntrinsics(fx=20.0, fy=20.0, cx=15.5, cy=11.5, width=32, height=24)
    for dtype in dtypes:
        depth = np.full((24, 32), 3.0, dtype=dtype)
        depth[6:18, 8:20] = 1.0  # a near object half covering a second box: occlusions too
        boxes = [PixelBox(8, 6, 20, 18), PixelBox(12, 4, 30, 22)]
        lift_boxes(depth, intrinsics, boxes, DEFAULT_LIFTING_CONFIG)
    return time.perf_counter() - started
