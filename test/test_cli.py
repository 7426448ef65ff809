# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""`spatial-vlm` commands: exit codes and one-line errors, replay and demo end to end, and
`play` publishing a bag over real DDS to a subscriber in this process."""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from spatial_vlm_ros import cli
from spatial_vlm_ros.replay import msgs
from spatial_vlm_ros.replay.bag_io import BagReader
from spatial_vlm_ros.replay.sample_bag import (
    BagLayout,
    synthetic_frame,
    write_recording,
    write_rgbd_bag,
)

from conftest import REPO_ROOT, spin_until

FRAMES = (synthetic_frame('a', seed=3), synthetic_frame('b', seed=4))
SAMPLE_BAG = REPO_ROOT / 'data' / 'sample_bag'
STORE = msgs.typestore()


@pytest.fixture
def small_bag(tmp_path: Path) -> tuple[Path, Path, BagLayout]:
    layout = BagLayout(repeats=2, compressed_rgb=False)
    bag = write_rgbd_bag(tmp_path / 'bag', FRAMES, layout)
    recording = tmp_path / 'recorded.jsonl'
    write_recording(recording, FRAMES, layout)
    return bag, recording, layout


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_replay_writes_outputs_and_prints_where(small_bag, tmp_path, capsys):
    bag, recording, _ = small_bag
    out = tmp_path / 'out'
    args = ['replay', str(bag), '-o', str(out), '--recording', str(recording), '--quiet']
    status = cli.main(args)
    printed = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert f'report: {out / "report.html"}' in printed
    assert 'frames: 4 paired, 4 processed' in printed
    lines = (out / 'scenes.jsonl').read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)['objects'] for line in lines)
    # A second run into the same directory replaces the earlier outputs.
    assert cli.main(args) == cli.EXIT_OK
    assert len((out / 'scenes.jsonl').read_text().splitlines()) == 4
    with BagReader(out / 'scenes_bag') as reader:
        assert reader.topics['/spatial_vlm/scene'].message_count == 4


def test_replay_vocabulary_and_rate_options_reach_the_pipeline(small_bag, tmp_path, capsys):
    bag, recording, _ = small_bag
    out = tmp_path / 'out'
    args = ['replay', str(bag), '-o', str(out), '--recording', str(recording), '--quiet']
    status = cli.main([*args, '--rate', '1', '--vocabulary', 'cup, book', '--no-bag'])
    assert status == cli.EXIT_OK
    assert 'frames: 4 paired, 2 processed, 2 skipped by --rate' in capsys.readouterr().out
    assert not (out / 'scenes_bag').exists()


@pytest.mark.parametrize(
    ('extra', 'expected'),
    [
        (['--depth-topic', '/nope'], "depth topic '/nope' is not in the bag"),
        (['--engine', 'recorded'], 'needs --recording'),
        (['--recording', 'missing.jsonl'], 'recording not found'),
        (['--rate', '-1', '--recording', '{recording}'], '--rate must be >= 0'),
    ],
)
def test_replay_errors_are_one_line_with_exit_code_2(small_bag, tmp_path, capsys, extra, expected):
    bag, recording, _ = small_bag
    extra = [item.replace('{recording}', str(recording)) for item in extra]
    if '--recording' not in extra and '--engine' not in extra:
        extra += ['--recording', str(recording)]
    status = cli.main(['replay', str(bag), '-o', str(tmp_path / 'out'), '--quiet', *extra])
    assert status == cli.EXIT_ERROR
    line = error_line(capsys)
    assert line.startswith('spatial-vlm replay: error:') and expected in line


def test_missing_and_empty_bags_exit_2(tmp_path, capsys):
    status = cli.main(['replay', str(tmp_path / 'nope'), '-o', str(tmp_path / 'o'), '--quiet'])
    assert status == cli.EXIT_ERROR and 'bag not found' in error_line(capsys)
    empty = tmp_path / 'empty'
    with Writer(empty, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection(
            '/camera/color/image_raw', msgs.IMAGE_TYPE, typestore=msgs.typestore()
        )
    recording = tmp_path / 'r.jsonl'
    recording.write_text('')
    status = cli.main(
        ['replay', str(empty), '-o', str(tmp_path / 'o'), '--recording', str(recording)]
    )
    assert status == cli.EXIT_ERROR and 'contains no messages' in error_line(capsys)


def test_unknown_encoding_exits_2(small_bag, tmp_path, capsys):
    bag, recording, layout = small_bag
    broken = tmp_path / 'broken'
    with BagReader(bag) as reader, Writer(broken, version=9) as writer:
        connections = {}
        for message in reader.messages():
            if message.topic not in connections:
                connections[message.topic] = writer.add_connection(
                    message.topic, message.msgtype, typestore=msgs.typestore()
                )
            data = message.raw
            if message.topic == layout.depth_topic:
                message.message.encoding = 'bayer_mystery16'
                data = msgs.serialize(message.message)
            writer.write(connections[message.topic], message.log_time_ns, data)
    status = cli.main(
        ['replay', str(broken), '-o', str(tmp_path / 'o'), '--recording', str(recording)]
    )
    line = error_line(capsys)
    assert status == cli.EXIT_ERROR
    assert '/camera/depth/image_raw' in line and 'bayer_mystery16' in line


def test_unusable_output_directory_exits_2(small_bag, tmp_path, capsys):
    bag, recording, _ = small_bag
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    status = cli.main(['replay', str(bag), '-o', str(blocker), '--recording', str(recording)])
    assert status == cli.EXIT_ERROR and 'cannot write outputs to' in error_line(capsys)
    (tmp_path / 'out' / 'scenes_bag').mkdir(parents=True)
    (tmp_path / 'out' / 'scenes_bag' / 'precious.txt').write_text('keep me')
    status = cli.main(
        ['replay', str(bag), '-o', str(tmp_path / 'out'), '--recording', str(recording)]
    )
    assert status == cli.EXIT_ERROR and 'not a bag from an earlier replay' in error_line(capsys)
    assert (tmp_path / 'out' / 'scenes_bag' / 'precious.txt').read_text() == 'keep me'


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == cli.EXIT_ERROR
    assert 'replay' in capsys.readouterr().out


def test_demo_with_the_recording_says_loudly_that_boxes_are_human_labels(tmp_path, capsys):
    out = tmp_path / 'demo'
    status = cli.main(['demo', '--engine', 'recorded', '-o', str(out), '--quiet'])
    printed = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert 'engine = RECORDED' in printed and 'HUMAN HAND LABELS' in printed
    assert f'report: {out / "report.html"}' in printed
    assert (out / 'scenes_bag' / 'metadata.yaml').is_file()


SLOW_REPLAY = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from spatial_vlm_ros import cli
    from spatial_vlm_ros.engines.recorded import RecordedEngine
    from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline

    class SlowRecordedEngine(RecordedEngine):  # a model call takes time; Ctrl-C lands in one
        async def generate(self, request):
            await asyncio.sleep(0.3)
            return await super().generate(request)

    engine = SlowRecordedEngine(path=sys.argv[2])
    pipeline = SpatialPipeline(engine, '', PipelineConfig())
    sys.exit(cli._run_replay(Path(sys.argv[1]), Path(sys.argv[3]), pipeline, progress=False))
    """
)


