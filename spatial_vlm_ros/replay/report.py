# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
A self-contained HTML report of a replay, built around pictures.

For each frame: the annotated image beside a top-down map of the objects (ids, uncertainty
ellipses, footprints, the camera's field of view, a metric grid) and a 3D view (oriented boxes,
the depth as a point cloud, the camera; orbit and zoom with the mouse); the stage latencies; a
compact relation matrix (full tables folded away); the raw model output; the depth on demand.
For the run: a timeline of latency per stage and of objects per frame, and the object memory
as one map when the replay has one. Runs of identical consecutive frames share one card.

One offline file: no external assets, a Content-Security-Policy that forbids loading any, inline
CSS and JavaScript (``report_assets/``), images as data URLs. The numbers behind every picture
are computed in :mod:`spatial_vlm_ros.replay.report_views`; the browser only draws them, and only
for the cards scrolled into view, so a report of a few hundred frames opens quickly.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import datetime
import html
from importlib import resources
import json
import math
from pathlib import Path
from typing import Any, cast
import zlib

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import RgbdFrame, Scene, SpatialObject
from spatial_vlm_ros.replay.report_views import (
    depth_grid,
    finite_or_none,
    label_hex,
    memory_view,
    scene_frames,
    stage_timings,
    top_down_view,
    view_3d,
)

# Loading anything from outside the file is refused by the browser itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)
# Longest model output kept per frame (a runaway generation can be megabytes).
MAX_RAW_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class ReportMeta:
    """What the report says about the run itself."""

    title: str = 'spatial_vlm_ros replay'
    bag: str = ''
    engine: str = ''
    model_id: str = ''
    topics: tuple[tuple[str, str], ...] = ()  # (role, topic name)
    frames_paired: int = 0
    frames_skipped_by_rate: int = 0
    interrupted: bool = False
    notes: tuple[str, ...] = ()
    outputs: tuple[tuple[str, str], ...] = ()  # (what, path)


@dataclass
class _Card:
    """One card of the report: a frame, or a run of identical consecutive frames."""

    first: int
    last: int
    content_key: str | None  # None: never merged with the next frame
    data_json: str  # what the browser draws (report_views output, images, tables)


