# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The thin rclpy layer: message conversion and the node. Imports rclpy."""
