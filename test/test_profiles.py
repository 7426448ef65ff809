# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Model profiles, prompts, client-side image preparation and the grounding schema."""

from __future__ import annotations

import base64
import dataclasses
import json

import cv2
import numpy as np
import pytest

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.engines.base import EngineError, EngineRequest, SamplingParams, TaskKind
from spatial_vlm_ros.engines.imaging import (
    InvalidImageError,
    encode_jpeg,
    fit_to_budget,
    image_tokens_for,
    jpeg_data_url,
    model_input_size,
    prepare_image,
    resize_for_profile,
    validate_rgb,
)
from spatial_vlm_ros.engines.profiles import (
    DEFAULT_PROFILE_NAME,
    GENERIC_QWEN3_VL,
    PROFILES,
    SPATIAL_SSRL_FORMAT_PROMPT,
    AnswerFormat,
    UnknownProfileError,
    profile_names,
    resolve_profile,
)
from spatial_vlm_ros.engines.prompts import (
    QWEN_VISION_PLACEHOLDER,
    PromptError,
    chat_messages,
    grounding_prompt,
    presence_penalty_for,
    question_prompt,
    qwen_chat_prompt,
    sampling_for,
    user_text,
    uses_grounding_schema,
)
from spatial_vlm_ros.engines.schema import (
    GROUNDING_MAX_ITEMS,
    grounding_schema,
    grounding_schema_json,
    openai_response_format,
)

# ------------------------------------------------------------------ profiles


def test_seed_profiles_and_default():
    assert set(profile_names()) == {
        'spatial-ssrl-4b-fp8',
        'qwen3-vl-4b-instruct-fp8',
        'qwen3-vl-2b-grace-w8g128',
        'qwen3-vl',
    }
    assert DEFAULT_PROFILE_NAME == 'spatial-ssrl-4b-fp8'
    assert resolve_profile(None).name == 'spatial-ssrl-4b-fp8'
    assert resolve_profile('').name == 'spatial-ssrl-4b-fp8'


def test_spatial_ssrl_is_served_fp8_on_the_fly_and_answers_think_boxed():
    profile = resolve_profile('spatial-ssrl-4b-fp8')
    assert profile.hf_id == 'internlm/Spatial-SSRL-Qwen3VL-4B'
    kwargs = profile.sglang_kwargs()
    assert kwargs['model_path'] == 'internlm/Spatial-SSRL-Qwen3VL-4B'
    assert kwargs['quantization'] == 'fp8'
    assert kwargs['enable_multimodal'] is True
    assert 'reasoning_parser' not in kwargs
    assert profile.answer_format == AnswerFormat.THINK_BOXED and profile.emits_thinking


def test_fp8_checkpoint_needs_no_quantization_flag():
    profile = resolve_profile('qwen3-vl-4b-instruct-fp8')
    assert profile.hf_id == 'Qwen/Qwen3-VL-4B-Instruct-FP8'
    assert profile.quantization == 'fp8'
    assert 'quantization' not in profile.sglang_kwargs()


def test_grace_prefers_transformers():
    profile = resolve_profile('qwen3-vl-2b-grace-w8g128')
    assert profile.hf_id == 'ForeverBlue/Qwen3-VL-2B-GRACE-W8G128'
    assert profile.preferred_engine == 'transformers'
    assert 'w8g128' in (profile.quantization or '')


def test_resolve_by_hf_id_and_local_path(tmp_path):
    assert resolve_profile('Qwen/Qwen3-VL-4B-Instruct-FP8').name == 'qwen3-vl-4b-instruct-fp8'
    local = resolve_profile(str(tmp_path))
    assert local.name == GENERIC_QWEN3_VL.name and local.hf_id == str(tmp_path)
    assert resolve_profile('/models/not/yet/there').hf_id == '/models/not/yet/there'
    assert resolve_profile(local) is local


def test_unknown_profile_is_a_typed_error_naming_the_choices():
    with pytest.raises(UnknownProfileError) as info:
        resolve_profile('qwen-9000')
    assert isinstance(info.value, SpatialVlmError)
    assert 'spatial-ssrl-4b-fp8' in str(info.value)
    with pytest.raises(UnknownProfileError):
        resolve_profile(3)
    with pytest.raises(UnknownProfileError, match='not a Qwen3-VL'):
        resolve_profile('Qwen/Qwen2.5-VL-7B-Instruct')  # absolute-pixel boxes: not ours


