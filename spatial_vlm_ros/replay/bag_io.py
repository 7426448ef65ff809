# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Read rosbag2 recordings (sqlite3 or MCAP storage) without ROS, and find the camera topics.

Topic detection, when a topic is not named explicitly:

* RGB: ``sensor_msgs/Image`` or ``CompressedImage`` whose name does not mention depth; names
  with ``color``/``rgb`` win, a raw Image wins over its ``/compressed`` twin.
* Depth: Image or CompressedImage (``compressedDepth``) whose name mentions depth; depth
  registered to the colour camera (``aligned``/``registered`` in the name) wins.
* CameraInfo: the one next to the RGB topic (``/camera/color/camera_info`` for
  ``/camera/color/image_raw``), else one that mentions ``color``/``rgb``, else the only one.

A tie between equally good candidates is an error that lists them, never a silent guess.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection, ConnectionExtRosbag2, Qos

from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.replay import msgs

IMAGE_TYPES = (msgs.IMAGE_TYPE, msgs.COMPRESSED_IMAGE_TYPE)
OWN_TOPIC_PREFIX = '/spatial_vlm/'  # topics this package writes; never inputs


class BagError(SpatialVlmError):
    """The bag cannot be used (missing, unreadable, empty, or without the needed topics)."""


class BagNotFoundError(BagError):
    pass


class EmptyBagError(BagError):
    pass


class MissingTopicError(BagError):
    pass


