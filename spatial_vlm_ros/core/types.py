# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Typed values that flow through the pipeline.

Conventions used everywhere in the package:

* Pixel coordinates: origin at the top-left corner of the image, x to the right, y down; boxes
  are half-open ``[x_min, x_max) x [y_min, y_max)`` in pixels of the RGB image.
* Camera optical frame (REP 103 optical): x right, y down, z forward, metres.
* Body frames (REP 103): x forward, y left, z up, metres.
* Stamps are integer nanoseconds (``sec * 10**9 + nanosec``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class SpatialVlmError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image stream (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


@dataclass(frozen=True)
class PixelBox:
    """Axis-aligned box in RGB image pixels, half-open ``[x_min, x_max) x [y_min, y_max)``."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x_min + self.x_max) / 2.0, (self.y_min + self.y_max) / 2.0)

    def as_list(self) -> list[float]:
        return [self.x_min, self.y_min, self.x_max, self.y_max]


@dataclass(frozen=True)
class Detection:
    """One object grounded by the model, already converted to RGB pixels."""

    label: str
    box: PixelBox
    confidence: float = 1.0


@dataclass(frozen=True)
class Lifted3D:
    """
    3D estimate of one box from the depth image, in the camera optical frame.

    ``position`` is None when too few depth pixels supported the object; ``covariance`` and
    ``size`` are then None too.
    """

    position: FloatArray | None  # (3,) metres
    covariance: FloatArray | None  # (3, 3) square metres
    size: FloatArray | None  # (3,) metres, extent along the optical axes
    valid_depth_ratio: float  # fraction of box pixels that supported the estimate, [0, 1]
    depth_samples: int = 0  # number of pixels the estimate used


@dataclass(frozen=True)
class SpatialObject:
    """A grounded object with its 3D estimate, as published."""

    id: str
    label: str
    confidence: float
    box: PixelBox
    lifted: Lifted3D

    @property
    def position(self) -> FloatArray | None:
        return self.lifted.position


# Relation predicates, spelled exactly as published (SpatialRelation.msg constants).
LEFT_OF = 'left_of'
RIGHT_OF = 'right_of'
ABOVE = 'above'
BELOW = 'below'
IN_FRONT_OF = 'in_front_of'
BEHIND = 'behind'
NEAR = 'near'
PREDICATES = (LEFT_OF, RIGHT_OF, ABOVE, BELOW, IN_FRONT_OF, BEHIND, NEAR)
# What each predicate states when subject and object swap places (`near` is symmetric).
CONVERSE_PREDICATE = {
    LEFT_OF: RIGHT_OF,
    RIGHT_OF: LEFT_OF,
    ABOVE: BELOW,
    BELOW: ABOVE,
    IN_FRONT_OF: BEHIND,
    BEHIND: IN_FRONT_OF,
    NEAR: NEAR,
}


@dataclass(frozen=True)
class Relation:
    """
    ``subject <predicate> object`` with the centroid distance (m) and a confidence in [0, 1].

    Every relation is derived from the lifted 3D geometry (the model states no relations).
    """

    subject: str
    predicate: str
    object: str
    distance: float
    confidence: float


@dataclass(frozen=True)
class StageTimings:
    """
    Where the time of one scene went, milliseconds (mirrors StageLatency.msg).

    NaN marks a stage that did not run (the object memory when it is off) or that cannot be
    measured where the scene was made (a replay has no transport, pairing delay or queue).
    """

    receive_ms: float = math.nan  # image stamp -> the last message of the set was received
    pair_ms: float = math.nan  # first message of the set received -> the set was paired
    queue_ms: float = math.nan  # paired -> taken by the worker
    decode_ms: float = math.nan  # RGB and depth decoding, registration
    engine_ms: float = math.nan  # inside the engine call
    lift_ms: float = math.nan  # lifting boxes to 3D
    relations_ms: float = math.nan  # relations
    memory_ms: float = math.nan  # object memory association and update


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not scenes
class Scene:
    """
    Everything understood about one RGB-D frame; serialized as one scenes.jsonl line.

    Built once, complete (the pipeline never patches a scene after construction). ``objects``
    holds every grounded object, sorted by id, with or without a position (see
    :attr:`positioned_objects` and :attr:`objects_without_position`, the two lists of
    SpatialScene.msg). Positions, covariances and the box orientation are in ``frame_id``;
    ``T_frame_from_camera`` is the transform that took them there from the camera optical frame
    (None: ``frame_id`` is the camera frame), so a consumer knows where the camera was.
    """

    stamp_ns: int
    frame_id: str  # frame of object positions
    camera_frame_id: str
    objects: Sequence[SpatialObject] = ()
    relations: Sequence[Relation] = ()
    relation_frame_id: str = ''
    model_id: str = ''
    engine: str = ''
    latency_ms: float = math.nan  # image stamp -> scene built (NaN: not measured)
    inference_ms: float = math.nan  # inside the engine call
    error: str = ''  # non-empty when the engine result was unusable (kept for diagnostics)
    warnings: Sequence[str] = ()  # input problems that did not stop it
    timings: StageTimings = field(default_factory=StageTimings)
    T_frame_from_camera: FloatArray | None = None

    def __post_init__(self) -> None:
        # Stored as tuples so that a built scene cannot change under a consumer; objects are
        # kept in id order, the order every output lists them in.
        object.__setattr__(self, 'objects', tuple(sorted(self.objects, key=lambda obj: obj.id)))
        object.__setattr__(self, 'relations', tuple(self.relations))
        object.__setattr__(self, 'warnings', tuple(self.warnings))
        if self.T_frame_from_camera is not None:
            transform = np.array(self.T_frame_from_camera, dtype=np.float64)
            if transform.shape != (4, 4):
                raise SpatialVlmError(
                    f'Scene.T_frame_from_camera must be 4x4, got shape {transform.shape}'
                )
            transform.setflags(write=False)
            object.__setattr__(self, 'T_frame_from_camera', transform)

    @property
    def positioned_objects(self) -> tuple[SpatialObject, ...]:
        """Objects with a finite 3D position (SpatialScene.objects), in id order."""
        return tuple(obj for obj in self.objects if has_position(obj))

    @property
    def objects_without_position(self) -> tuple[SpatialObject, ...]:
        """Objects the depth could not place (SpatialScene.objects_without_position)."""
        return tuple(obj for obj in self.objects if not has_position(obj))

    @property
    def camera_origin(self) -> FloatArray:
        """Position of the camera's optical centre in ``frame_id``, metres."""
        if self.T_frame_from_camera is None:
            return np.zeros(3)
        return np.array(self.T_frame_from_camera[:3, 3])

    @property
    def camera_orientation(self) -> tuple[float, float, float, float]:
        """
        Quaternion ``(x, y, z, w)`` of the camera optical axes in ``frame_id``.

        Also the orientation of every object's box, whose sizes are extents along those axes.
        """
        if self.T_frame_from_camera is None:
            return (0.0, 0.0, 0.0, 1.0)
        # Imported here: transforms builds on the types of this module.
        from spatial_vlm_ros.core.transforms import quaternion_from_rotation

        x, y, z, w = quaternion_from_rotation(self.T_frame_from_camera[:3, :3])
        return (float(x), float(y), float(z), float(w))

    def range_m(self, obj: SpatialObject) -> float:
        """
        Distance from the camera's optical centre to ``obj``'s centroid, metres.

        NaN when the object has no position.
        """
        if not has_position(obj):
            return math.nan
        offset = np.asarray(obj.lifted.position, dtype=np.float64) - self.camera_origin
        return float(np.linalg.norm(offset))


def has_position(obj: SpatialObject) -> bool:
    """Return True when ``obj`` has a finite 3D position."""
    position = obj.lifted.position
    if position is None:
        return False
    values = np.asarray(position, dtype=np.float64).ravel()
    return values.shape == (3,) and bool(np.all(np.isfinite(values)))


@dataclass(frozen=True)
class RgbdFrame:
    """
    One paired, decoded RGB-D frame: what the pipeline consumes.

    ``depth_m`` is at the depth image's own resolution, in metres, NaN where invalid;
    ``depth_intrinsics`` describe it (the RGB intrinsics scaled when the resolutions differ).
    """

    stamp_ns: int
    frame_id: str  # camera optical frame of the RGB image
    rgb: npt.NDArray[np.uint8]  # (H, W, 3), RGB channel order
    depth_m: npt.NDArray[np.float32]  # (h, w), metres, NaN = invalid
    rgb_intrinsics: CameraIntrinsics
    depth_intrinsics: CameraIntrinsics
