# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""~/query and ~/locate content against an OpenAI-compatible stand-in server (real HTTP).

The stand-in is a real HTTP server in the test process, reached through the real ``openai``
engine (httpx, JPEG data URLs, ``response_format``). It is named a stand-in because no model can
run here; it is checked against the real thing where it matters:

* it reads the prompt's facts block and compares every listed position, range and distance with
  the scene the node measured (on the real tum_desk frame, lifted by the product's own code);
* it checks that the image it receives carries the set-of-marks tags;
* the grammar the engine sends in ``response_format`` is parsed and compiled by xgrammar (the
  grammar backend SGLang and vLLM use), and every scripted reply must be accepted by it, so the
  stand-in never answers something a constrained real model could not.

It answers with scripted structured answers, e.g. a wrong guessed number that the reply must
replace with the measured one.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
import http.server
import json
import math
import re
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest
from rgbd_scenes import build_real_scene
from xgrammar.testing import _is_grammar_accept_string

from spatial_vlm_ros.core.annotate import draw_marks, scene_marks
from spatial_vlm_ros.core.measurements import MeasurementKind
from spatial_vlm_ros.core.scheduling import Deadline
from spatial_vlm_ros.engines.openai_engine import OpenAIEngine
from spatial_vlm_ros.engines.profiles import AnswerFormat, ModelProfile, resolve_profile
from spatial_vlm_ros.queries import (
    SOURCE_GEOMETRY,
    SOURCE_MODEL,
    SOURCE_MODEL_TEXT,
    QuerySnapshot,
    answer_question,
    locate,
)

from chat_stand_in import grammar_of

PLAIN = resolve_profile('qwen3-vl-4b-instruct-fp8')
SSRL = resolve_profile('spatial-ssrl-4b-fp8')
_FACT_LINE = re.compile(
    r'^(\S+) [^:\n]+: (-?\d+\.\d\d) (-?\d+\.\d\d) (-?\d+\.\d\d); '
    r'(\d+\.\d\d) (\d+\.\d\d) (\d+\.\d\d); (\d+\.\d\d); (ok|sparse \d+%)$',
    re.MULTILINE,
)
_DISTANCE = re.compile(r'(\S+?)-(\S+?) (\d+\.\d\d)')


@dataclass
class StandIn:
    """State shared with the handler thread: the scene to check against, replies, findings."""

    scene: Any
    rgb: np.ndarray
    replies: list[Any] = field(default_factory=list)  # dicts (JSON) or str (raw text)
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, body: dict[str, Any]) -> tuple[str, Any]:
        """Check one request; return ``(user text, grammar)``."""
        content = body['messages'][-1]['content']
        text = next(part['text'] for part in content if part['type'] == 'text')
        urls = [part['image_url']['url'] for part in content if part['type'] == 'image_url']
        if len(urls) != 1:
            self.problems.append(f'{len(urls)} images')
        else:
            shown = [o.id for o in self.scene.objects if re.search(rf'\b{o.id}\b', text)]
            self._check_marks(urls[0], shown)
        if 'Question:' in text:
            self._check_facts(text)
        return text, grammar_of(body.get('response_format'), self.problems)

    def _check_marks(self, url: str, ids: list[str]) -> None:
        """The image is the set-of-marks image of the objects the text names."""
        jpeg = base64.b64decode(url.split(',', 1)[1])
        sent = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        marked = draw_marks(self.rgb, scene_marks(self.scene, ids)).image
        if sent.shape != marked.shape:
            self.problems.append(f'image shape {sent.shape}')
            return
        to_marked = float(np.abs(sent.astype(float) - marked).mean())
        to_plain = float(np.abs(sent.astype(float) - self.rgb).mean())
        if not to_marked < to_plain:
            self.problems.append(f'image without marks ({to_marked:.1f} vs {to_plain:.1f})')

    def _check_facts(self, text: str) -> None:
        objects = {obj.id: obj for obj in self.scene.objects}
        listed = {match.group(1): match for match in _FACT_LINE.finditer(text)}
        if set(listed) != set(objects):
            self.problems.append(f'facts list {sorted(listed)}, scene has {sorted(objects)}')
        for object_id, match in listed.items():
            lifted = objects[object_id].lifted
            stated = np.array([float(match.group(i)) for i in (2, 3, 4)])
            if np.abs(stated - lifted.position).max() > 0.005 + 1e-9:
                self.problems.append(f'{object_id}: position {stated} vs {lifted.position}')
            size = np.array([float(match.group(i)) for i in (5, 6, 7)])
            if np.abs(size - lifted.size).max() > 0.005 + 1e-9:
                self.problems.append(f'{object_id}: size {size} vs {lifted.size}')
            if abs(float(match.group(8)) - np.linalg.norm(lifted.position)) > 0.005 + 1e-9:
                self.problems.append(f'{object_id}: range {match.group(8)}')
        distances = re.search(r'^Centroid distances: (.*)\.$', text, re.MULTILINE)
        if distances is None:
            self.problems.append('no distances in the facts')
            return
        for a, b, value in _DISTANCE.findall(distances.group(1)):
            true = np.linalg.norm(objects[a].lifted.position - objects[b].lifted.position)
            if abs(float(value) - true) > 0.005 + 1e-9:
                self.problems.append(f'distance {a}-{b} {value} vs {true:.4f}')


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            'id': 'standin',
            'object': 'chat.completion',
            'model': 'standin',
            'choices': [
                {
                    'index': 0,
                    'finish_reason': 'stop',
                    'message': {'role': 'assistant', 'content': text},
                }
            ],
            'usage': {'prompt_tokens': 1000, 'completion_tokens': 50},
        }
    ).encode()


