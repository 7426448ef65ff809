# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
One camera's inputs.

The topic table, subscriptions with matched QoS, starvation checks, the stamp gate, and pairing
by stamp. A node owns one per camera (``cameras``: one per namespace),
each with its own pairer, health monitors and clock offset, and each paired set says which
camera it came from (``RgbdSet.camera``).

Subscription callbacks only store: stamps are checked, messages paired, and each completed
RGB-D set handed to ``on_paired``; decoding happens later, on the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import re
import time
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spatial_vlm_ros.core.input_health import (
    ERROR,
    GRACE_S,
    OK,
    PublisherInfo,
    StreamContext,
    StreamMonitor,
    StreamStatus,
    assess_stream,
    similar_topics,
)
from spatial_vlm_ros.core.pairing import (
    DEPTH,
    INFO,
    RGB,
    STREAMS,
    PairingConfig,
    RgbdSet,
    StampPairer,
)
from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.ros import conversions, qos
from spatial_vlm_ros.ros.diagnostics import ErrorLog
from spatial_vlm_ros.ros.transport_probe import TransportProbe, node_transports, probe_applies
from spatial_vlm_ros.settings import camera_namespaces

FUTURE_STAMP_TOLERANCE_NS = 5 * 10**9  # clock skew allowed between camera and node
TIME_JUMP_BACK_NS = 5 * 10**9  # a stream going back further restarts pairing (bag loop)
LOG_AGAIN_S = 30.0  # a lasting input problem is logged again this often


@dataclass(frozen=True)
class InputTopics:
    """
    Where one camera's streams are.

    Base topics (relative names resolve in ``namespace``, then in the node's namespace) and
    image_transport-style transports.
    """

    namespace: str = ''
    color: str = 'color/image_raw'
    depth: str = 'depth/image_raw'
    info: str = 'color/camera_info'
    color_transport: str = 'raw'
    depth_transport: str = 'raw'

    @classmethod
    def from_values(cls, values: Mapping[str, Any], namespace: str | None = None) -> InputTopics:
        """
        From node parameters (``namespace`` replaces ``camera_namespace``).

        The deprecated ``compressed_input`` switches both streams.
        """
        color_transport = str(values['image_transport'])
        depth_transport = str(values['depth_image_transport'])
        if values.get('compressed_input'):
            color_transport, depth_transport = 'compressed', 'compressedDepth'
        return cls(
            namespace=str(values['camera_namespace']) if namespace is None else namespace,
            color=str(values['color_topic']),
            depth=str(values['depth_topic']),
            info=str(values['camera_info_topic']),
            color_transport=color_transport,
            depth_transport=depth_transport,
        )

    def streams(self) -> dict[str, tuple[type, str, str]]:
        """Stream -> (message type, base topic within the camera namespace, transport)."""
        color, depth = self.color_transport, self.depth_transport
        return {
            RGB: (_message_type(color), self._join(self.color), color),
            DEPTH: (_message_type(depth), self._join(self.depth), depth),
            INFO: (CameraInfo, self._join(self.info), 'raw'),
        }

    def _join(self, name: str) -> str:
        if name.startswith('/') or not self.namespace:
            return name
        return self.namespace.rstrip('/') + '/' + name


def camera_topics(values: Mapping[str, Any]) -> dict[str, InputTopics]:
    """
    Return camera name -> its topics, for every camera the node serves.

    The cameras are ``cameras``, or the one at ``camera_namespace``; see
    ``settings.camera_namespaces`` for the names.
    """
    return {
        name: InputTopics.from_values(values, namespace)
        for name, namespace in camera_namespaces(values).items()
    }


def _message_type(transport: str) -> type:
    return Image if transport == 'raw' else CompressedImage


def transport_topic(resolved_base: str, transport: str) -> str:
    """Return the topic a transport uses, as image_transport names it: ``<base>/<transport>``."""
    return resolved_base if transport == 'raw' else f'{resolved_base}/{transport}'


def _qos_signature(publishers: list[Any]) -> tuple[Any, ...]:
    """
    Return what the subscription QoS depends on.

    The set of offered (reliability, durability).
    """
    return tuple(
        sorted(
            {
                (int(info.qos_profile.reliability), int(info.qos_profile.durability))
                for info in publishers
            }
        )
    )


