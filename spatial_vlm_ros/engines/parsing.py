# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
r"""
Turn raw model text into typed results; never raises into the caller.

Handles what Qwen3-VL-family models actually emit: a JSON list of ``{"bbox_2d": [...], "label":
...}`` (bare or fenced in ```json), ``<think>...</think>`` blocks, ``\boxed{...}`` answers
(Spatial-SSRL), outputs cut off by ``max_new_tokens`` (complete items are recovered), wrappers such
as ``{"objects": [...]}``, other box key spellings, ``point_2d`` items (skipped: a point has no
extent to lift, and inventing one would misstate the depth support), and Qwen2.5-style absolute
pixel coordinates when the profile says so.

Boxes are validated (four finite numbers), clamped to the coordinate range, sorted so that
``x1 <= x2`` and ``y1 <= y2``, dropped when degenerate, converted to RGB pixels
(``x_px = x / 1000 * W`` for relative coordinates) and de-duplicated (same label, IoU > 0.7).
Output that opens with a JSON list (what the grammar forces) is read as JSON before any
``<think>`` handling, so reasoning tags inside a label stay label text. The item and label
bounds are the grammar's (``engines/schema.py``).

:func:`respond` is the one place an engine's :class:`~spatial_vlm_ros.engines.base.Completion`
becomes an :class:`~spatial_vlm_ros.engines.base.EngineResponse`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import functools
import json
import logging
import math
import re
import string
from typing import Any, TypeVar
import unicodedata

from spatial_vlm_ros.core.types import Detection, PixelBox
from spatial_vlm_ros.engines.base import (
    FLAG_MAX_NEW_TOKENS,
    Completion,
    EngineRequest,
    EngineResponse,
    FinishReason,
    TaskKind,
)
from spatial_vlm_ros.engines.profiles import AnswerFormat, CoordinateSystem, ModelProfile
from spatial_vlm_ros.engines.results import (
    AnswerResult,
    GroundingResult,
    ParseFailure,
    ParseResult,
)
from spatial_vlm_ros.engines.schema import (
    GROUNDING_LABEL_MAX_LENGTH,
    GROUNDING_MAX_ITEMS,
    RELATIVE_COORDINATE_MAX,
)

# One set of limits for the grammar and the parser (engines/schema.py): a constrained engine
# cannot exceed them, and unconstrained or recorded output is cut to the same bounds, so a scene
# does not depend on which engine produced it.
MAX_DETECTIONS = GROUNDING_MAX_ITEMS
MAX_LABEL_CHARS = GROUNDING_LABEL_MAX_LENGTH
RELATIVE_MAX = float(RELATIVE_COORDINATE_MAX)
DUPLICATE_IOU = 0.7
MAX_PARSE_CHARS = 100_000  # a 2k-token answer is ~8k chars; anything far longer is runaway output
MAX_JSON_START_ATTEMPTS = 2_000  # bounds the work on pathological text
DEFAULT_LABEL = 'object'
INTERNAL_ERROR_PREFIX = 'internal parser error'
LOGGER = logging.getLogger(__name__)

BOX_KEYS = ('bbox_2d', 'bbox', 'box_2d', 'box', 'bbox2d', 'bounding_box', 'bndbox')
POINT_KEYS = ('point_2d', 'point')
LABEL_KEYS = ('label', 'name', 'class', 'category', 'object', 'text')
CONFIDENCE_KEYS = ('confidence', 'score', 'prob')
WRAPPER_KEYS = ('objects', 'detections', 'boxes', 'bboxes', 'results', 'items', 'predictions')
THINK_OPEN = '<think>'
THINK_CLOSE = '</think>'
BOXED_OPEN = '\\boxed{'

_LABEL_STRIP = string.punctuation + string.whitespace + '“”‘’«»„‟‚‛`´'
_JSON_START = re.compile(r'[\[{]')
_ANSWER_TAG = re.compile(r'</?answer>', re.IGNORECASE)
_LATEX_TEXT = re.compile(r'\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}')
_DECODER = json.JSONDecoder()


_R = TypeVar('_R')


# (parser, exception type) pairs whose traceback was logged: a parser bug is logged once per
# kind, with its traceback, so that it is not mistaken for bad model output.
_LOGGED_INTERNAL_ERRORS: set[tuple[str, str]] = set()


def _never_raises(function: Callable[..., _R]) -> Callable[..., _R | ParseFailure]:
    """
    Guard a parser: a parser bug becomes a ParseFailure, never an exception in the node.

    The last resort behind the parsers' own checks; the first bug of each kind (parser and
    exception type) is logged with its traceback.
    """

    @functools.wraps(function)
    def guarded(text: object, *args: Any, **kwargs: Any) -> _R | ParseFailure:
        raw = text if isinstance(text, str) else repr(text)[:MAX_PARSE_CHARS]
        if not isinstance(text, str):
            return ParseFailure(f'model output is not text but {type(text).__name__}', raw)
        try:
            return function(text, *args, **kwargs)
        except Exception as error:  # the contract is "never raises"; the traceback is logged
            kind = (function.__name__, type(error).__name__)
            if kind not in _LOGGED_INTERNAL_ERRORS:
                _LOGGED_INTERNAL_ERRORS.add(kind)
                LOGGER.error(
                    '%s: bug in %s', INTERNAL_ERROR_PREFIX, function.__name__, exc_info=True
                )
            return ParseFailure(f'{INTERNAL_ERROR_PREFIX}: {type(error).__name__}: {error}', raw)

    return guarded


# ----------------------------------------------------------------------------- text structure


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """
    ``(reasoning, remainder, think_unclosed)`` from text with ``<think>...</think>`` blocks.

    A leading ``</think>`` without an opening tag (templates that put ``<think>`` in the prompt)
    makes everything before it reasoning; an unclosed ``<think>`` makes everything after it
    reasoning and sets ``think_unclosed``.
    """
    reasoning: list[str] = []
    rest: list[str] = []
    position = 0
    unclosed = False
    first_open = text.find(THINK_OPEN)
    first_close = text.find(THINK_CLOSE)
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        reasoning.append(text[:first_close])
        position = first_close + len(THINK_CLOSE)
    while True:
        opened = text.find(THINK_OPEN, position)
        if opened == -1:
            rest.append(text[position:])
            break
        rest.append(text[position:opened])
        closed = text.find(THINK_CLOSE, opened + len(THINK_OPEN))
        if closed == -1:
            reasoning.append(text[opened + len(THINK_OPEN) :])
            unclosed = True
            break
        reasoning.append(text[opened + len(THINK_OPEN) : closed])
        position = closed + len(THINK_CLOSE)
    remainder = ''.join(rest).replace(THINK_CLOSE, '')
    return '\n'.join(part.strip() for part in reasoning if part.strip()), remainder, unclosed


def fenced_blocks(text: str) -> list[tuple[str, bool]]:
    """Contents of ``` fences as ``(content, closed)``; a final unclosed fence is included."""
    parts = text.split('```')
    blocks: list[tuple[str, bool]] = []
    for index in range(1, len(parts), 2):
        content = parts[index]
        first_line, newline, after = content.partition('\n')
        if newline and re.fullmatch(r'\s*[A-Za-z0-9_+-]*\s*', first_line):
            content = after  # drop the language tag (```json)
        closed = index < len(parts) - 1
        blocks.append((content, closed))
    return blocks


