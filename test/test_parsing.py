# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Parsing of raw model text into grounding boxes and answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatial_vlm_ros.core.types import PixelBox
from spatial_vlm_ros.engines.base import EngineRequest, TaskKind
from spatial_vlm_ros.engines.parsing import (
    DEFAULT_LABEL,
    MAX_DETECTIONS,
    AnswerResult,
    GroundingResult,
    ParseFailure,
    box_iou,
    extract_boxed,
    fenced_blocks,
    normalize_label,
    parse_answer,
    parse_for_request,
    parse_grounding,
    relative_box_to_pixels,
    split_reasoning,
)
from spatial_vlm_ros.engines.profiles import AnswerFormat, CoordinateSystem, resolve_profile
from spatial_vlm_ros.engines.schema import GROUNDING_LABEL_MAX_LENGTH, GROUNDING_MAX_ITEMS

W, H = 640, 480


def grounding(text: str, **kwargs) -> GroundingResult:
    result = parse_grounding(text, W, H, **kwargs)
    assert isinstance(result, GroundingResult), result
    return result


def boxes(result: GroundingResult) -> list[tuple[str, list[float]]]:
    return [(d.label, d.box.as_list()) for d in result.detections]


# ------------------------------------------------------------------ native Qwen3-VL output


def test_fenced_native_list_converts_relative_coordinates_to_pixels():
    text = (
        '```json\n[\n\t{"bbox_2d": [100, 250, 300, 500], "label": "red cup"},\n'
        '\t{"bbox_2d": [0, 0, 1000, 1000], "label": "table"}\n]\n```'
    )
    result = grounding(text)
    assert boxes(result) == [
        ('red cup', [64.0, 120.0, 192.0, 240.0]),
        ('table', [0.0, 0.0, 640.0, 480.0]),
    ]
    assert result.warnings == ()
    assert not result.truncated and not result.capped


def test_bare_list_and_surrounding_prose():
    text = 'Sure! Here you go: [{"bbox_2d": [500, 500, 750, 1000], "label": "chair"}] Done.'
    assert boxes(grounding(text)) == [('chair', [320.0, 240.0, 480.0, 480.0])]


def test_prose_with_bracketed_placeholder_before_the_real_list():
    text = 'Format is [x1, y1, x2, y2]:\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}]'
    assert [label for label, _ in boxes(grounding(text))] == ['a']


def test_empty_list_is_a_valid_empty_result_not_a_failure():
    result = grounding('```json\n[]\n```')
    assert result.detections == () and not result.truncated


def test_think_block_is_kept_as_reasoning_and_ignored_for_boxes():
    text = '<think>the cup [1, 2] is left</think>\n[{"bbox_2d": [0, 0, 500, 500], "label": "cup"}]'
    result = grounding(text)
    assert result.reasoning == 'the cup [1, 2] is left'
    assert boxes(result) == [('cup', [0.0, 0.0, 320.0, 240.0])]


def test_unclosed_think_without_json_is_a_failure_that_says_so():
    result = parse_grounding('<think>let me look at the', W, H)
    assert isinstance(result, ParseFailure)
    assert '<think>' in result.reason
    assert result.raw_text == '<think>let me look at the'


def test_text_without_json_is_a_failure_keeping_the_raw_text():
    result = parse_grounding('I cannot see any objects.', W, H)
    assert isinstance(result, ParseFailure)
    assert result.raw_text == 'I cannot see any objects.'


@pytest.mark.parametrize('text', ['', '   \n'])
def test_empty_output_is_a_failure(text):
    assert isinstance(parse_grounding(text, W, H), ParseFailure)


@pytest.mark.parametrize('value', [None, 42, b'[]', ['x']])
def test_non_text_is_a_failure_not_an_exception(value):
    result = parse_grounding(value, W, H)
    assert isinstance(result, ParseFailure)
    assert 'not text' in result.reason


@pytest.mark.parametrize('size', [(0, 480), (640, 0), (-1, -1)])
def test_bad_image_size_is_a_failure(size):
    result = parse_grounding('[]', *size)
    assert isinstance(result, ParseFailure)
    assert 'image size' in result.reason


# ------------------------------------------------------------------ truncation


def test_truncated_list_recovers_complete_items():
    items = [{'bbox_2d': [i * 100, 0, i * 100 + 50, 50], 'label': f'obj{i}'} for i in range(5)]
    full = json.dumps(items)
    cut = full[: full.index('obj3') + 2]  # inside the 4th item
    result = grounding(cut)
    assert [label for label, _ in boxes(result)] == ['obj0', 'obj1', 'obj2']
    assert result.truncated
    assert any('truncated' in w for w in result.warnings)


