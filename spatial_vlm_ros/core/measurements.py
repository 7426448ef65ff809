# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Quantities an answer relies on, measured from the scene's geometry with their uncertainty.

``~/query`` never passes on a number the model stated: every distance, range, size and signed
separation in a reply is computed here from the lifted centroids and their covariances.

Frames. Measurements are read in a *reference frame*, the frame the relations use:

* the camera optical frame (x right, y down, z forward) when the scene has no other frame; then
  "above" is up in the image, not against gravity;
* a gravity-aligned frame (REP 103: z up) when the caller gives the transforms; "left" and
  "forward" then follow the camera's heading projected on the ground plane (so "the can on the
  right" means right as seen from the camera in a map frame too), and "above" is against gravity.

Uncertainty. A value ``f(p_a, p_b)`` of centroids with covariances ``C_a`` and ``C_b`` gets the
first-order sigma ``sqrt(g^T (C_a + C_b) g)``, ``g`` the gradient of ``f`` (a unit vector for
every kind here). Extents (size, width, height) come from the 2-98 % spread of the object's
visible surface, which has no covariance in the lifter: their sigma is NaN ("not modelled").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import enum
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.transforms import (
    apply_transform,
    compose,
    invert_transform,
    rotate_covariance,
    validate_transform,
)
from spatial_vlm_ros.core.types import (
    FloatArray,
    PixelBox,
    Scene,
    SpatialObject,
    SpatialVlmError,
)

# Below this many metres a distance or separation is stated as 0.00 m.
_CENTIMETRE = 0.01
# A direction whose horizontal part is shorter than this (camera looking straight down) falls
# back to the camera's image-up direction for "forward".
_MIN_HORIZONTAL = 1e-3
# Signed separations within this many sigmas are reported as "too close to tell".
DIRECTION_Z_SCORE = 2.0


class MeasurementError(SpatialVlmError):
    """A measurement cannot be made (unknown id, no position, unknown camera position)."""


class MeasurementKind(str, enum.Enum):
    """What is measured; the values are SpatialMeasurement.msg's ``kind`` constants."""

    DISTANCE = 'distance'  # centroid distance between two objects, m
    RANGE = 'range'  # distance from the camera's optical centre to one object, m
    SIZE = 'size'  # largest visible extent of one object, m
    HEIGHT = 'height'  # vertical extent of one object, m
    WIDTH = 'width'  # horizontal extent across the view of one object, m
    LEFT_RIGHT = 'left_right'  # signed, positive when the first is left of the second, m
    FRONT_BEHIND = 'front_behind'  # signed, positive when the first is nearer the camera, m
    ABOVE_BELOW = 'above_below'  # signed, positive when the first is above the second, m


PAIR_KINDS = frozenset(
    {
        MeasurementKind.DISTANCE,
        MeasurementKind.LEFT_RIGHT,
        MeasurementKind.FRONT_BEHIND,
        MeasurementKind.ABOVE_BELOW,
    }
)
SINGLE_KINDS = frozenset(set(MeasurementKind) - PAIR_KINDS)
DIRECTIONAL_KINDS = PAIR_KINDS - {MeasurementKind.DISTANCE}
EXTENT_KINDS = frozenset({MeasurementKind.SIZE, MeasurementKind.HEIGHT, MeasurementKind.WIDTH})


def arity(kind: MeasurementKind) -> int:
    """How many object ids a measurement of ``kind`` takes."""
    return 2 if kind in PAIR_KINDS else 1


@dataclass(frozen=True)
class Measurement:
    """One measured quantity (SpatialMeasurement.msg)."""

    kind: MeasurementKind
    object_ids: tuple[str, ...]
    value: float  # metres
    sigma: float  # metres, 1 sigma; NaN when not modelled (extents)
    frame_id: str  # frame the quantity was evaluated in
    text: str  # one sentence
    model_value: float = math.nan  # the number the model stated, never used as the value

    @property
    def key(self) -> tuple[MeasurementKind, tuple[str, ...]]:
        """Identity for de-duplication (a distance is the same either way round)."""
        ids = tuple(sorted(self.object_ids)) if self.kind in _SYMMETRIC else self.object_ids
        return (self.kind, ids)


_SYMMETRIC = frozenset({MeasurementKind.DISTANCE})


