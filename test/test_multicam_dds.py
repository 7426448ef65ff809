# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Two cameras, one node, over real DDS: each camera's scenes on its own topics.

The node runs as a process (``spatial_vlm_node`` with ``cameras: [cam_left, cam_right]`` and the
recorded engine, so the model output is known); two camera publishers (their own rclpy nodes)
publish RGB, depth and CameraInfo in their namespaces with the SAME stamps, as a hardware-
synchronised rig does, but different optical frames and depths (the right camera sees
everything 1.5 times farther). Each camera's scenes must come out on ``~/<camera>/scene`` with
that camera's frame and depths, both cameras must keep getting scenes, the single-camera topics
must not exist, and /diagnostics must have one pipeline status per camera.
"""

from __future__ import annotations

import json
from pathlib import Path
import signal
import time
from typing import Any

import numpy as np
import pytest

from conftest import spin_until
from test_node_dds import NAMESPACE, make_messages, start_node, stop_node, synthetic_depth_mm

pytestmark = pytest.mark.ros

CAMERAS = {'cam_left': 1.0, 'cam_right': 1.5}  # camera name -> depth scale of its view
GREY = {'cam_left': 90, 'cam_right': 160}  # camera name -> its (uniform) colour image value
NODE_BASE = f'{NAMESPACE}/spatial_vlm'


def camera_messages(camera: str, stamp_ns: int) -> tuple[Any, Any, Any]:
    rgb, depth, info = make_messages(stamp_ns, frame_id=f'{camera}_color_optical_frame')
    depth_mm = np.round(synthetic_depth_mm() * CAMERAS[camera]).astype(np.uint16)
    depth.data = depth_mm.tobytes()
    rgb.data = np.full((rgb.height, rgb.width, 3), GREY[camera], dtype=np.uint8).tobytes()
    return rgb, depth, info


class Rig:
    """The two camera publishers and the listener of the node's per-camera outputs."""

    def __init__(self, rclpy: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        from spatial_vlm_ros.msg import SpatialScene
        from spatial_vlm_ros.srv import LocateObject

        suffix = f'{int(time.time() * 1e3) % 10**6}'
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.executor = SingleThreadedExecutor()
        self.nodes: list[Any] = []
        self.publishers: dict[str, tuple[Any, Any, Any]] = {}
        for camera in CAMERAS:
            node = rclpy.create_node(f'{camera}_driver_{suffix}', namespace=NAMESPACE)
            self.publishers[camera] = (
                node.create_publisher(Image, f'{camera}/color/image_raw', qos),
                node.create_publisher(Image, f'{camera}/depth/image_raw', qos),
                node.create_publisher(CameraInfo, f'{camera}/color/camera_info', qos),
            )
            self.nodes.append(node)
            self.executor.add_node(node)
        self.listener = rclpy.create_node(f'multicam_listener_{suffix}')
        self.nodes.append(self.listener)
        self.executor.add_node(self.listener)
        self.scenes: dict[str, list[Any]] = {camera: [] for camera in CAMERAS}
        self.scene_json: dict[str, list[dict[str, Any]]] = {camera: [] for camera in CAMERAS}
        for camera in CAMERAS:
            self.listener.create_subscription(
                SpatialScene, f'{NODE_BASE}/{camera}/scene', self.scenes[camera].append, 10
            )
            self.listener.create_subscription(
                String,
                f'{NODE_BASE}/{camera}/scene_json',
                lambda msg, camera=camera: self.scene_json[camera].append(json.loads(msg.data)),
                10,
            )
        self.annotated: dict[str, list[Any]] = {camera: [] for camera in CAMERAS}
        for camera in CAMERAS:
            self.listener.create_subscription(
                Image, f'{NODE_BASE}/{camera}/annotated_image', self.annotated[camera].append, 2
            )
        self.single_camera_scenes: list[Any] = []
        self.listener.create_subscription(
            SpatialScene, f'{NODE_BASE}/scene', self.single_camera_scenes.append, 10
        )
        self.diagnostics: list[Any] = []
        self.listener.create_subscription(
            DiagnosticArray, '/diagnostics', self.diagnostics.append, 10
        )
        self.locate = self.listener.create_client(LocateObject, f'{NODE_BASE}/locate')

    def wait_for_node(self) -> bool:
        return spin_until(
            self.executor,
            lambda: all(
                publisher.get_subscription_count() > 0
                for publishers in self.publishers.values()
                for publisher in publishers
            ),
            60.0,
        )

    def publish(self, stamp_ns: int) -> None:
        for camera, (rgb_pub, depth_pub, info_pub) in self.publishers.items():
            rgb, depth, info = camera_messages(camera, stamp_ns)
            info_pub.publish(info)
            depth_pub.publish(depth)
            rgb_pub.publish(rgb)

    def close(self) -> None:
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()


def stamp_of(message: Any) -> int:
    return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec


def test_two_cameras_on_one_node_publish_on_their_own_topics(
    ros_env: dict[str, str],
    rclpy_session: Any,
    recording: Path,
    stamps: list[int],
    tmp_path: Path,
) -> None:
    from spatial_vlm_ros.srv import LocateObject

    log_path = tmp_path / 'node.log'
    process = start_node(
        dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT'),
        recording,
        log_path,
        ('-p', f'cameras:=[{", ".join(CAMERAS)}]', '-p', 'max_in_flight:=2'),
    )
    rig = Rig(rclpy_session)
    try:
        assert rig.wait_for_node(), 'the node never subscribed to both cameras'

        def enough() -> bool:
            return all(len(scenes) >= 3 for scenes in rig.scenes.values())

        for stamp in stamps:
            rig.publish(stamp)
            spin_until(rig.executor, enough, 0.2)
            if enough():
                break
        log = log_path.read_text(errors='replace')
        counts = {camera: len(scenes) for camera, scenes in rig.scenes.items()}
        assert enough(), f'scenes per camera {counts}; node log:\n{log[-3000:]}'
        assert 'cameras=cam_left,cam_right' in log

        published = set(stamps)
        for camera, scale in CAMERAS.items():
            scenes = rig.scenes[camera]
            seen = [stamp_of(scene) for scene in scenes]
            assert set(seen) <= published
            assert seen == sorted(seen) and len(set(seen)) == len(seen)  # per-camera order
            for scene in scenes:
                # The camera's own frame and depth: a scene never comes from the other camera.
                assert scene.header.frame_id == f'{camera}_color_optical_frame'
                assert scene.camera_frame_id == f'{camera}_color_optical_frame'
                by_label = {obj.label: obj for obj in scene.objects}
                assert set(by_label) == {'mug', 'box'}
                assert by_label['mug'].pose.position.z == pytest.approx(1.2 * scale, abs=0.08)
                assert by_label['box'].pose.position.z == pytest.approx(2.0 * scale, abs=0.12)
        # Equal stamps on both cameras (a synchronised rig): both got scenes of common stamps.
        common = {stamp_of(s) for s in rig.scenes['cam_left']} & {
            stamp_of(s) for s in rig.scenes['cam_right']
        }
        assert common, 'no stamp was published for both cameras'
        assert rig.single_camera_scenes == []  # ~/scene is the single-camera topic only

        assert spin_until(
            rig.executor, lambda: all(rig.scene_json[camera] for camera in CAMERAS), 20.0
        )
        for camera in CAMERAS:
            assert rig.scene_json[camera][-1]['frame_id'] == f'{camera}_color_optical_frame'
        # Each camera's annotated image is drawn on its own colour image (the decoded frames
        # are kept per camera: equal stamps must not mix them up).
        assert spin_until(
            rig.executor, lambda: all(len(rig.annotated[c]) >= 2 for c in CAMERAS), 20.0
        ), {camera: len(images) for camera, images in rig.annotated.items()}
        for camera in CAMERAS:
            for image in rig.annotated[camera]:
                pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3)
                assert image.header.frame_id == f'{camera}_color_optical_frame'
                assert tuple(pixels[-1, -1]) == (GREY[camera],) * 3, camera  # a corner, undrawn

        def camera_statuses() -> dict[str, Any]:
            latest = rig.diagnostics[-1].status if rig.diagnostics else []
            return {status.name: status for status in latest if status.name.endswith(' pipeline')}

        wanted = {f'{NODE_BASE}: {camera} pipeline' for camera in CAMERAS}

        def camera_values() -> dict[str, dict[str, str]]:
            statuses = camera_statuses()
            return {
                name: {kv.key: kv.value for kv in statuses[name].values}
                for name in wanted & set(statuses)
            }

        def counted() -> bool:
            values = camera_values()
            return set(values) == wanted and all(
                int(v['published_scenes']) >= 3 and int(v['pairing.emitted']) >= 3
                for v in values.values()
            )

        # /diagnostics comes every second: wait for one computed after the scenes above.
        assert spin_until(rig.executor, counted, 20.0), (
            [status.name for status in (rig.diagnostics[-1].status if rig.diagnostics else [])],
            camera_values(),
        )

        # ~/locate answers on the newest frame of either camera, in that camera's frame.
        assert rig.locate.wait_for_service(timeout_sec=30.0)
        future = rig.locate.call_async(LocateObject.Request(description='mug'))
        assert spin_until(rig.executor, future.done, 30.0), 'no locate reply'
        reply = future.result()
        assert reply.found, reply.reason
        frame_id = reply.pose.header.frame_id
        camera = frame_id.removesuffix('_color_optical_frame')
        assert camera in CAMERAS, frame_id
        assert reply.pose.pose.position.z == pytest.approx(1.2 * CAMERAS[camera], abs=0.08)
    finally:
        rig.close()
        code = stop_node(process)
    assert code in (0, -signal.SIGINT), log_path.read_text(errors='replace')
