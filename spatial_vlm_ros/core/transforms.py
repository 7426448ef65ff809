# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
4x4 homogeneous rigid transforms, as plain numpy arrays.

A transform named ``T_a_from_b`` maps coordinates of a point expressed in frame ``b`` to frame
``a``: ``p_a = T_a_from_b @ [p_b, 1]``. Composition reads right to left:
``T_a_from_c = compose(T_a_from_b, T_b_from_c)``. Quaternions are ``(x, y, z, w)`` like
geometry_msgs/Quaternion and tf2.

Every function validates its inputs and raises :class:`TransformError` (a
:class:`~spatial_vlm_ros.core.types.SpatialVlmError`) on non-finite values, wrong shapes, or a
rotation block that is not orthonormal with determinant +1.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import FloatArray, SpatialVlmError

# Rotations read from messages are float32-rounded and renormalized by other tools, so allow
# more slack than float64 round-off.
ORTHONORMAL_TOLERANCE = 1e-5
_MIN_QUATERNION_NORM = 1e-9
_BOTTOM_ROW = np.array([0.0, 0.0, 0.0, 1.0])


class TransformError(SpatialVlmError):
    """A transform, quaternion, point set or covariance is malformed."""


def _as_float_array(value: npt.ArrayLike, name: str) -> FloatArray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TransformError(f'{name} is not numeric: {error}') from error
    return array


def _check_rotation_block(matrix: FloatArray, tolerance: float) -> None:
    deviation = float(np.abs(matrix @ matrix.T - np.eye(3)).max())
    if deviation > tolerance:
        raise TransformError(f'rotation is not orthonormal (max |R R^T - I| = {deviation:.3g})')
    (a, b, c), (d, e, f), (g, h, i) = matrix.tolist()
    determinant = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    if abs(determinant - 1.0) > tolerance * 3.0:
        raise TransformError(f'rotation is not proper (det = {determinant:.6f}, expected +1)')


def validate_rotation(
    rotation: npt.ArrayLike, tolerance: float = ORTHONORMAL_TOLERANCE
) -> FloatArray:
    """Return ``rotation`` as a (3, 3) float64 array after checking it is a proper rotation."""
    matrix = _as_float_array(rotation, 'rotation')
    if matrix.shape != (3, 3):
        raise TransformError(f'rotation must have shape (3, 3), got {matrix.shape}')
    if not np.isfinite(matrix).all():
        raise TransformError('rotation contains non-finite values')
    _check_rotation_block(matrix, tolerance)
    return matrix


def validate_transform(
    transform: npt.ArrayLike, tolerance: float = ORTHONORMAL_TOLERANCE
) -> FloatArray:
    """Return ``transform`` as a (4, 4) float64 array after checking it is rigid and finite."""
    matrix = _as_float_array(transform, 'transform')
    if matrix.shape != (4, 4):
        raise TransformError(f'transform must have shape (4, 4), got {matrix.shape}')
    if not np.isfinite(matrix).all():
        raise TransformError('transform contains non-finite values')
    if float(np.abs(matrix[3] - _BOTTOM_ROW).max()) > tolerance:
        raise TransformError(f'transform bottom row must be [0, 0, 0, 1], got {matrix[3]}')
    _check_rotation_block(matrix[:3, :3], tolerance)
    return matrix


def rotation_from_quaternion(quaternion_xyzw: npt.ArrayLike) -> FloatArray:
    """(3, 3) rotation of a quaternion ``(x, y, z, w)``; it is normalized first."""
    quaternion = _as_float_array(quaternion_xyzw, 'quaternion')
    if quaternion.shape != (4,):
        raise TransformError(
            f'quaternion must have 4 elements (x, y, z, w), got {quaternion.shape}'
        )
    if not np.all(np.isfinite(quaternion)):
        raise TransformError('quaternion contains non-finite values')
    norm = float(np.linalg.norm(quaternion))
    if norm < _MIN_QUATERNION_NORM:
        raise TransformError('quaternion has zero norm')
    x, y, z, w = quaternion / norm
    return np.array(
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
        ]
    )


def quaternion_from_rotation(rotation: npt.ArrayLike) -> FloatArray:
    """Return the unit quaternion ``(x, y, z, w)`` with ``w >= 0`` of a proper rotation matrix."""
    matrix = validate_rotation(rotation)
    # Shepperd's method: branch on the largest diagonal term to stay away from tiny divisors.
    trace = float(np.trace(matrix))
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        quaternion = np.array(
            [
                (matrix[2, 1] - matrix[1, 2]) / s,
                (matrix[0, 2] - matrix[2, 0]) / s,
                (matrix[1, 0] - matrix[0, 1]) / s,
                0.25 * s,
            ]
        )
    else:
        i = int(np.argmax(np.diag(matrix)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + matrix[i, i] - matrix[j, j] - matrix[k, k], 0.0))
        quaternion = np.empty(4)
        quaternion[i] = 0.25 * s
        quaternion[j] = (matrix[j, i] + matrix[i, j]) / s
        quaternion[k] = (matrix[k, i] + matrix[i, k]) / s
        quaternion[3] = (matrix[k, j] - matrix[j, k]) / s
    quaternion /= np.linalg.norm(quaternion)
    return quaternion if quaternion[3] >= 0.0 else -quaternion


