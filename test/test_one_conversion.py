# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One conversion path: the node's rclpy messages and the replay's rosbags messages come from the
same field mapping (core/message_fields.py) and serialize to the same CDR bytes.

rclpy (Fast CDR) leaves the alignment padding between fields uninitialised, so two rclpy
serializations of one message can differ in those bytes; rosbags writes them as zeros. The
comparison is therefore: equal length, rosbags re-serializing rclpy's bytes gives exactly
rosbags' own bytes, and every raw difference is a byte rosbags wrote as zero padding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.markers import scene_markers
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    compose,
    make_transform,
    quaternion_from_rotation,
)
from spatial_vlm_ros.core.types import (
    Lifted3D,
    PixelBox,
    Relation,
    Scene,
    SpatialObject,
    StageTimings,
)
from spatial_vlm_ros.replay import msgs

pytestmark = pytest.mark.ros  # rclpy and the generated interfaces


def _object(object_id: str, position, label: str = '') -> SpatialObject:
    if position is None:
        lifted = Lifted3D(None, None, None, 0.01, 3)
    else:
        lifted = Lifted3D(
            np.asarray(position, dtype=float),
            np.array([[4e-4, 1e-5, 2e-5], [1e-5, 9e-4, -3e-5], [2e-5, -3e-5, 2.5e-3]]),
            np.array([0.12, 0.3, 0.07]),
            0.734,
            321,
        )
    label = label or object_id.rsplit('_', 1)[0].replace('_', ' ')
    return SpatialObject(object_id, label, 0.87, PixelBox(10.25, 20.5, 130.75, 200.0), lifted)


def _scenes() -> dict[str, Scene]:
    objects = [
        _object('mug_0', (-0.31, 0.12, 1.27)),
        _object('office_chair_0', (0.52, 0.4, 2.9)),
        _object('lamp_0', None),
        _object('coke_can_1', (0.05, -0.2, 1.9)),
    ]
    relations = [
        Relation('mug_0', 'left_of', 'office_chair_0', 1.73, 0.9999),
        Relation('mug_0', 'in_front_of', 'office_chair_0', 1.73, 1.0),
        Relation('coke_can_1', 'near', 'mug_0', 0.71, 0.981),
    ]
    timings = StageTimings(decode_ms=4.5, engine_ms=812.25, lift_ms=3.0, relations_ms=0.4)
    T_map_from_camera = compose(make_transform((1.0, -2.0, 0.8)), T_BODY_FROM_OPTICAL)  # noqa: N806
    return {
        'camera frame': Scene(
            1767225600123456789,
            'camera_color_optical_frame',
            'camera_color_optical_frame',
            objects,
            relations,
            'camera_color_optical_frame',
            'spatial-ssrl-4b-fp8',
            'sglang',
            950.5,
            812.25,
            warnings=['depth units look wrong'],
            timings=timings,
        ),
        'target frame': Scene(
            42,
            'map',
            'camera_color_optical_frame',
            objects,
            relations,
            'base_link',
            'qwen3-vl',
            'openai',
            timings=timings,
            T_frame_from_camera=T_map_from_camera,
        ),
        'empty': Scene(7, 'cam', 'cam', error='model output not usable: no JSON'),
    }


SCENES = _scenes()


def assert_same_cdr(rclpy_bytes: bytes, rosbags_bytes: bytes, msgtype: str) -> None:
    assert len(rclpy_bytes) == len(rosbags_bytes)
    canonical = msgs.serialize(msgs.deserialize(rclpy_bytes, msgtype))
    assert canonical == rosbags_bytes
    differing = [
        i for i, (a, b) in enumerate(zip(rclpy_bytes, rosbags_bytes, strict=True)) if a != b
    ]
    assert all(rosbags_bytes[i] == 0 for i in differing), differing


