# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The numbers behind the report's pictures: pure numpy, no HTML, no ROS.

Every picture is computed here and only drawn by the report's JavaScript, so the geometry is
tested in Python and the browser code stays a thin painter:

* a **top-down map** of one scene: the ground-plane coordinates of each object's centroid, its
  95 % uncertainty ellipse (from the position covariance), its footprint (the oriented box seen
  from above) and the camera's horizontal field of view;
* a **3D view**: each object's oriented box as 8 corners, the camera frustum, and the matrix that
  takes a depth pixel to the same display coordinates (the browser back-projects the depth grid);
* a **depth grid**: the depth image shrunk to a few thousand pixels, millimetres, zlib-packed;
* the **stage timings** of a scene and the **object memory** map.

Frames (REP 103): positions in the camera optical frame (x right, y down, z forward) are shown
with the camera looking up the map; positions in a body or world frame (x forward, y left, z up)
are shown with x up the map and y to the left. The 3D view always uses a z-up display frame.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import math
from typing import Any
import zlib

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.markers import label_color, positions_are_optical
from spatial_vlm_ros.core.message_fields import STAGE_NAMES
from spatial_vlm_ros.core.types import CameraIntrinsics, FloatArray, Scene, SpatialObject

# Radius of the 95 % region of a 2D Gaussian in standard deviations: sqrt(chi2_2(0.95)).
ELLIPSE_SIGMAS_95 = math.sqrt(-2.0 * math.log(0.05))
# Map axes as rows (map right, map up) in the coordinates of the positions' frame.
_MAP_AXES_OPTICAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x right, z (forward) up
_MAP_AXES_BODY = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # y left, x (forward) up
# Display (z up) from the positions' frame.
_DISPLAY_FROM_OPTICAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# Body frame from the optical frame of a level, forward-looking camera: the assumption the
# markers make when no transform says where the camera is (core/markers.py, _box_extent).
_BODY_FROM_LEVEL_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
DEFAULT_VIEW_DEPTH_M = 3.0  # how far the drawn frustum reaches when no object says otherwise
_DIGITS = 4  # metres rounded to 0.1 mm in the report's JSON


@dataclass(frozen=True)
class SceneFrames:
    """
    Where a scene's positions live and where its camera was.

    ``camera_pose`` is ``T_frame_from_camera`` (4x4); None when the positions are in another
    frame than the camera's and no transform came with the scene (the camera cannot be drawn).
    """

    optical: bool
    camera_pose: FloatArray | None

    @property
    def map_axes(self) -> FloatArray:
        """(2, 3): rows are the map's right and up directions in the positions' frame."""
        return _MAP_AXES_OPTICAL if self.optical else _MAP_AXES_BODY

    @property
    def display_from_frame(self) -> FloatArray:
        """(3, 3): the 3D view's z-up display axes from the positions' frame."""
        return _DISPLAY_FROM_OPTICAL if self.optical else np.eye(3)

    @property
    def box_rotation(self) -> FloatArray:
        """(3, 3): object box axes (the camera optical axes) in the positions' frame."""
        if self.camera_pose is not None:
            return self.camera_pose[:3, :3]
        return np.eye(3) if self.optical else _BODY_FROM_LEVEL_OPTICAL

    @property
    def axis_names(self) -> tuple[str, str]:
        """Labels of the map's right and up directions."""
        return ('x', 'z (forward)') if self.optical else ('-y (right)', 'x')


def label_hex(label: str) -> str:
    """Return the label's colour (the markers' and the annotated image's) as ``#rrggbb``."""
    red, green, blue = label_color(label).as_rgb8()
    return f'#{red:02x}{green:02x}{blue:02x}'


def scene_frames(scene: Scene) -> SceneFrames:
    """
    Return the frames of ``scene``.

    Reads the v0.2 ``T_frame_from_camera`` when the scene has one.
    """
    optical = positions_are_optical(scene)
    pose = _finite_matrix(getattr(scene, 'T_frame_from_camera', None), (4, 4))
    if pose is None and optical:
        pose = np.eye(4)
    return SceneFrames(optical=optical, camera_pose=pose)


def _finite_matrix(value: Any, shape: tuple[int, ...]) -> FloatArray | None:
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        return None
    return array if np.all(np.isfinite(array)) else None


