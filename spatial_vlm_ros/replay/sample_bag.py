# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Build RGB-D rosbag2 bags without ROS: the shipped sample bag and small bags for tests.

The sample bag (``spatial-vlm build-sample-bag``) is made from the real, hand-labelled RGB-D
frames in ``data/rgbd`` (see its labels.json and PROVENANCE.md):

* ``/camera/color/image_raw/compressed``: ``sensor_msgs/CompressedImage``, JPEG (quality 95,
  4:4:4 chroma). Compressed because raw rgb8 frames would put the bag far over its size budget;
* ``/camera/depth/image_raw``: ``sensor_msgs/Image`` 16UC1, millimetres (0 = no depth),
  registered to the colour image;
* ``/camera/color/camera_info``: ``sensor_msgs/CameraInfo``, frame ``camera_color_optical_frame``.

Each real frame is repeated ``repeats`` times at ``rate_hz`` (so pairing and ``--rate`` have
something to do); depth stamps trail the RGB stamps by a few milliseconds, as with a real
driver. Storage is MCAP with zstd chunks. Alongside goes ``recording.jsonl`` for the recorded
engine: one line per RGB stamp whose text is the frame's HUMAN LABELS written the way Qwen3-VL
answers a grounding prompt (a fenced JSON list of ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``
on the 0-1000 relative grid). They are not model output, and every line says so.

Bags for tests and benchmarks may also carry ``/tf`` and ``/tf_static``
(:class:`TfSample`), as a robot's recording does.

Everything is deterministic: the same inputs give byte-identical recordings and bag messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import json
from pathlib import Path
import shutil
import tempfile
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox, SpatialVlmError
from spatial_vlm_ros.replay import msgs

RGB_TOPIC = '/camera/color/image_raw'
RGB_COMPRESSED_TOPIC = '/camera/color/image_raw/compressed'
DEPTH_TOPIC = '/camera/depth/image_raw'
INFO_TOPIC = '/camera/color/camera_info'
CAMERA_FRAME = 'camera_color_optical_frame'
START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z: a fixed, readable origin
DEPTH_OFFSET_NS = 3_000_000  # depth stamped 3 ms after RGB (approximate pairing)
RELATIVE_SCALE = 1000  # Qwen3-VL grounding grid
HUMAN_LABELS_MODEL_ID = 'human-labels (NOT model output)'
HUMAN_LABELS_ENGINE = 'human'
JPEG_QUALITY = 95


class SampleBagError(SpatialVlmError):
    """The source frames or labels are missing or malformed."""


@dataclass(frozen=True)
class LabeledBox:
    label: str
    box: PixelBox  # RGB pixels, half-open


@dataclass(frozen=True)
class SampleFrame:
    """One real RGB-D frame: RGB, depth in millimetres (0 = invalid), intrinsics, labels."""

    name: str
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) RGB
    depth_mm: npt.NDArray[np.uint16]  # (H, W)
    intrinsics: CameraIntrinsics
    labels: tuple[LabeledBox, ...] = ()


@dataclass(frozen=True)
class BagLayout:
    """How frames become messages."""

    repeats: int = 4
    rate_hz: float = 2.0
    start_ns: int = START_NS
    compressed_rgb: bool = True
    storage: StoragePlugin = StoragePlugin.MCAP
    rgb_topic: str = ''  # '' = RGB_COMPRESSED_TOPIC or RGB_TOPIC by compressed_rgb
    depth_topic: str = DEPTH_TOPIC
    info_topic: str = INFO_TOPIC
    frame_id: str = CAMERA_FRAME
    rgb_encoding: str = 'rgb8'  # raw RGB only: 'rgb8' or 'bgr8'

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate_hz)

    @property
    def resolved_rgb_topic(self) -> str:
        return self.rgb_topic or (RGB_COMPRESSED_TOPIC if self.compressed_rgb else RGB_TOPIC)

    def rgb_stamps(self, frame_count: int) -> list[list[int]]:
        """RGB header stamps, per frame."""
        return [
            [
                self.start_ns + (index * self.repeats + repeat) * self.period_ns
                for repeat in range(self.repeats)
            ]
            for index in range(frame_count)
        ]


