# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``spatial-vlm replay --target-frame`` with the bag's own /tf and /tf_static: positions in the
target frame at each image stamp (interpolated between TF samples), the memory's ids in
scenes.jsonl, the memory in the output MCAP (read back with rclpy) and in the report, the
memory file; and a bag without the transform, which says why."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from spatial_vlm_ros import cli
from spatial_vlm_ros.core.memory import ObjectMemory
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    apply_transform,
    compose,
    make_transform,
    quaternion_from_rotation,
)
from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline
from spatial_vlm_ros.replay.bag_io import BagReader, BagTransforms
from spatial_vlm_ros.replay.runner import (
    MEMORY_MARKERS_TOPIC,
    OBJECTS_TOPIC,
    ReplayOptions,
    replay_bag,
)
from spatial_vlm_ros.replay.sample_bag import (
    BagLayout,
    TfSample,
    synthetic_frame,
    write_recording,
    write_rgbd_bag,
)

FRAMES = (synthetic_frame('a', seed=1), synthetic_frame('b', seed=2))
LAYOUT = BagLayout(repeats=3, rate_hz=2.0, compressed_rgb=False)
CAMERA = LAYOUT.frame_id
SPEED_M_S = 0.1  # base_link moves along world x
CAMERA_HEIGHT_M = 0.5


def world_from_base(stamp_ns: int) -> np.ndarray:
    return make_transform(
        (SPEED_M_S * (stamp_ns - LAYOUT.start_ns) / 1e9, 2.0, 0.0),
        np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # yaw 90 degrees
    )


BASE_FROM_CAMERA = compose(
    make_transform((0.1, 0.0, CAMERA_HEIGHT_M), np.eye(3)), T_BODY_FROM_OPTICAL
)


def tf_samples() -> list[TfSample]:
    """/tf at 10 Hz from 0.05 s before the first image (never at an image stamp, so every
    lookup interpolates), and the static camera mount on /tf_static."""
    samples = [
        TfSample(
            0,
            'base_link',
            CAMERA,
            tuple(BASE_FROM_CAMERA[:3, 3]),
            tuple(quaternion_from_rotation(BASE_FROM_CAMERA[:3, :3])),
            static=True,
        )
    ]
    end = LAYOUT.start_ns + len(FRAMES) * LAYOUT.repeats * LAYOUT.period_ns + 10**9
    stamp = LAYOUT.start_ns - 50_000_000
    while stamp < end:
        pose = world_from_base(stamp)
        samples.append(
            TfSample(
                stamp,
                'world',
                'base_link',
                tuple(pose[:3, 3]),
                tuple(quaternion_from_rotation(pose[:3, :3])),
            )
        )
        stamp += 100_000_000
    return samples


def make_bag(tmp_path: Path, with_tf: bool = True) -> tuple[Path, Path]:
    bag = write_rgbd_bag(tmp_path / 'bag', FRAMES, LAYOUT, tf_samples() if with_tf else ())
    recording = tmp_path / 'recorded.jsonl'
    write_recording(recording, FRAMES, LAYOUT)
    return bag, recording


def replay(bag: Path, recording: Path, out: Path, *flags: str) -> list[dict]:
    status = cli.main(
        ['replay', str(bag), '-o', str(out), '--recording', str(recording), '--quiet', *flags]
    )
    assert status == cli.EXIT_OK
    return [json.loads(line) for line in (out / 'scenes.jsonl').read_text().splitlines()]


