# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""tf2_msgs and vision_msgs, as `make setup` provides them, over real DDS and in rosbag2 files.

The PyPI ROS wheels have neither package, so `make setup` builds them with rosidl from the
upstream definitions vendored in third_party/ros_interfaces (a ROS install keeps its own). These
tests hold whichever is installed to what a real ROS 2 peer expects: the DDS type names, the
RIHS01 type hashes, and the CDR bytes that rosbags (the replay's bag library) writes.

A second process publishes, as a TF broadcaster and a detector would; this process subscribes
and reads the ROS graph.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import os
from pathlib import Path
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from conftest import REPO_ROOT, spin_until

pytestmark = pytest.mark.ros

VENDORED = REPO_ROOT / 'third_party' / 'ros_interfaces'
DETECTIONS_TOPIC = '/vendored_test/detections'

# The publisher process. float64 fields cross DDS unchanged, so the checks compare exactly.
PUBLISHER = f"""
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile
from geometry_msgs.msg import TransformStamped
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose


def transform(parent, child, x):
    stamped = TransformStamped()
    stamped.header.stamp.sec, stamped.header.stamp.nanosec = 1700000000, 250000000
    stamped.header.frame_id, stamped.child_frame_id = parent, child
    stamped.transform.translation.x, stamped.transform.translation.z = x, 0.75
    stamped.transform.rotation.z, stamped.transform.rotation.w = 0.6, 0.8
    return stamped


rclpy.init()
node = rclpy.create_node('vendored_interfaces_publisher')
tf_pub = node.create_publisher(TFMessage, '/tf', 100)
# Like tf2_ros's StaticTransformBroadcaster: transient local, so late subscribers get it.
static_qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
static_pub = node.create_publisher(TFMessage, '/tf_static', static_qos)
detections_pub = node.create_publisher(Detection3DArray, '{DETECTIONS_TOPIC}', 10)
static_pub.publish(TFMessage(transforms=[transform('base_link', 'camera_link', 0.125)]))

detection = Detection3D(id='mug_3')
detection.header.frame_id = 'odom'
detection.bbox.center.position.x, detection.bbox.center.position.y = 1.5, -0.25
detection.bbox.center.orientation.w = 1.0
detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = 0.08, 0.08, 0.1
hypothesis = ObjectHypothesisWithPose()
hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = 'mug', 0.875
hypothesis.pose.pose = detection.bbox.center
hypothesis.pose.covariance[0] = hypothesis.pose.covariance[7] = 0.0025
detection.results.append(hypothesis)
array = Detection3DArray(detections=[detection])
array.header.frame_id = 'odom'
array.header.stamp.sec = 1700000000

def tick():
    tf_pub.publish(TFMessage(transforms=[transform('odom', 'base_link', 1.5)]))
    detections_pub.publish(array)

node.create_timer(0.1, tick)
print('publishing', flush=True)
rclpy.spin(node)
"""


@pytest.fixture(scope='module')
def publisher(ros_env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, '-c', PUBLISHER],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    first_line = process.stdout.readline()
    assert first_line.strip() == 'publishing', first_line + process.stdout.read()
    yield process
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope='module')
def subscriber(rclpy_session: Any, publisher: subprocess.Popen[str]) -> Iterator[Any]:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    node = rclpy_session.create_node('vendored_interfaces_subscriber')
    received: dict[str, list[Any]] = {'/tf': [], '/tf_static': [], DETECTIONS_TOPIC: []}
    node.create_subscription(TFMessage, '/tf', received['/tf'].append, 100)
    static_qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(TFMessage, '/tf_static', received['/tf_static'].append, static_qos)
    node.create_subscription(
        Detection3DArray, DETECTIONS_TOPIC, received[DETECTIONS_TOPIC].append, 10
    )
    executor = SingleThreadedExecutor(context=rclpy_session.get_default_context())
    executor.add_node(node)
    assert spin_until(executor, lambda: all(received.values()), timeout_s=60.0), {
        topic: len(messages) for topic, messages in received.items()
    }
    node.received = received  # read by the tests; node.executor is the executor above
    yield node
    executor.remove_node(node)
    node.destroy_node()


