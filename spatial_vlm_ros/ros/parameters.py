# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Every parameter of the ``spatial_vlm`` node, with its descriptor, range and validation.

The table is the single source of truth: the node declares from it, config/spatial_vlm.yaml and
docs/NODE.md list the same names, and a test checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)

ENGINES = ('sglang', 'openai', 'transformers', 'recorded')
INPUT_QOS = ('auto', 'reliable', 'best_effort')
DEVICES = ('auto', 'cpu', 'cuda')


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False  # changing it needs cleanup -> configure
    string_array: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(
            name=self.name, description=self.description, read_only=self.read_only
        )
        if self.choices:
            descriptor.additional_constraints = 'one of: ' + ', '.join(self.choices)
        if self.float_range is not None:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1])
            ]
        if self.int_range is not None:
            descriptor.integer_range = [
                IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)
            ]
        if self.string_array:
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        return descriptor


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        'autostart', True, 'Configure and activate on start-up (lifecycle).', read_only=True
    ),
    ParamSpec(
        'engine',
        'sglang',
        'VLM backend: in-process SGLang (FP8, GPU), an OpenAI-compatible '
        'server, HF transformers (CPU-capable), or recorded outputs (JSONL).',
        choices=ENGINES,
        read_only=True,
    ),
    ParamSpec(
        'model',
        'spatial-ssrl-4b-fp8',
        'Model profile name (spatial-ssrl-4b-fp8, '
        'qwen3-vl-4b-instruct-fp8, qwen3-vl-2b-grace-w8g128, qwen3-vl), a Qwen3-VL Hugging Face '
        'id (e.g. Qwen/Qwen3-VL-8B-Instruct) or a local model directory.',
        read_only=True,
    ),
    ParamSpec('recording', '', 'JSONL of raw model outputs for engine=recorded.', read_only=True),
    ParamSpec(
        'record_outputs',
        '',
        'When set, append every raw model output to this JSONL (the recorded-engine format).',
        read_only=True,
    ),
    ParamSpec(
        'server_url',
        'http://127.0.0.1:30000',
        'Base URL of the OpenAI-compatible server '
        '(engine=openai): SGLang server, SGLang router or vLLM.',
        read_only=True,
    ),
    ParamSpec(
        'served_model_name',
        '',
        'Model name sent to the server (engine=openai), as its /v1/models lists it; "" = the '
        "server's only model (or the model's own id when it serves several). Checked at start.",
        read_only=True,
    ),
    ParamSpec(
        'api_key_env',
        'OPENAI_API_KEY',
        'Name of the environment variable holding the API key '
        '(the key itself is never a parameter and never logged).',
        read_only=True,
    ),
    ParamSpec(
        'device', 'auto', 'Device for engine=transformers.', choices=DEVICES, read_only=True
    ),
    ParamSpec(
        'rate_hz',
        2.0,
        'Upper bound on frames sent to the model per second (0 = as fast as '
        'in-flight slots free up).',
        float_range=(0.0, 120.0),
    ),
    ParamSpec(
        'max_in_flight',
        1,
        'Stream requests the engine may run at once (batching).',
        int_range=(1, 64),
        read_only=True,
    ),
    ParamSpec(
        'max_frame_age_s',
        1.0,
        'Frames older than this (image stamp vs node clock) are not sent to the model, seconds.',
        float_range=(0.01, 600.0),
    ),
    ParamSpec(
        'request_timeout_s',
        30.0,
        'Deadline of one engine call, seconds.',
        float_range=(0.1, 3600.0),
        read_only=True,
    ),
    ParamSpec(
        'vocabulary',
        [''],
        'Classes to ground; [] or [""] grounds every salient object. '
        'Changeable at runtime (ros2 param set).',
        string_array=True,
    ),
    ParamSpec(
        'depth_scale',
        0.0,
        'Metres per depth unit; 0 = by encoding (16UC1/mono16: 0.001, 32FC1: 1.0).',
        float_range=(0.0, 10.0),
        read_only=True,
    ),
    ParamSpec(
        'min_depth_m', 0.1, 'Closer depth readings are invalid, metres.', float_range=(0.0, 100.0)
    ),
    ParamSpec(
        'max_depth_m',
        10.0,
        'Farther depth readings are invalid, metres.',
        float_range=(0.01, 1000.0),
    ),
    ParamSpec(
        'relation_frame',
        '',
        'Frame relations are evaluated in: "" = the camera view, or a TF '
        'frame with REP 103 axes (e.g. base_link).',
    ),
    ParamSpec(
        'target_frame',
        '',
        'Frame of published positions: "" = the camera optical frame, or a TF '
        'frame (map, odom, base_link).',
    ),
    ParamSpec(
        'tf_timeout_s',
        0.1,
        'Wait for a transform at the image stamp, seconds.',
        float_range=(0.0, 10.0),
    ),
    ParamSpec(
        'input_qos',
        'auto',
        'Reliability of the camera subscriptions: auto matches the '
        'publishers (re-checked when they change); reliable / best_effort override.',
        choices=INPUT_QOS,
        read_only=True,
    ),
    ParamSpec(
        'compressed_input',
        False,
        'Subscribe to color/image_raw/compressed and '
        'depth/image_raw/compressedDepth instead of the raw topics.',
        read_only=True,
    ),
    ParamSpec(
        'sync_slop_s',
        0.05,
        'Max stamp difference between paired RGB and depth, seconds.',
        float_range=(0.0, 5.0),
        read_only=True,
    ),
    ParamSpec(
        'near_threshold_m',
        0.5,
        'Objects whose visible extents are at most this far apart (surface gap, at 2 sigma '
        'confidence) are "near", metres (docs/RELATIONS.md).',
        float_range=(0.0, 100.0),
    ),
    ParamSpec(
        'diagnostics_period_s',
        1.0,
        'Period of /diagnostics, seconds.',
        float_range=(0.1, 60.0),
        read_only=True,
    ),
    ParamSpec(
        'max_objects',
        64,
        'Objects kept per scene (highest confidence first).',
        int_range=(1, 1024),
    ),
    ParamSpec(
        'query_buffer_frames',
        30,
        'Paired frames kept for ~/query by stamp (each holds its RGB + depth messages: 4.4 MiB '
        'at 1280x720); 1 keeps only the newest.',
        int_range=(1, 300),
        read_only=True,
    ),
)

PARAMETER_NAMES = tuple(spec.name for spec in PARAMETERS)


def validate(values: dict[str, Any]) -> list[str]:
    """Problems with a full set of parameter values, each saying what to change."""
    problems: list[str] = []
    for spec in PARAMETERS:
        value = values.get(spec.name, spec.default)
        if spec.choices and value not in spec.choices:
            problems.append(f'{spec.name}={value!r}: set it to one of {", ".join(spec.choices)}')
        if spec.float_range and not spec.float_range[0] <= float(value) <= spec.float_range[1]:
            problems.append(f'{spec.name}={value}: must lie in {list(spec.float_range)}')
        if spec.int_range and not spec.int_range[0] <= int(value) <= spec.int_range[1]:
            problems.append(f'{spec.name}={value}: must lie in {list(spec.int_range)}')
    if float(values['min_depth_m']) >= float(values['max_depth_m']):
        problems.append('min_depth_m must be smaller than max_depth_m')
    if values['engine'] == 'recorded' and not values['recording']:
        problems.append('engine=recorded needs `recording` (a JSONL of raw model outputs)')
    return problems
