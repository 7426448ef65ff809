# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The shipped sample bag (data/sample_bag): faithful to its real source frames, consistent
with its recording of hand labels, rebuildable, and replayed into the committed golden scenes.

Regenerate the golden file after an intended change to lifting or relations with
``.venv/bin/python test/test_sample_bag.py --regenerate-golden`` and review the diff.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import sys

import cv2
import numpy as np
import pytest

from spatial_vlm_ros.core.image_decoding import decode_compressed_color
from spatial_vlm_ros.core.relations import neighbour_pairs
from spatial_vlm_ros.core.types import ABOVE, CONVERSE_PREDICATE, IN_FRONT_OF, LEFT_OF
from spatial_vlm_ros.engines.parsing import GroundingResult, parse_grounding
from spatial_vlm_ros.engines.recorded import RecordedEngine, load_recording
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.replay.bag_io import BagReader
from spatial_vlm_ros.replay.runner import SCENE_TOPIC, ReplayOptions, replay_bag
from spatial_vlm_ros.replay.sample_bag import (
    CAMERA_FRAME,
    DEPTH_TOPIC,
    INFO_TOPIC,
    RGB_COMPRESSED_TOPIC,
    SAMPLE_LAYOUT,
    build_sample_bag,
)

from conftest import REPO_ROOT

SAMPLE_BAG = REPO_ROOT / 'data' / 'sample_bag'
RECORDING = SAMPLE_BAG / 'recorded.jsonl'
SOURCE = REPO_ROOT / 'data' / 'rgbd'
GOLDEN = REPO_ROOT / 'test' / 'golden' / 'scenes.jsonl'
POSITION_TOLERANCE_M = 0.01
CONVERSE = CONVERSE_PREDICATE
FIRST = (LEFT_OF, ABOVE, IN_FRONT_OF)  # the predicates the compact set states
FRAME_NAMES = sorted(path.parent.name for path in SOURCE.glob('*/labels.json'))


def stamp_of(message) -> int:
    return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec


def labels_of(name: str) -> dict:
    return json.loads((SOURCE / name / 'labels.json').read_text())


@pytest.fixture(scope='module')
def bag_messages() -> dict[str, list]:
    with BagReader(SAMPLE_BAG) as reader:
        topics = {name: info.msgtype for name, info in reader.topics.items()}
        assert topics == {
            RGB_COMPRESSED_TOPIC: 'sensor_msgs/msg/CompressedImage',
            DEPTH_TOPIC: 'sensor_msgs/msg/Image',
            INFO_TOPIC: 'sensor_msgs/msg/CameraInfo',
        }
        return {topic: [m.message for m in reader.messages([topic])] for topic in topics}


def replay_sample(out_dir: Path):
    pipeline = SpatialPipeline(RecordedEngine(path=RECORDING), '', PipelineConfig())
    options = ReplayOptions(SAMPLE_BAG, out_dir, progress=False)
    return asyncio.run(replay_bag(options, pipeline))


