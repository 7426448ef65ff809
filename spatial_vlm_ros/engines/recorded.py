# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Replay and record raw model outputs as JSONL, one line per frame and task.

Line format (UTF-8, one JSON object per line)::

    {"stamp_ns": 1700000000123456789, "text": "<raw model output>"}
    {"stamp_ns": 1700000000123456789, "task": "question", "question": "...", "text": "..."}

``stamp_ns`` is the RGB header stamp in integer nanoseconds; ``task`` is ``"ground"`` (default) or
``"question"``; ``question`` optionally keys question answers. Extra keys (``model_id``,
``engine``) are kept for provenance and ignored on replay. Replay re-parses the text with the
current parser, so parser fixes apply to old recordings.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
import json
import os
from pathlib import Path
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from spatial_vlm_ros.engines.base import (
    FLAG_NEAREST_STAMP,
    FLAG_NO_RECORDING,
    Completion,
    EngineError,
    EngineHealth,
    EngineRequest,
    EngineResponse,
    TaskKind,
    Timings,
    VlmEngine,
)
from spatial_vlm_ros.engines.parsing import respond
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile
from spatial_vlm_ros.engines.results import GroundingResult, ParseFailure, ParseResult


class RecordingFormatError(EngineError, ValueError):
    """A recording file is missing or has a malformed line (the message names the line)."""


@dataclass(frozen=True)
class RecordedOutput:
    stamp_ns: int
    text: str
    task: TaskKind = TaskKind.GROUND
    question: str = ''
    model_id: str = ''


def _parse_line(line: str, where: str) -> RecordedOutput:
    try:
        record = json.loads(line)
    except ValueError as error:
        raise RecordingFormatError(f'{where}: not valid JSON ({error})') from None
    if not isinstance(record, dict):
        raise RecordingFormatError(f'{where}: expected a JSON object, got {type(record).__name__}')
    stamp = record.get('stamp_ns')
    if isinstance(stamp, bool) or not isinstance(stamp, int):
        raise RecordingFormatError(f'{where}: "stamp_ns" must be an integer (nanoseconds)')
    text = record.get('text')
    if not isinstance(text, str):
        raise RecordingFormatError(f'{where}: "text" must be a string')
    task_name = record.get('task', TaskKind.GROUND.value)
    try:
        task = TaskKind(task_name)
    except ValueError:
        known = ', '.join(kind.value for kind in TaskKind)
        raise RecordingFormatError(
            f'{where}: unknown task {task_name!r} (known: {known})'
        ) from None
    question = record.get('question', '')
    model_id = record.get('model_id', '')
    return RecordedOutput(
        stamp_ns=stamp,
        text=text,
        task=task,
        question=question if isinstance(question, str) else '',
        model_id=model_id if isinstance(model_id, str) else '',
    )


