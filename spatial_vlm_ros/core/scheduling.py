# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Latest-frame scheduling with bounded staleness and a priority lane for on-demand requests.

Why not a FIFO: a VLM call takes 50 ms to seconds while a camera delivers 30 frames/s. A queue
would grow without bound and publish ever older scenes. Instead subscription callbacks only
overwrite one slot with the newest paired frame; a worker takes the newest frame when an
in-flight slot is free and the rate allows, drops frames older than ``max_age_s``, and refuses to
publish a result older than one already published (requests can finish out of order when several
are in flight). On-demand requests (services) have their own in-flight budget, so the stream can
never starve them.

Several cameras share one scheduler (one engine): each has its own newest-frame slot, rate
budget and publish watermark, they share the in-flight slots (so the engine batches their
requests), and a free slot goes to the least recently served camera that has a frame waiting
(round-robin when all do), so no camera starves and each one's staleness stays bounded.

Every request has ONE deadline (:class:`Deadline`), created where the request starts (a frame
dispatched, a service call received) and passed down to the engine call
(``EngineRequest.timeout_s``), so waiting for a slot and every engine call share one budget.

Everything here is asyncio + one lock, with an injectable clock, so it is tested without ROS.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
import math
import threading
import time
from typing import Generic, TypeVar

FrameT = TypeVar('FrameT')
ResultT = TypeVar('ResultT')
T = TypeVar('T')

# Drop reasons, reported in /diagnostics.
DROP_SUPERSEDED = 'superseded'  # a newer frame replaced it before a worker was free
DROP_STALE = 'stale'  # older than max_age_s when a worker was free
DROP_OUT_OF_ORDER = 'out_of_order'  # finished after a newer frame's result was published
DROP_FAILED = 'failed'  # the processing call raised or timed out
DROP_TIMEOUT = 'timeout'
RATE_BURST = 2.0  # rate_hz allows one dispatch beyond the steady rate after a gap


@dataclass(frozen=True)
class SchedulerConfig:
    # Upper bound on dispatches per second, long-run (0 = as fast as slots free up); a burst of
    # RATE_BURST is allowed so that transport jitter does not delay or drop frames.
    rate_hz: float = 2.0
    max_in_flight: int = 1  # stream requests running at once
    max_age_s: float = 1.0  # frames older than this (by stamp) are not sent
    timeout_s: float = 30.0  # per-request deadline
    priority_in_flight: int = 1  # on-demand requests running at once, on top of the stream's

    def __post_init__(self) -> None:
        if self.rate_hz < 0:
            raise ValueError(f'rate_hz must be >= 0, got {self.rate_hz}')
        if self.max_in_flight < 1 or self.priority_in_flight < 1:
            raise ValueError('max_in_flight and priority_in_flight must be >= 1')
        if self.max_age_s <= 0 or self.timeout_s <= 0:
            raise ValueError('max_age_s and timeout_s must be > 0')


