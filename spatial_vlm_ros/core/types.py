# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Typed values that flow through the pipeline.

Conventions used everywhere in the package:

* Pixel coordinates: origin at the top-left corner of the image, x to the right, y down; boxes
  are half-open ``[x_min, x_max) x [y_min, y_max)`` in pixels of the RGB image.
* Camera optical frame (REP 103 optical): x right, y down, z forward, metres.
* Body frames (REP 103): x forward, y left, z up, metres.
* Stamps are integer nanoseconds (``sec * 10**9 + nanosec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """3D estimate of one box from the depth image, in the camera optical frame.

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

SOURCE_GEOMETRY = 'geometry'
SOURCE_MODEL = 'model'
SOURCE_BOTH = 'both'


@dataclass(frozen=True)
class Relation:
    """``subject <predicate> object`` with the centroid distance (m) and a confidence in [0, 1]."""

    subject: str
    predicate: str
    object: str
    distance: float
    confidence: float
    source: str = SOURCE_GEOMETRY


@dataclass
class Scene:
    """Everything understood about one RGB-D frame; serialized as one scenes.jsonl line."""

    stamp_ns: int
    frame_id: str  # frame of object positions
    camera_frame_id: str
    objects: list[SpatialObject] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    relation_frame_id: str = ''
    model_id: str = ''
    engine: str = ''
    latency_ms: float = 0.0
    inference_ms: float = 0.0
    error: str = ''  # non-empty when the engine result was unusable (kept for diagnostics)
    warnings: list[str] = field(default_factory=list)  # input problems that did not stop it


@dataclass(frozen=True)
class RgbdFrame:
    """One paired, decoded RGB-D frame: what the pipeline consumes.

    ``depth_m`` is at the depth image's own resolution, in metres, NaN where invalid;
    ``depth_intrinsics`` describe it (the RGB intrinsics scaled when the resolutions differ).
    """

    stamp_ns: int
    frame_id: str  # camera optical frame of the RGB image
    rgb: npt.NDArray[np.uint8]  # (H, W, 3), RGB channel order
    depth_m: npt.NDArray[np.float32]  # (h, w), metres, NaN = invalid
    rgb_intrinsics: CameraIntrinsics
    depth_intrinsics: CameraIntrinsics
