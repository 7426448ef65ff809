# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Core values to rclpy messages, through the one field mapping of core/message_fields.py.

:func:`to_message` fills any rclpy message class from plain field values, resolving nested
message types from the class's own definition (``SLOT_TYPES``); the replay's rosbags factory
(``replay/msgs.py``) does the same from the same field values, so both serialize to identical
CDR bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
import importlib
from typing import Any

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
import numpy as np
import numpy.typing as npt
from rosidl_parser.definition import AbstractNestedType, NamespacedType
from sensor_msgs.msg import Image

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.types import Scene, SpatialObject
from spatial_vlm_ros.msg import SpatialObject as SpatialObjectMsg
from spatial_vlm_ros.msg import SpatialScene as SpatialSceneMsg


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (or anything with sec/nanosec) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds to builtin_interfaces/Time."""
    return to_message(Time, message_fields.time_fields(stamp_ns))


def _message_class(namespaced: NamespacedType) -> type:
    module = importlib.import_module('.'.join(namespaced.namespaces))
    return getattr(module, namespaced.name)


@functools.cache
def _field_table(msg_class: type) -> dict[str, tuple[type | None, bool]]:
    """For each field of ``msg_class``: its message class (None for a primitive or primitive
    array) and whether it is a sequence of messages. Built once per class."""
    table: dict[str, tuple[type | None, bool]] = {}
    names = msg_class.get_fields_and_field_types()
    for name, field_type in zip(names, msg_class.SLOT_TYPES, strict=True):
        if isinstance(field_type, NamespacedType):
            table[name] = (_message_class(field_type), False)
        elif isinstance(field_type, AbstractNestedType) and isinstance(
            field_type.value_type, NamespacedType
        ):
            table[name] = (_message_class(field_type.value_type), True)
        else:
            table[name] = (None, False)
    return table


def to_message(msg_class: type, fields: Mapping[str, Any]) -> Any:
    """An instance of the rclpy message class ``msg_class`` with ``fields`` (plain values;
    dicts for nested messages, lists of dicts for message sequences). Unnamed fields keep their
    defaults; an unknown field name raises ``AttributeError`` naming it."""
    table = _field_table(msg_class)
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in table:
            raise AttributeError(f'{msg_class.__name__} has no field {name!r}')
        nested, is_sequence = table[name]
        if nested is None:
            values[name] = value
        elif is_sequence:
            values[name] = [to_message(nested, item) for item in value]
        else:
            values[name] = to_message(nested, value)
    # Through the constructor: fields given are not first built as defaults.
    return msg_class(**values)


def object_to_msg(obj: SpatialObject, scene: Scene) -> SpatialObjectMsg:
    """spatial_vlm_ros/SpatialObject of ``obj`` as it stands in ``scene`` (frame, camera)."""
    return to_message(SpatialObjectMsg, message_fields.spatial_object_fields(obj, scene))


def scene_to_msg(scene: Scene) -> SpatialSceneMsg:
    """spatial_vlm_ros/SpatialScene (message version 2)."""
    return to_message(SpatialSceneMsg, message_fields.scene_fields(scene))


def detections_available() -> bool:
    """Whether vision_msgs is installed (it is an optional dependency)."""
    try:
        importlib.import_module('vision_msgs.msg')
    except ImportError:
        return False
    return True


def scene_to_detections(scene: Scene) -> Any:
    """vision_msgs/Detection3DArray of the scene; raises ImportError without vision_msgs."""
    from vision_msgs.msg import Detection3DArray

    return to_message(Detection3DArray, message_fields.detection3d_array_fields(scene))


def pose_of(obj: SpatialObject, frame_id: str, stamp_ns: int) -> PoseStamped:
    """PoseStamped at the object's centroid, identity orientation (no orientation estimate)."""
    position = (0.0, 0.0, 0.0) if obj.lifted.position is None else obj.lifted.position
    return to_message(
        PoseStamped, message_fields.pose_stamped_fields(stamp_ns, frame_id, position)
    )


def rgb_to_image_msg(rgb: npt.NDArray[np.uint8], scene: Scene) -> Image:
    """An rgb8 Image in the camera frame at the scene's stamp."""
    return to_message(
        Image, message_fields.image_fields(scene.stamp_ns, scene.camera_frame_id, rgb, 'rgb8')
    )
