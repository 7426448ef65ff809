# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounding throughput through the real sglang-router: one worker against two, 1 and 4 cameras.

Two vLLM-on-CPU servers serve the tiny Qwen3-VL (the engines live-server harness); sglang-router
0.3.2 (``.venv-router/``, ``bash scripts/setup_router.sh``) runs in front of one of them, then in
front of both. Each camera is one ``openai`` engine (as each node has its own) sending grounding
requests back to back, one in flight, like a node with ``max_in_flight: 1``. Every row is measured
in this run against the same servers; printed: completed grounding requests/s, p50/p95 latency,
ratios to the one-worker 4-camera row, and how the router split the requests.

Rows: 1 worker x 1 camera (unloaded latency), 1 worker x 4 cameras (the baseline), the same sent
straight to the worker (the router's own cost), 2 workers x 4 cameras with round_robin, and 2
workers x 4 cameras with cache_aware (all cameras ground the same classes, as a fleet usually
does).

Random weights and a 2-core machine: on CPU two workers share the same cores, so the ratio
measures what the router can give when the cores are already busy, not GPU scaling.

    .venv/bin/python bench/bench_router.py [--requests 12] [--cameras 4] [--bind-cores]

With ``--bind-cores`` worker i runs on core i only (``VLLM_CPU_OMP_THREADS_BIND``), so two
workers do not fight over the same cores: the closest a 2-core machine gets to one GPU each.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / 'test'))

from spatial_vlm_ros.engines.base import EngineRequest, TaskKind  # noqa: E402
from spatial_vlm_ros.engines.openai_engine import OpenAIEngine  # noqa: E402
from spatial_vlm_ros.engines.profiles import resolve_profile  # noqa: E402

from fixtures.tiny_model import build_tiny_model  # noqa: E402
from live_servers import VllmServer, free_port, start_vllm_servers  # noqa: E402
from router_harness import RouterProcess, router_env_missing  # noqa: E402
from side_envs import VLLM_VENV  # noqa: E402

VOCABULARY = ('cup', 'chair', 'person')


@dataclass(frozen=True)
class Row:
    label: str
    workers: int
    cameras: int
    latencies_s: tuple[float, ...]
    wall_s: float
    split: dict[str, float]

    @property
    def rate(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def percentile_s(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q))


def frames(count: int, seed: int) -> list[EngineRequest]:
    rng = np.random.default_rng(seed)
    return [
        EngineRequest(
            images=(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),),
            task=TaskKind.GROUND,
            stamp_ns=seed * 10_000 + index,
            vocabulary=VOCABULARY,
        )
        for index in range(count)
    ]


async def run_cameras(url: str, model_dir: Path, cameras: int, per_camera: int) -> tuple[Any, ...]:
    """``cameras`` engines sending ``per_camera`` requests each, one in flight per camera."""
    engines = [
        OpenAIEngine(
            resolve_profile(str(model_dir)),
            base_url=url,
            served_model_name=str(model_dir),  # the workers serve it under its path
            max_concurrency=1,
            timeout_s=300.0,
        )
        for _ in range(cameras)
    ]
    latencies: list[float] = []

    async def camera(engine: OpenAIEngine, requests: list[EngineRequest]) -> None:
        for request in requests:
            started = time.perf_counter()
            await engine.generate(request)
            latencies.append(time.perf_counter() - started)

    try:
        for engine in engines:
            await engine.start()
        start = time.perf_counter()
        await asyncio.gather(
            *(camera(engine, frames(per_camera, seed)) for seed, engine in enumerate(engines))
        )
        wall = time.perf_counter() - start
    finally:
        for engine in engines:
            await engine.shutdown()
    return tuple(latencies), wall


def measure(
    label: str,
    workers: list[VllmServer],
    policy: str,
    cameras: int,
    per_camera: int,
    model_dir: Path,
    log_dir: Path,
) -> Row:
    with RouterProcess(
        [w.url for w in workers], log_dir / f'router-{label}.log', policy=policy
    ) as router:
        assert router.wait_for_healthy({w.url for w in workers}, 30.0), router.log
        asyncio.run(run_cameras(router.url, model_dir, 1, 2))  # warm-up, not counted
        before = router.successes_per_worker()
        latencies, wall = asyncio.run(run_cameras(router.url, model_dir, cameras, per_camera))
        after = router.successes_per_worker()
    split = {url: after[url] - before.get(url, 0.0) for url in after}
    return Row(label, len(workers), cameras, latencies, wall, split)


