# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Build a tiny, randomly initialised Qwen3-VL checkpoint that loads like the real ones.

No weights can be downloaded on this project's machines, so tests, benches and the replay demo run
the real transformers loading and generation path on a checkpoint made here: a byte-level BPE
tokenizer trained on a few strings (JSON punctuation, digits, labels, prompt words) plus the Qwen
special tokens, a Qwen3-VL chat template, a ``Qwen3VLProcessor`` (patch 16, merge 2, small pixel
budget) and a ``Qwen3VLForConditionalGeneration`` with 2 text and 2 vision layers and seeded random
weights. It is ~1 MB, builds in well under a second after imports, and generates on a CPU.

Each variant mirrors the config family of one seed model where loading depends on it:

* ``generic``: plain float32 weights, untied embeddings.
* ``instruct-fp8``: Qwen3-VL-4B-Instruct-FP8's layout: ``quantization_config`` fine-grained FP8
  (``fmt e4m3``, dynamic activations, ``weight_block_size [128, 128]``), text-decoder linears
  stored as ``float8_e4m3fn`` with per-block ``weight_scale_inv``, vision tower and ``lm_head``
  kept in bf16. Block quantization needs every quantized dimension divisible by 128, so this
  variant's text decoder is 128 wide (8 heads of 16, MHA) instead of 64.
* ``spatial-ssrl``: Spatial-SSRL-Qwen3VL-4B (a BF16 fine-tune of the 4B Instruct): bf16, tied
  embeddings, the Instruct sampling defaults in ``generation_config.json``.
* ``grace-w8g128``: GRACE's QAT checkpoint of Qwen3-VL-2B-Instruct: its model card says it loads
  with ``AutoModelForImageTextToText`` and the separate ``-AWQ`` repo is the packed format, so the
  assumption here is standard bf16 HF weights with no ``quantization_config``. The weights are
  fake-quantized (symmetric INT8, groups of 128 input columns, or the whole row when narrower) as
  a QAT export would be, with power-of-two scales so that the grid survives bf16 storage exactly.

The output directory is keyed by a hash of everything the build depends on (the variant's spec,
the tokenizer corpus, the template, the processor settings, the seed, and the transformers,
tokenizers and torch versions), so a change rebuilds and an unchanged spec reuses the cache. The
build happens in a temporary sibling directory that is renamed into place, so a reader never sees
half a checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
import hashlib
import json
import os
from pathlib import Path
import shutil
import sys
import tempfile
from typing import Any

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile

BUILDER_VERSION = 2
STAMP_FILE = 'spatial_vlm_tiny.json'
CACHE_ENV = 'SPATIAL_VLM_CACHE'
DEFAULT_SEED = 1234

# Small image budget: 4..64 visual tokens (one token per 32x32 px), so a 640x480 frame becomes
# 320x224 px = 70 -> 64 tokens after the budget's floor rounding.
TINY_MIN_PIXELS = 4 * 32 * 32
TINY_MAX_PIXELS = 64 * 32 * 32
# Grounding on random weights can emit up to the schema's bound (64 boxes of 64-char labels);
# engines built on the tiny model cap new tokens through the profile instead.
TINY_MAX_NEW_TOKENS = 256

SPECIAL_TOKENS = (
    '<|endoftext|>',
    '<|im_start|>',
    '<|im_end|>',
    '<|vision_start|>',
    '<|vision_end|>',
    '<|image_pad|>',
    '<|video_pad|>',
)
# Qwen3 keeps the think tags as added but non-special tokens, so skip_special_tokens keeps them.
THINK_TOKENS = ('<think>', '</think>')

# Enough text for BPE merges on what the pipeline actually sends and expects back.
TOKENIZER_CORPUS = (
    '[{"bbox_2d": [12, 340, 560, 999], "label": "red mug"}, '
    '{"bbox_2d": [0, 7, 1000, 88], "label": "chair"}]',
    'Locate every instance that belongs to the following categories: "chair, table, cup, person, '
    'bottle, door, box". Report bbox coordinates in JSON format.',
    'Locate every salient object in the image. Report bbox coordinates in JSON format.',
    'Is the cup to the left of the laptop? Which object is closer to the camera? How far apart '
    'are they in metres?',
    'system user assistant yes no left right above below behind in front of near far',
    '<think> The mug is left of the plate, so the answer is left. </think> \\boxed{left}',
    '0 1 2 3 4 5 6 7 8 9 10 25 100 250 500 750 999 1000 0.5 1.25',
    '{ } [ ] , : " \' ( ) . ; - _ / \\ \n \t',
)

