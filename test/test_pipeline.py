# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The pipeline glue, without ROS: scene building, lifting of detections, id assignment, error
flags, the parameter-to-settings mapping, and the perceive / snapshot / answer / locate paths
with the recorded engine on messages built by the replay's rosbags types."""

from __future__ import annotations

import asyncio
from dataclasses import FrozenInstanceError, replace
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spatial_vlm_ros import pipeline as pipeline_module
from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.camera import IntrinsicsSource
from spatial_vlm_ros.core.pairing import InfoMode, PairingConfig, RgbdSet, Stamped
from spatial_vlm_ros.core.relations import FULL, RelationConfig
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    apply_transform,
    compose,
    make_transform,
    rotate_covariance,
)
from spatial_vlm_ros.core.types import (
    ABOVE,
    IN_FRONT_OF,
    LEFT_OF,
    CameraIntrinsics,
    Detection,
    PixelBox,
    StageTimings,
)
from spatial_vlm_ros.engines.base import (
    FLAG_NEAREST_STAMP,
    FLAG_NO_RECORDING,
    EngineResponse,
)
from spatial_vlm_ros.engines.parsing import GroundingResult, ParseFailure
from spatial_vlm_ros.engines.profiles import resolve_profile
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import (
    DECODED_FRAMES_KEPT,
    PipelineConfig,
    PipelineSettings,
    SpatialPipeline,
    assign_ids,
    build_scene,
    lift_detections,
)
from spatial_vlm_ros.queries import SOURCE_MODEL_TEXT
from spatial_vlm_ros.replay import msgs

WIDTH, HEIGHT = 160, 120
FX = FY = 130.0
CX, CY = 79.5, 59.5
FRAME = 'camera_color_optical_frame'
STAMP = 1_767_225_600_000_000_000
# Qwen3-VL relative (0-1000) boxes: a mug on the left at 1.2 m, a box on the right at 2 m (the
# box 0.5 m higher), and a lamp over a patch without depth.
MUG = (100, 400, 300, 750)
BOX = (600, 150, 850, 500)
LAMP = (400, 50, 500, 150)
DEPTHS_MM = {MUG: 1200, BOX: 2000}
GROUNDING = json.dumps(
    [
        {'bbox_2d': list(MUG), 'label': 'mug'},
        {'bbox_2d': list(BOX), 'label': 'box'},
        {'bbox_2d': list(LAMP), 'label': 'lamp'},
    ]
)
ANSWER = 'The mug is in front of the box.'
PROFILE = resolve_profile('qwen3-vl')


