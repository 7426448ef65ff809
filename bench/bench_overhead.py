# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Node CPU per frame without the model, as a multiple of one memcpy of the frame's bytes.

Everything the node does for one RGB-D frame besides waiting for the model, on real rclpy message
objects (built with the sensor_msgs classes, then serialized and deserialized so that ``data`` is
the ``array.array('B')`` a subscription callback gets):

    pair (StampPairer) -> decode RGB + depth + CameraInfo (pipeline.decode) -> parse the model's
    answer (20 boxes) -> lift 20 objects -> relations -> SpatialScene msg + MarkerArray msg +
    scene JSON

The baseline, measured in the same run, is one ``np.copyto`` of the frame's RGB and depth bytes
out of the received messages into preallocated arrays: the least any node that looks at the pixels
must spend. Target: total <= 3x the baseline. Also printed, not counted: rclpy's deserialization
(the middleware's copy, on the executor thread) and the OpenAI engine's client-side resize + JPEG
(only when engine=openai).

    .venv/bin/python bench/bench_overhead.py [--repeats 40] [--profile]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import cProfile
from dataclasses import dataclass
import io
import json
import math
import os
from pathlib import Path
import platform
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from bench.synthetic_scenes import multi_object_scene  # noqa: E402
from spatial_vlm_ros.core.camera import make_rgbd_frame_with_warnings  # noqa: E402
from spatial_vlm_ros.core.pairing import PairingConfig, StampPairer  # noqa: E402
from spatial_vlm_ros.core.relations import compute_relations  # noqa: E402
from spatial_vlm_ros.core.scene_json import scene_to_json  # noqa: E402
from spatial_vlm_ros.core.types import CameraIntrinsics, Scene  # noqa: E402
from spatial_vlm_ros.engines.imaging import prepare_image  # noqa: E402
from spatial_vlm_ros.engines.parsing import GroundingResult, parse_grounding  # noqa: E402
from spatial_vlm_ros.engines.profiles import resolve_profile  # noqa: E402
from spatial_vlm_ros.pipeline import PipelineSettings, lift_detections  # noqa: E402
from spatial_vlm_ros.ros.conversions import scene_to_msg  # noqa: E402
from spatial_vlm_ros.ros.markers import scene_markers  # noqa: E402

TARGET_RATIO = 3.0
OBJECTS = 20
FRAME_ID = 'camera_color_optical_frame'
RESOLUTIONS = {
    '640x480': CameraIntrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480),
    '1280x720': CameraIntrinsics(fx=910.0, fy=910.0, cx=639.5, cy=359.5, width=1280, height=720),
}
PAIR = 'pair (3 msgs)'
MARKERS = 'MarkerArray msg'
JSON_STAGE = 'scene JSON'
DESERIALIZE = 'rclpy deserialize (3 msgs)'
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


def median_ms(function: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        function()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e6


def measure(inputs: FrameInputs, repeats: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """(memcpy baseline ms, counted stages ms, informative stages ms) for one frame."""
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

    def lift() -> Any:
        return lift_detections(frame, detections, config)

    objects = lift()
    positioned = sum(obj.lifted.position is not None for obj in objects)
    assert positioned >= OBJECTS // 2, f'only {positioned} of {len(objects)} objects lifted'

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
    counted = {
        PAIR: median_ms(pair, repeats),
        'decode rgb+depth+info': median_ms(decode, repeats),
        'parse answer (20 boxes)': median_ms(parse, repeats),
        f'lift {len(objects)} objects': median_ms(lift, repeats),
        f'relations ({len(scene.relations)})': median_ms(relations, repeats),
        'SpatialScene msg': median_ms(lambda: scene_to_msg(scene), repeats),
        MARKERS: median_ms(lambda: scene_markers(scene), repeats),
        JSON_STAGE: median_ms(lambda: scene_to_json(scene), repeats),
    }
    profile = resolve_profile('')
    informative = {
        DESERIALIZE: median_ms(
            lambda: (
                deserialize_message(inputs.rgb_wire, Image),
                deserialize_message(inputs.depth_wire, Image),
                deserialize_message(inputs.info_wire, CameraInfo),
            ),
            repeats,
        ),
        'openai engine resize + JPEG': median_ms(
            lambda: prepare_image(frame.rgb, profile), max(repeats // 4, 5)
        ),
    }
    baseline = median_ms(memcpy, repeats * 5, warmup=10)
    return baseline, counted, informative


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
        frame, _ = make_rgbd_frame_with_warnings(
            inputs.rgb, inputs.depth, inputs.info, config.depth
        )
        parsed = parse_grounding(inputs.model_text, frame.rgb.shape[1], frame.rgb.shape[0])
        objects = lift_detections(frame, list(parsed.detections), config)
        relations = compute_relations(objects, config.relations)
        scene = Scene(frame.stamp_ns, frame.frame_id, frame.frame_id, objects, relations)
        scene_to_msg(scene)
        scene_markers(scene)
        scene_to_json(scene)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats('tottime').print_stats(12)
    return out.getvalue()


def machine() -> str:
    cpu = platform.processor() or ''
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = '?'
    return f'{os.cpu_count()} cores, {cpu}, numpy {np.__version__}, commit {commit or "?"}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=40, help='timed runs per stage (median)')
    parser.add_argument('--profile', action='store_true', help='cProfile the counted stages')
    args = parser.parse_args()
    print(f'node CPU per frame without the model ({machine()})')
    print(f'baseline: np.copyto of the received RGB + depth bytes; target <= {TARGET_RATIO:.0f}x')
    verdicts = []
    for name, intrinsics in RESOLUTIONS.items():
        inputs = make_inputs(name, intrinsics)
        baseline, counted, informative = measure(inputs, args.repeats)
        total = sum(counted.values())
        ratio = total / baseline
        # Every camera frame costs only the middleware's copy and the pairing; decoding and the
        # rest run once per frame sent to the model (at the model's rate, not the camera's).
        received = informative[DESERIALIZE] + counted[PAIR]
        optional = counted[MARKERS] + counted[JSON_STAGE]
        verdicts.append((name, ratio, received / baseline))
        mb = inputs.bytes_per_frame / 2**20
        print(f'\n{name} rgb8 + 16UC1 ({mb:.2f} MiB), memcpy {baseline:.3f} ms')
        print(f'  {"stage":<40} {"ms":>8} {"x memcpy":>9}')
        for stage, ms in counted.items():
            print(f'  {stage:<40} {ms:>8.3f} {ms / baseline:>9.2f}')
        print(f'  {"TOTAL per processed frame":<40} {total:>8.3f} {ratio:>9.2f}')
        for stage, ms in informative.items():
            print(f'  {"(not counted) " + stage:<40} {ms:>8.3f} {ms / baseline:>9.2f}')
        print(
            f'  {"per received frame: deserialize + pair":<40} {received:>8.3f} '
            f'{received / baseline:>9.2f}'
        )
        print(
            f'  {"processed, markers + JSON left out":<40} {total - optional:>8.3f} '
            f'{(total - optional) / baseline:>9.2f}'
        )
        if args.profile:
            print(profile_frame(inputs))
    print()
    for name, ratio, received_ratio in verdicts:
        verdict = 'within target' if ratio <= TARGET_RATIO else 'OVER target'
        print(
            f'{name}: {ratio:.2f}x memcpy per processed frame ({verdict}, target '
            f'{TARGET_RATIO:.0f}x); {received_ratio:.2f}x per received frame'
        )
    return 0 if all(math.isfinite(ratio) for _, ratio, _ in verdicts) else 1


if __name__ == '__main__':
    sys.exit(main())
