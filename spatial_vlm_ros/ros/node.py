# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ``spatial_vlm`` lifecycle node: lifecycle and wiring of the ROS layer around the pipeline.

Where each concern lives:

* ``ros/inputs.py``: the camera topics, QoS matching, starvation checks, the stamp gate, pairing;
* ``ros/worker.py``: the asyncio worker thread that runs the scheduler, engine calls and lifting;
* ``ros/outputs.py``: the scene publishers;
* ``ros/services.py``: ``~/query`` and ``~/locate``;
* ``ros/diagnostics.py``: error counting and ``/diagnostics``.

Threads: the rclpy executor (multi-threaded) runs subscription, timer, service and parameter
callbacks; subscription callbacks only pair and store the newest frame; the worker runs
everything slow, so a slow model never blocks the executor, parameter changes or transitions.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_system_default

from spatial_vlm_ros.core.pairing import PairingConfig, RgbdSet
from spatial_vlm_ros.core.scheduling import (
    Deadline,
    FrameScheduler,
    SchedulerConfig,
    StampedFrame,
)
from spatial_vlm_ros.core.types import Scene, SpatialVlmError
from spatial_vlm_ros.engines.base import EngineError
from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline
from spatial_vlm_ros.ros.diagnostics import (
    DiagnosticsReporter,
    health_of,
    input_stages_ms,
    pipeline_values,
)
from spatial_vlm_ros.ros.inputs import CameraInputs, InputTopics
from spatial_vlm_ros.ros.outputs import SceneOutputs
from spatial_vlm_ros.ros.parameters import PARAMETERS, descriptor, validate, values_of
from spatial_vlm_ros.ros.services import SnapshotBuffer, SpatialServices
from spatial_vlm_ros.ros.tf import TransformSource
from spatial_vlm_ros.ros.worker import WorkerLoop
from spatial_vlm_ros.settings import deprecation_warnings
from spatial_vlm_ros.srv import LocateObject, SpatialQuery

NODE_NAME = 'spatial_vlm'
ENGINE_START_TIMEOUT_S = 600.0
ENGINE_SHUTDOWN_TIMEOUT_S = 30.0
HEALTH_PERIOD_S = 5.0  # how often the engine is asked whether it can serve