def pixels(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (x1 * WIDTH // 1000, y1 * HEIGHT // 1000, x2 * WIDTH // 1000, y2 * HEIGHT // 1000)


def depth_mm() -> np.ndarray:
    depth = np.full((HEIGHT, WIDTH), 3000, dtype=np.uint16)  # a wall at 3 m
    for box, value in DEPTHS_MM.items():
        x1, y1, x2, y2 = pixels(box)
        depth[y1:y2, x1:x2] = value
    x1, y1, x2, y2 = pixels(LAMP)
    depth[y1:y2, x1:x2] = 0  # no depth at all
    return depth


def paired(stamp_ns: int = STAMP) -> RgbdSet:
    rgb = np.full((HEIGHT, WIDTH, 3), 80, dtype=np.uint8)
    rgb[:, : WIDTH // 2] = (200, 40, 40)
    intrinsics = CameraIntrinsics(FX, FY, CX, CY, WIDTH, HEIGHT)
    return RgbdSet(
        Stamped(stamp_ns, msgs.image_msg(stamp_ns, FRAME, rgb, 'rgb8')),
        Stamped(stamp_ns + 3_000_000, msgs.image_msg(stamp_ns + 3_000_000, FRAME, depth_mm())),
        Stamped(stamp_ns, msgs.camera_info_msg(stamp_ns, FRAME, intrinsics)),
    )


@pytest.fixture
def recorded_pipeline(tmp_path: Path) -> SpatialPipeline:
    recording = tmp_path / 'recorded.jsonl'
    lines = [
        {'stamp_ns': STAMP, 'text': GROUNDING},
        {'stamp_ns': STAMP, 'task': 'question', 'text': ANSWER},
    ]
    recording.write_text(''.join(json.dumps(line) + '\n' for line in lines))
    return SpatialPipeline(RecordedEngine(path=recording), 'recorded-test', PipelineConfig())


def frame_and_response(text: str = GROUNDING) -> tuple:
    pipeline = SpatialPipeline(None, '', PipelineConfig(), profile=PROFILE)  # type: ignore[arg-type]
    frame, _ = pipeline.decode_with_warnings(paired())
    parsed = GroundingResult(
        detections=tuple(
            Detection(label, PixelBox(*map(float, pixels(box))))
            for label, box in (('mug', MUG), ('box', BOX), ('lamp', LAMP))
        )
    )
    return frame, EngineResponse(text, parsed, engine='recorded', model_id='m')


# ----------------------------------------------------------------------------- perceive


def test_perceive_paired_builds_the_whole_scene_once(recorded_pipeline: SpatialPipeline) -> None:
    now_ns = STAMP + 250_000_000
    scene = asyncio.run(
        recorded_pipeline.perceive_paired(
            paired(), now_ns=now_ns, timings=StageTimings(receive_ms=4.0, queue_ms=1.5)
        )
    )
    assert (scene.stamp_ns, scene.frame_id, scene.camera_frame_id) == (STAMP, FRAME, FRAME)
    assert (scene.engine, scene.model_id, scene.error) == ('recorded', 'recorded-test', '')
    assert [obj.id for obj in scene.objects] == ['box_0', 'lamp_0', 'mug_0']
    assert [obj.id for obj in scene.objects_without_position] == ['lamp_0']
    placed = {obj.id: obj.lifted.position for obj in scene.positioned_objects}
    assert placed['mug_0'][2] == pytest.approx(1.2, abs=0.01)
    assert placed['box_0'][2] == pytest.approx(2.0, abs=0.01)
    relations = {(r.subject, r.predicate, r.object) for r in scene.relations}
    assert relations >= {('mug_0', LEFT_OF, 'box_0'), ('mug_0', IN_FRONT_OF, 'box_0')}
    # Camera view, compact: nothing about above/below, no converses.
    assert all(r.predicate in (LEFT_OF, IN_FRONT_OF, 'near') for r in scene.relations)
    assert scene.latency_ms == pytest.approx(250.0)
    timings = scene.timings
    assert (timings.receive_ms, timings.queue_ms) == (4.0, 1.5)  # the caller's stages kept
    for stage in (timings.decode_ms, timings.engine_ms, timings.lift_ms, timings.relations_ms):
        assert 0.0 <= stage < 60_000.0
    assert math.isnan(timings.pair_ms) and math.isnan(timings.memory_ms)
    assert scene.T_frame_from_camera is None and scene.range_m(scene.objects[2]) > 1.2
    with pytest.raises(FrozenInstanceError):
        scene.latency_ms = 0.0  # type: ignore[misc]


def test_a_frame_without_a_recording_is_an_error_scene(recorded_pipeline) -> None:
    scene = asyncio.run(recorded_pipeline.perceive_paired(paired(STAMP + 1)))
    assert scene.objects == () and FLAG_NO_RECORDING in scene.error


# ----------------------------------------------------------------------------- build_scene


def test_build_scene_flags_unusable_model_output() -> None:
    frame, response = frame_and_response()
    config = PipelineConfig()
    failed = build_scene(frame, replace(response, parsed=ParseFailure('no JSON', 'x')), config)
    assert failed.error == 'model output not usable: no JSON' and failed.objects == ()
    all_invalid = GroundingResult(warnings=('item 0: box is degenerate',))
    invalid = build_scene(frame, replace(response, parsed=all_invalid), config)
    assert invalid.error == 'no usable object in the model output: item 0: box is degenerate'
    nothing = build_scene(frame, replace(response, parsed=GroundingResult()), config)
    assert nothing.error == '' and nothing.objects == ()  # nothing there is not an error
    flagged = build_scene(frame, replace(response, flags=(FLAG_NO_RECORDING,)), config)
    assert flagged.error == FLAG_NO_RECORDING and len(flagged.objects) == 3
    informative = build_scene(frame, replace(response, flags=(FLAG_NEAREST_STAMP,)), config)
    assert informative.error == ''


def test_build_scene_keeps_the_most_confident_objects() -> None:
    frame, response = frame_and_response()
    detections = tuple(
        replace(d, confidence=c)
        for d, c in zip(response.parsed.detections, (0.9, 0.2, 0.5), strict=True)
    )
    parsed = GroundingResult(detections=detections)
    scene = build_scene(frame, replace(response, parsed=parsed), PipelineConfig(max_objects=2))
    assert [obj.label for obj in scene.objects] == ['lamp', 'mug']


def test_build_scene_in_a_target_frame_with_gravity_relations() -> None:
    frame, response = frame_and_response()
    # A level camera 0.8 m above base_link; map has base_link 2 m ahead.
    base_from_camera = compose(make_transform((0.0, 0.0, 0.8)), T_BODY_FROM_OPTICAL)
    map_from_camera = compose(make_transform((2.0, 0.0, 0.0)), base_from_camera)
    config = PipelineConfig(relations=RelationConfig(mode=FULL))
    camera = build_scene(frame, response, config)
    scene = build_scene(
        frame,
        response,
        config,
        target_frame='map',
        target_from_camera=map_from_camera,
        relation_frame='base_link',
        relation_from_camera=base_from_camera,
    )
    assert (scene.frame_id, scene.camera_frame_id, scene.relation_frame_id) == (
        'map',
        FRAME,
        'base_link',
    )
    np.testing.assert_array_equal(scene.T_frame_from_camera, map_from_camera)
    np.testing.assert_allclose(scene.camera_origin, (2.0, 0.0, 0.8))
    for moved, seen in zip(scene.positioned_objects, camera.positioned_objects, strict=True):
        np.testing.assert_allclose(
            moved.lifted.position, apply_transform(map_from_camera, seen.lifted.position)
        )
        np.testing.assert_allclose(
            moved.lifted.covariance, rotate_covariance(map_from_camera, seen.lifted.covariance)
        )
        np.testing.assert_array_equal(moved.lifted.size, seen.lifted.size)  # box axes
        assert scene.range_m(moved) == pytest.approx(camera.range_m(seen))
    relations = {(r.subject, r.predicate, r.object) for r in scene.relations}
    assert ('box_0', ABOVE, 'mug_0') in relations  # gravity: the box is 0.5 m higher
    assert camera.relation_frame_id == FRAME and camera.T_frame_from_camera is None


# ----------------------------------------------------------------------------- ids, lifting


def test_ids_count_each_label_left_to_right_whatever_the_input_order() -> None:
    boxes = {
        'middle': Detection('chair', PixelBox(40, 10, 60, 30)),
        'left': Detection('chair', PixelBox(0, 10, 20, 30)),
        'right': Detection('chair', PixelBox(80, 10, 100, 30)),
        'office': Detection('office chair', PixelBox(10, 50, 30, 70)),
    }
    expected = {
        'left': 'chair_0',
        'middle': 'chair_1',
        'right': 'chair_2',
        'office': 'office_chair_0',
    }
    names = list(boxes)
    for order in (names, names[::-1], names[1:] + names[:1]):
        ids = assign_ids([boxes[name] for name in order])
        assert dict(zip(order, ids, strict=True)) == expected


def test_lift_detections_places_each_box_at_its_surface() -> None:
    frame, response = frame_and_response()
    objects = lift_detections(frame, response.parsed.detections, PipelineConfig())
    assert [obj.id for obj in objects] == ['box_0', 'lamp_0', 'mug_0']  # sorted by id
    by_id = {obj.id: obj for obj in objects}
    x1, y1, x2, y2 = pixels(MUG)
    u = FX * by_id['mug_0'].position[0] / by_id['mug_0'].position[2] + CX
    assert by_id['mug_0'].position[2] == pytest.approx(1.2, abs=0.01) and x1 <= u <= x2
    assert by_id['lamp_0'].position is None and by_id['lamp_0'].lifted.valid_depth_ratio == 0.0


# ----------------------------------------------------------------------------- settings


def test_parameters_map_onto_the_pipeline_settings() -> None:
    values = {
        'engine': 'openai',
        'model': 'qwen3-vl',
        'server_url': 'http://gpu:30000',
        'api_key_env': 'MY_KEY',
        'max_in_flight': 3,
        'vocabulary': [' mug ', '', 'chair', 'mug'],
        'depth_scale': 0.0,
        'min_depth_m': 0.3,
        'max_depth_m': 6.0,
        'near_threshold_m': 0.25,
        'relations': 'full',
        'relations_per_object': 5,
        'max_objects': 7,
        'target_frame': 'map',
        'relation_frame': 'base_link',
        'record_outputs': '/tmp/out.jsonl',
    }
    settings = PipelineSettings.from_parameters(values)
    config = settings.config
    assert (settings.engine_kind, settings.model, settings.record_outputs) == (
        'openai',
        'qwen3-vl',
        '/tmp/out.jsonl',
    )
    assert settings.engine_options == {
        'base_url': 'http://gpu:30000',
        'api_key_env': 'MY_KEY',
        'max_concurrency': 4,
        'served_model_name': '',
    }
    assert config.vocabulary == ('mug', 'chair')
    assert config.depth.depth_scale is None
    assert (config.depth.min_depth_m, config.depth.max_depth_m) == (0.3, 6.0)
    assert (config.lifting.min_depth_m, config.lifting.max_depth_m) == (0.3, 6.0)
    assert config.relations == RelationConfig(near_threshold_m=0.25, mode='full', per_object=5)
    assert (config.max_objects, config.target_frame, config.relation_frame) == (
        7,
        'map',
        'base_link',
    )
    scaled = PipelineSettings.from_parameters({**values, 'depth_scale': 0.0002})
    assert scaled.config.depth.depth_scale == 0.0002
    recorded = PipelineSettings.from_parameters({'engine': 'recorded', 'recording': 'r.jsonl'})
    assert recorded.engine_options == {'path': 'r.jsonl'}
    assert recorded.config.relations == RelationConfig()  # compact, 3 per object
    local = PipelineSettings.from_parameters(
        {'engine': 'transformers', 'device': 'cpu', 'max_in_flight': 2}
    )
    assert local.engine_options == {'device': 'cpu', 'max_batch_size': 3}


def rectified_paired(stamp_ns: int = STAMP) -> RgbdSet:
    """:func:`paired` from an image_rect camera: CameraInfo.P differs from K."""
    fields = message_fields.camera_info_fields(
        stamp_ns, FRAME, CameraIntrinsics(FX, FY, CX, CY, WIDTH, HEIGHT)
    )
    fields['p'] = [110.0, 0.0, 70.0, 0.0, 0.0, 110.0, 50.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    plain = paired(stamp_ns)
    info = msgs.build(msgs.CAMERA_INFO_TYPE, fields)
    return RgbdSet(plain.rgb, plain.depth, Stamped(stamp_ns, info))


def test_camera_intrinsics_selects_the_matrix_the_pipeline_decodes_with() -> None:
    """camera_intrinsics P (image_rect topics) reaches the decoder; K stays the default."""
    default = PipelineSettings.from_parameters({}).config
    rectified = PipelineSettings.from_parameters({'camera_intrinsics': 'P'}).config
    assert default.intrinsics_source is IntrinsicsSource.K
    assert rectified.intrinsics_source is IntrinsicsSource.P
    expected = {
        IntrinsicsSource.K: CameraIntrinsics(FX, FY, CX, CY, WIDTH, HEIGHT),
        IntrinsicsSource.P: CameraIntrinsics(110.0, 110.0, 70.0, 50.0, WIDTH, HEIGHT),
    }
    for config in (default, rectified):
        pipeline = SpatialPipeline(None, '', config, profile=PROFILE)  # type: ignore[arg-type]
        frame, _ = pipeline.decode_with_warnings(rectified_paired())
        assert frame.rgb_intrinsics == expected[config.intrinsics_source]


def test_pairing_settings_map_onto_the_pairer_in_nanoseconds() -> None:
    values = {
        'sync_slop_s': 0.02,
        'sync_queue_size': 40,
        'sync_max_wait_s': 1.5,
        'sync_camera_info': 'strict',
        'sync_min_interval_s': -1.0,
    }
    live = pipeline_module.pairing_from_parameters(values, live=True)
    assert live == PairingConfig(
        slop_ns=20_000_000,
        queue_size=40,
        info_mode=InfoMode.STRICT,
        max_wait_ns=1_500_000_000,
        min_interval_ns=None,  # -1: learned from the stream
    )
    # The replay has the whole bag: it always waits for the next depth message.
    assert pipeline_module.pairing_from_parameters(values, live=False) == replace(
        live, min_interval_ns=0
    )
    assert pipeline_module.pairing_from_parameters({}, live=False) == PairingConfig()


# ----------------------------------------------------------------------------- answers


def test_a_question_on_a_published_scene_reuses_its_grounding_and_decoded_frame(
    recorded_pipeline: SpatialPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = paired()
    scene = asyncio.run(recorded_pipeline.perceive_paired(frame))

    def no_second_decode(message: object) -> None:
        raise AssertionError('the colour image was decoded a second time')

    monkeypatch.setattr(pipeline_module, 'decode_color_any', no_second_decode)
    snapshot = asyncio.run(recorded_pipeline.snapshot(frame, scene=scene))
    assert snapshot.scene is scene and snapshot.T_relation_from_camera is None
    answer = asyncio.run(recorded_pipeline.answer(snapshot, 'Which is nearer?'))
    # The recorded answer is free text (no JSON): passed on, with the ranges it relies on
    # measured from the geometry.
    assert answer.success and answer.source == SOURCE_MODEL_TEXT, answer.message
    assert answer.answer.startswith(ANSWER + ' Measured: ')
    ranges = {m.object_ids: m.value for m in answer.measurements}
    assert set(ranges) == {('box_0',), ('mug_0',)}
    by_id = {obj.id: obj for obj in scene.objects}
    for (object_id,), value in ranges.items():  # the scene's own range, not a model number
        assert value == pytest.approx(scene.range_m(by_id[object_id]))
    assert ranges[('mug_0',)] < ranges[('box_0',)]
    assert set(answer.object_ids) == {'mug_0', 'box_0'}
    assert answer.message == 'no structured answer: no JSON object in the answer'


def test_a_snapshot_without_a_scene_perceives_first(recorded_pipeline: SpatialPipeline) -> None:
    snapshot = asyncio.run(recorded_pipeline.snapshot(paired()))
    assert [obj.id for obj in snapshot.scene.objects] == ['box_0', 'lamp_0', 'mug_0']
    assert snapshot.rgb.shape == (HEIGHT, WIDTH, 3)
    assert recorded_pipeline.profile.name == 'spatial-ssrl-4b-fp8'  # RecordedEngine's default


def test_an_unanswered_question_is_a_failure_with_the_reason(recorded_pipeline) -> None:
    async def ask() -> object:
        snapshot = await recorded_pipeline.snapshot(paired(STAMP + 1))
        return await recorded_pipeline.answer(snapshot, 'Where?')

    answer = asyncio.run(ask())
    assert not answer.success and answer.object_ids == () and answer.answer == ''
    assert answer.message.startswith('no answer: no structured answer')


def test_locate_resolves_on_the_snapshot_with_the_pipeline_profile(recorded_pipeline) -> None:
    async def find(description: str) -> object:
        snapshot = await recorded_pipeline.snapshot(paired())
        return await recorded_pipeline.locate(snapshot, description)

    right = asyncio.run(find('the thing on the right'))
    assert not right.found and not right.result.noun_matched
    box = asyncio.run(find('the box'))
    assert box.found and box.result.best.id == 'box_0' and box.frame_id == FRAME
    lamp = asyncio.run(find('lamp'))  # named, but no depth: no pose to give
    assert not lamp.found and 'too little valid depth' in lamp.result.reason


def test_only_the_newest_decoded_frames_are_kept(recorded_pipeline, monkeypatch) -> None:
    stamps = [STAMP + i for i in range(DECODED_FRAMES_KEPT + 2)]
    for stamp in stamps:
        recorded_pipeline.decode_with_warnings(paired(stamp))
    decoded = []
    real_decode = pipeline_module.decode_color_any
    monkeypatch.setattr(
        pipeline_module,
        'decode_color_any',
        lambda message: decoded.append(message) or real_decode(message),
    )
    newest = recorded_pipeline.rgb_of(paired(stamps[-1]))
    assert newest.shape == (HEIGHT, WIDTH, 3) and decoded == []
    oldest = recorded_pipeline.rgb_of(paired(stamps[0]))  # dropped: decoded again
    assert len(decoded) == 1 and np.array_equal(oldest, newest)
