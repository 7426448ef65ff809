# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Metric spatial relations between lifted objects.

Relations compare object centroids in a reference frame: the camera view (the optical frame,
x right, y down, z forward) by default, or a body frame (REP 103: x forward, y left, z up) given
as ``T_ref_from_camera``. Each directional predicate reads one axis of that frame:

==============  ===================  ======================
predicate       camera view          body frame
==============  ===================  ======================
left_of         smaller x            larger y
above           smaller y            larger z
in_front_of     smaller z (depth)    smaller x (forward)
==============  ===================  ======================

``right_of``, ``below`` and ``behind`` are their converses. A directional relation is emitted
only when the separation along its axis is at least ``min_separation_m`` *and* at least
``min_z_score`` standard deviations of the combined centroid uncertainty along that axis;
its confidence is ``Phi(separation / sigma)``. ``near`` compares the gap between the objects'
axis-aligned extents (in the camera frame, where sizes are measured) with
``near_threshold_m``. Every relation is emitted together with its converse, so
``left_of(a, b)`` is present exactly when ``right_of(b, a)`` is. docs/RELATIONS.md is the
specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.transforms import TransformError, validate_transform
from spatial_vlm_ros.core.types import (
    ABOVE,
    BEHIND,
    BELOW,
    IN_FRONT_OF,
    LEFT_OF,
    NEAR,
    PREDICATES,
    RIGHT_OF,
    SOURCE_GEOMETRY,
    FloatArray,
    Lifted3D,
    Relation,
    SpatialObject,
    SpatialVlmError,
)


class RelationError(SpatialVlmError):
    """Objects or settings given to the relation computation are malformed."""