@dataclass(frozen=True)
class TfSample:
    """
    One transform of a bag's ``/tf`` (or ``/tf_static`` when ``static``).

    ``T_parent_from_child`` at ``stamp_ns``, translation in metres, quaternion ``(x, y, z, w)``.
    """

    stamp_ns: int
    parent: str
    child: str
    translation: tuple[float, float, float]
    quaternion: tuple[float, float, float, float]
    static: bool = False


TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
TF_LOG_DELAY_NS = 1_000_000  # a transform is logged 1 ms after its stamp


@dataclass(frozen=True)
class SampleBagResult:
    bag_path: Path
    recording_path: Path | None
    frames: int
    repeats: int
    bag_bytes: int
    recording_lines: int


def _remove_bag(path: Path) -> None:
    if path.exists():
        if not (path / 'metadata.yaml').is_file() and any(path.iterdir()):
            raise SampleBagError(f'{path} exists and is not a rosbag2 directory; not replacing it')
        shutil.rmtree(path)


def write_rgbd_bag(
    path: str | Path,
    frames: Sequence[SampleFrame],
    layout: BagLayout,
    transforms: Sequence[TfSample] = (),
) -> Path:
    """
    Write ``frames`` as an RGB-D bag at ``path`` (replaced if it is an existing bag).

    With ``transforms`` on ``/tf`` and ``/tf_static`` (one message per sample; static ones
    logged before the first frame).
    """
    if not frames:
        raise SampleBagError('no frames to write')
    bag_path = Path(path)
    _remove_bag(bag_path)
    bag_path.parent.mkdir(parents=True, exist_ok=True)
    store = msgs.typestore()
    rgb_type = msgs.COMPRESSED_IMAGE_TYPE if layout.compressed_rgb else msgs.IMAGE_TYPE
    writer = Writer(bag_path, version=9, storage_plugin=layout.storage)
    if layout.storage == StoragePlugin.MCAP:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        rgb_conn = writer.add_connection(layout.resolved_rgb_topic, rgb_type, typestore=store)
        depth_conn = writer.add_connection(layout.depth_topic, msgs.IMAGE_TYPE, typestore=store)
        info_conn = writer.add_connection(
            layout.info_topic, msgs.CAMERA_INFO_TYPE, typestore=store
        )
        for frame, stamps in zip(frames, layout.rgb_stamps(len(frames)), strict=True):
            rgb_bytes = _rgb_bytes(frame, layout)
            for stamp_ns in stamps:
                depth_stamp = stamp_ns + DEPTH_OFFSET_NS
                # Log (receive) times trail the stamps a little, in a realistic order.
                entries = [
                    (
                        stamp_ns + 5_000_000,
                        info_conn,
                        msgs.camera_info_msg(stamp_ns, layout.frame_id, frame.intrinsics),
                    ),
                    (stamp_ns + 10_000_000, rgb_conn, rgb_bytes(stamp_ns)),
                    (
                        depth_stamp + 10_000_000,
                        depth_conn,
                        msgs.image_msg(depth_stamp, layout.frame_id, frame.depth_mm, '16UC1'),
                    ),
                ]
                for log_time_ns, connection, message in entries:
                    data = message if isinstance(message, bytes) else msgs.serialize(message)
                    writer.write(connection, log_time_ns, data)
        _write_transforms(writer, store, transforms, layout.start_ns)
    return bag_path


def _write_transforms(
    writer: Writer, store: Any, transforms: Sequence[TfSample], start_ns: int
) -> None:
    connections: dict[bool, Any] = {}
    for sample in transforms:
        if sample.static not in connections:
            topic = TF_STATIC_TOPIC if sample.static else TF_TOPIC
            connections[sample.static] = writer.add_connection(
                topic, msgs.TF_MESSAGE_TYPE, typestore=store
            )
        message = msgs.tf_message(
            [(sample.stamp_ns, sample.parent, sample.child, sample.translation, sample.quaternion)]
        )
        log_time_ns = start_ns if sample.static else sample.stamp_ns + TF_LOG_DELAY_NS
        writer.write(connections[sample.static], log_time_ns, msgs.serialize(message))


