# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""16-bit depth decoded by table lookup equals decoding, hole masking and range limits done
pixel by pixel (the frame builder's fast path, docs/PERFORMANCE.md)."""

from __future__ import annotations

import numpy as np
import pytest
from test_camera import Info, image_message

from spatial_vlm_ros.core import camera as cam
from spatial_vlm_ros.core.image_decoding import decode_depth, depth_lookup_table

EDGE_CODES = [0, 1, 99, 100, 101, 999, 1000, 1001, 9999, 10000, 10001, 65534, 65535]


def depth_codes(seed: int, big_endian: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 65536, (480, 640)).astype(np.uint16)
    edges = rng.random(codes.shape) < 0.3
    codes[edges] = rng.choice(EDGE_CODES, int(edges.sum()))
    codes[:200] = rng.integers(300, 6000, (200, 640))  # a plausible median depth
    return codes.astype('>u2' if big_endian else '<u2')


def frame(codes: np.ndarray, encoding: str, config: cam.DepthConfig):
    rgb = image_message(np.zeros((480, 640, 3), dtype=np.uint8), 'rgb8')
    depth = image_message(codes, encoding)
    depth.is_bigendian = int(codes.dtype.byteorder == '>')
    return cam.make_rgbd_frame_with_warnings(rgb, depth, Info(), config), depth


@pytest.mark.parametrize(
    ('encoding', 'config', 'big_endian'),
    [
        ('16UC1', cam.DepthConfig(), False),
        ('mono16', cam.DepthConfig(min_depth_m=0.3, max_depth_m=4.0), True),
        ('16UC1', cam.DepthConfig(depth_scale=0.00025, min_depth_m=0.0, max_depth_m=12.0), False),
        ('16UC1', cam.DepthConfig(depth_scale=0.004), False),  # median too far: a warning
    ],
)
def test_table_lookup_decodes_like_converting_each_pixel(encoding, config, big_endian):
    codes = depth_codes(7, big_endian)
    (built, warnings), message = frame(codes, encoding, config)
    converted = decode_depth(message, config.depth_scale)
    expected_warnings = cam.depth_sanity_warnings(converted, encoding, config.depth_scale)
    cam.apply_depth_range(converted, config.min_depth_m, config.max_depth_m)
    np.testing.assert_array_equal(built.depth_m, converted)  # NaN where NaN, else bit-equal
    assert built.depth_m.dtype == np.float32 and built.depth_m.flags.writeable
    assert [w for w in warnings if 'median depth' in w] == expected_warnings
    if config.depth_scale == 0.004:
        assert expected_warnings  # the check itself ran on both paths


def test_an_all_hole_depth_image_warns_on_both_paths():
    (built, warnings), _ = frame(np.zeros((480, 640), dtype=np.uint16), '16UC1', cam.DepthConfig())
    assert np.isnan(built.depth_m).all()
    assert 'depth image has no valid pixels' in warnings


def test_the_table_is_read_only_and_cached():
    table = depth_lookup_table(0.001, 0.1, 10.0)
    assert table is depth_lookup_table(0.001, 0.1, 10.0)
    assert not table.flags.writeable
    assert np.isnan(table[0]) and np.isnan(table[99]) and table[100] == np.float32(0.1)
    assert table[1500] == np.float32(1.5) and np.isnan(table[10001])


def test_the_unit_check_takes_the_same_median_from_the_codes():
    # The 1-in-16 subsample of an 8x8 image is 4 pixels; an even count averages the middle two.
    codes = np.full((8, 8), 7, dtype=np.uint16)
    codes[0, 0], codes[0, 4], codes[4, 0], codes[4, 4] = 100, 200, 30000, 40000
    config = cam.DepthConfig(depth_scale=0.004)
    rgb = image_message(np.zeros((8, 8, 3), dtype=np.uint8), 'rgb8')
    message = image_message(codes, '16UC1')
    info = Info(width=8, height=8, k=(8.0, 0, 3.5, 0, 8.0, 3.5, 0, 0, 1))
    _, warnings = cam.make_rgbd_frame_with_warnings(rgb, message, info, config)
    converted = decode_depth(message, config.depth_scale)
    expected = cam.depth_sanity_warnings(converted, '16UC1', config.depth_scale)
    assert expected and expected[0].startswith('median depth 60.4 m')
    assert [w for w in warnings if 'median depth' in w] == expected
