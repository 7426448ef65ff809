# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Pure helpers of the pipeline: vocabulary normalization and description matching."""

from __future__ import annotations

import numpy as np

from spatial_vlm_ros.core.types import Lifted3D, PixelBox, Scene, SpatialObject
from spatial_vlm_ros.pipeline import find_best_match, normalize_vocabulary


def test_vocabulary_is_stripped_deduplicated_and_empty_means_everything() -> None:
    assert normalize_vocabulary(['']) == ()
    assert normalize_vocabulary(None) == ()
    assert normalize_vocabulary([' mug ', 'chair', 'mug', '  ']) == ('mug', 'chair')


def _object(object_id: str, label: str, positioned: bool = True) -> SpatialObject:
    position = np.array([0.0, 0.0, 1.0]) if positioned else None
    return SpatialObject(
        object_id, label, 0.9, PixelBox(0, 0, 10, 10), Lifted3D(position, None, None, 1.0)
    )


def test_best_match_prefers_exact_then_contained_labels() -> None:
    scene = Scene(1, 'cam', 'cam', [_object('red_mug_0', 'red mug'), _object('mug_0', 'mug')])
    assert find_best_match(scene, 'Mug').id == 'mug_0'
    assert find_best_match(scene, 'Red  Mug').id == 'red_mug_0'
    assert find_best_match(scene, 'coffee mug').id == 'mug_0'
    assert find_best_match(scene, 'giraffe') is None
    assert find_best_match(None, 'mug') is None
