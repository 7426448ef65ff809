# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Start the spatial_vlm node (and optionally an SGLang server for engine:=openai).

    ros2 launch spatial_vlm_ros spatial_vlm.launch.py
    ros2 launch spatial_vlm_ros spatial_vlm.launch.py engine:=openai start_sglang_server:=true
    ros2 launch spatial_vlm_ros spatial_vlm.launch.py camera:=/camera namespace:=robot1

Every argument is documented below; `ros2 launch ... --show-args` prints them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription

ARGUMENTS = {
    'namespace': ('', 'Namespace of the node (its topics are ~/scene etc. under it).'),
    'params_file': (
        os.path.join(get_package_share_directory('spatial_vlm_ros'), 'config', 'spatial_vlm.yaml'),
        'YAML with the node parameters (config/spatial_vlm.yaml documents each one).',
    ),
    'engine': ('sglang', 'VLM backend: sglang | openai | transformers | recorded.'),
    'model': ('spatial-ssrl-4b-fp8', 'Model profile name or a local model path.'),
    'recording': ('', 'JSONL of raw model outputs, for engine:=recorded.'),
    'server_url': ('http://127.0.0.1:30000', 'OpenAI-compatible server, for engine:=openai.'),
    'camera': (
        '/camera',
        'Camera namespace; inputs are <camera>/color/image_raw, '
        '<camera>/depth/image_raw and <camera>/color/camera_info.',
    ),
    'color_topic': ('', 'Override the RGB topic (default <camera>/color/image_raw).'),
    'depth_topic': (
        '',
        'Override the depth topic (default <camera>/depth/image_raw; '
        'use an aligned/registered depth topic when the camera offers one).',
    ),
    'camera_info_topic': (
        '',
        'Override the CameraInfo topic (default <camera>/color/camera_info).',
    ),
    'use_sim_time': ('false', 'Use /clock (bag replay).'),
    'large_data_transport': (
        'true',
        'Set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the node: best-effort 640x480 images '
        'between processes arrive only with it (set it on the camera driver too).',
    ),
    'start_sglang_server': (
        'false',
        'Also start `python -m sglang.launch_server` (FP8) for engine:=openai.',
    ),
    'sglang_model_path': ('internlm/Spatial-SSRL-Qwen3VL-4B', 'Model the SGLang server loads.'),
    'sglang_port': ('30000', 'Port of the SGLang server.'),
}


def _launch_setup(context, *args, **kwargs):
    def value(name):
        return LaunchConfiguration(name).perform(context)

    camera = value('camera').rstrip('/')
    remappings = [
        ('color/image_raw', value('color_topic') or f'{camera}/color/image_raw'),
        ('depth/image_raw', value('depth_topic') or f'{camera}/depth/image_raw'),
        ('color/camera_info', value('camera_info_topic') or f'{camera}/color/camera_info'),
        (
            'color/image_raw/compressed',
            (value('color_topic') or f'{camera}/color/image_raw') + '/compressed',
        ),
        (
            'depth/image_raw/compressedDepth',
            (value('depth_topic') or f'{camera}/depth/image_raw') + '/compressedDepth',
        ),
    ]
    overrides = {
        'engine': value('engine'),
        'model': value('model'),
        'recording': value('recording'),
        'server_url': value('server_url'),
        'use_sim_time': value('use_sim_time').lower() == 'true',
    }
    env = {}
    if value('large_data_transport').lower() == 'true':
        env['FASTDDS_BUILTIN_TRANSPORTS'] = 'LARGE_DATA'
    node_cmd = LifecycleNode(
        package='spatial_vlm_ros',
        executable='spatial_vlm_node',
        name='spatial_vlm',
        namespace=value('namespace'),
        parameters=[value('params_file'), overrides],
        remappings=remappings,
        additional_env=env,
        output='screen',
    )
    sglang_cmd = ExecuteProcess(
        cmd=[
            'python3',
            '-m',
            'sglang.launch_server',
            '--model-path',
            value('sglang_model_path'),
            '--quantization',
            'fp8',
            '--port',
            value('sglang_port'),
            '--enable-multimodal',
        ],
        condition=IfCondition(value('start_sglang_server')),
        output='screen',
    )
    return [sglang_cmd, node_cmd]


def generate_launch_description():
    ld = LaunchDescription()
    for name, (default, description) in ARGUMENTS.items():
        ld.add_action(DeclareLaunchArgument(name, default_value=default, description=description))
    ld.add_action(OpaqueFunction(function=_launch_setup))
    return ld
