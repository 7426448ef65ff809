# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The node on a real ROS graph: a camera driver in another process (test/fake_camera.py) with
its own transports, QoS and clock; the node as a process; what /diagnostics and the log say.

Each case is something a user meets the first time: transports that differ, best-effort large
images, a wrong topic or type, a camera clock that is offset, a model server that is down, a
configure that failed. Each must give scenes or a clear reason within seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import itertools
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from spatial_vlm_ros.core.stamps import header_stamp_ns

from chat_stand_in import ChatStandIn
from conftest import REPO_ROOT, spin_until

pytestmark = pytest.mark.ros

TEST_DIR = Path(__file__).resolve().parent
_COUNTER = itertools.count()


def namespace() -> str:
    return f'/graph_{os.getpid()}_{next(_COUNTER)}'


def start_node(
    env: dict[str, str], ns: str, log: Path, params: dict[str, str], server: Any = None
) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / 'spatial_vlm_node'), '--ros-args',
        '--params-file', str(REPO_ROOT / 'config' / 'spatial_vlm.yaml'),
        '-r', f'__ns:={ns}', '-p', 'rate_hz:=0.0', '-p', 'diagnostics_period_s:=0.5',
    ]  # fmt: skip
    if server is not None:
        command += ['-p', 'engine:=openai', '-p', f'server_url:={server.url}']
    for name, value in params.items():
        command += ['-p', f'{name}:={value}']
    return subprocess.Popen(command, env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT)


