# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
What the node reports on ``/diagnostics``, following diagnostic_updater's conventions.

Several named statuses, each ``"<node>: <task>"`` with the node as ``hardware_id``, so that
diagnostic_aggregator and rqt_robot_monitor group and show them:

* ``<node>: engine``: ERROR after a failed configure (published even then) or while engine calls
  fail (unreachable server, timeouts); WARN when some fail or the model output is unusable;
* ``<node>: pipeline``: scenes per second, latency p50/p95 overall and per stage, drops by
  reason; WARN while frames are dropped beyond the newest-frame policy;
* ``<node>: <camera> pipeline``, with several cameras, one per camera: the same for that
  camera's scenes, drops and inputs;
* ``<node>: <topic> topic status``, one per input (rate and stamp-age checks, missing
  publishers with look-alike topics, wrong types, lost samples, clock offsets: see
  ``core/input_health.py``).

Every level is computed from the current state over a recent window, so it recovers when the
cause goes away. Errors are also counted by kind and logged at most every 5 s per kind.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
import math
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np

from spatial_vlm_ros.core.input_health import ERROR, OK, WARN, StreamStatus
from spatial_vlm_ros.core.pairing import RgbdSet
from spatial_vlm_ros.core.scheduling import StampedFrame

LOG_PERIOD_S = 5.0  # one log line per kind of error at most this often
WINDOW_S = 10.0  # levels look at what happened this recently
# Drops beyond the newest-frame policy warn when there are at least this many in the window
# and they are at least this share of the frames dispatched.
DROP_ALARM, DROP_ALARM_SHARE = 3, 0.2
STAGES = ('receive', 'pair', 'queue', 'decode', 'engine', 'lift', 'memory', 'relations', 'publish')
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class ErrorLog:
    """Errors counted by kind; the newest is kept for /diagnostics; logs are rate-limited."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last_error = ''
        self._last_logged_s: dict[str, float] = {}
        self._tracebacks_logged: set[tuple[str, str]] = set()
        self._recent: deque[tuple[float, str]] = deque(maxlen=512)

    def report(self, kind: str, message: str) -> None:
        """Count, keep for /diagnostics, and log at most every LOG_PERIOD_S per kind."""
        now_s = time.monotonic()
        with self._lock:
            self.counts[kind] += 1
            self.last_error = f'[{kind}] {message}'
            self._recent.append((now_s, kind))
            log_it = now_s - self._last_logged_s.get(kind, -1e9) >= LOG_PERIOD_S
            if log_it:
                self._last_logged_s[kind] = now_s
        if log_it:
            self._logger.warning(f'[{kind}] {message}')

    def report_exception(self, kind: str, error: BaseException) -> None:
        """
        Report an unexpected exception at a callback boundary.

        Counted like any error, and its traceback logged once per kind and exception type (it
        is a bug, not bad input).
        """
        key = (kind, type(error).__name__)
        with self._lock:
            first = key not in self._tracebacks_logged
            self._tracebacks_logged.add(key)
        if first:
            trace = ''.join(traceback.format_exception(error))
            self._logger.error(f'[{kind}] unexpected {type(error).__name__}: {error}\n{trace}')
        self.report(kind, f'{type(error).__name__}: {error}')

    def recent(self, window_s: float = WINDOW_S) -> Counter[str]:
        """Errors by kind in the last ``window_s``."""
        horizon = time.monotonic() - window_s
        with self._lock:
            return Counter(kind for when, kind in self._recent if when >= horizon)

    def snapshot(self) -> tuple[dict[str, int], str]:
        with self._lock:
            return dict(self.counts), self.last_error


@dataclass
class EngineState:
    """What the node knows about its engine."""

    kind: str = ''
    model: str = ''
    server_url: str = ''
    configured: bool = False
    configure_error: str = ''
    health_ok: bool | None = None  # the last health probe (None: not probed)
    health_message: str = ''


def health_of(result: Any) -> tuple[bool, str]:
    """
    (healthy, message) from ``VlmEngine.health()``.

    A bool, or a typed health value with a ``level`` (0 = OK) and a ``message`` (and maybe a
    ``fix``).
    """
    if isinstance(result, bool):
        return result, ''
    level = getattr(result, 'level', 0)
    message = str(getattr(result, 'message', ''))
    fix = str(getattr(result, 'fix', '') or '')
    return int(level) == OK, message + (f'; {fix}' if fix else '')


def input_stages_ms(frame: StampedFrame[RgbdSet]) -> dict[str, float]:
    """
    receive, pair and queue milliseconds of one frame (NaN where not recorded).

    receive: image stamp -> the later of its two images arrived (transport and driver delay,
    plus any clock offset); pair: the first image arrived -> the set was complete; queue:
    complete -> taken by the worker (waiting for a free slot or the rate limit).
    """
    paired = frame.frame
    nan = float('nan')
    received, first = paired.received_ns, paired.first_received_ns
    return {
        'receive': nan if received is None else (received - paired.stamp_ns) / 1e6,
        'pair': nan
        if paired.paired_ns is None or first is None
        else (paired.paired_ns - first) / 1e6,
        'queue': frame.queue_ms,
    }


def pipeline_values(
    scheduler: Any, inputs: Any, transforms: Any, camera: str | None = None
) -> dict[str, str]:
    """
    Cumulative counters of the pipeline status (state, scenes, drops, pairing, inputs).

    ``camera`` None: the whole node (``inputs`` the single camera's, or None with several);
    a camera name: that camera's share of the scheduler and its ``inputs``.
    """
    values: dict[str, str] = {'state': 'active' if scheduler is not None else 'inactive'}
    if camera is None:
        values['published_scenes'] = str(scheduler.published if scheduler else 0)
        values['in_flight'] = str(scheduler.in_flight if scheduler else 0)
        values['queue_depth'] = str(scheduler.queue_depth() if scheduler else 0)
        values['tf'] = transforms.status if transforms is not None else 'n/a'
        if scheduler is not None:
            values.update({f'drops.{k}': str(v) for k, v in scheduler.drop_counts().items()})
    elif scheduler is not None:
        lane = scheduler.lanes[camera]
        values['published_scenes'] = str(lane.published)
        values['in_flight'] = str(lane.in_flight)
        values['queue_depth'] = str(scheduler.queue_depth(camera))
        values.update({f'drops.{k}': str(v) for k, v in lane.drop_counts().items()})
    if inputs is not None:
        mono_ns = time.monotonic_ns()
        for stream, monitor in inputs.monitors.items():
            values[f'input_rate_hz.{stream}'] = f'{monitor.rate_hz(mono_ns):.2f}'
            values[f'received.{stream}'] = str(monitor.received)
        pairing = inputs.pairer.stats().as_flat_dict()
        values.update({f'pairing.{k}': str(v) for k, v in pairing.items()})
        values.update({f'qos.{k}': v for k, v in inputs.qos_notes.items()})
        if inputs.clock_offset_ns is not None:
            values['clock_offset_s'] = f'{inputs.clock_offset_ns / 1e9:.3f}'
    return values


class SceneWindow:
    """Published scenes, their latencies and stages, and drops, of the node or one camera."""

    def __init__(self) -> None:
        self.latencies_ms: deque[float] = deque(maxlen=200)
        self.stages: dict[str, deque[float]] = {stage: deque(maxlen=200) for stage in STAGES}
        self.scene_times: deque[float] = deque(maxlen=1000)
        self.drops: deque[tuple[float, str]] = deque(maxlen=1000)
        self.drop_totals: dict[str, int] = {}

    def record_scene(
        self, now_s: float, latency_ms: float, stages_ms: Mapping[str, float]
    ) -> None:
        self.scene_times.append(now_s)
        self.latencies_ms.append(latency_ms)
        for stage, value in stages_ms.items():
            if stage in self.stages and math.isfinite(value):
                self.stages[stage].append(value)

    def record_drop_totals(self, now_s: float, totals: Mapping[str, int]) -> None:
        for reason, total in totals.items():
            new = total - self.drop_totals.get(reason, 0)
            for _ in range(max(0, min(new, 100))):
                self.drops.append((now_s, reason))
            self.drop_totals[reason] = total


class DiagnosticsReporter:
    """
    Collects what happens and builds the node's DiagnosticArray.

    What happens: scenes, stage latencies, engine outcomes, drops.
    """

    def __init__(self, node_name: str, logger: Any) -> None:
        self._node_name = node_name
        self.errors = ErrorLog(logger)
        self.engine = EngineState()
        self._lock = threading.Lock()
        self._node_window = SceneWindow()
        self._camera_windows: dict[str, SceneWindow] = {}  # with several cameras
        self._engine_calls: deque[tuple[float, bool, str]] = deque(maxlen=50)

    # ------------------------------------------------------------------ recording

    def record_scene(
        self, latency_ms: float, stages_ms: Mapping[str, float], camera: str = ''
    ) -> None:
        """
        Record a published scene, its latency and its per-stage breakdown (NaN: not measured).

        Counted for the node and, when named, for its camera.
        """
        now_s = time.monotonic()
        with self._lock:
            self._node_window.record_scene(now_s, latency_ms, stages_ms)
            if camera:
                window = self._camera_windows.setdefault(camera, SceneWindow())
                window.record_scene(now_s, latency_ms, stages_ms)

    def record_engine_call(self, ok: bool, error: str = '') -> None:
        with self._lock:
            self._engine_calls.append((time.monotonic(), ok, error))

    def probe_engine(self, health: Future[Any]) -> None:
        """
        Record the answer of a running ``VlmEngine.health()`` call when it comes.

        The worker runs it, off the executor; it is the engine status on /diagnostics.
        """
        engine = self.engine

        def done(future: Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                engine.health_ok, engine.health_message = False, f'{type(error).__name__}: {error}'
            else:
                engine.health_ok, engine.health_message = health_of(future.result())

        health.add_done_callback(done)

    def record_drop_totals(self, totals: Mapping[str, int], camera: str = '') -> None:
        """
        Record the scheduler's cumulative drop counters (of the node, or of a named camera).

        Increments become windowed events.
        """
        now_s = time.monotonic()
        with self._lock:
            if camera:
                window = self._camera_windows.setdefault(camera, SceneWindow())
            else:
                window = self._node_window
            window.record_drop_totals(now_s, totals)

    def reset_drop_totals(self) -> None:
        with self._lock:
            for window in (self._node_window, *self._camera_windows.values()):
                window.drop_totals = {}

    # ------------------------------------------------------------------ statuses

    def _window(self, camera: str) -> SceneWindow:
        return (
            self._camera_windows.setdefault(camera, SceneWindow())
            if camera
            else (self._node_window)
        )

    def stage_percentiles(self, camera: str = '') -> dict[str, tuple[float, float]]:
        with self._lock:
            window = self._window(camera)
            samples = {stage: list(values) for stage, values in window.stages.items()}
        return {
            stage: (float(np.percentile(values, 50)), float(np.percentile(values, 95)))
            for stage, values in samples.items()
            if values
        }

    def engine_status(self, now_s: float) -> tuple[int, str, dict[str, str]]:
        engine = self.engine
        values = {'engine': engine.kind, 'model': engine.model}
        if engine.server_url and engine.kind == 'openai':
            values['server_url'] = engine.server_url
        if not engine.configured:
            if engine.configure_error:
                return ERROR, f'configure failed: {engine.configure_error}', values
            return OK, 'not configured yet', values
        horizon = now_s - WINDOW_S
        with self._lock:
            calls = [(ok, error) for when, ok, error in self._engine_calls if when >= horizon]
        failed = [error for ok, error in calls if not ok]
        values['calls in window'] = str(len(calls))
        values['failed calls in window'] = str(len(failed))
        if engine.health_ok is False:
            message = engine.health_message
            if engine.kind == 'openai' and not message:
                message = (
                    f'the server at {engine.server_url} does not answer: start the model server '
                    'or fix server_url'
                )
            return ERROR, f'health check failed: {message}', values
        if calls and len(failed) == len(calls) and len(failed) >= 2:
            return ERROR, f'every engine call fails: {failed[-1]}', values
        if failed:
            return WARN, f'{len(failed)} of {len(calls)} engine calls failed: {failed[-1]}', values
        output_errors = self.errors.recent().get('engine_output', 0)
        if output_errors:
            return (
                WARN,
                f'{output_errors} unusable model output(s): {self.errors.last_error}',
                values,
            )
        return OK, f'{engine.kind} engine ok', values

    def pipeline_status(
        self, now_s: float, active: bool, values: dict[str, str], camera: str = ''
    ) -> tuple[int, str, dict[str, str]]:
        """
        Return the pipeline status of the node, or of one named camera.

        Its scenes, latencies and drops; errors and frame problems are on the node's status.
        """
        horizon = now_s - WINDOW_S
        with self._lock:
            window = self._window(camera)
            latencies = list(window.latencies_ms)
            scenes = sum(1 for when in window.scene_times if when >= horizon)
            drops = Counter(reason for when, reason in window.drops if when >= horizon)
        rate = scenes / WINDOW_S
        merged = {
            'scenes per second': f'{rate:.2f}',
            'latency_p50_ms': f'{np.percentile(latencies, 50):.1f}' if latencies else 'n/a',
            'latency_p95_ms': f'{np.percentile(latencies, 95):.1f}' if latencies else 'n/a',
            **values,
        }
        for stage, (p50, p95) in self.stage_percentiles(camera).items():
            merged[f'stage.{stage}_ms.p50'] = f'{p50:.1f}'
            merged[f'stage.{stage}_ms.p95'] = f'{p95:.1f}'
        errors, last_error = self.errors.snapshot()
        if not camera:  # errors are the node's (they name their topic), not split by camera
            merged['last_error'] = last_error
            merged.update({f'errors.{kind}': str(count) for kind, count in errors.items()})
        if not active:
            return OK, 'inactive', merged
        # Superseded frames are the newest-frame policy working, not a problem; a drop now and
        # then (the first frame after a start, a hiccup) is in the values, not an alarm.
        problems = {reason: n for reason, n in drops.items() if reason != 'superseded' and n}
        dropped = sum(problems.values())
        if dropped < DROP_ALARM or dropped < DROP_ALARM_SHARE * (dropped + scenes):
            problems = {}
        recent_errors = {} if camera else self.errors.recent()
        frame_errors = recent_errors.get('frame', 0) + recent_errors.get('input_warning', 0)
        summary = f'{rate:.1f} scenes/s'
        if latencies:
            summary += f', latency p50 {np.percentile(latencies, 50):.0f} ms'
        if problems:
            listed = ', '.join(f'{n} {reason}' for reason, n in sorted(problems.items()))
            return WARN, f'{summary}; dropped in the last {WINDOW_S:.0f} s: {listed}', merged
        if frame_errors:
            return WARN, f'{summary}; {frame_errors} frame problem(s): {last_error}', merged
        return OK, summary, merged

    def build(
        self,
        stamp: Any,
        *,
        active: bool,
        pipeline_values: dict[str, str],
        inputs: Iterable[StreamStatus] = (),
        cameras: Mapping[str, dict[str, str]] | None = None,
    ) -> DiagnosticArray:
        """
        Return the DiagnosticArray.

        ``cameras`` (with several) maps each camera's name to its pipeline values, published as one
        ``<node>: <camera> pipeline`` status each.
        """
        now_s = time.monotonic()
        statuses = []
        for task, (level, message, values) in (
            ('engine', self.engine_status(now_s)),
            ('pipeline', self.pipeline_status(now_s, active, pipeline_values)),
            *(
                (f'{camera} pipeline', self.pipeline_status(now_s, active, values, camera))
                for camera, values in (cameras or {}).items()
            ),
        ):
            statuses.append(self._status(task, level, message, values))
        for stream_status in inputs:
            topic = stream_status.values.get('topic', '?')
            statuses.append(
                self._status(
                    f'{topic} topic status',
                    stream_status.level,
                    stream_status.message,
                    stream_status.values,
                )
            )
        array = DiagnosticArray(status=statuses)
        array.header.stamp = stamp
        return array

    def _status(
        self, task: str, level: int, message: str, values: Mapping[str, str]
    ) -> DiagnosticStatus:
        return DiagnosticStatus(
            level=_LEVELS[level],
            name=f'{self._node_name}: {task}',
            hardware_id=self._node_name,
            message=message,
            values=[KeyValue(key=key, value=value) for key, value in values.items()],
        )
