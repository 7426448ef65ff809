# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Offline rosbag2 replay without ROS (``bag_io``, ``runner``, ``report``, ``sample_bag``) and
playback into a live graph (``play``, needs rclpy).
"""
