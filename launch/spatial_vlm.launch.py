# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Start the spatial_vlm node (and optionally an SGLang server for engine:=openai).

    ros2 launch spatial_vlm_ros spatial_vlm.launch.py
    ros2 launch spatial_vlm_ros spatial_vlm.launch.py engine:=openai start_sglang_server:=true
    ros2 launch spatial_vlm_ros spatial_vlm.launch.py camera_namespace:=/camera namespace:=robot1

Every node parameter is also a launch argument; one left empty keeps the params file's value.
The decisions live in spatial_vlm_ros/ros/launch_logic.py (tested without launch installed);
`ros2 launch ... --show-args` prints every argument.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription
from spatial_vlm_ros.ros.launch_logic import (
    EXECUTABLE,
    LAUNCH_ARGUMENTS,
    PACKAGE,
    plan_launch,
)


def _launch_setup(context, *args, **kwargs):
    given = {
        argument.name: LaunchConfiguration(argument.name).perform(context)
        for argument in LAUNCH_ARGUMENTS
    }
    default_params_file = os.path.join(
        get_package_share_directory(PACKAGE), 'config', 'spatial_vlm.yaml'
    )
    plan = plan_launch(given, default_params_file)
    # The environment first: it applies to every process started after it.
    actions = [SetEnvironmentVariable(name, value) for name, value in plan.environment.items()]
    if plan.sglang_command:
        actions.append(ExecuteProcess(cmd=plan.sglang_command, output='screen'))
    actions.append(
        LifecycleNode(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=plan.node_name,
            namespace=plan.namespace,
            parameters=plan.parameters,
            output='screen',
        )
    )
    return actions


def generate_launch_description():
    ld = LaunchDescription()
    for argument in LAUNCH_ARGUMENTS:
        ld.add_action(
            DeclareLaunchArgument(
                argument.name, default_value=argument.default, description=argument.description
            )
        )
    ld.add_action(OpaqueFunction(function=_launch_setup))
    return ld
