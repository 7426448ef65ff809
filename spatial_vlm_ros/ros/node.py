# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The ``spatial_vlm`` lifecycle node: lifecycle and wiring of the ROS layer around the pipeline.

Where each concern lives:

* ``ros/inputs.py``: the camera topics and transports, QoS matching, input health (rates, stamp
  ages, missing or mistyped publishers, lost samples, clock offsets), the stamp gate, pairing;
* ``ros/stream.py`` + ``ros/worker.py``: the scheduler on the asyncio worker thread, which runs
  the engine calls and the lifting, and publishes scenes with their stage timings;
* ``ros/outputs.py``: the scene publishers;
* ``ros/services.py``: ``~/query`` and ``~/locate`` (coroutines: they park no thread);
* ``ros/memory_io.py``: the object memory's ``~/objects``, ``~/memory_markers``, ``~/forget``
  and saving (the memory itself is the pipeline's);
* ``ros/tf.py``: TF at the image stamp (tf2_ros, or the node's own /tf buffer without it);
* ``ros/diagnostics.py``: error counting and the ``/diagnostics`` statuses.

Entities follow lifecycle_py: publishers, services, timers and the engine are created in
on_configure and destroyed in on_cleanup; subscriptions and the scheduler live from activate to
deactivate. Only ``/diagnostics`` exists in every state, so that a failed configure is seen.
"""

from __future__ import annotations

from dataclasses import replace
import functools
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

from spatial_vlm_ros.core.lifting import warm_up as warm_up_lifting
from spatial_vlm_ros.core.memory import ObjectMemoryError
from spatial_vlm_ros.core.scheduling import FrameScheduler, SchedulerConfig
from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.base import EngineUnavailableError
from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline, pairing_from_parameters
from spatial_vlm_ros.ros.diagnostics import DiagnosticsReporter, pipeline_values
from spatial_vlm_ros.ros.inputs import CameraInputs, camera_topics
from spatial_vlm_ros.ros.memory_io import MemoryOutputs, RememberedCandidates
from spatial_vlm_ros.ros.outputs import SceneOutputs
from spatial_vlm_ros.ros.parameters import PARAMETERS, descriptor, validate, values_of
from spatial_vlm_ros.ros.services import SnapshotBuffer, SpatialServices
from spatial_vlm_ros.ros.stream import SceneStream
from spatial_vlm_ros.ros.tf import TransformSource
from spatial_vlm_ros.ros.worker import WorkerLoop
from spatial_vlm_ros.runtime import tune_memory_allocator
from spatial_vlm_ros.settings import deprecation_warnings
from spatial_vlm_ros.srv import LocateObject, SpatialQuery

NODE_NAME = 'spatial_vlm'
ENGINE_START_TIMEOUT_S = 600.0
# With autostart, a model server that does not answer yet (robots boot in any order) is retried
# this often instead of leaving the node unconfigured; /diagnostics says ERROR meanwhile.
ENGINE_RETRY_PERIOD_S = 5.0
ENGINE_SHUTDOWN_TIMEOUT_S = 30.0
HEALTH_PERIOD_S = 5.0  # how often the engine is asked whether it can serve
RECHECK_PERIOD_S = 1.0  # how often input QoS is re-matched to the publishers


class SpatialVlmNode(LifecycleNode):
    """Lifecycle node; see docs/NODE.md for topics, services and parameters."""

    def __init__(self, **kwargs: Any) -> None:
        self._pipeline: SpatialPipeline | None = None
        # One entry per camera, by name ('' for the single camera); see settings.cameras.
        self._camera_inputs: dict[str, CameraInputs] = {}
        self._camera_outputs: dict[str, SceneOutputs] = {}
        self._tf: TransformSource | None = None
        self._memory_outputs: MemoryOutputs | None = None
        self._handles: list[Any] = []  # services and timers of the configured node
        self._recheck_timer: Any = None
        self._engine_unavailable = False  # the last configure failed on an unanswering server
        self._worker = WorkerLoop()
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_runtime_parameters)
        self._reporter = DiagnosticsReporter(self.get_fully_qualified_name(), self.get_logger())
        self._snapshots = SnapshotBuffer()
        self._stream = SceneStream(
            self._worker,
            self._reporter,
            self._snapshots,
            pipeline=lambda: self._pipeline,
            clock_offset_ns=self._clock_offset_ns,
            transforms=lambda: self._tf,
            publish=self._publish_outputs,
            now_ns=self._now_ns,
        )
        # ~/locate's remembered objects in the scene's frame (the query handlers' seam).
        self.remembered_candidates = RememberedCandidates(
            memory=lambda: self._pipeline.memory if self._pipeline is not None else None,
            transforms=lambda: self._tf,
        )
        self._spatial_services = SpatialServices(
            self._snapshots,
            self._reporter.errors,
            pipeline=lambda: self._pipeline,
            run_priority=lambda work, deadline: self._stream.run_priority(
                work, deadline, self.executor
            ),
            transforms=lambda: self._tf,
            now_ns=self._now_ns,
            parameter=lambda name: self.get_parameter(name).value,
            remembered_candidates=self.remembered_candidates,
        )
        self._service_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._tf_group = MutuallyExclusiveCallbackGroup()
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

    def _publish_outputs(self, paired: Any, scene: Any) -> None:
        outputs = self._camera_outputs.get(paired.camera)
        if outputs is not None:
            outputs.publish(paired, scene)
        if self._memory_outputs is not None:
            self._memory_outputs.publish(scene.camera_frame_id)

    def _clock_offset_ns(self, camera: str) -> int | None:
        inputs = self._camera_inputs.get(camera)
        return inputs.clock_offset_ns if inputs is not None else None

    @property
    def _inputs(self) -> CameraInputs | None:
        """Return the first camera's inputs (the only ones with one camera); None unconfigured."""
        return next(iter(self._camera_inputs.values()), None)

    @property
    def _outputs(self) -> SceneOutputs | None:
        """Return the first camera's outputs (the only ones with a single camera)."""
        return next(iter(self._camera_outputs.values()), None)

    @property
    def _scheduler(self) -> FrameScheduler[Any, Any] | None:
        return self._stream.scheduler

    def _values(self) -> dict[str, Any]:
        return values_of(self)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # ---------------------------------------------------------------- lifecycle

    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        self._engine_unavailable = False
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            if self._engine_unavailable:
                self.get_logger().warning(
                    f'autostart: the model server does not answer; retrying configure every '
                    f'{ENGINE_RETRY_PERIOD_S:.0f} s'
                )
                self._autostart_timer = self.create_timer(ENGINE_RETRY_PERIOD_S, self._autostart)
                return
            self.get_logger().error('autostart: configure failed; fix the parameters above')
            return
        self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """
        Validate parameters, build the engine and pipeline, create publishers and services.

        SUCCESS leads to inactive; FAILURE (bad configuration) stays unconfigured, and the
        reason is the engine status on /diagnostics (ERROR).
        """
        values = self._values()
        for warning in deprecation_warnings(values):
            self.get_logger().warning(warning)
        engine = self._reporter.engine
        engine.kind, engine.model = str(values['engine']), str(values['model'])
        engine.server_url, engine.health_ok = str(values['server_url']), None
        pipeline = self._start_pipeline(values)
        if pipeline is None:
            return TransitionCallbackReturn.FAILURE
        engine.configured, engine.configure_error = True, ''
        self._pipeline = pipeline
        # Compiled lifting kernels loaded (or compiled) now, not on the first frame.
        self.get_logger().info(f'lifting kernels ready in {warm_up_lifting():.2f} s')
        self._snapshots.resize(int(values['query_buffer_frames']))
        pairing = pairing_from_parameters(values, live=True)
        cameras = camera_topics(values)
        for name, topics in cameras.items():
            self._camera_inputs[name] = CameraInputs(
                self,
                topics=topics,
                qos_mode=str(values['input_qos']),
                pairing=pairing,
                errors=self._reporter.errors,
                callback_group=self._input_group,
                on_paired=self._stream.on_paired,
                on_time_jump=functools.partial(self._stream.on_time_jump, name),
                max_frame_age_s=float(values['max_frame_age_s']),
                name=name,
            )
            self._camera_outputs[name] = SceneOutputs(self, pipeline.rgb_of, name)
        self._tf = TransformSource(
            self, self.get_logger(), float(values['tf_timeout_s']), callback_group=self._tf_group
        )
        if len(cameras) > values['max_in_flight']:
            self.get_logger().warning(
                f'{len(cameras)} cameras share max_in_flight={values["max_in_flight"]}: they '
                f'are served in turn but their requests cannot be batched; set max_in_flight '
                f'to {len(cameras)} or more'
            )
        if pipeline.memory is not None:
            self._memory_outputs = MemoryOutputs(
                self,
                pipeline,
                self._reporter.errors,
                callback_group=self._service_group,
                save_period_s=float(values['memory_save_period_s']),
            )
            if not pipeline.memory.memory_frame and len(cameras) > 1:
                # The memory adopts the first camera's optical frame; the other cameras'
                # objects then get fresh ids every frame (each scene says why).
                self.get_logger().warning(
                    f'object memory in the camera frame (memory_frame and target_frame are '
                    f'empty) with {len(cameras)} cameras: only the first camera to send a frame '
                    f'is remembered; set memory_frame to a frame all cameras share (base_link, '
                    f'odom or map)'
                )
            elif not pipeline.memory.memory_frame:
                self.get_logger().warning(
                    'object memory in the camera frame (memory_frame and target_frame are '
                    'empty): ids stay right only while the camera does not move; on a moving '
                    'robot set memory_frame to odom or map'
                )
        services = self._spatial_services
        group = self._service_group
        self._handles = [
            self.create_service(SpatialQuery, '~/query', services.on_query, callback_group=group),
            self.create_service(
                LocateObject, '~/locate', services.on_locate, callback_group=group
            ),
            self.create_timer(HEALTH_PERIOD_S, self._probe_engine),
        ]
        named = f' cameras={",".join(cameras)}' if len(cameras) > 1 else ''
        self.get_logger().info(
            f'configured: engine={values["engine"]} model={values["model"]} '
            f'rate={values["rate_hz"]} Hz in_flight={values["max_in_flight"]}{named}'
        )
        return super().on_configure(state)

    def _start_pipeline(self, values: dict[str, Any]) -> SpatialPipeline | None:
        """Start the pipeline; None with the reason logged and kept for /diagnostics."""
        engine = self._reporter.engine
        problems = validate(values)
        if problems:
            for problem in problems:
                self.get_logger().error(f'bad configuration: {problem}')
            engine.configure_error = 'bad configuration: ' + '; '.join(problems)
            return None
        try:
            pipeline = SpatialPipeline.from_settings(PipelineSettings.from_parameters(values))
        except ObjectMemoryError as error:
            # Not started, so the file is never overwritten by an empty memory.
            self.get_logger().error(f'cannot load the object memory: {error}')
            engine.configure_error = f'cannot load the object memory: {error}'
            return None
        except (SpatialVlmError, ValueError, OSError, ImportError) as error:
            self.get_logger().error(f'cannot configure the engine: {error}')
            engine.configure_error = f'cannot configure the engine: {error}'
            return None
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
            self._engine_unavailable = isinstance(error, EngineUnavailableError)
            self._worker.stop()
            return None
        return pipeline

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the scheduler. SUCCESS leads to active."""
        if self._pipeline is None or self._worker.loop is None or not self._camera_inputs:
            self.get_logger().error('activate without a configured pipeline')
            return TransitionCallbackReturn.ERROR
        values = self._values()
        self._stream.start(
            SchedulerConfig(
                rate_hz=values['rate_hz'],
                max_in_flight=values['max_in_flight'],
                max_age_s=values['max_frame_age_s'],
                timeout_s=values['request_timeout_s'],
            ),
            cameras=tuple(self._camera_inputs),
        )
        for inputs in self._camera_inputs.values():
            inputs.subscribe()
        self._recheck_timer = self.create_timer(RECHECK_PERIOD_S, self._recheck_inputs)
        self.get_logger().info('active: waiting for paired RGB, depth and CameraInfo')
        # The parent switches the lifecycle publishers on; then late joiners of ~/objects get
        # the memory (e.g. loaded from memory_file) before the first frame.
        result = super().on_activate(state)
        if self._memory_outputs is not None:
            self._memory_outputs.publish()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """
        Unsubscribe and stop the scheduler (in-flight results are discarded).

        Save the object memory.
        """
        self._stop_streaming()
        if self._memory_outputs is not None:
            self._memory_outputs.save('deactivate')
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
        """Return a transition raised: release everything; SUCCESS leads to unconfigured."""
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
        for inputs in self._camera_inputs.values():
            inputs.unsubscribe()
        self._stream.stop(self.get_logger())

    def _recheck_inputs(self) -> None:
        for inputs in self._camera_inputs.values():
            try:
                inputs.recheck()
            except Exception as error:  # noqa: BLE001 - timer boundary: a bug must not end us
                self._reporter.errors.report_exception('input', error)

    def _teardown(self) -> None:
        if self._memory_outputs is not None:
            self._memory_outputs.save('cleanup')
            self._memory_outputs.destroy()
            self._memory_outputs = None
        if self._tf is not None:
            self._tf.close()
            self._tf = None
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None and self._worker.loop is not None:
            try:
                self._worker.run(pipeline.shutdown(), timeout_s=ENGINE_SHUTDOWN_TIMEOUT_S)
            except (SpatialVlmError, OSError, TimeoutError) as error:
                self.get_logger().warning(f'engine shutdown: {type(error).__name__}: {error}')
        self._worker.stop()
        for handle in self._handles:
            if hasattr(handle, 'srv_type'):
                self.destroy_service(handle)
            else:
                self.destroy_timer(handle)
        self._handles = []
        for outputs in self._camera_outputs.values():
            outputs.destroy()
        self._camera_outputs = {}
        for inputs in self._camera_inputs.values():
            inputs.close()
        self._camera_inputs = {}
        self._reporter.engine.configured = False
        self._snapshots.clear()

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
        for inputs in self._camera_inputs.values():
            inputs.max_frame_age_s = float(values['max_frame_age_s'])
        if self._tf is not None:
            self._tf.timeout_s = float(values['tf_timeout_s'])

    def _probe_engine(self) -> None:
        pipeline = self._pipeline
        if pipeline is not None and self._worker.loop is not None:
            self._reporter.probe_engine(self._worker.submit(pipeline.engine.health()))

    def _publish_diagnostics(self) -> None:
        # A timer callback that raises ends the executor's spin, and with it the node: a bug
        # in a status is logged with its traceback and counted instead.
        try:
            self._publish_diagnostics_now()
        except Exception as error:  # noqa: BLE001 - timer boundary, traceback logged
            self._reporter.errors.report_exception('diagnostics', error)

    def _publish_diagnostics_now(self) -> None:
        scheduler, cameras = self._scheduler, self._camera_inputs
        several = len(cameras) > 1
        if scheduler is not None:
            self._reporter.record_drop_totals(scheduler.drop_counts())
            if several:
                for name in scheduler.cameras:
                    self._reporter.record_drop_totals(scheduler.drop_counts(name), name)
        use_sim_time = bool(self.get_parameter('use_sim_time').value)
        streams = [
            status
            for inputs in cameras.values()
            if inputs.subscribed
            for status in inputs.assess(use_sim_time).values()
        ]
        array = self._reporter.build(
            self.get_clock().now().to_msg(),
            active=scheduler is not None,
            # With several cameras, each one's inputs are on its own status.
            pipeline_values=pipeline_values(
                scheduler, None if several else self._inputs, self._tf
            ),
            inputs=streams,
            cameras={
                name: pipeline_values(scheduler, inputs, None, camera=name)
                for name, inputs in cameras.items()
            }
            if several
            else None,
        )
        self._diagnostics_publisher.publish(array)


def main(args: list[str] | None = None) -> int:
    # DDS transports stay as the user configured them (FASTDDS_BUILTIN_TRANSPORTS): a node that
    # picked LARGE_DATA for itself would not discover a camera driver started the usual way.
    # The launch file's large_data_transport:=true sets it for everything it starts.
    tune_memory_allocator()
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
