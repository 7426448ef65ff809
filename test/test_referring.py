# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""~/locate's referring expressions on the real labelled frames (core/referring.py).

The scenes are the data/rgbd frames lifted by the product's own pipeline. The first test is
the newcomer audit's four failing requests on tum_desk: the old label matcher returned
coke_can_0 (the left, near can) for all three coke-can requests and the white mug for "red mug",
each with found=True.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rgbd_scenes import build_real_scene

from spatial_vlm_ros.core.measurements import place_scene
from spatial_vlm_ros.core.referring import (
    LocateOptions,
    ModelChoice,
    RememberedCandidate,
    finish_locate,
    locate_without_model,
    prepare_locate,
    remembered_candidates,
)
from spatial_vlm_ros.core.transforms import (
    R_BODY_FROM_OPTICAL,
    apply_transform,
    make_transform,
    rotate_covariance,
)
from spatial_vlm_ros.queries import LocateSettings, QuerySnapshot, locate


@pytest.fixture(scope='module')
def desk() -> QuerySnapshot:
    scene, frame, _ = build_real_scene('tum_desk')
    return QuerySnapshot(scene, frame.rgb)


@pytest.fixture(scope='module')
def dining() -> QuerySnapshot:
    scene, frame, _ = build_real_scene('nyu_dining_1')
    return QuerySnapshot(scene, frame.rgb)


def _resolve(snapshot: QuerySnapshot, description: str, **kwargs):
    return asyncio.run(locate(snapshot, description, **kwargs)).result


def test_the_newcomers_four_requests_on_tum_desk(desk):
    right = _resolve(desk, 'the coke can on the right')
    assert right.found and right.best.id == 'coke_can_1' and not right.ambiguous
    far = _resolve(desk, 'the far coke can')
    assert far.found and far.best.id == 'coke_can_1'
    exact = _resolve(desk, 'coke_can_1')
    assert exact.found and exact.best.id == 'coke_can_1' and exact.best.reason == 'exact id'
    red = _resolve(desk, 'red mug')  # no model to judge "red": never a confident guess
    assert not red.found and not red.ambiguous
    assert [c.id for c in red.candidates] == ['mug_0']
    assert red.best.score < 0.5 and '"red" not checked' in red.best.reason


def test_an_exact_id_wins_and_unknown_nouns_are_not_found(desk):
    assert _resolve(desk, 'mug_0').best.id == 'mug_0'
    assert _resolve(desk, 'please find coke_can_0').best.id == 'coke_can_0'
    laptop = _resolve(desk, 'the laptop')
    assert not laptop.found and laptop.candidates == ()
    assert 'labels in view or memory' in laptop.reason and 'coke can' in laptop.reason


def test_two_look_alike_objects_without_a_qualifier_are_ambiguous(desk):
    result = _resolve(desk, 'the coke can')
    assert not result.found and result.ambiguous
    assert {c.id for c in result.candidates} == {'coke_can_0', 'coke_can_1'}
    assert 'ambiguous: coke_can_0, coke_can_1' in result.reason


def test_qualifiers_and_relations_on_the_desk(desk):
    assert _resolve(desk, 'the coke can on the left').best.id == 'coke_can_0'
    assert _resolve(desk, 'the nearest coke can').best.id == 'coke_can_0'
    assert _resolve(desk, 'the coke can next to the keyboard').best.id == 'coke_can_0'
    assert _resolve(desk, 'the coke can behind the monitor').best.id == 'coke_can_1'
    assert _resolve(desk, 'the cup').best.id == 'mug_0'  # synonym
    several = _resolve(desk, 'keyboard and mouse')
    assert not several.found and 'locate one at a time' in several.reason


