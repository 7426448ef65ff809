# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Metric spatial understanding from RGB-D and a Qwen3-VL vision-language model.

Layout follows the data flow: ``core`` (decoding → pairing → camera → lifting → relations, no
ROS), ``engines`` (one async boundary to SGLang / OpenAI-compatible servers / transformers /
recorded outputs, plus parsing), ``pipeline`` (frame → engine → scene), ``ros`` (the thin rclpy
adapter) and ``replay`` (rosbag2 offline).
"""

import os
from pkgutil import extend_path
import sys

# The rosidl-generated interfaces (spatial_vlm_ros.msg / .srv and their C extensions) share this
# package's name. colcon installs both halves into one directory; `make setup` keeps the
# generated half in <venv>/ros_interfaces so it cannot shadow the editable source tree. Joining
# the package paths lets one name serve both layouts.
__path__ = extend_path(__path__, __name__)
_VENV_INTERFACES = os.path.join(sys.prefix, 'ros_interfaces', __name__)
if os.path.isdir(_VENV_INTERFACES) and _VENV_INTERFACES not in __path__:
    __path__.append(_VENV_INTERFACES)

__version__ = '0.2.0'
