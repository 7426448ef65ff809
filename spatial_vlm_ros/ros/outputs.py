# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The node's scene outputs.

``~/scene``, ``~/scene_json``, ``~/markers``, ``~/annotated_image`` and, where vision_msgs is
installed, ``~/detections`` (vision_msgs/Detection3DArray); with several cameras, one set per
camera under ``~/<camera>/``.

Lifecycle publishers, created on configure and destroyed on cleanup. JSON, markers and the
annotated image cost milliseconds per scene, so they are only built while someone subscribes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from rclpy.lifecycle import LifecycleNode
from sensor_msgs.msg import Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from spatial_vlm_ros.core.annotate import annotate_scene
from spatial_vlm_ros.core.pairing import RgbdSet
from spatial_vlm_ros.core.scene_json import scene_to_json
from spatial_vlm_ros.core.types import Scene
from spatial_vlm_ros.msg import SpatialScene
from spatial_vlm_ros.ros import conversions, qos
from spatial_vlm_ros.ros.markers import scene_markers


def output_prefix(camera: str) -> str:
    """
    Where a camera's scene topics go.

    ``~/`` for the single camera (''), else ``~/<camera>/`` (docs/NODE.md, "Several cameras").
    """
    return f'~/{camera}/' if camera else '~/'


class SceneOutputs:
    """
    The scene publishers of one camera.

    ``~/scene`` ... with a single camera, ``~/<camera>/ scene`` ... for each of several
    (``camera``).

    ``rgb_of`` gives the decoded colour image of a paired set (the pipeline keeps the newest
    few), so drawing the annotated image does not decode the frame again.
    """

    def __init__(
        self,
        node: LifecycleNode,
        rgb_of: Callable[[RgbdSet], npt.NDArray[np.uint8]],
        camera: str = '',
    ) -> None:
        self._node = node
        self._rgb_of = rgb_of
        profile = qos.output_profile()
        prefix = output_prefix(camera)
        self.scene = node.create_lifecycle_publisher(SpatialScene, f'{prefix}scene', profile)
        self.scene_json = node.create_lifecycle_publisher(String, f'{prefix}scene_json', profile)
        self.markers = node.create_lifecycle_publisher(MarkerArray, f'{prefix}markers', profile)
        self.annotated_image = node.create_lifecycle_publisher(
            Image, f'{prefix}annotated_image', profile
        )
        self.detections: Any = None
        if conversions.detections_available():
            from vision_msgs.msg import Detection3DArray

            self.detections = node.create_lifecycle_publisher(
                Detection3DArray, f'{prefix}detections', profile
            )
        else:
            node.get_logger().info(f'vision_msgs is not installed: no {prefix}detections')

    def publish(self, paired: RgbdSet, scene: Scene) -> None:
        """Publish one scene on every output that is needed."""
        self.scene.publish(conversions.scene_to_msg(scene))
        if self.scene_json.get_subscription_count() > 0:
            self.scene_json.publish(String(data=scene_to_json(scene)))
        if self.markers.get_subscription_count() > 0:
            self.markers.publish(scene_markers(scene))
        if self.detections is not None:
            self.detections.publish(conversions.scene_to_detections(scene))
        if self.annotated_image.get_subscription_count() > 0:
            # Drawing costs a copy of the decoded colour image: only when someone looks.
            rgb = self._rgb_of(paired)
            self.annotated_image.publish(
                conversions.rgb_to_image_msg(annotate_scene(rgb, scene), scene)
            )

    def destroy(self) -> None:
        for publisher in (self.scene, self.scene_json, self.markers, self.annotated_image):
            self._node.destroy_lifecycle_publisher(publisher)
        if self.detections is not None:
            self._node.destroy_lifecycle_publisher(self.detections)