def test_chairs_in_the_dining_room(dining):
    # x across the view: chair_0 -0.39, chair_1 0.25 (near), chair_2 0.74, chair_3 1.03.
    assert _resolve(dining, 'the chair on the right').best.id == 'chair_3'
    assert _resolve(dining, 'the leftmost chair').best.id == 'chair_0'
    assert _resolve(dining, 'the second chair from the left').best.id == 'chair_1'
    assert _resolve(dining, 'the nearest chair').best.id == 'chair_1'
    assert _resolve(dining, 'the armchair').best.id == 'armchair_0'
    assert _resolve(dining, 'the chairs').ambiguous


def test_the_models_choice_is_folded_in(desk):
    frame = desk.query_frame()
    placed = place_scene(desk.scene, frame)
    plan = prepare_locate('the red coke can', placed, frame)
    assert plan.needs_choice and plan.appearance_words == ('red',)
    chosen = finish_locate(plan, ModelChoice('coke_can_1', 'behind the monitor'))
    assert chosen.found and chosen.best.id == 'coke_can_1'
    none = finish_locate(plan, ModelChoice('', 'both are red'))
    assert not none.found and all(c.score < 0.5 for c in none.candidates)
    unchecked = finish_locate(plan, None)
    assert not unchecked.found


def test_remembered_objects_are_candidates_with_their_age(desk):
    frame = desk.query_frame()
    memory = [
        RememberedCandidate(
            'laptop_0', 'laptop', np.array([1.0, 0.0, 2.0]), np.eye(3) * 1e-3, None,
            desk.scene.stamp_ns - 30 * 10**9, False,
        ),
        RememberedCandidate(  # the scene already has mug_0: the memory copy is not a duplicate
            'mug_0', 'mug', np.array([0.3, 0.2, 1.2]), np.eye(3) * 1e-3, None,
            desk.scene.stamp_ns, True,
        ),
    ]  # fmt: skip
    laptop = _resolve(desk, 'the laptop', memory=memory)
    assert laptop.found and laptop.best.id == 'laptop_0' and not laptop.best.in_view
    assert laptop.best.score == pytest.approx(0.9)
    assert 'last seen 30 s ago' in laptop.reason
    mug = _resolve(desk, 'the mug', memory=memory)
    assert mug.found and [c.id for c in mug.candidates] == ['mug_0'] and mug.best.in_view
    placed = remembered_candidates(memory, frame, desk.scene.stamp_ns, ['mug_0'])
    assert [p.id for p in placed] == ['laptop_0']


def test_below_threshold_is_not_found_with_candidates(desk):
    frame = desk.query_frame()
    placed = place_scene(desk.scene, frame)
    strict = LocateOptions(threshold=0.8)
    result = locate_without_model('teddy', placed, frame, strict)  # synonym: 0.75
    assert not result.found and result.best.id == 'teddy_bear_0'
    assert 'scored 0.75 < 0.80' in result.reason


def test_approach_pose_in_a_gravity_aligned_frame(desk):
    # The desk scene moved into base_link: camera 1.2 m up, level, looking along +x.
    from spatial_vlm_ros.core.relations import transform_objects

    base_from_camera = make_transform((0.0, 0.0, 1.2), R_BODY_FROM_OPTICAL)
    scene = desk.scene
    moved = type(scene)(
        stamp_ns=scene.stamp_ns,
        frame_id='base_link',
        camera_frame_id=scene.camera_frame_id,
        objects=transform_objects(scene.objects, base_from_camera),
        T_frame_from_camera=base_from_camera,
    )
    snapshot = QuerySnapshot(moved, desk.rgb)
    outcome = asyncio.run(
        locate(
            snapshot,
            'the coke can on the right',
            settings=LocateSettings(want_approach_pose=True, standoff_m=0.5),
        )
    )
    assert outcome.found and outcome.result.best.id == 'coke_can_1'
    pose = outcome.approach
    assert pose is not None and pose.frame_id == 'base_link' and pose.z == 0.0
    can = outcome.result.best.position
    offset = np.array([pose.x - can[0], pose.y - can[1]])
    assert np.linalg.norm(offset) == pytest.approx(pose.footprint_radius_m + 0.5)
    # On the camera's side of the can, facing it.
    assert offset @ (np.array([0.0, 0.0]) - can[:2]) > 0
    facing = np.array([np.cos(pose.yaw), np.sin(pose.yaw)])
    assert facing @ (-offset / np.linalg.norm(offset)) == pytest.approx(1.0)
    camera_frame = asyncio.run(
        locate(desk, 'the mug', settings=LocateSettings(want_approach_pose=True))
    )
    assert camera_frame.found and camera_frame.approach is None
    assert 'gravity-aligned frame' in camera_frame.approach_reason


