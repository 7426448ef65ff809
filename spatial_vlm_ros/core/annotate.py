# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Draw a scene onto its RGB image: boxes, labels with distances, relations, errors.

And set-of-marks images (each object's id drawn at its box) for the model's questions.

Pure: the input image is never modified; a new RGB uint8 array is returned. Colours match the
markers (:func:`spatial_vlm_ros.core.markers.label_color`) so the 2D and 3D views agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import math

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.markers import label_color, positions_are_optical
from spatial_vlm_ros.core.types import PixelBox, Scene, SpatialObject, SpatialVlmError

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_ERROR_RED = (200, 30, 30)


class AnnotationError(SpatialVlmError):
    """The image cannot be annotated (wrong shape or dtype)."""


@dataclass(frozen=True)
class AnnotationStyle:
    max_relation_lines: int = 4  # relations listed in the bottom-left corner
    show_relations: bool = True


def object_caption(obj: SpatialObject, positions_in_camera_frame: bool) -> str:
    """``id`` plus the range from the camera (optical positions) or the position (other frames)."""
    position = obj.lifted.position
    if position is None:
        return f'{obj.id} (no depth)'
    values = np.asarray(position, dtype=float).ravel()
    if not np.all(np.isfinite(values)):
        return f'{obj.id} (no depth)'
    if positions_in_camera_frame:
        return f'{obj.id} {math.sqrt(float(np.dot(values, values))):.2f} m'
    x, y, z = (float(v) for v in values)
    return f'{obj.id} ({x:.2f}, {y:.2f}, {z:.2f}) m'


def _checked_copy(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return a writable copy of an RGB uint8 (H, W, 3) image, or :class:`AnnotationError`."""
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise AnnotationError(
            f'expected an RGB uint8 image of shape (H, W, 3), got {array.dtype} {array.shape}'
        )
    return np.ascontiguousarray(array).copy()


def _pixel_corners(box: PixelBox, width: int, height: int) -> tuple[int, int, int, int]:
    """Inclusive pixel corners of a half-open box (the last covered pixel is x_max - 1)."""
    return (
        round(min(max(box.x_min, 0.0), width - 1)),
        round(min(max(box.y_min, 0.0), height - 1)),
        round(min(max(box.x_max - 1.0, 0.0), width - 1)),
        round(min(max(box.y_max - 1.0, 0.0), height - 1)),
    )


def _text_block(
    image: npt.NDArray[np.uint8],
    text: str,
    origin: tuple[int, int],
    scale: float,
    background: tuple[int, int, int],
    thickness: int,
) -> None:
    """Text on a filled box whose top-left corner is ``origin``, kept inside the image."""
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    image_h, image_w = image.shape[:2]
    pad = max(1, thickness)
    x = min(max(origin[0], 0), max(image_w - width - 2 * pad, 0))
    y = min(max(origin[1], 0), max(image_h - height - baseline - 2 * pad, 0))
    cv2.rectangle(
        image, (x, y), (x + width + 2 * pad, y + height + baseline + 2 * pad), background, -1
    )
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    colour = _BLACK if luminance > 140 else _WHITE
    cv2.putText(
        image, text, (x + pad, y + pad + height), _FONT, scale, colour, thickness, cv2.LINE_AA
    )


def annotate_scene(
    rgb: npt.NDArray[np.uint8], scene: Scene, style: AnnotationStyle | None = None
) -> npt.NDArray[np.uint8]:
    """Return a copy of ``rgb`` (H, W, 3, RGB order) with ``scene`` drawn on it."""
    style = style or AnnotationStyle()
    image = _checked_copy(rgb)
    height, width = image.shape[:2]
    # Sizes scale with the image so a 320-px thumbnail and a 1280-px frame both stay legible.
    unit = max(min(width, height) / 480.0, 0.4)
    font_scale = 0.5 * unit
    thickness = max(1, round(2 * unit))
    text_thickness = max(1, round(unit))
    optical = positions_are_optical(scene)
    for obj in scene.objects:
        colour = label_color(obj.label).as_rgb8()
        x0, y0, x1, y1 = _pixel_corners(obj.box, width, height)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
        caption = object_caption(obj, optical)
        (_, text_h), baseline = cv2.getTextSize(caption, _FONT, font_scale, text_thickness)
        above = y0 - text_h - baseline - 2 * text_thickness
        _text_block(
            image,
            caption,
            (x0, above if above >= 0 else y0),
            font_scale,
            colour,
            text_thickness,
        )
    lines: list[str] = []
    if style.show_relations and scene.relations:
        shown = scene.relations[: style.max_relation_lines]
        lines = [f'{r.subject} {r.predicate} {r.object} ({r.distance:.2f} m)' for r in shown]
        if len(scene.relations) > len(shown):
            lines.append(f'... {len(scene.relations) - len(shown)} more relations')
    (_, line_h), line_base = cv2.getTextSize('Ag', _FONT, font_scale, text_thickness)
    step = line_h + line_base + 2 * text_thickness + 2
    y = height - step * len(lines) - 2
    for line in lines:
        _text_block(image, line, (2, y), font_scale, (32, 32, 32), text_thickness)
        y += step
    if scene.error:
        _text_block(
            image, f'error: {scene.error}'[:120], (2, 2), font_scale, _ERROR_RED, text_thickness
        )
    return image


# ----------------------------------------------------------------------------- set-of-marks


@dataclass(frozen=True)
class Mark:
    """One object to mark: its id (the text drawn), its box and the label its colour comes from."""

    text: str
    box: PixelBox
    label: str


@dataclass(frozen=True)
class MarkedImage:
    """A set-of-marks image and where each id tag was drawn (pixels, half-open)."""

    image: npt.NDArray[np.uint8]
    tags: tuple[tuple[str, int, int, int, int], ...]  # (text, x_min, y_min, x_max, y_max)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0


def _tag_candidates(
    box: tuple[int, int, int, int], size: tuple[int, int], image_size: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Tag rectangles around a box, in order of preference, kept inside the image."""
    x0, y0, x1, y1 = box
    width, height = size
    image_w, image_h = image_size
    corners = [
        (x0, y0 - height),  # above, left-aligned
        (x0, y1),  # below, left-aligned
        (x0, y0),  # inside the top-left corner
        (x1 - width, y0 - height),  # above, right-aligned
        (x1 - width, y1),  # below, right-aligned
        (x0, y1 - height),  # inside the bottom-left corner
        (x1 - width, y0),  # inside the top-right corner
        (x0 - width, y0),  # left of the box
        (x1, y0),  # right of the box
        ((x0 + x1 - width) // 2, (y0 + y1 - height) // 2),  # centred
    ]
    rectangles = []
    for x, y in corners:
        x = min(max(x, 0), max(image_w - width, 0))
        y = min(max(y, 0), max(image_h - height, 0))
        rectangles.append((x, y, x + width, y + height))
    return rectangles


def draw_marks(rgb: npt.NDArray[np.uint8], marks: Sequence[Mark]) -> MarkedImage:
    """
    Set-of-marks: each box outlined and tagged with its id, tags placed so they do not collide.

    Tags are placed greedily, larger boxes first (small objects are easier to cover): the first
    position around the box (above, below, inside corners, beside) that overlaps no tag placed
    before, else the one with the least overlap. Sizes scale with the image so the ids stay
    legible after an engine shrinks the image to its pixel budget.
    """
    image = _checked_copy(rgb)
    height, width = image.shape[:2]
    unit = max(min(width, height) / 480.0, 0.4)
    font_scale = 0.55 * unit
    thickness = max(1, round(2 * unit))
    text_thickness = max(1, round(1.2 * unit))
    pad = max(2, round(2 * unit))
    boxes = []
    for mark in marks:
        x0, y0, x1, y1 = _pixel_corners(mark.box, width, height)
        boxes.append((x0, y0, x1, y1))
        cv2.rectangle(image, (x0, y0), (x1, y1), label_color(mark.label).as_rgb8(), thickness)
    order = sorted(
        range(len(marks)),
        key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]),
    )
    placed: dict[int, tuple[int, int, int, int]] = {}
    for index in order:
        (text_w, text_h), baseline = cv2.getTextSize(
            marks[index].text, _FONT, font_scale, text_thickness
        )
        size = (text_w + 2 * pad, text_h + baseline + 2 * pad)
        options = _tag_candidates(boxes[index], size, (width, height))
        taken = list(placed.values())
        scored = [
            (sum(_overlap(option, other) for other in taken), i, option)
            for i, option in enumerate(options)
        ]
        placed[index] = min(scored)[2]
    tags = []
    for index, mark in enumerate(marks):
        x0, y0, x1, y1 = placed[index]
        colour = label_color(mark.label).as_rgb8()
        cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = _BLACK if luminance > 140 else _WHITE
        (_, text_h), _ = cv2.getTextSize(mark.text, _FONT, font_scale, text_thickness)
        cv2.putText(
            image,
            mark.text,
            (x0 + pad, y0 + pad + text_h),
            _FONT,
            font_scale,
            ink,
            text_thickness,
            cv2.LINE_AA,
        )
        tags.append((mark.text, x0, y0, x1, y1))
    return MarkedImage(image=image, tags=tuple(tags))


def scene_marks(scene: Scene, ids: Sequence[str] | None = None) -> list[Mark]:
    """Return marks for the scene's objects (all, or those in ``ids``, in that order)."""
    by_id = {obj.id: obj for obj in scene.objects}
    chosen = [by_id[i] for i in ids if i in by_id] if ids is not None else scene.objects
    return [Mark(obj.id, obj.box, obj.label) for obj in chosen]
