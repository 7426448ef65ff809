# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Property tests: any text parses to a typed result, never an exception.

SPATIAL_VLM_FUZZ_EXAMPLES sets hypothesis' max_examples per test (default 300; CI uses 10000).
"""

from __future__ import annotations

import json
import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatial_vlm_ros.engines.parsing import (
    INTERNAL_ERROR_PREFIX,
    MAX_DETECTIONS,
    AnswerResult,
    GroundingResult,
    ParseFailure,
    normalize_label,
    parse_answer,
    parse_grounding,
)
from spatial_vlm_ros.engines.profiles import AnswerFormat, CoordinateSystem

EXAMPLES = int(os.environ.get('SPATIAL_VLM_FUZZ_EXAMPLES', '300'))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Fragments of what the models emit, so random text hits the parser's interesting paths.
FRAGMENTS = st.sampled_from(
    [
        '[',
        ']',
        '{',
        '}',
        ',',
        ':',
        '"',
        '```',
        '```json\n',
        '<think>',
        '</think>',
        '\\boxed{',
        '"bbox_2d"',
        '"bbox"',
        '"point_2d"',
        '"label"',
        '"objects"',
        '"cup"',
        'NaN',
        '-1',
        '0',
        '1000',
        '1e309',
        '500.5',
        'true',
        'null',
        ' ',
        '\n',
        '<answer>',
        '\\text{',
    ]
)
NUMBER = st.one_of(
    st.integers(-2000, 3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(['12', 'x', True, None]),
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        'bbox_2d': st.one_of(st.lists(NUMBER, min_size=0, max_size=6), NUMBER),
        'point_2d': st.lists(NUMBER, max_size=3),
        'label': st.one_of(st.text(max_size=20), st.integers(), st.none()),
        'confidence': NUMBER,
    },
)
MODEL_LIKE = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=60).map(''.join),
    st.lists(ITEM, max_size=20).map(lambda items: json.dumps(items, allow_nan=True)),
)
SIZES = st.tuples(st.integers(1, 4096), st.integers(1, 4096))


def _check_grounding(result: object, width: int, height: int) -> None:
    assert isinstance(result, GroundingResult | ParseFailure)
    if isinstance(result, ParseFailure):
        assert not result.reason.startswith(INTERNAL_ERROR_PREFIX), result.reason
        assert isinstance(result.raw_text, str)
        return
    assert len(result.detections) <= MAX_DETECTIONS
    assert all(isinstance(w, str) for w in result.warnings)
    for detection in result.detections:
        box = detection.box
        values = box.as_list()
        assert all(math.isfinite(v) for v in values)
        assert 0.0 <= box.x_min < box.x_max <= width + 1e-6
        assert 0.0 <= box.y_min < box.y_max <= height + 1e-6
        assert detection.label and normalize_label(detection.label) == detection.label
        assert 0.0 <= detection.confidence <= 1.0


@FUZZ
@given(
    text=MODEL_LIKE,
    size=SIZES,
    input_size=st.tuples(st.integers(1, 2048), st.integers(1, 2048)),
    answer_format=st.sampled_from(list(AnswerFormat)),
)
def test_any_text_parses_to_typed_results(text, size, input_size, answer_format):
    # One input through every parser: generating text costs more than parsing it.
    width, height = size
    _check_grounding(parse_grounding(text, width, height), width, height)
    absolute = parse_grounding(
        text, width, height, coordinates=CoordinateSystem.ABSOLUTE_PIXELS, input_size=input_size
    )
    _check_grounding(absolute, width, height)
    answer = parse_answer(text, answer_format)
    assert isinstance(answer, AnswerResult | ParseFailure)
    if isinstance(answer, ParseFailure):
        assert not answer.reason.startswith(INTERNAL_ERROR_PREFIX), answer.reason
    else:
        assert answer.answer.strip()


VALID_ITEM = st.builds(
    lambda x1, y1, w, h, label: {'bbox_2d': [x1, y1, x1 + w, y1 + h], 'label': label},
    st.integers(0, 900),
    st.integers(0, 900),
    st.integers(1, 100),
    st.integers(1, 100),
    st.sampled_from(['cup', 'red cup', 'table', 'chair', 'coffee mug', 'door']),
)


# Drawing item lists costs more than parsing them, so this test runs a quarter of the examples
# and checks several cut points per example.
@settings(FUZZ, max_examples=max(EXAMPLES // 4, 25))
@given(
    items=st.lists(VALID_ITEM, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 10_000), min_size=1, max_size=16),
)
def test_a_cut_off_list_yields_a_prefix_of_the_full_result(items, cuts):
    text = json.dumps(items)
    full = parse_grounding(text, 640, 480)
    assert isinstance(full, GroundingResult)
    assert not full.truncated and full.dropped_items == 0
    for cut in cuts:
        prefix = parse_grounding(text[: cut % (len(text) + 1)], 640, 480)
        if isinstance(prefix, ParseFailure):
            continue
        assert prefix.detections == full.detections[: len(prefix.detections)]
