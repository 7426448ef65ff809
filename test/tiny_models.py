# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The one place the query tests import the tiny Qwen3-VL builder from.

The builder is moving from spatial_vlm_ros/engines/tiny_model.py to test/fixtures/; when it
does, only this import changes.
"""

from __future__ import annotations

from spatial_vlm_ros.engines.tiny_model import (  # noqa: F401 - re-exported
    build_tiny_model,
    tiny_profile,
    variant_names,
)
