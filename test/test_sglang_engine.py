# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""In-process SGLang: request construction (pure) and the event-loop-thread driver.

sglang needs CUDA, so the driver is exercised with FakeSglangEngineForTests, a stand-in defined in
this file only: it mimics sglang.Engine's keyword constructor, its ``loop`` attribute,
``async_generate``'s signature, ``shutdown()``, and two side effects of the real build (the root
logger reconfigured, a loop of its own under a new event-loop policy). What the requests must
satisfy in sglang's own code is checked against the real package in test_sglang_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import cv2
import numpy as np
from PIL import Image
import pytest

from spatial_vlm_ros.engines.base import (
    FLAG_MAX_NEW_TOKENS,
    EngineError,
    EngineRequest,
    EngineTimeout,
    EngineUnavailableError,
    HealthLevel,
    SamplingParams,
    TaskKind,
)
from spatial_vlm_ros.engines.imaging import InvalidImageError
from spatial_vlm_ros.engines.parsing import AnswerResult, GroundingResult
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.prompts import QWEN_VISION_PLACEHOLDER
from spatial_vlm_ros.engines.schema import grounding_schema
from spatial_vlm_ros.engines.sglang_engine import (
    SGLangEngine,
    build_sglang_request,
    prepare_model_source,
)

GROUNDING_TEXT = '[{"bbox_2d": [0, 0, 500, 500], "label": "cup"}]'
SSRL = resolve_profile('spatial-ssrl-4b-fp8')


def frame(height: int = 480, width: int = 640) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 20, 20)
    return image


def ground(**kwargs) -> EngineRequest:
    return EngineRequest(images=(frame(),), task=TaskKind.GROUND, vocabulary=('cup',), **kwargs)


def decode_jpeg(data: bytes) -> np.ndarray:
    assert isinstance(data, bytes) and data[:2] == b'\xff\xd8'
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


# ------------------------------------------------------------------ build_sglang_request


def test_grounding_request_has_placeholder_schema_string_and_greedy_sampling():
    payload = build_sglang_request(ground(), SSRL)
    assert set(payload) == {'prompt', 'image_data', 'sampling_params'}
    prompt = payload['prompt']
    assert prompt.count(QWEN_VISION_PLACEHOLDER) == 1
    assert prompt.startswith('<|im_start|>user\n' + QWEN_VISION_PLACEHOLDER)
    assert 'categories: "cup"' in prompt
    assert prompt.endswith('<|im_end|>\n<|im_start|>assistant\n')
    assert '<think>' not in prompt  # grounding carries no think instruction
    params = payload['sampling_params']
    assert isinstance(params['json_schema'], str)
    assert json.loads(params['json_schema']) == grounding_schema()
    assert params['temperature'] == 0.0
    assert params['max_new_tokens'] == SSRL.grounding_sampling.max_new_tokens
    assert 'presence_penalty' not in params
    assert decode_jpeg(payload['image_data']).shape == (480, 640, 3)


def test_question_requests_use_each_profiles_format_prompt_and_sampling():
    request = EngineRequest(images=(frame(),), task=TaskKind.QUESTION, question='Is it left?')
    payload = build_sglang_request(request, SSRL)
    assert 'Is it left?\nYou FIRST think' in payload['prompt']
    assert 'MUST BE put in \\boxed{}' in payload['prompt']
    params = payload['sampling_params']
    assert 'json_schema' not in params
    # Spatial-SSRL-Qwen3VL-4B's README: greedy, 4096 new tokens (D4).
    assert (params['temperature'], params['max_new_tokens']) == (0.0, 4096)
    assert 'presence_penalty' not in params
    instruct = build_sglang_request(request, resolve_profile('qwen3-vl-4b-instruct-fp8'))
    params = instruct['sampling_params']
    assert (params['temperature'], params['top_p'], params['top_k']) == (0.7, 0.8, 20)
    assert params['presence_penalty'] == 1.5


def test_images_are_resized_to_the_budget_and_several_images_form_a_list():
    request = EngineRequest(images=(frame(1080, 1920), frame()), task=TaskKind.GROUND)
    payload = build_sglang_request(request, SSRL)
    assert payload['prompt'].count(QWEN_VISION_PLACEHOLDER) == 2
    first, second = payload['image_data']
    assert decode_jpeg(first).shape == (832, 1504, 3)
    assert decode_jpeg(second).shape == (480, 640, 3)


