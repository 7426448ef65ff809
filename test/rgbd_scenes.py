# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The hand-labelled real RGB-D frames (data/rgbd) as scenes built by the project's pipeline.

The hand boxes stand in for the model's grounding; everything after it is the product's own
path: ``pipeline.build_scene`` lifts them on the real depth (core/lifting.lift_boxes), assigns
the ``<label>_<n>`` ids and computes relations. For the node's path, :func:`relative_boxes` writes
the hand boxes as the model would (Qwen3-VL's 0-1000 coordinates) and :func:`rgbd_set` the frame
as a camera driver publishes it (rgb8, 16UC1 millimetres, CameraInfo). Shared by the query tests
and bench/bench_queries.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spatial_vlm_ros.core.pairing import RgbdSet, Stamped
from spatial_vlm_ros.core.types import CameraIntrinsics, Detection, PixelBox, RgbdFrame, Scene
from spatial_vlm_ros.engines.base import EngineResponse
from spatial_vlm_ros.engines.parsing import GroundingResult
from spatial_vlm_ros.pipeline import PipelineConfig, build_scene

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rgbd'
FRAMES = ('nyu_dining_1', 'nyu_dining_3', 'tum_desk', 'tum_office')
STAMP_NS = 1_700_000_000_000_000_000


def load_labels(name: str, root: Path = DATA) -> dict[str, Any]:
    return json.loads((root / name / 'labels.json').read_text(encoding='utf-8'))


def load_frame(name: str, root: Path = DATA) -> tuple[dict[str, Any], RgbdFrame]:
    """The frame's labels and its decoded RGB-D frame (depth in metres, NaN invalid)."""
    labels = load_labels(name, root)
    rgb = np.asarray(Image.open(root / name / labels['image']).convert('RGB'))
    raw = np.asarray(Image.open(root / name / labels['depth']))
    depth = raw.astype(np.float32) * np.float32(labels['depth_scale'])
    depth[raw == 0] = np.nan
    intrinsics = CameraIntrinsics(**labels['intrinsics'])
    frame = RgbdFrame(
        stamp_ns=STAMP_NS,
        frame_id=labels['frame_id'],
        rgb=np.ascontiguousarray(rgb),
        depth_m=depth,
        rgb_intrinsics=intrinsics,
        depth_intrinsics=intrinsics,
    )
    return labels, frame


def hand_detections(labels: dict[str, Any]) -> list[Detection]:
    return [
        Detection(item['label'], PixelBox(*(float(v) for v in item['bbox'])))
        for item in labels['objects']
    ]


def build_real_scene(
    name: str, root: Path = DATA, config: PipelineConfig | None = None
) -> tuple[Scene, RgbdFrame, dict[str, str]]:
    """``(scene, frame, hand id -> scene id)`` for one labelled frame."""
    labels, frame = load_frame(name, root)
    detections = hand_detections(labels)
    response = EngineResponse(
        raw_text='', parsed=GroundingResult(detections=tuple(detections)), engine='hand-labels'
    )
    scene = build_scene(frame, response, config or PipelineConfig(), model_id='hand-labels')
    by_box = {tuple(obj.box.as_list()): obj.id for obj in scene.objects}
    hand_to_scene = {
        item['id']: by_box[tuple(float(v) for v in item['bbox'])] for item in labels['objects']
    }
    return scene, frame, hand_to_scene


def relative_boxes(labels: dict[str, Any]) -> list[dict[str, Any]]:
    """The hand boxes as Qwen3-VL writes them: ``bbox_2d`` in relative 0-1000 coordinates."""
    width, height = labels['intrinsics']['width'], labels['intrinsics']['height']
    scale = np.array([1000 / width, 1000 / height, 1000 / width, 1000 / height])
    return [
        {'bbox_2d': np.round(np.array(item['bbox']) * scale).astype(int).tolist(),
         'label': item['label']}
        for item in labels['objects']
    ]  # fmt: skip


def depth_millimetres(frame: RgbdFrame) -> np.ndarray:
    """The frame's depth as a 16UC1 driver publishes it (millimetres, 0 = no reading)."""
    return np.nan_to_num(frame.depth_m * 1000.0, nan=0.0).round().astype(np.uint16)


def camera_fields(name: str, stamp_ns: int, root: Path = DATA) -> tuple[dict[str, Any], ...]:
    """The labelled frame as a camera driver publishes it, as message field values
    (core/message_fields): rgb8 Image, 16UC1 millimetre Image, CameraInfo."""
    from spatial_vlm_ros.core import message_fields

    _, frame = load_frame(name, root)
    frame_id = frame.frame_id
    return (
        message_fields.image_fields(stamp_ns, frame_id, frame.rgb, 'rgb8'),
        message_fields.image_fields(stamp_ns, frame_id, depth_millimetres(frame)),
        message_fields.camera_info_fields(stamp_ns, frame_id, frame.rgb_intrinsics),
    )


def rgbd_set(name: str, stamp_ns: int, root: Path = DATA) -> RgbdSet:
    """The labelled frame as one paired set of camera messages (rosbags types, as the replay
    reads them from a bag), stamped ``stamp_ns``."""
    from spatial_vlm_ros.replay import msgs

    rgb, depth, info = camera_fields(name, stamp_ns, root)
    return RgbdSet(
        Stamped(stamp_ns, msgs.build(msgs.IMAGE_TYPE, rgb)),
        Stamped(stamp_ns, msgs.build(msgs.IMAGE_TYPE, depth)),
        Stamped(stamp_ns, msgs.build(msgs.CAMERA_INFO_TYPE, info)),
    )


def rclpy_messages(name: str, stamp_ns: int, root: Path = DATA) -> tuple[Any, Any, Any]:
    """The labelled frame as rclpy messages ``(rgb, depth, camera_info)``, to publish."""
    from sensor_msgs.msg import CameraInfo, Image

    from spatial_vlm_ros.ros.conversions import to_message

    rgb, depth, info = camera_fields(name, stamp_ns, root)
    return to_message(Image, rgb), to_message(Image, depth), to_message(CameraInfo, info)


def scene_ids_of_hand_boxes(labels: dict[str, Any], scene: Scene) -> dict[str, str]:
    """Hand id -> id of the scene object whose box is that hand box (nearest box corners)."""
    mapping = {}
    for item in labels['objects']:
        corners = np.array(item['bbox'], dtype=np.float64)

        def offset(obj: Any, corners: np.ndarray = corners) -> float:
            return float(np.abs(np.array(obj.box.as_list()) - corners).sum())

        mapping[item['id']] = min(scene.objects, key=offset).id
    return mapping
