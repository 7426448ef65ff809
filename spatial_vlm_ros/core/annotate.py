# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Draw a scene onto its RGB image: boxes, labels with distances, relations, errors.

Pure: the input image is never modified; a new RGB uint8 array is returned. Colours match the
markers (:func:`spatial_vlm_ros.core.markers.label_color`) so the 2D and 3D views agree.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.markers import label_color, positions_are_optical
from spatial_vlm_ros.core.types import Scene, SpatialObject, SpatialVlmError

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
    """A copy of ``rgb`` (H, W, 3, RGB order) with ``scene`` drawn on it."""
    style = style or AnnotationStyle()
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise AnnotationError(
            f'expected an RGB uint8 image of shape (H, W, 3), got {array.dtype} {array.shape}'
        )
    image = np.ascontiguousarray(array).copy()
    height, width = image.shape[:2]
    # Sizes scale with the image so a 320-px thumbnail and a 1280-px frame both stay legible.
    unit = max(min(width, height) / 480.0, 0.4)
    font_scale = 0.5 * unit
    thickness = max(1, round(2 * unit))
    text_thickness = max(1, round(unit))
    optical = positions_are_optical(scene)
    for obj in scene.objects:
        colour = label_color(obj.label).as_rgb8()
        x0 = round(min(max(obj.box.x_min, 0.0), width - 1))
        y0 = round(min(max(obj.box.y_min, 0.0), height - 1))
        # Half-open boxes: the last covered pixel is x_max - 1.
        x1 = round(min(max(obj.box.x_max - 1.0, 0.0), width - 1))
        y1 = round(min(max(obj.box.y_max - 1.0, 0.0), height - 1))
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
