# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The allocator tuning the node and the CLI apply: per-frame arrays stop costing page faults."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import pytest

# Frame-sized numpy temporaries, as float-depth decoding and range checks make them: decode a
# 640x480 16-bit depth image (a new 1.2 MB array) and run numpy passes over the whole image
# (several frame-sized arrays alive at once), 10 times after a first frame; prints the minor page
# faults those frames took, with the allocator tuned or not, in a fresh process (glibc's default
# thresholds; its dynamic threshold may rise once a large block is freed, so a bigger process
# can be spared by luck). With 'lift', each frame also lifts 20 boxes, as the node does (the
# compiled lifter itself allocates little: docs/PERFORMANCE.md).
PROBE = """
import resource, sys
import numpy as np
from spatial_vlm_ros.runtime import tune_memory_allocator
if sys.argv[1] == 'tuned':
    assert tune_memory_allocator()
lift = sys.argv[2] == 'lift'
if lift:
    from test_lifting_equivalence import K, cluttered_scene
    from spatial_vlm_ros.core.lifting import lift_boxes, warm_up
    warm_up()
    depth, boxes = cluttered_scene(np.random.default_rng(0), objects=20)
    codes = np.nan_to_num(depth * 1000.0).astype(np.uint16)
else:
    codes = np.random.default_rng(0).integers(0, 4000, (480, 640)).astype(np.uint16)
def frame():
    decoded = codes.astype(np.float32) / np.float32(1000.0)
    valid = (decoded >= 0.1) & (decoded <= 10.0)
    metres = np.where(valid, decoded, np.nan).astype(np.float64)
    assert np.isfinite(np.log(np.minimum(metres, 3.3))).any()
    if lift:
        lift_boxes(decoded, K, boxes)
frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    frame()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str, work: str) -> int:
    result = subprocess.run(
        [sys.executable, '-c', PROBE, mode, work],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='mallopt is glibc only')
def test_tuned_allocator_keeps_frame_memory_between_frames():
    untuned, tuned = page_faults('default', 'numpy'), page_faults('tuned', 'numpy')
    assert untuned > 10 * 300  # fresh pages for the same arrays, frame after frame
    assert tuned < 10 * 20
    assert page_faults('tuned', 'lift') < 10 * 20  # and with the lifter in the frame
