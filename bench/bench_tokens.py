# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Tokens per frame: image tokens at each profile's pixel budget, output tokens per object.

Image tokens: ``engines.imaging.image_tokens_for`` (what the engines budget with) against the real
transformers ``Qwen3VLProcessor`` (its Qwen2-VL image processor, patch 16, merge 2) given the same
pixel budget, counting the ``<|image_pad|>`` tokens it expands the image placeholder into. The
processor is the tiny checkpoint's (test/fixtures/tiny_model.py), with ``size`` set to each
profile's ``min_pixels`` / ``max_pixels``: the image processor's arithmetic is the real one, only
the budget differs between checkpoints. Both the raw frame and the frame already resized
client-side (what the OpenAI engine sends) are checked.

Output tokens: the real Qwen3-VL tokenizer cannot be downloaded here (no model hub access), so the
grounding answer (``[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}, ...]``, 0..1000 coordinates)
is counted two ways, neither of which is the real count:

* the tiny checkpoint's tokenizer: a 600-entry byte-level BPE trained on a few strings, so it
  over-counts (an upper bound for typical text);
* pre-tokens of Qwen2/Qwen3's own pre-tokenizer regex (the ``pretokenize_regex`` of Qwen2's
  tokenizer: one token per digit, words and punctuation runs split as the real tokenizer splits
  them). BPE never merges across pre-tokens, so this is a lower bound of the real count, and
  equal to it whenever every pre-token is in the 151k vocabulary (true for JSON punctuation,
  ``bbox``, ``label``, single digits and common English words).

Per-object cost is the marginal one: (tokens of 20 objects - tokens of the empty list) / 20.

    .venv/bin/python bench/bench_tokens.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import sys
import time
from typing import Any

import numpy as np
import regex

from spatial_vlm_ros.engines.imaging import image_tokens_for, model_input_size, resize_for_profile
from spatial_vlm_ros.engines.profiles import GREEDY_GROUNDING_SAMPLING, PROFILES, ModelProfile
from spatial_vlm_ros.engines.schema import GROUNDING_MAX_ITEMS

# The tiny checkpoint builder is test-only code (test/fixtures), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'test'))
from fixtures.tiny_model import build_tiny_model, tiny_profile

SIZES = ((640, 480), (1280, 720))
OBJECTS = 20
# Qwen2TokenizerFast's pre-tokenization pattern (transformers, tokenization_qwen2.py).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_PRETOKEN = regex.compile(QWEN2_PRETOKENIZE_REGEX)
LABELS = (
    'box', 'bin', 'can', 'crate', 'bottle', 'bucket', 'carton', 'red mug', 'office chair',
    'laptop', 'person', 'potted plant', 'door', 'table', 'backpack', 'cardboard box',
)  # fmt: skip


def qwen_pretokens(text: str) -> int:
    return len(_PRETOKEN.findall(text))


def grounding_answer(objects: list[dict[str, Any]], style: str) -> str:
    """The answer text in the shape Qwen3-VL writes natively, or compact JSON."""
    if style == 'compact':
        return json.dumps(objects, separators=(',', ':'))
    if not objects:
        return '```json\n[]\n```'
    lines = ',\n\t'.join(json.dumps(obj) for obj in objects)
    return f'```json\n[\n\t{lines}\n]\n```'


