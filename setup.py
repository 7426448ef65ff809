# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""pip install path: the ROS-free core, engines and CLI (the node needs rclpy and the
rosidl-generated interfaces, which `make setup` or colcon provide)."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'spatial_vlm_ros'

setup(
    name=package_name,
    version='0.2.0',
    description='Metric spatial understanding for ROS 2 robots from RGB-D and Qwen3-VL',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=[package_name, f'{package_name}.*']),
    # The replay report inlines its script and style sheet from these files.
    package_data={
        package_name: ['py.typed', 'replay/report_assets/*.js', 'replay/report_assets/*.css']
    },
    # The replay registers the custom message types from their .msg text (no ROS needed).
    # RViz config and Foxglove layout for the node's topics and the replay's MCAP.
    data_files=[
        (f'share/{package_name}/msg', sorted(glob('msg/*.msg'))),
        (f'share/{package_name}/rviz', sorted(glob('rviz/*.rviz'))),
        (f'share/{package_name}/foxglove', sorted(glob('foxglove/*.json'))),
    ],
    install_requires=[
        'numpy>=1.26',
        'scipy>=1.11',
        'numba>=0.65,<1',
        'opencv-python-headless>=4.9',
        'pillow>=10',
        'httpx>=0.27',
        'tqdm>=4.66',
        'pyyaml>=6',
        'rosbags>=0.11.9,<0.12',
        'mcap>=1.2',
    ],
    extras_require={
        # In-process SGLang needs a CUDA machine; the engine imports it lazily. 0.5.23 is the
        # version the contract tests check (docs/ENGINES.md); it pins transformers 5.19.0 and
        # xgrammar 0.2.7, which the floors below admit (.ci/run resolves both extras together).
        'sglang': ['sglang>=0.5.23,<0.6'],
        'transformers': [
            'torch>=2.4',
            'torchvision>=0.19',
            # 5.19 is the oldest release the transformers engine and the tiny model were run on.
            'transformers>=5.19,<6',
            'accelerate>=1.0',
            'xgrammar>=0.2.7,<0.3',
            'qwen-vl-utils>=0.0.14',
            'tokenizers',
        ],
        'test': [
            'pytest>=8',
            'pytest-timeout>=2.3',
            'hypothesis>=6.100',
            'ruff>=0.6',
            'selenium>=4.20',
        ],
    },
    entry_points={
        'console_scripts': [
            'spatial-vlm = spatial_vlm_ros.cli:main',
            'spatial_vlm_node = spatial_vlm_ros.ros.node:main',
        ],
    },
)