def test_bare_base64_is_refused_because_sglang_reads_it_as_a_file_path():
    """D1: every JPEG's base64 starts with '/9j/', and sglang's image loader opens a string that
    starts with '/' as a file ('File name too long' on every request)."""
    with pytest.raises(EngineError, match='file path'):
        build_sglang_request(ground(), SSRL, image_transport='jpeg_base64')
    with pytest.raises(EngineError, match='file path'):
        SGLangEngine(SSRL, engine_factory=FakeSglangEngineForTests, image_transport='jpeg_base64')
    default = build_sglang_request(ground(), SSRL)['image_data']
    assert isinstance(default, bytes) and not isinstance(default, str)
    url = build_sglang_request(ground(), SSRL, image_transport='jpeg_data_url')['image_data']
    assert url.startswith('data:image/jpeg;base64,/9j/')


def test_the_seed_reaches_sglang_as_sampling_seed():
    """D7: the seed was dropped; SGLang's field is sampling_seed (a 'seed' key is a TypeError
    in its msgspec request struct)."""
    params = build_sglang_request(ground(sampling=SamplingParams(seed=7)), SSRL)['sampling_params']
    assert params['sampling_seed'] == 7 and 'seed' not in params
    assert 'sampling_seed' not in build_sglang_request(ground(), SSRL)['sampling_params']


def test_pil_transport():
    payload = build_sglang_request(ground(), SSRL, image_transport='pil')
    assert isinstance(payload['image_data'], Image.Image)
    assert payload['image_data'].size == (640, 480)
    assert payload['image_data'].getpixel((10, 10)) == (200, 20, 20)  # RGB order kept
    with pytest.raises(EngineError):
        build_sglang_request(ground(), SSRL, image_transport='png')


def test_processor_chat_template_is_used_when_given():
    seen: list[Any] = []

    def template(messages):
        seen.append(messages)
        return 'RENDERED'

    payload = build_sglang_request(ground(), SSRL, template)
    assert payload['prompt'] == 'RENDERED'
    (messages,) = seen
    assert [part['type'] for part in messages[0]['content']] == ['image', 'text']


def test_unconstrained_and_explicit_sampling():
    sampling = SamplingParams(max_new_tokens=9, temperature=0.5, top_k=3, repetition_penalty=1.1)
    params = build_sglang_request(ground(constrained=False, sampling=sampling), SSRL)[
        'sampling_params'
    ]
    assert 'json_schema' not in params
    assert (params['max_new_tokens'], params['temperature'], params['top_k']) == (9, 0.5, 3)
    assert params['repetition_penalty'] == 1.1


def test_bad_requests_raise_typed_errors():
    with pytest.raises(InvalidImageError):
        build_sglang_request(EngineRequest(images=(), task=TaskKind.GROUND), SSRL)
    with pytest.raises(InvalidImageError):
        build_sglang_request(
            EngineRequest(images=(np.zeros((4, 4, 3), np.float32),), task=TaskKind.GROUND), SSRL
        )


# ------------------------------------------------------------------ without sglang


def test_constructing_without_sglang_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'sglang', None)  # the import fails even where installed
    with pytest.raises(EngineError) as info:
        SGLangEngine(SSRL)
    message = str(info.value)
    assert "pip install 'spatial_vlm_ros[sglang]'" in message
    assert 'CUDA' in message


# ------------------------------------------------------------------ the loop-thread driver


