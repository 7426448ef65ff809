# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Engine faults, end to end: the OpenAI engine against a real HTTP server in a child process.

The server (stdlib only, on 127.0.0.1) speaks the chat-completions API and misbehaves on request:
it hangs, answers slowly, answers with non-JSON or the wrong JSON, returns HTTP errors, drops the
connection, is shut down and comes back, or is SIGKILLed mid-request. The engine must raise a
typed EngineError (EngineTimeout for deadlines) and never hang past its deadline, and serve again
as soon as the server does. Through the FrameScheduler, the same faults count as drops while the
worker keeps publishing the good frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import json
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from spatial_vlm_ros.core.scheduling import (
    DROP_FAILED,
    DROP_TIMEOUT,
    FrameScheduler,
    SchedulerConfig,
    StampedFrame,
)
from spatial_vlm_ros.engines.base import (
    EngineError,
    EngineRequest,
    EngineResponse,
    EngineTimeout,
    TaskKind,
)
from spatial_vlm_ros.engines.openai_engine import OpenAIEngine
from spatial_vlm_ros.engines.parsing import GroundingResult, ParseFailure

GROUNDING_TEXT = json.dumps(
    [
        {'bbox_2d': [100, 400, 300, 700], 'label': 'mug'},
        {'bbox_2d': [600, 350, 850, 700], 'label': 'box'},
    ]
)
# The engine should serve again within ~2 s of the server's return (measured: ~10 ms). The bound
# is generous because this is a correctness property (no dead pooled connection is reused, no
# long backoff is waited out), not a speed claim.
RECOVERY_BOUND_S = 5.0

SERVER_SOURCE = r"""
import json, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT = sys.argv[2]
lock = threading.Lock()
state = {'mode': 'ok', 'script': [], 'requests': 0, 'images': 0, 'schemas': 0, 'auth': ''}


def completion(text):
    return json.dumps({
        'id': 'x', 'object': 'chat.completion', 'model': 'fake',
        'choices': [{'index': 0, 'finish_reason': 'stop',
                     'message': {'role': 'assistant', 'content': text}}],
        'usage': {'prompt_tokens': 310, 'completion_tokens': 40},
    }).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type='application/json', headers=()):
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # vLLM's endpoints: /health, /version, /v1/models
        if self.path == '/_stats':
            with lock:
                self.send(200, json.dumps(state).encode())
        elif self.path == '/health':
            self.send(200, b'')
        elif self.path == '/version':
            self.send(200, b'{"version": "fake"}')
        elif self.path == '/v1/models':
            self.send(200, b'{"object": "list", "data": [{"id": "fake", "object": "model"}]}')
        else:
            self.send(404, b'{"detail": "Not Found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        if self.path == '/_mode':
            config = json.loads(body)
            with lock:
                state['mode'] = config.get('mode', 'ok')
                state['script'] = list(config.get('script', []))
            self.send(200, b'{}')
            return
        request = json.loads(body)
        with lock:
            state['requests'] += 1
            state['images'] += json.dumps(request['messages']).count('data:image/jpeg;base64,')
            state['schemas'] += int('response_format' in request)
            state['auth'] = self.headers.get('Authorization', '')
            mode = state['script'].pop(0) if state['script'] else state['mode']
        kind, _, argument = mode.partition(':')
        if kind == 'sleep':
            time.sleep(float(argument))
            kind = 'ok'
        if kind == 'ok':
            self.send(200, completion(CONTENT))
        elif kind == 'text':
            self.send(200, completion(argument))
        elif kind == 'status':
            self.send(int(argument), b'{"error": "injected"}', headers=[('Retry-After', '0')])
        elif kind == 'not_json':
            self.send(200, b'<html>gateway says hello</html>', 'text/html')
        elif kind == 'no_choices':
            self.send(200, b'{"object": "chat.completion", "choices": []}')
        elif kind == 'drop':
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


server = ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class FakeServer:
    """The chat-completions server as a child process; restartable on the same port."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}'

    def start(self) -> None:
        # -S: no site-packages (the stdlib is all it needs), so it starts in a few milliseconds.
        self.process = subprocess.Popen(
            [sys.executable, '-S', str(self.script), str(self.port), GROUNDING_TEXT],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def set(self, mode: str = 'ok', script: tuple[str, ...] = ()) -> None:
        httpx.post(
            f'{self.url}/_mode', json={'mode': mode, 'script': list(script)}
        ).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f'{self.url}/_stats').json()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[FakeServer]:
    script = tmp_path / 'fake_openai_server.py'
    script.write_text(SERVER_SOURCE)
    fake = FakeServer(script)
    yield fake
    fake.close()


