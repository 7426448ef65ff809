# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""rosbags message types for this package, without ROS.

The custom interfaces (SpatialScene, SpatialObject, SpatialRelation) are registered into a
rosbags typestore from the package's own ``msg/*.msg`` text, so a bag written here carries the
same definitions and RIHS01 type hashes as the rosidl-generated interfaces, and rclpy's
``deserialize_message`` reads it. Converters turn core values (Scene, MarkerSet, images) into
rosbags message objects ready for ``typestore.serialize_cdr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
import os
from pathlib import Path
import sys
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from spatial_vlm_ros.core.markers import MarkerKind, MarkerSet, Rgba
from spatial_vlm_ros.core.types import (
    SOURCE_BOTH,
    SOURCE_MODEL,
    CameraIntrinsics,
    Scene,
    SpatialObject,
    SpatialVlmError,
)

PACKAGE = 'spatial_vlm_ros'
CUSTOM_MESSAGES = ('SpatialObject', 'SpatialRelation', 'SpatialScene')
SCENE_TYPE = f'{PACKAGE}/msg/SpatialScene'
MARKER_ARRAY_TYPE = 'visualization_msgs/msg/MarkerArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'

# SpatialRelation.msg's SOURCE_* constants.
_SOURCE_CODES = {SOURCE_MODEL: 1, SOURCE_BOTH: 2}


class MessageDefinitionsNotFoundError(SpatialVlmError):
    """The package's msg/*.msg files are in none of the places they are installed to."""


def message_definition_dirs() -> list[Path]:
    """Where msg/*.msg may live: the source tree, then ament share directories (colcon,
    ``make setup``'s venv), in that order."""
    candidates = [Path(__file__).resolve().parents[2] / 'msg']
    prefixes = [sys.prefix, *os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep)]
    candidates.extend(Path(prefix) / 'share' / PACKAGE / 'msg' for prefix in prefixes if prefix)
    return candidates


def find_message_definitions() -> dict[str, str]:
    """``{'spatial_vlm_ros/msg/SpatialScene': '<.msg text>', ...}`` from the first directory that
    has all of them."""
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


def _msg(name: str) -> Any:
    return typestore().types[name]


def time_msg(stamp_ns: int) -> Any:
    return _msg('builtin_interfaces/msg/Time')(
        sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)
    )


def header_msg(stamp_ns: int, frame_id: str) -> Any:
    return _msg('std_msgs/msg/Header')(stamp=time_msg(stamp_ns), frame_id=frame_id)


def _point(values: Iterable[float]) -> Any:
    x, y, z = (float(v) for v in values)
    return _msg('geometry_msgs/msg/Point')(x=x, y=y, z=z)


def _vector3(values: Iterable[float]) -> Any:
    x, y, z = (float(v) for v in values)
    return _msg('geometry_msgs/msg/Vector3')(x=x, y=y, z=z)


def _object_msg(obj: SpatialObject) -> Any:
    lifted = obj.lifted
    position = lifted.position
    has_position = position is not None and bool(np.all(np.isfinite(position)))
    covariance = np.zeros(9, dtype=np.float64)
    size = (0.0, 0.0, 0.0)
    point = (0.0, 0.0, 0.0)
    if has_position:
        point = tuple(np.asarray(position, dtype=float).ravel())
        if lifted.covariance is not None:
            covariance = np.asarray(lifted.covariance, dtype=np.float64).ravel().copy()
        if lifted.size is not None:
            size = tuple(np.asarray(lifted.size, dtype=float).ravel())
    box = obj.box
    return _msg(f'{PACKAGE}/msg/SpatialObject')(
        id=obj.id,
        label=obj.label,
        confidence=float(obj.confidence),
        bbox_x_min=float(box.x_min),
        bbox_y_min=float(box.y_min),
        bbox_x_max=float(box.x_max),
        bbox_y_max=float(box.y_max),
        has_position=has_position,
        position=_point(point),
        position_covariance=covariance,
        size=_vector3(size),
        valid_depth_ratio=float(lifted.valid_depth_ratio),
    )


def scene_msg(scene: Scene) -> Any:
    """``spatial_vlm_ros/msg/SpatialScene`` for ``scene`` (same field mapping as the node's)."""
    relation_type = _msg(f'{PACKAGE}/msg/SpatialRelation')
    relations = [
        relation_type(
            subject_id=relation.subject,
            predicate=relation.predicate,
            object_id=relation.object,
            distance=float(relation.distance),
            confidence=float(relation.confidence),
            source=_SOURCE_CODES.get(relation.source, 0),
        )
        for relation in scene.relations
    ]
    return _msg(SCENE_TYPE)(
        header=header_msg(scene.stamp_ns, scene.frame_id),
        camera_frame_id=scene.camera_frame_id,
        relation_frame_id=scene.relation_frame_id,
        objects=[_object_msg(obj) for obj in scene.objects],
        relations=relations,
        model_id=scene.model_id,
        engine=scene.engine,
        latency_ms=float(scene.latency_ms),
        inference_ms=float(scene.inference_ms),
    )


