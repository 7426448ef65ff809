# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Rigid transforms: construction, inversion, composition, covariance rotation, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatial_vlm_ros.core.transforms import (
    R_BODY_FROM_OPTICAL,
    T_BODY_FROM_OPTICAL,
    T_OPTICAL_FROM_BODY,
    TransformError,
    apply_transform,
    compose,
    invert_transform,
    make_transform,
    quaternion_from_rotation,
    rotate_covariance,
    rotation_from_quaternion,
    transform_from_translation_quaternion,
    translation_quaternion_from_transform,
    validate_rotation,
    validate_transform,
)
from spatial_vlm_ros.core.types import SpatialVlmError


def yaw_quaternion(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def test_quaternion_yaw_rotates_x_into_y():
    transform = transform_from_translation_quaternion((1.0, 2.0, 3.0), yaw_quaternion(math.pi / 2))
    np.testing.assert_allclose(apply_transform(transform, (1.0, 0.0, 0.0)), (1.0, 3.0, 3.0))
    np.testing.assert_allclose(apply_transform(transform, (0.0, 0.0, 0.0)), (1.0, 2.0, 3.0))


def test_quaternion_is_normalized_before_use():
    scaled = rotation_from_quaternion(np.array(yaw_quaternion(0.3)) * 7.0)
    np.testing.assert_allclose(scaled, rotation_from_quaternion(yaw_quaternion(0.3)), atol=1e-12)


@pytest.mark.parametrize(
    'quaternion',
    [(0.0, 0.0, 0.0, 1.0), (0.5, -0.5, 0.5, 0.5), (1.0, 0.0, 0.0, 0.0), (0.1, 0.7, -0.2, 0.3)],
)
def test_quaternion_round_trip(quaternion):
    rotation = rotation_from_quaternion(quaternion)
    recovered = quaternion_from_rotation(rotation)
    expected = np.array(quaternion) / np.linalg.norm(quaternion)
    # q and -q are the same rotation; the function returns the one with w >= 0.
    assert np.allclose(recovered, expected, atol=1e-9) or np.allclose(
        recovered, -expected, atol=1e-9
    )
    assert recovered[3] >= 0.0


def test_translation_quaternion_round_trip():
    transform = transform_from_translation_quaternion((0.4, -1.0, 2.5), (0.1, 0.7, -0.2, 0.3))
    translation, quaternion = translation_quaternion_from_transform(transform)
    np.testing.assert_allclose(
        transform_from_translation_quaternion(translation, quaternion), transform, atol=1e-12
    )


def test_inverse_and_compose_give_identity():
    transform = transform_from_translation_quaternion((0.4, -1.0, 2.5), (0.1, 0.7, -0.2, 0.3))
    np.testing.assert_allclose(
        compose(transform, invert_transform(transform)), np.eye(4), atol=1e-12
    )
    np.testing.assert_allclose(
        compose(invert_transform(transform), transform), np.eye(4), atol=1e-12
    )


def test_compose_applies_right_transform_first():
    shift = make_transform((1.0, 0.0, 0.0))
    turn = transform_from_translation_quaternion((0.0, 0.0, 0.0), yaw_quaternion(math.pi / 2))
    # turn @ shift: shift the point first, then rotate it.
    np.testing.assert_allclose(
        apply_transform(compose(turn, shift), (0, 0, 0)), (0, 1, 0), atol=1e-12
    )
    np.testing.assert_allclose(
        apply_transform(compose(shift, turn), (0, 0, 0)), (1, 0, 0), atol=1e-12
    )


def test_apply_transform_to_many_points_matches_single():
    transform = transform_from_translation_quaternion((0.4, -1.0, 2.5), (0.1, 0.7, -0.2, 0.3))
    points = np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 3.0], [-4.0, 0.5, 0.0]])
    batch = apply_transform(transform, points)
    for point, mapped in zip(points, batch, strict=True):
        np.testing.assert_allclose(apply_transform(transform, point), mapped)


def test_optical_to_body_axes():
    # Optical z (forward) is body x, optical x (right) is body -y, optical y (down) is body -z.
    np.testing.assert_allclose(R_BODY_FROM_OPTICAL @ (0, 0, 1), (1, 0, 0))
    np.testing.assert_allclose(R_BODY_FROM_OPTICAL @ (1, 0, 0), (0, -1, 0))
    np.testing.assert_allclose(R_BODY_FROM_OPTICAL @ (0, 1, 0), (0, 0, -1))
    np.testing.assert_allclose(compose(T_BODY_FROM_OPTICAL, T_OPTICAL_FROM_BODY), np.eye(4))
    # The usual static transform quaternion for camera_link -> camera_optical_frame.
    quaternion = quaternion_from_rotation(R_BODY_FROM_OPTICAL)
    np.testing.assert_allclose(quaternion, (-0.5, 0.5, -0.5, 0.5), atol=1e-12)


def test_optical_to_body_constants_are_read_only():
    with pytest.raises(ValueError):
        T_BODY_FROM_OPTICAL[0, 0] = 5.0


def test_rotate_covariance_turns_variances_with_the_axes():
    covariance = np.diag([1.0, 4.0, 9.0])
    rotated = rotate_covariance(T_BODY_FROM_OPTICAL, covariance)
    # Optical z variance (9) becomes body x; optical x (1) body y; optical y (4) body z.
    np.testing.assert_allclose(np.diag(rotated), (9.0, 1.0, 4.0))
    np.testing.assert_allclose(rotated, rotated.T)
    translated = make_transform((5.0, 5.0, 5.0), R_BODY_FROM_OPTICAL)
    np.testing.assert_allclose(rotate_covariance(translated, covariance), rotated)
    np.testing.assert_allclose(rotate_covariance(R_BODY_FROM_OPTICAL, covariance), rotated)


@pytest.mark.parametrize(
    'bad',
    [
        np.eye(3),  # wrong shape
        np.full((4, 4), np.nan),
        np.diag([2.0, 1.0, 1.0, 1.0]),  # scaled, not rigid
        np.diag([-1.0, 1.0, 1.0, 1.0]),  # reflection
        np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=float),
        'not a matrix',
    ],
)
def test_validate_transform_rejects_bad_matrices(bad):
    with pytest.raises(TransformError):
        validate_transform(bad)
    assert issubclass(TransformError, SpatialVlmError)


def test_validate_rotation_accepts_float32_rounded_rotation():
    rotation = rotation_from_quaternion((0.1, 0.7, -0.2, 0.3)).astype(np.float32)
    validate_rotation(rotation)


@pytest.mark.parametrize(
    'quaternion', [(0.0, 0.0, 0.0, 0.0), (np.nan, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0), 'xyzw']
)
def test_bad_quaternions_raise(quaternion):
    with pytest.raises(TransformError):
        transform_from_translation_quaternion((0.0, 0.0, 0.0), quaternion)


def test_bad_points_and_covariances_raise():
    with pytest.raises(TransformError):
        apply_transform(np.eye(4), np.zeros((3, 2)))
    with pytest.raises(TransformError):
        rotate_covariance(np.eye(4), np.zeros((2, 2)))
    with pytest.raises(TransformError):
        rotate_covariance(np.eye(4), np.full((3, 3), np.inf))
    with pytest.raises(TransformError):
        make_transform((0.0, np.inf, 0.0))
    with pytest.raises(TransformError):
        compose()
