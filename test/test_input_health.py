# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Input health from the current state (core/input_health.py), without ROS: rates, missing and
mistyped publishers, lost samples, clock offsets, and levels that recover."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spatial_vlm_ros.core.input_health import (
    ERROR,
    OK,
    WARN,
    PublisherInfo,
    StreamContext,
    StreamMonitor,
    assess_stream,
    similar_topics,
)

S = 1_000_000_000
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA = PublisherInfo('/camera/driver', IMAGE, best_effort=False)
CONTEXT = StreamContext(
    stream='rgb',
    topic='/camera/color/image_raw',
    expected_type=IMAGE,
    publishers=(CAMERA,),
    since_subscribed_s=30.0,
    since_publisher_seen_s=30.0,
)


def stream(monitor: StreamMonitor, start_s: float, seconds: float, rate_hz: float,
           offset_s: float = 0.0, delay_s: float = 0.02) -> float:  # fmt: skip
    """Feed ``seconds`` of a camera at ``rate_hz`` whose stamps are ``offset_s`` behind the
    node clock (plus ``delay_s`` of transport); returns the end time."""
    t = start_s
    while t < start_s + seconds - 1e-9:
        stamp_ns = int((t - offset_s) * S)
        monitor.on_message(stamp_ns, int((t + delay_s) * S), int((t + delay_s) * S))
        t += 1.0 / rate_hz
    return t


@pytest.mark.parametrize('rate_hz', [2.0, 15.0, 30.0])
def test_rate_reads_the_camera_rate_whenever_it_is_asked(rate_hz: float) -> None:
    monitor = StreamMonitor()
    end = stream(monitor, 1000.0, 10.0, rate_hz)
    last_s = end - 1.0 / rate_hz + 0.02  # the arrival of the last frame
    for ask_after_s in (0.0, 0.3 / rate_hz, 0.9 / rate_hz):
        asked_ns = int((last_s + ask_after_s) * S)
        assert monitor.rate_hz(asked_ns) == pytest.approx(rate_hz, rel=0.05)


def test_a_stream_that_stops_becomes_an_error_and_recovers() -> None:
    monitor = StreamMonitor()
    end = stream(monitor, 1000.0, 6.0, 2.0)
    assert assess_stream(monitor, CONTEXT, int(end * S)).level == OK
    later = end + 8.0
    status = assess_stream(monitor, CONTEXT, int(later * S))
    assert status.level == ERROR and 'no message on /camera/color/image_raw for 8 s' in (
        status.message
    )
    end = stream(monitor, later, 3.0, 2.0)
    assert assess_stream(monitor, CONTEXT, int(end * S)).level == OK


def test_no_publisher_is_fine_at_start_then_an_error_listing_similar_topics() -> None:
    monitor = StreamMonitor()
    similar = similar_topics(
        '/color/image_raw',
        [
            ('/camera/color/image_raw/compressed', [COMPRESSED]),
            ('/camera/depth/image_raw', [IMAGE]),
            ('/rosout', ['rcl_interfaces/msg/Log']),
            ('/camera/color/camera_info', ['sensor_msgs/msg/CameraInfo']),
        ],
        (IMAGE, COMPRESSED),
    )
    assert similar[0][0] == '/camera/color/image_raw/compressed'
    assert '/rosout' not in [name for name, _ in similar]
    context = replace(
        CONTEXT, topic='/color/image_raw', publishers=(), since_publisher_seen_s=None,
        similar_topics=similar,
    )  # fmt: skip
    early = assess_stream(monitor, replace(context, since_subscribed_s=1.0), 0)
    assert early.level == OK and 'waiting for a publisher' in early.message
    late = assess_stream(monitor, replace(context, since_subscribed_s=12.0), 0)
    assert late.level == ERROR
    assert late.message.startswith('no publisher on /color/image_raw for 12 s; similar topics: ')
    assert '/camera/color/image_raw/compressed (sensor_msgs/msg/CompressedImage)' in late.message


def test_a_wrong_message_type_is_named_with_the_parameter_to_change() -> None:
    context = replace(CONTEXT, publishers=(PublisherInfo('/cam', COMPRESSED, False),))
    status = assess_stream(StreamMonitor(), context, 0)
    assert status.level == ERROR
    assert 'carries sensor_msgs/msg/CompressedImage (from /cam)' in status.message
    assert 'set image_transport: compressed' in status.message


