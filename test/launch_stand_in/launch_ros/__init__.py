# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for launch_ros (no PyPI wheel)."""
