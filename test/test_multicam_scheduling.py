# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Several cameras on one scheduler (one engine): fairness and per-camera staleness.

Deterministic: the asyncio loop runs on a virtual clock (bench/bench_staleness.py's
VirtualTimeLoop: time jumps to the next timer whenever every task waits), so tens of seconds of
camera time take a fraction of a second and every count below is exact. The "engine" takes L
per request whatever else is in flight (a batching engine: concurrent requests share a batch).

The control for each fairness check is the same cameras fed into ONE newest-frame slot, which is
what a node that simply forwarded every camera into the single-camera scheduler would do: the
fast camera supersedes the slow one's frames, and a camera whose stamps run behind is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import math

import numpy as np
import pytest

from bench.bench_staleness import VirtualTimeLoop
from spatial_vlm_ros.core.scheduling import (
    DROP_SUPERSEDED,
    FrameScheduler,
    SchedulerConfig,
    StampedFrame,
)

SLACK_S = 0.05


@dataclass(frozen=True)
class Camera:
    name: str
    period_s: float
    phase_s: float = 0.0  # first frame at this time after the start
    stamp_offset_s: float = 0.0  # its clock runs this far ahead (negative: behind)


@dataclass
class Published:
    """What one camera got: publish times and ages (publish time - stamp, in its clock)."""

    start_s: float = 0.0
    end_s: float = 0.0
    frames: int = 0
    times_s: list[float] = field(default_factory=list)
    ages_s: list[float] = field(default_factory=list)

    def p95_age_s(self) -> float:
        return float(np.percentile(self.ages_s, 95)) if self.ages_s else math.inf

    def max_gap_s(self) -> float:
        """Longest time without a scene of this camera, from start to end of the run."""
        edges = [self.start_s, *self.times_s, self.end_s]
        return max(b - a for a, b in zip(edges, edges[1:], strict=False))


def simulate(
    cameras: list[Camera],
    *,
    latency_s: float,
    max_in_flight: int,
    seconds: float,
    rate_hz: float = 0.0,
    shared_slot: bool = False,
) -> tuple[dict[str, Published], dict[str, dict[str, int]]]:
    """Run the cameras into one FrameScheduler for ``seconds`` of virtual time.

    ``shared_slot``: the control, every camera submits into one slot (camera key '').
    Returns what each camera got and the per-camera drop counts.
    """
    loop = VirtualTimeLoop()

    async def scenario() -> tuple[dict[str, Published], dict[str, dict[str, int]]]:
        start_s = loop.time()
        results = {camera.name: Published(start_s, start_s + seconds) for camera in cameras}
        offsets_ns = {camera.name: int(camera.stamp_offset_s * 1e9) for camera in cameras}

        async def process(frame: StampedFrame[str]) -> str:
            await asyncio.sleep(latency_s)
            return frame.frame

        def publish(frame: StampedFrame[str], name: str) -> None:
            if loop.time() - start_s > seconds:
                return  # results after the cameras stopped are not part of the run
            clock_s = loop.time() + offsets_ns[name] / 1e9
            results[name].times_s.append(loop.time())
            results[name].ages_s.append(clock_s - frame.stamp_ns / 1e9)

        keys = [''] if shared_slot else [camera.name for camera in cameras]
        scheduler: FrameScheduler[str, str] = FrameScheduler(
            process,
            publish,
            SchedulerConfig(rate_hz=rate_hz, max_in_flight=max_in_flight, max_age_s=5.0),
            clock_ns=lambda: int(loop.time() * 1e9),
            cameras=keys,
        )
        stop = asyncio.Event()
        worker = asyncio.ensure_future(scheduler.run(stop))

        async def run_camera(camera: Camera) -> None:
            index = 0
            while True:
                due_s = start_s + camera.phase_s + index * camera.period_s
                if due_s - start_s > seconds:
                    return
                await asyncio.sleep(max(0.0, due_s - loop.time()))
                stamp_ns = int(loop.time() * 1e9) + offsets_ns[camera.name]
                key = '' if shared_slot else camera.name
                # With a clock offset, age is measured from arrival (as the node does).
                reference_ns = int(loop.time() * 1e9) if camera.stamp_offset_s else None
                scheduler.submit(stamp_ns, camera.name, loop, reference_ns, camera=key)
                results[camera.name].frames += 1
                index += 1

        await asyncio.gather(*(run_camera(camera) for camera in cameras))
        stop.set()
        await worker
        drops = {key: scheduler.drop_counts(key) for key in keys}
        return results, drops

    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