def test_truncated_inside_an_unclosed_fence():
    text = '```json\n[{"bbox_2d": [1, 2, 300, 400], "label": "cup"}, {"bbox_2d": [5'
    result = grounding(text)
    assert [label for label, _ in boxes(result)] == ['cup']
    assert result.truncated


def test_truncated_wrapper_object_recovers_inner_items():
    text = '{"objects": [{"bbox_2d": [1, 2, 300, 400], "label": "cup"}, {"bbox_2d": [1, 2'
    result = grounding(text)
    assert [label for label, _ in boxes(result)] == ['cup']
    assert result.truncated


def test_list_cut_right_after_opening_bracket_is_a_failure():
    assert isinstance(parse_grounding('```json\n[', W, H), ParseFailure)


# ------------------------------------------------------------------ shapes and key variants


@pytest.mark.parametrize('key', ['objects', 'detections', 'boxes', 'results'])
def test_wrapper_objects(key):
    text = json.dumps({key: [{'bbox_2d': [0, 0, 100, 100], 'label': 'box'}]})
    assert [label for label, _ in boxes(grounding(text))] == ['box']


def test_wrapper_with_empty_list_is_an_empty_result():
    assert grounding('{"objects": []}').detections == ()


@pytest.mark.parametrize(
    'box',
    [
        {'bbox': [100, 100, 200, 300]},
        {'box_2d': [100, 100, 200, 300]},
        {'bbox_2d': [[100, 100], [200, 300]]},
        {'bbox_2d': {'x1': 100, 'y1': 100, 'x2': 200, 'y2': 300}},
        {'bbox_2d': ['100', '100', '200', '300']},
        {'bbox_2d': '100, 100, 200, 300'},
        {'bbox_2d': [100.0, 100.0, 200.0, 300.0]},
    ],
)
def test_box_key_and_value_variants(box):
    item = dict(box, label='thing')
    assert boxes(grounding(json.dumps([item]))) == [('thing', [64.0, 48.0, 128.0, 144.0])]


@pytest.mark.parametrize('label_key', ['name', 'class', 'category'])
def test_label_key_variants(label_key):
    text = json.dumps([{'bbox_2d': [0, 0, 10, 10], label_key: 'Mug'}])
    assert [label for label, _ in boxes(grounding(text))] == ['mug']


def test_consecutive_bare_objects_without_a_list():
    text = '{"bbox_2d": [0, 0, 10, 10], "label": "a"}\n{"bbox_2d": [20, 20, 30, 30], "label": "b"}'
    assert [label for label, _ in boxes(grounding(text))] == ['a', 'b']


def test_point_items_are_skipped_and_counted():
    text = json.dumps(
        [{'point_2d': [500, 500], 'label': 'dot'}, {'bbox_2d': [0, 0, 10, 10], 'label': 'box'}]
    )
    result = grounding(text)
    assert [label for label, _ in boxes(result)] == ['box']
    assert result.dropped_items == 1
    assert any('point' in w for w in result.warnings)


def test_confidence_field_is_used_when_in_range():
    text = json.dumps(
        [
            {'bbox_2d': [0, 0, 10, 10], 'label': 'a', 'confidence': 0.25},
            {'bbox_2d': [20, 20, 30, 30], 'label': 'b', 'score': 7},
        ]
    )
    result = grounding(text)
    assert [d.confidence for d in result.detections] == [0.25, 1.0]


# ------------------------------------------------------------------ validation


def test_coordinates_are_sorted_and_clamped():
    text = json.dumps([{'bbox_2d': [1200, 500, -30, 250], 'label': 'x'}])
    result = grounding(text)
    assert boxes(result) == [('x', [0.0, 120.0, 640.0, 240.0])]
    assert any('clamped' in w for w in result.warnings)


@pytest.mark.parametrize(
    'bad',
    [
        [100, 100, 100, 200],  # zero width
        [100, 100, 200, 100],  # zero height
        [1100, 0, 1200, 100],  # entirely right of the image
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        [True, 0, 10, 10],
        ['a', 0, 10, 10],
        None,
        'no numbers',
    ],
)
def test_invalid_or_degenerate_boxes_are_dropped(bad):
    text = json.dumps([{'bbox_2d': bad, 'label': 'bad'}, {'bbox_2d': [0, 0, 5, 5], 'label': 'ok'}])
    result = grounding(text)
    assert [label for label, _ in boxes(result)] == ['ok']
    assert result.dropped_items == 1


def test_non_finite_coordinates_are_dropped():
    result = grounding(
        '[{"bbox_2d": [NaN, 0, 10, 10], "label": "n"}, '
        '{"bbox_2d": [0, 0, Infinity, 10], "label": "i"}]'
    )
    assert result.detections == ()
    assert result.dropped_items == 2


