# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ``spatial_vlm`` lifecycle node: a thin adapter from ROS messages to the ROS-free pipeline.

Threads, and why:

* the rclpy executor (multi-threaded) runs subscription, timer, service and parameter callbacks;
  subscription callbacks only hand messages to the pairer and the scheduler's newest-frame slot;
* one asyncio loop thread ("worker") runs the scheduler, the engine calls and the lifting, so a
  slow model never blocks the executor, parameter changes or lifecycle transitions;
* service callbacks submit to the worker's priority lane and wait for the answer on their own
  executor thread (a reentrant callback group).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import replace
import os
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_system_default
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from spatial_vlm_ros.core.annotate import annotate_scene
from spatial_vlm_ros.core.lifting import warm_up as warm_up_lifting
from spatial_vlm_ros.core.pairing import PairingConfig, RgbdSet, StampPairer
from spatial_vlm_ros.core.scene_json import scene_to_json
from spatial_vlm_ros.core.scheduling import FrameScheduler, SchedulerConfig, StampedFrame
from spatial_vlm_ros.core.types import Scene, SpatialVlmError
from spatial_vlm_ros.msg import SpatialScene
from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline, find_best_match
from spatial_vlm_ros.ros import conversions, qos
from spatial_vlm_ros.ros.markers import scene_markers
from spatial_vlm_ros.ros.parameters import PARAMETERS, validate
from spatial_vlm_ros.ros.tf import TransformSource
from spatial_vlm_ros.runtime import tune_memory_allocator
from spatial_vlm_ros.srv import LocateObject, SpatialQuery

NODE_NAME = 'spatial_vlm'
MAX_QUESTION_BYTES = 4096
MAX_DESCRIPTION_BYTES = 512
SCENE_CACHE = 30  # published scenes kept for snapshot reuse
FUTURE_STAMP_TOLERANCE_NS = 5 * 10**9  # clock skew allowed between camera and node
TIME_JUMP_BACK_NS = 5 * 10**9  # a stream going back further restarts pairing (bag loop)


