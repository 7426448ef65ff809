# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
ROS-free marker specifications for a scene and for the object memory.

A scene has a box and a label per object and lines for relations; the object memory a box and
a label per remembered object.

The node and the replay turn a :class:`MarkerSet` into a ``visualization_msgs/MarkerArray``
(one :class:`MarkerSpec` per ``Marker``); keeping the geometry here lets it be tested without
ROS and keeps RViz and Foxglove views identical between live runs and replays.

Every set starts with a DELETEALL marker so that objects which disappeared from the scene do not
linger in the viewer. Marker ids are stable within a namespace: object ``n`` of the scene (in
scene order) always gets id ``n``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import enum
import functools
import zlib

import numpy as np

from spatial_vlm_ros.core.memory import ObjectState, RememberedObject
from spatial_vlm_ros.core.positions import placed
from spatial_vlm_ros.core.types import Scene, SpatialObject

Vector3 = tuple[float, float, float]

NAMESPACE_OBJECTS = 'objects'
NAMESPACE_LABELS = 'labels'
NAMESPACE_RELATIONS = 'relations'
NAMESPACE_RELATION_LABELS = 'relation_labels'
NAMESPACE_MEMORY_OBJECTS = 'memory_objects'
NAMESPACE_MEMORY_LABELS = 'memory_labels'
# Box opacity by memory state: what was just seen stands out, what should be there and was not
# seen fades.
MEMORY_ALPHA = {
    ObjectState.VISIBLE: 0.6,
    ObjectState.OUT_OF_VIEW: 0.3,
    ObjectState.OCCLUDED: 0.3,
    ObjectState.UNSEEN: 0.12,
}


class MarkerKind(str, enum.Enum):
    """The subset of ``visualization_msgs/Marker`` types a scene uses."""

    CUBE = 'cube'
    TEXT = 'text'  # TEXT_VIEW_FACING
    LINE_LIST = 'line_list'
    DELETE_ALL = 'delete_all'  # action DELETEALL: clears every marker of this publisher


@dataclass(frozen=True)
class Rgba:
    """Colour with components in [0, 1]."""

    r: float
    g: float
    b: float
    a: float = 1.0

    def as_rgb8(self) -> tuple[int, int, int]:
        return (round(self.r * 255), round(self.g * 255), round(self.b * 255))


@dataclass(frozen=True)
class MarkerSpec:
    """
    One marker.

    ``position`` and ``orientation`` (quaternion x, y, z, w) are the pose; ``scale`` follows Marker
    semantics: box extents along the oriented axes for CUBE, the line width in ``scale[0]`` for
    LINE_LIST, the text height in ``scale[2]`` for TEXT.
    """

    namespace: str
    marker_id: int
    kind: MarkerKind
    position: Vector3 = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    scale: Vector3 = (1.0, 1.0, 1.0)
    color: Rgba = Rgba(1.0, 1.0, 1.0, 1.0)
    text: str = ''
    points: tuple[Vector3, ...] = ()


@dataclass(frozen=True)
class MarkerSet:
    """All markers of one scene, in the scene's position frame at the scene's stamp."""

    frame_id: str
    stamp_ns: int
    markers: tuple[MarkerSpec, ...]
    lifetime_s: float = 0.0  # 0: markers live until replaced (the next set's DELETEALL)


@dataclass(frozen=True)
class MarkerStyle:
    text_height_m: float = 0.06
    line_width_m: float = 0.01
    min_box_extent_m: float = 0.02  # boxes thinner than this are hard to see in a viewer
    box_alpha: float = 0.35
    lifetime_s: float = 0.0
    include_relations: bool = True


# A qualitative palette (Tableau 10): distinct colours that stay readable on dark and light
# backgrounds. Labels are hashed with CRC32 (not hash(), which is salted per process) so a label
# keeps its colour across runs, in the viewer and in the annotated image alike.
_PALETTE = (
    (0.122, 0.467, 0.706),
    (1.000, 0.498, 0.055),
    (0.173, 0.627, 0.173),
    (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741),
    (0.549, 0.337, 0.294),
    (0.890, 0.467, 0.761),
    (0.498, 0.498, 0.498),
    (0.737, 0.741, 0.133),
    (0.090, 0.745, 0.812),
)
RELATION_COLOR = Rgba(0.95, 0.95, 0.95, 0.9)