@dataclass
class ReportBuilder:
    """
    Collects scenes during a replay.

    :meth:`write` can be called at any time (also after an interruption) and renders what was
    collected so far.

    Only compact per-frame numbers and one serialized card per distinct frame are kept, so
    memory grows with the report, not with the images.
    """

    thumbnail_width: int = 480
    jpeg_quality: int = 75
    max_thumbnails: int = 300  # cards with images and depth; later cards keep only the numbers
    depth_grid_width: int = 128  # depth pixels across (point cloud and depth view)
    _frames: list[dict[str, Any]] = field(default_factory=list)
    _cards: list[_Card] = field(default_factory=list)
    _labels: dict[str, int] = field(default_factory=dict)
    _label_counts: Counter[str] = field(default_factory=Counter)
    _predicate_counts: Counter[str] = field(default_factory=Counter)
    _error_counts: Counter[str] = field(default_factory=Counter)
    _totals: Counter[str] = field(default_factory=Counter)
    _first_stamp_ns: int | None = None
    _engine: str = ''
    _model_id: str = ''
    _memory: dict[str, Any] | None = None
    _camera_path: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Frames added so far."""
        return len(self._frames)

    @property
    def card_count(self) -> int:
        """Cards so far (identical consecutive frames share one)."""
        return len(self._cards)

    def add(
        self,
        scene: Scene,
        annotated_rgb: npt.NDArray[np.uint8] | None = None,
        *,
        frame: RgbdFrame | None = None,
        raw_text: str | None = None,
    ) -> None:
        """
        Add one scene with its annotated image, RGB-D frame and raw model output.

        Each is optional; the frame gives the depth view, point cloud and camera field of view.
        """
        index = len(self._frames)
        if self._first_stamp_ns is None:
            self._first_stamp_ns = int(scene.stamp_ns)
        self._engine = self._engine or scene.engine
        self._model_id = self._model_id or scene.model_id
        self._count_scene(scene)
        content_key = _content_key(scene, annotated_rgb, raw_text)
        previous = self._cards[-1] if self._cards else None
        if (
            content_key is not None
            and previous is not None
            and previous.content_key == content_key
        ):
            previous.last = index
        else:
            with_pictures = len(self._cards) < self.max_thumbnails
            data = self._card_data(scene, annotated_rgb, frame, raw_text, with_pictures)
            self._cards.append(_Card(index, index, content_key, _script_json(data)))
        self._frames.append(self._frame_summary(scene, len(self._cards) - 1))
        frames = scene_frames(scene)
        if frames.camera_pose is not None and not frames.optical:
            # Where the camera was in a fixed frame: the path drawn on the memory map.
            self._camera_path.setdefault(scene.frame_id, []).append(
                frames.camera_pose[:3, 3].tolist()
            )

    def set_memory(
        self,
        objects: Iterable[Any],
        frame_id: str,
        camera_path: Sequence[npt.ArrayLike] | None = None,
    ) -> None:
        """
        Show the object memory as one map.

        RememberedObject-like items, see
        :func:`~spatial_vlm_ros.replay.report_views.memory_view`. Without ``camera_path`` the
        camera positions of the scenes given in ``frame_id`` are used.
        """
        path = camera_path if camera_path is not None else self._camera_path.get(frame_id, [])
        self._memory = memory_view(objects, frame_id, path)

    def _count_scene(self, scene: Scene) -> None:
        self._totals['objects'] += len(scene.objects)
        self._totals['located'] += sum(1 for obj in scene.objects if obj.position is not None)
        self._totals['relations'] += len(scene.relations)
        self._totals['errors'] += int(bool(scene.error))
        self._label_counts.update(obj.label for obj in scene.objects)
        self._predicate_counts.update(relation.predicate for relation in scene.relations)
        if scene.error:
            self._error_counts[scene.error] += 1

    def _label_index(self, label: str) -> int:
        return self._labels.setdefault(label, len(self._labels))

    def _frame_summary(self, scene: Scene, card: int) -> dict[str, Any]:
        assert self._first_stamp_ns is not None
        labels = Counter(self._label_index(obj.label) for obj in scene.objects)
        return {
            't': round((int(scene.stamp_ns) - self._first_stamp_ns) / 1e9, 6),
            'stamp': str(int(scene.stamp_ns)),  # a string: JSON numbers lose ns in JavaScript
            'n': len(scene.objects),
            'lat': round(float(scene.latency_ms), 3),
            'st': stage_timings(scene),
            'err': bool(scene.error),
            'card': card,
            'lc': sorted(labels.items()),
        }

    def _card_data(
        self,
        scene: Scene,
        annotated_rgb: npt.NDArray[np.uint8] | None,
        frame: RgbdFrame | None,
        raw_text: str | None,
        with_pictures: bool,
    ) -> dict[str, Any]:
        rgb_intrinsics = frame.rgb_intrinsics if frame is not None else None
        image = None
        if with_pictures and annotated_rgb is not None:
            image = encode_thumbnail(annotated_rgb, self.thumbnail_width, self.jpeg_quality)
        depth = None
        if with_pictures and frame is not None:
            depth = depth_grid(frame.depth_m, frame.depth_intrinsics, self.depth_grid_width)
        image_size = None
        if rgb_intrinsics is not None:
            image_size = [rgb_intrinsics.width, rgb_intrinsics.height]
        elif annotated_rgb is not None:
            image_size = [int(annotated_rgb.shape[1]), int(annotated_rgb.shape[0])]
        if raw_text is not None and len(raw_text) > MAX_RAW_TEXT_CHARS:
            cut = len(raw_text) - MAX_RAW_TEXT_CHARS
            raw_text = f'{raw_text[:MAX_RAW_TEXT_CHARS]}\n… ({cut} more characters not shown)'
        return {
            'img': image,
            'size': image_size,
            'depth': depth,
            'map': top_down_view(scene, rgb_intrinsics),
            'v3d': view_3d(scene, rgb_intrinsics),
            'objects': [_object_row(obj) for obj in scene.objects],
            'relations': [
                [
                    relation.subject,
                    relation.predicate,
                    relation.object,
                    finite_or_none(relation.distance, 3),
                    finite_or_none(relation.confidence, 3),
                ]
                for relation in scene.relations
            ],
            'frame': scene.frame_id,
            'relation_frame': scene.relation_frame_id,
            'raw': raw_text,
            'error': scene.error,
            'warnings': list(scene.warnings),
        }

    def write(self, path: str | Path, meta: ReportMeta) -> Path:
        """Render to ``path`` (written under a temporary name, then renamed)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interruption never leaves a truncated report behind.
        partial = target.with_name(target.name + '.partial')
        partial.write_text(self.render(meta), encoding='utf-8')
        partial.replace(target)
        return target

    def render(self, meta: ReportMeta) -> str:
        """Return the whole report as one HTML string."""
        run_data = {
            'frames': self._frames,
            'cards': [[card.first, card.last] for card in self._cards],
            'labels': list(self._labels),
            'label_colors': [label_hex(label) for label in self._labels],
            'memory': self._memory,
        }
        parts = [
            '<!DOCTYPE html>',
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<title>{_e(meta.title)}</title>',
            f'<style>{_asset("report.css")}</style></head><body>',
            f'<header><h1>{_e(meta.title)}</h1>',
            '<noscript><p class="warn">The pictures need JavaScript.</p></noscript>',
        ]
        if meta.interrupted:
            parts.append(
                '<p class="warn">The replay was interrupted; this report covers the frames '
                'processed before that.</p>'
            )
        parts.extend(f'<p class="note">{_e(note)}</p>' for note in meta.notes)
        parts.append('</header>')
        parts.append(self._summary_section(meta))
        parts.append(
            '<section id="timeline"><h2>Timeline</h2>'
            '<p class="hint">Latency per stage (stacked) and objects per frame; click a frame '
            'to jump to it.</p><div id="timeline-legend" class="legend"></div>'
            '<canvas id="timeline-canvas" width="1100" height="300"></canvas>'
            '<div id="timeline-tip" class="tip" hidden></div></section>'
        )
        if self._memory is not None:
            parts.append(
                '<section id="memory"><h2>Object memory</h2>'
                f'<p class="hint">{len(self._memory["objects"])} remembered objects in '
                f'{_e(self._memory["frame"])}, with 95 % ellipses and the camera path.</p>'
                '<canvas id="memory-map" class="map" width="560" height="560"></canvas>'
                '</section>'
            )
        parts.append(self._overview_section())
        parts.append('<section id="frames"><h2>Frames</h2>')
        if len(self._cards) > self.max_thumbnails:
            parts.append(
                f'<p class="note">Images and depth are kept for the first {self.max_thumbnails} '
                'cards; later cards show the maps, the 3D boxes and the tables.</p>'
            )
        for card_index, card in enumerate(self._cards):
            parts.append(self._card_shell(card_index, card))
        parts.append('</section>')
        parts.append(
            f'<script type="application/json" id="report-data">{_script_json(run_data)}</script>'
        )
        parts.extend(
            f'<script type="application/json" id="card-data-{card_index}">{card.data_json}'
            '</script>'
            for card_index, card in enumerate(self._cards)
        )
        parts.append(f'<script>{_asset("report.js")}</script>')
        parts.append('</body></html>')
        return '\n'.join(parts)

    def _summary_section(self, meta: ReportMeta) -> str:
        latencies = [frame['lat'] for frame in self._frames]
        rows: list[tuple[str, str]] = [
            ('bag', meta.bag),
            ('engine', meta.engine or self._engine),
            ('model', meta.model_id or self._model_id),
        ]
        rows.extend((f'{role} topic', name) for role, name in meta.topics)
        distinct = len(self._cards)
        rows.extend(
            [
                ('frames paired', str(meta.frames_paired)),
                ('frames skipped by --rate', str(meta.frames_skipped_by_rate)),
                ('scenes', f'{len(self._frames)} ({distinct} distinct)'),
                ('scenes with an error', str(self._totals['errors'])),
                (
                    'objects (with a 3D position)',
                    f'{self._totals["objects"]} ({self._totals["located"]})',
                ),
                ('relations', str(self._totals['relations'])),
                (
                    'latency ms: mean / p50 / p95 / max',
                    ' / '.join(
                        _fmt(value, 1)
                        for value in (
                            float(np.mean(latencies)) if latencies else math.nan,
                            _percentile(latencies, 50),
                            _percentile(latencies, 95),
                            max(latencies) if latencies else math.nan,
                        )
                    ),
                ),
                ('generated', datetime.datetime.now().astimezone().isoformat(timespec='seconds')),
            ]
        )
        if self._first_stamp_ns is not None:
            start = datetime.datetime.fromtimestamp(
                self._first_stamp_ns / 1e9, datetime.timezone.utc
            )
            rows.append(('first image stamp (t = 0)', start.isoformat(timespec='milliseconds')))
        rows.extend((f'{what} (output)', where) for what, where in meta.outputs)
        body = ''.join(f'<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>' for k, v in rows)
        return f'<section id="summary"><dl class="summary">{body}</dl></section>'

    def _overview_section(self) -> str:
        def chips(counts: Counter[str], colored: bool) -> str:
            if not counts:
                return '<span class="none">none</span>'
            items = []
            for name, count in counts.most_common():
                style = f' style="border-color:{label_hex(name)}"' if colored else ''
                items.append(f'<span class="chip"{style}>{_e(name)} <b>{count}</b></span>')
            return ''.join(items)

        latencies = [frame['lat'] for frame in self._frames]
        return (
            '<section id="overview"><h2>Over the run</h2><div class="overview">'
            f'<div><h3>Objects by label</h3>{chips(self._label_counts, True)}</div>'
            f'<div><h3>Relations by predicate</h3>{chips(self._predicate_counts, False)}</div>'
            f'<div><h3>Errors</h3>{chips(self._error_counts, False)}</div></div>'
            '<details><summary>Latency histogram</summary>'
            f'{latency_histogram_svg(latencies)}</details></section>'
        )

    def _card_shell(self, card_index: int, card: _Card) -> str:
        first = self._frames[card.first]
        frames = card.last - card.first + 1
        anchors = ''.join(
            f'<span class="anchor" id="frame-{index}"></span>'
            for index in range(card.first, card.last + 1)
        )
        title = f'#{card.first}' if frames == 1 else f'#{card.first}–#{card.last}'
        facts = [f't = +{first["t"]:.3f} s', f'{first["n"]} objects']
        if frames == 1:
            facts.append(f'latency {first["lat"]:.0f} ms')
        else:
            latencies = [self._frames[i]['lat'] for i in range(card.first, card.last + 1)]
            facts.append(f'latency {min(latencies):.0f}–{max(latencies):.0f} ms')
        flags = ''
        if frames > 1:
            flags += (
                f'<span class="flag same" title="same image, objects and relations">'
                f'{frames} identical frames</span>'
            )
        if first['err']:
            flags += '<span class="flag error">error</span>'
        return (
            f'<section class="card" id="card-{card_index}" data-card="{card_index}">{anchors}'
            f'<h3><a href="#frame-{card.first}">{_e(title)}</a> · {_e(" · ".join(facts))}'
            f'{flags}</h3><div class="card-body"></div></section>'
        )


