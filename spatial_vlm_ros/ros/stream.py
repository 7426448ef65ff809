# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The node's scene stream.

Paired frames -> the scheduler on the worker loop -> the pipeline -> published scenes, with the
per-stage timings that explain each scene's latency.

The scheduler runs on the worker (``ros/worker.py``); subscription callbacks only call
:meth:`SceneStream.on_paired`, which stores the newest frame. Service requests run in the same
scheduler's priority lane through :meth:`SceneStream.run_priority`, awaited without holding an
executor thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import time
from typing import Any

from spatial_vlm_ros.core.pairing import RgbdSet
from spatial_vlm_ros.core.scheduling import Deadline, FrameScheduler, SchedulerConfig, StampedFrame
from spatial_vlm_ros.core.types import Scene, SpatialVlmError, StageTimings
from spatial_vlm_ros.engines.base import EngineError
from spatial_vlm_ros.pipeline import SpatialPipeline
from spatial_vlm_ros.ros.diagnostics import STAGES, DiagnosticsReporter, input_stages_ms
from spatial_vlm_ros.ros.services import SnapshotBuffer
from spatial_vlm_ros.ros.worker import WorkerLoop

STOP_TIMEOUT_S = 10.0


class SceneStream:
    """
    Runs the scheduler on the worker loop and publishes what it produces.

    :param worker: the asyncio worker thread.
    :param reporter: records scenes, stage timings, engine outcomes and errors.
    :param snapshots: keeps paired frames and scenes for the services.
    :param pipeline: the current pipeline (None once released).
    :param clock_offset_ns: a camera's (by name) steady clock offset from the node's (None:
        none).
    :param transforms: the TF source (None without tf2_ros).
    :param publish: puts one scene on its camera's output topics.
    :param now_ns: the node clock.
    """

    def __init__(
        self,
        worker: WorkerLoop,
        reporter: DiagnosticsReporter,
        snapshots: SnapshotBuffer,
        *,
        pipeline: Callable[[], SpatialPipeline | None],
        clock_offset_ns: Callable[[str], int | None],
        transforms: Callable[[], Any],
        publish: Callable[[RgbdSet, Scene], None],
        now_ns: Callable[[], int],
    ) -> None:
        self._worker = worker
        self._reporter = reporter
        self._snapshots = snapshots
        self._pipeline = pipeline
        self._clock_offset_ns = clock_offset_ns
        self._transforms = transforms
        self._publish_outputs = publish
        self._now_ns = now_ns
        self.scheduler: FrameScheduler[RgbdSet, Scene] | None = None
        self._stop_event: asyncio.Event | None = None
        self._future: Any = None

    def start(self, config: SchedulerConfig, cameras: Sequence[str] = ('',)) -> None:
        """
        Create the scheduler for ``cameras`` and run it on the worker loop.

        ``cameras``: their names; '' for the single camera.
        """
        self.scheduler = FrameScheduler(
            process=self._process,
            publish=self._publish,
            config=config,
            clock_ns=self._now_ns,
            on_error=self._on_error,
            cameras=cameras,
        )
        self._stop_event = asyncio.Event()
        self._future = self._worker.submit(self.scheduler.run(self._stop_event))
        self._reporter.reset_drop_totals()

    def stop(self, logger: Any) -> None:
        """Stop the scheduler (in-flight results are discarded) and wait for it."""
        if self._stop_event is not None:
            self._worker.call_soon(self._stop_event.set)
        if self._future is not None:
            try:
                self._future.result(timeout=STOP_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError, SpatialVlmError) as error:
                logger.warning(f'scheduler stop: {type(error).__name__}: {error}')
        self._future = self._stop_event = self.scheduler = None

    # ---------------------------------------------------------------- frames in

    def on_paired(self, paired: RgbdSet, reference_ns: int | None) -> None:
        """
        Take a complete RGB-D set of camera ``paired.camera`` (any thread).

        It is kept for the services and offered to the stream.
        """
        self._snapshots.add_frame(paired)
        scheduler = self.scheduler
        if scheduler is not None:
            scheduler.submit(
                paired.stamp_ns, paired, self._worker.loop, reference_ns, camera=paired.camera
            )

    def on_time_jump(self, camera: str = '') -> None:
        """Forget the camera's watermarks: its stamps jumped back (a looping bag)."""
        if self.scheduler is not None:
            self.scheduler.reset_watermarks(camera)

    # ---------------------------------------------------------------- on the worker

    async def _process(self, frame: StampedFrame[RgbdSet]) -> Scene:
        pipeline = self._pipeline()
        if pipeline is None:
            raise SpatialVlmError('the pipeline was released while a frame was in flight')
        offset_ns = self._clock_offset_ns(frame.frame.camera)
        # Latency is measured in the camera's clock: with a known offset, correct the node's.
        now_ns = self._now_ns if offset_ns is None else lambda: self._now_ns() - offset_ns
        stages = input_stages_ms(frame)
        try:
            # The vocabulary is the pipeline config's, kept current by the node's parameters.
            scene = await pipeline.perceive_paired(
                frame.frame,
                now_ns=now_ns,
                transforms=self._transforms(),
                deadline=frame.deadline,
                timings=StageTimings(
                    receive_ms=stages['receive'], pair_ms=stages['pair'], queue_ms=stages['queue']
                ),
            )
        except EngineError as error:
            self._reporter.record_engine_call(False, f'{type(error).__name__}: {error}')
            raise
        self._reporter.record_engine_call(True)
        return scene

    def _publish(self, frame: StampedFrame[RgbdSet], scene: Scene) -> None:
        errors = self._reporter.errors
        camera = frame.frame.camera
        self._snapshots.add_scene(scene, camera)
        if scene.error:
            errors.report('engine_output', scene.error)
        for warning in scene.warnings:
            errors.report('input_warning', warning)
        # The scene carries every stage up to relations (StageLatency); publishing is timed here.
        stages = {
            stage: getattr(scene.timings, f'{stage}_ms')
            for stage in STAGES
            if hasattr(scene.timings, f'{stage}_ms')
        }
        started_s = time.perf_counter()
        try:
            self._publish_outputs(frame.frame, scene)
        except SpatialVlmError as error:
            errors.report('publish', f'{type(error).__name__}: {error}')
        except Exception as error:  # noqa: BLE001 - worker boundary, traceback logged
            errors.report_exception('publish', error)
        stages['publish'] = 1e3 * (time.perf_counter() - started_s)
        self._reporter.record_scene(scene.latency_ms, stages, camera)

    def _on_error(self, frame: StampedFrame[RgbdSet], error: BaseException) -> None:
        timed_out = isinstance(error, asyncio.TimeoutError)
        if timed_out:
            self._reporter.record_engine_call(False, 'the frame deadline (request_timeout_s)')
        elif not isinstance(error, SpatialVlmError | OSError):
            # Not a typed failure of the frame (bad input, an engine error) but a bug: counted
            # like any frame error, and its traceback logged once per exception type.
            self._reporter.errors.report_exception('frame', error)
            return
        self._reporter.errors.report(
            'timeout' if timed_out else 'frame',
            f'frame {_camera_prefix(frame.camera)}{frame.stamp_ns}: {type(error).__name__}: '
            f'{error}',
        )

    # ---------------------------------------------------------------- services

    async def run_priority(
        self, work: Callable[[], Awaitable[Any]], deadline: Deadline, executor: Any
    ) -> Any:
        """Await ``work`` in the scheduler's priority lane on the worker (no thread parked)."""
        scheduler = self.scheduler
        if scheduler is None or self._worker.loop is None:
            raise SpatialVlmError('node is not active')
        return await self._worker.ros_future(scheduler.run_priority(work, deadline), executor)


def _camera_prefix(camera: str) -> str:
    return f'{camera} ' if camera else ''
