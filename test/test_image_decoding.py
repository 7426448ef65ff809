# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Decoding of raw and compressed image messages."""

from __future__ import annotations

import array
from dataclasses import dataclass
import struct
from typing import Any

import cv2
import numpy as np
import pytest

from spatial_vlm_ros.core import image_decoding as dec
from spatial_vlm_ros.core.types import SpatialVlmError


@dataclass
class RawImage:
    encoding: str
    height: int
    width: int
    step: int
    data: Any
    is_bigendian: int = 0


@dataclass
class Compressed:
    format: str
    data: Any


def raw_message(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False):
    """Serialize ``pixels`` the way a driver would, with ``padding`` bytes after each row."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder('>' if big_endian else '<')
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    padded = np.full((height, rows.shape[1] + padding), 0xA5, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return RawImage(encoding, height, width, padded.shape[1], padded.reshape(-1), int(big_endian))


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack(
        [xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs + ys) % 256 * 0 + 90],
        axis=-1,
    ).astype(np.uint8)


def compressed_depth_message(
    payload_png: bytes, encoding: str, quant_a: float = 0.0, quant_b: float = 0.0, mode: int = 0
):
    header = struct.pack('<iff', mode, quant_a, quant_b)
    return Compressed(f'{encoding}; compressedDepth png', header + payload_png)


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.png', image)
    assert ok
    return encoded.tobytes()


# ----------------------------------------------------------------------------- zero copy


@pytest.mark.parametrize('container', ['numpy', 'bytearray'])
def test_rgb8_640x480_is_a_zero_copy_read_only_view(container):
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    flat = rgb.reshape(-1) if container == 'numpy' else bytearray(rgb.tobytes())
    msg = RawImage('rgb8', 480, 640, 640 * 3, flat)
    decoded = dec.decode_color(msg)
    base = flat if container == 'numpy' else np.frombuffer(flat, dtype=np.uint8)
    assert np.shares_memory(decoded, base)
    assert not decoded.flags.writeable
    np.testing.assert_array_equal(decoded, rgb)
    assert decoded.dtype == np.uint8 and decoded.shape == (480, 640, 3)


@pytest.mark.parametrize('container', ['numpy', 'bytearray'])
def test_16uc1_640x480_view_is_zero_copy(container):
    depth = np.random.default_rng(1).integers(0, 60000, (480, 640), dtype=np.uint16)
    flat = depth.view(np.uint8).reshape(-1)
    if container == 'bytearray':
        flat = bytearray(flat.tobytes())
    msg = RawImage('16UC1', 480, 640, 1280, flat)
    view = dec.image_view(msg)
    base = flat if container == 'numpy' else np.frombuffer(flat, dtype=np.uint8)
    assert np.shares_memory(view, base)
    assert view.dtype == np.uint16
    np.testing.assert_array_equal(view, depth)


def test_padded_rgb8_is_still_a_view_and_skips_the_padding():
    rgb = smooth_rgb(5, 7)
    msg = raw_message(rgb, 'rgb8', padding=3)
    decoded = dec.decode_color(msg)
    assert np.shares_memory(decoded, msg.data)
    np.testing.assert_array_equal(decoded, rgb)


def test_decoding_never_writes_to_the_message_buffer():
    depth = np.array([[0, 1000], [2000, 0]], dtype=np.uint16)
    msg = raw_message(depth, '16UC1')
    before = bytes(msg.data)
    dec.decode_depth(msg)
    dec.decode_color(raw_message(smooth_rgb(4, 4), 'bgr8'))
    assert bytes(msg.data) == before


# ----------------------------------------------------------------------------- color


def test_channel_orders_all_come_out_rgb():
    rgb = smooth_rgb(6, 8)
    alpha = np.full(rgb.shape[:2] + (1,), 7, dtype=np.uint8)
    cases = {
        'rgb8': rgb,
        'bgr8': rgb[:, :, ::-1],
        'rgba8': np.concatenate([rgb, alpha], axis=2),
        'bgra8': np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, stored in cases.items():
        decoded = dec.decode_color(raw_message(np.ascontiguousarray(stored), encoding, padding=2))
        np.testing.assert_array_equal(decoded, rgb, err_msg=encoding)


def test_mono8_is_replicated_and_mono16_keeps_its_high_byte():
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    for encoding in ('mono8', '8UC1'):
        decoded = dec.decode_color(raw_message(gray, encoding, padding=1))
        assert decoded.shape == (4, 6, 3)
        for channel in range(3):
            np.testing.assert_array_equal(decoded[:, :, channel], gray)
    wide = gray.astype(np.uint16) * 256 + 77
    decoded16 = dec.decode_color(raw_message(wide, 'mono16', big_endian=True))
    np.testing.assert_array_equal(decoded16[:, :, 1], gray)


@pytest.mark.parametrize(('encoding', 'luma_offset'), [('yuv422', 1), ('yuv422_yuy2', 0)])
def test_yuv422_byte_orders(encoding, luma_offset):
    # Neutral chroma (128) makes the expected RGB equal to the (video-range) luma mapping, so a
    # wrong byte order (chroma read as luma) shows up as a flat 128-ish image.
    luma = np.linspace(16, 235, 8).astype(np.uint8).reshape(1, 8).repeat(2, axis=0)
    packed = np.full((2, 8, 2), 128, dtype=np.uint8)
    packed[:, :, luma_offset] = luma
    decoded = dec.decode_color(raw_message(packed, encoding)).astype(int)
    assert decoded.shape == (2, 8, 3)
    assert np.all(np.abs(decoded[:, :, 0] - decoded[:, :, 2]) <= 1)
    assert np.all(np.diff(decoded[0, :, 1]) > 0)
    assert decoded[0, 0, 1] < 10 and decoded[0, -1, 1] > 245


def test_yuv422_with_odd_width_is_a_size_error():
    with pytest.raises(dec.ImageSizeError, match='even'):
        dec.decode_color(RawImage('yuv422', 1, 3, 6, bytes(6)))


def test_every_data_container_decodes_the_same():
    rgb = smooth_rgb(3, 5)
    reference = raw_message(rgb, 'rgb8', padding=1)
    raw_bytes = bytes(reference.data)
    containers = [
        raw_bytes,
        bytearray(raw_bytes),
        memoryview(raw_bytes),
        array.array('B', raw_bytes),
        np.frombuffer(raw_bytes, dtype=np.uint8),
        list(raw_bytes),
        np.frombuffer(raw_bytes, dtype=np.int8),
    ]
    for data in containers:
        msg = RawImage('rgb8', 3, 5, reference.step, data)
        np.testing.assert_array_equal(dec.decode_color(msg), rgb, err_msg=type(data).__name__)


def test_rosbags_deserialized_message_decodes():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    image_type = store.types['sensor_msgs/msg/Image']
    header_type = store.types['std_msgs/msg/Header']
    time_type = store.types['builtin_interfaces/msg/Time']
    rgb = smooth_rgb(4, 6)
    original = image_type(
        header=header_type(stamp=time_type(sec=1, nanosec=2), frame_id='cam'),
        height=4,
        width=6,
        encoding='bgr8',
        is_bigendian=0,
        step=18,
        data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1),
    )
    raw = store.serialize_cdr(original, 'sensor_msgs/msg/Image')
    restored = store.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    assert isinstance(restored.data, np.ndarray)
    np.testing.assert_array_equal(dec.decode_color(restored), rgb)


@pytest.mark.ros
def test_rclpy_message_with_array_data_decodes():
    from sensor_msgs.msg import Image

    depth = np.array([[1000, 0, 2500]], dtype=np.uint16)
    msg = Image(encoding='16UC1', height=1, width=3, step=6, is_bigendian=0)
    msg.data = depth.tobytes()
    assert isinstance(msg.data, array.array)
    decoded = dec.decode_depth(msg)
    np.testing.assert_allclose(decoded, [[1.0, np.nan, 2.5]])


# ----------------------------------------------------------------------------- depth


def test_16uc1_is_millimetres_and_zero_is_invalid():
    depth = np.array([[0, 1], [1500, 65535]], dtype=np.uint16)
    decoded = dec.decode_depth(raw_message(depth, '16UC1', padding=2))
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, [[np.nan, 0.001], [1.5, 65.535]], rtol=1e-6)


def test_depth_scale_overrides_the_encoding_default():
    depth = np.array([[100, 0]], dtype=np.uint16)
    decoded = dec.decode_depth(raw_message(depth, 'mono16'), depth_scale=0.0001)
    np.testing.assert_allclose(decoded, [[0.01, np.nan]], rtol=1e-6)
    metres = np.array([[2.0, 0.5]], dtype=np.float32)
    doubled = dec.decode_depth(raw_message(metres, '32FC1'), depth_scale=2.0)
    np.testing.assert_allclose(doubled, [[4.0, 1.0]])


def test_32fc1_is_metres_and_non_positive_or_non_finite_is_invalid():
    depth = np.array([[1.25, 0.0, np.nan], [np.inf, -2.0, 7.5]], dtype=np.float32)
    decoded = dec.decode_depth(raw_message(depth, '32FC1'))
    np.testing.assert_array_equal(np.isnan(decoded), [[False, True, True], [True, True, False]])
    assert decoded[0, 0] == np.float32(1.25) and decoded[1, 2] == np.float32(7.5)


@pytest.mark.parametrize('encoding', ['16UC1', 'mono16', '32FC1'])
def test_big_endian_depth_matches_little_endian(encoding):
    values = np.array([[1, 258, 4097], [65535, 513, 0]], dtype=np.float64)
    dtype = np.float32 if encoding == '32FC1' else np.uint16
    pixels = values.astype(dtype)
    little = dec.decode_depth(raw_message(pixels, encoding, padding=2))
    big = dec.decode_depth(raw_message(pixels, encoding, padding=2, big_endian=True))
    np.testing.assert_array_equal(little, big)
    native = dec.image_view(raw_message(pixels, encoding, big_endian=True))
    assert native.dtype.isnative
    np.testing.assert_array_equal(native, pixels)


def test_decode_depth_rejects_color_and_decode_color_rejects_depth():
    with pytest.raises(dec.UnknownEncodingError, match='not a depth encoding'):
        dec.decode_depth(raw_message(smooth_rgb(2, 2), 'rgb8'))
    for encoding in ('16UC1', '32FC1'):
        pixels = np.ones((2, 2), dtype=np.float32 if encoding == '32FC1' else np.uint16)
        with pytest.raises(dec.UnknownEncodingError, match='decode_depth'):
            dec.decode_color(raw_message(pixels, encoding))


@pytest.mark.parametrize('scale', [0.0, -1.0, float('nan'), float('inf'), 'abc'])
def test_bad_depth_scale_is_a_typed_error(scale):
    with pytest.raises(dec.ImageDecodeError, match='depth_scale'):
        dec.decode_depth(raw_message(np.ones((1, 1), np.uint16), '16UC1'), depth_scale=scale)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ('msg', 'error', 'message'),
    [
        (RawImage('rgb9', 1, 1, 3, bytes(3)), dec.UnknownEncodingError, 'unsupported'),
        (RawImage('', 1, 1, 3, bytes(3)), dec.UnknownEncodingError, 'unsupported'),
        (RawImage('rgb8', 2, 2, 6, bytes(11)), dec.ImageSizeError, 'less than step'),
        (RawImage('rgb8', 2, 2, 5, bytes(12)), dec.ImageSizeError, 'smaller than width'),
        (RawImage('mono16', 2, 2, 3, bytes(12)), dec.ImageSizeError, 'smaller than width'),
        (RawImage('rgb8', 0, 2, 6, b''), dec.ImageSizeError, 'positive'),
        (RawImage('rgb8', 2, -1, 6, bytes(12)), dec.ImageSizeError, 'positive'),
        (RawImage('rgb8', 2.0, 2, 6, bytes(12)), dec.ImageSizeError, 'integer'),
        (RawImage('rgb8', 1, 1, 3, 'abc'), dec.ImageDecodeError, 'not str'),
        (RawImage('rgb8', 1, 1, 3, [1, 2, 300]), dec.ImageDecodeError, 'byte buffer'),
        (RawImage('rgb8', 1, 1, 3, object()), dec.ImageDecodeError, 'byte buffer'),
        (RawImage(None, 1, 1, 3, bytes(3)), dec.UnknownEncodingError, 'string'),
        (
            RawImage('rgb8', 1, 1, 3, np.zeros(3, np.float32)),
            dec.ImageDecodeError,
            'uint8',
        ),
        (object(), dec.ImageDecodeError, 'no field'),
    ],
)
def test_bad_raw_images_raise_typed_errors(msg, error, message):
    with pytest.raises(error, match=message) as caught:
        dec.decode_color(msg)
    assert isinstance(caught.value, SpatialVlmError)


def test_data_longer_than_needed_is_accepted():
    rgb = smooth_rgb(2, 2)
    msg = RawImage('rgb8', 2, 2, 6, rgb.tobytes() + b'extra')
    np.testing.assert_array_equal(dec.decode_color(msg), rgb)


# ----------------------------------------------------------------------------- compressed color


@pytest.mark.parametrize(
    'fmt', ['rgb8; png compressed bgr8', 'bgr8; png compressed bgr8', 'png', 'PNG', '']
)
def test_png_color_round_trips_exactly_in_rgb(fmt):
    rgb = smooth_rgb()
    msg = Compressed(fmt, png_bytes(rgb[:, :, ::-1]))  # cv2 encodes BGR, as the plugin does
    decoded = dec.decode_compressed_color(msg)
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize('fmt', ['rgb8; jpeg compressed bgr8', 'jpeg', 'jpg'])
def test_jpeg_color_decodes_to_rgb(fmt):
    rgb = smooth_rgb()
    ok, jpeg = cv2.imencode('.jpg', rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = dec.decode_compressed_color(Compressed(fmt, array.array('B', jpeg.tobytes())))
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 3.0
    # the channel order is right: red grows with x, green with y
    assert decoded[0, -1, 0] > 200 and decoded[-1, 0, 1] > 200


def test_compressed_gray_alpha_and_16_bit_become_rgb8():
    gray = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    decoded = dec.decode_compressed_color(
        Compressed('mono8; png compressed mono8', png_bytes(gray))
    )
    np.testing.assert_array_equal(decoded, np.repeat(gray[:, :, None], 3, axis=2))
    bgra = np.dstack([smooth_rgb(3, 4)[:, :, ::-1], np.full((3, 4), 9, np.uint8)])
    decoded_alpha = dec.decode_compressed_color(
        Compressed('bgra8; png compressed bgra8', png_bytes(bgra))
    )
    np.testing.assert_array_equal(decoded_alpha, smooth_rgb(3, 4))
    wide = gray.astype(np.uint16) * 256 + 255
    decoded16 = dec.decode_compressed_color(
        Compressed('mono16; png compressed mono16', png_bytes(wide))
    )
    np.testing.assert_array_equal(decoded16[:, :, 0], gray)


@pytest.mark.parametrize(
    ('msg', 'error'),
    [
        (Compressed('jpeg', b''), dec.CorruptImageError),
        (Compressed('jpeg', b'\xff\xd8\xff\xe0 not really a jpeg'), dec.CorruptImageError),
        (Compressed('png', b'\x89PNG\r\n\x1a\n' + bytes(40)), dec.CorruptImageError),
        (Compressed('h264', b'\x00\x00\x00\x01'), dec.UnknownEncodingError),
        (Compressed('16UC1; compressedDepth png', b'x' * 20), dec.UnknownEncodingError),
        (Compressed(7, b'x'), dec.UnknownEncodingError),
    ],
)
def test_bad_compressed_color_raises_typed_errors(msg, error):
    with pytest.raises(error):
        dec.decode_compressed_color(msg)


def test_truncated_png_is_corrupt():
    data = png_bytes(smooth_rgb())
    with pytest.raises(dec.CorruptImageError):
        dec.decode_compressed_color(Compressed('png', data[: len(data) // 2]))


# ----------------------------------------------------------------------------- compressed depth


def test_compressed_depth_16uc1_round_trips_exactly():
    depth_mm = np.random.default_rng(2).integers(0, 10000, (12, 16), dtype=np.uint16)
    depth_mm[0, :3] = 0
    msg = compressed_depth_message(png_bytes(depth_mm), '16UC1')
    decoded = dec.decode_compressed_depth(msg)
    # float64 arithmetic rounded once to float32: the correctly rounded metres
    expected = np.where(depth_mm == 0, np.nan, depth_mm / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(decoded, expected)


def _inverse_depth_quantize(depth_m: np.ndarray, quantization: float = 100.0, max_depth=10.0):
    """What compressed_depth_image_transport's encoder does for 32FC1."""
    quant_a = quantization * (quantization + 1.0)
    quant_b = 1.0 - quant_a / max_depth
    inverse = np.where(np.isfinite(depth_m), quant_a / depth_m + quant_b, 0.0)
    return np.clip(np.round(inverse), 0, 65535).astype(np.uint16), quant_a, quant_b


