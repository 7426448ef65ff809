# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Offline replay: rosbag2 in, scenes.jsonl + an MCAP bag + report.html out, no ROS needed.

The loop runs at bag time, as fast as the engine allows: messages are read in recording order,
paired by header stamp (:class:`~spatial_vlm_ros.core.pairing.StampPairer`, the node's pairer),
thinned by ``rate_hz`` (at most one frame per ``1 / rate_hz`` seconds of bag time; 0 keeps
every paired frame), and each kept frame goes through the same
:class:`~spatial_vlm_ros.pipeline.SpatialPipeline` the node uses.

Outputs (all in ``out_dir``), written as the replay goes so an interruption leaves them valid:

* ``scenes.jsonl``: one :func:`~spatial_vlm_ros.core.scene_json.scene_to_json` line per scene,
  flushed per line (docs/SCENES_JSON.md);
* ``scenes_bag/``: a rosbag2 MCAP bag (zstd chunks) with the input camera topics (and /tf,
  /tf_static when present) plus ``/spatial_vlm/scene``, ``/spatial_vlm/markers`` and
  ``/spatial_vlm/annotated_image`` and, with the object memory, ``/spatial_vlm/objects``
  (ObjectMemory after each scene) and ``/spatial_vlm/memory_markers``, each written at the log
  time of the frame's RGB message;
* ``report.html``: :mod:`spatial_vlm_ros.replay.report`, with the memory's map at the end.

Frames: the target, relation and memory frames are looked up in the bag's own ``/tf`` and
``/tf_static`` at each image stamp (:class:`~spatial_vlm_ros.replay.bag_io.BagTransforms`),
as the node does with TF. The memory is saved to ``memory_file`` at the end when one is set.

Ctrl-C (or cancellation) stops after the current frame; the bag is closed and the report
written in a ``finally``, and the summary says ``interrupted``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
import functools
import logging
from pathlib import Path
import shutil
import time
from typing import Any, TextIO

from rosbags.rosbag2 import (
    CompressionFormat,
    CompressionMode,
    StoragePlugin,
    Writer,
    WriterError,
)
from tqdm import tqdm

from spatial_vlm_ros.core.annotate import annotate_scene
from spatial_vlm_ros.core.camera import CameraInfoError
from spatial_vlm_ros.core.image_decoding import (
    ImageDecodeError,
    UnknownEncodingError,
    decode_color_any,
    decode_depth_any,
)
from spatial_vlm_ros.core.markers import memory_markers, scene_markers
from spatial_vlm_ros.core.memory import ObjectMemory
from spatial_vlm_ros.core.pairing import (
    DEPTH,
    INFO,
    RGB,
    PairingConfig,
    RgbdSet,
    StampPairer,
)
from spatial_vlm_ros.core.scene_json import scene_to_json
from spatial_vlm_ros.core.stamps import header_stamp_ns
from spatial_vlm_ros.core.types import RgbdFrame, Scene, SpatialVlmError, StageTimings
from spatial_vlm_ros.pipeline import SpatialPipeline
from spatial_vlm_ros.replay import msgs
from spatial_vlm_ros.replay.bag_io import (
    BagError,
    BagMessage,
    BagReader,
    BagTransforms,
    CameraTopics,
)
from spatial_vlm_ros.replay.raw_outputs import RawOutputTap
from spatial_vlm_ros.replay.report import ReportBuilder, ReportMeta

LOGGER = logging.getLogger(__name__)

SCENE_TOPIC = '/spatial_vlm/scene'
MARKERS_TOPIC = '/spatial_vlm/markers'
ANNOTATED_TOPIC = '/spatial_vlm/annotated_image'
OBJECTS_TOPIC = '/spatial_vlm/objects'
MEMORY_MARKERS_TOPIC = '/spatial_vlm/memory_markers'
SCENES_FILE = 'scenes.jsonl'
BAG_DIR = 'scenes_bag'
REPORT_FILE = 'report.html'
EXTRA_COPIED_TOPICS = ('/tf', '/tf_static')


class ReplayError(SpatialVlmError):
    """The replay cannot start or continue (bad options, unusable output directory)."""


@dataclass(frozen=True)
class ReplayOptions:
    bag: Path
    out_dir: Path
    rgb_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    rate_hz: float = 0.0  # frames per second of bag time; 0 = every paired frame
    max_frames: int = 0  # stop after this many processed frames; 0 = no limit
    pairing: PairingConfig = field(default_factory=PairingConfig)
    write_bag: bool = True
    write_report: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.rate_hz < 0:
            raise ReplayError(f'--rate must be >= 0 (0 = every frame), got {self.rate_hz}')
        if self.max_frames < 0:
            raise ReplayError(f'max_frames must be >= 0, got {self.max_frames}')


@dataclass
class ReplaySummary:
    bag: Path
    out_dir: Path
    topics: CameraTopics | None = None
    storage: str = ''
    engine: str = ''
    model_id: str = ''
    frames_paired: int = 0
    frames_processed: int = 0
    frames_skipped_by_rate: int = 0
    frames_failed_to_decode: int = 0
    scenes_with_error: int = 0
    objects: int = 0
    remembered_objects: int = 0  # in the object memory at the end (0 without one)
    memory_path: Path | None = None  # where the memory was saved
    relations: int = 0
    interrupted: bool = False
    elapsed_s: float = 0.0
    pairing: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    scenes_path: Path | None = None
    bag_path: Path | None = None
    report_path: Path | None = None


class BagTimeRateLimiter:
    """
    Keeps the first frame of every ``1 / rate_hz`` slot of bag time.

    Slots count from the first frame. Slots rather than "period since the last kept frame" so
    that stamp jitter cannot halve the rate when the input rate is a multiple of the requested
    one.
    """

    def __init__(self, rate_hz: float) -> None:
        self.period_ns = round(1e9 / rate_hz) if rate_hz > 0 else 0
        self._origin_ns: int | None = None
        self._last_slot: int | None = None

    def accept(self, stamp_ns: int) -> bool:
        if self.period_ns == 0:
            return True
        if self._origin_ns is None:
            self._origin_ns = stamp_ns
        slot = (stamp_ns - self._origin_ns) // self.period_ns
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


def check_decodable(reader: BagReader, topics: CameraTopics) -> None:
    """
    Decode the first RGB and depth message, so an unsupported encoding fails early.

    Before any output is written, with the decoder's typed error and the topic name.
    """
    for topic, decode in (
        (topics.rgb.name, decode_color_any),
        (topics.depth.name, decode_depth_any),
    ):
        first = next(iter(reader.messages([topic])), None)
        if first is None:
            continue
        try:
            decode(first.message)
        except UnknownEncodingError as error:
            raise UnknownEncodingError(f'{topic}: {error}') from error


class _Outputs:
    """scenes.jsonl, the output bag and the report; every part closes cleanly at any point."""

    def __init__(self, options: ReplayOptions, reader: BagReader) -> None:
        self.out_dir = options.out_dir
        self.scenes_path = self.out_dir / SCENES_FILE
        self.report_path = self.out_dir / REPORT_FILE if options.write_report else None
        self.bag_path = self.out_dir / BAG_DIR if options.write_bag else None
        self._reader = reader
        self._scenes: TextIO | None = None
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._scenes = self.scenes_path.open('w', encoding='utf-8')
            if self.bag_path is not None:
                _remove_previous_bag(self.bag_path)
                writer = Writer(self.bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
                # STORAGE mode = zstd-compressed MCAP chunks: standard MCAP that Foxglove and
                # `ros2 bag` read directly (FILE mode would wrap the whole file instead).
                writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
                writer.open()
                _fast_chunk_compression(writer)
                self._writer = writer
        except (OSError, WriterError) as error:
            self.close()
            raise ReplayError(f'cannot write outputs to {self.out_dir}: {error}') from error
        except BaseException:
            self.close()
            raise
        self.report = ReportBuilder()

    def _connection(self, topic: str, msgtype: str, typestore: Any, qos: Any = ()) -> Any:
        connection = self._connections.get(topic)
        if connection is None:
            assert self._writer is not None
            connection = self._writer.add_connection(
                topic, msgtype, typestore=typestore, offered_qos_profiles=qos
            )
            self._connections[topic] = connection
        return connection

    def copy_input(self, message: BagMessage) -> None:
        if self._writer is None:
            return
        connection = self._connections.get(message.topic)
        if connection is None:
            # Keep the recorded QoS so `ros2 bag play` of the output offers what the camera did.
            source = self._reader.connections([message.topic])[0]
            connection = self._connection(
                message.topic,
                message.msgtype,
                self._reader.typestore,
                self._reader.offered_qos(source),
            )
        self._writer.write(connection, message.log_time_ns, message.raw)

    def write_memory(self, memory: ObjectMemory, scene: Scene, log_time_ns: int) -> None:
        """Write the whole memory (``/spatial_vlm/objects``) and its markers after ``scene``."""
        if self._writer is None:
            return
        store = msgs.typestore()
        optical = memory.memory_frame == scene.camera_frame_id
        marker_set = memory_markers(
            memory.objects(), memory.memory_frame, memory.last_stamp_ns, optical=optical
        )
        outputs = (
            (OBJECTS_TOPIC, msgs.OBJECT_MEMORY_TYPE, msgs.object_memory_msg(memory)),
            (MEMORY_MARKERS_TOPIC, msgs.MARKER_ARRAY_TYPE, msgs.marker_array_msg(marker_set)),
        )
        for topic, msgtype, message in outputs:
            connection = self._connection(topic, msgtype, store)
            self._writer.write(connection, log_time_ns, msgs.serialize(message))

    def write_scene(
        self, scene: Scene, frame: RgbdFrame, log_time_ns: int, raw_text: str | None = None
    ) -> None:
        assert self._scenes is not None
        self._scenes.write(scene_to_json(scene) + '\n')
        self._scenes.flush()
        if self.report_path is None and self._writer is None:
            return  # nothing shows the annotated image
        annotated = annotate_scene(frame.rgb, scene)
        if self.report_path is not None:
            self.report.add(scene, annotated, frame=frame, raw_text=raw_text)
        if self._writer is None:
            return
        store = msgs.typestore()
        outputs = (
            (SCENE_TOPIC, msgs.SCENE_TYPE, msgs.scene_msg(scene)),
            (MARKERS_TOPIC, msgs.MARKER_ARRAY_TYPE, msgs.marker_array_msg(scene_markers(scene))),
            (
                ANNOTATED_TOPIC,
                msgs.IMAGE_TYPE,
                msgs.image_msg(scene.stamp_ns, scene.camera_frame_id, annotated, 'rgb8'),
            ),
        )
        for topic, msgtype, message in outputs:
            connection = self._connection(topic, msgtype, store)
            self._writer.write(connection, log_time_ns, msgs.serialize(message))

    def close(self) -> None:
        if self._scenes is not None:
            self._scenes.close()
            self._scenes = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


# zstd level of the output bag's chunks. rosbags compresses at zstd's default, 3; level 1 took
# 40 % of the time at 2 % more bytes on these chunks (camera frames and annotated images),
# where compression was a third of a replay's CPU time (docs/PERFORMANCE.md).
CHUNK_ZSTD_LEVEL = 1


def _fast_chunk_compression(writer: Writer) -> None:
    """
    Compress the MCAP chunks of ``writer`` at :data:`CHUNK_ZSTD_LEVEL`.

    rosbags has no setting for the level; its MCAP storage calls ``storage.compressor`` (the
    module-level ``zstd.compress``) on each chunk. Where that attribute is not there (another
    rosbags version), the default level stays: slower, same bag.
    """
    storage: Any = getattr(writer, 'storage', None)
    compressor = getattr(storage, 'compressor', None)
    if compressor is not None and getattr(storage, 'compression', '') == 'zstd':
        storage.compressor = functools.partial(compressor, level=CHUNK_ZSTD_LEVEL)


def _remove_previous_bag(path: Path) -> None:
    """Replace the output bag of an earlier run, but never a directory that is not one."""
    if not path.exists():
        return
    if path.is_dir() and all(
        child.name == 'metadata.yaml' or child.suffix in ('.mcap', '.db3', '.zstd')
        for child in path.iterdir()
    ):
        shutil.rmtree(path)
        return
    raise ReplayError(f'{path} exists and is not a bag from an earlier replay; remove it first')


async def replay_bag(
    options: ReplayOptions,
    pipeline: SpatialPipeline,
    *,
    on_scene: Callable[[Scene], None] | None = None,
) -> ReplaySummary:
    """Replay ``options.bag`` through ``pipeline`` (started and shut down here)."""
    started_s = time.perf_counter()
    summary = ReplaySummary(bag=options.bag, out_dir=options.out_dir)
    with BagReader(options.bag) as reader:
        topics = reader.select_camera_topics(
            options.rgb_topic, options.depth_topic, options.info_topic
        )
        summary.topics = topics
        summary.storage = reader.storage
        check_decodable(reader, topics)
        copied = [*topics.names, *(t for t in EXTRA_COPIED_TOPICS if t in reader.topics)]
        streams = {topics.rgb.name: RGB, topics.depth.name: DEPTH, topics.info.name: INFO}
        transforms = BagTransforms(options.bag)
        try:
            outputs = _Outputs(options, reader)
        except BaseException:
            transforms.close()
            raise
        summary.scenes_path, summary.bag_path = outputs.scenes_path, outputs.bag_path
        pairer = StampPairer(options.pairing)
        limiter = BagTimeRateLimiter(options.rate_hz)
        log_times: dict[int, int] = {}  # RGB header stamp -> its log time (output bag time)
        warnings_seen: set[str] = set()
        total = sum(reader.topics[name].message_count for name in copied)
        progress = tqdm(
            total=total, unit='msg', desc='replay', disable=not options.progress, leave=False
        )

        async def process(paired: RgbdSet) -> bool:
            """Run one paired frame; False once max_frames is reached."""
            summary.frames_paired += 1
            if not limiter.accept(paired.stamp_ns):
                summary.frames_skipped_by_rate += 1
                log_times.pop(paired.stamp_ns, None)
                return True
            decode_started_s = time.perf_counter()
            try:
                # The node's decoding (depth units, camera_intrinsics K or P).
                frame, frame_warnings = pipeline.decode_with_warnings(paired)
            except UnknownEncodingError:
                raise
            except (ImageDecodeError, CameraInfoError) as error:
                summary.frames_failed_to_decode += 1
                _note(summary, warnings_seen, f'frame {paired.stamp_ns} skipped: {error}')
                return True
            for warning in frame_warnings:
                _note(summary, warnings_seen, warning)
            decode_ms = 1e3 * (time.perf_counter() - decode_started_s)
            scene = await pipeline.perceive_frame(
                frame, transforms, timings=StageTimings(decode_ms=decode_ms)
            )
            for warning in scene.warnings:
                _note(summary, warnings_seen, warning)
            log_time_ns = log_times.pop(paired.stamp_ns, paired.stamp_ns)
            outputs.write_scene(scene, frame, log_time_ns, raw_outputs.take(frame.stamp_ns))
            if pipeline.memory is not None:
                outputs.write_memory(pipeline.memory, scene, log_time_ns)
            summary.frames_processed += 1
            summary.objects += len(scene.objects)
            summary.relations += len(scene.relations)
            summary.scenes_with_error += int(bool(scene.error))
            summary.engine = summary.engine or scene.engine
            summary.model_id = summary.model_id or scene.model_id
            progress.set_postfix(scenes=summary.frames_processed, refresh=False)
            if on_scene is not None:
                on_scene(scene)
            return not (options.max_frames and summary.frames_processed >= options.max_frames)

        # The report shows each frame's raw model output; the tap keeps it for the report.
        raw_outputs = RawOutputTap(pipeline.engine)
        pipeline.engine = raw_outputs
        try:
            await pipeline.start()
            keep_going = True
            for message in reader.messages(copied):
                outputs.copy_input(message)
                progress.update(1)
                stream = streams.get(message.topic)
                if stream is None:
                    continue
                # Some drivers leave header stamps at zero; the log time is then the best clock.
                stamp_ns = header_stamp_ns(message.message, 0) or message.log_time_ns
                if stream == RGB:
                    log_times[stamp_ns] = message.log_time_ns
                for paired in pairer.add(stream, stamp_ns, message.message):
                    keep_going = await process(paired)
                    if not keep_going:
                        break
                if not keep_going:
                    break
                _forget_unpaired(log_times, pairer)
            if keep_going:
                for paired in pairer.flush():
                    if not await process(paired):
                        break
        except (KeyboardInterrupt, asyncio.CancelledError):
            summary.interrupted = True
        finally:
            progress.close()
            summary.pairing = pairer.stats().as_flat_dict()
            transforms.close()
            if transforms.bad_transforms:
                _note(
                    summary,
                    warnings_seen,
                    f'{transforms.bad_transforms} malformed transform(s) in the bag were skipped',
                )
            summary.elapsed_s = time.perf_counter() - started_s
            try:
                if pipeline.memory is not None:
                    _finish_memory(pipeline, summary, outputs.report, warnings_seen)
            finally:
                try:
                    outputs.close()
                finally:
                    if outputs.report_path is not None:
                        summary.report_path = outputs.report.write(
                            outputs.report_path, _report_meta(summary, pipeline)
                        )
                    await _shutdown_quietly(pipeline)
                    pipeline.engine = raw_outputs.inner
    return summary


def _finish_memory(
    pipeline: SpatialPipeline, summary: ReplaySummary, report: ReportBuilder, seen: set[str]
) -> None:
    """Put the memory's map in the report; save the memory to ``memory_file`` (if set)."""
    memory = pipeline.memory
    assert memory is not None
    remembered = memory.objects()
    summary.remembered_objects = len(remembered)
    report.set_memory(
        [
            {
                'id': item.id,
                'label': item.label,
                'position': item.position,
                'position_covariance': item.covariance,
                'state': int(item.state),
                'sightings': item.sightings,
                'existence': item.existence,
            }
            for item in remembered
        ],
        memory.memory_frame,
    )
    try:
        summary.memory_path = pipeline.save_memory()
    except OSError as error:
        _note(summary, seen, f'cannot save the object memory: {error}')


def _forget_unpaired(log_times: dict[int, int], pairer: StampPairer) -> None:
    # RGB frames the pairer dropped never come back; keep the map from growing on long bags.
    limit = 4 * pairer.config.queue_size + 16
    while len(log_times) > limit:
        log_times.pop(next(iter(log_times)))


def _note(summary: ReplaySummary, seen: set[str], warning: str) -> None:
    if warning not in seen:
        seen.add(warning)
        summary.warnings.append(warning)
        LOGGER.warning('%s', warning)


async def _shutdown_quietly(pipeline: SpatialPipeline) -> None:
    try:
        await pipeline.shutdown()
    except Exception as error:  # the outputs matter more than a shutdown error
        LOGGER.warning('engine shutdown failed: %s', error, exc_info=True)


def _report_meta(summary: ReplaySummary, pipeline: SpatialPipeline) -> ReportMeta:
    topics: tuple[tuple[str, str], ...] = ()
    if summary.topics is not None:
        topics = (
            ('RGB', f'{summary.topics.rgb.name} ({summary.topics.rgb.msgtype})'),
            ('depth', f'{summary.topics.depth.name} ({summary.topics.depth.msgtype})'),
            ('CameraInfo', summary.topics.info.name),
        )
    outputs = tuple(
        (name, str(path))
        for name, path in (
            ('scenes', summary.scenes_path),
            ('bag', summary.bag_path),
            ('object memory', summary.memory_path),
        )
        if path is not None
    )
    notes = list(summary.warnings)
    if summary.frames_failed_to_decode:
        notes.append(f'{summary.frames_failed_to_decode} frame(s) could not be decoded')
    return ReportMeta(
        bag=str(summary.bag),
        engine=summary.engine or getattr(pipeline.engine, 'name', ''),
        model_id=summary.model_id or pipeline.model_id,
        topics=topics,
        frames_paired=summary.frames_paired,
        frames_skipped_by_rate=summary.frames_skipped_by_rate,
        interrupted=summary.interrupted,
        notes=tuple(notes),
        outputs=outputs,
    )


__all__ = [
    'ANNOTATED_TOPIC',
    'BAG_DIR',
    'MARKERS_TOPIC',
    'MEMORY_MARKERS_TOPIC',
    'OBJECTS_TOPIC',
    'REPORT_FILE',
    'SCENES_FILE',
    'SCENE_TOPIC',
    'BagError',
    'BagTimeRateLimiter',
    'ReplayError',
    'ReplayOptions',
    'ReplaySummary',
    'check_decodable',
    'replay_bag',
]
