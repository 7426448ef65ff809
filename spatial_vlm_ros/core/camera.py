# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Pinhole intrinsics from ``sensor_msgs/CameraInfo`` and the RGB-D frame the pipeline consumes.

CameraInfo is duck-typed (rclpy and rosbags messages alike): its ``k``, ``p`` and ``d`` may be
numpy arrays, lists or ``array.array`` values.

Which matrix: ``K`` describes the raw (distorted) image, ``P`` the rectified one. Use ``K`` for
``image_raw`` topics (the default; what RGB-D drivers publish, usually with negligible
distortion) and ``P`` for ``image_rect`` topics (the ``camera_intrinsics`` setting selects it
for the node and the replay). Lifting with ``K`` ignores lens distortion; a warning says so when
the distortion coefficients are large.

Pixel-centre convention: OpenCV/ROS put the centre of pixel ``i`` at coordinate ``i``, so when an
image is resized by ``s`` the principal point maps as ``c' = (c + 0.5) * s - 0.5`` (focal lengths
simply scale). :class:`~spatial_vlm_ros.core.types.PixelBox` edges are continuous coordinates
where pixel ``i`` spans ``[i, i + 1)``, so box edges scale as ``x' = x * s``.
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
import math
import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.image_decoding import (
    decode_color_any,
    decode_depth_any,
    depth_encoding_of,
    depth_lookup_table,
    integer_depth_codes,
)
from spatial_vlm_ros.core.stamps import header_stamp_ns
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, RgbdFrame, SpatialVlmError

ZERO_INTRINSICS_MESSAGE = 'CameraInfo has zero intrinsics; is the camera calibrated?'

# Relative difference between the x and y scale factors above which two resolutions are taken
# to have different aspect ratios (0.5 %: 1280x720 vs 848x480 is 0.6 %, a different crop).
ASPECT_TOLERANCE = 0.005
# Principal point farther than this fraction of the image size from the centre is suspicious.
PRINCIPAL_POINT_MARGIN = 0.4
# Radial/tangential coefficients above this magnitude make pinhole lifting with K inaccurate.
LARGE_DISTORTION = 0.1
# Median depth outside this range (metres) usually means the depth units are wrong.
SANE_MEDIAN_DEPTH_M = (0.05, 20.0)


class CameraInfoError(SpatialVlmError):
    """CameraInfo is malformed or its intrinsics are unusable."""


class ZeroIntrinsicsError(CameraInfoError):
    """The intrinsic matrix is all zeros (an uncalibrated camera)."""


class ResolutionMismatchError(CameraInfoError):
    """Two image resolutions cannot be related by scaling (different aspect ratios)."""


class MissingFrameIdError(CameraInfoError):
    """Neither the RGB image nor its CameraInfo names a frame."""


class DepthConfigError(SpatialVlmError):
    """A :class:`DepthConfig` value is out of range."""


