# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The real sglang-router in front of two real vLLM servers, and real nodes behind it (issue 17).

Everything here is the real software: sglang-router 0.3.2 (``.venv-router/``), two vLLM-on-CPU
servers serving the tiny Qwen3-VL (the engines live-server harness), the ``openai`` engine, and
node processes over DDS fed by a camera publisher. One router and two workers are shared by the
whole module (each vLLM start costs 35-60 s on an idle machine); the tests run in file order,
the kill/restart test last so the others see two healthy workers. Other routers (cache-aware,
TLS, no workers) are started per test in front of the same workers: a router starts in < 1 s.

Shown: requests spread over both workers (router metrics and the workers' own counters);
``/readiness`` as the router's health; a router that is down, or has no healthy worker, reported
as an ERROR with the fix; TLS and an API key read from the env var ``api_key_env`` names; two
nodes sharing a cache-aware router, each camera's prompts kept on one worker; a worker killed
mid-stream while the node keeps publishing scenes and answering every ``~/query``, and the
restarted worker rejoining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from conftest import REPO_ROOT, spin_until
from live_servers import VllmServer, start_vllm_servers
from router_harness import (
    ROUTER_PYTHON,
    ROUTER_SETUP,
    RouterProcess,
    free_port,
    parse_prometheus,
    per_label,
    total,
)
from side_envs import VLLM_VENV, side_python

pytestmark = [pytest.mark.slow]

WIDTH, HEIGHT = 320, 240
FX = FY = 260.0


# --- workers: the engines live-server harness ---------------------------------------------------


def vllm_successes(url: str) -> float:
    """Requests a vLLM server finished, by its own counter (independent of the router's)."""
    import httpx

    text = httpx.get(f'{url}/metrics', timeout=5).text
    return total(parse_prometheus(text), 'vllm:request_success_total')


@pytest.fixture(scope='module')
def tiny_model_dir() -> Path:
    from fixtures.tiny_model import build_tiny_model

    return build_tiny_model('generic-hd32')  # vLLM's CPU attention needs head_dim >= 32


@pytest.fixture(scope='module')
def served_name(tiny_model_dir: Path) -> str:
    # The workers serve the checkpoint under its path, vLLM's (and SGLang's) default name and
    # the node's profile id for a local model: the name a router of vLLM workers cannot list.
    return str(tiny_model_dir)


@pytest.fixture(scope='module')
def workers(tiny_model_dir: Path, served_name: str) -> Iterator[list[VllmServer]]:
    side_python(ROUTER_PYTHON, 'the sglang-router environment', ROUTER_SETUP)
    side_python(VLLM_VENV / 'bin' / 'python', 'the vLLM environment', 'make setup-live')
    started = time.monotonic()
    servers = start_vllm_servers(2, tiny_model_dir, served_model_name=served_name)
    print(f'\n[router-live] two vLLM workers ready in {time.monotonic() - started:.0f} s')
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


# --- the router ---------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def router(
    workers: list[VllmServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    log = tmp_path_factory.mktemp('router') / 'router.log'
    process = RouterProcess([w.url for w in workers], log, policy='round_robin').start()
    try:
        assert process.wait_for_healthy({w.url for w in workers}, 30.0), process.log
        yield process
    finally:
        process.stop()


def _engine(base_url: str, model_dir: Path, **options: Any) -> Any:
    """The node's engine for the tiny model, naming the model the way the workers serve it."""
    from spatial_vlm_ros.engines.openai_engine import OpenAIEngine
    from spatial_vlm_ros.engines.profiles import resolve_profile

    return OpenAIEngine(
        resolve_profile(str(model_dir)),
        base_url=base_url,
        served_model_name=str(model_dir),
        **options,
    )


def _ground_request(stamp_ns: int, vocabulary: tuple[str, ...] = ('cup', 'chair')) -> Any:
    from spatial_vlm_ros.engines.base import EngineRequest, TaskKind

    rng = np.random.default_rng(stamp_ns)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return EngineRequest(
        images=(image,), task=TaskKind.GROUND, stamp_ns=stamp_ns, vocabulary=vocabulary
    )


# --- 1. requests spread over both workers -------------------------------------------------------


def test_router_spreads_grounding_requests_over_both_workers(
    router: RouterProcess, workers: list[VllmServer], tiny_model_dir: Path
) -> None:
    from spatial_vlm_ros.engines.results import GroundingResult

    before_router = router.successes_per_worker()
    before_workers = [vllm_successes(w.url) for w in workers]

    async def run() -> tuple[Any, list[Any]]:
        engine = _engine(router.url, tiny_model_dir, max_concurrency=8)
        try:
            await engine.start()
            health = await engine.health()
            answers = await asyncio.gather(
                *(engine.generate(_ground_request(i)) for i in range(8))
            )
            return health, answers
        finally:
            await engine.shutdown()

    health, answers = asyncio.run(run())
    # The engine found a router and judged it by /readiness (both workers counted there).
    assert dict(health.values)['server_kind'] == 'router', health
    assert '2 of 2 workers' in health.message, health
    assert all(isinstance(answer.parsed, GroundingResult) for answer in answers), [
        answer.raw_text for answer in answers
    ]
    after_router = router.successes_per_worker()
    by_router = _delta(after_router, before_router, [w.url for w in workers])
    by_workers = [vllm_successes(w.url) - b for w, b in zip(workers, before_workers, strict=True)]
    # round_robin: 8 requests, 4 to each; the workers' own counters agree with the router's.
    assert by_router == {w.url: 4 for w in workers}, by_router
    assert by_workers == [4, 4], by_workers


# --- the node processes and their camera --------------------------------------------------------


def _camera_messages(stamp_ns: int, frame_id: str) -> tuple[Any, Any, Any]:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image

    stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    rng = np.random.default_rng(stamp_ns % 2**32)
    rgb = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', step=WIDTH * 3)
    rgb.data = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).tobytes()
    depth = Image(height=HEIGHT, width=WIDTH, encoding='16UC1', step=WIDTH * 2)
    depth.data = np.full((HEIGHT, WIDTH), 1500, dtype=np.uint16).tobytes()
    info = CameraInfo(height=HEIGHT, width=WIDTH, distortion_model='plumb_bob')
    info.k = [FX, 0.0, WIDTH / 2 - 0.5, 0.0, FY, HEIGHT / 2 - 0.5, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, WIDTH / 2 - 0.5, 0.0, 0.0, FY, HEIGHT / 2 - 0.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    for message in (rgb, depth, info):
        message.header.stamp, message.header.frame_id = stamp, frame_id
    return rgb, depth, info


class Camera:
    """A camera publisher and a listener for one node namespace (one robot or camera)."""

    def __init__(self, node: Any, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from spatial_vlm_ros.msg import SpatialScene
        from spatial_vlm_ros.srv import SpatialQuery

        self.namespace = namespace
        self.frame_id = f'{namespace.strip("/")}_color_optical_frame'
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.rgb = node.create_publisher(Image, f'{namespace}/color/image_raw', qos)
        self.depth = node.create_publisher(Image, f'{namespace}/depth/image_raw', qos)
        self.info = node.create_publisher(CameraInfo, f'{namespace}/color/camera_info', qos)
        self.published: list[int] = []
        self.scenes: list[tuple[float, Any]] = []  # (monotonic receive time, scene)
        node.create_subscription(
            SpatialScene,
            f'{namespace}/spatial_vlm/scene',
            lambda scene: self.scenes.append((time.monotonic(), scene)),
            10,
        )
        self.diagnostics: list[Any] = []
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.query = node.create_client(SpatialQuery, f'{namespace}/spatial_vlm/query')

    def _on_diagnostics(self, array: Any) -> None:
        self.diagnostics.extend(s for s in array.status if self.namespace in s.name)

    def subscribed(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.rgb, self.depth, self.info))

    def publish(self) -> None:
        stamp_ns = time.time_ns()
        rgb, depth, info = _camera_messages(stamp_ns, self.frame_id)
        self.info.publish(info)
        self.depth.publish(depth)
        self.rgb.publish(rgb)
        self.published.append(stamp_ns)

    def scenes_since(self, since: float) -> list[Any]:
        return [scene for received, scene in self.scenes if received >= since]


@dataclass
class Ros:
    """The test's own rclpy node and executor, with helpers to stream and spin."""

    node: Any
    executor: Any

    def spin(self, until: Callable[[], bool], timeout_s: float) -> bool:
        return spin_until(self.executor, until, timeout_s)

    def stream(
        self, cameras: list[Camera], until: Callable[[], bool], timeout_s: float, period_s: float
    ) -> bool:
        """Publish a frame on every camera each ``period_s`` until ``until()`` or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for camera in cameras:
                camera.publish()
            if self.spin(until, period_s):
                return True
        return until()


@pytest.fixture(scope='module')
def ros(workers: list[VllmServer], rclpy_session: Any) -> Iterator[Ros]:
    """The test's node (made after the workers are up, so a skip costs nothing)."""
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy_session.create_node(f'router_live_{os.getpid()}')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        yield Ros(node, executor)
    finally:
        executor.shutdown()
        node.destroy_node()


def start_node(
    namespace: str,
    server_url: str,
    model_dir: Path,
    log_path: Path,
    vocabulary: tuple[str, ...] = ('cup', 'chair'),
    max_in_flight: int = 2,
) -> subprocess.Popen[bytes]:
    """The node exactly as a user starts it, with ``engine: openai`` pointed at the router."""
    node_exe = Path(sys.executable).parent / 'spatial_vlm_node'
    command = [
        str(node_exe), '--ros-args',
        '--params-file', str(REPO_ROOT / 'config' / 'spatial_vlm.yaml'),
        '-r', f'__ns:={namespace}',
        '-p', 'engine:=openai',
        '-p', f'server_url:={server_url}',
        '-p', f'model:={model_dir}',
        '-p', f'vocabulary:=[{", ".join(repr(word) for word in vocabulary)}]',
        '-p', 'rate_hz:=0.0',
        '-p', f'max_in_flight:={max_in_flight}',
        '-p', 'max_frame_age_s:=30.0',
        '-p', 'request_timeout_s:=60.0',
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with log_path.open('wb') as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_node(process: subprocess.Popen[bytes], log_path: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait(timeout=10)
    assert code in (0, -signal.SIGINT), log_path.read_text(errors='replace')[-3000:]


def _wait_for_quiet(router: RouterProcess, quiet_s: float = 2.0, timeout_s: float = 90.0) -> None:
    """Wait until the router's answered count stops moving (nothing left in flight)."""
    last, still_since = -1.0, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = sum(router.successes_per_worker().values())
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet_s:
            return
        time.sleep(0.25)


def _delta(after: dict[str, float], before: dict[str, float], urls: list[str]) -> dict[str, float]:
    """Per-worker growth of a counter; a worker the router never used has no sample yet."""
    return {url: after.get(url, 0.0) - before.get(url, 0.0) for url in urls}


# --- 2. a router that is down, or that has no healthy worker ------------------------------------


def test_a_router_down_or_without_workers_is_an_error_with_the_fix(
    workers: list[VllmServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    from spatial_vlm_ros.engines.base import EngineUnavailableError, HealthLevel

    dead_port = free_port()  # nothing listens there: a worker that never came up
    lonely = RouterProcess([f'http://127.0.0.1:{dead_port}'], tmp_path / 'lonely.log').start()
    down = RouterProcess([w.url for w in workers], tmp_path / 'down.log').start()
    down_url = down.url
    down.stop()  # a router that was there and is gone: connection refused

    async def check(url: str) -> tuple[Any, BaseException | None]:
        engine = _engine(url, tiny_model_dir, health_timeout_s=2.0)
        try:
            health = await engine.health()
            try:
                await engine.start()
            except EngineUnavailableError as error:
                return health, error
            return health, None
        finally:
            await engine.shutdown()

    try:
        # Up but no healthy worker: /health would say 200, /readiness says 503.
        assert lonely.readiness()[0] == 503
        health, error = asyncio.run(check(lonely.url))
        assert health.level == HealthLevel.ERROR, health
        assert 'no healthy worker' in health.message, health
        assert 'workers' in health.fix, health
        assert isinstance(error, EngineUnavailableError) and health.fix in str(error)

        health, error = asyncio.run(check(down_url))
        assert health.level == HealthLevel.ERROR, health
        assert 'no server answers' in health.message and down_url in health.message, health
        assert 'server_url' in health.fix, health
        assert isinstance(error, EngineUnavailableError)
    finally:
        lonely.stop()


# --- 2b. TLS and an API key, as docs/SCALING.md deploys the router -------------------------------


def test_router_over_tls_with_an_api_key_read_from_the_named_env_var(
    workers: list[VllmServer],
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from spatial_vlm_ros.engines.results import GroundingResult

    cert, key = tmp_path / 'router.crt', tmp_path / 'router.key'
    subprocess.run(
        ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
         '-keyout', str(key), '-out', str(cert), '-subj', '/CN=127.0.0.1',
         '-addext', 'subjectAltName=IP:127.0.0.1'],
        check=True, capture_output=True,
    )  # fmt: skip
    secure = RouterProcess(
        [w.url for w in workers],
        tmp_path / 'router.log',
        scheme='https',
        extra_args=(
            '--api-key', 'router-secret',
            '--tls-cert-path', str(cert), '--tls-key-path', str(key),
        ),
    ).start()  # fmt: skip
    try:
        body = {'model': str(tiny_model_dir), 'messages': [{'role': 'user', 'content': 'hi'}]}
        chat = f'{secure.url}/v1/chat/completions'
        with httpx.Client(verify=str(cert), timeout=30) as client:
            assert client.post(chat, json=body).status_code == 401  # no key
            wrong = {'Authorization': 'Bearer nope'}
            assert client.post(chat, json=body, headers=wrong).status_code == 401
            assert client.get(f'{secure.url}/readiness').status_code == 200  # probes stay open
        with pytest.raises(httpx.TransportError):  # TLS only: plain HTTP gets no answer
            httpx.get(f'http://127.0.0.1:{secure.port}/readiness', timeout=5)

        # The node's way: the key from the env var named by api_key_env, the private CA from
        # SSL_CERT_FILE (httpx honours it).
        monkeypatch.setenv('ROUTER_API_KEY', 'router-secret')
        monkeypatch.setenv('SSL_CERT_FILE', str(cert))

        async def ground() -> Any:
            engine = _engine(secure.url, tiny_model_dir, api_key_env='ROUTER_API_KEY')
            try:
                await engine.start()
                return await engine.generate(_ground_request(99))
            finally:
                await engine.shutdown()

        answer = asyncio.run(ground())
        assert isinstance(answer.parsed, GroundingResult), answer.raw_text
        keyed = _engine(secure.url, tiny_model_dir, api_key_env='ROUTER_API_KEY')
        assert 'router-secret' not in repr(keyed)
    finally:
        secure.stop()


# --- 3. two nodes share one cache-aware router --------------------------------------------------

# sglang-router 0.3.2's cache_aware keys on the text of the chat messages (images are not part of
# the key). Two cameras grounding different classes send prompts that share ~60% of their text
# (the cookbook sentence around the class list), above the default --cache-threshold 0.3, so the
# second camera would follow the first onto its worker. A threshold above that share keeps each
# camera's prompt on the worker that first served it and sends a new prompt to the less loaded
# worker (docs/SCALING.md).
CACHE_AWARE_ARGS = ('--cache-threshold', '0.9')


@pytest.mark.ros
def test_two_nodes_share_a_cache_aware_router_each_camera_on_one_worker(
    workers: list[VllmServer], ros: Ros, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from router_harness import FAST_FAILOVER_ARGS

    shared = RouterProcess(
        [w.url for w in workers],
        tmp_path / 'router.log',
        policy='cache_aware',
        extra_args=(*FAST_FAILOVER_ARGS, *CACHE_AWARE_ARGS),
    ).start()
    cameras = {'/cam_a': ('cup', 'chair'), '/cam_b': ('person', 'door')}
    nodes = {
        # One request in flight per node: every answer becomes a scene (with two, an answer
        # overtaken by a newer frame's is dropped), so scenes count the requests of each camera.
        ns: start_node(ns, shared.url, tiny_model_dir, tmp_path / f'{ns[1:]}.log', words, 1)
        for ns, words in cameras.items()
    }
    cam_a, cam_b = (Camera(ros.node, ns) for ns in cameras)
    splits: dict[str, dict[str, float]] = {}
    try:
        assert shared.wait_for_healthy({w.url for w in workers}, 30.0), shared.log
        assert ros.spin(lambda: cam_a.subscribed() and cam_b.subscribed(), 90.0), 'no nodes'

        def window(label: str, streaming: list[Camera], frames: int) -> dict[str, float]:
            before = shared.successes_per_worker()
            since = time.monotonic()
            assert ros.stream(
                streaming,
                lambda: all(len(c.scenes_since(since)) >= frames for c in streaming),
                180.0,
                0.3,
            ), f'{label}: scenes stopped'
            _wait_for_quiet(shared)
            ros.spin(lambda: False, 1.0)  # the last scenes reach us
            urls = [w.url for w in workers]
            splits[label] = _delta(shared.successes_per_worker(), before, urls)
            return splits[label]

        # Both cameras at once: where each camera's prompt first lands depends on load.
        together_since = time.monotonic()
        together = window('both', [cam_a, cam_b], 6)
        counts = {c.namespace: len(c.scenes_since(together_since)) for c in (cam_a, cam_b)}
        # Then each alone: all of its requests go to one worker, every time.
        alone_a = window('cam_a alone', [cam_a], 5)
        alone_b = window('cam_b alone', [cam_b], 5)
        for label, split in (('cam_a', alone_a), ('cam_b', alone_b)):
            assert sorted(split.values())[0] == 0, f'{label} was split over workers: {splits}'
        worker_a = max(alone_a, key=alone_a.__getitem__)
        worker_b = max(alone_b, key=alone_b.__getitem__)
        # While both streamed, each worker got exactly its camera(s)' requests.
        expected = {w.url: 0.0 for w in workers}
        expected[worker_a] += counts['/cam_a']
        expected[worker_b] += counts['/cam_b']
        assert together == expected, (together, expected, splits)
        print(f'per-worker split: {splits}; camera a on {worker_a}, camera b on {worker_b}')

        # Each node got its own scenes: its camera's frame and stamps, its classes only.
        for camera in (cam_a, cam_b):
            published = set(camera.published)
            for _, scene in camera.scenes:
                assert scene.header.frame_id == camera.frame_id
                assert scene.header.stamp.sec * 10**9 + scene.header.stamp.nanosec in published
    finally:
        for ns, process in nodes.items():
            stop_node(process, tmp_path / f'{ns[1:]}.log')
        shared.stop()


# --- 4. a worker killed mid-stream, then restarted ----------------------------------------------


@pytest.mark.ros
def test_node_keeps_serving_through_a_killed_worker_which_rejoins_after_restart(
    router: RouterProcess,
    workers: list[VllmServer],
    ros: Ros,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from spatial_vlm_ros.srv import SpatialQuery

    camera = Camera(ros.node, '/robot_a')
    log_path = tmp_path / 'node.log'
    process = start_node('/robot_a', router.url, tiny_model_dir, log_path)
    queries: list[Any] = []

    def ask() -> None:
        queries.append(camera.query.call_async(SpatialQuery.Request(question='What is left?')))

    def log() -> str:
        return log_path.read_text(errors='replace')[-3000:]

    try:
        assert ros.spin(camera.subscribed, 90.0), f'the node never subscribed:\n{log()}'
        assert camera.query.wait_for_service(timeout_sec=30.0), log()
        assert ros.stream([camera], lambda: len(camera.scenes) >= 4, 120.0, 0.25), log()
        ask()

        # Kill worker 1 while the node has requests in flight and a question pending.
        victim, survivor = workers[1], workers[0]
        ros.stream([camera], lambda: False, 1.0, 0.25)
        killed_at = time.monotonic()
        victim.kill()
        for _ in range(3):
            ros.stream([camera], lambda: False, 1.5, 0.25)
            ask()
        assert ros.stream(
            [camera], lambda: len(camera.scenes_since(killed_at)) >= 8, 120.0, 0.25
        ), f'scenes stopped after the kill:\n{log()}'
        assert ros.spin(lambda: all(q.done() for q in queries), 120.0), 'a ~/query got no reply'
        replies = [q.result() for q in queries]
        # Every question reached a worker through the router and came back answered (HTTP 200).
        # The tiny model's weights are random, so an answer may be schema-valid but empty, which
        # the node reports as "no structured answer" (a model answer, not a failure to reach one);
        # an engine or router failure ("EngineError ... failed after N attempt(s)") fails here.
        unanswered = [
            r.message for r in replies
            if not r.success and not r.message.startswith('no answer: no structured answer')
        ]  # fmt: skip
        assert not unanswered, unanswered
        # The router's health checks took the dead worker out; /readiness still says ready.
        assert router.wait_for_healthy({survivor.url}, 30.0), router.log
        status, readiness = router.readiness()
        assert (status, readiness['healthy_workers'], readiness['total_workers']) == (200, 1, 2)
        assert camera.scenes[-1][1].engine == 'openai'
        # Requests did reach the dead worker (in flight at the kill, or sent before the health
        # checks caught it): the router failed them there and retried them on the survivor.
        samples = router.metrics()
        failed = per_label(samples, 'smg_worker_cb_outcomes_total', 'worker', outcome='failure')
        retried = total(samples, 'smg_worker_retries_total')
        print(f'after the kill: failures per worker {failed}, retries {retried}')
        assert failed.get(victim.url, 0) >= 1 and retried >= 1, (failed, retried)

        # Restart it: the router's health checks bring it back and requests reach it again.
        victim.start()
        assert router.wait_for_healthy({survivor.url, victim.url}, 30.0), router.log
        before = router.successes_per_worker().get(victim.url, 0.0)
        rejoined_at = time.monotonic()
        assert ros.stream(
            [camera],
            lambda: router.successes_per_worker().get(victim.url, 0.0) - before >= 3,
            120.0,
            0.25,
        ), f'the restarted worker got no requests: {router.successes_per_worker()}'
        assert len(camera.scenes_since(rejoined_at)) >= 3
    finally:
        stop_node(process, log_path)
    # Nothing was lost on the node's side: no engine call failed or timed out. (errors.
    # engine_output counts scenes whose random-weight model output held no usable box: answers,
    # not failures.)
    failures = {
        (kv.key, kv.value)
        for status in camera.diagnostics
        for kv in status.values
        if kv.key in ('errors.frame', 'errors.timeout') and kv.value != '0'
    }
    assert camera.diagnostics and not failures, failures