def random_objects(rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
    objects = []
    for _ in range(count):
        x1, x2 = sorted(int(v) for v in rng.integers(0, 1001, 2))
        y1, y2 = sorted(int(v) for v in rng.integers(0, 1001, 2))
        objects.append({'bbox_2d': [x1, y1, x2, y2], 'label': str(rng.choice(LABELS))})
    return objects


def processor_image_tokens(processor: Any, image: np.ndarray, profile: ModelProfile) -> int:
    """``<|image_pad|>`` tokens the real Qwen3-VL processor emits for ``image`` at the budget."""
    messages = [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'x'}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    size = {'shortest_edge': profile.min_pixels, 'longest_edge': profile.max_pixels}
    encoded = processor(text=[text], images=[image], return_tensors='np', size=size)
    pad_id = processor.tokenizer.convert_tokens_to_ids('<|image_pad|>')
    return int((encoded['input_ids'][0] == pad_id).sum())


def image_table(processor: Any, profiles: list[ModelProfile]) -> bool:
    print('\nimage tokens per frame (one image)')
    print(
        f'{"profile":<26} {"budget tokens":>14} {"frame":>9} {"model input":>12} '
        f'{"ours":>6} {"processor":>10} {"ratio":>6} {"resized->proc":>14}'
    )
    agree = True
    rng = np.random.default_rng(0)
    for profile in profiles:
        budget = f'{profile.min_pixels // 1024}..{profile.max_pixels // 1024}'
        for width, height in SIZES:
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            ours = image_tokens_for(width, height, profile)
            theirs = processor_image_tokens(processor, frame, profile)
            resized_frame = resize_for_profile(frame, profile)
            resized = processor_image_tokens(processor, resized_frame, profile)
            model_w, model_h = model_input_size(width, height, profile)
            agree &= ours == theirs == resized
            print(
                f'{profile.name:<26} {budget:>14} {f"{width}x{height}":>9} '
                f'{f"{model_w}x{model_h}":>12} {ours:>6d} {theirs:>10d} {ours / theirs:>6.2f} '
                f'{resized:>14d}'
            )
    return agree


def output_table(tokenizer: Any) -> None:
    rng = np.random.default_rng(1)
    objects = random_objects(rng, OBJECTS)
    print(f'\noutput tokens per grounded object (marginal over {OBJECTS}, 0..1000 coordinates)')
    print(
        f'{"answer style":<14} {"chars/obj":>10} {"tiny BPE/obj":>13} {"Qwen pre-tokens/obj":>20} '
        f'{"tiny/pre":>9} {"64 objects (pre)":>17}'
    )
    for style in ('native', 'compact'):
        full = grounding_answer(objects, style)
        empty = grounding_answer([], style)
        chars = (len(full) - len(empty)) / OBJECTS
        tiny = (len(tokenizer.encode(full)) - len(tokenizer.encode(empty))) / OBJECTS
        pre = (qwen_pretokens(full) - qwen_pretokens(empty)) / OBJECTS
        at_max = qwen_pretokens(empty) + pre * GROUNDING_MAX_ITEMS
        print(
            f'{style:<14} {chars:>10.1f} {tiny:>13.1f} {pre:>20.1f} {tiny / pre:>9.2f} '
            f'{at_max:>17.0f}'
        )
    example = grounding_answer(objects[:1], 'compact')
    pieces = _PRETOKEN.findall(example)
    print(f'example object, {len(pieces)} Qwen pre-tokens: {pieces}')
    print(
        f'grounding max_new_tokens = {GREEDY_GROUNDING_SAMPLING.max_new_tokens} for at most '
        f'{GROUNDING_MAX_ITEMS} objects (schema maxItems)'
    )


def main() -> int:
    started = time.perf_counter()
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    from transformers import AutoProcessor

    model_dir = Path(build_tiny_model('generic'))
    processor = AutoProcessor.from_pretrained(str(model_dir))
    print(
        'image tokens: engines.imaging.image_tokens_for vs the transformers Qwen3VLProcessor '
        f'(patch 16, merge 2) of {model_dir.name} at each budget'
    )
    print(
        'output tokens: NO real Qwen tokenizer is available (no download); counted with the tiny '
        "checkpoint's 600-entry BPE (over-counts) and Qwen2's pre-tokenizer regex (lower bound)"
    )
    profiles = [*PROFILES.values(), tiny_profile('generic', model_dir)]
    agree = image_table(processor, profiles)
    output_table(processor.tokenizer)
    print(f'\nimage token counts agree with the processor: {agree}')
    print(f'wall time {time.perf_counter() - started:.1f} s')
    return 0 if agree else 1


if __name__ == '__main__':
    sys.exit(main())
