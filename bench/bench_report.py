# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""report.html for a few hundred real frames: how long it takes to build, how big it is, how fast
it opens in headless Chromium.

Frames: the real 7-Scenes RedKitchen sequence (60 Kinect frames with camera poses and hand boxes,
read from ../shared/data; never committed), looped to ``--frames`` frames. The loop keeps each
frame distinct from the previous one, so no card is collapsed: the worst case for size. Each
frame is lifted with the project's own lifting (hand boxes stand in for the model, and a frame
without labels reuses the previous labelled frame's boxes), its relations computed, and its
objects moved into the (z-up) world frame with the recorded pose, as ``--target-frame`` would.
The memory map is fed the sequence's ``objects_world_derived.json`` (positions derived from the
labels, depth and poses; a stand-in until the object memory lands, named as such).

Baselines measured in the same run:
* building: ``annotate_scene`` of the same frames (what every replay already pays per frame);
* opening: the same file without its painter script (every byte, the JSON blocks included, is
  still read; nothing is drawn).

    .venv/bin/python bench/bench_report.py [--frames 300] [--loads 3] [--sequence DIR]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
import os
from pathlib import Path
import re
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatial_vlm_ros.core.annotate import annotate_scene
from spatial_vlm_ros.core.relations import compute_relations, transform_objects
from spatial_vlm_ros.core.transforms import transform_from_translation_quaternion
from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    Detection,
    PixelBox,
    RgbdFrame,
    Scene,
)
from spatial_vlm_ros.pipeline import PipelineConfig, lift_detections
from spatial_vlm_ros.replay.report import ReportBuilder, ReportMeta

# ../shared beside the checkout (CI, the main tree) or beside the worktrees' folder.
_SEQUENCE_CANDIDATES = [
    parent / 'shared' / 'data' / 'sequences' / '7scenes_redkitchen'
    for parent in Path(__file__).resolve().parents[2:4]
]
DEFAULT_SEQUENCE = next((p for p in _SEQUENCE_CANDIDATES if p.is_dir()), _SEQUENCE_CANDIDATES[0])
WORLD = 'world_z_up'
CAMERA = 'kinect_optical'
# 7-Scenes' world frame points +y roughly down; turn it z-up (x, z, -y) like a REP 103 map frame.
Z_UP_FROM_WORLD = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


@dataclass(frozen=True)
class SequenceFrame:
    index: int
    rgb: np.ndarray
    depth_m: np.ndarray
    pose: np.ndarray  # T_world_z_up_from_camera
    boxes: list[tuple[str, PixelBox]]


def load_sequence(root: Path) -> tuple[list[SequenceFrame], CameraIntrinsics, dict[str, Any]]:
    intrinsics_json = json.loads((root / 'intrinsics.json').read_text())
    intrinsics = CameraIntrinsics(
        fx=intrinsics_json['fx'],
        fy=intrinsics_json['fy'],
        cx=intrinsics_json['cx'],
        cy=intrinsics_json['cy'],
        width=intrinsics_json['width'],
        height=intrinsics_json['height'],
    )
    poses = {}
    for line in (root / 'poses.txt').read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            index, *values = line.split()
            poses[int(index)] = Z_UP_FROM_WORLD @ transform_from_translation_quaternion(
                [float(v) for v in values[:3]], [float(v) for v in values[3:]]
            )
    labels = json.loads((root / 'labels.json').read_text())
    frames = []
    boxes: list[tuple[str, PixelBox]] = []
    for line in (root / 'associations.txt').read_text().splitlines():
        if not line.strip() or line.startswith('#'):
            continue
        index, _, color_file, depth_file = line.split()
        if color_file in labels:
            boxes = [(item['object'], PixelBox(*item['box'])) for item in labels[color_file]]
        bgr = cv2.imread(str(root / color_file), cv2.IMREAD_COLOR)
        depth_mm = cv2.imread(str(root / depth_file), cv2.IMREAD_UNCHANGED)
        depth_m = np.where(depth_mm > 0, depth_mm / 1000.0, np.nan).astype(np.float32)
        frames.append(
            SequenceFrame(
                int(index), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth_m, poses[int(index)], boxes
            )
        )
    derived = json.loads((root / 'objects_world_derived.json').read_text())
    return frames, intrinsics, derived


def build_report(
    frames: list[SequenceFrame], intrinsics: CameraIntrinsics, count: int, derived: dict[str, Any]
) -> tuple[ReportBuilder, dict[str, float]]:
    config = PipelineConfig()
    builder = ReportBuilder()
    annotate_s = add_s = 0.0
    start_ns = 1_767_225_600_000_000_000
    for step in range(count):
        source = frames[step % len(frames)]
        loop = step // len(frames)
        stamp_ns = start_ns + round((loop * 300 + source.index) / 30 * 1e9)
        frame = RgbdFrame(stamp_ns, CAMERA, source.rgb, source.depth_m, intrinsics, intrinsics)
        started = time.perf_counter()
        detections = [Detection(label, box) for label, box in source.boxes]
        camera_objects = lift_detections(frame, detections, config)
        relations = compute_relations(camera_objects, config.relations)
        scene = Scene(
            stamp_ns=stamp_ns,
            frame_id=WORLD,
            camera_frame_id=CAMERA,
            objects=transform_objects(camera_objects, source.pose),
            relations=relations,
            relation_frame_id=CAMERA,
            model_id='hand labels (7-Scenes)',
            engine='none',
            latency_ms=1e3 * (time.perf_counter() - started),
            inference_ms=0.0,
            T_frame_from_camera=source.pose,
        )
        raw = json.dumps(
            [{'bbox_2d': box.as_list(), 'label': label} for label, box in source.boxes]
        )
        started = time.perf_counter()
        annotated = annotate_scene(frame.rgb, scene)
        annotate_s += time.perf_counter() - started
        started = time.perf_counter()
        builder.add(scene, annotated, frame=frame, raw_text=raw)
        add_s += time.perf_counter() - started
    builder.set_memory(
        [
            {
                'id': name,
                'label': name,
                'position': Z_UP_FROM_WORLD[:3, :3] @ np.asarray(item['median_world_xyz_m']),
            }
            for name, item in derived['objects'].items()
        ],
        WORLD,
    )
    return builder, {'annotate_ms': 1e3 * annotate_s / count, 'add_ms': 1e3 * add_s / count}


