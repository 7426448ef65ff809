# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
What parsing makes of one model answer: the typed ``EngineResponse.parsed`` values.

Kept apart from ``parsing`` so that ``base`` can type ``EngineResponse.parsed`` without importing
the parser (which itself needs ``base``'s request types).
"""

from __future__ import annotations

from dataclasses import dataclass

from spatial_vlm_ros.core.types import Detection


@dataclass(frozen=True)
class GroundingResult:
    """Boxes found in a grounding answer, in RGB pixels."""

    detections: tuple[Detection, ...] = ()
    warnings: tuple[str, ...] = ()
    truncated: bool = False  # the JSON was cut off; only complete items were kept
    capped: bool = False  # more than ``max_items`` items; the rest were ignored
    dropped_items: int = 0  # invalid, degenerate or point-only items
    merged_duplicates: int = 0
    reasoning: str = ''  # text of a <think> block, if any

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(d.label for d in self.detections)


@dataclass(frozen=True)
class AnswerResult:
    """A free-form answer to a question."""

    answer: str
    reasoning: str = ''
    boxed: bool = False  # the answer came from \\boxed{...}
    warnings: tuple[str, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class ParseFailure:
    """Nothing usable in the output; ``raw_text`` keeps it for diagnostics."""

    reason: str
    raw_text: str


ParseResult = GroundingResult | AnswerResult | ParseFailure