def start_bound_workers(model_dir: Path) -> list[VllmServer]:
    """Two workers, worker i on core i only: each owns its compute, as each GPU would."""
    name = str(model_dir)
    servers = [VllmServer(model_dir, free_port(), served_model_name=name) for _ in (0, 1)]
    try:
        for core, server in enumerate(servers):
            # VllmServer copies os.environ when it launches.
            os.environ['VLLM_CPU_OMP_THREADS_BIND'] = str(core)
            server.launch()
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.close()
        raise
    finally:
        os.environ.pop('VLLM_CPU_OMP_THREADS_BIND', None)
    return servers


def measure_direct(
    label: str, worker: VllmServer, cameras: int, per_camera: int, model_dir: Path
) -> Row:
    """The same load sent to one worker with no router: the router's own cost."""
    asyncio.run(run_cameras(worker.url, model_dir, 1, 2))  # warm-up, not counted
    latencies, wall = asyncio.run(run_cameras(worker.url, model_dir, cameras, per_camera))
    return Row(label, 1, cameras, latencies, wall, {worker.url: float(len(latencies))})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--requests', type=int, default=12, help='requests per camera')
    parser.add_argument('--cameras', type=int, default=4)
    parser.add_argument(
        '--bind-cores',
        action='store_true',
        help='bind each worker to its own core (VLLM_CPU_OMP_THREADS_BIND), like one GPU each',
    )
    args = parser.parse_args()
    missing = router_env_missing()
    if not missing and not (VLLM_VENV / 'bin' / 'vllm').exists():
        missing = f'the vLLM environment {VLLM_VENV} is missing: run `make setup-live`'
    if missing:
        print(f'bench_router: skipped: {missing}')
        return 0
    model_dir = build_tiny_model('generic-hd32')
    log_dir = Path(tempfile.mkdtemp(prefix='bench_router_'))
    started = time.perf_counter()
    workers = (
        start_bound_workers(model_dir)
        if args.bind_cores
        else start_vllm_servers(2, model_dir, served_model_name=str(model_dir))
    )
    binding = 'worker i bound to core i' if args.bind_cores else 'threads not bound'
    print(f'two vLLM workers ({binding}) ready in {time.perf_counter() - started:.0f} s')
    try:
        one, both = workers[:1], workers
        n = args.requests
        rows = [
            measure('1 worker, 1 camera', one, 'round_robin', 1, n, model_dir, log_dir),
            measure(
                f'1 worker, {args.cameras} cameras', one, 'round_robin', args.cameras, n,
                model_dir, log_dir,
            ),
            measure_direct(
                f'1 worker, {args.cameras} cameras, no router', one[0], args.cameras, n, model_dir
            ),
            measure(
                f'2 workers, {args.cameras} cameras, round_robin', both, 'round_robin',
                args.cameras, n, model_dir, log_dir,
            ),
            measure(
                f'2 workers, {args.cameras} cameras, cache_aware', both, 'cache_aware',
                args.cameras, n, model_dir, log_dir,
            ),
        ]  # fmt: skip
    finally:
        for worker in workers:
            worker.close()
    base = rows[1]
    print('| setup | requests | req/s | x 1 worker | p50 s | p95 s | p95 / 1 worker | split |')
    print('|---|---:|---:|---:|---:|---:|---:|---|')
    for row in rows:
        split = ' / '.join(f'{int(count)}' for _, count in sorted(row.split.items()))
        print(
            f'| {row.label} | {len(row.latencies_s)} | {row.rate:.2f} '
            f'| {row.rate / base.rate:.2f} '
            f'| {row.percentile_s(50):.2f} | {row.percentile_s(95):.2f} '
            f'| {row.percentile_s(95) / base.percentile_s(95):.2f} | {split} |'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
