# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
What a spatial question asks for, read from its words, and the answer geometry alone gives.

The node measures what a question needs even when the model names no measurement, and answers
on its own when the model gives no usable answer. Only plain, unambiguous question shapes are
recognised (anything else is left to the model):

==========================================  ==========================================
question shape                              measurements
==========================================  ==========================================
how far / distance / apart, two objects     distance(a, b)
how far, one object                         range(a)
nearer / closer / nearest / closest         range of each named object (or of every
                                            object when none is named); distance to X
                                            with "to X" / "from X"
left / right, two objects                   left_right(a, b)
in front of / behind, two objects           front_behind(a, b)
above / below / higher / lower, two objects above_below(a, b)
how big / size / largest / smallest         size of each named object (every object
                                            when none is named)
how tall / height                           height(a)
how wide / width                            width(a)
==========================================  ==========================================

Objects are named by id or by a label that names exactly one object of the scene; a label
that fits several objects ("the coke can" with two cans) names none, because only the model
(or ~/locate with a qualifier) can tell which one is meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import math
import re

from spatial_vlm_ros.core.measurements import (
    Measurement,
    MeasurementError,
    MeasurementKind,
    PlacedObject,
    QueryFrame,
    measure,
)
from spatial_vlm_ros.core.mentions import find_mentions, normalize_label, normalize_text

_DISTANCE = re.compile(r'\b(how far|distance|apart|how close|separat\w*|far away|far is)\b')
_NEARER = re.compile(r'\b(closer|nearer|closest|nearest|farther|further|farthest|furthest)\b')
_FAR_WORDS = ('farther', 'further', 'farthest', 'furthest')
_LEFT_RIGHT = re.compile(r'\b(left|right|leftmost|rightmost)\b')
_FRONT_BEHIND = re.compile(r'\b(in front of|behind|front)\b')
_ABOVE_BELOW = re.compile(r'\b(above|below|higher|lower|under|underneath|on top of|beneath)\b')
_SIZE = re.compile(r'\b(how big|how large|size|largest|biggest|smallest|bigger|larger|smaller)\b')
_SMALL_WORDS = ('smallest', 'smaller')
_HEIGHT = re.compile(r'\b(how tall|height|how high|tallest)\b')
_WIDTH = re.compile(r'\b(how wide|width|widest)\b')
_REFERENCE = re.compile(r'\b(?:to|from)\s+(?:the\s+)?')


@dataclass(frozen=True)
class QuestionPlan:
    """The measurements a question needs and, when geometry alone answers it, that answer."""

    requests: tuple[tuple[MeasurementKind, tuple[str, ...]], ...] = ()
    named_ids: tuple[str, ...] = ()  # objects the question names unambiguously
    ambiguous_labels: tuple[str, ...] = ()  # labels it names that fit several objects
    intent: str = ''  # 'distance', 'range', 'nearest', 'farthest', 'left_right', ...
    notes: tuple[str, ...] = field(default_factory=tuple)


def _named_objects(
    question: str, placed: Sequence[PlacedObject]
) -> tuple[list[tuple[int, str]], list[str]]:
    """``([(position, id)], ambiguous labels)`` in the order the question names them."""
    labels = [obj.label for obj in placed]
    mentions = find_mentions(question, labels, [obj.id for obj in placed])
    by_label: dict[str, list[str]] = {}
    for obj in placed:
        by_label.setdefault(normalize_label(obj.label), []).append(obj.id)
    named: list[tuple[int, str]] = []
    ambiguous: list[str] = []
    spans_used: set[tuple[int, int]] = set()
    for mention in mentions:
        if mention.kind == 'id':
            named.append((mention.start, mention.object_id))
            spans_used.add((mention.start, mention.end))
    for mention in mentions:
        if mention.kind == 'id' or (mention.start, mention.end) in spans_used:
            continue
        same_span = [
            other
            for other in mentions
            if (other.start, other.end) == (mention.start, mention.end) and other.kind != 'id'
        ]
        # "the chair" with labels chair and office chair names the chair: the best kind wins.
        best = max(other.score for other in same_span)
        candidates = sorted(
            {i for other in same_span if other.score == best for i in by_label[other.label]}
        )
        spans_used.add((mention.start, mention.end))
        if len(candidates) == 1:
            named.append((mention.start, candidates[0]))
        elif candidates:
            ambiguous.append(mention.text)
    ordered: list[tuple[int, str]] = []
    for start, object_id in sorted(named):
        if object_id not in (existing for _, existing in ordered):
            ordered.append((start, object_id))
    return ordered, ambiguous


