# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Lifecycle chain (twice), configuration errors, runtime parameter validation, and bad messages
over DDS that must leave the node alive and reported in /diagnostics."""

from __future__ import annotations

import json
from pathlib import Path
import re
import signal
import time
from typing import Any

from lifecycle_msgs.msg import State
import pytest

from conftest import spin_until
from test_node_dds import RECORDED_TEXT, Harness, make_messages, start_node, stop_node

pytestmark = pytest.mark.ros


def make_node(rclpy_session: Any, recording_path: Path | str, **overrides: Any) -> Any:
    from rclpy.parameter import Parameter

    from spatial_vlm_ros.ros.node import SpatialVlmNode

    values = {
        'autostart': False,
        'engine': 'recorded',
        'recording': str(recording_path),
        **overrides,
    }
    return SpatialVlmNode(
        parameter_overrides=[Parameter(name, value=value) for name, value in values.items()],
        namespace=f'/lifecycle_{int(time.time() * 1e6) % 10**9}',
    )


@pytest.fixture()
def recording(tmp_path: Path) -> Path:
    path = tmp_path / 'recorded.jsonl'
    path.write_text(json.dumps({'stamp_ns': 1, 'text': RECORDED_TEXT}) + '\n')
    return path


def test_lifecycle_chain_runs_twice(rclpy_session: Any, recording: Path) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    node = make_node(rclpy_session, recording)
    success = TransitionCallbackReturn.SUCCESS
    try:
        for _ in range(2):
            assert node.trigger_configure() == success
            assert node._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE
            assert node.trigger_activate() == success
            assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
            assert node._scheduler is not None and node._inputs.subscribed
            assert node.trigger_deactivate() == success
            assert node._scheduler is None and not node._inputs.subscribed
            assert node.trigger_cleanup() == success
            assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
            assert node._pipeline is None and node._outputs is None and node._inputs is None
        assert node.trigger_configure() == success
        assert node.trigger_activate() == success
        assert node.trigger_shutdown() == success
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_FINALIZED
        assert node._pipeline is None and node._worker.loop is None
    finally:
        node.destroy_node()


def test_camera_and_pairing_parameters_reach_the_pipeline_and_pairer(
    rclpy_session: Any, recording: Path
) -> None:
    """camera_intrinsics and the sync_* parameters take effect on configure (seconds -> ns)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from spatial_vlm_ros.core.camera import IntrinsicsSource
    from spatial_vlm_ros.core.pairing import InfoMode, PairingConfig

    node = make_node(
        rclpy_session,
        recording,
        camera_intrinsics='P',
        sync_slop_s=0.02,
        sync_queue_size=40,
        sync_max_wait_s=1.5,
        sync_camera_info='strict',
        sync_min_interval_s=0.0,
    )
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node._pipeline.config.intrinsics_source is IntrinsicsSource.P
        expected = PairingConfig(
            slop_ns=20_000_000,
            queue_size=40,
            info_mode=InfoMode.STRICT,
            max_wait_ns=1_500_000_000,
            min_interval_ns=0,
        )
        assert [inputs.pairer.config for inputs in node._camera_inputs.values()] == [expected]
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    'overrides, expected',
    [
        ({'recording': ''}, 'needs `recording`'),
        ({'recording': '/nonexistent/recorded.jsonl'}, 'cannot configure the engine'),
        ({'engine': 'openai', 'server_url': 'not a url'}, 'cannot configure the engine'),
        ({'model': 'no-such-profile-or-path'}, 'cannot configure the engine'),
    ],
)
def test_bad_configuration_fails_configure_with_a_message(
    rclpy_session: Any,
    recording: Path,
    overrides: dict[str, Any],
    expected: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    node = make_node(rclpy_session, recording, **overrides)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert expected in capfd.readouterr().err
    finally:
        node.destroy_node()


def test_runtime_parameters_are_validated(rclpy_session: Any, recording: Path) -> None:
    from rclpy.parameter import Parameter

    node = make_node(rclpy_session, recording)
    try:
        ok = node.set_parameters([Parameter('vocabulary', value=['mug', 'chair'])])[0]
        assert ok.successful
        bad = node.set_parameters([Parameter('min_depth_m', value=50.0)])[0]
        assert not bad.successful and 'min_depth_m' in bad.reason
        out_of_range = node.set_parameters([Parameter('rate_hz', value=-3.0)])[0]
        assert not out_of_range.successful
        read_only = node.set_parameters([Parameter('engine', value='openai')])[0]
        assert not read_only.successful
        # Runtime parameters reach the running pipeline and scheduler without a reconfigure.
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        changed = node.set_parameters(
            [
                Parameter('rate_hz', value=7.5),
                Parameter('max_frame_age_s', value=3.0),
                Parameter('near_threshold_m', value=0.25),
                Parameter('max_depth_m', value=6.0),
            ]
        )
        assert all(result.successful for result in changed)
        assert node._scheduler.config.rate_hz == 7.5
        assert node._scheduler.config.max_age_s == 3.0
        assert node._pipeline.config.relations.near_threshold_m == 0.25
        assert node._pipeline.config.depth.max_depth_m == 6.0
        assert node._pipeline.config.vocabulary == ('mug', 'chair')
        node.trigger_shutdown()
    finally:
        node.destroy_node()


def test_bad_messages_over_dds_leave_the_node_alive_and_reported(
    ros_env: dict[str, str], rclpy_session: Any, tmp_path: Path
) -> None:
    from rclpy.qos import ReliabilityPolicy

    start = time.time_ns()
    stamps = [start + i * 200_000_000 for i in range(60)]
    recording = tmp_path / 'recorded.jsonl'
    recording.write_text(
        ''.join(json.dumps({'stamp_ns': s, 'text': RECORDED_TEXT}) + '\n' for s in stamps)
    )
    process = start_node(
        dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT'),
        recording,
        tmp_path / 'node.log',
        ('-p', 'diagnostics_period_s:=0.5'),
    )
    harness = Harness(rclpy_session, ReliabilityPolicy.RELIABLE)
    try:
        assert spin_until(
            harness.executor, lambda: harness.rgb_pub.get_subscription_count() > 0, 60.0
        )
        time.sleep(1.5)  # let the node re-match its input QoS to our reliable publishers
        # 1) RGB and depth without any CameraInfo: nothing can be paired (they wait, bounded).
        for stamp in stamps[:5]:
            rgb, depth, _ = make_messages(stamp)
            harness.rgb_pub.publish(rgb)
            harness.depth_pub.publish(depth)
            spin_until(harness.executor, lambda: False, 0.2)
        assert not harness.scenes, 'a scene was published without CameraInfo'
        # 2) Frames whose RGB has an unknown encoding, and whose depth is truncated.
        # Alternating by index (the stamps are 200 ms apart, so their parity never alternates).
        weird_encoding = set(stamps[5:15:2])
        for stamp in stamps[5:15]:
            bad_rgb, bad_depth = make_messages(stamp)[0], make_messages(stamp)[1]
            _, _, info = make_messages(stamp)
            if stamp in weird_encoding:
                bad_rgb.encoding = 'yuv422_weird'
            else:
                bad_depth.data = bytes(100)
            harness.info_pub.publish(info)
            harness.depth_pub.publish(bad_depth)
            harness.rgb_pub.publish(bad_rgb)
            spin_until(harness.executor, lambda: False, 0.2)
        broken = set(stamps[5:15])
        published = {s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in harness.scenes}
        assert not published & broken, 'a scene was published from broken input'
        harness.scenes.clear()
        # 3) Good frames afterwards are still processed: nothing was lost from the stream.
        for stamp in stamps[15:]:
            harness.publish_frame(stamp)
            if spin_until(harness.executor, lambda: len(harness.scenes) >= 2, 0.2):
                break
        spin_until(harness.executor, lambda: len(harness.scenes) >= 2, 20.0)  # a slow machine
        log = (tmp_path / 'node.log').read_text(errors='replace')
        assert len(harness.scenes) >= 2, log[-3000:]
        assert process.poll() is None, 'the node died'

        def reported() -> dict[str, str]:
            for array in reversed(harness.diagnostics):
                for status in array.status:
                    if status.name.endswith('spatial_vlm: pipeline'):
                        return {kv.key: kv.value for kv in status.values}
            return {}

        assert spin_until(
            harness.executor,
            lambda: 'errors.frame' in reported() and int(reported()['published_scenes']) >= 2,
            20.0,
        ), reported()
        values = reported()
        # Ten broken frames were paired; the latest-frame slot may replace some of them before
        # the worker decodes them (counted as superseded, not as errors) when the machine is
        # slow, so only a lower bound on the errors holds.
        errors = int(values['errors.frame'])
        assert errors >= 2, values
        assert int(values['published_scenes']) >= 2
        assert 'latency_p95_ms' in values and values['latency_p95_ms'] != 'n/a'
        assert any(k.startswith('pairing.') and 'dropped' in k for k in values), values
        # The first frame error is logged (then rate-limited): it names the broken frame and
        # exactly what was wrong with it.
        logged = re.search(r'\[frame\] frame (\d+): (\w+): (.*)', log)
        assert logged, log[-3000:]
        stamp, error_type, message = int(logged[1]), logged[2], logged[3]
        assert stamp in broken
        if stamp in weird_encoding:
            assert (error_type, 'yuv422_weird' in message) == ('UnknownEncodingError', True)
        else:
            assert (error_type, 'has 100 bytes' in message) == ('ImageSizeError', True), message
    finally:
        harness.close()
        code = stop_node(process)
    # SIGINT: a clean exit (0) or the interrupt (-2); a hang (SIGKILL, -9) or a crash fails.
    assert code in (0, -signal.SIGINT), code


def test_node_process_runs_from_yaml_and_exits_cleanly(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    recording = tmp_path / 'recorded.jsonl'
    recording.write_text(json.dumps({'stamp_ns': 1, 'text': '[]'}) + '\n')
    process = start_node(ros_env, recording, tmp_path / 'node.log')
    deadline = time.monotonic() + 20
    log_path = tmp_path / 'node.log'
    while time.monotonic() < deadline and 'active' not in log_path.read_text(errors='replace'):
        time.sleep(0.2)
    assert 'active: waiting' in log_path.read_text(errors='replace')
    assert stop_node(process) in (0, -2)
    assert 'Traceback' not in log_path.read_text(errors='replace')
