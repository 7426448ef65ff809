# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One deadline per request: created where the request starts, bounding the wait for a slot and
reaching every engine call as EngineRequest.timeout_s."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import time

import pytest

from spatial_vlm_ros.core.pairing import RgbdSet, Stamped
from spatial_vlm_ros.core.scheduling import Deadline, FrameScheduler, SchedulerConfig
from spatial_vlm_ros.engines.base import EngineRequest, EngineResponse
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline

from test_node_dds import ANSWER_TEXT, RECORDED_TEXT, make_messages

pytestmark = pytest.mark.ros  # rclpy messages as the pipeline's input

STAMP = 1_700_000_000_000_000_000


class ObservedRecordedEngine(RecordedEngine):
    """The real recorded engine, keeping the requests it was given."""

    def __init__(self, path: Path) -> None:
        super().__init__(path=path)
        self.requests: list[EngineRequest] = []

    async def generate(self, request: EngineRequest) -> EngineResponse:
        self.requests.append(request)
        return await super().generate(request)


@pytest.fixture()
def engine(tmp_path: Path) -> ObservedRecordedEngine:
    path = tmp_path / 'recorded.jsonl'
    path.write_text(
        json.dumps({'stamp_ns': STAMP, 'text': RECORDED_TEXT})
        + '\n'
        + json.dumps({'stamp_ns': STAMP, 'task': 'question', 'text': ANSWER_TEXT})
        + '\n'
    )
    return ObservedRecordedEngine(path)


def paired() -> RgbdSet:
    rgb, depth, info = make_messages(STAMP)
    return RgbdSet(Stamped(STAMP, rgb), Stamped(STAMP, depth), Stamped(STAMP, info))


def test_both_engine_calls_of_a_query_get_what_is_left_of_one_deadline(engine) -> None:
    pipeline = SpatialPipeline(engine, '', PipelineConfig())

    async def scenario() -> None:
        await pipeline.start()
        deadline = Deadline.after(20.0)
        snapshot = await pipeline.snapshot(paired(), deadline=deadline)
        answer = await pipeline.answer(snapshot, 'Which is closer?', deadline=deadline)
        assert answer.success, answer.message
        left_after = deadline.remaining_s()
        await pipeline.shutdown()
        ground, question = engine.requests
        assert ground.task.value == 'ground' and question.task.value == 'question'
        # Each call gets the remaining budget, not a fresh 20 s or the engine's 60 s default.
        assert 0 < question.timeout_s <= ground.timeout_s <= 20.0
        assert question.timeout_s >= left_after

    asyncio.run(scenario())


def test_a_frame_without_a_deadline_keeps_the_engine_default(engine) -> None:
    pipeline = SpatialPipeline(engine, '', PipelineConfig())
    asyncio.run(pipeline.perceive_paired(paired()))
    assert engine.requests[0].timeout_s is None


def test_stream_frames_carry_their_deadline_to_the_process() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        seen: list[float] = []

        async def process(frame) -> int:
            seen.append(frame.deadline.remaining_s())
            return frame.frame

        scheduler: FrameScheduler[int, int] = FrameScheduler(
            process, lambda f, r: None, SchedulerConfig(rate_hz=0.0, timeout_s=7.0)
        )
        stop = asyncio.Event()
        worker = asyncio.ensure_future(scheduler.run(stop))
        scheduler.submit(time.time_ns(), 1, loop)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await worker
        return seen

    (remaining,) = asyncio.run(scenario())
    assert 0 < remaining <= 7.0


def test_waiting_for_the_priority_slot_counts_against_the_deadline() -> None:
    async def scenario() -> tuple[int, int]:
        scheduler: FrameScheduler[int, int] = FrameScheduler(
            lambda f: asyncio.sleep(0, f.frame), lambda f, r: None, SchedulerConfig()
        )
        release = asyncio.Event()

        async def long_work() -> int:
            await release.wait()
            return 1

        async def quick_work() -> int:
            return 2

        first = asyncio.ensure_future(scheduler.run_priority(long_work, Deadline.after(30.0)))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await scheduler.run_priority(quick_work, Deadline.after(0.2))
        release.set()
        # The timed-out waiter did not keep the slot: the next call gets it.
        second = await scheduler.run_priority(quick_work, Deadline.after(5.0))
        return await first, second

    assert asyncio.run(scenario()) == (1, 2)