def _rgb_bytes(frame: SampleFrame, layout: BagLayout) -> Any:
    """Return a function stamp -> serialized RGB message (the image is encoded once per frame)."""
    if layout.compressed_rgb:
        ok, encoded = cv2.imencode(
            '.jpg',
            cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
            # 4:4:4 chroma: TUM's colour noise loses ~7 dB PSNR to 4:2:0 subsampling.
            [
                cv2.IMWRITE_JPEG_QUALITY,
                JPEG_QUALITY,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
            ],
        )
        if not ok:
            raise SampleBagError(f'cannot JPEG-encode frame {frame.name}')
        payload = np.asarray(encoded, dtype=np.uint8).ravel()

        def compressed(stamp_ns: int) -> bytes:
            return msgs.serialize(
                msgs.typestore().types[msgs.COMPRESSED_IMAGE_TYPE](
                    header=msgs.header_msg(stamp_ns, layout.frame_id),
                    format='rgb8; jpeg compressed bgr8',
                    data=payload,
                )
            )

        return compressed
    pixels = frame.rgb if layout.rgb_encoding == 'rgb8' else frame.rgb[:, :, ::-1]

    def raw(stamp_ns: int) -> bytes:
        return msgs.serialize(
            msgs.image_msg(
                stamp_ns, layout.frame_id, np.ascontiguousarray(pixels), layout.rgb_encoding
            )
        )

    return raw


# ----------------------------------------------------------------------------- recording


def to_relative_1000(box: PixelBox, width: int, height: int) -> list[int]:
    """
    Convert a pixel box to Qwen3-VL's 0..1000 grid (``x / W * 1000``).

    Rounded to integers as the model writes them.
    """
    values = (
        box.x_min / width,
        box.y_min / height,
        box.x_max / width,
        box.y_max / height,
    )
    return [min(max(round(v * RELATIVE_SCALE), 0), RELATIVE_SCALE) for v in values]


def grounding_text(labels: Sequence[LabeledBox], width: int, height: int) -> str:
    """
    Write the labels as a Qwen3-VL grounding answer.

    A ```json fenced list, one item per line.
    """
    items = [
        json.dumps(
            {'bbox_2d': to_relative_1000(item.box, width, height), 'label': item.label},
            ensure_ascii=False,
        )
        for item in labels
    ]
    body = ',\n\t'.join(items)
    return f'```json\n[\n\t{body}\n]\n```'


