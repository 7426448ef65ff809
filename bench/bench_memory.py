# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Object memory on a real RGB-D sequence: 7-Scenes RedKitchen, 30 hand-labelled Kinect frames.

Run: ``.venv/bin/python bench/bench_memory.py [--sequence DIR]`` (default: the shared data's
``sequences/7scenes_redkitchen``; the frames are never copied into the repository). Without the
sequence it prints why and exits 0, so ``make bench`` still runs elsewhere.

What it feeds the memory, frame by frame (only the labelled frames: the others are unlabelled,
not empty, and would count as misses):

* the hand boxes with **class-only labels** (``chair`` for both chairs, ``mug`` for both mugs):
  identity must come from the memory, not from the label;
* each box lifted by the project's own ``core.lifting.lift_boxes`` on the real depth image;
* ``T_world_from_camera`` looked up at the image stamp in a ``core.tf_buffer.TransformBuffer``
  filled with the sequence's poses (every kept frame, like a bag's ``/tf``);
* the depth image for negative evidence.

The scoring part (:class:`Sighting`, :func:`score_sightings`, :func:`print_report`) only needs
``(frame, true object, assigned id, world position)`` per labelled box, so the phase-2 replay
(``spatial-vlm replay --target-frame world`` on a bag of this sequence) scores its scenes.jsonl
with the same functions.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
import json
import math
from pathlib import Path
import sys
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_accuracy import machine_line  # noqa: E402
from spatial_vlm_ros.core.lifting import lift_boxes  # noqa: E402
from spatial_vlm_ros.core.memory import (  # noqa: E402
    CameraView,
    MemoryConfig,
    ObjectMemory,
    RememberedObject,
)
from spatial_vlm_ros.core.tf_buffer import TransformBuffer  # noqa: E402
from spatial_vlm_ros.core.transforms import apply_transform  # noqa: E402
from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, SpatialObject  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SEQUENCE_NAME = Path('data') / 'sequences' / '7scenes_redkitchen'
DEFAULT_SEQUENCE_CANDIDATES = (
    REPO_ROOT.parent / 'shared' / SEQUENCE_NAME,  # a clone next to shared/ (CI, /work/main)
    Path('/work/shared') / SEQUENCE_NAME,
)
WORLD_FRAME = 'world'
CAMERA_FRAME = 'kinect_optical'
FRAME_PERIOD_NS = 10**9 // 30  # nominal 30 Hz: the source has no recorded stamps
# Stamps start at 2026-01-01 like the sample bag's: stamp 0 means "latest" to TF (tf2's Time(0)).
BASE_STAMP_NS = 1_767_225_600 * 10**9
# Hand-label names carry the identity; the memory only gets the class.
CLASS_OF = {
    'mug_white': 'mug',
    'mug_small': 'mug',
    'chair_far': 'chair',
    'chair_left': 'chair',
    'papers_stack': 'papers',
    'magazine_purple': 'magazine',
    'wooden_monitor_box': 'monitor',
    'tv_screen': 'tv',
}


# ----------------------------------------------------------------------------- scoring (reusable)


@dataclass(frozen=True)
class Sighting:
    """One labelled box of one frame and what the system made of it."""

    frame: int  # source frame index (time order)
    truth: str  # hand-label identity, e.g. chair_far
    assigned_id: str  # the id the system published for it
    world_position: tuple[float, float, float] | None  # lifted position in the world frame


@dataclass
class ObjectScore:
    truth: str
    sightings: int = 0
    majority_id: str = ''
    majority_count: int = 0
    switches: int = 0
    returns: int = 0  # times it came back after at least one labelled frame without it
    returns_same_id: int = 0  # ... with the id it had before leaving
    spread_m: list[float] = field(default_factory=list)  # distances to the median position
    median_position: tuple[float, float, float] | None = None  # of its lifted world positions


@dataclass
class MemoryScore:
    objects: dict[str, ObjectScore]
    sightings: int
    majority_sightings: int
    same_frame_collisions: int  # two boxes of one frame with one id
    shared_ids: dict[str, list[str]]  # id -> the true objects it was given to (more than one)