class SpatialVlmNode(LifecycleNode):
    """Lifecycle node; see docs/NODE.md for topics, services and parameters."""

    def __init__(self, **kwargs: Any) -> None:
        self._pipeline: SpatialPipeline | None = None
        self._scheduler: FrameScheduler[RgbdSet, Scene] | None = None
        self._stop_event: asyncio.Event | None = None
        self._scheduler_future: Any = None
        self._inputs: CameraInputs | None = None
        self._outputs: SceneOutputs | None = None
        self._service_handles: list[Any] = []
        self._timer_handles: list[Any] = []
        self._recheck_timer: Any = None
        self._tf: TransformSource | None = None
        self._worker = WorkerLoop()
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_runtime_parameters)
        self._reporter = DiagnosticsReporter(self.get_fully_qualified_name(), self.get_logger())
        self._snapshots = SnapshotBuffer()
        self._spatial_services = SpatialServices(
            self._snapshots,
            self._reporter.errors,
            pipeline=lambda: self._pipeline,
            run_priority=self._run_priority,
            transforms=lambda: self._tf,
            now_ns=self._now_ns,
            parameter=lambda name: self.get_parameter(name).value,
        )
        self._service_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._stage_ms: dict[int, dict[str, float]] = {}  # by stamp, until the scene is published
        # /diagnostics exists in every state, so that a failed configure is visible to monitoring.
        self._diagnostics_publisher = self.create_publisher(
            DiagnosticArray, '/diagnostics', qos_profile_system_default
        )
        self.create_timer(
            float(self.get_parameter('diagnostics_period_s').value), self._publish_diagnostics
        )
        if self.get_parameter('autostart').value:
            # Transition once the executor spins, so launch and tests see every state change.
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _values(self) -> dict[str, Any]:
        return values_of(self)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---------------------------------------------------------------- lifecycle

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error('autostart: configure failed; fix the parameters above')
            return
        self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, build the engine and pipeline, create publishers and services.

        SUCCESS leads to inactive; FAILURE (bad configuration) stays unconfigured.
        """
        values = self._values()
        for warning in deprecation_warnings(values):
            self.get_logger().warning(warning)
        engine = self._reporter.engine
        engine.kind, engine.model = str(values['engine']), str(values['model'])
        engine.server_url, engine.health_ok = str(values['server_url']), None
        problems = validate(values)
        if problems:
            for problem in problems:
                self.get_logger().error(f'bad configuration: {problem}')
            engine.configure_error = 'bad configuration: ' + '; '.join(problems)
            return TransitionCallbackReturn.FAILURE
        try:
            pipeline = SpatialPipeline.from_settings(PipelineSettings.from_parameters(values))
        except (SpatialVlmError, ValueError, OSError, ImportError) as error:
            self.get_logger().error(f'cannot configure the engine: {error}')
            engine.configure_error = f'cannot configure the engine: {error}'
            return TransitionCallbackReturn.FAILURE
        self._worker.start()
        try:
            self._worker.run(pipeline.start(), timeout_s=ENGINE_START_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - any engine's failure fails the transition
            # rclpy turns an exception in a transition into ERROR without a word: say why here.
            expected = isinstance(error, SpatialVlmError | OSError | TimeoutError)
            detail = '' if expected else '\n' + ''.join(traceback.format_exception(error))
            name = type(error).__name__
            self.get_logger().error(f'engine start failed: {name}: {error}{detail}')
            engine.configure_error = f'engine start failed: {name}: {error}'
            self._worker.stop()
            return TransitionCallbackReturn.FAILURE
        engine.configured, engine.configure_error = True, ''
        self._pipeline = pipeline
        self._snapshots.resize(int(values['query_buffer_frames']))
        self._inputs = CameraInputs(
            self,
            topics=InputTopics.from_values(values),
            qos_mode=str(values['input_qos']),
            pairing=PairingConfig.from_seconds(slop_s=values['sync_slop_s']),
            errors=self._reporter.errors,
            callback_group=self._input_group,
            on_paired=self._on_paired,
            on_time_jump=self._on_time_jump,
            max_frame_age_s=float(values['max_frame_age_s']),
        )
        self._tf = TransformSource(self, self.get_logger(), float(values['tf_timeout_s']))
        self._outputs = SceneOutputs(self)
        self._service_handles = [
            self.create_service(
                SpatialQuery,
                '~/query',
                self._spatial_services.on_query,
                callback_group=self._service_group,
            ),
            self.create_service(
                LocateObject,
                '~/locate',
                self._spatial_services.on_locate,
                callback_group=self._service_group,
            ),
        ]
        self._timer_handles.append(self.create_timer(HEALTH_PERIOD_S, self._probe_engine))
        self.get_logger().info(
            f'configured: engine={values["engine"]} model={values["model"]} '
            f'rate={values["rate_hz"]} Hz in_flight={values["max_in_flight"]}'
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the scheduler. SUCCESS leads to active."""
        if self._pipeline is None or self._worker.loop is None or self._inputs is None:
            self.get_logger().error('activate without a configured pipeline')
            return TransitionCallbackReturn.ERROR
        values = self._values()
        self._scheduler = FrameScheduler(
            process=self._process_frame,
            publish=self._publish_scene,
            config=SchedulerConfig(
                rate_hz=values['rate_hz'],
                max_in_flight=values['max_in_flight'],
                max_age_s=values['max_frame_age_s'],
                timeout_s=values['request_timeout_s'],
            ),
            clock_ns=self._now_ns,
            on_error=self._on_frame_error,
        )
        self._stop_event = asyncio.Event()
        self._scheduler_future = self._worker.submit(self._scheduler.run(self._stop_event))
        self._inputs.subscribe()
        self._reporter.reset_drop_totals()
        self._recheck_timer = self.create_timer(1.0, self._inputs.recheck)
        self.get_logger().info('active: waiting for paired RGB, depth and CameraInfo')
        # The parent switches the lifecycle publishers on.
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the scheduler (in-flight results are discarded)."""
        self._stop_streaming()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the engine, publishers and services. SUCCESS leads to unconfigured."""
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything from whichever state we are in."""
        self.release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything; SUCCESS leads to unconfigured."""
        self.get_logger().error(f'transition from {state.label} raised; releasing everything')
        self.release()
        return super().on_error(state)

    def release(self) -> None:
        """Free the engine and threads without a lifecycle transition (process exit)."""
        self._stop_streaming()
        self._teardown()

    def _stop_streaming(self) -> None:
        if self._recheck_timer is not None:
            self.destroy_timer(self._recheck_timer)
            self._recheck_timer = None
        if self._inputs is not None:
            self._inputs.unsubscribe()
        if self._stop_event is not None:
            self._worker.call_soon(self._stop_event.set)
        if self._scheduler_future is not None:
            try:
                self._scheduler_future.result(timeout=10.0)
            except (TimeoutError, asyncio.CancelledError, SpatialVlmError) as error:
                self.get_logger().warning(f'scheduler stop: {type(error).__name__}: {error}')
        self._scheduler_future = None
        self._stop_event = None
        self._scheduler = None

    def _teardown(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None and self._worker.loop is not None:
            try:
                self._worker.run(pipeline.shutdown(), timeout_s=ENGINE_SHUTDOWN_TIMEOUT_S)
            except (SpatialVlmError, OSError, TimeoutError) as error:
                self.get_logger().warning(f'engine shutdown: {type(error).__name__}: {error}')
        self._worker.stop()
        for timer in self._timer_handles:
            self.destroy_timer(timer)
        self._timer_handles = []
        for service in self._service_handles:
            self.destroy_service(service)
        self._service_handles = []
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        if self._inputs is not None:
            self._inputs.close()
        self._inputs = None
        self._reporter.engine.configured = False
        self._snapshots.clear()

    # ---------------------------------------------------------------- frames

    def _on_paired(self, paired: RgbdSet, reference_ns: int | None) -> None:
        self._snapshots.add_frame(paired)
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.submit(paired.stamp_ns, paired, self._worker.loop, reference_ns)

    def _on_time_jump(self) -> None:
        if self._scheduler is not None:
            self._scheduler.reset_watermarks()

    async def _process_frame(self, frame: StampedFrame[RgbdSet]) -> Scene:
        pipeline, inputs = self._pipeline, self._inputs
        if pipeline is None:
            raise SpatialVlmError('the pipeline was released while a frame was in flight')
        offset_ns = inputs.clock_offset_ns if inputs is not None else None
        # Latency is measured in the camera's clock: with a known offset, correct the node's.
        now_ns = self._now_ns if offset_ns is None else lambda: self._now_ns() - offset_ns
        stages = input_stages_ms(frame)
        try:
            # The vocabulary is the pipeline config's, kept current by _apply_runtime_parameters.
            scene = await pipeline.perceive_paired(
                frame.frame, now_ns=now_ns, transforms=self._tf, deadline=frame.deadline,
                stages=stages,
            )  # fmt: skip
        except EngineError as error:
            self._reporter.record_engine_call(False, f'{type(error).__name__}: {error}')
            raise
        self._reporter.record_engine_call(True)
        self._stage_ms[frame.stamp_ns] = stages
        return scene

    def _publish_scene(self, frame: StampedFrame[RgbdSet], scene: Scene) -> None:
        errors = self._reporter.errors
        self._snapshots.add_scene(scene)
        if scene.error:
            errors.report('engine_output', scene.error)
        for warning in scene.warnings:
            errors.report('input_warning', warning)
        stages = self._stage_ms.pop(frame.stamp_ns, {})
        self._stage_ms = {k: v for k, v in self._stage_ms.items() if k > frame.stamp_ns}
        outputs = self._outputs
        if outputs is None:
            return
        started_s = time.perf_counter()
        try:
            outputs.publish(frame.frame, scene)
        except SpatialVlmError as error:
            errors.report('publish', f'{type(error).__name__}: {error}')
        except Exception as error:  # noqa: BLE001 - worker boundary, traceback logged
            errors.report_exception('publish', error)
        stages['publish'] = 1e3 * (time.perf_counter() - started_s)
        self._reporter.record_scene(scene.latency_ms, stages)

    def _on_frame_error(self, frame: StampedFrame[RgbdSet], error: BaseException) -> None:
        self._stage_ms.pop(frame.stamp_ns, None)
        timed_out = isinstance(error, asyncio.TimeoutError)
        if timed_out:
            self._reporter.record_engine_call(False, 'the frame deadline (request_timeout_s)')
        self._reporter.errors.report(
            'timeout' if timed_out else 'frame',
            f'frame {frame.stamp_ns}: {type(error).__name__}: {error}',
        )

    async def _run_priority(self, work: Any, deadline: Deadline) -> Any:
        """Await ``work`` in the scheduler's priority lane on the worker (no thread parked)."""
        scheduler = self._scheduler
        if scheduler is None or self._worker.loop is None:
            raise SpatialVlmError('node is not active')
        return await self._worker.ros_future(scheduler.run_priority(work, deadline), self.executor)

    # ---------------------------------------------------------------- parameters, diagnostics

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = self._values()
        for parameter in parameters:
            values[parameter.name] = parameter.value
        problems = validate(values)
        return SetParametersResult(successful=not problems, reason='; '.join(problems))

    def _apply_runtime_parameters(self, parameters: list[Parameter]) -> None:
        """Runtime-changeable parameters take effect for the next frame (already validated)."""
        values = self._values()
        pipeline, scheduler = self._pipeline, self._scheduler
        if pipeline is not None:
            # One assignment of a frozen config: a frame in flight sees the old or the new one.
            pipeline.config = PipelineSettings.from_parameters(values).config
        if scheduler is not None:
            scheduler.reconfigure(
                replace(
                    scheduler.config,
                    rate_hz=values['rate_hz'],
                    max_age_s=values['max_frame_age_s'],
                )
            )
        if self._tf is not None:
            self._tf.timeout_s = float(values['tf_timeout_s'])

    def _probe_engine(self) -> None:
        """Ask the engine whether it can serve now (e.g. an HTTP health check), off the
        executor; the answer is the engine status on /diagnostics."""
        pipeline = self._pipeline
        if pipeline is None or self._worker.loop is None:
            return
        engine_state = self._reporter.engine

        def done(future: Any) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                engine_state.health_ok = False
                engine_state.health_message = f'{type(error).__name__}: {error}'
                return
            engine_state.health_ok, engine_state.health_message = health_of(future.result())

        self._worker.submit(pipeline.engine.health()).add_done_callback(done)

    def _publish_diagnostics(self) -> None:
        scheduler, inputs = self._scheduler, self._inputs
        values = pipeline_values(scheduler, inputs, self._tf)
        if scheduler is not None:
            self._reporter.record_drop_totals(scheduler.drop_counts())
        streams = []
        if inputs is not None and inputs.subscribed:
            use_sim_time = bool(self.get_parameter('use_sim_time').value)
            streams = list(inputs.assess(use_sim_time).values())
        array = self._reporter.build(
            self.get_clock().now().to_msg(),
            active=scheduler is not None,
            pipeline_values=values,
            inputs=streams,
        )
        self._diagnostics_publisher.publish(array)


def main(args: list[str] | None = None) -> int:
    # DDS transports stay as the user configured them (FASTDDS_BUILTIN_TRANSPORTS): a node that
    # picked LARGE_DATA for itself would not discover a camera driver started the usual way.
    # The launch file's large_data_transport:=true sets it for everything it starts.
    rclpy.init(args=args)
    node = SpatialVlmNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # noqa: BLE001 - print and exit non-zero rather than hang
        traceback.print_exc()
        return 1
    finally:
        node.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
