# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Several cameras on one node, without DDS: the ``cameras`` setting (names, validation, topics),
and what is kept per camera so that cameras with equal stamps (a hardware-synchronised rig) are
never mixed up: decoded frames (the annotated image), the services' frames and scenes."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_vlm_ros import pipeline as pipeline_module
from spatial_vlm_ros.core.pairing import RgbdSet, Stamped
from spatial_vlm_ros.core.types import CameraIntrinsics, Scene
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.replay import msgs
from spatial_vlm_ros.settings import camera_namespaces, defaults, validate

WIDTH, HEIGHT = 64, 48
STAMP = 1_767_225_600_000_000_000


def camera_set(camera: str, grey: int, stamp_ns: int = STAMP) -> RgbdSet:
    frame = f'{camera or "camera"}_color_optical_frame'
    rgb = np.full((HEIGHT, WIDTH, 3), grey, dtype=np.uint8)
    depth = np.full((HEIGHT, WIDTH), 1500, dtype=np.uint16)
    intrinsics = CameraIntrinsics(50.0, 50.0, 31.5, 23.5, WIDTH, HEIGHT)
    return RgbdSet(
        Stamped(stamp_ns, msgs.image_msg(stamp_ns, frame, rgb, 'rgb8')),
        Stamped(stamp_ns, msgs.image_msg(stamp_ns, frame, depth)),
        Stamped(stamp_ns, msgs.camera_info_msg(stamp_ns, frame, intrinsics)),
        camera=camera,
    )


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    'given, expected',
    [
        ({}, {'': ''}),
        ({'camera_namespace': '/camera'}, {'': '/camera'}),
        ({'cameras': ['']}, {'': ''}),
        ({'cameras': []}, {'': ''}),
        ({'cameras': ['/front']}, {'': '/front'}),  # one camera: single-camera topics
        (
            {'cameras': ['/front', 'rear/', '/robot/left']},
            {'front': '/front', 'rear': 'rear/', 'robot/left': '/robot/left'},
        ),
    ],
)
def test_camera_names_and_namespaces(given: dict, expected: dict[str, str]) -> None:
    assert validate(given) == []
    assert camera_namespaces(given) == expected


@pytest.mark.parametrize(
    'given, problem',
    [
        ({'cameras': ['/front', '2nd']}, "'2nd' is not a namespace"),
        ({'cameras': ['/front', 'a b']}, "'a b' is not a namespace"),
        ({'cameras': ['/front', '//rear']}, "'//rear' is not a namespace"),
        ({'cameras': ['/front', 'front/']}, 'front listed twice'),
        ({'cameras': ['/front', '/rear'], 'camera_namespace': '/cam'}, 'not both'),
    ],
)
def test_bad_camera_lists_are_refused_with_the_fix(given: dict, problem: str) -> None:
    problems = validate(given)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_default_is_one_camera_with_the_single_camera_topics() -> None:
    from spatial_vlm_ros.ros.inputs import InputTopics, camera_topics
    from spatial_vlm_ros.ros.outputs import output_prefix

    values = defaults()
    assert camera_topics(values) == {'': InputTopics.from_values(values)}
    assert output_prefix('') == '~/'
    several = camera_topics({**values, 'cameras': ['/front', 'rear'], 'depth_topic': 'd'})
    assert {name: topics.namespace for name, topics in several.items()} == {
        'front': '/front',
        'rear': 'rear',
    }
    assert several['rear'].streams()['depth'][1] == 'rear/d'
    assert output_prefix('front') == '~/front/'


# ----------------------------------------------------------------------------- per camera


def test_decoded_frames_are_kept_per_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cameras, equal stamps: each one's annotated image is drawn on its own colour image,
    from the frame decoded for its scene (not decoded again)."""
    pipeline = SpatialPipeline(None, '', PipelineConfig())  # type: ignore[arg-type]
    left, right = camera_set('left', 90), camera_set('right', 160)
    pipeline.decode_with_warnings(left)
    pipeline.decode_with_warnings(right)
    decoded: list[object] = []
    monkeypatch.setattr(pipeline_module, 'decode_color_any', decoded.append)
    assert int(pipeline.rgb_of(left)[0, 0, 0]) == 90
    assert int(pipeline.rgb_of(right)[0, 0, 0]) == 160
    assert decoded == []


def test_snapshots_keep_frames_and_scenes_per_camera() -> None:
    from spatial_vlm_ros.ros.services import SnapshotBuffer

    snapshots = SnapshotBuffer(frames=2)
    right = camera_set('right', 160)
    snapshots.add_frame(right)
    for index in range(3):  # the left camera runs faster: it must not push the right one out
        snapshots.add_frame(camera_set('left', 90, STAMP + index))
    assert snapshots.frame(STAMP + 2, slop_ns=0).camera == 'left'
    assert snapshots.frame(0, slop_ns=0).camera == 'left'  # the newest to arrive
    snapshots.add_frame(camera_set('left', 90, STAMP + 3))
    assert snapshots.frame(STAMP, slop_ns=0) is right  # left's own STAMP frame is gone
    snapshots.add_frame(camera_set('right', 160, STAMP + 4))
    assert snapshots.frame(0, slop_ns=0).camera == 'right'

    left_scene = Scene(stamp_ns=STAMP, frame_id='left', camera_frame_id='left')
    right_scene = Scene(stamp_ns=STAMP, frame_id='right', camera_frame_id='right')
    snapshots.add_scene(right_scene, 'right')
    snapshots.add_scene(left_scene, 'left')
    assert snapshots.scene_for(right) is right_scene
    assert snapshots.scene_for(camera_set('left', 90)) is left_scene
    assert snapshots.scene_for(camera_set('rear', 0)) is None
    assert snapshots.scenes() == [right_scene, left_scene]
