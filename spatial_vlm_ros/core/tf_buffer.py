# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
A small, pure, time-interpolating buffer of ``/tf`` and ``/tf_static``.

It serves lookups where tf2_ros is not installed (the PyPI install) and in the replay (the bag's
``/tf``). It follows tf2's model:

* the frames form a tree: every child frame has one parent; a sample is the transform
  ``T_parent_from_child`` (a point in ``child`` mapped to ``parent``) at a stamp, given as
  translation (metres) and quaternion ``(x, y, z, w)`` like geometry_msgs/TransformStamped;
* a static transform (``/tf_static``) holds at every time; a dynamic one is interpolated between
  the two samples around the requested stamp (linear in translation, SLERP in rotation) and is
  never extrapolated beyond ``max_extrapolation_ns`` (0 by default, like tf2);
* a lookup walks from both frames up to their common ancestor and composes the edges;
* stamp 0 asks for the latest time every dynamic edge on the path has data for (tf2's
  ``Time(0)``);
* each dynamic edge keeps ``cache_duration_ns`` of history (10 s, tf2's default) and at most
  ``max_samples_per_edge`` samples, so memory stays bounded however long it runs.

:meth:`TransformBuffer.lookup` returns a :class:`TransformResult` (``matrix`` or
``reason``), the shape the pipeline's ``TransformLookup`` protocol expects;
:meth:`TransformBuffer.lookup_matrix` raises :class:`TfLookupError` instead.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass
import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.transforms import (
    TransformError,
    compose,
    invert_transform,
    transform_from_translation_quaternion,
)
from spatial_vlm_ros.core.types import FloatArray, SpatialVlmError

DEFAULT_CACHE_DURATION_NS = 10 * 10**9  # tf2_ros.Buffer's default cache time
DEFAULT_MAX_SAMPLES_PER_EDGE = 10_000
_MAX_TREE_DEPTH = 1000  # a deeper chain can only be a loop
_SLERP_LINEAR_THRESHOLD = 0.9995  # quaternions this close are interpolated linearly


class TfLookupError(SpatialVlmError):
    """
    A transform cannot be looked up.

    Unknown or unconnected frame, or a stamp outside the buffered history (extrapolation).
    """


@dataclass(frozen=True)
class TransformResult:
    """``matrix`` is the (4, 4) ``T_target_from_source``, or None with ``reason`` saying why."""

    matrix: FloatArray | None
    reason: str = ''


@dataclass(frozen=True)
class _Sample:
    stamp_ns: int
    translation: FloatArray  # (3,)
    quaternion: FloatArray  # (4,) unit, (x, y, z, w)


class _Edge:
    """The transform from one child frame to its parent: static, or a sorted sample history."""

    def __init__(self, parent: str, static: bool) -> None:
        self.parent = parent
        self.static = static
        self.stamps: list[int] = []
        self.samples: list[_Sample] = []

    def insert(self, sample: _Sample, cache_duration_ns: int, max_samples: int) -> None:
        if self.static:
            self.stamps, self.samples = [sample.stamp_ns], [sample]
            return
        index = bisect_left(self.stamps, sample.stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == sample.stamp_ns:
            self.samples[index] = sample  # a repeated stamp replaces the old value
            return
        insort(self.stamps, sample.stamp_ns)
        self.samples.insert(index, sample)
        # Drop history older than the cache duration before the newest sample, and keep the
        # sample count bounded.
        oldest_kept = bisect_left(self.stamps, self.stamps[-1] - cache_duration_ns)
        oldest_kept = max(oldest_kept, len(self.stamps) - max_samples)
        if oldest_kept > 0:
            del self.stamps[:oldest_kept]
            del self.samples[:oldest_kept]

    def at(self, stamp_ns: int, child: str, max_extrapolation_ns: int) -> FloatArray:
        """``T_parent_from_child`` at ``stamp_ns``; raises TfLookupError outside the history."""
        if self.static:
            sample = self.samples[0]
            return transform_from_translation_quaternion(sample.translation, sample.quaternion)
        first, last = self.stamps[0], self.stamps[-1]
        if stamp_ns < first - max_extrapolation_ns or stamp_ns > last + max_extrapolation_ns:
            direction = 'past' if stamp_ns < first else 'future'
            raise TfLookupError(
                f'extrapolation into the {direction}: {self.parent} -> {child} requested at '
                f'{stamp_ns} ns, buffered from {first} to {last} ns '
                f'({len(self.stamps)} samples)'
            )
        index = bisect_left(self.stamps, stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == stamp_ns:
            return _matrix(self.samples[index])
        if index == 0 or index == len(self.stamps):  # inside the extrapolation tolerance
            return _matrix(self.samples[0 if index == 0 else -1])
        before, after = self.samples[index - 1], self.samples[index]
        fraction = (stamp_ns - before.stamp_ns) / (after.stamp_ns - before.stamp_ns)
        translation = (1.0 - fraction) * before.translation + fraction * after.translation
        rotation = slerp(before.quaternion, after.quaternion, fraction)
        return transform_from_translation_quaternion(translation, rotation)


def _matrix(sample: _Sample) -> FloatArray:
    return transform_from_translation_quaternion(sample.translation, sample.quaternion)


def slerp(start_xyzw: npt.ArrayLike, end_xyzw: npt.ArrayLike, fraction: float) -> FloatArray:
    """
    Spherical linear interpolation of unit quaternions ``(x, y, z, w)`` along the shorter arc.

    ``fraction`` 0 gives ``start``, 1 gives ``end`` (or its negation, the same rotation).
    """
    start = np.asarray(start_xyzw, dtype=np.float64)
    end = np.asarray(end_xyzw, dtype=np.float64)
    start = start / np.linalg.norm(start)
    end = end / np.linalg.norm(end)
    dot = float(start @ end)
    if dot < 0.0:  # q and -q are one rotation: take the shorter way round
        end, dot = -end, -dot
    if dot > _SLERP_LINEAR_THRESHOLD:
        blended = start + fraction * (end - start)
        return blended / np.linalg.norm(blended)
    angle = math.acos(min(dot, 1.0))
    sin_angle = math.sin(angle)
    return (
        math.sin((1.0 - fraction) * angle) * start + math.sin(fraction * angle) * end
    ) / sin_angle


class TransformBuffer:
    """
    Buffered transforms of one frame tree.

    Thread-safe (a subscription thread may insert while a worker looks up).
    """

    def __init__(
        self,
        cache_duration_ns: int = DEFAULT_CACHE_DURATION_NS,
        max_samples_per_edge: int = DEFAULT_MAX_SAMPLES_PER_EDGE,
        max_extrapolation_ns: int = 0,
    ) -> None:
        if cache_duration_ns <= 0 or max_samples_per_edge < 2 or max_extrapolation_ns < 0:
            raise ValueError(
                'need cache_duration_ns > 0, max_samples_per_edge >= 2, '
                f'max_extrapolation_ns >= 0; got {cache_duration_ns}, {max_samples_per_edge}, '
                f'{max_extrapolation_ns}'
            )
        self.cache_duration_ns = int(cache_duration_ns)
        self.max_samples_per_edge = int(max_samples_per_edge)
        self.max_extrapolation_ns = int(max_extrapolation_ns)
        self._edges: dict[str, _Edge] = {}  # keyed by child frame
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: npt.ArrayLike,
        quaternion_xyzw: npt.ArrayLike,
        static: bool = False,
    ) -> None:
        """
        Add ``T_parent_from_child`` at ``stamp_ns`` (static: at every time).

        Raises :class:`TfLookupError` for empty or equal frame names, a negative stamp, a
        sample that would close a loop, or non-finite / zero-norm values. A child that gets a
        new parent drops its old history (tf2 warns and does the same).
        """
        parent, child = _strip(parent), _strip(child)
        if not parent or not child:
            raise TfLookupError(
                f'frame names must not be empty (parent {parent!r}, child {child!r})'
            )
        if parent == child:
            raise TfLookupError(f'a frame cannot be its own parent: {parent!r}')
        if int(stamp_ns) < 0:
            raise TfLookupError(f'stamp must be >= 0 ns, got {stamp_ns}')
        try:
            # Validates and normalizes; the matrix itself is rebuilt at lookup time.
            matrix = transform_from_translation_quaternion(translation, quaternion_xyzw)
        except TransformError as error:
            raise TfLookupError(f'bad transform {parent} -> {child}: {error}') from error
        quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
        sample = _Sample(
            int(stamp_ns), matrix[:3, 3].copy(), quaternion / np.linalg.norm(quaternion)
        )
        with self._lock:
            if self._is_ancestor(child, parent):
                raise TfLookupError(f'{parent} -> {child} would close a loop in the frame tree')
            edge = self._edges.get(child)
            if edge is None or edge.parent != parent or edge.static != static:
                edge = _Edge(parent, static)
                self._edges[child] = edge
            edge.insert(sample, self.cache_duration_ns, self.max_samples_per_edge)

    def add_message(self, message: Any, static: bool = False) -> int:
        """
        Add every ``geometry_msgs/TransformStamped`` of a ``tf2_msgs/TFMessage``.

        rclpy or rosbags messages, duck-typed; returns how many were added. Malformed entries
        raise :class:`TfLookupError` after the good ones before them were added.
        """
        return self.add_transforms(getattr(message, 'transforms', ()), static)

    def add_transforms(self, transforms: Iterable[Any], static: bool = False) -> int:
        """Add ``geometry_msgs/TransformStamped`` values (duck-typed); returns the count."""
        count = 0
        for stamped in transforms:
            try:
                stamp = stamped.header.stamp
                stamp_ns = int(stamp.sec) * 10**9 + int(stamp.nanosec)
                translation = stamped.transform.translation
                rotation = stamped.transform.rotation
                values = (
                    (translation.x, translation.y, translation.z),
                    (rotation.x, rotation.y, rotation.z, rotation.w),
                )
                parent, child = stamped.header.frame_id, stamped.child_frame_id
            except AttributeError as error:
                raise TfLookupError(f'not a TransformStamped: {error}') from error
            self.set_transform(parent, child, stamp_ns, *values, static=static)
            count += 1
        return count

    def clear(self) -> None:
        """Forget every transform (e.g. when a replay jumps back in time)."""
        with self._lock:
            self._edges.clear()

    # ------------------------------------------------------------------ queries

    @property
    def frames(self) -> set[str]:
        """Every frame named so far, parents and children."""
        with self._lock:
            return set(self._edges) | {edge.parent for edge in self._edges.values()}

    def lookup(self, target: str, source: str, stamp_ns: int) -> TransformResult:
        """``T_target_from_source`` at ``stamp_ns`` (0 = latest common time), or a reason."""
        try:
            return TransformResult(self.lookup_matrix(target, source, stamp_ns))
        except TfLookupError as error:
            return TransformResult(None, f'no transform {source} -> {target}: {error}')

    def lookup_matrix(self, target: str, source: str, stamp_ns: int) -> FloatArray:
        """``T_target_from_source`` at ``stamp_ns``; raises :class:`TfLookupError`."""
        target, source = _strip(target), _strip(source)
        if not target or not source:
            raise TfLookupError(f'frame names must not be empty ({target!r}, {source!r})')
        if target == source:
            return np.eye(4)
        with self._lock:
            known = set(self._edges) | {edge.parent for edge in self._edges.values()}
            for name in (target, source):
                if name not in known:
                    raise TfLookupError(f'frame {name!r} does not exist (known: {sorted(known)})')
            source_chain = self._chain_to_root(source)
            target_chain = self._chain_to_root(target)
            target_ancestors = {frame: index for index, frame in enumerate(target_chain)}
            common_index = next(
                (index for index, frame in enumerate(source_chain) if frame in target_ancestors),
                None,
            )
            if common_index is None:
                raise TfLookupError(
                    f'{source!r} and {target!r} are not connected (roots '
                    f'{source_chain[-1]!r} and {target_chain[-1]!r})'
                )
            common = source_chain[common_index]
            up_from_source = source_chain[:common_index]  # children whose edges lead to common
            up_from_target = target_chain[: target_ancestors[common]]
            if int(stamp_ns) == 0:
                stamp_ns = self._latest_common_stamp(up_from_source + up_from_target)
            common_from_source = self._compose_up(up_from_source, int(stamp_ns))
            common_from_target = self._compose_up(up_from_target, int(stamp_ns))
        return compose(invert_transform(common_from_target), common_from_source)

    def can_transform(self, target: str, source: str, stamp_ns: int) -> bool:
        return self.lookup(target, source, stamp_ns).matrix is not None

    # ------------------------------------------------------------------ internals

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > _MAX_TREE_DEPTH:
                raise TfLookupError(f'frame tree above {frame!r} is deeper than {_MAX_TREE_DEPTH}')
        return chain

    def _is_ancestor(self, frame: str, of: str) -> bool:
        return frame in self._chain_to_root(of)

    def _latest_common_stamp(self, children: list[str]) -> int:
        dynamic = [self._edges[child] for child in children if not self._edges[child].static]
        return min((edge.stamps[-1] for edge in dynamic), default=0)

    def _compose_up(self, children: list[str], stamp_ns: int) -> FloatArray:
        """``T_top_from_first`` along ``children`` (each one's parent is the next one)."""
        result = np.eye(4)
        for child in children:
            edge = self._edges[child]
            result = edge.at(stamp_ns, child, self.max_extrapolation_ns) @ result
        return result


def _strip(frame: str) -> str:
    """tf2 ignores a leading slash (``/map`` is ``map``)."""
    return str(frame).strip().lstrip('/')
