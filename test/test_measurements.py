# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Measurements for answers: values, signs, frames and uncertainties (core/measurements.py)."""

from __future__ import annotations

from dataclasses import replace
import math

import numpy as np
import pytest

from spatial_vlm_ros.core.measurements import (
    MeasurementError,
    MeasurementKind,
    disagrees,
    measure,
    place_object,
    query_frame,
)
from spatial_vlm_ros.core.transforms import (
    R_BODY_FROM_OPTICAL,
    apply_transform,
    make_transform,
    rotate_covariance,
)
from spatial_vlm_ros.core.types import Lifted3D, PixelBox, Scene, SpatialObject

CAMERA = 'camera_color_optical_frame'
BOX = PixelBox(0, 0, 10, 10)


def _object(object_id, position, covariance=None, size=(0.1, 0.2, 0.3)):
    covariance = np.diag([1e-4, 1e-4, 1e-4]) if covariance is None else covariance
    lifted = Lifted3D(np.asarray(position, float), np.asarray(covariance, float),
                      np.asarray(size, float), 0.9, 100)  # fmt: skip
    return SpatialObject(object_id, object_id.rsplit('_', 1)[0], 1.0, BOX, lifted)


def _camera_scene(*objects):
    return Scene(stamp_ns=1, frame_id=CAMERA, camera_frame_id=CAMERA, objects=list(objects))


def _placed(scene, frame):
    return {
        obj.id: place_object(
            obj.id, obj.label, obj.lifted.position, obj.lifted.covariance, obj.lifted.size, frame
        )
        for obj in scene.objects
    }


def test_camera_view_signs_follow_the_optical_axes():
    scene = _camera_scene(_object('a_0', (-0.5, -0.3, 1.0)), _object('b_0', (0.5, 0.0, 2.0)))
    frame = query_frame(scene)
    placed = _placed(scene, frame)
    a, b = placed['a_0'], placed['b_0']
    assert frame.optical and not frame.gravity_aligned
    left = measure(MeasurementKind.LEFT_RIGHT, [a, b], frame)
    assert left.value == pytest.approx(1.0) and left.text.startswith('a_0 is 1.00 m left of b_0')
    assert measure('front_behind', [a, b], frame).value == pytest.approx(1.0)  # a is nearer
    above = measure('above_below', [a, b], frame)
    assert above.value == pytest.approx(0.3) and 'in the camera view' in above.text
    assert measure('left_right', [b, a], frame).value == pytest.approx(-1.0)
    assert 'right of a_0' in measure('left_right', [b, a], frame).text
    assert measure('range', [a], frame).value == pytest.approx(math.sqrt(0.25 + 0.09 + 1.0))
    assert measure('distance', [a, b], frame).value == pytest.approx(math.sqrt(1 + 0.09 + 1))


def test_distance_sigma_matches_sampling_of_the_covariances():
    cov_a = np.array([[4e-4, 1e-4, 0], [1e-4, 2e-4, 0], [0, 0, 9e-4]])
    cov_b = np.diag([1e-4, 6e-4, 2.5e-3])
    scene = _camera_scene(_object('a_0', (0, 0, 1), cov_a), _object('b_0', (0.3, 0.1, 1.6), cov_b))
    frame = query_frame(scene)
    placed = _placed(scene, frame)
    measured = measure('distance', [placed['a_0'], placed['b_0']], frame)
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal((0, 0, 1), cov_a, 40_000)
    b = rng.multivariate_normal((0.3, 0.1, 1.6), cov_b, 40_000)
    sampled = np.linalg.norm(a - b, axis=1).std()
    assert measured.sigma == pytest.approx(sampled, rel=0.05)
    separation = measure('front_behind', [placed['a_0'], placed['b_0']], frame)
    assert separation.sigma == pytest.approx(math.sqrt(9e-4 + 2.5e-3))


def _map_scene(objects_in_map, map_from_camera):
    """Objects given in the map frame, the scene published in the map frame."""
    objects = [
        _object(object_id, position, rotate_covariance(map_from_camera, np.eye(3) * 1e-4),
                size)
        for object_id, position, size in objects_in_map
    ]  # fmt: skip
    return Scene(
        stamp_ns=1,
        frame_id='map',
        camera_frame_id=CAMERA,
        objects=objects,
        T_frame_from_camera=map_from_camera,
    )