def extract_boxed(text: str) -> tuple[str | None, bool]:
    r"""Content of the last ``\boxed{...}`` (braces balanced) and whether it was closed."""
    start = text.rfind(BOXED_OPEN)
    if start == -1:
        return None, False
    depth = 1
    content_start = start + len(BOXED_OPEN)
    for index in range(content_start, len(text)):
        char = text[index]
        if char == '{':
            depth += 1
        elif char == '}':
            depth -= 1
            if depth == 0:
                return text[content_start:index], True
    return text[content_start:], False


def _clean_boxed(content: str) -> str:
    previous = None
    while previous != content:  # nested \text{\textbf{...}}
        previous = content
        content = _LATEX_TEXT.sub(r'\1', content)
    return ' '.join(content.strip().strip('$').split())


def normalize_label(raw: object) -> str:
    """Lower-case, NFKC, underscores to spaces, collapsed spaces, quotes/punctuation stripped."""
    text = unicodedata.normalize('NFKC', str(raw)).lower().replace('_', ' ')
    text = ' '.join(text.split()).strip(_LABEL_STRIP)
    return ' '.join(text.split())[:MAX_LABEL_CHARS]


# ----------------------------------------------------------------------------- JSON recovery


@dataclass
class _Extraction:
    items: list[dict[str, Any]]
    truncated: bool


def _is_item(value: object) -> bool:
    return isinstance(value, dict) and any(key in value for key in BOX_KEYS + POINT_KEYS)


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in ' \t\r\n':
        position += 1
    return position


