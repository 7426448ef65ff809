# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The object memory's outputs and TF plumbing in one process: ObjectMemory and memory marker
messages (the node's rclpy ones byte-identical to the replay's rosbags ones), the remembered
objects ~/locate considers, and the node's own /tf + /tf_static buffer (real rclpy publishers
and subscriptions; no tf2_ros here)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_memory import CHAIR, MUG, Cube, World, camera
from test_one_conversion import assert_same_cdr

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.markers import (
    MEMORY_ALPHA,
    NAMESPACE_MEMORY_LABELS,
    NAMESPACE_MEMORY_OBJECTS,
    MarkerKind,
    memory_markers,
)
from spatial_vlm_ros.core.memory import ObjectMemory, ObjectState
from spatial_vlm_ros.core.tf_buffer import TransformBuffer
from spatial_vlm_ros.core.transforms import apply_transform, make_transform
from spatial_vlm_ros.replay import msgs

pytestmark = pytest.mark.ros


def memory_with_every_state() -> ObjectMemory:
    """A chair seen in every frame (visible, confirmed), a mug seen three times and then missed
    in view (unseen), a box first seen in the newest frame (visible, tentative)."""
    world = World(seed=3)
    memory = ObjectMemory('map')
    chair = Cube('chair', (-0.6, 0.0, 3.0), CHAIR)
    mug = Cube('mug', (0.4, 0.1, 2.0), MUG)
    box = Cube('box', (0.3, -0.5, 4.0), 0.3)
    for _ in range(3):
        frame = world.frame([chair, mug], camera())
        memory.update(frame.stamp_ns, frame.observations, frame.view)
    frame = world.frame([chair, mug, box], camera(), drop=('mug',))
    memory.update(frame.stamp_ns, frame.observations, frame.view)
    states = {item.id: item.state for item in memory.objects()}
    assert states == {
        'box_0': ObjectState.VISIBLE,
        'chair_0': ObjectState.VISIBLE,
        'mug_0': ObjectState.UNSEEN,
    }
    return memory


def test_object_memory_messages_are_byte_identical_from_node_and_replay():
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.memory_io import object_memory_msg

    memory = memory_with_every_state()
    node_message = object_memory_msg(memory)
    assert node_message.header.frame_id == 'map'
    stamp_ns = node_message.header.stamp.sec * 10**9 + node_message.header.stamp.nanosec
    assert stamp_ns == memory.last_stamp_ns
    by_id = {item.id: item for item in node_message.objects}
    for item in memory.objects():
        published = by_id[item.id]
        assert published.state == int(item.state) and published.label == item.label
        assert published.confirmed == item.confirmed
        assert (published.sightings, published.misses) == (item.sightings, item.misses)
        np.testing.assert_allclose(
            [published.position.x, published.position.y, published.position.z], item.position
        )
        np.testing.assert_allclose(published.position_covariance, item.covariance.ravel())
    assert [o.id for o in node_message.objects] == sorted(by_id)
    assert any(o.confirmed for o in node_message.objects)
    assert any(not o.confirmed for o in node_message.objects)
    assert_same_cdr(
        serialize_message(node_message),
        msgs.serialize(msgs.object_memory_msg(memory)),
        msgs.OBJECT_MEMORY_TYPE,
    )


def test_memory_markers_show_every_object_by_state_and_match_between_node_and_replay():
    from rclpy.serialization import serialize_message

    from spatial_vlm_ros.ros.markers import marker_set_to_msg

    memory = memory_with_every_state()
    objects = memory.objects()
    marker_set = memory_markers(objects, 'map', memory.last_stamp_ns)
    assert marker_set.markers[0].kind is MarkerKind.DELETE_ALL  # forgotten objects disappear
    cubes = [m for m in marker_set.markers if m.namespace == NAMESPACE_MEMORY_OBJECTS]
    texts = [m for m in marker_set.markers if m.namespace == NAMESPACE_MEMORY_LABELS]
    assert len(cubes) == len(texts) == len(objects)
    for item, cube, text in zip(objects, cubes, texts, strict=True):
        assert cube.position == pytest.approx(tuple(item.position))
        assert cube.color.a == MEMORY_ALPHA[item.state]
        assert text.text.startswith(f'{item.id} {item.state.name.lower()}')
        assert text.text.endswith(' ?') != item.confirmed
        assert text.position[2] > cube.position[2]  # above it: z is up in a REP 103 frame
    optical = memory_markers(objects, 'cam', memory.last_stamp_ns, optical=True)
    label = next(m for m in optical.markers if m.namespace == NAMESPACE_MEMORY_LABELS)
    assert label.position[1] < cubes[0].position[1]  # y is down in an optical frame
    assert_same_cdr(
        serialize_message(marker_set_to_msg(marker_set)),
        msgs.serialize(msgs.marker_array_msg(marker_set)),
        msgs.MARKER_ARRAY_TYPE,
    )


def test_object_memory_fields_of_an_empty_memory():
    fields = message_fields.object_memory_fields('odom', 0, [])
    assert fields == {'header': message_fields.header_fields(0, 'odom'), 'objects': []}


# ----------------------------------------------------------------------------- ~/locate's seam