@dataclass(frozen=True)
class RelationConfig:
    """Thresholds of :func:`compute_relations` (see docs/RELATIONS.md)."""

    min_z_score: float = 2.0  # separation / combined sigma needed to state a relation
    min_separation_m: float = 0.05  # and at least this much metric separation (directional)
    near_threshold_m: float = 0.5  # 'near' when the extents' gap is at most this

    def __post_init__(self) -> None:
        for name in ('min_z_score', 'min_separation_m', 'near_threshold_m'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RelationError(f'RelationConfig.{name} must be a number, got {value!r}')
            if not math.isfinite(value) or value < 0.0:
                raise RelationError(f'RelationConfig.{name} must be finite and >= 0, got {value}')


DEFAULT_RELATION_CONFIG = RelationConfig()


@dataclass(frozen=True)
class _Axis:
    """A signed direction of the reference frame and the predicates it decides."""

    direction: FloatArray  # unit vector in the reference frame
    smaller: str  # holds when the subject's coordinate along ``direction`` is the smaller
    larger: str  # holds when it is the larger (the converse)


_CAMERA_AXES = (
    _Axis(np.array([1.0, 0.0, 0.0]), LEFT_OF, RIGHT_OF),  # x right: smaller x is left
    _Axis(np.array([0.0, 1.0, 0.0]), ABOVE, BELOW),  # y down: smaller y is above
    _Axis(np.array([0.0, 0.0, 1.0]), IN_FRONT_OF, BEHIND),  # z forward: smaller z is nearer
)
_BODY_AXES = (
    _Axis(np.array([0.0, -1.0, 0.0]), LEFT_OF, RIGHT_OF),  # y left: larger y is left
    _Axis(np.array([0.0, 0.0, -1.0]), ABOVE, BELOW),  # z up: larger z is above
    _Axis(np.array([1.0, 0.0, 0.0]), IN_FRONT_OF, BEHIND),  # x forward: smaller x is nearer
)
_PREDICATE_ORDER = {predicate: index for index, predicate in enumerate(PREDICATES)}


def normal_cdf(z: float) -> float:
    """Standard normal CDF ``Phi(z)``."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@dataclass(frozen=True)
class _Placed:
    """The positioned objects, sorted by id, as stacked arrays."""

    ids: list[str]
    camera_positions: FloatArray  # (n, 3)
    camera_covariances: FloatArray  # (n, 3, 3)
    sizes: FloatArray  # (n, 3) extents along the camera optical axes
    positions: FloatArray  # (n, 3) reference frame
    covariances: FloatArray  # (n, 3, 3) reference frame


def _finite_array(value: npt.ArrayLike | None, shape: tuple[int, ...], what: str) -> FloatArray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise RelationError(f'{what} is not numeric: {error}') from error
    if array.shape != shape:
        raise RelationError(f'{what} must have shape {shape}, got {array.shape}')
    if not np.all(np.isfinite(array)):
        raise RelationError(f'{what} contains non-finite values')
    return array


def _place(objects: Sequence[SpatialObject], transform: FloatArray | None) -> _Placed:
    seen: set[str] = set()
    rows: list[tuple[str, FloatArray, FloatArray, FloatArray]] = []
    for item in objects:
        if not isinstance(item, SpatialObject):
            raise RelationError(f'expected SpatialObject, got {type(item).__name__}')
        if item.id in seen:
            raise RelationError(f'duplicate object id {item.id!r}')
        seen.add(item.id)
        lifted = item.lifted
        if lifted.position is None:
            continue
        position = _finite_array(lifted.position, (3,), f'{item.id}: position')
        covariance = (
            np.zeros((3, 3))
            if lifted.covariance is None
            else _finite_array(lifted.covariance, (3, 3), f'{item.id}: covariance')
        )
        size = (
            np.zeros(3)
            if lifted.size is None
            else np.abs(_finite_array(lifted.size, (3,), f'{item.id}: size'))
        )
        rows.append((item.id, position, covariance, size))
    rows.sort(key=lambda row: row[0])
    positions = np.array([row[1] for row in rows]).reshape(-1, 3)
    covariances = np.array([row[2] for row in rows]).reshape(-1, 3, 3)
    reference_positions, reference_covariances = positions, covariances
    if transform is not None:
        rotation = transform[:3, :3]
        reference_positions = positions @ rotation.T + transform[:3, 3]
        reference_covariances = rotation @ covariances @ rotation.T
    return _Placed(
        ids=[row[0] for row in rows],
        camera_positions=positions,
        camera_covariances=covariances,
        sizes=np.array([row[3] for row in rows]).reshape(-1, 3),
        positions=reference_positions,
        covariances=reference_covariances,
    )


def _z_scores(magnitude: FloatArray, variance: FloatArray) -> FloatArray:
    """``magnitude / sqrt(variance)``, infinite where the variance is zero."""
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(variance > 0.0, magnitude / np.sqrt(np.maximum(variance, 0.0)), np.inf)


def extent_gap(
    position_a: npt.ArrayLike,
    size_a: npt.ArrayLike,
    position_b: npt.ArrayLike,
    size_b: npt.ArrayLike,
) -> FloatArray:
    """Per-axis gap (>= 0) between axis-aligned extents centred on the given positions."""
    offset = np.abs(np.asarray(position_b) - np.asarray(position_a))
    return np.maximum(offset - 0.5 * (np.asarray(size_a) + np.asarray(size_b)), 0.0)


def _pairwise(placed: _Placed, axes: tuple[_Axis, ...], config: RelationConfig) -> list[Relation]:
    """All relations for every ordered pair (i, j), i != j, computed on (n, n, ...) arrays.

    Each quantity is computed so that the (j, i) entry is the exact negation or copy of the
    (i, j) entry in floating point, which makes every relation's converse come out with the
    same confidence bit for bit.
    """
    count = len(placed.ids)
    offsets = placed.camera_positions[None, :, :] - placed.camera_positions[:, None, :]
    distances = np.sqrt(np.einsum('ijk,ijk->ij', offsets, offsets))
    directions = np.array([axis.direction for axis in axes])  # (axes, 3)
    coordinates = placed.positions @ directions.T  # (n, axes)
    axis_variances = np.einsum('ak,nkl,al->na', directions, placed.covariances, directions)
    separations = coordinates[None, :, :] - coordinates[:, None, :]  # other minus subject
    variances = axis_variances[None, :, :] + axis_variances[:, None, :]
    magnitudes = np.abs(separations)
    directional_z = _z_scores(magnitudes, variances)
    stated = (
        (magnitudes > 0.0)
        & (magnitudes >= config.min_separation_m)
        & (directional_z >= config.min_z_score)
    )

    # near: the gap between extents in the camera frame, against the combined uncertainty
    # along the gap direction (the centroid offset where the extents overlap).
    half_sums = 0.5 * (placed.sizes[None, :, :] + placed.sizes[:, None, :])
    gap_vectors = np.maximum(np.abs(offsets) - half_sums, 0.0)
    gaps = np.sqrt(np.einsum('ijk,ijk->ij', gap_vectors, gap_vectors))
    along = np.where((gaps > 0.0)[:, :, None], np.sign(offsets) * gap_vectors, offsets)
    along_norm = np.sqrt(np.einsum('ijk,ijk->ij', along, along))
    with np.errstate(divide='ignore', invalid='ignore'):
        unit = np.where((along_norm > 0.0)[:, :, None], along / along_norm[:, :, None], 0.0)
    combined = placed.camera_covariances[None, :, :, :] + placed.camera_covariances[:, None, :, :]
    near_variances = np.einsum('ijk,ijkl,ijl->ij', unit, combined, unit)
    margins = config.near_threshold_m - gaps
    near_z = _z_scores(margins, near_variances)
    is_near = (margins >= 0.0) & (near_z >= config.min_z_score)

    relations: list[Relation] = []
    for i in range(count):
        for j in range(count):
            if i == j:
                continue
            subject, other, distance = placed.ids[i], placed.ids[j], float(distances[i, j])
            for index, axis in enumerate(axes):
                if stated[i, j, index]:
                    predicate = axis.smaller if separations[i, j, index] > 0.0 else axis.larger
                    confidence = normal_cdf(float(directional_z[i, j, index]))
                    relations.append(
                        Relation(subject, predicate, other, distance, confidence, SOURCE_GEOMETRY)
                    )
            if is_near[i, j]:
                confidence = normal_cdf(float(near_z[i, j]))
                relations.append(
                    Relation(subject, NEAR, other, distance, confidence, SOURCE_GEOMETRY)
                )
    return relations


def compute_relations(
    objects: Sequence[SpatialObject],
    config: RelationConfig = DEFAULT_RELATION_CONFIG,
    T_ref_from_camera: npt.ArrayLike | None = None,  # noqa: N803 (transform naming convention)
) -> list[Relation]:
    """Every unambiguous relation between pairs of positioned objects.

    ``objects`` hold camera optical frame positions (as :func:`~spatial_vlm_ros.core.lifting.
    lift_box` returns them). With ``T_ref_from_camera`` None the predicates are those of the
    camera view; with a 4x4 transform they are those of that body frame (x forward, y left,
    z up). Objects without a position get no relations. Both a relation and its converse are
    returned, sorted by (subject id, object id, predicate order in ``PREDICATES``).
    Raises :class:`RelationError` on duplicate ids or malformed geometry.
    """
    if not isinstance(config, RelationConfig):
        raise RelationError(f'config must be RelationConfig, got {type(config).__name__}')
    transform = None
    if T_ref_from_camera is not None:
        try:
            transform = validate_transform(T_ref_from_camera)
        except TransformError as error:
            raise RelationError(f'T_ref_from_camera: {error}') from error
    placed = _place(objects, transform)
    if len(placed.ids) < 2:
        return []
    axes = _CAMERA_AXES if transform is None else _BODY_AXES
    relations = _pairwise(placed, axes, config)
    relations.sort(
        key=lambda relation: (
            relation.subject,
            relation.object,
            _PREDICATE_ORDER[relation.predicate],
        )
    )
    return relations


def transform_lifted(lifted: Lifted3D, T_target_from_camera: npt.ArrayLike) -> Lifted3D:  # noqa: N803
    """``lifted`` with position and covariance in the target frame; size stays in camera axes.

    Raises :class:`~spatial_vlm_ros.core.transforms.TransformError` for a malformed transform.
    """
    return _transform_lifted(lifted, validate_transform(T_target_from_camera))


def _transform_lifted(lifted: Lifted3D, transform: FloatArray) -> Lifted3D:
    if lifted.position is None:
        return lifted
    rotation = transform[:3, :3]
    position = rotation @ np.asarray(lifted.position, dtype=np.float64) + transform[:3, 3]
    covariance = None
    if lifted.covariance is not None:
        rotated = rotation @ np.asarray(lifted.covariance, dtype=np.float64) @ rotation.T
        covariance = 0.5 * (rotated + rotated.T)
    return replace(lifted, position=position, covariance=covariance)


def transform_objects(
    objects: Sequence[SpatialObject],
    T_target_from_camera: npt.ArrayLike,  # noqa: N803 (transform naming convention)
) -> list[SpatialObject]:
    """Objects with positions and covariances mapped from the camera frame to a target frame.

    Sizes stay extents along the camera optical axes (as SpatialObject.msg documents them);
    objects without a position are returned unchanged. Raises
    :class:`~spatial_vlm_ros.core.transforms.TransformError` for a malformed transform.
    """
    transform = validate_transform(T_target_from_camera)
    return [replace(item, lifted=_transform_lifted(item.lifted, transform)) for item in objects]