def test_missing_label_gets_the_default_name():
    result = grounding(
        '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [20, 0, 30, 10], "label": "!!"}]'
    )
    assert [d.label for d in result.detections] == [DEFAULT_LABEL, DEFAULT_LABEL]
    assert any('without a label' in w for w in result.warnings)


@pytest.mark.parametrize(
    ('raw', 'expected'),
    [
        ('  Red   Cup ', 'red cup'),
        ('"chair."', 'chair'),
        ('coffee_mug', 'coffee mug'),
        ('“Lamp”', 'lamp'),
        ('T-Shirt', 't-shirt'),
        ('ＣＵＰ', 'cup'),
        (42, '42'),
        ('...', ''),
    ],
)
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected


def test_duplicates_with_same_label_and_high_iou_are_merged():
    text = json.dumps(
        [
            {'bbox_2d': [100, 100, 500, 500], 'label': 'cup'},
            {'bbox_2d': [110, 110, 500, 500], 'label': 'Cup'},  # IoU ~0.95 with the first
            {'bbox_2d': [110, 110, 500, 500], 'label': 'mug'},  # other label: kept
            {'bbox_2d': [300, 300, 700, 700], 'label': 'cup'},  # IoU ~0.14: kept
        ]
    )
    result = grounding(text)
    assert [label for label, _ in boxes(result)] == ['cup', 'mug', 'cup']
    assert result.merged_duplicates == 1


