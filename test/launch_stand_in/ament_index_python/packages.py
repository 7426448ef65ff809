# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""STAND-IN for ament_index_python.packages: a fixed share directory per package."""

SHARE_ROOT = '/opt/stand_in/share'


def get_package_share_directory(package_name: str) -> str:
    return f'{SHARE_ROOT}/{package_name}'