class SpatialVlmNode(LifecycleNode):
    """Lifecycle node; see docs/NODE.md for topics, services and parameters."""

    def __init__(self, **kwargs: Any) -> None:
        self._pipeline: SpatialPipeline | None = None
        self._scheduler: FrameScheduler[RgbdSet, Scene] | None = None
        self._pairer: StampPairer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._scheduler_future: Future[None] | None = None
        self._inputs: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self._service_handles: list[Any] = []
        self._timer_handles: list[Any] = []
        self._tf: TransformSource | None = None
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._apply_runtime_parameters)

        self._lock = threading.Lock()
        # Paired frames for SpatialQuery-by-stamp; resized to query_buffer_frames on configure.
        self._snapshots: deque[RgbdSet] = deque(maxlen=1)
        self._scenes: deque[Scene] = deque(maxlen=SCENE_CACHE)
        self._errors: Counter[str] = Counter()
        self._last_error = ''
        self._last_logged_s: dict[str, float] = {}
        self._newest_stamp_ns: dict[str, int] = {}
        self._received: Counter[str] = Counter()
        self._received_at_last_report: Counter[str] = Counter()
        self._last_report_s = time.monotonic()
        self._latencies_ms: deque[float] = deque(maxlen=200)
        self._qos_notes: dict[str, str] = {}
        self._qos_signature: dict[str, tuple[Any, ...]] = {}
        self._service_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()

        if self.get_parameter('autostart').value:
            # Transition once the executor spins, so launch and tests see every state change.
            self._autostart_timer = self.create_timer(0.0, self._autostart)

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
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        problems = validate(values)
        if problems:
            for problem in problems:
                self.get_logger().error(f'bad configuration: {problem}')
            return TransitionCallbackReturn.FAILURE
        try:
            settings = PipelineSettings.from_parameters(values)
            self._pipeline = SpatialPipeline.from_settings(settings)
        except (SpatialVlmError, ValueError, OSError, ImportError) as error:
            self.get_logger().error(f'cannot configure the engine: {error}')
            return TransitionCallbackReturn.FAILURE
        # Compiled lifting kernels loaded (or compiled) now, not on the first frame.
        self.get_logger().info(f'lifting kernels ready in {warm_up_lifting():.2f} s')
        self._pairer = StampPairer(PairingConfig.from_seconds(slop_s=values['sync_slop_s']))
        with self._lock:
            self._snapshots = deque(maxlen=int(values['query_buffer_frames']))
        self._start_worker_loop()
        try:
            self._run_in_loop(self._pipeline.start(), timeout_s=600.0)
        except Exception as error:  # noqa: BLE001 - reported as a failed transition
            self.get_logger().error(f'engine start failed: {error}')
            self._stop_worker_loop()
            return TransitionCallbackReturn.FAILURE
        self._tf = TransformSource(self, self.get_logger(), float(values['tf_timeout_s']))
        out = qos.output_profile()
        self._outputs = {
            'scene': self.create_lifecycle_publisher(SpatialScene, '~/scene', out),
            'scene_json': self.create_lifecycle_publisher(String, '~/scene_json', out),
            'markers': self.create_lifecycle_publisher(MarkerArray, '~/markers', out),
            'annotated_image': self.create_lifecycle_publisher(Image, '~/annotated_image', out),
            **self._detections_publisher(out),
            'diagnostics': self.create_publisher(
                DiagnosticArray, '/diagnostics', qos_profile_system_default
            ),
        }
        self._service_handles = [
            self.create_service(
                SpatialQuery, '~/query', self._on_query, callback_group=self._service_group
            ),
            self.create_service(
                LocateObject, '~/locate', self._on_locate, callback_group=self._service_group
            ),
        ]
        self._timer_handles.append(
            self.create_timer(values['diagnostics_period_s'], self._publish_diagnostics)
        )
        self.get_logger().info(
            f'configured: engine={values["engine"]} model={values["model"]} '
            f'rate={values["rate_hz"]} Hz in_flight={values["max_in_flight"]}'
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the scheduler. SUCCESS leads to active."""
        assert self._pipeline is not None and self._loop is not None
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        self._scheduler = FrameScheduler(
            process=self._process_frame,
            publish=self._publish_scene,
            config=SchedulerConfig(
                rate_hz=values['rate_hz'],
                max_in_flight=values['max_in_flight'],
                max_age_s=values['max_frame_age_s'],
                timeout_s=values['request_timeout_s'],
            ),
            clock_ns=lambda: self.get_clock().now().nanoseconds,
            on_error=self._on_frame_error,
        )
        self._stop_event = asyncio.Event()
        self._scheduler_future = asyncio.run_coroutine_threadsafe(
            self._scheduler.run(self._stop_event), self._loop
        )
        self._create_input_subscriptions()
        self._timer_handles.append(self.create_timer(1.0, self._recheck_input_qos))
        self.get_logger().info('active: waiting for paired RGB, depth and CameraInfo')
        # The parent switches the lifecycle publishers on.
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the scheduler (in-flight results are discarded)."""
        self._destroy_input_subscriptions()
        self._stop_scheduler()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the engine, publishers and services. SUCCESS leads to unconfigured."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything from whichever state we are in."""
        self._destroy_input_subscriptions()
        self._stop_scheduler()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Free the engine and threads without a lifecycle transition (process exit)."""
        self._destroy_input_subscriptions()
        self._stop_scheduler()
        self._teardown()

    def _teardown(self) -> None:
        if self._pipeline is not None and self._loop is not None:
            try:
                self._run_in_loop(self._pipeline.shutdown(), timeout_s=30.0)
            except Exception as error:  # noqa: BLE001 - teardown must go on
                self.get_logger().warning(f'engine shutdown: {error}')
        self._pipeline = None
        self._stop_worker_loop()
        for timer in self._timer_handles:
            self.destroy_timer(timer)
        self._timer_handles = []
        for service in self._service_handles:
            self.destroy_service(service)
        self._service_handles = []
        for name, publisher in self._outputs.items():
            if name == 'diagnostics':
                self.destroy_publisher(publisher)
            else:
                self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        self._pairer = None
        self._snapshots.clear()
        self._scenes.clear()

    # ---------------------------------------------------------------- worker loop

    def _start_worker_loop(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name='spatial_vlm_worker', daemon=True
        )
        self._loop_thread.start()

    def _stop_worker_loop(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=10.0)
        self._loop = None
        self._loop_thread = None

    def _run_in_loop(self, coroutine: Any, timeout_s: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def _stop_scheduler(self) -> None:
        if self._stop_event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._scheduler_future is not None:
            try:
                self._scheduler_future.result(timeout=10.0)
            except Exception as error:  # noqa: BLE001
                self.get_logger().warning(f'scheduler stop: {error}')
        self._scheduler_future = None
        self._stop_event = None
        self._scheduler = None

    # ---------------------------------------------------------------- inputs

    def _input_topics(self) -> dict[str, tuple[type, str]]:
        if self.get_parameter('compressed_input').value:
            return {
                'rgb': (CompressedImage, 'color/image_raw/compressed'),
                'depth': (CompressedImage, 'depth/image_raw/compressedDepth'),
                'info': (CameraInfo, 'color/camera_info'),
            }
        return {
            'rgb': (Image, 'color/image_raw'),
            'depth': (Image, 'depth/image_raw'),
            'info': (CameraInfo, 'color/camera_info'),
        }

    def _create_input_subscriptions(self) -> None:
        mode = self.get_parameter('input_qos').value
        for stream, (msg_type, topic) in self._input_topics().items():
            resolved = self.resolve_topic_name(topic)
            publishers = self.get_publishers_info_by_topic(resolved)
            choice = qos.choose_input_qos(
                mode,
                [info.qos_profile.reliability for info in publishers],
                [info.qos_profile.durability for info in publishers],
            )
            if choice.incompatible:
                self._report_error('qos', f'{resolved}: {choice.note}')
            self._qos_notes[stream] = f'{resolved}: {choice.note}'
            self._qos_signature[stream] = _qos_signature(publishers)
            self._inputs[stream] = self.create_subscription(
                msg_type,
                topic,
                lambda msg, stream=stream: self._on_input(stream, msg),
                qos.input_profile(choice),
                callback_group=self._input_group,
            )
            self.get_logger().info(f'subscribed {self._qos_notes[stream]}')

    def _destroy_input_subscriptions(self) -> None:
        for subscription in self._inputs.values():
            self.destroy_subscription(subscription)
        self._inputs = {}

    def _recheck_input_qos(self) -> None:
        """Re-subscribe when the publishers' QoS changed (auto mode only)."""
        if not self._inputs or self.get_parameter('input_qos').value != 'auto':
            self._check_starvation()
            return
        changed = False
        for stream, (_, topic) in self._input_topics().items():
            publishers = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
            if _qos_signature(publishers) != self._qos_signature.get(stream):
                changed = True
        if changed:
            self.get_logger().info('camera publishers changed; re-matching input QoS')
            self._destroy_input_subscriptions()
            self._create_input_subscriptions()
        self._check_starvation()

    def _check_starvation(self) -> None:
        """Loudly diagnose the classic "publishers exist but nothing arrives" symptom."""
        for stream, (_, topic) in self._input_topics().items():
            resolved = self.resolve_topic_name(topic)
            count = self.count_publishers(resolved)
            if count and self._received[stream] == 0:
                self._report_error(
                    'no_data',
                    f'{count} publisher(s) on {resolved} but nothing received: check QoS '
                    '(input_qos) and, for large images over best effort, set '
                    'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on both sides',
                )
        if self._received['info'] > 5 * max(self._received['rgb'], 1) + 10:
            self._report_error(
                'image_loss',
                f'camera_info arrives ({self._received["info"]}) but color images barely do '
                f'({self._received["rgb"]}): large samples are being lost; use reliable QoS or '
                'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on both sides',
            )

    def _on_input(self, stream: str, msg: Any) -> None:
        """Subscription callback: store only; decoding happens on the worker."""
        try:
            self._received[stream] += 1
            if self._pairer is None or self._scheduler is None:
                return
            stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
            if not self._accept_stamp(stream, stamp_ns):
                return
            for paired in self._pairer.add(stream, stamp_ns, msg):
                with self._lock:
                    self._snapshots.append(paired)
                self._scheduler.submit(paired.stamp_ns, paired, self._loop)
        except Exception as error:  # noqa: BLE001 - a bad message never kills the node
            self._report_error('input', f'{stream}: {type(error).__name__}: {error}')

    def _accept_stamp(self, stream: str, stamp_ns: int) -> bool:
        """Refuse stamps that would wedge the stream; reset on a time jump backwards.

        A frame stamped in the future would become every watermark's newest and make each
        correctly stamped frame after it look late; a zero stamp means the driver does not stamp.
        A jump far backwards (a looping bag, a restarted simulator) starts the stream afresh.
        """
        if stamp_ns <= 0:
            self._report_error('stamp', f'{stream}: zero stamp; the driver must set header.stamp')
            return False
        now_ns = self.get_clock().now().nanoseconds
        if now_ns > 0 and stamp_ns - now_ns > FUTURE_STAMP_TOLERANCE_NS:
            self._report_error(
                'stamp',
                f'{stream}: stamp {(stamp_ns - now_ns) / 1e9:.1f} s in the future of this '
                "node's clock; check clock sync and use_sim_time",
            )
            return False
        newest = self._newest_stamp_ns.get(stream, 0)
        if newest - stamp_ns > TIME_JUMP_BACK_NS:
            self._report_error(
                'time_jump',
                f'{stream}: time jumped back {(newest - stamp_ns) / 1e9:.1f} s; restarting',
            )
            assert self._pairer is not None and self._scheduler is not None
            self._pairer.reset()
            self._scheduler.reset_watermarks()
            self._newest_stamp_ns.clear()
        self._newest_stamp_ns[stream] = max(stamp_ns, self._newest_stamp_ns.get(stream, 0))
        return True

    # ---------------------------------------------------------------- processing (worker)

    async def _process_frame(self, frame: StampedFrame[RgbdSet]) -> Scene:
        assert self._pipeline is not None
        # The vocabulary is the pipeline config's, kept current by _apply_runtime_parameters.
        return await self._pipeline.perceive_paired(
            frame.frame,
            now_ns=lambda: self.get_clock().now().nanoseconds,
            transforms=self._tf,
        )

    def _publish_scene(self, frame: StampedFrame[RgbdSet], scene: Scene) -> None:
        try:
            with self._lock:
                self._scenes.append(scene)
                self._latencies_ms.append(scene.latency_ms)
            if scene.error:
                self._report_error('engine_output', scene.error)
            for warning in scene.warnings:
                self._report_error('input_warning', warning)
            self._outputs['scene'].publish(conversions.scene_to_msg(scene))
            # JSON and markers cost ~10 ms per scene: only built when someone listens.
            if self._outputs['scene_json'].get_subscription_count() > 0:
                self._outputs['scene_json'].publish(String(data=scene_to_json(scene)))
            if self._outputs['markers'].get_subscription_count() > 0:
                self._outputs['markers'].publish(scene_markers(scene))
            detections = self._outputs.get('detections')
            if detections is not None:
                detections.publish(conversions.scene_to_detections(scene))
            annotated = self._outputs['annotated_image']
            pipeline = self._pipeline
            if annotated.get_subscription_count() > 0 and pipeline is not None:
                # Drawing costs a copy of the decoded colour image: only when someone looks.
                rgb = pipeline.rgb_of(frame.frame)
                annotated.publish(conversions.rgb_to_image_msg(annotate_scene(rgb, scene), scene))
        except Exception as error:  # noqa: BLE001
            self._report_error('publish', f'{type(error).__name__}: {error}')

    def _detections_publisher(self, qos_profile: Any) -> dict[str, Any]:
        """``~/detections`` (vision_msgs/Detection3DArray) where vision_msgs is installed."""
        if not conversions.detections_available():
            self.get_logger().info('vision_msgs is not installed: no ~/detections')
            return {}
        from vision_msgs.msg import Detection3DArray

        return {
            'detections': self.create_lifecycle_publisher(
                Detection3DArray, '~/detections', qos_profile
            )
        }

    def _on_frame_error(self, frame: StampedFrame[RgbdSet], error: BaseException) -> None:
        kind = 'timeout' if isinstance(error, asyncio.TimeoutError) else 'frame'
        self._report_error(kind, f'frame {frame.stamp_ns}: {type(error).__name__}: {error}')

    def _report_error(self, kind: str, message: str) -> None:
        """Count, keep for /diagnostics, and log at most every 5 s per kind of error."""
        now_s = time.monotonic()
        with self._lock:
            self._errors[kind] += 1
            self._last_error = f'[{kind}] {message}'
            log_it = now_s - self._last_logged_s.get(kind, -1e9) >= 5.0
            if log_it:
                self._last_logged_s[kind] = now_s
        if log_it:
            self.get_logger().warning(f'[{kind}] {message}')

    # ---------------------------------------------------------------- services

    def _snapshot(self, stamp_ns: int) -> RgbdSet | None:
        with self._lock:
            if not self._snapshots:
                return None
            if stamp_ns == 0:
                return self._snapshots[-1]
            best = min(self._snapshots, key=lambda paired: abs(paired.stamp_ns - stamp_ns))
        slop_ns = int(self.get_parameter('sync_slop_s').value * 1e9)
        return best if abs(best.stamp_ns - stamp_ns) <= max(slop_ns, 1) else None

    def _cached_scene(self, stamp_ns: int) -> Scene | None:
        with self._lock:
            for scene in reversed(self._scenes):
                if scene.stamp_ns == stamp_ns:
                    return scene
        return None

    def _priority(self, work: Any, timeout_s: float) -> Any:
        if self._scheduler is None or self._loop is None:
            raise SpatialVlmError('node is not active')
        scheduler = self._scheduler
        return asyncio.run_coroutine_threadsafe(scheduler.run_priority(work), self._loop).result(
            timeout_s
        )

    def _on_query(
        self, request: SpatialQuery.Request, response: SpatialQuery.Response
    ) -> SpatialQuery.Response:
        question = request.question.strip()
        if not question or len(request.question.encode()) > MAX_QUESTION_BYTES:
            response.success = False
            response.message = f'question must be 1..{MAX_QUESTION_BYTES} bytes'
            return response
        frame = self._snapshot(conversions.stamp_to_ns(request.stamp))
        if frame is None:
            response.success = False
            response.message = 'no paired RGB-D frame for that stamp (or none received yet)'
            return response
        pipeline = self._pipeline
        if pipeline is None:
            response.success = False
            response.message = 'node is not active'
            return response
        timeout_s = float(self.get_parameter('request_timeout_s').value) * 2 + 1.0
        cached = self._cached_scene(frame.stamp_ns)
        try:
            answer = self._priority(
                lambda: pipeline.answer_paired(
                    frame,
                    question,
                    scene=cached,
                    now_ns=lambda: self.get_clock().now().nanoseconds,
                    transforms=self._tf,
                ),
                timeout_s,
            )
        except Exception as error:  # noqa: BLE001 - every failure is a typed reply
            self._report_error('query', f'{type(error).__name__}: {error}')
            response.success = False
            response.message = f'{type(error).__name__}: {error}'
            return response
        response.success = answer.ok
        response.answer = answer.text
        response.object_ids = list(answer.object_ids)
        response.scene = conversions.scene_to_msg(answer.scene)
        response.message = answer.message
        return response

    def _on_locate(
        self, request: LocateObject.Request, response: LocateObject.Response
    ) -> LocateObject.Response:
        description = request.description.strip()
        if not description or len(request.description.encode()) > MAX_DESCRIPTION_BYTES:
            response.found = False
            response.reason = f'description must be 1..{MAX_DESCRIPTION_BYTES} bytes'
            return response
        pipeline = self._pipeline
        frame = self._snapshot(0)
        if pipeline is None or frame is None:
            response.found = False
            response.reason = 'no paired RGB-D frame received yet' if pipeline else 'not active'
            return response
        scene = self._cached_scene(frame.stamp_ns)
        match = find_best_match(scene, description) if scene is not None else None
        if match is None:
            timeout_s = float(self.get_parameter('request_timeout_s').value) + 1.0
            try:
                scene = self._priority(
                    lambda: pipeline.perceive_paired(
                        frame,
                        vocabulary=(description,),
                        now_ns=lambda: self.get_clock().now().nanoseconds,
                        transforms=self._tf,
                    ),
                    timeout_s,
                )
            except Exception as error:  # noqa: BLE001
                self._report_error('locate', f'{type(error).__name__}: {error}')
                response.found = False
                response.reason = f'{type(error).__name__}: {error}'
                return response
            match = find_best_match(scene, description)
        if match is None or scene is None:
            response.found = False
            response.reason = f'no object matching {description!r} in the newest frame'
            return response
        response.object = conversions.object_to_msg(match, scene)
        if match.lifted.position is None:
            response.found = False
            response.reason = f'{match.id} has too little valid depth for a position'
            return response
        target = request.target_frame or scene.frame_id
        position = np.asarray(match.lifted.position)
        if target != scene.frame_id:
            assert self._tf is not None
            transform = self._tf.lookup(target, scene.frame_id, scene.stamp_ns)
            if transform.matrix is None:
                response.found = False
                response.reason = transform.reason
                return response
            position = transform.matrix[:3, :3] @ position + transform.matrix[:3, 3]
        located = conversions.pose_of(match, target, scene.stamp_ns)
        located.pose.position.x, located.pose.position.y, located.pose.position.z = (
            float(v) for v in position
        )
        response.found = True
        response.pose = located
        return response

    # ---------------------------------------------------------------- parameters, diagnostics

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        for parameter in parameters:
            values[parameter.name] = parameter.value
        problems = validate(values)
        return SetParametersResult(successful=not problems, reason='; '.join(problems))

    def _apply_runtime_parameters(self, parameters: list[Parameter]) -> None:
        """Runtime-changeable parameters take effect for the next frame (already validated)."""
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
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

    def _publish_diagnostics(self) -> None:
        publisher = self._outputs.get('diagnostics')
        if publisher is None:
            return
        now_s = time.monotonic()
        elapsed_s = max(now_s - self._last_report_s, 1e-3)
        with self._lock:
            latencies = list(self._latencies_ms)
            errors = dict(self._errors)
            last_error = self._last_error
            rates = {
                stream: (self._received[stream] - self._received_at_last_report[stream])
                / elapsed_s
                for stream in ('rgb', 'depth', 'info')
            }
            self._received_at_last_report = Counter(self._received)
            self._last_report_s = now_s
        scheduler = self._scheduler
        drops = scheduler.drop_counts() if scheduler is not None else {}
        pairing = self._pairer.stats().as_flat_dict() if self._pairer is not None else {}
        values: dict[str, str] = {
            'state': 'active' if scheduler is not None else 'inactive',
            'latency_p50_ms': f'{np.percentile(latencies, 50):.1f}' if latencies else 'n/a',
            'latency_p95_ms': f'{np.percentile(latencies, 95):.1f}' if latencies else 'n/a',
            'published_scenes': str(scheduler.published if scheduler else 0),
            'in_flight': str(scheduler.in_flight if scheduler else 0),
            'queue_depth': str(int(scheduler is not None and scheduler.slot.peek() is not None)),
            'last_error': last_error,
            'tf': self._tf.status if self._tf is not None else 'n/a',
        }
        values.update({f'input_rate_hz.{k}': f'{v:.2f}' for k, v in rates.items()})
        values.update({f'received.{k}': str(v) for k, v in self._received.items()})
        values.update({f'drops.{k}': str(v) for k, v in drops.items()})
        values.update({f'pairing.{k}': str(v) for k, v in pairing.items()})
        values.update({f'errors.{k}': str(v) for k, v in errors.items()})
        values.update({f'qos.{k}': v for k, v in self._qos_notes.items()})
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if last_error else DiagnosticStatus.OK,
            name=f'{self.get_fully_qualified_name()}: pipeline',
            hardware_id=self.get_fully_qualified_name(),
            message=last_error or 'ok',
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        publisher.publish(array)


def _qos_signature(publishers: list[Any]) -> tuple[Any, ...]:
    return tuple(
        sorted(
            (
                str(info.node_name),
                int(info.qos_profile.reliability),
                int(info.qos_profile.durability),
            )
            for info in publishers
        )
    )


def main(args: list[str] | None = None) -> int:
    # Best-effort 640x480 images between processes arrive only when both sides use Fast DDS's
    # LARGE_DATA transports; measured here, a LARGE_DATA subscriber still receives every frame
    # of a RELIABLE publisher on default transports, so it is a safe default for the node.
    # An explicit FASTDDS_BUILTIN_TRANSPORTS (e.g. DEFAULT) wins. Must be set before rclpy.init.
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
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
