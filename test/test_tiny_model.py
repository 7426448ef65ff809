# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The tiny Qwen3-VL builder: loadable checkpoints, a hash-keyed cache, deterministic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fixtures import tiny_model
from fixtures.tiny_model import (
    STAMP_FILE,
    TinyModelError,
    build_tiny_model,
    default_model_dir,
    read_stamp,
    tiny_profile,
)


def _file_digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


@pytest.fixture(scope='module')
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp('tiny_cache')


@pytest.fixture(scope='module')
def generic_dir(cache: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(tiny_model.CACHE_ENV, str(cache))
        return build_tiny_model('generic')


def test_default_location_is_under_the_cache_env(cache: Path, generic_dir: Path) -> None:
    assert generic_dir.parent == cache
    assert generic_dir.name.startswith('tiny-qwen3-vl-generic-')
    names = {path.name for path in generic_dir.iterdir()}
    assert {'config.json', 'model.safetensors', 'tokenizer.json', STAMP_FILE} <= names
    assert not [path for path in cache.iterdir() if path.name.startswith('.')], 'staging left'


def test_second_build_reuses_the_cache(
    cache: Path, generic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tiny_model.CACHE_ENV, str(cache))
    weights = generic_dir / 'model.safetensors'
    mtime_before = weights.stat().st_mtime_ns
    assert build_tiny_model('generic') == generic_dir
    assert weights.stat().st_mtime_ns == mtime_before
    assert default_model_dir('generic') == generic_dir


def test_build_is_deterministic(tmp_path: Path, generic_dir: Path) -> None:
    again = build_tiny_model('generic', out_dir=tmp_path / 'again')
    assert _file_digests(again) == _file_digests(generic_dir)


def test_changed_spec_rebuilds_in_place(tmp_path: Path) -> None:
    out_dir = tmp_path / 'model'
    build_tiny_model('generic', out_dir=out_dir, seed=1)
    first = _file_digests(out_dir)
    build_tiny_model('generic', out_dir=out_dir, seed=2)
    second = _file_digests(out_dir)
    assert first['model.safetensors'] != second['model.safetensors']
    assert first['tokenizer.json'] == second['tokenizer.json']
    stamp = read_stamp(out_dir)
    assert stamp is not None and stamp['spec']['seed'] == 2
    assert [path.name for path in tmp_path.iterdir()] == ['model'], 'stale or staging dirs left'


def test_config_matches_tokenizer_and_template(generic_dir: Path) -> None:
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(generic_dir)
    processor = AutoProcessor.from_pretrained(generic_dir)
    tokenizer = processor.tokenizer
    assert config.image_token_id == tokenizer.convert_tokens_to_ids('<|image_pad|>')
    assert config.video_token_id == tokenizer.convert_tokens_to_ids('<|video_pad|>')
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids('<|vision_start|>')
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids('<|vision_end|>')
    text = config.text_config
    assert sum(text.rope_parameters['mrope_section']) * 2 == text.head_dim
    assert text.vocab_size >= len(tokenizer)
    assert processor.image_processor.patch_size == 16
    assert processor.image_processor.merge_size == 2

    messages = [
        {'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'find the cup'}]}
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        '<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>find the cup<|im_end|>\n'
        '<|im_start|>assistant\n'
    )
    # Think tags are tokens of their own that survive skip_special_tokens, as in Qwen3.
    ids = tokenizer.encode('<think>a</think>', add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == '<think>a</think>'


def test_fp8_variant_is_block_quantized(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    import torch

    directory = build_tiny_model('instruct-fp8', out_dir=tmp_path / 'fp8')
    config = json.loads((directory / 'config.json').read_text())
    quant = config['quantization_config']
    assert quant['quant_method'] == 'fp8'
    assert quant['fmt'] == 'e4m3'
    assert quant['activation_scheme'] == 'dynamic'
    assert quant['weight_block_size'] == [128, 128]
    tensors = load_file(str(directory / 'model.safetensors'))
    name = 'model.language_model.layers.0.mlp.up_proj.weight'
    weight, scale = tensors[name], tensors[name.replace('.weight', '.weight_scale_inv')]
    assert weight.dtype == torch.float8_e4m3fn
    assert tuple(scale.shape) == (weight.shape[0] // 128, weight.shape[1] // 128)
    assert tensors['model.visual.blocks.0.mlp.linear_fc1.weight'].dtype == torch.bfloat16
    assert not any(key.startswith('model.visual') and 'scale_inv' in key for key in tensors)


def test_grace_weights_lie_on_an_int8_group_grid(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    import torch

    directory = build_tiny_model('grace-w8g128', out_dir=tmp_path / 'grace')
    config = json.loads((directory / 'config.json').read_text())
    assert 'quantization_config' not in config
    weight = load_file(str(directory / 'model.safetensors'))[
        'model.language_model.layers.1.mlp.down_proj.weight'
    ].float()
    # The builder's scales are powers of two, so the stored bf16 values sit exactly on the grid.
    scale = torch.exp2(torch.ceil(torch.log2(weight.abs().amax(dim=1, keepdim=True) / 127.0)))
    steps = weight / scale
    assert torch.equal(steps, steps.round())
    assert steps.abs().max() <= 127
    assert (steps.remainder(2) == 1).any(), 'the grid is coarser than INT8'
    assert steps.unique().numel() > 64


def test_tiny_profile_keeps_the_seed_behaviour(generic_dir: Path) -> None:
    from spatial_vlm_ros.engines.profiles import AnswerFormat, resolve_profile

    profile = tiny_profile('spatial-ssrl', generic_dir)
    seed = resolve_profile('spatial-ssrl-4b-fp8')
    assert profile.hf_id == str(generic_dir)
    assert profile.answer_format == seed.answer_format == AnswerFormat.THINK_BOXED
    assert profile.question_prompt == seed.question_prompt
    assert profile.max_pixels == tiny_model.TINY_MAX_PIXELS < seed.max_pixels


def test_unknown_variant_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TinyModelError, match='unknown tiny model variant'):
        build_tiny_model('qwen-huge', out_dir=tmp_path / 'x')


def test_cli_prints_the_path(
    cache: Path, generic_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(tiny_model.CACHE_ENV, str(cache))
    assert tiny_model.main(['generic']) == 0
    assert capsys.readouterr().out.strip() == str(generic_dir)