def start_camera(env: dict[str, str], ns: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(TEST_DIR / 'fake_camera.py'), '--namespace', ns, *args]
    return subprocess.Popen(command, env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


def wait_for_log(path: Path, text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors='replace'):
            return True
        time.sleep(0.2)
    return text in path.read_text(errors='replace')


@pytest.fixture()
def model_server() -> Iterator[ChatStandIn]:
    """The real `openai` engine's server stand-in: grounds any frame (the stamps of a camera
    process are not known in advance, so a recording cannot serve it)."""
    server = ChatStandIn()
    yield server
    server.close()


class Listener:
    """Test-side node: /diagnostics and the node's scenes."""

    def __init__(self, rclpy: Any, ns: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor

        from spatial_vlm_ros.msg import SpatialScene

        self.ns = ns
        self.node = rclpy.create_node(f'listener_{os.getpid()}_{next(_COUNTER)}')
        self.diagnostics: list[Any] = []
        self.scenes: list[Any] = []
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.node.create_subscription(
            SpatialScene, f'{ns}/spatial_vlm/scene', self.scenes.append, 10
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def _on_diagnostics(self, array: Any) -> None:
        if any(status.name.startswith(f'{self.ns}/spatial_vlm: ') for status in array.status):
            self.diagnostics.append(array)

    def statuses(self) -> dict[str, Any]:
        """The newest status of each name (task) of this node."""
        newest: dict[str, Any] = {}
        for array in self.diagnostics:
            for status in array.status:
                newest[status.name.split(': ', 1)[1]] = status
        return newest

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture()
def listener(rclpy_session: Any) -> Iterator[Callable[[str], Listener]]:
    made: list[Listener] = []

    def make(ns: str) -> Listener:
        made.append(Listener(rclpy_session, ns))
        return made[-1]

    yield make
    for item in made:
        item.close()


class PublishedStamps:
    """The camera's own stamps of one topic: the rate it really published, whatever this process's
    or the node's scheduling did to their arrival (a reliable reader with a deep history keeps
    every sample until this process takes it)."""

    def __init__(self) -> None:
        self.stamps_s: list[float] = []

    def record(self, message: Any) -> None:
        self.stamps_s.append(header_stamp_ns(message) * 1e-9)

    def rate_hz(self, window_s: float, end_s: float) -> float:
        """Intervals per second among the stamps in ``[end_s - window_s, end_s]``."""
        recent = sorted(t for t in self.stamps_s if end_s - window_s <= t <= end_s)
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])


def level_names(statuses: dict[str, Any]) -> dict[str, int]:
    return {name: int.from_bytes(status.level, 'little') for name, status in statuses.items()}


# ------------------------------------------------------------------------------ transports


def test_reliable_camera_on_default_transports_gives_scenes_correct_rates_and_no_alarm(
    ros_env, listener, model_server, tmp_path
) -> None:
    ns = namespace()
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    # This test is about false alarms, not staleness: a loaded CI machine may make a frame older
    # than the default 1 s, which is a true WARN, so frames may be older here.
    node = start_node(env, ns, tmp_path / 'node.log', {'max_frame_age_s': '5.0'}, model_server)
    camera = start_camera(env, ns, tmp_path / 'camera.log', '--rate', '2')
    watch = listener(ns)
    published = PublishedStamps()
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    every_sample = QoSProfile(
        depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )
    watch.node.create_subscription(
        CameraInfo, f'{ns}/color/camera_info', published.record, every_sample
    )
    try:
        assert watch.wait(lambda: len(watch.scenes) >= 6, 90.0), (
            tmp_path / 'node.log'
        ).read_text()[-3000:]
        watch.diagnostics.clear()
        assert watch.wait(lambda: len(watch.diagnostics) >= 6, 30.0)
        statuses = watch.statuses()
        topics = [f'{ns}/{t} topic status' for t in
                  ('color/image_raw', 'depth/image_raw', 'color/camera_info')]  # fmt: skip
        assert set(statuses) == {'engine', 'pipeline', *topics}
        messages = {name: status.message for name, status in statuses.items()}
        assert all(level == 0 for level in level_names(statuses).values()), messages
        # The rate the node reports is compared with the rate the camera really published over
        # the node's window (its own stamps, up to the stamp of the diagnostics that reported
        # it), not with the nominal 2 Hz: a loaded machine slows the camera process itself
        # (1.25 Hz seen in CI). Nor with arrivals in this process, which a loaded machine holds
        # up too (1.33 Hz seen here against 2.0 Hz reported). A node whose executor was held up
        # rightly reports the silence it saw (1.05 Hz against 1.75 Hz, under load). The bug this
        # guards against counted each frame more than once (3-4 Hz reported for a 2 Hz camera):
        # an upper bound on the ratio catches it; the lower bound only catches a rate that is
        # not measured at all.
        reported_at = {}
        for array in watch.diagnostics:
            for status in array.status:
                reported_at[status.name.split(': ', 1)[1]] = header_stamp_ns(array) * 1e-9
        for topic in topics:
            values = {kv.key: kv.value for kv in statuses[topic].values}
            window_s = float(values['Duration of window (s)'])
            published_hz = published.rate_hz(window_s, reported_at[topic])
            reported_hz = float(values['Actual frequency (Hz)'])
            assert published_hz > 0.5, (topic, values, published_hz)
            assert 0.3 <= reported_hz / published_hz <= 1.35, (topic, values, published_hz)
        assert all(status.hardware_id == f'{ns}/spatial_vlm' for status in statuses.values())
    finally:
        stop(camera)
        code = stop(node)
    assert code in (0, -signal.SIGINT)


@pytest.mark.parametrize('node_transports', ['DEFAULT', 'LARGE_DATA'])
def test_best_effort_large_images_that_are_lost_are_diagnosed_with_the_fix(
    node_transports, ros_env, model_server, tmp_path
) -> None:
    """A best-effort 640x480 camera on default transports (the mixed case included: the node
    on LARGE_DATA): the log says what is lost and to use LARGE_DATA on both sides."""
    ns = namespace()
    node = start_node(
        dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS=node_transports), ns, tmp_path / 'node.log',
        {}, model_server,
    )  # fmt: skip
    camera = start_camera(
        dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT'), ns, tmp_path / 'camera.log',
        '--rate', '2', '--best-effort',
    )  # fmt: skip
    try:
        expected = f'LARGE_DATA on BOTH sides (this node: {node_transports}'
        assert wait_for_log(tmp_path / 'node.log', expected, 60.0), (
            tmp_path / 'node.log'
        ).read_text()[-3000:]
    finally:
        stop(camera)
        stop(node)


def _can_make_a_network_namespace() -> str:
    if shutil.which('unshare') is None or shutil.which('ip') is None:
        return 'needs unshare and ip (util-linux, iproute2)'
    probe = subprocess.run(['unshare', '-n', 'true'], capture_output=True, text=True)
    return '' if probe.returncode == 0 else f'unshare -n failed: {probe.stderr.strip()}'


