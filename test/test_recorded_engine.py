# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Replaying and recording raw model outputs, and building engines by kind."""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import numpy as np
import pytest

from spatial_vlm_ros.engines.base import (
    FLAG_NEAREST_STAMP,
    FLAG_NO_RECORDING,
    EngineError,
    EngineRequest,
    TaskKind,
)
from spatial_vlm_ros.engines.openai_engine import OpenAIEngine
from spatial_vlm_ros.engines.parsing import AnswerResult, GroundingResult, ParseFailure
from spatial_vlm_ros.engines.recorded import (
    RecordedEngine,
    RecordedOutput,
    RecordingEngine,
    RecordingFormatError,
    RecordingWriter,
    load_recording,
    write_recording,
)
from spatial_vlm_ros.engines.registry import (
    ENGINE_KINDS,
    EngineConfigError,
    UnknownEngineKindError,
    create_engine,
)

IMAGE = np.zeros((480, 640, 3), np.uint8)
CUP = '[{"bbox_2d": [0, 0, 500, 500], "label": "cup"}]'
TABLE = '```json\n[{"bbox_2d": [0, 500, 1000, 1000], "label": "table"}]\n```'


def ground(stamp_ns: int) -> EngineRequest:
    return EngineRequest(images=(IMAGE,), task=TaskKind.GROUND, stamp_ns=stamp_ns)


def ask(stamp_ns: int, question: str) -> EngineRequest:
    return EngineRequest(
        images=(IMAGE,), task=TaskKind.QUESTION, stamp_ns=stamp_ns, question=question
    )


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / 'outputs.jsonl'
    lines = [
        {'stamp_ns': 1_000, 'text': CUP},
        {'stamp_ns': 2_000, 'text': TABLE, 'model_id': 'internlm/Spatial-SSRL-Qwen3VL-4B'},
        {
            'stamp_ns': 2_000,
            'task': 'question',
            'question': 'Where is the cup?',
            'text': '<think>r</think>\\boxed{left of the table}',
        },
        {'stamp_ns': 2_000, 'task': 'question', 'text': '\\boxed{unkeyed}'},
    ]
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n\n', encoding='utf-8')
    return path


def test_exact_stamp_replays_and_reparses(recording):
    engine = RecordedEngine('spatial-ssrl-4b-fp8', recording)
    assert len(engine) == 4
    response = run(engine.generate(ground(1_000)))
    assert response.raw_text == CUP
    assert response.flags == ()
    assert isinstance(response.parsed, GroundingResult)
    assert [(d.label, d.box.as_list()) for d in response.parsed.detections] == [
        ('cup', [0.0, 0.0, 320.0, 240.0])
    ]
    assert response.engine == 'recorded'
    assert response.model_id == 'internlm/Spatial-SSRL-Qwen3VL-4B'  # from the file


def test_missing_stamp_is_flagged_and_empty(recording):
    engine = RecordedEngine(None, recording)
    response = run(engine.generate(ground(1_500)))
    assert response.flags == (FLAG_NO_RECORDING,)
    assert response.raw_text == ''
    assert isinstance(response.parsed, GroundingResult)
    assert response.parsed.detections == ()
    assert FLAG_NO_RECORDING in response.parsed.warnings


def test_tolerance_matches_the_nearest_stamp_and_flags_it(recording):
    engine = RecordedEngine(None, recording, tolerance_ns=400)
    near = run(engine.generate(ground(1_700)))  # 300 ns from 2_000, 700 from 1_000
    assert near.raw_text == TABLE
    assert near.flags == (FLAG_NEAREST_STAMP,)
    far = run(engine.generate(ground(2_401)))
    assert far.flags == (FLAG_NO_RECORDING,)


def test_questions_match_by_text_then_fall_back_to_unkeyed_lines(recording):
    engine = RecordedEngine('spatial-ssrl-4b-fp8', recording)
    keyed = run(engine.generate(ask(2_000, '  where is the   CUP? ')))
    assert isinstance(keyed.parsed, AnswerResult)
    assert keyed.parsed.answer == 'left of the table'
    other = run(engine.generate(ask(2_000, 'How far is the door?')))
    assert other.parsed.answer == 'unkeyed'
    missing = run(engine.generate(ask(1_000, 'Where is the cup?')))
    assert missing.flags == (FLAG_NO_RECORDING,)
    assert isinstance(missing.parsed, ParseFailure)
    assert missing.parsed.reason == FLAG_NO_RECORDING


def test_later_lines_win(tmp_path):
    path = tmp_path / 'r.jsonl'
    write_recording(path, [RecordedOutput(5, CUP), RecordedOutput(5, TABLE)])
    assert run(RecordedEngine(None, path).generate(ground(5))).raw_text == TABLE


