# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Object memory on synthetic sequences made here: a camera moving through a world of cubes.

The world frame is optical-like (x right, y down, z forward) so a camera that turns about the
vertical is a yaw about y. Each frame renders a depth image (a wall, cubes drawn as their front
faces) and the observations a perfect detector with a depth lifter would give: the label, the
projected box and the centroid of the visible face (it moves by the cube's size between
opposite viewpoints, like a chair's visible surface).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import json
import math

import numpy as np
import pytest

from spatial_vlm_ros.core.memory import (
    CameraView,
    MemoryConfig,
    ObjectMemory,
    ObjectMemoryError,
    ObjectState,
    labels_compatible,
    normalize_label,
)
from spatial_vlm_ros.core.transforms import invert_transform, make_transform
from spatial_vlm_ros.core.types import CameraIntrinsics, Lifted3D, PixelBox, SpatialObject

INTRINSICS = CameraIntrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=320, height=240)
WALL_M = 6.0
SECOND = 10**9
NOISE_M = 0.01


@dataclass(frozen=True)
class Cube:
    label: str
    center: tuple[float, float, float]  # world, metres
    size: float  # edge, metres
    detectable: bool = True  # False: an occluder the detector does not report


def camera(x: float = 0.0, z: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """T_world_from_camera of a camera at (x, 0, z) turned ``yaw_deg`` about the vertical."""
    angle = math.radians(yaw_deg)
    rotation = np.array(
        [
            [math.cos(angle), 0.0, math.sin(angle)],
            [0.0, 1.0, 0.0],
            [-math.sin(angle), 0.0, math.cos(angle)],
        ]
    )
    return make_transform((x, 0.0, z), rotation)


@dataclass
class Frame:
    stamp_ns: int
    observations: list[SpatialObject]
    view: CameraView


class World:
    """Renders frames of a list of cubes; ``rng`` adds centimetre noise to lifted positions."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.frames = 0

    def frame(self, cubes: list[Cube], pose: np.ndarray, drop: tuple[str, ...] = ()) -> Frame:
        """``drop`` lists labels the detector misses in this frame (the depth still shows them)."""
        camera_from_world = invert_transform(pose)
        depth = np.full((INTRINSICS.height, INTRINSICS.width), WALL_M, dtype=np.float32)
        drawn = []
        for cube in cubes:
            center = camera_from_world[:3, :3] @ np.array(cube.center) + camera_from_world[:3, 3]
            front = center[2] - cube.size / 2
            if front <= 0.2:
                continue
            u = INTRINSICS.fx * center[0] / center[2] + INTRINSICS.cx + 0.5
            v = INTRINSICS.fy * center[1] / center[2] + INTRINSICS.cy + 0.5
            half = INTRINSICS.fx * cube.size / 2 / front
            box = PixelBox(
                max(u - half, 0.0),
                max(v - half, 0.0),
                min(u + half, INTRINSICS.width),
                min(v + half, INTRINSICS.height),
            )
            if box.width <= 0 or box.height <= 0:
                continue
            rows = slice(math.ceil(box.y_min - 0.5), math.ceil(box.y_max - 0.5))
            columns = slice(math.ceil(box.x_min - 0.5), math.ceil(box.x_max - 0.5))
            depth[rows, columns] = np.minimum(depth[rows, columns], front)
            drawn.append((cube, center, front, box, u, v))
        observations = []
        for cube, center, front, box, u, v in drawn:
            inside = 0 <= u < INTRINSICS.width and 0 <= v < INTRINSICS.height
            if not cube.detectable or cube.label in drop or not inside:
                continue
            if depth[int(v), int(u)] < front - 0.05:  # hidden behind a nearer cube
                continue
            visible_face = center - np.array([0.0, 0.0, cube.size / 2])
            noisy = visible_face + self.rng.normal(0.0, NOISE_M, 3)
            lifted = Lifted3D(
                position=noisy,
                covariance=np.eye(3) * NOISE_M**2,
                size=np.array([cube.size, cube.size, 0.3 * cube.size]),
                valid_depth_ratio=0.8,
                depth_samples=100,
            )
            observations.append(SpatialObject('', cube.label, 1.0, box, lifted))
        self.frames += 1
        stamp = 1_700_000_000 * SECOND + self.frames * SECOND // 5
        return Frame(stamp, observations, CameraView(pose, INTRINSICS, depth, INTRINSICS))


def ids_by_label(memory: ObjectMemory, frame: Frame) -> list[str]:
    update = memory.update(frame.stamp_ns, frame.observations, frame.view)
    return list(update.ids)


MUG = 0.1
CHAIR = 0.7


# ----------------------------------------------------------------------------- labels


def test_label_normalization_and_compatibility():
    assert normalize_label('  Office   Chair! ') == 'office chair'
    assert labels_compatible('chair', 'office chair')
    assert labels_compatible('Red mug', 'mug')
    assert not labels_compatible('chair', 'armchair')
    assert not labels_compatible('mug', 'cup')
    assert not labels_compatible('', '')


# ----------------------------------------------------------------------------- identity


def test_identical_objects_side_by_side_keep_their_ids():
    world, memory = World(1), ObjectMemory('odom')
    mugs = [Cube('mug', (-0.15, 0.0, 1.5), MUG), Cube('mug', (0.15, 0.0, 1.5), MUG)]
    first = world.frame(mugs, camera())
    ids = ids_by_label(memory, first)
    left = ids[int(np.argmin([o.box.center[0] for o in first.observations]))]
    right = ids[int(np.argmax([o.box.center[0] for o in first.observations]))]
    assert {left, right} == {'mug_0', 'mug_1'}
    # Walk sideways and turn: the left mug moves across the image, the order in the image
    # changes with the viewpoint, and each mug must keep its id.
    for x, yaw in ((0.3, 0.0), (0.6, -10.0), (-0.6, 20.0), (0.0, 60.0), (0.0, 0.0)):
        frame = world.frame(mugs, camera(x=x, z=0.3, yaw_deg=yaw))
        ids = ids_by_label(memory, frame)
        for observation, key in zip(frame.observations, ids, strict=True):
            world_x = (frame.view.T_memory_from_camera[:3, :3] @ observation.lifted.position)[0]
            world_x += frame.view.T_memory_from_camera[0, 3]
            assert key == (left if world_x < 0 else right)
    assert len(memory) == 2


def test_neighbours_shifted_together_by_a_pose_error_are_not_swapped_or_duplicated():
    """Two identical mugs 0.2 m apart; then the pose is 0.12 m off along x, so the left mug's
    observation lands nearer the right mug's memory: only the joint (Hungarian) choice keeps
    both ids."""
    world, memory = World(17), ObjectMemory('odom')
    mugs = [Cube('mug', (0.0, 0.0, 1.5), MUG), Cube('mug', (0.2, 0.0, 1.5), MUG)]
    for _ in range(4):
        ids_by_label(memory, world.frame(mugs, camera()))
    before = {item.id: item.position[0] for item in memory.objects()}
    assert sorted(before) == ['mug_0', 'mug_1']
    frame = world.frame(mugs, camera())
    off = CameraView(camera(x=0.12), INTRINSICS, frame.view.depth_m, INTRINSICS)
    update = memory.update(frame.stamp_ns, frame.observations, off)
    centers = [o.box.center[0] for o in frame.observations]
    left_first = sorted(zip(centers, update.ids, strict=True))
    left_id = min(before, key=before.get)
    right_id = max(before, key=before.get)
    assert [key for _, key in left_first] == [left_id, right_id]
    assert update.created == () and len(memory) == 2


def test_a_second_identical_object_next_to_a_remembered_one_gets_a_new_id():
    world, memory = World(2), ObjectMemory('odom')
    first = Cube('mug', (0.0, 0.0, 1.5), MUG)
    assert ids_by_label(memory, world.frame([first], camera())) == ['mug_0']
    second = Cube('mug', (0.3, 0.0, 1.5), MUG)
    frame = world.frame([first, second], camera())
    ids = ids_by_label(memory, frame)
    by_x = dict(zip([o.box.center[0] for o in frame.observations], ids, strict=True))
    assert [by_x[x] for x in sorted(by_x)] == ['mug_0', 'mug_1']


def test_object_seen_from_its_other_side_keeps_its_id():
    """The visible face's centroid moves by the chair's 0.7 m size between the two views."""
    chair = [Cube('chair', (0.0, 0.0, 2.0), CHAIR)]
    no_shift = MemoryConfig(shift_fraction=0.0)
    for config, expected in ((MemoryConfig(), ['chair_0']), (no_shift, ['chair_1'])):
        world = World(3)
        memory = ObjectMemory('odom', config)
        assert ids_by_label(memory, world.frame(chair, camera())) == ['chair_0']
        behind = world.frame(chair, camera(x=0.0, z=4.0, yaw_deg=180.0))
        # Without the visible-surface term the gate is too tight: a new id (shows the term works).
        assert ids_by_label(memory, behind) == expected
    remembered = ObjectMemory('odom')
    world = World(4)
    for pose in (camera(), camera(z=4.0, yaw_deg=180.0), camera()):
        ids_by_label(remembered, world.frame(chair, pose))
    (only,) = remembered.objects()
    # Fused from both sides, the position lies between the two visible faces.
    assert abs(only.position[2] - 2.0) < 0.25


# ----------------------------------------------------------------------------- visibility


def test_occluded_then_visible_keeps_id_and_takes_no_miss():
    world, memory = World(5), ObjectMemory('odom')
    mug = Cube('mug', (0.0, 0.0, 2.0), MUG)
    board = Cube('board', (0.0, 0.0, 1.0), 0.4, detectable=False)
    for _ in range(3):
        assert ids_by_label(memory, world.frame([mug], camera())) == ['mug_0']
    for _ in range(6):
        update = memory.update(*_args(world.frame([mug, board], camera())))
        assert update.ids == () and update.missed == ()
        assert memory.get('mug_0').state == ObjectState.OCCLUDED
    assert memory.get('mug_0').misses == 0
    assert memory.get('mug_0').existence > 0.9
    assert ids_by_label(memory, world.frame([mug], camera())) == ['mug_0']
    assert memory.get('mug_0').state == ObjectState.VISIBLE


def test_out_of_view_and_back_keeps_id_without_misses():
    world, memory = World(6), ObjectMemory('odom')
    mug = Cube('mug', (0.0, 0.0, 1.5), MUG)
    chair = Cube('chair', (3.0, 0.0, 0.0), CHAIR)
    for _ in range(2):
        ids_by_label(memory, world.frame([mug, chair], camera()))
    for _ in range(20):  # looking at the chair, the mug behind the camera's right shoulder
        assert ids_by_label(memory, world.frame([mug, chair], camera(yaw_deg=90.0))) == ['chair_0']
    mug_state = memory.get('mug_0')
    assert mug_state.state == ObjectState.OUT_OF_VIEW and mug_state.misses == 0
    for _ in range(10):  # panned 45 degrees: the mug is in front, but outside the image
        memory.update(*_args(world.frame([mug, chair], camera(yaw_deg=45.0))))
        assert memory.get('mug_0').state == ObjectState.OUT_OF_VIEW
    assert memory.get('mug_0').misses == 0
    assert ids_by_label(memory, world.frame([mug, chair], camera())) == ['mug_0']


def test_missed_detection_in_view_counts_and_fades_out_of_view_does_not():
    world, memory = World(7), ObjectMemory('odom')
    mug = Cube('mug', (0.0, 0.0, 1.5), MUG)
    for _ in range(5):
        ids_by_label(memory, world.frame([mug], camera()))
    assert memory.get('mug_0').existence == pytest.approx(0.95, abs=0.01)
    # Out of view: no evidence, however long.
    for _ in range(30):
        memory.update(*_args(world.frame([mug], camera(yaw_deg=180.0))))
    assert memory.get('mug_0').misses == 0
    # In view, the depth shows something at its place, the detector reports nothing: misses.
    removed_after = None
    for step in range(1, 10):
        update = memory.update(*_args(world.frame([mug], camera(), drop=('mug',))))
        if 'mug_0' in update.removed:
            removed_after = step
            break
        assert update.missed == ('mug_0',)
        assert memory.get('mug_0').state == ObjectState.UNSEEN
    # log-odds 3.0 - 1.0 per miss falls below logit(0.15) = -1.73 at the fifth miss.
    assert removed_after == 5
    assert memory.get('mug_0') is None


def test_a_detection_of_its_label_nearby_is_no_miss():
    world, memory = World(8), ObjectMemory('odom')
    mug = Cube('mug', (0.0, 0.0, 1.5), MUG)
    for _ in range(3):
        ids_by_label(memory, world.frame([mug], camera()))
    # A lift without position but whose box covers the mug: the memory names it, no miss.
    frame = world.frame([mug], camera())
    unplaced = SpatialObject(
        '', 'mug', 1.0, frame.observations[0].box, Lifted3D(None, None, None, 0.0)
    )
    update = memory.update(frame.stamp_ns, [unplaced], frame.view)
    assert update.ids == ('mug_0',) and update.missed == () and update.unstored == ()
    assert memory.get('mug_0').sightings == 4


def test_object_without_position_and_no_remembered_match_gets_an_unstored_unique_id():
    world, memory = World(9), ObjectMemory('odom')
    mug = Cube('mug', (0.0, 0.0, 1.5), MUG)
    frame = world.frame([mug], camera())
    far_box = PixelBox(0.0, 0.0, 20.0, 20.0)
    unplaced = [
        SpatialObject('', 'mug', 1.0, far_box, Lifted3D(None, None, None, 0.0)),
        SpatialObject('', 'tv', 1.0, far_box, Lifted3D(None, None, None, 0.0)),
    ]
    update = memory.update(frame.stamp_ns, [*frame.observations, *unplaced], frame.view)
    assert update.ids == ('mug_0', 'mug_1', 'tv_0')
    assert update.unstored == ('mug_1', 'tv_0')
    assert [item.id for item in memory.objects()] == ['mug_0']
    assert [obj.id for obj in update.objects] == ['mug_0', 'mug_1', 'tv_0']
    # Never reused: the next new mug is mug_2.
    other = world.frame([mug, Cube('mug', (0.5, 0.0, 1.5), MUG)], camera())
    assert sorted(ids_by_label(memory, other)) == ['mug_0', 'mug_2']


def test_ids_of_one_update_are_numbered_in_observation_order():
    """Fresh ids follow the order the observations come in, whether they have a position (new
    remembered objects) or not (unstored), so the pipeline's left-to-right order numbers the
    first frame like the per-frame ordinals."""
    world, memory = World(11), ObjectMemory('odom')
    mugs = [Cube('mug', (x, 0.0, 1.5), MUG) for x in (-0.3, 0.3)]
    frame = world.frame(mugs, camera())
    placed = sorted(frame.observations, key=lambda item: item.box.center[0])
    far_box = PixelBox(0.0, 0.0, 20.0, 20.0)
    unplaced = SpatialObject('', 'mug', 1.0, far_box, Lifted3D(None, None, None, 0.0))
    update = memory.update(frame.stamp_ns, [unplaced, placed[1], placed[0]], frame.view)
    assert update.ids == ('mug_0', 'mug_1', 'mug_2')
    assert update.unstored == ('mug_0',) and sorted(update.created) == ['mug_1', 'mug_2']
    assert [item.id for item in memory.objects()] == ['mug_1', 'mug_2']
    right = memory.get('mug_1')
    assert right is not None and right.position[0] > 0.0  # the second observation, x = 0.3


def test_a_label_the_detector_was_not_asked_for_takes_no_miss():
    world, memory = World(12), ObjectMemory('odom')
    mug, chair = Cube('mug', (-0.3, 0.0, 1.5), MUG), Cube('chair', (0.5, 0.0, 3.0), CHAIR)
    for _ in range(3):
        ids_by_label(memory, world.frame([mug, chair], camera()))
    # The vocabulary changed to chairs only: the mug is not reported, and not missed.
    frame = world.frame([mug, chair], camera(), drop=('mug',))
    chairs_only = replace(frame.view, searched_labels=('office chair',))  # compatible label
    update = memory.update(frame.stamp_ns, frame.observations, chairs_only)
    assert update.missed == () and memory.get('mug_0').state == ObjectState.OCCLUDED
    # Asked for every object (or for mugs), the same frame is a miss.
    frame = world.frame([mug, chair], camera(), drop=('mug',))
    update = memory.update(frame.stamp_ns, frame.observations, frame.view)
    assert update.missed == ('mug_0',)


def test_moved_object_keeps_its_id_and_a_new_one_does_not_take_it():
    world, memory = World(10), ObjectMemory('odom')
    here, there = Cube('mug', (0.0, 0.0, 1.5), MUG), Cube('mug', (0.8, 0.0, 1.8), MUG)
    for _ in range(3):
        ids_by_label(memory, world.frame([here], camera()))
    # Moved while in view: the old place shows the wall behind it, a mug is seen 0.85 m away.
    # One miss may be the detector's: the mug there is new at first ...
    update = memory.update(*_args(world.frame([there], camera())))
    assert update.ids == ('mug_1',) and update.missed == ('mug_0',)
    # ... the second miss in a row at the old place makes it the moved mug_0.
    update = memory.update(*_args(world.frame([there], camera())))
    assert update.ids == ('mug_0',) and update.relocated == ('mug_0',)
    assert update.merged == ('mug_1',)
    np.testing.assert_allclose(memory.get('mug_0').position[0], 0.8, atol=0.05)
    assert [item.id for item in memory.objects()] == ['mug_0']
    assert memory.get('mug_0').sightings == 5
    # Found elsewhere after seeing its place empty twice: it keeps its id at once.
    memory = ObjectMemory('odom')
    for _ in range(3):
        ids_by_label(memory, world.frame([here], camera()))
    elsewhere = Cube('mug', (2.0, 0.0, 0.0), MUG)
    for _ in range(2):
        memory.update(*_args(world.frame([elsewhere], camera())))  # out of view from here
    update = memory.update(*_args(world.frame([elsewhere], camera(yaw_deg=90.0))))
    assert update.ids == ('mug_0',) and update.relocated == ('mug_0',) and update.merged == ()
    # A second mug while the first is still in its place: a new object.
    memory = ObjectMemory('odom')
    for _ in range(3):
        ids_by_label(memory, world.frame([here], camera()))
    frame = world.frame([here, there], camera())
    ids = ids_by_label(memory, frame)
    assert sorted(ids) == ['mug_0', 'mug_1'] and len(memory) == 2


# ----------------------------------------------------------------------------- management


def test_forget_one_and_all_and_ids_are_never_reused():
    world, memory = World(11), ObjectMemory('odom')
    scene = [Cube('mug', (-0.3, 0.0, 1.5), MUG), Cube('mug', (0.3, 0.0, 1.5), MUG)]
    ids_by_label(memory, world.frame(scene, camera()))
    assert memory.forget(['mug_1', 'ghost_3']) == (['mug_1'], ['ghost_3'])
    assert [item.id for item in memory.objects()] == ['mug_0']
    ids = ids_by_label(memory, world.frame(scene, camera()))
    assert sorted(ids) == ['mug_0', 'mug_2']
    assert memory.forget() == (['mug_0', 'mug_2'], [])
    assert len(memory) == 0
    assert sorted(ids_by_label(memory, world.frame(scene, camera()))) == ['mug_3', 'mug_4']


def test_save_and_load_keep_objects_and_counters(tmp_path):
    world, memory = World(12), ObjectMemory('map')
    scene = [Cube('mug', (-0.3, 0.0, 1.5), MUG), Cube('office chair', (0.5, 0.0, 2.5), CHAIR)]
    for _ in range(3):
        ids_by_label(memory, world.frame(scene, camera()))
    memory.forget(['mug_0'])
    path = tmp_path / 'sub' / 'memory.json'
    memory.save(path)
    loaded = ObjectMemory.load(path, memory_frame='map')
    before, after = memory.objects(), loaded.objects()
    assert [item.id for item in after] == ['office_chair_0']
    np.testing.assert_array_equal(after[0].position, before[0].position)
    np.testing.assert_array_equal(after[0].covariance, before[0].covariance)
    assert after[0].sightings == 3 and after[0].first_seen_ns == before[0].first_seen_ns
    assert after[0].state == ObjectState.OUT_OF_VIEW  # nothing is in view after a restart
    assert loaded.last_stamp_ns == memory.last_stamp_ns
    # The chair is recognized after the restart; the forgotten mug's id is not given again.
    ids = ids_by_label(loaded, world.frame(scene, camera()))
    assert sorted(ids) == ['mug_1', 'office_chair_0']


def test_load_rejects_bad_files_clearly(tmp_path):
    memory = ObjectMemory('map')
    data = memory.to_dict()
    with pytest.raises(ObjectMemoryError, match="positions in 'map'"):
        ObjectMemory.from_dict(data, memory_frame='odom')
    with pytest.raises(ObjectMemoryError, match='not an object memory file'):
        ObjectMemory.from_dict({'objects': []})
    with pytest.raises(ObjectMemoryError, match='version'):
        ObjectMemory.from_dict({**data, 'version': 99})
    broken = tmp_path / 'broken.json'
    broken.write_text('{"format": ')
    with pytest.raises(ObjectMemoryError, match='not JSON'):
        ObjectMemory.load(broken)
    bad_object = {
        'id': 'mug_0', 'label': 'mug', 'state': 'visible', 'first_seen_ns': 1,
        'last_seen_ns': 1, 'sightings': 1, 'misses': 0, 'log_odds': 0.5,
        'position': [0, 0], 'covariance': np.eye(3).tolist(), 'size': [0, 0, 0],
    }  # fmt: skip
    with pytest.raises(ObjectMemoryError, match='bad shapes'):
        ObjectMemory.from_dict({**data, 'objects': [bad_object]})
    good_object = {**bad_object, 'id': 'mug_7', 'position': [1, 2, 3]}
    repaired = ObjectMemory.from_dict({**data, 'counters': {}, 'objects': [good_object]})
    assert repaired.to_dict()['counters'] == {'mug': 8}  # never behind the ids present
    json.dumps(repaired.to_dict())


def test_size_is_bounded_and_the_least_established_go_first():
    world = World(13)
    memory = ObjectMemory('odom', MemoryConfig(max_objects=3))
    settled = Cube('chair', (-1.0, 0.0, 3.0), CHAIR)
    for _ in range(4):
        ids_by_label(memory, world.frame([settled], camera()))
    for index in range(5):  # five one-off boxes, spread out, each seen once
        cube = Cube('box', (-0.9 + 0.45 * index, 0.5, 2.0), 0.1)
        frame = world.frame([settled, cube], camera())
        # Without depth there is no negative evidence: only the size bound removes objects.
        blind = CameraView(frame.view.T_memory_from_camera, INTRINSICS, None, INTRINSICS)
        memory.update(frame.stamp_ns, frame.observations, blind)
        assert len(memory) <= 3
    kept = [item.id for item in memory.objects()]
    assert 'chair_0' in kept and 'box_4' in kept and len(kept) == 3


def test_tentative_objects_expire_and_max_age_expires_everything():
    world = World(14)
    memory = ObjectMemory('odom', MemoryConfig(tentative_ttl_s=1.0, max_age_s=3.0))
    mug, chair = Cube('mug', (0.0, 0.0, 1.5), MUG), Cube('chair', (0.0, 0.0, -2.0), CHAIR)
    ids_by_label(memory, world.frame([mug], camera()))  # tentative: seen once
    for _ in range(3):
        ids_by_label(memory, world.frame([chair], camera(yaw_deg=180.0)))
    ids = [item.id for item in memory.objects()]
    assert ids == ['chair_0', 'mug_0']  # 0.6 s: not yet
    for _ in range(3):
        memory.update(*_args(world.frame([chair], camera(yaw_deg=180.0))))
    assert [item.id for item in memory.objects()] == ['chair_0']  # mug: tentative, 1.2 s
    for _ in range(16):  # looking at the mug's empty side: the chair is out of view
        memory.update(*_args(world.frame([], camera())))
    assert memory.objects() == []  # confirmed chair: not seen for 3.2 s


# ----------------------------------------------------------------------------- bad input


def test_no_transform_gives_unstored_ids_and_leaves_the_memory_alone():
    world, memory = World(15), ObjectMemory('odom')
    frame = world.frame([Cube('mug', (0.0, 0.0, 1.5), MUG)], camera())
    ids_by_label(memory, frame)
    update = memory.update(frame.stamp_ns, frame.observations, None)
    assert update.ids == ('mug_1',) and update.unstored == ('mug_1',)
    assert 'no transform' in update.warnings[0]
    assert [item.sightings for item in memory.objects()] == [1]


def test_malformed_view_raises_and_changes_nothing():
    world, memory = World(16), ObjectMemory('odom')
    frame = world.frame([Cube('mug', (0.0, 0.0, 1.5), MUG)], camera())
    ids_by_label(memory, frame)
    snapshot = memory.to_dict()
    bad_transform = CameraView(np.full((4, 4), np.nan), INTRINSICS, frame.view.depth_m)
    with pytest.raises(ObjectMemoryError, match='T_memory_from_camera'):
        memory.update(frame.stamp_ns, frame.observations, bad_transform)
    bad_depth = CameraView(camera(), INTRINSICS, np.zeros((10, 10), np.float32))
    with pytest.raises(ObjectMemoryError, match='depth image shape'):
        memory.update(frame.stamp_ns, frame.observations, bad_depth)
    assert memory.to_dict() == snapshot
    with pytest.raises(ObjectMemoryError, match='forget_existence'):
        MemoryConfig(forget_existence=0.9)


def _args(frame: Frame) -> tuple:
    return frame.stamp_ns, frame.observations, frame.view
