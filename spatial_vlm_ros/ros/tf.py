# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""TF lookups at the image stamp when tf2_ros is importable; an explicit "camera frame only"
mode when it is not (PyPI-only installs have no tf2_ros). The maths is in core.transforms."""

from __future__ import annotations

from dataclasses import dataclass
import threading
from typing import Any

import numpy as np

from spatial_vlm_ros.core.transforms import transform_from_translation_quaternion
from spatial_vlm_ros.core.types import FloatArray

try:  # tf2_ros is part of every ROS install but not of the PyPI wheels
    from rclpy.duration import Duration
    from rclpy.time import Time
    import tf2_ros

    TF2_IMPORT_ERROR = ''
except ImportError as error:  # pragma: no cover - depends on the install
    tf2_ros = None
    TF2_IMPORT_ERROR = str(error)


@dataclass(frozen=True)
class TransformResult:
    matrix: FloatArray | None  # 4x4 T_target_from_source, or None with a reason
    reason: str = ''


class TransformSource:
    """Looks up T_target_from_source at a stamp, with a timeout; reports its state as text."""

    def __init__(self, node: Any, logger: Any, timeout_s: float = 0.1) -> None:
        self._logger = logger
        self.timeout_s = timeout_s
        self._warned = threading.Event()
        self.status = 'tf2_ros available'
        self._buffer = None
        if tf2_ros is None:
            self.status = f'tf2_ros not importable ({TF2_IMPORT_ERROR}): camera frame only'
            return
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    @property
    def available(self) -> bool:
        return self._buffer is not None

    def lookup(self, target: str, source: str, stamp_ns: int) -> TransformResult:
        if not target or target == source:
            return TransformResult(np.eye(4))
        if self._buffer is None:
            if not self._warned.is_set():
                self._warned.set()
                self._logger.warning(
                    f'{self.status}; publishing positions in the camera frame instead of '
                    f'{target!r}'
                )
            return TransformResult(None, f'no transform {source} -> {target}: {self.status}')
        try:
            stamped = self._buffer.lookup_transform(
                target,
                source,
                Time(nanoseconds=stamp_ns),
                timeout=Duration(nanoseconds=int(self.timeout_s * 1e9)),
            )
        except Exception as error:  # noqa: BLE001 - tf2 raises several unrelated types
            reason = f'no transform {source} -> {target} at {stamp_ns} ns: {error}'
            self.status = reason
            return TransformResult(None, reason)
        translation = stamped.transform.translation
        rotation = stamped.transform.rotation
        self.status = 'ok'
        return TransformResult(
            transform_from_translation_quaternion(
                (translation.x, translation.y, translation.z),
                (rotation.x, rotation.y, rotation.z, rotation.w),
            )
        )
