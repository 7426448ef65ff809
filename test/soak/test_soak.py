# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Soak: the node process under a 30 Hz 1280x720 RGB-D stream with periodic ~/query calls.

The node runs as a user would start it (``spatial_vlm_node`` with config/spatial_vlm.yaml, the
recorded engine), over real DDS, for ``SPATIAL_VLM_SOAK_S`` seconds (default 600). The test
process publishes RGB (rgb8), depth (16UC1) and CameraInfo on a fixed 30 Hz stamp grid (a frame
whose slot has passed is skipped, never sent late) and calls ~/query every 2 s.

Pass criteria: the node's VmRSS (from /proc/<pid>/status) grows by at most 50 MB between the end
of the warm-up and the end of the run; every ~/query call gets a reply, and they succeed; scenes
keep arriving until the end; the node is alive and exits cleanly on SIGINT.

Skipped unless SPATIAL_VLM_SOAK=1 (``make soak`` sets it). Prints a summary (run with -s).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import pytest

from conftest import spin_until
from test_node_dds import (
    ANSWER_TEXT,
    BOX_BOX,
    MUG_BOX,
    RECORDED_TEXT,
    Harness,
    start_node,
    stop_node,
)

SOAK_S = float(os.environ.get('SPATIAL_VLM_SOAK_S', '600'))
WIDTH, HEIGHT = 1280, 720
FX = FY = 910.0
RATE_HZ = 30.0
QUERY_PERIOD_S = 2.0
STARTUP_ALLOWANCE_S = 60.0  # recorded stamps cover node start-up plus the run
MAX_RSS_GROWTH_MB = 50.0
WARMUP_S = min(60.0, SOAK_S / 4)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ros,
    pytest.mark.skipif(
        os.environ.get('SPATIAL_VLM_SOAK') != '1', reason='soak runs only with SPATIAL_VLM_SOAK=1'
    ),
]


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f'no VmRSS for pid {pid}')