def make_engine(server: FakeServer, **options: Any) -> OpenAIEngine:
    settings: dict[str, Any] = {
        'timeout_s': 10.0,
        'connect_timeout_s': 1.0,
        'max_attempts': 3,
        'backoff_initial_s': 0.05,
        'backoff_max_s': 0.2,
        **options,
    }
    return OpenAIEngine(
        'qwen3-vl-4b-instruct-fp8', base_url=server.url, served_model_name='fake', **settings
    )


def request(stamp_ns: int = 1, timeout_s: float | None = None) -> EngineRequest:
    image = np.full((480, 640, 3), 90, dtype=np.uint8)
    return EngineRequest(
        images=(image,), task=TaskKind.GROUND, stamp_ns=stamp_ns, timeout_s=timeout_s
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _with_engine(engine: OpenAIEngine, body: Any) -> Any:
    await engine.start()
    try:
        return await body(engine)
    finally:
        await engine.shutdown()


def assert_grounded(response: EngineResponse) -> None:
    assert isinstance(response.parsed, GroundingResult), response.parsed
    assert sorted(d.label for d in response.parsed.detections) == ['box', 'mug']


# ----------------------------------------------------------------------------- direct faults


def test_a_healthy_server_answers_with_the_image_and_the_schema(server: FakeServer) -> None:
    response = run(_with_engine(make_engine(server), lambda e: e.generate(request())))
    assert_grounded(response)
    assert response.tokens.completion_tokens == 40 and response.tokens.image_tokens == 300
    stats = server.stats()
    assert stats['requests'] == 1 and stats['images'] == 1 and stats['schemas'] == 1


def test_a_hanging_server_times_out_and_the_next_request_succeeds(server: FakeServer) -> None:
    server.set(script=('sleep:30',))

    async def body(engine: OpenAIEngine) -> EngineResponse:
        with pytest.raises(EngineTimeout, match='deadline'):
            await engine.generate(request(timeout_s=0.5))
        return await engine.generate(request())

    assert_grounded(run(_with_engine(make_engine(server), body)))


def test_a_slow_answer_within_the_deadline_is_served(server: FakeServer) -> None:
    server.set(mode='sleep:0.4')
    response = run(_with_engine(make_engine(server), lambda e: e.generate(request(timeout_s=10))))
    assert_grounded(response)
    assert response.timings.inference_s >= 0.4  # the server's own sleep, not a speed claim


@pytest.mark.parametrize(
    'mode, message',
    [
        ('not_json', 'not JSON'),
        ('no_choices', 'malformed'),
        ('status:400', 'HTTP 400'),
        ('status:404', 'HTTP 404'),
    ],
)
def test_malformed_or_refused_answers_raise_engine_error(
    server: FakeServer, mode: str, message: str
) -> None:
    server.set(script=(mode,))

    async def body(engine: OpenAIEngine) -> EngineResponse:
        with pytest.raises(EngineError, match=message) as raised:
            await engine.generate(request())
        assert not isinstance(raised.value, EngineTimeout)
        return await engine.generate(request())

    assert_grounded(run(_with_engine(make_engine(server), body)))
    assert server.stats()['requests'] == 2  # not retried: retrying cannot fix these


@pytest.mark.parametrize('mode', ['status:500', 'status:503', 'status:429', 'drop'])
def test_transient_failures_are_retried(server: FakeServer, mode: str) -> None:
    server.set(script=(mode, mode))
    response = run(
        _with_engine(make_engine(server, max_attempts=3), lambda e: e.generate(request()))
    )
    assert_grounded(response)
    assert server.stats()['requests'] == 3


def test_persistent_server_errors_give_up_after_max_attempts(server: FakeServer) -> None:
    server.set(mode='status:503')

    async def body(engine: OpenAIEngine) -> None:
        with pytest.raises(EngineError, match='after 3 attempt'):
            await engine.generate(request())

    run(_with_engine(make_engine(server, max_attempts=3), body))
    assert server.stats()['requests'] == 3


def test_garbage_model_text_is_a_parse_failure_not_an_exception(server: FakeServer) -> None:
    server.set(script=('text:I am sorry, I cannot see any objects.',))
    response = run(_with_engine(make_engine(server), lambda e: e.generate(request())))
    assert isinstance(response.parsed, ParseFailure)
    assert response.raw_text.startswith('I am sorry')


def _recovers(server: FakeServer, kill_signal: int) -> tuple[float, int]:
    """Serve, stop the server with ``kill_signal``, fail, restart, serve again.

    Returns (seconds from the restarted server accepting to the first answer, requests it saw).
    """

    async def body(engine: OpenAIEngine) -> tuple[float, int]:
        assert_grounded(await engine.generate(request()))
        server.stop(kill_signal)
        with pytest.raises(EngineError) as raised:
            await engine.generate(request())
        assert not isinstance(raised.value, EngineTimeout), raised.value
        assert 'connection' in str(raised.value).lower()
        assert not await engine.health()
        server.start()  # same port
        returned = time.monotonic()
        response = await engine.generate(request())  # the first request after the return
        recovered_s = time.monotonic() - returned
        assert_grounded(response)
        assert await engine.health()
        return recovered_s, server.stats()['requests']

    return run(_with_engine(make_engine(server), body))


def test_server_down_then_back_serves_the_next_request(server: FakeServer) -> None:
    recovered_s, requests = _recovers(server, signal.SIGTERM)
    assert requests == 1
    assert recovered_s < RECOVERY_BOUND_S


def test_killed_server_process_fails_fast_then_recovers_after_restart(server: FakeServer) -> None:
    recovered_s, requests = _recovers(server, signal.SIGKILL)
    assert requests == 1
    assert recovered_s < RECOVERY_BOUND_S


def test_server_killed_mid_request_fails_the_request_with_engine_error(server: FakeServer) -> None:
    server.set(mode='sleep:60')

    async def body(engine: OpenAIEngine) -> EngineResponse:
        pending = asyncio.ensure_future(engine.generate(request(timeout_s=60)))
        while server.stats()['requests'] < 1:
            await asyncio.sleep(0.02)
        server.stop(signal.SIGKILL)
        with pytest.raises(EngineError) as raised:
            await pending  # well before its 60 s deadline: the connection is gone
        assert not isinstance(raised.value, EngineTimeout), raised.value
        server.start()
        return await engine.generate(request())

    assert_grounded(run(_with_engine(make_engine(server), body)))


def test_the_api_key_is_sent_but_never_shown(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = 'sk-test-4f1d8c-never-print-me'
    monkeypatch.setenv('SPATIAL_VLM_TEST_KEY', secret)
    engine = make_engine(server, api_key_env='SPATIAL_VLM_TEST_KEY', max_attempts=2)
    server.set(script=('status:503', 'ok', 'status:401'))
    caplog.set_level('DEBUG')

    async def body(engine: OpenAIEngine) -> str:
        assert_grounded(await engine.generate(request()))  # after one retried 503
        with pytest.raises(EngineError) as raised:
            await engine.generate(request())
        return str(raised.value)

    message = run(_with_engine(engine, body))
    assert server.stats()['auth'] == f'Bearer {secret}'
    assert 'HTTP 401' in message
    for text in (message, repr(engine), str(engine), caplog.text):
        assert secret not in text


# ----------------------------------------------------------------------------- via the scheduler


def test_faults_through_the_scheduler_are_drops_and_the_worker_keeps_going(
    server: FakeServer,
) -> None:
    # Per request, in order: good, refused, hung (past the scheduler's deadline), malformed,
    # killed connection on every attempt, good, good.
    server.set(script=('ok', 'status:400', 'sleep:30', 'not_json', 'drop', 'drop', 'drop', 'ok'))
    expected = ['published', DROP_FAILED, DROP_TIMEOUT, DROP_FAILED, DROP_FAILED, 'published']
    errors: list[BaseException] = []

    async def body(engine: OpenAIEngine) -> tuple[FrameScheduler[int, EngineResponse], list[int]]:
        loop = asyncio.get_running_loop()
        published: list[int] = []

        async def process(frame: StampedFrame[int]) -> EngineResponse:
            return await engine.generate(request(frame.stamp_ns))

        scheduler: FrameScheduler[int, EngineResponse] = FrameScheduler(
            process,
            lambda frame, response: published.append(frame.stamp_ns),
            SchedulerConfig(rate_hz=0.0, max_in_flight=1, max_age_s=60.0, timeout_s=1.5),
            clock_ns=time.time_ns,
            on_error=lambda frame, error: errors.append(error),
        )
        stop = asyncio.Event()
        worker = asyncio.ensure_future(scheduler.run(stop))
        outcomes: list[str] = []
        for _ in expected:
            before = (len(published), sum(scheduler.drops.values()))
            scheduler.submit(time.time_ns(), 0, loop)
            while (len(published), sum(scheduler.drops.values())) == before:
                await asyncio.sleep(0.01)
                assert not worker.done(), 'the scheduler worker died'
            if len(published) > before[0]:
                outcomes.append('published')
            else:
                outcomes.append(next(k for k, v in scheduler.drops.items() if v))
                scheduler.drops.clear()
        assert outcomes == expected, outcomes
        assert not worker.done()
        stop.set()
        await worker
        return scheduler, published

    scheduler, published = run(_with_engine(make_engine(server, max_attempts=3), body))
    assert scheduler.published == len(published) == 2
    assert scheduler.in_flight == 0
    assert all(isinstance(error, (EngineError, asyncio.TimeoutError)) for error in errors), errors
    assert len(errors) == 4