def test_best_effort_images_that_never_arrive_name_large_data_on_both_sides() -> None:
    context = replace(
        CONTEXT, publishers=(PublisherInfo('/cam', IMAGE, best_effort=True),),
        transports='LARGE_DATA', info_rate_hz=2.0,
    )  # fmt: skip
    status = assess_stream(StreamMonitor(), context, 0)
    assert status.level == ERROR
    assert 'nothing received in 30 s' in status.message
    assert 'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on BOTH sides (this node: LARGE_DATA' in (
        status.message
    )
    # A reliable publisher that sends nothing is not a transport problem.
    quiet = assess_stream(StreamMonitor(), replace(CONTEXT, info_rate_hz=0.0), 0)
    assert quiet.level == ERROR and 'LARGE_DATA' not in quiet.message


def test_images_much_rarer_than_camera_info_are_lost_samples() -> None:
    monitor = StreamMonitor()
    end = stream(monitor, 1000.0, 8.0, 0.5)
    context = replace(
        CONTEXT, publishers=(PublisherInfo('/cam', IMAGE, best_effort=True),), info_rate_hz=2.0
    )
    status = assess_stream(monitor, context, int(end * S))
    assert status.level == WARN and 'large samples are being lost' in status.message


def test_a_recording_played_without_clock_is_a_steady_offset_with_the_remedy() -> None:
    monitor = StreamMonitor()
    eleven_months_s = 11 * 30 * 86400.0
    end = stream(monitor, 1_800_000_000.0, 4.0, 2.0, offset_s=eleven_months_s)
    status = assess_stream(monitor, CONTEXT, int(end * S))
    assert status.level == WARN
    assert status.offset_s == pytest.approx(eleven_months_s, abs=0.1)
    assert "stamps are 28512000.0 s behind this node's clock (steady)" in status.message
    assert 'set use_sim_time:=true and play it with --clock' in status.message
    # Sim time without anyone publishing /clock has its own remedy.
    sim = assess_stream(
        monitor, replace(CONTEXT, use_sim_time=True, clock_running=False), int(end * S)
    )
    assert 'nothing publishes /clock' in sim.message


def test_a_camera_clock_ahead_and_a_drifting_one() -> None:
    monitor = StreamMonitor()
    end = stream(monitor, 1000.0, 4.0, 2.0, offset_s=-30.0)
    ahead = assess_stream(monitor, CONTEXT, int(end * S))
    assert ahead.level == WARN and "30.0 s ahead of this node's clock" in ahead.message
    assert ahead.offset_s == pytest.approx(-30.0, abs=0.1)
    assert 'synchronise the camera' in ahead.message
    drifting = StreamMonitor()
    t = 1000.0
    for index in range(20):  # the offset grows by a second per frame
        drifting.on_message(int((t - 100 - index) * S), int(t * S), int(t * S))
        t += 0.5
    status = assess_stream(drifting, CONTEXT, int(t * S))
    assert status.level == ERROR and 'the offset varies' in status.message
    assert status.offset_s is None


def test_transport_delay_within_the_age_limit_is_fine_and_beyond_it_is_explained() -> None:
    monitor = StreamMonitor()
    end = stream(monitor, 1000.0, 4.0, 2.0, delay_s=0.3)
    assert assess_stream(monitor, CONTEXT, int(end * S)).level == OK
    slow = StreamMonitor()
    end = stream(slow, 1000.0, 4.0, 2.0, delay_s=2.0)
    status = assess_stream(slow, CONTEXT, int(end * S))
    assert status.level == WARN and 'dropped as stale' in status.message


def test_zero_stamps_are_an_error_until_they_stop() -> None:
    monitor = StreamMonitor()
    for index in range(4):
        t = 1000.0 + index * 0.5
        monitor.on_message(0, int(t * S), int(t * S))
    status = assess_stream(monitor, CONTEXT, int(1002.0 * S))
    assert status.level == ERROR and 'zero stamps' in status.message
    end = stream(monitor, 1010.0, 3.0, 2.0)
    assert assess_stream(monitor, CONTEXT, int(end * S)).level == OK


def test_the_monitor_is_read_while_callbacks_write_it() -> None:
    """Subscription callbacks (several executor threads with several cameras) record messages
    while the /diagnostics timer reads the rate on another thread. Reading used to iterate the
    arrivals deque while it changed: RuntimeError in the timer, which ended the node."""
    import threading
    import time

    monitor = StreamMonitor(window_s=0.05)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        stamp = 1
        while not stop.is_set():
            mono = time.monotonic_ns()
            monitor.on_message(stamp, mono, mono)
            stamp += 1

    def read() -> None:
        try:
            while not stop.is_set():
                mono = time.monotonic_ns()
                monitor.rate_hz(mono)
                monitor.events_in_window(mono)
        except BaseException as error:  # noqa: BLE001 - the failure under test
            errors.append(error)
            stop.set()

    threads = [threading.Thread(target=write) for _ in range(2)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [], errors
    assert monitor.received > 1000
