# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch (no PyPI wheel): records the actions of a LaunchDescription."""

from __future__ import annotations

from typing import Any


class LaunchDescription:
    def __init__(self, actions: list[Any] | None = None) -> None:
        self.entities: list[Any] = list(actions or [])

    def add_action(self, action: Any) -> None:
        self.entities.append(action)


class LaunchContext:
    """Holds the launch configurations (argument values), like launch.LaunchContext."""

    def __init__(self, launch_configurations: dict[str, str]) -> None:
        self.launch_configurations = dict(launch_configurations)
