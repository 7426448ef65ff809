# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The colcon path: the full ament_cmake build (interfaces + Python package + launch/config +
executables) configures, builds and installs, and the installed tree imports and runs.

colcon itself is not on PyPI's ROS wheels, but colcon only drives this same CMake build.
"""

from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.ros


def _source_copy(destination: Path) -> Path:
    # Build from a copy: the venv lives inside the checkout, and CMake refuses exported include
    # directories (numpy's, in the venv) that sit inside the source directory.
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        source = REPO_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.skipif(shutil.which('cmake') is None, reason='cmake is not installed')
# rosidl generates and compiles C, C++ and Python support for 11 interfaces (v0.2): about 3 min
# on 2 idle cores, more on a shared machine; the default 300 s per test is too tight.
@pytest.mark.timeout(900)
def test_full_ament_cmake_build_installs_a_working_package(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    source = _source_copy(tmp_path / 'src' / 'spatial_vlm_ros')
    build, install = tmp_path / 'build', tmp_path / 'install'
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv))
    configure = subprocess.run(
        ['cmake', '-S', str(source), '-B', str(build), '-DBUILD_TESTING=OFF',
         f'-DCMAKE_PREFIX_PATH={venv}', f'-DPython3_EXECUTABLE={sys.executable}',
         f'-DCMAKE_INSTALL_PREFIX={install}'],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    for step in (['cmake', '--build', str(build), '-j', '2'], ['cmake', '--install', str(build)]):
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    share = install / 'share' / 'spatial_vlm_ros'
    assert (share / 'launch' / 'spatial_vlm.launch.py').is_file()
    assert (share / 'config' / 'spatial_vlm.yaml').is_file()
    assert (share / 'package.xml').is_file()
    assert (share / 'rviz' / 'spatial_vlm.rviz').is_file()
    assert (share / 'foxglove' / 'spatial_vlm_layout.json').is_file()
    executables = install / 'lib' / 'spatial_vlm_ros'
    for name in ('spatial_vlm_node', 'spatial-vlm'):
        assert os.access(executables / name, os.X_OK), f'{name} is not installed executable'
    site = install / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}'
    site = site / 'site-packages'
    assert (site / 'spatial_vlm_ros' / 'msg' / '__init__.py').is_file()
    assert (site / 'spatial_vlm_ros' / 'ros' / 'node.py').is_file()
    assert (site / 'spatial_vlm_ros' / 'replay' / 'report_assets' / 'report.js').is_file()

    # What `source install/setup.bash` provides, then the installed package must win and work.
    run_env = dict(
        env,
        PYTHONPATH=str(site),
        LD_LIBRARY_PATH=f'{install / "lib"}:{env.get("LD_LIBRARY_PATH", "")}',
        AMENT_PREFIX_PATH=f'{install}:{venv}',
    )
    probe = (
        'import spatial_vlm_ros, spatial_vlm_ros.msg as m, spatial_vlm_ros.srv as s\n'
        'from spatial_vlm_ros.ros.node import SpatialVlmNode\n'
        'from rclpy.serialization import serialize_message, deserialize_message\n'
        'scene = m.SpatialScene(model_id="x"); scene.objects = [m.SpatialObject(label="mug")]\n'
        'back = deserialize_message(serialize_message(scene), m.SpatialScene)\n'
        'assert back.objects[0].label == "mug"\n'
        'print(spatial_vlm_ros.__file__)\n'
    )
    done = subprocess.run([sys.executable, '-c', probe], env=run_env, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(str(site)), done.stdout
    cli = subprocess.run([sys.executable, str(executables / 'spatial-vlm'), '--help'],
                         env=run_env, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert cli.returncode == 0 and 'replay' in cli.stdout, cli.stderr[-2000:]
