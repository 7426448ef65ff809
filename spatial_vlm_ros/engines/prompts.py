# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Prompt text and chat messages for each task, from the model profile.

Every engine builds its input here so that the same request gives the same prompt everywhere:
OpenAI-style messages for servers and transformers processors, and a plain chat-template string
for in-process SGLang when no processor/tokenizer is available.
"""

from __future__ import annotations

from typing import Any

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.base import EngineRequest, SamplingParams, TaskKind
from spatial_vlm_ros.engines.profiles import ModelProfile

# The image placeholder Qwen3-VL's chat template emits for one image part.
QWEN_VISION_PLACEHOLDER = '<|vision_start|><|image_pad|><|vision_end|>'


class PromptError(SpatialVlmError, ValueError):
    """The request cannot be turned into a prompt (e.g. a question task without a question)."""


def _clean_categories(vocabulary: tuple[str, ...] | list[str]) -> list[str]:
    seen: list[str] = []
    for word in vocabulary:
        cleaned = ' '.join(str(word).replace('"', '').split())
        if cleaned and cleaned not in seen:
            seen.append(cleaned)
    return seen


def grounding_prompt(profile: ModelProfile, vocabulary: tuple[str, ...] | list[str] = ()) -> str:
    """
    Return the Qwen3-VL cookbook grounding prompt.

    For given classes or for every salient object.
    """
    categories = _clean_categories(vocabulary)
    if not categories:
        return profile.grounding_prompt_all
    return profile.grounding_prompt_classes.format(categories=', '.join(categories))


def tidy_question(question: str) -> str:
    """Spaces collapsed within each line; line breaks kept (multiple-choice options need them)."""
    lines = (' '.join(line.split()) for line in str(question).splitlines())
    return '\n'.join(line for line in lines if line)


def question_prompt(profile: ModelProfile, question: str) -> str:
    """Return the question plus the profile's answer-format instruction (e.g. Spatial-SSRL's)."""
    text = tidy_question(question) if question else ''
    if not text:
        raise PromptError('a question task needs a non-empty question')
    return profile.question_prompt.format(question=text)


def user_text(request: EngineRequest, profile: ModelProfile) -> str:
    """Return the text part of the user turn for ``request``."""
    if request.task == TaskKind.GROUND:
        return grounding_prompt(profile, request.vocabulary)
    if request.task == TaskKind.QUESTION:
        return question_prompt(profile, request.question)
    raise PromptError(f'unsupported task {request.task!r}')


def chat_messages(
    request: EngineRequest, profile: ModelProfile, image_urls: list[str] | tuple[str, ...]
) -> list[dict[str, Any]]:
    """Build the chat-completions messages: images first, then the text (as Qwen's cookbooks)."""
    content: list[dict[str, Any]] = [
        {'type': 'image_url', 'image_url': {'url': url}} for url in image_urls
    ]
    content.append({'type': 'text', 'text': user_text(request, profile)})
    messages: list[dict[str, Any]] = []
    if profile.system_prompt:
        messages.append({'role': 'system', 'content': profile.system_prompt})
    messages.append({'role': 'user', 'content': content})
    return messages


def hf_chat_messages(
    request: EngineRequest, profile: ModelProfile, images: list[Any] | tuple[Any, ...]
) -> list[dict[str, Any]]:
    """Hugging Face processor messages (``{"type": "image", "image": ...}`` parts)."""
    content: list[dict[str, Any]] = [{'type': 'image', 'image': image} for image in images]
    content.append({'type': 'text', 'text': user_text(request, profile)})
    messages: list[dict[str, Any]] = []
    if profile.system_prompt:
        messages.append(
            {'role': 'system', 'content': [{'type': 'text', 'text': profile.system_prompt}]}
        )
    messages.append({'role': 'user', 'content': content})
    return messages


def qwen_chat_prompt(text: str, image_count: int, system_prompt: str = '') -> str:
    """
    Return the Qwen3-VL chat template rendered by hand, for when no processor is at hand.

    Matches what ``apply_chat_template(..., add_generation_prompt=True)`` renders for one user turn
    with ``image_count`` images before the text (Qwen3-VL Instruct has no default system turn).
    Unverified against every checkpoint's template; engines prefer the processor when present.
    """
    parts = []
    if system_prompt:
        parts.append(f'<|im_start|>system\n{system_prompt}<|im_end|>\n')
    parts.append('<|im_start|>user\n')
    parts.append(QWEN_VISION_PLACEHOLDER * image_count)
    parts.append(f'{text}<|im_end|>\n<|im_start|>assistant\n')
    return ''.join(parts)


def sampling_for(request: EngineRequest, profile: ModelProfile) -> SamplingParams:
    """
    Return the request's sampling, or the profile's default for the task.

    The default is greedy for grounding.
    """
    if request.sampling is not None:
        return request.sampling
    if request.task == TaskKind.GROUND:
        return profile.grounding_sampling
    return profile.question_sampling


def presence_penalty_for(request: EngineRequest, profile: ModelProfile) -> float:
    """Presence penalty: the request's sampling's if it has one, else the profile's."""
    if request.sampling is not None:
        return float(request.sampling.presence_penalty)
    if request.task == TaskKind.QUESTION:
        return profile.question_presence_penalty
    return 0.0


def uses_grounding_schema(request: EngineRequest, profile: ModelProfile) -> bool:
    """Whether to constrain decoding to the grounding JSON schema for this request."""
    return (
        request.task == TaskKind.GROUND and request.constrained and profile.grounding_uses_schema
    )