@functools.lru_cache(maxsize=1024)
def label_color(label: str, alpha: float = 1.0) -> Rgba:
    """
    Return a stable colour for ``label``.

    Rgba is immutable, so one instance serves every call.
    """
    r, g, b = _PALETTE[zlib.crc32(label.encode('utf-8')) % len(_PALETTE)]
    return Rgba(r, g, b, alpha)


def positions_are_optical(scene: Scene) -> bool:
    """
    Return True when object positions are in the camera optical frame.

    The optical frame: x right, y down, z forward.
    """
    return not scene.frame_id or scene.frame_id == scene.camera_frame_id


def _up_vector(optical: bool) -> Vector3:
    # Optical frames point y down; body and map frames (REP 103) point z up.
    return (0.0, -1.0, 0.0) if optical else (0.0, 0.0, 1.0)


def _box_extent(obj: SpatialObject, minimum: float) -> Vector3:
    """
    Return the extents along the box axes, at least ``minimum``.

    The box axes are the camera optical axes; the marker's orientation turns them into the
    scene frame.
    """
    size = obj.lifted.size
    if size is None:
        return (minimum, minimum, minimum)
    if type(size) is np.ndarray and size.dtype == np.float64:
        sx, sy, sz = size.ravel().tolist()
    else:
        sx, sy, sz = (float(v) for v in np.asarray(size, dtype=float).ravel())
    return (max(sx, minimum), max(sy, minimum), max(sz, minimum))


def scene_markers(scene: Scene, style: MarkerStyle | None = None) -> MarkerSet:
    """
    Return the markers for ``scene``.

    A translucent box and a text label per object with a position, and one line (plus a
    predicate label) per related pair of objects.
    """
    style = style or MarkerStyle()
    optical = positions_are_optical(scene)
    up = _up_vector(optical)
    orientation = scene.camera_orientation
    markers: list[MarkerSpec] = [MarkerSpec('', 0, MarkerKind.DELETE_ALL)]
    positions: dict[str, Vector3] = {}
    text_scale = (style.text_height_m, style.text_height_m, style.text_height_m)
    for index, (obj, position, distance) in enumerate(placed(scene)):
        if position is None:
            continue
        positions[obj.id] = position
        extent = _box_extent(obj, style.min_box_extent_m)
        markers.append(
            MarkerSpec(
                namespace=NAMESPACE_OBJECTS,
                marker_id=index,
                kind=MarkerKind.CUBE,
                position=position,
                orientation=orientation,
                scale=extent,
                color=label_color(obj.label, style.box_alpha),
            )
        )
        # The label floats above the box, along the frame's "up" (optical y is the box's
        # height; in a body or map frame the box's largest extent bounds its vertical one).
        half_height = (extent[1] if optical else max(extent)) / 2.0
        lift = half_height + style.text_height_m
        label_position = (
            position[0] + up[0] * lift,
            position[1] + up[1] * lift,
            position[2] + up[2] * lift,
        )
        markers.append(
            MarkerSpec(
                namespace=NAMESPACE_LABELS,
                marker_id=index,
                kind=MarkerKind.TEXT,
                position=label_position,
                scale=text_scale,
                color=label_color(obj.label),
                text=f'{obj.id} {distance:.2f} m',
            )
        )
    if style.include_relations:
        markers.extend(_relation_markers(scene, positions, style))
    return MarkerSet(
        frame_id=scene.frame_id or scene.camera_frame_id,
        stamp_ns=int(scene.stamp_ns),
        markers=tuple(markers),
        lifetime_s=style.lifetime_s,
    )


