# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The two lifting baselines the accuracy benchmark compares against (not product code).

:func:`lift_center_pixel` takes the depth of the box's centre pixel, :func:`lift_box_median` the
median of every valid depth in the box; both back-project at the box centre. They reuse the
product lifter's input checks and sampling (``spatial_vlm_ros.core.lifting``) so that the only
difference measured is how the depth is chosen.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.lifting import (
    DEFAULT_LIFTING_CONFIG,
    LiftingConfig,
    _back_project,
    _check_inputs,
    _pixel_range,
    _window,
    empty_lift,
    sensor_covariance,
)
from spatial_vlm_ros.core.types import CameraIntrinsics, Lifted3D, PixelBox

CENTER_FALLBACK_RADIUS = 2  # centre-pixel baseline: 5x5 window when the centre is a hole


def _valid_box_depths(
    depth: npt.NDArray[np.floating], box: PixelBox, config: LiftingConfig
) -> tuple[npt.NDArray[np.float64], int] | None:
    """The valid depths of the box's sample lattice (row-major) and the lattice size."""
    window = _window(box, depth.shape[1], depth.shape[0], config)
    if window is None:
        return None
    crop = window.crop(depth)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(crop) & (crop >= config.min_depth_m) & (crop <= config.max_depth_m)
    return crop[valid].astype(np.float64), int(crop.size)


def _lift_at_pixel(
    u: float,
    v: float,
    depth: float,
    box: PixelBox,
    intrinsics: CameraIntrinsics,
    config: LiftingConfig,
    used: int,
    box_pixels: int,
) -> Lifted3D:
    position = _back_project(np.array([u]), np.array([v]), np.array([depth]), intrinsics)[0]
    size = np.array(
        [box.width * depth / intrinsics.fx, box.height * depth / intrinsics.fy, 0.0],
    )
    return Lifted3D(
        position=position,
        covariance=sensor_covariance(position, intrinsics, config),
        size=size,
        valid_depth_ratio=used / max(box_pixels, 1),
        depth_samples=used,
    )


def lift_center_pixel(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    box: PixelBox,
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
) -> Lifted3D:
    """Baseline: the depth of the box's centre pixel, back-projected at the box centre.

    When the centre pixel is a hole, the median of the valid depths in its 5x5 neighbourhood
    (inside the box) is used instead, so a single dropout does not void the estimate.
    """
    depth = _check_inputs(depth_m, intrinsics, box)
    height, width = depth.shape
    x0, x1 = _pixel_range(box.x_min, box.x_max, width)
    y0, y1 = _pixel_range(box.y_min, box.y_max, height)
    if x1 <= x0 or y1 <= y0:
        return empty_lift()
    center_u = min(max(math.floor(0.5 * (box.x_min + box.x_max)), x0), x1 - 1)
    center_v = min(max(math.floor(0.5 * (box.y_min + box.y_max)), y0), y1 - 1)
    radius = CENTER_FALLBACK_RADIUS
    for window in (0, radius):
        patch = depth[
            max(center_v - window, y0) : min(center_v + window + 1, y1),
            max(center_u - window, x0) : min(center_u + window + 1, x1),
        ].astype(np.float64)
        with np.errstate(invalid='ignore'):
            values = patch[
                np.isfinite(patch) & (patch >= config.min_depth_m) & (patch <= config.max_depth_m)
            ]
        if values.size:
            return _lift_at_pixel(
                float(center_u),
                float(center_v),
                float(np.median(values)),
                box,
                intrinsics,
                config,
                int(values.size),
                (x1 - x0) * (y1 - y0),
            )
    return empty_lift()


def lift_box_median(
    depth_m: npt.ArrayLike,
    intrinsics: CameraIntrinsics,
    box: PixelBox,
    config: LiftingConfig = DEFAULT_LIFTING_CONFIG,
) -> Lifted3D:
    """Baseline: the median of every valid depth in the box, back-projected at the box centre."""
    depth = _check_inputs(depth_m, intrinsics, box)
    sampled = _valid_box_depths(depth, box, config)
    if sampled is None or sampled[0].size == 0:
        return empty_lift()
    depths, box_pixels = sampled
    return _lift_at_pixel(
        0.5 * (box.x_min + box.x_max) - 0.5,
        0.5 * (box.y_min + box.y_max) - 0.5,
        float(np.median(depths)),
        box,
        intrinsics,
        config,
        int(depths.size),
        box_pixels,
    )
