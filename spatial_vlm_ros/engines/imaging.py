# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Client-side image preparation: resize to the profile's pixel budget, then JPEG/base64.

Why client-side: the Qwen-VL processors of SGLang and vLLM resize on the CPU, on one worker, on the
request path; that is the engines' known throughput bottleneck. Resizing here (to dimensions that
are multiples of 32 inside ``[min_pixels, max_pixels]``, the same rule as Qwen's ``smart_resize``)
makes the server-side resize a no-op and shrinks the bytes sent.

OpenCV is used for both steps: measured on this repo's 2-core dev machine, a 640x480 JPEG encode
(q=90) took 1.28 ms with cv2 vs 1.34 ms with PIL, and a 2x downscale 0.10 ms (cv2 INTER_AREA) vs
3.5 ms (PIL bicubic).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
import math
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.engines.base import EngineError
from spatial_vlm_ros.engines.profiles import IMAGE_SIZE_FACTOR, ModelProfile

MAX_ASPECT_RATIO = 200  # Qwen's smart_resize rejects more elongated images
DEFAULT_JPEG_QUALITY = 90


class InvalidImageError(EngineError, ValueError):
    """An image that is not an RGB uint8 (H, W, 3) array, or has an unusable shape."""


def validate_rgb(image: object) -> npt.NDArray[np.uint8]:
    """Return ``image`` as a C-contiguous RGB uint8 array, or raise :class:`InvalidImageError`."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise InvalidImageError(f'image must be uint8, got {image.dtype}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f'image must have shape (H, W, 3) in RGB order, got {image.shape}')
    height, width = image.shape[:2]
    if height < 1 or width < 1:
        raise InvalidImageError(f'image is empty: {width}x{height}')
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f'image aspect ratio {width}x{height} exceeds {MAX_ASPECT_RATIO}:1 (Qwen-VL limit)'
        )
    return np.ascontiguousarray(image)


def fit_to_budget(
    width: int,
    height: int,
    min_pixels: int,
    max_pixels: int,
    factor: int = IMAGE_SIZE_FACTOR,
) -> tuple[int, int]:
    """
    ``(width, height)`` rounded to multiples of ``factor`` with the area in the budget.

    Same arithmetic as Qwen's ``smart_resize``: round each side, then scale both sides down (floor)
    or up (ceil) by the same factor when the area leaves ``[min_pixels, max_pixels]``.
    """
    if width < 1 or height < 1:
        raise InvalidImageError(f'image size must be positive, got {width}x{height}')
    if min_pixels > max_pixels:
        raise InvalidImageError(f'min_pixels {min_pixels} > max_pixels {max_pixels}')
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / beta / factor) * factor)
        new_w = max(factor, math.floor(width / beta / factor) * factor)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_w, new_h


def model_input_size(width: int, height: int, profile: ModelProfile) -> tuple[int, int]:
    """Return the ``(width, height)`` the model sees for an image of this size (``profile``)."""
    return fit_to_budget(width, height, profile.min_pixels, profile.max_pixels)


def image_tokens_for(width: int, height: int, profile: ModelProfile) -> int:
    """Visual tokens one image of this size costs (one per 32x32 px after resizing)."""
    new_w, new_h = model_input_size(width, height, profile)
    return (new_w // IMAGE_SIZE_FACTOR) * (new_h // IMAGE_SIZE_FACTOR)


def resize_for_profile(
    image: npt.NDArray[np.uint8], profile: ModelProfile
) -> npt.NDArray[np.uint8]:
    """
    Return the image resized to :func:`model_input_size`.

    It is returned unchanged when it already fits.
    """
    rgb = validate_rgb(image)
    height, width = rgb.shape[:2]
    new_w, new_h = model_input_size(width, height, profile)
    if (new_w, new_h) == (width, height):
        return rgb
    # INTER_AREA avoids aliasing when shrinking; cubic matches the processor when enlarging.
    shrinking = new_w * new_h < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    # cv2's stubs type every result as MatLike; resizing keeps the uint8 RGB layout.
    return cast(
        npt.NDArray[np.uint8], cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    )


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image."""
    rgb = validate_rgb(image)
    if not 1 <= quality <= 100:
        raise InvalidImageError(f'JPEG quality must be in 1..100, got {quality}')
    ok, encoded = cv2.imencode(
        '.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise InvalidImageError(f'JPEG encoding failed for an image of shape {rgb.shape}')
    return encoded.tobytes()


def jpeg_base64(image: npt.NDArray[np.uint8], quality: int = DEFAULT_JPEG_QUALITY) -> str:
    return base64.b64encode(encode_jpeg(image, quality)).decode('ascii')


def data_url_from_base64(jpeg_b64: str) -> str:
    return f'data:image/jpeg;base64,{jpeg_b64}'


def jpeg_data_url(image: npt.NDArray[np.uint8], quality: int = DEFAULT_JPEG_QUALITY) -> str:
    return data_url_from_base64(jpeg_base64(image, quality))


@dataclass(frozen=True)
class PreparedImage:
    """One image ready to send: JPEG base64 at the model's input size, plus both sizes."""

    jpeg_base64: str
    width: int  # as sent (model input)
    height: int
    original_width: int  # as received (RGB image; boxes are converted back to this size)
    original_height: int
    tokens: int

    @property
    def data_url(self) -> str:
        return data_url_from_base64(self.jpeg_base64)


def prepare_image(
    image: npt.NDArray[np.uint8], profile: ModelProfile, quality: int = DEFAULT_JPEG_QUALITY
) -> PreparedImage:
    """Validate, resize to the profile's budget and JPEG/base64-encode one RGB image."""
    rgb = validate_rgb(image)
    resized = resize_for_profile(rgb, profile)
    height, width = resized.shape[:2]
    return PreparedImage(
        jpeg_base64=jpeg_base64(resized, quality),
        width=width,
        height=height,
        original_width=rgb.shape[1],
        original_height=rgb.shape[0],
        tokens=(width // IMAGE_SIZE_FACTOR) * (height // IMAGE_SIZE_FACTOR),
    )
