# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One camera's inputs: the topic table, subscriptions with matched QoS, starvation checks, the
stamp gate, and pairing by stamp. A node may own several (one per camera namespace).

Subscription callbacks only store: stamps are checked, messages paired, and each completed
RGB-D set handed to ``on_paired``; decoding happens later, on the worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
import time
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from spatial_vlm_ros.core.pairing import (
    DEPTH,
    INFO,
    RGB,
    PairingConfig,
    RgbdSet,
    StampPairer,
)
from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.ros import conversions, qos
from spatial_vlm_ros.ros.diagnostics import ErrorLog

FUTURE_STAMP_TOLERANCE_NS = 5 * 10**9  # clock skew allowed between camera and node
TIME_JUMP_BACK_NS = 5 * 10**9  # a stream going back further restarts pairing (bag loop)


@dataclass(frozen=True)
class InputTopics:
    """Where one camera's streams are: base topics (relative names resolve in
    ``namespace``, then in the node's namespace) and image_transport-style transports."""

    namespace: str = ''
    color: str = 'color/image_raw'
    depth: str = 'depth/image_raw'
    info: str = 'color/camera_info'
    color_transport: str = 'raw'
    depth_transport: str = 'raw'

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> InputTopics:
        """From node parameters; the deprecated ``compressed_input`` switches both streams."""
        color_transport = str(values['image_transport'])
        depth_transport = str(values['depth_image_transport'])
        if values.get('compressed_input'):
            color_transport, depth_transport = 'compressed', 'compressedDepth'
        return cls(
            namespace=str(values['camera_namespace']),
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


def _message_type(transport: str) -> type:
    return Image if transport == 'raw' else CompressedImage


def transport_topic(resolved_base: str, transport: str) -> str:
    """The topic a transport uses, as image_transport names it: ``<base>/<transport>``."""
    return resolved_base if transport == 'raw' else f'{resolved_base}/{transport}'


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


class CameraInputs:
    """RGB, depth and CameraInfo of one camera, paired by stamp.

    Args:
        node: the node that owns the subscriptions.
        topics: where the streams are and their transports.
        qos_mode: ``input_qos`` (auto | reliable | best_effort).
        pairing: pairing tolerances.
        errors: where problems are counted and logged.
        callback_group: the group of the subscription callbacks.
        on_paired: called (on an executor thread) with every completed RGB-D set.
        on_time_jump: called when the stream's stamps jump back (a looping bag).
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
        on_paired: Callable[[RgbdSet], None],
        on_time_jump: Callable[[], None],
    ) -> None:
        self._node = node
        self.input_topics = topics
        self._qos_mode = qos_mode
        self._errors = errors
        self._group = callback_group
        self._on_paired = on_paired
        self._on_time_jump = on_time_jump
        self.pairer = StampPairer(pairing)
        self._subscriptions: dict[str, Any] = {}
        self._newest_stamp_ns: dict[str, int] = {}
        self.received: Counter[str] = Counter()
        self.qos_notes: dict[str, str] = {}
        self._qos_signature: dict[str, tuple[Any, ...]] = {}
        self._received_at_last_rates: Counter[str] = Counter()
        self._last_rates_s = time.monotonic()

    def rates(self) -> dict[str, float]:
        """Messages per second on each stream since the previous call."""
        now_s = time.monotonic()
        elapsed_s = max(now_s - self._last_rates_s, 1e-3)
        rates = {
            stream: (self.received[stream] - self._received_at_last_rates[stream]) / elapsed_s
            for stream in self.topics()
        }
        self._received_at_last_rates = Counter(self.received)
        self._last_rates_s = now_s
        return rates

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    def topics(self) -> dict[str, tuple[type, str]]:
        """Stream name -> (message type, fully qualified topic).

        Like image_transport, the base name is resolved first (node namespace and remapping
        rules apply to it), then the transport's suffix is added.
        """
        return {
            stream: (msg_type, transport_topic(self._node.resolve_topic_name(base), transport))
            for stream, (msg_type, base, transport) in self.input_topics.streams().items()
        }

    def subscribe(self) -> None:
        """Subscribe to every stream with QoS matched to its publishers."""
        node = self._node
        for stream, (msg_type, topic) in self.topics().items():
            resolved = node.resolve_topic_name(topic)
            publishers = node.get_publishers_info_by_topic(resolved)
            choice = qos.choose_input_qos(
                self._qos_mode,
                [info.qos_profile.reliability for info in publishers],
                [info.qos_profile.durability for info in publishers],
            )
            if choice.incompatible:
                self._errors.report('qos', f'{resolved}: {choice.note}')
            self.qos_notes[stream] = f'{resolved}: {choice.note}'
            self._qos_signature[stream] = _qos_signature(publishers)
            self._subscriptions[stream] = node.create_subscription(
                msg_type,
                topic,
                lambda msg, stream=stream: self._on_message(stream, msg),
                qos.input_profile(choice),
                callback_group=self._group,
            )
            node.get_logger().info(f'subscribed {self.qos_notes[stream]}')

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions.values():
            self._node.destroy_subscription(subscription)
        self._subscriptions = {}

    def recheck(self) -> None:
        """Re-subscribe when the publishers' QoS changed (auto mode only); check starvation."""
        if self._subscriptions and self._qos_mode == 'auto':
            changed = False
            for stream, (_, topic) in self.topics().items():
                resolved = self._node.resolve_topic_name(topic)
                publishers = self._node.get_publishers_info_by_topic(resolved)
                if _qos_signature(publishers) != self._qos_signature.get(stream):
                    changed = True
            if changed:
                self._node.get_logger().info('camera publishers changed; re-matching input QoS')
                self.unsubscribe()
                self.subscribe()
        self._check_starvation()

    def _check_starvation(self) -> None:
        """Loudly diagnose the classic "publishers exist but nothing arrives" symptom."""
        for stream, (_, topic) in self.topics().items():
            resolved = self._node.resolve_topic_name(topic)
            count = self._node.count_publishers(resolved)
            if count and self.received[stream] == 0:
                self._errors.report(
                    'no_data',
                    f'{count} publisher(s) on {resolved} but nothing received: check QoS '
                    '(input_qos) and, for large images over best effort, set '
                    'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on both sides',
                )
        if self.received[INFO] > 5 * max(self.received[RGB], 1) + 10:
            self._errors.report(
                'image_loss',
                f'camera_info arrives ({self.received[INFO]}) but color images barely do '
                f'({self.received[RGB]}): large samples are being lost; use reliable QoS or '
                'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on both sides',
            )

    def _on_message(self, stream: str, msg: Any) -> None:
        """Subscription callback: store only; decoding happens on the worker.

        A bad message never kills the node: an unexpected exception here is a bug, reported
        with its traceback (once per kind) and counted, and the next message is handled.
        """
        self.received[stream] += 1
        try:
            stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
            if not self._accept_stamp(stream, stamp_ns):
                return
            for paired in self.pairer.add(stream, stamp_ns, msg):
                self._on_paired(paired)
        except SpatialVlmError as error:
            self._errors.report('input', f'{stream}: {type(error).__name__}: {error}')
        except Exception as error:  # noqa: BLE001 - callback boundary, traceback logged
            self._errors.report_exception('input', error)

    def _accept_stamp(self, stream: str, stamp_ns: int) -> bool:
        """Refuse stamps that would wedge the stream; reset on a time jump backwards.

        A frame stamped in the future would become every watermark's newest and make each
        correctly stamped frame after it look late; a zero stamp means the driver does not stamp.
        A jump far backwards (a looping bag, a restarted simulator) starts the stream afresh.
        """
        if stamp_ns <= 0:
            self._errors.report('stamp', f'{stream}: zero stamp; the driver must set header.stamp')
            return False
        now_ns = self._node.get_clock().now().nanoseconds
        if now_ns > 0 and stamp_ns - now_ns > FUTURE_STAMP_TOLERANCE_NS:
            self._errors.report(
                'stamp',
                f'{stream}: stamp {(stamp_ns - now_ns) / 1e9:.1f} s in the future of this '
                "node's clock; check clock sync and use_sim_time",
            )
            return False
        newest = self._newest_stamp_ns.get(stream, 0)
        if newest - stamp_ns > TIME_JUMP_BACK_NS:
            self._errors.report(
                'time_jump',
                f'{stream}: time jumped back {(newest - stamp_ns) / 1e9:.1f} s; restarting',
            )
            self.pairer.reset()
            self._on_time_jump()
            self._newest_stamp_ns.clear()
        self._newest_stamp_ns[stream] = max(stamp_ns, self._newest_stamp_ns.get(stream, 0))
        return True
