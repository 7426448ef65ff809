# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Strict checks of the grounded-answer and locate-choice JSON (no jsonschema in the venv).

Written from the schema's rules, independently of engines.question's parser, so a parser that
tolerated a bad answer would not hide it.
"""

from __future__ import annotations

import json
import re
from typing import Any

PAIR_KINDS = {'distance', 'left_right', 'front_behind', 'above_below'}
SINGLE_KINDS = {'range', 'size', 'height', 'width'}
_FORBIDDEN_TEXT = re.compile(r'[\x00-\x1f"\\{}<>]')


def answer_json(raw_text: str, think_boxed: bool) -> str:
    """The JSON text of an answer: the whole text, or the inside of ``\\boxed{}`` after think."""
    if not think_boxed:
        return raw_text
    match = re.fullmatch(r'<think>(.*)</think>\n\\boxed\{(.*)\}', raw_text, re.DOTALL)
    assert match, f'not <think>...</think> then \\boxed{{...}}: {raw_text!r}'
    return match.group(2)


def _check_text(value: Any, max_chars: int) -> None:
    assert isinstance(value, str), value
    # Random weights can emit a UTF-8 lead byte the grammar counts with its character while the
    # tokenizer decodes the stray bytes as U+FFFD each: those are not counted.
    assert 1 <= len(value.replace('\ufffd', '')) <= max_chars, value
    assert not _FORBIDDEN_TEXT.search(value), value


def check_answer(text: str, ids: list[str], max_chars: int) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict) and set(value) == {'answer', 'object_ids', 'measurements'}
    _check_text(value['answer'], max_chars)
    assert isinstance(value['object_ids'], list) and len(value['object_ids']) <= 6
    assert all(item in ids for item in value['object_ids']), value['object_ids']
    assert isinstance(value['measurements'], list) and len(value['measurements']) <= 3
    for item in value['measurements']:
        assert set(item) <= {'kind', 'object_ids', 'value_m'} and {'kind', 'object_ids'} <= set(
            item
        ), item
        arity = 2 if item['kind'] in PAIR_KINDS else 1
        assert item['kind'] in PAIR_KINDS | SINGLE_KINDS, item
        assert len(item['object_ids']) == arity and all(i in ids for i in item['object_ids'])
        if 'value_m' in item:
            number = item['value_m']
            assert isinstance(number, int | float) and not isinstance(number, bool)
            assert -1000 <= number <= 1000
    return value


def check_choice(text: str, ids: list[str]) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict) and set(value) == {'choice', 'reason'}, value
    assert value['choice'] in [*ids, 'none'], value
    _check_text(value['reason'], 120)
    return value
