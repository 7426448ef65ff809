# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounded answers and locate choices through the transformers engine on the tiny Qwen3-VL.

Real Qwen3-VL classes with random weights, real xgrammar constrained decoding: every profile's
answer must come out schema-valid in its own format (plain JSON; Spatial-SSRL's
``<think>...</think>`` then ``\\boxed{<json>}``), with ids only from the scene, whatever the
random model wants to write. Then ``answer_question`` must state the measured distance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
import importlib.util
from pathlib import Path
from typing import Any

from answer_schema_check import answer_json, check_answer, check_choice
import pytest
from rgbd_scenes import build_real_scene

from spatial_vlm_ros.core.annotate import Mark, draw_marks
from spatial_vlm_ros.core.measurements import MeasurementKind
from spatial_vlm_ros.engines.base import EngineError, EngineRequest, SamplingParams, TaskKind
from spatial_vlm_ros.engines.profiles import AnswerFormat, ModelProfile
from spatial_vlm_ros.engines.question import (
    choice_schema,
    choice_text,
    constraint_for,
    parse_structured_answer,
)
from spatial_vlm_ros.engines.transformers_engine import TransformersEngine
from spatial_vlm_ros.queries import (
    SOURCE_GEOMETRY,
    SOURCE_MODEL,
    QueryOptions,
    QuerySnapshot,
    answer_question,
    build_question_input,
    locate,
)

from fixtures.tiny_model import build_tiny_model, tiny_profile, variant_names

pytestmark = pytest.mark.slow

ANSWER_CHARS = 40  # short answers keep the random model inside the tiny max_new_tokens
OPTIONS = QueryOptions(answer_max_chars=ANSWER_CHARS, think_max_tokens=12)
QUESTION = 'How far is the mug from the keyboard?'
MAX_NEW_TOKENS = 512


@pytest.fixture(scope='module')
def snapshot() -> QuerySnapshot:
    scene, frame, _ = build_real_scene('tum_desk')
    return QuerySnapshot(scene, frame.rgb)


@pytest.fixture(scope='module')
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('tiny_models')
    return {name: build_tiny_model(name, out_dir=root / name) for name in variant_names()}


def _engine(variant: str, model_dirs: dict[str, Path]) -> tuple[TransformersEngine, ModelProfile]:
    # Room for the schema's longest answer from random weights (3 measurements with numbers).
    base = tiny_profile(variant, model_dirs[variant])
    profile = replace(
        base, question_sampling=replace(base.question_sampling, max_new_tokens=MAX_NEW_TOKENS)
    )
    engine = TransformersEngine(profile, device='cpu')
    try:
        asyncio.run(engine.start())
    except EngineError as error:
        if 'requires accelerate' in str(error) and importlib.util.find_spec('accelerate') is None:
            pytest.skip(f'FP8 checkpoint on CPU needs the accelerate package: {error}')
        raise
    return engine, profile


@pytest.fixture(scope='module', params=variant_names())
def tiny(request: Any, model_dirs: dict[str, Path]) -> Iterator[tuple[TransformersEngine, Any]]:
    engine, profile = _engine(request.param, model_dirs)
    yield engine, profile
    asyncio.run(engine.shutdown())


def test_constrained_answers_are_schema_valid_in_each_profiles_format(tiny, snapshot) -> None:
    engine, profile = tiny
    prepared = build_question_input(snapshot, QUESTION, profile, OPTIONS)
    ids = list(prepared.facts.object_ids)
    think_boxed = profile.answer_format == AnswerFormat.THINK_BOXED
    for seed in range(2):
        request = prepared.request
        sampling = SamplingParams(
            max_new_tokens=profile.question_sampling.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            seed=seed,
        )
        response = asyncio.run(engine.generate(replace(request, sampling=sampling)))
        value = check_answer(answer_json(response.raw_text, think_boxed), ids, ANSWER_CHARS)
        parsed = parse_structured_answer(response.raw_text, profile, ids)
        assert parsed.answer == ' '.join(value['answer'].split())
        assert list(parsed.object_ids) == list(dict.fromkeys(value['object_ids']))


def test_answer_question_states_the_measured_distance_whatever_the_model_wrote(
    tiny, snapshot
) -> None:
    engine, profile = tiny
    reply = asyncio.run(answer_question(snapshot, QUESTION, engine, profile, options=OPTIONS))
    assert reply.success, reply.message
    assert reply.source in (SOURCE_MODEL, SOURCE_GEOMETRY), reply
    distance = [m for m in reply.measurements if m.kind == MeasurementKind.DISTANCE]
    mug_keyboard = [m for m in distance if set(m.object_ids) == {'mug_0', 'keyboard_0'}]
    assert len(mug_keyboard) == 1, reply.measurements
    assert mug_keyboard[0].value == pytest.approx(0.47, abs=0.02)
    assert '0.47 m' in reply.answer
    assert set(reply.object_ids) <= {obj.id for obj in snapshot.scene.objects}


def test_locate_choice_is_a_candidate_or_none(tiny, snapshot) -> None:
    engine, profile = tiny
    think_boxed = profile.answer_format == AnswerFormat.THINK_BOXED
    outcome = asyncio.run(locate(snapshot, 'the red coke can', engine=engine, profile=profile))
    result = outcome.result
    assert result.needed_model
    assert outcome.model_message.startswith('model chose'), outcome.model_message
    assert {c.id for c in result.candidates} == {'coke_can_0', 'coke_can_1'}
    # The choice itself: strict JSON in the profile's format, an enum of the candidates.
    ids = ['coke_can_0', 'coke_can_1']
    by_id = {o.id: o for o in snapshot.scene.objects}
    marked = draw_marks(snapshot.rgb, [Mark(i, by_id[i].box, by_id[i].label) for i in ids])
    request = EngineRequest(
        images=(marked.image,),
        task=TaskKind.QUESTION,
        question=choice_text(profile, 'the red coke can', [(i, 'coke can') for i in ids]),
        output_constraint=constraint_for(profile, choice_schema(ids), think_max_tokens=12),
        sampling=SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=3),
    )
    response = asyncio.run(engine.generate(request))
    check_choice(answer_json(response.raw_text, think_boxed), ids)
