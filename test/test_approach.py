# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Approach poses for Nav2 (core/approach.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatial_vlm_ros.core.approach import ApproachError, approach_pose, footprint_radius
from spatial_vlm_ros.core.transforms import R_BODY_FROM_OPTICAL, rotation_from_quaternion


def test_pose_stands_off_the_footprint_towards_the_viewpoint_facing_the_object():
    pose = approach_pose((3.0, 1.0, 0.4), (0.0, 1.0, 1.2), 'map', footprint_radius_m=0.4,
                         standoff_m=0.6)  # fmt: skip
    assert (pose.x, pose.y, pose.z) == pytest.approx((2.0, 1.0, 0.0))
    assert pose.yaw == pytest.approx(0.0)  # facing +x, towards the object
    pose = approach_pose((0.0, 0.0, 0.0), (-3.0, -3.0, 1.0), 'odom', standoff_m=1.0)
    assert (pose.x, pose.y) == pytest.approx((-math.sqrt(0.5), -math.sqrt(0.5)))
    assert pose.yaw == pytest.approx(math.pi / 4)
    rotation = rotation_from_quaternion(pose.quaternion_xyzw)
    np.testing.assert_allclose(
        rotation @ (1, 0, 0), (math.sqrt(0.5), math.sqrt(0.5), 0), atol=1e-9
    )


def test_footprint_uses_horizontal_extents_in_the_frame():
    size = (0.6, 1.5, 0.2)  # across, vertical (tall), depth: camera axes
    assert footprint_radius(size, R_BODY_FROM_OPTICAL) == pytest.approx(0.3)
    assert footprint_radius(size, None) == pytest.approx(0.3)
    assert footprint_radius(None, None) == 0.0


def test_degenerate_requests_raise():
    with pytest.raises(ApproachError, match='straight above'):
        approach_pose((1.0, 1.0, 0.0), (1.0, 1.0, 2.0), 'map')
    with pytest.raises(ApproachError, match='standoff'):
        approach_pose((1.0, 1.0, 0.0), (0.0, 0.0, 1.0), 'map', standoff_m=-1.0)
    with pytest.raises(ApproachError, match='finite'):
        approach_pose((math.nan, 1.0, 0.0), (0.0, 0.0, 1.0), 'map')
