# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The object memory of the node, as a real process over real DDS.

A fake camera (this test process) publishes RGB-D frames, ``/tf`` (odom -> base_link at every
image stamp) and ``/tf_static`` (the camera mount); the node (recorded engine, no tf2_ros here:
its own TF buffer) keeps the memory in ``odom`` and publishes scenes in ``base_link``. Checked:
ids stay with their objects while a second identical mug appears on the left (per-frame ids
would rename the first one), a late subscriber of ``~/objects`` gets the memory at once,
``~/forget`` removes an id and says which ids it did not know, the memory is saved on shutdown
and loaded by the next node, which publishes it before any frame.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
import signal
import time
from typing import Any

import numpy as np
import pytest

from conftest import spin_until
import test_node_dds
from test_node_dds import (
    BOX_BOX,
    HEIGHT,
    MUG_BOX,
    WIDTH,
    make_messages,
    rel_to_px,
    start_node,
    stop_node,
)

pytestmark = pytest.mark.ros

MUG_RIGHT_BOX = (400, 450, 520, 650)  # 1.5 m, between the left mug and the box
DEPTHS_MM = ((MUG_BOX, 1200), (BOX_BOX, 2000), (MUG_RIGHT_BOX, 1500))
# Stamps with the right mug and the box only (8 s at 5 Hz: the first frames may be lost while
# the node re-matches its input QoS); then the left mug too.
PHASE_A_FRAMES = 40
# A namespace of its own: DDS tests of other runs on this machine may share the domain.
NAMESPACE = f'/memory_dds_{os.getpid()}'
CAMERA = 'camera_color_optical_frame'
# base_link -> camera: 0.3 m up, 0.1 m forward, optical axes (z forward = base x).
BASE_FROM_CAMERA_Q = (-0.5, 0.5, -0.5, 0.5)
BASE_FROM_CAMERA_T = (0.1, 0.0, 0.3)
# odom -> base_link: the robot stands at (2, 1) turned 90 degrees left.
ODOM_FROM_BASE_T = (2.0, 1.0, 0.0)
ODOM_FROM_BASE_Q = (0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))


def grounding(items: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    body = json.dumps([{'bbox_2d': list(box), 'label': label} for label, box in items])
    return f'```json\n{body}\n```'


def depth_mm() -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), 3000, dtype=np.uint16)  # a wall at 3 m
    for box, value in DEPTHS_MM:
        x1, y1, x2, y2 = rel_to_px(box)
        mx, my = (x2 - x1) // 6, (y2 - y1) // 6
        depth[y1 + my : y2 - my, x1 + mx : x2 - mx] = value
    return depth


def write_recording(path: Path, stamps: list[int]) -> Path:
    phase_a = grounding([('box', BOX_BOX), ('mug', MUG_RIGHT_BOX)])
    phase_b = grounding([('mug', MUG_RIGHT_BOX), ('box', BOX_BOX), ('mug', MUG_BOX)])
    with path.open('w') as out:
        for index, stamp in enumerate(stamps):
            text = phase_a if index < PHASE_A_FRAMES else phase_b
            out.write(json.dumps({'stamp_ns': stamp, 'text': text}) + '\n')
    return path


def transform(parent: str, child: str, stamp_ns: int, translation: Any, rotation: Any) -> Any:
    from geometry_msgs.msg import TransformStamped

    message = TransformStamped()
    message.header.frame_id, message.child_frame_id = parent, child
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    t, q = message.transform.translation, message.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    q.x, q.y, q.z, q.w = (float(v) for v in rotation)
    return message


