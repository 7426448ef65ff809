# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Node CPU per processed frame without the model, stage by stage, against same-run baselines.

Everything the node does for one RGB-D frame besides waiting for the model, on real rclpy message
objects (built with the sensor_msgs classes, then serialized and deserialized so that ``data`` is
the ``array.array('B')`` a subscription callback gets):

    pair (StampPairer) -> decode RGB + depth + CameraInfo -> parse the model's answer (20 boxes)
    -> lift 20 objects -> relations -> SpatialScene msg + MarkerArray msg + scene JSON
    (+ the annotated image, built only while ~/annotated_image has subscribers)

Each stage is timed in CPU time (``time.process_time_ns``, so time other processes take from
this one does not count), round-robin over the stages so that load changes hit them alike, and
reported as the median of the repeats, in the process state the node runs in
(spatial_vlm_ros.runtime.tune_memory_allocator). Two baselines measured in the same run:

* memcpy: one ``np.copyto`` of the received RGB and depth bytes, the least any node that looks
  at the pixels must spend;
* read once: one pass over each box's depth pixels (``np.count_nonzero`` of the valid ones), what
  any depth-based estimate of the 20 boxes must touch; lifting is compared with it.

Targets (issue 15): total <= 5 ms at 640x480, lifting (``lift_boxes``) <= 3x read-once. The
total counts ``lift_detections`` (lift_boxes plus the boxes' conversion to depth pixels and the
object ids), what the node runs. The compiled lifting kernels are loaded (``warm_up``) before
timing, as the node does when it configures.

    .venv/bin/python bench/bench_overhead.py [--repeats 30] [--profile]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import cProfile
from dataclasses import dataclass
import io
import json
import math
from pathlib import Path
import pstats
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))  # the box-by-box lifter kept as the test oracle

from builtin_interfaces.msg import Time  # noqa: E402
import lifting_reference  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from bench.machine_info import machine  # noqa: E402
from bench.synthetic_scenes import multi_object_scene  # noqa: E402
from spatial_vlm_ros.core.annotate import annotate_scene  # noqa: E402
from spatial_vlm_ros.core.camera import (  # noqa: E402
    make_rgbd_frame_with_warnings,
    rgb_box_to_depth,
)
from spatial_vlm_ros.core.lifting import _pixel_range, lift_boxes, warm_up  # noqa: E402
from spatial_vlm_ros.core.pairing import PairingConfig, StampPairer  # noqa: E402
from spatial_vlm_ros.core.relations import compute_relations  # noqa: E402
from spatial_vlm_ros.core.scene_json import scene_to_json  # noqa: E402
from spatial_vlm_ros.core.types import CameraIntrinsics, Scene  # noqa: E402
from spatial_vlm_ros.engines.parsing import GroundingResult, parse_grounding  # noqa: E402
from spatial_vlm_ros.pipeline import PipelineSettings, lift_detections  # noqa: E402
from spatial_vlm_ros.runtime import tune_memory_allocator  # noqa: E402

try:  # the ROS message stages need this package's generated interfaces to match ros/
    from spatial_vlm_ros.ros.conversions import rgb_to_image_msg, scene_to_msg
    from spatial_vlm_ros.ros.markers import scene_markers

    MESSAGES_UNAVAILABLE = ''
except (ImportError, AttributeError) as error:  # printed as NOT MEASURED, never hidden
    MESSAGES_UNAVAILABLE = f'{type(error).__name__}: {error}'

TARGET_TOTAL_MS = 5.0
TARGET_LIFT_RATIO = 3.0
OBJECTS = 20
FRAME_ID = 'camera_color_optical_frame'
RESOLUTIONS = {
    '640x480': CameraIntrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480),
    '1280x720': CameraIntrinsics(fx=910.0, fy=910.0, cx=639.5, cy=359.5, width=1280, height=720),
}
MEMCPY = 'memcpy'
READ_ONCE = 'read once'
PAIR = 'pair (3 msgs)'
DECODE = 'decode RGB + depth + CameraInfo'
PARSE = 'parse answer (20 boxes)'
LIFT = 'lift 20 objects (lift_detections)'
LIFT_BOXES = '  of which lift_boxes (lifting target)'
RELATIONS = 'relations'
SCENE_MSG = 'SpatialScene msg'
MARKERS = 'MarkerArray msg'
JSON_STAGE = 'scene JSON'
ANNOTATED = 'annotated image msg'
DESERIALIZE = 'rclpy deserialize (3 msgs)'
LIFT_BEFORE = 'lift box by box (0.1 lifter, test/)'
RELATIONS_COUNT = 'relations count'
COUNTED = (DECODE, PARSE, LIFT, RELATIONS, SCENE_MSG, MARKERS, JSON_STAGE)
# The node's defaults (ros/parameters.py) turned into a pipeline configuration.
NODE_DEFAULTS = {'engine': 'recorded', 'recording': 'unused', 'model': ''}


