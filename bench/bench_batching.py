# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Aggregate grounding throughput of the transformers engine with 1/2/4/8 concurrent cameras.

The same frames go through the engine once one at a time (the baseline, measured in this run) and
then split across N camera streams that each send their next frame as soon as the previous answer
arrives; the engine batches whatever is in flight. Printed: frames/s and the ratio to the baseline,
plus how many ``generate`` calls ran and their mean size.

Runs on the tiny random Qwen3-VL on the CPU by default (so it runs anywhere, in well under a
minute); random weights make the numbers a measure of the batching machinery, not of a real model.

    .venv/bin/python bench/bench_batching.py [--frames 16] [--threads 2] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
import os
from pathlib import Path
import sys
import time

import numpy as np

from spatial_vlm_ros.engines.base import EngineRequest, SamplingParams, TaskKind
from spatial_vlm_ros.engines.transformers_engine import TransformersEngine

# The tiny checkpoint builder is test-only code (test/fixtures), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
from fixtures.tiny_model import build_tiny_model, tiny_profile


@dataclass(frozen=True)
class Run:
    label: str
    cameras: int
    frames: int
    wall_s: float
    batches: int

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


def make_requests(frames: int, max_new_tokens: int) -> list[EngineRequest]:
    rng = np.random.default_rng(0)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return [
        EngineRequest(
            images=(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),),
            task=TaskKind.GROUND,
            stamp_ns=index,
            vocabulary=('cup', 'chair', 'person'),
            sampling=sampling,
        )
        for index in range(frames)
    ]


async def sequential(engine: TransformersEngine, requests: list[EngineRequest]) -> Run:
    batches = engine.stats.batches
    start = time.perf_counter()
    for request in requests:
        await engine.generate(request)
    wall = time.perf_counter() - start
    return Run('sequential', 1, len(requests), wall, engine.stats.batches - batches)


async def cameras(engine: TransformersEngine, requests: list[EngineRequest], count: int) -> Run:
    streams = [requests[index::count] for index in range(count)]

    async def camera(frames: list[EngineRequest]) -> None:
        for request in frames:
            await engine.generate(request)

    batches = engine.stats.batches
    start = time.perf_counter()
    await asyncio.gather(*(camera(stream) for stream in streams))
    wall = time.perf_counter() - start
    return Run(f'{count} cameras', count, len(requests), wall, engine.stats.batches - batches)


async def main_async(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir or build_tiny_model('generic')
    engine = TransformersEngine(
        tiny_profile('generic', model_dir),
        device=args.device,
        max_batch_size=args.max_batch_size,
        batch_window_s=args.window,
    )
    await engine.start()
    load_before = os.getloadavg()[0]
    try:
        requests = make_requests(args.frames, args.max_new_tokens)
        await cameras(engine, requests[: args.max_batch_size], args.max_batch_size)  # warm-up
        baseline = await sequential(engine, requests)
        runs = [baseline] + [await cameras(engine, requests, n) for n in (1, 2, 4, 8)]
        # The baseline again, last: if it moved, the machine's load moved under the run.
        runs.append(await sequential(engine, requests))
    finally:
        await engine.shutdown()
    load_after = os.getloadavg()[0]

    print(
        f'transformers engine, tiny Qwen3-VL ({model_dir.name}), device={engine.device or "-"}, '
        f'torch threads={args.threads}, {args.frames} frames of 640x480, '
        f'max_new_tokens={args.max_new_tokens}, window={args.window * 1000:.0f} ms, '
        # Other processes on a small CPU distort the ratios; the load average shows when.
        f'load average {load_before:.2f} before / {load_after:.2f} after'
    )
    print(f'{"mode":<12} {"frames/s":>9} {"x seq":>7} {"wall s":>8} {"batches":>8} {"mean bs":>8}')
    for run in runs:
        print(
            f'{run.label:<12} {run.fps:>9.2f} {run.fps / baseline.fps:>7.2f} '
            f'{run.wall_s:>8.2f} {run.batches:>8d} {run.mean_batch:>8.2f}'
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=16)
    parser.add_argument('--max-new-tokens', type=int, default=48)
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch intra-op threads (default 1: the tiny matrices gain nothing from more, and on '
        'a 2-core machine the second core serves preprocessing, xgrammar and the event loop)',
    )
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--max-batch-size', type=int, default=8)
    parser.add_argument('--window', type=float, default=0.01, help='batch window, seconds')
    parser.add_argument('--model-dir', type=Path, default=None)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == '__main__':
    main()
