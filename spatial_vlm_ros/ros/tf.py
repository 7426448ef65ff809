# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
TF lookups at the image stamp: tf2_ros where it is importable.

Elsewhere (the PyPI install has no tf2_ros) the node subscribes to ``/tf`` and ``/tf_static``
itself and keeps them in ``core.tf_buffer.TransformBuffer`` (the maths is there and in
core.transforms).

Both serve the pipeline's target, relation and memory frames and ``~/locate``'s target frame
through one call, :meth:`TransformSource.lookup`, which waits up to ``timeout_s`` for a
transform that has not arrived yet.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from spatial_vlm_ros.core.tf_buffer import TfLookupError, TransformBuffer, TransformResult
from spatial_vlm_ros.core.transforms import transform_from_translation_quaternion

try:  # tf2_ros is part of every ROS install but not of the PyPI wheels
    from rclpy.duration import Duration
    from rclpy.time import Time
    import tf2_ros

    TF2_IMPORT_ERROR = ''
except ImportError as error:  # pragma: no cover - depends on the install
    tf2_ros = None
    TF2_IMPORT_ERROR = str(error)

try:  # make setup builds it where ROS does not provide it (third_party/ros_interfaces)
    from tf2_msgs.msg import TFMessage

    TF2_MSGS_IMPORT_ERROR = ''
except ImportError as error:  # pragma: no cover - depends on the install
    TFMessage = None
    TF2_MSGS_IMPORT_ERROR = str(error)

TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
# tf2_ros's listener QoS: DynamicListenerQoS and StaticListenerQoS (depth 100 each).
TF_QOS = QoSProfile(
    depth=100,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
TF_STATIC_QOS = QoSProfile(
    depth=100,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

__all__ = ['TF_QOS', 'TF_STATIC_QOS', 'TransformResult', 'TransformSource']


class TransformSource:
    """
    Looks up ``T_target_from_source`` at a stamp, waiting up to ``timeout_s``.

    Reports its state as text (``status``, on /diagnostics).

    ``mode`` is ``tf2_ros``, ``buffer`` (own subscriptions to /tf and /tf_static) or ``none``
    (neither tf2_ros nor tf2_msgs: the camera frame only). ``prefer_tf2_ros`` False forces the
    buffer (tests, and installs whose tf2_ros is broken).
    """

    def __init__(
        self,
        node: Any,
        logger: Any,
        timeout_s: float = 0.1,
        *,
        callback_group: Any = None,
        prefer_tf2_ros: bool = True,
    ) -> None:
        self._node = node
        self._logger = logger
        self.timeout_s = timeout_s
        self._warned = threading.Event()
        self._tf2_buffer: Any = None
        self._listener: Any = None
        self.buffer: TransformBuffer | None = None
        self._subscriptions: list[Any] = []
        self._arrived = threading.Condition()
        self._bad_messages = 0
        if tf2_ros is not None and prefer_tf2_ros:
            self.mode = 'tf2_ros'
            self.status = 'tf2_ros available'
            self._tf2_buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._tf2_buffer, node, spin_thread=False)
            return
        if TFMessage is None:
            self.mode = 'none'
            self.status = (
                f'neither tf2_ros ({TF2_IMPORT_ERROR}) nor tf2_msgs ({TF2_MSGS_IMPORT_ERROR}) '
                'is importable: camera frame only'
            )
            return
        self.mode = 'buffer'
        self.status = f'no tf2_ros: own buffer of {TF_TOPIC} and {TF_STATIC_TOPIC}'
        self.buffer = TransformBuffer()
        self._subscriptions = [
            node.create_subscription(
                TFMessage,
                topic,
                lambda message, static=static: self._on_message(message, static),
                qos,
                callback_group=callback_group,
            )
            for topic, qos, static in (
                (TF_TOPIC, TF_QOS, False),
                (TF_STATIC_TOPIC, TF_STATIC_QOS, True),
            )
        ]

    @property
    def available(self) -> bool:
        return self.mode != 'none'

    def close(self) -> None:
        """Drop the subscriptions (and tf2_ros's listener)."""
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions = []
        if self._listener is not None:
            unregister = getattr(self._listener, 'unregister', None)
            if unregister is not None:
                unregister()
            self._listener = None

    def _on_message(self, message: Any, static: bool) -> None:
        assert self.buffer is not None
        try:
            self.buffer.add_message(message, static)
        except TfLookupError as error:
            # A bad transform never takes the node down; the good ones before it were kept.
            self._bad_messages += 1
            if self._bad_messages == 1 or self._bad_messages % 100 == 0:
                self._logger.warning(
                    f'ignored a bad transform ({self._bad_messages} so far): {error}'
                )
        with self._arrived:
            self._arrived.notify_all()

    def lookup(self, target: str, source: str, stamp_ns: int) -> TransformResult:
        """``T_target_from_source`` at ``stamp_ns`` (0: the latest), or None with the reason."""
        if not target or target == source:
            return TransformResult(np.eye(4))
        if self._tf2_buffer is not None:
            return self._lookup_tf2(target, source, stamp_ns)
        if self.buffer is None:
            if not self._warned.is_set():
                self._warned.set()
                self._logger.warning(
                    f'{self.status}; publishing positions in the camera frame instead of '
                    f'{target!r}'
                )
            return TransformResult(None, f'no transform {source} -> {target}: {self.status}')
        deadline = time.monotonic() + max(self.timeout_s, 0.0)
        with self._arrived:
            while True:
                result = self.buffer.lookup(target, source, stamp_ns)
                remaining = deadline - time.monotonic()
                if result.matrix is not None or remaining <= 0:
                    break
                self._arrived.wait(remaining)  # woken by every arriving TF message
        self.status = 'ok' if result.matrix is not None else result.reason
        return result

    def _lookup_tf2(self, target: str, source: str, stamp_ns: int) -> TransformResult:
        try:
            stamped = self._tf2_buffer.lookup_transform(
                target,
                source,
                Time(nanoseconds=stamp_ns),
                timeout=Duration(nanoseconds=int(self.timeout_s * 1e9)),
            )
        except tf2_ros.TransformException as error:
            # The base of LookupException, ConnectivityException, ExtrapolationException,
            # InvalidArgumentException and TimeoutException; anything else is a bug.
            reason = f'no transform {source} -> {target} at {stamp_ns} ns: {error}'
            self.status = reason
            return TransformResult(None, reason)
        translation = stamped.transform.translation
        rotation = stamped.transform.rotation
        self.status = 'ok'
        return TransformResult(
            transform_from_translation_quaternion(
                (translation.x, translation.y, translation.z),
                (rotation.x, rotation.y, rotation.z, rotation.w),
            )
        )
