# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The replay report without a browser: the file is offline and safe, identical frames share a
card, the raw model output travels from the engine to the report, and the geometry behind the
pictures (maps, ellipses, boxes, frustum, depth grid, stage timings, memory map) is right.

test_report_browser.py renders the same reports in a real Chromium.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from html.parser import HTMLParser
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from spatial_vlm_ros.core.types import (
    CameraIntrinsics,
    Lifted3D,
    PixelBox,
    Relation,
    RgbdFrame,
    Scene,
    SpatialObject,
)
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.replay.report import ReportBuilder, ReportMeta
from spatial_vlm_ros.replay.report_views import (
    ELLIPSE_SIGMAS_95,
    box_corners,
    covariance_ellipse,
    decode_depth_grid,
    depth_grid,
    memory_view,
    stage_timings,
    top_down_view,
    view_3d,
)
from spatial_vlm_ros.replay.runner import ReplayOptions, replay_bag
from spatial_vlm_ros.replay.sample_bag import (
    BagLayout,
    synthetic_frame,
    write_recording,
    write_rgbd_bag,
)

INTRINSICS = CameraIntrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)


# ----------------------------------------------------------------------------- helpers


class _ReportParser(HTMLParser):
    """Every element with its attributes, and the text of each <script> by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._script: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == 'script':
            self._script, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == 'script' and self._script is not None:
            self.scripts.append((self._script, ''.join(self._text)))
            self._script = None


def parse_report(text: str) -> tuple[_ReportParser, dict, list[dict]]:
    """The parsed page, its run data and its card data, in card order."""
    parser = _ReportParser()
    parser.feed(text)
    data = {
        attrs.get('id'): json.loads(body)
        for attrs, body in parser.scripts
        if attrs.get('type') == 'application/json'
    }
    run = data.pop('report-data')
    cards = [data[f'card-data-{index}'] for index in range(len(run['cards']))]
    assert len(data) == len(cards), 'unexpected JSON blocks'
    return parser, run, cards


def lifted_object(
    object_id: str,
    position: list[float] | None,
    sigma: tuple[float, float, float] = (0.01, 0.01, 0.01),
    size: tuple[float, float, float] = (0.2, 0.1, 0.3),
    box: tuple[float, float, float, float] = (10, 10, 50, 50),
) -> SpatialObject:
    lifted = Lifted3D(
        None if position is None else np.asarray(position, dtype=float),
        None if position is None else np.diag(np.square(sigma)),
        None if position is None else np.asarray(size, dtype=float),
        0.0 if position is None else 0.9,
    )
    return SpatialObject(object_id, object_id.rsplit('_', 1)[0], 1.0, PixelBox(*box), lifted)


def camera_scene(stamp_ns: int = 1_000, **changes: object) -> Scene:
    scene = Scene(
        stamp_ns=stamp_ns,
        frame_id='cam',
        camera_frame_id='cam',
        objects=[
            lifted_object('cup_0', [-0.3, 0.1, 1.0]),
            lifted_object('book_0', [0.4, 0.0, 2.0], box=(300, 100, 400, 200)),
            lifted_object('lamp_0', None),
        ],
        relations=[
            Relation('cup_0', 'left_of', 'book_0', 1.2, 0.9),
            Relation('cup_0', 'in_front_of', 'book_0', 1.2, 0.95),
        ],
        relation_frame_id='cam',
        latency_ms=40.0,
        inference_ms=25.0,
    )
    return replace(scene, **changes)


def rgbd_frame(stamp_ns: int = 1_000, depth_m: float = 2.0) -> RgbdFrame:
    depth = np.full((480, 640), depth_m, dtype=np.float32)
    depth[:, :40] = np.nan  # a band without depth
    return RgbdFrame(
        stamp_ns=stamp_ns,
        frame_id='cam',
        rgb=np.zeros((480, 640, 3), dtype=np.uint8),
        depth_m=depth,
        rgb_intrinsics=INTRINSICS,
        depth_intrinsics=INTRINSICS,
    )


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (480, 640, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- the file


def test_report_is_offline_and_data_cannot_break_out_of_its_script_blocks(tmp_path: Path):
    hostile = '</script><img src="http://example.invalid/x.png" onerror="alert(1)"><!--'
    scene = camera_scene(error=f'model output not usable: {hostile}')
    scene = replace(
        scene,
        objects=[
            replace(obj, id=f'cup_{hostile}') if obj.id == 'cup_0' else obj
            for obj in scene.objects
        ],
    )
    builder = ReportBuilder()
    builder.add(scene, image(1), frame=rgbd_frame(), raw_text=hostile)
    builder.add(camera_scene(stamp_ns=2_000), None)
    path = builder.write(
        tmp_path / 'r' / 'report.html', ReportMeta(title=hostile, notes=(hostile,))
    )
    text = path.read_text(encoding='utf-8')
    assert not (tmp_path / 'r' / 'report.html.partial').exists()

    parser, run, cards = parse_report(text)
    # The hostile strings stay data: no element came from them, the JSON gives them back intact.
    assert not any(tag == 'img' for tag, _ in parser.elements)
    assert [tag for tag, _ in parser.elements].count('script') == 2 + len(cards)
    assert cards[0]['raw'] == hostile
    assert f'cup_{hostile}' in [row[0] for row in cards[0]['objects']]
    assert cards[0]['error'].endswith(hostile)
    # Nothing is loaded from outside: a CSP forbids it, and no element names an external URL.
    policies = [a['content'] for tag, a in parser.elements if a.get('http-equiv')]
    assert policies and "default-src 'none'" in policies[0] and 'img-src data:' in policies[0]
    for tag, attrs in parser.elements:
        for name in ('src', 'href'):
            value = attrs.get(name)
            assert value is None or value.startswith(('data:', '#')), (tag, name, value)
    assert cards[0]['img'].startswith('data:image/jpeg;base64,')
    assert cards[1]['img'] is None and cards[1]['depth'] is None  # no picture was given
    assert run['cards'] == [[0, 0], [1, 1]]


def test_identical_consecutive_frames_share_one_card(tmp_path: Path):
    builder = ReportBuilder()
    same_image = image(3)
    for stamp, latency in ((1_000, 30.0), (2_000, 45.0), (3_000, 38.0)):
        builder.add(camera_scene(stamp, latency_ms=latency), same_image, raw_text='[]')
    # Same image, other objects: a card of its own (a nondeterministic model shows up).
    moved = camera_scene(4_000)
    moved = replace(
        moved,
        objects=[
            lifted_object('cup_0', [-0.3, 0.1, 1.5]) if obj.id == 'cup_0' else obj
            for obj in moved.objects
        ],
    )
    builder.add(moved, same_image, raw_text='[]')
    builder.add(camera_scene(5_000), image(4), raw_text='[]')  # another image
    builder.add(camera_scene(6_000), same_image, raw_text='[]')  # not consecutive with the first
    _, run, cards = parse_report(builder.render(ReportMeta()))
    assert run['cards'] == [[0, 2], [3, 3], [4, 4], [5, 5]]
    assert [frame['card'] for frame in run['frames']] == [0, 0, 0, 1, 2, 3]
    assert [frame['lat'] for frame in run['frames']] == [30.0, 45.0, 38.0, 40.0, 40.0, 40.0]
    assert builder.count == 6 and builder.card_count == 4
    assert cards[0]['img'] is not None and len(cards) == 4


def test_images_stop_after_max_thumbnails_but_every_card_keeps_its_numbers():
    builder = ReportBuilder(max_thumbnails=2)
    for index in range(4):
        builder.add(camera_scene(1_000 * (index + 1)), image(index), frame=rgbd_frame())
    _, run, cards = parse_report(builder.render(ReportMeta()))
    assert [card['img'] is not None for card in cards] == [True, True, False, False]
    assert [card['depth'] is not None for card in cards] == [True, True, False, False]
    assert all(len(card['map']['objects']) == 2 for card in cards)
    assert len(run['frames']) == 4


def test_replay_hands_the_raw_model_output_to_the_report_not_to_the_scenes(tmp_path: Path):
    frames = (synthetic_frame('a', seed=1), synthetic_frame('b', seed=2))
    layout = BagLayout(repeats=2)
    bag = write_rgbd_bag(tmp_path / 'bag', frames, layout)
    recording = tmp_path / 'rec.jsonl'
    write_recording(recording, frames, layout)
    texts = {
        json.loads(line)['stamp_ns']: json.loads(line)['text']
        for line in recording.read_text().splitlines()
    }
    pipeline = SpatialPipeline(RecordedEngine(path=recording), '', PipelineConfig())
    engine = pipeline.engine
    out = tmp_path / 'out'
    summary = asyncio.run(
        replay_bag(ReplayOptions(bag, out, progress=False, write_bag=False), pipeline)
    )
    assert summary.frames_processed == 4
    assert pipeline.engine is engine  # the replay gives the pipeline its own engine back
    _, run, cards = parse_report((out / 'report.html').read_text(encoding='utf-8'))
    for first, _last in run['cards']:
        stamp = int(run['frames'][first]['stamp'])
        assert cards[run['frames'][first]['card']]['raw'] == texts[stamp]
    # Each of the two images came twice with the same labels: two cards of two frames each.
    assert run['cards'] == [[0, 1], [2, 3]]
    assert all(card['depth'] is not None and card['map']['frustum'] for card in cards)
    for line in (out / 'scenes.jsonl').read_text().splitlines():
        record = json.loads(line)
        assert texts[record['stamp_ns']] not in json.dumps(record)


def test_report_of_an_empty_run_still_renders():
    _, run, cards = parse_report(ReportBuilder().render(ReportMeta(interrupted=True)))
    assert run['frames'] == [] and cards == []


# ----------------------------------------------------------------------------- geometry


def test_covariance_ellipse_axes_and_angle():
    major, minor, angle = covariance_ellipse(np.diag([0.04, 0.01]))
    assert major == pytest.approx(ELLIPSE_SIGMAS_95 * 0.2)
    assert minor == pytest.approx(ELLIPSE_SIGMAS_95 * 0.1)
    assert abs(math.sin(angle)) == pytest.approx(0.0, abs=1e-9)
    rotation = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    _, _, rotated = covariance_ellipse(rotation @ np.diag([0.04, 0.01]) @ rotation.T)
    assert math.tan(rotated) == pytest.approx(math.tan(0.5))  # the axis, either direction
    assert ELLIPSE_SIGMAS_95 == pytest.approx(2.4477, abs=1e-4)  # chi2(2 dof) 95 % quantile
    assert covariance_ellipse(np.full((2, 2), np.nan)) is None


def test_box_corners_span_the_size_along_the_rotated_axes():
    quarter_turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    corners = box_corners([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], quarter_turn)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.mean(axis=0), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.ptp(corners, axis=0), [4.0, 2.0, 6.0])  # x and y swapped
    # Corners that differ in one bit share an edge of the box's own axes.
    np.testing.assert_allclose(corners[1] - corners[0], quarter_turn[:, 0] * 2.0)


def test_top_down_map_of_a_camera_frame_scene():
    view = top_down_view(camera_scene(), INTRINSICS)
    assert (view['right'], view['up']) == ('x', 'z (forward)')
    by_id = {item['id']: item for item in view['objects']}
    assert sorted(by_id) == ['book_0', 'cup_0'] and view['unplaced'] == ['lamp_0']
    cup, book = by_id['cup_0'], by_id['book_0']
    assert cup['c'] == pytest.approx([-0.3, 1.0]) and book['c'] == pytest.approx([0.4, 2.0])
    assert cup['ell'][0] == pytest.approx(ELLIPSE_SIGMAS_95 * 0.01, abs=1e-4)
    # The footprint is the box seen from above: width x (0.2 m) by depth z (0.3 m).
    footprint = np.asarray(cup['fp'])
    assert np.ptp(footprint, axis=0) == pytest.approx([0.2, 0.3], abs=1e-4)
    apex, left_end, right_end = view['frustum']
    assert apex == pytest.approx([0.0, 0.0])
    assert left_end[1] == pytest.approx(right_end[1]) and left_end[1] > 2.0  # beyond the book
    # The image edges: u = 0 and u = width, through the principal point.
    assert left_end[0] / left_end[1] == pytest.approx(-INTRINSICS.cx / INTRINSICS.fx, abs=1e-3)
    assert right_end[0] / right_end[1] == pytest.approx(
        (INTRINSICS.width - INTRINSICS.cx) / INTRINSICS.fx, abs=1e-3
    )


def _body_scene() -> tuple[Scene, np.ndarray]:
    """The camera at (1, 2, 0.5) in a z-up frame, level, looking along +x."""
    pose = np.eye(4)
    pose[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    pose[:3, 3] = [1.0, 2.0, 0.5]
    scene = replace(
        camera_scene(frame_id='odom'),
        objects=[lifted_object('cup_0', [3.0, 1.5, 0.8], sigma=(0.05, 0.02, 0.01))],
    )
    return scene, pose


def test_top_down_map_of_a_body_frame_scene_uses_the_camera_pose():
    scene, pose = _body_scene()
    posed = replace(scene, T_frame_from_camera=pose)
    view = top_down_view(posed, INTRINSICS)
    assert (view['right'], view['up']) == ('-y (right)', 'x')
    cup = view['objects'][0]
    assert cup['c'] == pytest.approx([-1.5, 3.0])  # (-y, x)
    # Sigma 0.05 m along x (map up) and 0.02 m along y (map right): the major axis is vertical.
    major, minor, angle = cup['ell']
    assert (major, minor) == pytest.approx(
        (ELLIPSE_SIGMAS_95 * 0.05, ELLIPSE_SIGMAS_95 * 0.02), abs=1e-4
    )
    assert abs(math.cos(angle)) == pytest.approx(0.0, abs=1e-4)  # angles rounded to 1e-4
    apex, left_end, right_end = view['frustum']
    assert apex == pytest.approx([-2.0, 1.0])
    assert left_end[0] < apex[0] < right_end[0] and left_end[1] > apex[1]  # looks up the map
    # Without the pose the camera cannot be drawn, the objects still can.
    unposed = top_down_view(scene, INTRINSICS)
    assert unposed['frustum'] is None and unposed['objects'][0]['c'] == pytest.approx([-1.5, 3.0])


def test_3d_view_boxes_and_depth_back_projection_agree():
    scene, pose = _body_scene()
    posed = replace(scene, T_frame_from_camera=pose)
    view = view_3d(posed, INTRINSICS)
    box = view['boxes'][0]
    assert box['c'] == pytest.approx([3.0, 1.5, 0.8])  # body frames are already z up
    # A depth pixel seen at the object's centre lands on the box centre.
    camera_point = pose[:3, :3].T @ (np.array([3.0, 1.5, 0.8]) - pose[:3, 3])
    matrix = np.asarray(view['display_from_camera'])
    np.testing.assert_allclose(matrix[:, :3] @ camera_point + matrix[:, 3], box['c'], atol=1e-4)
    assert view['camera']['apex'] == pytest.approx([1.0, 2.0, 0.5])
    # Camera-frame scenes are turned z-up for display: optical y (down) becomes -z.
    optical = view_3d(camera_scene(), INTRINSICS)
    boxes = {box['id']: box for box in optical['boxes']}
    assert boxes['cup_0']['c'] == pytest.approx([-0.3, 1.0, -0.1])
    far = np.asarray(optical['camera']['far'])
    assert far[0][2] > 0 > far[2][2]  # image top is up, image bottom is down


def test_depth_grid_round_trips_millimetres_and_scales_the_intrinsics():
    depth = np.full((480, 640), 2.5, dtype=np.float32)
    depth[100:200, 300:400] = 1.234
    depth[:, :64] = np.nan
    grid = depth_grid(depth, INTRINSICS, width=64)
    assert (grid['w'], grid['h']) == (64, 48)
    values = decode_depth_grid(grid)
    assert values[:, :6].max() == 0  # no depth stays "no depth"
    assert set(np.unique(values[:, 7:])) == {1234, 2500}
    assert grid['fx'] == pytest.approx(50.0) and grid['cx'] == pytest.approx(31.5)
    assert grid['lo'] == pytest.approx(1.234, abs=1e-3) and grid['hi'] == pytest.approx(2.5)
    assert grid['valid'] == pytest.approx(0.9, abs=0.02)
    assert depth_grid(np.full((10, 10), np.nan, dtype=np.float32), INTRINSICS) is None


def test_stage_timings_read_v02_fields_and_fall_back_to_engine_and_other():
    assert stage_timings(camera_scene()) == {'engine': 25.0, 'other': 15.0}
    timings = SimpleNamespace(
        receive_ms=5.0, pair_ms=1.0, queue_ms=math.nan, decode_ms=3.0, engine_ms=20.0,
        lift_ms=2.0, relations_ms=0.5, memory_ms=math.nan,
    )  # fmt: skip
    with_stages = SimpleNamespace(timings=timings, latency_ms=40.0, inference_ms=20.0)
    assert stage_timings(with_stages) == {
        'receive': 5.0, 'pair': 1.0, 'decode': 3.0, 'engine': 20.0, 'lift': 2.0, 'relations': 0.5,
    }  # fmt: skip
    as_mapping = SimpleNamespace(timings={'engine_ms': 7.0}, latency_ms=9.0, inference_ms=7.0)
    assert stage_timings(as_mapping) == {'engine': 7.0}


def test_memory_map_reads_remembered_objects_as_attributes_or_mappings():
    point = SimpleNamespace(x=2.0, y=-1.0, z=0.3)
    items = [
        SimpleNamespace(
            id='chair_0', label='chair', position=point,
            position_covariance=[0.01, 0, 0, 0, 0.04, 0, 0, 0, 0.01], state=1, sightings=7,
            existence=0.9,
        ),
        {'id': 'mug_3', 'label': 'mug', 'position': [0.5, 0.5, 0.8], 'state': 'visible'},
        {'id': 'ghost_1', 'label': 'ghost', 'position': None},
    ]  # fmt: skip
    view = memory_view(items, 'map', camera_path=[[0.0, 0.0, 1.0], [1.0, 0.5, 1.0]])
    chair, mug = view['objects']
    assert chair['c'] == pytest.approx([1.0, 2.0]) and chair['state'] == 'out of view'
    # The major axis is y's (0.2 m), across the map.
    assert chair['ell'][0] == pytest.approx(ELLIPSE_SIGMAS_95 * 0.2, abs=1e-4)
    assert chair['sightings'] == 7 and mug['ell'] is None and mug['state'] == 'visible'
    assert view['unplaced'] == ['ghost_1'] and view['path'] == [[0.0, 0.0], [-0.5, 1.0]]

    builder = ReportBuilder()
    builder.add(camera_scene(), image(1))
    builder.set_memory(items, 'map')
    page, run, _ = parse_report(builder.render(ReportMeta()))
    assert run['memory']['objects'][0]['id'] == 'chair_0'
    assert any(attrs.get('id') == 'memory-map' for _, attrs in page.elements)
