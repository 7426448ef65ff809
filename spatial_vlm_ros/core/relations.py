# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Metric spatial relations between lifted objects.

Relations compare object centroids in a reference frame: the camera view (the optical frame,
x right, y down, z forward) by default, or a gravity-aligned body or map frame (REP 103: x
forward, y left, z up) given as ``T_ref_from_camera``. Each directional predicate reads one axis
of that frame:

==============  ===================  ======================
predicate       camera view          body frame
==============  ===================  ======================
left_of         smaller x            larger y
above           smaller y            larger z
in_front_of     smaller z (depth)    smaller x (forward)
==============  ===================  ======================

``right_of``, ``below`` and ``behind`` are their converses. A directional relation is stated
only when the separation along its axis is at least ``min_separation_m`` *and* at least
``min_z_score`` standard deviations of the combined centroid uncertainty along that axis;
its confidence is ``Phi(separation / sigma)``. ``near`` compares the gap between the objects'
axis-aligned extents (in the camera frame, where sizes are measured) with
``near_threshold_m``.

Two relation sets (``RelationConfig.mode``):

* ``compact`` (the default, for planners): only pairs of nearest neighbours (each object with
  its ``per_object`` nearest others), each unordered pair stated once per axis with that
  axis' first predicate (``left_of``, ``above``, ``in_front_of``; no converses) and ``near``
  once with the lower id as subject, and no above/below in the camera view, where "up" is the
  image's and not gravity's;
* ``full``: every ordered pair, every predicate with its converse, above/below in the camera
  view too.

docs/RELATIONS.md is the specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.transforms import (
    TransformError,
    apply_transform,
    rotate_covariance,
    validate_transform,
)
from spatial_vlm_ros.core.types import (
    ABOVE,
    BEHIND,
    BELOW,
    IN_FRONT_OF,
    LEFT_OF,
    NEAR,
    PREDICATES,
    RIGHT_OF,
    FloatArray,
    Relation,
    SpatialObject,
    SpatialVlmError,
)


class RelationError(SpatialVlmError):
    """Objects or settings given to the relation computation are malformed."""


COMPACT = 'compact'
FULL = 'full'
RELATION_MODES = (COMPACT, FULL)


