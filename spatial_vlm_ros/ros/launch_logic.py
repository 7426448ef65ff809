# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Everything ``launch/spatial_vlm.launch.py`` decides, as pure functions.

launch and launch_ros have no PyPI wheels, so this is what the tests run; the launch file only
turns the plan into actions.

Precedence, lowest first (later wins, as in rcl):

1. the parameter defaults (``spatial_vlm_ros/settings.py``);
2. ``params_file`` (default: the package's config/spatial_vlm.yaml);
3. the launch arguments that were given (an argument left at ``''`` changes nothing);
4. with ``ros2 run``, ``--ros-args -p name:=value`` after ``--params-file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spatial_vlm_ros.settings import BY_NAME, SETTINGS, parse_text

NODE_NAME = 'spatial_vlm'
PACKAGE = 'spatial_vlm_ros'
EXECUTABLE = 'spatial_vlm_node'
TRANSPORTS_VARIABLE = 'FASTDDS_BUILTIN_TRANSPORTS'


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


# Arguments that are not node parameters.
_LAUNCH_ONLY = (
    LaunchArgument(
        'namespace', '', 'Namespace of the node (its topics are ~/scene etc. below it).'
    ),
    LaunchArgument(
        'params_file',
        '',
        'YAML with the node parameters; "" = the package\'s config/spatial_vlm.yaml. Launch '
        'arguments that are given override it; those left empty do not.',
    ),
    LaunchArgument(
        'use_sim_time',
        '',
        'true: follow /clock (a bag played with --clock). "" = the params file\'s value.',
    ),
    LaunchArgument(
        'large_data_transport',
        'false',
        'true: set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the node and every process this '
        'launch starts. Best-effort 640x480 images between processes need it on BOTH sides: set '
        'it on the camera driver too (a LARGE_DATA participant and a default one can lose large '
        'samples). false: leave the transports as the environment has them.',
    ),
    LaunchArgument(
        'start_sglang_server',
        'false',
        'Also start `python -m sglang.launch_server` (FP8) for engine:=openai.',
    ),
    LaunchArgument(
        'sglang_model_path', 'internlm/Spatial-SSRL-Qwen3VL-4B', 'Model the SGLang server loads.'
    ),
    LaunchArgument('sglang_port', '30000', 'Port of the SGLang server.'),
    LaunchArgument(
        'camera',
        '',
        'Deprecated in 0.2.0 (removed in 0.3.0): the same as camera_namespace.',
    ),
)
_ALIASES = {'camera': 'camera_namespace'}


def _parameter_argument(name: str) -> LaunchArgument:
    setting = BY_NAME[name]
    return LaunchArgument(
        name,
        '',
        f'{setting.description} "" = the params file\'s value (parameter default: '
        f'{setting.default!r}).',
    )


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = _LAUNCH_ONLY + tuple(
    _parameter_argument(setting.name) for setting in SETTINGS if not setting.deprecated
)


class LaunchArgumentError(ValueError):
    """A launch argument value cannot be used."""


@dataclass(frozen=True)
class LaunchPlan:
    """What the launch file starts."""

    node_name: str
    namespace: str
    parameters: list[Any]  # [params_file path, {given overrides}] in that order
    environment: dict[str, str] = field(default_factory=dict)
    sglang_command: list[str] = field(default_factory=list)


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ('true', 'false'):
        raise LaunchArgumentError(f'launch argument {name}:={text!r}: expected true or false')
    return lowered == 'true'


def plan_launch(given: Mapping[str, str], default_params_file: str) -> LaunchPlan:
    """
    Plan the node and processes to start for the launch arguments' values.

    ``''`` = not given.
    """
    values = {argument.name: argument.default for argument in LAUNCH_ARGUMENTS}
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise LaunchArgumentError(f'unknown launch argument(s): {", ".join(unknown)}')
    values.update(given)
    overrides: dict[str, Any] = {}
    for name, text in values.items():
        target = _ALIASES.get(name, name)
        if target not in BY_NAME or text == '':
            continue
        try:
            overrides[target] = parse_text(BY_NAME[target], text)
        except ValueError as error:
            raise LaunchArgumentError(f'launch argument {name}:={text!r}: {error}') from None
    if values['use_sim_time'] != '':
        overrides['use_sim_time'] = _flag('use_sim_time', values['use_sim_time'])
    parameters: list[Any] = [values['params_file'] or default_params_file]
    if overrides:
        parameters.append(overrides)
    environment = {}
    if _flag('large_data_transport', values['large_data_transport']):
        environment[TRANSPORTS_VARIABLE] = 'LARGE_DATA'
    sglang_command: list[str] = []
    if _flag('start_sglang_server', values['start_sglang_server']):
        sglang_command = [
            'python3',
            '-m',
            'sglang.launch_server',
            '--model-path',
            values['sglang_model_path'],
            '--quantization',
            'fp8',
            '--port',
            values['sglang_port'],
            '--enable-multimodal',
        ]
    return LaunchPlan(
        node_name=NODE_NAME,
        namespace=values['namespace'],
        parameters=parameters,
        environment=environment,
        sglang_command=sglang_command,
    )
