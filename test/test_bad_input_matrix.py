# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Bad input of every kind against a live in-process node: it stays up, says what was wrong, and
loses nothing from the stream.

Each case configures and activates a real SpatialVlmNode (recorded engine, a JSONL written for
the case), feeds it through its own callbacks (``_on_input``, ``_on_query``, ``_on_locate``,
``set_parameters``) with messages that went through rclpy serialization like DDS deliveries, and
checks three things: the node is still active, the problem came back as a typed reply or was
counted for /diagnostics (``errors.*``, ``drops.*``, ``pairing.*`` and ``last_error``), and a good
frame after the bad one still yields a scene. docs/RELIABILITY.md lists every case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
import json
from pathlib import Path
import struct
import time
from types import SimpleNamespace
from typing import Any

import cv2
from lifecycle_msgs.msg import State
import numpy as np
import pytest

from conftest import spin_until
from test_node_dds import ANSWER_TEXT, HEIGHT, RECORDED_TEXT, WIDTH, make_messages
from test_node_lifecycle import make_node

pytestmark = pytest.mark.ros

STEP_NS = 100_000_000
WAIT_S = 20.0  # generous bound on asynchronous processing; never a speed assertion
FRAME_ID = 'camera_color_optical_frame'


# ----------------------------------------------------------------------------- helpers


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def as_received(msg: Any) -> Any:
    """The message as a subscription callback gets it (data as rclpy's array.array)."""
    from rclpy.serialization import deserialize_message, serialize_message

    return deserialize_message(serialize_message(msg), type(msg))


def raw_depth(stamp_ns: int, values: np.ndarray, encoding: str) -> Any:
    from sensor_msgs.msg import Image

    _, depth, _ = make_messages(stamp_ns)
    height, width = values.shape
    depth.height, depth.width, depth.encoding = height, width, encoding
    depth.step = width * values.dtype.itemsize
    depth.data = values.tobytes()
    assert isinstance(depth, Image)
    return depth


def compressed(stamp_ns: int, data: bytes, format_: str) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=format_)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_ns // 10**9, stamp_ns % 10**9
    msg.header.frame_id = FRAME_ID
    msg.data = data
    return msg


def jpeg_bytes() -> bytes:
    ok, encoded = cv2.imencode('.jpg', np.full((HEIGHT, WIDTH, 3), 90, np.uint8))
    assert ok
    return encoded.tobytes()


def compressed_depth_bytes() -> bytes:
    ok, encoded = cv2.imencode('.png', np.full((HEIGHT, WIDTH), 1500, np.uint16))
    assert ok
    return struct.pack('<iff', 0, 0.0, 0.0) + encoded.tobytes()


class LiveNode:
    """An active node plus what a test needs to drive and observe it."""

    def __init__(self, node: Any, stamps: list[int]) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.stamps = stamps
        # Service handlers are coroutines: an executor runs them, as in the node process.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)

    def call(self, handler: Callable[..., Any], request: Any, response: Any) -> Any:
        """Run a service handler the way the executor does, and wait for its reply."""
        task = self.executor.create_task(handler, request, response)
        self.executor.spin_until_future_complete(task, timeout_sec=60.0)
        assert task.done(), 'the service handler never finished'
        return task.result()

    @property
    def errors(self) -> dict[str, int]:
        return dict(self.node._reporter.errors.counts)

    @property
    def last_error(self) -> str:
        return self.node._reporter.errors.last_error

    def scene_at(self, stamp_ns: int) -> Any:
        return self.node._snapshots.scene(stamp_ns)

    def drops(self) -> dict[str, int]:
        return self.node._scheduler.drop_counts()

    def pairing(self) -> dict[str, int]:
        return self.node._inputs.pairer.stats().as_flat_dict()

    def is_active(self) -> bool:
        return self.node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE

    def feed(self, rgb: Any, depth: Any, info: Any, received: bool = True) -> None:
        convert = as_received if received else (lambda msg: msg)
        for stream, msg in (('info', info), ('depth', depth), ('rgb', rgb)):
            if msg is not None:
                self.node._inputs._on_message(stream, convert(msg))

    def feed_good(self, stamp_ns: int) -> Any:
        """Send a clean frame and return its scene (asserting one is published)."""
        self.feed(*make_messages(stamp_ns))
        assert wait_until(lambda: self.scene_at(stamp_ns) is not None), (
            f'no scene for a good frame after the bad input; errors={self.errors} '
            f'drops={self.drops()} last_error={self.last_error!r}'
        )
        return self.scene_at(stamp_ns)


