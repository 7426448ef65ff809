# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Property tests of image decoding: valid input never raises, invalid input raises only
ImageDecodeError, and decoding does not depend on row padding, byte order or the container.

Examples per test: $SPATIAL_VLM_FUZZ_EXAMPLES (CI sets 10000), default 300.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
import os
import struct
from typing import Any

import cv2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np

from spatial_vlm_ros.core import image_decoding as dec

FUZZ_EXAMPLES = int(os.environ.get('SPATIAL_VLM_FUZZ_EXAMPLES', '300'))
settings.register_profile(
    'spatial_vlm_decoding_fuzz',
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
fuzz = settings.get_profile('spatial_vlm_decoding_fuzz')

MAX_SIDE = 16
COLOR_ENCODINGS = [name for name, info in dec.ENCODINGS.items() if name not in ('16UC1', '32FC1')]
DEPTH_ENCODINGS = ['16UC1', 'mono16', '32FC1']
YUV_ENCODINGS = ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv')  # pixel pairs: even widths


@dataclass
class RawImage:
    encoding: Any
    height: Any
    width: Any
    step: Any
    data: Any
    is_bigendian: Any = 0


@dataclass
class Compressed:
    format: Any
    data: Any


def as_container(flat: np.ndarray, kind: str) -> Any:
    raw = flat.tobytes()
    return {
        'bytes': raw,
        'bytearray': bytearray(raw),
        'memoryview': memoryview(raw),
        'array': array.array('B', raw),
        'numpy': np.frombuffer(raw, dtype=np.uint8).copy(),
    }[kind]


@st.composite
def valid_raw_images(draw, encodings=tuple(dec.ENCODINGS)):
    encoding = draw(st.sampled_from(encodings))
    info = dec.ENCODINGS[encoding]
    height = draw(st.integers(1, MAX_SIDE))
    width = draw(st.integers(1, MAX_SIDE // 2)) * (2 if encoding in YUV_ENCODINGS else 1)
    padding = draw(st.integers(0, 7))
    big_endian = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    row_bytes = width * info.bytes_per_pixel
    flat = rng.integers(0, 256, height * (row_bytes + padding), dtype=np.uint8)
    container = draw(st.sampled_from(['bytes', 'bytearray', 'memoryview', 'array', 'numpy']))
    return RawImage(
        encoding, height, width, row_bytes + padding, as_container(flat, container), big_endian
    )


def unpadded_copy(msg: RawImage) -> RawImage:
    info = dec.ENCODINGS[msg.encoding]
    row_bytes = msg.width * info.bytes_per_pixel
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    return RawImage(
        msg.encoding,
        msg.height,
        msg.width,
        row_bytes,
        rows[:, :row_bytes].tobytes(),
        msg.is_bigendian,
    )


def with_byte_order(msg: RawImage, big_endian: bool) -> RawImage:
    """The same pixels stored in the other byte order (16/32-bit encodings)."""
    info = dec.ENCODINGS[msg.encoding]
    item_size = np.dtype(info.dtype).itemsize
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step).copy()
    if bool(msg.is_bigendian) != big_endian and item_size > 1:
        row_bytes = msg.width * info.bytes_per_pixel
        pixels = rows[:, :row_bytes].reshape(msg.height, -1, item_size)
        rows[:, :row_bytes] = pixels[:, :, ::-1].reshape(msg.height, row_bytes)
    return RawImage(msg.encoding, msg.height, msg.width, msg.step, rows.tobytes(), big_endian)


@fuzz
@given(valid_raw_images(), st.integers(0, 2**16))
def test_valid_raw_images_decode_the_same_whatever_the_layout(msg, cut):
    """Never raises; same pixels with or without row padding and in either byte order; data
    shorter than step * height is an ImageSizeError."""
    unpadded = unpadded_copy(msg)
    swapped = with_byte_order(msg, not msg.is_bigendian)
    view = dec.image_view(msg)
    assert view.shape[:2] == (msg.height, msg.width) and view.dtype.isnative
    np.testing.assert_array_equal(view, dec.image_view(unpadded))
    np.testing.assert_array_equal(view, dec.image_view(swapped))
    if msg.encoding in DEPTH_ENCODINGS:
        depth = dec.decode_depth(msg)
        assert depth.shape == (msg.height, msg.width) and depth.dtype == np.float32
        assert not np.any(depth <= 0) and not np.any(np.isinf(depth))
        np.testing.assert_array_equal(depth, dec.decode_depth(unpadded))
        np.testing.assert_array_equal(depth, dec.decode_depth(swapped))
    if msg.encoding not in ('16UC1', '32FC1'):
        rgb = dec.decode_color(msg)
        assert rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb, dec.decode_color(unpadded))
        np.testing.assert_array_equal(rgb, dec.decode_color(swapped))
    needed = msg.step * msg.height
    msg.data = bytes(msg.data)[: cut % needed]
    try:
        dec.image_view(msg)
    except dec.ImageSizeError:
        return
    raise AssertionError(f'{cut % needed} < {needed} bytes decoded without an error')


field_values = st.one_of(
    st.integers(-3, 3 * MAX_SIDE),
    st.sampled_from([2**31, 2**40, -(2**40)]),
    st.floats(allow_nan=True),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)
encodings = st.one_of(
    st.sampled_from(list(dec.ENCODINGS)),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.none(),
    st.integers(),
)
payloads = st.one_of(
    st.binary(max_size=4 * MAX_SIDE * MAX_SIDE),
    st.lists(st.integers(-5, 300), max_size=64),
    st.text(max_size=16),
    st.none(),
    st.integers(),
    st.builds(lambda raw: array.array('H', raw), st.lists(st.integers(0, 65535), max_size=32)),
    st.builds(
        lambda raw, dtype: np.frombuffer(raw[: len(raw) // 8 * 8], dtype=dtype),
        st.binary(max_size=64),
        st.sampled_from(['u1', 'i1', 'u2', 'f4', 'f8']),
    ),
)


def png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.png', image)
    assert ok
    return encoded.tobytes()


def jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.jpg', image)
    assert ok
    return encoded.tobytes()


compressed_formats = st.sampled_from(
    [
        'jpeg',
        'png',
        '',
        'rgb8; jpeg compressed bgr8',
        'bgr8; png compressed bgr8',
        '16UC1; compressedDepth png',
        '32FC1; compressedDepth',
        '16UC1; compressedDepth rvl',
        '16UC1; png compressed mono16',
        'theora',
    ]
)


@st.composite
def mangled_compressed_payloads(draw):
    """A real PNG/JPEG (color, gray, 16-bit or with a compressedDepth header), then damaged."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    height, width = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    kind = draw(st.sampled_from(['color_png', 'gray_png', 'depth_png', 'jpeg', 'header_png']))
    if kind == 'jpeg':
        payload = jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    elif kind == 'color_png':
        payload = png(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    elif kind == 'gray_png':
        payload = png(rng.integers(0, 256, (height, width), dtype=np.uint8))
    else:
        payload = png(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        if kind == 'header_png':
            quant = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
            payload = struct.pack('<iff', draw(st.integers(-2, 2)), quant, quant) + payload
    raw = bytearray(payload)
    for _ in range(draw(st.integers(0, 4))):
        if not raw:
            break
        position = draw(st.integers(0, len(raw) - 1))
        raw[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    if draw(st.booleans()):
        raw = raw[:cut]
    return bytes(raw)


raw_garbage = st.builds(
    RawImage, encodings, field_values, field_values, field_values, payloads, field_values
)
compressed_garbage = st.builds(
    Compressed,
    st.one_of(compressed_formats, st.text(max_size=12), st.none(), st.integers()),
    st.one_of(mangled_compressed_payloads(), payloads),
)


@fuzz
@given(st.one_of(raw_garbage, compressed_garbage))
def test_garbage_raises_only_typed_errors(msg):
    """Arbitrary field values and damaged compressed data: decoded or ImageDecodeError."""
    decoders = (
        dec.decode_color_any,
        dec.decode_depth_any,
        dec.image_view,
        dec.decode_compressed_color,
        dec.decode_compressed_depth,
    )
    for decode in decoders:
        try:
            result = decode(msg)
        except dec.ImageDecodeError:
            continue
        assert result.ndim in (2, 3) and min(result.shape[:2]) >= 1


@fuzz
@given(
    st.integers(1, MAX_SIDE),
    st.integers(1, MAX_SIDE),
    st.integers(0, 2**32 - 1),
    st.sampled_from(
        [
            '16UC1; compressedDepth png',
            '16UC1; compressedDepth',
            'mono16; compressedDepth png',
            '32FC1; compressedDepth png',
            '32FC1; compressedDepth',
        ]
    ),
)
def test_compressed_depth_round_trips(height, width, seed, fmt):
    rng = np.random.default_rng(seed)
    if fmt.startswith('32FC1'):
        check_inverse_depth_round_trip(rng, height, width, fmt)
        return
    depth_mm = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    header = struct.pack('<iff', 0, 0.0, 0.0)
    decoded = dec.decode_compressed_depth(Compressed(fmt, header + png(depth_mm)))
    expected = np.where(depth_mm == 0, np.nan, depth_mm / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(decoded, expected)


def check_inverse_depth_round_trip(rng, height, width, fmt):
    quantization = rng.uniform(20.0, 500.0)
    max_depth = rng.uniform(2.0, 30.0)
    depth = rng.uniform(0.2, max_depth, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.1] = np.nan
    # compressed_depth_image_transport's encoder, in float32 like the C++ code
    quant_a = np.float32(quantization * (quantization + 1.0))
    quant_b = np.float32(1.0 - quant_a / max_depth)
    inverse = np.where(np.isfinite(depth), quant_a / depth + quant_b, 0.0)
    quantized = np.clip(np.round(inverse), 0, 65535).astype(np.uint16)
    representable = np.isfinite(depth) & (inverse < 65535.5) & (quantized > 0)
    depth[~representable] = np.nan
    quantized[~representable] = 0
    msg = Compressed(fmt, struct.pack('<iff', 0, float(quant_a), float(quant_b)) + png(quantized))
    decoded = dec.decode_compressed_depth(msg)
    np.testing.assert_array_equal(np.isnan(decoded), ~representable)
    # rounding the inverse depth by up to half a unit moves the depth by at most
    # A / (A / d - 1/2) - d; plus float32 rounding
    true_depth = depth[representable].astype(np.float64)
    tolerance = quant_a / (quant_a / true_depth - 0.5) - true_depth + 1e-5 * true_depth
    assert np.all(np.abs(decoded[representable] - true_depth) <= tolerance)