# A compact Qwen3-VL template: system turn if given, image parts as
# <|vision_start|><|image_pad|><|vision_end|>, then the text, then the assistant header.
CHAT_TEMPLATE = (
    '{%- for message in messages -%}'
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    '{%- else -%}'
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}"
    "{{- part['text'] -}}"
    '{%- endif -%}'
    '{%- endfor -%}'
    '{%- endif -%}'
    "{{- '<|im_end|>\\n' -}}"
    '{%- endfor -%}'
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Real Qwen3-VL checkpoints: patch 16, spatial merge 2, temporal patch 2, mean/std 0.5.
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FP8_BLOCK = 128
FP8_TEXT_PROJECTIONS = (
    'q_proj',
    'k_proj',
    'v_proj',
    'o_proj',
    'gate_proj',
    'up_proj',
    'down_proj',
)
QAT_GROUP_SIZE = 128


class TinyModelError(SpatialVlmError):
    """The tiny checkpoint could not be built (unknown variant, unwritable cache, ...)."""


@dataclass(frozen=True)
class TinyVariant:
    """Architecture and storage of one tiny checkpoint; every field enters the cache key."""

    name: str
    seed_profile: str  # profiles.PROFILES name of the model this variant stands in for
    text_hidden_size: int = 64
    text_intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    # Sums to head_dim / 2 (Qwen3-VL 4B: [24, 20, 20] for head_dim 128).
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    text_layers: int = 2
    vision_layers: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_heads: int = 2
    tie_word_embeddings: bool = False
    dtype: str = 'float32'
    quantization: str | None = None  # 'fp8' (fine-grained, block 128) or 'w8g128-qat'
    # generation_config.json sampling defaults of the seed (Qwen3-VL Instruct card: 0.7/0.8/20);
    # engines must override them for greedy grounding.
    sampling_defaults: bool = False
    vocab_multiple: int = 64  # config vocab padded past the tokenizer, as Qwen's is


VARIANTS: dict[str, TinyVariant] = {
    variant.name: variant
    for variant in (
        TinyVariant(name='generic', seed_profile='qwen3-vl'),
        TinyVariant(
            name='instruct-fp8',
            seed_profile='qwen3-vl-4b-instruct-fp8',
            text_hidden_size=128,
            text_intermediate_size=256,
            num_attention_heads=8,
            num_key_value_heads=8,
            tie_word_embeddings=True,
            dtype='bfloat16',
            quantization='fp8',
            sampling_defaults=True,
        ),
        TinyVariant(
            name='spatial-ssrl',
            seed_profile='spatial-ssrl-4b-fp8',
            tie_word_embeddings=True,
            dtype='bfloat16',
            sampling_defaults=True,
        ),
        TinyVariant(
            name='grace-w8g128',
            seed_profile='qwen3-vl-2b-grace-w8g128',
            tie_word_embeddings=True,
            dtype='bfloat16',
            quantization='w8g128-qat',
            sampling_defaults=True,
        ),
    )
}


def variant_names() -> tuple[str, ...]:
    return tuple(VARIANTS)


def get_variant(variant: str) -> TinyVariant:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise TinyModelError(
            f'unknown tiny model variant {variant!r}; known: {", ".join(VARIANTS)}'
        ) from None