def score_sightings(sightings: Sequence[Sighting], labelled_frames: Sequence[int]) -> MemoryScore:
    """Id purity, switches, collisions and re-identification of a sequence of sightings.

    ``labelled_frames`` lists every labelled frame, so that "left the view" means: absent from
    at least one labelled frame between two sightings.
    """
    frames = sorted(labelled_frames)
    by_truth: dict[str, list[Sighting]] = defaultdict(list)
    for sighting in sorted(sightings, key=lambda s: s.frame):
        by_truth[sighting.truth].append(sighting)
    objects = {}
    for truth, items in sorted(by_truth.items()):
        score = ObjectScore(truth, sightings=len(items))
        counts = Counter(item.assigned_id for item in items)
        score.majority_id, score.majority_count = counts.most_common(1)[0]
        for previous, current in zip(items, items[1:], strict=False):
            score.switches += int(previous.assigned_id != current.assigned_id)
            skipped = [f for f in frames if previous.frame < f < current.frame]
            if skipped:
                score.returns += 1
                score.returns_same_id += int(previous.assigned_id == current.assigned_id)
        positions = np.array([item.world_position for item in items if item.world_position])
        if len(positions):
            median = np.median(positions, axis=0)
            score.median_position = tuple(median.tolist())
            score.spread_m = np.linalg.norm(positions - median, axis=1).tolist()
        objects[truth] = score
    per_frame: dict[int, Counter[str]] = defaultdict(Counter)
    owners: dict[str, set[str]] = defaultdict(set)
    for sighting in sightings:
        per_frame[sighting.frame][sighting.assigned_id] += 1
        owners[sighting.assigned_id].add(sighting.truth)
    return MemoryScore(
        objects=objects,
        sightings=len(sightings),
        majority_sightings=sum(score.majority_count for score in objects.values()),
        same_frame_collisions=sum(
            count - 1 for counter in per_frame.values() for count in counter.values() if count > 1
        ),
        shared_ids={key: sorted(value) for key, value in owners.items() if len(value) > 1},
    )


def print_report(
    score: MemoryScore, remembered: Sequence[RememberedObject] = (), title: str = ''
) -> None:
    """Markdown tables of a :class:`MemoryScore` (and of the final memory, when given)."""
    if title:
        print(title)
    print(
        '| object | sightings | majority id | purity | id switches | returns with same id '
        '| spread median / max (m) | fused position vs median (m) |'
    )
    print('|---|---|---|---|---|---|---|---|')
    fused = {item.id: item for item in remembered}
    for row in score.objects.values():
        spread = row.spread_m
        spread_text = f'{np.median(spread):.2f} / {max(spread):.2f}' if spread else 'no depth'
        memory_item = fused.get(row.majority_id)
        offset = 'not remembered'
        if memory_item is not None and row.median_position is not None:
            offset = f'{np.linalg.norm(memory_item.position - row.median_position):.2f}'
        print(
            f'| {row.truth} | {row.sightings} | {row.majority_id} '
            f'| {100 * row.majority_count / row.sightings:.0f} % | {row.switches} '
            f'| {row.returns_same_id}/{row.returns} | {spread_text} | {offset} |'
        )
    returns = sum(s.returns for s in score.objects.values())
    returns_same = sum(s.returns_same_id for s in score.objects.values())
    print()
    print(
        f"Sightings with their object's majority id: {score.majority_sightings}/{score.sightings}"
        f' = {100 * score.majority_sightings / max(score.sightings, 1):.1f} %; id switches: '
        f'{sum(s.switches for s in score.objects.values())}; same-frame id collisions: '
        f'{score.same_frame_collisions}; ids given to more than one object: '
        f'{len(score.shared_ids)} {score.shared_ids or ""}; returns after leaving the view with '
        f'the same id: {returns_same}/{returns}'
    )


# ----------------------------------------------------------------------------- the sequence


@dataclass(frozen=True)
class LabelledFrame:
    index: int
    stamp_ns: int
    depth_path: Path
    boxes: tuple[tuple[str, PixelBox, bool], ...]  # (true identity, box, partial)


def find_sequence(path: str | None) -> Path | None:
    candidates = (Path(path),) if path else DEFAULT_SEQUENCE_CANDIDATES
    return next(
        (candidate for candidate in candidates if (candidate / 'labels.json').is_file()), None
    )


