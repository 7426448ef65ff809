# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Object memory: persistent ids and fused positions in a fixed frame.

Across frames and out of view (docs/MEMORY.md has the model, its parameters and the benchmark).

Per frame, :meth:`ObjectMemory.update` takes the frame's objects as lifted in the camera optical
frame (label, RGB pixel box, position + covariance + size, or no position), the transform
``T_memory_from_camera`` at the image stamp, and the depth image with its intrinsics. It

1. maps each observation into the memory frame;
2. associates observations with remembered objects one-to-one (the Hungarian method) with a
   Mahalanobis gate on position and compatible labels. The gate adds an isotropic term for the
   shift of the visible-surface centroid between viewpoints (``shift_fraction`` of the object's
   typical largest extent, at least ``min_gate_sigma_m``, at most ``max_shift_sigma_m``).
   Identical objects side by side stay apart: each observation goes to at most one object, and
   the assignment with the least total distance wins;
3. fuses a matched observation into the object's position (information filter, the shift term
   counted as observation noise, ``process_sigma_m`` of random walk per sighting so the estimate
   keeps following slow drift);
4. classifies every remembered object that was not matched: projected into the depth image it is
   OUT_OF_VIEW (behind the camera, outside the image or beyond ``max_view_depth_m``), OCCLUDED
   (nearer depth covers it, its pixels have no valid depth, or a detection of its label is near
   it, or the frame's detector was not asked for its label) or should have been seen: then it
   takes a miss and becomes UNSEEN. Out of view and occluded are no evidence either way;
5. gives an unmatched observation the id of a remembered object of its label that was missed
   ``relocate_min_misses`` times in a row (it moved), else a fresh id ``<label>_<n>`` (n: a
   per-label counter never reused); a young object first seen after such an object went missing
   is merged back into it. The fresh ids of one update are numbered in the order of the
   observations (the pipeline passes them left to right, so the first frame's ids equal the
   per-frame ordinals ``<label>_0``, ``<label>_1``, ... of a pipeline without a memory);
6. keeps an existence probability in log-odds (hits raise it, misses lower it) and removes an
   object whose existence falls below ``forget_existence``, a tentative object (fewer than
   ``confirm_sightings`` sightings) not seen for ``tentative_ttl_s``, any object not seen for
   ``max_age_s`` (0: never) and, above ``max_objects``, the least established ones.

Objects without a position get the id of a remembered object of their label that projects into
their box (the one nearest the box centre, one-to-one), and count as a sighting of it (no
position update); otherwise a fresh id, which is not stored, so ids in a scene stay unique.

The memory is pure Python + numpy (no ROS), thread-safe (the node updates it on its worker
thread and forgets from a service callback) and saves to / loads from JSON, counters included,
so a restart keeps the map and never reuses an id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
import enum
import json
import math
import os
from pathlib import Path
import re
import tempfile
import threading
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.assignment import optimal_assignment

# One shape for a remembered object offered to ~/locate: the one the referring code reads.
from spatial_vlm_ros.core.referring import RememberedCandidate
from spatial_vlm_ros.core.transforms import (
    TransformError,
    invert_transform,
    validate_transform,
)
from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    FloatArray,
    Lifted3D,
    PixelBox,
    RgbdFrame,
    SpatialVlmError,
)

MEMORY_FILE_FORMAT = 'spatial_vlm_ros.object_memory'
MEMORY_FILE_VERSION = 1
_EXTENT_MEMORY = 10  # the gate's extent averages about this many recent sightings
CHI2_3DOF_99 = 11.345  # 99 % quantile of the chi-square distribution with 3 degrees of freedom
_ID_PATTERN = re.compile(r'^(?P<stem>.+)_(?P<number>\d+)$')
# Key of an object created in the running update until its id is numbered (never a valid id).
_NEW_PREFIX = '\x00new:'


def _placeholder(index: int) -> str:
    return f'{_NEW_PREFIX}{index}'


def _placeholder_index(key: str) -> int:
    return int(key[len(_NEW_PREFIX) :])


def _probability(log_odds: float) -> float:
    return 1.0 / (1.0 + math.exp(-log_odds))


def _logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


class ObjectMemoryError(SpatialVlmError):
    """A memory configuration, input or file is malformed."""


class ObjectState(enum.IntEnum):
    """Values equal RememberedObject.msg's constants."""

    VISIBLE = 0  # associated in the newest processed frame
    OUT_OF_VIEW = 1  # projects outside the newest frame's view (or behind it, or too far)
    OCCLUDED = 2  # inside the view, but the frame says nothing about it: behind nearer depth, no
    # valid depth, a detection of its label covers it, or the detector was not asked for its label
    UNSEEN = 3  # should have been seen and was not (a miss); kept until its existence fades


