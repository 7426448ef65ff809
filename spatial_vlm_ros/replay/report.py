# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""A self-contained HTML report of a replay: summary counts, a latency histogram (inline SVG),
and per frame the annotated image (inline base64 JPEG) with its object and relation tables.

No external assets, scripts or fonts: the file opens offline and can be attached to an issue.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
import datetime
import html
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.scene_json import scene_to_dict
from spatial_vlm_ros.core.types import Scene


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
class _Entry:
    record: dict[str, Any]
    thumbnail_b64: str | None


@dataclass
class ReportBuilder:
    """Collects scenes during a replay; :meth:`write` can be called at any time (also after an
    interruption) and renders what was collected so far."""

    thumbnail_width: int = 480
    jpeg_quality: int = 80
    max_thumbnails: int = 300  # bounds the file size of long replays
    _entries: list[_Entry] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self._entries)

    def add(self, scene: Scene, annotated_rgb: npt.NDArray[np.uint8] | None = None) -> None:
        thumbnail = None
        if annotated_rgb is not None and len(self._entries) < self.max_thumbnails:
            thumbnail = self._thumbnail(annotated_rgb)
        self._entries.append(_Entry(scene_to_dict(scene), thumbnail))

    def _thumbnail(self, rgb: npt.NDArray[np.uint8]) -> str | None:
        height, width = rgb.shape[:2]
        if width > self.thumbnail_width:
            scale = self.thumbnail_width / width
            rgb = cv2.resize(
                rgb, (self.thumbnail_width, max(1, round(height * scale))), cv2.INTER_AREA
            )
        ok, encoded = cv2.imencode(
            '.jpg',
            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality],
        )
        return base64.b64encode(encoded.tobytes()).decode('ascii') if ok else None

    def write(self, path: str | Path, meta: ReportMeta) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so an interruption never leaves a truncated report behind.
        partial = target.with_name(target.name + '.partial')
        partial.write_text(self.render(meta), encoding='utf-8')
        partial.replace(target)
        return target

    def render(self, meta: ReportMeta) -> str:
        records = [entry.record for entry in self._entries]
        parts = [
            '<!DOCTYPE html>',
            '<html lang="en"><head><meta charset="utf-8">',
            f'<title>{_e(meta.title)}</title>',
            f'<style>{_CSS}</style></head><body>',
            f'<h1>{_e(meta.title)}</h1>',
        ]
        if meta.interrupted:
            parts.append(
                '<p class="warn">The replay was interrupted; this report covers the frames '
                'processed before that.</p>'
            )
        parts.extend(f'<p class="note">{_e(note)}</p>' for note in meta.notes)
        parts.append(_summary_table(meta, records))
        parts.append('<h2>Latency</h2>')
        parts.append(latency_histogram_svg(_measured(records, 'latency_ms')))
        parts.append(_counts_tables(records))
        parts.append('<h2>Frames</h2>')
        for index, entry in enumerate(self._entries):
            parts.append(_frame_section(index, entry))
        if len(self._entries) > self.max_thumbnails:
            parts.append(
                f'<p class="note">Images are shown for the first {self.max_thumbnails} frames '
                'only.</p>'
            )
        parts.append('</body></html>')
        return '\n'.join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return '–'
    if isinstance(value, float):
        return f'{value:.{digits}f}' if math.isfinite(value) else '–'
    return str(value)


def _measured(records: list[dict[str, Any]], key: str) -> list[float]:
    """The records' values of ``key`` that were measured (``null`` when not)."""
    return [float(r[key]) for r in records if r.get(key) is not None]


