# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The vectorized lifter gives what the per-box lifter gave, box for box.

core/lifting.py lifts all boxes of a frame in shared array passes (docs/PERFORMANCE.md);
test/lifting_reference.py is the one-box-at-a-time implementation it replaced (commit 9a65d9d).
Sample counts and support ratios must match exactly and positions, covariances and sizes to
rounding (sums are accumulated in another order): the same pixels chosen, the same estimate.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
import lifting_reference as reference
import numpy as np
import pytest
from test_real_frames import FRAMES, load

from spatial_vlm_ros.core.lifting import (
    DEFAULT_LIFTING_CONFIG,
    LiftingConfig,
    lift_box,
    lift_boxes,
)
from spatial_vlm_ros.core.types import CameraIntrinsics, Lifted3D, PixelBox

K = CameraIntrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)


def assert_same(lifted: Lifted3D, expected: Lifted3D) -> None:
    assert lifted.depth_samples == expected.depth_samples
    assert lifted.valid_depth_ratio == expected.valid_depth_ratio
    assert (lifted.position is None) == (expected.position is None)
    if expected.position is None:
        assert lifted.covariance is None and lifted.size is None
        return
    np.testing.assert_allclose(lifted.position, expected.position, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lifted.covariance, expected.covariance, rtol=1e-9, atol=1e-16)
    np.testing.assert_array_equal(lifted.size, expected.size)


def cluttered_scene(
    rng: np.random.Generator, width: int = 640, height: int = 480, objects: int = 12
) -> tuple[np.ndarray, list[PixelBox]]:
    """Fronto-parallel slabs at 0.5-9 m in front of a tilted wall, with Kinect-like noise,
    millimetre quantization, holes and flying pixels; loose boxes around the slabs (some
    overlapping, some crossing the image border, some far larger than 8192 pixels)."""
    rows, columns = np.mgrid[0:height, 0:width]
    depth = 3.0 + 2.0 * columns / width + rows / height
    boxes = []
    for _ in range(objects):
        w, h = rng.integers(8, width // 2), rng.integers(8, height // 2)
        x0, y0 = rng.integers(-w // 3, width - w // 2), rng.integers(-h // 3, height - h // 2)
        z = rng.uniform(0.5, 9.0)
        region = (slice(max(y0, 0), max(y0 + h, 0)), slice(max(x0, 0), max(x0 + w, 0)))
        depth[region] = np.minimum(depth[region], z + 0.2 * rng.random() * rows[region] / height)
        pad = rng.uniform(-0.05, 0.2, 4) * [w, h, w, h]
        boxes.append(PixelBox(x0 - pad[0], y0 - pad[1], x0 + w + pad[2], y0 + h + pad[3]))
    depth = depth + rng.normal(0.0, 1.0, depth.shape) * 1.5e-3 * depth**2
    depth = np.round(depth * 1000.0) / 1000.0
    edges = np.abs(np.diff(depth, axis=1, prepend=depth[:, :1])) > 0.1
    depth[edges & (rng.random(depth.shape) < 0.5)] *= 0.9  # flying pixels
    depth[rng.random(depth.shape) < 0.03] = np.nan
    depth[edges & (rng.random(depth.shape) < 0.3)] = np.nan
    return depth.astype(np.float32), boxes


@pytest.mark.parametrize('seed', range(6))
def test_a_cluttered_frame_lifts_as_box_by_box(seed):
    depth, boxes = cluttered_scene(np.random.default_rng(seed))
    together = lift_boxes(depth, K, boxes)
    expected = reference.lift_boxes(depth, K, boxes)
    assert sum(lifted.position is not None for lifted in expected) >= len(boxes) // 2
    for lifted, wanted in zip(together, expected, strict=True):
        assert_same(lifted, wanted)
    for box in boxes[:4]:
        assert_same(lift_box(depth, K, box), reference.lift_box(depth, K, box))


@pytest.mark.parametrize(
    'change',
    [
        {'context_ring': 0.0},
        {'border_taper': 0.0},
        {'max_samples': 500},
        {'min_samples': 1, 'min_valid_ratio': 0.0},
        {'contrast_floor': 0.0, 'valley_ratio': 1.0},
        {'min_depth_m': 1.0, 'max_depth_m': 4.0},
    ],
)
def test_every_setting_lifts_as_box_by_box(change):
    config = dataclasses.replace(DEFAULT_LIFTING_CONFIG, **change)
    depth, boxes = cluttered_scene(np.random.default_rng(42))
    for lifted, wanted in zip(
        lift_boxes(depth, K, boxes, config),
        reference.lift_boxes(depth, K, boxes, config),
        strict=True,
    ):
        assert_same(lifted, wanted)


@pytest.mark.parametrize('frame', FRAMES)
def test_real_frames_lift_as_box_by_box(frame):
    labels, _, depth, intrinsics = load(frame)
    boxes = [PixelBox(*map(float, item['bbox'])) for item in labels['objects']]
    for lifted, wanted in zip(
        lift_boxes(depth, intrinsics, boxes),
        reference.lift_boxes(depth, intrinsics, boxes),
        strict=True,
    ):
        assert_same(lifted, wanted)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    boxes=st.lists(
        st.tuples(st.floats(-10, 70), st.floats(-10, 70), st.floats(0, 60), st.floats(0, 60)),
        min_size=1,
        max_size=6,
    ),
    float64=st.booleans(),
)
def test_small_random_images_lift_as_box_by_box(seed, size, boxes, float64):
    rng = np.random.default_rng(seed)
    width, height = size
    depth = rng.choice([0.5, 1.0, 2.0, 4.0, 12.0], (height, width)) + rng.normal(
        0.0, 0.01, (height, width)
    )
    depth[rng.random((height, width)) < rng.uniform(0.0, 0.6)] = np.nan
    depth = depth.astype(np.float64 if float64 else np.float32)
    intrinsics = CameraIntrinsics(50.0, 50.0, width / 2 - 0.5, height / 2 - 0.5, width, height)
    pixel_boxes = [PixelBox(x, y, x + w, y + h) for x, y, w, h in boxes]
    config = LiftingConfig(min_samples=3)
    together = lift_boxes(depth, intrinsics, pixel_boxes, config)
    expected = reference.lift_boxes(depth, intrinsics, pixel_boxes, config)
    for lifted, wanted in zip(together, expected, strict=True):
        assert_same(lifted, wanted)