def make_transform(
    translation: npt.ArrayLike = (0.0, 0.0, 0.0), rotation: npt.ArrayLike | None = None
) -> FloatArray:
    """(4, 4) transform from a translation (3,) and a (3, 3) rotation (identity when None)."""
    offset = _as_float_array(translation, 'translation')
    if offset.shape != (3,):
        raise TransformError(f'translation must have 3 elements, got {offset.shape}')
    if not np.all(np.isfinite(offset)):
        raise TransformError('translation contains non-finite values')
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) if rotation is None else validate_rotation(rotation)
    matrix[:3, 3] = offset
    return matrix


def transform_from_translation_quaternion(
    translation: npt.ArrayLike, quaternion_xyzw: npt.ArrayLike
) -> FloatArray:
    """(4, 4) transform from geometry_msgs-style translation and quaternion ``(x, y, z, w)``."""
    return make_transform(translation, rotation_from_quaternion(quaternion_xyzw))


def translation_quaternion_from_transform(
    transform: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """
    Return ``(translation, quaternion (x, y, z, w))`` of a transform.

    The inverse of the function above.
    """
    matrix = validate_transform(transform)
    return matrix[:3, 3].copy(), quaternion_from_rotation(matrix[:3, :3])


def invert_transform(transform: npt.ArrayLike) -> FloatArray:
    """Inverse of a rigid transform, using ``R^T`` (exact for rigid motions)."""
    matrix = validate_transform(transform)
    rotation_t = matrix[:3, :3].T
    inverse = np.eye(4)
    inverse[:3, :3] = rotation_t
    inverse[:3, 3] = -rotation_t @ matrix[:3, 3]
    return inverse


def compose(*transforms: npt.ArrayLike) -> FloatArray:
    """Multiply transforms, left to right: ``T_a_b`` composed with ``T_b_c`` is ``T_a_c``."""
    if not transforms:
        raise TransformError('compose needs at least one transform')
    result = np.eye(4)
    for transform in transforms:
        result = result @ validate_transform(transform)
    return result


def apply_transform(transform: npt.ArrayLike, points: npt.ArrayLike) -> FloatArray:
    """Map a point (3,) or points (N, 3) through ``transform``; returns the same shape."""
    matrix = validate_transform(transform)
    array = _as_float_array(points, 'points')
    if array.shape == (3,):
        return matrix[:3, :3] @ array + matrix[:3, 3]
    if array.ndim != 2 or array.shape[1] != 3:
        raise TransformError(f'points must have shape (3,) or (N, 3), got {array.shape}')
    return array @ matrix[:3, :3].T + matrix[:3, 3]


def rotate_covariance(
    transform_or_rotation: npt.ArrayLike, covariance: npt.ArrayLike
) -> FloatArray:
    """
    ``R C R^T`` for a (3, 3) covariance; accepts a (4, 4) transform or a (3, 3) rotation.

    Translations do not change a position covariance, so only the rotation block is used.
    """
    matrix = _as_float_array(transform_or_rotation, 'transform')
    if matrix.shape == (4, 4):
        rotation = validate_transform(matrix)[:3, :3]
    else:
        rotation = validate_rotation(matrix)
    cov = _as_float_array(covariance, 'covariance')
    if cov.shape != (3, 3):
        raise TransformError(f'covariance must have shape (3, 3), got {cov.shape}')
    if not np.all(np.isfinite(cov)):
        raise TransformError('covariance contains non-finite values')
    rotated = rotation @ cov @ rotation.T
    # Keep it exactly symmetric so downstream Cholesky/eigen calls see a clean matrix.
    return 0.5 * (rotated + rotated.T)


# Rotation taking camera optical coordinates (x right, y down, z forward) to the camera body
# frame (REP 103: x forward, y left, z up): x_body = z_opt, y_body = -x_opt, z_body = -y_opt.
# Its quaternion (x, y, z, w) is (-0.5, 0.5, -0.5, 0.5): the usual camera_link -> *_optical_frame
# static transform.
R_BODY_FROM_OPTICAL: FloatArray = np.array(
    [
        [0.0, 0.0, 1.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ]
)
R_BODY_FROM_OPTICAL.setflags(write=False)
R_OPTICAL_FROM_BODY: FloatArray = R_BODY_FROM_OPTICAL.T.copy()
R_OPTICAL_FROM_BODY.setflags(write=False)
T_BODY_FROM_OPTICAL: FloatArray = make_transform(rotation=R_BODY_FROM_OPTICAL)
T_BODY_FROM_OPTICAL.setflags(write=False)
T_OPTICAL_FROM_BODY: FloatArray = make_transform(rotation=R_OPTICAL_FROM_BODY)
T_OPTICAL_FROM_BODY.setflags(write=False)