@pytest.mark.parametrize(
    ('model_id', 'quantization', 'thinking'),
    [
        ('Qwen/Qwen3-VL-8B-Instruct', None, False),
        ('Qwen/Qwen3-VL-2B-Instruct-FP8', 'fp8', False),
        ('Qwen/Qwen3-VL-4B-Thinking', None, True),
        ('Qwen3-VL-32B-Instruct', None, False),  # a served name without the organisation
    ],
)
def test_any_qwen3_vl_id_gets_the_family_profile(model_id, quantization, thinking):
    """A user's `model:=Qwen/Qwen3-VL-8B-Instruct` was an "unknown profile" (issue 10)."""
    profile = resolve_profile(model_id)
    assert profile.hf_id == model_id
    assert profile.name == GENERIC_QWEN3_VL.name
    assert profile.coordinates == GENERIC_QWEN3_VL.coordinates
    assert profile.quantization == quantization and profile.emits_thinking is thinking
    assert profile.sglang_kwargs()['model_path'] == model_id


def test_every_sglang_profile_keeps_host_logging_and_bounds_json_whitespace():
    """D2: sglang.Engine's default log_level 'error' silences the host; D11: unbounded JSON
    whitespace under the grammar lets a greedy model loop on newlines."""
    for profile in PROFILES.values():
        kwargs = profile.sglang_kwargs()
        assert kwargs['log_level'] == 'warning'
        assert kwargs['constrained_json_max_whitespace_cnt'] == 8


def test_spatial_ssrl_questions_follow_its_4b_readme():
    """D4: the 4B README decodes greedily with 4096 new tokens, no presence penalty, and puts
    the format prompt after the question's own newline (no leading "\n ")."""
    profile = resolve_profile('spatial-ssrl-4b-fp8')
    question = EngineRequest(images=(), task=TaskKind.QUESTION, question='Left or right?')
    sampling = sampling_for(question, profile)
    assert (sampling.temperature, sampling.max_new_tokens) == (0.0, 4096)
    assert presence_penalty_for(question, profile) == 0.0
    assert question_prompt(profile, 'Left or right?') == (
        'Left or right?\nYou FIRST think about the reasoning process as an internal monologue '
        'and then provide the final answer. The reasoning process MUST BE enclosed within '
        '<think> </think> tags. The final answer MUST BE put in \\boxed{}.'
    )


def test_question_line_breaks_survive_for_multiple_choice():
    """D4: collapsing every whitespace run flattened "\nOptions:\nA. ..." into one line."""
    profile = resolve_profile('qwen3-vl-4b-instruct-fp8')
    text = 'Where is the mug?\nOptions:\nA.  on the   left\nB. on the right\n'
    assert question_prompt(profile, text) == (
        'Where is the mug?\nOptions:\nA. on the left\nB. on the right'
    )


def test_profiles_are_frozen_and_hashable():
    profile = PROFILES['qwen3-vl']
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = 'x'
    assert len({hash(p) for p in PROFILES.values()}) == len(PROFILES)


def test_overrides_win_in_sglang_kwargs():
    kwargs = resolve_profile(None).sglang_kwargs(mem_fraction_static=0.5, tp_size=2)
    assert kwargs['mem_fraction_static'] == 0.5 and kwargs['tp_size'] == 2


def test_sampling_defaults_follow_the_model_card():
    profile = resolve_profile('qwen3-vl-4b-instruct-fp8')
    question = EngineRequest(images=(), task=TaskKind.QUESTION, question='q')
    ground = EngineRequest(images=(), task=TaskKind.GROUND)
    q = sampling_for(question, profile)
    assert (q.temperature, q.top_p, q.top_k, q.repetition_penalty) == (0.7, 0.8, 20, 1.0)
    assert presence_penalty_for(question, profile) == 1.5
    assert sampling_for(ground, profile).temperature == 0.0
    assert presence_penalty_for(ground, profile) == 0.0
    explicit = SamplingParams(temperature=0.3)
    override = dataclasses.replace(question, sampling=explicit)
    assert sampling_for(override, profile) is explicit
    assert presence_penalty_for(override, profile) == 0.0


# ------------------------------------------------------------------ prompts