class Lookups:
    """A TransformLookup that records its calls."""

    def __init__(self, buffer: TransformBuffer) -> None:
        self.buffer = buffer
        self.calls: list[tuple[str, str, int]] = []

    def lookup(self, target: str, source: str, stamp_ns: int):
        self.calls.append((target, source, stamp_ns))
        return self.buffer.lookup(target, source, stamp_ns)


def test_remembered_candidates_come_in_the_requested_frame_at_the_memorys_stamp():
    from spatial_vlm_ros.ros.memory_io import RememberedCandidates

    memory = memory_with_every_state()
    buffer = TransformBuffer()
    # map -> camera at the memory's newest stamp (and an older, different sample).
    buffer.set_transform('map', 'cam', memory.last_stamp_ns, (1.0, 0.0, 0.0), (0, 0, 0, 1))
    buffer.set_transform('map', 'cam', memory.last_stamp_ns - 10**9, (9.0, 0, 0), (0, 0, 0, 1))
    lookups = Lookups(buffer)
    current = {'memory': memory}
    candidates = RememberedCandidates(lambda: current['memory'], lambda: lookups)

    in_memory_frame = candidates('map')
    assert [c.id for c in in_memory_frame] == [item.id for item in memory.objects()]
    assert lookups.calls == []  # no lookup for the memory's own frame

    in_camera = candidates('cam')
    assert lookups.calls == [('cam', 'map', memory.last_stamp_ns)]
    camera_from_map = make_transform((-1.0, 0.0, 0.0), np.eye(3))
    for candidate, item in zip(in_camera, memory.objects(), strict=True):
        np.testing.assert_allclose(
            candidate.position, apply_transform(camera_from_map, item.position)
        )
        assert candidate.in_view == (item.state == ObjectState.VISIBLE)
        assert candidate.last_seen_ns == item.last_seen_ns
    assert any(c.in_view for c in in_camera) and any(not c.in_view for c in in_camera)

    assert candidates('base_link') == [] and 'base_link' in candidates.reason
    current['memory'] = None
    assert candidates('map') == [] and candidates.reason == 'no object memory'


# ----------------------------------------------------------------------------- TF without tf2_ros


def test_the_nodes_own_tf_buffer_reads_tf_and_tf_static_and_waits_for_a_stamp(rclpy_session):
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import MultiThreadedExecutor
    from tf2_msgs.msg import TFMessage

    from spatial_vlm_ros.ros.tf import TF_QOS, TF_STATIC_QOS, TransformSource

    def stamped(parent: str, child: str, stamp_ns: int, x: float, w: float = 1.0) -> object:
        message = TransformStamped()
        message.header.frame_id, message.child_frame_id = parent, child
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        message.transform.translation.x = float(x)
        message.transform.rotation.w = float(w)
        return message

    suffix = f'{threading.get_ident() % 10**6}_{time.monotonic_ns() % 10**6}'
    publisher_node = rclpy_session.create_node(f'tf_publisher_{suffix}')
    static = publisher_node.create_publisher(TFMessage, '/tf_static', TF_STATIC_QOS)
    dynamic = publisher_node.create_publisher(TFMessage, '/tf', TF_QOS)
    # Static transforms are published before the node subscribes: transient local delivers them.
    static.publish(TFMessage(transforms=[stamped('base_link', 'camera', 0, 0.25)]))
    node = rclpy_session.create_node(f'tf_listener_{suffix}')
    logged: list[str] = []

    class Logger:
        def warning(self, text: str) -> None:
            logged.append(text)

    source = TransformSource(node, Logger(), timeout_s=5.0, prefer_tf2_ros=False)
    assert source.mode == 'buffer' and source.available
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    executor.add_node(publisher_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        t0 = 1_767_225_600 * 10**9
        for index in range(3):
            dynamic.publish(
                TFMessage(transforms=[stamped('odom', 'base_link', t0 + index * 10**8, index)])
            )
        # Interpolated between the samples at 0.1 s and 0.2 s, composed with the static edge.
        result = source.lookup('odom', 'camera', t0 + 150_000_000)
        assert result.matrix is not None, result.reason
        assert result.matrix[0, 3] == pytest.approx(1.5 + 0.25)

        # A lookup ahead of the newest sample waits until it arrives (within timeout_s).
        ahead = t0 + 350_000_000
        timer = threading.Timer(
            0.5,
            lambda: dynamic.publish(
                TFMessage(transforms=[stamped('odom', 'base_link', t0 + 4 * 10**8, 4.0)])
            ),
        )
        started = time.monotonic()
        timer.start()
        waited = source.lookup('odom', 'camera', ahead)
        assert waited.matrix is not None, waited.reason
        assert waited.matrix[0, 3] == pytest.approx(3.5 + 0.25)
        assert time.monotonic() - started >= 0.4

        # A bad transform (zero quaternion) is skipped and logged; the node keeps going.
        dynamic.publish(TFMessage(transforms=[stamped('odom', 'base_link', t0 + 5 * 10**8, 5, 0)]))
        source.timeout_s = 0.3
        late = source.lookup('odom', 'camera', t0 + 5 * 10**8)
        assert late.matrix is None and 'extrapolation into the future' in late.reason
        assert any('bad transform' in text for text in logged)
        unknown = source.lookup('map', 'camera', t0)
        assert unknown.matrix is None and "'map' does not exist" in unknown.reason
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        source.close()
        node.destroy_node()
        publisher_node.destroy_node()
