# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
r"""
What each supported model needs.

Checkpoint, quantization, engine flags, pixel budget, prompts, sampling and output quirks.

Sources (see docs/ENGINES.md): Qwen3-VL model cards / README ("Generation Hyperparameters", VL:
``top_p=0.8, top_k=20, temperature=0.7, repetition_penalty=1.0, presence_penalty=1.5``), the
Qwen3-VL 2D-grounding cookbook (relative 0..1000 ``bbox_2d``), the InternLM Spatial-SSRL README
(``<think>`` then ``\boxed{}`` format prompt) and the GRACE model card.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import enum
import json
import os
from pathlib import Path
import re
from typing import Any

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.base import SamplingParams

# One visual token covers 32x32 px (patch 16, spatial merge 2).
PIXELS_PER_VISUAL_TOKEN = 32 * 32
IMAGE_SIZE_FACTOR = 32


class UnknownProfileError(SpatialVlmError, KeyError):
    """The name is neither a known profile nor an existing local model directory."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ''


class CoordinateSystem(str, enum.Enum):
    RELATIVE_1000 = 'relative_1000'  # Qwen3-VL: 0..1000 relative to the image, resize-invariant
    ABSOLUTE_PIXELS = 'absolute_pixels'  # Qwen2.5-VL: pixels of the image the model saw


class AnswerFormat(str, enum.Enum):
    PLAIN = 'plain'  # the answer is the text itself
    THINK_BOXED = 'think_boxed'  # <think>...</think> then \boxed{answer} (Spatial-SSRL)


# The Spatial-SSRL format prompt as the README's Qwen3-VL-4B snippet appends it to the question
# (InternLM/Spatial-SSRL @ b313fed, README.md): the question ends with a newline, the format
# prompt follows with no leading space (the 7B demo.py's "\n " prefix is Qwen2.5-VL's).
SPATIAL_SSRL_FORMAT_PROMPT = (
    'You FIRST think about the reasoning process as an internal monologue and then provide the '
    'final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final '
    'answer MUST BE put in \\boxed{}.'
)

# Qwen3-VL model card, "Generation Hyperparameters", VL: the sampling the card recommends.
QWEN3_VL_QUESTION_SAMPLING = SamplingParams(
    max_new_tokens=1024, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.0
)
QWEN3_VL_QUESTION_PRESENCE_PENALTY = 1.5
# Grounding is greedy: boxes should be reproducible frame to frame, and sampling noise moves them.
# The schema allows 64 objects; Qwen3-VL's native layout costs at least 33 tokens per object
# (bench/bench_tokens.py), so 64 * 33 + brackets needs ~2120 new tokens: 2304 leaves margin.
GREEDY_GROUNDING_SAMPLING = SamplingParams(max_new_tokens=2304, temperature=0.0)
# The Spatial-SSRL-Qwen3VL-4B README decodes questions greedily with 4096 new tokens
# (``generate(max_new_tokens=4096, do_sample=False)``): its RL training rewards one reasoning
# path, and the Instruct card's presence penalty (tuned for plain answers) is not used there.
SPATIAL_SSRL_QUESTION_SAMPLING = SamplingParams(max_new_tokens=4096, temperature=0.0)

# README example range for Qwen3-VL (256..1280 visual tokens).
DEFAULT_MIN_PIXELS = 256 * PIXELS_PER_VISUAL_TOKEN
DEFAULT_MAX_PIXELS = 1280 * PIXELS_PER_VISUAL_TOKEN


@dataclass(frozen=True)
class ModelProfile:
    """
    Everything model-specific; engines read it and never hard-code a model's quirks.

    ``sglang_args`` holds ``sglang.Engine`` / ``launch_server`` keyword arguments as sorted
    ``(name, value)`` pairs so the profile stays hashable; :meth:`sglang_kwargs` returns a dict.
    """

    name: str
    hf_id: str  # Hugging Face id, or a local directory for the generic profile
    quantization: str | None = None  # 'fp8' (SGLang on-the-fly or FP8 checkpoint), None, or a note
    preferred_engine: str = 'sglang'
    sglang_args: tuple[tuple[str, Any], ...] = ()
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    grounding_prompt_all: str = (
        'Locate every salient object in the image. Report bbox coordinates in JSON format.'
    )
    grounding_prompt_classes: str = (
        'Locate every instance that belongs to the following categories: "{categories}". '
        'Report bbox coordinates in JSON format.'
    )
    question_prompt: str = '{question}'
    system_prompt: str = ''
    grounding_sampling: SamplingParams = GREEDY_GROUNDING_SAMPLING
    question_sampling: SamplingParams = QWEN3_VL_QUESTION_SAMPLING
    question_presence_penalty: float = QWEN3_VL_QUESTION_PRESENCE_PENALTY
    coordinates: CoordinateSystem = CoordinateSystem.RELATIVE_1000
    answer_format: AnswerFormat = AnswerFormat.PLAIN
    emits_thinking: bool = False  # questions produce a <think> block before the answer
    # Grounding always uses the JSON schema when the request asks for it; for a thinking model the
    # grounding prompt carries no think instruction, so a schema-constrained first token is valid.
    grounding_uses_schema: bool = True
    notes: str = ''

    def sglang_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """``sglang.Engine(**kwargs)`` arguments: model path, profile flags, then ``overrides``."""
        kwargs: dict[str, Any] = {'model_path': self.hf_id}
        kwargs.update(dict(self.sglang_args))
        kwargs.update(overrides)
        return kwargs

    def with_model_path(self, path: str) -> ModelProfile:
        """Return the same profile pointed at a local copy of the checkpoint."""
        return replace(self, hf_id=path)


