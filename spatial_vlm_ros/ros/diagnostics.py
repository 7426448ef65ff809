# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What the node reports: errors counted by kind (logged at most every 5 s per kind), scene
latencies, and the ``/diagnostics`` status assembled from them."""

from __future__ import annotations

from collections import Counter, deque
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np

LOG_PERIOD_S = 5.0  # one log line per kind of error at most this often


class ErrorLog:
    """Errors counted by kind; the newest is kept for /diagnostics; logs are rate-limited."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last_error = ''
        self._last_logged_s: dict[str, float] = {}
        self._tracebacks_logged: set[tuple[str, str]] = set()

    def report(self, kind: str, message: str) -> None:
        """Count, keep for /diagnostics, and log at most every LOG_PERIOD_S per kind."""
        now_s = time.monotonic()
        with self._lock:
            self.counts[kind] += 1
            self.last_error = f'[{kind}] {message}'
            log_it = now_s - self._last_logged_s.get(kind, -1e9) >= LOG_PERIOD_S
            if log_it:
                self._last_logged_s[kind] = now_s
        if log_it:
            self._logger.warning(f'[{kind}] {message}')

    def report_exception(self, kind: str, error: BaseException) -> None:
        """An unexpected exception at a callback boundary: counted like any error, and its
        traceback logged once per kind and exception type (it is a bug, not bad input)."""
        key = (kind, type(error).__name__)
        with self._lock:
            first = key not in self._tracebacks_logged
            self._tracebacks_logged.add(key)
        if first:
            trace = ''.join(traceback.format_exception(error))
            self._logger.error(f'[{kind}] unexpected {type(error).__name__}: {error}\n{trace}')
        self.report(kind, f'{type(error).__name__}: {error}')

    def snapshot(self) -> tuple[dict[str, int], str]:
        with self._lock:
            return dict(self.counts), self.last_error


class DiagnosticsReporter:
    """Collects scene latencies and errors; builds the node's DiagnosticArray."""

    def __init__(self, node_name: str, logger: Any) -> None:
        self._node_name = node_name
        self.errors = ErrorLog(logger)
        self._lock = threading.Lock()
        self._latencies_ms: deque[float] = deque(maxlen=200)

    def record_latency(self, latency_ms: float) -> None:
        with self._lock:
            self._latencies_ms.append(latency_ms)

    def build(self, values: dict[str, str], stamp: Any) -> DiagnosticArray:
        """One status: level WARN when any error was ever reported, else OK."""
        with self._lock:
            latencies = list(self._latencies_ms)
        errors, last_error = self.errors.snapshot()
        merged: dict[str, str] = {
            'latency_p50_ms': f'{np.percentile(latencies, 50):.1f}' if latencies else 'n/a',
            'latency_p95_ms': f'{np.percentile(latencies, 95):.1f}' if latencies else 'n/a',
            'last_error': last_error,
            **values,
        }
        merged.update({f'errors.{k}': str(v) for k, v in errors.items()})
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if last_error else DiagnosticStatus.OK,
            name=f'{self._node_name}: pipeline',
            hardware_id=self._node_name,
            message=last_error or 'ok',
            values=[KeyValue(key=key, value=value) for key, value in merged.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = stamp
        return array
