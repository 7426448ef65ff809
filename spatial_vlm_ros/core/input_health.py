# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Is an input stream healthy, and if not, why and what to change? Pure and ROS-free.

The node feeds a :class:`StreamMonitor` per input (every message: its stamp and arrival time)
and asks :func:`assess_stream` for a level and a one-line reason from the current state, which
is what ``/diagnostics`` shows. Levels follow diagnostic_updater (OK 0, WARN 1, ERROR 2) and are
computed from recent windows, so they recover as soon as the cause goes away.

Clock offsets: the median of (arrival time - stamp) over the last messages estimates the camera
clock's offset from the node's (plus transport delay). An offset far beyond ``max_frame_age_s``
that stays steady (a bag played without ``--clock``, a driver stamping with device time, an
unsynchronised second machine) is reported with the measured value and the remedy, and the node
keeps working by measuring staleness from arrival time instead of the stamp.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
import difflib
import statistics
import threading

OK, WARN, ERROR = 0, 1, 2

GRACE_S = 5.0  # after subscribing (or a publisher appearing) before silence is an error
FREQUENCY_WINDOW_S = 5.0
DELAY_SAMPLES = 20
# An offset is a clock problem, not transport delay, beyond both of these.
OFFSET_MIN_S = 5.0
OFFSET_AGE_FACTOR = 5.0
FUTURE_TOLERANCE_S = 0.5  # stamps this far ahead of the node clock are clock skew, not physics
STEADY_SPREAD_S = 0.5  # delays within this band (p90 - p10) make an offset steady
RECORDING_AGE_S = 3600.0  # stamps this old are from a recording, not a live clock


@dataclass(frozen=True)
class PublisherInfo:
    """One publisher on a topic, as the ROS graph reports it."""

    node: str
    type_name: str  # e.g. sensor_msgs/msg/Image
    best_effort: bool


@dataclass(frozen=True)
class ClockOffset:
    """Estimated (arrival - stamp) of a stream, seconds."""

    offset_s: float  # median
    spread_s: float  # p90 - p10
    samples: int

    @property
    def steady(self) -> bool:
        return self.samples >= 5 and self.spread_s <= STEADY_SPREAD_S

    def significant(self, max_frame_age_s: float) -> bool:
        """Far beyond what transport delay explains: the clocks disagree."""
        return self.offset_s < -FUTURE_TOLERANCE_S or self.offset_s > max(
            OFFSET_MIN_S, OFFSET_AGE_FACTOR * max_frame_age_s
        )


def clock_offset(delays_s: Sequence[float]) -> ClockOffset | None:
    if not delays_s:
        return None
    ordered = sorted(delays_s)
    low = ordered[int(0.1 * (len(ordered) - 1))]
    high = ordered[int(round(0.9 * (len(ordered) - 1)))]
    return ClockOffset(statistics.median(ordered), high - low, len(ordered))


def clock_remedy(offset: ClockOffset, use_sim_time: bool, clock_running: bool) -> str:
    """Say in one sentence what to change when a stream's stamps disagree with the node clock."""
    if use_sim_time and not clock_running:
        return (
            'use_sim_time is true but nothing publishes /clock: play the bag with --clock '
            '(ros2 bag play --clock, spatial-vlm play --clock) or set use_sim_time false'
        )
    if offset.offset_s > RECORDING_AGE_S and not use_sim_time:
        return (
            'the stamps look like a recording: set use_sim_time:=true and play it with --clock '
            '(ros2 bag play --clock, spatial-vlm play --clock)'
        )
    return (
        "synchronise the camera's clock with this machine (chrony/PTP), or have the driver "
        'stamp with the ROS clock'
    )


