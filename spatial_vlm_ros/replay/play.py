# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Publish a rosbag2 recording into a live ROS 2 graph with its original timing (and /clock).

A small stand-in for ``ros2 bag play`` (rosbag2_py has no PyPI wheel): messages are read with
rosbags and published as their recorded CDR bytes through ``Publisher.publish(bytes)``, so no
message is ever deserialized and re-serialized. rclpy is imported lazily; the rest of the package
works without it.

QoS: RELIABLE (KEEP_LAST ``qos_depth``) by default, because over Fast DDS large images only
arrive reliably between processes with RELIABLE on both ends (docs/REPLAY.md); ``best_effort``
matches subscribers that insist on sensor-data QoS. Topics recorded as TRANSIENT_LOCAL (such as
``/tf_static``) are replayed TRANSIENT_LOCAL so late subscribers still get them.

/clock (``rosgraph_msgs/Clock``) carries the bag time, published before every message and at
``clock_hz`` while waiting, so nodes with ``use_sim_time`` follow the recording.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
import importlib
import logging
import math
from pathlib import Path
import threading
import time
from typing import Any

from rosbags.interfaces import Connection

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.replay.bag_io import BagReader, MissingTopicError

LOGGER = logging.getLogger(__name__)
CLOCK_TOPIC = '/clock'
_DURABILITY_TRANSIENT_LOCAL = 1  # rosbags Qos durability enum value for TRANSIENT_LOCAL


class PlayError(SpatialVlmError):
    """The bag cannot be played (no rclpy, unknown message types, bad options)."""


@dataclass(frozen=True)
class PlayOptions:
    bag: Path
    rate: float = 1.0  # playback speed factor: 2.0 plays twice as fast
    loop: bool = False
    clock: bool = False
    clock_hz: float = 40.0
    best_effort: bool = False
    qos_depth: int = 10
    topics: tuple[str, ...] = ()  # empty: every topic whose type rclpy can import
    # Publish bag topic FROM as TO (``ros2 bag play --remap FROM:=TO``), exact names.
    remap: tuple[tuple[str, str], ...] = ()
    wait_for_subscribers_s: float = 0.0  # wait up to this long for a first subscriber
    # Before exiting, wait up to this long for RELIABLE subscribers to acknowledge what was
    # published: destroying the publisher with samples in flight loses the last messages.
    drain_timeout_s: float = 5.0
    node_name: str = 'spatial_vlm_bag_player'

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise PlayError(f'--rate must be > 0, got {self.rate}')
        if not self.clock_hz > 0:
            raise PlayError(f'clock rate must be > 0, got {self.clock_hz}')
        if self.qos_depth < 1:
            raise PlayError(f'QoS depth must be >= 1, got {self.qos_depth}')
        if not self.drain_timeout_s >= 0:
            raise PlayError(f'drain timeout must be >= 0, got {self.drain_timeout_s}')
        for source, target in self.remap:
            if not source.startswith('/') or not target.startswith('/'):
                raise PlayError(
                    f'--remap takes absolute topic names FROM:=TO, got {source}:={target}'
                )


def parse_remap(rule: str) -> tuple[str, str]:
    """``FROM:=TO`` (as ``ros2 bag play --remap``) -> (FROM, TO)."""
    source, separator, target = rule.partition(':=')
    if not separator or not source or not target:
        raise PlayError(f'--remap takes FROM:=TO, got {rule!r}')
    return source.strip(), target.strip()


@dataclass
class PlayStats:
    published: Counter[str] = field(default_factory=Counter)
    clock_messages: int = 0
    loops: int = 0
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> why
    interrupted: bool = False
    # RELIABLE topics whose last messages were not acknowledged by every subscriber before exit
    unacknowledged_topics: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlaybackTimeline:
    """
    Maps bag time to wall time for one pass.

    Bag ``start_ns`` is played at ``wall_start_s`` and bag time advances ``rate`` times as fast as
    the wall clock.
    """

    start_ns: int
    wall_start_s: float
    rate: float

    def wall_deadline_s(self, stamp_ns: int) -> float:
        return self.wall_start_s + (stamp_ns - self.start_ns) / 1e9 / self.rate

    def bag_time_ns(self, wall_now_s: float) -> int:
        return self.start_ns + round((wall_now_s - self.wall_start_s) * self.rate * 1e9)


def message_class(msgtype: str) -> Any:
    """
    Return the rclpy message class for ``pkg/msg/Name``.

    PlayError when it cannot be imported.
    """
    package, kind, name = msgtype.split('/')
    try:
        module = importlib.import_module(f'{package}.{kind}')
        return getattr(module, name)
    except (ImportError, AttributeError) as error:
        raise PlayError(f'message type {msgtype} is not importable in this environment') from error


def _connection_is_latched(reader: BagReader, connection: Connection) -> bool:
    return (
        any(
            int(qos.durability.value) == _DURABILITY_TRANSIENT_LOCAL
            for qos in reader.offered_qos(connection)
        )
        or connection.topic == '/tf_static'
    )


