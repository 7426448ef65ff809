# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""launch/ and config/ against the settings table.

The launch decisions are a pure function (spatial_vlm_ros/ros/launch_logic.py); the launch file
itself is executed against stand-ins of launch / launch_ros (test/launch_stand_in: those packages
have no PyPI wheels), so what it passes to the node is checked, not its source text.
"""

from __future__ import annotations

from collections.abc import Iterator
import importlib.util
from pathlib import Path
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / 'launch' / 'spatial_vlm.launch.py'
CONFIG_FILE = REPO_ROOT / 'config' / 'spatial_vlm.yaml'
STAND_IN = Path(__file__).resolve().parent / 'launch_stand_in'
STAND_IN_MODULES = (
    'launch',
    'launch.actions',
    'launch.conditions',
    'launch.substitutions',
    'launch_ros',
    'launch_ros.actions',
    'ament_index_python',
    'ament_index_python.packages',
)
DEFAULT_PARAMS = '/opt/stand_in/share/spatial_vlm_ros/config/spatial_vlm.yaml'


@pytest.fixture()
def launch_module() -> Iterator[ModuleType]:
    """The real launch file, imported with the stand-ins in place of launch and launch_ros."""
    saved = {name: sys.modules.pop(name) for name in STAND_IN_MODULES if name in sys.modules}
    sys.path.insert(0, str(STAND_IN))
    try:
        spec = importlib.util.spec_from_file_location('spatial_vlm_launch', LAUNCH_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(STAND_IN))
        for name in STAND_IN_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def run_launch(module: ModuleType, given: dict[str, str]) -> tuple[list[Any], list[Any]]:
    """(declared arguments, actions) of the launch file with ``given`` on the command line."""
    from launch import LaunchContext

    description = module.generate_launch_description()
    declared = [e for e in description.entities if type(e).__name__ == 'DeclareLaunchArgument']
    configurations = {argument.name: argument.default_value for argument in declared}
    configurations.update(given)
    actions: list[Any] = []
    for entity in description.entities:
        if type(entity).__name__ == 'OpaqueFunction':
            actions += entity.function(LaunchContext(configurations))
    return declared, actions


def only(actions: list[Any], kind: str) -> list[Any]:
    return [action for action in actions if type(action).__name__ == kind]


def test_yaml_is_the_rendering_of_the_settings_table() -> None:
    from spatial_vlm_ros.settings import NAMES, SETTINGS, render_params_yaml

    assert CONFIG_FILE.read_text() == render_params_yaml(), (
        'config/spatial_vlm.yaml is stale: python -m spatial_vlm_ros.settings --write'
    )
    config = yaml.safe_load(CONFIG_FILE.read_text())
    (node_key,) = config
    parameters = config[node_key]['ros__parameters']
    assert node_key == '/**/spatial_vlm'
    assert list(parameters) == [s.name for s in SETTINGS if not s.deprecated]
    assert set(NAMES) - set(parameters) == {s.name for s in SETTINGS if s.deprecated}
    for setting in SETTINGS:
        if not setting.deprecated:
            assert parameters[setting.name] == setting.default, setting.name


def test_node_doc_parameter_table_is_the_rendering_of_the_table() -> None:
    from spatial_vlm_ros.settings import NODE_DOC, node_doc_with_table

    text = NODE_DOC.read_text()
    assert text == node_doc_with_table(text), (
        'docs/NODE.md parameter table is stale: python -m spatial_vlm_ros.settings --write'
    )


def test_every_parameter_has_a_descriptor_with_description_and_range() -> None:
    from rcl_interfaces.msg import ParameterType

    from spatial_vlm_ros.ros.parameters import PARAMETERS, descriptor

    for setting in PARAMETERS:
        result = descriptor(setting)
        assert len(result.description) > 15, setting.name
        if setting.kind is float:
            assert result.floating_point_range and result.dynamic_typing, setting.name
        if setting.kind is int:
            assert result.integer_range, setting.name
        if setting.kind is list:
            assert result.type == ParameterType.PARAMETER_STRING_ARRAY
        if setting.kind is str and setting.choices:
            assert all(choice in result.additional_constraints for choice in setting.choices)


def test_default_yaml_is_valid_configuration_and_errors_name_the_parameter() -> None:
    from spatial_vlm_ros.settings import validate

    config = yaml.safe_load(CONFIG_FILE.read_text())
    values = dict(next(iter(config.values()))['ros__parameters'])
    assert validate(values) == []
    assert validate({**values, 'engine': 'recorded'}) == [
        'engine=recorded needs `recording` (a JSONL of raw model outputs)'
    ]
    problems = validate({**values, 'rate_hz': -1.0, 'engine': 'gpt', 'max_objects': 2.5})
    assert problems == [
        "engine='gpt': set it to one of sglang, openai, transformers, recorded",
        'max_objects=2.5: must be a integer',
        'rate_hz=-1.0: must lie in [0.0, 120.0]',
    ]
    assert validate({**values, 'min_depth_m': 20.0}) == [
        'min_depth_m must be smaller than max_depth_m'
    ]
    assert validate({**values, 'rate_hz': 5}) == []  # an integer for a float parameter


# ------------------------------------------------------------------------------ launch logic


def test_launch_arguments_left_empty_keep_the_params_file_values() -> None:
    from spatial_vlm_ros.ros.launch_logic import plan_launch

    plan = plan_launch({}, DEFAULT_PARAMS)
    assert plan.parameters == [DEFAULT_PARAMS]
    assert plan.environment == {} and plan.sglang_command == []
    assert (plan.node_name, plan.namespace) == ('spatial_vlm', '')


def test_given_launch_arguments_override_after_the_params_file() -> None:
    from spatial_vlm_ros.ros.launch_logic import plan_launch

    plan = plan_launch(
        {
            'params_file': '/robot/my.yaml',
            'engine': 'openai',
            'rate_hz': '5',
            'vocabulary': '[mug, chair]',
            'autostart': 'false',
            'use_sim_time': 'true',
            'camera': '/camera',  # the deprecated alias of camera_namespace
            'model': '',  # empty: not given
        },
        DEFAULT_PARAMS,
    )
    assert plan.parameters == [
        '/robot/my.yaml',
        {
            'engine': 'openai',
            'rate_hz': 5.0,
            'vocabulary': ['mug', 'chair'],
            'autostart': False,
            'camera_namespace': '/camera',
            'use_sim_time': True,
        },
    ]


def test_large_data_transport_is_explicit_and_applies_to_everything_started() -> None:
    from spatial_vlm_ros.ros.launch_logic import LaunchArgumentError, plan_launch

    plan = plan_launch({'large_data_transport': 'true', 'start_sglang_server': 'true'}, 'x.yaml')
    assert plan.environment == {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'}
    assert plan.sglang_command[:3] == ['python3', '-m', 'sglang.launch_server']
    with pytest.raises(LaunchArgumentError, match='large_data_transport'):
        plan_launch({'large_data_transport': 'yes please'}, 'x.yaml')
    with pytest.raises(LaunchArgumentError, match='rate_hz'):
        plan_launch({'rate_hz': 'fast'}, 'x.yaml')


# ------------------------------------------------------------------------------ the launch file


def test_launch_file_declares_every_argument_with_a_description(launch_module) -> None:
    from spatial_vlm_ros.ros.launch_logic import LAUNCH_ARGUMENTS
    from spatial_vlm_ros.settings import SETTINGS

    declared, _ = run_launch(launch_module, {})
    assert [(a.name, a.default_value) for a in declared] == [
        (a.name, a.default) for a in LAUNCH_ARGUMENTS
    ]
    assert all(len(a.description) > 15 for a in declared)
    parameter_arguments = {a.name for a in declared} & {s.name for s in SETTINGS}
    assert parameter_arguments == {s.name for s in SETTINGS if not s.deprecated}
    # Parameter arguments default to '' (= keep the params file), never to a second default.
    assert all(a.default_value == '' for a in declared if a.name in parameter_arguments)


def test_launch_file_passes_only_given_arguments_over_the_params_file(launch_module) -> None:
    _, actions = run_launch(launch_module, {})
    (node,) = only(actions, 'LifecycleNode')
    assert node.kwargs['parameters'] == [DEFAULT_PARAMS]
    assert (node.name, node.kwargs['executable']) == ('spatial_vlm', 'spatial_vlm_node')
    assert not only(actions, 'SetEnvironmentVariable') and not only(actions, 'ExecuteProcess')

    _, actions = run_launch(launch_module, {'engine': 'recorded', 'recording': '/r.jsonl'})
    (node,) = only(actions, 'LifecycleNode')
    assert node.kwargs['parameters'] == [
        DEFAULT_PARAMS,
        {'engine': 'recorded', 'recording': '/r.jsonl'},
    ]


def test_launch_file_sets_large_data_before_the_processes_it_starts(launch_module) -> None:
    _, actions = run_launch(
        launch_module, {'large_data_transport': 'true', 'start_sglang_server': 'true'}
    )
    kinds = [type(action).__name__ for action in actions]
    assert kinds == ['SetEnvironmentVariable', 'ExecuteProcess', 'LifecycleNode']
    assert (actions[0].name, actions[0].value) == ('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