def chromium_load_times(report: Path, loads: int) -> dict[str, float] | None:
    """Median ms from navigation start to the report's marks, and for the script-less copy."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        print('selenium is not installed: no load times')
        return None
    chromium, driver_path = shutil.which('chromium'), shutil.which('chromedriver')
    if not chromium or not driver_path:
        print('chromium/chromedriver not installed: no load times')
        return None
    os.environ['SE_OFFLINE'] = 'true'
    # The baseline keeps every byte (the JSON blocks, the images in them) but not the painter.
    bare = report.with_name('report_without_painter.html')
    text = report.read_text(encoding='utf-8')
    bare.write_text(re.sub(r'<script>.*?</script>', '', text, flags=re.S), encoding='utf-8')
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix='bench-report-')
    for flag in (
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--window-size=1280,900', f'--user-data-dir={profile}',
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    samples: dict[str, list[float]] = {'ready': [], 'first_card': [], 'load': [], 'bare_load': []}
    try:
        for _ in range(loads):
            for path, key in ((bare, 'bare_load'), (report, 'load')):
                driver.get('about:blank')
                driver.get(path.as_uri())
                timing = driver.execute_script(
                    'const n = performance.getEntriesByType("navigation")[0];'
                    'return n.loadEventEnd;'
                )
                samples[key].append(float(timing))
            for mark, key in (('report-ready', 'ready'), ('report-first-card', 'first_card')):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    found = driver.execute_script(
                        'const m = performance.getEntriesByName(arguments[0]);'
                        'return m.length ? m[0].startTime : null;',
                        mark,
                    )
                    if found is not None:
                        samples[key].append(float(found))
                        break
                    time.sleep(0.02)
        # Scroll through every card once: how long drawing all of them takes in total.
        driver.set_script_timeout(600)
        started = time.perf_counter()
        driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            const cards = Array.from(document.querySelectorAll('section.card'));
            (async () => {
              for (const card of cards) {
                card.scrollIntoView();
                while (!card.dataset.rendered) await new Promise((r) => setTimeout(r, 5));
              }
              done(cards.length);
            })();
            """
        )
        all_cards_s = time.perf_counter() - started
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    result = {key: statistics.median(values) for key, values in samples.items() if values}
    result['all_cards_ms'] = 1e3 * all_cards_s
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sequence', type=Path, default=DEFAULT_SEQUENCE)
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--loads', type=int, default=3)
    parser.add_argument('--out', type=Path, default=None, help='keep the report in this folder')
    args = parser.parse_args()
    if not (args.sequence / 'labels.json').is_file():
        print(f'no sequence at {args.sequence}; pass --sequence (skipping)')
        return 0
    frames, intrinsics, derived = load_sequence(args.sequence)
    builder, per_frame = build_report(frames, intrinsics, args.frames, derived)
    out = args.out or Path(tempfile.mkdtemp(prefix='bench-report-'))
    started = time.perf_counter()
    report = builder.write(out / 'report.html', ReportMeta(title='bench_report: 7-Scenes'))
    write_ms = 1e3 * (time.perf_counter() - started)
    size_mb = report.stat().st_size / 1e6
    print(f'command: {" ".join([Path(sys.executable).name, *sys.argv])}')
    print(f'frames: {args.frames} ({builder.card_count} cards) from {args.sequence.name}')
    print('| measure | value |')
    print('|---|---|')
    print(f'| file size | {size_mb:.2f} MB ({1e3 * size_mb / builder.card_count:.1f} kB/card) |')
    print(f'| annotate_scene per frame (baseline) | {per_frame["annotate_ms"]:.2f} ms |')
    print(
        f'| ReportBuilder.add per frame | {per_frame["add_ms"]:.2f} ms '
        f'({per_frame["add_ms"] / per_frame["annotate_ms"]:.2f}x annotate) |'
    )
    print(f'| render + write | {write_ms:.0f} ms |')
    loads = chromium_load_times(report, args.loads)
    if loads:
        bare = loads['bare_load']
        print(
            f'| Chromium: same file without the painter, load event (baseline) | {bare:.0f} ms |'
        )
        print(
            f'| Chromium: report load event | {loads["load"]:.0f} ms '
            f'({loads["load"] / bare:.2f}x) |'
        )
        print(f'| Chromium: timeline drawn, cards observed | {loads["ready"]:.0f} ms |')
        print(f'| Chromium: first card drawn | {loads["first_card"]:.0f} ms |')
        print(
            f'| Chromium: every card drawn by scrolling through | {loads["all_cards_ms"]:.0f} ms '
            f'({loads["all_cards_ms"] / builder.card_count:.0f} ms/card) |'
        )
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