def _rounded(values: npt.ArrayLike, digits: int = _DIGITS) -> list[Any]:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def covariance_ellipse(
    covariance_2d: npt.ArrayLike, sigmas: float = ELLIPSE_SIGMAS_95
) -> tuple[float, float, float] | None:
    """
    ``(semi_major, semi_minor, angle_rad)`` of the ``sigmas`` ellipse of a 2x2 covariance.

    The angle is that of the major axis from the first coordinate axis towards the second.
    None when the covariance is not finite.
    """
    matrix = np.asarray(covariance_2d, dtype=np.float64)
    if matrix.shape != (2, 2) or not np.all(np.isfinite(matrix)):
        return None
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    # eigh sorts ascending; round-off can leave a tiny negative variance.
    minor, major = (sigmas * math.sqrt(max(float(v), 0.0)) for v in eigenvalues)
    axis = eigenvectors[:, 1]
    return major, minor, math.atan2(float(axis[1]), float(axis[0]))


def box_corners(center: npt.ArrayLike, size: npt.ArrayLike, rotation: npt.ArrayLike) -> FloatArray:
    """
    (8, 3) corners of the box of extents ``size`` along the columns of ``rotation``.

    Corner ``k`` has bit 0, 1, 2 of ``k`` selecting the +/- half extent along box axis 0, 1, 2,
    so edges join corners that differ in one bit.
    """
    signs = np.array([[(k >> axis & 1) * 2 - 1 for axis in range(3)] for k in range(8)], float)
    half = 0.5 * np.asarray(size, dtype=np.float64).reshape(3)
    return (
        np.asarray(center, dtype=np.float64).reshape(1, 3)
        + (signs * half) @ np.asarray(rotation, dtype=np.float64).reshape(3, 3).T
    )


def _footprint(corners_2d: FloatArray) -> FloatArray:
    hull = cv2.convexHull(corners_2d.astype(np.float32))
    return hull.reshape(-1, 2).astype(np.float64)


def _object_position(obj: SpatialObject) -> FloatArray | None:
    return _finite_matrix(obj.lifted.position, (3,))


def view_depth_m(scene: Scene, frames: SceneFrames) -> float:
    """How far to draw the camera's field of view: beyond the farthest object, or the default."""
    if frames.camera_pose is None:
        return DEFAULT_VIEW_DEPTH_M
    inverse_rotation = frames.camera_pose[:3, :3].T
    depths = []
    for obj in scene.objects:
        position = _object_position(obj)
        if position is not None:
            depths.append(float((inverse_rotation @ (position - frames.camera_pose[:3, 3]))[2]))
    return max([DEFAULT_VIEW_DEPTH_M * 0.5, *(1.15 * d for d in depths)])