NAMESPACE_PROBLEM = _can_make_a_network_namespace()


@pytest.mark.skipif(bool(NAMESPACE_PROBLEM), reason=NAMESPACE_PROBLEM or 'available')
def test_mixed_transports_that_cannot_discover_each_other_are_named(ros_env, tmp_path) -> None:
    """With the default discovery range (a robot's LAN), a LARGE_DATA node and a camera on the
    default transports do not see each other at all: the node must say so. Run in a network
    namespace of our own, so that discovery multicast stays on its loopback."""
    ns = namespace()
    recording = tmp_path / 'recorded.jsonl'  # no scene is expected: nothing can arrive
    recording.write_text('{"stamp_ns": 1, "text": "[]"}\n')
    node_command = [
        str(Path(sys.executable).parent / 'spatial_vlm_node'), '--ros-args',
        '--params-file', str(REPO_ROOT / 'config' / 'spatial_vlm.yaml'), '-r', f'__ns:={ns}',
        '-p', 'engine:=recorded', '-p', f'recording:={recording}',
        '-p', 'diagnostics_period_s:=0.5',
    ]  # fmt: skip
    camera_command = [sys.executable, str(TEST_DIR / 'fake_camera.py'), '--namespace', ns]
    script = (
        'ip link set lo up && ip link set lo multicast on && '
        'ip route add 224.0.0.0/4 dev lo && '
        f'FASTDDS_BUILTIN_TRANSPORTS=DEFAULT {" ".join(camera_command)} '
        f'> {tmp_path / "camera.log"} 2>&1 & '
        f'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA exec {" ".join(node_command)}'
    )
    env = {k: v for k, v in ros_env.items() if k != 'ROS_AUTOMATIC_DISCOVERY_RANGE'}
    log = tmp_path / 'node.log'
    process = subprocess.Popen(
        ['unshare', '-n', '--kill-child', 'bash', '-c', script],
        env=env, stdout=log.open('wb'), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        expected = (
            'IS visible with FASTDDS_BUILTIN_TRANSPORTS=DEFAULT while this node uses LARGE_DATA'
        )
        assert wait_for_log(log, expected, 90.0), log.read_text()[-3000:]
        assert f'no publisher on {ns}/color/image_raw' in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# ------------------------------------------------------------------------------ topics and types


def test_a_wrong_topic_lists_look_alikes_and_a_wrong_type_is_named(
    ros_env, listener, rclpy_session, model_server, tmp_path
) -> None:
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage

    ns = namespace()
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    node = start_node(env, ns, tmp_path / 'node.log', {}, model_server)
    camera = start_camera(env, f'{ns}/cam', tmp_path / 'camera.log', '--rate', '2')
    watch = listener(ns)
    # Something compressed where the node expects raw depth.
    wrong = watch.node.create_publisher(
        CompressedImage, f'{ns}/depth/image_raw', QoSProfile(depth=1)
    )
    try:
        color, depth = f'{ns}/color/image_raw topic status', f'{ns}/depth/image_raw topic status'

        def diagnosed() -> bool:
            statuses = watch.statuses()
            return (
                color in statuses
                and statuses[color].message.startswith(f'no publisher on {ns}/color/image_raw')
                and depth in statuses
                and 'carries sensor_msgs/msg/CompressedImage' in statuses[depth].message
            )

        assert watch.wait(diagnosed, 60.0), {n: s.message for n, s in watch.statuses().items()}
        statuses = watch.statuses()
        assert f'similar topics: {ns}/cam/color/image_raw (sensor_msgs/msg/Image)' in (
            statuses[color].message
        )
        assert 'set depth_image_transport: compressedDepth' in statuses[depth].message
        assert level_names(statuses)[color] == 2 and level_names(statuses)[depth] == 2
    finally:
        watch.node.destroy_publisher(wrong)
        stop(camera)
        stop(node)


# ------------------------------------------------------------------------------ clocks


@pytest.mark.parametrize(
    'offset_s, expected',
    [
        (-300 * 86400.0, ("behind this node's clock (steady)", 'use_sim_time:=true')),
        (30.0, ("ahead of this node's clock (steady)", 'synchronise the camera')),
    ],
    ids=['recording-without-clock', 'camera-clock-ahead'],
)
def test_a_steady_clock_offset_is_reported_and_the_node_keeps_working(
    offset_s, expected, ros_env, listener, model_server, tmp_path
) -> None:
    ns = namespace()
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    # The default max_frame_age_s (1 s): by stamp, every frame would be stale or refused.
    node = start_node(env, ns, tmp_path / 'node.log', {'max_frame_age_s': '1.0'},
                      model_server)  # fmt: skip
    camera = start_camera(
        env, ns, tmp_path / 'camera.log', '--rate', '4', '--stamp-offset-s', str(offset_s)
    )
    watch = listener(ns)
    try:
        log = tmp_path / 'node.log'
        assert watch.wait(lambda: len(watch.scenes) >= 3, 90.0), log.read_text()[-3000:]
        text = log.read_text()
        assert all(part in text for part in expected), text[-3000:]
        color = watch.statuses()[f'{ns}/color/image_raw topic status']
        assert int.from_bytes(color.level, 'little') == 1 and expected[0] in color.message
        latencies = [scene.latency_ms for scene in watch.scenes[-3:]]
        assert all(latency < 60_000 for latency in latencies), latencies  # not the offset
    finally:
        stop(camera)
        stop(node)


# ------------------------------------------------------------------------------ engine


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_model_server_and_a_failed_configure_are_errors(
    ros_env, listener, tmp_path
) -> None:
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    down, typo = namespace(), namespace()
    url = f'http://127.0.0.1:{_closed_port()}'
    nodes = [
        start_node(env, down, tmp_path / 'down.log', {'engine': 'openai', 'server_url': url}),
        start_node(env, typo, tmp_path / 'typo.log', {'engine': 'openia'}),
    ]  # fmt: skip
    watch_down, watch_typo = listener(down), listener(typo)
    try:

        def engine_error(watch: Listener) -> bool:
            engine = watch.statuses().get('engine')
            return engine is not None and int.from_bytes(engine.level, 'little') == 2

        for watch, log in ((watch_down, 'down.log'), (watch_typo, 'typo.log')):
            assert watch.wait(lambda w=watch: engine_error(w), 60.0), (
                (tmp_path / log).read_text()[-3000:],
                {n: s.message for n, s in watch.statuses().items()},
            )
        typo_message = watch_typo.statuses()['engine'].message
        assert typo_message.startswith("configure failed: bad configuration: engine='openia'")
        # Reported at configure, before any frame, with the fix; autostart keeps retrying.
        down_message = watch_down.statuses()['engine'].message
        assert down_message.startswith(
            f'configure failed: engine start failed: EngineUnavailableError: no server answers '
            f'at {url}'
        ), down_message
        assert 'Fix: start the model server' in down_message, down_message
        assert not watch_down.scenes
    finally:
        for process in nodes:
            stop(process)


def test_a_model_server_that_starts_after_the_node_is_picked_up_by_autostart(
    ros_env, listener, tmp_path
) -> None:
    """Robots boot in any order: the node retries configure until the server answers."""
    env = dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT')
    ns, port = namespace(), _closed_port()
    node = start_node(
        env,
        ns,
        tmp_path / 'node.log',
        {'engine': 'openai', 'server_url': f'http://127.0.0.1:{port}'},
    )
    watch = listener(ns)
    server = None
    try:
        assert watch.wait(
            lambda: (
                'engine' in watch.statuses()
                and int.from_bytes(watch.statuses()['engine'].level, 'little') == 2
            ),
            60.0,
        ), (tmp_path / 'node.log').read_text()[-3000:]
        server = ChatStandIn(port)
        camera = start_camera(env, ns, tmp_path / 'camera.log', '--rate', '2')
        try:
            assert watch.wait(lambda: len(watch.scenes) >= 2, 90.0), (
                tmp_path / 'node.log'
            ).read_text()[-3000:]
        finally:
            stop(camera)
        assert 'retrying configure' in (tmp_path / 'node.log').read_text()
    finally:
        stop(node)
        if server is not None:
            server.close()