def _make_handler(state: StandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
            with state.lock:
                state.requests.append(body)
                text, grammar = state.check(body)
                reply = state.replies.pop(0) if state.replies else 'no reply scripted'
            if isinstance(reply, dict):
                reply = json.dumps(reply)
                if '\\boxed{}' in text:
                    reply = f'<think>The facts give the answer.</think>\n\\boxed{{{reply}}}'
                if grammar is not None and not _is_grammar_accept_string(grammar, reply):
                    with state.lock:
                        state.problems.append(f'the grammar rejects the scripted reply {reply}')
            time.sleep(state.delay_s)
            payload = _completion(reply)
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a deadline test)

    return Handler


@pytest.fixture(scope='module')
def snapshot() -> QuerySnapshot:
    scene, frame, _ = build_real_scene('tum_desk')
    return QuerySnapshot(scene, frame.rgb)


@pytest.fixture()
def standin(snapshot: QuerySnapshot) -> Iterator[tuple[StandIn, str]]:
    state = StandIn(snapshot.scene, snapshot.rgb)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _ask(
    url: str, profile: ModelProfile, snapshot: QuerySnapshot, question: str, **kwargs: Any
) -> Any:
    async def run() -> Any:
        engine = OpenAIEngine(profile, base_url=url, served_model_name='standin', max_attempts=1)
        try:
            return await answer_question(snapshot, question, engine, profile, **kwargs)
        finally:
            await engine.shutdown()

    return asyncio.run(run())


WRONG_GUESS = {
    'answer': 'About 2 metres.',
    'object_ids': ['mug_0', 'keyboard_0'],
    'measurements': [{'kind': 'distance', 'object_ids': ['mug_0', 'keyboard_0'], 'value_m': 2.0}],
}


@pytest.mark.parametrize('profile', [PLAIN, SSRL], ids=lambda p: p.name)
def test_a_wrong_guessed_distance_is_replaced_by_the_measured_one(standin, snapshot, profile):
    state, url = standin
    state.replies = [WRONG_GUESS]
    reply = _ask(url, profile, snapshot, 'How far is the mug from the keyboard?')
    assert state.problems == []
    assert reply.success and reply.source == SOURCE_MODEL
    (distance,) = reply.measurements
    assert distance.kind == MeasurementKind.DISTANCE
    assert set(distance.object_ids) == {'mug_0', 'keyboard_0'}
    assert distance.value == pytest.approx(0.47, abs=0.01)
    assert 0.0 < distance.sigma < 0.1
    assert distance.model_value == 2.0
    assert '0.47 m' in reply.answer and '2 metres' not in reply.answer
    assert 'the model said 2.00 m' in reply.message and 'measured 0.47 m' in reply.message
    assert reply.object_ids == ('mug_0', 'keyboard_0')
    # The grammar sent: the scene's ids as the only ids the model may write.
    response_format = state.requests[0]['response_format']
    assert (
        '"enum":' + json.dumps([o.id for o in snapshot.scene.objects], separators=(',', ':'))
    ) in (json.dumps(response_format, separators=(',', ':')))
    think_boxed = profile.answer_format == AnswerFormat.THINK_BOXED
    assert (response_format['type'] == 'structural_tag') == think_boxed


