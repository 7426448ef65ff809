# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Offline replay: topic detection, bag plumbing (sqlite3/MCAP, raw/compressed), the replay loop
and its outputs, rate limiting, typed errors, interruption, the report, markers and annotation.

Bags here are small synthetic ones written with rosbags (real bags, tiny frames); the real
sample bag is exercised in test_sample_bag.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from spatial_vlm_ros.core.annotate import AnnotationError, annotate_scene, object_caption
from spatial_vlm_ros.core.image_decoding import UnknownEncodingError
from spatial_vlm_ros.core.markers import (
    NAMESPACE_LABELS,
    NAMESPACE_OBJECTS,
    NAMESPACE_RELATIONS,
    MarkerKind,
    label_color,
    scene_markers,
)
from spatial_vlm_ros.core.scene_json import scene_from_dict
from spatial_vlm_ros.core.types import (
    Lifted3D,
    PixelBox,
    Relation,
    Scene,
    SpatialObject,
)
from spatial_vlm_ros.engines.base import EngineRequest, EngineResponse, VlmEngine
from spatial_vlm_ros.engines.recorded import RecordedEngine
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline
from spatial_vlm_ros.replay import msgs
from spatial_vlm_ros.replay.bag_io import (
    AmbiguousTopicError,
    BagError,
    BagNotFoundError,
    BagReader,
    EmptyBagError,
    MissingTopicError,
    TopicInfo,
    select_camera_topics,
)
from spatial_vlm_ros.replay.report import latency_histogram_svg
from spatial_vlm_ros.replay.runner import (
    ANNOTATED_TOPIC,
    MARKERS_TOPIC,
    SCENE_TOPIC,
    BagTimeRateLimiter,
    ReplayOptions,
    replay_bag,
)
from spatial_vlm_ros.replay.sample_bag import (
    BagLayout,
    synthetic_frame,
    write_recording,
    write_rgbd_bag,
)

FRAMES = (synthetic_frame('a', seed=1), synthetic_frame('b', seed=2))


def make_bag(tmp_path: Path, layout: BagLayout, name: str = 'bag') -> tuple[Path, Path]:
    bag = write_rgbd_bag(tmp_path / name, FRAMES, layout)
    recording = tmp_path / f'{name}.jsonl'
    write_recording(recording, FRAMES, layout)
    return bag, recording


def pipeline_for(recording: Path) -> SpatialPipeline:
    return SpatialPipeline(RecordedEngine(path=recording), '', PipelineConfig())


def run(options: ReplayOptions, pipeline: SpatialPipeline):
    return asyncio.run(replay_bag(options, pipeline))


def read_scenes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- topic detection


def topics(*pairs: tuple[str, str]) -> dict[str, TopicInfo]:
    return {name: TopicInfo(name, msgtype, 5) for name, msgtype in pairs}


IMAGE, COMPRESSED, INFO = msgs.IMAGE_TYPE, msgs.COMPRESSED_IMAGE_TYPE, msgs.CAMERA_INFO_TYPE


def test_detects_realsense_style_topics_and_prefers_registered_depth():
    found = select_camera_topics(
        topics(
            ('/camera/color/image_raw', IMAGE),
            ('/camera/color/image_raw/compressed', COMPRESSED),
            ('/camera/depth/image_rect_raw', IMAGE),
            ('/camera/aligned_depth_to_color/image_raw', IMAGE),
            ('/camera/depth/camera_info', INFO),
            ('/camera/color/camera_info', INFO),
            ('/spatial_vlm/annotated_image', IMAGE),
        )
    )
    assert found.names == (
        '/camera/color/image_raw',
        '/camera/aligned_depth_to_color/image_raw',
        '/camera/color/camera_info',
    )


def test_detects_compressed_rgb_and_compressed_depth():
    found = select_camera_topics(
        topics(
            ('/cam/rgb/image/compressed', COMPRESSED),
            ('/cam/depth/image/compressedDepth', COMPRESSED),
            ('/cam/rgb/camera_info', INFO),
        )
    )
    assert found.rgb.name == '/cam/rgb/image/compressed'
    assert found.depth.name == '/cam/depth/image/compressedDepth'
    assert found.info.name == '/cam/rgb/camera_info'