class StreamMonitor:
    """
    Arrival and stamp statistics of one input stream.

    Thread-safe: subscription callbacks write while the /diagnostics timer reads, on other
    executor threads.

    ``now_ns`` values are the node clock (stamps are compared with it); ``mono_ns`` values are a
    steady clock (rates are measured with it, as diagnostic_updater's FrequencyStatus does).
    """

    def __init__(self, window_s: float = FREQUENCY_WINDOW_S) -> None:
        self.window_s = window_s
        self.received = 0
        self.zero_stamps = 0
        self._arrivals: deque[tuple[int, int]] = deque()  # (mono_ns, stamp_ns) of recent ones
        self._delays_s: deque[float] = deque(maxlen=DELAY_SAMPLES)
        self._zero_stamp_mono: deque[int] = deque(maxlen=8)
        self.last_mono_ns: int | None = None
        # Readers iterate the deques: a writer in between raised "deque mutated during
        # iteration" in the diagnostics timer, which ended the node.
        self._lock = threading.Lock()

    def on_message(self, stamp_ns: int, now_ns: int, mono_ns: int) -> None:
        with self._lock:
            self.received += 1
            self.last_mono_ns = mono_ns
            self._arrivals.append((mono_ns, stamp_ns))
            self._trim(mono_ns)
            if stamp_ns <= 0:
                self.zero_stamps += 1
                self._zero_stamp_mono.append(mono_ns)
            elif now_ns > 0:
                self._delays_s.append((now_ns - stamp_ns) / 1e9)

    def reset_clock(self) -> None:
        """Forget the stamp delays (the clock or the stamps jumped)."""
        with self._lock:
            self._delays_s.clear()

    def _trim(self, mono_ns: int) -> None:
        """Forget arrivals older than the window (the caller holds the lock)."""
        horizon = mono_ns - int(self.window_s * 1e9)
        while self._arrivals and self._arrivals[0][0] < horizon:
            self._arrivals.popleft()

    def _recent(self, mono_ns: int) -> list[tuple[int, int]]:
        with self._lock:
            self._trim(mono_ns)
            return list(self._arrivals)

    def events_in_window(self, mono_ns: int) -> int:
        return len(self._recent(mono_ns))

    def rate_hz(self, mono_ns: int) -> float:
        """
        Messages per second over the window.

        Measured between the stamps of the messages that arrived in the window (the camera's
        own spacing), so that transport jitter (reliable retransmissions arrive in bursts) and
        the report period do not distort it; by arrival times when stamps are unusable. Silence
        since the last message counts once it is longer than a typical gap.
        """
        arrivals = self._recent(mono_ns)
        count = len(arrivals)
        if count < 2:
            return count / self.window_s
        stamps = sorted({stamp for _, stamp in arrivals if stamp > 0})
        if len(stamps) >= 2:
            intervals, span_s = len(stamps) - 1, (stamps[-1] - stamps[0]) / 1e9
        else:
            intervals = count - 1
            span_s = (arrivals[-1][0] - arrivals[0][0]) / 1e9
        if span_s <= 0:
            return 0.0
        gap_s = (mono_ns - arrivals[-1][0]) / 1e9
        typical_s = span_s / intervals
        if gap_s > typical_s:
            span_s += gap_s - typical_s
        return intervals / span_s

    def seconds_since_last(self, mono_ns: int) -> float | None:
        if self.last_mono_ns is None:
            return None
        return (mono_ns - self.last_mono_ns) / 1e9

    def zero_stamps_recent(self, mono_ns: int) -> bool:
        horizon = mono_ns - int(self.window_s * 1e9)
        with self._lock:
            return any(t >= horizon for t in self._zero_stamp_mono)

    def delays(self) -> list[float]:
        with self._lock:
            return list(self._delays_s)

    def clock(self) -> ClockOffset | None:
        return clock_offset(self.delays())


