# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch.conditions (no PyPI wheel)."""

from __future__ import annotations

from typing import Any


class IfCondition:
    def __init__(self, predicate_expression: Any) -> None:
        self.predicate_expression = predicate_expression
