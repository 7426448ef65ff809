# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Accuracy of box lifting and relations on synthetic RGB-D scenes with known geometry.

Run: ``.venv/bin/python bench/bench_accuracy.py [--scenes N] [--seed S]``. Prints, in one run:

* visible-surface centroid error (median, p90) of ``lift_box`` and of the two baselines
  (centre-pixel depth, box-median depth) on clean and partially occluded targets at 1, 2, 4 m,
  with loose detector-like boxes, and of ``lift_boxes`` given the occluder's box too (what the
  pipeline does with every box of a frame);
* how well the centroid covariance describes those errors;
* relation accuracy (camera view) on multi-object scenes for pairs whose true separation along a
  predicate's axis exceeds 3 combined sigma, lifting each box alone and all boxes together;
* lifting time per box (20 boxes on one 640x480 frame).

Scenes come from bench/synthetic_scenes.py; see its docstring for the sensor model.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
import math
from pathlib import Path
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lifting_baselines import lift_box_median, lift_center_pixel
from bench.synthetic_scenes import (
    RenderedObject,
    SyntheticScene,
    jitter_box,
    multi_object_scene,
    single_object_scene,
)
from spatial_vlm_ros.core.lifting import (
    DEFAULT_LIFTING_CONFIG,
    lift_box,
    lift_boxes,
)
from spatial_vlm_ros.core.relations import (
    DEFAULT_RELATION_CONFIG,
    FULL,
    compute_relations,
)
from spatial_vlm_ros.core.types import (
    ABOVE,
    BEHIND,
    BELOW,
    CONVERSE_PREDICATE,
    IN_FRONT_OF,
    LEFT_OF,
    RIGHT_OF,
    CameraIntrinsics,
    PixelBox,
    SpatialObject,
)

METHODS = {
    'lift_box': lift_box,
    'center_pixel': lift_center_pixel,
    'box_median': lift_box_median,
}
TOGETHER = 'lift_boxes'  # lift_box plus occlusion resolution with the other boxes of the frame
DISTANCES_M = (1.0, 2.0, 4.0)
# Condition name -> fraction of the target's box an occluder covers (None: no occluder).
CONDITIONS = {'clean': None, 'occluded': (0.15, 0.4)}
HEAVY_CONDITION = ('heavily occluded', (0.4, 0.7))  # reported at 2 m only; no target
# Camera-view axes: (optical axis index, predicate when the subject's coordinate is smaller).
AXES = ((0, LEFT_OF, RIGHT_OF), (1, ABOVE, BELOW), (2, IN_FRONT_OF, BEHIND))
CHI2_3DOF_95 = 7.815
MAX_OCCLUDED_IN_RELATIONS = 0.3


@dataclass
class CellResult:
    errors: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in (*METHODS, TOGETHER)}
    )
    failures: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*METHODS, TOGETHER), 0)
    )
    occluded_fractions: list[float] = field(default_factory=list)
    within_2_sigma: list[np.ndarray] = field(default_factory=list)  # per-axis booleans
    sigmas: list[np.ndarray] = field(default_factory=list)  # per-axis sigma of lift_box
    mahalanobis_ok: list[bool] = field(default_factory=list)


def draw_target(
    rng: np.random.Generator, distance: float, coverage: tuple[float, float] | None
) -> tuple[SyntheticScene, RenderedObject, PixelBox, list[PixelBox]] | None:
    """A single-target scene (occluded when ``coverage`` is given) with loose boxes of the target
    and of the other objects; None when the target is not visible."""
    scene = single_object_scene(
        rng, distance, coverage is not None, coverage=coverage or (0.0, 0.0)
    )
    target = scene.objects[0]
    if target.amodal_box is None or target.visible_centroid is None:
        return None
    box = jitter_box(rng, target.amodal_box, scene.intrinsics)
    other_boxes = [
        jitter_box(rng, other.amodal_box, scene.intrinsics)
        for other in scene.objects[1:]
        if other.amodal_box is not None
    ]
    return scene, target, box, other_boxes