def test_ambiguous_rgb_topics_are_an_error_naming_the_candidates():
    with pytest.raises(AmbiguousTopicError, match='--rgb-topic') as caught:
        select_camera_topics(
            topics(
                ('/left/color/image_raw', IMAGE),
                ('/right/color/image_raw', IMAGE),
                ('/left/depth/image_raw', IMAGE),
                ('/left/color/camera_info', INFO),
            )
        )
    assert '/left/color/image_raw' in str(caught.value)
    # Naming one resolves it, and the CameraInfo next to it is chosen.
    found = select_camera_topics(
        topics(
            ('/left/color/image_raw', IMAGE),
            ('/right/color/image_raw', IMAGE),
            ('/left/depth/image_raw', IMAGE),
            ('/left/color/camera_info', INFO),
            ('/right/color/camera_info', INFO),
        ),
        rgb='/right/color/image_raw',
    )
    assert found.info.name == '/right/color/camera_info'


@pytest.mark.parametrize(
    ('available', 'kwargs', 'message'),
    [
        ((('/c/color/image_raw', IMAGE), ('/c/color/camera_info', INFO)), {}, 'no depth'),
        ((('/c/color/image_raw', IMAGE), ('/c/depth/image_raw', IMAGE)), {}, 'CameraInfo'),
        ((('/c/depth/image_raw', IMAGE), ('/c/color/camera_info', INFO)), {}, 'no RGB'),
        (
            (('/c/color/image_raw', IMAGE), ('/c/depth/image_raw', IMAGE), ('/i', INFO)),
            {'depth': '/c/depth/nope'},
            "'/c/depth/nope' is not in the bag",
        ),
        (
            (('/c/color/image_raw', IMAGE), ('/c/depth/image_raw', IMAGE), ('/i', INFO)),
            {'rgb': '/i'},
            'has type sensor_msgs/msg/CameraInfo',
        ),
    ],
)
def test_missing_or_wrong_topics_raise_missing_topic_error(available, kwargs, message):
    with pytest.raises(MissingTopicError, match=message):
        select_camera_topics(topics(*available), **kwargs)


# ----------------------------------------------------------------------------- reading bags


def test_bag_paths_are_checked(tmp_path):
    with pytest.raises(BagNotFoundError):
        BagReader(tmp_path / 'missing')
    (tmp_path / 'not_a_bag').mkdir()
    with pytest.raises(BagError, match='metadata.yaml'):
        BagReader(tmp_path / 'not_a_bag')
    (tmp_path / 'old.bag').write_bytes(b'#ROSBAG V2.0\n')
    with pytest.raises(BagError, match='ROS 1'):
        BagReader(tmp_path / 'old.bag')


def test_bag_without_messages_is_an_empty_bag_error(tmp_path):
    path = tmp_path / 'empty'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection('/camera/color/image_raw', IMAGE, typestore=msgs.typestore())
    with pytest.raises(EmptyBagError, match='no messages'):
        with BagReader(path):
            pass


@pytest.mark.parametrize(
    'layout',
    [
        BagLayout(repeats=2, storage=StoragePlugin.SQLITE3, compressed_rgb=False),
        BagLayout(
            repeats=2, storage=StoragePlugin.MCAP, compressed_rgb=False, rgb_encoding='bgr8'
        ),
        BagLayout(repeats=2, storage=StoragePlugin.MCAP, compressed_rgb=True),
    ],
    ids=['sqlite3-rgb8', 'mcap-bgr8', 'mcap-jpeg'],
)
def test_replay_writes_consistent_outputs_for_each_storage_and_encoding(tmp_path, layout):
    bag, recording = make_bag(tmp_path, layout)
    out = tmp_path / 'out'
    summary = run(ReplayOptions(bag, out, progress=False), pipeline_for(recording))

    stamps = [s for per_frame in layout.rgb_stamps(len(FRAMES)) for s in per_frame]
    scenes = read_scenes(out / 'scenes.jsonl')
    assert [scene['stamp_ns'] for scene in scenes] == stamps
    assert summary.frames_processed == len(stamps) and not summary.interrupted
    assert summary.storage == ('sqlite3' if layout.storage == StoragePlugin.SQLITE3 else 'mcap')
    for scene in scenes:
        assert [obj['id'] for obj in scene['objects']] == ['book_0', 'cup_0']
        positions = {obj['id']: obj['position'] for obj in scene['objects']}
        # The synthetic frame puts the cup at 1.0 m and the book at 1.5 m, cup on the left.
        assert positions['cup_0'][2] == pytest.approx(1.0, abs=0.01)
        assert positions['book_0'][2] == pytest.approx(1.5, abs=0.01)
        assert positions['cup_0'][0] < 0 < positions['book_0'][0]
        predicates = {(r['subject'], r['predicate'], r['object']) for r in scene['relations']}
        assert ('cup_0', 'left_of', 'book_0') in predicates
        assert ('cup_0', 'in_front_of', 'book_0') in predicates
        assert scene['engine'] == 'recorded' and scene['model_id'].startswith('human-labels')

    with BagReader(out / 'scenes_bag') as reader:
        found = reader.topics
        assert found[SCENE_TOPIC].message_count == len(stamps)
        assert found[MARKERS_TOPIC].message_count == len(stamps)
        assert found[ANNOTATED_TOPIC].message_count == len(stamps)
        assert found[layout.resolved_rgb_topic].message_count == len(stamps)
        bag_scenes = [m.message for m in reader.messages([SCENE_TOPIC])]
        images = [m.message for m in reader.messages([ANNOTATED_TOPIC])]
    assert [s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in bag_scenes] == stamps
    assert [o.id for o in bag_scenes[0].objects] == ['book_0', 'cup_0']
    assert images[0].encoding == 'rgb8' and (images[0].height, images[0].width) == (48, 64)
    report = (out / 'report.html').read_text()
    # Each frame is repeated identically in the bag; the report shows each distinct one once.
    assert report.count('data:image/jpeg;base64,') == len(FRAMES)