def cache_root() -> Path:
    """``$SPATIAL_VLM_CACHE`` or ``~/.cache/spatial_vlm_ros``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path('~/.cache/spatial_vlm_ros').expanduser()


def _library_versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        'transformers': transformers.__version__,
        'tokenizers': tokenizers.__version__,
        'torch': torch.__version__,
    }


def build_spec(variant: str, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Everything the build depends on; its hash keys the cache."""
    spec = get_variant(variant)
    return {
        'builder_version': BUILDER_VERSION,
        'variant': asdict(spec),
        'seed': seed,
        'special_tokens': list(SPECIAL_TOKENS),
        'think_tokens': list(THINK_TOKENS),
        'corpus': list(TOKENIZER_CORPUS),
        'chat_template': CHAT_TEMPLATE,
        'processor': {
            'patch_size': PATCH_SIZE,
            'merge_size': MERGE_SIZE,
            'temporal_patch_size': TEMPORAL_PATCH_SIZE,
            'min_pixels': TINY_MIN_PIXELS,
            'max_pixels': TINY_MAX_PIXELS,
        },
        'versions': _library_versions(),
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode('utf-8')).hexdigest()


def default_model_dir(variant: str, seed: int = DEFAULT_SEED) -> Path:
    """Where :func:`build_tiny_model` puts ``variant`` when no ``out_dir`` is given."""
    digest = spec_hash(build_spec(variant, seed))[:12]
    return cache_root() / f'tiny-qwen3-vl-{variant}-{digest}'


def read_stamp(model_dir: Path) -> dict[str, Any] | None:
    """The build record of a tiny checkpoint directory, or None if it is not one."""
    try:
        return json.loads((Path(model_dir) / STAMP_FILE).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None


def build_tiny_model(
    variant: str = 'generic', out_dir: Path | None = None, seed: int = DEFAULT_SEED
) -> Path:
    """Return a directory holding the tiny ``variant`` checkpoint, building it if needed.

    A directory whose stamp carries the same spec hash is reused as is. Otherwise the checkpoint
    is written to a temporary sibling and renamed into place (a stale ``out_dir`` is replaced).
    """
    spec = build_spec(variant, seed)
    digest = spec_hash(spec)
    target = (
        Path(out_dir).expanduser() if out_dir is not None else default_model_dir(variant, seed)
    )
    stamp = read_stamp(target)
    if stamp is not None and stamp.get('hash') == digest:
        _write_profile_file(target, variant)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like ~/.cache
    except OSError as error:
        raise TinyModelError(
            f'cannot create the tiny model directory {target}: {error}'
        ) from error
    try:
        _write_checkpoint(staging, get_variant(variant), seed)
        (staging / STAMP_FILE).write_text(
            json.dumps({'hash': digest, 'spec': spec}, indent=2, sort_keys=True), encoding='utf-8'
        )
        _move_into_place(staging, target, digest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_profile_file(target, variant)
    return target


def _write_profile_file(model_dir: Path, variant: str) -> None:
    """Let ``model:=<dir>`` (node, CLI) pick the seed profile with the tiny budget."""
    from spatial_vlm_ros.engines.profiles import PROFILE_FILE

    path = model_dir / PROFILE_FILE
    content = json.dumps(
        {
            'base_profile': get_variant(variant).seed_profile,
            'min_pixels': TINY_MIN_PIXELS,
            'max_pixels': TINY_MAX_PIXELS,
            'grounding_max_new_tokens': TINY_MAX_NEW_TOKENS,
            'question_max_new_tokens': TINY_MAX_NEW_TOKENS,
        },
        indent=2,
        sort_keys=True,
    )
    if not path.is_file() or path.read_text(encoding='utf-8') != content:
        path.write_text(content, encoding='utf-8')


def _move_into_place(staging: Path, target: Path, digest: str) -> None:
    if target.exists():
        stamp = read_stamp(target)
        if stamp is not None and stamp.get('hash') == digest:
            return  # another process finished the same build first
        # Stale build (or not ours): swap it out, then delete it.
        stale = target.with_name(f'.{target.name}.stale-{os.getpid()}')
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        stamp = read_stamp(target)
        if stamp is None or stamp.get('hash') != digest:
            raise


def tiny_profile(variant: str, model_dir: Path) -> ModelProfile:
    """The seed model's profile pointed at the tiny checkpoint, with a tiny-sized budget.

    Prompts, answer format and sampling temperatures stay the seed's; the pixel budget and the
    new-token caps shrink so that random weights stay fast on a CPU.
    """
    spec = get_variant(variant)
    seed = resolve_profile(spec.seed_profile)
    return replace(
        seed.with_model_path(str(model_dir)),
        name=f'tiny-{variant}',
        min_pixels=TINY_MIN_PIXELS,
        max_pixels=TINY_MAX_PIXELS,
        grounding_sampling=replace(seed.grounding_sampling, max_new_tokens=TINY_MAX_NEW_TOKENS),
        question_sampling=replace(seed.question_sampling, max_new_tokens=TINY_MAX_NEW_TOKENS),
    )


# --- the build itself ----------------------------------------------------------------------------


def _train_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeats make the frequent pieces (JSON keys, digits) win merges.
    tokenizer.train_from_iterator(list(TOKENIZER_CORPUS) * 4, trainer)
    tokenizer.add_tokens([AddedToken(token, special=False) for token in THINK_TOKENS])
    return tokenizer


def _build_processor(directory: Path) -> Any:
    from transformers import Qwen2TokenizerFast, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=None,
        eos_token='<|im_end|>',
        pad_token='<|endoftext|>',
        unk_token=None,
        padding_side='left',
        chat_template=CHAT_TEMPLATE,
    )
    budget = {'longest_edge': TINY_MAX_PIXELS, 'shortest_edge': TINY_MIN_PIXELS}
    common = {
        'patch_size': PATCH_SIZE,
        'merge_size': MERGE_SIZE,
        'temporal_patch_size': TEMPORAL_PATCH_SIZE,
        'size': budget,
        'image_mean': [0.5, 0.5, 0.5],
        'image_std': [0.5, 0.5, 0.5],
    }
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**common),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(directory))
    return processor