@dataclass
class FrameInputs:
    """One synthetic frame as the node receives it, plus the model answer for it."""

    name: str
    rgb_wire: bytes  # serialized sensor_msgs/Image, as it travels over DDS
    depth_wire: bytes
    info_wire: bytes
    rgb: Any  # deserialized messages (data is array.array('B'), as in a callback)
    depth: Any
    info: Any
    model_text: str
    bytes_per_frame: int


def _stamp(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)


def make_inputs(name: str, intrinsics: CameraIntrinsics, seed: int = 7) -> FrameInputs:
    rng = np.random.default_rng(seed)
    scene = multi_object_scene(rng, OBJECTS, (1.0, 4.5), intrinsics, max_occluded_fraction=0.9)
    width, height = intrinsics.width, intrinsics.height
    stamp = _stamp(1_700_000_000_000_000_000)
    rgb = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    rgb.header.stamp, rgb.header.frame_id = stamp, FRAME_ID
    rgb.data = scene.rgb.tobytes()
    depth_mm = np.nan_to_num(scene.depth_m * 1000.0, nan=0.0).round().astype(np.uint16)
    depth = Image(height=height, width=width, encoding='16UC1', step=width * 2)
    depth.header.stamp, depth.header.frame_id = stamp, FRAME_ID
    depth.data = depth_mm.tobytes()
    info = CameraInfo(height=height, width=width, distortion_model='plumb_bob')
    info.header.stamp, info.header.frame_id = stamp, FRAME_ID
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    boxes = [obj for obj in scene.objects if obj.amodal_box is not None]
    # Fewer objects fit than asked for at high occlusion: repeat boxes with other labels so the
    # answer always holds OBJECTS boxes (the lifter's cost depends on box count and size).
    items = []
    for index in range(OBJECTS):
        obj = boxes[index % len(boxes)]
        box = obj.amodal_box
        relative = [
            round(1000 * box.x_min / width),
            round(1000 * box.y_min / height),
            round(1000 * box.x_max / width),
            round(1000 * box.y_max / height),
        ]
        label = obj.shape.label if index < len(boxes) else f'{obj.shape.label} copy {index}'
        items.append(json.dumps({'bbox_2d': relative, 'label': label}))
    model_text = '```json\n[\n\t' + ',\n\t'.join(items) + '\n]\n```'
    wires = [serialize_message(msg) for msg in (rgb, depth, info)]
    received = [
        deserialize_message(wire, kind)
        for wire, kind in zip(wires, (Image, Image, CameraInfo), strict=True)
    ]
    return FrameInputs(
        name, *wires, *received, model_text, len(scene.rgb.tobytes()) + len(depth_mm.tobytes())
    )


@dataclass
class Timings:
    """Median CPU milliseconds of each timed function, measured round-robin."""

    stages: dict[str, float]
    page_faults_per_frame: float


