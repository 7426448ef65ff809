# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The hand-labelled real RGB-D frames (data/rgbd) as scenes built by the project's pipeline.

The hand boxes stand in for the model's grounding; everything after it is the product's own
path: ``pipeline.build_scene`` lifts them on the real depth (core/lifting.lift_boxes), assigns
the ``<label>_<n>`` ids and computes relations. Shared by the query tests and
bench/bench_queries.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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