@dataclass(frozen=True)
class MemoryConfig:
    """Parameters of :class:`ObjectMemory` (docs/MEMORY.md explains each)."""

    gate_chi2: float = CHI2_3DOF_99  # Mahalanobis^2 gate of an association (3 dof)
    min_gate_sigma_m: float = 0.05  # isotropic term always added (lifting bias, pose error)
    shift_fraction: float = 0.35  # visible-surface shift sigma, fraction of the largest extent
    max_shift_sigma_m: float = 0.3  # ... capped here (a bad lift must not open a huge gate)
    process_sigma_m: float = 0.02  # random walk of a position per sighting
    confirm_sightings: int = 3  # sightings before an object is confirmed
    hit_log_odds: float = 0.85  # existence log-odds added per sighting (first: p = 0.70)
    miss_log_odds: float = 1.0  # ... subtracted per miss
    max_log_odds: float = 3.0  # existence saturates at p = 0.95 (a few misses can still clear)
    forget_existence: float = 0.15  # removed below this existence
    tentative_ttl_s: float = 30.0  # unconfirmed objects not seen for this long are removed
    max_age_s: float = 0.0  # any object not seen for this long is removed; 0 = never
    max_objects: int = 256  # bound on remembered objects
    relocate_unseen: bool = True  # an object missed at its place may be found moved elsewhere
    relocate_min_misses: int = (
        2  # ... after this many misses in a row (one may be a detector miss)
    )
    max_relocation_m: float = 3.0  # ... at most this far from where it was
    view_margin_px: float = 10.0  # a projection this close to the image border is out of view
    max_view_depth_m: float = 8.0  # farther than this counts as out of view (too small/noisy)
    min_view_depth_m: float = 0.1  # nearer than this (or behind) counts as out of view
    depth_patch_px: int = 7  # side of the depth patch read at an object's projection
    occlusion_margin_m: float = 0.1  # nearer depth by more than max(this, half extent) occludes
    depth_noise_coefficient: float = 1.5e-3  # sensor sigma_z = k z^2 (as in LiftingConfig)
    box_margin: float = 0.1  # box containment tests grow boxes by this fraction + 4 px

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == 'relocate_unseen':
                if not isinstance(value, bool):
                    raise ObjectMemoryError(
                        f'MemoryConfig.relocate_unseen must be a bool: {value!r}'
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ObjectMemoryError(
                    f'MemoryConfig.{item.name} must be a number, got {value!r}'
                )
            if not math.isfinite(value) or value < 0:
                raise ObjectMemoryError(
                    f'MemoryConfig.{item.name} must be finite and >= 0: {value!r}'
                )
        for name in ('gate_chi2', 'hit_log_odds', 'miss_log_odds', 'max_log_odds'):
            if getattr(self, name) <= 0:
                raise ObjectMemoryError(f'MemoryConfig.{name} must be > 0')
        if not 0.0 < self.forget_existence < _probability(self.hit_log_odds):
            raise ObjectMemoryError(
                'MemoryConfig.forget_existence must be in (0, existence after one sighting = '
                f'{_probability(self.hit_log_odds):.2f}), got {self.forget_existence}'
            )
        for name in ('confirm_sightings', 'max_objects', 'depth_patch_px', 'relocate_min_misses'):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ObjectMemoryError(
                    f'MemoryConfig.{name} must be an integer >= 1, got {value}'
                )
        if self.min_view_depth_m >= self.max_view_depth_m:
            raise ObjectMemoryError('MemoryConfig needs min_view_depth_m < max_view_depth_m')


DEFAULT_MEMORY_CONFIG = MemoryConfig()


class Observation(Protocol):
    """What the memory reads of one object of a frame (SpatialObject satisfies it)."""

    @property
    def label(self) -> str: ...

    @property
    def box(self) -> PixelBox: ...

    @property
    def lifted(self) -> Lifted3D: ...


@dataclass(frozen=True)
class CameraView:
    """
    Where the camera was and what it saw, for one frame.

    ``T_memory_from_camera`` maps the camera optical frame (the frame of the observations'
    positions) to the memory frame at the image stamp. ``depth_m`` (metres, NaN invalid) with
    ``depth_intrinsics`` decides what should have been seen; None gives no negative evidence
    (nothing is missed). ``rgb_intrinsics`` describe the image the boxes are in (None: the
    depth image's); both images must share the optical frame, as in :class:`RgbdFrame`.
    ``searched_labels`` are the labels the detector was asked for (a vocabulary): an object of
    another label is not missed where it should have been seen (None: every label was looked
    for).
    """

    T_memory_from_camera: FloatArray
    depth_intrinsics: CameraIntrinsics
    depth_m: npt.NDArray[np.floating] | None = None
    rgb_intrinsics: CameraIntrinsics | None = None
    searched_labels: tuple[str, ...] | None = None

    @classmethod
    def from_frame(
        cls,
        frame: RgbdFrame,
        T_memory_from_camera: npt.ArrayLike,  # noqa: N803
        negative_evidence: bool = True,
        searched_labels: Sequence[str] | None = None,
    ) -> CameraView:
        """
        Return the view of a decoded RGB-D frame.

        Pass ``negative_evidence=False`` when the frame's detections say nothing about what is
        absent (the engine failed, or it was asked for one description only), and
        ``searched_labels`` when it was asked for a vocabulary (None or empty: every salient
        object).
        """
        labels = None
        if searched_labels:
            labels = tuple(dict.fromkeys(normalize_label(label) for label in searched_labels))
        return cls(
            T_memory_from_camera=np.asarray(T_memory_from_camera, dtype=np.float64),
            depth_intrinsics=frame.depth_intrinsics,
            depth_m=frame.depth_m if negative_evidence else None,
            rgb_intrinsics=frame.rgb_intrinsics,
            searched_labels=labels,
        )


@dataclass(frozen=True)
class RememberedObject:
    """A snapshot of one remembered object (positions in the memory frame)."""

    id: str
    label: str
    state: ObjectState
    first_seen_ns: int
    last_seen_ns: int
    sightings: int
    misses: int
    existence: float  # [0, 1]
    position: FloatArray  # (3,) metres
    covariance: FloatArray  # (3, 3) square metres
    size: FloatArray  # (3,) largest visible extent seen along the memory frame's axes, metres
    confirmed: bool


def objects_in_frame(
    objects: Iterable[RememberedObject],
    T_frame_from_memory: npt.ArrayLike,  # noqa: N803
) -> list[RememberedCandidate]:
    """
    Remembered objects moved into another frame.

    ``p' = R p + t``, ``C' = R C R^T`` and the axis-aligned size as extents along the new axes
    (``|R| size``, as the memory does).
    """
    try:
        transform = validate_transform(T_frame_from_memory)
    except TransformError as error:
        raise ObjectMemoryError(f'T_frame_from_memory: {error}') from error
    rotation, translation = transform[:3, :3], transform[:3, 3]
    return [
        RememberedCandidate(
            id=item.id,
            label=item.label,
            position=rotation @ item.position + translation,
            covariance=rotation @ item.covariance @ rotation.T,
            size=np.abs(rotation) @ item.size,
            last_seen_ns=item.last_seen_ns,
            in_view=item.state == ObjectState.VISIBLE,
        )
        for item in objects
    ]


@dataclass(frozen=True)
class MemoryUpdate:
    """
    What one :meth:`ObjectMemory.update` did.

    ``ids`` has one id per input observation, in input order; ``objects`` are the inputs with
    those ids set (``dataclasses.replace``; positions untouched, still in the camera frame).
    """

    stamp_ns: int
    ids: tuple[str, ...]
    objects: tuple[Any, ...] = ()
    created: tuple[str, ...] = ()  # new remembered objects
    relocated: tuple[str, ...] = ()  # remembered objects found moved (see the module doc)
    merged: tuple[str, ...] = ()  # young objects merged into the moved object they were
    unstored: tuple[str, ...] = ()  # fresh ids of observations that are not remembered
    missed: tuple[str, ...] = ()  # objects that should have been seen and were not
    removed: tuple[str, ...] = ()  # objects the expiry rules removed
    warnings: tuple[str, ...] = ()


@dataclass
class _Track:
    id: str
    label: str
    position: FloatArray
    covariance: FloatArray
    size: FloatArray
    first_seen_ns: int
    last_seen_ns: int
    extent: float = 0.0  # mean over sightings of the largest visible extent, metres (gating)
    sightings: int = 1
    misses: int = 0
    log_odds: float = 0.0
    state: ObjectState = ObjectState.VISIBLE
    missing_since_ns: int = 0  # image stamp of the first miss of the current run of misses
    miss_streak: int = 0  # misses since the last sighting

    def snapshot(self, confirm_sightings: int) -> RememberedObject:
        return RememberedObject(
            id=self.id,
            label=self.label,
            state=self.state,
            first_seen_ns=self.first_seen_ns,
            last_seen_ns=self.last_seen_ns,
            sightings=self.sightings,
            misses=self.misses,
            existence=_probability(self.log_odds),
            position=self.position.copy(),
            covariance=self.covariance.copy(),
            size=self.size.copy(),
            confirmed=self.sightings >= confirm_sightings,
        )


@dataclass
class _Placed:
    """An observation with a usable position, mapped into the memory frame."""

    index: int
    label: str
    position: FloatArray
    covariance: FloatArray
    size: FloatArray
    extent: float = 0.0  # largest of ``size``


@dataclass
class _FrameWork:
    """Scratch state of one update."""

    ids: list[str]
    matched: set[str] = field(default_factory=set)
    created: list[str] = field(default_factory=list)
    relocated: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    unstored: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def normalize_label(label: str) -> str:
    """Lower case, single spaces, no surrounding punctuation (the published label form)."""
    words = re.sub(r'[^\w\s-]', ' ', str(label).lower()).split()
    return ' '.join(words)


def labels_compatible(first: str, second: str) -> bool:
    """
    Tell whether two labels may name the same object.

    They may with the same normalized label, or when one names the other's kind with more words
    in front (``office chair`` and ``chair``); ``chair`` and ``armchair`` are different.
    """
    return _normalized_compatible(normalize_label(first), normalize_label(second))


def _normalized_compatible(a: str, b: str) -> bool:
    return bool(a) and (a == b or a.endswith(' ' + b) or b.endswith(' ' + a))


def _compatibility(first: list[str], second: list[str]) -> npt.NDArray[np.bool_]:
    """
    Return the (len(first), len(second)) label compatibility of normalized labels.

    Computed once per distinct pair.
    """
    first_kinds, first_index = np.unique(np.array(first, dtype=object), return_inverse=True)
    second_kinds, second_index = np.unique(np.array(second, dtype=object), return_inverse=True)
    table = np.array(
        [[_normalized_compatible(a, b) for b in second_kinds] for a in first_kinds], dtype=bool
    ).reshape(len(first_kinds), len(second_kinds))
    return table[np.ix_(first_index.ravel(), second_index.ravel())]


@dataclass
class _Gates:
    """
    Pairwise association data of one frame.

    Observations with a position (rows) against the objects remembered before it (columns).
    """

    tracks: list[_Track]
    distance2: FloatArray  # (n_placed, n_tracks) Mahalanobis^2, inf where labels differ
    columns: dict[str, int]  # track id -> column


def id_stem(label: str) -> str:
    """Return the id prefix of a label: normalized, spaces as underscores (``office_chair``)."""
    return normalize_label(label).replace(' ', '_') or 'object'


def _usable(lifted: Lifted3D) -> bool:
    position, covariance = lifted.position, lifted.covariance
    return (
        position is not None
        and covariance is not None
        and np.shape(position) == (3,)
        and np.shape(covariance) == (3, 3)
        and bool(np.all(np.isfinite(position)))
        and bool(np.all(np.isfinite(covariance)))
    )


def _box_contains(box: PixelBox, u: float, v: float, margin: float) -> bool:
    grow_x = margin * box.width + 4.0
    grow_y = margin * box.height + 4.0
    return (
        box.x_min - grow_x <= u < box.x_max + grow_x
        and box.y_min - grow_y <= v < box.y_max + grow_y
    )


def _project(point: FloatArray, intrinsics: CameraIntrinsics) -> tuple[float, float]:
    """Box coordinates (pixel i spans [i, i + 1)) of a camera-frame point with z > 0."""
    x, y, z = (float(value) for value in point)
    return (
        intrinsics.fx * x / z + intrinsics.cx + 0.5,
        intrinsics.fy * y / z + intrinsics.cy + 0.5,
    )


class ObjectMemory:
    """Remembered objects of one fixed frame; see the module docstring."""

    def __init__(self, memory_frame: str, config: MemoryConfig = DEFAULT_MEMORY_CONFIG) -> None:
        if not isinstance(config, MemoryConfig):
            raise ObjectMemoryError(f'config must be MemoryConfig, got {type(config).__name__}')
        self.memory_frame = str(memory_frame)
        self.config = config
        self._tracks: dict[str, _Track] = {}
        self._counters: dict[str, int] = {}  # id stem -> next number
        self._last_stamp_ns = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ queries

    def __len__(self) -> int:
        with self._lock:
            return len(self._tracks)

    @property
    def last_stamp_ns(self) -> int:
        """Image stamp of the newest update (0 before the first)."""
        return self._last_stamp_ns

    def objects(self) -> list[RememberedObject]:
        """Every remembered object, ordered by id."""
        with self._lock:
            confirm = self.config.confirm_sightings
            return [self._tracks[key].snapshot(confirm) for key in sorted(self._tracks)]

    def get(self, object_id: str) -> RememberedObject | None:
        with self._lock:
            track = self._tracks.get(object_id)
            return None if track is None else track.snapshot(self.config.confirm_sightings)

    def adopt_frame(self, frame_id: str) -> str:
        """
        Return the memory frame.

        A memory created without one ('') takes ``frame_id`` (the first frame's camera frame: a
        camera that does not move).
        """
        with self._lock:
            if not self.memory_frame:
                self.memory_frame = str(frame_id)
            return self.memory_frame

    # ------------------------------------------------------------------ forgetting

    def forget(self, ids: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """
        Remove objects by id; no ids removes every object. Returns (forgotten, unknown).

        Counters are kept: a forgotten id is never given again.
        """
        wanted = list(dict.fromkeys(ids))
        with self._lock:
            if not wanted:
                forgotten = sorted(self._tracks)
                self._tracks.clear()
                return forgotten, []
            forgotten = [key for key in wanted if self._tracks.pop(key, None) is not None]
            return forgotten, [key for key in wanted if key not in forgotten]

    # ------------------------------------------------------------------ update

    def update(
        self,
        stamp_ns: int,
        observations: Sequence[Observation],
        view: CameraView | None,
    ) -> MemoryUpdate:
        """
        Associate one frame's observations, update existence, expire; see the module doc.

        ``view`` None means no transform to the memory frame was available at this stamp: every
        observation then gets a fresh, unstored id (with a warning) and the memory is unchanged.
        Raises :class:`ObjectMemoryError` for a malformed transform or depth image (then nothing
        changed).
        """
        stamp_ns = int(stamp_ns)
        labels = [normalize_label(item.label) for item in observations]
        with self._lock:
            work = _FrameWork(ids=[''] * len(observations))
            if view is None:
                for index, label in enumerate(labels):
                    work.ids[index] = self._fresh_id(label)
                    work.unstored.append(work.ids[index])
                work.warnings.append(
                    f'no transform to the memory frame {self.memory_frame!r}: ids are not '
                    'remembered for this frame'
                )
                return self._result(stamp_ns, observations, work, [])
            memory_from_camera, camera_from_memory = self._check_view(view)
            placed = self._place(observations, labels, memory_from_camera, work)
            gates = self._gates(placed)
            self._associate(placed, gates, stamp_ns, work)
            # Misses first, so that an object missing from its place in this very frame can be
            # recognized as moved by an observation elsewhere.
            self._classify_unmatched(
                observations, labels, gates, camera_from_memory, view, stamp_ns, work
            )
            self._take_new_positions(placed, stamp_ns, work)
            self._merge_moved(work)
            self._identify_unplaced(observations, labels, camera_from_memory, view, stamp_ns, work)
            self._number_new(labels, work)
            removed = self._expire(stamp_ns, work)
            self._last_stamp_ns = max(self._last_stamp_ns, stamp_ns)
            return self._result(stamp_ns, observations, work, removed)

    def _result(
        self,
        stamp_ns: int,
        observations: Sequence[Observation],
        work: _FrameWork,
        removed: list[str],
    ) -> MemoryUpdate:
        objects: tuple[Any, ...] = ()
        try:
            objects = tuple(
                replace(item, id=key)  # type: ignore[type-var]
                for item, key in zip(observations, work.ids, strict=True)
            )
        except TypeError:  # not a dataclass with an id: the caller uses ``ids``
            objects = ()
        return MemoryUpdate(
            stamp_ns=stamp_ns,
            ids=tuple(work.ids),
            objects=objects,
            created=tuple(work.created),
            relocated=tuple(work.relocated),
            merged=tuple(work.merged),
            unstored=tuple(work.unstored),
            missed=tuple(work.missed),
            removed=tuple(removed),
            warnings=tuple(work.warnings),
        )

    def _check_view(self, view: CameraView) -> tuple[FloatArray, FloatArray]:
        try:
            memory_from_camera = validate_transform(view.T_memory_from_camera)
        except TransformError as error:
            raise ObjectMemoryError(f'T_memory_from_camera: {error}') from error
        intrinsics = view.depth_intrinsics
        if view.depth_m is not None:
            shape = np.shape(view.depth_m)
            if shape != (intrinsics.height, intrinsics.width):
                raise ObjectMemoryError(
                    f'depth image shape {shape} does not match its intrinsics '
                    f'({intrinsics.height}, {intrinsics.width})'
                )
        for camera in (view.depth_intrinsics, view.rgb_intrinsics):
            if camera is not None and not (camera.fx > 0 and camera.fy > 0):
                raise ObjectMemoryError(f'intrinsics need fx, fy > 0: {camera}')
        return memory_from_camera, invert_transform(memory_from_camera)

    def _place(
        self,
        observations: Sequence[Observation],
        labels: list[str],
        memory_from_camera: FloatArray,
        work: _FrameWork,
    ) -> list[_Placed]:
        rotation = memory_from_camera[:3, :3]
        placed = []
        for index, (item, label) in enumerate(zip(observations, labels, strict=True)):
            lifted = item.lifted
            if not _usable(lifted):
                continue
            position = rotation @ np.asarray(lifted.position, dtype=np.float64)
            position += memory_from_camera[:3, 3]
            covariance = rotation @ np.asarray(lifted.covariance, dtype=np.float64) @ rotation.T
            size = np.zeros(3)
            if lifted.size is not None and np.all(np.isfinite(lifted.size)):
                # Extent of the camera-axis-aligned box along the memory frame's axes.
                size = np.abs(rotation) @ np.abs(np.asarray(lifted.size, dtype=np.float64))
            symmetric = 0.5 * (covariance + covariance.T)
            placed.append(_Placed(index, label, position, symmetric, size, float(np.max(size))))
        return placed

    # ------------------------------------------------------------------ association

    def _shift_sigma(self, *extents: float) -> float:
        extent = max(extents)
        config = self.config
        shift = min(config.shift_fraction * extent, config.max_shift_sigma_m)
        return max(shift, config.min_gate_sigma_m)

    def _gates(self, placed: list[_Placed]) -> _Gates:
        """Mahalanobis^2 of every (observation, remembered object) pair, in one batch."""
        tracks = list(self._tracks.values())
        columns = {track.id: column for column, track in enumerate(tracks)}
        distance2 = np.full((len(placed), len(tracks)), math.inf)
        if not placed or not tracks:
            return _Gates(tracks, distance2, columns)
        compatible = _compatibility(
            [observation.label for observation in placed], [track.label for track in tracks]
        )
        rows, cols = np.nonzero(compatible)
        if rows.size:
            config = self.config
            placed_extent = np.array([o.extent for o in placed])
            track_extent = np.array([t.extent for t in tracks])
            extents = np.maximum(placed_extent[rows], track_extent[cols])
            sigma = np.maximum(
                np.minimum(config.shift_fraction * extents, config.max_shift_sigma_m),
                config.min_gate_sigma_m,
            )
            placed_cov = np.stack([o.covariance for o in placed])
            track_cov = np.stack([t.covariance for t in tracks])
            combined = placed_cov[rows] + track_cov[cols]
            combined += (sigma * sigma)[:, None, None] * np.eye(3)
            placed_pos = np.stack([o.position for o in placed])
            track_pos = np.stack([t.position for t in tracks])
            innovation = placed_pos[rows] - track_pos[cols]
            try:
                solved = np.linalg.solve(combined, innovation[..., None])[..., 0]
                distance2[rows, cols] = np.einsum('ij,ij->i', innovation, solved)
            except np.linalg.LinAlgError:  # a singular pair: fall back to one at a time
                for r, c in zip(rows, cols, strict=True):
                    distance2[r, c] = self._mahalanobis2(tracks[c], placed[r])
        return _Gates(tracks, distance2, columns)

    def _mahalanobis2(self, track: _Track, placed: _Placed) -> float:
        sigma = self._shift_sigma(track.extent, placed.extent)
        innovation = placed.position - track.position
        combined = track.covariance + placed.covariance + (sigma * sigma) * np.eye(3)
        try:
            return float(innovation @ np.linalg.solve(combined, innovation))
        except np.linalg.LinAlgError:
            return math.inf

    def _associate(
        self, placed: list[_Placed], gates: _Gates, stamp_ns: int, work: _FrameWork
    ) -> None:
        if not placed or not gates.tracks:
            return
        cost = np.where(gates.distance2 <= self.config.gate_chi2, gates.distance2, math.inf)
        for row, column in optimal_assignment(cost, unmatched_cost=self.config.gate_chi2):
            observation, track = placed[row], gates.tracks[column]
            self._fuse(track, observation)
            self._hit(track, stamp_ns)
            work.ids[observation.index] = track.id
            work.matched.add(track.id)

    def _fuse(self, track: _Track, observation: _Placed) -> None:
        """Information-filter update; the viewpoint shift is part of the observation noise."""
        config = self.config
        sigma = self._shift_sigma(track.extent, observation.extent)
        prior = track.covariance + (config.process_sigma_m**2) * np.eye(3)
        noise = observation.covariance + (sigma * sigma) * np.eye(3)
        gain = prior @ np.linalg.inv(prior + noise)
        track.position = track.position + gain @ (observation.position - track.position)
        covariance = (np.eye(3) - gain) @ prior
        track.covariance = 0.5 * (covariance + covariance.T)
        track.size = np.maximum(track.size, observation.size)
        # The gate uses the mean largest extent per view, not the maximum: one lift that took
        # some background along must not widen the gate for good.
        weight = 1.0 / min(track.sightings + 1, _EXTENT_MEMORY)
        track.extent += weight * (observation.extent - track.extent)

    def _hit(self, track: _Track, stamp_ns: int) -> None:
        config = self.config
        track.sightings += 1
        track.last_seen_ns = max(track.last_seen_ns, stamp_ns)
        track.log_odds = min(track.log_odds + config.hit_log_odds, config.max_log_odds)
        track.state = ObjectState.VISIBLE
        track.miss_streak = 0

    def _missing_here(self, track: _Track, work: _FrameWork) -> bool:
        """
        Whether negative evidence says ``track`` has left its place.

        Missed at least ``relocate_min_misses`` times since it was last seen (frames out of view or
        occluded in between do not count either way).
        """
        return (
            self.config.relocate_unseen
            and track.id not in work.matched
            and track.miss_streak >= self.config.relocate_min_misses
        )

    def _nearest_moved(
        self, label: str, position: FloatArray, work: _FrameWork, seen_after_ns: int | None = None
    ) -> _Track | None:
        """
        Return the nearest missing object of ``label`` within ``max_relocation_m``, or None.

        When ``seen_after_ns`` is given, only one that went missing no later than that.
        """
        best, best_distance = None, self.config.max_relocation_m
        for track in self._tracks.values():
            if not self._missing_here(track, work) or not labels_compatible(track.label, label):
                continue
            if seen_after_ns is not None and track.missing_since_ns > seen_after_ns:
                continue
            distance = float(np.linalg.norm(track.position - position))
            if distance <= best_distance:
                best, best_distance = track, distance
        return best

    def _take_new_positions(self, placed: list[_Placed], stamp_ns: int, work: _FrameWork) -> None:
        """Unmatched observations: a missing object found elsewhere (moved), or a new one."""
        for observation in placed:
            if work.ids[observation.index]:
                continue
            moved = self._nearest_moved(observation.label, observation.position, work)
            # One view places the visible surface, not the object: its centre is uncertain by
            # the viewpoint shift too (later views from other sides average it out).
            shift = self._shift_sigma(observation.extent)
            covariance = observation.covariance + (shift * shift) * np.eye(3)
            if moved is not None:
                moved.position = observation.position.copy()
                moved.covariance = covariance
                moved.size = observation.size.copy()
                moved.extent = observation.extent
                self._hit(moved, stamp_ns)
                work.relocated.append(moved.id)
                track = moved
            else:
                track = _Track(
                    id=_placeholder(observation.index),
                    label=observation.label,
                    position=observation.position.copy(),
                    covariance=covariance,
                    size=observation.size.copy(),
                    extent=observation.extent,
                    first_seen_ns=stamp_ns,
                    last_seen_ns=stamp_ns,
                    log_odds=self.config.hit_log_odds,
                )
                self._tracks[track.id] = track
                work.created.append(track.id)
            work.ids[observation.index] = track.id
            work.matched.add(track.id)

    def _merge_moved(self, work: _FrameWork) -> None:
        """
        Merge young objects into the remembered ones they are, moved.

        A young object that first appeared after a remembered one went missing, seen while that
        one keeps being missed, is that object moved: it takes the old id back (the young id is
        dropped and never reused).
        """
        young = [
            track
            for track in self._tracks.values()
            if track.id in work.matched and track.sightings < self.config.confirm_sightings
        ]
        for track in sorted(young, key=lambda track: track.first_seen_ns):
            moved = self._nearest_moved(track.label, track.position, work, track.first_seen_ns)
            if moved is None:
                continue
            moved.position, moved.covariance = track.position, track.covariance
            moved.size = np.maximum(moved.size, track.size)
            moved.extent = track.extent
            moved.sightings += track.sightings - 1  # _hit adds the current sighting
            self._hit(moved, track.last_seen_ns)
            del self._tracks[track.id]
            work.ids = [moved.id if key == track.id else key for key in work.ids]
            work.matched.discard(track.id)
            work.matched.add(moved.id)
            work.merged.append(track.id)
            work.relocated.append(moved.id)

    def _identify_unplaced(
        self,
        observations: Sequence[Observation],
        labels: list[str],
        camera_from_memory: FloatArray,
        view: CameraView,
        stamp_ns: int,
        work: _FrameWork,
    ) -> None:
        """
        Give the objects without a position an id.

        The id of the remembered object of their label that projects into their box, nearest
        its centre (one-to-one), else a fresh id that is not stored.
        """
        rows = [index for index, key in enumerate(work.ids) if not key]
        if not rows:
            return
        intrinsics = view.rgb_intrinsics or view.depth_intrinsics
        tracks = [track for track in self._tracks.values() if track.id not in work.matched]
        cost = np.full((len(rows), max(len(tracks), 1)), math.inf)
        for column, track in enumerate(tracks):
            point = camera_from_memory[:3, :3] @ track.position + camera_from_memory[:3, 3]
            if point[2] < self.config.min_view_depth_m:
                continue
            u, v = _project(point, intrinsics)
            for row, index in enumerate(rows):
                box = observations[index].box
                if _normalized_compatible(labels[index], track.label) and _box_contains(
                    box, u, v, self.config.box_margin
                ):
                    center_u, center_v = box.center
                    cost[row, column] = math.hypot(
                        (u - center_u) / max(box.width, 1.0), (v - center_v) / max(box.height, 1.0)
                    )
        for row, column in optimal_assignment(cost):
            track = tracks[column]
            self._hit(track, stamp_ns)
            work.ids[rows[row]] = track.id
            work.matched.add(track.id)
        for index in rows:
            if not work.ids[index]:
                work.ids[index] = _placeholder(index)
                work.unstored.append(work.ids[index])

    # ------------------------------------------------------------------ negative evidence

    def _classify_unmatched(
        self,
        observations: Sequence[Observation],
        labels: list[str],
        gates: _Gates,
        camera_from_memory: FloatArray,
        view: CameraView,
        stamp_ns: int,
        work: _FrameWork,
    ) -> None:
        boxes = np.array([item.box.as_list() for item in observations], dtype=np.float64)
        boxes = boxes.reshape(-1, 4)
        for track in gates.tracks:
            if track.id in work.matched:
                continue
            state = self._visibility(track, camera_from_memory, view)
            if state is not None:
                track.state = state
                continue
            if self._label_detected_near(track, gates, labels, boxes, camera_from_memory, view):
                track.state = ObjectState.OCCLUDED
                continue
            if view.searched_labels is not None and not any(
                _normalized_compatible(track.label, label) for label in view.searched_labels
            ):
                track.state = ObjectState.OCCLUDED  # the detector was not asked for it
                continue
            if track.miss_streak == 0:
                track.missing_since_ns = stamp_ns
            track.misses += 1
            track.miss_streak += 1
            track.log_odds -= self.config.miss_log_odds
            track.state = ObjectState.UNSEEN
            work.missed.append(track.id)

    def _visibility(
        self, track: _Track, camera_from_memory: FloatArray, view: CameraView
    ) -> ObjectState | None:
        """
        OUT_OF_VIEW or OCCLUDED when the frame says nothing about the object.

        None when it should have been seen.
        """
        config = self.config
        point = camera_from_memory[:3, :3] @ track.position + camera_from_memory[:3, 3]
        depth = float(point[2])
        if not config.min_view_depth_m <= depth <= config.max_view_depth_m:
            return ObjectState.OUT_OF_VIEW
        intrinsics = view.depth_intrinsics
        u, v = _project(point, intrinsics)
        margin = config.view_margin_px
        if not (
            margin <= u < intrinsics.width - margin and margin <= v < intrinsics.height - margin
        ):
            return ObjectState.OUT_OF_VIEW
        if view.depth_m is None:
            return ObjectState.OCCLUDED  # in view, but no depth: no evidence
        half = config.depth_patch_px // 2
        column, row = int(u), int(v)
        patch = np.asarray(
            view.depth_m[
                max(row - half, 0) : row + half + 1, max(column - half, 0) : column + half + 1
            ],
            dtype=np.float64,
        )
        with np.errstate(invalid='ignore'):
            valid = patch[np.isfinite(patch) & (patch > 0.0)]
        if valid.size < max(1, patch.size // 4):
            return ObjectState.OCCLUDED  # no measurement there: no evidence
        measured = float(np.median(valid))
        tolerance = max(config.occlusion_margin_m, 0.5 * track.extent)
        tolerance += 3.0 * config.depth_noise_coefficient * depth * depth
        if measured < depth - tolerance:
            return ObjectState.OCCLUDED
        return None

    def _label_detected_near(
        self,
        track: _Track,
        gates: _Gates,
        labels: list[str],
        boxes: FloatArray,
        camera_from_memory: FloatArray,
        view: CameraView,
    ) -> bool:
        """
        Tell whether a detection of the object's label is near it.

        Near: in 3D within the gate, or a box around its projection. Such a detection means the
        frame does not show it missing.
        """
        column = gates.columns[track.id]
        if np.any(gates.distance2[:, column] <= self.config.gate_chi2):
            return True  # (labels that differ have an infinite distance)
        same_label = np.array([_normalized_compatible(label, track.label) for label in labels])
        if not same_label.any():
            return False
        point = camera_from_memory[:3, :3] @ track.position + camera_from_memory[:3, 3]
        u, v = _project(point, view.rgb_intrinsics or view.depth_intrinsics)
        margin = self.config.box_margin
        grow_x = margin * (boxes[:, 2] - boxes[:, 0]) + 4.0
        grow_y = margin * (boxes[:, 3] - boxes[:, 1]) + 4.0
        inside = (boxes[:, 0] - grow_x <= u) & (u < boxes[:, 2] + grow_x)
        inside &= (boxes[:, 1] - grow_y <= v) & (v < boxes[:, 3] + grow_y)
        return bool(np.any(inside & same_label))

    # ------------------------------------------------------------------ expiry

    def _expire(self, stamp_ns: int, work: _FrameWork) -> list[str]:
        config = self.config
        forget_log_odds = _logit(config.forget_existence)
        removed = []
        for track in list(self._tracks.values()):
            age_s = (stamp_ns - track.last_seen_ns) / 1e9
            tentative = track.sightings < config.confirm_sightings
            if (
                track.log_odds < forget_log_odds
                or (tentative and age_s > config.tentative_ttl_s)
                or (config.max_age_s > 0 and age_s > config.max_age_s)
            ):
                del self._tracks[track.id]
                removed.append(track.id)
        excess = len(self._tracks) - config.max_objects
        if excess > 0:
            # Least established first: not seen now, tentative, least likely, longest unseen.
            ranked = sorted(
                self._tracks.values(),
                key=lambda track: (
                    track.id in work.matched,
                    track.sightings >= config.confirm_sightings,
                    track.log_odds,
                    track.last_seen_ns,
                ),
            )
            for track in ranked[:excess]:
                del self._tracks[track.id]
                removed.append(track.id)
        return sorted(removed)

    # ------------------------------------------------------------------ ids

    def _number_new(self, labels: list[str], work: _FrameWork) -> None:
        """
        Give the objects created in this update (and the unstored observations) their ids.

        They are numbered in observation order whatever step created them.
        """
        waiting = {key for key in (*work.ids, *work.merged) if key.startswith(_NEW_PREFIX)}
        if not waiting:
            return
        renamed = {
            key: self._fresh_id(labels[_placeholder_index(key)])
            for key in sorted(waiting, key=_placeholder_index)
        }
        for key, new_key in renamed.items():
            track = self._tracks.pop(key, None)
            if track is not None:
                track.id = new_key
                self._tracks[new_key] = track
        work.ids = [renamed.get(key, key) for key in work.ids]
        work.matched = {renamed.get(key, key) for key in work.matched}
        for keys in (work.created, work.merged, work.unstored, work.relocated):
            keys[:] = [renamed.get(key, key) for key in keys]

    def _fresh_id(self, label: str) -> str:
        stem = id_stem(label)
        number = self._counters.get(stem, 0)
        self._counters[stem] = number + 1
        return f'{stem}_{number}'

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready copy: frame, counters and every object."""
        with self._lock:
            return {
                'format': MEMORY_FILE_FORMAT,
                'version': MEMORY_FILE_VERSION,
                'memory_frame': self.memory_frame,
                'last_stamp_ns': self._last_stamp_ns,
                'counters': dict(sorted(self._counters.items())),
                'objects': [
                    {
                        'id': track.id,
                        'label': track.label,
                        'state': track.state.name.lower(),
                        'first_seen_ns': track.first_seen_ns,
                        'last_seen_ns': track.last_seen_ns,
                        'sightings': track.sightings,
                        'misses': track.misses,
                        'log_odds': track.log_odds,
                        'missing_since_ns': track.missing_since_ns,
                        'miss_streak': track.miss_streak,
                        'position': track.position.tolist(),
                        'covariance': track.covariance.tolist(),
                        'size': track.size.tolist(),
                        'extent': track.extent,
                    }
                    for track in sorted(self._tracks.values(), key=lambda track: track.id)
                ],
            }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory as JSON, atomically (a crash mid-write keeps the old file)."""
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=1)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=target.name, dir=target.parent)
        try:
            with os.fdopen(handle, 'w', encoding='utf-8') as stream:
                stream.write(text)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def from_dict(
        cls,
        data: Any,
        config: MemoryConfig = DEFAULT_MEMORY_CONFIG,
        memory_frame: str | None = None,
    ) -> ObjectMemory:
        """
        Rebuild a memory from :meth:`to_dict`'s output; raises :class:`ObjectMemoryError`.

        ``memory_frame``, when given, must equal the saved frame (positions in another frame
        would be wrong everywhere).
        """
        if not isinstance(data, dict) or data.get('format') != MEMORY_FILE_FORMAT:
            raise ObjectMemoryError(
                f'not an object memory file (format must be {MEMORY_FILE_FORMAT!r})'
            )
        if data.get('version') != MEMORY_FILE_VERSION:
            raise ObjectMemoryError(
                f'object memory file version {data.get("version")!r} is not supported '
                f'(expected {MEMORY_FILE_VERSION})'
            )
        saved_frame = str(data.get('memory_frame', ''))
        if memory_frame is not None and memory_frame != saved_frame:
            raise ObjectMemoryError(
                f'the file holds positions in {saved_frame!r}, but the memory frame is '
                f'{memory_frame!r}'
            )
        memory = cls(saved_frame, config)
        try:
            memory._last_stamp_ns = int(data.get('last_stamp_ns', 0))
            memory._counters = {str(k): int(v) for k, v in dict(data['counters']).items()}
            for item in data['objects']:
                track = _track_from_dict(item)
                if track.id in memory._tracks:
                    raise ObjectMemoryError(f'duplicate id {track.id!r}')
                memory._tracks[track.id] = track
        except (KeyError, TypeError, ValueError) as error:
            raise ObjectMemoryError(f'malformed object memory file: {error!r}') from error
        # Counters never fall behind the ids present, even in a hand-edited file.
        for key in memory._tracks:
            match = _ID_PATTERN.match(key)
            if match:
                stem, number = match['stem'], int(match['number'])
                memory._counters[stem] = max(memory._counters.get(stem, 0), number + 1)
        return memory

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        config: MemoryConfig = DEFAULT_MEMORY_CONFIG,
        memory_frame: str | None = None,
    ) -> ObjectMemory:
        """Read a file written by :meth:`save`; raises :class:`ObjectMemoryError` (and OSError)."""
        try:
            data = json.loads(Path(path).read_text(encoding='utf-8'))
        except json.JSONDecodeError as error:
            raise ObjectMemoryError(f'{path}: not JSON: {error}') from error
        return cls.from_dict(data, config, memory_frame)


