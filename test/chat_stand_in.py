# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for an OpenAI-compatible model server (SGLang / vLLM cannot run on these machines).

It speaks the real protocol the `openai` engine uses (GET /health, GET /v1/models,
POST /v1/chat/completions): grounding requests (their ``response_format`` is the grounding JSON
schema, engines/schema.py) get a fixed list of boxes after ``ground_delay_s``; every other
request (a question or a locate choice, with the grammar engines/question.py builds) gets a
fixed answer, or what ``respond(body)`` returns, after ``answer_delay_s``. The default answer is
what a constrained Spatial-SSRL writes (think block, then the answer JSON in ``\\boxed{}``).
Usable in a test process (``ChatStandIn``) or as its own process:

    python test/chat_stand_in.py --port 0 --ground-delay-s 0.003   # prints the URL
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import sys
import threading
import time
from typing import Any

from spatial_vlm_ros.engines.schema import GROUNDING_SCHEMA_NAME

# Two objects in Qwen3-VL relative 0-1000 boxes, as the DDS tests' synthetic depth has them.
GROUNDING = [
    {'bbox_2d': [100, 400, 300, 700], 'label': 'mug'},
    {'bbox_2d': [600, 350, 850, 700], 'label': 'box'},
]
ANSWER_TEXT = 'The mug is closer to the camera than the box.'
ANSWER = (
    '<think>The mug is nearer.</think>\n\\boxed{'
    + json.dumps({'answer': ANSWER_TEXT, 'object_ids': ['mug_0', 'box_0'], 'measurements': []})
    + '}'
)


def is_grounding(body: dict[str, Any]) -> bool:
    """Whether a chat request is a grounding request (its grammar is the grounding schema)."""
    response_format = body.get('response_format')
    if not isinstance(response_format, dict) or response_format.get('type') != 'json_schema':
        return False
    return response_format.get('json_schema', {}).get('name') == GROUNDING_SCHEMA_NAME


def user_text(body: dict[str, Any]) -> str:
    """The text part of the request's last user message."""
    content = body['messages'][-1]['content']
    if isinstance(content, str):
        return content
    return ''.join(part.get('text', '') for part in content if part.get('type') == 'text')


def grammar_of(response_format: Any, problems: list[str]) -> Any:
    """The grammar a real server builds from ``response_format`` (xgrammar, the backend SGLang
    and vLLM use), or None with the problem appended to ``problems``."""
    import xgrammar

    if not isinstance(response_format, dict):
        problems.append(f'no response_format: {response_format!r}')
        return None
    try:
        if response_format.get('type') == 'structural_tag':
            return xgrammar.Grammar.from_structural_tag(json.dumps(response_format))
        if response_format.get('type') == 'json_schema':
            schema = response_format['json_schema']['schema']
            return xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    except Exception as error:  # noqa: BLE001 - any rejection is a finding
        problems.append(f'xgrammar rejects the response_format: {error}')
        return None
    problems.append(f'unknown response_format type {response_format.get("type")!r}')
    return None


def _completion(content: str) -> dict[str, Any]:
    return {
        'id': 'chatcmpl-stand-in',
        'object': 'chat.completion',
        'model': 'stand-in',
        'choices': [
            {
                'index': 0,
                'message': {'role': 'assistant', 'content': content},
                'finish_reason': 'stop',
            }
        ],
        'usage': {'prompt_tokens': 300, 'completion_tokens': 20, 'total_tokens': 320},
    }


class ChatStandIn:
    """The server on 127.0.0.1 (port 0: an ephemeral one), serving on a daemon thread."""

    def __init__(
        self,
        port: int = 0,
        ground_delay_s: float = 0.0,
        answer_delay_s: float = 0.0,
        answer: str = ANSWER,
        grounding: Sequence[dict[str, Any]] = tuple(GROUNDING),
        respond: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        self.ground_delay_s = ground_delay_s
        self.answer_delay_s = answer_delay_s
        self.answer = answer
        self.respond = respond
        self.grounding_text = json.dumps(list(grounding))
        self.counts = {'ground': 0, 'question': 0}
        self.question_bodies: list[dict[str, Any]] = []  # every non-grounding request
        self.in_flight_questions = 0
        self.max_in_flight_questions = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                if self.path == '/health':
                    self._send(200, {})
                elif self.path == '/v1/models':
                    self._send(200, {'object': 'list', 'data': [{'id': 'stand-in'}]})
                else:
                    self._send(404, {'error': 'not found'})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))))
                if self.path != '/v1/chat/completions':
                    self._send(404, {'error': 'not found'})
                    return
                server._serve(self, body)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', port), Handler)
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True
        )
        self._thread.start()

    def _serve(self, handler: Any, body: dict[str, Any]) -> None:
        grounding = is_grounding(body)
        kind = 'ground' if grounding else 'question'
        with self._lock:
            self.counts[kind] += 1
            if not grounding:
                self.question_bodies.append(body)
                self.in_flight_questions += 1
                self.max_in_flight_questions = max(
                    self.max_in_flight_questions, self.in_flight_questions
                )
        try:
            delay_s = self.ground_delay_s if grounding else self.answer_delay_s
            if delay_s > 0:
                self._closing.wait(delay_s)
            if grounding:
                text = self.grounding_text
            else:
                text = self.answer if self.respond is None else self.respond(body)
            try:
                handler._send(200, _completion(text))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up
        finally:
            if not grounding:
                with self._lock:
                    self.in_flight_questions -= 1

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--ground-delay-s', type=float, default=0.0)
    parser.add_argument('--answer-delay-s', type=float, default=0.0)
    args = parser.parse_args(argv)
    server = ChatStandIn(args.port, args.ground_delay_s, args.answer_delay_s)
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
