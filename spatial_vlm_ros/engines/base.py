# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
One async boundary between the pipeline and every VLM backend.

Backends (``sglang``, ``openai``, ``transformers``, ``recorded``) implement :class:`VlmEngine`;
the node and the replay only ever see :class:`EngineRequest` in and :class:`EngineResponse`
out. A backend only produces a :class:`Completion` (raw text, token counts, timings, finish
reason); :meth:`VlmEngine.generate` then parses it once, the same way for every backend
(``parsing.respond``), into the typed ``EngineResponse.parsed``. Responses never raise for bad
model output: parsing failures are carried as a ``ParseFailure`` that keeps the raw text.

:meth:`VlmEngine.health` returns an :class:`EngineHealth` (a level, a one-line message and the
fix) that the node can publish on /diagnostics as it is; :meth:`VlmEngine.start` raises
:class:`EngineUnavailableError` carrying the same value when the backend cannot serve at all.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
import enum
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.results import ParseResult

if TYPE_CHECKING:
    from spatial_vlm_ros.engines.profiles import ModelProfile


class EngineError(SpatialVlmError):
    """The engine could not produce any output (unreachable server, timeout, crash)."""


class EngineTimeout(EngineError):  # noqa: N818 - reads as the condition, like TimeoutError
    """The engine call exceeded its deadline."""


class HealthLevel(enum.IntEnum):
    """Same values as diagnostic_msgs/DiagnosticStatus levels, so the node can copy them."""

    OK = 0
    WARN = 1  # serving, but something needs attention (slow health probe, name mismatch)
    ERROR = 2  # cannot serve a request now


@dataclass(frozen=True)
class EngineHealth:
    """
    The backend's state as a diagnostics-ready value.

    ``message`` says what was found in one line, ``fix`` what to do about it ('' when nothing
    needs doing), ``values`` extra key/value pairs for a DiagnosticStatus (server kind, served
    model, probe latency).
    """

    level: HealthLevel
    message: str
    fix: str = ''
    values: tuple[tuple[str, str], ...] = ()

    @property
    def serving(self) -> bool:
        """Return True unless the level is ERROR (WARN still serves)."""
        return self.level != HealthLevel.ERROR

    def __bool__(self) -> bool:
        """``if await engine.health():`` reads as "can serve now"."""
        return self.serving

    def line(self) -> str:
        """Message and fix in one line, for logs and exceptions."""
        return f'{self.message}. Fix: {self.fix}' if self.fix else self.message

    @classmethod
    def ok(cls, message: str, **values: object) -> EngineHealth:
        return cls(HealthLevel.OK, message, '', _pairs(values))

    @classmethod
    def warn(cls, message: str, fix: str = '', **values: object) -> EngineHealth:
        return cls(HealthLevel.WARN, message, fix, _pairs(values))

    @classmethod
    def error(cls, message: str, fix: str, **values: object) -> EngineHealth:
        return cls(HealthLevel.ERROR, message, fix, _pairs(values))