def _track_from_dict(item: dict[str, Any]) -> _Track:
    position = np.asarray(item['position'], dtype=np.float64)
    covariance = np.asarray(item['covariance'], dtype=np.float64)
    size = np.asarray(item['size'], dtype=np.float64)
    if position.shape != (3,) or covariance.shape != (3, 3) or size.shape != (3,):
        raise ValueError(f'object {item.get("id")!r}: position/covariance/size have bad shapes')
    if not all(np.all(np.isfinite(value)) for value in (position, covariance, size)):
        raise ValueError(f'object {item.get("id")!r}: non-finite values')
    state = ObjectState[str(item['state']).upper()]
    if state == ObjectState.VISIBLE:
        state = ObjectState.OUT_OF_VIEW  # nothing is in view of a memory just loaded
    key = str(item['id'])
    if not _ID_PATTERN.match(key):
        raise ValueError(f'id {key!r} is not "<label>_<n>"')
    return _Track(
        id=key,
        label=normalize_label(str(item['label'])),
        position=position,
        covariance=covariance,
        size=size,
        extent=float(item.get('extent', float(np.max(size)))),
        first_seen_ns=int(item['first_seen_ns']),
        last_seen_ns=int(item['last_seen_ns']),
        sightings=int(item['sightings']),
        misses=int(item['misses']),
        log_odds=float(item['log_odds']),
        state=state,
        missing_since_ns=int(item.get('missing_since_ns', 0)),
        miss_streak=int(item.get('miss_streak', 0)),
    )
