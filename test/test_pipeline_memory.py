# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The object memory inside the pipeline, without ROS: ids through the memory (the first frame
numbered like the per-frame ordinals, later frames keeping them), association in the memory
frame before the move to the target frame, TF lookups at the image stamp, when a frame gives
negative evidence, the memory file, and the settings rows."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spatial_vlm_ros.core.memory import (
    MemoryConfig,
    ObjectMemory,
    ObjectMemoryError,
    ObjectState,
    objects_in_frame,
)
from spatial_vlm_ros.core.tf_buffer import TransformBuffer
from spatial_vlm_ros.core.transforms import (
    apply_transform,
    invert_transform,
    make_transform,
    quaternion_from_rotation,
)
from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    Detection,
    PixelBox,
    RgbdFrame,
)
from spatial_vlm_ros.engines.base import FLAG_NO_RECORDING, EngineResponse
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.engines.results import GroundingResult
from spatial_vlm_ros.pipeline import (
    MemoryInput,
    MemorySettings,
    PipelineConfig,
    PipelineSettings,
    SpatialPipeline,
    assign_ids,
    build_scene,
    open_memory,
)
from spatial_vlm_ros.replay.sample_bag import LabeledBox, grounding_text

WIDTH, HEIGHT = 320, 240
INTRINSICS = CameraIntrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=WIDTH, height=HEIGHT)
CAMERA = 'cam_optical'
WORLD = 'world'
WALL_M = 4.0
START_NS = 1_767_225_600 * 10**9
PERIOD_NS = 200_000_000


def stamp(index: int) -> int:
    return START_NS + index * PERIOD_NS


def frame_of(
    objects: list[tuple[str, PixelBox, float | None]], index: int = 0
) -> tuple[RgbdFrame, EngineResponse]:
    """A static camera's frame: a wall, each object a patch of constant depth (None: no valid
    depth in its box), and the model's answer listing the objects in the given order."""
    depth = np.full((HEIGHT, WIDTH), WALL_M, dtype=np.float32)
    for _, box, depth_m in objects:
        rows = slice(int(box.y_min), int(box.y_max))
        columns = slice(int(box.x_min), int(box.x_max))
        depth[rows, columns] = np.nan if depth_m is None else depth_m
    rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame = RgbdFrame(stamp(index), CAMERA, rgb, depth, INTRINSICS, INTRINSICS)
    detections = tuple(Detection(label, box) for label, box, _ in objects)
    return frame, EngineResponse('', GroundingResult(detections), engine='test')


def scene_ids(scene) -> dict[tuple[str, float], str]:
    """(label, box centre x) -> id, so a test names objects by where they are."""
    return {(obj.label, round(obj.box.center[0])): obj.id for obj in scene.objects}


def identity_memory_input(memory: ObjectMemory, **kwargs) -> MemoryInput:
    return MemoryInput(memory, np.eye(4), **kwargs)


MUG_LEFT = PixelBox(40, 100, 70, 140)
MUG_MIDDLE = PixelBox(140, 100, 170, 140)
MUG_RIGHT = PixelBox(240, 100, 270, 140)
MUG_NEW = PixelBox(10, 160, 30, 190)  # enters later, leftmost
BOOK = PixelBox(180, 160, 230, 200)


def test_first_frame_ids_equal_the_ordinals_and_later_frames_keep_them():
    """The design decision: with a memory, ids created in one frame are numbered left to right
    (the left mug has no depth and is numbered in its place all the same), so the first frame's
    ids equal the per-frame ordinals; later, a new mug on the left gets a new id instead of
    renumbering the others as the ordinals do."""
    memory = ObjectMemory(CAMERA)
    # The model lists them in no particular order.
    first = [
        ('mug', MUG_RIGHT, 2.0),
        ('book', BOOK, 2.5),
        ('mug', MUG_LEFT, None),
        ('mug', MUG_MIDDLE, 2.0),
    ]
    frame, response = frame_of(first)
    scene = build_scene(frame, response, PipelineConfig(), memory=identity_memory_input(memory))
    ordinals = assign_ids([Detection(label, box) for label, box, _ in first])
    assert scene_ids(scene) == {
        (label, round(box.center[0])): key
        for (label, box, _), key in zip(first, ordinals, strict=True)
    }
    assert scene_ids(scene)[('mug', 55)] == 'mug_0'  # no position, still numbered first
    assert len(scene.objects_without_position) == 1
    assert not math.isnan(scene.timings.memory_ms)
    # Relations name the memory's ids.
    assert {r.subject for r in scene.relations} <= {obj.id for obj in scene.objects}

    second = [*first, ('mug', MUG_NEW, 1.5)]
    frame, response = frame_of(second, index=1)
    scene = build_scene(frame, response, PipelineConfig(), memory=identity_memory_input(memory))
    ids = scene_ids(scene)
    assert ids[('mug', 155)] == 'mug_1' and ids[('mug', 255)] == 'mug_2'  # kept
    assert ids[('mug', 20)] == 'mug_3'  # the newcomer: a new id, never a reused one
    # Per-frame ordinals would have renamed every mug (the v0.1 behaviour this replaces).
    renumbered = assign_ids([Detection(label, box) for label, box, _ in second])
    assert renumbered[0] == 'mug_3' and renumbered[3] == 'mug_2'
    # The depthless mug has no position to remember (and no remembered mug projects into its
    # box): a fresh id that is not stored, numbered in its place after the newcomer.
    assert ids[('mug', 55)] == 'mug_4'
    assert [item.id for item in memory.objects()] == ['book_0', 'mug_1', 'mug_2', 'mug_3']


