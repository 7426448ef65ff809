# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
An approach pose for Nav2: where to stand to face an object, not a point inside it.

On the ground plane (z = 0) of a gravity-aligned frame (REP 103/105: z up, e.g. ``map``,
``odom`` or ``base_link``), the pose lies on the line from the object's centroid towards the
viewpoint (the camera or the robot), ``standoff_m`` beyond the object's footprint, and faces
the object (yaw only). The footprint radius is half the object's largest horizontal extent:
its measured extents are those of the visible surface, along the camera axes, rotated into the
frame, so the depth extent of an object seen from the front is an underestimate; the standoff
is measured from that edge.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.transforms import quaternion_from_rotation
from spatial_vlm_ros.core.types import FloatArray, SpatialVlmError

DEFAULT_STANDOFF_M = 0.6
# A viewpoint this close (horizontally) to the centroid gives no direction to approach from.
_MIN_HORIZONTAL_M = 0.05


class ApproachError(SpatialVlmError):
    """No approach pose can be computed (no gravity-aligned frame, degenerate geometry)."""


@dataclass(frozen=True)
class ApproachPose:
    """A planar goal: position on the ground plane and a yaw facing the object."""

    frame_id: str
    x: float  # metres
    y: float
    z: float  # 0.0: the ground plane of frame_id
    yaw: float  # radians, about +z, facing the object
    quaternion_xyzw: tuple[float, float, float, float]
    footprint_radius_m: float  # half the largest horizontal extent used
    standoff_m: float


def footprint_radius(
    size_camera_axes: npt.ArrayLike | None,
    R_frame_from_camera: npt.ArrayLike | None,  # noqa: N803
) -> float:
    """Half the largest horizontal extent of the camera-axis box rotated into the frame."""
    if size_camera_axes is None:
        return 0.0
    size = np.abs(np.asarray(size_camera_axes, dtype=np.float64))
    if size.shape != (3,) or not np.all(np.isfinite(size)):
        return 0.0
    if R_frame_from_camera is None:
        return 0.5 * float(max(size[0], size[2]))  # a level camera: x and z are horizontal
    rotation = np.asarray(R_frame_from_camera, dtype=np.float64)
    # Extent of the rotated box along the frame's x and y axes.
    extents = np.abs(rotation[:2, :]) @ size
    return 0.5 * float(np.max(extents))


def approach_pose(
    object_position: npt.ArrayLike,
    viewpoint: npt.ArrayLike,
    frame_id: str,
    *,
    footprint_radius_m: float = 0.0,
    standoff_m: float = DEFAULT_STANDOFF_M,
) -> ApproachPose:
    """
    Return the pose ``standoff_m`` beyond the footprint towards ``viewpoint``, facing the object.

    ``object_position`` and ``viewpoint`` are in ``frame_id``, a gravity-aligned frame (z up):
    only their x and y are used. Raises :class:`ApproachError` when they (nearly) coincide in
    the plane or are not finite, or when ``standoff_m`` is negative.
    """
    target = _finite(object_position, 'object position')
    origin = _finite(viewpoint, 'viewpoint')
    if not math.isfinite(standoff_m) or standoff_m < 0.0:
        raise ApproachError(f'standoff must be finite and >= 0, got {standoff_m}')
    if not math.isfinite(footprint_radius_m) or footprint_radius_m < 0.0:
        raise ApproachError(f'footprint radius must be finite and >= 0, got {footprint_radius_m}')
    toward_viewpoint = origin[:2] - target[:2]
    horizontal = float(np.linalg.norm(toward_viewpoint))
    if horizontal < _MIN_HORIZONTAL_M:
        raise ApproachError(
            'the viewpoint is straight above the object; no direction to approach from'
        )
    direction = toward_viewpoint / horizontal
    offset = footprint_radius_m + standoff_m
    x, y = (target[:2] + direction * offset).tolist()
    yaw = math.atan2(-direction[1], -direction[0])  # face back towards the object
    rotation = np.array(
        [
            [math.cos(yaw), -math.sin(yaw), 0.0],
            [math.sin(yaw), math.cos(yaw), 0.0],
            [0.0, 0.0, 1.0],
        ]
    )
    qx, qy, qz, qw = (float(v) for v in quaternion_from_rotation(rotation))
    return ApproachPose(
        frame_id=frame_id,
        x=float(x),
        y=float(y),
        z=0.0,
        yaw=yaw,
        quaternion_xyzw=(qx, qy, qz, qw),
        footprint_radius_m=float(footprint_radius_m),
        standoff_m=float(standoff_m),
    )


def _finite(value: npt.ArrayLike, what: str) -> FloatArray:
    array = np.asarray(value, dtype=np.float64).ravel()
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ApproachError(f'{what} must be 3 finite numbers, got {value!r}')
    return array
