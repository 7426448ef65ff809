# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Core values to message field values: the one mapping behind every published message.

The node (rclpy classes, ``ros/conversions.py``) and the replay (rosbags classes,
``replay/msgs.py``) both build their messages from the plain values returned here, through a
generic factory each, so a scene, its markers or its detections come out byte-identical in CDR
whichever adapter serialized them (test/test_one_conversion.py checks that).

A *field value* is what a message field holds, as plain Python: ``int``, ``float``, ``bool``,
``str``, ``bytes`` (a ``uint8[]`` payload), a list (arrays and sequences) or a ``dict`` of
field values (a nested message; its type comes from the enclosing message's definition).
Fields left out keep their message defaults. Every number is a Python ``int``/``float`` (rclpy
rejects numpy scalars of the wrong kind).

ROS-free, and knows the message definitions only by field name: msg/*.msg and the srv/*.srv
replies for this package's interfaces, and visualization_msgs/Marker, sensor_msgs/Image and
vision_msgs/Detection3DArray for the standard ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.approach import ApproachPose
from spatial_vlm_ros.core.markers import MarkerKind, MarkerSet, MarkerSpec
from spatial_vlm_ros.core.measurements import Measurement
from spatial_vlm_ros.core.memory import RememberedObject
from spatial_vlm_ros.core.positions import Position, placed
from spatial_vlm_ros.core.referring import LocateCandidate, RememberedCandidate
from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    Relation,
    Scene,
    SpatialObject,
    StageTimings,
)

Fields = dict[str, Any]

IDENTITY_QUATERNION = (0.0, 0.0, 0.0, 1.0)
NAN3 = (math.nan, math.nan, math.nan)
NAN_QUATERNION = (math.nan, math.nan, math.nan, math.nan)

# visualization_msgs/Marker constants (identical in every ROS 2 distribution).
MARKER_CUBE = 1
MARKER_LINE_LIST = 5
MARKER_TEXT_VIEW_FACING = 9
MARKER_ACTION_ADD = 0
MARKER_ACTION_DELETEALL = 3
_MARKER_TYPES = {
    MarkerKind.CUBE: MARKER_CUBE,
    MarkerKind.LINE_LIST: MARKER_LINE_LIST,
    MarkerKind.TEXT: MARKER_TEXT_VIEW_FACING,
}

# Variance reported for the rotation part of a Detection3D pose (rad^2): the node does not
# estimate an object's orientation (the pose's orientation is the box axes, i.e. the camera's),
# so the rotation is stated as unknown, as a huge variance rather than a zero that claims
# certainty (geometry_msgs/PoseWithCovariance has no "unknown" flag).
UNKNOWN_ROTATION_VARIANCE = 1e6


def time_fields(stamp_ns: int) -> Fields:
    """builtin_interfaces/Time of integer nanoseconds."""
    stamp_ns = int(stamp_ns)
    return {'sec': stamp_ns // 1_000_000_000, 'nanosec': stamp_ns % 1_000_000_000}


def duration_fields(seconds: float) -> Fields:
    """builtin_interfaces/Duration of seconds (rounded to the nanosecond)."""
    total_ns = round(float(seconds) * 1e9)
    return {'sec': total_ns // 1_000_000_000, 'nanosec': total_ns % 1_000_000_000}


def header_fields(stamp_ns: int, frame_id: str) -> Fields:
    """std_msgs/Header."""
    return {'stamp': time_fields(stamp_ns), 'frame_id': str(frame_id)}


def _floats(values: Iterable[Any]) -> list[float]:
    if type(values) is np.ndarray and values.dtype == np.float64:
        return values.ravel().tolist()
    return [float(value) for value in np.asarray(list(values), dtype=np.float64).ravel()]


def xyz_fields(values: Iterable[float]) -> Fields:
    """geometry_msgs/Point or Vector3 of three numbers (a sequence or a (3,) array)."""
    x, y, z = values
    return {'x': float(x), 'y': float(y), 'z': float(z)}


def quaternion_fields(xyzw: Iterable[float]) -> Fields:
    """
    geometry_msgs/Quaternion ``(x, y, z, w)``.

    Always written in full: the factories' defaults differ for ``w`` (1 in ROS 2 messages).
    """
    x, y, z, w = xyzw
    return {'x': float(x), 'y': float(y), 'z': float(z), 'w': float(w)}


def pose_fields(
    position: Iterable[float], orientation_xyzw: Iterable[float] = IDENTITY_QUATERNION
) -> Fields:
    """geometry_msgs/Pose."""
    return {'position': xyz_fields(position), 'orientation': quaternion_fields(orientation_xyzw)}


# ----------------------------------------------------------------------------- scenes


def box_orientation(scene: Scene) -> tuple[float, float, float, float]:
    """
    Quaternion ``(x, y, z, w)`` of the object boxes' axes in ``scene.frame_id``.

    Sizes are extents along the camera optical axes, so the box axes are the camera's:
    identity in the camera frame, ``R_frame_from_camera`` in a target frame.
    """
    return scene.camera_orientation


def camera_pose_fields(scene: Scene) -> Fields:
    """Pose of the camera optical frame in ``scene.frame_id`` (identity in the camera frame)."""
    return pose_fields(scene.camera_origin, box_orientation(scene))


def spatial_object_fields(
    obj: SpatialObject, scene: Scene, orientation: Sequence[float] | None = None
) -> Fields:
    """
    spatial_vlm_ros/SpatialObject.

    An object without a position gets NaN pose, size and covariance (SpatialObject.msg: never
    zeros).
    """
    ((_, position, distance),) = placed(scene, [obj])
    quaternion = box_orientation(scene) if orientation is None else orientation
    return _object_fields(obj, position, distance, quaternion)


def _object_fields(
    obj: SpatialObject, position: Position | None, distance: float, orientation: Sequence[float]
) -> Fields:
    """:func:`spatial_object_fields` of an object already placed (core/positions.py)."""
    lifted = obj.lifted
    box = obj.box
    fields: Fields = {
        'id': obj.id,
        'label': obj.label,
        'confidence': float(obj.confidence),
        'bbox_x_min': float(box.x_min),
        'bbox_y_min': float(box.y_min),
        'bbox_x_max': float(box.x_max),
        'bbox_y_max': float(box.y_max),
        'valid_depth_ratio': float(lifted.valid_depth_ratio),
        'range': distance,
    }
    if position is not None:
        fields['pose'] = pose_fields(position, orientation)
        fields['size'] = xyz_fields(NAN3 if lifted.size is None else _floats(lifted.size))
        covariance = [math.nan] * 9 if lifted.covariance is None else lifted.covariance
        fields['position_covariance'] = _floats(covariance)
    else:
        fields['pose'] = pose_fields(NAN3, NAN_QUATERNION)
        fields['size'] = xyz_fields(NAN3)
        fields['position_covariance'] = [math.nan] * 9
    return fields


def relation_fields(relation: Relation) -> Fields:
    """spatial_vlm_ros/SpatialRelation."""
    return {
        'subject_id': relation.subject,
        'predicate': relation.predicate,
        'object_id': relation.object,
        'distance': float(relation.distance),
        'confidence': float(relation.confidence),
    }


STAGE_NAMES = (
    'receive_ms',
    'pair_ms',
    'queue_ms',
    'decode_ms',
    'engine_ms',
    'lift_ms',
    'relations_ms',
    'memory_ms',
)


def stage_latency_fields(timings: StageTimings) -> Fields:
    """spatial_vlm_ros/StageLatency (NaN for a stage that did not run)."""
    return {name: float(getattr(timings, name)) for name in STAGE_NAMES}


def scene_fields(scene: Scene) -> Fields:
    """spatial_vlm_ros/SpatialScene (message version 2)."""
    orientation = box_orientation(scene)
    objects: list[Fields] = []
    without_position: list[Fields] = []
    for obj, position, distance in placed(scene):
        if position is not None:
            objects.append(_object_fields(obj, position, distance, orientation))
        else:
            without_position.append(_object_fields(obj, None, distance, NAN_QUATERNION))
    return {
        'header': header_fields(scene.stamp_ns, scene.frame_id),
        'camera_frame_id': scene.camera_frame_id,
        'relation_frame_id': scene.relation_frame_id,
        'camera_pose': camera_pose_fields(scene),
        'objects': objects,
        'objects_without_position': without_position,
        'relations': [relation_fields(relation) for relation in scene.relations],
        'model_id': scene.model_id,
        'engine': scene.engine,
        'latency_ms': float(scene.latency_ms),
        'inference_ms': float(scene.inference_ms),
        'stages': stage_latency_fields(scene.timings),
    }


def pose_stamped_fields(
    stamp_ns: int,
    frame_id: str,
    position: Iterable[float],
    orientation_xyzw: Iterable[float] = IDENTITY_QUATERNION,
) -> Fields:
    """geometry_msgs/PoseStamped."""
    return {
        'header': header_fields(stamp_ns, frame_id),
        'pose': pose_fields(position, orientation_xyzw),
    }


# ----------------------------------------------------------------------------- object memory


def remembered_object_fields(item: RememberedObject) -> Fields:
    """
    Return the fields of a spatial_vlm_ros/RememberedObject, in the memory frame.

    The state is the message's constant: ``ObjectState`` has the same values.
    """
    return {
        'state': int(item.state),
        'id': item.id,
        'label': item.label,
        'first_seen': time_fields(item.first_seen_ns),
        'last_seen': time_fields(item.last_seen_ns),
        'sightings': int(item.sightings),
        'misses': int(item.misses),
        'existence': float(item.existence),
        'confirmed': bool(item.confirmed),
        'position': xyz_fields(_floats(item.position)),
        'position_covariance': _floats(item.covariance),
        'size': xyz_fields(_floats(item.size)),
    }


def object_memory_fields(
    frame_id: str, stamp_ns: int, objects: Iterable[RememberedObject]
) -> Fields:
    """
    spatial_vlm_ros/ObjectMemory.

    Every remembered object (ordered by id) in ``frame_id`` (the memory frame), stamped with the
    image stamp of the memory's last update.
    """
    return {
        'header': header_fields(stamp_ns, frame_id),
        'objects': [
            remembered_object_fields(item) for item in sorted(objects, key=lambda item: item.id)
        ],
    }


# ----------------------------------------------------------------------------- vision_msgs


def pose_covariance_6x6(covariance: npt.ArrayLike | None) -> list[float]:
    """
    Row-major 6x6 (x, y, z, rot x, rot y, rot z) from a 3x3 position covariance.

    The rotation block is :data:`UNKNOWN_ROTATION_VARIANCE` on its diagonal.
    """
    full = np.zeros((6, 6))
    full[:3, :3] = np.nan if covariance is None else np.asarray(covariance, dtype=np.float64)
    full[3:, 3:] = np.eye(3) * UNKNOWN_ROTATION_VARIANCE
    return _floats(full)


def detection3d_fields(obj: SpatialObject, scene: Scene, orientation: Sequence[float]) -> Fields:
    """
    vision_msgs/Detection3D of a positioned object.

    One hypothesis (class_id = label, score = confidence) whose pose is the centroid with its
    covariance; bbox is the oriented box (centre = centroid, axes = the camera's, size along them);
    id = the object id.
    """
    lifted = obj.lifted
    if lifted.position is None:  # vision_msgs has no detection without a pose
        raise ValueError(f'object {obj.id!r} has no position for a Detection3D')
    pose = pose_fields(lifted.position, orientation)
    return {
        'header': header_fields(scene.stamp_ns, scene.frame_id),
        'results': [
            {
                'hypothesis': {'class_id': obj.label, 'score': float(obj.confidence)},
                'pose': {'pose': pose, 'covariance': pose_covariance_6x6(lifted.covariance)},
            }
        ],
        'bbox': {
            'center': pose,
            'size': xyz_fields((0.0, 0.0, 0.0) if lifted.size is None else lifted.size),
        },
        'id': obj.id,
    }


def detection3d_array_fields(scene: Scene) -> Fields:
    """
    Return the vision_msgs/Detection3DArray of the scene's positioned objects.

    In ``scene.frame_id`` at the image stamp; vision_msgs never carries a detection without a
    pose.
    """
    orientation = box_orientation(scene)
    return {
        'header': header_fields(scene.stamp_ns, scene.frame_id),
        'detections': [
            detection3d_fields(obj, scene, orientation) for obj in scene.positioned_objects
        ],
    }


# ----------------------------------------------------------------------------- markers


def marker_fields(
    spec: MarkerSpec,
    marker_set: MarkerSet,
    header: Fields | None = None,
    lifetime: Fields | None = None,
) -> Fields:
    """
    Return the visualization_msgs/Marker of one :class:`MarkerSpec`.

    ``header`` and ``lifetime``: the set's, when the caller built them already.
    """
    fields: Fields = {
        'header': header or header_fields(marker_set.stamp_ns, marker_set.frame_id),
        'ns': spec.namespace,
        'id': int(spec.marker_id),
    }
    if spec.kind is MarkerKind.DELETE_ALL:
        fields['pose'] = pose_fields((0.0, 0.0, 0.0))
        fields['action'] = MARKER_ACTION_DELETEALL
        return fields
    color = spec.color
    fields['pose'] = pose_fields(spec.position, spec.orientation)
    fields['type'] = _MARKER_TYPES[spec.kind]
    fields['action'] = MARKER_ACTION_ADD
    fields['scale'] = xyz_fields(spec.scale)
    fields['color'] = {
        'r': float(color.r),
        'g': float(color.g),
        'b': float(color.b),
        'a': float(color.a),
    }
    fields['lifetime'] = lifetime or duration_fields(marker_set.lifetime_s)
    fields['points'] = [xyz_fields(point) for point in spec.points]
    fields['text'] = spec.text
    return fields


def marker_array_fields(marker_set: MarkerSet) -> Fields:
    """visualization_msgs/MarkerArray of a :class:`MarkerSet`."""
    header = header_fields(marker_set.stamp_ns, marker_set.frame_id)
    lifetime = duration_fields(marker_set.lifetime_s)
    return {
        'markers': [
            marker_fields(spec, marker_set, header, lifetime) for spec in marker_set.markers
        ]
    }


# ----------------------------------------------------------------------------- images


def camera_info_fields(
    stamp_ns: int,
    frame_id: str,
    intrinsics: CameraIntrinsics,
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
) -> Fields:
    """sensor_msgs/CameraInfo of a pinhole camera (plumb_bob, identity rectification)."""
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    return {
        'header': header_fields(stamp_ns, frame_id),
        'height': int(intrinsics.height),
        'width': int(intrinsics.width),
        'distortion_model': 'plumb_bob',
        'd': _floats(distortion),
        'k': _floats([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        'r': [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        'p': _floats([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
    }


def image_fields(
    stamp_ns: int, frame_id: str, image: npt.NDArray[Any], encoding: str | None = None
) -> Fields:
    """
    Return the sensor_msgs/Image of an (H, W, 3) uint8 RGB image or an (H, W) depth image.

    The encoding is rgb8, 16UC1 (uint16) or 32FC1 (float32) unless ``encoding`` is given.
    Little-endian machines only write ``is_bigendian = 0``; the data are the array's bytes,
    row-major.
    """
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
    big_endian = array.dtype.byteorder == '>' or (
        array.dtype.byteorder == '=' and array.dtype.itemsize > 1 and np.little_endian is False
    )
    return {
        'header': header_fields(stamp_ns, frame_id),
        'height': int(height),
        'width': int(width),
        'encoding': encoding,
        'is_bigendian': int(big_endian),
        'step': int(array.strides[0]),
        'data': array.tobytes(),
    }


# ----------------------------------------------------------------------------- service replies


def covariance_fields(covariance: npt.ArrayLike | None) -> list[float]:
    """Return a row-major ``float64[9]`` covariance; NaN when there is none (never zeros)."""
    if covariance is None:
        return [math.nan] * 9
    return _floats(np.asarray(covariance, dtype=np.float64).reshape(9))


def measurement_fields(measurement: Measurement) -> Fields:
    """spatial_vlm_ros/SpatialMeasurement."""
    return {
        'kind': measurement.kind.value,
        'object_ids': list(measurement.object_ids),
        'value': float(measurement.value),
        'sigma': float(measurement.sigma),
        'frame_id': measurement.frame_id,
        'text': measurement.text,
        'model_value': float(measurement.model_value),
    }


def locate_candidate_fields(candidate: LocateCandidate) -> Fields:
    """spatial_vlm_ros/LocateCandidate."""
    return {
        'id': candidate.id,
        'label': candidate.label,
        'score': float(candidate.score),
        'in_view': bool(candidate.in_view),
        'reason': candidate.reason,
    }


def approach_pose_fields(pose: ApproachPose, stamp_ns: int) -> Fields:
    """geometry_msgs/PoseStamped of an approach pose (on the frame's ground plane, yaw only)."""
    position = (pose.x, pose.y, pose.z)
    return pose_stamped_fields(stamp_ns, pose.frame_id, position, pose.quaternion_xyzw)


def out_of_view_object_fields(item: RememberedCandidate, scene: Scene) -> Fields:
    """
    Return the spatial_vlm_ros/SpatialObject of a remembered object out of view.

    In ``scene.frame_id`` (``item`` is given in that frame): position and covariance as
    remembered; no pixel box
    (zeros), confidence 0, size and orientation NaN (its extents are along the axes of a camera
    pose that is not this scene's), range from this scene's camera.
    """
    position = np.asarray(item.position, dtype=np.float64)
    return {
        'id': item.id,
        'label': item.label,
        'confidence': 0.0,
        'pose': pose_fields(position, NAN_QUATERNION),
        'size': xyz_fields(NAN3),
        'position_covariance': covariance_fields(item.covariance),
        'range': float(np.linalg.norm(position - scene.camera_origin)),
        'valid_depth_ratio': 0.0,
    }
