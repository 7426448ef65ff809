# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch_ros.actions (no PyPI wheel): the node action records its arguments."""

from __future__ import annotations

from typing import Any


class LifecycleNode:
    def __init__(self, *, name: str, namespace: str, **kwargs: Any) -> None:
        self.name, self.namespace, self.kwargs = name, namespace, kwargs
