# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Offline rosbag2 replay without ROS, and playback into a live graph.

Replay: ``bag_io``, ``runner``, ``report``, ``sample_bag``; playback: ``play`` (needs rclpy).
"""
