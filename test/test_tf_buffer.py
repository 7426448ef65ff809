# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The pure TF buffer against transforms known in closed form."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from spatial_vlm_ros.core.tf_buffer import TfLookupError, TransformBuffer, slerp
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    apply_transform,
    compose,
    invert_transform,
    make_transform,
    quaternion_from_rotation,
    rotation_from_quaternion,
)

SECOND = 10**9


def yaw(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def yaw_matrix(angle: float, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    return make_transform(translation, rotation_from_quaternion(yaw(angle)))


def robot_buffer() -> TransformBuffer:
    """odom -> base_link moves (1 m/s along x, turning 90 deg/s); base_link -> camera_link ->
    camera_optical is static."""
    buffer = TransformBuffer()
    for second in range(3):
        buffer.set_transform(
            'odom',
            'base_link',
            second * SECOND,
            (float(second), 0.0, 0.0),
            yaw(second * math.pi / 2),
        )
    buffer.set_transform('base_link', 'camera_link', 0, (0.2, 0.0, 0.5), (0, 0, 0, 1), static=True)
    optical_q = quaternion_from_rotation(T_BODY_FROM_OPTICAL[:3, :3])
    buffer.set_transform('camera_link', 'camera_optical', 0, (0, 0, 0), optical_q, static=True)
    return buffer


def expected_odom_from_optical(seconds: float) -> np.ndarray:
    odom_from_base = yaw_matrix(seconds * math.pi / 2, (seconds, 0.0, 0.0))
    base_from_link = make_transform((0.2, 0.0, 0.5))
    return compose(odom_from_base, base_from_link, T_BODY_FROM_OPTICAL)


def test_exact_stamp_composes_static_and_dynamic_edges():
    buffer = robot_buffer()
    matrix = buffer.lookup_matrix('odom', 'camera_optical', 1 * SECOND)
    np.testing.assert_allclose(matrix, expected_odom_from_optical(1.0), atol=1e-12)
    # A point 2 m in front of the camera (optical z) at t = 1 s: the robot is at x = 1 facing +y,
    # the camera 0.2 m ahead of it and 0.5 m up.
    np.testing.assert_allclose(apply_transform(matrix, (0, 0, 2.0)), (1.0, 2.2, 0.5), atol=1e-12)


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    buffer = robot_buffer()
    matrix = buffer.lookup_matrix('odom', 'base_link', int(0.5 * SECOND))
    np.testing.assert_allclose(matrix, yaw_matrix(math.pi / 4, (0.5, 0.0, 0.0)), atol=1e-12)
    matrix = buffer.lookup_matrix('odom', 'camera_optical', int(1.25 * SECOND))
    np.testing.assert_allclose(matrix, expected_odom_from_optical(1.25), atol=1e-12)


def test_inverse_lookup_and_lookup_between_siblings():
    buffer = robot_buffer()
    forward = buffer.lookup_matrix('odom', 'camera_optical', SECOND)
    backward = buffer.lookup_matrix('camera_optical', 'odom', SECOND)
    np.testing.assert_allclose(backward, invert_transform(forward), atol=1e-12)
    buffer.set_transform('base_link', 'lidar', 0, (0.0, 0.1, 0.3), yaw(math.pi), static=True)
    lidar_from_optical = buffer.lookup_matrix('lidar', 'camera_optical', SECOND)
    expected = compose(
        invert_transform(yaw_matrix(math.pi, (0.0, 0.1, 0.3))),
        make_transform((0.2, 0.0, 0.5)),
        T_BODY_FROM_OPTICAL,
    )
    np.testing.assert_allclose(lidar_from_optical, expected, atol=1e-12)


def test_static_transforms_hold_at_any_time():
    buffer = robot_buffer()
    far_future = 10**6 * SECOND
    matrix = buffer.lookup_matrix('base_link', 'camera_optical', far_future)
    np.testing.assert_allclose(matrix, compose(make_transform((0.2, 0, 0.5)), T_BODY_FROM_OPTICAL))


def test_extrapolation_is_refused_with_a_clear_reason():
    buffer = robot_buffer()
    result = buffer.lookup('odom', 'camera_optical', 3 * SECOND)
    assert result.matrix is None
    assert 'extrapolation into the future' in result.reason
    assert 'odom -> base_link' in result.reason
    late = TransformBuffer()
    late.set_transform('odom', 'base_link', SECOND, (0, 0, 0), (0, 0, 0, 1))
    late.set_transform('odom', 'base_link', 2 * SECOND, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TfLookupError, match='extrapolation into the past'):
        late.lookup_matrix('odom', 'base_link', SECOND - 1)


def test_extrapolation_tolerance_holds_the_end_sample():
    buffer = TransformBuffer(max_extrapolation_ns=SECOND // 10)
    buffer.set_transform('map', 'odom', SECOND, (1.0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform('map', 'odom', 2 * SECOND, (2.0, 0, 0), (0, 0, 0, 1))
    matrix = buffer.lookup_matrix('map', 'odom', 2 * SECOND + SECOND // 20)
    np.testing.assert_allclose(matrix[:3, 3], (2.0, 0, 0))
    assert buffer.lookup('map', 'odom', 2 * SECOND + SECOND // 5).matrix is None


def test_stamp_zero_means_latest_common_time():
    buffer = robot_buffer()
    buffer.set_transform('map', 'odom', SECOND, (5.0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform('map', 'odom', int(1.5 * SECOND), (6.0, 0, 0), (0, 0, 0, 1))
    # odom -> base_link ends at 2 s, map -> odom at 1.5 s: the latest common time is 1.5 s.
    matrix = buffer.lookup_matrix('map', 'base_link', 0)
    expected = compose(make_transform((6.0, 0, 0)), yaw_matrix(0.75 * math.pi, (1.5, 0, 0)))
    np.testing.assert_allclose(matrix, expected, atol=1e-12)


def test_unknown_and_unconnected_frames_are_named():
    buffer = robot_buffer()
    buffer.set_transform('world', 'table', 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    result = buffer.lookup('odom', 'nowhere', SECOND)
    assert result.matrix is None and "'nowhere' does not exist" in result.reason
    result = buffer.lookup('table', 'camera_optical', SECOND)
    assert result.matrix is None and 'not connected' in result.reason
    assert "'odom'" in result.reason and "'world'" in result.reason


def test_same_frame_and_leading_slash():
    buffer = robot_buffer()
    np.testing.assert_array_equal(buffer.lookup_matrix('x', 'x', 0), np.eye(4))
    np.testing.assert_allclose(
        buffer.lookup_matrix('/odom', 'base_link', SECOND), yaw_matrix(math.pi / 2, (1, 0, 0))
    )


def test_history_is_bounded_by_duration_and_count():
    buffer = TransformBuffer(cache_duration_ns=2 * SECOND, max_samples_per_edge=5)
    for step in range(100):
        buffer.set_transform('odom', 'base', step * SECOND // 10, (step, 0, 0), (0, 0, 0, 1))
    edge = buffer._edges['base']
    assert len(edge.stamps) == 5  # the count bound is the tighter one here
    assert edge.stamps[-1] == 99 * SECOND // 10
    assert buffer.lookup('odom', 'base', 90 * SECOND // 10).matrix is None
    wide = TransformBuffer(cache_duration_ns=2 * SECOND)
    for step in range(100):
        wide.set_transform('odom', 'base', step * SECOND // 10, (step, 0, 0), (0, 0, 0, 1))
    assert wide._edges['base'].stamps[0] == 79 * SECOND // 10  # 2 s before the newest


def test_out_of_order_samples_are_sorted_and_repeated_stamps_replace():
    buffer = TransformBuffer()
    buffer.set_transform('odom', 'base', 2 * SECOND, (2.0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform('odom', 'base', 0, (0.0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform('odom', 'base', SECOND, (7.0, 0, 0), (0, 0, 0, 1))
    buffer.set_transform('odom', 'base', SECOND, (1.0, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(
        buffer.lookup_matrix('odom', 'base', SECOND // 2)[:3, 3], (0.5, 0, 0)
    )
    np.testing.assert_allclose(buffer.lookup_matrix('odom', 'base', SECOND)[:3, 3], (1.0, 0, 0))


def test_bad_samples_are_rejected_and_lose_nothing():
    buffer = robot_buffer()
    with pytest.raises(TfLookupError, match='own parent'):
        buffer.set_transform('a', 'a', 0, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TfLookupError, match='loop'):
        buffer.set_transform('camera_optical', 'odom', 0, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TfLookupError, match='zero norm'):
        buffer.set_transform('odom', 'base_link', 0, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(TfLookupError, match='non-finite'):
        buffer.set_transform('odom', 'base_link', 0, (math.nan, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TfLookupError, match='empty'):
        buffer.set_transform('', 'base_link', 0, (0, 0, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(
        buffer.lookup_matrix('odom', 'camera_optical', SECOND), expected_odom_from_optical(1.0)
    )


def test_reads_tf_messages_duck_typed():
    def stamped(parent, child, sec, nanosec, xyz, xyzw):
        return SimpleNamespace(
            header=SimpleNamespace(
                frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=nanosec)
            ),
            child_frame_id=child,
            transform=SimpleNamespace(
                translation=SimpleNamespace(x=xyz[0], y=xyz[1], z=xyz[2]),
                rotation=SimpleNamespace(x=xyzw[0], y=xyzw[1], z=xyzw[2], w=xyzw[3]),
            ),
        )

    buffer = TransformBuffer()
    message = SimpleNamespace(
        transforms=[
            stamped('odom', 'base', 1, 0, (1, 0, 0), (0, 0, 0, 1)),
            stamped('odom', 'base', 2, 500_000_000, (2, 0, 0), (0, 0, 0, 1)),
        ]
    )
    assert buffer.add_message(message) == 2
    static = SimpleNamespace(transforms=[stamped('base', 'cam', 0, 0, (0, 0, 1), (0, 0, 0, 1))])
    assert buffer.add_message(static, static=True) == 1
    np.testing.assert_allclose(
        buffer.lookup_matrix('odom', 'cam', 2 * SECOND)[:3, 3], (5 / 3, 0.0, 1.0)
    )
    assert buffer.frames == {'odom', 'base', 'cam'}


def test_slerp_takes_the_short_arc_and_keeps_unit_norm():
    start = np.array(yaw(0.1))
    end = -np.array(yaw(0.3))  # same rotation as yaw(0.3), other hemisphere
    middle = slerp(start, end, 0.5)
    np.testing.assert_allclose(
        rotation_from_quaternion(middle), rotation_from_quaternion(yaw(0.2))
    )
    assert math.isclose(float(np.linalg.norm(middle)), 1.0)
    np.testing.assert_allclose(slerp(start, end, 0.0), start)