def plan_question(question: str, placed: Sequence[PlacedObject]) -> QuestionPlan:
    """Return the measurements ``question`` needs on ``placed`` objects (see the module table)."""
    text = normalize_text(question)
    named_positions, ambiguous = _named_objects(question, placed)
    named = [object_id for _, object_id in named_positions]
    positioned = [obj.id for obj in placed if obj.has_position]
    requests: list[tuple[MeasurementKind, tuple[str, ...]]] = []
    intent = ''
    if _NEARER.search(text):
        far = any(word in text for word in _FAR_WORDS)
        intent = 'farthest' if far else 'nearest'
        reference = _reference_after(text, named_positions)
        if reference:
            others = [object_id for object_id in named if object_id != reference]
            if not others:
                others = [object_id for object_id in positioned if object_id != reference]
            requests = [(MeasurementKind.DISTANCE, (other, reference)) for other in others]
            intent += '_to'
        else:
            subjects = named if len(named) >= 2 else (named or positioned)
            requests = [(MeasurementKind.RANGE, (object_id,)) for object_id in subjects]
    elif _DISTANCE.search(text):
        if len(named) >= 2:
            intent = 'distance'
            requests = [(MeasurementKind.DISTANCE, (named[0], named[1]))]
        elif len(named) == 1 and not ambiguous:
            intent = 'range'
            requests = [(MeasurementKind.RANGE, (named[0],))]
    elif _HEIGHT.search(text) and named:
        intent = 'height'
        requests = [(MeasurementKind.HEIGHT, (object_id,)) for object_id in named]
    elif _WIDTH.search(text) and named:
        intent = 'width'
        requests = [(MeasurementKind.WIDTH, (object_id,)) for object_id in named]
    elif _SIZE.search(text):
        intent = 'smallest' if any(word in text for word in _SMALL_WORDS) else 'largest'
        if len(named) == 1 and not re.search(r'\b(largest|biggest|smallest)\b', text):
            intent = 'size'
        subjects = named if named else positioned
        requests = [(MeasurementKind.SIZE, (object_id,)) for object_id in subjects]
    elif len(named) >= 2:
        for pattern, kind in (
            (_LEFT_RIGHT, MeasurementKind.LEFT_RIGHT),
            (_FRONT_BEHIND, MeasurementKind.FRONT_BEHIND),
            (_ABOVE_BELOW, MeasurementKind.ABOVE_BELOW),
        ):
            if pattern.search(text):
                intent = kind.value
                requests = [(kind, (named[0], named[1]))]
                break
    return QuestionPlan(
        requests=tuple(requests),
        named_ids=tuple(named),
        ambiguous_labels=tuple(ambiguous),
        intent=intent,
    )


def _reference_after(text: str, named_positions: Sequence[tuple[int, str]]) -> str:
    """Return the object named right after "to"/"from" ("closer to the keyboard"), or ''."""
    for match in _REFERENCE.finditer(text):
        for start, object_id in named_positions:
            if start == match.end():
                return object_id
    return ''


def measure_plan(
    plan: QuestionPlan, placed: Sequence[PlacedObject], frame: QueryFrame
) -> tuple[list[Measurement], list[str]]:
    """Every measurement of ``plan`` that can be made, and why the others could not."""
    by_id = {obj.id: obj for obj in placed}
    measurements: list[Measurement] = []
    problems: list[str] = []
    for kind, ids in plan.requests:
        try:
            measurements.append(measure(kind, [by_id[i] for i in ids], frame))
        except (MeasurementError, KeyError) as error:
            problems.append(f'{kind.value} {"/".join(ids)}: {error}')
    return measurements, problems


def geometry_answer(plan: QuestionPlan, measurements: Sequence[Measurement]) -> str:
    """Return the answer the measurements give on their own, or '' when they do not answer it."""
    if not measurements:
        return ''
    if plan.intent in ('nearest', 'farthest', 'largest', 'smallest', 'nearest_to', 'farthest_to'):
        if len(measurements) < 2 and plan.intent in ('nearest_to', 'farthest_to'):
            return measurements[0].text + '.'
        pick_max = plan.intent in ('farthest', 'largest', 'farthest_to')
        ranked = sorted(measurements, key=lambda m: m.value, reverse=pick_max)
        best = ranked[0]
        word = {
            'nearest': 'nearest to the camera',
            'farthest': 'farthest from the camera',
            'largest': 'largest',
            'smallest': 'smallest',
            'nearest_to': f'nearest to {best.object_ids[-1]}',
            'farthest_to': f'farthest from {best.object_ids[-1]}',
        }[plan.intent]
        shown = ranked[: min(len(ranked), 4)]
        details = '; '.join(m.text for m in shown)
        more = f' (and {len(ranked) - len(shown)} more)' if len(ranked) > len(shown) else ''
        tie = ''
        if len(ranked) > 1 and _too_close(ranked[0], ranked[1]):
            tie = f' {ranked[1].object_ids[0]} is within the uncertainty of it.'
        return f'{best.object_ids[0]} is the {word}.{tie} Measured: {details}{more}.'
    return ' '.join(m.text + '.' for m in measurements)


def _too_close(first: Measurement, second: Measurement) -> bool:
    sigmas = [s for s in (first.sigma, second.sigma) if math.isfinite(s)]
    if not sigmas:
        return abs(first.value - second.value) < 0.01
    return abs(first.value - second.value) < 2.0 * math.sqrt(sum(s * s for s in sigmas))