def evaluate_lifting(scenes_per_cell: int, rng: np.random.Generator) -> dict:
    results = {}
    cells = [(d, name, coverage) for d in DISTANCES_M for name, coverage in CONDITIONS.items()]
    cells.append((2.0, *HEAVY_CONDITION))
    for distance, condition, coverage in cells:
        cell = CellResult()
        for _ in range(scenes_per_cell):
            drawn = draw_target(rng, distance, coverage)
            if drawn is None:
                continue
            scene, target, box, other_boxes = drawn
            cell.occluded_fractions.append(target.occluded_fraction)
            lifts = {
                name: method(scene.depth_m, scene.intrinsics, box)
                for name, method in METHODS.items()
            }
            lifts[TOGETHER] = lift_boxes(scene.depth_m, scene.intrinsics, [box, *other_boxes])[0]
            for name, lifted in lifts.items():
                if lifted.position is None:
                    cell.failures[name] += 1
                    continue
                error = lifted.position - target.visible_centroid
                cell.errors[name].append(float(np.linalg.norm(error)))
                if name == 'lift_box':
                    sigma = np.sqrt(np.diag(lifted.covariance))
                    cell.within_2_sigma.append(np.abs(error) <= 2.0 * sigma)
                    cell.sigmas.append(sigma)
                    squared = float(error @ np.linalg.solve(lifted.covariance, error))
                    cell.mahalanobis_ok.append(squared <= CHI2_3DOF_95)
        results[(distance, condition)] = cell
    return results


@dataclass
class RelationTally:
    eligible: int = 0
    correct: int = 0
    wrong: int = 0
    eligible_margin: int = 0
    correct_margin: int = 0
    emitted: int = 0
    emitted_correct: int = 0


def evaluate_relations(
    scene_count: int, rng: np.random.Generator, max_occluded: float
) -> dict[str, RelationTally]:
    """Tallies for lifting each box alone (``lift_box``) and all together (``lift_boxes``),
    on the same scenes and boxes."""
    tallies = {'lift_box': RelationTally(), TOGETHER: RelationTally()}
    for _ in range(scene_count):
        scene = multi_object_scene(rng, count=5, max_occluded_fraction=max_occluded)
        visible = [
            rendered
            for rendered in scene.objects
            if rendered.amodal_box is not None and rendered.visible_centroid is not None
        ]
        boxes = [jitter_box(rng, rendered.amodal_box, scene.intrinsics) for rendered in visible]
        alone = [lift_box(scene.depth_m, scene.intrinsics, box) for box in boxes]
        together = lift_boxes(scene.depth_m, scene.intrinsics, boxes)
        for name, lifts in (('lift_box', alone), (TOGETHER, together)):
            _tally_relations(tallies[name], visible, boxes, lifts)
    return tallies


def _tally_relations(tally: RelationTally, visible: list, boxes: list, lifts: list) -> None:
    min_separation = DEFAULT_RELATION_CONFIG.min_separation_m
    objects, truths = [], {}
    for rendered, box, lifted in zip(visible, boxes, lifts, strict=True):
        object_id = f'obj_{rendered.instance_id}'
        objects.append(SpatialObject(object_id, rendered.shape.label, 1.0, box, lifted))
        truths[object_id] = (rendered.visible_centroid, lifted)
    # Predicate correctness is measured on the full set (every pair and converse); the compact
    # set the node publishes by default is a subset of it (docs/RELATIONS.md).
    emitted = {
        (relation.subject, relation.predicate, relation.object)
        for relation in compute_relations(objects, FULL_RELATIONS)
    }
    ids = sorted(truths)
    for index, subject in enumerate(ids):
        for other in ids[index + 1 :]:
            truth_a, lifted_a = truths[subject]
            truth_b, lifted_b = truths[other]
            for axis, smaller, larger in AXES:
                true_separation = float(truth_b[axis] - truth_a[axis])
                expected = smaller if true_separation > 0 else larger
                converse = larger if true_separation > 0 else smaller
                stated = (subject, expected, other) in emitted
                contradicted = (subject, converse, other) in emitted
                tally.emitted += int(stated) + int(contradicted)
                tally.emitted_correct += int(stated)
                if lifted_a.position is None or lifted_b.position is None:
                    continue
                sigma = math.sqrt(
                    lifted_a.covariance[axis, axis] + lifted_b.covariance[axis, axis]
                )
                magnitude = abs(true_separation)
                if magnitude > 3.0 * sigma and magnitude >= min_separation:
                    tally.eligible += 1
                    tally.correct += int(stated)
                    tally.wrong += int(contradicted)
                if magnitude > min_separation + 3.0 * sigma:
                    tally.eligible_margin += 1
                    tally.correct_margin += int(stated)