def test_grounding_prompts():
    profile = resolve_profile(None)
    assert 'every salient object' in grounding_prompt(profile)
    text = grounding_prompt(profile, ['cup', ' red  "mug" ', 'cup', ''])
    assert '"cup, red mug"' in text
    assert 'JSON' in text
    assert SPATIAL_SSRL_FORMAT_PROMPT.strip() not in text  # no think instruction for grounding


def test_question_prompt_adds_the_spatial_ssrl_format_prompt():
    ssrl = question_prompt(resolve_profile('spatial-ssrl-4b-fp8'), ' Is the {cup} left? ')
    assert ssrl.startswith('Is the {cup} left?')
    assert ssrl.endswith('The final answer MUST BE put in \\boxed{}.')
    plain = question_prompt(resolve_profile('qwen3-vl-4b-instruct-fp8'), 'Is it?')
    assert plain == 'Is it?'
    with pytest.raises(PromptError):
        question_prompt(resolve_profile(None), '   ')


def test_chat_messages_put_images_before_text():
    request = EngineRequest(images=(), task=TaskKind.GROUND, vocabulary=('cup',))
    messages = chat_messages(request, resolve_profile(None), ['data:a', 'data:b'])
    assert [m['role'] for m in messages] == ['user']
    parts = messages[0]['content']
    assert [p['type'] for p in parts] == ['image_url', 'image_url', 'text']
    assert parts[1]['image_url']['url'] == 'data:b'
    assert parts[2]['text'] == user_text(request, resolve_profile(None))


def test_hand_rendered_qwen_template():
    prompt = qwen_chat_prompt('Find cups.', 2, system_prompt='Be brief.')
    assert prompt.count(QWEN_VISION_PLACEHOLDER) == 2
    assert prompt.startswith('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n')
    assert prompt.endswith('Find cups.<|im_end|>\n<|im_start|>assistant\n')


def test_schema_only_for_constrained_grounding():
    profile = resolve_profile(None)
    assert uses_grounding_schema(EngineRequest(images=(), task=TaskKind.GROUND), profile)
    unconstrained = EngineRequest(images=(), task=TaskKind.GROUND, constrained=False)
    assert not uses_grounding_schema(unconstrained, profile)
    question = EngineRequest(images=(), task=TaskKind.QUESTION, question='q')
    assert not uses_grounding_schema(question, profile)


# ------------------------------------------------------------------ imaging


@pytest.mark.parametrize(
    ('size', 'expected'),
    [((640, 480), (640, 480)), ((1920, 1080), (1504, 832)), ((100, 50), (736, 384))],
)
def test_model_input_size(size, expected):
    assert model_input_size(*size, resolve_profile(None)) == expected


def test_fit_to_budget_keeps_multiples_of_32_inside_the_budget_and_the_aspect():
    profile = resolve_profile(None)
    for width in (33, 100, 333, 640, 1000, 1280, 1920, 4000):
        for height in (17, 240, 480, 720, 1080, 3000):
            new_w, new_h = fit_to_budget(width, height, profile.min_pixels, profile.max_pixels)
            assert new_w % 32 == 0 and new_h % 32 == 0
            assert profile.min_pixels <= new_w * new_h <= profile.max_pixels
            # Rounding to 32 px moves the aspect ratio by at most one block per side.
            assert (
                abs(new_w / new_h - width / height)
                <= (width / height) * (32 / new_w + 32 / new_h) + 1e-9
            )


def test_image_tokens_for_640x480_is_300():
    assert image_tokens_for(640, 480, resolve_profile(None)) == 300


@pytest.mark.parametrize(
    'bad',
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((1, 300, 3), np.uint8),  # aspect ratio > 200
        [[0, 0, 0]],
    ],
)
def test_invalid_images_raise_a_typed_error(bad):
    with pytest.raises(InvalidImageError) as info:
        validate_rgb(bad)
    assert isinstance(info.value, EngineError)


def test_resize_and_jpeg_round_trip_keep_colours():
    rng = np.random.default_rng(0)
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[:, :960] = (200, 30, 30)  # left half red
    image[:, 960:] = (30, 30, 200)  # right half blue
    image = np.clip(image + rng.integers(0, 10, image.shape), 0, 255).astype(np.uint8)
    resized = resize_for_profile(image, resolve_profile(None))
    assert resized.shape == (832, 1504, 3)
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_jpeg(resized), np.uint8), 1), 4)
    assert decoded.shape == resized.shape
    assert decoded[400, 200, 0] > 150 and decoded[400, 200, 2] < 80  # still red on the left
    assert decoded[400, 1300, 2] > 150 and decoded[400, 1300, 0] < 80