def test_rate_limits_processed_frames_by_bag_time(tmp_path):
    layout = BagLayout(repeats=4, rate_hz=2.0)
    bag, recording = make_bag(tmp_path, layout)
    summary = run(
        ReplayOptions(bag, tmp_path / 'out', rate_hz=1.0, progress=False, write_bag=False),
        pipeline_for(recording),
    )
    scenes = read_scenes(tmp_path / 'out' / 'scenes.jsonl')
    assert summary.frames_paired == 8
    assert summary.frames_processed == 4 and summary.frames_skipped_by_rate == 4
    gaps = np.diff([scene['stamp_ns'] for scene in scenes])
    assert np.all(gaps >= 10**9)


def test_rate_limiter_keeps_one_frame_per_slot_despite_jitter():
    limiter = BagTimeRateLimiter(10.0)
    # 30 Hz with +-3 ms of jitter for 1 s: one frame per 100 ms slot.
    rng = np.random.default_rng(0)
    stamps = [round(i * 1e9 / 30 + rng.uniform(-3e6, 3e6)) + 10**9 for i in range(30)]
    kept = [s for s in stamps if limiter.accept(s)]
    assert len(kept) == 10
    assert BagTimeRateLimiter(0.0).accept(5) and BagTimeRateLimiter(0.0).accept(5)


def test_max_frames_stops_early(tmp_path):
    bag, recording = make_bag(tmp_path, BagLayout(repeats=3))
    summary = run(
        ReplayOptions(bag, tmp_path / 'out', max_frames=2, progress=False),
        pipeline_for(recording),
    )
    assert summary.frames_processed == 2
    assert len(read_scenes(tmp_path / 'out' / 'scenes.jsonl')) == 2


def test_unknown_encoding_fails_before_writing_outputs(tmp_path):
    layout = BagLayout(repeats=1, compressed_rgb=False, rgb_encoding='bgr8')
    bag, recording = make_bag(tmp_path, layout)
    # Rewrite the RGB topic with an encoding no decoder knows.
    strange = tmp_path / 'strange'
    with BagReader(bag) as reader, Writer(strange, version=9) as writer:
        store = msgs.typestore()
        connections = {}
        for message in reader.messages():
            if message.topic not in connections:
                connections[message.topic] = writer.add_connection(
                    message.topic, message.msgtype, typestore=store
                )
            data = message.raw
            if message.topic == layout.resolved_rgb_topic:
                message.message.encoding = 'yuv_mystery'
                data = msgs.serialize(message.message)
            writer.write(connections[message.topic], message.log_time_ns, data)
    out = tmp_path / 'out'
    with pytest.raises(UnknownEncodingError, match='/camera/color/image_raw'):
        run(ReplayOptions(strange, out, progress=False), pipeline_for(recording))
    assert not out.exists()


