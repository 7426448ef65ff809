# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Camera intrinsics from CameraInfo, resolution registration and RgbdFrame assembly."""

from __future__ import annotations

import array
from dataclasses import dataclass, field
import struct
from typing import Any

import cv2
import numpy as np
import pytest

from spatial_vlm_ros import settings
from spatial_vlm_ros.core import camera as cam
from spatial_vlm_ros.core.image_decoding import ImageDecodeError
from spatial_vlm_ros.core.lifting import _pixel_range, lift_boxes
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, SpatialVlmError


@dataclass
class Time:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Time = field(default_factory=Time)
    frame_id: str = ''


@dataclass
class Roi:
    x_offset: int = 0
    y_offset: int = 0
    height: int = 0
    width: int = 0
    do_rectify: bool = False


@dataclass
class Info:
    width: int = 640
    height: int = 480
    k: Any = (600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0)
    p: Any = (580.0, 0.0, 321.0, 0.0, 0.0, 580.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    d: Any = (0.0, 0.0, 0.0, 0.0, 0.0)
    distortion_model: str = 'plumb_bob'
    binning_x: int = 0
    binning_y: int = 0
    roi: Roi = field(default_factory=Roi)
    header: Header = field(default_factory=Header)


def make_rgbd_frame(*args: Any, **kwargs: Any) -> Any:
    """The frame of :func:`cam.make_rgbd_frame_with_warnings`, without the warnings."""
    return cam.make_rgbd_frame_with_warnings(*args, **kwargs)[0]


@dataclass
class RawImage:
    encoding: str
    height: int
    width: int
    step: int
    data: Any
    is_bigendian: int = 0
    header: Header = field(default_factory=Header)


@dataclass
class Compressed:
    format: str
    data: Any
    header: Header = field(default_factory=Header)


def image_message(
    pixels: np.ndarray, encoding: str, stamp=(0, 0), frame_id='camera_color_optical_frame'
) -> RawImage:
    height, width = pixels.shape[:2]
    flat = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    return RawImage(
        encoding,
        height,
        width,
        flat.shape[1],
        flat.reshape(-1),
        header=Header(Time(*stamp), frame_id),
    )


# ----------------------------------------------------------------------------- CameraInfo


def test_k_is_the_default_and_p_is_used_for_rectified_images():
    k_model = cam.camera_model_from_info(Info())
    assert k_model.source == cam.IntrinsicsSource.K
    assert k_model.intrinsics == CameraIntrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
    assert k_model.warnings == ()
    p_intrinsics = cam.camera_model_from_info(Info(), 'P').intrinsics
    assert (p_intrinsics.fx, p_intrinsics.cx, p_intrinsics.cy) == (580.0, 321.0, 241.0)


def test_lifting_a_rectified_image_with_p_uses_p_not_k():
    """An image_rect frame lifted with camera_intrinsics P: the position follows P's pinhole."""
    rectified = Info(p=(500.0, 0.0, 300.0, 0.0, 0.0, 500.0, 200.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    rgb_msg = image_message(np.zeros((480, 640, 3), np.uint8), 'rgb8')
    depth_msg = image_message(np.full((480, 640), 2000, np.uint16), '16UC1')
    box = PixelBox(400.0, 300.0, 440.0, 340.0)
    positions = {}
    for source in cam.IntrinsicsSource:
        frame = make_rgbd_frame(rgb_msg, depth_msg, rectified, intrinsics_source=source)
        (lifted,) = lift_boxes(frame.depth_m, frame.depth_intrinsics, [box])
        assert lifted.position is not None
        positions[source] = np.asarray(lifted.position)
    # Pixel centres 400..439 and 300..339 average to (419.5, 319.5) on a wall at 2 m.
    from_p = np.array([(419.5 - 300.0) * 2.0 / 500.0, (319.5 - 200.0) * 2.0 / 500.0, 2.0])
    from_k = np.array([(419.5 - 319.5) * 2.0 / 600.0, (319.5 - 239.5) * 2.0 / 600.0, 2.0])
    np.testing.assert_allclose(positions[cam.IntrinsicsSource.P], from_p, atol=0.01)
    np.testing.assert_allclose(positions[cam.IntrinsicsSource.K], from_k, atol=0.01)


def test_the_distortion_warning_names_the_parameter_that_selects_p():
    """The advice must be actionable: the setting it names exists and takes 'P'."""
    (warning,) = cam.camera_model_from_info(Info(d=(-0.35, 0.12, 0.0, 0.0, 0.0))).warnings
    assert warning.endswith('set camera_intrinsics: P for accurate 3D')
    assert 'P' in settings.BY_NAME['camera_intrinsics'].choices


def test_numpy_or_array_values_work():
    info = Info(k=np.array(Info.k), p=list(Info.p), d=array.array('d', [0.01, 0.0]))
    assert cam.camera_model_from_info(info, cam.IntrinsicsSource.P).intrinsics.fy == 580.0


def test_zero_intrinsics_say_the_camera_is_uncalibrated():
    with pytest.raises(cam.ZeroIntrinsicsError, match='is the camera calibrated') as caught:
        cam.camera_model_from_info(Info(k=(0.0,) * 9, p=(0.0,) * 12))
    assert str(caught.value) == cam.ZERO_INTRINSICS_MESSAGE
    assert isinstance(caught.value, SpatialVlmError)


def test_zero_p_falls_back_to_k_with_a_warning():
    model = cam.camera_model_from_info(Info(p=(0.0,) * 12), cam.IntrinsicsSource.P)
    assert model.source == cam.IntrinsicsSource.K
    assert model.intrinsics.fx == 600.0
    assert any('P is zero' in warning for warning in model.warnings)


@pytest.mark.parametrize(
    ('info', 'message'),
    [
        (Info(k=(-600.0, 0, 320, 0, 600, 240, 0, 0, 1)), 'positive'),
        (Info(k=(600.0, 0, 320, 0, 0.0, 240, 0, 0, 1)), 'positive'),
        (Info(k=(float('nan'), 0, 320, 0, 600, 240, 0, 0, 1)), 'not finite'),
        (Info(k=(600.0, 0, float('inf'), 0, 600, 240, 0, 0, 1)), 'not finite'),
        (Info(k=(600.0,) * 4), '9 values'),
        (Info(k=('a',) * 9), 'not numeric'),
        (object(), 'no field'),
        (Info(width=1.5), 'integer'),
    ],
)
def test_malformed_camera_info_raises_camera_info_error(info, message):
    with pytest.raises(cam.CameraInfoError, match=message):
        cam.camera_model_from_info(info)


def test_bad_intrinsics_source_is_a_typed_error():
    with pytest.raises(cam.CameraInfoError, match="'K' or 'P'"):
        cam.camera_model_from_info(Info(), 'Q')


def test_implausible_but_usable_intrinsics_give_warnings():
    off_centre = cam.camera_model_from_info(Info(k=(600.0, 0, 630.0, 0, 600, 239.5, 0, 0, 1)))
    assert any('cx=630.0' in warning for warning in off_centre.warnings)
    stretched = cam.camera_model_from_info(Info(k=(600.0, 0, 319.5, 0, 200, 239.5, 0, 0, 1)))
    assert any('fx/fy' in warning for warning in stretched.warnings)
    distorted = cam.camera_model_from_info(Info(d=(-0.35, 0.12, 0.0, 0.0, 0.0)))
    assert any('image_rect' in warning for warning in distorted.warnings)
    assert not any(
        'image_rect' in warning
        for warning in cam.camera_model_from_info(Info(d=(-0.35,)), 'P').warnings
    )


def test_binning_and_roi_describe_the_transmitted_image():
    binned = cam.camera_model_from_info(Info(binning_x=2, binning_y=2)).intrinsics
    assert (binned.width, binned.height) == (320, 240)
    assert (binned.fx, binned.fy) == (300.0, 300.0)
    # the centre of the full sensor stays the centre of the binned image
    assert (binned.cx, binned.cy) == ((320 - 1) / 2, (240 - 1) / 2)
    cropped = cam.camera_model_from_info(
        Info(roi=Roi(x_offset=100, y_offset=40, width=400, height=300))
    ).intrinsics
    assert (cropped.width, cropped.height) == (400, 300)
    assert (cropped.cx, cropped.cy) == (219.5, 199.5)
    assert cropped.fx == 600.0


# ----------------------------------------------------------------------------- resolutions


def project(intrinsics: CameraIntrinsics, point):
    x, y, z = point
    return intrinsics.fx * x / z + intrinsics.cx, intrinsics.fy * y / z + intrinsics.cy


def test_scaled_intrinsics_project_to_the_same_place_in_the_resized_image():
    rgb = CameraIntrinsics(610.0, 605.0, 322.0, 236.0, 640, 480)
    depth = cam.scale_intrinsics(rgb, 320, 240)
    for point in [(0.0, 0.0, 1.0), (0.3, -0.2, 2.0), (-1.0, 0.5, 3.0)]:
        u_rgb, v_rgb = project(rgb, point)
        u_depth, v_depth = project(depth, point)
        # pixel centres: rgb pixel u covers depth coordinate (u + 0.5) / 2 - 0.5
        assert u_depth == pytest.approx((u_rgb + 0.5) / 2 - 0.5)
        assert v_depth == pytest.approx((v_rgb + 0.5) / 2 - 0.5)
    assert cam.scale_intrinsics(rgb, 640, 480) is rgb


def test_different_aspect_ratios_are_refused_unless_allowed():
    rgb = CameraIntrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
    with pytest.raises(cam.ResolutionMismatchError, match='aspect ratios differ'):
        cam.scale_intrinsics(rgb, 640, 360)
    stretched = cam.scale_intrinsics(rgb, 640, 360, allow_aspect_mismatch=True)
    assert stretched.fx == 600.0 and stretched.fy == pytest.approx(450.0)
    with pytest.raises(cam.ResolutionMismatchError, match='positive'):
        cam.scale_intrinsics(rgb, 0, 240)


def test_boxes_map_between_resolutions_by_their_edges():
    box = PixelBox(10.0, 20.0, 110.0, 220.0)
    mapped = cam.map_box_to_image(box, (640, 480), (320, 240))
    assert mapped == PixelBox(5.0, 10.0, 55.0, 110.0)
    whole = cam.map_box_to_image(PixelBox(0, 0, 1280, 720), (1280, 720), (848, 477))
    assert whole.x_max == 848 and whole.y_max == 477
    with pytest.raises(cam.ResolutionMismatchError):
        cam.map_box_to_image(box, (640, 480), (640, 360))


def test_boxes_select_the_pixels_whose_centres_are_inside():
    # The lifter's pixel range: pixel i spans [i, i + 1), its centre i + 0.5 must be in the box.
    assert _pixel_range(0, 10, 640) == (0, 10)
    assert _pixel_range(2.4, 3.6, 640) == (2, 4)  # pixels 2 and 3
    assert _pixel_range(2.6, 3.6, 480) == (3, 4)  # only 3
    first, stop = _pixel_range(2.6, 3.4, 480)
    assert first == stop  # no pixel centre at all
    assert _pixel_range(-50, 700, 640) == (0, 640)
    first, stop = _pixel_range(700, 800, 640)
    assert first == stop  # entirely outside: empty


# ----------------------------------------------------------------------------- depth


def test_depth_range_sets_out_of_range_to_nan_in_place():
    depth = np.array([[0.01, 0.5, 25.0, np.nan]], dtype=np.float32)
    result = cam.apply_depth_range(depth, 0.05, 20.0)
    assert result is depth
    np.testing.assert_array_equal(np.isnan(depth), [[True, False, True, True]])


def test_depth_unit_sanity_warnings():
    far = np.full((8, 8), 1500.0, dtype=np.float32)  # millimetres read as metres
    assert 'millimetres' in cam.depth_sanity_warnings(far, '16UC1', 1.0)[0]
    near = np.full((8, 8), 0.0015, dtype=np.float32)  # metres scaled as millimetres
    assert 'units look wrong' in cam.depth_sanity_warnings(near, '32FC1', 0.001)[0]
    assert cam.depth_sanity_warnings(np.full((8, 8), 1.5, np.float32), '16UC1') == []
    assert 'no valid' in cam.depth_sanity_warnings(np.full((4, 4), np.nan, np.float32), '')[0]


@pytest.mark.parametrize(
    'kwargs',
    [
        {'depth_scale': 0.0},
        {'depth_scale': float('nan')},
        {'min_depth_m': 2.0, 'max_depth_m': 1.0},
        {'min_depth_m': -1.0},
        {'max_depth_m': 'far'},
    ],
)
def test_depth_config_validates(kwargs):
    with pytest.raises(cam.DepthConfigError):
        cam.DepthConfig(**kwargs)


# ----------------------------------------------------------------------------- RgbdFrame


def test_make_rgbd_frame_registers_half_resolution_depth():
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    rgb[:, :, 0] = 200
    depth_mm = np.full((240, 320), 1500, dtype=np.uint16)
    depth_mm[0, 0] = 0  # invalid
    depth_mm[1, 1] = 30  # 3 cm: below min_depth_m
    rgb_msg = image_message(rgb, 'rgb8', stamp=(12, 345), frame_id='camera_color_optical_frame')
    frame, warnings = cam.make_rgbd_frame_with_warnings(
        rgb_msg, image_message(depth_mm, '16UC1'), Info()
    )
    assert warnings == []
    assert frame.stamp_ns == 12_000_000_345
    assert frame.frame_id == 'camera_color_optical_frame'
    assert frame.rgb.shape == (480, 640, 3) and frame.rgb[0, 0, 0] == 200
    assert frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (240, 320)
    assert np.isnan(frame.depth_m[0, 0]) and np.isnan(frame.depth_m[1, 1])
    assert frame.depth_m[5, 5] == np.float32(1.5)
    assert frame.rgb_intrinsics == CameraIntrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
    assert frame.depth_intrinsics == CameraIntrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)
    box = cam.rgb_box_to_depth(PixelBox(100, 50, 300, 250), frame)
    assert box == PixelBox(50, 25, 150, 125)
    assert make_rgbd_frame(rgb_msg, image_message(depth_mm, '16UC1'), Info()).stamp_ns == (
        frame.stamp_ns
    )


def test_make_rgbd_frame_accepts_compressed_messages_and_p():
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[..., 2] = 255  # blue
    ok, jpeg = cv2.imencode('.jpg', rgb[:, :, ::-1])
    depth_mm = np.full((48, 64), 2000, dtype=np.uint16)
    ok, png = cv2.imencode('.png', depth_mm)
    info = Info(
        width=64,
        height=48,
        k=(60.0, 0, 31.5, 0, 60, 23.5, 0, 0, 1),
        p=(58.0, 0, 32, 0, 0, 58, 24, 0, 0, 0, 1, 0),
    )
    frame = make_rgbd_frame(
        Compressed('rgb8; jpeg compressed bgr8', jpeg.tobytes(), Header(frame_id='cam')),
        Compressed('16UC1; compressedDepth png', struct.pack('<iff', 0, 0, 0) + png.tobytes()),
        info,
        intrinsics_source='P',
    )
    assert frame.rgb[10, 10, 2] > 240 and frame.rgb[10, 10, 0] < 15
    assert np.all(frame.depth_m == np.float32(2.0))
    assert frame.rgb_intrinsics.fx == 58.0


def test_make_rgbd_frame_reports_wrong_units_and_mismatched_info():
    rgb_msg = image_message(np.zeros((240, 320, 3), np.uint8), 'bgr8')
    depth_msg = image_message(np.full((240, 320), 1500, np.uint16), '16UC1')
    config = cam.DepthConfig(depth_scale=1.0, max_depth_m=5000.0)
    frame, warnings = cam.make_rgbd_frame_with_warnings(rgb_msg, depth_msg, Info(), config)
    assert any('millimetres' in warning for warning in warnings)
    assert any('scaling the intrinsics' in warning for warning in warnings)
    assert frame.rgb_intrinsics.fx == 300.0  # the 640x480 info scaled to the 320x240 image
    _, no_size = cam.make_rgbd_frame_with_warnings(rgb_msg, depth_msg, Info(width=0, height=0))
    assert any('no image size' in warning for warning in no_size)


def test_make_rgbd_frame_refuses_depth_with_another_aspect_ratio():
    rgb_msg = image_message(np.zeros((480, 640, 3), np.uint8), 'rgb8')
    depth_msg = image_message(np.full((360, 640), 1000, np.uint16), '16UC1')
    with pytest.raises(cam.ResolutionMismatchError):
        make_rgbd_frame(rgb_msg, depth_msg, Info())
    frame = make_rgbd_frame(
        rgb_msg, depth_msg, Info(), cam.DepthConfig(allow_aspect_mismatch=True)
    )
    assert frame.depth_intrinsics.height == 360


def test_make_rgbd_frame_passes_decode_errors_through_typed():
    rgb_msg = image_message(np.zeros((4, 4, 3), np.uint8), 'rgb8')
    with pytest.raises(ImageDecodeError):
        make_rgbd_frame(rgb_msg, rgb_msg, Info())  # color where depth belongs


def test_make_rgbd_frame_refuses_frames_without_any_frame_id() -> None:
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    depth = np.full((480, 640), 1000, dtype=np.uint16)
    with pytest.raises(cam.MissingFrameIdError, match='frame_id'):
        make_rgbd_frame(
            image_message(rgb, 'rgb8', frame_id=''),
            image_message(depth, '16UC1', frame_id=''),
            Info(),
        )
