# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The object memory in the node.

``~/objects``, ``~/memory_markers``, ``~/forget``, saving to ``memory_file``, and the remembered
objects ``~/locate`` considers.

The memory itself is the pipeline's (``core/memory.py``, updated with every scene on the
worker); this module only publishes it, forgets on request and saves it. ``~/objects`` and
``~/memory_markers`` are reliable + transient local (depth 1), so a late subscriber gets the
newest copy at once.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleNode
from visualization_msgs.msg import MarkerArray

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.markers import memory_markers
from spatial_vlm_ros.core.memory import ObjectMemory, RememberedCandidate, objects_in_frame
from spatial_vlm_ros.msg import ObjectMemory as ObjectMemoryMsg
from spatial_vlm_ros.pipeline import SpatialPipeline, TransformLookup
from spatial_vlm_ros.ros import qos
from spatial_vlm_ros.ros.conversions import to_message
from spatial_vlm_ros.ros.diagnostics import ErrorLog
from spatial_vlm_ros.ros.markers import marker_set_to_msg
from spatial_vlm_ros.srv import ForgetObjects


def object_memory_msg(memory: ObjectMemory) -> ObjectMemoryMsg:
    """
    spatial_vlm_ros/ObjectMemory.

    Every remembered object, in the memory frame, stamped with the image stamp of the last update.
    """
    return to_message(
        ObjectMemoryMsg,
        message_fields.object_memory_fields(
            memory.memory_frame, memory.last_stamp_ns, memory.objects()
        ),
    )


def memory_marker_msg(memory: ObjectMemory, optical: bool) -> MarkerArray:
    """Return the memory's markers (core.markers.memory_markers) as a MarkerArray."""
    return marker_set_to_msg(
        memory_markers(
            memory.objects(), memory.memory_frame, memory.last_stamp_ns, optical=optical
        )
    )


class MemoryOutputs:
    """
    ``~/objects``, ``~/memory_markers``, ``~/forget`` and the periodic save of one node.

    Created on configure, destroyed on cleanup.

    :param node: the lifecycle node.
    :param pipeline: the configured pipeline; its ``memory`` must not be None.
    :param errors: where save and service failures are counted.
    :param callback_group: of ``~/forget`` and the save timer.
    :param save_period_s: period of the save timer (0 or no ``memory_file``: no timer).
    """

    def __init__(
        self,
        node: LifecycleNode,
        pipeline: SpatialPipeline,
        errors: ErrorLog,
        *,
        callback_group: Any = None,
        save_period_s: float = 0.0,
    ) -> None:
        if pipeline.memory is None:
            raise ValueError('MemoryOutputs needs a pipeline with an object memory')
        self._node = node
        self._pipeline = pipeline
        self.memory: ObjectMemory = pipeline.memory
        self._errors = errors
        self._lock = threading.Lock()  # one publication at a time, in memory order
        self._camera_frames: set[str] = set()
        profile = qos.latched_profile()
        self.objects = node.create_lifecycle_publisher(ObjectMemoryMsg, '~/objects', profile)
        self.markers = node.create_lifecycle_publisher(MarkerArray, '~/memory_markers', profile)
        self.forget_service = node.create_service(
            ForgetObjects, '~/forget', self.on_forget, callback_group=callback_group
        )
        self.save_timer = None
        if save_period_s > 0 and pipeline.memory_file:
            self.save_timer = node.create_timer(
                save_period_s, lambda: self.save('periodic'), callback_group=callback_group
            )

    def publish(self, camera_frame: str = '') -> None:
        """
        Publish the whole memory on ``~/objects`` and, when someone may subscribe, its markers.

        Someone: a subscriber now or a late one. ``camera_frame``: the frame of the scene just
        processed.
        """
        if camera_frame:
            self._camera_frames.add(camera_frame)
        with self._lock:
            self.objects.publish(object_memory_msg(self.memory))
            if self.markers.get_subscription_count() > 0:
                optical = self.memory.memory_frame in self._camera_frames
                self.markers.publish(memory_marker_msg(self.memory, optical))

    def on_forget(
        self, request: ForgetObjects.Request, response: ForgetObjects.Response
    ) -> ForgetObjects.Response:
        """Forget the named ids (none: all); unknown ids are listed, not an error."""
        forgotten, unknown = self.memory.forget(str(key) for key in request.ids)
        response.forgotten = len(forgotten)
        response.unknown_ids = unknown
        self._node.get_logger().info(
            f'~/forget: {len(forgotten)} object(s) forgotten'
            + (f', unknown: {", ".join(unknown)}' if unknown else '')
        )
        try:
            self.publish()
        except Exception as error:  # noqa: BLE001 - the service answers whatever happens
            self._errors.report_exception('memory', error)
        return response

    def save(self, reason: str) -> None:
        """Save to ``memory_file`` (if set); a failure is logged and counted, never raised."""
        try:
            path = self._pipeline.save_memory()
        except OSError as error:
            self._errors.report('memory', f'cannot save the object memory ({reason}): {error}')
            return
        if path is not None and reason != 'periodic':
            self._node.get_logger().info(
                f'object memory saved to {path} ({len(self.memory)} objects, {reason})'
            )

    def destroy(self) -> None:
        if self.save_timer is not None:
            self._node.destroy_timer(self.save_timer)
        self._node.destroy_service(self.forget_service)
        for publisher in (self.objects, self.markers):
            self._node.destroy_lifecycle_publisher(publisher)


class RememberedCandidates:
    """
    ``remembered_candidates(frame_id)`` for ``~/locate``.

    Every remembered object with its position, covariance and size in ``frame_id`` (the scene's
    frame), looked up by TF at the memory's newest image stamp (else the latest transform), and
    ``in_view`` when the newest update saw it.

    Returns no candidates without a memory, or when no transform from the memory frame to
    ``frame_id`` is known (``reason`` says why).
    """

    def __init__(
        self,
        memory: Callable[[], ObjectMemory | None],
        transforms: Callable[[], TransformLookup | None],
    ) -> None:
        self._memory = memory
        self._transforms = transforms
        self.reason = ''

    def __call__(self, frame_id: str) -> list[RememberedCandidate]:
        memory = self._memory()
        if memory is None:
            self.reason = 'no object memory'
            return []
        objects = memory.objects()
        if not objects:
            self.reason = ''
            return []
        memory_frame = memory.memory_frame
        transform = np.eye(4) if not frame_id or frame_id == memory_frame else None
        if transform is None:
            transforms = self._transforms()
            if transforms is None:
                self.reason = f'no transform {memory_frame} -> {frame_id}: no TF'
                return []
            result = transforms.lookup(frame_id, memory_frame, memory.last_stamp_ns)
            if result.matrix is None:
                result = transforms.lookup(frame_id, memory_frame, 0)
            if result.matrix is None:
                self.reason = result.reason
                return []
            transform = result.matrix
        self.reason = ''
        return objects_in_frame(objects, transform)