@pytest.mark.parametrize('name', sorted(SCENES))
def test_scene_messages_are_byte_identical_from_node_and_replay(name: str) -> None:
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.conversions import scene_to_msg

    scene = SCENES[name]
    assert_same_cdr(
        serialize_message(scene_to_msg(scene)),
        msgs.serialize(msgs.scene_msg(scene)),
        msgs.SCENE_TYPE,
    )


@pytest.mark.parametrize('name', sorted(SCENES))
def test_marker_arrays_are_byte_identical_from_node_and_replay(name: str) -> None:
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.markers import marker_set_to_msg

    marker_set = scene_markers(SCENES[name])
    assert_same_cdr(
        serialize_message(marker_set_to_msg(marker_set)),
        msgs.serialize(msgs.marker_array_msg(marker_set)),
        msgs.MARKER_ARRAY_TYPE,
    )


def test_annotated_images_are_byte_identical_from_node_and_replay() -> None:
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.conversions import rgb_to_image_msg

    scene = SCENES['camera frame']
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert_same_cdr(
        serialize_message(rgb_to_image_msg(rgb, scene)),
        msgs.serialize(msgs.image_msg(scene.stamp_ns, scene.camera_frame_id, rgb, 'rgb8')),
        msgs.IMAGE_TYPE,
    )


# Field values for the interfaces whose producers live in other modules (query, locate, memory):
# the two factories must agree on them too.
NEW_MESSAGES = {
    'StageLatency': message_fields.stage_latency_fields(StageTimings(engine_ms=3.25)),
    'SpatialMeasurement': {
        'kind': 'distance',
        'object_ids': ['mug_0', 'keyboard_0'],
        'value': 0.47,
        'sigma': 0.021,
        'frame_id': 'base_link',
        'text': 'mug_0 is 0.47 m (+/- 0.02 m) from keyboard_0',
        'model_value': math.nan,
    },
    'LocateCandidate': {
        'id': 'chair_2',
        'label': 'chair',
        'score': 0.62,
        'in_view': False,
        'reason': 'label=chair; rightmost of 3',
    },
    'ObjectMemory': {
        'header': message_fields.header_fields(99, 'map'),
        'objects': [
            {
                'state': 2,
                'id': 'chair_0',
                'label': 'chair',
                'first_seen': message_fields.time_fields(10),
                'last_seen': message_fields.time_fields(99),
                'sightings': 12,
                'misses': 1,
                'existence': 0.93,
                'position': message_fields.xyz_fields((1.0, 2.0, 0.4)),
                'position_covariance': [0.01, 0, 0, 0, 0.01, 0, 0, 0, 0.02],
                'size': message_fields.xyz_fields((0.5, 0.5, 0.9)),
            }
        ],
    },
}


@pytest.mark.parametrize('name', sorted(NEW_MESSAGES))
def test_new_interfaces_are_byte_identical_from_both_factories(name: str) -> None:
    from rclpy.serialization import serialize_message

    import spatial_vlm_ros.msg as generated
    from spatial_vlm_ros.ros.conversions import to_message

    fields = NEW_MESSAGES[name]
    msgtype = f'spatial_vlm_ros/msg/{name}'
    assert_same_cdr(
        serialize_message(to_message(getattr(generated, name), fields)),
        msgs.serialize(msgs.build(msgtype, fields)),
        msgtype,
    )


def test_unknown_fields_are_refused_by_both_factories() -> None:
    from spatial_vlm_ros.msg import StageLatency
    from spatial_vlm_ros.ros.conversions import to_message

    with pytest.raises(AttributeError, match='lag_ms'):
        to_message(StageLatency, {'lag_ms': 1.0})
    with pytest.raises(AttributeError, match='lag_ms'):
        msgs.build('spatial_vlm_ros/msg/StageLatency', {'lag_ms': 1.0})


# ----------------------------------------------------------------------------- the mapping