def camera_messages() -> tuple[Any, Any, Any]:
    """One 1280x720 frame: the two recorded objects at 1.2 m and 2.0 m before a 3 m wall."""
    from sensor_msgs.msg import CameraInfo, Image

    depth_mm = np.full((HEIGHT, WIDTH), 3000, dtype=np.uint16)
    for box, value in ((MUG_BOX, 1200), (BOX_BOX, 2000)):
        x1, y1, x2, y2 = (
            box[0] * WIDTH // 1000,
            box[1] * HEIGHT // 1000,
            box[2] * WIDTH // 1000,
            box[3] * HEIGHT // 1000,
        )
        mx, my = (x2 - x1) // 6, (y2 - y1) // 6
        depth_mm[y1 + my : y2 - my, x1 + mx : x2 - mx] = value
    depth_mm[::7, ::11] = 0
    frame_id = 'camera_color_optical_frame'
    rgb = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', step=WIDTH * 3)
    rgb.data = np.full((HEIGHT, WIDTH, 3), 90, dtype=np.uint8).tobytes()
    depth = Image(height=HEIGHT, width=WIDTH, encoding='16UC1', step=WIDTH * 2)
    depth.data = depth_mm.tobytes()
    info = CameraInfo(height=HEIGHT, width=WIDTH, distortion_model='plumb_bob')
    cx, cy = (WIDTH - 1) / 2, (HEIGHT - 1) / 2
    info.k = [FX, 0.0, cx, 0.0, FY, cy, 0.0, 0.0, 1.0]
    info.p = [FX, 0.0, cx, 0.0, 0.0, FY, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    for msg in (rgb, depth, info):
        msg.header.frame_id = frame_id
    return rgb, depth, info


def write_recording(path: Path, first_stamp_ns: int, count: int, period_ns: int) -> None:
    with path.open('w') as out:
        for index in range(count):
            stamp = first_stamp_ns + index * period_ns
            out.write(json.dumps({'stamp_ns': stamp, 'text': RECORDED_TEXT}) + '\n')
            out.write(json.dumps({'stamp_ns': stamp, 'task': 'question', 'text': ANSWER_TEXT}))
            out.write('\n')


@pytest.mark.timeout(SOAK_S + STARTUP_ALLOWANCE_S + 240)
def test_soak_rss_flat_and_no_lost_replies(
    ros_env: dict[str, str], rclpy_session: Any, tmp_path: Path
) -> None:
    from rclpy.qos import ReliabilityPolicy

    from spatial_vlm_ros.srv import SpatialQuery

    period_ns = round(1e9 / RATE_HZ)
    grid_start_ns = time.time_ns()
    grid_count = math.ceil((SOAK_S + STARTUP_ALLOWANCE_S + 10) * RATE_HZ)
    recording = tmp_path / 'recorded.jsonl'
    write_recording(recording, grid_start_ns, grid_count, period_ns)
    log_path = tmp_path / 'node.log'
    # Both processes on Fast DDS's default transports (shared memory on one host) and reliable
    # QoS: the combination measured to deliver large images between processes.
    process = start_node(dict(ros_env, FASTDDS_BUILTIN_TRANSPORTS='DEFAULT'), recording, log_path)
    harness = Harness(rclpy_session, ReliabilityPolicy.RELIABLE)
    rgb, depth, info = camera_messages()
    sent_queries: list[Any] = []
    rss_series: list[tuple[float, float]] = []
    published = skipped = 0
    try:
        assert spin_until(
            harness.executor, lambda: harness.rgb_pub.get_subscription_count() > 0, 30.0
        ), log_path.read_text(errors='replace')[-3000:]
        assert harness.query.wait_for_service(timeout_sec=30.0)
        spin_until(harness.executor, lambda: False, 1.5)  # the node re-matches its input QoS

        started = time.monotonic()
        next_query_s = started + QUERY_PERIOD_S
        next_rss_s = started
        rss_after_warmup: float | None = None
        final_stretch_stamp_ns: int | None = None  # first frame of the last 10 % of the run
        index = math.ceil((time.time_ns() - grid_start_ns) / period_ns)
        while time.monotonic() - started < SOAK_S:
            assert index < grid_count, 'ran past the recorded stamps'
            stamp_ns = grid_start_ns + index * period_ns
            wait_s = (stamp_ns - time.time_ns()) / 1e9
            if wait_s > 0:
                spin_until(harness.executor, lambda: False, wait_s, step_s=min(wait_s, 0.005))
            elif wait_s < -1.0 / RATE_HZ:
                skipped += 1  # its slot has passed: stay on the 30 Hz grid
                index += 1
                continue
            stamp = rgb.header.stamp.__class__(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            for msg in (info, depth, rgb):
                msg.header.stamp = stamp
            harness.info_pub.publish(info)
            harness.depth_pub.publish(depth)
            harness.rgb_pub.publish(rgb)
            published += 1
            index += 1
            now_s = time.monotonic()
            if final_stretch_stamp_ns is None and now_s - started >= 0.9 * SOAK_S:
                final_stretch_stamp_ns = stamp_ns
            if now_s >= next_query_s:
                sent_queries.append(
                    harness.query.call_async(SpatialQuery.Request(question='Which is closer?'))
                )
                next_query_s += QUERY_PERIOD_S
            if now_s >= next_rss_s:
                rss_series.append((now_s - started, rss_mb(process.pid)))
                next_rss_s += 10.0
            if rss_after_warmup is None and now_s - started >= WARMUP_S:
                rss_after_warmup = rss_mb(process.pid)
            assert process.poll() is None, 'the node died: ' + log_path.read_text()[-3000:]
        elapsed_s = time.monotonic() - started
        rss_end = rss_mb(process.pid)
        rss_series.append((elapsed_s, rss_end))
        scenes_at_end = len(harness.scenes)
        assert spin_until(harness.executor, lambda: all(f.done() for f in sent_queries), 60.0), (
            f'{sum(not f.done() for f in sent_queries)} of {len(sent_queries)} replies lost'
        )
        replies = [future.result() for future in sent_queries]
        ok = sum(reply.success for reply in replies)
        spin_until(harness.executor, lambda: len(harness.scenes) > scenes_at_end, 5.0)
        scenes_total = len(harness.scenes)
        late_scenes = sum(
            s.header.stamp.sec * 10**9 + s.header.stamp.nanosec >= (final_stretch_stamp_ns or 0)
            for s in harness.scenes
        )
    finally:
        harness.close()
        code = stop_node(process)

    assert rss_after_warmup is not None
    growth = rss_end - rss_after_warmup
    summary = (
        f'soak {elapsed_s:.0f} s at {WIDTH}x{HEIGHT}: frames published {published} '
        f'({published / elapsed_s:.1f} Hz, {skipped} grid slots skipped), scenes received '
        f'{scenes_total} ({scenes_total / elapsed_s:.1f} Hz; {late_scenes} in the last 10 %), '
        f'queries {len(sent_queries)} sent / '
        f'{len(replies)} replied / {ok} succeeded; node VmRSS {rss_after_warmup:.1f} MB after '
        f'{WARMUP_S:.0f} s warm-up -> {rss_end:.1f} MB at the end (growth {growth:+.1f} MB); '
        f'RSS series (s, MB): {[(round(t), round(m, 1)) for t, m in rss_series]}'
    )
    print('\n' + summary)
    report = os.environ.get('SPATIAL_VLM_SOAK_REPORT')
    if report:
        Path(report).write_text(summary + '\n')
    assert code in (0, -2), log_path.read_text(errors='replace')[-3000:]
    assert growth <= MAX_RSS_GROWTH_MB, summary
    assert len(replies) == len(sent_queries) and sent_queries, summary
    assert ok == len(replies), [r.message for r in replies if not r.success][:5]
    assert late_scenes > 0, f'no scenes in the last 10 % of the run; {summary}'
    assert scenes_total >= elapsed_s, summary  # at least 1 Hz of scenes on average
    assert 'Traceback' not in log_path.read_text(errors='replace')