def _all_objects(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Objects with a position, then those without (schema 2 lists them apart)."""
    return [*record.get('objects', []), *record.get('objects_without_position', [])]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else math.nan


def _summary_table(meta: ReportMeta, records: list[dict[str, Any]]) -> str:
    latencies = _measured(records, 'latency_ms')
    inference = _measured(records, 'inference_ms')
    with_error = sum(1 for r in records if r.get('error'))
    objects = sum(len(_all_objects(r)) for r in records)
    located = sum(1 for r in records for obj in _all_objects(r) if obj.get('position') is not None)
    relations = sum(len(r.get('relations', [])) for r in records)
    rows: list[tuple[str, str]] = [
        ('bag', meta.bag),
        ('engine', meta.engine or (records[0].get('engine', '') if records else '')),
        ('model', meta.model_id or (records[0].get('model_id', '') if records else '')),
    ]
    rows.extend((f'{role} topic', name) for role, name in meta.topics)
    rows.extend(
        [
            ('frames paired', str(meta.frames_paired)),
            ('frames skipped by --rate', str(meta.frames_skipped_by_rate)),
            ('scenes', str(len(records))),
            ('scenes with an error', str(with_error)),
            ('objects (with a 3D position)', f'{objects} ({located})'),
            ('relations', str(relations)),
            (
                'latency ms: mean / p50 / p95 / max',
                ' / '.join(
                    _fmt(v, 1)
                    for v in (
                        float(np.mean(latencies)) if latencies else math.nan,
                        _percentile(latencies, 50),
                        _percentile(latencies, 95),
                        max(latencies) if latencies else math.nan,
                    )
                ),
            ),
            ('inference ms: mean', _fmt(float(np.mean(inference)) if inference else math.nan, 1)),
            ('generated', datetime.datetime.now().astimezone().isoformat(timespec='seconds')),
        ]
    )
    rows.extend(meta.outputs)
    body = ''.join(f'<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _counts_tables(records: list[dict[str, Any]]) -> str:
    labels = Counter(obj['label'] for r in records for obj in r.get('objects', []))
    predicates = Counter(rel['predicate'] for r in records for rel in r.get('relations', []))
    errors = Counter(r['error'] for r in records if r.get('error'))

    def table(title: str, counts: Counter[str]) -> str:
        if not counts:
            return f'<div><h3>{_e(title)}</h3><p>none</p></div>'
        rows = ''.join(
            f'<tr><td>{_e(k)}</td><td class="num">{v}</td></tr>' for k, v in counts.most_common()
        )
        return f'<div><h3>{_e(title)}</h3><table>{rows}</table></div>'

    return (
        '<div class="counts">'
        + table('Objects by label', labels)
        + table('Relations by predicate', predicates)
        + table('Errors', errors)
        + '</div>'
    )


def latency_histogram_svg(latencies_ms: list[float], bins: int = 20) -> str:
    """A bar chart of ``latencies_ms`` as an inline SVG element."""
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


def _frame_section(index: int, entry: _Entry) -> str:
    record = entry.record
    stamp_ns = int(record['stamp_ns'])
    object_count = len(_all_objects(record))
    heading = (
        f'#{index} · stamp {stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d} s · '
        f'{object_count} objects · latency {_fmt(record.get("latency_ms"), 1)} ms'
    )
    parts = [f'<section class="frame" id="frame-{index}"><h3>{_e(heading)}</h3>']
    if record.get('error'):
        parts.append(f'<p class="warn">{_e(record["error"])}</p>')
    parts.append('<div class="row">')
    if entry.thumbnail_b64:
        parts.append(
            f'<img alt="annotated frame {index}" src="data:image/jpeg;base64,'
            f'{entry.thumbnail_b64}">'
        )
    parts.append('<div>')
    parts.append(_objects_table(record))
    parts.append(_relations_table(record))
    parts.append('</div></div></section>')
    return ''.join(parts)


def _objects_table(record: dict[str, Any]) -> str:
    objects = _all_objects(record)
    if not objects:
        return '<p>no objects</p>'
    frame = record.get('frame_id', '')
    header = (
        '<tr><th>id</th><th>label</th><th>conf</th><th>bbox px</th>'
        '<th>x</th><th>y</th><th>z</th><th>range m</th><th>valid depth</th></tr>'
    )
    rows = []
    for obj in objects:
        position = obj.get('position')
        if position is None:
            coords = ['–', '–', '–', '–']
        else:
            coords = [_fmt(float(v), 3) for v in position]
            coords.append(_fmt(obj.get('range'), 2))
        bbox = ', '.join(f'{float(v):.0f}' for v in obj.get('bbox', []))
        cells = [
            obj.get('id', ''),
            obj.get('label', ''),
            _fmt(float(obj.get('confidence', math.nan)), 2),
            f'[{bbox}]',
            *coords,
            _fmt(float(obj.get('valid_depth_ratio', math.nan)), 2),
        ]
        rows.append('<tr>' + ''.join(f'<td>{_e(c)}</td>' for c in cells) + '</tr>')
    caption = f'<caption>objects (positions in {_e(frame)}, metres)</caption>'
    return f'<table class="objects">{caption}{header}{"".join(rows)}</table>'


def _relations_table(record: dict[str, Any]) -> str:
    relations = record.get('relations', [])
    if not relations:
        return '<p>no relations</p>'
    header = (
        '<tr><th>subject</th><th>predicate</th><th>object</th><th>distance m</th>'
        '<th>conf</th><th>source</th></tr>'
    )
    rows = []
    for rel in relations:
        cells = [
            rel.get('subject', ''),
            rel.get('predicate', ''),
            rel.get('object', ''),
            _fmt(float(rel.get('distance', math.nan)), 2),
            _fmt(float(rel.get('confidence', math.nan)), 2),
            rel.get('source', ''),
        ]
        rows.append('<tr>' + ''.join(f'<td>{_e(c)}</td>' for c in cells) + '</tr>')
    frame = record.get('relation_frame_id', '')
    caption = f'<caption>relations (evaluated in {_e(frame)})</caption>'
    return f'<table class="relations">{caption}{header}{"".join(rows)}</table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.5em}h3{font-size:1em}
table{border-collapse:collapse;margin:.4em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right}
caption{text-align:left;font-weight:600;padding:2px 0}
.summary th{width:16em}
.counts{display:flex;gap:2em;flex-wrap:wrap}
.frame{border-top:1px solid #ddd;padding-top:.4em}
.row{display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap}
.row img{max-width:480px;border:1px solid #999}
.warn{color:#a00;font-weight:600}.note{color:#555}
.hist rect{fill:#4477aa}.hist line{stroke:#333}.hist text{font-size:11px;fill:#333}
"""