def test_items_beyond_the_cap_are_ignored_and_flagged():
    items = [
        {
            'bbox_2d': [i % 100 * 10, i // 100 * 10, i % 100 * 10 + 5, i // 100 * 10 + 5],
            'label': f'o{i}',
        }
        for i in range(MAX_DETECTIONS + 44)
    ]
    result = grounding(json.dumps(items))
    assert len(result.detections) == MAX_DETECTIONS
    assert result.capped
    assert result.detections[-1].label == f'o{MAX_DETECTIONS - 1}'


def test_parser_and_grammar_share_one_set_of_limits():
    """The parser read 256 items of 128-char labels while the schema allows 64 of 64."""
    items = [
        {'bbox_2d': [i % 8 * 120, i // 8 * 120, i % 8 * 120 + 60, i // 8 * 120 + 60],
         'label': f'{i:03d}' + 'x' * 100}
        for i in range(GROUNDING_MAX_ITEMS + 1)
    ]  # fmt: skip
    result = grounding(json.dumps(items))
    assert len(result.detections) == GROUNDING_MAX_ITEMS and result.capped
    assert {len(d.label) for d in result.detections} == {GROUNDING_LABEL_MAX_LENGTH}


@pytest.mark.parametrize(
    'label',
    ['.atesstem<think> 8ront', 'a</think>b', '<think>', 'x</think>y<think>z'],
)
def test_think_tags_inside_a_schema_valid_label_are_label_text(label):
    """Issue 10: a live vLLM server with random weights wrote labels containing "<think>"; the
    parser cut the JSON at the tag and failed 4 of 20 schema-valid answers."""
    text = json.dumps([{'bbox_2d': [760, 760, 800, 800], 'label': label}], ensure_ascii=False)
    result = grounding(text)
    assert [d.label for d in result.detections] == [normalize_label(label)]
    truncated = text[: text.index(label) + len(label) + 2] + '}, {"bbox_2d": [1'
    cut = grounding(truncated)
    assert cut.truncated and len(cut.detections) == 1


def test_custom_cap():
    items = [{'bbox_2d': [i * 10, 0, i * 10 + 5, 5], 'label': f'o{i}'} for i in range(10)]
    result = grounding(json.dumps(items), max_items=3)
    assert len(result.detections) == 3 and result.capped


def test_absolute_coordinates_scale_from_the_model_input_size():
    text = json.dumps([{'bbox_2d': [160, 120, 320, 240], 'label': 'a'}])
    result = grounding(text, coordinates=CoordinateSystem.ABSOLUTE_PIXELS, input_size=(320, 240))
    assert boxes(result) == [('a', [320.0, 240.0, 640.0, 480.0])]


def test_absolute_coordinates_default_to_the_image_size():
    text = json.dumps([{'bbox_2d': [160, 120, 320, 240], 'label': 'a'}])
    result = grounding(text, coordinates=CoordinateSystem.ABSOLUTE_PIXELS)
    assert boxes(result) == [('a', [160.0, 120.0, 320.0, 240.0])]


def test_long_runaway_output_is_bounded_and_warned():
    text = '[{"bbox_2d": [0, 0, 10, 10], "label": "a"}' + ' ' * 200_000 + ']'
    result = grounding(text)
    assert [d.label for d in result.detections] == ['a']
    assert any('longer than' in w for w in result.warnings)


# ------------------------------------------------------------------ helpers


def test_relative_box_to_pixels_and_iou():
    box = relative_box_to_pixels([250, 500, 750, 1000], 1280, 720)
    assert box == PixelBox(320.0, 360.0, 960.0, 720.0)
    assert box_iou(box, box) == pytest.approx(1.0)
    assert box_iou(box, PixelBox(0, 0, 10, 10)) == 0.0
    half = PixelBox(320.0, 360.0, 640.0, 720.0)
    assert box_iou(box, half) == pytest.approx(0.5)


def test_split_reasoning_variants():
    assert split_reasoning('<think>a</think>b') == ('a', 'b', False)
    assert split_reasoning('a</think>b') == ('a', 'b', False)  # template opened the block
    assert split_reasoning('x<think>a') == ('a', 'x', True)
    assert split_reasoning('<think>a</think>b<think>c</think>d') == ('a\nc', 'bd', False)
    assert split_reasoning('plain') == ('', 'plain', False)


def test_fenced_blocks_drop_language_tag_and_report_unclosed():
    assert fenced_blocks('a```json\n[1]\n```b```\n[2') == [('[1]\n', True), ('[2', False)]


def test_extract_boxed_balances_braces_and_takes_the_last():
    assert extract_boxed(r'\boxed{a} then \boxed{\frac{1}{2}}') == (r'\frac{1}{2}', True)
    assert extract_boxed(r'\boxed{unfinished {x}') == ('unfinished {x}', False)
    assert extract_boxed('none') == (None, False)


# ------------------------------------------------------------------ answers


def test_spatial_ssrl_think_then_boxed():
    text = '<think>The cup is at x=100, the plate at x=400.</think>\nSo: \\boxed{\\text{left}}'
    result = parse_answer(text, answer_format=AnswerFormat.THINK_BOXED)
    assert isinstance(result, AnswerResult)
    assert result.answer == 'left'
    assert result.boxed
    assert result.reasoning == 'The cup is at x=100, the plate at x=400.'
    assert result.warnings == ()


def test_plain_answer_is_the_whole_text():
    text = 'The Cup is left of the table, next to the cupboard.'
    result = parse_answer(text)
    assert result.answer == text
    assert not result.boxed


def test_answer_tags_are_stripped():
    assert parse_answer('<answer> 2.5 meters </answer>').answer == '2.5 meters'


def test_missing_boxed_for_a_boxed_model_is_warned_not_failed():
    result = parse_answer('<think>hm</think>left', answer_format=AnswerFormat.THINK_BOXED)
    assert result.answer == 'left'
    assert not result.boxed
    assert any('boxed' in w for w in result.warnings)


def test_unclosed_boxed_is_truncated():
    result = parse_answer('<think>x</think>\\boxed{1.5 m')
    assert result.answer == '1.5 m' and result.truncated


def test_answer_cut_inside_think_is_a_failure():
    result = parse_answer('<think>first I will')
    assert isinstance(result, ParseFailure)
    assert '<think>' in result.reason


def test_empty_answer_is_a_failure():
    assert isinstance(parse_answer('  '), ParseFailure)
    assert isinstance(parse_answer('<think>only reasoning</think>'), ParseFailure)


# ------------------------------------------------------------------ dispatch by request


def _request(task: TaskKind, **kwargs) -> EngineRequest:
    image = np.zeros((480, 640, 3), np.uint8)
    return EngineRequest(images=(image,), task=task, **kwargs)


def test_parse_for_request_grounding_uses_first_image_size():
    profile = resolve_profile('qwen3-vl-4b-instruct-fp8')
    result = parse_for_request(
        '[{"bbox_2d": [0, 0, 500, 500], "label": "a"}]', _request(TaskKind.GROUND), profile
    )
    assert boxes(result) == [('a', [0.0, 0.0, 320.0, 240.0])]


def test_parse_for_request_question_uses_the_profile_format():
    profile = resolve_profile('spatial-ssrl-4b-fp8')
    request = _request(TaskKind.QUESTION, question='Where is the cup?', vocabulary=('cup',))
    result = parse_for_request('<think>r</think>\\boxed{the cup is left}', request, profile)
    assert isinstance(result, AnswerResult)
    assert (result.answer, result.boxed, result.reasoning) == ('the cup is left', True, 'r')


def test_parse_for_request_without_image_is_a_failure():
    request = EngineRequest(images=(), task=TaskKind.GROUND)
    result = parse_for_request('[]', request, resolve_profile(None))
    assert isinstance(result, ParseFailure)