def _kilted_typestore_with_vendored() -> Any:
    """rosbags' Kilted typestore plus every vendored .msg, registered from its text.

    Registering a type the store already has (tf2_msgs/msg/TFMessage is in rosbags' Kilted
    store, taken from a real Kilted install) raises if the two definitions differ.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    for package in ('tf2_msgs', 'vision_msgs'):
        for msg_file in sorted((VENDORED / package / 'msg').glob('*.msg')):
            typestore.register(
                get_types_from_msg(msg_file.read_text(), f'{package}/msg/{msg_file.stem}')
            )
    return typestore


def test_tf_and_tf_static_arrive_over_dds(subscriber: Any) -> None:
    (static,) = subscriber.received['/tf_static'][:1]
    assert [(t.header.frame_id, t.child_frame_id) for t in static.transforms] == [
        ('base_link', 'camera_link')
    ]
    assert static.transforms[0].transform.translation.x == 0.125
    dynamic = subscriber.received['/tf'][0].transforms[0]
    assert (dynamic.header.frame_id, dynamic.child_frame_id) == ('odom', 'base_link')
    assert (dynamic.header.stamp.sec, dynamic.header.stamp.nanosec) == (1700000000, 250000000)
    translation, rotation = dynamic.transform.translation, dynamic.transform.rotation
    assert (translation.x, translation.y, translation.z) == (1.5, 0.0, 0.75)
    assert (rotation.x, rotation.y, rotation.z, rotation.w) == (0.0, 0.0, 0.6, 0.8)


def test_detection3d_array_arrives_over_dds(subscriber: Any) -> None:
    array = subscriber.received[DETECTIONS_TOPIC][0]
    assert (array.header.frame_id, array.header.stamp.sec) == ('odom', 1700000000)
    (detection,) = array.detections
    assert (detection.id, detection.header.frame_id) == ('mug_3', 'odom')
    center = detection.bbox.center
    assert (center.position.x, center.position.y, center.orientation.w) == (1.5, -0.25, 1.0)
    assert (detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z) == (
        0.08,
        0.08,
        0.1,
    )
    (hypothesis,) = detection.results
    assert (hypothesis.hypothesis.class_id, hypothesis.hypothesis.score) == ('mug', 0.875)
    assert hypothesis.pose.pose.position.x == 1.5
    assert list(hypothesis.pose.covariance[:8]) == [0.0025, 0, 0, 0, 0, 0, 0, 0.0025]


@pytest.mark.parametrize(
    ('topic', 'type_name'),
    [
        ('/tf', 'tf2_msgs/msg/TFMessage'),
        ('/tf_static', 'tf2_msgs/msg/TFMessage'),
        (DETECTIONS_TOPIC, 'vision_msgs/msg/Detection3DArray'),
    ],
)
def test_graph_reports_upstream_type_names_and_hashes(
    subscriber: Any, topic: str, type_name: str
) -> None:
    def remote_publishers() -> list[Any]:
        return [
            info
            for info in subscriber.get_publishers_info_by_topic(topic)
            if info.node_name == 'vendored_interfaces_publisher'
        ]

    # Messages can arrive before the graph cache has the endpoint (two discovery callbacks).
    assert spin_until(subscriber.executor, remote_publishers, timeout_s=10.0)
    (remote,) = remote_publishers()
    assert remote.topic_type == type_name
    # RIHS01 covers names and types of all fields, nested types included: one renamed or
    # retyped field anywhere below Detection3DArray changes it. rosbags computes it
    # independently, from the upstream .msg text.
    expected_hash = _kilted_typestore_with_vendored().hash_rihs01(type_name)
    assert str(remote.topic_type_hash) == expected_hash


def _installed_type_hash(type_name: str) -> str:
    """The RIHS01 hash rosidl computed for ``type_name`` at build time (its share/ .json).

    Looked up like the ament index does, in AMENT_PREFIX_PATH (a sourced ROS install), then in
    this interpreter's prefix (the venv of `make setup`, where nothing is sourced).
    """
    package, kind, name = type_name.split('/')
    prefixes = [*filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep))]
    for prefix in [*prefixes, sys.prefix]:
        description = Path(prefix) / 'share' / package / kind / f'{name}.json'
        if description.is_file():
            hashes = json.loads(description.read_text())['type_hashes']
            return next(h['hash_string'] for h in hashes if h['type_name'] == type_name)
    raise AssertionError(f'no installed type description for {type_name} in {prefixes}')


def test_tf_message_hash_equals_rosbags_kilted_store() -> None:
    """rosbags ships TFMessage as generated from a real Kilted install: the same hash as ours."""
    from rosbags.typesys import Stores, get_typestore

    kilted_hash = get_typestore(Stores.ROS2_KILTED).hash_rihs01('tf2_msgs/msg/TFMessage')
    assert _installed_type_hash('tf2_msgs/msg/TFMessage') == kilted_hash


@pytest.mark.parametrize(
    'name', sorted(p.stem for p in (VENDORED / 'vision_msgs' / 'msg').glob('*.msg'))
)
def test_vision_msgs_hashes_equal_the_upstream_text(name: str) -> None:
    type_name = f'vision_msgs/msg/{name}'
    expected_hash = _kilted_typestore_with_vendored().hash_rihs01(type_name)
    assert _installed_type_hash(type_name) == expected_hash


DETECTIONS_TYPE = 'vision_msgs/msg/Detection3DArray'


def _rclpy_detections() -> Any:
    """A Detection3DArray built with the installed (rosidl-generated) Python classes."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    detection = Detection3D(id='chair_12')
    detection.header.frame_id = 'map'
    detection.bbox.center.position.x = -2.25
    detection.bbox.center.orientation.z, detection.bbox.center.orientation.w = 0.6, 0.8
    detection.bbox.size.x = detection.bbox.size.y = 0.5
    detection.bbox.size.z = 0.875
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = 'chair', 0.5
    hypothesis.pose.covariance[35] = 0.125
    detection.results.append(hypothesis)
    array = Detection3DArray(detections=[detection])
    array.header.frame_id = 'map'
    array.header.stamp.sec, array.header.stamp.nanosec = 42, 7
    return array


