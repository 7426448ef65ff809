# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch.actions (no PyPI wheel): each action records its arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DeclareLaunchArgument:
    def __init__(self, name: str, *, default_value: str | None = None, description: str = ''):
        self.name, self.default_value, self.description = name, default_value, description


class ExecuteProcess:
    def __init__(self, *, cmd: list[str], **kwargs: Any) -> None:
        self.cmd, self.kwargs = cmd, kwargs


class OpaqueFunction:
    def __init__(self, *, function: Callable[..., list[Any]]) -> None:
        self.function = function


class SetEnvironmentVariable:
    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value
