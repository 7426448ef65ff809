# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Relations and scenes-JSON bytes per scene: the full relation set against the compact one.

For each real frame of data/rgbd (Kinect frames with hand-labelled boxes, 5-8 objects) the boxes
are lifted together as the pipeline lifts them, and one scene is built three ways: the full set
in the camera view, the compact set in the camera view (the default without TF), and the compact
set in a gravity-aligned body frame. The body frame assumes a level camera (camera_link ==
base_link, ``T_BODY_FROM_OPTICAL``): the frames come without a pose, so its above/below counts
show the size of the set, not its truth. Bytes are one ``scene_to_json`` line (schema 2) with
the timings removed, as in test/golden/scenes.jsonl.

    .venv/bin/python bench/bench_relations.py [--per-object 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from spatial_vlm_ros.core.lifting import lift_boxes
from spatial_vlm_ros.core.relations import COMPACT, FULL, RelationConfig, compute_relations
from spatial_vlm_ros.core.scene_json import scene_to_dict
from spatial_vlm_ros.core.transforms import T_BODY_FROM_OPTICAL
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, Scene, SpatialObject

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rgbd'
TIMINGS = ('latency_ms', 'inference_ms', 'stages')


def frame_objects(frame_dir: Path) -> list[SpatialObject]:
    """The frame's labelled boxes lifted with its depth (ids are the label file's)."""
    labels = json.loads((frame_dir / 'labels.json').read_text())
    raw = np.asarray(Image.open(frame_dir / labels['depth']))
    depth = raw.astype(np.float32) * np.float32(labels['depth_scale'])
    depth[raw == 0] = np.nan
    intrinsics = CameraIntrinsics(**labels['intrinsics'])
    boxes = [PixelBox(*map(float, item['bbox'])) for item in labels['objects']]
    lifts = lift_boxes(depth, intrinsics, boxes)
    return [
        SpatialObject(item['id'], item['label'], 1.0, box, lifted)
        for item, box, lifted in zip(labels['objects'], boxes, lifts, strict=True)
    ]


def scene_bytes(objects: list[SpatialObject], relations: list, relation_frame: str) -> int:
    scene = Scene(1, 'camera', 'camera', objects, relations, relation_frame, 'bench', 'recorded')
    record = {k: v for k, v in scene_to_dict(scene).items() if k not in TIMINGS}
    return len(json.dumps(record, separators=(',', ':')))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--per-object', type=int, default=RelationConfig.per_object)
    args = parser.parse_args()
    full = RelationConfig(mode=FULL)
    compact = RelationConfig(mode=COMPACT, per_object=args.per_object)
    print(f'compact: {args.per_object} nearest neighbours per object\n')
    print(
        '| frame | objects | full, camera view | compact, camera view | '
        'compact, level body frame |'
    )
    print('|---|---|---|---|---|')
    for frame_dir in sorted(path.parent for path in DATA.glob('*/labels.json')):
        objects = frame_objects(frame_dir)
        cells = []
        for config, transform, frame in (
            (full, None, 'camera'),
            (compact, None, 'camera'),
            (compact, T_BODY_FROM_OPTICAL, 'base_link'),
        ):
            relations = compute_relations(objects, config, transform)
            size = scene_bytes(objects, relations, frame)
            cells.append(f'{len(relations)} relations, {size:,} B')
        print(f'| {frame_dir.name} | {len(objects)} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
