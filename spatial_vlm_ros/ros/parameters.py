# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The node's parameters, plus the on-set validation.

Every row of ``spatial_vlm_ros.settings`` with a ParameterDescriptor (description, range or
choices, read-only).

The table in settings.py is the single source of truth (see its docstring for how to add one).
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)

from spatial_vlm_ros.settings import SETTINGS, Setting, validate

__all__ = ['PARAMETERS', 'PARAMETER_NAMES', 'descriptor', 'validate', 'values_of']

PARAMETERS: tuple[Setting, ...] = SETTINGS  # every setting is a node parameter
PARAMETER_NAMES = tuple(setting.name for setting in PARAMETERS)


def descriptor(setting: Setting) -> ParameterDescriptor:
    """
    Return the ParameterDescriptor of one setting.

    Floats are dynamically typed so that an integer is accepted (``ros2 param set /spatial_vlm
    rate_hz 5``, ``rate_hz: 2`` in YAML); ``validate`` checks the type and the range.
    """
    description = setting.description
    if setting.deprecated:
        description += f' DEPRECATED: {setting.deprecated}.'
    result = ParameterDescriptor(
        name=setting.name,
        description=description,
        read_only=setting.read_only,
        dynamic_typing=setting.kind is float,
    )
    if setting.choices:
        result.additional_constraints = 'one of: ' + ', '.join(setting.choices)
    if setting.float_range is not None:
        low, high = setting.float_range
        result.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    if setting.int_range is not None:
        low, high = setting.int_range
        result.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if setting.kind is list:
        result.type = ParameterType.PARAMETER_STRING_ARRAY
    return result


def values_of(node: Any) -> dict[str, Any]:
    """Every parameter's current value; floats as float (they may have been set as integers)."""
    values = {setting.name: node.get_parameter(setting.name).value for setting in PARAMETERS}
    for setting in PARAMETERS:
        if setting.kind is float and values[setting.name] is not None:
            values[setting.name] = float(values[setting.name])
    return values
