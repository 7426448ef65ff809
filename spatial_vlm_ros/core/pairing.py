# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Pair RGB, depth and CameraInfo messages by stamp, like message_filters' approximate sync.

The pairer only stores ``(stamp_ns, payload)`` tuples and hands back matched sets; it never
decodes anything, so ROS callbacks stay cheap. It is thread-safe (one lock), since callbacks
may run on several executor threads.

Algorithm (RGB-anchored; see docs/INPUTS.md for how it relates to message_filters):

* Each RGB message, oldest first, is matched to the depth message closest in stamp within
  ``slop_ns`` (ties: the earlier one), and likewise to a CameraInfo in ``STRICT`` info mode;
  in ``LATEST`` mode (the default) the most recently received CameraInfo is used.
* A match is decided only once no better candidate can still arrive: each stream arrives in
  stamp order (DDS delivers one writer's samples in order; a bag is read in log-time order), so
  that is when a message on that stream at least as far past the RGB stamp as the current best
  (or past the slop) has been seen.
  An exact stamp match is decided at once. After ``max_wait_ns`` of RGB stamp time the
  match is decided with whatever is buffered (a stalled stream cannot hold RGB forever).
* Sets come out in strictly increasing RGB and depth stamp order; each message is used once.
  Anything that can no longer be emitted is dropped and counted per stream and reason.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
import enum
import operator
import threading
from typing import Any

from spatial_vlm_ros.core.types import SpatialVlmError

RGB = 'rgb'
DEPTH = 'depth'
INFO = 'info'
STREAMS = (RGB, DEPTH, INFO)

# Drop reasons, as counted in PairingStats.dropped[stream].
QUEUE_OVERFLOW = 'queue_overflow'  # buffer full; the oldest message was discarded
LATE = 'late'  # arrived older than what was already emitted; can never be used
DUPLICATE = 'duplicate'  # same stamp as a buffered message on the same stream (first kept)
NO_DEPTH = 'no_depth'  # RGB with no depth within the slop
NO_INFO = 'no_info'  # RGB with no CameraInfo (none yet, or none within the slop when strict)
UNMATCHED = 'unmatched'  # depth/info passed over: a later one was paired instead
DROP_REASONS = (QUEUE_OVERFLOW, LATE, DUPLICATE, NO_DEPTH, NO_INFO, UNMATCHED)

NANOSECONDS_PER_SECOND = 1_000_000_000
INTERVAL_SAMPLES = 16  # recent stamp intervals kept per stream to learn min_interval_ns
MIN_INTERVALS_TO_LEARN = 4
MAX_WAIT_PERIODS = 2.5  # see StampPairer.max_wait_ns


class PairingError(SpatialVlmError):
    """Invalid pairing configuration, stream name or stamp."""


class InfoMode(str, enum.Enum):
    LATEST = 'latest'  # reuse the latest CameraInfo for every frame (latched or low-rate info)
    STRICT = 'strict'  # match CameraInfo by stamp like depth


@dataclass(frozen=True)
class PairingConfig:
    slop_ns: int = 50_000_000
    queue_size: int = 10
    info_mode: InfoMode = InfoMode.LATEST
    max_wait_ns: int = 500_000_000
    # Lower bound on the stamp interval of the depth (and strict info) stream, as message_filters'
    # setInterMessageLowerBound: a match is final once the next message, at least this much
    # newer than the newest seen, could not be closer. 0: wait for that next message instead
    # (one frame period of latency when depth is stamped before RGB). None: learn it from the
    # stream (half the smallest of the recent intervals).
    min_interval_ns: int | None = 0

    def __post_init__(self) -> None:
        if self.min_interval_ns is not None and (
            isinstance(self.min_interval_ns, bool)
            or not isinstance(self.min_interval_ns, int)
            or self.min_interval_ns < 0
        ):
            raise PairingError(
                f'min_interval_ns must be None or a non-negative integer, got '
                f'{self.min_interval_ns!r}'
            )
        for name in ('slop_ns', 'queue_size', 'max_wait_ns'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PairingError(f'{name} must be a non-negative integer, got {value!r}')
        if self.queue_size < 1:
            raise PairingError(f'queue_size must be at least 1, got {self.queue_size}')
        try:
            object.__setattr__(self, 'info_mode', InfoMode(self.info_mode))
        except ValueError:
            raise PairingError(
                f"info_mode must be 'latest' or 'strict', got {self.info_mode!r}"
            ) from None

    @classmethod
    def from_seconds(
        cls,
        slop_s: float = 0.05,
        queue_size: int = 10,
        info_mode: InfoMode | str = InfoMode.LATEST,
        max_wait_s: float = 0.5,
        min_interval_s: float | None = 0.0,
    ) -> PairingConfig:
        """
        Return the same settings in seconds, as ROS parameters usually give them.

        ``min_interval_s`` None or negative: learn it from the stream.
        """

        def to_ns(name: str, seconds: float) -> int:
            try:
                return round(float(seconds) * NANOSECONDS_PER_SECOND)
            except (TypeError, ValueError, OverflowError):
                raise PairingError(f'{name} must be a finite number, got {seconds!r}') from None

        return cls(
            slop_ns=to_ns('slop_s', slop_s),
            queue_size=queue_size,
            info_mode=info_mode,  # type: ignore[arg-type]  # __post_init__ converts
            max_wait_ns=to_ns('max_wait_s', max_wait_s),
            min_interval_ns=None
            if min_interval_s is None or float(min_interval_s) < 0
            else to_ns('min_interval_s', min_interval_s),
        )


@dataclass(frozen=True)
class Stamped:
    stamp_ns: int
    payload: Any
    received_ns: int | None = None  # arrival time (the node clock), for latency breakdowns


@dataclass(frozen=True)
class RgbdSet:
    """One matched RGB + depth + CameraInfo triple (payloads as given to the pairer)."""

    rgb: Stamped
    depth: Stamped
    info: Stamped
    paired_ns: int | None = None  # arrival time of the message that completed the set
    camera: str = ''  # the node's name for the camera ('' with a single camera)

    @property
    def stamp_ns(self) -> int:
        return self.rgb.stamp_ns

    @property
    def received_ns(self) -> int | None:
        """
        When the later of its two images arrived (the node clock); None when not recorded.

        CameraInfo is left out: the latest one is reused, so it may have come after them.
        """
        times = [self.rgb.received_ns, self.depth.received_ns]
        return None if None in times else max(t for t in times if t is not None)

    @property
    def first_received_ns(self) -> int | None:
        """When the first image of the set arrived (CameraInfo is often reused: not counted)."""
        times = [self.rgb.received_ns, self.depth.received_ns]
        return None if None in times else min(t for t in times if t is not None)


@dataclass(frozen=True)
class PairingStats:
    """Counters since construction (or :meth:`StampPairer.reset`), for /diagnostics."""

    received: dict[str, int]
    emitted: int
    dropped: dict[str, dict[str, int]]
    pending: dict[str, int]

    def as_flat_dict(self) -> dict[str, int]:
        """
        Flat counters for diagnostics.

        ``emitted``, ``rgb.received``, ``rgb.pending``, ``rgb.dropped.no_depth``, ...
        """
        flat = {'emitted': self.emitted}
        for stream in STREAMS:
            flat[f'{stream}.received'] = self.received.get(stream, 0)
            flat[f'{stream}.pending'] = self.pending.get(stream, 0)
            for reason, count in sorted(self.dropped.get(stream, {}).items()):
                flat[f'{stream}.dropped.{reason}'] = count
        return flat


@dataclass
class _Counters:
    received: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    dropped: dict[str, dict[str, int]] = field(default_factory=lambda: {s: {} for s in STREAMS})
    emitted: int = 0

    def drop(self, stream: str, reason: str, count: int = 1) -> None:
        if count:
            per_stream = self.dropped[stream]
            per_stream[reason] = per_stream.get(reason, 0) + count


class _SortedBuffer:
    """Messages of one stream sorted by stamp; stamps unique."""

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.items: list[Stamped] = []

    def __len__(self) -> int:
        return len(self.items)

    def insert(self, item: Stamped) -> bool:
        index = bisect.bisect_left(self.stamps, item.stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == item.stamp_ns:
            return False
        self.stamps.insert(index, item.stamp_ns)
        self.items.insert(index, item)
        return True

    def pop_oldest(self) -> Stamped:
        self.stamps.pop(0)
        return self.items.pop(0)

    def remove_through(self, stamp_ns: int) -> int:
        """Remove every message with stamp <= ``stamp_ns``; returns how many."""
        count = bisect.bisect_right(self.stamps, stamp_ns)
        del self.stamps[:count]
        del self.items[:count]
        return count

    def remove_before(self, stamp_ns: int) -> int:
        """Remove every message with stamp < ``stamp_ns``; returns how many."""
        count = bisect.bisect_left(self.stamps, stamp_ns)
        del self.stamps[:count]
        del self.items[:count]
        return count

    def closest(self, stamp_ns: int, slop_ns: int) -> Stamped | None:
        """Closest message within ``slop_ns`` (ties: the earlier one)."""
        index = bisect.bisect_left(self.stamps, stamp_ns)
        best: Stamped | None = None
        for candidate_index in (index - 1, index):
            if 0 <= candidate_index < len(self.items):
                candidate = self.items[candidate_index]
                distance = abs(candidate.stamp_ns - stamp_ns)
                if distance <= slop_ns and (
                    best is None or distance < abs(best.stamp_ns - stamp_ns)
                ):
                    best = candidate
        return best


class StampPairer:
    """
    Approximate-time pairing of RGB, depth and CameraInfo (see the module docstring).

    Feed messages with :meth:`add` (it returns the sets that became complete, oldest first);
    call :meth:`flush` at the end of a bag.
    """

    def __init__(self, config: PairingConfig | None = None, camera: str = '') -> None:
        self._config = config or PairingConfig()
        self._camera = camera  # stamped on every set (RgbdSet.camera)
        self._lock = threading.Lock()
        self._reset_locked()

    @property
    def config(self) -> PairingConfig:
        return self._config

    def _reset_locked(self) -> None:
        self._buffers = {stream: _SortedBuffer() for stream in STREAMS}
        self._latest_info: Stamped | None = None
        self._newest: dict[str, int | None] = dict.fromkeys(STREAMS)
        # Recent stamp intervals per stream, to learn a lower bound (min_interval_ns None).
        self._intervals: dict[str, deque[int]] = {
            s: deque(maxlen=INTERVAL_SAMPLES) for s in STREAMS
        }
        self._last_used: dict[str, int | None] = dict.fromkeys(STREAMS)
        self._counters = _Counters()

    def reset(self) -> None:
        """Forget buffers, watermarks and counters (e.g. after a bag loops or time jumps back)."""
        with self._lock:
            self._reset_locked()

    # ------------------------------------------------------------------ input

    def add(
        self, stream: str, stamp_ns: int, payload: Any, received_ns: int | None = None
    ) -> list[RgbdSet]:
        """
        Store one message; returns the sets it completed, in stamp order.

        ``received_ns`` (the arrival time) is kept with the message, and the sets it completes
        are marked paired at that time, so that a scene's latency can be broken down.
        """
        if stream not in STREAMS:
            raise PairingError(f'unknown stream {stream!r}; expected one of {STREAMS}')
        if isinstance(stamp_ns, bool):
            raise PairingError('stamp_ns must be an integer, got a bool')
        try:
            stamp_ns = operator.index(stamp_ns)
        except TypeError:
            raise PairingError(
                f'stamp_ns must be integer nanoseconds, got {type(stamp_ns).__name__}'
            ) from None
        with self._lock:
            self._store(stream, Stamped(stamp_ns, payload, received_ns))
            return self._drain(force=False, now_ns=received_ns)

    def flush(self) -> list[RgbdSet]:
        """Decide every pending RGB with what is buffered now (end of input)."""
        with self._lock:
            return self._drain(force=True)

    # ------------------------------------------------------------------ output

    def stats(self) -> PairingStats:
        with self._lock:
            pending = {stream: len(self._buffers[stream]) for stream in STREAMS}
            if self._config.info_mode == InfoMode.LATEST:
                pending[INFO] = int(self._latest_info is not None)
            return PairingStats(
                received=dict(self._counters.received),
                emitted=self._counters.emitted,
                dropped={stream: dict(self._counters.dropped[stream]) for stream in STREAMS},
                pending=pending,
            )

    # ------------------------------------------------------------------ internals

    def _matched_by_stamp(self, stream: str) -> bool:
        return stream == DEPTH or (stream == INFO and self._config.info_mode == InfoMode.STRICT)

    def _store(self, stream: str, message: Stamped) -> None:
        counters = self._counters
        counters.received[stream] += 1
        newest = self._newest[stream]
        if newest is None or message.stamp_ns > newest:
            self._newest[stream] = message.stamp_ns
            if newest is not None:
                self._intervals[stream].append(message.stamp_ns - newest)
        if stream == INFO and not self._matched_by_stamp(INFO):
            self._latest_info = message
            return
        if self._is_late(stream, message.stamp_ns):
            counters.drop(stream, LATE)
            return
        buffer = self._buffers[stream]
        if not buffer.insert(message):
            counters.drop(stream, DUPLICATE)
            return
        if len(buffer) > self._config.queue_size:
            buffer.pop_oldest()
            counters.drop(stream, QUEUE_OVERFLOW)

    def _is_late(self, stream: str, stamp_ns: int) -> bool:
        last_rgb = self._last_used[RGB]
        if stream == RGB:
            return last_rgb is not None and stamp_ns <= last_rgb
        last_used = self._last_used[stream]
        if last_used is not None and stamp_ns <= last_used:
            return True
        # Every RGB still to come is newer than the last emitted one.
        return last_rgb is not None and stamp_ns < last_rgb - self._config.slop_ns

    def max_wait_ns(self) -> int:
        """
        How long (RGB stamp time) a set waits for a stalled stream.

        When the stream's interval is learned (``min_interval_ns`` None), at least
        MAX_WAIT_PERIODS RGB periods: a 2 Hz camera whose depth image comes one period late (a
        reliable sample repaired when the next one arrives) must not lose every such frame to a
        0.5 s limit that equals its period.
        """
        configured = self._config.max_wait_ns
        intervals = self._intervals[RGB]
        if self._config.min_interval_ns is not None or len(intervals) < MIN_INTERVALS_TO_LEARN:
            return configured
        typical = sorted(intervals)[len(intervals) // 2]
        return max(configured, int(MAX_WAIT_PERIODS * typical))

    def min_interval_ns(self, stream: str) -> int:
        """Return the lower bound on ``stream``'s next stamp interval that decisions rely on."""
        configured = self._config.min_interval_ns
        if configured is not None:
            return configured
        intervals = self._intervals[stream]
        if len(intervals) < MIN_INTERVALS_TO_LEARN:
            return 0
        # Half the smallest recent interval: jitter and a faster camera keep it a lower bound.
        return min(intervals) // 2

    def _decide(self, stream: str, rgb_stamp: int, timed_out: bool) -> tuple[bool, Stamped | None]:
        """
        (whether the match for ``rgb_stamp`` on ``stream`` is final, the match or None).

        Final once no message still to come can be closer: the next one is stamped at least
        ``min_interval_ns`` after the newest seen (0: once it has been seen).
        """
        config = self._config
        if not self._matched_by_stamp(stream):
            return self._latest_info is not None or timed_out, self._latest_info
        best = self._buffers[stream].closest(rgb_stamp, config.slop_ns)
        if timed_out:
            return True, best
        newest = self._newest[stream]
        if newest is None:
            return False, best
        next_at_least = newest + self.min_interval_ns(stream)
        if best is None:
            return next_at_least > rgb_stamp + config.slop_ns, None
        distance = abs(best.stamp_ns - rgb_stamp)
        return next_at_least >= rgb_stamp + distance, best

    def _drain(self, force: bool, now_ns: int | None = None) -> list[RgbdSet]:
        counters = self._counters
        rgb_buffer = self._buffers[RGB]
        emitted: list[RgbdSet] = []
        while len(rgb_buffer):
            rgb = rgb_buffer.items[0]
            newest_rgb = self._newest[RGB]
            timed_out = force or (
                newest_rgb is not None and newest_rgb - rgb.stamp_ns >= self.max_wait_ns()
            )
            depth_final, depth = self._decide(DEPTH, rgb.stamp_ns, timed_out)
            if depth_final and depth is None:
                rgb_buffer.pop_oldest()
                self._mark_rgb_done(rgb.stamp_ns)
                counters.drop(RGB, NO_DEPTH)
                continue
            info_final, info = self._decide(INFO, rgb.stamp_ns, timed_out)
            if not (depth_final and info_final):
                break
            rgb_buffer.pop_oldest()
            self._mark_rgb_done(rgb.stamp_ns)
            if info is None:
                counters.drop(RGB, NO_INFO)
                continue
            assert depth is not None  # depth_final with no depth was handled above
            self._consume(DEPTH, depth.stamp_ns)
            if self._matched_by_stamp(INFO):
                self._consume(INFO, info.stamp_ns)
            counters.emitted += 1
            emitted.append(
                RgbdSet(rgb=rgb, depth=depth, info=info, paired_ns=now_ns, camera=self._camera)
            )
        return emitted

    def _mark_rgb_done(self, rgb_stamp: int) -> None:
        """Advance the RGB watermark and drop depth/info too old for any later RGB."""
        self._last_used[RGB] = rgb_stamp
        oldest_useful = rgb_stamp - self._config.slop_ns
        for stream in (DEPTH, INFO):
            if self._matched_by_stamp(stream):
                stale = self._buffers[stream].remove_before(oldest_useful)
                self._counters.drop(stream, UNMATCHED, stale)

    def _consume(self, stream: str, stamp_ns: int) -> None:
        """Use the message at ``stamp_ns``; older ones on the stream can no longer be used."""
        removed = self._buffers[stream].remove_through(stamp_ns)
        self._counters.drop(stream, UNMATCHED, removed - 1)
        self._last_used[stream] = stamp_ns