def _escape_format(text: str) -> str:
    """Literal braces for a ``str.format`` template."""
    return text.replace('{', '{{').replace('}', '}}')


def _sglang_args(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(kwargs.items()))


_COMMON_SGLANG = {
    'enable_multimodal': True,
    'mem_fraction_static': 0.8,
    'context_length': 8192,
    # sglang.Engine defaults to log_level='error' and applies it to the host's root logger
    # (logging.basicConfig(force=True)); 'warning' keeps SGLang's own warnings visible, and the
    # engine restores the host's logging configuration after the build (sglang_engine.py).
    'log_level': 'warning',
    # SGLang's xgrammar backend allows unbounded whitespace between JSON tokens by default; a
    # greedy model can then loop on "\n" until max_new_tokens. Qwen3-VL's own layout needs at
    # most "\n\t" between items.
    'constrained_json_max_whitespace_cnt': 8,
}

SPATIAL_SSRL_4B_FP8 = ModelProfile(
    name='spatial-ssrl-4b-fp8',
    hf_id='internlm/Spatial-SSRL-Qwen3VL-4B',
    quantization='fp8',
    preferred_engine='sglang',
    # BF16 checkpoint quantized to FP8 when SGLang loads it; no reasoning_parser: the node parses
    # the raw <think>/\boxed{} text itself so the same parser serves every engine.
    sglang_args=_sglang_args(quantization='fp8', **_COMMON_SGLANG),
    question_prompt='{question}\n' + _escape_format(SPATIAL_SSRL_FORMAT_PROMPT),
    question_sampling=SPATIAL_SSRL_QUESTION_SAMPLING,
    question_presence_penalty=0.0,
    answer_format=AnswerFormat.THINK_BOXED,
    emits_thinking=True,
    notes=(
        'Spatial-SSRL (GRPO on Qwen3-VL-4B-Instruct). '
        'Questions: <think>...</think> then \\boxed{}. '
        'Grounding: plain Qwen3-VL prompt without the think instruction, JSON-schema constrained.'
    ),
)

QWEN3_VL_4B_INSTRUCT_FP8 = ModelProfile(
    name='qwen3-vl-4b-instruct-fp8',
    hf_id='Qwen/Qwen3-VL-4B-Instruct-FP8',
    quantization='fp8',
    preferred_engine='sglang',
    # An FP8 checkpoint: SGLang reads quantization_config from config.json, no flag needed.
    sglang_args=_sglang_args(**_COMMON_SGLANG),
    notes='Official fine-grained FP8 (block 128) checkpoint of Qwen3-VL-4B-Instruct.',
)

QWEN3_VL_2B_GRACE_W8G128 = ModelProfile(
    name='qwen3-vl-2b-grace-w8g128',
    hf_id='ForeverBlue/Qwen3-VL-2B-GRACE-W8G128',
    quantization='w8g128 (QAT, standard HF weights)',
    preferred_engine='transformers',
    sglang_args=_sglang_args(**_COMMON_SGLANG),
    notes=(
        'QAT checkpoint of Qwen3-VL-2B-Instruct with group-wise INT8 (W8G128) trained in; '
        'stored as standard HF weights and loaded with transformers AutoModelForImageTextToText.'
    ),
)

GENERIC_QWEN3_VL = ModelProfile(
    name='qwen3-vl',
    hf_id='',
    quantization=None,
    preferred_engine='sglang',
    sglang_args=_sglang_args(**_COMMON_SGLANG),
    notes='Any Qwen3-VL Instruct checkpoint (HF id or local directory).',
)

PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        SPATIAL_SSRL_4B_FP8,
        QWEN3_VL_4B_INSTRUCT_FP8,
        QWEN3_VL_2B_GRACE_W8G128,
        GENERIC_QWEN3_VL,
    )
}
DEFAULT_PROFILE_NAME = SPATIAL_SSRL_4B_FP8.name


def profile_names() -> tuple[str, ...]:
    return tuple(PROFILES)


