# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The node's worker: one asyncio event loop on its own thread.

The scheduler, the engine calls and the lifting run here, so a slow model never blocks the rclpy
executor (subscriptions, timers, services, parameters, lifecycle transitions). Service callbacks
are coroutines that await ``ros_future(...)``: they hold no executor thread while they wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
import threading
from typing import Any, TypeVar

from rclpy.task import Future as RosFuture

T = TypeVar('T')


class WorkerLoop:
    """An asyncio loop running on a daemon thread; start() and stop() may be called again."""

    def __init__(self, name: str = 'spatial_vlm_worker') -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """Return the running loop, or None when stopped."""
        return self._loop

    def start(self) -> None:
        """Start the loop thread (no-op when it runs)."""
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self, join_timeout_s: float = 10.0) -> None:
        """Stop the loop and wait for its thread (no-op when stopped)."""
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=join_timeout_s)
        self._loop = None
        self._thread = None

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coroutine`` on the loop from any thread; returns its future."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError('the worker loop is not running')
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """
        Run ``coroutine`` on the loop and wait (blocking this thread) for its result.

        Only for lifecycle transitions (engine start and shutdown), never for services.
        """
        return self.submit(coroutine).result(timeout_s)

    def ros_future(self, coroutine: Coroutine[Any, Any, T], executor: Any) -> RosFuture[T]:
        """
        Run ``coroutine`` on the loop.

        Return an rclpy Future an ``async def`` callback can await without parking an executor
        thread.

        rclpy resumes an awaiting coroutine callback whenever its executor wakes, so the
        worker wakes the executor once the result is there.
        """
        result: RosFuture[T] = RosFuture(executor=executor)

        def finished(done: Future[T]) -> None:
            if done.cancelled():
                # rclpy annotates Exception but raises whatever it is given in the awaiting task.
                cancelled = asyncio.CancelledError('the worker cancelled the request')
                result.set_exception(cancelled)  # type: ignore[arg-type]
            elif done.exception() is not None:
                error = done.exception()
                result.set_exception(error if isinstance(error, Exception) else RuntimeError())
            else:
                result.set_result(done.result())
            if executor is not None:
                executor.wake()

        self.submit(coroutine).add_done_callback(finished)
        return result

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread (no-op when stopped)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(callback, *args)
