# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The single engine boundary (``base``) and its backends; no rclpy here."""