def load_sequence(
    root: Path,
) -> tuple[list[LabelledFrame], TransformBuffer, CameraIntrinsics]:
    """Labelled frames, a TF buffer with every pose (world -> camera) and the intrinsics."""
    intrinsics_data = json.loads((root / 'intrinsics.json').read_text())
    intrinsics = CameraIntrinsics(
        **{key: intrinsics_data[key] for key in ('fx', 'fy', 'cx', 'cy', 'width', 'height')}
    )
    buffer = TransformBuffer(cache_duration_ns=3600 * 10**9)
    for line in (root / 'poses.txt').read_text().splitlines():
        if not line.strip() or line.startswith('#'):
            continue
        index, *values = line.split()
        buffer.set_transform(
            WORLD_FRAME,
            CAMERA_FRAME,
            BASE_STAMP_NS + int(index) * FRAME_PERIOD_NS,
            [float(v) for v in values[:3]],
            [float(v) for v in values[3:7]],
        )
    labels = json.loads((root / 'labels.json').read_text())
    frames = []
    for color_name, items in labels.items():
        index = int(color_name.split('frame-')[1].split('.')[0])
        frames.append(
            LabelledFrame(
                index=index,
                stamp_ns=BASE_STAMP_NS + index * FRAME_PERIOD_NS,
                depth_path=root / 'depth' / f'frame-{index:06d}.depth.png',
                boxes=tuple(
                    (item['object'], PixelBox(*map(float, item['box'])), bool(item.get('partial')))
                    for item in items
                ),
            )
        )
    return sorted(frames, key=lambda frame: frame.index), buffer, intrinsics


def read_depth_m(path: Path) -> np.ndarray:
    from PIL import Image

    raw = np.asarray(Image.open(path))
    depth = raw.astype(np.float32) / np.float32(1000.0)
    depth[raw == 0] = np.nan
    return depth


@dataclass
class RunResult:
    sightings: list[Sighting]
    remembered: list[RememberedObject]
    lift_ms: list[float]
    memory_ms: list[float]
    missed: list[tuple[int, str]]  # (frame, id) of every miss
    labelled: dict[int, set[str]]  # frame -> true identities labelled there


@dataclass(frozen=True)
class DetectorNoise:
    """Detector-like degradations of the hand boxes: each edge moves by N(0, jitter_px) and each
    box is dropped (not reported at all) with probability drop_probability."""

    jitter_px: float = 0.0
    drop_probability: float = 0.0
    seed: int = 0

    def apply(
        self, boxes: Sequence[tuple[str, PixelBox, bool]], rng: np.random.Generator, size: tuple
    ) -> list[tuple[str, PixelBox, bool]]:
        kept = []
        width, height = size
        for truth, box, partial in boxes:
            if rng.random() < self.drop_probability:
                continue
            x0, y0, x1, y1 = np.array(box.as_list()) + rng.normal(0.0, self.jitter_px, 4)
            x0, x1 = sorted((float(np.clip(x0, 0, width)), float(np.clip(x1, 0, width))))
            y0, y1 = sorted((float(np.clip(y0, 0, height)), float(np.clip(y1, 0, height))))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                kept.append((truth, PixelBox(x0, y0, x1, y1), partial))
        return kept


@dataclass
class Sequence7Scenes:
    """The labelled frames with their depth images, loaded once."""

    frames: list[LabelledFrame]
    depths: list[np.ndarray]
    buffer: TransformBuffer
    intrinsics: CameraIntrinsics

    @classmethod
    def load(cls, root: Path) -> Sequence7Scenes:
        frames, buffer, intrinsics = load_sequence(root)
        return cls(frames, [read_depth_m(f.depth_path) for f in frames], buffer, intrinsics)


