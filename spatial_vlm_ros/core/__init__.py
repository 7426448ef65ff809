# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""ROS-free perception core: pure Python + numpy, shared by the node and the offline replay."""
