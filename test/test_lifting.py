# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Lifting boxes to 3D: the object's visible surface, not the box's centre pixel or median."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.lifting_baselines import lift_box_median, lift_center_pixel
from spatial_vlm_ros.core.lifting import (
    DEFAULT_LIFTING_CONFIG,
    LiftingConfig,
    LiftingError,
    lift_box,
    lift_boxes,
)
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, SpatialVlmError

K = CameraIntrinsics(fx=262.5, fy=262.5, cx=159.5, cy=119.5, width=320, height=240)


def wall(depth_m: float = 4.0) -> np.ndarray:
    return np.full((K.height, K.width), depth_m, dtype=np.float32)


def paint(depth: np.ndarray, box: tuple[int, int, int, int], value: float) -> None:
    x0, y0, x1, y1 = box
    depth[y0:y1, x0:x1] = value


def visible_centroid(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    z = depth[rows, columns].astype(np.float64)
    return np.array(
        [((columns - K.cx) * z / K.fx).mean(), ((rows - K.cy) * z / K.fy).mean(), z.mean()]
    )


def floor_depth() -> np.ndarray:
    """A floor seen by a horizontal camera 1 m above it, beyond a wall at 6 m."""
    rows = np.arange(K.height, dtype=np.float64)[:, None]
    ray_down = (rows - K.cy) / K.fy
    with np.errstate(divide='ignore'):
        floor = np.where(ray_down > 0, 1.0 / np.maximum(ray_down, 1e-9), np.inf)
    return np.broadcast_to(np.minimum(floor, 6.0), (K.height, K.width)).astype(np.float32).copy()


def test_plate_in_front_of_wall_lifts_to_its_visible_centroid():
    depth = wall()
    plate = (130, 90, 190, 150)
    paint(depth, plate, 2.0)
    mask = np.zeros(depth.shape, dtype=bool)
    mask[90:150, 130:190] = True
    loose_box = PixelBox(118, 80, 204, 162)  # about 20 % larger than the plate
    lifted = lift_box(depth, K, loose_box)
    np.testing.assert_allclose(lifted.position, visible_centroid(depth, mask), atol=5e-3)
    assert lifted.position[2] == pytest.approx(2.0, abs=1e-6)
    # Extent of a 60 px plate at 2 m: 60 * 2 / 262.5 = 0.457 m (2nd-98th percentile).
    assert lifted.size[0] == pytest.approx(0.457, abs=0.03)
    assert lifted.size[1] == pytest.approx(0.457, abs=0.03)
    assert lifted.size[2] == pytest.approx(0.0, abs=1e-6)
    assert lifted.depth_samples == 60 * 60
    assert lifted.valid_depth_ratio == pytest.approx(3600 / (86 * 82), abs=1e-9)


def test_box_median_and_centre_pixel_fail_where_lift_box_does_not():
    # The target fills most of its box, but an occluder at 1 m hides its left half, centre
    # included; the occluder continues beyond the box, the target does not.
    depth = wall()
    paint(depth, (140, 100, 200, 160), 2.5)  # target
    paint(depth, (100, 60, 172, 200), 1.0)  # occluder, extends beyond the box above and below
    box = PixelBox(136, 96, 204, 164)
    lifted = lift_box(depth, K, box)
    assert lifted.position[2] == pytest.approx(2.5, abs=1e-6)
    assert lift_center_pixel(depth, K, box).position[2] == pytest.approx(1.0)
    assert lift_box_median(depth, K, box).position[2] != pytest.approx(2.5, abs=0.2)


def test_open_object_over_a_floor_is_not_lifted_to_the_floor():
    # A chair back: two posts and two rails at 2 m, 25 % of its box; the floor fills the rest
    # of the box and continues around it.
    depth = floor_depth()
    chair = np.zeros(depth.shape, dtype=bool)
    for rect in (
        (120, 130, 126, 200),
        (194, 130, 200, 200),
        (120, 130, 200, 138),
        (120, 160, 200, 166),
    ):
        x0, y0, x1, y1 = rect
        chair[y0:y1, x0:x1] = True
    depth[chair] = 2.0
    box = PixelBox(120, 130, 200, 200)
    lifted = lift_box(depth, K, box)
    assert lifted.position[2] == pytest.approx(2.0, abs=1e-6)
    np.testing.assert_allclose(lifted.position, visible_centroid(depth, chair), atol=0.03)
    median_depth = lift_box_median(depth, K, box).position[2]
    assert abs(median_depth - 2.0) > 0.5


def test_flying_pixels_and_holes_do_not_move_the_centroid():
    rng = np.random.default_rng(3)
    depth = wall()
    paint(depth, (130, 90, 190, 150), 2.0)
    clean = lift_box(depth, K, PixelBox(120, 80, 200, 160)).position
    # Flying pixels on the plate's outline, interpolated between plate and wall.
    outline = np.zeros(depth.shape, dtype=bool)
    outline[89:151, 129:191] = True
    outline[91:149, 131:189] = False
    depth[outline] = rng.uniform(2.05, 3.95, outline.sum())
    depth[rng.random(depth.shape) < 0.1] = np.nan
    noisy = lift_box(depth, K, PixelBox(120, 80, 200, 160)).position
    np.testing.assert_allclose(noisy, clean, atol=0.01)


def test_sensor_noise_keeps_the_depth_and_covariance_reflects_it():
    rng = np.random.default_rng(4)
    lifted = {}
    for distance in (1.0, 3.0):
        depth = wall(distance + 2.0)
        paint(depth, (130, 90, 190, 150), distance)
        depth += (rng.standard_normal(depth.shape) * 1.5e-3 * depth**2).astype(np.float32)
        lifted[distance] = lift_box(depth, K, PixelBox(125, 85, 195, 155))
        assert lifted[distance].position[2] == pytest.approx(distance, abs=0.01)
        covariance = lifted[distance].covariance
        np.testing.assert_allclose(covariance, covariance.T)
        assert np.all(np.linalg.eigvalsh(covariance) > 0.0)
        # The sensor floor alone: sigma_z >= 1.5e-3 z^2.
        assert np.sqrt(covariance[2, 2]) >= 1.5e-3 * distance**2
    assert lifted[3.0].covariance[2, 2] > lifted[1.0].covariance[2, 2]


def test_too_little_support_gives_no_position():
    depth = wall()
    depth[60:140, 60:140] = np.nan
    depth[100:102, 100:102] = 2.0  # 4 valid pixels in an 80x80 box
    box = PixelBox(60, 60, 140, 140)
    lifted = lift_box(depth, K, box)
    assert lifted.position is None and lifted.covariance is None and lifted.size is None
    assert lifted.depth_samples == 4
    assert lifted.valid_depth_ratio == pytest.approx(4 / 6400)
    lenient = dataclasses.replace(DEFAULT_LIFTING_CONFIG, min_samples=4, min_valid_ratio=0.0)
    assert lift_box(depth, K, box, lenient).position[2] == pytest.approx(2.0)
    paint(depth, (60, 60, 140, 92), 2.0)  # 40 % of the box
    assert lift_box(depth, K, box).position is not None
    strict_ratio = dataclasses.replace(DEFAULT_LIFTING_CONFIG, min_valid_ratio=0.5)
    assert lift_box(depth, K, box, strict_ratio).position is None


def test_depths_outside_the_valid_range_are_ignored():
    depth = wall(12.0)  # beyond max_depth_m = 10
    paint(depth, (140, 100, 180, 140), 0.05)  # nearer than min_depth_m = 0.1
    assert lift_box(depth, K, PixelBox(100, 60, 220, 180)).position is None
    assert lift_box_median(depth, K, PixelBox(100, 60, 220, 180)).position is None
    assert lift_center_pixel(depth, K, PixelBox(100, 60, 220, 180)).position is None


def test_boxes_outside_or_across_the_image_border():
    depth = wall()
    paint(depth, (280, 0, 320, 40), 2.0)
    outside = lift_box(depth, K, PixelBox(400, 300, 420, 320))
    assert outside.position is None and outside.valid_depth_ratio == 0.0
    across = lift_box(depth, K, PixelBox(270, -20, 340, 50))
    clipped = lift_box(depth, K, PixelBox(270, 0, 320, 50))
    assert across.position[2] == pytest.approx(2.0)
    np.testing.assert_allclose(across.position, clipped.position, atol=0.02)
    empty = lift_box(depth, K, PixelBox(10, 10, 10, 30))
    assert empty.position is None


def test_baselines():
    depth = wall()
    paint(depth, (100, 80, 220, 160), 2.0)
    box = PixelBox(100, 80, 220, 160)
    center = lift_center_pixel(depth, K, box)
    np.testing.assert_allclose(center.position, (0.5 * 2 / K.fx, 0.5 * 2 / K.fy, 2.0), atol=1e-9)
    depth[120, 160] = np.nan  # the centre pixel becomes a hole: the 5x5 window answers
    assert lift_center_pixel(depth, K, box).position[2] == pytest.approx(2.0)
    assert lift_center_pixel(depth, K, box).depth_samples == 24
    median = lift_box_median(depth, K, PixelBox(100, 80, 220, 200))  # 2/3 plate, 1/3 wall
    assert median.position[2] == pytest.approx(2.0)
    median = lift_box_median(depth, K, PixelBox(100, 80, 220, 280))  # 1/3 plate, 2/3 wall
    assert median.position[2] == pytest.approx(4.0)


def test_large_boxes_are_strided_but_agree():
    depth = wall()
    paint(depth, (60, 40, 260, 200), 2.0)
    coarse = dataclasses.replace(DEFAULT_LIFTING_CONFIG, max_samples=2000)
    fine = lift_box(depth, K, PixelBox(0, 0, 320, 240))
    strided = lift_box(depth, K, PixelBox(0, 0, 320, 240), coarse)
    assert strided.depth_samples < fine.depth_samples
    # Different sampling lattices: a few pixels of offset, 2 cm at most here.
    np.testing.assert_allclose(strided.position, fine.position, atol=0.03)


def test_lift_boxes_keeps_order():
    depth = wall()
    paint(depth, (20, 20, 60, 60), 1.0)
    paint(depth, (200, 100, 260, 160), 2.0)
    boxes = [PixelBox(200, 100, 260, 160), PixelBox(20, 20, 60, 60)]
    depths = [lifted.position[2] for lifted in lift_boxes(depth, K, boxes)]
    assert depths == pytest.approx([2.0, 1.0])


def occluded_scene() -> tuple[np.ndarray, PixelBox, PixelBox]:
    """A box at 2 m whose middle is hidden by a nearer box at 1 m that stays inside it."""
    depth = wall(4.0)
    target, occluder = (100, 60, 220, 180), (125, 75, 200, 165)
    paint(depth, target, 2.0)
    paint(depth, occluder, 1.0)
    return depth, PixelBox(*target), PixelBox(*occluder)


def test_lift_boxes_lifts_a_hidden_object_to_its_own_surface_not_its_occluder():
    depth, target, occluder = occluded_scene()
    # Alone, the target's box is won by the occluder: it fills the box centre and does not
    # continue outside the box, exactly like an object would.
    assert lift_box(depth, K, target).position[2] == pytest.approx(1.0, abs=0.02)
    hidden, front = lift_boxes(depth, K, [target, occluder])
    assert hidden.position[2] == pytest.approx(2.0, abs=0.02)
    assert front.position[2] == pytest.approx(1.0, abs=0.02)
    # Its visible ring spans the whole box (0.91 m at 2 m), not the occluder's 0.29 m.
    assert hidden.size[0] == pytest.approx(120 * 2.0 / K.fx, rel=0.05)
    # The order of the boxes does not matter.
    front_again, hidden_again = lift_boxes(depth, K, [occluder, target])
    np.testing.assert_allclose(hidden_again.position, hidden.position)
    np.testing.assert_allclose(front_again.position, front.position)


def test_lift_boxes_without_occlusion_resolution_is_lift_box_per_box():
    depth, target, occluder = occluded_scene()
    plain = lift_boxes(depth, K, [target, occluder], resolve_occlusions=False)
    for lifted, box in zip(plain, [target, occluder], strict=True):
        np.testing.assert_allclose(lifted.position, lift_box(depth, K, box).position)


def test_lift_boxes_leaves_neighbours_at_one_depth_and_duplicate_boxes_alone():
    depth = wall(4.0)
    paint(depth, (60, 80, 140, 160), 1.5)
    paint(depth, (140, 80, 220, 160), 1.5)
    # Loose boxes of two touching objects at one depth overlap; each keeps its own surface.
    left, right = PixelBox(55, 75, 150, 165), PixelBox(130, 75, 225, 165)
    # The same object boxed twice (say "mug" and "cup"): one object, not an occlusion.
    duplicate = PixelBox(58, 78, 145, 162)
    boxes = [left, right, duplicate]
    for lifted, box in zip(lift_boxes(depth, K, boxes), boxes, strict=True):
        np.testing.assert_allclose(lifted.position, lift_box(depth, K, box).position)


@pytest.mark.parametrize(
    ('depth', 'intrinsics', 'box'),
    [
        (np.zeros((240, 320), dtype=np.uint16), K, PixelBox(0, 0, 10, 10)),  # not metres
        (np.zeros((240, 320, 1), dtype=np.float32), K, PixelBox(0, 0, 10, 10)),
        (np.zeros((120, 160), dtype=np.float32), K, PixelBox(0, 0, 10, 10)),  # size mismatch
        (wall(), dataclasses.replace(K, fx=0.0), PixelBox(0, 0, 10, 10)),
        (wall(), dataclasses.replace(K, cx=float('nan')), PixelBox(0, 0, 10, 10)),
        (wall(), K, PixelBox(0, float('nan'), 10, 10)),
        (wall(), K, PixelBox(20, 0, 10, 10)),  # inverted
        (wall(), K, (0, 0, 10, 10)),  # not a PixelBox
        (wall(), (262.5, 262.5, 159.5, 119.5), PixelBox(0, 0, 10, 10)),
    ],
)
def test_malformed_inputs_raise_typed_errors(depth, intrinsics, box):
    for lifter in (lift_box, lift_box_median, lift_center_pixel):
        with pytest.raises(LiftingError):
            lifter(depth, intrinsics, box)
    assert issubclass(LiftingError, SpatialVlmError)


@pytest.mark.parametrize(
    'change',
    [
        {'min_depth_m': 5.0, 'max_depth_m': 1.0},
        {'min_valid_ratio': 1.5},
        {'min_samples': 0},
        {'min_samples': 2.5},
        {'center_sigma': 0.0},
        {'valley_ratio': 0.0},
        {'border_taper': 2.0},
        {'band_mads': float('nan')},
        {'max_samples': True},
        {'context_ring': -1.0},
        {'occlusion_share': 0.0},
        {'same_object_iou': 1.5},
        {'occluder_depth_factor': -0.1},
    ],
)
def test_bad_configs_raise(change):
    with pytest.raises(LiftingError):
        LiftingConfig(**change)