@pytest.fixture(scope='module')
def replayed(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp('sample_replay')
    summary = replay_sample(out)
    assert not summary.interrupted and summary.frames_failed_to_decode == 0
    lines = (out / 'scenes.jsonl').read_text().splitlines()
    return out, [json.loads(line) for line in lines]


# ----------------------------------------------------------------------------- the bag


def test_sample_bag_is_small_and_frames_repeat_at_two_hertz(bag_messages):
    assert sum(p.stat().st_size for p in SAMPLE_BAG.iterdir() if p.is_file()) < 8 * 10**6
    rgb_stamps = [stamp_of(m) for m in bag_messages[RGB_COMPRESSED_TOPIC]]
    assert len(rgb_stamps) == len(FRAME_NAMES) * SAMPLE_LAYOUT.repeats
    assert set(np.diff(rgb_stamps)) == {500_000_000}
    depth_stamps = [stamp_of(m) for m in bag_messages[DEPTH_TOPIC]]
    assert len(depth_stamps) == len(rgb_stamps)
    # Depth trails RGB by a few ms, so pairing is approximate, not exact.
    assert all(0 < d - r < 50_000_000 for r, d in zip(rgb_stamps, depth_stamps, strict=True))
    for topic_messages in bag_messages.values():
        assert {m.header.frame_id for m in topic_messages} == {CAMERA_FRAME}


def test_sample_bag_frames_are_the_real_source_frames(bag_messages):
    repeats = SAMPLE_LAYOUT.repeats
    for index, name in enumerate(FRAME_NAMES):
        labels = labels_of(name)
        rgb_source = cv2.imread(str(SOURCE / name / 'color.png'))[:, :, ::-1]
        raw_depth = cv2.imread(str(SOURCE / name / 'depth.png'), cv2.IMREAD_UNCHANGED)
        expected_mm = np.rint(raw_depth * labels['depth_scale'] * 1000.0).astype(np.uint16)
        for repeat in range(repeats):
            position = index * repeats + repeat
            rgb = decode_compressed_color(bag_messages[RGB_COMPRESSED_TOPIC][position])
            # JPEG at quality 95, 4:4:4: close to, not equal to, the PNG source.
            assert cv2.PSNR(np.ascontiguousarray(rgb), np.ascontiguousarray(rgb_source)) > 38
            depth = bag_messages[DEPTH_TOPIC][position]
            assert depth.encoding == '16UC1' and (depth.height, depth.width) == raw_depth.shape
            depth_mm = np.frombuffer(depth.data, dtype='<u2').reshape(raw_depth.shape)
            assert np.array_equal(depth_mm, expected_mm), name  # TUM's 1/5000 m is now mm
            info = bag_messages[INFO_TOPIC][position]
            k = labels['intrinsics']
            assert list(info.k) == [k['fx'], 0, k['cx'], 0, k['fy'], k['cy'], 0, 0, 1]
            assert (info.width, info.height) == (k['width'], k['height'])


# ----------------------------------------------------------------------------- the recording


def test_recording_has_one_line_per_rgb_stamp_holding_that_frames_hand_labels(bag_messages):
    recorded = load_recording(RECORDING)
    rgb_stamps = [stamp_of(m) for m in bag_messages[RGB_COMPRESSED_TOPIC]]
    assert [line.stamp_ns for line in recorded] == rgb_stamps
    assert {line.model_id for line in recorded} == {'human-labels (NOT model output)'}
    raw_lines = [json.loads(line) for line in RECORDING.read_text().splitlines()]
    assert all('not model output' in line['source'] for line in raw_lines)
    for position, line in enumerate(recorded):
        name = FRAME_NAMES[position // SAMPLE_LAYOUT.repeats]
        labels = labels_of(name)
        assert line.text.startswith('```json\n[') and line.text.endswith(']\n```')
        parsed = parse_grounding(line.text, 640, 480)
        assert isinstance(parsed, GroundingResult) and not parsed.merged_duplicates
        detections = sorted(parsed.detections, key=lambda d: (d.box.x_min, d.box.y_min))
        objects = sorted(labels['objects'], key=lambda o: (o['bbox'][0], o['bbox'][1]))
        assert [d.label for d in detections] == [o['label'] for o in objects]
        for detection, obj in zip(detections, objects, strict=True):
            # 0-1000 integers: at most half a grid step (0.32 px at 640 px) off the label.
            assert detection.box.as_list() == pytest.approx(obj['bbox'], abs=0.33)


def test_readme_says_the_recording_is_human_labels():
    readme = (SAMPLE_BAG / 'README.md').read_text()
    assert 'not model output' in readme.lower()
    companion = (SAMPLE_BAG / 'recorded.jsonl.md').read_text()
    assert 'not model output' in companion.lower()


def test_rebuilding_gives_the_same_messages_and_recording(tmp_path, bag_messages):
    result = build_sample_bag(SOURCE, tmp_path / 'sample_bag')
    assert (tmp_path / 'sample_bag' / 'recorded.jsonl').read_bytes() == RECORDING.read_bytes()
    assert result.frames == len(FRAME_NAMES) and result.recording_lines == 16
    with BagReader(SAMPLE_BAG) as shipped, BagReader(result.bag_path) as rebuilt:
        assert [(c.topic, t, bytes(raw)) for c, t, raw in shipped.raw_messages()] == [
            (c.topic, t, bytes(raw)) for c, t, raw in rebuilt.raw_messages()
        ]


# ----------------------------------------------------------------------------- golden replay


def normalized(record: dict) -> dict:
    """A scene record without its run-dependent timings."""
    return {
        key: value
        for key, value in record.items()
        if key not in ('latency_ms', 'inference_ms', 'stages')
    }


def test_replay_reproduces_the_golden_scenes(replayed):
    _, scenes = replayed
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert len(scenes) == len(golden) == len(FRAME_NAMES) * SAMPLE_LAYOUT.repeats
    for scene, expected in zip(scenes, golden, strict=True):
        assert scene['stamp_ns'] == expected['stamp_ns']
        for key in (
            'schema_version',
            'frame_id',
            'camera_frame_id',
            'relation_frame_id',
            'camera_pose',
            'model_id',
            'engine',
        ):
            assert scene[key] == expected[key], key
        assert scene.get('error', '') == expected.get('error', '')
        for listing in ('objects', 'objects_without_position'):
            assert [(o['id'], o['label']) for o in scene[listing]] == [
                (o['id'], o['label']) for o in expected[listing]
            ]
        located = zip(scene['objects'], expected['objects'], strict=True)
        for obj, want in located:
            assert obj['bbox'] == pytest.approx(want['bbox'], abs=0.01)
            assert obj['position'] == pytest.approx(want['position'], abs=POSITION_TOLERANCE_M)
            assert obj['range'] == pytest.approx(want['range'], abs=POSITION_TOLERANCE_M)
            assert obj['orientation'] == want['orientation']
        for obj in scene['objects_without_position']:
            assert obj['position'] is None and obj['range'] is None
        relations = {(r['subject'], r['predicate'], r['object']) for r in scene['relations']}
        assert relations == {
            (r['subject'], r['predicate'], r['object']) for r in expected['relations']
        }


def test_scenes_agree_with_the_labelled_relations_that_are_clear_in_the_image(replayed):
    """The compact relations of the replayed scenes never contradict a hand-labelled
    ``expected`` relation, and state each one whose pair is a nearest-neighbour pair (ids
    mapped through the box each label came from). test_real_frames checks the full set."""
    _, scenes = replayed
    for index, name in enumerate(FRAME_NAMES):
        labels = labels_of(name)
        scene = scenes[index * SAMPLE_LAYOUT.repeats]
        by_box = {tuple(round(v) for v in o['bbox']): o['id'] for o in scene['objects']}
        ids = {o['id']: by_box[tuple(o['bbox'])] for o in labels['objects']}
        found = {(r['subject'], r['predicate'], r['object']) for r in scene['relations']}
        order = sorted(o['id'] for o in scene['objects'])
        positions = np.array([next(o['position'] for o in scene['objects'] if o['id'] == i)
                              for i in order])  # fmt: skip
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        candidates = {frozenset((order[i], order[j])) for i, j in neighbour_pairs(distances, 3)}
        stated = 0
        for subject, predicate, other in labels['expected']:
            s, o = ids[subject], ids[other]
            canonical = (s, predicate, o) if predicate in FIRST else (o, CONVERSE[predicate], s)
            assert (s, CONVERSE[predicate], o) not in found, (name, subject, predicate, other)
            assert (o, predicate, s) not in found, (name, subject, predicate, other)
            if canonical[1] != ABOVE and frozenset((s, o)) in candidates:
                assert canonical in found, (name, subject, predicate, other)
                stated += 1
        assert stated, f'{name}: no labelled relation among the compact pairs'


def test_replayed_objects_have_the_depth_of_an_object_of_their_size(replayed):
    """An independent check of the golden positions: each object's box, back-projected at its
    lifted depth, has the physical size of its class (test_real_frames.CLASS_EXTENT_M)."""
    from test_real_frames import CLASS_EXTENT_M

    _, scenes = replayed
    for index, name in enumerate(FRAME_NAMES):
        intrinsics = labels_of(name)['intrinsics']
        scene = scenes[index * SAMPLE_LAYOUT.repeats]
        assert scene['objects'] and not scene['objects_without_position']
        for obj in scene['objects']:
            x_min, y_min, x_max, y_max = obj['bbox']
            z = obj['position'][2]
            extent = max(
                (x_max - x_min) * z / intrinsics['fx'], (y_max - y_min) * z / intrinsics['fy']
            )
            low, high = CLASS_EXTENT_M[obj['label']]
            assert low <= extent <= high, (name, obj['id'], z, extent)


def test_output_bag_scenes_deserialize_with_rclpy_and_match_the_jsonl(replayed):
    from rclpy.serialization import deserialize_message

    from spatial_vlm_ros.msg import SpatialScene

    out, scenes = replayed
    with BagReader(out / 'scenes_bag') as reader:
        raws = [bytes(raw) for _, _, raw in reader.raw_messages([SCENE_TOPIC])]
    assert len(raws) == len(scenes)
    for raw, record in zip(raws, scenes, strict=True):
        message = deserialize_message(raw, SpatialScene)
        assert stamp_of(message) == record['stamp_ns']
        assert message.model_id == record['model_id'] and message.engine == 'recorded'
        assert [o.id for o in message.objects] == [o['id'] for o in record['objects']]
        assert len(message.relations) == len(record['relations'])


def regenerate_golden() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        replay_sample(Path(scratch))
        lines = (Path(scratch) / 'scenes.jsonl').read_text().splitlines()
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(
        ''.join(json.dumps(normalized(json.loads(line)), separators=(',', ':')) + '\n'
                for line in lines)
    )  # fmt: skip
    print(f'wrote {GOLDEN} ({len(lines)} scenes)')


if __name__ == '__main__':
    if sys.argv[1:] != ['--regenerate-golden']:
        sys.exit('usage: test_sample_bag.py --regenerate-golden')
    regenerate_golden()


def test_with_the_memory_the_first_scene_has_the_golden_ids_and_repeats_keep_theirs(tmp_path):
    """The CLI's default: ids through the object memory (camera frame: no target frame). The
    first scene's ids equal the per-frame ids of the golden file, and a repeated frame keeps its
    scene's ids (the memory's design decision, docs/MEMORY.md)."""
    from spatial_vlm_ros.core.memory import ObjectMemory

    pipeline = SpatialPipeline(
        RecordedEngine(path=RECORDING), '', PipelineConfig(), memory=ObjectMemory('')
    )
    summary = asyncio.run(
        replay_bag(ReplayOptions(SAMPLE_BAG, tmp_path, progress=False), pipeline)
    )
    assert summary.remembered_objects == len(pipeline.memory)
    scenes = [json.loads(line) for line in (tmp_path / 'scenes.jsonl').read_text().splitlines()]
    golden = [json.loads(line) for line in GOLDEN.read_text().splitlines()]

    def ids(record: dict) -> list[tuple[str, str]]:
        listed = record['objects'] + record['objects_without_position']
        return sorted((o['id'], o['label']) for o in listed)

    assert ids(scenes[0]) == ids(golden[0])
    repeats = SAMPLE_LAYOUT.repeats
    for start in range(0, len(scenes), repeats):
        group = [ids(scene) for scene in scenes[start : start + repeats]]
        assert all(item == group[0] for item in group), start
    assert pipeline.memory.memory_frame == scenes[0]['camera_frame_id']