@dataclass(frozen=True)
class StreamContext:
    """What the node knows about one input besides its monitor, for :func:`assess_stream`."""

    stream: str  # rgb | depth | info
    topic: str  # fully qualified
    expected_type: str  # e.g. sensor_msgs/msg/Image
    publishers: tuple[PublisherInfo, ...]
    similar_topics: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, types)
    since_subscribed_s: float = 0.0
    since_publisher_seen_s: float | None = None  # None: no publisher seen yet
    qos_problem: str = ''  # an explicit input_qos that a publisher cannot satisfy
    transports: str = 'DEFAULT'  # this node's FASTDDS_BUILTIN_TRANSPORTS
    transport_probe: str = ''  # what a probe with the other transports found ('' = nothing)
    max_frame_age_s: float = 1.0
    use_sim_time: bool = False
    clock_running: bool = True
    info_rate_hz: float = 0.0  # the camera_info rate of the same camera (for image streams)


@dataclass(frozen=True)
class StreamStatus:
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)
    offset_s: float | None = None  # set when frames must be aged by arrival time


def _hint_for_type(context: StreamContext, found: Sequence[str]) -> str:
    if context.stream == 'rgb' and 'sensor_msgs/msg/CompressedImage' in found:
        return 'set image_transport: compressed (and the base topic as color_topic)'
    if context.stream == 'depth' and 'sensor_msgs/msg/CompressedImage' in found:
        return 'set depth_image_transport: compressedDepth (and the base topic as depth_topic)'
    if 'sensor_msgs/msg/Image' in found and context.expected_type.endswith('CompressedImage'):
        stream_parameter = (
            'image_transport' if context.stream == 'rgb' else 'depth_image_transport'
        )
        return f'set {stream_parameter}: raw, or point the topic at the compressed one'
    return f'point the topic at one of type {context.expected_type}'


def _similar(context: StreamContext) -> str:
    if not context.similar_topics:
        return ''
    listed = ', '.join(f'{name} ({", ".join(types)})' for name, types in context.similar_topics)
    return f'; similar topics: {listed}'