@pytest.fixture()
def live_node(rclpy_session: Any, tmp_path: Path) -> Iterator[Callable[..., LiveNode]]:
    from rclpy.lifecycle import TransitionCallbackReturn

    made: list[LiveNode] = []

    def start(
        texts: dict[int, str] | None = None,
        answers: dict[int, str] | None = None,
        **overrides: Any,
    ) -> LiveNode:
        """``texts``/``answers``: recorded grounding / question outputs by stamp index (default:
        the two-object answer for every stamp index 0..9)."""
        base = time.time_ns()
        stamps = [base + index * STEP_NS for index in range(10)]
        path = tmp_path / f'recorded_{len(made)}.jsonl'
        with path.open('w') as out:
            for index, stamp in enumerate(stamps):
                text = (texts or {}).get(index, RECORDED_TEXT)
                if text is not None:
                    out.write(json.dumps({'stamp_ns': stamp, 'text': text}) + '\n')
                answer = (answers or {}).get(index, ANSWER_TEXT)
                out.write(
                    json.dumps({'stamp_ns': stamp, 'task': 'question', 'text': answer}) + '\n'
                )
        values = {'max_frame_age_s': 30.0, 'rate_hz': 0.0, **overrides}
        node = make_node(rclpy_session, path, **values)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        made.append(LiveNode(node, stamps))
        return made[-1]

    yield start
    for live in made:
        live.executor.shutdown()
        live.node.trigger_shutdown()
        live.node.destroy_node()