class InterruptingEngine(VlmEngine):
    """Delegates to a recorded engine and raises KeyboardInterrupt on call ``interrupt_at``,
    as Ctrl-C would in the middle of an engine call."""

    name = 'recorded'

    def __init__(self, inner: RecordedEngine, interrupt_at: int) -> None:
        self.inner = inner
        self.calls = 0
        self.interrupt_at = interrupt_at
        self.shut_down = False

    async def generate(self, request: EngineRequest) -> EngineResponse:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return await self.inner.generate(request)

    async def shutdown(self) -> None:
        self.shut_down = True


def test_interruption_leaves_valid_partial_outputs(tmp_path):
    bag, recording = make_bag(tmp_path, BagLayout(repeats=3))
    engine = InterruptingEngine(RecordedEngine(path=recording), interrupt_at=3)
    out = tmp_path / 'out'
    summary = run(
        ReplayOptions(bag, out, progress=False), SpatialPipeline(engine, '', PipelineConfig())
    )
    assert summary.interrupted and summary.frames_processed == 2
    assert engine.shut_down
    assert len(read_scenes(out / 'scenes.jsonl')) == 2
    with BagReader(out / 'scenes_bag') as reader:
        assert reader.topics[SCENE_TOPIC].message_count == 2
        assert len(list(reader.messages([SCENE_TOPIC]))) == 2
    report = (out / 'report.html').read_text()
    assert 'interrupted' in report and report.rstrip().endswith('</html>')


def test_output_bag_custom_messages_deserialize_with_rclpy(tmp_path):
    from rclpy.serialization import deserialize_message
    from visualization_msgs.msg import MarkerArray

    from spatial_vlm_ros.msg import SpatialScene

    bag, recording = make_bag(tmp_path, BagLayout(repeats=1))
    run(ReplayOptions(bag, tmp_path / 'out', progress=False), pipeline_for(recording))
    expected = read_scenes(tmp_path / 'out' / 'scenes.jsonl')
    with BagReader(tmp_path / 'out' / 'scenes_bag') as reader:
        raw_scenes = [bytes(raw) for _, _, raw in reader.raw_messages([SCENE_TOPIC])]
        raw_markers = [bytes(raw) for _, _, raw in reader.raw_messages([MARKERS_TOPIC])]
    for raw, record in zip(raw_scenes, expected, strict=True):
        scene = deserialize_message(raw, SpatialScene)
        assert scene.header.frame_id == record['frame_id']
        assert [o.label for o in scene.objects] == [o['label'] for o in record['objects']]
        assert [o.id for o in scene.objects_without_position] == [
            o['id'] for o in record['objects_without_position']
        ]
        for obj, obj_record in zip(scene.objects, record['objects'], strict=True):
            position = obj.pose.position
            assert [position.x, position.y, position.z] == pytest.approx(
                obj_record['position'], abs=1e-4
            )
            assert obj.range == pytest.approx(obj_record['range'], abs=1e-4)
        assert {(r.subject_id, r.predicate, r.object_id) for r in scene.relations} == {
            (r['subject'], r['predicate'], r['object']) for r in record['relations']
        }
    markers = deserialize_message(raw_markers[0], MarkerArray)
    assert markers.markers[0].action == 3  # DELETEALL first
    assert {m.ns for m in markers.markers[1:]} >= {NAMESPACE_OBJECTS, NAMESPACE_LABELS}


# ----------------------------------------------------------------------------- core: markers


def make_scene(frame_id: str = 'cam') -> Scene:
    def obj(name: str, position, box=(0, 0, 10, 10)):
        lifted = Lifted3D(
            None if position is None else np.asarray(position, dtype=float),
            None if position is None else np.eye(3) * 1e-4,
            None if position is None else np.array([0.2, 0.1, 0.05]),
            0.0 if position is None else 0.9,
        )
        return SpatialObject(name, name.rsplit('_', 1)[0], 0.9, PixelBox(*box), lifted)

    return Scene(
        stamp_ns=7,
        frame_id=frame_id,
        camera_frame_id='cam',
        objects=[
            obj('book_0', [0.4, 0.0, 2.0], (40, 10, 60, 30)),
            obj('cup_0', [-0.3, 0.0, 1.0], (5, 10, 25, 30)),
            obj('lamp_0', None, (30, 0, 35, 5)),
        ],
        relations=[
            Relation('cup_0', 'left_of', 'book_0', 1.2, 0.9),
            Relation('cup_0', 'in_front_of', 'book_0', 1.2, 0.9),
            Relation('book_0', 'right_of', 'cup_0', 1.2, 0.9),
            Relation('lamp_0', 'near', 'cup_0', 0.1, 0.5),
        ],
    )