@pytest.mark.parametrize(
    ('line', 'message'),
    [
        ('not json', 'not valid JSON'),
        ('[1, 2]', 'JSON object'),
        ('{"text": "x"}', 'stamp_ns'),
        ('{"stamp_ns": 1.5, "text": "x"}', 'stamp_ns'),
        ('{"stamp_ns": 1, "text": 3}', '"text"'),
        ('{"stamp_ns": 1, "text": "x", "task": "dance"}', 'unknown task'),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / 'bad.jsonl'
    path.write_text(
        json.dumps({'stamp_ns': 1, 'text': CUP}) + '\n' + line + '\n', encoding='utf-8'
    )
    with pytest.raises(RecordingFormatError) as info:
        RecordedEngine(None, path)
    assert f'{path}:2' in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, EngineError)


def test_missing_file_and_missing_path_are_typed_errors(tmp_path):
    with pytest.raises(RecordingFormatError):
        RecordedEngine(None, tmp_path / 'nope.jsonl')
    with pytest.raises(RecordingFormatError):
        RecordedEngine(None)


def test_writer_is_thread_safe_and_flushes_every_line(tmp_path):
    path = tmp_path / 'sub' / 'rec.jsonl'
    writer = RecordingWriter(path)

    def worker(offset: int) -> None:
        for index in range(50):
            writer.write(
                offset * 1000 + index, f'{{"text with "quotes" {offset}-{index}', TaskKind.GROUND
            )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outputs = load_recording(path)  # before close: every line is already on disk
    assert len(outputs) == 400
    assert {o.stamp_ns for o in outputs} == {n * 1000 + i for n in range(8) for i in range(50)}
    writer.close()
    with pytest.raises(RecordingFormatError):
        writer.write(1, 'x')


def test_recording_engine_round_trips_through_replay(recording, tmp_path):
    out = tmp_path / 'again.jsonl'
    inner = RecordedEngine('spatial-ssrl-4b-fp8', recording)
    recorder = RecordingEngine(inner, out)
    assert recorder.name == 'recorded'
    requests = [ground(1_000), ground(2_000), ask(2_000, 'Where is the cup?'), ground(9_999)]

    async def record():
        await recorder.start()
        responses = [await recorder.generate(r) for r in requests]
        await recorder.shutdown()
        return responses

    originals = run(record())
    lines = [json.loads(line) for line in out.read_text(encoding='utf-8').splitlines()]
    assert len(lines) == 3  # the gap at 9_999 is not recorded as an empty answer
    assert lines[2]['task'] == 'question' and lines[2]['question'] == 'Where is the cup?'
    replay = RecordedEngine('spatial-ssrl-4b-fp8', out)
    for request, original in zip(requests[:3], originals[:3], strict=True):
        again = run(replay.generate(request))
        assert again.raw_text == original.raw_text
        assert again.parsed == original.parsed


# ------------------------------------------------------------------ registry


def test_registry_builds_recorded_and_openai_engines(recording):
    recorded = create_engine('recorded', 'qwen3-vl-4b-instruct-fp8', path=recording)
    assert isinstance(recorded, RecordedEngine)
    assert recorded.profile.name == 'qwen3-vl-4b-instruct-fp8'
    client = create_engine(' OpenAI ', None, base_url='http://127.0.0.1:1/v1')
    assert isinstance(client, OpenAIEngine)
    assert client.base_url == 'http://127.0.0.1:1'
    assert set(ENGINE_KINDS) == {'sglang', 'openai', 'transformers', 'recorded'}


def test_registry_wraps_with_a_recorder(recording, tmp_path):
    engine = create_engine('recorded', None, path=recording, record_to=tmp_path / 'x.jsonl')
    assert isinstance(engine, RecordingEngine)
    run(engine.generate(ground(1_000)))
    run(engine.shutdown())
    assert load_recording(tmp_path / 'x.jsonl')[0].text == CUP


def test_registry_errors_are_typed(recording):
    with pytest.raises(UnknownEngineKindError) as info:
        create_engine('tensorrt', None)
    assert 'sglang' in str(info.value)
    with pytest.raises(EngineConfigError) as info:
        create_engine('recorded', None, path=recording, no_such_option=1)
    assert 'no_such_option' in str(info.value)


def test_registry_sglang_without_sglang_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'sglang', None)  # make the import fail even if installed
    with pytest.raises(EngineError) as info:
        create_engine('sglang', None)
    assert "pip install 'spatial_vlm_ros[sglang]'" in str(info.value)
