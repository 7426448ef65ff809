# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The memory benchmark's scoring, and the memory's done-when targets on the real 7-Scenes
sequence (shared data next to the clone; skipped with the reason when it is not there): the
memory core fed directly, and ``spatial-vlm replay --target-frame world`` on a bag of it."""

from __future__ import annotations

import pytest

from bench.bench_memory import (
    ObjectMemory,
    Sequence7Scenes,
    Sighting,
    build_bag,
    find_sequence,
    run_memory,
    run_replay,
    score_sightings,
)


def test_scoring_counts_purity_switches_collisions_and_returns():
    sightings = [
        Sighting(0, 'mug_a', 'mug_0', (0.0, 0.0, 1.0)),
        Sighting(0, 'mug_b', 'mug_0', (1.0, 0.0, 1.0)),  # same id twice in one frame
        Sighting(10, 'mug_a', 'mug_0', (0.1, 0.0, 1.0)),
        Sighting(10, 'mug_b', 'mug_1', (1.0, 0.0, 1.0)),
        Sighting(30, 'mug_a', 'mug_0', (0.0, 0.0, 1.0)),  # back after frame 20
        Sighting(30, 'mug_b', 'mug_2', None),
    ]
    score = score_sightings(sightings, [0, 10, 20, 30])
    mug_a, mug_b = score.objects['mug_a'], score.objects['mug_b']
    assert (mug_a.majority_id, mug_a.majority_count, mug_a.switches) == ('mug_0', 3, 0)
    assert (mug_a.returns, mug_a.returns_same_id) == (1, 1)
    assert mug_b.switches == 2 and mug_b.majority_count == 1
    assert score.majority_sightings == 4 and score.sightings == 6
    assert score.same_frame_collisions == 1
    assert score.shared_ids == {'mug_0': ['mug_a', 'mug_b']}
    assert mug_a.spread_m[1] == pytest.approx(0.1)  # median (0, 0, 1); one sighting 0.1 m off


def test_done_when_targets_on_the_real_sequence():
    root = find_sequence(None)
    if root is None:
        pytest.skip('the shared 7scenes_redkitchen sequence is not next to this clone')
    data = Sequence7Scenes.load(root)
    result = run_memory(data, ObjectMemory('world'))
    score = score_sightings(result.sightings, [frame.index for frame in data.frames])
    assert score.same_frame_collisions == 0 and score.shared_ids == {}
    assert score.majority_sightings >= 0.9 * score.sightings
    returns = [(row.returns, row.returns_same_id) for row in score.objects.values()]
    assert sum(total for total, _ in returns) >= 5  # five objects leave the view and come back
    assert all(total == same for total, same in returns)


def test_done_when_targets_through_the_replay_with_the_bags_tf(tmp_path):
    root = find_sequence(None)
    if root is None:
        pytest.skip('the shared 7scenes_redkitchen sequence is not next to this clone')
    inputs = build_bag(root, tmp_path)
    run = run_replay(inputs, tmp_path / 'out')
    labelled = sorted(inputs.frame_of_stamp.values())
    assert len(run.scenes) == len(labelled) == 30
    assert run.frames_in_target == 30  # every scene in the target frame, from the bag's /tf
    score = score_sightings(run.sightings, labelled)
    assert score.sightings == 126
    assert score.same_frame_collisions == 0 and score.shared_ids == {}
    assert score.majority_sightings >= 0.9 * score.sightings
    returns = [(row.returns, row.returns_same_id) for row in score.objects.values()]
    assert sum(total for total, _ in returns) >= 5
    assert all(total == same for total, same in returns)
    # The memory the MCAP carries: one remembered object per true object, in the world frame,
    # its fused position near where its sightings were.
    assert len(run.remembered) == len(score.objects) == 8
    fused = {item.id: item for item in run.remembered}
    for row in score.objects.values():
        offset = fused[row.majority_id].position - row.median_position
        assert float((offset**2).sum() ** 0.5) < 0.15, row.truth
    # Without the memory (per-frame ids) the same replay gives one id to two objects.
    baseline = run_replay(inputs, tmp_path / 'no_memory', '--no-memory')
    assert score_sightings(baseline.sightings, labelled).shared_ids