def time_round_robin(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median CPU ms per call of each function; one call of each per round, after a warm-up."""
    for function in functions.values():
        function()
    samples: dict[str, list[int]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.process_time_ns()
            function()
            samples[name].append(time.process_time_ns() - start)
    return {name: statistics.median(values) / 1e6 for name, values in samples.items()}


def repeated(function: Callable[[], Any], times: int) -> Callable[[], None]:
    """``function`` called ``times`` times per timing (for stages near the clock's resolution);
    divide the result by ``times``."""

    def run() -> None:
        for _ in range(times):
            function()

    return run


def box_windows(frame: Any, detections: list[Any]) -> list[tuple[slice, slice]]:
    """Each detection's depth-image pixels (rows, columns), clipped to the image."""
    height, width = frame.depth_m.shape
    windows = []
    for detection in detections:
        box = rgb_box_to_depth(detection.box, frame)
        col_start, col_stop = _pixel_range(box.x_min, box.x_max, width)
        row_start, row_stop = _pixel_range(box.y_min, box.y_max, height)
        windows.append((slice(row_start, row_stop), slice(col_start, col_stop)))
    return windows


def measure(inputs: FrameInputs, repeats: int) -> Timings:
    settings = PipelineSettings.from_parameters(NODE_DEFAULTS)
    config = settings.config
    rgb_src = np.frombuffer(inputs.rgb.data, dtype=np.uint8)
    depth_src = np.frombuffer(inputs.depth.data, dtype=np.uint8)
    rgb_dst, depth_dst = np.empty_like(rgb_src), np.empty_like(depth_src)

    def memcpy() -> None:
        np.copyto(rgb_dst, rgb_src)
        np.copyto(depth_dst, depth_src)

    stamps = iter(range(1, 10**9))
    pairer = StampPairer(PairingConfig.from_seconds(slop_s=0.05))

    def pair() -> None:
        stamp = next(stamps)
        pairer.add('info', stamp, inputs.info)
        pairer.add('depth', stamp, inputs.depth)
        (paired,) = pairer.add('rgb', stamp, inputs.rgb)

    def decode() -> Any:
        return make_rgbd_frame_with_warnings(inputs.rgb, inputs.depth, inputs.info, config.depth)[
            0
        ]

    frame = decode()
    width, height = frame.rgb.shape[1], frame.rgb.shape[0]

    def parse() -> Any:
        return parse_grounding(inputs.model_text, width, height)

    parsed = parse()
    assert isinstance(parsed, GroundingResult), parsed
    detections = list(parsed.detections)
    windows = box_windows(frame, detections)
    minimum = config.lifting.min_depth_m

    def read_once() -> None:
        for rows, columns in windows:
            np.count_nonzero(frame.depth_m[rows, columns] >= minimum)

    def lift() -> Any:
        return lift_detections(frame, detections, config)

    objects = lift()
    positioned = sum(obj.lifted.position is not None for obj in objects)
    assert positioned >= OBJECTS // 2, f'only {positioned} of {len(objects)} objects lifted'
    depth_boxes = [rgb_box_to_depth(detection.box, frame) for detection in detections]

    def lift_only() -> Any:
        return lift_boxes(frame.depth_m, frame.depth_intrinsics, depth_boxes, config.lifting)

    def lift_box_by_box() -> Any:
        return lifting_reference.lift_boxes(
            frame.depth_m, frame.depth_intrinsics, depth_boxes, config.lifting
        )

    def relations() -> Any:
        return compute_relations(objects, config.relations)

    scene = Scene(
        stamp_ns=frame.stamp_ns,
        frame_id=frame.frame_id,
        camera_frame_id=frame.frame_id,
        objects=objects,
        relations=relations(),
        relation_frame_id=frame.frame_id,
        model_id='bench',
        engine='recorded',
    )
    functions: dict[str, Callable[[], Any]] = {
        MEMCPY: repeated(memcpy, 20),
        READ_ONCE: repeated(read_once, 5),
        PAIR: repeated(pair, 20),
        DECODE: decode,
        PARSE: parse,
        LIFT: lift,
        LIFT_BOXES: lift_only,
        RELATIONS: relations,
        JSON_STAGE: lambda: scene_to_json(scene),
        DESERIALIZE: lambda: (
            deserialize_message(inputs.rgb_wire, Image),
            deserialize_message(inputs.depth_wire, Image),
            deserialize_message(inputs.info_wire, CameraInfo),
        ),
        LIFT_BEFORE: lift_box_by_box,
    }
    if MESSAGES_UNAVAILABLE:
        functions[ANNOTATED] = lambda: annotate_scene(frame.rgb, scene)
    else:
        functions[SCENE_MSG] = lambda: scene_to_msg(scene)
        functions[MARKERS] = lambda: scene_markers(scene)
        functions[ANNOTATED] = lambda: rgb_to_image_msg(annotate_scene(frame.rgb, scene), scene)
    stages = time_round_robin(functions, repeats)
    for name, times in ((MEMCPY, 20), (READ_ONCE, 5), (PAIR, 20)):
        stages[name] /= times
    stages[RELATIONS_COUNT] = float(len(scene.relations))

    def whole_frame() -> None:
        decoded = decode()
        answer = parse_grounding(inputs.model_text, width, height)
        lifted = lift_detections(decoded, list(answer.detections), config)
        result = Scene(
            decoded.stamp_ns,
            decoded.frame_id,
            decoded.frame_id,
            lifted,
            compute_relations(lifted, config.relations),
        )
        if not MESSAGES_UNAVAILABLE:
            scene_to_msg(result)
            scene_markers(result)
        scene_to_json(result)

    whole_frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        whole_frame()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    return Timings(stages, faults)


def profile_frame(inputs: FrameInputs) -> str:
    """cProfile of the counted stages, top functions by own time."""
    settings = PipelineSettings.from_parameters(NODE_DEFAULTS)
    config = settings.config
    profiler = cProfile.Profile()
    profiler.enable()
    for stamp in range(1, 21):
        pairer = StampPairer()
        pairer.add('info', stamp, inputs.info)
        pairer.add('depth', stamp, inputs.depth)
        pairer.add('rgb', stamp, inputs.rgb)
        frame = make_rgbd_frame_with_warnings(inputs.rgb, inputs.depth, inputs.info, config.depth)[
            0
        ]
        parsed = parse_grounding(inputs.model_text, frame.rgb.shape[1], frame.rgb.shape[0])
        objects = lift_detections(frame, list(parsed.detections), config)
        scene = Scene(
            frame.stamp_ns,
            frame.frame_id,
            frame.frame_id,
            objects,
            compute_relations(objects, config.relations),
        )
        if not MESSAGES_UNAVAILABLE:
            scene_to_msg(scene)
            scene_markers(scene)
        scene_to_json(scene)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats('tottime').print_stats(12)
    return out.getvalue()


def report(name: str, inputs: FrameInputs, timings: Timings) -> tuple[float, float]:
    """Print one resolution's table; returns (total ms, lifting / read-once)."""
    stages = timings.stages
    memcpy, read_once = stages[MEMCPY], stages[READ_ONCE]
    total = sum(stages.get(stage, 0.0) for stage in COUNTED)
    mb = inputs.bytes_per_frame / 2**20
    print(f'\n{name} rgb8 + 16UC1 ({mb:.2f} MiB), {int(stages[RELATIONS_COUNT])} relations')
    print(f'  {"stage":<44} {"ms":>8} {"x memcpy":>9} {"x read once":>12}')

    def row(label: str, ms: float) -> None:
        print(f'  {label:<44} {ms:>8.3f} {ms / memcpy:>9.1f} {ms / read_once:>12.1f}')

    row('baseline: memcpy RGB + depth', memcpy)
    row("baseline: read each box's depth pixels once", read_once)
    for stage in COUNTED:
        if stage in stages:
            row(stage, stages[stage])
            if stage == LIFT:
                row(LIFT_BOXES, stages[LIFT_BOXES])
        else:
            print(f'  {stage:<44} NOT MEASURED ({MESSAGES_UNAVAILABLE}); not in the total')
    row(f'TOTAL per processed frame (target <= {TARGET_TOTAL_MS:g} ms)', total)
    row(f'{ANNOTATED} (only with subscribers)', stages[ANNOTATED])
    row('TOTAL with the annotated image', total + stages[ANNOTATED])
    print('  informative, not counted:')
    row(DESERIALIZE + ' (every received frame)', stages[DESERIALIZE])
    row(PAIR + ' (every received frame)', stages[PAIR])
    row(LIFT_BEFORE, stages[LIFT_BEFORE])
    print(
        f'  lifting (lift_boxes): {stages[LIFT_BOXES] / read_once:.1f}x read-once (target <= '
        f'{TARGET_LIFT_RATIO:g}x), {stages[LIFT_BEFORE] / stages[LIFT_BOXES]:.1f}x faster than '
        f'box by box; minor page faults per frame: {timings.page_faults_per_frame:.0f}'
    )
    return total, stages[LIFT_BOXES] / read_once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=30, help='timed rounds (median)')
    parser.add_argument('--profile', action='store_true', help='cProfile the counted stages')
    parser.add_argument(
        '--untuned', action='store_true', help="keep glibc malloc's defaults (see runtime.py)"
    )
    args = parser.parse_args()
    tuned = False if args.untuned else tune_memory_allocator()
    started = time.process_time()
    warm_seconds = warm_up()  # what the node does when it configures
    print(f'node CPU per processed frame without the model ({machine()})')
    print(
        f'lifting kernels (numba) ready in {warm_seconds:.2f} s wall, '
        f'{time.process_time() - started:.2f} s CPU (from the cache, or compiled when it is '
        'empty or stale); not in the per-frame numbers'
    )
    print(
        f'CPU time, median of {args.repeats} round-robin repeats; allocator tuned: {tuned}; '
        f'{OBJECTS} boxes'
    )
    verdicts = []
    for name, intrinsics in RESOLUTIONS.items():
        inputs = make_inputs(name, intrinsics)
        timings = measure(inputs, args.repeats)
        total, lift_ratio = report(name, inputs, timings)
        verdicts.append((name, total, lift_ratio))
        if args.profile:
            print(profile_frame(inputs))
    print()
    for name, total, lift_ratio in verdicts:
        total_verdict = 'met' if total <= TARGET_TOTAL_MS else 'NOT met'
        lift_verdict = 'met' if lift_ratio <= TARGET_LIFT_RATIO else 'NOT met'
        print(
            f'{name}: total {total:.2f} ms (<= {TARGET_TOTAL_MS:g} ms: {total_verdict}); '
            f'lifting {lift_ratio:.1f}x read-once (<= {TARGET_LIFT_RATIO:g}x: {lift_verdict})'
        )
    return 0 if all(math.isfinite(total) for _, total, _ in verdicts) else 1


if __name__ == '__main__':
    sys.exit(main())
