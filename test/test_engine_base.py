# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The typed engine boundary: one completion type in, one response builder, typed health."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from spatial_vlm_ros.engines.base import (
    FLAG_MAX_NEW_TOKENS,
    FLAG_NEAREST_STAMP,
    Completion,
    EngineHealth,
    EngineRequest,
    EngineUnavailableError,
    FinishReason,
    HealthLevel,
    TaskKind,
    TokenCounts,
    VlmEngine,
    token_count,
)
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.results import AnswerResult, GroundingResult

IMAGE = np.zeros((480, 640, 3), np.uint8)


class CannedEngine(VlmEngine):
    """A backend that only implements complete(): parsing is the base class's job."""

    name = 'canned'

    def __init__(self, completion: Completion) -> None:
        self.profile = resolve_profile('spatial-ssrl-4b-fp8')
        self.completion = completion

    async def complete(self, request: EngineRequest) -> Completion:
        return self.completion


def test_a_backend_returns_a_completion_and_the_base_parses_it_once_by_the_profile():
    completion = Completion(
        text='[{"bbox_2d": [0, 0, 500, 500], "label": "cup"}',
        finish_reason=FinishReason.LENGTH,
        tokens=TokenCounts(prompt_tokens=3, completion_tokens=256),
        model_id='m',
        flags=(FLAG_NEAREST_STAMP,),
    )
    request = EngineRequest(images=(IMAGE,), task=TaskKind.GROUND)
    response = asyncio.run(CannedEngine(completion).generate(request))
    assert isinstance(response.parsed, GroundingResult) and response.parsed.truncated
    assert response.parsed.labels == ('cup',)
    assert response.flags == (FLAG_NEAREST_STAMP, FLAG_MAX_NEW_TOKENS)
    assert response.finish_reason == FinishReason.LENGTH
    assert (response.engine, response.model_id) == ('canned', 'm')
    assert response.tokens == completion.tokens
    question = EngineRequest(images=(IMAGE,), task=TaskKind.QUESTION, question='q')
    boxed = Completion(text='<think>left</think>\\boxed{left}', finish_reason=FinishReason.STOP)
    answer = asyncio.run(CannedEngine(boxed).generate(question)).parsed
    assert isinstance(answer, AnswerResult) and (answer.answer, answer.boxed) == ('left', True)


def test_an_engine_must_implement_complete_or_generate():
    with pytest.raises(TypeError, match='complete'):

        class Nothing(VlmEngine):
            name = 'nothing'


@pytest.mark.parametrize(
    ('raw', 'reason'),
    [
        ('stop', FinishReason.STOP),
        ({'type': 'length', 'length': 256}, FinishReason.LENGTH),  # SGLang's meta_info form
        ({'type': 'stop', 'matched': 151645}, FinishReason.STOP),
        ('abort', FinishReason.ABORT),
        (None, FinishReason.UNKNOWN),
        ('tool_calls', FinishReason.UNKNOWN),
    ],
)
def test_finish_reasons_of_every_backend_map_onto_one_enum(raw, reason):
    assert FinishReason.from_backend(raw) is reason


def test_token_counts_accept_only_plain_non_negative_ints():
    assert [token_count(v) for v in (12, True, -3, '7', None, 4.0)] == [12, 0, 0, 0, 0, 0]


def test_health_is_diagnostics_ready():
    fine = EngineHealth.ok('ready', server_kind='vllm')
    slow = EngineHealth.warn('slow', 'look')
    down = EngineHealth.error('down', 'start it', server_url='http://x')
    assert [h.level for h in (fine, slow, down)] == [0, 1, 2]  # DiagnosticStatus OK/WARN/ERROR
    assert fine and slow and not down
    assert fine.values == (('server_kind', 'vllm'),)
    assert down.line() == 'down. Fix: start it'
    error = EngineUnavailableError(down)
    assert str(error) == down.line() and error.health is down
    assert down.level == HealthLevel.ERROR


def test_the_default_health_of_a_backend_is_ok():
    engine = CannedEngine(Completion(text=''))
    assert asyncio.run(engine.health()).level == HealthLevel.OK