@pytest.fixture(scope='module')
def diagnostics_listener(rclpy_session: Any) -> Iterator[Any]:
    """A separate node listening to /diagnostics over (intra-process) DDS."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy_session.create_node(f'diagnostics_listener_{time.time_ns() % 10**9}')
    received: list[Any] = []
    node.create_subscription(DiagnosticArray, '/diagnostics', received.append, 50)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    yield SimpleNamespace(node=node, executor=executor, received=received)
    executor.shutdown()
    node.destroy_node()


def diagnostics_of(listener: Any, live: LiveNode) -> dict[str, str]:
    """Have the node publish /diagnostics and return its key/values as received."""
    name = live.node.get_fully_qualified_name()

    def mine() -> dict[str, str] | None:
        for array in reversed(listener.received):
            for status in array.status:
                if status.name == f'{name}: pipeline':
                    return {kv.key: kv.value for kv in status.values} | {'message': status.message}
        return None

    listener.received.clear()
    for _ in range(50):
        live.node._publish_diagnostics()
        if spin_until(listener.executor, lambda: mine() is not None, 0.2):
            break
    values = mine()
    assert values is not None, 'no /diagnostics from the node'
    return values


# ----------------------------------------------------------------------------- frame cases


@dataclass(frozen=True)
class FrameCase:
    """A bad frame at stamp index 1; ``expect`` says what the node must do with it.

    ``error``: the frame fails with one of ``error_types`` counted as ``errors.<error_kind>``;
    ``drop``: it is counted as dropped under one of ``drop_keys`` (scheduler or pairing);
    ``scene``: a scene is published for it and ``check`` holds on it.
    """

    id: str
    build: Callable[[int], tuple[Any, Any, Any]]
    expect: str
    error_types: tuple[str, ...] = ()
    error_kind: str = 'frame'
    drop_keys: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    received: bool = True  # False: a duck-typed message rclpy could never deliver
    after_good_frame: bool = True  # False: the bad frame is the first the node sees


def with_rgb(**changes: Any) -> Callable[[int], tuple[Any, Any, Any]]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, depth, info = make_messages(stamp_ns)
        for name, value in changes.items():
            setattr(rgb, name, value)
        return rgb, depth, info

    return build


def with_depth(**changes: Any) -> Callable[[int], tuple[Any, Any, Any]]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, depth, info = make_messages(stamp_ns)
        for name, value in changes.items():
            setattr(depth, name, value)
        return rgb, depth, info

    return build


def with_info(**changes: Any) -> Callable[[int], tuple[Any, Any, Any]]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, depth, info = make_messages(stamp_ns)
        for name, value in changes.items():
            setattr(info, name, value)
        return rgb, depth, info

    return build


def depth_values(values: Callable[[], np.ndarray], encoding: str) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, _, info = make_messages(stamp_ns)
        return rgb, raw_depth(stamp_ns, values(), encoding), info

    return build


def compressed_rgb(data: Callable[[], bytes], format_: str) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        _, depth, info = make_messages(stamp_ns)
        return compressed(stamp_ns, data(), format_), depth, info

    return build


def compressed_depth(data: Callable[[], bytes]) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, _, info = make_messages(stamp_ns)
        return rgb, compressed(stamp_ns, data(), '16UC1; compressedDepth png'), info

    return build


def duck_typed_info(**fields: Any) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, depth, info = make_messages(stamp_ns)
        values = {
            'header': info.header,
            'height': info.height,
            'width': info.width,
            'k': list(info.k),
            'p': list(info.p),
            'd': list(info.d),
            'distortion_model': info.distortion_model,
        }
        values.update(fields)
        return as_received(rgb), as_received(depth), SimpleNamespace(**values)

    return build


def with_frame_ids(rgb_id: str, depth_id: str, info_id: str) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        messages = make_messages(stamp_ns)
        for msg, frame_id in zip(messages, (rgb_id, depth_id, info_id), strict=True):
            msg.header.frame_id = frame_id
        return messages

    return build


def scaled_info(factor: float, width: int, height: int) -> Callable[[int], Any]:
    def build(stamp_ns: int) -> tuple[Any, Any, Any]:
        rgb, depth, info = make_messages(stamp_ns)
        info.width, info.height = width, height
        info.k = [v * factor if i in (0, 2, 4, 5) else v for i, v in enumerate(info.k)]
        return rgb, depth, info

    return build


def half_resolution_depth(stamp_ns: int) -> tuple[Any, Any, Any]:
    from test_node_dds import synthetic_depth_mm

    rgb, _, info = make_messages(stamp_ns)
    half = np.ascontiguousarray(synthetic_depth_mm()[::2, ::2])
    return rgb, raw_depth(stamp_ns, half, '16UC1'), info


def no_position(scene: Any) -> bool:
    return bool(scene.objects) and all(obj.lifted.position is None for obj in scene.objects)


def all_positioned(scene: Any) -> bool:
    return bool(scene.objects) and all(obj.lifted.position is not None for obj in scene.objects)


DECODE = ('ImageDecodeError', 'ImageSizeError', 'UnknownEncodingError', 'CorruptImageError')

FRAME_CASES = [
    FrameCase('rgb-unknown-encoding', with_rgb(encoding='yuv422_weird'), 'error',
              ('UnknownEncodingError',)),
    FrameCase('rgb-depth-encoding-as-color', with_rgb(encoding='16UC1', step=WIDTH * 2),
              'error', ('UnknownEncodingError',)),
    FrameCase('rgb-data-shorter-than-height-x-step', with_rgb(data=bytes(WIDTH * 3 * 10)),
              'error', ('ImageSizeError',)),
    FrameCase('rgb-step-below-width-x-bpp', with_rgb(step=WIDTH * 3 - 3), 'error',
              ('ImageSizeError',)),
    FrameCase('rgb-zero-dims', with_rgb(height=0, width=0, step=0, data=b''), 'error',
              ('ImageSizeError',)),
    FrameCase('rgb-empty-encoding', with_rgb(encoding=''), 'error', ('UnknownEncodingError',)),
    FrameCase('depth-truncated-data', with_depth(data=bytes(100)), 'error', ('ImageSizeError',)),
    FrameCase('depth-color-encoding', with_depth(encoding='rgb8', step=WIDTH * 3,
                                                  data=bytes(WIDTH * HEIGHT * 3)),
              'error', ('UnknownEncodingError',)),
    FrameCase('compressed-rgb-truncated-jpeg',
              compressed_rgb(lambda: jpeg_bytes()[:2000], 'rgb8; jpeg compressed bgr8'),
              'error', ('CorruptImageError',), overrides={'compressed_input': True}),
    FrameCase('compressed-rgb-garbage', compressed_rgb(lambda: b'\x00' * 4096, 'jpeg'), 'error',
              ('CorruptImageError',), overrides={'compressed_input': True}),
    FrameCase('compressed-rgb-unsupported-codec', compressed_rgb(jpeg_bytes, 'h264'), 'error',
              ('UnknownEncodingError',), overrides={'compressed_input': True}),
    FrameCase('compressed-depth-truncated-png',
              compressed_depth(lambda: compressed_depth_bytes()[:200]), 'error', DECODE,
              overrides={'compressed_input': True}),
    FrameCase('depth-nan-only',
              depth_values(lambda: np.full((HEIGHT, WIDTH), np.nan, np.float32), '32FC1'),
              'scene', check=no_position),
    FrameCase('depth-16uc1-holding-metres',
              depth_values(lambda: np.full((HEIGHT, WIDTH), 2, np.uint16), '16UC1'),
              'scene', check=no_position),
    FrameCase('depth-32fc1-holding-millimetres',
              depth_values(lambda: np.full((HEIGHT, WIDTH), 1500.0, np.float32), '32FC1'),
              'scene', check=no_position),
    FrameCase('depth-inf-and-negative',
              depth_values(lambda: np.tile(np.array([np.inf, -1.0, -np.inf, 0.0], np.float32),
                                           (HEIGHT, WIDTH // 4)), '32FC1'),
              'scene', check=no_position),
    FrameCase('depth-other-aspect-ratio',
              depth_values(lambda: np.full((360, 640), 1500, np.uint16), '16UC1'),
              'error', ('ResolutionMismatchError',)),
    FrameCase('depth-half-resolution-same-aspect', half_resolution_depth, 'scene',
              check=all_positioned),
    FrameCase('info-zero-k', with_info(k=[0.0] * 9), 'error', ('ZeroIntrinsicsError',)),
    FrameCase('info-nan-k', with_info(k=[float('nan')] * 9), 'error', ('CameraInfoError',)),
    FrameCase('info-negative-focal', with_info(k=[-525.0, 0, 319.5, 0, -525.0, 239.5, 0, 0, 1]),
              'error', ('CameraInfoError',)),
    FrameCase('info-k-with-4-values', duck_typed_info(k=[525.0, 0.0, 319.5, 0.0]), 'error',
              ('CameraInfoError',), received=False),
    FrameCase('info-size-other-aspect', with_info(width=640, height=360), 'error',
              ('ResolutionMismatchError',)),
    FrameCase('info-size-double-same-aspect', scaled_info(2.0, 2 * WIDTH, 2 * HEIGHT), 'scene',
              check=all_positioned),
    FrameCase('stamp-zero-first', lambda stamp: make_messages(0), 'error', ('zero stamp',),
              error_kind='stamp', after_good_frame=False),
    FrameCase('stamp-zero-after-a-frame', lambda stamp: make_messages(0), 'error',
              ('zero stamp',), error_kind='stamp'),
    FrameCase('stamp-an-hour-in-the-future', lambda stamp: make_messages(stamp + 3600 * 10**9),
              'error', ('in the future',), error_kind='stamp'),
    FrameCase('stamp-older-than-max-frame-age', lambda stamp: make_messages(stamp - 60 * 10**9),
              'drop', drop_keys=('stale',), after_good_frame=False),
    FrameCase('rgb-without-depth', lambda stamp: (make_messages(stamp)[0], None,
                                                  make_messages(stamp)[2]),
              'drop', drop_keys=('rgb.dropped.no_depth',)),
    FrameCase('rgb-frame-id-empty', with_frame_ids('', FRAME_ID, FRAME_ID), 'scene',
              check=lambda scene: scene.frame_id == FRAME_ID),
    FrameCase('all-frame-ids-empty', with_frame_ids('', '', ''), 'error',
              ('MissingFrameIdError',)),
    FrameCase('rgb-and-depth-frame-ids-differ',
              with_frame_ids(FRAME_ID, 'camera_depth_optical_frame', FRAME_ID), 'scene',
              check=lambda scene: scene.frame_id == FRAME_ID and all_positioned(scene)),
]  # fmt: skip


def case_id(case: Any) -> str:
    """The id of a case, also when it is wrapped in pytest.param (known gaps are xfail)."""
    return (case.values[0] if hasattr(case, 'values') else case).id


def _count(live: LiveNode, keys: tuple[str, ...]) -> int:
    counters = {**live.drops(), **live.pairing()}
    return sum(counters.get(key, 0) for key in keys)


@pytest.mark.parametrize('case', FRAME_CASES, ids=[case_id(case) for case in FRAME_CASES])
def test_bad_frame_is_reported_and_the_stream_goes_on(live_node: Any, case: FrameCase) -> None:
    live = live_node(**case.overrides)
    first, bad, good = live.stamps[0], live.stamps[1], live.stamps[2]
    if case.after_good_frame:
        live.feed_good(first)
    errors_before = live.errors.get(case.error_kind, 0)
    drops_before = _count(live, case.drop_keys)

    live.feed(*case.build(bad), received=case.received)

    if case.expect == 'error':
        # Decided either way once it is counted or once a scene for it was published anyway.
        wait_until(
            lambda: (
                live.errors.get(case.error_kind, 0) > errors_before
                or live.scene_at(bad) is not None
            )
        )
        assert live.errors.get(case.error_kind, 0) > errors_before, (
            f'not reported: errors={live.errors} drops={live.drops()}'
        )
        assert any(name in live.last_error for name in case.error_types), live.last_error
        assert live.scene_at(bad) is None
    elif case.expect == 'drop':
        if case.drop_keys == ('rgb.dropped.no_depth',):
            # The pairer gives up on an RGB image once depth has moved past it.
            live.feed(None, *make_messages(bad + STEP_NS * 8 // 10)[1:])
        assert wait_until(lambda: _count(live, case.drop_keys) > drops_before), (
            f'not counted: drops={live.drops()} pairing={live.pairing()}'
        )
        assert not [s for s in live.node._snapshots.scenes() if s.stamp_ns != live.stamps[0]]
    else:
        assert wait_until(lambda: live.scene_at(bad) is not None), (
            f'no scene: errors={live.errors} last_error={live.last_error!r}'
        )
        assert case.check is not None and case.check(live.scene_at(bad)), live.scene_at(bad)

    scene = live.feed_good(good)
    assert all_positioned(scene) and {obj.label for obj in scene.objects} == {'mug', 'box'}
    assert live.is_active()


def test_backwards_stamp_is_dropped_as_late_and_the_stream_goes_on(live_node: Any) -> None:
    live = live_node()
    live.feed_good(live.stamps[3])
    late_before = _count(live, ('rgb.dropped.late',))
    live.feed(*make_messages(live.stamps[1]))
    assert wait_until(lambda: _count(live, ('rgb.dropped.late',)) > late_before), live.pairing()
    assert live.scene_at(live.stamps[1]) is None
    live.feed_good(live.stamps[4])


def test_future_stamp_does_not_block_the_stream(live_node: Any) -> None:
    live = live_node()
    live.feed_good(live.stamps[0])
    future = live.stamps[1] + 3600 * 10**9
    live.feed(*make_messages(future))
    wait_until(lambda: live.scene_at(future) is not None or live.errors)
    live.feed(*make_messages(live.stamps[2]))
    assert wait_until(lambda: live.scene_at(live.stamps[2]) is not None)


def test_time_jump_back_restarts_pairing_and_the_stream_goes_on(live_node: Any) -> None:
    live = live_node()
    live.feed_good(live.stamps[0])
    live.feed(*make_messages(live.stamps[0] - 60 * 10**9))  # a looping bag / restarted sim
    assert wait_until(lambda: live.errors.get('time_jump', 0) >= 1), live.errors
    live.feed_good(live.stamps[2])


def test_frame_errors_reach_diagnostics(live_node: Any, diagnostics_listener: Any) -> None:
    live = live_node()
    live.feed_good(live.stamps[0])
    rgb, depth, info = make_messages(live.stamps[1])
    info.k = [0.0] * 9
    live.feed(rgb, depth, info)
    assert wait_until(lambda: live.errors.get('frame', 0) >= 1)
    live.feed(*make_messages(live.stamps[0] - 1))
    assert wait_until(lambda: _count(live, ('rgb.dropped.late',)) >= 1)
    live.feed_good(live.stamps[2])
    values = diagnostics_of(diagnostics_listener, live)
    assert int(values['errors.frame']) >= 1
    assert 'ZeroIntrinsicsError' in values['last_error'] and values['message'] != 'ok'
    assert int(values['pairing.rgb.dropped.late']) >= 1
    assert int(values['published_scenes']) >= 2 and values['state'] == 'active'


# ----------------------------------------------------------------------------- engine outputs


def _items(count: int) -> str:
    rng = np.random.default_rng(0)
    items = []
    for _ in range(count):
        x, y = (int(v) for v in rng.integers(0, 900, 2))
        items.append({'bbox_2d': [x, y, x + 50, y + 50], 'label': f'thing {int(rng.integers(9))}'})
    return json.dumps(items)


OUT_OF_RANGE = json.dumps([
    {'bbox_2d': [-500, -20, 3000, 1500], 'label': 'mug'},
    {'bbox_2d': [600, 350, 850, 700], 'label': 'box'},
])  # fmt: skip


@dataclass(frozen=True)
class EngineCase:
    id: str
    text: str | None  # None: no recorded line for the frame
    check: Callable[[Any], bool]
    reported: bool  # whether errors.engine_output must count it


def in_image(scene: Any) -> bool:
    return all(
        0 <= obj.box.x_min < obj.box.x_max <= WIDTH
        and 0 <= obj.box.y_min < obj.box.y_max <= HEIGHT
        for obj in scene.objects
    )


ENGINE_CASES = [
    EngineCase('not-json', 'I can see a mug on the left and a box.', lambda s: not s.objects,
               True),
    EngineCase('empty-output', '', lambda s: not s.objects, True),
    EngineCase('json-list-without-boxes', '[{"name": "mug", "where": "left"}]',
               lambda s: not s.objects, True),
    EngineCase('json-object-of-the-wrong-schema', '{"mug": "left", "box": [1, 2]}',
               lambda s: not s.objects, True),
    EngineCase('boxes-out-of-range', OUT_OF_RANGE, lambda s: len(s.objects) == 2 and in_image(s),
               False),
    EngineCase('ten-thousand-objects', _items(10_000), lambda s: 0 < len(s.objects) <= 64, False),
    EngineCase('truncated-json', RECORDED_TEXT[: len(RECORDED_TEXT) // 2],
               lambda s: len(s.objects) <= 1, False),
    EngineCase('no-recorded-output', None, lambda s: not s.objects, True),
]  # fmt: skip


@pytest.mark.parametrize('case', ENGINE_CASES, ids=[case_id(case) for case in ENGINE_CASES])
def test_bad_engine_output_is_reported_and_the_stream_goes_on(
    live_node: Any, case: EngineCase
) -> None:
    live = live_node(texts={1: case.text})
    live.feed_good(live.stamps[0])
    before = live.errors.get('engine_output', 0)
    live.feed(*make_messages(live.stamps[1]))
    assert wait_until(lambda: live.scene_at(live.stamps[1]) is not None), live.errors
    scene = live.scene_at(live.stamps[1])
    assert case.check(scene), scene
    if case.reported:
        assert live.errors.get('engine_output', 0) > before
        assert scene.error and scene.error in live.last_error
    live.feed_good(live.stamps[2])
    assert live.is_active()


# ----------------------------------------------------------------------------- parameters


PARAMETER_CASES = [
    ('rate-out-of-range', 'rate_hz', -3.0, 'rate_hz'),
    ('rate-wrong-type', 'rate_hz', 'fast', ''),
    ('max-objects-zero', 'max_objects', 0, 'max_objects'),
    ('max-objects-wrong-type', 'max_objects', 2.5, ''),
    ('vocabulary-wrong-type', 'vocabulary', 5, ''),
    ('min-depth-above-max-depth', 'min_depth_m', 50.0, 'min_depth_m'),
    ('max-frame-age-zero', 'max_frame_age_s', 0.0, 'max_frame_age_s'),
    ('read-only-engine', 'engine', 'openai', 'read-only'),
]


@pytest.mark.parametrize(
    'name, value, reason', [case[1:] for case in PARAMETER_CASES],
    ids=[case[0] for case in PARAMETER_CASES],
)  # fmt: skip
def test_bad_parameter_is_refused_with_a_reason(
    live_node: Any, name: str, value: Any, reason: str
) -> None:
    from rclpy.parameter import Parameter

    live = live_node()
    old = live.node.get_parameter(name).value
    # The same call `ros2 param set` ends in (the parameter service's set_parameters path).
    result = live.node.set_parameters_atomically([Parameter(name, value=value)])
    assert not result.successful
    assert result.reason and reason.lower() in result.reason.lower(), result.reason
    assert live.node.get_parameter(name).value == old
    live.feed_good(live.stamps[1])
    assert live.is_active()


# ----------------------------------------------------------------------------- services


def query(live: LiveNode, question: str, stamp_ns: int = 0) -> Any:
    from spatial_vlm_ros.ros.conversions import ns_to_stamp
    from spatial_vlm_ros.srv import SpatialQuery

    request = SpatialQuery.Request(question=question, stamp=ns_to_stamp(stamp_ns))
    return live.call(live.node._spatial_services.on_query, request, SpatialQuery.Response())


def locate(live: LiveNode, description: str, target_frame: str = '') -> Any:
    from spatial_vlm_ros.srv import LocateObject

    request = LocateObject.Request(description=description, target_frame=target_frame)
    return live.call(live.node._spatial_services.on_locate, request, LocateObject.Response())


@dataclass(frozen=True)
class ServiceCase:
    id: str
    call: Callable[[LiveNode], Any]
    refused: Callable[[Any], bool]
    before_frames: bool = False  # call before any frame arrived


SERVICE_CASES = [
    ServiceCase('query-empty', lambda live: query(live, ''),
                lambda r: not r.success and 'question' in r.message),
    ServiceCase('query-whitespace', lambda live: query(live, ' \t\n '),
                lambda r: not r.success and 'question' in r.message),
    ServiceCase('query-100-kB', lambda live: query(live, 'where is the mug? ' * 5700),
                lambda r: not r.success and '4096' in r.message),
    ServiceCase('query-4097-bytes-of-multibyte-text', lambda live: query(live, 'é' * 2049),
                lambda r: not r.success and '4096' in r.message),
    ServiceCase('query-before-any-frame', lambda live: query(live, 'Which is closer?'),
                lambda r: not r.success and 'no paired' in r.message, before_frames=True),
    ServiceCase('query-unknown-stamp', lambda live: query(live, 'Which is closer?', 12345),
                lambda r: not r.success and 'stamp' in r.message),
    ServiceCase('query-unparseable-answer', lambda live: query(live, 'What colour is the mug?'),
                lambda r: not r.success and r.answer == ''
                and r.message.startswith('no answer: no structured answer')),
    # Unparseable too, but the geometry answers "which is closer": measured, and said so.
    ServiceCase('query-unparseable-answer-geometry', lambda live: query(live, 'Which is closer?'),
                lambda r: r.success and 'answered from the geometry' in r.message
                and sorted(m.kind for m in r.measurements) == ['range', 'range']),
    ServiceCase('locate-empty-description', lambda live: locate(live, ''),
                lambda r: not r.found and 'description' in r.reason),
    ServiceCase('locate-description-over-512-bytes', lambda live: locate(live, 'mug ' * 200),
                lambda r: not r.found and '512' in r.reason),
    ServiceCase('locate-before-any-frame', lambda live: locate(live, 'mug'),
                lambda r: not r.found and 'no paired' in r.reason, before_frames=True),
    ServiceCase('locate-unknown-target-frame', lambda live: locate(live, 'mug', 'no_such_frame'),
                lambda r: not r.found and 'no_such_frame' in r.reason),
    ServiceCase('locate-absent-object', lambda live: locate(live, 'giraffe'),
                lambda r: not r.found and 'giraffe' in r.reason),
]  # fmt: skip


@pytest.mark.parametrize('case', SERVICE_CASES, ids=[case.id for case in SERVICE_CASES])
def test_bad_service_request_gets_a_typed_reply(live_node: Any, case: ServiceCase) -> None:
    unparseable = case.id.startswith('query-unparseable-answer')
    live = live_node(answers={0: '', 1: ''} if unparseable else None)
    if not case.before_frames:
        live.feed_good(live.stamps[0])
    reply = case.call(live)
    assert case.refused(reply), reply
    assert live.is_active()
    # Nothing was lost: the stream and a good request still work afterwards.
    live.feed_good(live.stamps[2])
    good = query(live, 'Which is closer?')
    assert good.success and good.answer.startswith(ANSWER_TEXT + ' Measured: '), good.message
    found = locate(live, 'mug')
    assert found.found and found.pose.pose.position.z == pytest.approx(1.2, abs=0.05)


def test_query_by_stamp_reaches_back_query_buffer_frames(live_node: Any) -> None:
    live = live_node(query_buffer_frames=2)
    for stamp in live.stamps[:3]:
        live.feed_good(stamp)
    # Frames 1 and 2 are buffered; frame 0 was pushed out (2 frames kept).
    for stamp in live.stamps[1:3]:
        kept = query(live, 'Which is closer?', stamp)
        assert kept.success, kept.message
    gone = query(live, 'Which is closer?', live.stamps[0])
    assert not gone.success and 'stamp' in gone.message