def play_bag(
    options: PlayOptions,
    *,
    stop: threading.Event | None = None,
    on_published: Callable[[str, int], None] | None = None,
) -> PlayStats:
    """Publish the bag until it ends (or forever with ``loop``), ``stop`` is set, or Ctrl-C."""
    try:
        import rclpy
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
    except ImportError as error:
        raise PlayError(
            f'`play` needs rclpy and rosgraph_msgs ({error}); run `make setup` or source a ROS 2 '
            'installation'
        ) from error

    stop = stop or threading.Event()
    stats = PlayStats()
    with BagReader(options.bag) as reader:
        available = reader.topics
        wanted = list(options.topics) or list(available)
        missing = [topic for topic in wanted if topic not in available]
        if missing:
            raise MissingTopicError(
                f'topics not in the bag: {", ".join(missing)}; it has {", ".join(available)}'
            )
        renamed = dict(options.remap)
        unknown = sorted(set(renamed) - set(available))
        if unknown:
            raise MissingTopicError(
                f'--remap of topics not in the bag: {", ".join(unknown)}; it has '
                f'{", ".join(available)}'
            )
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node(
            options.node_name, context=context, start_parameter_services=False
        )
        try:
            publishers: dict[str, Any] = {}
            for connection in reader.connections(wanted):
                if connection.topic in publishers or connection.topic == CLOCK_TOPIC:
                    continue
                try:
                    cls = message_class(connection.msgtype)
                except PlayError as error:
                    stats.skipped_topics[connection.topic] = str(error)
                    LOGGER.warning('skipping %s: %s', connection.topic, error)
                    continue
                latched = _connection_is_latched(reader, connection)
                qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST,
                    depth=options.qos_depth,
                    reliability=ReliabilityPolicy.BEST_EFFORT
                    if options.best_effort
                    else ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL
                    if latched
                    else DurabilityPolicy.VOLATILE,
                )
                target = renamed.get(connection.topic, connection.topic)
                publishers[connection.topic] = node.create_publisher(cls, target, qos)
            if not publishers:
                raise PlayError('no topic of the bag can be published (see the skipped topics)')
            # rclpy's TimeSource subscribes BEST_EFFORT depth 1; a RELIABLE publisher serves
            # both kinds of subscriber.
            clock_publisher = (
                node.create_publisher(
                    Clock, CLOCK_TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
                )
                if options.clock
                else None
            )
            _wait_for_subscribers(publishers, options.wait_for_subscribers_s, stop)

            def publish_clock(stamp_ns: int) -> None:
                if clock_publisher is None:
                    return
                message = Clock()
                message.clock.sec = int(stamp_ns // 1_000_000_000)
                message.clock.nanosec = int(stamp_ns % 1_000_000_000)
                clock_publisher.publish(message)
                stats.clock_messages += 1

            try:
                while not stop.is_set():
                    _play_once(
                        reader, publishers, options, stop, stats, publish_clock, on_published
                    )
                    stats.loops += 1
                    if not options.loop:
                        break
            except KeyboardInterrupt:
                stats.interrupted = True
            if not stats.interrupted:
                stats.unacknowledged_topics = _drain(
                    publishers, clock_publisher, options.drain_timeout_s
                )
        finally:
            node.destroy_node()
            rclpy.try_shutdown(context=context)
    return stats


def _drain(publishers: dict[str, Any], clock_publisher: Any, timeout_s: float) -> list[str]:
    """
    Wait until RELIABLE subscribers have acknowledged every published message.

    Bounded by ``timeout_s`` in all; returns the topics that still had messages in flight.
    """
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout_s
    pending = list(publishers.items())
    if clock_publisher is not None:
        pending.append((CLOCK_TOPIC, clock_publisher))
    unacknowledged = []
    for topic, publisher in pending:
        left_s = max(0.0, deadline - time.monotonic())
        # Returns at once for BEST_EFFORT publishers, which get no acknowledgements.
        if not publisher.wait_for_all_acked(Duration(nanoseconds=round(left_s * 1e9))):
            unacknowledged.append(topic)
    if unacknowledged:
        LOGGER.warning(
            'not acknowledged within %.1f s, the last messages may be lost: %s',
            timeout_s,
            ', '.join(unacknowledged),
        )
    return unacknowledged


def _wait_for_subscribers(
    publishers: dict[str, Any], timeout_s: float, stop: threading.Event
) -> None:
    if timeout_s <= 0:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if any(publisher.get_subscription_count() > 0 for publisher in publishers.values()):
            return
        time.sleep(0.05)
    LOGGER.warning('no subscriber appeared within %.1f s; playing anyway', timeout_s)


def _play_once(
    reader: BagReader,
    publishers: dict[str, Any],
    options: PlayOptions,
    stop: threading.Event,
    stats: PlayStats,
    publish_clock: Callable[[int], None],
    on_published: Callable[[str, int], None] | None,
) -> None:
    timeline = PlaybackTimeline(reader.start_ns, time.monotonic(), options.rate)
    clock_period_s = 1.0 / options.clock_hz
    next_clock_s = timeline.wall_start_s if options.clock else math.inf
    for connection, stamp_ns, raw in reader.raw_messages(list(publishers)):
        deadline_s = timeline.wall_deadline_s(stamp_ns)
        while True:
            if stop.is_set():
                return
            now_s = time.monotonic()
            if now_s >= deadline_s:
                break
            if now_s >= next_clock_s:
                publish_clock(min(timeline.bag_time_ns(now_s), stamp_ns))
                next_clock_s = now_s + clock_period_s
            time.sleep(max(0.0, min(deadline_s, next_clock_s) - now_s))
        publish_clock(stamp_ns)
        publishers[connection.topic].publish(bytes(raw))
        stats.published[connection.topic] += 1
        if on_published is not None:
            on_published(connection.topic, stamp_ns)