class CameraInputs:
    """
    RGB, depth and CameraInfo of one camera, paired by stamp, with their health.

    :param node: the node that owns the subscriptions.
    :param topics: where the streams are and their transports.
    :param qos_mode: ``input_qos`` (auto | reliable | best_effort).
    :param pairing: pairing tolerances.
    :param errors: where problems are counted and logged.
    :param callback_group: the group of the subscription callbacks.
    :param on_paired: called (on an executor thread) with every completed RGB-D set and the time
        its age is measured from (None: its stamp; else the arrival time, when the camera
        clock is offset from the node's).
    :param on_time_jump: called when the stream's stamps jump back (a looping bag).
    :param max_frame_age_s: the scheduler's limit, which decides when an offset matters.
    :param name: the camera's name in the node ('' with a single camera), carried by every
        paired set (``RgbdSet.camera``).
    """

    def __init__(
        self,
        node: Node,
        *,
        topics: InputTopics,
        qos_mode: str,
        pairing: PairingConfig,
        errors: ErrorLog,
        callback_group: CallbackGroup,
        on_paired: Callable[[RgbdSet, int | None], None],
        on_time_jump: Callable[[], None],
        max_frame_age_s: float = 1.0,
        name: str = '',
    ) -> None:
        self._node = node
        self.name = name
        self.input_topics = topics
        self._qos_mode = qos_mode
        self._errors = errors
        self._group = callback_group
        self._on_paired = on_paired
        self._on_time_jump = on_time_jump
        self.max_frame_age_s = max_frame_age_s
        self.pairer = StampPairer(pairing, camera=name)
        self._subscriptions: dict[str, Any] = {}
        self._newest_stamp_ns: dict[str, int] = {}
        self.monitors = {stream: StreamMonitor() for stream in STREAMS}
        self.qos_notes: dict[str, str] = {}
        self._qos_problems: dict[str, str] = {}
        self._qos_signature: dict[str, tuple[Any, ...]] = {}
        self._subscribed_mono_ns = time.monotonic_ns()
        self._publisher_seen_mono_ns: dict[str, int] = {}
        self._probe: TransportProbe | None = None
        # Set while the RGB stream's stamps are steadily offset from the node clock: frames are
        # then aged from their arrival time (the stamp - offset would be the same).
        self.clock_offset_ns: int | None = None
        self.statuses: dict[str, StreamStatus] = {}
        self._logged: dict[str, tuple[tuple[int, str], float]] = {}

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    @property
    def received(self) -> dict[str, int]:
        return {stream: monitor.received for stream, monitor in self.monitors.items()}

    def topics(self) -> dict[str, tuple[type, str]]:
        """
        Stream name -> (message type, fully qualified topic).

        Like image_transport, the base name is resolved first (node namespace and remapping
        rules apply to it), then the transport's suffix is added.
        """
        return {
            stream: (msg_type, transport_topic(self._node.resolve_topic_name(base), transport))
            for stream, (msg_type, base, transport) in self.input_topics.streams().items()
        }

    # ---------------------------------------------------------------- subscriptions

    def subscribe(self) -> None:
        """Subscribe to every stream with QoS matched to its publishers."""
        node = self._node
        for stream, (msg_type, topic) in self.topics().items():
            publishers = node.get_publishers_info_by_topic(topic)
            choice = qos.choose_input_qos(
                self._qos_mode,
                [info.qos_profile.reliability for info in publishers],
                [info.qos_profile.durability for info in publishers],
            )
            self._qos_problems[stream] = choice.note if choice.incompatible else ''
            if choice.incompatible:
                self._errors.report('qos', f'{topic}: {choice.note}')
            self.qos_notes[stream] = f'{topic}: {choice.note}'
            self._qos_signature[stream] = _qos_signature(publishers)
            self._subscriptions[stream] = node.create_subscription(
                msg_type,
                topic,
                lambda msg, stream=stream: self._on_message(stream, msg),
                qos.input_profile(choice),
                callback_group=self._group,
            )
            node.get_logger().info(f'subscribed {self.qos_notes[stream]}')
        self._subscribed_mono_ns = time.monotonic_ns()

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions.values():
            self._node.destroy_subscription(subscription)
        self._subscriptions = {}

    def recheck(self) -> None:
        """Re-subscribe when the publishers' QoS changed (auto mode only)."""
        if not self._subscriptions or self._qos_mode != 'auto':
            return
        changed = False
        for stream, (_, topic) in self.topics().items():
            publishers = self._node.get_publishers_info_by_topic(topic)
            if _qos_signature(publishers) != self._qos_signature.get(stream):
                changed = True
        if changed:
            camera = f' ({self.name})' if self.name else ''
            self._node.get_logger().info(
                f'camera publishers changed{camera}; re-matching input QoS'
            )
            subscribed_mono_ns = self._subscribed_mono_ns
            self.unsubscribe()
            self.subscribe()
            self._subscribed_mono_ns = subscribed_mono_ns  # waiting time goes on

    # ---------------------------------------------------------------- health

    def assess(self, use_sim_time: bool) -> dict[str, StreamStatus]:
        """
        Each stream's level and reason from the current graph and statistics.

        Also decides whether frames are aged by arrival time (a steady clock offset) and starts a
        transport probe when a topic has had no publisher for a while.
        """
        node = self._node
        mono_ns = time.monotonic_ns()
        since_subscribed_s = (mono_ns - self._subscribed_mono_ns) / 1e9
        topics = self.topics()
        own = node.get_fully_qualified_name() + '/'
        # Look-alike candidates: topics that someone publishes (subscriptions, this node's own
        # included, also name topics), other than this node's outputs.
        published = [
            (name, types)
            for name, types in node.get_topic_names_and_types()
            if not name.startswith(own) and node.count_publishers(name) > 0
        ]
        clock_running = node.get_clock().now().nanoseconds > 0
        info_rate = self.monitors[INFO].rate_hz(mono_ns)
        missing = []
        statuses: dict[str, StreamStatus] = {}
        for stream, (msg_type, topic) in topics.items():
            infos = node.get_publishers_info_by_topic(topic)
            publishers = tuple(
                PublisherInfo(
                    node=(info.node_namespace.rstrip('/') + '/' + info.node_name),
                    type_name=info.topic_type,
                    best_effort=info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT,
                )
                for info in infos
            )
            if publishers:
                self._publisher_seen_mono_ns.setdefault(stream, mono_ns)
            else:
                self._publisher_seen_mono_ns.pop(stream, None)
                missing.append(topic)
            seen = self._publisher_seen_mono_ns.get(stream)
            context = StreamContext(
                stream=stream,
                topic=topic,
                expected_type=_type_name(msg_type),
                publishers=publishers,
                similar_topics=similar_topics(topic, published, IMAGE_LIKE_TYPES)
                if not publishers
                else (),
                since_subscribed_s=since_subscribed_s,
                since_publisher_seen_s=None if seen is None else (mono_ns - seen) / 1e9,
                qos_problem=self._qos_problems.get(stream, ''),
                transports=node_transports(),
                transport_probe=self._probe.finding(topic) if self._probe else '',
                max_frame_age_s=self.max_frame_age_s,
                use_sim_time=use_sim_time,
                clock_running=clock_running,
                info_rate_hz=info_rate if stream != INFO else 0.0,
            )
            statuses[stream] = assess_stream(self.monitors[stream], context, mono_ns)
        self._maybe_probe(missing, since_subscribed_s)
        offset_s = statuses[RGB].offset_s
        offset_ns = None if offset_s is None else int(offset_s * 1e9)
        if (offset_ns is None) != (self.clock_offset_ns is None):
            message = statuses[RGB].message
            if offset_ns is None:
                node.get_logger().info('camera stamps agree with the node clock again')
            else:
                node.get_logger().warning(message)
        self.clock_offset_ns = offset_ns
        self.statuses = statuses
        self._log_changes(statuses)
        return statuses

    def _log_changes(self, statuses: dict[str, StreamStatus]) -> None:
        """
        Log a stream's problem when it appears or changes, and its recovery once.

        Also every LOG_AGAIN_S while it lasts: /diagnostics has the current state at all times.
        """
        now_s = time.monotonic()
        logger = self._node.get_logger()
        for stream, status in statuses.items():
            kind = (status.level, re.sub(r'[-\d.]+', '#', status.message))
            previous = self._logged.get(stream)
            due = previous is None or previous[0] != kind or now_s - previous[1] >= LOG_AGAIN_S
            if status.level == OK:
                if previous is not None and previous[0][0] != OK:
                    logger.info(f'{status.values.get("topic", stream)}: {status.message} (ok)')
                self._logged[stream] = (kind, now_s)
                continue
            if due:
                if status.level == ERROR:
                    logger.error(status.message)
                else:
                    logger.warning(status.message)
                self._logged[stream] = (kind, now_s)

    def _maybe_probe(self, missing: list[str], since_subscribed_s: float) -> None:
        if not missing:
            self._probe = None  # every topic has a publisher: re-arm for a later loss
            return
        if self._probe is not None or since_subscribed_s < GRACE_S or not probe_applies():
            return
        self._probe = TransportProbe(missing)

    def close(self) -> None:
        if self._probe is not None:
            self._probe.join(timeout_s=10.0)

    # ---------------------------------------------------------------- messages

    def _on_message(self, stream: str, msg: Any) -> None:
        """
        Subscription callback: store only; decoding happens on the worker.

        A bad message never kills the node: an unexpected exception here is a bug, reported
        with its traceback (once per kind) and counted, and the next message is handled.
        """
        try:
            stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
            now_ns = self._node.get_clock().now().nanoseconds
            self.monitors[stream].on_message(stamp_ns, now_ns, time.monotonic_ns())
            if not self._accept_stamp(stream, stamp_ns, now_ns):
                return
            for paired in self.pairer.add(stream, stamp_ns, msg, received_ns=now_ns):
                self._on_paired(paired, paired.received_ns if self.clock_offset_ns else None)
        except SpatialVlmError as error:
            self._errors.report('input', f'{stream}: {type(error).__name__}: {error}')
        except Exception as error:  # noqa: BLE001 - callback boundary, traceback logged
            self._errors.report_exception('input', error)

    def _accept_stamp(self, stream: str, stamp_ns: int, now_ns: int) -> bool:
        """
        Refuse stamps that would wedge the stream; restart on a time jump backwards.

        A frame stamped in the future would become every watermark's newest and make each
        correctly stamped frame after it look late (unless the camera clock is steadily ahead,
        see ``assess``); a zero stamp means the driver does not stamp. A jump far backwards (a
        looping bag, a restarted simulator) starts the stream afresh.
        """
        if stamp_ns <= 0:
            self._errors.report('stamp', f'{stream}: zero stamp; the driver must set header.stamp')
            return False
        ahead_ns = stamp_ns - now_ns
        if now_ns > 0 and ahead_ns > FUTURE_STAMP_TOLERANCE_NS and self.clock_offset_ns is None:
            use_sim_time = bool(self._node.get_parameter('use_sim_time').value)
            if not use_sim_time:
                self._errors.report(
                    'stamp',
                    f"{stream}: stamp {ahead_ns / 1e9:.1f} s in the future of this node's "
                    'clock (dropped; a steady offset is accepted within seconds, see '
                    '/diagnostics)',
                )
            # Under sim time this is the tail of a bag loop arriving after /clock went back.
            return False
        newest = self._newest_stamp_ns.get(stream, 0)
        if newest - stamp_ns > TIME_JUMP_BACK_NS:
            jump = f'{stream}: time jumped back {(newest - stamp_ns) / 1e9:.1f} s; restarting'
            if self._node.get_parameter('use_sim_time').value:
                # A looping bag under sim time: expected, not a problem.
                self._node.get_logger().info(jump)
            else:
                self._errors.report('time_jump', jump)
            self.pairer.reset()
            self._on_time_jump()
            self._newest_stamp_ns.clear()
            for monitor in self.monitors.values():
                monitor.reset_clock()
        self._newest_stamp_ns[stream] = max(stamp_ns, self._newest_stamp_ns.get(stream, 0))
        return True


IMAGE_LIKE_TYPES = (
    'sensor_msgs/msg/Image',
    'sensor_msgs/msg/CompressedImage',
    'sensor_msgs/msg/CameraInfo',
)


def _type_name(msg_type: type) -> str:
    module = msg_type.__module__.split('.')  # e.g. sensor_msgs.msg._image
    return f'{module[0]}/msg/{msg_type.__name__}'
