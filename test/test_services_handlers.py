# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The ~/locate and ~/query handlers (ros/services.py) called directly, on the real pipeline with
the recorded engine: the remembered_candidates seam (the object memory's objects out of view)
and the reply fields that the DDS tests cannot reach without a memory."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_pipeline import ANSWER, FRAME, GROUNDING, STAMP, paired

from spatial_vlm_ros.core.referring import RememberedCandidate
from spatial_vlm_ros.core.tf_buffer import TransformBuffer
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.ros.diagnostics import ErrorLog
from spatial_vlm_ros.ros.services import SnapshotBuffer, SpatialServices
from spatial_vlm_ros.settings import defaults

pytestmark = pytest.mark.ros  # rclpy service types

LAST_SEEN_NS = STAMP - 30 * 10**9
LAPTOP = RememberedCandidate(
    id='laptop_0',
    label='laptop',
    position=np.array([1.0, -0.2, 2.5]),
    covariance=np.diag([4e-4, 9e-4, 1.6e-3]),
    size=np.array([0.3, 0.02, 0.2]),
    last_seen_ns=LAST_SEEN_NS,
    in_view=False,
)


@pytest.fixture
def recorded_pipeline(tmp_path: Path) -> SpatialPipeline:
    """test_pipeline's frame (a mug, a box, a lamp without depth) with its recorded outputs."""
    recording = tmp_path / 'recorded.jsonl'
    lines = [
        {'stamp_ns': STAMP, 'text': GROUNDING},
        {'stamp_ns': STAMP, 'task': 'question', 'text': ANSWER},
    ]
    recording.write_text(''.join(json.dumps(line) + '\n' for line in lines))
    return SpatialPipeline(RecordedEngine(path=recording), 'recorded-test', PipelineConfig())


def services_for(
    pipeline: Any, remembered: list[RememberedCandidate], transforms: Any = None
) -> tuple[Any, list[str]]:
    """SpatialServices around ``pipeline``: the newest frame buffered, work run in place."""
    snapshots = SnapshotBuffer()
    snapshots.add_frame(paired())
    asked: list[str] = []

    def remembered_candidates(frame_id: str) -> list[RememberedCandidate]:
        asked.append(frame_id)
        return remembered

    services = SpatialServices(
        snapshots,
        ErrorLog(logging.getLogger('test_services_handlers')),
        pipeline=lambda: pipeline,
        run_priority=lambda work, deadline: work(),
        transforms=lambda: transforms,
        now_ns=lambda: STAMP,
        parameter=defaults().__getitem__,
        remembered_candidates=remembered_candidates,
    )
    return services, asked


def test_locate_takes_a_remembered_object_out_of_view(recorded_pipeline) -> None:
    from spatial_vlm_ros.srv import LocateObject

    services, asked = services_for(recorded_pipeline, [LAPTOP])
    request = LocateObject.Request(description='the laptop')
    reply = asyncio.run(services.on_locate(request, LocateObject.Response()))
    assert asked == [FRAME]  # asked for remembered objects in the scene's frame
    assert reply.found, reply.reason
    assert (reply.in_view, reply.age_s) == (False, pytest.approx(30.0))
    assert reply.score == pytest.approx(0.9)  # out of view: x 0.9
    assert [(c.id, c.in_view) for c in reply.candidates] == [('laptop_0', False)]
    assert 'last seen 30 s ago' in reply.reason
    assert reply.pose.header.frame_id == FRAME
    assert reply.pose.header.stamp.sec * 10**9 + reply.pose.header.stamp.nanosec == LAST_SEEN_NS
    located = reply.pose.pose.position
    np.testing.assert_allclose((located.x, located.y, located.z), LAPTOP.position)
    np.testing.assert_allclose(reply.position_covariance, LAPTOP.covariance.ravel())
    remembered = reply.object
    assert (remembered.id, remembered.label, remembered.confidence) == ('laptop_0', 'laptop', 0.0)
    assert remembered.range == pytest.approx(np.linalg.norm(LAPTOP.position))
    assert math.isnan(remembered.size.x) and math.isnan(remembered.pose.orientation.w)


def test_a_remembered_look_alike_out_of_view_makes_the_request_ambiguous(
    recorded_pipeline,
) -> None:
    from spatial_vlm_ros.srv import LocateObject

    box_elsewhere = RememberedCandidate(
        'box_7', 'box', np.array([3.0, 0.0, 4.0]), np.eye(3) * 1e-3, None, LAST_SEEN_NS, False
    )
    services, _ = services_for(recorded_pipeline, [box_elsewhere])
    reply = asyncio.run(
        services.on_locate(LocateObject.Request(description='box'), LocateObject.Response())
    )
    # Another box, remembered elsewhere: "box" may mean either; the one in view ranks first.
    assert not reply.found and reply.ambiguous
    assert [(c.id, c.in_view) for c in reply.candidates] == [('box_0', True), ('box_7', False)]
    assert [c.score for c in reply.candidates] == [1.0, pytest.approx(0.9)]
    exact = asyncio.run(
        services.on_locate(LocateObject.Request(description='box_7'), LocateObject.Response())
    )
    assert exact.found and exact.object.id == 'box_7' and not exact.in_view


def test_a_standoff_of_zero_takes_the_node_default(recorded_pipeline) -> None:
    from spatial_vlm_ros.srv import LocateObject

    # The camera 1.2 m above base_link, level, looking along +x (a static transform).
    buffer = TransformBuffer()
    buffer.set_transform('base_link', FRAME, 0, (0.0, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5), True)
    services, _ = services_for(recorded_pipeline, [], buffer)

    def approach(standoff_m: float) -> Any:
        request = LocateObject.Request(
            description='mug',
            target_frame='base_link',
            want_approach_pose=True,
            standoff_m=standoff_m,
        )
        reply = asyncio.run(services.on_locate(request, LocateObject.Response()))
        assert reply.found and reply.has_approach_pose, reply.reason
        mug, goal = reply.pose.pose.position, reply.approach_pose.pose.position
        return math.hypot(goal.x - mug.x, goal.y - mug.y)

    default_m = defaults()['locate_standoff_m']
    # The goal stands the footprint radius plus the standoff from the centroid.
    assert approach(0.0) - approach(default_m) == pytest.approx(0.0, abs=1e-9)
    assert approach(1.5) - approach(default_m) == pytest.approx(1.5 - default_m)
    too_long = LocateObject.Request(description='x' * 513)
    refused = asyncio.run(services.on_locate(too_long, LocateObject.Response()))
    assert not refused.found and refused.reason == 'description must be 1..512 bytes'