def _token_ids(tokenizer: Any) -> dict[str, int]:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if any(not isinstance(value, int) or value < 0 for value in ids.values()):
        raise TinyModelError(f'special tokens missing from the tiny tokenizer: {ids}')
    return ids


def _config(spec: TinyVariant, tokenizer: Any) -> Any:
    from transformers import Qwen3VLConfig

    if sum(spec.mrope_section) * 2 != spec.head_dim:
        raise TinyModelError(f'mrope_section {spec.mrope_section} must sum to head_dim / 2')
    ids = _token_ids(tokenizer)
    vocab = -(-len(tokenizer) // spec.vocab_multiple) * spec.vocab_multiple
    return Qwen3VLConfig(
        text_config={
            'vocab_size': vocab,
            'hidden_size': spec.text_hidden_size,
            'intermediate_size': spec.text_intermediate_size,
            'num_hidden_layers': spec.text_layers,
            'num_attention_heads': spec.num_attention_heads,
            'num_key_value_heads': spec.num_key_value_heads,
            'head_dim': spec.head_dim,
            'max_position_embeddings': 4096,
            'rope_parameters': {
                'rope_type': 'default',
                'rope_theta': 5_000_000.0,
                'mrope_section': list(spec.mrope_section),
                'mrope_interleaved': True,
            },
            'tie_word_embeddings': spec.tie_word_embeddings,
            'bos_token_id': ids['<|endoftext|>'],
            'eos_token_id': ids['<|im_end|>'],
            'pad_token_id': ids['<|endoftext|>'],
            'dtype': spec.dtype,
        },
        vision_config={
            'depth': spec.vision_layers,
            'hidden_size': spec.vision_hidden_size,
            'intermediate_size': spec.vision_intermediate_size,
            'num_heads': spec.vision_heads,
            'out_hidden_size': spec.text_hidden_size,
            'patch_size': PATCH_SIZE,
            'spatial_merge_size': MERGE_SIZE,
            'temporal_patch_size': TEMPORAL_PATCH_SIZE,
            'num_position_embeddings': 256,  # a 16x16 grid, interpolated like the real 48x48
            'deepstack_visual_indexes': [spec.vision_layers - 1],
            'dtype': spec.dtype,
        },
        image_token_id=ids['<|image_pad|>'],
        video_token_id=ids['<|video_pad|>'],
        vision_start_token_id=ids['<|vision_start|>'],
        vision_end_token_id=ids['<|vision_end|>'],
        tie_word_embeddings=spec.tie_word_embeddings,
        dtype=spec.dtype,
    )


def _write_checkpoint(directory: Path, spec: TinyVariant, seed: int) -> None:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    processor = _build_processor(directory)
    tokenizer = processor.tokenizer
    config = _config(spec, tokenizer)
    dtype = getattr(torch, spec.dtype)
    # fork_rng keeps the caller's global RNG stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    ids = _token_ids(tokenizer)
    model.generation_config.eos_token_id = [ids['<|im_end|>'], ids['<|endoftext|>']]
    model.generation_config.pad_token_id = ids['<|endoftext|>']
    model.generation_config.bos_token_id = ids['<|endoftext|>']
    if spec.sampling_defaults:
        model.generation_config.do_sample = True
        model.generation_config.temperature = 0.7
        model.generation_config.top_p = 0.8
        model.generation_config.top_k = 20
    if spec.quantization == 'w8g128-qat':
        _fake_quantize_int8_groups(model, QAT_GROUP_SIZE)
    model.save_pretrained(str(directory))
    if spec.quantization == 'fp8':
        _store_fp8_block_quantized(directory, model)


def _fake_quantize_int8_groups(model: Any, group_size: int) -> None:
    """Round every text/vision linear weight onto a symmetric INT8 grid per group of columns."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name.endswith('lm_head'):
                continue
            weight = module.weight.data.float()
            rows, cols = weight.shape
            group = group_size if cols % group_size == 0 else cols
            grouped = weight.reshape(rows, cols // group, group)
            # Power-of-two scales keep k * scale exact in bf16 (|k| <= 127 needs 7 bits).
            amax = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8)
            scale = torch.exp2(torch.ceil(torch.log2(amax / 127.0)))
            snapped = (grouped / scale).round().clamp(-127, 127) * scale
            module.weight.data.copy_(snapped.reshape(rows, cols).to(module.weight.dtype))


def _store_fp8_block_quantized(directory: Path, model: Any) -> None:
    """Rewrite the saved weights as fine-grained FP8 and add the matching quantization_config."""
    from safetensors.torch import save_file
    import torch

    fp8_max = torch.finfo(torch.float8_e4m3fn).max
    tensors: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        is_text_projection = name.startswith('model.language_model.layers.') and any(
            name.endswith(f'.{projection}.weight') for projection in FP8_TEXT_PROJECTIONS
        )
        if not is_text_projection:
            tensors[name] = tensor.detach().contiguous()
            continue
        rows, cols = tensor.shape
        if rows % FP8_BLOCK or cols % FP8_BLOCK:
            raise TinyModelError(f'{name} {tuple(tensor.shape)} is not divisible by {FP8_BLOCK}')
        blocks = (
            tensor.detach().float().reshape(rows // FP8_BLOCK, FP8_BLOCK, cols // FP8_BLOCK, -1)
        )
        scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / fp8_max
        quantized = (blocks / scale[:, None, :, None]).reshape(rows, cols).to(torch.float8_e4m3fn)
        tensors[name] = quantized.contiguous()
        tensors[name.removesuffix('weight') + 'weight_scale_inv'] = scale.contiguous()
    if model.config.tie_word_embeddings:
        tensors.pop('lm_head.weight', None)  # tied: stored once, as save_pretrained does
    for stale in directory.glob('model*.safetensors*'):
        stale.unlink()
    save_file(tensors, str(directory / 'model.safetensors'), metadata={'format': 'pt'})
    config_path = directory / 'config.json'
    config = json.loads(config_path.read_text(encoding='utf-8'))
    config['quantization_config'] = {
        'quant_method': 'fp8',
        'fmt': 'e4m3',
        'activation_scheme': 'dynamic',
        'weight_block_size': [FP8_BLOCK, FP8_BLOCK],
        'modules_to_not_convert': ['lm_head', 'model.visual'],
    }
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + '\n', encoding='utf-8')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Build a tiny random Qwen3-VL checkpoint.')
    parser.add_argument('variant', nargs='?', default='generic', choices=variant_names())
    parser.add_argument('--out-dir', type=Path, default=None)
    parser.add_argument('--seed', type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    try:
        path = build_tiny_model(args.variant, args.out_dir, args.seed)
    except SpatialVlmError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
