# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
rosbags message types for this package, without ROS.

The custom interfaces (msg/*.msg) are registered into a rosbags typestore from the package's own
``.msg`` text, so a bag written here carries the same definitions and RIHS01 type hashes as the
rosidl-generated interfaces, and rclpy's ``deserialize_message`` reads it. :func:`build` fills
any registered message from the plain field values of
:mod:`spatial_vlm_ros.core.message_fields` (the node's rclpy factory reads the same values), so
a scene or its markers serialize to the same CDR bytes here and in the node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
import os
from pathlib import Path
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.markers import MarkerSet
from spatial_vlm_ros.core.memory import ObjectMemory
from spatial_vlm_ros.core.types import CameraIntrinsics, Scene, SpatialVlmError

PACKAGE = 'spatial_vlm_ros'
# Every msg/*.msg of the package (a type must come after the ones it uses is not required:
# rosbags resolves references once all are registered).
CUSTOM_MESSAGES = (
    'StageLatency',
    'SpatialObject',
    'SpatialRelation',
    'SpatialScene',
    'SpatialMeasurement',
    'LocateCandidate',
    'RememberedObject',
    'ObjectMemory',
)
SCENE_TYPE = f'{PACKAGE}/msg/SpatialScene'
OBJECT_MEMORY_TYPE = f'{PACKAGE}/msg/ObjectMemory'
TF_MESSAGE_TYPE = 'tf2_msgs/msg/TFMessage'
MARKER_ARRAY_TYPE = 'visualization_msgs/msg/MarkerArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'

# numpy dtypes of the CDR base types that rosbags keeps in arrays.
_NUMPY_TYPES = {
    'bool': np.bool_,
    'byte': np.uint8,
    'char': np.uint8,
    'int8': np.int8,
    'uint8': np.uint8,
    'int16': np.int16,
    'uint16': np.uint16,
    'int32': np.int32,
    'uint32': np.uint32,
    'int64': np.int64,
    'uint64': np.uint64,
    'float32': np.float32,
    'float64': np.float64,
}
# Fields whose .msg default is not zero (rosbags does not keep defaults): the only one among
# the types written here is geometry_msgs/Quaternion.w = 1.
_NONZERO_DEFAULTS = {'geometry_msgs/msg/Quaternion': {'w': 1.0}}


class MessageDefinitionsNotFoundError(SpatialVlmError):
    """The package's msg/*.msg files are in none of the places they are installed to."""


def message_definition_dirs() -> list[Path]:
    """
    Return where msg/*.msg may live.

    The source tree, then ament share directories (colcon, ``make setup``'s venv), in that
    order.
    """
    candidates = [Path(__file__).resolve().parents[2] / 'msg']
    prefixes = [sys.prefix, *os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)]
    candidates.extend(Path(prefix) / 'share' / PACKAGE / 'msg' for prefix in prefixes if prefix)
    return candidates


def find_message_definitions() -> dict[str, str]:
    """
    Return ``{'spatial_vlm_ros/msg/SpatialScene': '<.msg text>', ...}``.

    From the first directory that has all of them.
    """
    for directory in message_definition_dirs():
        files = [directory / f'{name}.msg' for name in CUSTOM_MESSAGES]
        if all(path.is_file() for path in files):
            return {
                f'{PACKAGE}/msg/{path.stem}': path.read_text(encoding='utf-8') for path in files
            }
    searched = ', '.join(str(path) for path in message_definition_dirs())
    raise MessageDefinitionsNotFoundError(
        f'{PACKAGE} message definitions ({", ".join(CUSTOM_MESSAGES)}.msg) not found in: '
        f'{searched}'
    )


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Kilted's standard types plus this package's interfaces (built once per process)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name, text in find_message_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def _base_value(base: str, value: Any) -> Any:
    if base in ('string', 'wstring'):
        return '' if value is None else str(value)
    if base == 'bool':
        return bool(value)
    if base in ('float32', 'float64'):
        return 0.0 if value is None else float(value)
    return 0 if value is None else int(value)


def _base_array(base: str, value: Any, length: int) -> Any:
    if base in ('string', 'wstring'):
        items = [] if value is None else [str(item) for item in value]
        return items + [''] * (length - len(items))
    dtype = _NUMPY_TYPES[base]
    if value is None:
        return np.zeros(length, dtype=dtype)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype=dtype).copy()
    return np.asarray(value, dtype=dtype).ravel()


def _field_value(desc: Any, value: Any) -> Any:
    nodetype, detail = desc
    if nodetype == Nodetype.BASE:
        return _base_value(detail[0], value)
    if nodetype == Nodetype.NAME:
        return build(detail, value or {})
    (inner_type, inner_detail), length = detail
    if nodetype == Nodetype.ARRAY:
        if inner_type == Nodetype.BASE:
            return _base_array(inner_detail[0], value, length)
        items = list(value or [{}] * length)
        return [build(inner_detail, item) for item in items]
    # Nodetype.SEQUENCE
    if inner_type == Nodetype.BASE:
        return _base_array(inner_detail[0], value, 0)
    return [build(inner_detail, item) for item in value or []]


def build(msgtype: str, fields: Mapping[str, Any]) -> Any:
    """
    Build a rosbags message of ``msgtype`` (e.g. ``spatial_vlm_ros/msg/SpatialScene``).

    From plain field values (dicts for nested messages). Unnamed fields get the message
    defaults; an unknown field name raises ``AttributeError`` naming it.
    """
    store = typestore()
    _, field_descs = store.fielddefs[msgtype]
    names = {name for name, _ in field_descs}
    unknown = set(fields) - names
    if unknown:
        raise AttributeError(f'{msgtype} has no field(s) {", ".join(sorted(unknown))}')
    defaults = _NONZERO_DEFAULTS.get(msgtype, {})
    values = {
        name: _field_value(desc, fields[name] if name in fields else defaults.get(name))
        for name, desc in field_descs
    }
    return store.types[msgtype](**values)


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/msg/Header."""
    return build('std_msgs/msg/Header', message_fields.header_fields(stamp_ns, frame_id))


def scene_msg(scene: Scene) -> Any:
    """``spatial_vlm_ros/msg/SpatialScene`` for ``scene`` (the node's field mapping)."""
    return build(SCENE_TYPE, message_fields.scene_fields(scene))


def object_memory_msg(memory: ObjectMemory) -> Any:
    """``spatial_vlm_ros/msg/ObjectMemory``: the whole memory (the node's ~/objects mapping)."""
    return build(
        OBJECT_MEMORY_TYPE,
        message_fields.object_memory_fields(
            memory.memory_frame, memory.last_stamp_ns, memory.objects()
        ),
    )


def tf_message(
    transforms: Sequence[tuple[int, str, str, Sequence[float], Sequence[float]]],
) -> Any:
    """
    Build a ``tf2_msgs/msg/TFMessage``.

    From ``(stamp_ns, parent, child, translation, quaternion xyzw)`` items (each
    ``T_parent_from_child``).
    """
    return build(
        TF_MESSAGE_TYPE,
        {
            'transforms': [
                {
                    'header': message_fields.header_fields(stamp_ns, parent),
                    'child_frame_id': child,
                    'transform': {
                        'translation': message_fields.xyz_fields(translation),
                        'rotation': message_fields.quaternion_fields(quaternion),
                    },
                }
                for stamp_ns, parent, child, translation, quaternion in transforms
            ]
        },
    )


def marker_array_msg(marker_set: MarkerSet) -> Any:
    """``visualization_msgs/msg/MarkerArray`` for a :class:`MarkerSet`."""
    return build(MARKER_ARRAY_TYPE, message_fields.marker_array_fields(marker_set))


def image_msg(
    stamp_ns: int, frame_id: str, image: npt.NDArray[Any], encoding: str | None = None
) -> Any:
    """
    Build a ``sensor_msgs/msg/Image`` from an (H, W, 3) uint8 RGB image or an (H, W) depth image.

    The encoding is rgb8, 16UC1 (uint16) or 32FC1 (float32) unless ``encoding`` is given.
    """
    return build(IMAGE_TYPE, message_fields.image_fields(stamp_ns, frame_id, image, encoding))


def camera_info_msg(
    stamp_ns: int,
    frame_id: str,
    intrinsics: CameraIntrinsics,
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
) -> Any:
    """``sensor_msgs/msg/CameraInfo`` of a pinhole camera (plumb_bob, identity rectification)."""
    return build(
        CAMERA_INFO_TYPE,
        message_fields.camera_info_fields(stamp_ns, frame_id, intrinsics, distortion),
    )


def serialize(message: Any) -> bytes:
    """CDR bytes (with the encapsulation header rosbag2 and rclpy expect)."""
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    return typestore().deserialize_cdr(data, msgtype)