def _relation_markers(
    scene: Scene, positions: dict[str, Vector3], style: MarkerStyle
) -> list[MarkerSpec]:
    # Relations usually come in inverse pairs (a left_of b, b right_of a). One line per unordered
    # pair keeps the view readable; its label lists the predicates of the first-seen direction.
    predicates_by_pair: dict[tuple[str, str], list[str]] = {}
    for relation in scene.relations:
        if relation.subject not in positions or relation.object not in positions:
            continue
        forward = (relation.subject, relation.object)
        backward = (relation.object, relation.subject)
        if backward in predicates_by_pair:
            continue
        predicates = predicates_by_pair.setdefault(forward, [])
        if relation.predicate not in predicates:
            predicates.append(relation.predicate)
    if not predicates_by_pair:
        return []
    points: list[Vector3] = []
    labels: list[MarkerSpec] = []
    label_scale = (style.text_height_m * 0.7,) * 3
    for index, ((subject, obj), predicates) in enumerate(predicates_by_pair.items()):
        start, end = positions[subject], positions[obj]
        points.extend((start, end))
        middle = (
            (start[0] + end[0]) / 2.0,
            (start[1] + end[1]) / 2.0,
            (start[2] + end[2]) / 2.0,
        )
        labels.append(
            MarkerSpec(
                namespace=NAMESPACE_RELATION_LABELS,
                marker_id=index,
                kind=MarkerKind.TEXT,
                position=middle,
                scale=label_scale,
                color=RELATION_COLOR,
                text=f'{subject} {", ".join(predicates)} {obj}',
            )
        )
    lines = MarkerSpec(
        namespace=NAMESPACE_RELATIONS,
        marker_id=0,
        kind=MarkerKind.LINE_LIST,
        scale=(style.line_width_m, 0.0, 0.0),
        color=RELATION_COLOR,
        points=tuple(points),
    )
    return [lines, *labels]


def memory_markers(
    objects: Iterable[RememberedObject],
    frame_id: str,
    stamp_ns: int,
    *,
    optical: bool = False,
    style: MarkerStyle | None = None,
) -> MarkerSet:
    """
    Markers of the object memory in its frame.

    Per object a box (axis-aligned in the memory frame, its largest extents seen; more transparent
    when not seen now) and a label ``<id> <state>`` (``?`` marks an unconfirmed object).
    ``optical``: the memory frame is a camera optical frame (y down) rather than a REP 103 one (z
    up). Marker ids follow the id order, after a DELETEALL, so forgotten objects disappear.
    """
    style = style or MarkerStyle()
    up = _up_vector(optical)
    markers: list[MarkerSpec] = [MarkerSpec('', 0, MarkerKind.DELETE_ALL)]
    text_scale = (style.text_height_m, style.text_height_m, style.text_height_m)
    for index, item in enumerate(sorted(objects, key=lambda item: item.id)):
        position = tuple(float(v) for v in item.position)
        extent = tuple(max(float(v), style.min_box_extent_m) for v in item.size)
        markers.append(
            MarkerSpec(
                namespace=NAMESPACE_MEMORY_OBJECTS,
                marker_id=index,
                kind=MarkerKind.CUBE,
                position=position,  # type: ignore[arg-type]
                scale=extent,  # type: ignore[arg-type]
                color=label_color(item.label, MEMORY_ALPHA[item.state]),
            )
        )
        lift = (extent[1] if optical else extent[2]) / 2.0 + style.text_height_m
        state = item.state.name.lower() + ('' if item.confirmed else ' ?')
        markers.append(
            MarkerSpec(
                namespace=NAMESPACE_MEMORY_LABELS,
                marker_id=index,
                kind=MarkerKind.TEXT,
                position=(
                    position[0] + up[0] * lift,
                    position[1] + up[1] * lift,
                    position[2] + up[2] * lift,
                ),
                scale=text_scale,
                color=label_color(item.label),
                text=f'{item.id} {state}',
            )
        )
    return MarkerSet(frame_id=frame_id, stamp_ns=int(stamp_ns), markers=tuple(markers))