def test_replay_puts_positions_in_the_target_frame_with_the_bags_tf_and_keeps_memory_ids(
    tmp_path, capsys
):
    bag, recording = make_bag(tmp_path)
    memory_file = tmp_path / 'memory.json'
    scenes = replay(
        bag, recording, tmp_path / 'world', '--target-frame', 'world',
        '--memory-file', str(memory_file),
    )  # fmt: skip
    printed = capsys.readouterr().out
    in_camera = replay(bag, recording, tmp_path / 'camera', '--no-memory')
    assert len(scenes) == len(in_camera) == 6
    assert 'object memory: 2 objects remembered in world' in printed
    for scene, reference in zip(scenes, in_camera, strict=True):
        assert scene['frame_id'] == 'world' and reference['frame_id'] == CAMERA
        assert not scene.get('warnings')
        expected = compose(world_from_base(int(scene['stamp_ns'])), BASE_FROM_CAMERA)
        np.testing.assert_allclose(scene['camera_pose']['position'], expected[:3, 3], atol=1e-5)
        by_label = {obj['label']: obj for obj in reference['objects']}
        for obj in scene['objects']:
            camera_position = np.array(by_label[obj['label']]['position'])
            np.testing.assert_allclose(
                obj['position'], apply_transform(expected, camera_position), atol=2e-3
            )
        # The memory's ids: each object keeps its id while the robot drives (5 cm a frame).
        assert sorted(obj['id'] for obj in scene['objects']) == ['book_0', 'cup_0']
        assert {r['subject'] for r in scene['relations']} <= {'book_0', 'cup_0'}

    # The memory in the MCAP, read back with rclpy: the whole memory after every scene.
    from rclpy.serialization import deserialize_message

    from spatial_vlm_ros.msg import ObjectMemory as ObjectMemoryMsg

    with BagReader(tmp_path / 'world' / 'scenes_bag') as reader:
        raw = [data for _, _, data in reader.raw_messages([OBJECTS_TOPIC])]
        assert reader.topics[MEMORY_MARKERS_TOPIC].message_count == 6
    assert len(raw) == 6
    last = deserialize_message(raw[-1], ObjectMemoryMsg)
    assert last.header.frame_id == 'world'
    assert [(o.id, o.sightings, o.confirmed) for o in last.objects] == [
        ('book_0', 6, True),
        ('cup_0', 6, True),
    ]
    # The saved memory holds the same objects, and the report shows its map.
    saved = ObjectMemory.load(memory_file)
    assert saved.memory_frame == 'world'
    assert [item.id for item in saved.objects()] == ['book_0', 'cup_0']
    report = (tmp_path / 'world' / 'report.html').read_text()
    assert 'id="memory-map"' in report and '2 remembered objects in world' in report


def test_replay_without_the_transform_says_why_and_stays_in_the_camera_frame(tmp_path):
    bag, recording = make_bag(tmp_path, with_tf=False)

    values = {'engine': 'recorded', 'recording': str(recording), 'target_frame': 'world'}
    pipeline = SpatialPipeline.from_settings(PipelineSettings.from_parameters(values))
    options = ReplayOptions(bag=bag, out_dir=tmp_path / 'out', progress=False)
    summary = asyncio.run(replay_bag(options, pipeline))
    scenes = [
        json.loads(line) for line in (tmp_path / 'out' / 'scenes.jsonl').read_text().splitlines()
    ]
    assert {scene['frame_id'] for scene in scenes} == {CAMERA}
    assert any("'world' does not exist" in warning for warning in summary.warnings)
    # No transform to the memory frame (the target frame): nothing is remembered.
    assert summary.remembered_objects == 0


def test_bag_transforms_read_ahead_and_interpolate(tmp_path):
    bag, _ = make_bag(tmp_path)
    with BagTransforms(bag) as transforms:
        assert transforms.topics == ('/tf', '/tf_static')
        for offset_ns in (0, 250_000_000, 2_400_000_000):
            stamp = LAYOUT.start_ns + offset_ns
            result = transforms.lookup('world', CAMERA, stamp)
            assert result.matrix is not None, result.reason
            expected = compose(world_from_base(stamp), BASE_FROM_CAMERA)
            np.testing.assert_allclose(result.matrix, expected, atol=1e-9)
        beyond = transforms.lookup('world', CAMERA, LAYOUT.start_ns + 60 * 10**9)
        assert beyond.matrix is None and 'extrapolation into the future' in beyond.reason
    with BagTransforms(make_bag(tmp_path / 'plain', with_tf=False)[0]) as none:
        assert none.topics == () and none.lookup('world', CAMERA, 0).matrix is None


@pytest.mark.parametrize('flag', ['--memory-frame', '--target-frame'])
def test_memory_frame_flag_alone_keeps_scenes_in_the_camera_frame(tmp_path, flag):
    bag, recording = make_bag(tmp_path)
    memory_file = tmp_path / 'memory.json'
    scenes = replay(
        bag, recording, tmp_path / 'out', flag, 'world', '--memory-file', str(memory_file)
    )
    expected_frame = 'world' if flag == '--target-frame' else CAMERA
    assert {scene['frame_id'] for scene in scenes} == {expected_frame}
    saved = ObjectMemory.load(memory_file)
    assert saved.memory_frame == 'world' and len(saved) == 2
