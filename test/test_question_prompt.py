# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What the model sees for a grounded question, and how its answer is read (engines/question.py).

Also the set-of-marks image on the real frames: every tag inside the image, no two overlapping.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from rgbd_scenes import FRAMES, build_real_scene

from spatial_vlm_ros.core.annotate import draw_marks, scene_marks
from spatial_vlm_ros.core.measurements import MeasurementKind, place_scene, query_frame
from spatial_vlm_ros.core.types import Lifted3D, PixelBox, Scene, SpatialObject
from spatial_vlm_ros.engines.parsing import ParseFailure
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.question import (
    FactsOptions,
    StructuredAnswer,
    answer_schema,
    constraint_for,
    facts_block,
    parse_choice,
    parse_structured_answer,
)
from spatial_vlm_ros.queries import (
    SOURCE_GEOMETRY,
    QuerySnapshot,
    answer_question,
    metric_quantities,
)

PLAIN = resolve_profile('qwen3-vl-4b-instruct-fp8')
SSRL = resolve_profile('spatial-ssrl-4b-fp8')
IDS = ['mug_0', 'keyboard_0', 'coke_can_1']


@pytest.mark.parametrize('name', FRAMES)
def test_marks_stay_inside_the_image_and_never_overlap(name):
    scene, frame, _ = build_real_scene(name)
    marked = draw_marks(frame.rgb, scene_marks(scene))
    height, width = frame.rgb.shape[:2]
    assert [tag[0] for tag in marked.tags] == [obj.id for obj in scene.objects]
    for _, x0, y0, x1, y1 in marked.tags:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert y1 - y0 >= 14  # legible: at least 14 px of tag height at 640x480
    for i, a in enumerate(marked.tags):
        for b in marked.tags[i + 1 :]:
            overlap_w = min(a[3], b[3]) - max(a[1], b[1])
            overlap_h = min(a[4], b[4]) - max(a[2], b[2])
            assert overlap_w <= 0 or overlap_h <= 0, (a, b)
    assert not np.array_equal(marked.image, frame.rgb)


def _crowd(count: int) -> Scene:
    objects = []
    for index in range(count):
        position = np.array([0.1 * index - 2.0, 0.0, 2.0 + 0.05 * index])
        lifted = Lifted3D(position, np.eye(3) * 1e-4, np.array([0.1, 0.1, 0.1]), 0.9, 50)
        box = PixelBox(10 * index, 10, 10 * index + 8, 20)
        objects.append(SpatialObject(f'box_{index}', 'box', 1.0 - index / 100, box, lifted))
    return Scene(1, 'cam', 'cam', objects)


def test_facts_are_bounded_and_the_named_objects_always_listed():
    scene = _crowd(40)
    frame = query_frame(scene)
    placed = place_scene(scene, frame)
    options = FactsOptions(max_objects=24, nearest_per_object=2, max_named_pairs=12)
    facts = facts_block(placed, frame, ['box_39', 'box_38'], options)
    assert len(facts.object_ids) == 24 and facts.omitted == 16
    assert {'box_39', 'box_38'} <= set(facts.object_ids)
    assert '(16 more objects not listed)' in facts.text
    assert len(facts.pairs) <= 24 * 2 + 12
    assert ('box_38', 'box_39', pytest.approx(math.hypot(0.1, 0.05))) in [
        (a, b, pytest.approx(d)) for a, b, d in facts.pairs
    ]
    assert len(facts.text.splitlines()) == 2 + 24 + 2


def test_object_lines_state_position_extent_range_and_depth_quality():
    scene, _, _ = build_real_scene('tum_desk')
    frame = query_frame(scene)
    placed = place_scene(scene, frame)
    facts = facts_block(placed, frame)
    assert 'keyboard_0-mug_0' not in facts.text  # neither is the other's nearest two
    facts = facts_block(placed, frame, ['mug_0', 'keyboard_0'])  # ... but the question names them
    assert 'camera optical frame camera_color_optical_frame (x right, y down, z forward' in (
        facts.text
    )
    assert 'mug_0 mug: 0.32 0.17 1.18; 0.11 0.13 0.19; 1.24; ok' in facts.text.splitlines()
    assert 'keyboard_0-mug_0 0.47' in facts.text


