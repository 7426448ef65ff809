# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Replay throughput with the recorded engine against reading and decoding the same bag.

Builds a 300-frame RGB-D bag in a temporary directory from the real frames in data/rgbd (JPEG
colour, 16UC1 depth, CameraInfo, MCAP with zstd chunks, as the sample bag) and its recording
(the frames' hand labels as grounding answers), then runs, each as a fresh process so that
start-up counts:

* baseline: read every message of the three camera topics and decode every colour and depth
  image (bag_io.BagReader + decode_color_any / decode_depth_any): what any replay must do;
* ``spatial-vlm replay BAG --recording REC -o OUT``: everything (scenes.jsonl, the output MCAP
  bag with scenes, markers and annotated images, report.html);
* the replay without the output bag and without the report, to show where the time goes.

Times are the child processes' CPU time (user + system; other processes' load does not count)
and wall time, each the median of ``--repeats`` runs. Target (issue 15): the full replay within
8x the baseline.

    .venv/bin/python bench/bench_replay.py [--frames 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine_info import machine  # noqa: E402
from spatial_vlm_ros.replay.sample_bag import (  # noqa: E402
    BagLayout,
    load_labeled_frames,
    write_recording,
    write_rgbd_bag,
)

TARGET_RATIO = 8.0
SPATIAL_VLM = Path(sys.executable).with_name('spatial-vlm')
READ_AND_DECODE = """
import sys
from spatial_vlm_ros.core.image_decoding import decode_color_any, decode_depth_any
from spatial_vlm_ros.replay.bag_io import BagReader
with BagReader(sys.argv[1]) as reader:
    topics = reader.select_camera_topics()
    decoders = {topics.rgb.name: decode_color_any, topics.depth.name: decode_depth_any}
    for message in reader.messages(topics.names):
        decode = decoders.get(message.topic)
        if decode is not None:
            decode(message.message)
"""


def build_bag(folder: Path, frames: int) -> tuple[Path, Path]:
    """``frames`` RGB-D frames at 30 Hz cycling through the four data/rgbd frames."""
    sources = load_labeled_frames(ROOT / 'data' / 'rgbd')
    repeats = -(-frames // len(sources))
    layout = BagLayout(repeats=repeats, rate_hz=30.0)
    bag = write_rgbd_bag(folder / 'bench_bag', sources, layout)
    recording = folder / 'recording.jsonl'
    write_recording(recording, sources, layout)
    return bag, recording


def run(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=300, help='RGB-D frames in the bag')
    parser.add_argument('--repeats', type=int, default=3, help='runs per mode (median)')
    args = parser.parse_args()
    print(f'replay throughput, recorded engine ({machine()})')
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        bag, recording = build_bag(folder, args.frames)
        replay = [str(SPATIAL_VLM), 'replay', str(bag), '--recording', str(recording), '--quiet']
        modes = {
            'baseline: read + decode the bag': [sys.executable, '-c', READ_AND_DECODE, str(bag)],
            'replay: scenes only (--no-bag --no-report)': [
                *replay,
                '-o',
                str(folder / 'out_scenes'),
                '--no-bag',
                '--no-report',
            ],
            'replay: scenes + report (--no-bag)': [
                *replay,
                '-o',
                str(folder / 'out_report'),
                '--no-bag',
            ],
            'replay: everything (default)': [*replay, '-o', str(folder / 'out_all')],
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
        for _ in range(args.repeats):  # round-robin, so load changes hit every mode alike
            for name, command in modes.items():
                samples[name].append(run(command))
        bag_mb = sum(path.stat().st_size for path in bag.iterdir()) / 2**20
    print(
        f'{args.frames} frames (640x480 JPEG + 16UC1), bag {bag_mb:.1f} MiB; median of '
        f'{args.repeats} runs, process start-up included'
    )
    baseline_cpu = statistics.median(cpu for cpu, _ in samples['baseline: read + decode the bag'])
    baseline_wall = statistics.median(
        wall for _, wall in samples['baseline: read + decode the bag']
    )
    print(f'  {"mode":<44} {"CPU s":>7} {"x base":>7} {"wall s":>7} {"x base":>7} {"ms/frame":>9}')
    ratios = {}
    for name, values in samples.items():
        cpu = statistics.median(value for value, _ in values)
        wall = statistics.median(value for _, value in values)
        ratios[name] = cpu / baseline_cpu
        print(
            f'  {name:<44} {cpu:>7.2f} {cpu / baseline_cpu:>7.2f} {wall:>7.2f} '
            f'{wall / baseline_wall:>7.2f} {1000 * cpu / args.frames:>9.1f}'
        )
    ratio = ratios['replay: everything (default)']
    verdict = 'met' if ratio <= TARGET_RATIO else 'NOT met'
    print(f'full replay: {ratio:.2f}x read + decode in CPU time (<= {TARGET_RATIO:g}x: {verdict})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