def assess_stream(monitor: StreamMonitor, context: StreamContext, mono_ns: int) -> StreamStatus:
    """Level and reason for one input from the current state (see the module docstring)."""
    rate = monitor.rate_hz(mono_ns)
    since_last = monitor.seconds_since_last(mono_ns)
    clock = monitor.clock()
    values = {
        'topic': context.topic,
        'type': context.expected_type,
        'publishers': str(len(context.publishers)),
        'Events in window': str(monitor.events_in_window(mono_ns)),
        'Events since startup': str(monitor.received),
        'Duration of window (s)': f'{monitor.window_s:.1f}',
        'Actual frequency (Hz)': f'{rate:.2f}',
    }
    delays = monitor.delays()
    if delays:
        values['Earliest timestamp delay:'] = f'{min(delays):.3f}'
        values['Latest timestamp delay:'] = f'{max(delays):.3f}'
    if clock is not None:
        values['clock offset (s)'] = f'{clock.offset_s:.3f}'

    types = sorted({p.type_name for p in context.publishers})
    if not context.publishers:
        if context.since_subscribed_s < GRACE_S:
            return StreamStatus(OK, f'waiting for a publisher on {context.topic}', values)
        message = f'no publisher on {context.topic} for {context.since_subscribed_s:.0f} s'
        if context.transport_probe:
            message += f'; {context.transport_probe}'
        return StreamStatus(ERROR, message + _similar(context), values)
    if context.expected_type not in types:
        owners = ', '.join(p.node for p in context.publishers)
        return StreamStatus(
            ERROR,
            f'{context.topic} carries {", ".join(types)} (from {owners}) but this node expects '
            f'{context.expected_type}: {_hint_for_type(context, types)}',
            values,
        )
    if context.qos_problem:
        return StreamStatus(ERROR, f'{context.topic}: {context.qos_problem}', values)
    since_publisher = context.since_publisher_seen_s or 0.0
    large = context.expected_type.endswith(('/Image', '/CompressedImage'))
    best_effort = any(p.best_effort for p in context.publishers)
    loss_fix = (
        'best-effort large samples are lost between processes on default Fast DDS transports: '
        'set FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA on BOTH sides (this node: '
        f'{context.transports}; launch: large_data_transport:=true) or publish RELIABLE'
    )
    if monitor.received == 0:
        if since_publisher < GRACE_S:
            return StreamStatus(OK, f'waiting for the first message on {context.topic}', values)
        message = (
            f'{len(context.publishers)} publisher(s) on {context.topic} but nothing received '
            f'in {since_publisher:.0f} s'
        )
        if large and best_effort:
            message += f': {loss_fix}'
        elif context.stream != 'info' and context.info_rate_hz > 0 and large:
            message += (
                f': camera_info arrives ({context.info_rate_hz:.1f} Hz), so large samples are '
                f'being lost; {loss_fix}'
            )
        else:
            message += ': is the publisher publishing (a driver waiting for a trigger)?'
        return StreamStatus(ERROR, message, values)
    stale_after_s = max(3.0, 3.0 / rate) if rate > 0 else 3.0
    if since_last is not None and since_last > max(stale_after_s, GRACE_S):
        return StreamStatus(ERROR, f'no message on {context.topic} for {since_last:.0f} s', values)
    if (
        large
        and context.stream != 'info'
        and context.info_rate_hz > 1.0
        and rate < 0.5 * context.info_rate_hz
    ):
        return StreamStatus(
            WARN,
            f'{context.topic} arrives at {rate:.1f} Hz while camera_info arrives at '
            f'{context.info_rate_hz:.1f} Hz: large samples are being lost; {loss_fix}',
            values,
        )
    if monitor.zero_stamps_recent(mono_ns):
        return StreamStatus(
            ERROR, f'{context.topic}: zero stamps: the driver must set header.stamp', values
        )
    if clock is not None and clock.significant(context.max_frame_age_s):
        direction = 'behind' if clock.offset_s > 0 else 'ahead of'
        remedy = clock_remedy(clock, context.use_sim_time, context.clock_running)
        offset_text = f'{abs(clock.offset_s):.1f} s {direction}'
        if clock.steady:
            return StreamStatus(
                WARN,
                f"{context.topic}: stamps are {offset_text} this node's clock (steady): frames "
                f'are aged by arrival time instead; {remedy}',
                values,
                offset_s=clock.offset_s,
            )
        return StreamStatus(
            ERROR,
            f"{context.topic}: stamps are {offset_text} this node's clock and the offset "
            f'varies by {clock.spread_s:.1f} s: frames are dropped; {remedy}',
            values,
        )
    if clock is not None and clock.offset_s > context.max_frame_age_s:
        return StreamStatus(
            WARN,
            f'{context.topic}: messages arrive {clock.offset_s:.2f} s after their stamp, more '
            f'than max_frame_age_s ({context.max_frame_age_s} s): frames are dropped as stale '
            '(slow transport, or a small clock offset: synchronise the clocks)',
            values,
        )
    return StreamStatus(OK, f'{rate:.1f} Hz', values)


def similar_topics(
    wanted: str, topics: Sequence[tuple[str, Sequence[str]]], image_like: Sequence[str]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """
    Up to 3 topics of image-like types whose names resemble ``wanted``, best first.

    Those that contain its last two name components (``color/image_raw``), then its last one, then
    by string similarity.
    """
    parts = wanted.strip('/').split('/')
    tail, leaf = '/'.join(parts[-2:]), parts[-1]

    def ratio(name: str) -> float:
        return difflib.SequenceMatcher(None, wanted, name).ratio()

    candidates = [
        (name, tuple(types))
        for name, types in topics
        if name != wanted
        and any(t in image_like for t in types)
        and (leaf in name or ratio(name) >= 0.6)
    ]
    candidates.sort(key=lambda item: (tail not in item[0], leaf not in item[0], -ratio(item[0])))
    return tuple(candidates[:3])
