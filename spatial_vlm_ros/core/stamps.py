# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Message stamps as integer nanoseconds (``sec * 10**9 + nanosec``), the package's time unit.

Duck-typed, so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import operator
from typing import Any

from spatial_vlm_ros.core.types import SpatialVlmError

NANOSECONDS_PER_SECOND = 1_000_000_000


class StampError(SpatialVlmError):
    """A message has no usable ``header.stamp``."""


def header_stamp_ns(msg: Any, default: int | None = None) -> int:
    """
    ``header.stamp`` of a ROS 2 message as integer nanoseconds.

    Returns ``default`` when there is no usable stamp, or raises :class:`StampError` when
    ``default`` is None.
    """
    stamp: Any = getattr(getattr(msg, 'header', None), 'stamp', None)
    if hasattr(stamp, 'sec') and hasattr(stamp, 'nanosec'):
        try:
            seconds = operator.index(stamp.sec)
            nanos = operator.index(stamp.nanosec)
        except TypeError:
            pass
        else:
            return seconds * NANOSECONDS_PER_SECOND + nanos
    if default is None:
        raise StampError(f'message of type {type(msg).__name__} has no header.stamp')
    return default