def _color(color: Rgba) -> Any:
    return _msg('std_msgs/msg/ColorRGBA')(r=color.r, g=color.g, b=color.b, a=color.a)


_MARKER_TYPES = {MarkerKind.CUBE: 1, MarkerKind.LINE_LIST: 5, MarkerKind.TEXT: 9}
_ACTION_ADD = 0
_ACTION_DELETE_ALL = 3


def marker_array_msg(marker_set: MarkerSet) -> Any:
    """``visualization_msgs/msg/MarkerArray`` for a :class:`MarkerSet`."""
    marker_type = _msg('visualization_msgs/msg/Marker')
    header = header_msg(marker_set.stamp_ns, marker_set.frame_id)
    lifetime_ns = round(marker_set.lifetime_s * 1e9)
    lifetime = _msg('builtin_interfaces/msg/Duration')(
        sec=int(lifetime_ns // 1_000_000_000), nanosec=int(lifetime_ns % 1_000_000_000)
    )
    identity = _msg('geometry_msgs/msg/Quaternion')(x=0.0, y=0.0, z=0.0, w=1.0)
    empty_texture = _msg(COMPRESSED_IMAGE_TYPE)(
        header=header_msg(0, ''), format='', data=np.zeros(0, dtype=np.uint8)
    )
    markers = []
    for spec in marker_set.markers:
        delete_all = spec.kind is MarkerKind.DELETE_ALL
        markers.append(
            marker_type(
                header=header,
                ns=spec.namespace,
                id=int(spec.marker_id),
                type=0 if delete_all else _MARKER_TYPES[spec.kind],
                action=_ACTION_DELETE_ALL if delete_all else _ACTION_ADD,
                pose=_msg('geometry_msgs/msg/Pose')(
                    position=_point(spec.position), orientation=identity
                ),
                scale=_vector3(spec.scale),
                color=_color(spec.color),
                lifetime=lifetime,
                frame_locked=False,
                points=[_point(point) for point in spec.points],
                colors=[],
                texture_resource='',
                texture=empty_texture,
                uv_coordinates=[],
                text=spec.text,
                mesh_resource='',
                mesh_file=_msg('visualization_msgs/msg/MeshFile')(
                    filename='', data=np.zeros(0, dtype=np.uint8)
                ),
                mesh_use_embedded_materials=False,
            )
        )
    return _msg(MARKER_ARRAY_TYPE)(markers=markers)


def image_msg(
    stamp_ns: int, frame_id: str, image: npt.NDArray[Any], encoding: str | None = None
) -> Any:
    """``sensor_msgs/msg/Image`` from an (H, W, 3) uint8 RGB image or an (H, W) depth image
    (uint16 → 16UC1, float32 → 32FC1) unless ``encoding`` is given."""
    array = np.ascontiguousarray(image)
    if encoding is None:
        if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
            encoding = 'rgb8'
        elif array.ndim == 2 and array.dtype == np.uint16:
            encoding = '16UC1'
        elif array.ndim == 2 and array.dtype == np.float32:
            encoding = '32FC1'
        else:
            raise ValueError(f'no default encoding for an image of {array.dtype} {array.shape}')
    height, width = array.shape[:2]
    return _msg(IMAGE_TYPE)(
        header=header_msg(stamp_ns, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0 if sys.byteorder == 'little' or array.dtype.itemsize == 1 else 1,
        step=array.strides[0],
        data=np.frombuffer(array.tobytes(), dtype=np.uint8),
    )


def jpeg_msg(stamp_ns: int, frame_id: str, rgb: npt.NDArray[np.uint8], quality: int = 90) -> Any:
    """``sensor_msgs/msg/CompressedImage`` (format ``jpeg``) from an RGB image."""
    ok, encoded = cv2.imencode(
        '.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError('OpenCV could not JPEG-encode the image')
    return _msg(COMPRESSED_IMAGE_TYPE)(
        header=header_msg(stamp_ns, frame_id),
        format='rgb8; jpeg compressed bgr8',
        data=np.asarray(encoded, dtype=np.uint8).ravel(),
    )


def camera_info_msg(
    stamp_ns: int,
    frame_id: str,
    intrinsics: CameraIntrinsics,
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
) -> Any:
    """``sensor_msgs/msg/CameraInfo`` of a pinhole camera (plumb_bob, identity rectification)."""
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    return _msg(CAMERA_INFO_TYPE)(
        header=header_msg(stamp_ns, frame_id),
        height=intrinsics.height,
        width=intrinsics.width,
        distortion_model='plumb_bob',
        d=np.asarray(distortion, dtype=np.float64),
        k=np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0], dtype=np.float64),
        r=np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float64),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=_msg('sensor_msgs/msg/RegionOfInterest')(
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def serialize(message: Any) -> bytes:
    """CDR bytes (with the encapsulation header rosbag2 and rclpy expect)."""
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    return typestore().deserialize_cdr(data, msgtype)
