# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Decode ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` payloads into numpy arrays.

Messages are duck-typed: anything with the right attributes works (rclpy messages, messages
deserialized by rosbags, simple dataclasses in tests).

* ``Image``: ``encoding``, ``height``, ``width``, ``step``, ``data``, ``is_bigendian``.
* ``CompressedImage``: ``format``, ``data``.

``data`` may be ``bytes``, ``bytearray``, ``memoryview``, ``array.array('B')`` (what rclpy gives),
a uint8 numpy array (what rosbags gives) or a sequence of ints.

Raw images are wrapped without copying (``np.ndarray`` over the message buffer with the row
stride set to ``step``); a copy is made only where a channel swap, a byte swap or a unit
conversion needs one. Arrays that share memory with the message are returned read-only, so a
caller cannot corrupt the message by accident; ``np.array(image)`` gives a private copy.

Every failure raises a subclass of :class:`ImageDecodeError`; no other exception type escapes.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from dataclasses import dataclass
import functools
import math
import operator
import struct
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import SpatialVlmError

Uint8Image = npt.NDArray[np.uint8]
DepthImage = npt.NDArray[np.float32]

# Depth units by encoding: integer depth is millimetres (REP 118), float depth is metres.
MILLIMETRES_TO_METRES = 0.001
METRES = 1.0


class ImageDecodeError(SpatialVlmError):
    """An image message could not be decoded."""


class UnknownEncodingError(ImageDecodeError):
    """The encoding (or compressed format) is unknown, or not valid for what was asked."""


class ImageSizeError(ImageDecodeError):
    """Dimensions, ``step`` and the data length do not fit together."""


class CorruptImageError(ImageDecodeError):
    """Compressed data that the codec could not decode, or that decoded to the wrong shape."""


