# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
core.markers specs to visualization_msgs/MarkerArray.

Geometry in core/markers.py, fields in core/message_fields.py, shared with the replay.
"""

from __future__ import annotations

from visualization_msgs.msg import MarkerArray

from spatial_vlm_ros.core.markers import MarkerSet
from spatial_vlm_ros.core.markers import scene_markers as scene_marker_set
from spatial_vlm_ros.core.message_fields import marker_array_fields
from spatial_vlm_ros.core.types import Scene
from spatial_vlm_ros.ros.conversions import to_message


def marker_set_to_msg(marker_set: MarkerSet) -> MarkerArray:
    """visualization_msgs/MarkerArray of a :class:`MarkerSet`."""
    return to_message(MarkerArray, marker_array_fields(marker_set))


def scene_markers(scene: Scene) -> MarkerArray:
    """Return the scene's markers as a MarkerArray."""
    return marker_set_to_msg(scene_marker_set(scene))
