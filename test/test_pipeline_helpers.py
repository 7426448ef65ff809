# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Pure helpers of the pipeline: vocabulary normalization and the relation frame's transform of
a snapshot. (Description matching moved to core/referring.py: test_referring, test_mentions.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from spatial_vlm_ros.core.tf_buffer import TransformBuffer
from spatial_vlm_ros.core.transforms import T_BODY_FROM_OPTICAL
from spatial_vlm_ros.core.types import Scene
from spatial_vlm_ros.pipeline import normalize_vocabulary, relation_transform

CAMERA = 'camera_color_optical_frame'


def test_vocabulary_is_stripped_deduplicated_and_empty_means_everything() -> None:
    assert normalize_vocabulary(['']) == ()
    assert normalize_vocabulary(None) == ()
    assert normalize_vocabulary([' mug ', 'chair', 'mug', '  ']) == ('mug', 'chair')


def test_the_relation_transform_is_looked_up_at_the_scene_stamp() -> None:
    buffer = TransformBuffer()
    buffer.set_transform('base_link', CAMERA, 0, (0.0, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5), True)
    in_view = Scene(5, CAMERA, CAMERA, relation_frame_id=CAMERA)
    assert relation_transform(in_view, buffer) is None  # relations in the camera view
    body = replace(in_view, relation_frame_id='base_link')
    expected = T_BODY_FROM_OPTICAL.copy()
    expected[2, 3] = 1.2
    np.testing.assert_allclose(relation_transform(body, buffer), expected, atol=1e-12)
    assert relation_transform(body, None) is None  # no TF: read in the scene's frame
    assert relation_transform(replace(body, relation_frame_id='map'), buffer) is None