def _image_rays(intrinsics: CameraIntrinsics, pixels: Sequence[tuple[float, float]]) -> FloatArray:
    """(n, 3) optical-frame directions with z = 1 through the given pixel positions."""
    return np.array(
        [
            [(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, 1.0]
            for u, v in pixels
        ]
    )


def top_down_view(scene: Scene, intrinsics: CameraIntrinsics | None = None) -> dict[str, Any]:
    """
    Return the map of one scene, in metres along the map's right (u) and up (v) directions.

    Per placed object: ``c`` centroid, ``ell`` 95 % ellipse ``[a, b, angle]`` (or None without a
    covariance), ``fp`` footprint polygon (or None without a size). ``frustum`` is the camera
    position and the ends of the left and right image-edge rays (None when the camera pose or the
    intrinsics are unknown); ``unplaced`` lists objects without a 3D position.
    """
    frames = scene_frames(scene)
    axes = frames.map_axes
    objects: list[dict[str, Any]] = []
    unplaced: list[str] = []
    for obj in _all_objects(scene):
        position = _object_position(obj)
        if position is None:
            unplaced.append(obj.id)
            continue
        covariance = _finite_matrix(obj.lifted.covariance, (3, 3))
        ellipse = None if covariance is None else covariance_ellipse(axes @ covariance @ axes.T)
        size = _finite_matrix(obj.lifted.size, (3,))
        footprint = None
        if size is not None:
            corners = box_corners(position, size, frames.box_rotation)
            footprint = _rounded(_footprint(corners @ axes.T))
        objects.append(
            {
                'id': obj.id,
                'color': label_hex(obj.label),
                'c': _rounded(axes @ position),
                'ell': None if ellipse is None else _rounded(ellipse),
                'fp': footprint,
            }
        )
    frustum = None
    if frames.camera_pose is not None and intrinsics is not None:
        depth = view_depth_m(scene, frames)
        rays = _image_rays(intrinsics, [(0.0, intrinsics.cy), (intrinsics.width, intrinsics.cy)])
        rotation, apex = frames.camera_pose[:3, :3], frames.camera_pose[:3, 3]
        ends = (rays * depth) @ rotation.T + apex
        frustum = _rounded(np.vstack([apex, ends]) @ axes.T)
    right, up = frames.axis_names
    return {
        'frame': scene.frame_id,
        'right': right,
        'up': up,
        'objects': objects,
        'frustum': frustum,
        'unplaced': unplaced,
    }


def _all_objects(scene: Scene) -> list[SpatialObject]:
    # Scene.objects holds every object, with or without a position.
    return list(scene.objects)


def view_3d(scene: Scene, intrinsics: CameraIntrinsics | None = None) -> dict[str, Any]:
    """
    Return the 3D view of one scene in z-up display coordinates, metres.

    ``boxes``: per placed object its centroid ``c`` and 8 ``corners`` (bit order of
    :func:`box_corners`); ``camera``: ``apex`` and the 4 far corners of the frustum (image
    corners clockwise from top-left), or None; ``display_from_camera``: 3x4 matrix taking an
    optical-frame point of this camera to display coordinates (None without a camera pose);
    ``axes``: the positions' frame origin and unit axes in display coordinates.
    """
    frames = scene_frames(scene)
    display = frames.display_from_frame
    boxes = []
    for obj in scene.objects:
        position = _object_position(obj)
        if position is None:
            continue
        size = _finite_matrix(obj.lifted.size, (3,))
        corners = box_corners(
            position, size if size is not None else np.full(3, 0.05), frames.box_rotation
        )
        boxes.append(
            {
                'id': obj.id,
                'color': label_hex(obj.label),
                'c': _rounded(display @ position),
                'corners': _rounded(corners @ display.T),
            }
        )
    camera = None
    display_from_camera = None
    if frames.camera_pose is not None:
        rotation, apex = frames.camera_pose[:3, :3], frames.camera_pose[:3, 3]
        display_from_camera = _rounded(np.hstack([display @ rotation, (display @ apex)[:, None]]))
        if intrinsics is not None:
            depth = view_depth_m(scene, frames)
            pixels = [
                (0.0, 0.0),
                (intrinsics.width, 0.0),
                (intrinsics.width, intrinsics.height),
                (0.0, intrinsics.height),
            ]
            far = (_image_rays(intrinsics, pixels) * depth) @ rotation.T + apex
            camera = {'apex': _rounded(display @ apex), 'far': _rounded(far @ display.T)}
    return {
        'boxes': boxes,
        'camera': camera,
        'display_from_camera': display_from_camera,
        'axes': _rounded(display),  # columns: the frame's x, y, z axes in display coordinates
    }


def depth_grid(
    depth_m: npt.NDArray[np.floating],
    intrinsics: CameraIntrinsics,
    width: int = 128,
) -> dict[str, Any] | None:
    """
    Return the depth image shrunk to ``width`` pixels across.

    Uint16 millimetres (0 = no depth), row-major little-endian, zlib-compressed and base64-encoded,
    with the intrinsics of the shrunk grid and a robust depth range (2nd/98th percentile) for
    colour mapping.

    Nearest-neighbour shrinking keeps real measurements (averaging would invent depths at
    object edges). None when the image has no valid depth at all.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.ndim != 2 or depth.size == 0:
        return None
    height, full_width = depth.shape
    grid_w = max(1, min(width, full_width))
    grid_h = max(1, round(height * grid_w / full_width))
    small = cv2.resize(depth, (grid_w, grid_h), interpolation=cv2.INTER_NEAREST)
    valid = np.isfinite(small) & (small > 0)
    if not valid.any():
        return None
    millimetres = np.where(valid, np.clip(np.round(small * 1000.0), 1, 65535), 0)
    # Level 1: 4x faster than the default for about 10 % more bytes on Kinect depth.
    packed = zlib.compress(millimetres.astype('<u2').tobytes(), 1)
    low, high = np.percentile(small[valid], [2.0, 98.0])
    scale_x, scale_y = grid_w / intrinsics.width, grid_h / intrinsics.height
    return {
        'w': grid_w,
        'h': grid_h,
        # Pixel centres scale as (c + 0.5) * s - 0.5.
        'fx': round(intrinsics.fx * scale_x, 4),
        'fy': round(intrinsics.fy * scale_y, 4),
        'cx': round((intrinsics.cx + 0.5) * scale_x - 0.5, 4),
        'cy': round((intrinsics.cy + 0.5) * scale_y - 0.5, 4),
        'lo': round(float(low), 3),
        'hi': round(float(max(high, low + 1e-3)), 3),
        'valid': round(float(valid.mean()), 4),
        'mm': base64.b64encode(packed).decode('ascii'),
    }


def decode_depth_grid(grid: Mapping[str, Any]) -> npt.NDArray[np.uint16]:
    """Inverse of the packing in :func:`depth_grid` (millimetres, 0 = no depth)."""
    raw = zlib.decompress(base64.b64decode(grid['mm']))
    return np.frombuffer(raw, dtype='<u2').reshape(int(grid['h']), int(grid['w']))


def stage_timings(scene: Scene) -> dict[str, float]:
    """
    Milliseconds per pipeline stage of ``scene``, in pipeline order.

    v0.2 scenes carry ``timings`` (StageLatency fields, NaN for a stage that did not run).
    Older scenes know only the engine time and the total, so they report ``engine`` and
    ``other`` (the rest of ``latency_ms``).
    """
    timings = getattr(scene, 'timings', None)
    stages: dict[str, float] = {}
    if timings is not None:
        # StageLatency.msg fields in pipeline order; a stage is named without the _ms suffix.
        for name in STAGE_NAMES:
            value = (
                timings.get(name) if isinstance(timings, Mapping) else getattr(timings, name, None)
            )
            if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
                stages[name.removesuffix('_ms')] = round(float(value), 3)
    if stages:
        return stages
    engine = max(float(scene.inference_ms), 0.0)
    return {
        'engine': round(engine, 3),
        'other': round(max(float(scene.latency_ms) - engine, 0.0), 3),
    }


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _vector3(value: Any) -> FloatArray | None:
    if value is None:
        return None
    if all(hasattr(value, axis) for axis in ('x', 'y', 'z')):  # geometry_msgs Point/Vector3
        value = (value.x, value.y, value.z)
    return _finite_matrix(value, (3,))


def finite_or_none(value: Any, digits: int) -> float | None:
    """``value`` rounded to ``digits``; None when it is not a finite number (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


MEMORY_STATES = ('visible', 'out of view', 'occluded', 'unseen')  # RememberedObject.state


def memory_view(
    objects: Iterable[Any],
    frame_id: str,
    camera_path: Sequence[npt.ArrayLike] = (),
) -> dict[str, Any]:
    """
    Return the object memory as one map (same layout as :func:`top_down_view`).

    In a body/world frame (REP 103: x forward, y left, z up).

    ``objects`` are RememberedObject-like items (attributes or mapping keys): ``id``, ``label``,
    ``position`` (3 values or a Point), ``position_covariance`` (9 or 3x3), optional ``size``,
    ``state`` (RememberedObject constants or a name), ``sightings``, ``existence``.
    ``camera_path``: camera positions in the same frame over the run.
    """
    frames = SceneFrames(optical=False, camera_pose=None)
    axes = frames.map_axes
    placed: list[dict[str, Any]] = []
    unplaced: list[str] = []
    for item in objects:
        object_id = str(_field(item, 'id', ''))
        position = _vector3(_field(item, 'position'))
        if position is None:
            unplaced.append(object_id)
            continue
        covariance = _finite_matrix(_field(item, 'position_covariance'), (3, 3))
        ellipse = None if covariance is None else covariance_ellipse(axes @ covariance @ axes.T)
        state = _field(item, 'state', '')
        if isinstance(state, int) and 0 <= state < len(MEMORY_STATES):
            state = MEMORY_STATES[state]
        placed.append(
            {
                'id': object_id,
                'color': label_hex(str(_field(item, 'label', object_id))),
                'c': _rounded(axes @ position),
                'ell': None if ellipse is None else _rounded(ellipse),
                'fp': None,
                'state': str(state),
                'sightings': int(_field(item, 'sightings', 0) or 0),
                'existence': finite_or_none(_field(item, 'existence'), 3),
            }
        )
    path = [
        _rounded(axes @ point) for point in (_vector3(p) for p in camera_path) if point is not None
    ]
    right, up = frames.axis_names
    return {
        'frame': frame_id,
        'right': right,
        'up': up,
        'objects': placed,
        'frustum': None,
        'path': path,
        'unplaced': unplaced,
    }


__all__ = [
    'DEFAULT_VIEW_DEPTH_M',
    'ELLIPSE_SIGMAS_95',
    'MEMORY_STATES',
    'SceneFrames',
    'box_corners',
    'covariance_ellipse',
    'decode_depth_grid',
    'label_hex',
    'depth_grid',
    'finite_or_none',
    'memory_view',
    'scene_frames',
    'stage_timings',
    'top_down_view',
    'view_3d',
    'view_depth_m',
]