def test_compressed_depth_32fc1_inverse_quantization_round_trips():
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.3, 9.5, (20, 30)).astype(np.float32)
    depth[2, 3] = np.nan  # encoded as v = 0
    quantized, quant_a, quant_b = _inverse_depth_quantize(depth)
    msg = compressed_depth_message(png_bytes(quantized), '32FC1', quant_a, quant_b)
    msg.format = '32FC1; compressedDepth'  # ROS 1 style, no codec word
    decoded = dec.decode_compressed_depth(msg)
    assert decoded.dtype == np.float32 and decoded.shape == depth.shape
    assert np.isnan(decoded[2, 3])
    valid = np.isfinite(depth)
    # quantization step in depth grows as depth^2 / quant_a; rounding costs half a step
    tolerance = depth[valid] ** 2 / quant_a * 0.51 + 1e-6
    assert np.all(np.abs(decoded[valid] - depth[valid]) <= tolerance)


def test_compressed_depth_rvl_and_unknown_encodings_are_rejected():
    payload = png_bytes(np.ones((2, 2), np.uint16))
    with pytest.raises(dec.UnknownEncodingError, match='RVL'):
        dec.decode_compressed_depth(Compressed('16UC1; compressedDepth rvl', b'x' * 20))
    with pytest.raises(dec.UnknownEncodingError, match='RVL'):
        dec.decode_compressed_depth(compressed_depth_message(payload, '16UC1', mode=1))
    with pytest.raises(dec.UnknownEncodingError):
        dec.decode_compressed_depth(compressed_depth_message(payload, 'rgb8'))
    with pytest.raises(dec.UnknownEncodingError):
        dec.decode_compressed_depth(Compressed('rgb8; jpeg compressed bgr8', payload))