FULL_RELATIONS = replace(DEFAULT_RELATION_CONFIG, mode=FULL)


def print_real_frames() -> None:
    """Hand-labelled visible orderings on the real frames in data/rgbd, per lifting method."""
    import json

    from PIL import Image

    data = Path(__file__).resolve().parents[1] / 'data' / 'rgbd'
    totals = {name: [0, 0, 0] for name in METHODS}  # reproduced, contradicted, expected
    compact_totals = [0, 0, 0]  # lift_boxes' compact set: stated, contradicted, expected
    for labels_path in sorted(data.glob('*/labels.json')):
        labels = json.loads(labels_path.read_text())
        raw = np.asarray(Image.open(labels_path.parent / labels['depth']))
        depth = raw.astype(np.float32) * np.float32(labels['depth_scale'])
        depth[raw == 0] = np.nan
        intrinsics = CameraIntrinsics(**labels['intrinsics'])
        for name, method in METHODS.items():
            objects = [
                SpatialObject(
                    item['id'],
                    item['label'],
                    1.0,
                    PixelBox(*map(float, item['bbox'])),
                    method(depth, intrinsics, PixelBox(*map(float, item['bbox']))),
                )
                for item in labels['objects']
            ]
            found = {
                (r.subject, r.predicate, r.object)
                for r in compute_relations(objects, FULL_RELATIONS)
            }
            for subject, predicate, other in labels['expected']:
                totals[name][0] += (subject, predicate, other) in found
                totals[name][1] += (subject, CONVERSE_PREDICATE[predicate], other) in found
                totals[name][2] += 1
            if name != 'lift_box':
                continue
            # The compact set states each pair once, in either direction, for near neighbours.
            compact = {(r.subject, r.predicate, r.object) for r in compute_relations(objects)}
            for subject, predicate, other in labels['expected']:
                converse = CONVERSE_PREDICATE[predicate]
                compact_totals[0] += bool(
                    {(subject, predicate, other), (other, converse, subject)} & compact
                )
                compact_totals[1] += bool(
                    {(subject, converse, other), (other, predicate, subject)} & compact
                )
                compact_totals[2] += 1
    print('Real frames (data/rgbd, 4 Kinect frames): hand-labelled visible orderings')
    print('| method | reproduced | contradicted (converse stated) |')
    print('|---|---|---|')
    for name, (reproduced, contradicted, expected) in totals.items():
        print(f'| {name} | {reproduced}/{expected} | {contradicted}/{expected} |')
    stated, contradicted, expected = compact_totals
    print(
        f'compact set (the default, lift_box): {stated}/{expected} stated in either direction, '
        f'{contradicted}/{expected} contradicted; the rest left out (not among the '
        f'{DEFAULT_RELATION_CONFIG.per_object} nearest neighbours)'
    )


