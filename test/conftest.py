# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Session-wide test setup.

* Each test run gets its own ROS_DOMAIN_ID and keeps DDS discovery on loopback, so parallel runs
  and other machines never see each other's traffic.
* ROS tests are never skipped silently: when rclpy or the generated interfaces are missing the
  run fails, unless the user opts out with SPATIAL_VLM_SKIP_ROS_TESTS=1 (then they are reported
  as skipped with that reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import os
from pathlib import Path
import sys
import time
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Tests also exercise bench/ helpers (the lifting baselines, the staleness simulation).
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
# Test-only builders (the tiny model) live in test/fixtures, importable as `fixtures.*` whatever
# pytest's import mode.
if str(REPO_ROOT / 'test') not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / 'test'))

os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
SKIP_ROS = os.environ.get('SPATIAL_VLM_SKIP_ROS_TESTS') == '1'


def _ros_import_error() -> str | None:
    try:
        import rclpy  # noqa: F401

        import spatial_vlm_ros.msg
        import spatial_vlm_ros.srv  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means no ROS tests
        return f'{type(error).__name__}: {error}'
    return None


ROS_IMPORT_ERROR = _ros_import_error()


def pytest_configure(config: pytest.Config) -> None:
    if ROS_IMPORT_ERROR and not SKIP_ROS:
        raise pytest.UsageError(
            f'rclpy or the generated interfaces do not import ({ROS_IMPORT_ERROR}). Run '
            '`make setup`, or set SPATIAL_VLM_SKIP_ROS_TESTS=1 to skip the ROS tests on purpose.'
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (ROS_IMPORT_ERROR and SKIP_ROS):
        return
    marker = pytest.mark.skip(reason=f'SPATIAL_VLM_SKIP_ROS_TESTS=1 ({ROS_IMPORT_ERROR})')
    for item in items:
        if 'ros' in item.keywords:
            item.add_marker(marker)


@pytest.fixture(scope='session')
def ros_env() -> dict[str, str]:
    """Environment for child processes that must join this run's DDS domain."""
    env = dict(os.environ)
    env['PYTHONUNBUFFERED'] = '1'
    return env


@pytest.fixture(scope='session')
def rclpy_session() -> Iterator[Any]:
    import rclpy

    rclpy.init()
    yield rclpy
    rclpy.try_shutdown()


def spin_until(
    executor: Any, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05
) -> bool:
    """Spin ``executor`` until ``predicate()`` holds or ``timeout_s`` passes; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return predicate()


# ---------------------------------------------------------------- the node over DDS
# Shared by the DDS test modules; Harness and the recorded texts live in test_node_dds.py.


@pytest.fixture()
def stamps() -> list[int]:
    start = time.time_ns()
    # Up to 24 s of frames at 0.2 s (more at 0.5 s); streams stop as soon as the test has seen
    # what it waits for, so the length only matters on a slow machine.
    return [start + i * 200_000_000 for i in range(120)]


@pytest.fixture()
def recording(tmp_path: Path, stamps: list[int]) -> Path:
    """A recorded-engine JSONL with the two-object grounding and an answer for every stamp."""
    import json

    from test_node_dds import ANSWER_TEXT, RECORDED_TEXT

    path = tmp_path / 'recorded.jsonl'
    with path.open('w') as out:
        for stamp in stamps:
            out.write(json.dumps({'stamp_ns': stamp, 'text': RECORDED_TEXT}) + '\n')
            out.write(
                json.dumps({'stamp_ns': stamp, 'task': 'question', 'text': ANSWER_TEXT}) + '\n'
            )
    return path


@pytest.fixture()
def harness_factory(rclpy_session: Any) -> Iterator[Any]:
    """Makes test-side nodes (camera publishers, scene listeners, service clients)."""
    from test_node_dds import Harness

    made: list[Any] = []

    def make(reliability: Any) -> Any:
        harness = Harness(rclpy_session, reliability)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