def _decode_array(text: str, start: int) -> tuple[list[Any], bool, bool]:
    """
    Elements of the array at ``text[start] == '['``: ``(elements, complete, broken)``.

    Decodes element by element so that a cut-off array still yields its complete elements;
    ``broken`` is set when decoding stopped before a closing bracket.
    """
    elements: list[Any] = []
    position = _skip_whitespace(text, start + 1)
    if position < len(text) and text[position] == ']':
        return elements, True, False
    while position < len(text):
        try:
            value, position = _DECODER.raw_decode(text, position)
        except (ValueError, RecursionError):
            return elements, False, True
        elements.append(value)
        position = _skip_whitespace(text, position)
        if position >= len(text):
            break
        if text[position] == ']':
            return elements, True, False
        if text[position] != ',':
            return elements, False, True
        position = _skip_whitespace(text, position + 1)
    return elements, False, True


def _unwrap(value: dict[str, Any]) -> list[Any] | None:
    for key in WRAPPER_KEYS:
        inner = value.get(key)
        if isinstance(inner, list):
            return inner
    return None


def _leading_items(text: str) -> _Extraction | None:
    """Grounding items of a JSON list that opens the text (complete or cut off), else None."""
    start = _skip_whitespace(text, 0)
    if start >= len(text) or text[start] != '[':
        return None
    elements, complete, broken = _decode_array(text, start)
    items = [element for element in elements if _is_item(element)]
    if items or (complete and not elements):
        return _Extraction(items, truncated=broken)
    return None


def _find_items(text: str) -> _Extraction | None:
    """Return the first list of grounding items in ``text`` (or consecutive bare item objects)."""
    singles: list[dict[str, Any]] = []
    singles_truncated = False
    position = 0
    for _ in range(MAX_JSON_START_ATTEMPTS):
        match = _JSON_START.search(text, position)
        if match is None:
            break
        start = match.start()
        if text[start] == '[':
            elements, complete, broken = _decode_array(text, start)
            items = [element for element in elements if _is_item(element)]
            if not singles and complete and not elements:
                return _Extraction([], truncated=False)  # an explicit empty answer: "[]"
            if items and not singles:
                return _Extraction(items, truncated=broken)
            position = start + 1
            continue
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            # A cut-off object: a wrapper's inner list (found next) or a partial single item.
            singles_truncated = singles_truncated or bool(singles)
            position = start + 1
            continue
        if isinstance(value, dict):
            inner = _unwrap(value)
            if inner is not None and not singles:
                items = [element for element in inner if _is_item(element)]
                if items or not inner:
                    return _Extraction(items, truncated=False)
            if _is_item(value):
                singles.append(value)
                position = end
                continue
        position = start + 1
    if singles:
        return _Extraction(singles, truncated=singles_truncated)
    return None


# ----------------------------------------------------------------------------- boxes


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _four_numbers(value: object) -> tuple[float, float, float, float] | None:
    if isinstance(value, dict):
        for keys in (('x1', 'y1', 'x2', 'y2'), ('xmin', 'ymin', 'xmax', 'ymax')):
            if all(key in value for key in keys):
                value = [value[key] for key in keys]
                break
        else:
            return None
    if isinstance(value, str):
        value = [part for part in re.split(r'[\s,;\[\]()]+', value) if part]
    if not isinstance(value, list | tuple):
        return None
    if len(value) == 2 and all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        value = [value[0][0], value[0][1], value[1][0], value[1][1]]
    if len(value) != 4:
        return None
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    x1, y1, x2, y2 = (float(n) for n in numbers if n is not None)
    return x1, y1, x2, y2


def _clamp(value: float, upper: float) -> float:
    return min(max(value, 0.0), upper)


def relative_box_to_pixels(
    box: Sequence[float], image_width: int, image_height: int, scale: float = RELATIVE_MAX
) -> PixelBox:
    """
    Convert a ``[x1, y1, x2, y2]`` box on a 0..``scale`` grid to RGB pixels.

    ``x / scale * W``.
    """
    x1, y1, x2, y2 = box
    return PixelBox(
        x_min=x1 / scale * image_width,
        y_min=y1 / scale * image_height,
        x_max=x2 / scale * image_width,
        y_max=y2 / scale * image_height,
    )


def box_iou(a: PixelBox, b: PixelBox) -> float:
    inter_w = min(a.x_max, b.x_max) - max(a.x_min, b.x_min)
    inter_h = min(a.y_max, b.y_max) - max(a.y_min, b.y_min)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    intersection = inter_w * inter_h
    union = a.width * a.height + b.width * b.height - intersection
    return intersection / union if union > 0 else 0.0