def test_objects_without_a_position_are_listed_apart_with_nan_never_zeros() -> None:
    fields = message_fields.scene_fields(SCENES['camera frame'])
    assert [o['id'] for o in fields['objects']] == ['coke_can_1', 'mug_0', 'office_chair_0']
    (lamp,) = fields['objects_without_position']
    assert lamp['id'] == 'lamp_0'
    values = [
        *lamp['pose']['position'].values(),
        *lamp['pose']['orientation'].values(),
        *lamp['size'].values(),
        *lamp['position_covariance'],
        lamp['range'],
    ]
    assert len(values) == 20 and all(math.isnan(value) for value in values)


def test_target_frame_objects_carry_the_camera_rotation_and_their_range() -> None:
    scene = SCENES['target frame']
    fields = message_fields.scene_fields(scene)
    rotation = scene.T_frame_from_camera[:3, :3]
    expected = quaternion_from_rotation(rotation)
    camera = fields['camera_pose']
    assert [camera['position'][k] for k in 'xyz'] == pytest.approx([1.0, -2.0, 0.8])
    assert [camera['orientation'][k] for k in 'xyzw'] == pytest.approx(expected)
    mug = next(o for o in fields['objects'] if o['id'] == 'mug_0')
    assert [mug['pose']['orientation'][k] for k in 'xyzw'] == pytest.approx(expected)
    position = np.array([mug['pose']['position'][k] for k in 'xyz'])
    assert mug['range'] == pytest.approx(np.linalg.norm(position - (1.0, -2.0, 0.8)))
    # In the camera frame the box axes are the frame's own: identity.
    camera_mug = next(
        o
        for o in message_fields.scene_fields(SCENES['camera frame'])['objects']
        if o['id'] == 'mug_0'
    )
    assert camera_mug['pose']['orientation'] == {'x': 0.0, 'y': 0.0, 'z': 0.0, 'w': 1.0}
    assert camera_mug['range'] == pytest.approx(math.hypot(0.31, 0.12, 1.27))


def test_detection3d_array_mapping() -> None:
    scene = SCENES['target frame']
    fields = message_fields.detection3d_array_fields(scene)
    assert fields['header'] == {'stamp': {'sec': 0, 'nanosec': 42}, 'frame_id': 'map'}
    detections = fields['detections']
    assert [d['id'] for d in detections] == ['coke_can_1', 'mug_0', 'office_chair_0']  # no lamp
    chair = detections[2]
    obj = next(o for o in scene.objects if o.id == 'office_chair_0')
    (result,) = chair['results']
    assert result['hypothesis'] == {'class_id': 'office chair', 'score': pytest.approx(0.87)}
    covariance = np.array(result['pose']['covariance']).reshape(6, 6)
    np.testing.assert_allclose(covariance[:3, :3], obj.lifted.covariance)
    np.testing.assert_array_equal(covariance[:3, 3:], 0.0)
    np.testing.assert_array_equal(
        np.diag(covariance)[3:], message_fields.UNKNOWN_ROTATION_VARIANCE
    )
    orientation = [chair['bbox']['center']['orientation'][k] for k in 'xyzw']
    assert orientation == pytest.approx(
        quaternion_from_rotation(scene.T_frame_from_camera[:3, :3])
    )
    assert chair['bbox']['center'] == result['pose']['pose']
    assert [chair['bbox']['center']['position'][k] for k in 'xyz'] == pytest.approx(obj.position)
    assert [chair['bbox']['size'][k] for k in 'xyz'] == pytest.approx(obj.lifted.size)
    assert chair['header'] == fields['header']


def test_fields_left_out_get_the_same_defaults_from_both_factories() -> None:
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.conversions import to_message

    # Quaternion.w defaults to 1 in ROS 2 messages; rosbags keeps no defaults, so the replay's
    # factory supplies it.
    fields = {'header': message_fields.header_fields(5, 'map'), 'pose': {'position': {'x': 1.0}}}
    assert_same_cdr(
        serialize_message(to_message(PoseStamped, fields)),
        msgs.serialize(msgs.build('geometry_msgs/msg/PoseStamped', fields)),
        'geometry_msgs/msg/PoseStamped',
    )