def encode_thumbnail(rgb: npt.NDArray[np.uint8], width: int, quality: int) -> str | None:
    """``rgb`` shrunk to at most ``width`` pixels across, as a JPEG data URL."""
    height, full_width = rgb.shape[:2]
    if full_width > width:
        # Area averaging only pays off (against aliasing) below half size; it is 6x slower.
        method = cv2.INTER_AREA if width < full_width / 2 else cv2.INTER_LINEAR
        size = (width, max(1, round(height * width / full_width)))
        # cv2's stubs type every result as MatLike; resizing keeps the uint8 RGB layout.
        rgb = cast(npt.NDArray[np.uint8], cv2.resize(rgb, size, interpolation=method))
    ok, encoded = cv2.imencode(
        '.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        return None
    return 'data:image/jpeg;base64,' + base64.b64encode(encoded.tobytes()).decode('ascii')


def _content_key(
    scene: Scene, annotated_rgb: npt.NDArray[np.uint8] | None, raw_text: str | None
) -> str | None:
    """
    Equal for frames that would show the same card.

    Same picture, objects, relations, error and model output. Stamps and latencies may differ. None
    without a picture.
    """
    if annotated_rgb is None:
        return None
    image = np.ascontiguousarray(annotated_rgb)
    # crc32 is 3x faster than a cryptographic hash here; the content below is compared in full.
    content = (
        image.shape,
        zlib.crc32(image.data),
        scene.frame_id,
        scene.relation_frame_id,
        scene.error,
        raw_text,
        [_object_row(obj) for obj in scene.objects],
        [
            (r.subject, r.predicate, r.object, round(r.distance, 4), round(r.confidence, 4))
            for r in scene.relations
        ],
    )
    return repr(content)


def _object_row(obj: SpatialObject) -> list[Any]:
    """id, label, confidence, bbox px, position m (or None), range m, 1-sigma m, valid depth."""
    lifted = obj.lifted
    position = None
    distance = None
    sigma = None
    if lifted.position is not None:
        values = np.asarray(lifted.position, dtype=float).ravel()
        if values.shape == (3,) and np.all(np.isfinite(values)):
            position = [round(float(v), 4) for v in values]
            distance = round(float(np.linalg.norm(values)), 4)
    if lifted.covariance is not None:
        covariance = np.asarray(lifted.covariance, dtype=float)
        if covariance.size == 9 and np.all(np.isfinite(covariance)):
            # Root of the mean variance: one number for "how sure is the position".
            sigma = round(math.sqrt(max(float(np.trace(covariance.reshape(3, 3))) / 3, 0.0)), 4)
    return [
        obj.id,
        obj.label,
        finite_or_none(obj.confidence, 3),
        [round(float(v), 1) for v in obj.box.as_list()],
        position,
        distance,
        sigma,
        finite_or_none(lifted.valid_depth_ratio, 3),
    ]


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '<' can close it or open a comment."""
    text = json.dumps(value, separators=(',', ':'), ensure_ascii=False, allow_nan=False)
    return text.replace('<', '\\u003c').replace('\u2028', '\\u2028').replace('\u2029', '\\u2029')


def _asset(name: str) -> str:
    return (
        resources.files('spatial_vlm_ros.replay')
        .joinpath('report_assets')
        .joinpath(name)
        .read_text(encoding='utf-8')
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return '–'
    if isinstance(value, float):
        return f'{value:.{digits}f}' if math.isfinite(value) else '–'
    return str(value)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else math.nan


def latency_histogram_svg(latencies_ms: list[float], bins: int = 20) -> str:
    """Return a bar chart of ``latencies_ms`` as an inline SVG element."""
    values = np.asarray([v for v in latencies_ms if math.isfinite(v)], dtype=float)
    if values.size == 0:
        return '<p>no scenes</p>'
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    width, height, left, bottom, top = 640, 200, 48, 32, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(int(counts.max()), 1)
    bar_w = plot_w / len(counts)
    shapes = []
    for index, count in enumerate(counts):
        bar_h = plot_h * int(count) / peak
        x = left + index * bar_w
        shapes.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - bar_h:.1f}" width="{max(bar_w - 2, 1):.1f}"'
            f' height="{bar_h:.1f}"><title>{edges[index]:.1f}–{edges[index + 1]:.1f} ms: '
            f'{int(count)}</title></rect>'
        )
    axis_y = top + plot_h
    ticks = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + fraction * plot_w
        label = low + fraction * (high - low)
        ticks.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}"/>'
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{label:.1f}</text>'
        )
    return (
        f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="latency histogram">'
        f'<g class="bars">{"".join(shapes)}</g>'
        f'<g class="axis"><line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}"/>{"".join(ticks)}'
        f'<text x="{left - 6}" y="{top + 8}" text-anchor="end">{peak}</text>'
        f'<text x="{left - 6}" y="{axis_y}" text-anchor="end">0</text>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 2}" text-anchor="middle">'
        f'latency (ms), {values.size} scenes</text></g></svg>'
    )


__all__ = [
    'CONTENT_SECURITY_POLICY',
    'MAX_RAW_TEXT_CHARS',
    'ReportBuilder',
    'ReportMeta',
    'encode_thumbnail',
    'latency_histogram_svg',
]