def write_recording(path: str | Path, frames: Sequence[SampleFrame], layout: BagLayout) -> int:
    """``recording.jsonl`` for the recorded engine: one line per RGB stamp; returns the count."""
    lines = []
    for frame, stamps in zip(frames, layout.rgb_stamps(len(frames)), strict=True):
        height, width = frame.rgb.shape[:2]
        text = grounding_text(frame.labels, width, height)
        for stamp_ns in stamps:
            record = {
                'stamp_ns': stamp_ns,
                'task': 'ground',
                'model_id': HUMAN_LABELS_MODEL_ID,
                'engine': HUMAN_LABELS_ENGINE,
                'source': f'hand labels of data/rgbd frame {frame.name}; not model output',
                'text': text,
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return len(lines)


def bag_size_bytes(path: Path) -> int:
    return sum(child.stat().st_size for child in path.rglob('*') if child.is_file())


# ----------------------------------------------------------------------------- data/rgbd


def load_labeled_frame(folder: str | Path) -> SampleFrame:
    """
    One ``data/rgbd/<name>/`` folder.

    Colour PNG, 16-bit depth PNG in its ``depth_scale`` units (converted here to millimetres),
    intrinsics and hand labels from labels.json.
    """
    directory = Path(folder)
    labels_path = directory / 'labels.json'
    try:
        spec = json.loads(labels_path.read_text(encoding='utf-8'))
        rgb_path = directory / spec.get('image', 'color.png')
        depth_path = directory / spec.get('depth', 'depth.png')
        depth_scale = float(spec['depth_scale'])
        k = spec['intrinsics']
        intrinsics = CameraIntrinsics(
            fx=float(k['fx']),
            fy=float(k['fy']),
            cx=float(k['cx']),
            cy=float(k['cy']),
            width=int(k['width']),
            height=int(k['height']),
        )
        labels = tuple(
            LabeledBox(str(item['label']), PixelBox(*(float(v) for v in item['bbox'])))
            for item in spec['objects']
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SampleBagError(f'{labels_path}: unusable labels ({error})') from error
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if bgr is None or depth is None:
        raise SampleBagError(f'{directory}: cannot read {rgb_path.name} or {depth_path.name}')
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise SampleBagError(f'{depth_path}: expected 16-bit single-channel depth')
    if depth.shape != bgr.shape[:2] or (intrinsics.width, intrinsics.height) != (
        bgr.shape[1],
        bgr.shape[0],
    ):
        raise SampleBagError(f'{directory}: colour, depth and intrinsics sizes differ')
    # REP 118 16UC1 depth is millimetres; TUM stores 1/5000 m, so convert (0 stays invalid).
    millimetres = np.rint(depth.astype(np.float64) * depth_scale * 1000.0)
    if millimetres.max() > np.iinfo(np.uint16).max:
        raise SampleBagError(f'{depth_path}: depth beyond 65.535 m after conversion')
    return SampleFrame(
        name=directory.name,
        rgb=np.ascontiguousarray(bgr[:, :, ::-1]),
        depth_mm=millimetres.astype(np.uint16),
        intrinsics=intrinsics,
        labels=labels,
    )


def load_labeled_frames(source: str | Path) -> list[SampleFrame]:
    """Every labelled frame folder under ``source``, in name order."""
    root = Path(source)
    folders = sorted(path.parent for path in root.glob('*/labels.json'))
    if not folders:
        raise SampleBagError(f'no labelled frames (*/labels.json) under {root}')
    return [load_labeled_frame(folder) for folder in folders]


SAMPLE_LAYOUT = BagLayout()
RECORDING_NAME = 'recorded.jsonl'


def build_sample_bag(
    source: str | Path, out_dir: str | Path, layout: BagLayout = SAMPLE_LAYOUT
) -> SampleBagResult:
    """
    (Re)build the sample bag in ``out_dir`` from the frames under ``source``.

    ``out_dir`` itself is the rosbag2 directory (metadata.yaml + ``<name>.mcap``) and also holds
    ``recorded.jsonl``; other files there (README, PROVENANCE) are left alone.
    """
    frames = load_labeled_frames(source)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        # rosbags names the storage file after the bag directory; build under the same name.
        staged = write_rgbd_bag(Path(scratch) / target.name, frames, layout)
        for old in [target / 'metadata.yaml', *target.glob('*.mcap'), *target.glob('*.db3')]:
            old.unlink(missing_ok=True)
        for produced in staged.iterdir():
            shutil.move(str(produced), target / produced.name)
    recording = target / RECORDING_NAME
    lines = write_recording(recording, frames, layout)
    return SampleBagResult(
        bag_path=target,
        recording_path=recording,
        frames=len(frames),
        repeats=layout.repeats,
        bag_bytes=sum(path.stat().st_size for path in target.glob('*.mcap')),
        recording_lines=lines,
    )


def synthetic_frame(
    name: str = 'synthetic',
    width: int = 64,
    height: int = 48,
    seed: int = 0,
) -> SampleFrame:
    """
    Build a small deterministic frame for tests of the bag plumbing.

    Two boxes at known depths.
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    depth = np.full((height, width), 3000, dtype=np.uint16)
    left = PixelBox(width * 0.1, height * 0.3, width * 0.4, height * 0.7)
    right = PixelBox(width * 0.6, height * 0.3, width * 0.9, height * 0.7)
    depth[int(left.y_min) : int(left.y_max), int(left.x_min) : int(left.x_max)] = 1000
    depth[int(right.y_min) : int(right.y_max), int(right.x_min) : int(right.x_max)] = 1500
    focal = width * 0.8
    intrinsics = CameraIntrinsics(
        fx=focal, fy=focal, cx=(width - 1) / 2, cy=(height - 1) / 2, width=width, height=height
    )
    return SampleFrame(
        name, rgb, depth, intrinsics, (LabeledBox('cup', left), LabeledBox('book', right))
    )


__all__ = [
    'BagLayout',
    'build_sample_bag',
    'load_labeled_frame',
    'load_labeled_frames',
    'LabeledBox',
    'SampleBagError',
    'SampleBagResult',
    'SampleFrame',
    'TfSample',
    'bag_size_bytes',
    'grounding_text',
    'synthetic_frame',
    'to_relative_1000',
    'write_recording',
    'write_rgbd_bag',
]