@dataclass(frozen=True)
class EncodingInfo:
    """How one raw ``sensor_msgs/Image`` encoding lays out its pixels."""

    name: str
    dtype: str  # numpy base type, byte order applied from ``is_bigendian``
    channels: int
    kind: str  # 'color', 'mono' or 'depth'
    default_depth_scale: float | None = None  # metres per unit when used as depth

    @property
    def bytes_per_pixel(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


ENCODINGS: dict[str, EncodingInfo] = {
    info.name: info
    for info in (
        EncodingInfo('rgb8', 'u1', 3, 'color'),
        EncodingInfo('bgr8', 'u1', 3, 'color'),
        EncodingInfo('rgba8', 'u1', 4, 'color'),
        EncodingInfo('bgra8', 'u1', 4, 'color'),
        EncodingInfo('mono8', 'u1', 1, 'mono'),
        EncodingInfo('8UC1', 'u1', 1, 'mono'),
        # Packed 4:2:2; ROS 'yuv422' is UYVY byte order, 'yuv422_yuy2' is YUYV (usb_cam).
        EncodingInfo('yuv422', 'u1', 2, 'color'),
        EncodingInfo('uyvy', 'u1', 2, 'color'),
        EncodingInfo('yuv422_yuy2', 'u1', 2, 'color'),
        EncodingInfo('yuyv', 'u1', 2, 'color'),
        EncodingInfo('mono16', 'u2', 1, 'depth', MILLIMETRES_TO_METRES),
        EncodingInfo('16UC1', 'u2', 1, 'depth', MILLIMETRES_TO_METRES),
        EncodingInfo('32FC1', 'f4', 1, 'depth', METRES),
    )
}

_YUV_TO_RGB = {
    'yuv422': cv2.COLOR_YUV2RGB_UYVY,
    'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUYV,
    'yuyv': cv2.COLOR_YUV2RGB_YUYV,
}

# Codecs cv2.imdecode recognises by content; a CompressedImage ``format`` naming any other
# codec (h264, theora, ...) belongs to a transport we cannot decode.
_IMDECODE_CODECS = ('jpeg', 'jpg', 'png', 'tiff', 'tif', 'webp', 'bmp')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# compressed_depth_image_transport prefixes the PNG with a ConfigHeader:
# int32 compression format (0 = inverse-depth PNG, 1 = RVL), float32 depthQuantA, depthQuantB.
_COMPRESSED_DEPTH_HEADER = struct.Struct('<iff')
_COMPRESSED_DEPTH_RVL = 1


# ----------------------------------------------------------------------------- field access


def _field(msg: Any, name: str) -> Any:
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ImageDecodeError(
            f'message of type {type(msg).__name__} has no field {name!r}; '
            'expected a sensor_msgs/Image or CompressedImage'
        ) from None


def _int_field(msg: Any, name: str, allow_bool: bool = False) -> int:
    value = _field(msg, name)
    if isinstance(value, bool) and not allow_bool:
        raise ImageSizeError(f'image field {name!r} must be an integer, got a bool')
    try:
        return operator.index(value)
    except TypeError:
        raise ImageSizeError(
            f'image field {name!r} must be an integer, got {type(value).__name__}'
        ) from None


def _text_field(msg: Any, name: str) -> str:
    value = _field(msg, name)
    if isinstance(value, bytes):
        try:
            value = value.decode('ascii')
        except UnicodeDecodeError:
            raise UnknownEncodingError(f'image field {name!r} is not ASCII text') from None
    if not isinstance(value, str):
        raise UnknownEncodingError(
            f'image field {name!r} must be a string, got {type(value).__name__}'
        )
    return value


def _byte_buffer(data: Any) -> npt.NDArray[np.uint8]:
    """View ``data`` as a flat uint8 array, without copying whenever its memory allows."""
    try:
        if isinstance(data, np.ndarray):
            if data.dtype.itemsize != 1 and data.dtype != np.uint8:
                raise ImageDecodeError(
                    f'image data array must hold bytes (uint8), got dtype {data.dtype}'
                )
            # reshape(-1) is a view for contiguous arrays and a copy otherwise.
            return data.reshape(-1).view(np.uint8)
        if isinstance(data, (bytes, bytearray, memoryview, array.array)):
            view = memoryview(data)
            if view.itemsize != 1 or view.format not in ('B', 'b', 'c'):
                view = view.cast('B')
            return np.frombuffer(view, dtype=np.uint8)
        if isinstance(data, str):
            raise ImageDecodeError('image data must be bytes, not str')
        if isinstance(data, Sequence):
            # Some message libraries give lists of ints; this copies, as it must.
            return np.array(data, dtype=np.uint8).reshape(-1)
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (TypeError, ValueError, OverflowError, BufferError) as error:
        raise ImageDecodeError(
            f'image data of type {type(data).__name__} is not a byte buffer: {error}'
        ) from None


def _cvt_color(image: np.ndarray, code: int) -> Uint8Image:
    """Convert 8-bit pixels to RGB with OpenCV (its stubs type every result as ``MatLike``)."""
    return cast(Uint8Image, cv2.cvtColor(image, code))


def _read_only(image: np.ndarray) -> np.ndarray:
    image.flags.writeable = False
    return image


# ----------------------------------------------------------------------------- raw images


def encoding_info(encoding: str) -> EncodingInfo:
    """Layout of a raw encoding; raises :class:`UnknownEncodingError` for unsupported ones."""
    try:
        return ENCODINGS[encoding]
    except (KeyError, TypeError):
        supported = ', '.join(ENCODINGS)
        raise UnknownEncodingError(
            f'unsupported image encoding {encoding!r}; supported: {supported}'
        ) from None


def _stored_pixels(msg: Any) -> tuple[np.ndarray, EncodingInfo]:
    """Return a view of the pixels in the message's own byte order, after every size check."""
    encoding = _text_field(msg, 'encoding')
    info = encoding_info(encoding)
    height = _int_field(msg, 'height')
    width = _int_field(msg, 'width')
    step = _int_field(msg, 'step')
    big_endian = bool(_int_field(msg, 'is_bigendian', allow_bool=True))
    if height <= 0 or width <= 0:
        raise ImageSizeError(f'image dimensions must be positive, got {width}x{height}')
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageSizeError(
            f'step {step} is smaller than width {width} x {info.bytes_per_pixel} bytes per '
            f'pixel = {row_bytes} for {encoding}'
        )
    if info.name in _YUV_TO_RGB and width % 2:
        raise ImageSizeError(f'{encoding} packs pixel pairs; width {width} must be even')
    buffer = _byte_buffer(_field(msg, 'data'))
    if buffer.size < step * height:
        raise ImageSizeError(
            f'image data has {buffer.size} bytes, less than step {step} x height {height} '
            f'= {step * height}'
        )
    item_size = np.dtype(info.dtype).itemsize
    dtype = np.dtype(info.dtype).newbyteorder('>' if big_endian else '<')
    pixels = np.ndarray(
        shape=(height, width, info.channels),
        dtype=dtype,
        buffer=buffer,
        offset=0,
        strides=(step, info.bytes_per_pixel, item_size),
    )
    if info.channels == 1:
        pixels = pixels[:, :, 0]
    return _read_only(pixels), info


def image_view(msg: Any) -> np.ndarray:
    """
    Return the pixels of a raw image as (H, W) or (H, W, C) in the encoding's native dtype.

    Zero-copy (a read-only view of ``msg.data`` that honours ``step`` padding) unless the
    16/32-bit data is in the other byte order than this host's, which needs one swapping copy.
    """
    pixels, _ = _stored_pixels(msg)
    if not pixels.dtype.isnative:
        return pixels.astype(pixels.dtype.newbyteorder('='))
    return pixels


def decode_color(msg: Any) -> Uint8Image:
    """
    RGB uint8 (H, W, 3) from a raw color or mono image.

    ``rgb8`` is returned as a zero-copy read-only view (strided when rows are padded or the
    source is ``rgba8``); ``bgr8``/``bgra8``, mono and YUV need one conversion copy. ``mono16``
    is reduced to its high byte. Depth encodings raise :class:`UnknownEncodingError`.
    """
    encoding = _text_field(msg, 'encoding')
    info = encoding_info(encoding)
    if info.name in ('16UC1', '32FC1'):
        raise UnknownEncodingError(
            f'{encoding} is a depth encoding, not a color image; use decode_depth'
        )
    pixels = image_view(msg)
    if info.name == 'rgb8':
        return pixels
    if info.name == 'rgba8':
        return _read_only(pixels[:, :, :3])
    if info.name == 'bgr8':
        return _cvt_color(pixels, cv2.COLOR_BGR2RGB)
    if info.name == 'bgra8':
        return _cvt_color(pixels, cv2.COLOR_BGRA2RGB)
    if info.name in _YUV_TO_RGB:
        return _cvt_color(pixels, _YUV_TO_RGB[info.name])
    if info.name == 'mono16':
        pixels = (pixels >> 8).astype(np.uint8)
    return _cvt_color(np.ascontiguousarray(pixels), cv2.COLOR_GRAY2RGB)


def _checked_depth_scale(depth_scale: float | None, default: float) -> float:
    if depth_scale is None:
        return default
    try:
        scale = float(depth_scale)
    except (TypeError, ValueError):
        raise ImageDecodeError(f'depth_scale must be a number, got {depth_scale!r}') from None
    if not np.isfinite(scale) or scale <= 0.0:
        raise ImageDecodeError(f'depth_scale must be finite and positive, got {depth_scale!r}')
    return scale


def _integer_depth_to_metres(raw: np.ndarray, scale: float) -> DepthImage:
    depth = raw.astype(np.float32)
    units_per_metre = 1.0 / scale
    if abs(units_per_metre - round(units_per_metre)) < 1e-9 * units_per_metre:
        # Dividing by an exact 1000 rounds correctly (1500 mm -> 1.5 m exactly), while
        # multiplying by float32(0.001) is off by one ulp.
        depth /= np.float32(round(units_per_metre))
    else:
        depth *= np.float32(scale)
    depth[raw == 0] = np.nan
    return depth


def _scale_float_depth_in_place(depth: DepthImage, scale: float) -> DepthImage:
    if scale != 1.0:
        with np.errstate(over='ignore', invalid='ignore'):
            depth *= np.float32(scale)
    # NaN fails every comparison, so '> 0' also rejects NaN.
    depth[~(depth > 0.0) | np.isinf(depth)] = np.nan
    return depth


def decode_depth(msg: Any, depth_scale: float | None = None) -> DepthImage:
    """
    Depth in metres, float32 (H, W), NaN where invalid (0, NaN, inf, negative).

    ``16UC1``/``mono16`` are millimetres by default (scale 0.001 m per unit); ``32FC1`` is
    metres (scale 1). ``depth_scale`` (metres per unit) overrides the default. Always a new
    array, since the unit conversion writes every pixel.
    """
    encoding = _text_field(msg, 'encoding')
    info = encoding_info(encoding)
    if info.kind != 'depth' or info.default_depth_scale is None:
        raise UnknownEncodingError(
            f'{encoding} is not a depth encoding; expected 16UC1, mono16 or 32FC1'
        )
    scale = _checked_depth_scale(depth_scale, info.default_depth_scale)
    # astype from the stored byte order swaps and converts in one pass.
    stored, _ = _stored_pixels(msg)
    if info.dtype == 'f4':
        return _scale_float_depth_in_place(stored.astype(np.float32), scale)
    return _integer_depth_to_metres(stored, scale)


@functools.lru_cache(maxsize=16)
def depth_lookup_table(
    scale: float, min_depth_m: float = 0.0, max_depth_m: float = math.inf
) -> DepthImage:
    """
    Metres (float32) of every 16-bit depth code, NaN for 0 and outside ``[min, max]``.

    Built by converting all 65536 codes exactly as :func:`decode_depth` converts pixels, so a
    lookup (one read and one write per pixel) gives the same image as converting, masking holes
    and applying the range limits pass after pass. Read-only and cached per setting.
    """
    table = _integer_depth_to_metres(np.arange(65536, dtype=np.uint16), scale)
    with np.errstate(invalid='ignore'):
        table[(table < min_depth_m) | (table > max_depth_m)] = np.nan
    return _read_only(table)


def integer_depth_codes(
    msg: Any, depth_scale: float | None = None
) -> tuple[npt.NDArray[np.uint16], float] | None:
    """
    Return the 16-bit codes of a raw integer depth image and the metres per code.

    For ``16UC1``/``mono16`` (the codes: a zero-copy view in this host's byte order); None for
    any other message.

    Raises what :func:`decode_depth` raises for a malformed integer depth image.
    """
    if is_compressed(msg):
        return None
    info = encoding_info(_text_field(msg, 'encoding'))
    if info.kind != 'depth' or info.dtype != 'u2' or info.default_depth_scale is None:
        return None
    scale = _checked_depth_scale(depth_scale, info.default_depth_scale)
    return image_view(msg), scale


# ----------------------------------------------------------------------------- compressed


def _compressed_format(msg: Any) -> tuple[str, str]:
    """
    Split ``format`` into (original encoding or '', lower-case transport description).

    image_transport writes ``"<encoding>; <codec> compressed <encoding>"`` (compressed) or
    ``"<encoding>; compressedDepth [png|rvl]"``; older publishers write just ``"jpeg"``.
    """
    text = _text_field(msg, 'format').strip()
    if ';' in text:
        encoding, _, transport = text.partition(';')
        return encoding.strip(), transport.strip().lower()
    return '', text.lower()


def _imdecode(payload: npt.NDArray[np.uint8]) -> np.ndarray:
    if payload.size == 0:
        raise CorruptImageError('compressed image data is empty')
    try:
        image = cv2.imdecode(payload, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise CorruptImageError(f'compressed image could not be decoded: {error}') from None
    if image is None or image.size == 0:
        raise CorruptImageError(
            'compressed image could not be decoded (not a valid JPEG/PNG, or truncated)'
        )
    return image


def _check_codec(transport: str) -> None:
    if not transport:
        return  # no format given: the codec is recognised from the data itself
    words = transport.replace(',', ' ').split()
    if not any(word in _IMDECODE_CODECS for word in words):
        raise UnknownEncodingError(
            f'unsupported CompressedImage format {transport!r}; expected jpeg or png'
        )


def decode_compressed_color(msg: Any) -> Uint8Image:
    """
    RGB uint8 (H, W, 3), C-contiguous, from a JPEG/PNG ``CompressedImage``.

    cv2 always decodes to BGR(A) or gray whatever the original encoding was, so the result is
    converted to RGB; 16-bit PNGs are reduced to their high byte.
    """
    _, transport = _compressed_format(msg)
    if 'compresseddepth' in transport:
        raise UnknownEncodingError('this is a compressedDepth image; use decode_compressed_depth')
    _check_codec(transport)
    image = _imdecode(_byte_buffer(_field(msg, 'data')))
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise CorruptImageError(f'compressed color image decoded to {image.dtype}, not 8 bit')
    if image.ndim == 2:
        return _cvt_color(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 3:
        return _cvt_color(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return _cvt_color(image, cv2.COLOR_BGRA2RGB)
    if channels in (1, 2):  # gray, or gray + alpha
        return _cvt_color(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2RGB)
    raise CorruptImageError(f'compressed color image decoded to {channels} channels')


def _single_channel_uint16(image: np.ndarray, what: str) -> npt.NDArray[np.uint16]:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2 or image.dtype != np.uint16:
        raise CorruptImageError(
            f'{what} must be a 16-bit single-channel PNG; decoded {image.dtype} with shape '
            f'{image.shape}'
        )
    return image


def decode_compressed_depth(msg: Any, depth_scale: float | None = None) -> DepthImage:
    """
    Depth in metres, float32 (H, W), NaN invalid, from a depth ``CompressedImage``.

    Handles compressed_depth_image_transport (``"16UC1; compressedDepth png"``,
    ``"32FC1; compressedDepth"``): a 12-byte ConfigHeader, then a 16-bit PNG. For 16UC1 the PNG
    holds the millimetre values; for 32FC1 it holds quantized inverse depth, decoded as
    ``depthQuantA / (v - depthQuantB)`` with v = 0 invalid. Also accepts a plain 16-bit PNG
    from the ``compressed`` transport (``"16UC1; png compressed mono16"``). RVL is not
    supported. ``depth_scale`` (metres per unit) overrides the default of the encoding.
    """
    encoding, transport = _compressed_format(msg)
    buffer = _byte_buffer(_field(msg, 'data'))
    if 'compresseddepth' not in transport:
        _check_codec(transport)
        if encoding and encoding not in ('16UC1', 'mono16'):
            raise UnknownEncodingError(
                f'compressed depth with original encoding {encoding!r} is not supported; '
                'expected 16UC1/mono16 (compressed) or the compressedDepth transport'
            )
        raw = _single_channel_uint16(_imdecode(buffer), 'compressed depth')
        scale = _checked_depth_scale(depth_scale, MILLIMETRES_TO_METRES)
        return _integer_depth_to_metres(raw, scale)
    if 'rvl' in transport.split():
        raise UnknownEncodingError(
            "compressedDepth RVL is not supported; set the publisher's format to png"
        )
    if encoding not in ('16UC1', 'mono16', '32FC1'):
        raise UnknownEncodingError(
            f'compressedDepth with encoding {encoding!r}: expected 16UC1 or 32FC1'
        )
    scale = _checked_depth_scale(
        depth_scale, METRES if encoding == '32FC1' else MILLIMETRES_TO_METRES
    )
    # Headerless PNG (some non-ROS writers) is accepted for integer depth only, since the
    # 32FC1 quantization parameters live in the header.
    if buffer[:8].tobytes() == _PNG_SIGNATURE and encoding != '32FC1':
        raw = _single_channel_uint16(_imdecode(buffer), 'compressedDepth payload')
        return _integer_depth_to_metres(raw, scale)
    if buffer.size <= _COMPRESSED_DEPTH_HEADER.size:
        raise CorruptImageError(
            f'compressedDepth data has {buffer.size} bytes; the 12-byte header and a PNG '
            'must follow'
        )
    compression, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack_from(
        buffer[: _COMPRESSED_DEPTH_HEADER.size].tobytes()
    )
    if compression == _COMPRESSED_DEPTH_RVL:
        raise UnknownEncodingError('compressedDepth RVL is not supported (header says RVL)')
    raw = _single_channel_uint16(
        _imdecode(buffer[_COMPRESSED_DEPTH_HEADER.size :]), 'compressedDepth payload'
    )
    if encoding != '32FC1':
        return _integer_depth_to_metres(raw, scale)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        depth = np.float32(quant_a) / (raw.astype(np.float32) - np.float32(quant_b))
    depth[raw == 0] = np.nan
    return _scale_float_depth_in_place(depth, scale)


# ----------------------------------------------------------------------------- dispatch


def is_compressed(msg: Any) -> bool:
    """
    Return True for a CompressedImage, False for a raw Image.

    A CompressedImage has ``format``, a raw Image has ``encoding``.
    """
    return hasattr(msg, 'format') and not hasattr(msg, 'encoding')


def decode_color_any(msg: Any) -> Uint8Image:
    """:func:`decode_compressed_color` or :func:`decode_color`, whichever fits ``msg``."""
    return decode_compressed_color(msg) if is_compressed(msg) else decode_color(msg)


def decode_depth_any(msg: Any, depth_scale: float | None = None) -> DepthImage:
    """:func:`decode_compressed_depth` or :func:`decode_depth`, whichever fits ``msg``."""
    if is_compressed(msg):
        return decode_compressed_depth(msg, depth_scale)
    return decode_depth(msg, depth_scale)


def depth_encoding_of(msg: Any) -> str:
    """
    Return the depth encoding of a raw or compressed depth message.

    '' when it cannot be told.
    """
    try:
        if is_compressed(msg):
            return _compressed_format(msg)[0]
        return _text_field(msg, 'encoding')
    except ImageDecodeError:
        return ''