@dataclass(frozen=True)
class Deadline:
    """One request's deadline on the monotonic clock; passed down to the engine call."""

    at_s: float  # time.monotonic() value

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining_s(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at_s - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at_s


@dataclass(frozen=True)
class StampedFrame(Generic[FrameT]):
    """
    A frame in the scheduler, with the times (in the scheduler's clock) that explain its latency.

    Submitted to the slot, taken by the worker; and its request deadline.
    """

    stamp_ns: int
    frame: FrameT
    submitted_ns: int | None = None  # clock_ns() when stored in the slot
    taken_ns: int | None = None  # clock_ns() when a worker took it
    deadline: Deadline | None = None  # set when dispatched
    # What staleness is measured from: the stamp (None), or the arrival time when the camera's
    # clock is known to be offset from the node's (a bag without --clock, device time).
    reference_ns: int | None = None
    camera: str = ''  # the scheduler's camera key (set when dispatched)

    def age_s(self, now_ns: int) -> float:
        reference = self.stamp_ns if self.reference_ns is None else self.reference_ns
        return (now_ns - reference) / 1e9

    @property
    def queue_ms(self) -> float:
        """
        Milliseconds between being stored and being taken (waiting for a slot or the rate).

        NaN when not known.
        """
        if self.submitted_ns is None or self.taken_ns is None:
            return float('nan')
        return (self.taken_ns - self.submitted_ns) / 1e6


class LatestFrameSlot(Generic[FrameT]):
    """Holds only the newest frame; thread-safe, O(1), never blocks a subscription callback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: StampedFrame[FrameT] | None = None
        self._taken_stamp_ns = -1
        self.superseded = 0
        self.rejected_older = 0

    def put(
        self,
        stamp_ns: int,
        frame: FrameT,
        submitted_ns: int | None = None,
        reference_ns: int | None = None,
    ) -> bool:
        """Store ``frame`` unless an equal or newer one was already stored; True when stored."""
        with self._lock:
            newest = self._frame.stamp_ns if self._frame is not None else self._taken_stamp_ns
            if stamp_ns <= newest:
                self.rejected_older += 1
                return False
            if self._frame is not None:
                self.superseded += 1
            self._frame = StampedFrame(stamp_ns, frame, submitted_ns, reference_ns=reference_ns)
            return True

    def take(self) -> StampedFrame[FrameT] | None:
        with self._lock:
            frame, self._frame = self._frame, None
            if frame is not None:
                self._taken_stamp_ns = frame.stamp_ns
            return frame

    def reset(self) -> None:
        with self._lock:
            self._frame = None
            self._taken_stamp_ns = -1

    def peek(self) -> StampedFrame[FrameT] | None:
        with self._lock:
            return self._frame


@dataclass
class CameraLane(Generic[FrameT]):
    """
    One camera's share of the scheduler.

    Its newest-frame slot, rate budget, publish watermark and counters. Cameras never share a slot
    or a watermark, so one camera's stamps (or clock) can neither supersede nor hold back another's
    frames.
    """

    camera: str
    slot: LatestFrameSlot[FrameT] = field(default_factory=LatestFrameSlot)
    # Token bucket for rate_hz (per camera): tokens accrue at rate_hz up to RATE_BURST.
    tokens: float = RATE_BURST
    tokens_at_s: float | None = None  # loop time the tokens were counted at
    served_at_s: float = -math.inf  # loop time of the last dispatch (least recently served first)
    last_published_stamp_ns: int = -1
    drops: Counter[str] = field(default_factory=Counter)
    published: int = 0
    in_flight: int = 0

    def refill(self, rate_hz: float, now_s: float) -> float:
        """Count the tokens accrued until ``now_s``; seconds until one is there (0: now)."""
        if rate_hz <= 0:
            # Unlimited: keep the bucket full, so that a later rate starts from a burst rather
            # than from the debt of every dispatch made without a limit.
            self.tokens, self.tokens_at_s = RATE_BURST, now_s
            return 0.0
        if self.tokens_at_s is not None:
            self.tokens = min(RATE_BURST, self.tokens + (now_s - self.tokens_at_s) * rate_hz)
        self.tokens_at_s = now_s
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / rate_hz

    def drop_counts(self) -> dict[str, int]:
        counts = dict(self.drops)
        counts[DROP_SUPERSEDED] = self.slot.superseded
        return counts


class FrameScheduler(Generic[FrameT, ResultT]):
    """
    Runs ``process`` on the newest frame of each camera with bounded staleness.

    See the module docstring.

    Several cameras share the in-flight slots (so the engine can batch their requests): each
    camera has its own newest-frame slot, rate budget and publish watermark, and a free slot
    goes to the camera that was served least recently among those with a frame waiting and
    a rate token. Cameras that always have a frame are therefore served in turn (round-robin),
    and a slow camera's frame is taken at the next free slot, ahead of faster cameras served
    since: no camera starves, and each camera's staleness is bounded by its own frame period
    plus about ``ceil(cameras / max_in_flight)`` engine latencies.

    :param process: coroutine turning a frame into a result (decode, engine call, lifting).
    :param publish: called with each result that is newer than every result published before
        for the same camera.
    :param config: rates and limits (``rate_hz`` is per camera; ``max_in_flight`` is shared).
    :param clock_ns: current time in the frames' stamp clock (ROS time; sim time in replays).
    :param on_error: called with a frame whose processing raised or timed out.
    :param cameras: the camera keys ``submit`` accepts; the default is one unnamed camera.
    """

    def __init__(
        self,
        process: Callable[[StampedFrame[FrameT]], Awaitable[ResultT]],
        publish: Callable[[StampedFrame[FrameT], ResultT], None],
        config: SchedulerConfig,
        clock_ns: Callable[[], int] = time.time_ns,
        on_error: Callable[[StampedFrame[FrameT], BaseException], None] | None = None,
        cameras: Sequence[str] = ('',),
    ) -> None:
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f'cameras must be distinct and at least one, got {list(cameras)}')
        self._process = process
        self._publish = publish
        self._config = config
        self._clock_ns = clock_ns
        self._on_error = on_error
        self.lanes: dict[str, CameraLane[FrameT]] = {name: CameraLane(name) for name in cameras}
        self._stream_slots = asyncio.Semaphore(config.max_in_flight)
        self._priority_slots = asyncio.Semaphore(config.priority_in_flight)
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.priority_waiting = 0

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.lanes)

    @property
    def slot(self) -> LatestFrameSlot[FrameT]:
        """Return the first camera's newest-frame slot: with a single camera, the only one."""
        return next(iter(self.lanes.values())).slot

    @property
    def drops(self) -> Counter[str]:
        """Return the first camera's drop counter, superseded frames aside (see drop_counts)."""
        return next(iter(self.lanes.values())).drops

    @property
    def published(self) -> int:
        """Results published, all cameras."""
        return sum(lane.published for lane in self.lanes.values())

    @property
    def in_flight(self) -> int:
        """Stream requests running now, all cameras."""
        return sum(lane.in_flight for lane in self.lanes.values())

    def queue_depth(self, camera: str | None = None) -> int:
        """Frames waiting in the slots (of one camera, or of all)."""
        lanes = self.lanes.values() if camera is None else (self._lane(camera),)
        return sum(lane.slot.peek() is not None for lane in lanes)

    def _lane(self, camera: str) -> CameraLane[FrameT]:
        lane = self.lanes.get(camera)
        if lane is None:
            raise KeyError(f'unknown camera {camera!r}; the scheduler has {list(self.lanes)}')
        return lane

    def reset_watermarks(self, camera: str | None = None) -> None:
        """
        Forget the newest stamps seen, of one camera or of all.

        For when time jumped backwards: a looping bag, a sim reset.
        """
        for lane in self.lanes.values() if camera is None else (self._lane(camera),):
            lane.slot.reset()
            lane.last_published_stamp_ns = -1

    def reconfigure(self, config: SchedulerConfig) -> None:
        """Apply a new rate and max age at once (in-flight limits are fixed at construction)."""
        self._config = config

    @property
    def last_published_stamp_ns(self) -> int:
        """Return the first camera's newest published stamp (the only one with a single camera)."""
        return next(iter(self.lanes.values())).last_published_stamp_ns

    def submit(
        self,
        stamp_ns: int,
        frame: FrameT,
        loop: asyncio.AbstractEventLoop | None,
        reference_ns: int | None = None,
        camera: str = '',
    ) -> None:
        """
        Store a new frame of ``camera`` (any thread) and wake the worker on ``loop``.

        ``reference_ns`` replaces the stamp as the origin of its age (see StampedFrame).
        """
        lane = self._lane(camera)
        if lane.slot.put(stamp_ns, frame, self._clock_ns(), reference_ns) and loop is not None:
            loop.call_soon_threadsafe(self._wakeup.set)

    def drop_counts(self, camera: str | None = None) -> dict[str, int]:
        """Return the drops by reason, of one camera or summed over all."""
        if camera is not None:
            return self._lane(camera).drop_counts()
        total: Counter[str] = Counter()
        for lane in self.lanes.values():
            total.update(lane.drop_counts())
        return dict(total)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch loop; returns when ``stop`` is set (in-flight requests are awaited)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            # Cleared before looking, in the same step: a frame stored after this sets it again.
            self._wakeup.clear()
            lane, wait_s = self._next_lane(loop.time())
            if lane is None:
                # Nothing to send: wait for a frame, or for a waiting camera's rate token.
                await _wait_any(stop, self._wakeup, 0.5 if wait_s is None else wait_s)
                continue
            await self._stream_slots.acquire()
            # The wait for a slot may have been long: choose again among what is there now.
            lane, _ = self._next_lane(loop.time()) if not stop.is_set() else (None, None)
            frame = lane.slot.take() if lane is not None else None
            if lane is None or frame is None:
                self._stream_slots.release()
                continue
            if frame.age_s(self._clock_ns()) > self._config.max_age_s:
                lane.drops[DROP_STALE] += 1  # not served: its next frame keeps its turn
                self._stream_slots.release()
                continue
            lane.served_at_s = loop.time()
            lane.tokens -= 1.0
            frame = replace(
                frame,
                taken_ns=self._clock_ns(),
                deadline=Deadline.after(self._config.timeout_s),
                camera=lane.camera,
            )
            task = asyncio.ensure_future(self._run_one(lane, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_lane(self, now_s: float) -> tuple[CameraLane[FrameT] | None, float | None]:
        """
        Return the camera to serve next.

        Of those with a frame waiting and a rate token, the one served least recently (ties: the
        order of ``cameras``). Else (None, seconds until a waiting camera gets a token), or (None,
        None) when no frame waits.

        ``rate_hz`` is a token bucket of RATE_BURST tokens rather than a fixed gap since the
        last dispatch: a frame that arrives late (a repaired sample) right before the next one
        must not make that one wait a whole period, nor be superseded by it, while the
        long-run rate stays bounded.
        """
        chosen: CameraLane[FrameT] | None = None
        token_wait_s: float | None = None
        for lane in self.lanes.values():
            if lane.slot.peek() is None:
                continue
            wait_s = lane.refill(self._config.rate_hz, now_s)
            if wait_s > 0:
                token_wait_s = wait_s if token_wait_s is None else min(token_wait_s, wait_s)
            elif chosen is None or lane.served_at_s < chosen.served_at_s:
                chosen = lane
        return (chosen, None) if chosen is not None else (None, token_wait_s)

    async def _run_one(self, lane: CameraLane[FrameT], frame: StampedFrame[FrameT]) -> None:
        lane.in_flight += 1
        try:
            budget_s = frame.deadline.remaining_s() if frame.deadline else self._config.timeout_s
            result = await asyncio.wait_for(self._process(frame), budget_s)
        except asyncio.TimeoutError as error:
            lane.drops[DROP_TIMEOUT] += 1
            if self._on_error is not None:
                self._on_error(frame, error)
            return
        except Exception as error:  # noqa: BLE001 - reported, never kills the worker
            lane.drops[DROP_FAILED] += 1
            if self._on_error is not None:
                self._on_error(frame, error)
            return
        finally:
            lane.in_flight -= 1
            self._stream_slots.release()
        if frame.stamp_ns <= lane.last_published_stamp_ns:
            lane.drops[DROP_OUT_OF_ORDER] += 1
            return
        lane.last_published_stamp_ns = frame.stamp_ns
        lane.published += 1
        self._publish(frame, result)

    async def run_priority(
        self, work: Callable[[], Awaitable[T]], deadline: Deadline | None = None
    ) -> T:
        """
        Run on-demand work (a service call) in the priority lane.

        ``deadline`` (default: ``timeout_s`` from now) bounds the wait for a priority slot and
        the work together; the work should pass the same deadline to its engine calls.
        Raises ``asyncio.TimeoutError`` when it passes.
        """
        deadline = deadline or Deadline.after(self._config.timeout_s)
        self.priority_waiting += 1
        try:
            acquired = await acquire_before(self._priority_slots, deadline.remaining_s())
        finally:
            self.priority_waiting -= 1
        if not acquired:
            raise asyncio.TimeoutError('the deadline passed while waiting for a priority slot')
        try:
            return await asyncio.wait_for(work(), deadline.remaining_s())
        finally:
            self._priority_slots.release()


async def acquire_before(semaphore: asyncio.Semaphore, timeout_s: float) -> bool:
    """
    Acquire within ``timeout_s``; False on timeout.

    Not ``asyncio.wait_for``, which can lose an acquisition won just as the timeout fires (before
    Python 3.12) and leak the slot. Shared by the scheduler's priority lane and the openai
    engine's concurrency limit.
    """
    acquiring: asyncio.Future[bool] = asyncio.ensure_future(semaphore.acquire())
    try:
        done, _ = await asyncio.wait({acquiring}, timeout=max(timeout_s, 0.0))
    except asyncio.CancelledError:
        _abandon(acquiring, semaphore)
        raise
    if done:
        return True
    _abandon(acquiring, semaphore)
    return False


def _abandon(acquiring: asyncio.Future[bool], semaphore: asyncio.Semaphore) -> None:
    """Give back an acquisition that completes after its waiter stopped waiting."""
    if acquiring.done():
        if not acquiring.cancelled():
            semaphore.release()
        return
    acquiring.cancel()
    acquiring.add_done_callback(lambda done: None if done.cancelled() else semaphore.release())


async def _wait_any(stop: asyncio.Event, event: asyncio.Event | None, timeout_s: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if event is not None:
        waiters.append(asyncio.ensure_future(event.wait()))
    _, pending = await asyncio.wait(
        waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
    )
    for waiter in pending:
        waiter.cancel()