class MemoryHarness:
    """The fake camera with TF, and the memory's topics and service."""

    def __init__(self, harness: Any) -> None:
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from spatial_vlm_ros.msg import ObjectMemory
        from spatial_vlm_ros.ros.qos import latched_profile
        from spatial_vlm_ros.ros.tf import TF_QOS, TF_STATIC_QOS
        from spatial_vlm_ros.srv import ForgetObjects

        self.harness = harness
        node = harness.node
        self.tf = node.create_publisher(TFMessage, '/tf', TF_QOS)
        self.tf_static = node.create_publisher(TFMessage, '/tf_static', TF_STATIC_QOS)
        self.tf_static.publish(
            TFMessage(
                transforms=[
                    transform('base_link', CAMERA, 0, BASE_FROM_CAMERA_T, BASE_FROM_CAMERA_Q)
                ]
            )
        )
        self._message_type = ObjectMemory
        self._latched = latched_profile()
        self.memory_markers: list[Any] = []
        node.create_subscription(
            MarkerArray,
            f'{NAMESPACE}/spatial_vlm/memory_markers',
            self.memory_markers.append,
            self._latched,
        )
        self.forget = node.create_client(ForgetObjects, f'{NAMESPACE}/spatial_vlm/forget')
        self._depth = depth_mm().tobytes()

    def subscribe_objects(self) -> list[Any]:
        """A new (late) transient-local subscriber of ~/objects; returns what it receives."""
        received: list[Any] = []
        self.harness.node.create_subscription(
            self._message_type, f'{NAMESPACE}/spatial_vlm/objects', received.append, self._latched
        )
        return received

    def publish_frame(self, stamp_ns: int) -> None:
        from tf2_msgs.msg import TFMessage

        self.tf.publish(
            TFMessage(
                transforms=[
                    transform('odom', 'base_link', stamp_ns, ODOM_FROM_BASE_T, ODOM_FROM_BASE_Q)
                ]
            )
        )
        rgb, depth, info = make_messages(stamp_ns)
        depth.data = self._depth
        harness = self.harness
        harness.info_pub.publish(info)
        harness.depth_pub.publish(depth)
        harness.rgb_pub.publish(rgb)

    def stream(self, stamps: list[int], until: Any, period_s: float = 0.2) -> None:
        """Publish frames at ``stamps`` until ``until()`` holds (frames sent while the node
        still re-matches its input QoS may be lost, so the phases wait for scenes)."""
        # The node's TF subscriptions first: a frame without its transform gets ids that are
        # not remembered (docs/MEMORY.md), which this test does not want to see.
        publishers = (
            self.tf,
            self.tf_static,
            self.harness.rgb_pub,
            self.harness.depth_pub,
            self.harness.info_pub,
        )
        executor = self.harness.executor
        assert spin_until(
            executor,
            lambda: all(publisher.get_subscription_count() > 0 for publisher in publishers),
            60.0,
        ), 'the node never subscribed to the camera and TF topics'
        for stamp in stamps:
            self.publish_frame(stamp)
            spin_until(executor, until, period_s)
            if until():
                return


def odom_from_base() -> np.ndarray:
    from spatial_vlm_ros.core.transforms import transform_from_translation_quaternion

    return transform_from_translation_quaternion(ODOM_FROM_BASE_T, ODOM_FROM_BASE_Q)


def by_box(scene: Any) -> dict[str, str]:
    """'left' / 'right' mug and 'box' -> id, by where the box is in the image."""
    names = {}
    for obj in scene.objects:
        if obj.label == 'box':
            names['box'] = obj.id
        else:
            names['left' if obj.bbox_x_max < WIDTH * 0.35 else 'right'] = obj.id
    return names