def test_parsing_keeps_scene_ids_only_and_reads_the_boxed_json():
    raw = (
        '<think>mug_0 is 0.47 m from keyboard_0 {per the facts}</think>\n\\boxed{'
        '{"answer": "About half a metre.", "object_ids": ["mug_0", "cup_9"], "measurements": ['
        '{"kind": "distance", "object_ids": ["mug_0", "keyboard_0"], "value_m": 0.5}, '
        '{"kind": "distance", "object_ids": ["mug_0"]}, '
        '{"kind": "range", "object_ids": ["coke_can_1"]}]}}'
    )
    parsed = parse_structured_answer(raw, SSRL, IDS)
    assert isinstance(parsed, StructuredAnswer)
    assert parsed.answer == 'About half a metre.' and parsed.object_ids == ('mug_0',)
    assert [(m.kind, m.object_ids) for m in parsed.measurements] == [
        (MeasurementKind.DISTANCE, ('mug_0', 'keyboard_0')),
        (MeasurementKind.RANGE, ('coke_can_1',)),
    ]
    assert parsed.measurements[0].value_m == 0.5 and math.isnan(parsed.measurements[1].value_m)
    assert "dropped unknown object id 'cup_9'" in parsed.warnings
    assert 'per the facts' in parsed.reasoning
    assert isinstance(parse_structured_answer('About 2 metres.', PLAIN, IDS), ParseFailure)
    assert isinstance(parse_structured_answer('<think>cut off', SSRL, IDS), ParseFailure)
    assert parse_choice('{"choice": "none", "reason": "white"}', PLAIN, IDS).choice == ''
    assert isinstance(parse_choice('{"choice": "cup_9", "reason": "x"}', PLAIN, IDS), ParseFailure)


def test_schema_and_grammar_follow_the_profile():
    schema = answer_schema(IDS, answer_max_chars=100)
    assert schema['properties']['object_ids']['items']['enum'] == IDS
    assert answer_schema([])['properties']['measurements'] == {'type': 'array', 'maxItems': 0}
    plain = constraint_for(PLAIN, schema)
    assert plain.structural_tag == '' and '"enum":["mug_0","keyboard_0","coke_can_1"]' in (
        plain.json_schema
    )
    boxed = constraint_for(SSRL, schema)
    assert '"begin":"<think>"' in boxed.structural_tag
    assert '"value":"\\n\\\\boxed{"' in boxed.structural_tag


def test_lengths_in_free_text_are_read_in_metres():
    assert metric_quantities('About 2 metres.') == [2.0]
    assert metric_quantities('47 cm, or half a metre') == [pytest.approx(0.47), 0.5]
    assert metric_quantities('3 ft') == [pytest.approx(0.9144)]
    assert metric_quantities('mug_0 and 2 mugs') == []


@pytest.mark.parametrize(
    ('question', 'answer'),
    [
        ('How far is the mug from the keyboard?', 'mug_0 is 0.47 m (+/- 0.04 m) from keyboard_0'),
        ('How far away is the teddy bear?', 'teddy_bear_0 is 2.94 m (+/- 0.02 m) from the'),
        ('Is the mouse to the left of the mug?', 'computer_mouse_0 is 0.16 m left of mug_0'),
        ('Which is nearer, the tape roll or the mug?', 'mug_0 is the nearest to the camera.'),
        ('Is the mug closer to the keyboard than the mouse?', 'computer_mouse_0 is the nearest'),
        ('What is the largest object?', 'keyboard_0 is the largest.'),
    ],
)  # fmt: skip
def test_geometry_alone_answers_the_plain_question_shapes(question, answer):
    scene, frame, _ = build_real_scene('tum_desk')
    reply = asyncio.run(answer_question(QuerySnapshot(scene, frame.rgb), question, None, PLAIN))
    assert reply.success and reply.source == SOURCE_GEOMETRY
    assert reply.answer.startswith(answer), reply.answer


def test_bad_questions_are_refused_clearly():
    scene, frame, _ = build_real_scene('tum_desk')
    snapshot = QuerySnapshot(scene, frame.rgb)
    empty = asyncio.run(answer_question(snapshot, '  ', None, PLAIN))
    assert not empty.success and empty.message == 'the question is empty'
    long = asyncio.run(answer_question(snapshot, 'x' * 5000, None, PLAIN))
    assert not long.success and 'longer than 4096 bytes' in long.message


def test_an_exact_label_names_its_object_beside_a_longer_label_with_that_head_noun():
    # tum_office has a "chair" and an "office chair": "the chair" is the chair.
    scene, frame, _ = build_real_scene('tum_office')
    question = 'Which is closer to the camera, the chair or the plastic bag?'
    reply = asyncio.run(answer_question(QuerySnapshot(scene, frame.rgb), question, None, PLAIN))
    assert reply.success, reply.message
    assert {m.object_ids[0] for m in reply.measurements} == {'chair_0', 'plastic_bag_0'}
    assert reply.answer.startswith('chair_0 is the nearest to the camera.')
