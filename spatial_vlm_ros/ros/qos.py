# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Input QoS: match what the publishers offer, or obey an explicit override, and say so.

A subscription that asks for more than a publisher offers (RELIABLE from a BEST_EFFORT camera
driver, TRANSIENT_LOCAL from a VOLATILE one) silently receives nothing; that is the most common
"no data" report against camera pipelines. ``auto`` picks the strongest policy every publisher
on the topic can satisfy, and the node re-checks when publishers come and go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from spatial_vlm_ros.settings import INPUT_QOS_MODES

QOS_MODES = INPUT_QOS_MODES  # defined once, in the settings table


@dataclass(frozen=True)
class QosChoice:
    reliability: ReliabilityPolicy
    durability: DurabilityPolicy
    note: str  # why, for logs and /diagnostics
    incompatible: bool = False  # an explicit override that some publisher cannot satisfy


def choose_input_qos(
    mode: str,
    publisher_reliability: Sequence[ReliabilityPolicy],
    publisher_durability: Sequence[DurabilityPolicy],
) -> QosChoice:
    """Pick the subscription policies for ``mode`` given the publishers now on the topic."""
    any_best_effort = ReliabilityPolicy.BEST_EFFORT in publisher_reliability
    all_latched = bool(publisher_durability) and all(
        durability == DurabilityPolicy.TRANSIENT_LOCAL for durability in publisher_durability
    )
    durability = DurabilityPolicy.TRANSIENT_LOCAL if all_latched else DurabilityPolicy.VOLATILE
    if mode == 'best_effort':
        return QosChoice(ReliabilityPolicy.BEST_EFFORT, durability, 'best_effort (explicit)')
    if mode == 'reliable':
        if any_best_effort:
            return QosChoice(
                ReliabilityPolicy.RELIABLE,
                durability,
                'reliable (explicit) but a publisher is BEST_EFFORT: it will deliver nothing; '
                'set input_qos to auto or best_effort',
                incompatible=True,
            )
        return QosChoice(ReliabilityPolicy.RELIABLE, durability, 'reliable (explicit)')
    if mode != 'auto':
        raise ValueError(f'input_qos must be one of {QOS_MODES}, got {mode!r}')
    if not publisher_reliability:
        # Nobody publishes yet: BEST_EFFORT accepts either kind of publisher that shows up.
        return QosChoice(
            ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE, 'auto: no publisher yet'
        )
    if any_best_effort:
        return QosChoice(
            ReliabilityPolicy.BEST_EFFORT, durability, 'auto: matched a BEST_EFFORT publisher'
        )
    return QosChoice(ReliabilityPolicy.RELIABLE, durability, 'auto: all publishers RELIABLE')


def input_profile(choice: QosChoice, depth: int = 5) -> QoSProfile:
    """Return a fresh profile (never mutate the shared presets)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=choice.reliability,
        durability=choice.durability,
    )


def output_profile(depth: int = 10) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_profile(depth: int = 1) -> QoSProfile:
    """
    Reliable + transient local.

    A late subscriber gets the newest message (a state topic, e.g. ~/objects). Volatile subscribers
    match it too.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