class FakeSglangEngineForTests:
    """Test stand-in for sglang.Engine (not a model): same constructor style, ``loop``,
    ``async_generate`` signature and ``shutdown``; records which thread and loop did what."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.constructed_in = threading.get_ident()
        # Like sglang.Engine: the running loop if there is one, else a new loop set as current.
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        self.calls: list[dict[str, Any]] = []
        self.text = GROUNDING_TEXT
        self.meta: dict[str, Any] = {
            'prompt_tokens': 330,
            'completion_tokens': 17,
            'finish_reason': {'type': 'stop'},
        }
        self.gate_size = 1  # answer once this many requests are in flight together
        self.in_flight = 0
        self.max_in_flight = 0
        self.hang = False
        self.fail_with: Exception | None = None
        self.cancelled = threading.Event()
        self.shutdown_in: int | None = None

    async def async_generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict | list[dict] | None = None,
        input_ids: list[int] | None = None,
        image_data: Any = None,
        audio_data: Any = None,
        video_data: Any = None,
        return_logprob: bool = False,
        logprob_start_len: int | None = None,
        top_logprobs_num: int | None = None,
        lora_path: str | None = None,
        custom_logit_processor: str | None = None,
        return_hidden_states: bool = False,
        stream: bool = False,
        rid: str | None = None,
    ) -> dict[str, Any]:
        assert asyncio.get_running_loop() is self.loop
        self.calls.append(
            {
                'prompt': prompt,
                'image_data': image_data,
                'sampling_params': sampling_params,
                'thread': threading.get_ident(),
            }
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.sleep(3600)
            if self.fail_with is not None:
                raise self.fail_with
            waited = time.monotonic()
            while self.max_in_flight < self.gate_size and time.monotonic() - waited < 5:
                await asyncio.sleep(0.001)
            return {'text': self.text, 'meta_info': dict(self.meta)}
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self.shutdown_in = threading.get_ident()


class FakeSglangLikeTheRealImport(FakeSglangEngineForTests):
    """Also does what the real build does to the host process: ``configure_logger`` runs
    ``logging.basicConfig(level=<log_level>, force=True)`` (sglang/srt/utils/common.py), and the
    real ``import sglang.srt.entrypoints.engine`` installs uvloop's event-loop policy, under which
    ``Engine._ensure_event_loop`` finds no loop for the thread and makes its own."""

    def __init__(self, **kwargs: Any) -> None:
        level = getattr(logging, str(kwargs.get('log_level', 'error')).upper())
        logging.basicConfig(level=level, format='[sglang] %(message)s', force=True)
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())  # as uvloop's would
        super().__init__(**kwargs)


def fake_engine(**options: Any) -> tuple[SGLangEngine, list[FakeSglangEngineForTests]]:
    built: list[FakeSglangEngineForTests] = []

    def factory(**kwargs: Any) -> FakeSglangEngineForTests:
        engine = FakeSglangEngineForTests(**kwargs)
        built.append(engine)
        return engine

    options.setdefault('use_processor_template', False)
    return SGLangEngine(SSRL, engine_factory=factory, **options), built


def test_engine_is_built_and_driven_on_its_own_loop_thread():
    engine, built = fake_engine(engine_kwargs={'tp_size': 1})

    async def scenario():
        await engine.start()
        assert await engine.health()
        response = await engine.generate(ground())
        await engine.shutdown()
        return response, await engine.health()

    response, healthy_after = asyncio.run(scenario())
    (fake,) = built
    assert fake.kwargs['model_path'] == 'internlm/Spatial-SSRL-Qwen3VL-4B'
    assert fake.kwargs['quantization'] == 'fp8'
    assert fake.kwargs['enable_multimodal'] is True
    assert fake.kwargs['tp_size'] == 1
    main = threading.get_ident()
    assert fake.constructed_in != main
    assert fake.calls[0]['thread'] == fake.constructed_in
    assert fake.shutdown_in == fake.constructed_in
    assert fake.loop.is_closed()
    assert not healthy_after
    assert isinstance(json.loads(fake.calls[0]['sampling_params']['json_schema']), dict)
    assert isinstance(response.parsed, GroundingResult)
    assert [(d.label, d.box.as_list()) for d in response.parsed.detections] == [
        ('cup', [0.0, 0.0, 320.0, 240.0])
    ]
    assert response.tokens.prompt_tokens == 330 and response.tokens.completion_tokens == 17
    assert response.tokens.image_tokens == 300
    assert response.engine == 'sglang' and response.flags == ()
    assert isinstance(fake.calls[0]['image_data'], bytes)


def test_concurrent_requests_reach_the_engine_together():
    engine, built = fake_engine()

    async def scenario():
        await engine.start()
        built[0].gate_size = 8
        responses = await asyncio.gather(*(engine.generate(ground()) for _ in range(8)))
        await engine.shutdown()
        return responses

    responses = asyncio.run(scenario())
    assert built[0].max_in_flight == 8
    assert all(isinstance(r.parsed, GroundingResult) for r in responses)


def test_generate_starts_the_engine_lazily_and_answers_questions():
    engine, built = fake_engine()

    async def scenario():
        built_before = len(built)
        request = EngineRequest(images=(frame(),), task=TaskKind.QUESTION, question='Left?')
        response = await engine.generate(request)
        await engine.shutdown()
        return built_before, response

    built_before, response = asyncio.run(scenario())
    assert built_before == 0 and len(built) == 1
    assert isinstance(response.parsed, AnswerResult)


def test_timeout_cancels_the_request_in_the_engine_loop():
    engine, built = fake_engine()

    async def scenario():
        await engine.start()
        built[0].hang = True
        try:
            with pytest.raises(EngineTimeout):
                await engine.generate(ground(timeout_s=0.2))
            return built[0].cancelled.wait(5)
        finally:
            await engine.shutdown()

    assert asyncio.run(scenario()) is True


def test_engine_exceptions_become_engine_errors():
    engine, built = fake_engine()

    async def scenario():
        await engine.start()
        built[0].fail_with = RuntimeError('CUDA out of memory')
        try:
            with pytest.raises(EngineError) as info:
                await engine.generate(ground())
            return str(info.value)
        finally:
            await engine.shutdown()

    assert 'CUDA out of memory' in asyncio.run(scenario())


def test_length_finish_is_flagged():
    engine, built = fake_engine()

    async def scenario():
        await engine.start()
        built[0].meta['finish_reason'] = {'type': 'length', 'length': 1536}
        built[0].text = GROUNDING_TEXT[:-10]
        try:
            return await engine.generate(ground())
        finally:
            await engine.shutdown()

    response = asyncio.run(scenario())
    assert response.flags == (FLAG_MAX_NEW_TOKENS,)


def test_host_logging_survives_the_engine_build_and_its_own_loop_is_driven():
    """D2: building sglang.Engine removed the host's log handlers and set the root level to
    ERROR, so the node's warnings vanished after start. Also covers the engine-made loop."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    host_handler = logging.StreamHandler()
    root.handlers = [host_handler]
    root.setLevel(logging.INFO)
    policy = asyncio.get_event_loop_policy()
    built: list[FakeSglangEngineForTests] = []

    def factory(**kwargs: Any) -> FakeSglangEngineForTests:
        built.append(FakeSglangLikeTheRealImport(**kwargs))
        return built[-1]

    engine = SGLangEngine(SSRL, engine_factory=factory, use_processor_template=False)

    async def scenario():
        await engine.start()
        try:
            return await engine.generate(ground())
        finally:
            await engine.shutdown()

    try:
        response = asyncio.run(scenario())
        after = (list(root.handlers), root.level)
    finally:
        asyncio.set_event_loop_policy(policy)
        root.handlers, _ = saved
        root.setLevel(saved[1])
    assert after == ([host_handler], logging.INFO)
    assert built[0].kwargs['log_level'] == 'warning'
    assert isinstance(response.parsed, GroundingResult)
    assert built[0].calls[0]['thread'] == built[0].constructed_in