def _label_of(item: dict[str, Any]) -> str:
    for key in LABEL_KEYS:
        value = item.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            label = normalize_label(value)
            if label:
                return label
    return ''


def _confidence_of(item: dict[str, Any]) -> float:
    for key in CONFIDENCE_KEYS:
        number = _number(item.get(key))
        if number is not None and 0.0 <= number <= 1.0:
            return number
    return 1.0


@dataclass
class _BoxTally:
    dropped: int = 0
    points: int = 0
    clamped: int = 0
    unlabeled: int = 0


def _to_detection(
    item: dict[str, Any],
    image_width: int,
    image_height: int,
    coordinates: CoordinateSystem,
    input_size: tuple[int, int] | None,
    tally: _BoxTally,
) -> Detection | None:
    raw_box = next((item[key] for key in BOX_KEYS if key in item), None)
    if raw_box is None:
        tally.points += 1
        return None
    numbers = _four_numbers(raw_box)
    if numbers is None:
        tally.dropped += 1
        return None
    grid_w: float
    grid_h: float
    if coordinates == CoordinateSystem.ABSOLUTE_PIXELS:
        grid_w, grid_h = input_size if input_size else (image_width, image_height)
    else:
        grid_w, grid_h = RELATIVE_MAX, RELATIVE_MAX
    x1, y1, x2, y2 = numbers
    clamped = (
        _clamp(min(x1, x2), grid_w),
        _clamp(min(y1, y2), grid_h),
        _clamp(max(x1, x2), grid_w),
        _clamp(max(y1, y2), grid_h),
    )
    if clamped != (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)):
        tally.clamped += 1
    pixel_box = PixelBox(
        x_min=clamped[0] / grid_w * image_width,
        y_min=clamped[1] / grid_h * image_height,
        x_max=clamped[2] / grid_w * image_width,
        y_max=clamped[3] / grid_h * image_height,
    )
    # Checked in pixels: a sub-pixel-thin box can still collapse (or underflow) to zero there.
    if pixel_box.x_max <= pixel_box.x_min or pixel_box.y_max <= pixel_box.y_min:
        tally.dropped += 1
        return None
    label = _label_of(item)
    if not label:
        tally.unlabeled += 1
        label = DEFAULT_LABEL
    return Detection(label=label, box=pixel_box, confidence=_confidence_of(item))


def merge_duplicates(
    detections: Iterable[Detection], iou_threshold: float = DUPLICATE_IOU
) -> tuple[list[Detection], int]:
    """Keep the first of each group of same-label boxes overlapping with IoU > threshold."""
    kept: list[Detection] = []
    by_label: dict[str, list[Detection]] = {}
    merged = 0
    for detection in detections:
        same_label = by_label.setdefault(detection.label, [])
        if any(box_iou(detection.box, other.box) > iou_threshold for other in same_label):
            merged += 1
            continue
        same_label.append(detection)
        kept.append(detection)
    return kept, merged


# ----------------------------------------------------------------------------- public parsers


