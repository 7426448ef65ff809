# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Core values to ROS messages and back. The only place that knows both sides."""

from __future__ import annotations

from typing import Any

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped, Vector3
import numpy as np
import numpy.typing as npt
from sensor_msgs.msg import Image

from spatial_vlm_ros.core.types import (
    SOURCE_BOTH,
    SOURCE_GEOMETRY,
    SOURCE_MODEL,
    Relation,
    Scene,
    SpatialObject,
)
from spatial_vlm_ros.msg import SpatialObject as SpatialObjectMsg
from spatial_vlm_ros.msg import SpatialRelation as SpatialRelationMsg
from spatial_vlm_ros.msg import SpatialScene as SpatialSceneMsg

_SOURCE_CODES = {
    SOURCE_GEOMETRY: SpatialRelationMsg.SOURCE_GEOMETRY,
    SOURCE_MODEL: SpatialRelationMsg.SOURCE_MODEL,
    SOURCE_BOTH: SpatialRelationMsg.SOURCE_BOTH,
}


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (or anything with sec/nanosec) to integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    return Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def object_to_msg(obj: SpatialObject) -> SpatialObjectMsg:
    msg = SpatialObjectMsg()
    msg.id = obj.id
    msg.label = obj.label
    msg.confidence = float(obj.confidence)
    msg.bbox_x_min, msg.bbox_y_min, msg.bbox_x_max, msg.bbox_y_max = (
        float(v) for v in obj.box.as_list()
    )
    lifted = obj.lifted
    msg.valid_depth_ratio = float(lifted.valid_depth_ratio)
    if lifted.position is not None:
        msg.has_position = True
        x, y, z = (float(v) for v in lifted.position)
        msg.position = Point(x=x, y=y, z=z)
        if lifted.covariance is not None:
            msg.position_covariance = [float(v) for v in np.asarray(lifted.covariance).ravel()]
        if lifted.size is not None:
            sx, sy, sz = (float(v) for v in lifted.size)
            msg.size = Vector3(x=sx, y=sy, z=sz)
    return msg


def relation_to_msg(relation: Relation) -> SpatialRelationMsg:
    return SpatialRelationMsg(
        subject_id=relation.subject,
        predicate=relation.predicate,
        object_id=relation.object,
        distance=float(relation.distance),
        confidence=float(relation.confidence),
        source=_SOURCE_CODES.get(relation.source, SpatialRelationMsg.SOURCE_GEOMETRY),
    )


def scene_to_msg(scene: Scene) -> SpatialSceneMsg:
    msg = SpatialSceneMsg()
    msg.header.stamp = ns_to_stamp(scene.stamp_ns)
    msg.header.frame_id = scene.frame_id
    msg.camera_frame_id = scene.camera_frame_id
    msg.relation_frame_id = scene.relation_frame_id
    msg.objects = [object_to_msg(obj) for obj in scene.objects]
    msg.relations = [relation_to_msg(relation) for relation in scene.relations]
    msg.model_id = scene.model_id
    msg.engine = scene.engine
    msg.latency_ms = float(scene.latency_ms)
    msg.inference_ms = float(scene.inference_ms)
    return msg


def pose_of(obj: SpatialObject, frame_id: str, stamp_ns: int) -> PoseStamped:
    """PoseStamped at the object's centroid, identity orientation (no orientation estimate)."""
    pose = PoseStamped()
    pose.header.frame_id = frame_id
    pose.header.stamp = ns_to_stamp(stamp_ns)
    if obj.lifted.position is not None:
        x, y, z = (float(v) for v in obj.lifted.position)
        pose.pose.position = Point(x=x, y=y, z=z)
    pose.pose.orientation.w = 1.0
    return pose


def rgb_to_image_msg(rgb: npt.NDArray[np.uint8], scene: Scene) -> Image:
    """An rgb8 Image in the camera frame at the scene's stamp."""
    contiguous = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image()
    msg.header.stamp = ns_to_stamp(scene.stamp_ns)
    msg.header.frame_id = scene.camera_frame_id
    msg.height, msg.width = int(contiguous.shape[0]), int(contiguous.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = contiguous.tobytes()
    return msg