def time_lifting(rng: np.random.Generator, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per box, lifting 20 boxes on one 640x480 frame."""
    scene = multi_object_scene(rng, count=5)
    boxes = [obj.amodal_box for obj in scene.objects if obj.amodal_box is not None]
    for _ in range(20 - len(boxes)):
        x, y = rng.uniform(0, 560), rng.uniform(0, 400)
        boxes.append(PixelBox(x, y, x + rng.uniform(20, 80), y + rng.uniform(20, 80)))
    timings = {}
    for name, method in METHODS.items():
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            for box in boxes[:20]:
                method(scene.depth_m, scene.intrinsics, box)
            best = min(best, time.perf_counter() - start)
        timings[name] = 1e3 * best / 20
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        lift_boxes(scene.depth_m, scene.intrinsics, boxes[:20])
        best = min(best, time.perf_counter() - start)
    timings[TOGETHER] = 1e3 * best / 20
    return timings


ABLATIONS = {
    'final (defaults)': {},
    'no figure-ground contrast (context_ring=0)': {'context_ring': 0.0},
    'no border taper (border_taper=0)': {'border_taper': 0.0},
    'narrow MAD band (band_mads=3)': {'band_mads': 3.0},
    'no centre weighting (center_sigma=1e3)': {'center_sigma': 1e3},
    'fewer samples per box (max_samples=2048)': {'max_samples': 2048},
}


def run_ablation(scenes_per_cell: int, rng: np.random.Generator, distance_m: float = 2.0) -> None:
    """Centroid error of lift_box with one design choice undone at a time, same scenes."""
    cells = [
        (distance_m, 'clean', None),
        (distance_m, 'occluded', (0.15, 0.4)),
        (distance_m, 'heavily occluded', (0.4, 0.7)),
    ]
    scenes = []
    together_scenes = []  # (condition, [target box, occluder boxes]) for lift_boxes variants
    for distance, condition, coverage in cells:
        for _ in range(scenes_per_cell):
            drawn = draw_target(rng, distance, coverage)
            if drawn is None:
                continue
            scene, target, box, others = drawn
            scenes.append(
                (condition, scene.depth_m, scene.intrinsics, box, target.visible_centroid)
            )
            together_scenes.append((condition, [box, *others]))
    print(
        f'Ablation at {distance_m:g} m ({scenes_per_cell} scenes per column): centroid error cm, '
        'median / p90'
    )
    print('| variant | ' + ' | '.join(condition for _, condition, _ in cells) + ' |')
    print('|---|' + '---|' * len(cells))
    for name, change in ABLATIONS.items():
        config = replace(DEFAULT_LIFTING_CONFIG, **change)
        errors: dict[str, list[float]] = {condition: [] for _, condition, _ in cells}
        for condition, depth, intrinsics, box, truth in scenes:
            lifted = lift_box(depth, intrinsics, box, config)
            error = (
                math.inf if lifted.position is None else np.linalg.norm(lifted.position - truth)
            )
            errors[condition].append(float(error))
        print_ablation_row(name, errors)
    print()
    print('lift_boxes (the occluder boxes given too), same scenes and boxes:')
    print('| variant | ' + ' | '.join(condition for _, condition, _ in cells) + ' |')
    print('|---|' + '---|' * len(cells))
    for name, change, resolve in TOGETHER_ABLATIONS:
        config = replace(DEFAULT_LIFTING_CONFIG, **change)
        errors = {condition: [] for _, condition, _ in cells}
        for (condition, depth, intrinsics, _, truth), (_, boxes) in zip(
            scenes, together_scenes, strict=True
        ):
            lifted = lift_boxes(depth, intrinsics, boxes, config, resolve_occlusions=resolve)[0]
            error = (
                math.inf if lifted.position is None else np.linalg.norm(lifted.position - truth)
            )
            errors[condition].append(float(error))
        print_ablation_row(name, errors)


TOGETHER_ABLATIONS = (
    ('final (defaults)', {}, True),
    (
        'exclude only the claimed depth band (occluder_depth_factor=0)',
        {'occluder_depth_factor': 0.0},
        True,
    ),
    ('no occlusion resolution (= lift_box)', {}, False),
)


def print_ablation_row(name: str, errors: dict[str, list[float]]) -> None:
    print(
        f'| {name} | '
        + ' | '.join(
            f'{percentile_cm(values, 50).strip()} / {percentile_cm(values, 90).strip()}'
            for values in errors.values()
        )
        + ' |'
    )


def percentile_cm(values: list[float], q: float) -> str:
    return f'{100.0 * float(np.percentile(values, q)):6.2f}' if values else '   n/a'


def machine_line() -> str:
    model = 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout.strip()
    except OSError:
        commit = 'unknown'
    import os

    return (
        f'machine: {os.cpu_count()} CPUs, {model}; python {platform.python_version()}, '
        f'numpy {np.__version__}; commit {commit or "unknown"}'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scenes', type=int, default=60, help='scenes per (distance, condition)')
    parser.add_argument('--relation-scenes', type=int, default=60)
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument(
        '--ablation', action='store_true', help='only compare lift_box variants (about 20 s)'
    )
    parser.add_argument(
        '--ablation-distance', type=float, default=2.0, help='target distance of --ablation, m'
    )
    args = parser.parse_args()
    if args.ablation:
        print(machine_line())
        run_ablation(args.scenes, np.random.default_rng(args.seed), args.ablation_distance)
        return 0
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    print(machine_line())
    print(
        f'command: .venv/bin/python bench/bench_accuracy.py --scenes {args.scenes} '
        f'--relation-scenes {args.relation_scenes} --seed {args.seed}'
    )
    print(f'config: {DEFAULT_LIFTING_CONFIG}')
    print()
    results = evaluate_lifting(args.scenes, rng)
    print('Visible-surface centroid error, cm (median / p90); failures = no position returned')
    header = (
        '| distance | boxes | occluded (median) | lift_box med | p90 | center_pixel med | p90 '
        '| box_median med | p90 | lift_boxes med | p90 | best baseline / lift_box (median) '
        '| failures (lift/center/median/lift_boxes) |'
    )
    print(header)
    print('|' + '---|' * (header.count('|') - 1))
    for (distance, condition), cell in results.items():
        medians = {name: float(np.median(errors)) for name, errors in cell.errors.items()}
        best_baseline = min(medians['center_pixel'], medians['box_median'])
        print(
            f'| {distance:.0f} m {condition} | {len(cell.occluded_fractions)} '
            f'| {100 * float(np.median(cell.occluded_fractions)):.0f} % '
            + ''.join(
                f'| {percentile_cm(errors, 50)} | {percentile_cm(errors, 90)} '
                for errors in cell.errors.values()
            )
            + f'| {best_baseline / medians["lift_box"]:.1f}x '
            f'| {cell.failures["lift_box"]}/{cell.failures["center_pixel"]}'
            f'/{cell.failures["box_median"]}/{cell.failures[TOGETHER]} |'
        )
    print()
    print(
        'lift_box covariance calibration (ideal: 95 % per axis within 2 sigma; 95 % Mahalanobis)'
    )
    print(
        '| distance | x within 2 sigma | y | z | Mahalanobis^2 <= 7.81 | median sigma x/y/z (cm) |'
    )
    print('|---|---|---|---|---|---|')
    for (distance, condition), cell in results.items():
        inside = np.mean(np.array(cell.within_2_sigma), axis=0) * 100
        sigma_cm = 100 * np.median(np.array(cell.sigmas), axis=0)
        print(
            f'| {distance:.0f} m {condition} | {inside[0]:.0f} % | {inside[1]:.0f} % '
            f'| {inside[2]:.0f} % | {100 * np.mean(cell.mahalanobis_ok):.0f} % '
            f'| {sigma_cm[0]:.1f} / {sigma_cm[1]:.1f} / {sigma_cm[2]:.1f} |'
        )
    print()
    print(
        f'Relations (camera view), {args.relation_scenes} scenes x 5 objects at 1-4 m, '
        'axis predicates left/right, above/below, in_front_of/behind, one count per '
        '(unordered pair, axis):'
    )
    print(
        '| layouts | lifting | pairs | count | stated correctly | converse stated (wrong) '
        '| omitted | precision of all emitted |'
    )
    print('|---|---|---|---|---|---|---|---|')
    for name, max_occluded in (
        (
            f'every object <= {100 * MAX_OCCLUDED_IN_RELATIONS:.0f} % hidden',
            MAX_OCCLUDED_IN_RELATIONS,
        ),
        ('any occlusion', 1.0),
    ):
        tallies = evaluate_relations(args.relation_scenes, rng, max_occluded)
        for lifter, tally in tallies.items():
            eligible = max(tally.eligible, 1)
            omitted = tally.eligible - tally.correct - tally.wrong
            precision = 100 * tally.emitted_correct / max(tally.emitted, 1)
            print(
                f'| {name} | {lifter} | true separation > 3 sigma and >= 5 cm '
                f'| {tally.eligible} | {100 * tally.correct / eligible:.2f} % '
                f'| {100 * tally.wrong / eligible:.2f} % | {100 * omitted / eligible:.2f} % '
                f'| {precision:.2f} % of {tally.emitted} |'
            )
            print(
                f'| {name} | {lifter} | true separation > 5 cm + 3 sigma '
                f'| {tally.eligible_margin} '
                f'| {100 * tally.correct_margin / max(tally.eligible_margin, 1):.2f} % | | | |'
            )
    print()
    print_real_frames()
    print()
    timings = time_lifting(rng)
    print('Lifting time, ms per box (20 boxes on one 640x480 frame, best of 5):')
    print(' | '.join(f'{name} {value:.3f} ms' for name, value in timings.items()))
    print(f'lift_box / box_median time ratio: {timings["lift_box"] / timings["box_median"]:.1f}x')
    print(f'\ntotal bench time {time.perf_counter() - started:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