def test_prepare_image_reports_both_sizes_and_tokens():
    image = np.full((1080, 1920, 3), 127, np.uint8)
    prepared = prepare_image(image, resolve_profile(None))
    assert (prepared.width, prepared.height) == (1504, 832)
    assert (prepared.original_width, prepared.original_height) == (1920, 1080)
    assert prepared.tokens == (1504 // 32) * (832 // 32)
    assert prepared.data_url.startswith('data:image/jpeg;base64,')
    raw = base64.b64decode(prepared.jpeg_base64)
    assert raw[:2] == b'\xff\xd8'
    assert jpeg_data_url(image).startswith('data:image/jpeg;base64,/9j/')


def test_bad_jpeg_quality_raises():
    with pytest.raises(InvalidImageError):
        encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality=0)


# ------------------------------------------------------------------ schema


def test_schema_shape_and_bounds():
    schema = grounding_schema()
    assert schema['type'] == 'array' and schema['maxItems'] == GROUNDING_MAX_ITEMS
    item = schema['items']
    assert list(item['properties']) == ['bbox_2d', 'label']  # Qwen3-VL's own key order
    coordinate = item['properties']['bbox_2d']['items']
    assert (coordinate['minimum'], coordinate['maximum']) == (0, 1000)
    assert json.loads(grounding_schema_json()) == schema
    fmt = openai_response_format()
    assert fmt['type'] == 'json_schema'
    assert fmt['json_schema']['schema'] == schema
    # strict: SGLang skips the grammar for strict=false when its renderer claims the format (D9).
    assert fmt['json_schema']['strict'] is True
    with pytest.raises(ValueError):
        grounding_schema(max_items=0)


def test_schema_compiles_in_xgrammar_and_accepts_native_output_only():
    xgrammar = pytest.importorskip('xgrammar')
    from xgrammar.testing import _is_grammar_accept_string as accepts

    grammar = xgrammar.Grammar.from_json_schema(grounding_schema_json(max_items=2))
    assert accepts(grammar, '[{"bbox_2d": [10, 20, 300, 400], "label": "red cup"}]')
    assert accepts(grammar, '[]')
    assert not accepts(grammar, '[{"bbox_2d": [10, 20, 300, 1001], "label": "cup"}]')
    assert not accepts(grammar, '[{"bbox_2d": [10, 20, 300], "label": "cup"}]')
    assert not accepts(grammar, '[{"bbox_2d": [1, 2, 3, 4], "label": ""}]')
    item = '{"bbox_2d": [1, 2, 3, 4], "label": "a"}'
    assert not accepts(grammar, f'[{item}, {item}, {item}]')  # maxItems bounds the loop


def test_a_model_directory_can_carry_its_profile_and_budget(tmp_path) -> None:
    import json

    from spatial_vlm_ros.engines.profiles import PROFILE_FILE, UnknownProfileError, resolve_profile

    plain = resolve_profile(str(tmp_path))
    assert plain.name == 'qwen3-vl' and plain.hf_id == str(tmp_path)
    (tmp_path / PROFILE_FILE).write_text(
        json.dumps({'base_profile': 'spatial-ssrl-4b-fp8', 'max_pixels': 65536,
                    'grounding_max_new_tokens': 99})
    )  # fmt: skip
    tuned = resolve_profile(str(tmp_path))
    assert tuned.name == 'spatial-ssrl-4b-fp8' and tuned.hf_id == str(tmp_path)
    assert tuned.max_pixels == 65536 and tuned.grounding_sampling.max_new_tokens == 99
    (tmp_path / PROFILE_FILE).write_text(json.dumps({'base_profile': 'nope'}))
    with pytest.raises(UnknownProfileError, match=PROFILE_FILE):
        resolve_profile(str(tmp_path))
    (tmp_path / PROFILE_FILE).write_text(json.dumps({'max_pixel': 5}))
    with pytest.raises(UnknownProfileError, match='keys'):
        resolve_profile(str(tmp_path))