def _pairs(values: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple((key, str(value)) for key, value in values.items())


class EngineUnavailableError(EngineError):
    """The backend cannot serve (server down, wrong model name, ...); ``health`` says why."""

    def __init__(self, health: EngineHealth) -> None:
        super().__init__(health.line())
        self.health = health


class TaskKind(str, enum.Enum):
    GROUND = 'ground'  # find objects (given classes, or everything) and return 2D boxes
    QUESTION = 'question'  # answer a free-form spatial question


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; ``temperature == 0`` means greedy."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class OutputConstraint:
    r"""
    A grammar for the answer text, applied by constrained decoding where the engine has it.

    ``json_schema`` is the answer's JSON schema as compact JSON text. ``structural_tag`` is an
    xgrammar structural tag (``{"type": "structural_tag", "format": ...}`` as JSON text) that
    wraps the schema in the profile's answer format (Spatial-SSRL: ``<think>...</think>`` then
    ``\boxed{<json>}``); empty means the answer is the bare JSON. Built by
    ``engines.question``.
    """

    json_schema: str
    structural_tag: str = ''
    name: str = 'answer'


@dataclass(frozen=True)
class EngineRequest:
    """Image(s) plus a task. Images are RGB uint8 (H, W, 3) arrays, already in RGB order."""

    images: tuple[npt.NDArray[np.uint8], ...]
    task: TaskKind
    stamp_ns: int = 0  # RGB header stamp; keys recorded outputs
    vocabulary: tuple[str, ...] = ()  # GROUND: classes to find; empty = every salient object
    question: str = ''  # QUESTION: the question text
    sampling: SamplingParams | None = None  # None: the model profile's default for the task
    constrained: bool = True  # GROUND: constrain decoding to the grounding JSON schema
    timeout_s: float | None = None
    # QUESTION: constrain the answer (grounded answers, locate choices); None = free text.
    output_constraint: OutputConstraint | None = None


@dataclass(frozen=True)
class TokenCounts:
    prompt_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each stage of one request (0.0 when unknown)."""

    preprocess_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0
    total_s: float = 0.0


class FinishReason(str, enum.Enum):
    """Why generation stopped, in the OpenAI API's words."""

    STOP = 'stop'  # end of sequence or a stop string
    LENGTH = 'length'  # max_new_tokens reached: the answer may be cut off
    ABORT = 'abort'  # the backend aborted the request
    UNKNOWN = ''  # the backend did not say (recordings)

    @classmethod
    def from_backend(cls, value: object) -> FinishReason:
        """Map a backend's finish reason (OpenAI string, SGLang ``{'type': ...}``) onto ours."""
        if isinstance(value, dict):
            value = value.get('type')
        text = str(value or '').strip().lower()
        if text in ('stop', 'eos', 'stop_sequence', 'matched'):
            return cls.STOP
        if text in ('length', 'max_tokens'):
            return cls.LENGTH
        if text == 'abort':
            return cls.ABORT
        return cls.UNKNOWN


def token_count(value: object) -> int:
    """Return a token count from a backend's loosely typed metadata: an int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class Completion:
    """What a backend produced for one request, before parsing."""

    text: str
    finish_reason: FinishReason = FinishReason.UNKNOWN
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    model_id: str = ''
    # (width, height) of the first image as the model saw it; only absolute-pixel profiles need it.
    input_size: tuple[int, int] | None = None
    flags: tuple[str, ...] = ()  # backend-specific flags (e.g. FLAG_NEAREST_STAMP)


@dataclass(frozen=True)
class EngineResponse:
    raw_text: str
    parsed: ParseResult
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    engine: str = ''
    model_id: str = ''
    flags: tuple[str, ...] = ()  # e.g. (FLAG_NO_RECORDING,); see ERROR_FLAGS
    finish_reason: FinishReason = FinishReason.UNKNOWN


# Response flags shared by every engine. Only those in ERROR_FLAGS make a scene an error;
# the others are informational (items recovered from a truncated output, nearest-stamp match).
FLAG_NO_RECORDING = 'no_recording_for_stamp'
FLAG_NEAREST_STAMP = 'recording_matched_within_tolerance'
FLAG_MAX_NEW_TOKENS = 'max_new_tokens_reached'
ERROR_FLAGS = frozenset({FLAG_NO_RECORDING})


class VlmEngine(abc.ABC):
    """
    A backend that turns :class:`EngineRequest` into :class:`EngineResponse`.

    Backends implement :meth:`complete`; wrappers (recording, fault injection) may override
    :meth:`generate` instead. A subclass must do one of the two.
    """

    name: str = 'base'
    profile: ModelProfile

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.complete is VlmEngine.complete and cls.generate is VlmEngine.generate:
            raise TypeError(f'{cls.__name__} must implement complete() or generate()')

    async def generate(self, request: EngineRequest) -> EngineResponse:
        """Run one request; concurrent calls may be batched by the backend."""
        # Imported here: parsing needs this module's request types.
        from spatial_vlm_ros.engines.parsing import respond

        completion = await self.complete(request)
        return respond(request, self.profile, completion, engine=self.name)

    async def complete(self, request: EngineRequest) -> Completion:
        """Return the backend's raw answer to a request (text, tokens, timings, finish reason)."""
        raise NotImplementedError(f'{type(self).__name__} does not implement complete()')

    async def start(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """
        Load the model or connect; called once before the first request.

        Raises :class:`EngineUnavailableError` when the backend cannot serve at all.
        """

    async def health(self) -> EngineHealth:
        """Whether the backend can serve a request now, and what to do if not; never raises."""
        return EngineHealth.ok(f'{self.name} engine ready')

    async def shutdown(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Release the model, threads, connections or child processes."""