def staleness_bound_s(camera: Camera, cameras: int, max_in_flight: int, latency_s: float) -> float:
    """A camera's frame waits at most one of its periods (the newest-frame slot), then at most
    ceil(cameras / max_in_flight) - 1 turns of the others, then its own engine call."""
    return camera.period_s + math.ceil(cameras / max_in_flight) * latency_s + SLACK_S


@pytest.mark.parametrize('max_in_flight', [1, 2])
def test_a_fast_and_a_slow_camera_both_get_scenes_with_bounded_staleness(
    max_in_flight: int,
) -> None:
    """30 Hz and 2 Hz cameras, an engine taking 200 ms: the slow camera gets nearly every
    frame through, the fast one the rest of the engine's capacity; neither camera goes
    longer than its bound without a scene, and each one's p95 age stays within its bound."""
    latency_s, seconds = 0.2, 30.0
    fast, slow = Camera('fast', 1 / 30), Camera('slow', 0.5, phase_s=0.013)
    results, drops = simulate(
        [fast, slow], latency_s=latency_s, max_in_flight=max_in_flight, seconds=seconds
    )
    capacity = seconds / latency_s * max_in_flight
    assert results['slow'].frames == 60
    assert len(results['slow'].ages_s) >= 0.95 * results['slow'].frames
    assert len(results['fast'].ages_s) >= capacity - 60 - 5  # the rest of the engine
    for camera in (fast, slow):
        bound_s = staleness_bound_s(camera, 2, max_in_flight, latency_s)
        got = results[camera.name]
        assert got.p95_age_s() <= bound_s, (camera.name, got.p95_age_s(), bound_s)
        assert max(got.ages_s) <= bound_s, (camera.name, max(got.ages_s), bound_s)
        assert got.max_gap_s() <= bound_s + camera.period_s
    assert drops['slow'][DROP_SUPERSEDED] <= 3  # its frames are served, not overwritten

    # The control: both cameras in one newest-frame slot. The fast camera's frames supersede
    # the slow one's almost always, so the slow camera starves.
    shared, _ = simulate(
        [fast, slow],
        latency_s=latency_s,
        max_in_flight=max_in_flight,
        seconds=seconds,
        shared_slot=True,
    )
    assert len(shared['slow'].ages_s) < 0.25 * shared['slow'].frames
    assert shared['slow'].max_gap_s() > 2.0


def test_four_busy_cameras_are_served_in_turn() -> None:
    """Four 30 Hz cameras, two in-flight slots, 200 ms per request: each camera gets a quarter
    of the engine (round-robin), and its staleness stays within period + 2 engine calls."""
    latency_s, seconds, max_in_flight = 0.2, 20.0, 2
    cameras = [Camera(f'cam{index}', 1 / 30, phase_s=0.004 * index) for index in range(4)]
    results, _ = simulate(
        cameras, latency_s=latency_s, max_in_flight=max_in_flight, seconds=seconds
    )
    counts = [len(results[camera.name].ages_s) for camera in cameras]
    capacity = int(seconds / latency_s * max_in_flight)
    assert sum(counts) >= capacity - max_in_flight * 2
    assert max(counts) - min(counts) <= 1, counts
    for camera in cameras:
        got = results[camera.name]
        bound_s = staleness_bound_s(camera, 4, max_in_flight, latency_s)
        assert max(got.ages_s) <= bound_s, (camera.name, max(got.ages_s), bound_s)
        assert got.max_gap_s() <= bound_s


def test_a_camera_whose_clock_runs_behind_is_not_refused() -> None:
    """Each camera has its own newest-stamp watermark: a camera whose stamps run 3 s behind
    another's is served like it (ages from arrival, as the node does for an offset clock).
    In one shared slot its every frame is older than the other camera's and is refused."""
    latency_s, seconds = 0.1, 10.0
    ahead, behind = Camera('ahead', 0.1), Camera('behind', 0.1, phase_s=0.05, stamp_offset_s=-3)
    results, _ = simulate([ahead, behind], latency_s=latency_s, max_in_flight=2, seconds=seconds)
    for name in ('ahead', 'behind'):
        assert len(results[name].ages_s) >= 0.9 * results[name].frames, name
    shared, _ = simulate(
        [ahead, behind], latency_s=latency_s, max_in_flight=2, seconds=seconds, shared_slot=True
    )
    assert shared['behind'].ages_s == []