def _rosbags_detections(typestore: Any) -> Any:
    """The same Detection3DArray built with rosbags' classes, as the replay builds messages."""
    types = typestore.types
    time, header = types['builtin_interfaces/msg/Time'], types['std_msgs/msg/Header']
    point, quaternion = types['geometry_msgs/msg/Point'], types['geometry_msgs/msg/Quaternion']
    pose, vector3 = types['geometry_msgs/msg/Pose'], types['geometry_msgs/msg/Vector3']
    covariance = np.zeros(36)
    covariance[35] = 0.125
    hypothesis = types['vision_msgs/msg/ObjectHypothesisWithPose'](
        hypothesis=types['vision_msgs/msg/ObjectHypothesis'](class_id='chair', score=0.5),
        pose=types['geometry_msgs/msg/PoseWithCovariance'](
            pose=pose(position=point(0.0, 0.0, 0.0), orientation=quaternion(0.0, 0.0, 0.0, 1.0)),
            covariance=covariance,
        ),
    )
    detection = types['vision_msgs/msg/Detection3D'](
        header=header(stamp=time(sec=0, nanosec=0), frame_id='map'),
        results=[hypothesis],
        bbox=types['vision_msgs/msg/BoundingBox3D'](
            center=pose(position=point(-2.25, 0.0, 0.0), orientation=quaternion(0, 0, 0.6, 0.8)),
            size=vector3(x=0.5, y=0.5, z=0.875),
        ),
        id='chair_12',
    )
    return types[DETECTIONS_TYPE](
        header=header(stamp=time(sec=42, nanosec=7), frame_id='map'), detections=[detection]
    )