def run_memory(
    data: Sequence7Scenes, memory: ObjectMemory, noise: DetectorNoise | None = None
) -> RunResult:
    """Feed every labelled frame to ``memory``; time lifting and the memory update apart."""
    rng = np.random.default_rng(noise.seed if noise else 0)
    intrinsics = data.intrinsics
    result = RunResult([], [], [], [], [], {})
    for frame, depth in zip(data.frames, data.depths, strict=True):
        boxes = list(frame.boxes)
        if noise is not None:
            boxes = noise.apply(boxes, rng, (intrinsics.width, intrinsics.height))
        started = time.perf_counter()
        lifts = lift_boxes(depth, intrinsics, [box for _, box, _ in boxes])
        lifted_at = time.perf_counter()
        world_from_camera = data.buffer.lookup_matrix(WORLD_FRAME, CAMERA_FRAME, frame.stamp_ns)
        observations = [
            SpatialObject('', CLASS_OF[truth], 1.0, box, lifted)
            for (truth, box, _), lifted in zip(boxes, lifts, strict=True)
        ]
        view = CameraView(world_from_camera, intrinsics, depth, intrinsics)
        memory_started = time.perf_counter()
        update = memory.update(frame.stamp_ns, observations, view)
        finished = time.perf_counter()
        result.lift_ms.append(1e3 * (lifted_at - started))
        result.memory_ms.append(1e3 * (finished - memory_started))
        result.labelled[frame.index] = {truth for truth, _, _ in frame.boxes}
        result.missed.extend((frame.index, key) for key in update.missed)
        for (truth, _, _), lifted, key in zip(boxes, lifts, update.ids, strict=True):
            world = None
            if lifted.position is not None:
                world = tuple(apply_transform(world_from_camera, lifted.position).tolist())
            result.sightings.append(Sighting(frame.index, truth, key, world))
    result.remembered = memory.objects()
    return result


def run_ordinal_baseline(
    data: Sequence7Scenes, noise: DetectorNoise | None = None
) -> list[Sighting]:
    """Ids as the pipeline gives them without a memory (pipeline.lift_detections: per-frame
    ``<label>_<n>``, n in left-to-right order), on the same (perturbed) boxes."""
    from spatial_vlm_ros.core.types import Detection, RgbdFrame
    from spatial_vlm_ros.pipeline import PipelineConfig, lift_detections

    rng = np.random.default_rng(noise.seed if noise else 0)
    sightings = []
    intrinsics = data.intrinsics
    blank = np.zeros((intrinsics.height, intrinsics.width, 3), np.uint8)
    for frame, depth in zip(data.frames, data.depths, strict=True):
        boxes = list(frame.boxes)
        if noise is not None:
            boxes = noise.apply(boxes, rng, (intrinsics.width, intrinsics.height))
        rgbd = RgbdFrame(frame.stamp_ns, CAMERA_FRAME, blank, depth, intrinsics, intrinsics)
        detections = [Detection(CLASS_OF[truth], box) for truth, box, _ in boxes]
        objects = lift_detections(rgbd, detections, PipelineConfig())
        for truth, box, _ in boxes:
            (match,) = [obj for obj in objects if obj.box == box and obj.label == CLASS_OF[truth]]
            sightings.append(Sighting(frame.index, truth, match.id, None))
    return sightings


def false_misses(result: RunResult, score: MemoryScore) -> list[tuple[int, str]]:
    """Misses of objects that were labelled (really in view) in that frame."""
    owner = {s.majority_id: s.truth for s in score.objects.values()}
    return [(f, key) for f, key in result.missed if owner.get(key) in result.labelled[f]]


def summary_row(name: str, runs: Sequence[tuple[MemoryScore, RunResult | None]]) -> str:
    """One table row over one or more runs (seeds): purity mean (min), totals of the rest."""
    purities = [100 * score.majority_sightings / max(score.sightings, 1) for score, _ in runs]
    purity = f'{np.mean(purities):.1f} %'
    if len(runs) > 1:
        purity += f' (min {min(purities):.1f} %)'
    else:
        purity += f' ({runs[0][0].majority_sightings}/{runs[0][0].sightings})'
    switches = sum(s.switches for score, _ in runs for s in score.objects.values())
    same_frame = sum(score.same_frame_collisions for score, _ in runs)
    shared = sum(len(score.shared_ids) for score, _ in runs)
    returns = sum(s.returns for score, _ in runs for s in score.objects.values())
    returns_same = sum(s.returns_same_id for score, _ in runs for s in score.objects.values())
    memory_runs = [(score, result) for score, result in runs if result is not None]
    misses = lost = remembered = '-'
    if memory_runs:
        misses = str(sum(len(result.missed) for _, result in memory_runs))
        lost = str(sum(objects_lost(score, result) for score, result in memory_runs))
        counts = sorted({len(result.remembered) for _, result in memory_runs})
        remembered = '-'.join(str(count) for count in (counts[0], counts[-1]) if count) or '0'
        if counts[0] == counts[-1]:
            remembered = str(counts[0])
    return (
        f'| {name} | {purity} | {switches} | {same_frame} / {shared} | {returns_same}/{returns} '
        f'| {misses} | {lost} | {remembered} |'
    )