def test_the_processor_template_is_read_from_local_files_only(monkeypatch):
    """Offline, AutoProcessor.from_pretrained('internlm/Spatial-SSRL-Qwen3VL-4B') retried the
    hub for 141 s (measured here) on every start before falling back to the built-in template."""
    transformers = pytest.importorskip('transformers')
    seen: list[dict[str, Any]] = []

    def from_pretrained(name: str, **kwargs: Any) -> Any:
        seen.append({'name': name, **kwargs})
        raise OSError(f'{name} is not in the local cache')

    monkeypatch.setattr(transformers.AutoProcessor, 'from_pretrained', from_pretrained)
    engine, built = fake_engine(use_processor_template=True)

    async def scenario():
        try:
            return await engine.generate(ground())
        finally:
            await engine.shutdown()

    asyncio.run(scenario())
    assert seen == [{'name': SSRL.hf_id, 'local_files_only': True}]
    assert built[0].calls[0]['prompt'].startswith('<|im_start|>user\n' + QWEN_VISION_PLACEHOLDER)


def offline_hub(monkeypatch, tmp_path) -> None:
    """No route to the model hub (an endpoint nothing listens on) and an empty local cache."""
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{port}')
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_CACHE', str(tmp_path / 'hub'))


def test_offline_a_model_missing_from_the_cache_fails_at_once_saying_what_to_do(
    monkeypatch, tmp_path
):
    offline_hub(monkeypatch, tmp_path)
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError) as info:
        prepare_model_source('internlm/Spatial-SSRL-Qwen3VL-4B')
    assert time.monotonic() - started < 30  # not the minutes of hub retries; not a speed claim
    assert 'hf download internlm/Spatial-SSRL-Qwen3VL-4B' in str(info.value)
    assert 'unreachable' in str(info.value)


