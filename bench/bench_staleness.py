# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Staleness and memory of published scenes under a slow engine: the node's scheduler vs a FIFO.

A camera delivers 10,000 frames at 30 Hz to (a) core.scheduling.FrameScheduler, exactly as the
node drives it (newest-frame slot, ``max_in_flight`` 1, the node's default ``max_frame_age_s``
1 s and ``request_timeout_s`` 30 s, ``rate_hz`` 0 so that only the engine limits the rate), and
(b) a naive FIFO (an unbounded ``asyncio.Queue`` processed in order). The "engine" takes L
seconds per frame, L in {50 ms, 200 ms, 1 s, 2 s}. Age = publish time - frame stamp.

Time is virtual: the asyncio loop's clock only advances when every task is waiting, by exactly
the time to the next timer, so 10,000 frames (333 s of camera time) take about a second of wall
time per run, and every number is deterministic. Each frame carries a 4 KiB payload so that
memory held by queued frames shows up in tracemalloc; the table also projects the FIFO's queue
to real 640x480 RGB-D frames (1.46 MiB each).

Target: scheduler p95 age <= L + one frame period + 50 ms, and memory flat (traced Python memory
at the end minus at 10 % of the run). Ratios are against the FIFO measured in the same run.

    .venv/bin/python bench/bench_staleness.py [--frames 10000] [--fps 30]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
import resource
import selectors
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from spatial_vlm_ros.core.scheduling import FrameScheduler, SchedulerConfig, StampedFrame

LATENCIES_S = (0.05, 0.2, 1.0, 2.0)
PAYLOAD_BYTES = 4096
RGBD_640X480_BYTES = 640 * 480 * 3 + 640 * 480 * 2
SLACK_S = 0.050
FLAT_BYTES = 64 * 2**10  # 'flat': less than 16 frames' payloads over 9,000 frames