def test_in_a_map_frame_left_and_near_follow_the_cameras_heading_and_up_is_gravity():
    # The camera stands at (2, 0, 1) in the map, level, looking along map +y (yawed 90 deg).
    yaw = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    map_from_camera = make_transform((2.0, 0.0, 1.0), yaw @ R_BODY_FROM_OPTICAL)
    scene = _map_scene(
        [('a_0', (1.0, 3.0, 0.5), (0.1, 0.4, 0.2)), ('b_0', (3.0, 4.0, 0.9), (0.1, 0.2, 0.3))],
        map_from_camera,
    )
    frame = query_frame(scene)
    placed = _placed(scene, frame)
    a, b = placed['a_0'], placed['b_0']
    assert frame.frame_id == 'map' and frame.gravity_aligned
    np.testing.assert_allclose(frame.camera_position, (2.0, 0.0, 1.0))
    # Looking along +y, smaller map x is to the camera's left; smaller y is nearer.
    assert measure('left_right', [a, b], frame).value == pytest.approx(2.0)
    assert measure('front_behind', [a, b], frame).value == pytest.approx(1.0)
    assert measure('above_below', [b, a], frame).value == pytest.approx(0.4)
    assert measure('range', [a], frame).value == pytest.approx(math.sqrt(1 + 9 + 0.25))
    # Extents are along the camera axes: across 0.1, vertical 0.4 for a_0.
    assert measure('height', [a], frame).value == pytest.approx(0.4)
    assert measure('width', [a], frame).value == pytest.approx(0.1)
    assert math.isnan(measure('height', [a], frame).sigma)


def test_relation_frame_transform_moves_camera_positions_into_a_body_frame():
    pitch_down = np.array(  # body frame: camera pitched 30 deg down about y
        [
            [math.cos(0.5236), 0, math.sin(0.5236)],
            [0, 1, 0],
            [-math.sin(0.5236), 0, math.cos(0.5236)],
        ]
    )
    base_from_camera = make_transform((0.1, 0.0, 1.2), pitch_down @ R_BODY_FROM_OPTICAL)
    scene = replace(
        _camera_scene(_object('a_0', (0.0, 0.2, 2.0)), _object('b_0', (0.0, -0.2, 2.0))),
        relation_frame_id='base_link',
    )
    frame = query_frame(scene, T_relation_from_camera=base_from_camera)
    placed = _placed(scene, frame)
    a_base = apply_transform(base_from_camera, (0.0, 0.2, 2.0))
    b_base = apply_transform(base_from_camera, (0.0, -0.2, 2.0))
    assert frame.frame_id == 'base_link' and frame.gravity_aligned
    above = measure('above_below', [placed['b_0'], placed['a_0']], frame)
    assert above.value == pytest.approx(b_base[2] - a_base[2])
    assert 'camera view' not in above.text
    assert measure('range', [placed['a_0']], frame).value == pytest.approx(math.hypot(0.2, 2.0))


def test_measurement_errors_are_typed():
    scene = _camera_scene(
        _object('a_0', (0, 0, 1)),
        SpatialObject('b_0', 'b', 1.0, BOX, Lifted3D(None, None, None, 0.0, 0)),
    )
    frame = query_frame(scene)
    placed = _placed(scene, frame)
    with pytest.raises(MeasurementError, match='no measured position'):
        measure('distance', [placed['a_0'], placed['b_0']], frame)
    with pytest.raises(MeasurementError, match='two different objects'):
        measure('distance', [placed['a_0'], placed['a_0']], frame)
    with pytest.raises(MeasurementError, match='takes 1 object'):
        measure('range', [placed['a_0'], placed['a_0']], frame)
    unknown_camera = Scene(1, 'map', CAMERA, [_object('a_0', (0, 0, 1))])
    frame = query_frame(unknown_camera)
    with pytest.raises(MeasurementError, match='camera position'):
        measure('range', list(_placed(unknown_camera, frame).values()), frame)


def test_disagreement_allows_rounding_but_not_a_wrong_number():
    assert disagrees(0.47, 0.02, 2.0)
    assert not disagrees(0.47, 0.02, 0.5)
    assert not disagrees(0.47, 0.02, math.nan)
    assert disagrees(3.0, math.nan, 2.5) and not disagrees(3.0, math.nan, 2.8)