@_never_raises
def parse_grounding(
    text: str,
    image_width: int,
    image_height: int,
    *,
    coordinates: CoordinateSystem = CoordinateSystem.RELATIVE_1000,
    input_size: tuple[int, int] | None = None,
    max_items: int = MAX_DETECTIONS,
    iou_threshold: float = DUPLICATE_IOU,
) -> GroundingResult | ParseFailure:
    """
    Boxes from a grounding answer, in pixels of an ``image_width`` x ``image_height`` image.

    ``input_size`` is the ``(width, height)`` the model saw; only used for absolute coordinates.
    """
    if image_width <= 0 or image_height <= 0:
        return ParseFailure(f'image size must be positive, got {image_width}x{image_height}', text)
    if not text.strip():
        return ParseFailure('empty model output', text)
    warnings: list[str] = []
    body = text
    if len(body) > MAX_PARSE_CHARS:
        body = body[:MAX_PARSE_CHARS]
        warnings.append(f'output longer than {MAX_PARSE_CHARS} chars; parsed the beginning')
    # Output that opens with the JSON list (what the grammar forces) is read as JSON first:
    # a label may contain "<think>" (random weights write anything), and splitting reasoning
    # tags out of the middle of a JSON string would lose schema-valid answers.
    reasoning, think_unclosed = '', False
    extraction = _leading_items(body)
    if extraction is None:
        reasoning, remainder, think_unclosed = split_reasoning(body)
        candidates = [content for content, _closed in fenced_blocks(remainder)] + [remainder]
        for candidate in candidates:
            extraction = _find_items(candidate)
            if extraction is not None:
                break
    if extraction is None:
        reason = 'no grounding JSON found'
        if think_unclosed:
            reason = 'output ended inside <think> before any grounding JSON'
        return ParseFailure(reason, text)
    items = extraction.items
    capped = len(items) > max_items
    if capped:
        warnings.append(f'{len(items)} items; kept the first {max_items}')
        items = items[:max_items]
    tally = _BoxTally()
    converted = [
        _to_detection(item, image_width, image_height, coordinates, input_size, tally)
        for item in items
    ]
    detections, merged = merge_duplicates((d for d in converted if d is not None), iou_threshold)
    if extraction.truncated:
        warnings.append('JSON was truncated; kept the complete items')
    if tally.points:
        warnings.append(f'skipped {tally.points} point-only item(s)')
    if tally.dropped:
        warnings.append(f'dropped {tally.dropped} invalid or degenerate box(es)')
    if tally.clamped:
        warnings.append(f'clamped {tally.clamped} box(es) to the image')
    if tally.unlabeled:
        warnings.append(f'{tally.unlabeled} box(es) without a label, named {DEFAULT_LABEL!r}')
    if merged:
        warnings.append(f'merged {merged} duplicate box(es)')
    return GroundingResult(
        detections=tuple(detections),
        warnings=tuple(warnings),
        truncated=extraction.truncated,
        capped=capped,
        dropped_items=tally.dropped + tally.points,
        merged_duplicates=merged,
        reasoning=reasoning,
    )


@_never_raises
def parse_answer(
    text: str, answer_format: AnswerFormat = AnswerFormat.PLAIN
) -> AnswerResult | ParseFailure:
    r"""
    Return the answer of a question task.

    ``\boxed{}`` content wins over the surrounding text.
    """
    if not text.strip():
        return ParseFailure('empty model output', text)
    body = text[:MAX_PARSE_CHARS]
    warnings: list[str] = []
    reasoning, remainder, think_unclosed = split_reasoning(body)
    content, closed = extract_boxed(remainder)
    truncated = think_unclosed
    boxed = content is not None
    if content is not None:
        answer = _clean_boxed(content)
        if not closed:
            truncated = True
            warnings.append('\\boxed{ was not closed (output truncated?)')
    else:
        answer = ' '.join(_ANSWER_TAG.sub(' ', remainder).split())
        if answer_format == AnswerFormat.THINK_BOXED:
            warnings.append('expected a \\boxed{} answer; used the text after the reasoning')
    if not answer:
        if think_unclosed:
            return ParseFailure('output ended inside <think> before an answer', text)
        return ParseFailure('no answer text', text)
    if think_unclosed:
        warnings.append('<think> was not closed')
    return AnswerResult(
        answer=answer,
        reasoning=reasoning,
        boxed=boxed,
        warnings=tuple(warnings),
        truncated=truncated,
    )


def parse_for_request(
    text: str,
    request: EngineRequest,
    profile: ModelProfile,
    input_size: tuple[int, int] | None = None,
) -> ParseResult:
    """Parse ``text`` as the answer to ``request`` (boxes in pixels of ``request.images[0]``)."""
    if request.task == TaskKind.QUESTION:
        return parse_answer(text, profile.answer_format)
    shape: tuple[int, ...] = getattr(request.images[0], 'shape', ()) if request.images else ()
    if len(shape) < 2:
        return ParseFailure('request has no image to size the boxes', text)
    return parse_grounding(
        text,
        int(shape[1]),
        int(shape[0]),
        coordinates=profile.coordinates,
        input_size=input_size,
    )


def respond(
    request: EngineRequest, profile: ModelProfile, completion: Completion, *, engine: str
) -> EngineResponse:
    """
    Turn a backend's completion into a typed response, parsed by the profile.

    The one place this happens.
    """
    flags = completion.flags
    if completion.finish_reason == FinishReason.LENGTH and FLAG_MAX_NEW_TOKENS not in flags:
        flags = (*flags, FLAG_MAX_NEW_TOKENS)
    return EngineResponse(
        raw_text=completion.text,
        parsed=parse_for_request(completion.text, request, profile, completion.input_size),
        tokens=completion.tokens,
        timings=completion.timings,
        engine=engine,
        model_id=completion.model_id,
        flags=flags,
        finish_reason=completion.finish_reason,
    )