def load_recording(path: str | os.PathLike[str]) -> list[RecordedOutput]:
    """Every line of a recording; blank lines are skipped, a bad line raises with its number."""
    file_path = Path(path)
    try:
        lines = file_path.read_text(encoding='utf-8').splitlines()
    except OSError as error:
        raise RecordingFormatError(f'cannot read recording {file_path}: {error}') from None
    except UnicodeDecodeError as error:
        raise RecordingFormatError(f'recording {file_path} is not UTF-8: {error}') from None
    return [
        _parse_line(line, f'{file_path}:{number}')
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def _question_key(question: str) -> str:
    return ' '.join(question.split()).lower()


class RecordedEngine(VlmEngine):
    """
    Answers from a recording instead of a model.

    Stamps match exactly, or to the nearest recorded stamp within ``tolerance_ns``. A frame without
    a line gets an empty result flagged ``no_recording_for_stamp`` (grounding) or a ParseFailure
    with that reason (questions): never a made-up answer.
    """

    name = 'recorded'

    def __init__(
        self,
        profile: ModelProfile | str | None = None,
        path: str | os.PathLike[str] = '',
        tolerance_ns: int = 0,
    ) -> None:
        if not str(path):
            raise RecordingFormatError('RecordedEngine needs path= to a JSONL recording')
        if tolerance_ns < 0:
            raise RecordingFormatError(f'tolerance_ns must be >= 0, got {tolerance_ns}')
        self.profile = resolve_profile(profile)
        self.path = Path(path)
        self.tolerance_ns = int(tolerance_ns)
        # Later lines win: re-recording a frame appends a corrected line.
        self._by_key: dict[tuple[TaskKind, int], list[RecordedOutput]] = {}
        recorded = load_recording(self.path)
        for output in recorded:
            self._by_key.setdefault((output.task, output.stamp_ns), []).insert(0, output)
        self._stamps = {
            task: sorted(stamp for kind, stamp in self._by_key if kind == task)
            for task in TaskKind
        }
        self.model_id = next((o.model_id for o in recorded if o.model_id), self.profile.hf_id)

    def __len__(self) -> int:
        return sum(len(outputs) for outputs in self._by_key.values())

    def _nearest_stamp(self, task: TaskKind, stamp_ns: int) -> int | None:
        stamps = self._stamps[task]
        index = bisect.bisect_left(stamps, stamp_ns)
        candidates = stamps[max(index - 1, 0) : index + 1]
        if not candidates:
            return None
        best = min(candidates, key=lambda stamp: abs(stamp - stamp_ns))
        return best if abs(best - stamp_ns) <= self.tolerance_ns else None

    def lookup(self, request: EngineRequest) -> tuple[RecordedOutput | None, bool]:
        """
        Return the recorded output for ``request``.

        And whether it matched only within tolerance.
        """
        stamp = self._nearest_stamp(request.task, request.stamp_ns)
        if stamp is None:
            return None, False
        outputs = self._by_key[(request.task, stamp)]
        if request.task == TaskKind.QUESTION and request.question:
            wanted = _question_key(request.question)
            keyed = [o for o in outputs if o.question and _question_key(o.question) == wanted]
            unkeyed = [o for o in outputs if not o.question]
            outputs = keyed or unkeyed
            if not outputs:
                return None, False
        return outputs[0], stamp != request.stamp_ns

    async def generate(self, request: EngineRequest) -> EngineResponse:
        """Return the recorded answer, parsed like a live one; a gap is flagged, never made up."""
        started = time.perf_counter()
        output, approximate = self.lookup(request)
        if output is None:
            parsed: ParseResult
            if request.task == TaskKind.QUESTION:
                parsed = ParseFailure(FLAG_NO_RECORDING, '')
            else:
                parsed = GroundingResult(warnings=(FLAG_NO_RECORDING,))
            return EngineResponse(
                raw_text='',
                parsed=parsed,
                timings=Timings(total_s=time.perf_counter() - started),
                engine=self.name,
                model_id=self.model_id,
                flags=(FLAG_NO_RECORDING,),
            )
        completion = Completion(
            text=output.text,
            timings=Timings(total_s=time.perf_counter() - started),
            model_id=self.model_id,
            flags=(FLAG_NEAREST_STAMP,) if approximate else (),
        )
        return respond(request, self.profile, completion, engine=self.name)

    async def health(self) -> EngineHealth:
        return EngineHealth.ok(f'replaying {len(self)} recorded outputs from {self.path}')


class RecordingWriter:
    """Appends raw outputs in the recording format; thread-safe, flushed after every line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO | None = self.path.open('a', encoding='utf-8')
        except OSError as error:
            raise RecordingFormatError(f'cannot open recording {self.path}: {error}') from None

    def write(
        self,
        stamp_ns: int,
        text: str,
        task: TaskKind = TaskKind.GROUND,
        question: str = '',
        extra: dict[str, Any] | None = None,
    ) -> None:
        record: dict[str, Any] = {'stamp_ns': int(stamp_ns), 'task': TaskKind(task).value}
        if question:
            record['question'] = question
        record['text'] = text
        for key, value in (extra or {}).items():
            record.setdefault(key, value)
        line = json.dumps(record, ensure_ascii=False) + '\n'
        with self._lock:
            if self._file is None:
                raise RecordingFormatError(f'recording {self.path} is closed')
            self._file.write(line)
            self._file.flush()

    def write_response(self, request: EngineRequest, response: EngineResponse) -> None:
        extra = {key: value for key, value in (('model_id', response.model_id),) if value}
        if response.engine:
            extra['engine'] = response.engine
        self.write(request.stamp_ns, response.raw_text, request.task, request.question, extra)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class RecordingEngine(VlmEngine):
    """Wraps any engine and records the raw text of every response it returns."""

    def __init__(self, inner: VlmEngine, path: str | os.PathLike[str] | RecordingWriter) -> None:
        self.inner = inner
        self.name = inner.name
        self._owns_writer = not isinstance(path, RecordingWriter)
        self.writer = path if isinstance(path, RecordingWriter) else RecordingWriter(path)

    @property
    def profile(self) -> ModelProfile:  # type: ignore[override]
        return self.inner.profile

    async def generate(self, request: EngineRequest) -> EngineResponse:
        response = await self.inner.generate(request)
        # A replayed gap has no model output to keep; recording it would fake an empty answer.
        if FLAG_NO_RECORDING not in response.flags:
            self.writer.write_response(request, response)
        return response

    async def start(self) -> None:
        await self.inner.start()

    async def health(self) -> EngineHealth:
        return await self.inner.health()

    async def shutdown(self) -> None:
        try:
            await self.inner.shutdown()
        finally:
            if self._owns_writer:
                self.writer.close()


def write_recording(path: str | os.PathLike[str], outputs: Iterable[RecordedOutput]) -> None:
    """Write ``outputs`` as a fresh recording file (tests, conversions)."""
    with Path(path).open('w', encoding='utf-8') as handle:
        for output in outputs:
            record: dict[str, Any] = {'stamp_ns': output.stamp_ns, 'task': output.task.value}
            if output.question:
                record['question'] = output.question
            if output.model_id:
                record['model_id'] = output.model_id
            record['text'] = output.text
            handle.write(json.dumps(record, ensure_ascii=False) + '\n')
