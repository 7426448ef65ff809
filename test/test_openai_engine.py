# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""OpenAIEngine against a real chat-completions HTTP server on 127.0.0.1 started by the test.

The server speaks the subset of the API SGLang documents: POST /v1/chat/completions, GET /health
and GET /v1/models. It records every request and the peak number of requests in flight.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import socket
import threading
from typing import Any

import cv2
import numpy as np
import pytest

from spatial_vlm_ros.engines.base import (
    EngineError,
    EngineRequest,
    EngineTimeout,
    SamplingParams,
    TaskKind,
)
from spatial_vlm_ros.engines.imaging import InvalidImageError
from spatial_vlm_ros.engines.openai_engine import FINISH_LENGTH_FLAG, OpenAIEngine
from spatial_vlm_ros.engines.parsing import AnswerResult, GroundingResult
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.schema import openai_response_format

GROUNDING_TEXT = '```json\n[{"bbox_2d": [100, 200, 500, 1000], "label": "cup"}]\n```'


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as is; None -> a default completion
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # wait until the test releases the server


def completion(content: str, *, finish_reason: str = 'stop', reasoning: str | None = None):
    message: dict[str, Any] = {'role': 'assistant', 'content': content}
    if reasoning is not None:
        message['reasoning_content'] = reasoning
    return {
        'id': 'chatcmpl-test',
        'object': 'chat.completion',
        'model': 'served-model',
        'choices': [{'index': 0, 'message': message, 'finish_reason': finish_reason}],
        'usage': {'prompt_tokens': 345, 'completion_tokens': 21, 'total_tokens': 366},
    }


