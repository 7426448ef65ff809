# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The real sglang-router (SGLang Model Gateway) as a child process, and what it reports.

Used by test/test_router_live.py and bench/bench_router.py. The router comes from
``.venv-router/`` (``bash scripts/setup_router.sh``, pinned in requirements/router.txt); it is
the PyPI wheel's Rust router, started with ``python -m sglang_router.launch_router`` exactly as
docs/SCALING.md tells a deployment to. Nothing here imports sglang_router: the router is only
reached over HTTP, like the node reaches it.

Facts this module relies on, read from sglang-router 0.3.2 and checked against it here:

* ``/readiness`` answers 200 ``{"status": "ready", "healthy_workers": n, "total_workers": m}``
  while a worker is healthy and 503 ``insufficient healthy workers`` otherwise; ``/health`` is
  200 whatever the workers do.
* ``/workers`` lists ``{"url", "is_healthy", ...}`` per worker.
* Prometheus text on ``--prometheus-host/--prometheus-port``. Per worker:
  ``smg_worker_cb_outcomes_total{worker=URL, outcome="success"|"failure"}`` (one count per
  attempt the router sent there), ``smg_worker_health{worker=URL}``,
  ``smg_worker_cb_state{worker=URL}`` (0 closed, 1 open, 2 half-open); router wide:
  ``smg_worker_retries_total`` and ``smg_router_requests_total``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import os
from pathlib import Path
import re
import signal
import socket
import subprocess
import time
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUTER_ENV = Path(os.environ.get('SPATIAL_VLM_ROUTER_ENV', REPO_ROOT / '.venv-router'))
ROUTER_PYTHON = ROUTER_ENV / 'bin' / 'python'
ROUTER_SETUP = 'bash scripts/setup_router.sh'

# Fast failure detection for a test on one machine: a health probe every second, a worker is
# out after 3 failed probes and back after 1 good one; 3 failed requests open its circuit for
# 1 s, shorter than the node's retries (~1-1.75 s over 4 attempts). A killed worker refuses
# connections, so it fails its probes at once; a busy CPU worker (2 cores, constrained ~/query
# requests) can take over 2 s to answer /health, hence the 5 s probe timeout. The router's own
# defaults (60 s probes, 3/2 thresholds, 10 failures, 60 s open) suit a fleet; docs/SCALING.md
# gives the deployment values.
FAST_FAILOVER_ARGS: tuple[str, ...] = (
    '--health-check-interval-secs', '1',
    '--health-check-timeout-secs', '5',
    '--health-failure-threshold', '3',
    '--health-success-threshold', '1',
    '--cb-failure-threshold', '3',
    '--cb-success-threshold', '1',
    '--cb-timeout-duration-secs', '1',
    '--retry-max-retries', '3',
)  # fmt: skip

_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def router_env_missing() -> str | None:
    """Why the router cannot start here (with the command that fixes it), or None."""
    if ROUTER_PYTHON.exists():
        return None
    return f'the sglang-router environment {ROUTER_ENV} is missing: run `{ROUTER_SETUP}`'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sample:
    """One Prometheus sample: metric name, labels, value."""

    name: str
    labels: dict[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (comments and blank lines skipped)."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if line.startswith('#') or not match:
            continue
        name, labels, value = match.groups()
        samples.append(Sample(name, dict(_LABEL.findall(labels or '')), float(value)))
    return samples


def per_label(samples: Sequence[Sample], name: str, key: str, **match: str) -> dict[str, float]:
    """``{label value: sample value}`` of metric ``name`` keyed by label ``key``, filtered."""
    return {
        sample.labels[key]: sample.value
        for sample in samples
        if sample.name == name
        and key in sample.labels
        and all(sample.labels.get(k) == v for k, v in match.items())
    }


def total(samples: Sequence[Sample], name: str, **match: str) -> float:
    """The sum of metric ``name`` over the samples whose labels match."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items())
    )


class RouterProcess:
    """One sglang-router in front of ``worker_urls``, on free loopback ports."""

    def __init__(
        self,
        worker_urls: Sequence[str],
        log_path: Path,
        *,
        policy: str = 'round_robin',
        extra_args: Sequence[str] = FAST_FAILOVER_ARGS,
        port: int | None = None,
        scheme: str = 'http',
    ) -> None:
        self.worker_urls = list(worker_urls)
        self.log_path = log_path
        self.policy = policy
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.url = f'{scheme}://127.0.0.1:{self.port}'
        self.metrics_url = f'http://127.0.0.1:{self.metrics_port}/metrics'
        self.process: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(timeout=5.0, verify=False)

    @property
    def command(self) -> list[str]:
        return [
            str(ROUTER_PYTHON), '-m', 'sglang_router.launch_router',
            '--worker-urls', *self.worker_urls,
            '--host', '127.0.0.1', '--port', str(self.port),
            '--prometheus-host', '127.0.0.1', '--prometheus-port', str(self.metrics_port),
            '--policy', self.policy,
            '--log-level', 'warn',
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 60.0) -> RouterProcess:
        """Start the router and wait until its HTTP server answers (workers may still be down)."""
        missing = router_env_missing()
        if missing:
            raise RuntimeError(missing)
        with self.log_path.open('ab') as log:
            # Own process group, so a stop takes the router and nothing else.
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'the router exited with {self.process.returncode}: {self.log}')
            try:
                self._client.get(f'{self.url}/readiness')
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f'the router did not answer within {timeout_s:.0f} s: {self.log}')

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors='replace')[-3000:] if self.log_path.exists() else ''

    def readiness(self) -> tuple[int, dict[str, Any]]:
        response = self._client.get(f'{self.url}/readiness')
        return response.status_code, response.json()

    def healthy_workers(self) -> set[str]:
        """URLs of the workers the router currently counts as healthy."""
        listing = self._client.get(f'{self.url}/workers').json()
        return {worker['url'] for worker in listing['workers'] if worker['is_healthy']}

    def wait_for_healthy(self, urls: set[str], timeout_s: float) -> bool:
        """Wait until exactly ``urls`` are the healthy workers; True when they are."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy_workers() == urls:
                return True
            time.sleep(0.2)
        return self.healthy_workers() == urls

    def metrics(self) -> list[Sample]:
        return parse_prometheus(self._client.get(self.metrics_url).text)

    def successes_per_worker(self) -> dict[str, float]:
        """Requests each worker answered, from the router's circuit-breaker outcome counter."""
        return per_label(
            self.metrics(), 'smg_worker_cb_outcomes_total', 'worker', outcome='success'
        )

    def stop(self) -> None:
        """SIGTERM the router's process group, SIGKILL after 10 s."""
        self._client.close()
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