def test_ctrl_c_exits_130_and_leaves_valid_partial_outputs(tmp_path):
    out = tmp_path / 'out'
    scenes = out / 'scenes.jsonl'
    recording = SAMPLE_BAG / 'recorded.jsonl'
    command = [sys.executable, '-c', SLOW_REPLAY, str(SAMPLE_BAG), str(recording), str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if scenes.exists() and len(scenes.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED, stdout + stderr
    assert 'interrupted' in stderr
    written = [json.loads(line) for line in scenes.read_text().splitlines()]
    assert 2 <= len(written) < 16
    with BagReader(out / 'scenes_bag') as reader:  # closed properly: metadata and summary
        assert reader.topics['/spatial_vlm/scene'].message_count == len(written)
    report = (out / 'report.html').read_text()
    assert 'interrupted' in report and report.rstrip().endswith('</html>')


@pytest.mark.ros
def test_play_publishes_the_bag_over_dds_with_its_stamps_and_clock(
    small_bag, rclpy_session, ros_env
):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    bag, _, layout = small_bag
    with BagReader(bag) as reader:
        expected = {
            m.message.header.stamp.sec * 10**9 + m.message.header.stamp.nanosec: bytes(
                m.message.data
            )
            for m in reader.messages([layout.resolved_rgb_topic])
        }
        bag_start, bag_end = reader.start_ns, reader.end_ns

    node = rclpy_session.create_node('play_listener')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    images: dict[int, bytes] = {}
    clocks: list[int] = []
    node.create_subscription(
        Image,
        layout.resolved_rgb_topic,
        lambda m: images.__setitem__(
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, bytes(m.data)
        ),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    node.create_subscription(
        Clock, '/clock', lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec), 10
    )
    env = dict(ros_env, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    command = [
        sys.executable, '-m', 'spatial_vlm_ros.cli', 'play', str(bag), '--rate', '4',
        '--clock', '--wait-for-subscribers', '15',
        '--topics', layout.resolved_rgb_topic, layout.info_topic,
    ]  # fmt: skip
    player = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        spin_until(executor, lambda: player.poll() is not None, timeout_s=45)
        spin_until(executor, lambda: len(images) == len(expected), timeout_s=3)
    finally:
        if player.poll() is None:
            player.kill()
        output = player.communicate()[0]
        executor.shutdown()
        node.destroy_node()
    assert player.returncode == 0, output
    assert f'{layout.resolved_rgb_topic}={len(expected)}' in output
    # RELIABLE publishing after a subscriber matched: every image arrives, bytes unchanged.
    assert images == expected
    assert clocks, 'no /clock received'
    assert all(bag_start <= stamp <= bag_end for stamp in clocks)
    assert clocks == sorted(clocks)


def test_play_without_rclpy_context_errors_cleanly_on_a_missing_topic(small_bag, capsys):
    bag, _, _ = small_bag
    status = cli.main(['play', str(bag), '--topics', '/does/not/exist'])
    assert status == cli.EXIT_ERROR
    assert 'topics not in the bag: /does/not/exist' in error_line(capsys)


def test_the_console_script_entry_point_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'spatial_vlm_ros.cli', '--version'],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    assert result.returncode == 0 and result.stdout.strip()


def test_replay_sets_every_setting_it_shares_with_the_node(
    small_bag, tmp_path, capsys, monkeypatch
):
    """One table: each node parameter of scope `both` is a replay flag and reaches the pipeline."""
    from spatial_vlm_ros import settings
    from spatial_vlm_ros.core.camera import IntrinsicsSource
    from spatial_vlm_ros.core.pairing import InfoMode, PairingConfig
    from spatial_vlm_ros.pipeline import PipelineSettings
    from spatial_vlm_ros.replay import runner

    bag, recording, _ = small_bag
    given = {
        'max_objects': 1,
        'near_threshold_m': 0.25,
        'min_depth_m': 0.2,
        'max_depth_m': 5.0,
        'depth_scale': 0.001,
        'sync_slop_s': 0.02,
        'request_timeout_s': 12.0,
        'vocabulary': ['cup', 'book'],
        'relation_frame': 'base_link',
        'target_frame': 'map',
        'max_in_flight': 3,
        'camera_intrinsics': 'P',
        'sync_queue_size': 40,
        'sync_max_wait_s': 1.5,
        'sync_camera_info': 'strict',
    }
    flags = [f'--{name.replace("_", "-")}' for name in given]
    argv = ['replay', str(bag), '-o', str(tmp_path / 'out'), '--recording', str(recording)]
    for flag, value in zip(flags, given.values(), strict=True):
        argv += [flag, ','.join(value) if isinstance(value, list) else str(value)]
    values = cli.pipeline_values(cli.build_parser().parse_args(argv))
    assert {name: values[name] for name in given} == given
    assert values['engine'] == 'recorded'  # --recording without --engine
    shared = {s.name for s in settings.SETTINGS if s.scope == settings.BOTH}
    assert set(given) | {'engine', 'recording'} <= shared
    pipeline_settings = PipelineSettings.from_parameters(values)
    config = pipeline_settings.config
    assert (config.max_objects, config.relations.near_threshold_m) == (1, 0.25)
    assert (config.depth.min_depth_m, config.lifting.max_depth_m) == (0.2, 5.0)
    assert (config.target_frame, config.relation_frame) == ('map', 'base_link')
    assert config.vocabulary == ('cup', 'book') and config.depth.depth_scale == 0.001
    assert pipeline_settings.request_timeout_s == 12.0
    assert config.intrinsics_source is IntrinsicsSource.P

    # The replay's pairer gets the sync_* values (in ns), as the node's does.
    pairings = []

    async def capture(options, pipeline):
        pairings.append(options.pairing)
        return runner.ReplaySummary(bag=options.bag, out_dir=options.out_dir)

    monkeypatch.setattr(runner, 'replay_bag', capture)
    assert cli.main([*argv, '--quiet']) == cli.EXIT_OK
    assert pairings == [
        PairingConfig(
            slop_ns=20_000_000,
            queue_size=40,
            info_mode=InfoMode.STRICT,
            max_wait_ns=1_500_000_000,
            min_interval_ns=0,
        )
    ]
    monkeypatch.undo()

    out = tmp_path / 'run'
    status = cli.main(
        ['replay', str(bag), '-o', str(out), '--recording', str(recording), '--quiet']
        + ['--max-objects', '1', '--near-threshold-m', '0.25', '--no-bag', '--no-report']
    )
    assert status == cli.EXIT_OK, capsys.readouterr().err
    scenes = [json.loads(line) for line in (out / 'scenes.jsonl').read_text().splitlines()]
    assert scenes and all(len(scene['objects']) == 1 for scene in scenes)


def test_replay_rejects_values_outside_the_table_ranges(small_bag, tmp_path, capsys):
    bag, recording, _ = small_bag
    argv = ['replay', str(bag), '-o', str(tmp_path / 'o'), '--recording', str(recording)]
    assert cli.main([*argv, '--max-objects', '0', '--quiet']) == cli.EXIT_ERROR
    assert 'max_objects=0: must lie in [1, 1024]' in error_line(capsys)


def test_play_remaps_topics_like_ros2_bag_play(small_bag, rclpy_session, ros_env):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    bag, _, layout = small_bag
    with BagReader(bag) as reader:
        count = reader.topics[layout.resolved_rgb_topic].message_count
    node = rclpy_session.create_node('remap_listener')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    moved: list[int] = []
    node.create_subscription(
        Image, '/robot/front/color/image_raw', lambda m: moved.append(m.header.stamp.sec),
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )  # fmt: skip
    command = [
        sys.executable, '-m', 'spatial_vlm_ros.cli', 'play', str(bag), '--rate', '4',
        '--wait-for-subscribers', '15', '--topics', layout.resolved_rgb_topic,
        '--remap', f'{layout.resolved_rgb_topic}:=/robot/front/color/image_raw',
    ]  # fmt: skip
    env = dict(ros_env, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    player = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        spin_until(executor, lambda: player.poll() is not None, timeout_s=45)
        spin_until(executor, lambda: len(moved) == count, timeout_s=3)
    finally:
        if player.poll() is None:
            player.kill()
        output = player.communicate()[0]
        executor.shutdown()
        node.destroy_node()
    assert player.returncode == 0, output
    assert len(moved) == count
    assert cli.main(['play', str(bag), '--remap', 'no-separator']) == cli.EXIT_ERROR