def test_node_memory_over_dds(
    ros_env: dict[str, str],
    harness_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rclpy.qos import ReliabilityPolicy

    from spatial_vlm_ros.srv import ForgetObjects

    monkeypatch.setattr(test_node_dds, 'NAMESPACE', NAMESPACE)  # start_node and Harness use it
    start = time.time_ns()
    stamps = [start + index * 200_000_000 for index in range(PHASE_A_FRAMES + 80)]
    published = set(stamps)
    recording = write_recording(tmp_path / 'recorded.jsonl', stamps)
    memory_file = tmp_path / 'memory.json'
    params = (
        '-p', 'memory_frame:=odom', '-p', 'target_frame:=base_link',
        # A loaded machine can hold a process up for seconds: wait long for each transform.
        '-p', f'memory_file:={memory_file}', '-p', 'tf_timeout_s:=10.0',
    )  # fmt: skip
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    log_path = tmp_path / 'node.log'
    process = start_node(env, recording, log_path, params)
    harness = harness_factory(ReliabilityPolicy.RELIABLE)
    memory = MemoryHarness(harness)
    executor = harness.executor

    def log() -> str:
        return log_path.read_text(errors='replace')[-4000:]

    try:

        def phase(count: int) -> list[Any]:
            return [s for s in harness.scenes if len(s.objects) == count]

        memory.stream(stamps, lambda: len(phase(3)) >= 3)
        phase_a, phase_b = phase(2), phase(3)
        assert len(phase_a) >= 2 and len(phase_b) >= 3, log()
        # Let the frames still in flight finish: then nothing sees the left mug again after it
        # is forgotten below.
        seen = -1
        while seen != len(harness.scenes):
            seen = len(harness.scenes)
            spin_until(executor, lambda count=seen: len(harness.scenes) > count, 1.5)
        for scene in harness.scenes:
            stamp_ns = scene.header.stamp.sec * 10**9 + scene.header.stamp.nanosec
            assert stamp_ns in published
            assert scene.header.frame_id == 'base_link'
            assert scene.stages.memory_ms >= 0
        for scene in phase_a:
            assert by_box(scene) == {'right': 'mug_0', 'box': 'box_0'}
        # The right mug keeps mug_0 when the left one appears (ordinals would rename it).
        for scene in phase_b:
            assert by_box(scene) == {'right': 'mug_0', 'box': 'box_0', 'left': 'mug_1'}, log()

        # A late joiner gets the memory at once (transient local), without any new frame.
        late = memory.subscribe_objects()
        assert spin_until(executor, lambda: bool(late), 20.0), 'no ObjectMemory for a late joiner'
        published = late[-1]
        assert published.header.frame_id == 'odom'
        remembered = {item.id: item for item in published.objects}
        assert sorted(remembered) == ['box_0', 'mug_0', 'mug_1']
        assert all(item.confirmed for item in remembered.values())
        # Memory positions (odom) agree with the scene's (base_link) through the robot's pose.
        scene = phase_b[-1]
        for obj in scene.objects:
            p = obj.pose.position
            expected = odom_from_base()[:3, :3] @ (p.x, p.y, p.z) + odom_from_base()[:3, 3]
            q = remembered[obj.id].position
            assert np.linalg.norm(np.array([q.x, q.y, q.z]) - expected) < 0.05, obj.id
        # The right mug is 1.5 m in front of the camera: about 1.6 m ahead of base_link, which
        # faces odom +y from (2, 1).
        mug = remembered['mug_0'].position
        assert mug.y == pytest.approx(1.0 + 1.6, abs=0.1) and mug.x == pytest.approx(2.0, abs=0.2)
        assert spin_until(executor, lambda: bool(memory.memory_markers), 20.0)
        texts = [m.text for m in memory.memory_markers[-1].markers if m.text]
        assert sorted(text.split()[0] for text in texts) == ['box_0', 'mug_0', 'mug_1']

        # ~/forget: one id known, one not; the memory is published again without it.
        count = len(late)
        reply = harness.call(memory.forget, ForgetObjects.Request(ids=['mug_1', 'giraffe_0']))
        assert reply.forgotten == 1 and list(reply.unknown_ids) == ['giraffe_0']
        assert spin_until(executor, lambda: len(late) > count, 20.0)
        assert sorted(item.id for item in late[-1].objects) == ['box_0', 'mug_0']
    finally:
        code = stop_node(process)
    assert code in (0, -signal.SIGINT), log()

    # Saved on shutdown; the next node loads it and publishes it before any frame.
    saved = json.loads(memory_file.read_text())
    assert saved['memory_frame'] == 'odom'
    assert sorted(item['id'] for item in saved['objects']) == ['box_0', 'mug_0']
    assert saved['counters']['mug'] == 2, (saved, log())  # mug_1 is never given again
    process = start_node(env, recording, tmp_path / 'node2.log', params)
    try:
        restarted = memory.subscribe_objects()
        started = time.monotonic()
        assert spin_until(executor, lambda: any(len(m.objects) == 2 for m in restarted), 90.0), (
            tmp_path / 'node2.log'
        ).read_text(errors='replace')[-3000:]
        message = next(m for m in restarted if len(m.objects) == 2)
        assert message.header.frame_id == 'odom'
        assert {item.state for item in message.objects} == {1}  # OUT_OF_VIEW after a restart
        assert time.monotonic() - started < 90.0
    finally:
        code = stop_node(process)
    assert code in (0, -signal.SIGINT)