def test_without_a_memory_build_scene_keeps_the_per_frame_ordinals():
    first = [('mug', MUG_RIGHT, 2.0), ('mug', MUG_MIDDLE, 2.0)]
    frame, response = frame_of(first)
    scene = build_scene(frame, response, PipelineConfig())
    assert scene_ids(scene) == {('mug', 255): 'mug_1', ('mug', 155): 'mug_0'}
    assert math.isnan(scene.timings.memory_ms)


def test_an_engine_failure_or_a_one_description_grounding_is_no_negative_evidence():
    memory = ObjectMemory(CAMERA)
    both = [('mug', MUG_LEFT, 2.0), ('book', BOOK, 2.5)]
    for index in range(3):
        frame, response = frame_of(both, index)
        build_scene(frame, response, PipelineConfig(), memory=identity_memory_input(memory))
    assert all(item.misses == 0 for item in memory.objects())

    # The engine failed: the scene is empty, but nothing is missed.
    frame, _ = frame_of(both, 3)
    failed = EngineResponse('', GroundingResult(()), engine='test', flags=(FLAG_NO_RECORDING,))
    scene = build_scene(frame, failed, PipelineConfig(), memory=identity_memory_input(memory))
    assert scene.error and not scene.objects
    assert all(item.misses == 0 for item in memory.objects())

    # Asked for one description (~/locate): the book it did not report is no miss either.
    frame, response = frame_of([('mug', MUG_LEFT, 2.0)], 4)
    one = identity_memory_input(memory, negative_evidence=False)
    build_scene(frame, response, PipelineConfig(), memory=one)
    book = next(item for item in memory.objects() if item.label == 'book')
    assert book.misses == 0 and book.state == ObjectState.OCCLUDED

    # A vocabulary without books: still no miss; with books (or every object), a miss.
    frame, response = frame_of([('mug', MUG_LEFT, 2.0)], 5)
    mugs_only = identity_memory_input(memory, searched_labels=('mug',))
    build_scene(frame, response, PipelineConfig(), memory=mugs_only)
    assert next(item for item in memory.objects() if item.label == 'book').misses == 0
    frame, response = frame_of([('mug', MUG_LEFT, 2.0)], 6)
    build_scene(frame, response, PipelineConfig(), memory=identity_memory_input(memory))
    book = next(item for item in memory.objects() if item.label == 'book')
    assert book.misses == 1 and book.state == ObjectState.UNSEEN


def test_no_transform_to_the_memory_frame_gives_fresh_ids_with_the_reason():
    memory = ObjectMemory(WORLD)
    frame, response = frame_of([('mug', MUG_LEFT, 2.0)])
    missing = MemoryInput(memory, None, 'no transform cam_optical -> world: frame does not exist')
    first = build_scene(frame, response, PipelineConfig(), memory=missing)
    second = build_scene(frame, response, PipelineConfig(), memory=missing)
    assert [o.id for o in first.objects] == ['mug_0'] and [o.id for o in second.objects] == [
        'mug_1'
    ]
    assert len(memory) == 0
    assert any('does not exist' in warning for warning in first.warnings)
    assert any('not remembered' in warning for warning in first.warnings)


# ----------------------------------------------------------------------------- moving camera