class IntrinsicsSource(str, enum.Enum):
    K = 'K'  # raw (distorted) image: image_raw topics
    P = 'P'  # rectified image: image_rect topics


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of one camera plus what was learned reading its CameraInfo."""

    intrinsics: CameraIntrinsics
    source: IntrinsicsSource
    distortion_model: str
    distortion: tuple[float, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DepthConfig:
    """
    How to turn a depth message into metres.

    ``depth_scale`` is metres per unit; None means the encoding's default (16UC1/mono16:
    0.001, 32FC1: 1). Depth outside ``[min_depth_m, max_depth_m]`` becomes NaN.
    """

    depth_scale: float | None = None
    min_depth_m: float = 0.05
    max_depth_m: float = 20.0
    allow_aspect_mismatch: bool = False

    def __post_init__(self) -> None:
        numbers = (self.min_depth_m, self.max_depth_m) + (
            () if self.depth_scale is None else (self.depth_scale,)
        )
        if not all(isinstance(value, (int, float)) for value in numbers):
            raise DepthConfigError(f'DepthConfig values must be numbers: {self}')
        if self.depth_scale is not None and not (
            math.isfinite(self.depth_scale) and self.depth_scale > 0
        ):
            raise DepthConfigError(f'depth_scale must be positive, got {self.depth_scale}')
        if not (0.0 <= self.min_depth_m < self.max_depth_m):
            raise DepthConfigError(
                f'need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}'
            )


# ----------------------------------------------------------------------------- CameraInfo


def _info_field(info: Any, *names: str) -> Any:
    for name in names:
        if hasattr(info, name):
            return getattr(info, name)
    raise CameraInfoError(
        f'CameraInfo of type {type(info).__name__} has no field {" / ".join(names)}'
    )


def _float_vector(info: Any, length: int, *names: str) -> npt.NDArray[np.float64]:
    value = _info_field(info, *names)
    try:
        vector = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise CameraInfoError(f'CameraInfo.{names[0]} is not numeric: {error}') from None
    if length and vector.size != length:
        raise CameraInfoError(
            f'CameraInfo.{names[0]} must have {length} values, got {vector.size}'
        )
    return vector


def _int_info_field(info: Any, default: int, *names: str) -> int:
    if not any(hasattr(info, name) for name in names):
        return default
    value = _info_field(info, *names)
    try:
        return operator.index(value)
    except TypeError:
        raise CameraInfoError(f'CameraInfo.{names[0]} must be an integer') from None


def _scaled_principal(c: float, scale: float) -> float:
    return (c + 0.5) * scale - 0.5


def _apply_binning_and_roi(
    fx: float, fy: float, cx: float, cy: float, info: Any
) -> tuple[float, float, float, float, int, int]:
    """K/P describe the full sensor (REP 104); binning and ROI describe the image actually sent."""
    width = _int_info_field(info, 0, 'width')
    height = _int_info_field(info, 0, 'height')
    binning_x = max(_int_info_field(info, 0, 'binning_x'), 1)
    binning_y = max(_int_info_field(info, 0, 'binning_y'), 1)
    roi = getattr(info, 'roi', None)
    x_offset = _int_info_field(roi, 0, 'x_offset') if roi is not None else 0
    y_offset = _int_info_field(roi, 0, 'y_offset') if roi is not None else 0
    roi_width = _int_info_field(roi, 0, 'width') if roi is not None else 0
    roi_height = _int_info_field(roi, 0, 'height') if roi is not None else 0
    if roi_width > 0 and roi_height > 0:
        cx, cy = cx - x_offset, cy - y_offset
        width, height = roi_width, roi_height
    if binning_x > 1 or binning_y > 1:
        fx, fy = fx / binning_x, fy / binning_y
        cx, cy = _scaled_principal(cx, 1.0 / binning_x), _scaled_principal(cy, 1.0 / binning_y)
        width, height = width // binning_x, height // binning_y
    return fx, fy, cx, cy, width, height


def _pick_matrix(
    info: Any, source: IntrinsicsSource, warnings: list[str]
) -> tuple[float, float, float, float, IntrinsicsSource]:
    k = _float_vector(info, 9, 'k')
    if source == IntrinsicsSource.P:
        p = _float_vector(info, 12, 'p')
        if np.any(p[[0, 5]] != 0.0):
            return float(p[0]), float(p[5]), float(p[2]), float(p[6]), IntrinsicsSource.P
        if np.any(k[[0, 4]] != 0.0):
            warnings.append('CameraInfo.P is zero; using K instead (is the image rectified?)')
            source = IntrinsicsSource.K
    return float(k[0]), float(k[4]), float(k[2]), float(k[5]), source


def intrinsics_warnings(intrinsics: CameraIntrinsics) -> list[str]:
    """Plausibility checks that do not stop the pipeline but deserve a diagnostic."""
    warnings: list[str] = []
    for name, centre, size in (
        ('cx', intrinsics.cx, intrinsics.width),
        ('cy', intrinsics.cy, intrinsics.height),
    ):
        if size > 0 and abs(centre - (size - 1) / 2.0) > PRINCIPAL_POINT_MARGIN * size:
            warnings.append(
                f'principal point {name}={centre:.1f} is far from the centre of a {size} px '
                'axis; do the intrinsics belong to another resolution?'
            )
    ratio = intrinsics.fx / intrinsics.fy
    if not 0.5 <= ratio <= 2.0:
        warnings.append(f'fx/fy = {ratio:.2f}: pixels this far from square are unusual')
    return warnings


def camera_model_from_info(
    info: Any, source: IntrinsicsSource | str = IntrinsicsSource.K
) -> CameraModel:
    """Read and validate CameraInfo; raises :class:`CameraInfoError` when unusable."""
    try:
        source = IntrinsicsSource(source)
    except ValueError:
        raise CameraInfoError(f"intrinsics source must be 'K' or 'P', got {source!r}") from None
    warnings: list[str] = []
    fx, fy, cx, cy, source = _pick_matrix(info, source, warnings)
    if fx == 0.0 and fy == 0.0:
        raise ZeroIntrinsicsError(ZERO_INTRINSICS_MESSAGE)
    values = {'fx': fx, 'fy': fy, 'cx': cx, 'cy': cy}
    if not all(math.isfinite(value) for value in values.values()):
        raise CameraInfoError(f'CameraInfo intrinsics are not finite: {values}')
    if fx <= 0.0 or fy <= 0.0:
        raise CameraInfoError(f'focal lengths must be positive, got fx={fx}, fy={fy}')
    fx, fy, cx, cy, width, height = _apply_binning_and_roi(fx, fy, cx, cy, info)
    intrinsics = CameraIntrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
    warnings.extend(intrinsics_warnings(intrinsics))
    distortion_model = str(getattr(info, 'distortion_model', '') or '')
    distortion = tuple(float(value) for value in _float_vector(info, 0, 'd'))
    if (
        source == IntrinsicsSource.K
        and distortion
        and max(abs(value) for value in distortion[:5]) > LARGE_DISTORTION
    ):
        warnings.append(
            f'{distortion_model or "lens"} distortion is large ({distortion[:5]}); lifting '
            'with K ignores it: subscribe to image_rect and set camera_intrinsics: P for '
            'accurate 3D'
        )
    return CameraModel(
        intrinsics=intrinsics,
        source=source,
        distortion_model=distortion_model,
        distortion=distortion,
        warnings=tuple(warnings),
    )


# ----------------------------------------------------------------------------- resolutions


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ResolutionMismatchError(f'image size must be positive, got {width}x{height}')


def scale_intrinsics(
    intrinsics: CameraIntrinsics,
    width: int,
    height: int,
    allow_aspect_mismatch: bool = False,
) -> CameraIntrinsics:
    """
    Intrinsics of the same view resampled to ``width`` x ``height``.

    Different aspect ratios mean a different crop, not a resize, unless the caller knows
    better: raises :class:`ResolutionMismatchError` unless ``allow_aspect_mismatch`` (then each
    axis is scaled on its own).
    """
    _check_size(width, height)
    _check_size(intrinsics.width, intrinsics.height)
    if (width, height) == (intrinsics.width, intrinsics.height):
        return intrinsics
    scale_x = width / intrinsics.width
    scale_y = height / intrinsics.height
    if not allow_aspect_mismatch and abs(scale_x - scale_y) > ASPECT_TOLERANCE * max(
        scale_x, scale_y
    ):
        raise ResolutionMismatchError(
            f'cannot relate {intrinsics.width}x{intrinsics.height} to {width}x{height}: the '
            'aspect ratios differ, so one image is a crop of the other. Register depth to the '
            'color camera at a proportional resolution, or set allow_aspect_mismatch'
        )
    return CameraIntrinsics(
        fx=intrinsics.fx * scale_x,
        fy=intrinsics.fy * scale_y,
        cx=_scaled_principal(intrinsics.cx, scale_x),
        cy=_scaled_principal(intrinsics.cy, scale_y),
        width=width,
        height=height,
    )


def map_box_to_image(
    box: PixelBox,
    from_size: tuple[int, int],
    to_size: tuple[int, int],
    allow_aspect_mismatch: bool = False,
) -> PixelBox:
    """
    Map a box between two registered resolutions ``(width, height)`` of the same view.

    Use it to take an RGB-pixel box to depth pixels. Edges scale linearly; the result is not
    clipped (the lifter takes the pixels whose centres lie in the box, clipped to the image).
    """
    from_width, from_height = from_size
    to_width, to_height = to_size
    _check_size(from_width, from_height)
    _check_size(to_width, to_height)
    scale_x = to_width / from_width
    scale_y = to_height / from_height
    if not allow_aspect_mismatch and abs(scale_x - scale_y) > ASPECT_TOLERANCE * max(
        scale_x, scale_y
    ):
        raise ResolutionMismatchError(
            f'cannot map a box from {from_width}x{from_height} to {to_width}x{to_height}: '
            'the aspect ratios differ'
        )
    return PixelBox(
        x_min=box.x_min * scale_x,
        y_min=box.y_min * scale_y,
        x_max=box.x_max * scale_x,
        y_max=box.y_max * scale_y,
    )


def rgb_box_to_depth(box: PixelBox, frame: RgbdFrame) -> PixelBox:
    """
    Express a box in the frame's RGB pixels in its depth pixels.

    Allows what the frame was built with: its depth intrinsics already encode the scale per
    axis.
    """
    rgb = frame.rgb_intrinsics
    depth = frame.depth_intrinsics
    return map_box_to_image(
        box, (rgb.width, rgb.height), (depth.width, depth.height), allow_aspect_mismatch=True
    )


# ----------------------------------------------------------------------------- depth


def apply_depth_range(
    depth_m: npt.NDArray[np.float32], min_depth_m: float, max_depth_m: float
) -> npt.NDArray[np.float32]:
    """Set depth outside ``[min_depth_m, max_depth_m]`` to NaN, in place; returns the array."""
    depth_m[(depth_m < min_depth_m) | (depth_m > max_depth_m)] = np.nan
    return depth_m


def depth_sanity_warnings(
    depth_m: npt.NDArray[np.float32], encoding: str, depth_scale: float | None = None
) -> list[str]:
    """
    Symptoms of wrong depth units, judged from the median valid depth (before range limits).

    Returns human-readable warnings; empty when the depth looks plausible.
    """
    sample = depth_m[::4, ::4] if depth_m.ndim == 2 else depth_m
    valid = sample[np.isfinite(sample)]
    if valid.size == 0:
        return ['depth image has no valid pixels']
    return _median_depth_warnings(float(np.median(valid)), encoding, depth_scale)


def _integer_depth_sanity_warnings(
    codes: npt.NDArray[np.uint16], scale: float, encoding: str, depth_scale: float | None
) -> list[str]:
    """
    :func:`depth_sanity_warnings` of the decoded image, from its raw codes.

    The same subsample and the same median (decoding preserves the codes' order), without decoding.
    """
    sample = codes[::4, ::4]
    valid = sample[sample != 0]
    if valid.size == 0:
        return ['depth image has no valid pixels']
    half = valid.size // 2
    ordered = np.partition(valid, half)
    middle = ordered[half : half + 1] if valid.size % 2 else [ordered[:half].max(), ordered[half]]
    metres = depth_lookup_table(scale).take(np.asarray(middle, dtype=np.intp))
    return _median_depth_warnings(float(np.median(metres)), encoding, depth_scale)


def _median_depth_warnings(median: float, encoding: str, depth_scale: float | None) -> list[str]:
    scale_text = 'the default' if depth_scale is None else f'{depth_scale:g} m per unit'
    low, high = SANE_MEDIAN_DEPTH_M
    if median > high:
        hint = (
            f'{encoding} is normally millimetres (scale 0.001)'
            if encoding in ('16UC1', 'mono16')
            else 'check the depth units'
        )
        return [
            f'median depth {median:.1f} m > {high:g} m with depth scale {scale_text}: '
            f'the depth units look wrong ({hint})'
        ]
    if median < low:
        return [
            f'median depth {median:.4f} m < {low:g} m with depth scale {scale_text}: the depth '
            'units look wrong (metres treated as millimetres, or a scale applied twice?)'
        ]
    return []


# ----------------------------------------------------------------------------- RGB-D frame


def _frame_id(msg: Any) -> str:
    frame_id = getattr(getattr(msg, 'header', None), 'frame_id', '')
    return frame_id if isinstance(frame_id, str) else ''


def make_rgbd_frame_with_warnings(
    rgb_msg: Any,
    depth_msg: Any,
    info_msg: Any,
    depth_config: DepthConfig | None = None,
    intrinsics_source: IntrinsicsSource | str = IntrinsicsSource.K,
) -> tuple[RgbdFrame, list[str]]:
    """
    Decode a paired RGB + depth (+ the RGB camera's CameraInfo) into an :class:`RgbdFrame`.

    Depth must be registered to the RGB camera (same viewpoint, e.g. ``aligned_depth_to_color``);
    when its resolution differs, its intrinsics are the RGB ones scaled. Raises
    :class:`~spatial_vlm_ros.core.image_decoding.ImageDecodeError` or
    :class:`CameraInfoError`; returns the frame and warnings (strings, not logged).
    """
    config = depth_config or DepthConfig()
    # Everything that needs the image decoders first, then the camera model.
    rgb = decode_color_any(rgb_msg)
    codes = integer_depth_codes(depth_msg, config.depth_scale)
    if codes is None:
        depth_m = decode_depth_any(depth_msg, config.depth_scale)
    else:
        # 16-bit depth: one table lookup per pixel converts, masks holes and applies the
        # range limits (what decoding and apply_depth_range below do pass after pass).
        depth_m = depth_lookup_table(codes[1], config.min_depth_m, config.max_depth_m).take(
            codes[0]
        )
    model = camera_model_from_info(info_msg, intrinsics_source)
    warnings = list(model.warnings)
    rgb_height, rgb_width = rgb.shape[:2]
    info_intrinsics = model.intrinsics
    if info_intrinsics.width <= 0 or info_intrinsics.height <= 0:
        warnings.append('CameraInfo has no image size; assuming it matches the RGB image')
        info_intrinsics = CameraIntrinsics(
            fx=info_intrinsics.fx,
            fy=info_intrinsics.fy,
            cx=info_intrinsics.cx,
            cy=info_intrinsics.cy,
            width=rgb_width,
            height=rgb_height,
        )
    elif (info_intrinsics.width, info_intrinsics.height) != (rgb_width, rgb_height):
        warnings.append(
            f'CameraInfo is for {info_intrinsics.width}x{info_intrinsics.height} but the RGB '
            f'image is {rgb_width}x{rgb_height}; scaling the intrinsics'
        )
    rgb_intrinsics = scale_intrinsics(
        info_intrinsics, rgb_width, rgb_height, config.allow_aspect_mismatch
    )
    depth_height, depth_width = depth_m.shape
    depth_intrinsics = scale_intrinsics(
        rgb_intrinsics, depth_width, depth_height, config.allow_aspect_mismatch
    )
    encoding = depth_encoding_of(depth_msg)
    if codes is None:
        warnings.extend(depth_sanity_warnings(depth_m, encoding, config.depth_scale))
        apply_depth_range(depth_m, config.min_depth_m, config.max_depth_m)
    else:
        warnings.extend(_integer_depth_sanity_warnings(*codes, encoding, config.depth_scale))
    rgb_frame_id, depth_frame_id = _frame_id(rgb_msg), _frame_id(depth_msg)
    if not rgb_frame_id and not _frame_id(info_msg):
        # A scene in frame "" is unusable (no TF, no viewer): refuse it loudly.
        raise MissingFrameIdError(
            'the RGB image and CameraInfo have an empty header.frame_id, so positions would have '
            "no frame; set the camera driver's frame_id (e.g. camera_color_optical_frame)"
        )
    if depth_frame_id and rgb_frame_id and depth_frame_id != rgb_frame_id:
        warnings.append(
            f'depth is in frame {depth_frame_id!r} but RGB in {rgb_frame_id!r}: depth must be '
            'registered to the colour camera (subscribe to the aligned/registered depth topic, '
            'e.g. aligned_depth_to_color/image_raw)'
        )
    frame = RgbdFrame(
        stamp_ns=header_stamp_ns(rgb_msg, default=0),
        frame_id=_frame_id(rgb_msg) or _frame_id(info_msg),
        rgb=rgb,
        depth_m=depth_m,
        rgb_intrinsics=rgb_intrinsics,
        depth_intrinsics=depth_intrinsics,
    )
    return frame, warnings