def measurement_key(
    kind: MeasurementKind, object_ids: Sequence[str]
) -> tuple[MeasurementKind, tuple[str, ...]]:
    """:attr:`Measurement.key` of a measurement not made yet."""
    ids = tuple(object_ids)
    return (kind, tuple(sorted(ids)) if kind in _SYMMETRIC else ids)


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class QueryFrame:
    """
    The reference frame measurements are read in, and the camera's place in it.

    ``T_reference_from_scene`` maps scene positions (``Scene.frame_id``) into the reference
    frame. ``left``, ``up`` and ``forward`` are unit vectors of the reference frame.
    """

    frame_id: str
    scene_frame_id: str
    optical: bool  # the reference is the camera optical frame (x right, y down, z forward)
    T_reference_from_scene: FloatArray  # (4, 4)
    camera_position: FloatArray | None  # camera optical centre in the reference frame
    R_reference_from_camera: FloatArray | None  # (3, 3); None when the camera pose is unknown
    left: FloatArray
    up: FloatArray
    forward: FloatArray

    @property
    def gravity_aligned(self) -> bool:
        """Return True when "above" means against gravity (REP 103 frames, z up)."""
        return not self.optical

    def axes_description(self) -> str:
        """Return the axes named for a prompt, e.g. ``x right, y down, z forward``."""
        if self.optical:
            return 'x right, y down, z forward from the camera'
        return 'z up; x, y horizontal'


def _unit(vector: FloatArray) -> FloatArray:
    return vector / float(np.linalg.norm(vector))


