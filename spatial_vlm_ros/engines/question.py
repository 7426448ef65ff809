# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
r"""
What the model is given for a grounded question or a locate choice, and how its answer reads.

Grounded question (``~/query``): beside the set-of-marks image (``core.annotate.draw_marks``)
the model gets a compact **facts block**: per object its id, label, position in metres
(centimetres) in the reference frame with the axes named, its extents, its range from the camera
and whether the depth was good; then the centroid distances that matter (each object's nearest
few, and every pair among the objects the question names). It answers with one JSON object
(:func:`answer_schema`): the answer text, the ids it refers to (an enum of the scene's ids), and
the measurements it relies on (kind + ids, and optionally the number it believes).

Locate choice (``~/locate``, when appearance decides): the image marks only the candidates and
the model picks one id, or ``none`` (:func:`choice_schema`).

Each profile keeps its answer format: plain profiles answer with the bare JSON; Spatial-SSRL
thinks in ``<think>...</think>`` and puts the JSON inside ``\boxed{}``. :func:`constraint_for`
builds the matching grammar (a JSON schema, or an xgrammar structural tag: think block, then
``\boxed{``, the schema, ``}``) that engines apply with constrained decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import itertools
import json
import math
from typing import Any

import numpy as np

from spatial_vlm_ros.core.measurements import (
    MeasurementKind,
    PlacedObject,
    QueryFrame,
    arity,
)
from spatial_vlm_ros.engines.base import OutputConstraint
from spatial_vlm_ros.engines.parsing import (
    ParseFailure,
    extract_boxed,
    split_reasoning,
)
from spatial_vlm_ros.engines.profiles import AnswerFormat, ModelProfile
from spatial_vlm_ros.engines.schema import bounded_string_pattern

ANSWER_SCHEMA_NAME = 'grounded_answer'
CHOICE_SCHEMA_NAME = 'locate_choice'
NONE_CHOICE = 'none'
ANSWER_MAX_CHARS = 240
REASON_MAX_CHARS = 120
MAX_ANSWER_IDS = 6
MAX_MEASUREMENTS = 3
# Output tokens reserved for the JSON after a think block (240 answer chars ~ 60-80 BPE tokens,
# ids and keys ~ 60 more); the think block gets the rest of the profile's max_new_tokens.
ANSWER_TOKEN_RESERVE = 320
MIN_THINK_TOKENS = 8
GOOD_DEPTH_RATIO = 0.3  # valid_depth_ratio at or above this reads "ok" in the facts
_DECODER = json.JSONDecoder()


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class FactsOptions:
    """Bounds of the facts block (docs/QUERIES.md has the token cost per object)."""

    max_objects: int = 24  # objects listed; named ones first, then by confidence and range
    nearest_per_object: int = 2  # distances to each listed object's nearest neighbours
    max_named_pairs: int = 12  # distances among the objects the question names


@dataclass(frozen=True)
class FactsBlock:
    text: str
    object_ids: tuple[str, ...]  # listed objects, in listed order
    pairs: tuple[tuple[str, str, float], ...]  # (a, b, distance m) listed
    omitted: int = 0  # objects not listed (over max_objects)


def _cm(value: float) -> str:
    text = f'{value:.2f}'
    return '0.00' if text == '-0.00' else text


def _object_line(obj: PlacedObject) -> str:
    label = ' '.join(obj.label.split())
    if obj.position is None:
        return f'{obj.id} {label}: no depth'
    x, y, z = (_cm(float(v)) for v in obj.position)
    size = 'size ?' if obj.size is None else ' '.join(_cm(float(v)) for v in obj.size)
    rng = '?' if not math.isfinite(obj.range_m) else _cm(obj.range_m)
    ratio = obj.valid_depth_ratio
    depth = 'ok' if ratio >= GOOD_DEPTH_RATIO else f'sparse {ratio:.0%}'
    seen = '' if obj.in_view else f'; not in view, last seen {obj.age_s:.0f} s ago'
    return f'{obj.id} {label}: {x} {y} {z}; {size}; {rng}; {depth}{seen}'


def _listed_objects(
    placed: Sequence[PlacedObject], named_ids: Sequence[str], limit: int
) -> tuple[list[PlacedObject], int]:
    named = [obj for object_id in named_ids for obj in placed if obj.id == object_id]
    rest = sorted(
        (obj for obj in placed if obj.id not in set(named_ids)),
        key=lambda o: (
            o.position is None,
            -o.confidence,
            o.range_m if math.isfinite(o.range_m) else math.inf,
            o.id,
        ),
    )
    chosen = (named + rest)[: max(limit, len(named))]
    order = {obj.id: index for index, obj in enumerate(placed)}
    listed = sorted(chosen, key=lambda o: order[o.id])
    return listed, len(placed) - len(listed)


def _distance(a: PlacedObject, b: PlacedObject) -> float:
    assert a.position is not None and b.position is not None
    return float(np.linalg.norm(a.position - b.position))


def facts_pairs(
    listed: Sequence[PlacedObject], named_ids: Sequence[str], options: FactsOptions
) -> list[tuple[str, str, float]]:
    """
    Return the distances worth listing.

    Each object's nearest few, and the named objects' pairs.
    """
    positioned = [obj for obj in listed if obj.position is not None]
    wanted: dict[tuple[str, str], float] = {}

    def add(a: PlacedObject, b: PlacedObject) -> None:
        key = (a.id, b.id) if a.id < b.id else (b.id, a.id)
        wanted.setdefault(key, _distance(a, b))

    named = [obj for obj in positioned if obj.id in set(named_ids)]
    for a, b in itertools.islice(itertools.combinations(named, 2), options.max_named_pairs):
        add(a, b)
    for obj in positioned:
        others = sorted((o for o in positioned if o.id != obj.id), key=lambda o: _distance(obj, o))
        for other in others[: options.nearest_per_object]:
            add(obj, other)
    return [(a, b, d) for (a, b), d in sorted(wanted.items())]


def facts_block(
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
    named_ids: Sequence[str] = (),
    options: FactsOptions | None = None,
) -> FactsBlock:
    """Return the measured scene as compact text (see the module docstring)."""
    options = options or FactsOptions()
    listed, omitted = _listed_objects(placed, named_ids, options.max_objects)
    pairs = facts_pairs(listed, named_ids, options)
    where = 'camera optical frame' if frame.optical else 'frame'
    lines = [
        f'Measured with the depth camera, metres, {where} {frame.frame_id} '
        f'({frame.axes_description()}).',
        'Per object: id label: position x y z; extent along the camera axes '
        '(across, vertical, depth); range from the camera; depth quality.',
    ]
    lines.extend(_object_line(obj) for obj in listed)
    if not listed:
        lines.append('(no objects were found in this image)')
    if omitted:
        lines.append(f'({omitted} more objects not listed)')
    if pairs:
        distances = ', '.join(f'{a}-{b} {_cm(d)}' for a, b, d in pairs)
        lines.append(f'Centroid distances: {distances}.')
    return FactsBlock(
        text='\n'.join(lines),
        object_ids=tuple(obj.id for obj in listed),
        pairs=tuple(pairs),
        omitted=omitted,
    )


# ----------------------------------------------------------------------------- schemas


def _text_schema(max_chars: int) -> dict[str, Any]:
    # No control characters, quotes, backslashes, braces or angle brackets: strict JSON, the
    # JSON's own braces stay the only ones inside Spatial-SSRL's \boxed{...}, and no <think>
    # tag can appear inside a string. A pattern carries the length bound (xgrammar does not
    # combine a pattern with minLength/maxLength).
    return {
        'type': 'string',
        'pattern': bounded_string_pattern('[^\\x00-\\x1f"\\\\{}<>]', max_chars),
    }


def _id_array(object_ids: Sequence[str], min_items: int, max_items: int) -> dict[str, Any]:
    if not object_ids:
        return {'type': 'array', 'maxItems': 0}
    return {
        'type': 'array',
        'items': {'type': 'string', 'enum': list(object_ids)},
        'minItems': min_items,
        'maxItems': max_items,
    }


def answer_schema(
    object_ids: Sequence[str], answer_max_chars: int = ANSWER_MAX_CHARS
) -> dict[str, Any]:
    """
    Return the grounded answer's JSON schema.

    Ids are an enum of ``object_ids`` (the scene's).
    """
    ids = list(dict.fromkeys(object_ids))
    measurement_variants = []
    for size in (2, 1):
        kinds = [kind.value for kind in MeasurementKind if arity(kind) == size]
        measurement_variants.append(
            {
                'type': 'object',
                'properties': {
                    'kind': {'type': 'string', 'enum': kinds},
                    'object_ids': _id_array(ids, size, size),
                    'value_m': {'type': 'number', 'minimum': -1000, 'maximum': 1000},
                },
                'required': ['kind', 'object_ids'],
                'additionalProperties': False,
            }
        )
    measurements: dict[str, Any] = {
        'type': 'array',
        'maxItems': MAX_MEASUREMENTS,
        'items': {'anyOf': measurement_variants},
    }
    if not ids:
        measurements = {'type': 'array', 'maxItems': 0}
    return {
        'type': 'object',
        'properties': {
            'answer': _text_schema(answer_max_chars),
            'object_ids': _id_array(ids, 0, min(MAX_ANSWER_IDS, len(ids))),
            'measurements': measurements,
        },
        'required': ['answer', 'object_ids', 'measurements'],
        'additionalProperties': False,
    }


def choice_schema(candidate_ids: Sequence[str]) -> dict[str, Any]:
    """Return the locate choice: one candidate id or ``none``, and a short reason."""
    return {
        'type': 'object',
        'properties': {
            'choice': {'type': 'string', 'enum': [*dict.fromkeys(candidate_ids), NONE_CHOICE]},
            'reason': _text_schema(REASON_MAX_CHARS),
        },
        'required': ['choice', 'reason'],
        'additionalProperties': False,
    }


def think_token_budget(profile: ModelProfile) -> int:
    """Tokens the think block may take before the grammar forces ``</think>``."""
    budget = profile.question_sampling.max_new_tokens - ANSWER_TOKEN_RESERVE
    return max(MIN_THINK_TOKENS, budget)


def constraint_for(
    profile: ModelProfile,
    schema: dict[str, Any],
    name: str = ANSWER_SCHEMA_NAME,
    think_max_tokens: int | None = None,
) -> OutputConstraint:
    r"""
    Return the grammar for ``schema`` in ``profile``'s answer format.

    Plain profiles: the bare JSON. Think-boxed profiles (Spatial-SSRL): an xgrammar structural
    tag ``<think>`` any text (at most ``think_max_tokens``) ``</think>`` then ``\boxed{`` the
    JSON ``}``; SGLang and vLLM take the same object as ``response_format`` /
    ``structural_tag``.
    """
    schema_text = json.dumps(schema, separators=(',', ':'))
    if profile.answer_format != AnswerFormat.THINK_BOXED:
        return OutputConstraint(json_schema=schema_text, name=name)
    think_tokens = think_token_budget(profile) if think_max_tokens is None else think_max_tokens
    tag = {
        'type': 'structural_tag',
        'format': {
            'type': 'sequence',
            'elements': [
                {
                    'type': 'tag',
                    'begin': '<think>',
                    'content': {'type': 'any_text', 'max_tokens': int(think_tokens)},
                    'end': '</think>',
                },
                {'type': 'const_string', 'value': '\n\\boxed{'},
                # One space at most between tokens: random or confused models otherwise loop
                # on whitespace inside the JSON until max_new_tokens.
                {'type': 'json_schema', 'json_schema': schema, 'max_whitespace_cnt': 1},
                {'type': 'const_string', 'value': '}'},
            ],
        },
    }
    return OutputConstraint(
        json_schema=schema_text,
        structural_tag=json.dumps(tag, separators=(',', ':')),
        name=name,
    )


# ----------------------------------------------------------------------------- prompts


def _format_instruction(profile: ModelProfile, shape: str) -> str:
    if profile.answer_format == AnswerFormat.THINK_BOXED:
        return f'Put exactly one JSON object inside \\boxed{{}}: {shape}'
    return f'Reply with exactly one JSON object and nothing else: {shape}'


def question_text(profile: ModelProfile, facts: FactsBlock, question: str) -> str:
    """
    Return the user text of a grounded question.

    The profile's template is applied around it.
    """
    kinds = '|'.join(kind.value for kind in MeasurementKind)
    shape = (
        '{"answer": "<short answer>", "object_ids": ["<ids the answer is about>"], '
        f'"measurements": [{{"kind": "<{kinds}>", "object_ids": ["<id>", "<id>"], '
        '"value_m": <number>}]}'
    )
    return '\n'.join(
        [
            'Each object in the image is outlined and tagged with its id.',
            facts.text,
            'Use these measurements for every distance, size and position; do not estimate '
            'numbers from the image. Refer to objects by id.',
            f'Question: {" ".join(str(question).split())}',
            _format_instruction(profile, shape),
            'In "measurements" list the quantity the answer relies on when the question is about '
            'distance, size or position (left_right, front_behind and above_below are signed: '
            'positive when the first object is left of, nearer than, or above the second); '
            'otherwise [].',
        ]
    )


def choice_text(
    profile: ModelProfile,
    description: str,
    candidates: Sequence[tuple[str, str]],
) -> str:
    """
    Return the user text asking the model to pick ``description``.

    Among marked ``(id, label)`` candidates.
    """
    listed = ', '.join(f'{object_id} ({label})' for object_id, label in candidates)
    shape = '{"choice": "<one of the ids, or none>", "reason": "<a few words>"}'
    return '\n'.join(
        [
            f'The image marks {len(candidates)} candidate objects, each tagged with its id: '
            f'{listed}.',
            f'Which one is "{" ".join(str(description).split())}"? Judge by what you see '
            '(colour, material, shape, parts). Answer none when no candidate fits.',
            _format_instruction(profile, shape),
        ]
    )


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class StatedMeasurement:
    """A measurement the model says its answer relies on (ids checked against the scene)."""

    kind: MeasurementKind
    object_ids: tuple[str, ...]
    value_m: float = math.nan  # the model's number; never used as the value


@dataclass(frozen=True)
class StructuredAnswer:
    answer: str
    object_ids: tuple[str, ...]
    measurements: tuple[StatedMeasurement, ...]
    reasoning: str = ''
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ChoiceAnswer:
    choice: str  # a candidate id, or '' for none
    reason: str
    reasoning: str = ''


def _json_object(raw_text: str, profile: ModelProfile) -> tuple[Any, str, list[str]]:
    """``(value, reasoning, warnings)`` of the first JSON object in the answer part."""
    stripped = raw_text.strip()
    if stripped.startswith('{'):  # a bare JSON answer: its strings may hold any text
        try:
            value, end = _DECODER.raw_decode(stripped)
        except ValueError:
            pass
        else:
            if isinstance(value, dict) and not stripped[end:].strip():
                return value, '', []
    reasoning, remainder, unclosed = split_reasoning(raw_text)
    warnings: list[str] = []
    if unclosed:
        raise ValueError('output ended inside <think> before an answer')
    content, closed = extract_boxed(remainder)
    body = remainder
    if content is not None:
        body = content
        if not closed:
            warnings.append('\\boxed{ was not closed')
    elif profile.answer_format == AnswerFormat.THINK_BOXED:
        warnings.append('expected a \\boxed{} answer; read the JSON after the reasoning')
    start = body.find('{')
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(body, start)
        except ValueError:
            start = body.find('{', start + 1)
            continue
        if isinstance(value, dict):
            return value, reasoning, warnings
        start = body.find('{', start + 1)
    raise ValueError('no JSON object in the answer')


def _clean_text(value: object, limit: int) -> str:
    return ' '.join(str(value).split())[:limit] if isinstance(value, str) else ''


def parse_structured_answer(
    raw_text: str, profile: ModelProfile, scene_ids: Iterable[str]
) -> StructuredAnswer | ParseFailure:
    """
    Return the grounded answer in ``raw_text``.

    Ids outside ``scene_ids`` are dropped with a warning.

    Never raises: output without a usable JSON object is a :class:`ParseFailure`.
    """
    known = set(scene_ids)
    try:
        value, reasoning, warnings = _json_object(str(raw_text), profile)
    except (ValueError, RecursionError) as error:
        return ParseFailure(str(error), str(raw_text))
    answer = _clean_text(value.get('answer'), 4 * ANSWER_MAX_CHARS)
    if not answer:
        return ParseFailure('the JSON answer has no "answer" text', str(raw_text))
    ids: list[str] = []
    raw_ids = value.get('object_ids')
    for item in raw_ids if isinstance(raw_ids, list) else []:
        if isinstance(item, str) and item in known:
            if item not in ids:
                ids.append(item)
        else:
            warnings.append(f'dropped unknown object id {item!r}')
    measurements: list[StatedMeasurement] = []
    raw_measurements = value.get('measurements')
    for item in raw_measurements if isinstance(raw_measurements, list) else []:
        stated = _stated_measurement(item, known, warnings)
        if stated is not None:
            measurements.append(stated)
    return StructuredAnswer(
        answer=answer,
        object_ids=tuple(ids),
        measurements=tuple(measurements[:MAX_MEASUREMENTS]),
        reasoning=reasoning,
        warnings=tuple(warnings),
    )


def _stated_measurement(
    item: object, known: set[str], warnings: list[str]
) -> StatedMeasurement | None:
    if not isinstance(item, dict):
        warnings.append(f'dropped measurement {item!r}: not an object')
        return None
    try:
        kind = MeasurementKind(item.get('kind'))
    except ValueError:
        warnings.append(f'dropped measurement of unknown kind {item.get("kind")!r}')
        return None
    raw_ids = item.get('object_ids')
    ids = tuple(i for i in raw_ids if isinstance(i, str)) if isinstance(raw_ids, list) else ()
    if len(ids) != arity(kind) or any(i not in known for i in ids):
        warnings.append(f'dropped {kind.value} measurement with ids {list(ids)}')
        return None
    if arity(kind) == 2 and ids[0] == ids[1]:
        warnings.append(f'dropped {kind.value} measurement of {ids[0]} with itself')
        return None
    number = item.get('value_m')
    value = (
        float(number)
        if isinstance(number, int | float) and not isinstance(number, bool)
        else math.nan
    )
    return StatedMeasurement(kind, ids, value if math.isfinite(value) else math.nan)


def parse_choice(
    raw_text: str, profile: ModelProfile, candidate_ids: Iterable[str]
) -> ChoiceAnswer | ParseFailure:
    """Return the locate choice in ``raw_text``: a candidate id, or '' for ``none``."""
    known = set(candidate_ids)
    try:
        value, reasoning, _ = _json_object(str(raw_text), profile)
    except (ValueError, RecursionError) as error:
        return ParseFailure(str(error), str(raw_text))
    choice = value.get('choice')
    if choice == NONE_CHOICE:
        return ChoiceAnswer('', _clean_text(value.get('reason'), REASON_MAX_CHARS), reasoning)
    if not isinstance(choice, str) or choice not in known:
        return ParseFailure(f'choice {choice!r} is not a candidate id', str(raw_text))
    return ChoiceAnswer(choice, _clean_text(value.get('reason'), REASON_MAX_CHARS), reasoning)