def optical_pose(x: float, yaw_deg: float) -> np.ndarray:
    """T_world_from_camera of an optical camera at (x, 0, 0) looking along world +z, turned
    about the world's vertical (y, as in an optical-like world)."""
    angle = math.radians(yaw_deg)
    rotation = np.array(
        [
            [math.cos(angle), 0.0, math.sin(angle)],
            [0.0, 1.0, 0.0],
            [-math.sin(angle), 0.0, math.cos(angle)],
        ]
    )
    return make_transform((x, 0.0, 0.0), rotation)


CUBES = (  # label, world centre of the cube, edge (m); two identical mugs side by side
    ('mug', (-0.15, 0.2, 2.0), 0.1),
    ('mug', (0.15, 0.2, 2.0), 0.1),
    ('box', (0.8, 0.0, 3.0), 0.4),
)


def render(pose: np.ndarray, index: int) -> tuple[RgbdFrame, list[LabeledBox]]:
    """Depth (a wall and the cubes' front faces) and the boxes a perfect detector reports."""
    camera_from_world = invert_transform(pose)
    depth = np.full((HEIGHT, WIDTH), 6.0, dtype=np.float32)
    labels = []
    for label, center, edge in sorted(CUBES, key=lambda cube: -cube[1][2]):
        c = apply_transform(camera_from_world, np.array(center))
        front = c[2] - edge / 2
        u = INTRINSICS.fx * c[0] / c[2] + INTRINSICS.cx + 0.5
        v = INTRINSICS.fy * c[1] / c[2] + INTRINSICS.cy + 0.5
        half = INTRINSICS.fx * edge / 2 / front
        box = PixelBox(
            max(u - half, 0), max(v - half, 0), min(u + half, WIDTH), min(v + half, HEIGHT)
        )
        depth[int(box.y_min) : int(box.y_max), int(box.x_min) : int(box.x_max)] = front
        labels.append(LabeledBox(label, box))
    rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    return RgbdFrame(stamp(index), CAMERA, rgb, depth, INTRINSICS, INTRINSICS), labels


def moving_run(tmp_path: Path, target_frame: str, memory_frame: str):
    """Six frames of a camera sliding and turning, through SpatialPipeline.perceive_frame with
    the recorded engine and a TransformBuffer holding the poses (TF at each image stamp)."""
    poses = [optical_pose(-0.1 + 0.06 * i, 4.0 * i - 10.0) for i in range(6)]
    buffer = TransformBuffer()
    recording = tmp_path / 'recorded.jsonl'
    frames = []
    with recording.open('w') as out:
        for index, pose in enumerate(poses):
            frame, labels = render(pose, index)
            frames.append(frame)
            text = grounding_text(labels, WIDTH, HEIGHT)
            out.write(json.dumps({'stamp_ns': frame.stamp_ns, 'text': text}) + '\n')
            buffer.set_transform(
                WORLD,
                'base',
                frame.stamp_ns,
                pose[:3, 3],
                quaternion_from_rotation(pose[:3, :3]),
            )
    buffer.set_transform('base', CAMERA, 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    config = PipelineConfig(target_frame=target_frame)
    memory = ObjectMemory(memory_frame)
    pipeline = SpatialPipeline(RecordedEngine(path=recording), '', config, memory=memory)

    async def run():
        await pipeline.start()
        scenes = [await pipeline.perceive_frame(frame, buffer) for frame in frames]
        await pipeline.shutdown()
        return scenes

    return asyncio.run(run()), memory, poses


@pytest.mark.parametrize('target_frame', [WORLD, ''])
def test_a_moving_camera_keeps_ids_and_the_memory_stays_in_its_frame(tmp_path, target_frame):
    scenes, memory, poses = moving_run(tmp_path, target_frame, WORLD)
    expected_frame = target_frame or CAMERA
    assert [scene.frame_id for scene in scenes] == [expected_frame] * 6
    assert all(not scene.warnings for scene in scenes), [s.warnings for s in scenes]
    for scene in scenes:  # the two identical mugs: left is mug_0, right is mug_1, every frame
        mugs = sorted(
            (obj for obj in scene.objects if obj.label == 'mug'), key=lambda o: o.box.center[0]
        )
        assert [obj.id for obj in mugs] == ['mug_0', 'mug_1']
    remembered = {item.id: item for item in memory.objects()}
    assert sorted(remembered) == ['box_0', 'mug_0', 'mug_1']
    assert memory.memory_frame == WORLD
    # Fused positions are where the visible faces are in the world (the memory frame).
    faces = {
        'mug_0': (-0.15, 0.2, 1.95),
        'mug_1': (0.15, 0.2, 1.95),
        'box_0': (0.8, 0.0, 2.8),
    }
    for key, face in faces.items():
        assert np.linalg.norm(remembered[key].position - face) < 0.06, key
        assert remembered[key].confirmed and remembered[key].sightings == 6
    # The scene positions are in the target frame: the world, or the camera at that stamp.
    for scene, pose in zip(scenes, poses, strict=True):
        for obj in scene.positioned_objects:
            world = obj.lifted.position if target_frame else apply_transform(pose, obj.position)
            assert np.linalg.norm(world - remembered[obj.id].position) < 0.08


def test_the_memory_frame_may_differ_from_a_missing_target_frame(tmp_path):
    """Target frame unknown to TF: scenes fall back to the camera frame with a warning, the
    memory still associates in its own frame."""
    scenes, memory, _ = moving_run(tmp_path, 'map', WORLD)
    assert {scene.frame_id for scene in scenes} == {CAMERA}
    assert all(any("'map'" in w or 'map' in w for w in scene.warnings) for scene in scenes)
    assert sorted(item.id for item in memory.objects()) == ['box_0', 'mug_0', 'mug_1']


def test_objects_in_frame_moves_position_covariance_and_size():
    memory = ObjectMemory(WORLD)
    frame, labels = render(optical_pose(0.0, 0.0), 0)
    frame, response = frame_of([(item.label, item.box, 2.0) for item in labels[:1]])
    build_scene(frame, response, PipelineConfig(), memory=identity_memory_input(memory))
    (item,) = memory.objects()
    # World -> a frame 1 m along x and turned 90 degrees about z.
    transform = make_transform((1.0, 0.0, 0.0), np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]))
    (moved,) = objects_in_frame([item], transform)
    np.testing.assert_allclose(moved.position, apply_transform(transform, item.position))
    rotation = transform[:3, :3]
    np.testing.assert_allclose(moved.covariance, rotation @ item.covariance @ rotation.T)
    np.testing.assert_allclose(moved.size, item.size[[1, 0, 2]])
    assert moved.in_view and moved.id == item.id and moved.last_seen_ns == item.last_seen_ns
    with pytest.raises(ObjectMemoryError):
        objects_in_frame([item], np.eye(3))