def test_a_distance_the_model_did_not_list_is_still_measured(standin, snapshot):
    state, url = standin
    state.replies = [
        {'answer': 'They are close to each other.', 'object_ids': [], 'measurements': []}
    ]
    reply = _ask(url, PLAIN, snapshot, 'How far is the mug from the keyboard?')
    assert state.problems == []
    assert reply.source == SOURCE_MODEL
    assert reply.answer.startswith('They are close to each other. Measured: mug_0 is 0.47 m')
    assert [m.kind for m in reply.measurements] == [MeasurementKind.DISTANCE]
    assert math.isnan(reply.measurements[0].model_value)


def test_free_text_with_a_number_is_replaced_and_flagged(standin, snapshot):
    state, url = standin
    state.replies = ['About 2 metres.']  # no JSON: a server that ignored response_format
    reply = _ask(url, PLAIN, snapshot, 'How far is the mug from the keyboard?')
    assert reply.success and reply.source == SOURCE_MODEL_TEXT
    assert reply.answer == reply.measurements[0].text + '.'
    assert reply.measurements[0].model_value == 2.0
    assert 'no structured answer' in reply.message and 'the model said 2.00 m' in reply.message


def test_a_broken_answer_falls_back_to_geometry_and_says_so(standin, snapshot):
    state, url = standin
    state.replies = ['{"answer": "cut off']
    reply = _ask(url, PLAIN, snapshot, 'Which is closer to the camera, the mug or the keyboard?')
    assert reply.success and reply.source == SOURCE_GEOMETRY
    assert reply.answer.startswith('mug_0 is the nearest to the camera.')
    assert 'answered from the geometry' in reply.message


def test_no_server_answers_what_geometry_can_and_fails_clearly_otherwise(snapshot):
    dead = 'http://127.0.0.1:9'  # discard port: nothing listens
    reply = _ask(dead, PLAIN, snapshot, 'Is the mug left of the keyboard?')
    assert reply.success and reply.source == SOURCE_GEOMETRY
    assert reply.answer.startswith('mug_0 is 0.41 m right of keyboard_0')
    assert 'EngineError' in reply.message
    reply = _ask(dead, PLAIN, snapshot, 'What colour is the mug?')
    assert not reply.success and reply.answer == ''
    assert reply.message.startswith('no answer: EngineError')


def test_one_deadline_bounds_the_engine_call(standin, snapshot):
    state, url = standin
    state.replies = [WRONG_GUESS]
    state.delay_s = 3.0
    reply = _ask(
        url,
        PLAIN,
        snapshot,
        'How far is the mug from the keyboard?',
        deadline=Deadline.after(0.3),
    )
    assert reply.source == SOURCE_GEOMETRY and reply.timed_out
    assert 'EngineTimeout' in reply.message
    assert '0.47 m' in reply.answer


def _locate(url: str, snapshot: QuerySnapshot, description: str) -> Any:
    async def run() -> Any:
        engine = OpenAIEngine(PLAIN, base_url=url, served_model_name='standin', max_attempts=1)
        try:
            return await locate(snapshot, description, engine=engine, profile=PLAIN)
        finally:
            await engine.shutdown()

    return asyncio.run(run())


def test_red_mug_is_not_found_when_the_model_sees_no_red_mug(standin, snapshot):
    state, url = standin
    state.replies = [{'choice': 'none', 'reason': 'the only mug is white'}]
    outcome = _locate(url, snapshot, 'red mug')
    assert state.problems == []
    result = outcome.result
    assert not result.found and not result.ambiguous
    assert [c.id for c in result.candidates] == ['mug_0']
    assert result.candidates[0].score < 0.5
    assert 'no candidate that is "red"' in result.candidates[0].reason
    text = state.requests[0]['messages'][-1]['content'][-1]['text']
    assert 'Which one is "red mug"?' in text and 'mug_0 (mug)' in text
    assert state.requests[0]['response_format']['json_schema']['schema']['properties']['choice'][
        'enum'
    ] == ['mug_0', 'none']


def test_the_model_choice_decides_between_look_alike_candidates(standin, snapshot):
    state, url = standin
    state.replies = [{'choice': 'coke_can_1', 'reason': 'the can behind the monitor'}]
    outcome = _locate(url, snapshot, 'the coke can with the white stripe')
    assert state.problems == []
    assert outcome.result.found and outcome.result.best.id == 'coke_can_1'
    assert outcome.model_message == 'model chose coke_can_1'
    scores = {c.id: c.score for c in outcome.result.candidates}
    assert scores['coke_can_1'] == 1.0 and scores['coke_can_0'] == pytest.approx(0.25)