def _viewer_axes(
    rotation: FloatArray | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(left, up, forward)`` in a z-up frame, following the camera's heading when known."""
    up = np.array([0.0, 0.0, 1.0])
    if rotation is None:
        return np.array([0.0, 1.0, 0.0]), up, np.array([1.0, 0.0, 0.0])  # REP 103 body axes
    forward = rotation[:, 2].copy()  # the optical axis
    forward[2] = 0.0
    if float(np.linalg.norm(forward)) < _MIN_HORIZONTAL:
        forward = -rotation[:, 1].copy()  # looking straight down: image-up is forward
        forward[2] = 0.0
    forward = _unit(forward)
    return np.cross(up, forward), up, forward


def query_frame(
    scene: Scene,
    T_relation_from_camera: npt.ArrayLike | None = None,  # noqa: N803 (transform naming)
) -> QueryFrame:
    """
    Return the reference frame of ``scene``.

    The scene says where its positions are (``Scene.frame_id``) and how they got there from the
    camera (``Scene.T_frame_from_camera``; None for a scene in the camera frame, or when the
    camera pose is not known). ``T_relation_from_camera`` gives the relation frame
    (``scene.relation_frame_id``); without it a scene in the camera frame is read in the camera
    view, and a scene in another frame is read in that frame.
    """
    camera_frame = scene.camera_frame_id
    in_camera_frame = not scene.frame_id or scene.frame_id == camera_frame
    scene_from_camera: FloatArray | None = np.eye(4) if in_camera_frame else None
    if scene.T_frame_from_camera is not None and not in_camera_frame:
        scene_from_camera = validate_transform(scene.T_frame_from_camera)
    if T_relation_from_camera is not None and scene_from_camera is not None:
        relation_from_camera = validate_transform(T_relation_from_camera)
        reference_from_scene = compose(relation_from_camera, invert_transform(scene_from_camera))
        frame_id = scene.relation_frame_id or camera_frame
        optical = False
    elif in_camera_frame:
        reference_from_scene, frame_id, optical = np.eye(4), camera_frame, True
    else:
        reference_from_scene, frame_id, optical = np.eye(4), scene.frame_id, False
    camera_position = rotation = None
    if scene_from_camera is not None:
        reference_from_camera = compose(reference_from_scene, scene_from_camera)
        camera_position = reference_from_camera[:3, 3].copy()
        rotation = reference_from_camera[:3, :3].copy()
    if optical:
        left, up, forward = (
            np.array([-1.0, 0.0, 0.0]),
            np.array([0.0, -1.0, 0.0]),
            np.array([0.0, 0.0, 1.0]),
        )
    else:
        left, up, forward = _viewer_axes(rotation)
    return QueryFrame(
        frame_id=frame_id,
        scene_frame_id=scene.frame_id or camera_frame,
        optical=optical,
        T_reference_from_scene=reference_from_scene,
        camera_position=camera_position,
        R_reference_from_camera=rotation,
        left=left,
        up=up,
        forward=forward,
    )


# ----------------------------------------------------------------------------- placed objects


@dataclass(frozen=True)
class PlacedObject:
    """An object as queries see it: reference-frame geometry plus what identifies it."""

    id: str
    label: str
    position: FloatArray | None  # (3,) reference frame, metres; None: no depth support
    covariance: FloatArray | None  # (3, 3) reference frame, m^2
    size: FloatArray | None  # (3,) extents along the camera optical axes, metres
    range_m: float  # camera centre to centroid, metres; NaN when unknown
    range_sigma: float
    valid_depth_ratio: float
    confidence: float = 1.0
    box: PixelBox | None = None  # RGB pixels; None for a remembered object out of view
    in_view: bool = True
    age_s: float = 0.0  # seconds since last seen (remembered objects)
    scene_position: FloatArray | None = None  # (3,) in the scene frame, as published
    scene_covariance: FloatArray | None = None

    @property
    def has_position(self) -> bool:
        return self.position is not None


def _finite_or_none(value: npt.ArrayLike | None, shape: tuple[int, ...]) -> FloatArray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape or not np.all(np.isfinite(array)):
        return None
    return array


def place_object(
    object_id: str,
    label: str,
    scene_position: npt.ArrayLike | None,
    scene_covariance: npt.ArrayLike | None,
    size: npt.ArrayLike | None,
    frame: QueryFrame,
    *,
    valid_depth_ratio: float = 1.0,
    confidence: float = 1.0,
    box: PixelBox | None = None,
    in_view: bool = True,
    age_s: float = 0.0,
) -> PlacedObject:
    """One object given in the scene frame, moved to the reference frame."""
    position = _finite_or_none(scene_position, (3,))
    covariance = _finite_or_none(scene_covariance, (3, 3))
    if position is not None and covariance is None:
        covariance = np.zeros((3, 3))
    reference_position = reference_covariance = None
    range_m = range_sigma = math.nan
    if position is not None and covariance is not None:
        reference_position = apply_transform(frame.T_reference_from_scene, position)
        reference_covariance = rotate_covariance(frame.T_reference_from_scene, covariance)
        if frame.camera_position is not None:
            offset = reference_position - frame.camera_position
            range_m = float(np.linalg.norm(offset))
            if range_m > 0.0:
                direction = offset / range_m
                variance = float(direction @ reference_covariance @ direction)
                range_sigma = math.sqrt(max(variance, 0.0))
    return PlacedObject(
        id=object_id,
        label=label,
        position=reference_position,
        covariance=reference_covariance,
        size=None if (extent := _finite_or_none(size, (3,))) is None else np.abs(extent),
        range_m=range_m,
        range_sigma=range_sigma,
        valid_depth_ratio=float(valid_depth_ratio),
        confidence=float(confidence),
        box=box,
        in_view=in_view,
        age_s=float(age_s),
        scene_position=position,
        scene_covariance=covariance,
    )


def place_scene(scene: Scene, frame: QueryFrame) -> list[PlacedObject]:
    """Every object of ``scene`` (with or without a position), in scene order."""
    return [place_scene_object(obj, frame) for obj in scene.objects]


def place_scene_object(obj: SpatialObject, frame: QueryFrame) -> PlacedObject:
    lifted = obj.lifted
    return place_object(
        obj.id,
        obj.label,
        lifted.position,
        lifted.covariance,
        lifted.size,
        frame,
        valid_depth_ratio=lifted.valid_depth_ratio,
        confidence=obj.confidence,
        box=obj.box,
    )


# ----------------------------------------------------------------------------- measuring


def _metres(value: float) -> str:
    return f'{0.0 if abs(value) < _CENTIMETRE / 2 else value:.2f} m'


def _sigma_text(sigma: float) -> str:
    if not math.isfinite(sigma):
        return ''
    return f' (+/- {max(sigma, _CENTIMETRE):.2f} m)'


def _positioned(obj: PlacedObject) -> tuple[FloatArray, FloatArray]:
    if obj.position is None or obj.covariance is None:
        raise MeasurementError(f'{obj.id} has no measured position (too little valid depth)')
    return obj.position, obj.covariance


def _along(direction: FloatArray, a: PlacedObject, b: PlacedObject) -> tuple[float, float]:
    """``((p_a - p_b) . direction, sigma)``."""
    position_a, covariance_a = _positioned(a)
    position_b, covariance_b = _positioned(b)
    value = float((position_a - position_b) @ direction)
    variance = float(direction @ (covariance_a + covariance_b) @ direction)
    return value, math.sqrt(max(variance, 0.0))


def _extent_along(obj: PlacedObject, direction: FloatArray, frame: QueryFrame) -> float:
    """Extent of the camera-axis box of ``obj`` along a reference-frame ``direction``."""
    if obj.size is None:
        raise MeasurementError(f'{obj.id} has no measured size')
    if frame.R_reference_from_camera is None:
        raise MeasurementError('the camera orientation in the reference frame is unknown')
    camera_axes_in_reference = frame.R_reference_from_camera
    return float(np.abs(direction @ camera_axes_in_reference) @ obj.size)


def _directional_text(kind: MeasurementKind, a: str, b: str, value: float, sigma: float) -> str:
    words = {
        MeasurementKind.LEFT_RIGHT: ('left of', 'right of'),
        MeasurementKind.FRONT_BEHIND: ('nearer the camera than', 'farther from the camera than'),
        MeasurementKind.ABOVE_BELOW: ('above', 'below'),
    }[kind]
    positive, negative = words
    word = positive if value >= 0 else negative
    text = f'{a} is {_metres(abs(value))} {word} {b}{_sigma_text(sigma)}'
    if math.isfinite(sigma) and abs(value) < DIRECTION_Z_SCORE * sigma:
        text += ', within the uncertainty'
    return text


def measure(
    kind: MeasurementKind | str,
    objects: Sequence[PlacedObject],
    frame: QueryFrame,
) -> Measurement:
    """Measure ``kind`` on one or two placed objects; raises :class:`MeasurementError`."""
    kind = MeasurementKind(kind)
    if len(objects) != arity(kind):
        raise MeasurementError(f'{kind.value} takes {arity(kind)} object(s), got {len(objects)}')
    ids = tuple(obj.id for obj in objects)
    if kind in PAIR_KINDS and ids[0] == ids[1]:
        raise MeasurementError(f'{kind.value} needs two different objects, got {ids[0]} twice')
    frame_id = frame.frame_id
    sigma = math.nan
    if kind == MeasurementKind.DISTANCE:
        a, b = objects
        position_a, covariance_a = _positioned(a)
        position_b, covariance_b = _positioned(b)
        offset = position_a - position_b
        value = float(np.linalg.norm(offset))
        if value > 0.0:
            unit = offset / value
            sigma = math.sqrt(max(float(unit @ (covariance_a + covariance_b) @ unit), 0.0))
        else:
            sigma = math.sqrt(max(float(np.trace(covariance_a + covariance_b)) / 3.0, 0.0))
        text = f'{a.id} is {_metres(value)}{_sigma_text(sigma)} from {b.id}'
    elif kind == MeasurementKind.RANGE:
        (a,) = objects
        _positioned(a)
        if not math.isfinite(a.range_m):
            raise MeasurementError('the camera position in the reference frame is unknown')
        value, sigma = a.range_m, a.range_sigma
        text = f'{a.id} is {_metres(value)}{_sigma_text(sigma)} from the camera'
    elif kind in EXTENT_KINDS:
        (a,) = objects
        if a.size is None:
            raise MeasurementError(f'{a.id} has no measured size')
        if kind == MeasurementKind.SIZE:
            value = float(np.max(a.size))
            text = f'{a.id} measures {_metres(value)} at its largest visible extent'
        elif kind == MeasurementKind.WIDTH:
            value = _extent_along(a, frame.left, frame)
            text = f'{a.id} is {_metres(value)} wide (visible surface)'
        else:
            value = _extent_along(a, frame.up, frame)
            qualifier = '' if frame.gravity_aligned else ', in the camera view'
            text = f'{a.id} is {_metres(value)} tall (visible surface{qualifier})'
    else:
        a, b = objects
        direction = {
            MeasurementKind.LEFT_RIGHT: frame.left,
            MeasurementKind.FRONT_BEHIND: -frame.forward,  # nearer = smaller along forward
            MeasurementKind.ABOVE_BELOW: frame.up,
        }[kind]
        value, sigma = _along(direction, a, b)
        text = _directional_text(kind, a.id, b.id, value, sigma)
        if kind == MeasurementKind.ABOVE_BELOW and not frame.gravity_aligned:
            text += ' (in the camera view, not against gravity)'
    return Measurement(kind, ids, value, sigma, frame_id, text)


def measure_ids(
    kind: MeasurementKind | str,
    object_ids: Sequence[str],
    objects_by_id: Mapping[str, PlacedObject],
    frame: QueryFrame,
) -> Measurement:
    """:func:`measure` on objects named by id; unknown ids raise :class:`MeasurementError`."""
    missing = [object_id for object_id in object_ids if object_id not in objects_by_id]
    if missing:
        raise MeasurementError(f'no object {", ".join(missing)} in the scene')
    return measure(kind, [objects_by_id[object_id] for object_id in object_ids], frame)


def disagrees(measured: float, sigma: float, stated: float) -> bool:
    """
    Whether a stated number contradicts a measured value.

    Allowed slack: 3 sigma (when modelled), 10 % of the value, and at least 5 cm, so rounding
    ("about half a metre" for 0.47 m) is not flagged.
    """
    if not (math.isfinite(measured) and math.isfinite(stated)):
        return False
    slack = max(0.05, 0.1 * abs(measured), 3.0 * sigma if math.isfinite(sigma) else 0.0)
    return abs(stated - measured) > slack
