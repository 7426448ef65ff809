# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Property tests for lifting, relations and transforms.

SPATIAL_VLM_FUZZ_EXAMPLES sets hypothesis' max_examples per test (default 300; CI uses 10000);
the lifting properties run half that many. Images are small and generated from a drawn seed.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np

from bench.lifting_baselines import lift_box_median, lift_center_pixel
from spatial_vlm_ros.core.lifting import DEFAULT_LIFTING_CONFIG, lift_box, lift_boxes
from spatial_vlm_ros.core.relations import (
    FULL,
    RelationConfig,
    compute_relations,
    transform_objects,
)
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    apply_transform,
    compose,
    invert_transform,
    quaternion_from_rotation,
    rotate_covariance,
    rotation_from_quaternion,
    transform_from_translation_quaternion,
    validate_transform,
)
from spatial_vlm_ros.core.types import (
    ABOVE,
    BELOW,
    CONVERSE_PREDICATE,
    IN_FRONT_OF,
    LEFT_OF,
    NEAR,
    CameraIntrinsics,
    Lifted3D,
    PixelBox,
    SpatialObject,
)

EXAMPLES = int(os.environ.get('SPATIAL_VLM_FUZZ_EXAMPLES', '300'))
settings.register_profile(
    'spatial_vlm_geometry',
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)
FUZZ = settings.get_profile('spatial_vlm_geometry')
# Each lifting example runs up to six lifts: half the examples keep the 10000-example run of this
# file near a minute on two cores.
FUZZ_LIFTING = settings(FUZZ, max_examples=max(EXAMPLES // 2, 25))


seeds = st.integers(min_value=0, max_value=2**32 - 1)
finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
unit_quaternions = st.tuples(
    *[st.floats(min_value=-1.0, max_value=1.0, allow_nan=False) for _ in range(4)]
).filter(lambda q: math.fsum(v * v for v in q) > 1e-3)


def random_depth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Plates at random depths over a background, with holes, flying pixels and odd values."""
    depth = np.full((height, width), rng.uniform(0.3, 12.0), dtype=np.float32)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        depth[y0 : y0 + rng.integers(1, height + 1), x0 : x0 + rng.integers(1, width + 1)] = (
            rng.uniform(0.05, 12.0)
        )
    depth += (rng.standard_normal(depth.shape) * rng.uniform(0, 0.05)).astype(np.float32)
    depth[rng.random(depth.shape) < rng.uniform(0, 0.6)] = np.nan
    specials = rng.random(depth.shape) < 0.02
    depth[specials] = rng.choice(
        np.array([np.inf, -np.inf, -1.0, 0.0, 1e6], np.float32), specials.sum()
    )
    return depth


@FUZZ_LIFTING
@given(
    seed=seeds,
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    box=st.tuples(finite, finite, st.floats(0, 100), st.floats(0, 100)),
    focal=st.tuples(st.floats(1.0, 2000.0), st.floats(1.0, 2000.0), finite, finite),
)
def test_lifting_never_raises_on_valid_input(seed, height, width, box, focal):
    rng = np.random.default_rng(seed)
    depth = random_depth(rng, height, width)
    intrinsics = CameraIntrinsics(*focal, width=width, height=height)
    pixel_box = PixelBox(box[0], box[1], box[0] + box[2], box[1] + box[3])
    for lifter in (lift_box, lift_box_median, lift_center_pixel):
        lifted = lifter(depth, intrinsics, pixel_box)
        assert 0.0 <= lifted.valid_depth_ratio <= 1.0
        # Samples are pixels of the box, so never more than the image has.
        assert 0 <= lifted.depth_samples <= height * width
        if lifted.position is None:
            assert lifted.covariance is None and lifted.size is None
            continue
        if lifter is lift_box:  # a position needs enough support (the baselines need one pixel)
            assert lifted.depth_samples >= DEFAULT_LIFTING_CONFIG.min_samples
            assert lifted.valid_depth_ratio >= DEFAULT_LIFTING_CONFIG.min_valid_ratio
        assert np.all(np.isfinite(lifted.position))
        assert 0.1 <= lifted.position[2] <= 10.0
        assert np.all(np.isfinite(lifted.covariance))
        np.testing.assert_allclose(lifted.covariance, lifted.covariance.T, atol=1e-15)
        assert np.all(np.linalg.eigvalsh(lifted.covariance) >= -1e-12)
        assert np.all(lifted.size >= 0.0)


def _check_lift(lifted: Lifted3D) -> None:
    assert 0.0 <= lifted.valid_depth_ratio <= 1.0
    if lifted.position is None:
        assert lifted.covariance is None and lifted.size is None
        return
    assert np.all(np.isfinite(lifted.position)) and 0.1 <= lifted.position[2] <= 10.0
    assert np.all(np.linalg.eigvalsh(lifted.covariance) >= -1e-12)


@FUZZ_LIFTING
@given(
    seed=seeds,
    boxes=st.lists(
        st.tuples(st.floats(-5, 45), st.floats(-5, 45), st.floats(0, 40), st.floats(0, 40)),
        min_size=1,
        max_size=5,
    ),
)
def test_lifting_boxes_together_never_raises_and_only_redoes_overlapping_boxes(seed, boxes):
    rng = np.random.default_rng(seed)
    depth = random_depth(rng, 40, 40)
    intrinsics = CameraIntrinsics(50.0, 50.0, 19.5, 19.5, 40, 40)
    pixel_boxes = [PixelBox(x, y, x + w, y + h) for x, y, w, h in boxes]
    together = lift_boxes(depth, intrinsics, pixel_boxes)
    assert len(together) == len(pixel_boxes)
    for index, (lifted, box) in enumerate(zip(together, pixel_boxes, strict=True)):
        _check_lift(lifted)
        alone = lift_box(depth, intrinsics, box)
        overlaps = any(
            other.x_min < box.x_max
            and box.x_min < other.x_max
            and other.y_min < box.y_max
            and box.y_min < other.y_max
            for position, other in enumerate(pixel_boxes)
            if position != index
        )
        if not overlaps:  # occlusion handling never touches a box that overlaps nothing
            assert lifted.depth_samples == alone.depth_samples
            if alone.position is not None:
                np.testing.assert_array_equal(lifted.position, alone.position)


@FUZZ_LIFTING
@given(
    seed=seeds,
    size=st.tuples(st.integers(4, 24), st.integers(4, 24)),  # >= min_samples pixels
    origin=st.tuples(st.integers(0, 30), st.integers(0, 30)),
    shift=st.tuples(st.integers(-12, 12), st.integers(-12, 12)),
)
def test_lifting_is_translation_invariant_over_a_constant_plane(seed, size, origin, shift):
    rng = np.random.default_rng(seed)
    plane_depth = float(rng.uniform(0.5, 8.0))
    # Boxes start at 12..42 and move by up to 12: they stay well inside the 96x96 image.
    depth = np.full((96, 96), plane_depth, dtype=np.float32)
    intrinsics = CameraIntrinsics(100.0, 120.0, 47.5, 40.0, 96, 96)
    box_width, box_height = size
    x0, y0 = origin[0] + 12, origin[1] + 12
    moved_x0, moved_y0 = x0 + shift[0], y0 + shift[1]
    first = lift_box(depth, intrinsics, PixelBox(x0, y0, x0 + box_width, y0 + box_height))
    second = lift_box(
        depth,
        intrinsics,
        PixelBox(moved_x0, moved_y0, moved_x0 + box_width, moved_y0 + box_height),
    )
    assert first.depth_samples == second.depth_samples
    assert first.valid_depth_ratio == second.valid_depth_ratio
    assert first.position[2] == second.position[2]
    assert math.isclose(first.position[2], np.float32(plane_depth), rel_tol=1e-12)
    expected_shift = (
        shift[0] * plane_depth / intrinsics.fx,
        shift[1] * plane_depth / intrinsics.fy,
        0.0,
    )
    np.testing.assert_allclose(second.position - first.position, expected_shift, atol=1e-5)
    np.testing.assert_allclose(second.size, first.size, atol=1e-5)


@FUZZ_LIFTING
@given(
    seed=seeds,
    height=st.integers(4, 32),
    width=st.integers(4, 32),
    corners=st.tuples(*[st.floats(0.0, 1.0) for _ in range(4)]),
    padding=st.tuples(*[st.integers(0, 20) for _ in range(4)]),
)
def test_lifting_ignores_nan_padding_outside_the_box(seed, height, width, corners, padding):
    rng = np.random.default_rng(seed)
    depth = random_depth(rng, height, width)
    intrinsics = CameraIntrinsics(80.0, 90.0, width / 2, height / 2, width, height)
    # Eighths of a pixel: shifting them by whole pixels is exact in floating point.
    xa, xb = sorted(round(corner * width * 8) / 8 for corner in corners[0::2])
    ya, yb = sorted(round(corner * height * 8) / 8 for corner in corners[1::2])
    box = PixelBox(xa, ya, xb, yb)
    left, right, top, bottom = padding
    padded = np.pad(depth, ((top, bottom), (left, right)), constant_values=np.nan)
    padded_intrinsics = CameraIntrinsics(
        80.0, 90.0, width / 2 + left, height / 2 + top, width + left + right, height + top + bottom
    )
    padded_box = PixelBox(xa + left, ya + top, xb + left, yb + top)
    for lifter in (lift_box, lift_box_median, lift_center_pixel):
        original = lifter(depth, intrinsics, box)
        shifted = lifter(padded, padded_intrinsics, padded_box)
        assert original.depth_samples == shifted.depth_samples
        assert original.valid_depth_ratio == shifted.valid_depth_ratio
        if original.position is None:
            assert shifted.position is None
            continue
        np.testing.assert_allclose(shifted.position, original.position, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(shifted.covariance, original.covariance, rtol=1e-7, atol=1e-15)


def random_objects(rng: np.random.Generator, count: int) -> list[SpatialObject]:
    objects = []
    for index in range(count):
        if rng.random() < 0.15:
            lifted = Lifted3D(None, None, None, 0.0, 0)
        else:
            factor = rng.normal(size=(3, 3)) * rng.uniform(0.001, 0.2)
            lifted = Lifted3D(
                position=rng.uniform((-3, -2, 0.3), (3, 2, 8)),
                covariance=factor @ factor.T,
                size=rng.uniform(0.0, 1.0, 3),
                valid_depth_ratio=1.0,
                depth_samples=100,
            )
        objects.append(SpatialObject(f'obj_{index}', 'thing', 1.0, PixelBox(0, 0, 1, 1), lifted))
    return objects


@FUZZ
@given(
    seed=seeds,
    count=st.integers(0, 7),
    quaternion=unit_quaternions,
    translation=st.tuples(finite, finite, finite),
)
def test_relations_are_symmetric_and_consistent(seed, count, quaternion, translation):
    rng = np.random.default_rng(seed)
    objects = random_objects(rng, count)
    body_from_camera = transform_from_translation_quaternion(translation, quaternion)
    positioned = {item.id: item.position for item in objects if item.position is not None}
    full = RelationConfig(mode=FULL)
    camera_view = compute_relations(objects, full)
    # A level camera at the body origin: the body frame reads exactly like the camera view.
    assert compute_relations(objects, full, T_ref_from_camera=T_BODY_FROM_OPTICAL) == camera_view
    body_view = compute_relations(objects, full, T_ref_from_camera=body_from_camera)
    for relations in (camera_view, body_view):
        by_triple = {(r.subject, r.predicate, r.object): r for r in relations}
        assert len(by_triple) == len(relations)
        for relation in relations:
            assert relation.subject in positioned and relation.object in positioned
            assert relation.subject != relation.object
            converse = by_triple[
                (relation.object, CONVERSE_PREDICATE[relation.predicate], relation.subject)
            ]
            assert converse.confidence == relation.confidence
            assert converse.distance == relation.distance
            if relation.predicate != NEAR:
                contradiction = (
                    relation.subject,
                    CONVERSE_PREDICATE[relation.predicate],
                    relation.object,
                )
                assert contradiction not in by_triple
            assert 0.5 <= relation.confidence <= 1.0
            offset = positioned[relation.subject] - positioned[relation.object]
            assert math.isclose(relation.distance, math.hypot(*offset), rel_tol=1e-9)
    # The compact set: a subset of the full one, one statement per pair and axis, no
    # converses, and in the camera view no above/below (the level body frame adds only those).
    compact_camera = compute_relations(objects)
    compact_level = compute_relations(objects, T_ref_from_camera=T_BODY_FROM_OPTICAL)
    assert compact_camera == [r for r in compact_level if r.predicate not in (ABOVE, BELOW)]
    for compact, full_set in ((compact_camera, camera_view), (compact_level, camera_view)):
        full_triples = {(r.subject, r.predicate, r.object) for r in full_set}
        keys = [(frozenset((r.subject, r.object)), r.predicate) for r in compact]
        assert len(keys) == len(set(keys))
        for relation in compact:
            assert relation.predicate in (LEFT_OF, ABOVE, IN_FRONT_OF, NEAR)
            assert (relation.subject, relation.predicate, relation.object) in full_triples
    assert not {r.predicate for r in compact_camera} & {ABOVE, BELOW}


def close(actual, expected, tolerance: float) -> bool:
    return float(np.abs(np.asarray(actual) - np.asarray(expected)).max()) <= tolerance


@FUZZ
@given(
    quaternion=unit_quaternions,
    translation=st.tuples(finite, finite, finite),
    point=st.tuples(finite, finite, finite),
    seed=seeds,
)
def test_transform_round_trips(quaternion, translation, point, seed):
    transform = transform_from_translation_quaternion(translation, quaternion)
    validate_transform(transform)
    inverse = invert_transform(transform)
    assert close(compose(transform, inverse), np.eye(4), 1e-9)
    assert close(apply_transform(inverse, apply_transform(transform, point)), point, 1e-8)
    rotation = rotation_from_quaternion(quaternion)
    assert close(rotation_from_quaternion(quaternion_from_rotation(rotation)), rotation, 1e-9)
    factor = np.random.default_rng(seed).normal(size=(3, 3))
    covariance = factor @ factor.T
    assert close(
        rotate_covariance(inverse, rotate_covariance(transform, covariance)), covariance, 1e-8
    )
    lifted = Lifted3D(np.array(point, float), covariance, np.ones(3), 1.0, 10)
    thing = SpatialObject('thing', 'thing', 1.0, PixelBox(0, 0, 1, 1), lifted)
    (back,) = transform_objects(transform_objects([thing], transform), inverse)
    assert close(back.position, point, 1e-8)
    assert close(back.lifted.covariance, covariance, 1e-8)
    np.testing.assert_array_equal(back.lifted.size, lifted.size)