def test_offline_a_cached_model_loads_with_the_hub_switched_off(monkeypatch, tmp_path):
    offline_hub(monkeypatch, tmp_path)
    snapshot = tmp_path / 'hub' / 'models--internlm--Spatial-SSRL-Qwen3VL-4B'
    (snapshot / 'snapshots' / 'abc').mkdir(parents=True)
    (snapshot / 'snapshots' / 'abc' / 'config.json').write_text('{}')
    (snapshot / 'refs').mkdir()
    (snapshot / 'refs' / 'main').write_text('abc')
    monkeypatch.setitem(os.environ, 'HF_HUB_OFFLINE', '')  # restored after the test
    prepare_model_source('internlm/Spatial-SSRL-Qwen3VL-4B')
    assert os.environ['HF_HUB_OFFLINE'] == '1'  # SGLang's spawned processes read it
    prepare_model_source(str(tmp_path))  # a local directory never asks the hub


def test_health_reports_state_and_start_failures():
    engine, built = fake_engine()

    async def scenario():
        before = await engine.health()
        await engine.start()
        running = await engine.health()
        await engine.shutdown()
        return before, running

    before, running = asyncio.run(scenario())
    assert before.level == HealthLevel.ERROR and 'not started' in before.message
    assert running.level == HealthLevel.OK


def test_factory_failure_is_reported_by_start():
    def failing_factory(**kwargs: Any) -> Any:
        raise RuntimeError('no GPU visible')

    engine = SGLangEngine(SSRL, engine_factory=failing_factory, use_processor_template=False)
    with pytest.raises(EngineUnavailableError) as info:
        asyncio.run(engine.start())
    assert 'no GPU visible' in str(info.value)
    assert 'Spatial-SSRL' in str(info.value)
    assert info.value.health.level == HealthLevel.ERROR
    assert asyncio.run(engine.health()).level == HealthLevel.ERROR


def test_model_path_overrides_the_profile_checkpoint(tmp_path):
    engine, built = fake_engine()
    local = SGLangEngine(SSRL, str(tmp_path), engine_factory=FakeSglangEngineForTests)
    assert local.engine_kwargs['model_path'] == str(tmp_path)
    assert local.engine_kwargs['quantization'] == 'fp8'
    assert engine.engine_kwargs['model_path'] == SSRL.hf_id
    assert built == []  # nothing is built before start() or the first generate()


def test_missing_processor_falls_back_to_the_built_in_template(tmp_path):
    built: list[FakeSglangEngineForTests] = []

    def factory(**kwargs: Any) -> FakeSglangEngineForTests:
        built.append(FakeSglangEngineForTests(**kwargs))
        return built[-1]

    # An empty directory has no processor: the engine must still build a valid Qwen prompt.
    engine = SGLangEngine(SSRL, str(tmp_path), engine_factory=factory)

    async def scenario():
        try:
            return await engine.generate(ground())
        finally:
            await engine.shutdown()

    asyncio.run(scenario())
    prompt = built[0].calls[0]['prompt']
    assert prompt.startswith('<|im_start|>user\n' + QWEN_VISION_PLACEHOLDER)