def test_rate_hz_is_per_camera() -> None:
    """rate_hz 2 with three 30 Hz cameras and a fast engine: each camera gets 2 scenes/s (a
    burst of 2 at the start), not the three sharing 2/s."""
    seconds = 10.0
    cameras = [Camera(f'cam{index}', 1 / 30, phase_s=0.001 * index) for index in range(3)]
    results, _ = simulate(cameras, latency_s=0.01, max_in_flight=3, seconds=seconds, rate_hz=2.0)
    for camera in cameras:
        published = len(results[camera.name].ages_s)
        assert 2.0 * seconds <= published <= 2.0 * seconds + 2, (camera.name, published)


def test_a_rate_set_after_running_unlimited_starts_from_a_burst() -> None:
    """rate_hz 0 (unlimited) for 200 frames, then rate_hz 5: the next frame is sent at once.
    Before, every unlimited dispatch still took a token, and the debt (~200 tokens) made the
    stream wait ~40 s after the rate was set. Real clock: the old bucket used time.monotonic."""

    async def scenario() -> list[int]:
        loop = asyncio.get_running_loop()
        sent: list[int] = []

        async def process(frame: StampedFrame[int]) -> int:
            sent.append(frame.frame)
            return frame.frame

        config = SchedulerConfig(rate_hz=0.0, max_age_s=5.0)
        scheduler: FrameScheduler[int, int] = FrameScheduler(
            process, lambda f, r: None, config, clock_ns=lambda: int(loop.time() * 1e9)
        )
        stop = asyncio.Event()
        worker = asyncio.ensure_future(scheduler.run(stop))
        for index in range(200):
            scheduler.submit(int(loop.time() * 1e9), index, loop)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        scheduler.reconfigure(SchedulerConfig(rate_hz=5.0, max_age_s=5.0))
        scheduler.submit(int(loop.time() * 1e9), 1000, loop)
        await asyncio.sleep(0.5)
        stop.set()
        await worker
        return sent

    sent = asyncio.run(scenario())
    assert len(sent) >= 20  # unlimited: the stream kept up with most frames
    assert sent[-1] == 1000


def test_cameras_have_their_own_counters_and_unknown_cameras_are_refused() -> None:
    async def scenario() -> FrameScheduler[int, int]:
        loop = asyncio.get_running_loop()

        async def process(frame: StampedFrame[int]) -> int:
            await asyncio.sleep(0.05)
            return frame.frame

        scheduler: FrameScheduler[int, int] = FrameScheduler(
            process,
            lambda f, r: None,
            SchedulerConfig(rate_hz=0.0, max_in_flight=2, max_age_s=5.0),
            clock_ns=lambda: int(loop.time() * 1e9),
            cameras=('left', 'right'),
        )
        stop = asyncio.Event()
        worker = asyncio.ensure_future(scheduler.run(stop))
        for index in range(10):  # 'left' floods, 'right' sends twice
            scheduler.submit(int(loop.time() * 1e9), index, loop, camera='left')
            if index in (0, 5):
                scheduler.submit(int(loop.time() * 1e9), index, loop, camera='right')
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        stop.set()
        await worker
        with pytest.raises(KeyError, match='unknown camera'):
            scheduler.submit(1, 1, loop, camera='rear')
        return scheduler

    scheduler = asyncio.run(scenario())
    assert scheduler.lanes['right'].published == 2
    assert scheduler.drop_counts('right')[DROP_SUPERSEDED] == 0
    assert scheduler.drop_counts('left')[DROP_SUPERSEDED] > 0
    assert scheduler.published == scheduler.lanes['left'].published + 2
    assert (
        scheduler.drop_counts()[DROP_SUPERSEDED] == scheduler.drop_counts('left')[DROP_SUPERSEDED]
    )
    with pytest.raises(ValueError, match='distinct'):
        FrameScheduler(lambda f: None, lambda f, r: None, SchedulerConfig(), cameras=('a', 'a'))
