# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch.substitutions (no PyPI wheel)."""

from __future__ import annotations

from typing import Any


class LaunchConfiguration:
    def __init__(self, variable_name: str) -> None:
        self.variable_name = variable_name

    def perform(self, context: Any) -> str:
        return context.launch_configurations[self.variable_name]
