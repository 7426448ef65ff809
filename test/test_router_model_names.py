# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Model names behind sglang-router, fast (the live proof is test/test_router_live.py).

sglang-router 0.3.2 answers ``/v1/models`` itself with the names it read from its workers'
SGLang-only ``/server_info``; in front of vLLM workers it lists only ``unknown`` (seen live
against the real router). The fake server of test_openai_engine.py plays that router here: its
``/readiness`` marks it as a router and its ``/v1/models`` lists the placeholder.
"""

from __future__ import annotations

import pytest

from spatial_vlm_ros.engines.base import EngineError, EngineUnavailableError, HealthLevel
from spatial_vlm_ros.engines.server_check import ServerKind

from test_openai_engine import (
    GROUNDING_TEXT,
    FakeChatServer,
    Reply,
    call,
    completion,
    ground_request,
    health_of,
    make_engine,
    start_engine,
)

ROUTER_PLACEHOLDER = 'unknown'  # what the real router lists for a vLLM worker


@pytest.fixture
def router() -> FakeChatServer:
    fake = FakeChatServer()
    fake.kind = 'router'
    fake.models = [ROUTER_PLACEHOLDER]
    fake.default = Reply(body=completion(GROUNDING_TEXT))
    yield fake
    fake.close()


def test_a_configured_name_is_sent_although_the_router_cannot_list_it(router):
    engine = start_engine(router.url, served_model_name='tiny-qwen3-vl')
    assert engine.server_kind == ServerKind.ROUTER and engine.model == 'tiny-qwen3-vl'
    call(make_engine(router.url, served_model_name='tiny-qwen3-vl'), ground_request())
    assert router.requests[-1]['model'] == 'tiny-qwen3-vl'


def test_without_a_name_the_profiles_checkpoint_id_is_sent_never_the_placeholder(router):
    health, engine = health_of(router.url)  # profile qwen3-vl-4b-instruct-fp8
    assert health.level == HealthLevel.OK, health
    assert dict(health.values)['served_model'] == 'Qwen/Qwen3-VL-4B-Instruct-FP8'
    call(make_engine(router.url), ground_request())
    assert router.requests[-1]['model'] == 'Qwen/Qwen3-VL-4B-Instruct-FP8'


def test_no_name_and_no_checkpoint_id_is_an_error_with_the_fix(router):
    with pytest.raises(EngineUnavailableError) as info:
        start_engine(router.url, 'qwen3-vl')  # the family profile names no checkpoint
    assert info.value.health.level == HealthLevel.ERROR
    assert 'does not know which model its workers serve' in str(info.value)
    assert 'set served_model_name' in info.value.health.fix


def test_a_name_the_worker_rejects_is_reported_with_the_workers_own_message(router):
    rejection = 'The model `tiny` does not exist. Valid aliases: tiny-qwen3-vl.'
    router.default = Reply(404, {'error': {'message': rejection}})
    with pytest.raises(EngineError) as info:
        call(make_engine(router.url, served_model_name='tiny'), ground_request())
    assert 'Valid aliases: tiny-qwen3-vl' in str(info.value), str(info.value)
    assert f"it serves '{ROUTER_PLACEHOLDER}'" not in str(info.value)