# ----------------------------------------------------------------------------- settings, file


def test_settings_rows_build_the_memory_settings():
    values = {'engine': 'recorded', 'recording': 'x.jsonl', 'target_frame': 'odom'}
    settings = PipelineSettings.from_parameters(values).memory
    assert settings == MemorySettings(frame='odom', file='', config=MemoryConfig())
    settings = PipelineSettings.from_parameters(
        {
            **values,
            'memory_frame': 'map',
            'memory_file': '/tmp/m.json',
            'memory_max_objects': 12,
            'memory_max_age_s': 60.0,
            'memory_confirm_sightings': 5,
        }
    ).memory
    assert settings is not None and (settings.frame, settings.file) == ('map', '/tmp/m.json')
    assert (settings.config.max_objects, settings.config.max_age_s) == (12, 60.0)
    assert settings.config.confirm_sightings == 5
    assert PipelineSettings.from_parameters({**values, 'memory': False}).memory is None
    assert PipelineSettings.from_parameters({**values, 'target_frame': ''}).memory.frame == ''


def test_memory_file_loads_saves_and_refuses_what_it_cannot_use(tmp_path):
    path = tmp_path / 'sub' / 'memory.json'
    settings = MemorySettings(frame=CAMERA, file=str(path))
    memory = open_memory(settings)  # no file yet: a new memory
    assert len(memory) == 0
    pipeline = SpatialPipeline(None, '', PipelineConfig(), memory=memory, memory_file=str(path))  # type: ignore[arg-type]
    frame, response = frame_of([('mug', MUG_LEFT, 2.0)])
    build_scene(frame, response, PipelineConfig(), memory=pipeline.memory_input(frame))
    assert pipeline.save_memory() == path
    loaded = open_memory(settings)
    assert [item.id for item in loaded.objects()] == ['mug_0']
    # '' adopts the file's frame; another frame is refused with the reason.
    assert open_memory(MemorySettings(frame='', file=str(path))).memory_frame == CAMERA
    with pytest.raises(ObjectMemoryError, match="positions in 'cam_optical'"):
        open_memory(MemorySettings(frame='map', file=str(path)))
    path.write_text('{"format": "something else"}')
    with pytest.raises(ObjectMemoryError, match='memory.json'):
        open_memory(settings)
    assert SpatialPipeline(None, '', PipelineConfig()).save_memory() is None  # type: ignore[arg-type]
