# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The allocator tuning the node and the CLI apply: per-frame arrays stop costing page faults."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

# A frame's work as the node does it: decode a 640x480 depth image (a new 1.2 MB array) and lift
# 20 boxes on it, 10 times after a first frame; prints the minor page faults those frames took,
# with the allocator tuned or not.
PROBE = """
import resource, sys
import numpy as np
from test_lifting_equivalence import K, cluttered_scene
from spatial_vlm_ros.core.lifting import lift_boxes
from spatial_vlm_ros.runtime import tune_memory_allocator
if sys.argv[1] == 'tuned':
    assert tune_memory_allocator()
depth, boxes = cluttered_scene(np.random.default_rng(0), objects=20)
codes = np.nan_to_num(depth * 1000.0).astype(np.uint16)
def frame():
    return lift_boxes(codes.astype(np.float32) / np.float32(1000.0), K, boxes)
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, '-c', PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='mallopt is glibc only')
def test_tuned_allocator_keeps_frame_memory_between_frames():
    untuned, tuned = page_faults('default'), page_faults('tuned')
    assert untuned > 10 * 300  # fresh pages for the same arrays, frame after frame
    assert tuned < 10 * 20