def test_rosbags_and_rclpy_write_identical_cdr() -> None:
    """The same bytes from both, except alignment padding.

    Fast CDR (rclpy) leaves padding bytes as it finds them in memory (seen: b'd\\x01' after a
    string), rosbags writes zeros; every other byte must match.
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from vision_msgs.msg import Detection3DArray

    typestore = _kilted_typestore_with_vendored()
    rosbags_cdr = bytes(typestore.serialize_cdr(_rosbags_detections(typestore), DETECTIONS_TYPE))
    rclpy_cdr = serialize_message(_rclpy_detections())
    assert len(rclpy_cdr) == len(rosbags_cdr)
    # rosbags re-serializing what it reads from rclpy's bytes zeroes the padding.
    rclpy_canonical = bytes(
        typestore.serialize_cdr(
            typestore.deserialize_cdr(rclpy_cdr, DETECTIONS_TYPE), DETECTIONS_TYPE
        )
    )
    assert rclpy_canonical == rosbags_cdr
    differing = [
        i for i, (ours, theirs) in enumerate(zip(rclpy_cdr, rosbags_cdr, strict=True))
        if ours != theirs
    ]  # fmt: skip
    assert all(rosbags_cdr[i] == 0 for i in differing), differing
    assert deserialize_message(rosbags_cdr, Detection3DArray) == _rclpy_detections()


def test_mcap_bag_written_by_rosbags_reads_back_in_rclpy(tmp_path: Path) -> None:
    """What the replay does: rosbags writes the types into an MCAP rosbag2 file; ROS reads them."""
    from geometry_msgs.msg import Transform, TransformStamped, Vector3
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection3DArray

    typestore = _kilted_typestore_with_vendored()
    types = typestore.types
    rosbags_tf = types['tf2_msgs/msg/TFMessage'](
        transforms=[
            types['geometry_msgs/msg/TransformStamped'](
                header=types['std_msgs/msg/Header'](
                    stamp=types['builtin_interfaces/msg/Time'](sec=3, nanosec=0),
                    frame_id='base_link',
                ),
                child_frame_id='camera_link',
                transform=types['geometry_msgs/msg/Transform'](
                    translation=types['geometry_msgs/msg/Vector3'](0.0, 0.0, 0.5),
                    rotation=types['geometry_msgs/msg/Quaternion'](0.0, 0.0, 0.0, 1.0),
                ),
            )
        ]
    )
    written = {
        '/tf': ('tf2_msgs/msg/TFMessage', rosbags_tf),
        DETECTIONS_TOPIC: (DETECTIONS_TYPE, _rosbags_detections(typestore)),
    }
    bag = tmp_path / 'bag'
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, (type_name, message) in written.items():
            connection = writer.add_connection(topic, type_name, typestore=typestore)
            writer.write(connection, 1, bytes(typestore.serialize_cdr(message, type_name)))

    with Reader(bag) as reader:
        read = {connection.topic: raw for connection, _, raw in reader.messages()}
        definitions = {
            connection.topic: connection.msgdef.data for connection in reader.connections
        }

    expected_tf = TransformStamped(
        child_frame_id='camera_link',
        transform=Transform(translation=Vector3(z=0.5)),
    )
    expected_tf.header.stamp.sec, expected_tf.header.frame_id = 3, 'base_link'
    assert deserialize_message(read['/tf'], TFMessage) == TFMessage(transforms=[expected_tf])
    assert deserialize_message(read[DETECTIONS_TOPIC], Detection3DArray) == _rclpy_detections()
    # A reader that knows nothing of vision_msgs (Foxglove, `ros2 bag info`, another rosbags)
    # rebuilds the types from the definitions the bag carries: the same types, the same hashes.
    reader_store = get_typestore(Stores.EMPTY)
    for topic, (type_name, _) in written.items():
        reader_store.register(get_types_from_msg(definitions[topic], type_name))
        assert reader_store.hash_rihs01(type_name) == _installed_type_hash(type_name)