def test_markers_cover_located_objects_and_one_line_per_related_pair():
    marker_set = scene_markers(make_scene())
    kinds = [m.kind for m in marker_set.markers]
    assert kinds[0] is MarkerKind.DELETE_ALL
    cubes = [m for m in marker_set.markers if m.kind is MarkerKind.CUBE]
    assert sorted(m.marker_id for m in cubes) == [0, 1]  # the lamp has no position
    book = next(m for m in cubes if m.marker_id == 0)
    assert book.position == (0.4, 0.0, 2.0) and book.scale == pytest.approx((0.2, 0.1, 0.05))
    lines = [m for m in marker_set.markers if m.namespace == NAMESPACE_RELATIONS]
    assert len(lines) == 1 and len(lines[0].points) == 2  # book/cup pair once, lamp skipped
    label = next(m for m in marker_set.markers if m.text.startswith('cup_0 left_of'))
    assert label.text == 'cup_0 left_of, in_front_of book_0'
    # Labels float above the box: "up" is -y in an optical frame, +z in a body frame.
    text = next(m for m in marker_set.markers if m.namespace == NAMESPACE_LABELS)
    assert text.position[1] < book.position[1]
    body = scene_markers(make_scene(frame_id='base_link'))
    body_text = next(m for m in body.markers if m.namespace == NAMESPACE_LABELS)
    assert body_text.position[2] > 2.0 and body.frame_id == 'base_link'


def test_label_colors_are_stable_and_distinguish_labels():
    assert label_color('cup') == label_color('cup')
    assert len({label_color(name) for name in ('cup', 'book', 'chair', 'monitor', 'plant')}) >= 4


# ----------------------------------------------------------------------------- core: annotate


def test_annotate_draws_boxes_without_touching_the_input():
    image = np.full((48, 64, 3), 128, dtype=np.uint8)
    before = image.copy()
    annotated = annotate_scene(image, make_scene())
    assert np.array_equal(image, before)
    colour = np.array(label_color('cup').as_rgb8(), dtype=np.uint8)
    # The cup box's left edge (x = 5) is drawn in the cup's colour.
    assert np.any(np.all(annotated[15:25, 5] == colour, axis=-1))
    assert not np.array_equal(annotated, image)
    with pytest.raises(AnnotationError):
        annotate_scene(np.zeros((4, 4), dtype=np.uint8), make_scene())


def test_captions_show_range_in_the_camera_frame_and_coordinates_elsewhere():
    scene = make_scene()
    cup = next(o for o in scene.objects if o.id == 'cup_0')
    lamp = next(o for o in scene.objects if o.id == 'lamp_0')
    assert object_caption(cup, True) == f'cup_0 {np.hypot(0.3, 1.0):.2f} m'
    assert object_caption(cup, False) == 'cup_0 (-0.30, 0.00, 1.00) m'
    assert object_caption(lamp, True) == 'lamp_0 (no depth)'


# ----------------------------------------------------------------------------- report


def test_latency_histogram_is_valid_svg_with_one_bar_per_bin():
    svg = latency_histogram_svg([1.0, 2.0, 2.5, 9.0], bins=4)
    root = ElementTree.fromstring(svg)
    bars = root.findall('.//{http://www.w3.org/2000/svg}rect')
    assert len(bars) == 4
    heights = [float(bar.get('height')) for bar in bars]
    assert heights[0] == max(heights) and heights[1] == 0.0  # 3 in the first bin, 0 in the 2nd
    assert latency_histogram_svg([]) == '<p>no scenes</p>'


def test_scene_records_round_trip_through_scene_from_dict(tmp_path):
    bag, recording = make_bag(tmp_path, BagLayout(repeats=1))
    run(
        ReplayOptions(bag, tmp_path / 'out', progress=False, write_bag=False),
        pipeline_for(recording),
    )
    for record in read_scenes(tmp_path / 'out' / 'scenes.jsonl'):
        scene = scene_from_dict(record)
        listed = [*record['objects'], *record['objects_without_position']]
        assert [o.id for o in scene.objects] == sorted(o['id'] for o in listed)
        assert [o.id for o in scene.positioned_objects] == [o['id'] for o in record['objects']]