@dataclass(frozen=True)
class RelationConfig:
    """Thresholds and the relation set of :func:`compute_relations` (see docs/RELATIONS.md)."""

    min_z_score: float = 2.0  # separation / combined sigma needed to state a relation
    min_separation_m: float = 0.05  # and at least this much metric separation (directional)
    near_threshold_m: float = 0.5  # 'near' when the extents' gap is at most this
    mode: str = COMPACT  # COMPACT for planners, FULL for every pair and converse
    per_object: int = 3  # compact: pairs of each object with its nearest others; 0 = all pairs

    def __post_init__(self) -> None:
        for name in ('min_z_score', 'min_separation_m', 'near_threshold_m'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RelationError(f'RelationConfig.{name} must be a number, got {value!r}')
            if not math.isfinite(value) or value < 0.0:
                raise RelationError(f'RelationConfig.{name} must be finite and >= 0, got {value}')
        if self.mode not in RELATION_MODES:
            raise RelationError(
                f'RelationConfig.mode must be one of {", ".join(RELATION_MODES)}, '
                f'got {self.mode!r}'
            )
        per_object = self.per_object
        if isinstance(per_object, bool) or not isinstance(per_object, int) or per_object < 0:
            raise RelationError(
                f'RelationConfig.per_object must be an integer >= 0, got {per_object!r}'
            )


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
    """Return the standard normal CDF ``Phi(z)``."""
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
    located: list[SpatialObject] = []
    for item in objects:
        if not isinstance(item, SpatialObject) or item.id in seen:
            _check_objects(objects)  # raises for the first problem, in input order
        seen.add(item.id)
        if item.lifted.position is not None:
            located.append(item)
    located.sort(key=lambda item: item.id)
    stacked = _stacked(located)
    if stacked is None:
        _check_objects(objects)
        raise AssertionError('a malformed value passed every check')  # unreachable
    positions, covariances, sizes = stacked
    reference_positions, reference_covariances = positions, covariances
    if transform is not None and located:
        reference_positions = apply_transform(transform, positions)
        reference_covariances = np.array(
            [rotate_covariance(transform, covariance) for covariance in covariances]
        )
    return _Placed(
        ids=[item.id for item in located],
        camera_positions=positions,
        camera_covariances=covariances,
        sizes=sizes,
        positions=reference_positions,
        covariances=reference_covariances,
    )


def _stacked(
    located: Sequence[SpatialObject],
) -> tuple[FloatArray, FloatArray, FloatArray] | None:
    """
    Stack the positions, covariances and sizes of the objects that have a position.

    Positions (n, 3), covariances (n, 3, 3) (zeros where unknown) and absolute sizes (n, 3)
    (zeros where unknown), in one pass each; None if any value is malformed or not finite.
    """
    zeros3, zeros33 = np.zeros(3), np.zeros((3, 3))
    try:
        positions = np.array([item.lifted.position for item in located], dtype=np.float64)
        covariances = np.array(
            [
                zeros33 if item.lifted.covariance is None else item.lifted.covariance
                for item in located
            ],
            dtype=np.float64,
        )
        sizes = np.array(
            [zeros3 if item.lifted.size is None else item.lifted.size for item in located],
            dtype=np.float64,
        )
    except (TypeError, ValueError):  # ragged or not numeric
        return None
    count = len(located)
    if count and (
        positions.shape != (count, 3)
        or covariances.shape != (count, 3, 3)
        or sizes.shape != (count, 3)
    ):
        return None
    if not (
        np.isfinite(positions).all()
        and np.isfinite(covariances).all()
        and np.isfinite(sizes).all()
    ):
        return None
    return positions.reshape(-1, 3), covariances.reshape(-1, 3, 3), np.abs(sizes).reshape(-1, 3)


def _check_objects(objects: Sequence[SpatialObject]) -> None:
    """
    Raise :class:`RelationError` for the first malformed object, duplicate id or value.

    The objects are checked in input order.
    """
    seen: set[str] = set()
    for item in objects:
        if not isinstance(item, SpatialObject):
            raise RelationError(f'expected SpatialObject, got {type(item).__name__}')
        if item.id in seen:
            raise RelationError(f'duplicate object id {item.id!r}')
        seen.add(item.id)
        lifted = item.lifted
        if lifted.position is None:
            continue
        _finite_array(lifted.position, (3,), f'{item.id}: position')
        if lifted.covariance is not None:
            _finite_array(lifted.covariance, (3, 3), f'{item.id}: covariance')
        if lifted.size is not None:
            _finite_array(lifted.size, (3,), f'{item.id}: size')


def _z_scores(magnitude: FloatArray, variance: FloatArray) -> FloatArray:
    """``magnitude / sqrt(variance)``, infinite where the variance is zero."""
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(variance > 0.0, magnitude / np.sqrt(np.maximum(variance, 0.0)), np.inf)


@dataclass(frozen=True)
class _PairTable:
    """Every quantity of every ordered pair (i, j), as (n, n, ...) arrays."""

    distances: FloatArray  # (n, n) centroid distances, metres
    separations: FloatArray  # (n, n, axes) coordinate of j minus that of i along each axis
    stated: npt.NDArray[np.bool_]  # (n, n, axes) the axis' predicate holds beyond uncertainty
    directional_z: FloatArray  # (n, n, axes)
    is_near: npt.NDArray[np.bool_]  # (n, n)
    near_z: FloatArray  # (n, n)


def _pair_table(placed: _Placed, axes: tuple[_Axis, ...], config: RelationConfig) -> _PairTable:
    """
    Pairwise tests on (n, n, ...) arrays.

    Each quantity is computed so that the (j, i) entry is the exact negation or copy of the
    (i, j) entry in floating point, which makes every relation's converse come out with the
    same confidence bit for bit.
    """
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
    return _PairTable(distances, separations, stated, directional_z, is_near, near_z)


@dataclass(frozen=True)
class _PairLists:
    """:class:`_PairTable` as nested Python lists, for reading single entries cheaply."""

    distances: list[list[float]]
    separations: list[list[list[float]]]
    stated: list[list[list[bool]]]
    directional_z: list[list[list[float]]]
    is_near: list[list[bool]]
    near_z: list[list[float]]

    @staticmethod
    def of(table: _PairTable) -> _PairLists:
        return _PairLists(
            table.distances.tolist(),
            table.separations.tolist(),
            table.stated.tolist(),
            table.directional_z.tolist(),
            table.is_near.tolist(),
            table.near_z.tolist(),
        )


def _pair_relations(
    i: int,
    j: int,
    placed: _Placed,
    table: _PairLists,
    axes: tuple[_Axis, ...],
    axis_indices: Sequence[int],
    canonical: bool = False,
) -> list[Relation]:
    """
    Return what holds for subject i and object j on the given axes, and ``near``.

    ``canonical`` states each axis with its first predicate (left_of, above, in_front_of),
    swapping subject and object where needed, so a pair is stated once per axis.
    """
    distance = table.distances[i][j]
    stated, directional_z, separations = table.stated[i][j], table.directional_z[i][j], None
    relations = []
    for index in axis_indices:
        if not stated[index]:
            continue
        if separations is None:
            separations = table.separations[i][j]
        axis = axes[index]
        confidence = normal_cdf(directional_z[index])
        subject_smaller = separations[index] > 0.0
        if canonical:
            first, second = (i, j) if subject_smaller else (j, i)
            relations.append(
                Relation(placed.ids[first], axis.smaller, placed.ids[second], distance, confidence)
            )
        else:
            predicate = axis.smaller if subject_smaller else axis.larger
            relations.append(
                Relation(placed.ids[i], predicate, placed.ids[j], distance, confidence)
            )
    if table.is_near[i][j]:
        confidence = normal_cdf(table.near_z[i][j])
        relations.append(Relation(placed.ids[i], NEAR, placed.ids[j], distance, confidence))
    return relations


def neighbour_pairs(distances: FloatArray, per_object: int) -> list[tuple[int, int]]:
    """
    Join each object to its ``per_object`` nearest others: unordered pairs ``(i, j)``, ``i < j``.

    Nearest by the given distances; ties go to the lower index; 0 means every pair.
    """
    count = distances.shape[0]
    if per_object <= 0 or per_object >= count - 1:
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    # Each row's stable order, without the object itself (the first per_object + 1 entries
    # hold the per_object nearest others whatever the object's own place among them).
    order = np.argsort(distances, axis=1, kind='stable')[:, : per_object + 1].tolist()
    pairs: set[tuple[int, int]] = set()
    for i, row in enumerate(order):
        nearest = [j for j in row if j != i][:per_object]
        pairs.update((i, j) if i < j else (j, i) for j in nearest)
    return sorted(pairs)


def compute_relations(
    objects: Sequence[SpatialObject],
    config: RelationConfig = DEFAULT_RELATION_CONFIG,
    T_ref_from_camera: npt.ArrayLike | None = None,  # noqa: N803 (transform naming convention)
) -> list[Relation]:
    """
    Return the relations between pairs of positioned objects that hold beyond their uncertainty.

    ``objects`` hold camera optical frame positions (as :func:`~spatial_vlm_ros.core.lifting.
    lift_boxes` returns them). With ``T_ref_from_camera`` None the predicates are those of the
    camera view; with a 4x4 transform they are those of that gravity-aligned body or map frame
    (x forward, y left, z up). Objects without a position get no relations. ``config.mode``
    chooses the compact set (nearest neighbours, no converses, no camera-view above/below) or
    the full set (every ordered pair with converses). Sorted by (subject id, object id,
    predicate order in ``PREDICATES``); the order of ``objects`` does not matter.
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
    count = len(placed.ids)
    if count < 2:
        return []
    axes = _CAMERA_AXES if transform is None else _BODY_AXES
    arrays = _pair_table(placed, axes, config)
    table = _PairLists.of(arrays)
    relations: list[Relation] = []
    if config.mode == FULL:
        every_axis = range(len(axes))
        for i in range(count):
            for j in range(count):
                if i != j:
                    relations.extend(_pair_relations(i, j, placed, table, axes, every_axis))
    else:
        # "Above" in the camera view is up in the image, not against gravity: left out.
        axis_indices = [
            index
            for index, axis in enumerate(axes)
            if transform is not None or axis.smaller != ABOVE
        ]
        for i, j in neighbour_pairs(arrays.distances, config.per_object):
            relations.extend(
                _pair_relations(i, j, placed, table, axes, axis_indices, canonical=True)
            )
    relations.sort(
        key=lambda relation: (
            relation.subject,
            relation.object,
            _PREDICATE_ORDER[relation.predicate],
        )
    )
    return relations


def transform_objects(
    objects: Sequence[SpatialObject],
    T_target_from_camera: npt.ArrayLike,  # noqa: N803 (transform naming convention)
) -> list[SpatialObject]:
    """
    Objects with positions and covariances mapped from the camera frame to a target frame.

    Sizes stay extents along the box axes, which are the camera optical axes (the scene's
    ``T_frame_from_camera`` rotation orients the box in the target frame); objects without a
    position are returned unchanged. Raises
    :class:`~spatial_vlm_ros.core.transforms.TransformError` for a malformed transform.
    """
    transform = validate_transform(T_target_from_camera)
    moved = []
    for item in objects:
        lifted = item.lifted
        if lifted.position is not None:
            covariance = lifted.covariance
            lifted = replace(
                lifted,
                position=apply_transform(transform, lifted.position),
                covariance=None
                if covariance is None
                else rotate_covariance(transform, covariance),
            )
        moved.append(replace(item, lifted=lifted))
    return moved