class _VirtualSelector(selectors.DefaultSelector):
    """Never sleeps: polls the real selector, then jumps the virtual clock to the next timer."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if not events and timeout is not None and timeout > 0:
            self._clock.now_s += timeout
        return events


@dataclass
class VirtualClock:
    now_s: float = 1000.0


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual (see :class:`_VirtualSelector`)."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        super().__init__(_VirtualSelector(self.clock))

    def time(self) -> float:
        return self.clock.now_s


@dataclass
class Outcome:
    """What one run published while the camera ran (results finishing after it are ignored)."""

    name: str
    latency_s: float
    frames: int
    # Preallocated, so recording an age allocates nothing that tracemalloc would count.
    _ages_s: np.ndarray = field(init=False)
    processed: int = 0
    camera_running: bool = True
    dropped: dict[str, int] = field(default_factory=dict)
    backlog_at_end: int = 0
    traced_growth_bytes: int = 0
    traced_at_warmup_bytes: int = 0

    def __post_init__(self) -> None:
        self._ages_s = np.full(self.frames, np.nan)

    def record(self, age_s: float) -> None:
        if self.camera_running:
            self._ages_s[self.processed] = age_s
            self.processed += 1

    @property
    def ages_s(self) -> np.ndarray:
        return self._ages_s[: self.processed]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.ages_s, q)) * 1e3 if self.processed else float('nan')


def _payload(index: int) -> bytes:
    return index.to_bytes(8, 'little') * (PAYLOAD_BYTES // 8)


async def _camera(
    loop: asyncio.AbstractEventLoop,
    frames: int,
    period_s: float,
    deliver: Callable[[int, bytes], None],
    at_warmup: Callable[[], None],
) -> None:
    start = loop.time()
    for index in range(frames):
        await asyncio.sleep(max(0.0, start + index * period_s - loop.time()))
        if index == frames // 10:
            at_warmup()
        deliver(int(loop.time() * 1e9), _payload(index))


def _traced_bytes() -> int:
    return tracemalloc.get_traced_memory()[0]


async def run_scheduler(latency_s: float, frames: int, period_s: float) -> Outcome:
    loop = asyncio.get_running_loop()
    outcome = Outcome('latest-frame scheduler', latency_s, frames)

    async def process(frame: StampedFrame[bytes]) -> int:
        await asyncio.sleep(latency_s)
        return len(frame.frame)

    def publish(frame: StampedFrame[bytes], result: int) -> None:
        outcome.record(loop.time() - frame.stamp_ns / 1e9)

    scheduler: FrameScheduler[bytes, int] = FrameScheduler(
        process,
        publish,
        SchedulerConfig(rate_hz=0.0, max_in_flight=1, max_age_s=1.0, timeout_s=30.0),
        clock_ns=lambda: int(loop.time() * 1e9),
    )
    stop = asyncio.Event()
    worker = asyncio.ensure_future(scheduler.run(stop))

    def warmup() -> None:
        outcome.traced_at_warmup_bytes = _traced_bytes()

    def deliver(stamp_ns: int, payload: bytes) -> None:
        scheduler.submit(stamp_ns, payload, loop)

    await _camera(loop, frames, period_s, deliver, warmup)
    outcome.camera_running = False
    outcome.traced_growth_bytes = _traced_bytes() - outcome.traced_at_warmup_bytes
    outcome.backlog_at_end = int(scheduler.slot.peek() is not None)
    stop.set()
    await worker
    outcome.dropped = {k: v for k, v in scheduler.drop_counts().items() if v}
    return outcome


async def run_fifo(latency_s: float, frames: int, period_s: float) -> Outcome:
    loop = asyncio.get_running_loop()
    outcome = Outcome('naive FIFO queue', latency_s, frames)
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

    async def worker() -> None:
        while True:
            stamp_ns, _payload_bytes = await queue.get()
            await asyncio.sleep(latency_s)
            outcome.record(loop.time() - stamp_ns / 1e9)

    task = asyncio.ensure_future(worker())

    def warmup() -> None:
        outcome.traced_at_warmup_bytes = _traced_bytes()

    def deliver(stamp_ns: int, payload: bytes) -> None:
        queue.put_nowait((stamp_ns, payload))

    await _camera(loop, frames, period_s, deliver, warmup)
    outcome.camera_running = False
    outcome.traced_growth_bytes = _traced_bytes() - outcome.traced_at_warmup_bytes
    outcome.backlog_at_end = queue.qsize()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return outcome


def simulate(kind: str, latency_s: float, frames: int, period_s: float) -> Outcome:
    runner = run_scheduler if kind == 'scheduler' else run_fifo
    loop = VirtualTimeLoop()
    tracemalloc.start()
    try:
        return loop.run_until_complete(runner(latency_s, frames, period_s))
    finally:
        tracemalloc.stop()
        loop.close()


def _statm_rss_mib() -> float:
    try:
        with open('/proc/self/statm') as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return float('nan')
    return pages * resource.getpagesize() / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=10_000)
    parser.add_argument('--fps', type=float, default=30.0)
    args = parser.parse_args()
    period_s = 1.0 / args.fps
    rss_before = _statm_rss_mib()
    started = time.perf_counter()
    print(
        f'{args.frames} frames at {args.fps:g} Hz ({args.frames * period_s:.0f} s of camera '
        f'time, virtual clock), {PAYLOAD_BYTES} B payload per frame; age = publish - stamp'
    )
    header = (
        f'{"engine L":>8} {"mode":<24} {"published":>9} {"p50 ms":>9} {"p95 ms":>9} '
        f'{"max ms":>9} {"p95/FIFO":>9} {"backlog":>8} {"mem growth":>11} {"as RGB-D":>10}'
    )
    print(header)
    failures = []
    for latency_s in LATENCIES_S:
        scheduled = simulate('scheduler', latency_s, args.frames, period_s)
        fifo = simulate('fifo', latency_s, args.frames, period_s)
        for outcome in (scheduled, fifo):
            ratio = outcome.percentile_ms(95) / fifo.percentile_ms(95)
            projected_mib = outcome.backlog_at_end * RGBD_640X480_BYTES / 2**20
            print(
                f'{latency_s * 1e3:>6.0f}ms {outcome.name:<24} {outcome.processed:>9d} '
                f'{outcome.percentile_ms(50):>9.1f} {outcome.percentile_ms(95):>9.1f} '
                f'{outcome.percentile_ms(100):>9.1f} {ratio:>9.4f} '
                f'{outcome.backlog_at_end:>8d} {outcome.traced_growth_bytes / 2**10:>9.0f}KiB '
                f'{projected_mib:>8.0f}MiB'
            )
        bound_ms = (latency_s + period_s + SLACK_S) * 1e3
        p95 = scheduled.percentile_ms(95)
        flat = scheduled.traced_growth_bytes < FLAT_BYTES
        verdict = 'ok' if p95 <= bound_ms and flat else 'FAIL'
        if verdict != 'ok':
            failures.append(latency_s)
        print(
            f'{"":>8} scheduler p95 {p95:.1f} ms vs bound L + period + 50 ms = {bound_ms:.1f} ms; '
            f'memory growth {scheduled.traced_growth_bytes / 2**10:.0f} KiB; drops '
            f'{scheduled.dropped or "none"} -> {verdict}'
        )
    print(
        f'wall time {time.perf_counter() - started:.1f} s; process RSS {rss_before:.0f} MiB '
        f'before, {_statm_rss_mib():.0f} MiB after (includes the FIFO runs)'
    )
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
