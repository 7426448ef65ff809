# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Referring expressions for ``~/locate``: "the coke can on the right" -> one object, or why not.

A description is resolved in two pure steps, with an optional model call between them:

1. :func:`prepare_locate` reads the description against the candidates (the newest scene's
   objects plus, optionally, remembered objects out of view):

   * an **exact id** (``coke_can_1``) wins outright;
   * the **noun** picks the candidates: every object whose label the description names (full
     label or plural: 1.0; head noun, ``can`` for ``coke can``: 0.85; synonym, ``cup`` for
     ``mug``: 0.75), on whole words only;
   * **metric qualifiers** are resolved from geometry: left/right (-most), nearest/farthest
     (from the camera), largest/smallest, highest/lowest, "the second ... from the left", and
     relations to another object: "next to / near / beside / closest to X", "left / right of X",
     "in front of / behind X", "above / on / below X". Each qualifier scores a candidate with
     the probability that it is the one meant, from the separation along the qualifier's axis
     and the positions' covariances (plus a small tolerance for what a person calls "the left
     one");
   * words that geometry cannot decide (colours, materials, "with the straw") mark the request
     as needing the model's eye: :attr:`LocatePlan.needs_choice`.
2. The caller asks the model to choose among the marked candidates (``engines.question``'s
   CHOOSE prompt) when the plan needs it, and :func:`finish_locate` folds the choice in (or its
   absence: unchecked appearance words keep every candidate below the threshold, so "the red
   mug" is never answered by the white mug with confidence).

The result is the best candidate, every candidate with its score and reason, ``ambiguous``
when the runner-up is too close, and ``found`` only when the best clears the threshold and is
clearly ahead. docs/QUERIES.md is the specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
import difflib
import enum
import math
import re

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.measurements import PlacedObject, QueryFrame, place_object
from spatial_vlm_ros.core.mentions import (
    Mention,
    find_mentions,
    normalize_label,
    normalize_text,
)
from spatial_vlm_ros.core.relations import normal_cdf
from spatial_vlm_ros.core.types import FloatArray

# Factors applied to a candidate's score.
NOT_IN_VIEW_FACTOR = 0.9  # remembered out of view: prefer what is in view, all else equal
NO_POSITION_FACTOR = 0.5  # a metric qualifier cannot be checked without a position
UNCHOSEN_FACTOR = 0.25  # the model chose another candidate
NONE_CHOSEN_FACTOR = 0.2  # the model said no candidate fits the description
UNCHECKED_APPEARANCE_FACTOR = 0.45  # appearance words and no model answer: below threshold
UNRESOLVED_REFERENCE_FACTOR = 0.45  # "next to X" with no X found


@dataclass(frozen=True)
class LocateOptions:
    """Thresholds of :func:`finish_locate` and the semantic tolerances of qualifiers."""

    threshold: float = 0.5  # found needs at least this score
    ambiguity_margin: float = 0.2  # ... and the runner-up at least this far below
    lateral_tolerance_m: float = 0.05  # "the left one": separations below this are a toss-up
    size_tolerance: float = 0.1  # relative size difference that is a toss-up
    max_choice_candidates: int = 8  # candidates marked for the model's choice
    max_candidates: int = 16  # candidates reported


@dataclass(frozen=True)
class RememberedCandidate:
    """
    A remembered object offered to ``~/locate`` (the object memory's minimal shape).

    ``position``/``covariance`` are in the scene's frame (``Scene.frame_id``): the caller moves
    them there from the memory frame.
    """

    id: str
    label: str
    position: FloatArray  # (3,) metres, scene frame
    covariance: FloatArray  # (3, 3) m^2, scene frame
    size: FloatArray | None  # (3,) metres, axis-aligned extents along the scene frame axes
    last_seen_ns: int
    in_view: bool  # seen in the newest frame (then the scene has it too)


class Qualifier(str, enum.Enum):
    LEFT = 'leftmost'
    RIGHT = 'rightmost'
    NEAR = 'nearest'
    FAR = 'farthest'
    LARGE = 'largest'
    SMALL = 'smallest'
    HIGH = 'highest'
    LOW = 'lowest'
    MIDDLE = 'middle'


class RelationWord(str, enum.Enum):
    NEAR = 'near'  # next to, near, beside, by, closest to
    FAR = 'far from'
    LEFT_OF = 'left of'
    RIGHT_OF = 'right of'
    IN_FRONT_OF = 'in front of'
    BEHIND = 'behind'
    ABOVE = 'above'  # above, on, on top of
    BELOW = 'below'  # below, under, beneath


_SELF_QUALIFIERS: tuple[tuple[re.Pattern[str], Qualifier], ...] = (
    (re.compile(r'\b(left[- ]?most|on the left|to the left|left(?:[- ]hand)?)\b'), Qualifier.LEFT),
    (
        re.compile(r'\b(right[- ]?most|on the right|to the right|right(?:[- ]hand)?)\b'),
        Qualifier.RIGHT,
    ),
    (
        re.compile(r'\b(nearest|closest|nearer|closer|near|close|front|in front|foreground)\b'),
        Qualifier.NEAR,
    ),
    (
        re.compile(
            r'\b(farthest|furthest|farther|further|far|distant|back|at the back|background|'
            r'behind)\b'
        ),
        Qualifier.FAR,
    ),
    (re.compile(r'\b(largest|biggest|larger|bigger|large|big|huge)\b'), Qualifier.LARGE),
    (re.compile(r'\b(smallest|smaller|small|little|tiny)\b'), Qualifier.SMALL),
    (re.compile(r'\b(highest|higher|top|upper|topmost)\b'), Qualifier.HIGH),
    (re.compile(r'\b(lowest|lower|bottom|bottommost)\b'), Qualifier.LOW),
    (re.compile(r'\b(middle|center|centre|central)\b'), Qualifier.MIDDLE),
)
_RELATIONS: tuple[tuple[re.Pattern[str], RelationWord], ...] = (
    (
        re.compile(
            r'\b(next to|near to|nearest to|closest to|close to|nearest|closest|near|beside|'
            r'by|alongside|adjacent to)\b'
        ),
        RelationWord.NEAR,
    ),
    (re.compile(r'\b(farthest from|furthest from|far from|away from)\b'), RelationWord.FAR),
    (re.compile(r'\b((?:on|to) the left (?:of|side of)|left of)\b'), RelationWord.LEFT_OF),
    (re.compile(r'\b((?:on|to) the right (?:of|side of)|right of)\b'), RelationWord.RIGHT_OF),
    (re.compile(r'\b(in front of)\b'), RelationWord.IN_FRONT_OF),
    (re.compile(r'\b(behind|in back of)\b'), RelationWord.BEHIND),
    (re.compile(r'\b(on top of|above|over|on|atop)\b'), RelationWord.ABOVE),
    (re.compile(r'\b(under|underneath|below|beneath)\b'), RelationWord.BELOW),
)
_ORDINAL = re.compile(
    r'\b(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th|last)\b[\w\s]*?\bfrom the '
    r'(left|right|front|back)\b'
)
_ORDINAL_NUMBER = {
    'first': 1, '1st': 1, 'second': 2, '2nd': 2, 'third': 3, '3rd': 3,
    'fourth': 4, '4th': 4, 'fifth': 5, '5th': 5, 'last': -1,
}  # fmt: skip
# Appearance words geometry cannot judge: the model decides among the marked candidates.
APPEARANCE_WORDS = frozenset(
    {
        'red', 'green', 'blue', 'yellow', 'orange', 'purple', 'violet', 'pink', 'brown',
        'black', 'white', 'gray', 'grey', 'silver', 'golden', 'gold', 'beige', 'dark',
        'light', 'bright', 'colored', 'coloured', 'striped', 'dotted', 'checkered', 'wooden',
        'wood', 'metal', 'metallic', 'plastic', 'glass', 'leather', 'fabric', 'paper',
        'open', 'closed', 'empty', 'full', 'broken', 'shiny', 'transparent', 'clear', 'round',
        'square', 'tall', 'short', 'long', 'old', 'new', 'dirty', 'clean',
    }
)  # fmt: skip
# Words that carry no constraint on which object is meant.
_FILLER_WORDS = frozenset(
    {
        'the', 'a', 'an', 'one', 'ones', 'this', 'that', 'these', 'those', 'of', 'in', 'at',
        'to', 'is', 'it', 'its', 'please', 'find', 'locate', 'where', 'show', 'me', 'my',
        'object', 'thing', 'item', 'side', 'hand', 'most', 'from', 'and', 'there', 'which',
        'camera', 'robot', 'view', 'image', 'picture', 'scene', 'frame', 'i', 'see', 'can',
        'you', 'go', 'get', 'fetch', 'bring', 'pick', 'up', 'grab', 'look', 'for', 'some',
    }
)  # fmt: skip
_WORD = re.compile(r"[a-z][a-z'-]*")
# "can you find ...", "please locate ...": a request's verb is not part of the description.
_REQUEST_PREFIX = re.compile(
    r'^(?:(?:can|could|would|will) you\s+)?(?:please\s+)?'
    r'(?:find|locate|show me|show|get|bring me|bring|fetch|where is|where are|go to|look for)?'
    r'\s*'
)


@dataclass(frozen=True)
class LocateCandidate:
    """One object the description could mean, with its score and why."""

    id: str
    label: str
    score: float  # [0, 1]
    in_view: bool
    reason: str
    age_s: float = 0.0
    position: FloatArray | None = None  # scene frame, metres
    covariance: FloatArray | None = None  # scene frame, m^2
    size: FloatArray | None = None  # camera-axis extents, metres


@dataclass(frozen=True)
class LocatePlan:
    """What :func:`prepare_locate` understood, before any model choice."""

    description: str
    candidates: tuple[LocateCandidate, ...]  # scored on label and geometry, best first
    needs_choice: bool  # appearance words the model must judge
    appearance_words: tuple[str, ...] = ()
    exact_id: str = ''
    notes: tuple[str, ...] = field(default_factory=tuple)  # parse notes, for the reason
    failure: str = ''  # set when nothing can match (no candidates)
    noun_matched: bool = True  # False: no candidate's label is named (a grounding may help)

    @property
    def choice_candidates(self) -> tuple[LocateCandidate, ...]:
        """Candidates to mark for the model: in view, with a box, best first."""
        return tuple(c for c in self.candidates if c.in_view)


@dataclass(frozen=True)
class ModelChoice:
    """The model's pick among marked candidates. ``chosen_id`` '' means "none of them"."""

    chosen_id: str
    reason: str = ''


@dataclass(frozen=True)
class LocateResult:
    """The outcome of ``~/locate`` (LocateObject.srv without the poses)."""

    found: bool
    ambiguous: bool
    best: LocateCandidate | None  # the top candidate (set even when not found, if any)
    candidates: tuple[LocateCandidate, ...]  # best first, the best included
    reason: str
    needed_model: bool = False  # appearance words were sent to the model
    noun_matched: bool = True  # False: the description names no label of the candidates


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Parsed:
    target: list[Mention]  # mentions of the target noun (one span, possibly several labels)
    qualifiers: list[Qualifier]
    ordinal: tuple[int, str] | None  # (k, side) for "the second ... from the left"
    relation: RelationWord | None
    reference_text: str
    appearance: list[str]
    extra_targets: list[str]  # other nouns joined by "and": several objects asked at once


def _span_text(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with ``spans`` blanked out."""
    chars = list(text)
    for start, end in spans:
        for index in range(start, min(end, len(chars))):
            chars[index] = ' '
    return ''.join(chars)


def _parse(text: str, mentions: Sequence[Mention]) -> _Parsed:
    first = mentions[0]
    target = [m for m in mentions if (m.start, m.end) == (first.start, first.end)]
    later = [m for m in mentions if m.start >= first.end]
    relation: RelationWord | None = None
    reference_text = ''
    relation_span: tuple[int, int] | None = None
    extra_targets: list[str] = []
    if later:
        following = later[0]
        between = text[first.end : following.start]
        for pattern, word in _RELATIONS:
            match = pattern.search(between)
            if match:
                relation = word
                relation_span = (first.end + match.start(), len(text))
                reference_text = text[first.end + match.end() :].strip()
                break
        if relation is None and re.search(r'\b(and|or|,|&)\b|[,&]', between):
            extra_targets = sorted({m.text for m in later})
    # Nouns are not appearance words: blank every mention, and the relation with its reference.
    spans = [(m.start, m.end) for m in mentions] + ([relation_span] if relation_span else [])
    own = _span_text(text, spans)
    ordinal = None
    ordinal_match = _ORDINAL.search(own)
    if ordinal_match:
        ordinal = (_ORDINAL_NUMBER[ordinal_match.group(1)], ordinal_match.group(2))
        own = _span_text(own, [ordinal_match.span()])
    qualifiers: list[Qualifier] = []
    for pattern, qualifier in _SELF_QUALIFIERS:
        match = pattern.search(own)
        if match:
            qualifiers.append(qualifier)
            own = _span_text(own, [match.span()])
    words = _WORD.findall(own)
    appearance = [w for w in words if w not in _FILLER_WORDS]
    return _Parsed(
        target, qualifiers, ordinal, relation, reference_text, appearance, extra_targets
    )


# ----------------------------------------------------------------------------- scoring


def _prob_extreme(values: FloatArray, variances: FloatArray, tolerance: float) -> FloatArray:
    """For each i, the probability that ``values[i]`` is the largest (independent normals)."""
    count = len(values)
    scores = np.ones(count)
    for i in range(count):
        for j in range(count):
            if i == j:
                continue
            sigma = math.sqrt(max(variances[i] + variances[j], 0.0) + tolerance**2)
            scores[i] *= normal_cdf((values[i] - values[j]) / sigma)
    return scores


def _with_depth(value: FloatArray | None) -> FloatArray:
    """
    Return a position or covariance of a placed object.

    The geometry below only sees objects with depth support; None there is a bug.
    """
    if value is None:
        raise ValueError('an object without a position reached the locate geometry')
    return value


def _axis_values(
    placed: Sequence[PlacedObject], direction: FloatArray
) -> tuple[FloatArray, FloatArray]:
    values = np.array([float(_with_depth(obj.position) @ direction) for obj in placed])
    variances = np.array(
        [float(direction @ _with_depth(obj.covariance) @ direction) for obj in placed]
    )
    return values, variances


def _qualifier_scores(
    qualifier: Qualifier,
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
    options: LocateOptions,
) -> tuple[FloatArray, str]:
    """Scores in [0, 1] for positioned candidates and the words for the reason."""
    tolerance = options.lateral_tolerance_m
    if qualifier in (Qualifier.LEFT, Qualifier.RIGHT, Qualifier.HIGH, Qualifier.LOW):
        direction = {
            Qualifier.LEFT: frame.left,
            Qualifier.RIGHT: -frame.left,
            Qualifier.HIGH: frame.up,
            Qualifier.LOW: -frame.up,
        }[qualifier]
        values, variances = _axis_values(placed, direction)
        return _prob_extreme(values, variances, tolerance), qualifier.value
    if qualifier in (Qualifier.NEAR, Qualifier.FAR):
        sign = -1.0 if qualifier == Qualifier.NEAR else 1.0
        ranges = np.array([obj.range_m for obj in placed])
        if not np.all(np.isfinite(ranges)):  # camera position unknown: depth along forward
            ranges, variances = _axis_values(placed, frame.forward)
        else:
            variances = np.array([obj.range_sigma**2 for obj in placed])
        return _prob_extreme(sign * ranges, variances, tolerance), f'{qualifier.value} to camera'
    if qualifier in (Qualifier.LARGE, Qualifier.SMALL):
        sign = 1.0 if qualifier == Qualifier.LARGE else -1.0
        sizes = np.array(
            [float(np.max(obj.size)) if obj.size is not None else 0.0 for obj in placed]
        )
        size_tolerance = options.size_tolerance * float(np.max(sizes)) if len(sizes) else 0.0
        variances = np.zeros(len(placed))
        return _prob_extreme(sign * sizes, variances, max(size_tolerance, 0.01)), qualifier.value
    # MIDDLE: closest to the median across the view.
    values, variances = _axis_values(placed, frame.left)
    centre = float(np.median(values))
    return _prob_extreme(-np.abs(values - centre), variances, tolerance), 'middle'


def _ordinal_scores(
    k: int, side: str, placed: Sequence[PlacedObject], frame: QueryFrame, options: LocateOptions
) -> tuple[FloatArray, str]:
    direction = {
        'left': -frame.left,
        'right': frame.left,
        'front': frame.forward,
        'back': -frame.forward,
    }[side]
    values, variances = _axis_values(placed, direction)  # smaller = earlier from ``side``
    order = np.argsort(values)
    count = len(values)
    rank = (count + k) if k < 0 else k - 1
    scores = np.full(count, 0.05)
    if not 0 <= rank < count:
        return np.zeros(count), f'no {k}th from the {side} among {count}'
    index = order[rank]

    def margin(a: int, b: int) -> float:
        sigma = math.sqrt(variances[a] + variances[b] + options.lateral_tolerance_m**2)
        return normal_cdf(abs(values[a] - values[b]) / sigma)

    confidence = 1.0
    if rank > 0:
        confidence *= margin(index, order[rank - 1])
    if rank < count - 1:
        confidence *= margin(index, order[rank + 1])
    scores[index] = confidence
    for neighbour in (rank - 1, rank + 1):
        if 0 <= neighbour < count:
            scores[order[neighbour]] = max(0.05, (1.0 - confidence) * 0.5)
    word = 'last' if k < 0 else f'#{k}'
    return scores, f'{word} from the {side}'


def _relation_scores(
    relation: RelationWord,
    reference: PlacedObject,
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
    options: LocateOptions,
) -> FloatArray:
    assert reference.position is not None and reference.covariance is not None
    distances = np.array(
        [float(np.linalg.norm(_with_depth(obj.position) - reference.position)) for obj in placed]
    )
    distance_variances = np.array(
        [
            _distance_variance(obj, reference, distance)
            for obj, distance in zip(placed, distances, strict=True)
        ]
    )
    tolerance = options.lateral_tolerance_m
    closest = _prob_extreme(-distances, distance_variances, tolerance)
    if relation == RelationWord.NEAR:
        return closest
    if relation == RelationWord.FAR:
        return _prob_extreme(distances, distance_variances, tolerance)
    direction = {
        RelationWord.LEFT_OF: frame.left,
        RelationWord.RIGHT_OF: -frame.left,
        RelationWord.IN_FRONT_OF: -frame.forward,
        RelationWord.BEHIND: frame.forward,
        RelationWord.ABOVE: frame.up,
        RelationWord.BELOW: -frame.up,
    }[relation]
    holds = np.array(
        [
            normal_cdf(
                float((_with_depth(obj.position) - reference.position) @ direction)
                / math.sqrt(
                    float(
                        direction
                        @ (_with_depth(obj.covariance) + reference.covariance)
                        @ direction
                    )
                    + tolerance**2
                )
            )
            for obj in placed
        ]
    )
    # Of the objects on that side, a person means the one right beside the reference.
    return holds * (0.6 + 0.4 * closest)


def _distance_variance(obj: PlacedObject, reference: PlacedObject, distance: float) -> float:
    assert obj.position is not None and obj.covariance is not None
    assert reference.position is not None and reference.covariance is not None
    if distance <= 0.0:
        return float(np.trace(obj.covariance + reference.covariance)) / 3.0
    unit = (obj.position - reference.position) / distance
    return float(unit @ (obj.covariance + reference.covariance) @ unit)


# ----------------------------------------------------------------------------- public API


def remembered_candidates(
    memory: Sequence[RememberedCandidate],
    frame: QueryFrame,
    now_ns: int,
    in_view_ids: Sequence[str] = (),
) -> list[PlacedObject]:
    """Remembered objects as placed candidates; those the scene already has are left out."""
    skip = set(in_view_ids)
    placed = []
    for item in memory:
        if item.id in skip or item.in_view:
            continue
        placed.append(
            place_object(
                item.id,
                item.label,
                item.position,
                item.covariance,
                item.size,
                frame,
                in_view=False,
                age_s=max(0.0, (now_ns - item.last_seen_ns) / 1e9),
            )
        )
    return placed


def _candidate(obj: PlacedObject, score: float, reason: str) -> LocateCandidate:
    return LocateCandidate(
        id=obj.id,
        label=obj.label,
        score=float(min(max(score, 0.0), 1.0)),
        in_view=obj.in_view,
        reason=reason,
        age_s=obj.age_s,
        position=obj.scene_position,
        covariance=obj.scene_covariance,
        size=obj.size,
    )


def _sorted(candidates: Sequence[LocateCandidate]) -> tuple[LocateCandidate, ...]:
    return tuple(sorted(candidates, key=lambda c: (-c.score, not c.in_view, c.id)))


def prepare_locate(
    description: str,
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
    options: LocateOptions | None = None,
    *,
    _depth: int = 0,
) -> LocatePlan:
    """Score every candidate in ``placed`` (scene and remembered objects) for ``description``."""
    options = options or LocateOptions()
    text = normalize_text(description)
    if not text:
        return LocatePlan(description, (), False, failure='empty description')
    by_id = {obj.id: obj for obj in placed}
    for obj in placed:  # an exact id always wins
        if text.replace(' ', '_') == obj.id.lower() or text == obj.id.lower():
            exact = _candidate(obj, 1.0, 'exact id')
            return LocatePlan(description, (exact,), False, exact_id=obj.id)
    text = _REQUEST_PREFIX.sub('', text)
    mentions = find_mentions(text, [obj.label for obj in placed], list(by_id))
    if not mentions:
        return _no_noun(description, text, placed)
    if mentions[0].kind == 'id':  # "coke_can_1 please": the target is named by its id
        obj = by_id[mentions[0].object_id]
        exact = _candidate(obj, 1.0, f'id {obj.id} named in the description')
        return LocatePlan(description, (exact,), False, exact_id=obj.id)
    parsed = _parse(text, mentions)
    label_scores: dict[str, Mention] = {}
    for mention in parsed.target:
        best = label_scores.get(mention.label)
        if best is None or mention.score > best.score:
            label_scores[mention.label] = mention
    members = [obj for obj in placed if normalize_label(obj.label) in label_scores]
    notes: list[str] = []
    if parsed.extra_targets:
        notes.append(
            f'the description names several objects ({", ".join(parsed.extra_targets)}); '
            'locate one at a time'
        )
    label_of = {obj.id: label_scores[normalize_label(obj.label)] for obj in members}
    scores = {object_id: mention.score for object_id, mention in label_of.items()}
    reasons = {object_id: [_label_reason(mention)] for object_id, mention in label_of.items()}
    for obj in members:
        if not obj.in_view:
            scores[obj.id] *= NOT_IN_VIEW_FACTOR
            reasons[obj.id].append(f'remembered, last seen {obj.age_s:.0f} s ago')
    reference: PlacedObject | None = None
    if parsed.relation is not None and _depth == 0:
        reference_plan = prepare_locate(parsed.reference_text, placed, frame, options, _depth=1)
        settled = finish_locate(reference_plan, None, options)
        if settled.found and settled.best is not None:
            reference = by_id[settled.best.id]
            members = [obj for obj in members if obj.id != reference.id]
        else:
            for obj in members:
                scores[obj.id] *= UNRESOLVED_REFERENCE_FACTOR
                reasons[obj.id].append(
                    f'reference "{parsed.reference_text}" not resolved ({settled.reason})'
                )
    positioned = [obj for obj in members if obj.has_position]
    metric = bool(parsed.qualifiers or parsed.ordinal or reference is not None)
    if metric:
        for obj in members:
            if not obj.has_position:
                scores[obj.id] *= NO_POSITION_FACTOR
                reasons[obj.id].append('no position to check the qualifier')
    if positioned and metric:
        factors: list[tuple[FloatArray, str]] = [
            _qualifier_scores(q, positioned, frame, options) for q in parsed.qualifiers
        ]
        if parsed.ordinal is not None:
            factors.append(_ordinal_scores(*parsed.ordinal, positioned, frame, options))
        if reference is not None and parsed.relation is not None:
            factors.append(
                (
                    _relation_scores(parsed.relation, reference, positioned, frame, options),
                    f'{parsed.relation.value} {reference.id}',
                )
            )
        for values, words in factors:
            for obj, value in zip(positioned, values, strict=True):
                scores[obj.id] *= float(value)
                reasons[obj.id].append(f'{words} of {len(positioned)}: {float(value):.2f}')
    candidates = [_candidate(obj, scores[obj.id], '; '.join(reasons[obj.id])) for obj in members]
    ranked = _sorted(candidates)[: options.max_candidates]
    failure = ''
    if not ranked:
        failure = f'no object matching "{description}"'
    if parsed.extra_targets:
        ranked = tuple(replace(c, score=min(c.score, options.threshold * 0.9)) for c in ranked)
    return LocatePlan(
        description=description,
        candidates=ranked,
        needs_choice=bool(parsed.appearance) and bool(ranked),
        appearance_words=tuple(parsed.appearance),
        notes=tuple(notes),
        failure=failure,
    )


def _label_reason(mention: Mention) -> str:
    if mention.kind == 'label':
        return f'label={mention.label}'
    return f'label={mention.label} ({mention.kind.replace("_", " ")} "{mention.text}")'


def _no_noun(description: str, text: str, placed: Sequence[PlacedObject]) -> LocatePlan:
    labels = sorted({normalize_label(obj.label) for obj in placed})
    words = [w for w in _WORD.findall(text) if w not in _FILLER_WORDS]
    close = sorted(
        {
            label
            for word in words
            for label in difflib.get_close_matches(word, labels, n=3, cutoff=0.75)
        }
    )
    hint = f'; similar labels: {", ".join(close)}' if close else ''
    known = ', '.join(labels) if labels else 'none'
    return LocatePlan(
        description,
        (),
        False,
        failure=f'no object matching "{description}" (labels in view or memory: {known}){hint}',
        noun_matched=False,
    )


def finish_locate(
    plan: LocatePlan,
    choice: ModelChoice | None,
    options: LocateOptions | None = None,
) -> LocateResult:
    """Fold the model's choice (None: none was asked or it gave no answer) and decide."""
    options = options or LocateOptions()
    if plan.failure or not plan.candidates:
        return LocateResult(
            False,
            False,
            None,
            (),
            plan.failure or 'no candidates',
            noun_matched=plan.noun_matched,
        )
    candidates = list(plan.candidates)
    appearance = ' '.join(plan.appearance_words)
    if plan.needs_choice:
        if choice is None:
            candidates = [
                replace(
                    c,
                    score=c.score * UNCHECKED_APPEARANCE_FACTOR,
                    reason=f'{c.reason}; "{appearance}" not checked (no model answer)',
                )
                for c in candidates
            ]
        elif not choice.chosen_id:
            why = f': {choice.reason}' if choice.reason else ''
            candidates = [
                replace(
                    c,
                    score=c.score * NONE_CHOSEN_FACTOR,
                    reason=f'{c.reason}; the model saw no candidate that is "{appearance}"{why}',
                )
                for c in candidates
            ]
        else:
            candidates = [
                replace(
                    c,
                    score=c.score * (1.0 if c.id == choice.chosen_id else UNCHOSEN_FACTOR),
                    reason=(
                        f'{c.reason}; model chose it as "{appearance}"'
                        if c.id == choice.chosen_id
                        else f'{c.reason}; model chose {choice.chosen_id} as "{appearance}"'
                    ),
                )
                for c in candidates
            ]
    ranked = _sorted(candidates)
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    clear = runner_up is None or runner_up.score <= best.score - options.ambiguity_margin
    found = best.score >= options.threshold and clear
    ambiguous = runner_up is not None and not clear and runner_up.score >= options.threshold * 0.5
    notes = list(plan.notes)
    if found:
        reason = f'{best.id}: {best.reason}'
        if not best.in_view:
            reason += f' (not in view: last seen {best.age_s:.0f} s ago)'
    elif ambiguous:
        tied = [c.id for c in ranked if c.score >= best.score - options.ambiguity_margin]
        reason = f'ambiguous: {", ".join(tied)} fit "{plan.description}" about equally well'
    else:
        reason = (
            f'no candidate fits "{plan.description}" well enough '
            f'(best {best.id} scored {best.score:.2f} < {options.threshold:.2f}: {best.reason})'
        )
    if notes:
        reason += '; ' + '; '.join(notes)
    return LocateResult(found, ambiguous, best, ranked, reason, needed_model=plan.needs_choice)


def locate_without_model(
    description: str,
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
    options: LocateOptions | None = None,
) -> LocateResult:
    """:func:`prepare_locate` then :func:`finish_locate` with no model choice."""
    return finish_locate(prepare_locate(description, placed, frame, options), None, options)


def as_array(value: npt.ArrayLike | None) -> FloatArray | None:
    """Return a float64 copy, or None."""
    return None if value is None else np.asarray(value, dtype=np.float64).copy()
