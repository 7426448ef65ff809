# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""launch/ and config/ agree with the node: launch_ros cannot be installed here, so the launch
file is parsed, and every argument and parameter it passes must exist on the node."""

from __future__ import annotations

import ast
from pathlib import Path
import re

import pytest
import yaml

from conftest import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / 'launch' / 'spatial_vlm.launch.py'
CONFIG_FILE = REPO_ROOT / 'config' / 'spatial_vlm.yaml'

pytestmark = pytest.mark.ros  # imports the parameter table (rcl_interfaces)


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text())


def _dict_literal(tree: ast.Module, name: str) -> dict[str, object]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            assert isinstance(node.value, ast.Dict)
            return {
                ast.literal_eval(key): value
                for key, value in zip(node.value.keys, node.value.values, strict=True)
            }
    raise AssertionError(f'{name} not found in {LAUNCH_FILE.name}')


def test_yaml_lists_exactly_the_declared_parameters() -> None:
    from spatial_vlm_ros.ros.parameters import PARAMETER_NAMES

    config = yaml.safe_load(CONFIG_FILE.read_text())
    (node_key,) = config
    assert node_key.endswith('spatial_vlm')
    assert set(config[node_key]['ros__parameters']) == set(PARAMETER_NAMES)


def test_every_yaml_parameter_has_a_comment() -> None:
    lines = CONFIG_FILE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = re.match(r'^    (\w+):', line)
        if match:
            assert lines[index - 1].strip().startswith('#'), f'{match.group(1)} has no comment'


def test_every_parameter_has_a_descriptor_with_description_and_range() -> None:
    from spatial_vlm_ros.ros.parameters import PARAMETERS

    for spec in PARAMETERS:
        descriptor = spec.descriptor()
        assert len(descriptor.description) > 15, spec.name
        if isinstance(spec.default, float):
            assert descriptor.floating_point_range, f'{spec.name} has no range'
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            assert descriptor.integer_range, f'{spec.name} has no range'


def test_launch_overrides_name_real_parameters_and_remaps_real_topics() -> None:
    from spatial_vlm_ros.ros.parameters import PARAMETER_NAMES

    source = LAUNCH_FILE.read_text()
    tree = _launch_tree()
    overrides = _dict_literal(tree, 'overrides')
    assert set(overrides) - {'use_sim_time'} <= set(PARAMETER_NAMES)
    node_source = (REPO_ROOT / 'spatial_vlm_ros' / 'ros' / 'inputs.py').read_text()
    remapped = re.findall(r"\('((?:color|depth)/[\w/]+)',", source)
    assert remapped, 'no remappings found'
    for topic in remapped:
        assert f"'{topic}'" in node_source, f'launch remaps {topic}, which the node never uses'
    assert "name='spatial_vlm'" in source and "executable='spatial_vlm_node'" in source


def test_launch_arguments_are_documented_and_used() -> None:
    tree = _launch_tree()
    arguments = _dict_literal(tree, 'ARGUMENTS')
    required = {
        'namespace', 'params_file', 'engine', 'model', 'use_sim_time',
        'start_sglang_server', 'color_topic', 'depth_topic', 'camera_info_topic',
    }  # fmt: skip
    assert required <= set(arguments)
    source = LAUNCH_FILE.read_text()
    for name, value in arguments.items():
        assert isinstance(value, ast.Tuple) and len(value.elts) == 2
        description = value.elts[1]
        text = ''.join(
            part.value
            for part in ast.walk(description)
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
        )
        assert len(text) > 15, f'argument {name} lacks a description'
        assert f"value('{name}')" in source, f'argument {name} is declared but never used'


def test_default_yaml_is_valid_configuration_for_the_recorded_engine(tmp_path: Path) -> None:
    from spatial_vlm_ros.ros.parameters import PARAMETERS, validate

    config = yaml.safe_load(CONFIG_FILE.read_text())
    values = dict(next(iter(config.values()))['ros__parameters'])
    assert validate(values) == []
    assert validate({**values, 'engine': 'recorded'}) == [
        'engine=recorded needs `recording` (a JSONL of raw model outputs)'
    ]
    problems = validate({**values, 'rate_hz': -1.0, 'engine': 'gpt', 'min_depth_m': 20.0})
    assert any('rate_hz' in p for p in problems)
    assert any('engine' in p and 'sglang' in p for p in problems)
    assert any('min_depth_m' in p for p in problems)
    assert {spec.name for spec in PARAMETERS} == set(values)
