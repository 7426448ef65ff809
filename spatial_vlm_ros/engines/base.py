# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""One async boundary between the pipeline and every VLM backend.

Backends (``sglang``, ``openai``, ``transformers``, ``recorded``) implement :class:`VlmEngine`;
the node and the replay only ever see :class:`EngineRequest` in and :class:`EngineResponse`
out. Responses never raise for bad model output: parsing failures are carried in
``EngineResponse.parsed`` as typed results that keep the raw text.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
import enum
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import SpatialVlmError


class EngineError(SpatialVlmError):
    """The engine could not produce any output (unreachable server, timeout, crash)."""


class EngineTimeout(EngineError):  # noqa: N818 - reads as the condition, like TimeoutError
    """The engine call exceeded its deadline."""


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
    """A grammar for the answer text, applied by constrained decoding where the engine has it.

    ``json_schema`` is the answer's JSON schema as compact JSON text. ``structural_tag`` is an
    xgrammar structural tag (``{"type": "structural_tag", "format": ...}`` as JSON text) that
    wraps the schema in the profile's answer format (Spatial-SSRL: ``<think>...</think>`` then
    ``\\boxed{<json>}``); empty means the answer is the bare JSON. Built by
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


@dataclass(frozen=True)
class EngineResponse:
    raw_text: str
    parsed: Any  # engines.parsing result types (GroundingResult / AnswerResult / ParseFailure)
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    engine: str = ''
    model_id: str = ''
    flags: tuple[str, ...] = ()  # e.g. (FLAG_NO_RECORDING,); see ERROR_FLAGS


# Response flags shared by every engine. Only those in ERROR_FLAGS make a scene an error;
# the others are informational (items recovered from a truncated output, nearest-stamp match).
FLAG_NO_RECORDING = 'no_recording_for_stamp'
FLAG_NEAREST_STAMP = 'recording_matched_within_tolerance'
FLAG_MAX_NEW_TOKENS = 'max_new_tokens_reached'
ERROR_FLAGS = frozenset({FLAG_NO_RECORDING})


class VlmEngine(abc.ABC):
    """A backend that turns :class:`EngineRequest` into :class:`EngineResponse`."""

    name: str = 'base'

    @abc.abstractmethod
    async def generate(self, request: EngineRequest) -> EngineResponse:
        """Run one request; concurrent calls may be batched by the backend."""

    async def start(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Load the model or connect; called once before the first request."""

    async def health(self) -> bool:
        """True when the backend can serve a request now."""
        return True

    async def shutdown(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Release the model, threads, connections or child processes."""