# A local model directory may carry this file to pick a base profile and a budget, e.g.
# {"base_profile": "qwen3-vl-4b-instruct-fp8", "min_pixels": 4096, "max_pixels": 65536,
#  "grounding_max_new_tokens": 256, "question_max_new_tokens": 256} (every key optional).
PROFILE_FILE = 'spatial_vlm_profile.json'
_PROFILE_FILE_KEYS = frozenset(
    {'base_profile', 'min_pixels', 'max_pixels', 'grounding_max_new_tokens',
     'question_max_new_tokens'}
)  # fmt: skip


def profile_for_directory(model_dir: str) -> ModelProfile:
    """
    Return the generic profile for a local checkpoint.

    Adjusted by its ``spatial_vlm_profile.json``.
    """
    overrides_path = Path(model_dir) / PROFILE_FILE
    if not overrides_path.is_file():
        return GENERIC_QWEN3_VL.with_model_path(model_dir)
    try:
        overrides = json.loads(overrides_path.read_text(encoding='utf-8'))
        if not isinstance(overrides, dict) or set(overrides) - _PROFILE_FILE_KEYS:
            raise ValueError(f'expected an object with keys from {sorted(_PROFILE_FILE_KEYS)}')
        base = PROFILES[str(overrides.get('base_profile', GENERIC_QWEN3_VL.name))]
        profile = replace(
            base,
            min_pixels=int(overrides.get('min_pixels', base.min_pixels)),
            max_pixels=int(overrides.get('max_pixels', base.max_pixels)),
            grounding_sampling=replace(
                base.grounding_sampling,
                max_new_tokens=int(
                    overrides.get(
                        'grounding_max_new_tokens', base.grounding_sampling.max_new_tokens
                    )
                ),
            ),
            question_sampling=replace(
                base.question_sampling,
                max_new_tokens=int(
                    overrides.get('question_max_new_tokens', base.question_sampling.max_new_tokens)
                ),
            ),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnknownProfileError(f'{overrides_path}: unusable profile file: {error}') from error
    return profile.with_model_path(model_dir)


# Qwen3-VL checkpoints by id: "Qwen/Qwen3-VL-8B-Instruct", "Qwen3-VL-2B-Thinking-FP8", ...
_QWEN3_VL_ID = re.compile(r'(^|/)[^/]*qwen3[-_]?vl', re.IGNORECASE)


def is_qwen3_vl_id(model_id: str) -> bool:
    """Whether a Hugging Face id (or served model name) names a Qwen3-VL checkpoint."""
    return bool(_QWEN3_VL_ID.search(model_id))


def profile_for_model_id(model_id: str) -> ModelProfile:
    """
    Return the Qwen3-VL family profile for a Qwen3-VL id no named profile covers.

    Qwen3-VL checkpoints share the prompts, the 0..1000 boxes and the pixel budget; what the id
    says beyond that is applied: ``-FP8`` checkpoints carry their quantization in config.json,
    ``-Thinking`` models write a ``<think>`` block before question answers.
    """
    if not is_qwen3_vl_id(model_id):
        raise UnknownProfileError(f'{model_id!r} is not a Qwen3-VL model id')
    lowered = model_id.lower()
    thinking = 'thinking' in lowered
    return replace(
        GENERIC_QWEN3_VL,
        hf_id=model_id,
        quantization='fp8' if 'fp8' in lowered else None,
        emits_thinking=thinking,
        notes=f'Qwen3-VL family profile for {model_id}'
        + (' (Thinking: <think> before answers)' if thinking else ''),
    )


def resolve_profile(name_or_path: str | ModelProfile | None = None) -> ModelProfile:
    """
    Return a profile by name, by Hugging Face id, or the generic one for a local path.

    ``None`` or ``''`` gives the default profile. The id of a seed model gets its profile; any
    other Qwen3-VL id (``Qwen/Qwen3-VL-8B-Instruct``) gets the Qwen3-VL family profile
    (:func:`profile_for_model_id`). A path (existing directory, or anything that starts with
    ``/``, ``./``, ``../`` or ``~``) gets the generic Qwen3-VL profile pointed at it, adjusted by
    its ``spatial_vlm_profile.json``.
    """
    if isinstance(name_or_path, ModelProfile):
        return name_or_path
    if name_or_path is None or name_or_path == '':
        return PROFILES[DEFAULT_PROFILE_NAME]
    if not isinstance(name_or_path, str):
        raise UnknownProfileError(
            f'model profile must be a name or a path string, got {type(name_or_path).__name__}'
        )
    key = name_or_path.strip()
    if key in PROFILES:
        return PROFILES[key]
    for profile in PROFILES.values():
        if profile.hf_id and profile.hf_id == key:
            return profile
    looks_like_path = key.startswith(('/', './', '../', '~')) or os.path.isdir(key)
    if looks_like_path:
        return profile_for_directory(os.path.expanduser(key))
    if is_qwen3_vl_id(key):
        return profile_for_model_id(key)
    raise UnknownProfileError(
        f'unknown model {key!r}: not a profile ({", ".join(PROFILES)}), not a Qwen3-VL '
        'model id (e.g. Qwen/Qwen3-VL-8B-Instruct) and not a local model directory'
    )
