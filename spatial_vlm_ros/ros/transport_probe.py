# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Find publishers this node cannot see because they use other Fast DDS builtin transports.

Measured here (docs/NODE.md, "Transports"): with the default discovery range, a participant with
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` and one with the default transports do not discover
each other at all; to this node, a camera driver started the other way looks like "no
publisher". When an input has had no publisher for a while, a short-lived probe participant
(its own rclpy Context) with the other transports looks for the input topics; a hit names the
cause and the fix. Runs on its own thread and never touches the node's participant.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import threading
import time

TRANSPORTS_VARIABLE = 'FASTDDS_BUILTIN_TRANSPORTS'
PROBE_TIME_S = 6.0  # discovery of an existing publisher took 0.1-2.7 s in our measurements


def node_transports() -> str:
    """Return this process's Fast DDS builtin transports (DEFAULT when the variable is unset)."""
    return os.environ.get(TRANSPORTS_VARIABLE, '').strip() or 'DEFAULT'


def probe_applies() -> bool:
    """Only Fast DDS has builtin transports to disagree about."""
    rmw = os.environ.get('RMW_IMPLEMENTATION', '').strip()
    return rmw in ('', 'rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp')


def other_transports(mine: str) -> str:
    return 'DEFAULT' if mine.upper() == 'LARGE_DATA' else 'LARGE_DATA'


_ENVIRONMENT_LOCK = threading.Lock()


def find_publishers_with(
    transports: str, topics: Sequence[str], domain_id: int | None = None
) -> dict[str, list[str]]:
    """Topic -> publisher type names seen by a probe participant using ``transports``."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    with _ENVIRONMENT_LOCK:
        # Fast DDS reads the variable when the participant is created; restore it at once.
        previous = os.environ.get(TRANSPORTS_VARIABLE)
        os.environ[TRANSPORTS_VARIABLE] = transports
        try:
            rclpy.init(context=context, domain_id=domain_id)
            node = rclpy.create_node(
                f'spatial_vlm_transport_probe_{os.getpid()}',
                context=context,
                start_parameter_services=False,
                enable_rosout=False,
            )
        finally:
            if previous is None:
                os.environ.pop(TRANSPORTS_VARIABLE, None)
            else:
                os.environ[TRANSPORTS_VARIABLE] = previous
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    found: dict[str, list[str]] = {}
    try:
        deadline = time.monotonic() + PROBE_TIME_S
        while time.monotonic() < deadline and len(found) < len(topics):
            executor.spin_once(timeout_sec=0.1)
            for topic in topics:
                publishers = node.get_publishers_info_by_topic(topic)
                if publishers:
                    found[topic] = sorted({info.topic_type for info in publishers})
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return found


class TransportProbe:
    """Runs :func:`find_publishers_with` once on a thread; ``result`` then says what it found."""

    def __init__(self, topics: Sequence[str], domain_id: int | None = None) -> None:
        self.mine = node_transports()
        self.other = other_transports(self.mine)
        self.topics = tuple(topics)
        self.found: dict[str, list[str]] | None = None
        self.error = ''
        self._thread = threading.Thread(
            target=self._run, args=(domain_id,), name='spatial_vlm_transport_probe', daemon=True
        )
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _run(self, domain_id: int | None) -> None:
        try:
            self.found = find_publishers_with(self.other, self.topics, domain_id)
        except Exception as error:  # noqa: BLE001 - a diagnostic aid must never hurt the node
            self.error = f'{type(error).__name__}: {error}'
            self.found = {}

    def finding(self, topic: str) -> str:
        """One sentence for ``topic`` ('' while running or when nothing was found)."""
        if self.found is None or topic not in self.found:
            return ''
        return (
            f'a publisher of {", ".join(self.found[topic])} on {topic} IS visible with '
            f'FASTDDS_BUILTIN_TRANSPORTS={self.other} while this node uses {self.mine}: '
            'participants with different builtin transports do not discover each other; set '
            'the same value on both sides (launch: large_data_transport:=true for LARGE_DATA)'
        )

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