class FakeChatServer:
    """A chat-completions server on an ephemeral port with scripted replies."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default = Reply(body=completion(GROUNDING_TEXT))
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.health_status = 200
        self.models_status = 200
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None):
                if isinstance(body, dict | list):
                    payload = json.dumps(body).encode()
                elif isinstance(body, str):
                    payload = body.encode()
                else:
                    payload = body or b''
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path == '/health':
                    self._send(server.health_status, {})
                elif self.path == '/v1/models':
                    self._send(server.models_status, {'data': [{'id': 'served-model'}]})
                else:
                    self._send(404, {'error': 'not found'})

            def do_POST(self):
                length = int(self.headers.get('Content-Length', 0))
                body = json.loads(self.rfile.read(length))
                if self.path != '/v1/chat/completions':
                    self._send(404, {'error': 'not found'})
                    return
                with server._lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    reply = server.replies.popleft() if server.replies else server.default
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if reply.hold:
                        server.release.wait(10)
                    elif server.delay_s:
                        server.release.wait(server.delay_s)
                    self._send(reply.status, reply.body, reply.headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeChatServer()
    yield fake
    fake.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return f'http://127.0.0.1:{port}'


def image(height: int = 480, width: int = 640) -> np.ndarray:
    rng = np.random.default_rng(1)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2] = (220, 40, 40)
    frame[:, width // 2 :] = (40, 40, 220)
    return np.clip(frame + rng.integers(0, 8, frame.shape), 0, 255).astype(np.uint8)


def ground_request(**kwargs) -> EngineRequest:
    return EngineRequest(
        images=(image(),), task=TaskKind.GROUND, vocabulary=('cup', 'table'), **kwargs
    )


def make_engine(url: str, **kwargs) -> OpenAIEngine:
    options = {'backoff_initial_s': 0.01, 'backoff_max_s': 0.05, 'timeout_s': 10.0}
    options.update(kwargs)
    return OpenAIEngine('qwen3-vl-4b-instruct-fp8', base_url=url, **options)


def call(engine: OpenAIEngine, *requests: EngineRequest):
    async def go():
        try:
            return await asyncio.gather(*(engine.generate(r) for r in requests))
        finally:
            await engine.shutdown()

    results = asyncio.run(go())
    return results[0] if len(results) == 1 else results


def decode_data_url(url: str) -> np.ndarray:
    prefix = 'data:image/jpeg;base64,'
    assert url.startswith(prefix)
    raw = base64.b64decode(url[len(prefix) :])
    assert raw[:2] == b'\xff\xd8'  # JPEG SOI
    decoded = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------ request shape


def test_grounding_request_shape_and_parsed_response(server):
    response = call(make_engine(server.url), ground_request())
    assert len(server.requests) == 1
    body = server.requests[0]
    assert body['model'] == 'Qwen/Qwen3-VL-4B-Instruct-FP8'
    assert body['stream'] is False
    assert body['temperature'] == 0.0  # greedy grounding
    assert (
        body['max_tokens']
        == resolve_profile('qwen3-vl-4b-instruct-fp8').grounding_sampling.max_new_tokens
    )
    assert body['response_format'] == openai_response_format()
    assert 'presence_penalty' not in body
    (message,) = body['messages']
    assert message['role'] == 'user'
    image_part, text_part = message['content']
    assert image_part['type'] == 'image_url' and text_part['type'] == 'text'
    assert '"cup, table"' in text_part['text']
    sent = decode_data_url(image_part['image_url']['url'])
    assert sent.shape == (480, 640, 3)
    assert np.abs(sent.astype(int) - image().astype(int)).mean() < 6  # same picture, JPEG noise

    assert isinstance(response.parsed, GroundingResult)
    (cup,) = response.parsed.detections
    assert cup.label == 'cup'
    assert cup.box.as_list() == [64.0, 96.0, 320.0, 480.0]
    assert response.tokens.prompt_tokens == 345
    assert response.tokens.completion_tokens == 21
    assert response.tokens.image_tokens == 300
    assert response.raw_text == GROUNDING_TEXT
    assert response.engine == 'openai' and response.flags == ()
    assert response.timings.total_s >= response.timings.inference_s > 0


def test_large_frames_are_resized_client_side(server):
    request = EngineRequest(images=(image(1080, 1920),), task=TaskKind.GROUND)
    response = call(make_engine(server.url), request)
    url = server.requests[0]['messages'][0]['content'][0]['image_url']['url']
    assert decode_data_url(url).shape == (832, 1504, 3)
    # Relative coordinates map back onto the original 1920x1080 frame.
    assert response.parsed.detections[0].box.as_list() == [192.0, 216.0, 960.0, 1080.0]


def test_question_request_uses_card_sampling_and_no_schema(server):
    server.default = Reply(body=completion('The cup is left of the table.'))
    request = EngineRequest(
        images=(image(),),
        task=TaskKind.QUESTION,
        question='Where is the cup?',
        vocabulary=('cup',),
    )
    response = call(make_engine(server.url), request)
    body = server.requests[0]
    assert 'response_format' not in body
    assert (body['temperature'], body['top_p'], body['top_k']) == (0.7, 0.8, 20)
    assert body['presence_penalty'] == 1.5
    assert body['messages'][0]['content'][-1]['text'] == 'Where is the cup?'
    assert isinstance(response.parsed, AnswerResult)
    assert response.parsed.referenced_labels == ('cup',)


def test_explicit_sampling_and_unconstrained_grounding(server):
    sampling = SamplingParams(max_new_tokens=77, temperature=0.2, top_k=5, seed=3)
    call(
        make_engine(server.url, sampling_extras=False),
        ground_request(sampling=sampling, constrained=False),
    )
    body = server.requests[0]
    assert (body['max_tokens'], body['temperature'], body['seed']) == (77, 0.2, 3)
    assert 'top_k' not in body and 'response_format' not in body


def test_reasoning_field_is_folded_back_into_a_think_block(server):
    server.default = Reply(body=completion('\\boxed{left}', reasoning='cup x < table x'))
    request = EngineRequest(images=(image(),), task=TaskKind.QUESTION, question='q')
    response = call(make_engine(server.url), request)
    assert response.raw_text == '<think>cup x < table x</think>\\boxed{left}'
    assert response.parsed.reasoning == 'cup x < table x'
    assert response.parsed.answer == 'left'


def test_length_finish_is_flagged_and_partial_json_recovered(server):
    text = '[{"bbox_2d": [0, 0, 10, 10], "label": "a"}, {"bbox_2d": [0, 0'
    server.default = Reply(body=completion(text, finish_reason='length'))
    response = call(make_engine(server.url), ground_request())
    assert response.flags == (FINISH_LENGTH_FLAG,)
    assert response.parsed.truncated
    assert [d.label for d in response.parsed.detections] == ['a']


# ------------------------------------------------------------------ retries and errors


def test_503_then_success_is_retried(server):
    server.replies.extend([Reply(503, {'error': 'warming up'}), Reply(500, 'oops')])
    response = call(make_engine(server.url), ground_request())
    assert len(server.requests) == 3
    assert [d.label for d in response.parsed.detections] == ['cup']


def test_429_honours_retry_after(server):
    server.replies.append(Reply(429, {'error': 'busy'}, {'Retry-After': '0'}))
    call(make_engine(server.url), ground_request())
    assert len(server.requests) == 2


def test_attempts_are_bounded(server):
    server.default = Reply(503, {'error': 'down'})
    with pytest.raises(EngineError) as info:
        call(make_engine(server.url, max_attempts=3), ground_request())
    assert len(server.requests) == 3
    assert 'HTTP 503' in str(info.value) and '3 attempt' in str(info.value)
    assert not isinstance(info.value, EngineTimeout)


def test_client_errors_are_not_retried(server):
    server.default = Reply(400, {'error': 'bad image'})
    with pytest.raises(EngineError) as info:
        call(make_engine(server.url), ground_request())
    assert len(server.requests) == 1
    assert 'HTTP 400' in str(info.value) and 'bad image' in str(info.value)


def test_backoff_never_runs_past_the_deadline(server):
    server.default = Reply(503, {'error': 'down'})
    engine = make_engine(server.url, backoff_initial_s=30.0, backoff_max_s=30.0)
    with pytest.raises(EngineTimeout) as info:
        call(engine, ground_request(timeout_s=0.5))
    assert len(server.requests) == 1
    assert 'deadline' in str(info.value)


def test_slow_server_times_out(server):
    server.default = Reply(body=completion(GROUNDING_TEXT), hold=True)
    with pytest.raises(EngineTimeout):
        call(make_engine(server.url), ground_request(timeout_s=0.3))


@pytest.mark.parametrize(
    ('body', 'message'),
    [
        ('this is not json', 'not JSON'),
        ({'choices': []}, 'malformed'),
        ({'unexpected': True}, 'malformed'),
        ({'choices': [{'message': {'content': 5}}]}, 'not text'),
    ],
)
def test_malformed_bodies_are_engine_errors(server, body, message):
    server.default = Reply(200, body)
    with pytest.raises(EngineError) as info:
        call(make_engine(server.url), ground_request())
    assert message in str(info.value)
    assert len(server.requests) == 1


def test_connection_refused_is_retried_then_reported():
    engine = make_engine(closed_port_url(), max_attempts=2)
    with pytest.raises(EngineError) as info:
        call(engine, ground_request())
    assert 'connection error' in str(info.value)
    assert '2 attempt' in str(info.value)


def test_concurrency_limit_caps_requests_in_flight(server):
    server.delay_s = 0.2
    engine = make_engine(server.url, max_concurrency=2)
    responses = call(engine, *(ground_request() for _ in range(6)))
    assert len(responses) == 6 and len(server.requests) == 6
    assert server.max_in_flight == 2


def test_waiting_for_a_slot_times_out_without_leaking_it(server):
    server.replies.append(Reply(body=completion(GROUNDING_TEXT), hold=True))
    engine = make_engine(server.url, max_concurrency=1)

    async def scenario():
        first = asyncio.create_task(engine.generate(ground_request()))
        while not server.requests:  # the first request holds the only slot
            await asyncio.sleep(0.01)
        with pytest.raises(EngineTimeout) as info:
            await engine.generate(ground_request(timeout_s=0.2))
        assert 'free slot' in str(info.value)
        server.release.set()
        await first
        try:
            return await engine.generate(ground_request(timeout_s=5.0))
        finally:
            await engine.shutdown()

    response = asyncio.run(scenario())
    assert isinstance(response.parsed, GroundingResult)
    assert len(server.requests) == 2  # the timed-out request never reached the server


def test_bad_input_raises_typed_errors(server):
    engine = make_engine(server.url)
    with pytest.raises(InvalidImageError):
        call(engine, EngineRequest(images=(np.zeros((4, 4), np.uint8),), task=TaskKind.GROUND))
    with pytest.raises(InvalidImageError):
        call(engine, EngineRequest(images=(), task=TaskKind.GROUND))
    assert server.requests == []
    with pytest.raises(EngineError):
        OpenAIEngine(None, base_url='127.0.0.1:30000')
    with pytest.raises(EngineError):
        OpenAIEngine(None, max_concurrency=0)


# ------------------------------------------------------------------ key, health, url


def test_api_key_comes_from_the_named_env_var_and_never_leaks(server, monkeypatch):
    monkeypatch.setenv('SPATIAL_TEST_VLM_KEY', 'sk-very-secret')
    server.default = Reply(401, {'error': 'denied'})
    engine = make_engine(server.url, api_key_env='SPATIAL_TEST_VLM_KEY')
    assert 'sk-very-secret' not in repr(engine)
    assert 'SPATIAL_TEST_VLM_KEY' in repr(engine)
    with pytest.raises(EngineError) as info:
        call(engine, ground_request())
    assert server.headers[0]['Authorization'] == 'Bearer sk-very-secret'
    assert 'sk-very-secret' not in str(info.value)


def test_no_key_means_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    call(make_engine(server.url), ground_request())
    assert 'Authorization' not in server.headers[0]


def test_health_endpoints(server):
    async def health(url):
        engine = make_engine(url)
        try:
            return await engine.health()
        finally:
            await engine.shutdown()

    assert asyncio.run(health(server.url)) is True
    server.health_status = 503
    assert asyncio.run(health(server.url)) is False
    server.health_status = 404  # no /health: fall back to /v1/models
    assert asyncio.run(health(server.url)) is True
    server.models_status = 500
    assert asyncio.run(health(server.url)) is False
    assert asyncio.run(health(closed_port_url())) is False


def test_base_url_may_end_in_v1(server):
    call(make_engine(server.url + '/v1/'), ground_request())
    assert len(server.requests) == 1
