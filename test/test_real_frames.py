# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Real Kinect frames (TUM RGB-D, NYU Depth V2) with hand-labelled boxes and visible orderings.

data/rgbd/*/labels.json lists objects boxed by hand and relations that can be seen in each image
(data/rgbd/PROVENANCE.md). Each object must lift to a plausible 3D position, and each listed
relation must come out of the relation module, never its converse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from spatial_vlm_ros.core.lifting import lift_boxes
from spatial_vlm_ros.core.relations import FULL, RelationConfig, compute_relations
from spatial_vlm_ros.core.types import (
    CONVERSE_PREDICATE,
    PREDICATES,
    CameraIntrinsics,
    PixelBox,
    SpatialObject,
)

DATA = Path(__file__).resolve().parents[1] / 'data' / 'rgbd'
FRAMES = sorted(path.parent.name for path in DATA.glob('*/labels.json'))


def load(frame: str) -> tuple[dict, np.ndarray, np.ndarray, CameraIntrinsics]:
    labels = json.loads((DATA / frame / 'labels.json').read_text())
    rgb = np.asarray(Image.open(DATA / frame / labels['image']))
    raw = np.asarray(Image.open(DATA / frame / labels['depth']))
    assert raw.dtype == np.uint16, 'depth is stored as 16-bit PNG in its original units'
    depth = raw.astype(np.float32) * np.float32(labels['depth_scale'])
    depth[raw == 0] = np.nan
    intrinsics = CameraIntrinsics(**labels['intrinsics'])
    return labels, rgb, depth, intrinsics


def lifted_objects(frame: str) -> list[SpatialObject]:
    """The frame's labelled boxes, lifted together as the pipeline does (lift_boxes)."""
    labels, _, depth, intrinsics = load(frame)
    boxes = [PixelBox(*map(float, item['bbox'])) for item in labels['objects']]
    return [
        SpatialObject(item['id'], item['label'], 1.0, box, lifted)
        for item, box, lifted in zip(
            labels['objects'], boxes, lift_boxes(depth, intrinsics, boxes), strict=True
        )
    ]


def test_the_four_frames_are_there():
    assert FRAMES == ['nyu_dining_1', 'nyu_dining_3', 'tum_desk', 'tum_office']
    total = sum(path.stat().st_size for path in DATA.rglob('*') if path.is_file())
    assert total < 3 * 1024 * 1024


@pytest.mark.parametrize('frame', FRAMES)
def test_labels_are_well_formed(frame):
    labels, rgb, depth, intrinsics = load(frame)
    assert rgb.shape == (intrinsics.height, intrinsics.width, 3)
    assert depth.shape == (intrinsics.height, intrinsics.width)
    assert labels['frame_id'] == 'camera_color_optical_frame'
    assert labels['labeler'].startswith('human')
    ids = [item['id'] for item in labels['objects']]
    assert len(ids) == len(set(ids)) and 4 <= len(ids) <= 8
    for item in labels['objects']:
        x_min, y_min, x_max, y_max = item['bbox']
        assert 0 <= x_min < x_max <= intrinsics.width and 0 <= y_min < y_max <= intrinsics.height
    assert labels['expected']
    for subject, predicate, other in labels['expected']:
        assert subject in ids and other in ids and subject != other
        assert predicate in PREDICATES


# Physical size of each labelled class, metres: the range its largest visible extent (width or
# height facing the camera) falls in for real objects of that kind. Independent of the depth
# image, so a lift to the wrong depth (background, an occluder, the floor) shows up as an object
# of impossible size: the box's pixel extent back-projected at the lifted depth.
CLASS_EXTENT_M = {
    'armchair': (0.6, 1.5),
    'china cabinet': (0.8, 2.2),
    'chair': (0.35, 1.1),
    'office chair': (0.5, 1.3),
    'dresser': (0.6, 2.0),
    'sideboard': (0.6, 2.0),
    'monitor': (0.3, 0.8),
    'keyboard': (0.35, 0.55),
    'computer mouse': (0.06, 0.14),
    'mug': (0.07, 0.16),
    'blue cup': (0.07, 0.16),
    'coke can': (0.1, 0.18),
    'tape roll': (0.08, 0.2),
    'teddy bear': (0.15, 0.6),
    'globe': (0.25, 0.6),
    'striped folder': (0.2, 0.4),
    'yellow die': (0.1, 0.3),
    'plastic bag': (0.2, 0.7),
    'toy airplane': (0.15, 0.5),
}


@pytest.mark.parametrize('frame', FRAMES)
def test_objects_lift_to_the_depth_of_an_object_of_their_size(frame):
    _, _, _, intrinsics = load(frame)
    for item in lifted_objects(frame):
        lifted = item.lifted
        assert lifted.position is not None, f'{frame}/{item.id}: no position'
        z = float(lifted.position[2])
        extent = max(item.box.width * z / intrinsics.fx, item.box.height * z / intrinsics.fy)
        low, high = CLASS_EXTENT_M[item.label]
        assert low <= extent <= high, (
            f'{frame}/{item.id}: a {item.label} lifted to {z:.2f} m would be {extent:.2f} m '
            f'across (real ones: {low}-{high} m)'
        )
        sigmas = np.sqrt(np.diag(lifted.covariance))
        assert np.all(sigmas > 0.0) and np.all(sigmas < 0.5), f'{frame}/{item.id}: {sigmas}'
        assert 0.0 < lifted.valid_depth_ratio <= 1.0


@pytest.mark.parametrize('frame', FRAMES)
def test_visible_orderings_hold(frame):
    labels, *_ = load(frame)
    objects = lifted_objects(frame)
    found = {
        (relation.subject, relation.predicate, relation.object): relation
        for relation in compute_relations(objects, RelationConfig(mode=FULL))
    }
    compact = {(r.subject, r.predicate, r.object) for r in compute_relations(objects)}
    for subject, predicate, other in labels['expected']:
        assert (subject, predicate, other) in found, (
            f'{frame}: missing {subject} {predicate} {other}'
        )
        assert (subject, CONVERSE_PREDICATE[predicate], other) not in found
        assert (other, CONVERSE_PREDICATE[predicate], subject) in found
        assert found[(subject, predicate, other)].confidence > 0.97
        # The compact set may leave the pair out, never state it the other way round.
        assert (subject, CONVERSE_PREDICATE[predicate], other) not in compact
        assert (other, predicate, subject) not in compact
