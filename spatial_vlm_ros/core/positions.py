# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
An object's position as plain floats and its range, once per object and output.

Every published form of a scene (SpatialScene, scenes JSON, markers, Detection3DArray) needs
each object's position as Python floats, whether it has one (``types.has_position``) and its
range from the camera (``Scene.range_m``). These give the same values without a numpy
reduction per question, which at 20 objects and three outputs per frame was most of the
outputs' cost (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

from spatial_vlm_ros.core.types import FloatArray, Scene, SpatialObject, has_position

Position = tuple[float, float, float]


def finite_position(obj: SpatialObject) -> Position | None:
    """Return ``obj``'s position as three floats when it is finite (``has_position``), or None."""
    position = obj.lifted.position
    if position is None:
        return None
    if type(position) is np.ndarray and position.dtype == np.float64 and position.shape == (3,):
        x, y, z = position.tolist()
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
            return (x, y, z)
        return None
    if not has_position(obj):
        return None
    x, y, z = np.asarray(position, dtype=np.float64).ravel().tolist()
    return (x, y, z)


def camera_origin(scene: Scene) -> FloatArray | None:
    """``scene.camera_origin``, or None for a camera-frame scene (origin zero)."""
    return None if scene.T_frame_from_camera is None else scene.camera_origin


def range_from(obj: SpatialObject, origin: FloatArray | None) -> float:
    """
    ``Scene.range_m`` of a positioned object, given the scene's :func:`camera_origin`.

    The same arithmetic (``np.linalg.norm`` is the square root of the offset's dot product).
    """
    offset = np.asarray(obj.lifted.position, dtype=np.float64)
    if origin is not None:
        offset = offset - origin
    offset = offset.ravel()
    return math.sqrt(offset.dot(offset))


def placed(
    scene: Scene, objects: Sequence[SpatialObject] | None = None
) -> list[tuple[SpatialObject, Position | None, float]]:
    """
    Return each object of ``scene`` (or ``objects``) with its finite position and its range.

    In order; the position is None and the range NaN without a position.
    """
    origin = camera_origin(scene)
    result = []
    for obj in scene.objects if objects is None else objects:
        position = finite_position(obj)
        distance = math.nan if position is None else range_from(obj, origin)
        result.append((obj, position, distance))
    return result