def test_compressed_depth_payload_must_be_16_bit_single_channel():
    eight_bit = png_bytes(np.ones((2, 2), np.uint8))
    with pytest.raises(dec.CorruptImageError, match='16-bit'):
        dec.decode_compressed_depth(compressed_depth_message(eight_bit, '16UC1'))
    with pytest.raises(dec.CorruptImageError):
        dec.decode_compressed_depth(Compressed('16UC1; compressedDepth png', b'\0' * 12))


def test_headerless_16_bit_png_depth_is_accepted_for_integer_depth_only():
    depth_mm = np.array([[1000, 0]], dtype=np.uint16)
    decoded = dec.decode_compressed_depth(
        Compressed('16UC1; compressedDepth', png_bytes(depth_mm))
    )
    np.testing.assert_allclose(decoded, [[1.0, np.nan]])
    plain = dec.decode_compressed_depth(
        Compressed('16UC1; png compressed mono16', png_bytes(depth_mm))
    )
    np.testing.assert_allclose(plain, [[1.0, np.nan]])
    with pytest.raises(dec.CorruptImageError):  # 32FC1 needs the quantization header
        dec.decode_compressed_depth(Compressed('32FC1; compressedDepth', png_bytes(depth_mm)))


def test_any_dispatches_on_message_kind():
    rgb = smooth_rgb(4, 4)
    np.testing.assert_array_equal(dec.decode_color_any(raw_message(rgb, 'rgb8')), rgb)
    np.testing.assert_array_equal(
        dec.decode_color_any(Compressed('png', png_bytes(rgb[:, :, ::-1]))), rgb
    )
    depth_mm = np.array([[1500]], dtype=np.uint16)
    assert dec.decode_depth_any(raw_message(depth_mm, '16UC1'))[0, 0] == np.float32(1.5)
    compressed = compressed_depth_message(png_bytes(depth_mm), '16UC1')
    assert dec.decode_depth_any(compressed)[0, 0] == np.float32(1.5)
    assert dec.depth_encoding_of(compressed) == '16UC1'
    assert dec.depth_encoding_of(raw_message(depth_mm, 'mono16')) == 'mono16'


def test_every_millimetre_value_converts_to_the_nearest_float32_metre():
    every_value = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    decoded = dec.decode_depth(raw_message(every_value, '16UC1'))
    expected = (every_value / 1000.0).astype(np.float32)
    expected[0, 0] = np.nan
    np.testing.assert_array_equal(decoded, expected)