def test_a_reply_in_another_frame_moves_positions_covariances_and_the_approach(desk):
    # The scene stays in the camera frame; the request asks for base_link (camera 1.2 m up,
    # level, looking along +x), as ~/locate's target_frame does with TF.
    base_from_camera = make_transform((0.0, 0.0, 1.2), R_BODY_FROM_OPTICAL)
    settings = LocateSettings(
        want_approach_pose=True,
        standoff_m=0.5,
        target_frame='base_link',
        T_target_from_scene=base_from_camera,
    )
    outcome = asyncio.run(locate(desk, 'the coke can on the right', settings=settings))
    assert outcome.found and outcome.frame_id == 'base_link'
    can = next(obj for obj in desk.scene.objects if obj.id == 'coke_can_1').lifted
    best = outcome.result.best
    np.testing.assert_allclose(best.position, apply_transform(base_from_camera, can.position))
    np.testing.assert_allclose(
        best.covariance, rotate_covariance(base_from_camera, can.covariance)
    )
    # Every candidate is moved, the best included.
    np.testing.assert_allclose(outcome.result.candidates[0].position, best.position)
    other = outcome.result.candidates[1].position
    np.testing.assert_allclose(
        other, apply_transform(base_from_camera, desk_position('coke_can_0', desk))
    )
    pose = outcome.approach
    assert pose is not None and pose.frame_id == 'base_link' and pose.z == 0.0
    offset = np.array([pose.x, pose.y]) - best.position[:2]
    assert np.linalg.norm(offset) == pytest.approx(pose.footprint_radius_m + 0.5)
    assert offset @ -best.position[:2] > 0  # towards the camera, above the base_link origin
    missing = asyncio.run(locate(desk, 'the mug', settings=LocateSettings(target_frame='map')))
    assert not missing.found and missing.frame_id == 'map'
    assert missing.result.reason == 'no transform camera_color_optical_frame -> map given'


def test_a_remembered_object_is_stamped_when_it_was_last_seen(desk):
    last_seen_ns = desk.scene.stamp_ns - 30 * 10**9
    memory = [
        RememberedCandidate(
            'laptop_0', 'laptop', np.array([1.0, 0.0, 2.0]), np.eye(3) * 1e-3, None,
            last_seen_ns, False,
        ),
    ]  # fmt: skip
    outcome = asyncio.run(locate(desk, 'the laptop', memory=memory))
    assert outcome.found and not outcome.result.best.in_view
    assert outcome.stamp_ns == last_seen_ns and outcome.result.best.age_s == pytest.approx(30.0)
    in_view = asyncio.run(locate(desk, 'the mug', memory=memory))
    assert in_view.stamp_ns == desk.scene.stamp_ns


def test_a_named_object_without_depth_is_not_found(desk):
    from dataclasses import replace

    from spatial_vlm_ros.core.types import Lifted3D

    no_depth = [
        replace(obj, lifted=Lifted3D(None, None, None, 0.0, 0)) if obj.id == 'mug_0' else obj
        for obj in desk.scene.objects
    ]
    snapshot = QuerySnapshot(replace(desk.scene, objects=no_depth), desk.rgb)
    outcome = asyncio.run(locate(snapshot, 'the mug'))
    assert not outcome.found and outcome.result.best.id == 'mug_0'
    assert outcome.result.reason.startswith('mug_0 has too little valid depth for a position')


def desk_position(object_id, snapshot):
    return next(obj for obj in snapshot.scene.objects if obj.id == object_id).lifted.position