def objects_lost(score: MemoryScore, result: RunResult) -> int:
    """True objects whose majority id is no longer remembered at the end."""
    kept = {item.id for item in result.remembered}
    return sum(row.majority_id not in kept for row in score.objects.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sequence', default=None, help='sequence directory (labels.json, ...)')
    parser.add_argument('--seeds', type=int, default=5, help='seeds of each detector-noise row')
    args = parser.parse_args()
    root = find_sequence(args.sequence)
    if root is None:
        wanted = args.sequence or ' or '.join(str(p) for p in DEFAULT_SEQUENCE_CANDIDATES)
        print(f'bench_memory: no sequence at {wanted}; skipped')
        return 0
    print(machine_line())
    print(
        f'command: .venv/bin/python bench/bench_memory.py --sequence {root} --seeds {args.seeds}'
    )
    data = Sequence7Scenes.load(root)
    labelled_frames = [frame.index for frame in data.frames]
    memory = ObjectMemory(WORLD_FRAME)
    print(f'config: {memory.config}')
    result = run_memory(data, memory)
    score = score_sightings(result.sightings, labelled_frames)
    print()
    title = (
        f'{root.name}: {len(data.frames)} labelled frames, hand boxes with class-only labels, '
        'default MemoryConfig'
    )
    print_report(score, result.remembered, title)
    wrong = false_misses(result, score)
    print(
        f'Misses (should have been seen and was not): {len(result.missed)}, of which '
        f'{len(wrong)} hit an object labelled in that frame {wrong or ""}'
    )
    ratios = np.array(result.memory_ms) / np.maximum(np.array(result.lift_ms), 1e-9)
    print(
        f'Memory update per frame: median {np.median(result.memory_ms):.2f} ms, lifting the same '
        f'frame {np.median(result.lift_ms):.2f} ms; ratio memory/lifting median '
        f'{np.median(ratios):.3f}, p90 {np.percentile(ratios, 90):.3f}, max {ratios.max():.3f}'
    )
    print()
    print('Final memory:')
    print('| id | state | sightings | misses | existence | position (m) | size (m) |')
    print('|---|---|---|---|---|---|---|')
    for item in result.remembered:
        print(
            f'| {item.id} | {item.state.name.lower()} | {item.sightings} | {item.misses} '
            f'| {item.existence:.2f} | {np.round(item.position, 2).tolist()} '
            f'| {np.round(item.size, 2).tolist()} |'
        )
    print()
    print(f'Variants (same frames; detector-noise rows: {args.seeds} seeds together)')
    print(
        '| variant | sightings with their majority id | id switches | id collisions (same '
        'frame / ids given to two objects) | returns with the same id | misses counted '
        '| objects lost | objects remembered |'
    )
    print('|---|---|---|---|---|---|---|---|')
    print(summary_row('memory, default', [(score, result)]))
    ordinal = score_sightings(run_ordinal_baseline(data), labelled_frames)
    print(summary_row('no memory: per-frame left-to-right ordinals (v0.1)', [(ordinal, None)]))
    no_shift = run_memory(data, ObjectMemory(WORLD_FRAME, MemoryConfig(shift_fraction=0.0)))
    print(
        summary_row(
            'memory without the visible-surface shift term (shift_fraction 0)',
            [(score_sightings(no_shift.sightings, labelled_frames), no_shift)],
        )
    )
    for jitter, drop in ((8.0, 0.0), (0.0, 0.2), (8.0, 0.2)):
        memory_runs, baseline_runs = [], []
        for seed in range(args.seeds):
            noise = DetectorNoise(jitter, drop, seed)
            variant = run_memory(data, ObjectMemory(WORLD_FRAME), noise)
            memory_runs.append((score_sightings(variant.sightings, labelled_frames), variant))
            baseline = run_ordinal_baseline(data, noise)
            baseline_runs.append((score_sightings(baseline, labelled_frames), None))
        condition = f'boxes jittered {jitter:.0f} px, {100 * drop:.0f} % of boxes dropped'
        print(summary_row(f'memory, {condition}', memory_runs))
        print(summary_row(f'no memory, {condition}', baseline_runs))
    if not math.isfinite(float(np.median(ratios))):
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
