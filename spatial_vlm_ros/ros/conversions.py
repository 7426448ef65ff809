# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Core values to rclpy messages, through the one field mapping of core/message_fields.py.

:func:`to_message` fills any rclpy message class from plain field values, resolving nested
message types from the class's own definition (``SLOT_TYPES``); the replay's rosbags factory
(``replay/msgs.py``) does the same from the same field values, so both serialize to identical
CDR bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


_MISSING = object()


def _fresh_copier(default: Any) -> Callable[[], Any]:
    """
    Return a function returning a fresh copy of a mutable default.

    Mutable: an array.array, a numpy array or a list; immutable defaults (numbers, strings) are
    returned as they are.
    """
    if isinstance(default, list):
        return lambda: list(default)
    if hasattr(default, '__copy__'):
        return default.__copy__
    return lambda: default


@functools.cache
def _builders(
    msg_class: Any,  # a rosidl message class: SLOT_TYPES, get_fields_and_field_types()
) -> tuple[Callable[[Mapping[str, Any]], Any], Callable[[], Any]] | None:
    """
    Return two functions generated once per class, or None.

    Generated from the class's own definition (``SLOT_TYPES``) and a default instance: one
    fills a new instance of ``msg_class`` from field values, the other makes a default
    instance. None when the class checks its fields (``ROS_PYTHON_CHECK_FIELDS=1``), where every
    message goes through the constructor.

    They store each value in the attribute the generated property reads, as the constructor
    does with field checks off, but build a default only for the fields left out (the
    constructor builds one for every field first), and run each given array field's setter,
    which converts the values to the field's array type.
    """
    template = msg_class()
    if template._check_fields:
        return None
    names = list(msg_class.get_fields_and_field_types())
    scope: dict[str, Any] = {
        'MISSING': _MISSING,
        'new': msg_class.__new__,
        'message_class': msg_class,
        'names': frozenset(names),
        'unknown': _unknown_field,
    }
    build = [
        'def build(fields):',
        '    for name in fields:',
        '        if name not in names:',
        '            unknown(message_class, name)',
        '    message = new(message_class)',
        '    message._check_fields = False',
    ]
    fresh = [
        'def fresh():',
        '    message = new(message_class)',
        '    message._check_fields = False',
    ]
    for index, (name, field_type) in enumerate(zip(names, msg_class.SLOT_TYPES, strict=True)):
        default = getattr(template, name)
        build.append(f'    value = fields.get({name!r}, MISSING)')
        if isinstance(field_type, NamespacedType):
            scope[f'build_{index}'], scope[f'fresh_{index}'] = _builders_or_constructor(
                _message_class(field_type)
            )
            given, made = f'build_{index}(value)', f'fresh_{index}()'
        elif isinstance(field_type, AbstractNestedType) and isinstance(
            field_type.value_type, NamespacedType
        ):
            scope[f'build_{index}'], scope[f'fresh_{index}'] = _builders_or_constructor(
                _message_class(field_type.value_type)
            )
            given = f'[build_{index}(item) for item in value]'
            made = f'[fresh_{index}() for _ in range({len(default)})]'
        elif isinstance(field_type, AbstractNestedType):
            # An array of primitives: the setter converts given values to the array type;
            # the default is already of that type.
            scope[f'set_{index}'] = getattr(msg_class, name).fset
            scope[f'copy_{index}'] = _fresh_copier(default)
            build.append(
                f'    if value is MISSING:\n        message._{name} = copy_{index}()\n'
                f'    else:\n        set_{index}(message, value)'
            )
            fresh.append(f'    message._{name} = copy_{index}()')
            continue
        else:
            scope[f'default_{index}'] = default  # a number or string: immutable
            given, made = 'value', f'default_{index}'
        build.append(f'    message._{name} = {made} if value is MISSING else {given}')
        fresh.append(f'    message._{name} = {made}')
    build.append('    return message')
    fresh.append('    return message')
    exec('\n'.join(build + fresh), scope)
    return scope['build'], scope['fresh']


def _builders_or_constructor(
    msg_class: type,
) -> tuple[Callable[[Mapping[str, Any]], Any], Callable[[], Any]]:
    builders = _builders(msg_class)
    if builders is not None:
        return builders
    return functools.partial(_constructed, msg_class), msg_class


def _unknown_field(msg_class: type, name: str) -> None:
    raise AttributeError(f'{msg_class.__name__} has no field {name!r}')


def to_message(msg_class: type, fields: Mapping[str, Any]) -> Any:
    """
    Build an instance of the rclpy message class ``msg_class`` with ``fields``.

    Plain values; dicts for nested messages, lists of dicts for message sequences. Unnamed
    fields keep their defaults; an unknown field name raises ``AttributeError`` naming it.

    Goes through a builder generated per class (:func:`_builders`): a MarkerArray of a
    20-object scene takes a fraction of the constructor path's time (docs/PERFORMANCE.md).
    """
    builders = _builders(msg_class)
    if builders is None:
        return _constructed(msg_class, fields)
    return builders[0](fields)


@functools.cache
def _nested_types(msg_class: Any) -> dict[str, tuple[type | None, bool]]:  # a rosidl class
    """
    Return, for each field, its message class and whether it is a sequence of messages.

    The class is None for primitives.
    """
    table: dict[str, tuple[type | None, bool]] = {}
    for name, field_type in zip(
        msg_class.get_fields_and_field_types(), msg_class.SLOT_TYPES, strict=True
    ):
        if isinstance(field_type, NamespacedType):
            table[name] = (_message_class(field_type), False)
        elif isinstance(field_type, AbstractNestedType) and isinstance(
            field_type.value_type, NamespacedType
        ):
            table[name] = (_message_class(field_type.value_type), True)
        else:
            table[name] = (None, False)
    return table


def _constructed(msg_class: type, fields: Mapping[str, Any]) -> Any:
    """:func:`to_message` through the class's constructor, which checks every value."""
    table = _nested_types(msg_class)
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
    """Return a PoseStamped at the object's centroid, identity orientation (none is estimated)."""
    position = (0.0, 0.0, 0.0) if obj.lifted.position is None else obj.lifted.position
    return to_message(
        PoseStamped, message_fields.pose_stamped_fields(stamp_ns, frame_id, position)
    )


def rgb_to_image_msg(rgb: npt.NDArray[np.uint8], scene: Scene) -> Image:
    """Return an rgb8 Image in the camera frame at the scene's stamp."""
    return to_message(
        Image, message_fields.image_fields(scene.stamp_ns, scene.camera_frame_id, rgb, 'rgb8')
    )