class AmbiguousTopicError(MissingTopicError):
    """Several topics fit one role equally well; the user has to name one."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    message_count: int


@dataclass(frozen=True)
class CameraTopics:
    """The three streams an RGB-D replay needs."""

    rgb: TopicInfo
    depth: TopicInfo
    info: TopicInfo

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.rgb.name, self.depth.name, self.info.name)


@dataclass(frozen=True)
class BagMessage:
    """
    One message of a bag.

    ``log_time_ns`` is the recording time, ``message`` the deserialized rosbags object, ``raw``
    its CDR bytes (copied unchanged into output bags).
    """

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    message: Any


def resolve_bag_path(path: str | Path) -> Path:
    """
    Return the rosbag2 directory for ``path``.

    ``path`` is the directory, its metadata.yaml, or one of its storage files.
    """
    candidate = Path(path).expanduser()
    if not candidate.exists():
        raise BagNotFoundError(f'bag not found: {candidate}')
    if candidate.suffix == '.bag':
        raise BagError(
            f'{candidate} is a ROS 1 bag; convert it first (`rosbags-convert --src {candidate}`)'
        )
    if candidate.is_file():
        candidate = candidate.parent
    if not (candidate / 'metadata.yaml').is_file():
        raise BagError(
            f'{candidate} is not a rosbag2 directory (it has no metadata.yaml); pass the '
            'directory `ros2 bag record` wrote'
        )
    return candidate


class BagReader:
    """A rosbag2 recording opened for reading; use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = resolve_bag_path(path)
        self._reader = AnyReader([self.path], default_typestore=msgs.typestore())
        self._open = False

    def __enter__(self) -> BagReader:
        try:
            self._reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as error:
            raise BagError(f'cannot read bag {self.path}: {error}') from error
        self._open = True
        if not self._reader.connections or self._reader.message_count == 0:
            self.close()
            raise EmptyBagError(f'bag {self.path} contains no messages')
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._open:
            self._reader.close()
            self._open = False

    @property
    def storage(self) -> str:
        """``mcap`` or ``sqlite3``."""
        suffixes = {child.suffix for child in self.path.iterdir()}
        if '.mcap' in suffixes:
            return 'mcap'
        return 'sqlite3' if '.db3' in suffixes else 'unknown'

    @property
    def start_ns(self) -> int:
        return int(self._reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self._reader.end_time)

    @property
    def message_count(self) -> int:
        return int(self._reader.message_count)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for connection in self._reader.connections:
            counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
            types[connection.topic] = connection.msgtype
        return {name: TopicInfo(name, types[name], counts[name]) for name in sorted(types)}

    def connections(self, topics: Sequence[str] | None = None) -> list[Connection]:
        wanted = None if topics is None else set(topics)
        return [c for c in self._reader.connections if wanted is None or c.topic in wanted]

    def offered_qos(self, connection: Connection) -> list[Qos]:
        ext = connection.ext
        if isinstance(ext, ConnectionExtRosbag2):
            return list(ext.offered_qos_profiles)
        return []

    @property
    def typestore(self) -> Any:
        """Return the typestore with every type the bag uses (its own definitions if any)."""
        return self._reader.typestore

    def raw_messages(
        self, topics: Sequence[str] | None = None
    ) -> Iterator[tuple[Connection, int, bytes]]:
        """
        Yield ``(connection, log_time_ns, cdr_bytes)`` of ``topics``, in order.

        All topics when None.
        """
        connections = self.connections(topics)
        if not connections:
            return
        for connection, log_time_ns, raw in self._reader.messages(connections=connections):
            yield connection, int(log_time_ns), raw

    def messages(self, topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in recording order."""
        connections = self.connections(topics)
        if not connections:
            return
        for connection, log_time_ns, raw in self._reader.messages(connections=connections):
            try:
                message = self._reader.deserialize(raw, connection.msgtype)
            except AnyReaderError as error:
                raise BagError(
                    f'cannot deserialize a {connection.msgtype} on {connection.topic} at '
                    f'{log_time_ns} ns: {error}'
                ) from error
            yield BagMessage(connection.topic, connection.msgtype, int(log_time_ns), raw, message)

    def select_camera_topics(
        self, rgb: str | None = None, depth: str | None = None, info: str | None = None
    ) -> CameraTopics:
        """
        Return the RGB, depth and CameraInfo topics.

        The given names (checked) or detected ones.
        """
        return select_camera_topics(self.topics, rgb=rgb, depth=depth, info=info)


def _mentions_depth(name: str) -> bool:
    return 'depth' in name.lower()


def _is_own(name: str) -> bool:
    return name.startswith(OWN_TOPIC_PREFIX) or 'annotated' in name.lower()


def _rgb_score(topic: TopicInfo) -> int:
    lowered = topic.name.lower()
    score = 0
    if 'color' in lowered or 'colour' in lowered or 'rgb' in lowered:
        score += 4
    if topic.msgtype == msgs.IMAGE_TYPE:
        score += 2
    if 'rect' in lowered or 'image_raw' in lowered:
        score += 1
    if any(word in lowered for word in ('ir', 'infra', 'mono', 'thermal', 'mask', 'segment')):
        score -= 4
    return score


def _depth_score(topic: TopicInfo) -> int:
    lowered = topic.name.lower()
    score = 0
    if 'aligned' in lowered or 'registered' in lowered or 'to_color' in lowered:
        score += 4
    if topic.msgtype == msgs.IMAGE_TYPE:
        score += 2
    if 'compresseddepth' in lowered:
        score += 1
    return score


def _namespace(topic_name: str) -> str:
    path = PurePosixPath(topic_name)
    if path.name in ('compressed', 'compressedDepth', 'theora', 'zstd'):
        path = path.parent
    return str(path.parent)


def _info_score(topic: TopicInfo, rgb: TopicInfo) -> int:
    lowered = topic.name.lower()
    score = 0
    if str(PurePosixPath(topic.name).parent) == _namespace(rgb.name):
        score += 8
    if 'color' in lowered or 'colour' in lowered or 'rgb' in lowered:
        score += 4
    if _mentions_depth(topic.name):
        score -= 2
    return score


def _best(role: str, candidates: list[TopicInfo], scores: dict[str, int], flag: str) -> TopicInfo:
    ordered = sorted(candidates, key=lambda topic: (-scores[topic.name], topic.name))
    if len(ordered) > 1 and scores[ordered[0].name] == scores[ordered[1].name]:
        tied = [t.name for t in ordered if scores[t.name] == scores[ordered[0].name]]
        raise AmbiguousTopicError(
            f'several topics could be the {role} stream ({", ".join(tied)}); choose one with '
            f'{flag}'
        )
    return ordered[0]


def _explicit(
    topics: dict[str, TopicInfo], name: str, allowed: Sequence[str], role: str
) -> TopicInfo:
    topic = topics.get(name)
    if topic is None:
        suitable = [t.name for t in topics.values() if t.msgtype in allowed]
        raise MissingTopicError(
            f'{role} topic {name!r} is not in the bag; topics of a suitable type: '
            f'{", ".join(suitable) or "none"}'
        )
    if topic.msgtype not in allowed:
        raise MissingTopicError(
            f'{role} topic {name!r} has type {topic.msgtype}, expected one of {", ".join(allowed)}'
        )
    return topic


def select_camera_topics(
    topics: dict[str, TopicInfo],
    rgb: str | None = None,
    depth: str | None = None,
    info: str | None = None,
) -> CameraTopics:
    """Pick the camera streams from ``topics`` (see the module docstring for the rules)."""
    images = [t for t in topics.values() if t.msgtype in IMAGE_TYPES and not _is_own(t.name)]
    infos = [t for t in topics.values() if t.msgtype == msgs.CAMERA_INFO_TYPE]
    available = ', '.join(f'{t.name} ({t.msgtype})' for t in topics.values()) or 'none'

    if rgb is not None:
        rgb_topic = _explicit(topics, rgb, IMAGE_TYPES, 'RGB')
    else:
        candidates = [t for t in images if not _mentions_depth(t.name)]
        if not candidates:
            raise MissingTopicError(
                f'no RGB image topic (sensor_msgs/Image or CompressedImage) found; topics in '
                f'the bag: {available}'
            )
        rgb_topic = _best(
            'RGB', candidates, {t.name: _rgb_score(t) for t in candidates}, '--rgb-topic'
        )

    if depth is not None:
        depth_topic = _explicit(topics, depth, IMAGE_TYPES, 'depth')
    else:
        candidates = [t for t in images if _mentions_depth(t.name) and t.name != rgb_topic.name]
        if not candidates:
            raise MissingTopicError(
                'no depth image topic (an Image or CompressedImage with "depth" in its name) '
                f'found; pass --depth-topic. Topics in the bag: {available}'
            )
        depth_topic = _best(
            'depth', candidates, {t.name: _depth_score(t) for t in candidates}, '--depth-topic'
        )

    if info is not None:
        info_topic = _explicit(topics, info, (msgs.CAMERA_INFO_TYPE,), 'CameraInfo')
    else:
        if not infos:
            raise MissingTopicError(
                f'no sensor_msgs/CameraInfo topic found (intrinsics are required); topics in '
                f'the bag: {available}'
            )
        info_topic = _best(
            'CameraInfo', infos, {t.name: _info_score(t, rgb_topic) for t in infos}, '--info-topic'
        )

    for topic in (rgb_topic, depth_topic, info_topic):
        if topic.message_count == 0:
            raise EmptyBagError(f'topic {topic.name} has no messages')
    return CameraTopics(rgb_topic, depth_topic, info_topic)


# ----------------------------------------------------------------------------- TF

TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
TF_LOOKAHEAD_NS = 2 * 10**9  # transforms are read this far (in TF stamps) past a looked-up stamp


class BagTransforms:
    """
    The bag's ``/tf`` and ``/tf_static`` as the pipeline's ``TransformLookup``, at image stamps.

    A second reader runs ahead of the replay: before a lookup at stamp ``t`` it reads the TF
    topics until a ``/tf`` transform stamped after ``t + lookahead_ns`` (or the end of the bag),
    so the sample after ``t`` is there to interpolate even when TF was recorded later than the
    images. The buffer (``core.tf_buffer``) keeps ``cache_duration_ns`` of history, so a long
    bag does not fill memory; lookups must come roughly in stamp order (the replay's are).
    Malformed transforms are skipped and counted (``bad_transforms``), like the node does.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lookahead_ns: int = TF_LOOKAHEAD_NS,
        cache_duration_ns: int = 30 * 10**9,
    ) -> None:
        from spatial_vlm_ros.core.tf_buffer import TransformBuffer

        self.buffer = TransformBuffer(cache_duration_ns=cache_duration_ns)
        self.lookahead_ns = int(lookahead_ns)
        self.bad_transforms = 0
        self.topics: tuple[str, ...] = ()
        self._newest_dynamic_ns = -1
        self._reader = BagReader(path)
        self._messages: Iterator[BagMessage] | None = None
        self._reader.__enter__()
        try:
            available = self._reader.topics
            self.topics = tuple(
                topic
                for topic in (TF_TOPIC, TF_STATIC_TOPIC)
                if topic in available and available[topic].msgtype == msgs.TF_MESSAGE_TYPE
            )
            if self.topics:
                self._messages = self._reader.messages(list(self.topics))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BagTransforms:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._messages = None
        self._reader.close()

    def _read_until(self, stamp_ns: int) -> None:
        from spatial_vlm_ros.core.tf_buffer import TfLookupError

        while self._messages is not None and self._newest_dynamic_ns <= stamp_ns:
            message = next(self._messages, None)
            if message is None:
                self._messages = None
                break
            static = message.topic == TF_STATIC_TOPIC
            for stamped in message.message.transforms:
                try:
                    self.buffer.add_transforms([stamped], static=static)
                except TfLookupError:
                    self.bad_transforms += 1
                    continue
                if not static:
                    stamp = stamped.header.stamp
                    sample_ns = int(stamp.sec) * 10**9 + int(stamp.nanosec)
                    self._newest_dynamic_ns = max(self._newest_dynamic_ns, sample_ns)

    def lookup(self, target: str, source: str, stamp_ns: int) -> Any:
        """``TransformResult`` of ``T_target_from_source`` at ``stamp_ns``."""
        self._read_until(int(stamp_ns) + self.lookahead_ns)
        return self.buffer.lookup(target, source, stamp_ns)
