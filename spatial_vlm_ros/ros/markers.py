# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""core.markers specs to visualization_msgs/MarkerArray (the geometry lives in the core)."""

from __future__ import annotations

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker, MarkerArray

from spatial_vlm_ros.core.markers import MarkerKind, MarkerSet
from spatial_vlm_ros.core.markers import scene_markers as scene_marker_set
from spatial_vlm_ros.core.types import Scene
from spatial_vlm_ros.ros.conversions import ns_to_stamp

_MARKER_TYPES = {
    MarkerKind.CUBE: Marker.CUBE,
    MarkerKind.TEXT: Marker.TEXT_VIEW_FACING,
    MarkerKind.LINE_LIST: Marker.LINE_LIST,
}


def marker_set_to_msg(marker_set: MarkerSet) -> MarkerArray:
    array = MarkerArray()
    stamp = ns_to_stamp(marker_set.stamp_ns)
    lifetime = Duration(
        sec=int(marker_set.lifetime_s), nanosec=int((marker_set.lifetime_s % 1.0) * 1e9)
    )
    for spec in marker_set.markers:
        marker = Marker()
        marker.header.frame_id = marker_set.frame_id
        marker.header.stamp = stamp
        marker.ns = spec.namespace
        marker.id = spec.marker_id
        if spec.kind == MarkerKind.DELETE_ALL:
            marker.action = Marker.DELETEALL
            array.markers.append(marker)
            continue
        marker.type = _MARKER_TYPES[spec.kind]
        marker.action = Marker.ADD
        marker.pose.position = Point(x=spec.position[0], y=spec.position[1], z=spec.position[2])
        marker.pose.orientation.w = 1.0
        marker.scale.x, marker.scale.y, marker.scale.z = (float(v) for v in spec.scale)
        marker.color.r, marker.color.g = float(spec.color.r), float(spec.color.g)
        marker.color.b, marker.color.a = float(spec.color.b), float(spec.color.a)
        marker.text = spec.text
        marker.points = [Point(x=p[0], y=p[1], z=p[2]) for p in spec.points]
        marker.lifetime = lifetime
        array.markers.append(marker)
    return array


def scene_markers(scene: Scene) -> MarkerArray:
    return marker_set_to_msg(scene_marker_set(scene))
