# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""OpenAIEngine against a real chat-completions HTTP server on 127.0.0.1 started by the test.

The server speaks the subset of the API the engine uses: POST /v1/chat/completions, GET
/v1/models, and each server kind's health endpoints as their code defines them (vLLM: /health,
/version; SGLang server: /ready, /health, /health_generate, /model_info; sglang-router:
/health always 200, /readiness 503 without workers). It records every request and the peak
number of requests in flight.
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
    FLAG_MAX_NEW_TOKENS,
    EngineError,
    EngineRequest,
    EngineTimeout,
    EngineUnavailableError,
    FinishReason,
    HealthLevel,
    SamplingParams,
    TaskKind,
)
from spatial_vlm_ros.engines.imaging import InvalidImageError
from spatial_vlm_ros.engines.openai_engine import OpenAIEngine
from spatial_vlm_ros.engines.parsing import AnswerResult, GroundingResult
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.schema import openai_response_format
from spatial_vlm_ros.engines.server_check import ServerKind

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
        self.kind = 'vllm'  # which server's health endpoints to mimic: vllm | sglang | router
        self.health_status = 200
        self.models_status = 200
        self.models = ['Qwen/Qwen3-VL-4B-Instruct-FP8']
        self.health_generate_s = 0.0  # SGLang's /health_generate sleeps >= 1 s before it looks
        self.gets: list[str] = []
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
                server.gets.append(self.path)
                routes = {
                    'vllm': ('/health', '/version'),
                    'sglang': ('/health', '/health_generate', '/ready', '/model_info'),
                    'router': ('/health', '/readiness', '/liveness'),
                }[server.kind]
                if self.path == '/v1/models':
                    data = [{'id': name, 'object': 'model'} for name in server.models]
                    self._send(server.models_status, {'object': 'list', 'data': data})
                elif self.path not in routes:
                    self._send(404, {'detail': 'Not Found'})
                elif self.path == '/version':
                    self._send(200, {'version': '0.32.0'})
                elif self.path == '/model_info':
                    self._send(200, {'model_path': server.models[0], 'is_generation': True})
                elif self.path in ('/health', '/liveness') and server.kind == 'router':
                    self._send(200, 'OK')  # the router's /health is liveness only
                elif self.path == '/readiness':
                    ready = server.health_status == 200
                    state = {'status': 'ready' if ready else 'not_ready'}
                    state.update(healthy_workers=int(ready), total_workers=2)
                    self._send(server.health_status, state)
                elif self.path in ('/health', '/health_generate') and server.kind == 'sglang':
                    server.release.wait(server.health_generate_s)
                    self._send(server.health_status, '')
                else:
                    self._send(server.health_status, '')

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
    # max_tokens is deprecated in SGLang, vLLM and the router (D8).
    assert 'max_tokens' not in body
    assert (
        body['max_completion_tokens']
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
    assert response.finish_reason == FinishReason.STOP
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
    assert response.parsed.answer == 'The cup is left of the table.'


def test_explicit_sampling_and_unconstrained_grounding(server):
    sampling = SamplingParams(max_new_tokens=77, temperature=0.2, top_k=5, seed=3)
    call(
        make_engine(server.url, sampling_extras=False),
        ground_request(sampling=sampling, constrained=False),
    )
    body = server.requests[0]
    assert (body['max_completion_tokens'], body['temperature'], body['seed']) == (77, 0.2, 3)
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
    assert response.flags == (FLAG_MAX_NEW_TOKENS,)
    assert response.finish_reason == FinishReason.LENGTH
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
    engine = make_engine(
        closed_port_url(), max_attempts=2, served_model_name='Qwen/Qwen3-VL-4B-Instruct-FP8'
    )
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


def health_of(url: str, **options):
    async def check():
        engine = make_engine(url, **options)
        try:
            return await engine.health(), engine
        finally:
            await engine.shutdown()

    return asyncio.run(check())


def test_vllm_health_and_down_server(server):
    health, engine = health_of(server.url)
    assert health.level == HealthLevel.OK and engine.server_kind == ServerKind.VLLM
    assert dict(health.values)['served_model'] == 'Qwen/Qwen3-VL-4B-Instruct-FP8'
    server.health_status = 503  # vLLM: EngineDeadError
    health, _ = health_of(server.url)
    assert health.level == HealthLevel.ERROR and 'HTTP 503' in health.message
    assert health.fix
    down, _ = health_of(closed_port_url())
    assert down.level == HealthLevel.ERROR and not down
    assert 'no server answers' in down.message and 'server_url' in down.fix


def test_router_without_workers_is_an_error_although_its_health_says_ok(server):
    """D3: sglang-router's /health is liveness only (200 with zero workers); /readiness tells."""
    server.kind = 'router'
    health, engine = health_of(server.url)
    assert engine.server_kind == ServerKind.ROUTER and health.level == HealthLevel.OK
    assert '1 of 2 workers' in health.message
    server.health_status = 503
    health, _ = health_of(server.url)
    assert health.level == HealthLevel.ERROR
    assert 'no healthy worker' in health.message and 'workers' in health.fix
    assert '/readiness' in server.gets


def test_sglang_server_health_generates_once_then_uses_ready(server):
    """D3: SGLang's /health runs a generation and sleeps >= 1 s; the engine runs that probe at
    start, times it, and then polls the cheap /ready until the interval has passed."""
    server.kind = 'sglang'
    server.health_generate_s = 0.3

    async def scenario():
        engine = make_engine(server.url, deep_health_interval_s=3600.0)
        try:
            await engine.start()
            first = list(server.gets)
            later = await engine.health()
            return first, list(server.gets[len(first) :]), later, engine.server_kind
        finally:
            await engine.shutdown()

    first, later_gets, later, kind = asyncio.run(scenario())
    assert kind == ServerKind.SGLANG
    assert '/health_generate' in first and '/health' not in first
    assert '/ready' in later_gets and '/health_generate' not in later_gets
    assert later.level == HealthLevel.OK
    server.health_status = 503  # starting or unhealthy
    health, _ = health_of(server.url)
    assert health.level == HealthLevel.ERROR and 'not ready' in health.message


def test_a_server_without_health_endpoints_is_checked_through_v1_models(server):
    server.kind = 'vllm'
    server.health_status = 404
    server.models_status = 500
    health, _ = health_of(server.url, server_kind='openai')
    assert health.level == HealthLevel.ERROR and '/v1/models' in health.message


# ------------------------------------------------------------------ served model name


def start_engine(url: str, profile: str = 'qwen3-vl', **options) -> OpenAIEngine:
    async def go():
        engine = OpenAIEngine(profile, base_url=url, **options)
        try:
            await engine.start()
            return engine
        finally:
            await engine.shutdown()

    return asyncio.run(go())


def test_a_generic_profile_uses_the_only_model_the_server_serves(server):
    """Issue 10: `model:=qwen3-vl` against a vLLM server failed with "no model name"."""
    server.models = ['tiny-qwen3-vl']
    server.default = Reply(body=completion(GROUNDING_TEXT))
    engine = OpenAIEngine('qwen3-vl', base_url=server.url, backoff_initial_s=0.01)
    call(engine, ground_request())
    assert server.requests[0]['model'] == 'tiny-qwen3-vl'


def test_a_wrong_served_model_name_is_one_clear_error_at_start(server):
    server.models = ['tiny-qwen3-vl']
    with pytest.raises(EngineUnavailableError) as info:
        start_engine(server.url, served_model_name='Qwen/Qwen3-VL-8B-Instruct')
    message = str(info.value)
    assert '\n' not in message
    assert "does not serve model 'Qwen/Qwen3-VL-8B-Instruct'" in message
    assert "set served_model_name to one of 'tiny-qwen3-vl'" in message
    assert info.value.health.level == HealthLevel.ERROR


def test_several_served_models_need_a_choice_unless_one_is_the_profiles(server):
    server.models = ['a-model', 'b-model']
    with pytest.raises(EngineUnavailableError, match="set served_model_name to one of 'a-model'"):
        start_engine(server.url)
    assert start_engine(server.url, served_model_name='b-model').model == 'b-model'
    server.models = ['Qwen/Qwen3-VL-4B-Instruct-FP8', 'b-model']
    assert start_engine(server.url, 'qwen3-vl-4b-instruct-fp8').model == server.models[0]


def test_a_server_serving_another_checkpoint_than_the_profiles_is_a_warning(server):
    server.models = ['Qwen/Qwen3-VL-8B-Instruct']
    health, _ = health_of(server.url)  # profile qwen3-vl-4b-instruct-fp8
    assert health.level == HealthLevel.WARN and health.serving
    assert "set model to 'Qwen/Qwen3-VL-8B-Instruct'" in health.fix


def test_a_model_rejected_mid_run_is_diagnosed_in_one_line(server):
    """The server was restarted with another model: its 404 names the served one."""
    server.models = ['Qwen/Qwen3-VL-4B-Instruct-FP8']
    server.default = Reply(404, {'error': {'message': 'The model does not exist.'}})

    async def scenario():
        engine = make_engine(server.url)
        try:
            await engine.start()
            server.models = ['other-model']
            with pytest.raises(EngineUnavailableError) as info:
                await engine.generate(ground_request())
            return str(info.value)
        finally:
            await engine.shutdown()

    message = asyncio.run(scenario())
    assert (
        "does not serve model 'Qwen/Qwen3-VL-4B-Instruct-FP8'; it serves 'other-model'" in message
    )
    assert '\n' not in message


def test_base_url_may_end_in_v1(server):
    call(make_engine(server.url + '/v1/'), ground_request())
    assert len(server.requests) == 1


def test_the_node_parameter_reaches_the_engine():
    from spatial_vlm_ros.engines.registry import create_engine
    from spatial_vlm_ros.pipeline import PipelineSettings
    from spatial_vlm_ros.ros.parameters import PARAMETERS

    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(engine='openai', model='qwen3-vl', served_model_name='tiny-qwen3-vl')
    settings = PipelineSettings.from_parameters(values)
    engine = create_engine(settings.engine_kind, settings.model, **settings.engine_options)
    assert isinstance(engine, OpenAIEngine) and engine.served_model_name == 'tiny-qwen3-vl'
