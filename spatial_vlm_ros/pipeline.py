# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Frame → engine → parsing → 3D → object memory → relations → Scene.

One pipeline for the node and the replay.

ROS-free. The node feeds it paired raw messages (decoded here, on the worker thread, never in a
subscription callback) and the replay feeds it rosbags messages; both get the same Scene.

The object memory (core/memory.py, docs/MEMORY.md) is the pipeline's: one per node, shared by
every camera, so an object keeps its id whichever camera sees it. Objects are lifted in the
camera frame, associated with the memory in ``memory_frame`` (which gives their ids), then
related and moved to the target frame.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
import logging
import math
from pathlib import Path
import threading
import time
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros import settings as settings_table
from spatial_vlm_ros.core.camera import (
    DepthConfig,
    IntrinsicsSource,
    make_rgbd_frame_with_warnings,
    rgb_box_to_depth,
)
from spatial_vlm_ros.core.image_decoding import decode_color_any
from spatial_vlm_ros.core.lifting import LiftingConfig, lift_boxes
from spatial_vlm_ros.core.memory import (
    CameraView,
    MemoryConfig,
    ObjectMemory,
    ObjectMemoryError,
)
from spatial_vlm_ros.core.pairing import InfoMode, PairingConfig, RgbdSet
from spatial_vlm_ros.core.referring import RememberedCandidate
from spatial_vlm_ros.core.relations import RelationConfig, compute_relations, transform_objects
from spatial_vlm_ros.core.scheduling import Deadline
from spatial_vlm_ros.core.types import (
    Detection,
    FloatArray,
    RgbdFrame,
    Scene,
    SpatialObject,
    StageTimings,
)
from spatial_vlm_ros.engines.base import (
    ERROR_FLAGS,
    EngineRequest,
    EngineResponse,
    TaskKind,
    VlmEngine,
)
from spatial_vlm_ros.engines.profiles import ModelProfile
from spatial_vlm_ros.engines.results import GroundingResult, ParseFailure
from spatial_vlm_ros.queries import (
    GroundedAnswer,
    LocateOutcome,
    LocateSettings,
    QueryOptions,
    QuerySnapshot,
    answer_question,
    locate,
)

LOGGER = logging.getLogger(__name__)


class TransformLookup(Protocol):
    """What the pipeline needs from TF: T_target_from_source at a stamp, or a reason."""

    def lookup(self, target: str, source: str, stamp_ns: int) -> Any: ...


def normalize_vocabulary(value: Any) -> tuple[str, ...]:
    """[] / [''] mean "ground everything"; entries are stripped and deduplicated in order."""
    return tuple(dict.fromkeys(str(item).strip() for item in value or () if str(item).strip()))


@dataclass(frozen=True)
class PipelineConfig:
    vocabulary: tuple[str, ...] = ()  # empty: ground every salient object
    depth: DepthConfig = field(default_factory=DepthConfig)
    # CameraInfo matrix to lift with: K for image_raw topics, P for rectified image_rect ones.
    intrinsics_source: IntrinsicsSource = IntrinsicsSource.K
    lifting: LiftingConfig = field(default_factory=LiftingConfig)
    relations: RelationConfig = field(default_factory=RelationConfig)
    max_objects: int = 64
    target_frame: str = ''  # '' = publish in the camera optical frame
    relation_frame: str = ''  # '' = relations in the camera view


@dataclass(frozen=True)
class MemorySettings:
    """The object memory of a pipeline (settings ``memory_*``; docs/MEMORY.md)."""

    frame: str = ''  # '' = the target frame, else the first frame's camera frame
    file: str = ''  # '' = not saved or loaded
    config: MemoryConfig = field(default_factory=MemoryConfig)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything needed to build a pipeline and its engine (from node parameters or the CLI)."""

    engine_kind: str
    model: str
    config: PipelineConfig
    engine_options: dict[str, Any] = field(default_factory=dict)
    record_outputs: str = ''
    request_timeout_s: float = 30.0  # one deadline per request (scene, query, locate)
    memory: MemorySettings | None = None  # None: per-frame ids, no memory

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> PipelineSettings:
        """
        Build the settings from node parameters or CLI flags.

        Names and defaults of ``spatial_vlm_ros.settings`` (missing names take the table's
        default).
        """
        values = settings_table.complete(values)
        depth_scale = float(values['depth_scale'])
        min_depth_m, max_depth_m = float(values['min_depth_m']), float(values['max_depth_m'])
        config = PipelineConfig(
            vocabulary=normalize_vocabulary(values['vocabulary']),
            depth=DepthConfig(
                depth_scale=depth_scale if depth_scale > 0 else None,
                min_depth_m=min_depth_m,
                max_depth_m=max_depth_m,
            ),
            intrinsics_source=IntrinsicsSource(str(values['camera_intrinsics'])),
            lifting=LiftingConfig(min_depth_m=min_depth_m, max_depth_m=max_depth_m),
            relations=replace(
                RelationConfig(),
                near_threshold_m=float(values['near_threshold_m']),
                mode=str(values['relations']),
                per_object=int(values['relations_per_object']),
            ),
            max_objects=int(values['max_objects']),
            target_frame=str(values['target_frame']),
            relation_frame=str(values['relation_frame']),
        )
        kind = str(values['engine'])
        in_flight = int(values['max_in_flight'])
        options: dict[str, Any] = {}
        if kind == 'recorded':
            options['path'] = str(values['recording'])
        elif kind == 'openai':
            options['base_url'] = str(values['server_url'])
            options['served_model_name'] = str(values['served_model_name'])
            options['api_key_env'] = str(values['api_key_env'])
            options['max_concurrency'] = in_flight + 1
        elif kind == 'transformers':
            options['device'] = str(values['device'])
            options['max_batch_size'] = in_flight + 1
        memory = None
        if values['memory']:
            memory = MemorySettings(
                # '' follows the target frame; with neither, the camera frame (adopted at the
                # first frame: the node warns that this assumes a camera that does not move).
                frame=str(values['memory_frame']) or str(values['target_frame']),
                file=str(values['memory_file']),
                config=MemoryConfig(
                    max_objects=int(values['memory_max_objects']),
                    max_age_s=float(values['memory_max_age_s']),
                    confirm_sightings=int(values['memory_confirm_sightings']),
                ),
            )
        return cls(
            engine_kind=kind,
            model=str(values['model']),
            config=config,
            engine_options=options,
            record_outputs=str(values['record_outputs']),
            request_timeout_s=float(values['request_timeout_s']),
            memory=memory,
        )


def pairing_from_parameters(values: Mapping[str, Any], *, live: bool) -> PairingConfig:
    """
    Build the stamp pairer's configuration from the ``sync_*`` settings (seconds -> ns).

    :param values: node parameters or CLI flags (missing names take the table's default).
    :param live: True for the node, whose ``sync_min_interval_s`` decides when a match is final;
        False for the replay, which has the whole bag and always waits for the next depth
        message (the offline optimum).
    """
    values = settings_table.complete(values)
    return PairingConfig.from_seconds(
        slop_s=float(values['sync_slop_s']),
        queue_size=int(values['sync_queue_size']),
        info_mode=InfoMode(str(values['sync_camera_info'])),
        max_wait_s=float(values['sync_max_wait_s']),
        min_interval_s=float(values['sync_min_interval_s']) if live else 0.0,
    )


# Decoded frames kept per camera for the annotated image and ~/query on a published scene, so
# the colour image is decoded once per frame (the newest few suffice: both follow the scene).
DECODED_FRAMES_KEPT = 4


@dataclass(frozen=True)
class MemoryInput:
    """
    What :func:`build_scene` needs to give one frame's objects the memory's ids.

    ``T_memory_from_camera`` None means no transform at the image stamp (``reason`` says why):
    the objects then get fresh ids that are not remembered. ``negative_evidence`` False when
    the frame cannot show what is absent (the engine was asked for one description only);
    ``searched_labels`` the vocabulary it was asked for (None: every salient object).
    """

    memory: ObjectMemory
    T_memory_from_camera: FloatArray | None
    reason: str = ''
    negative_evidence: bool = True
    searched_labels: tuple[str, ...] | None = None


class SpatialPipeline:
    """
    Turns one RGB-D frame into a :class:`Scene` with one engine call.

    And answers questions and referring expressions on a scene (``queries.py``) with the same
    engine.

    ``profile`` is the resolved model profile (prompts, answer format, grammar); None takes the
    engine's. ``memory`` (None: per-frame ids) gives the objects their persistent ids;
    ``memory_file`` is where :meth:`save_memory` writes it.
    """

    def __init__(
        self,
        engine: VlmEngine,
        model_id: str,
        config: PipelineConfig,
        *,
        profile: ModelProfile | None = None,
        memory: ObjectMemory | None = None,
        memory_file: str = '',
    ) -> None:
        self.engine = engine
        self.model_id = model_id
        self.config = config
        self._profile = profile
        self.memory = memory
        self.memory_file = memory_file
        # Per camera: two cameras may well share a stamp (hardware-synchronised rigs).
        self._decoded: dict[str, OrderedDict[int, RgbdFrame]] = {}
        self._decoded_lock = threading.Lock()

    @property
    def profile(self) -> ModelProfile:
        """Return the resolved model profile: the engine's unless one was given."""
        return self.engine.profile if self._profile is None else self._profile

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> SpatialPipeline:
        from spatial_vlm_ros.engines.profiles import resolve_profile
        from spatial_vlm_ros.engines.registry import create_engine

        profile = resolve_profile(settings.model)
        engine = create_engine(
            settings.engine_kind,
            profile,
            record_to=settings.record_outputs or None,
            **settings.engine_options,
        )
        # Recorded outputs name the model that produced them: label the scenes with that, not
        # with a profile that never ran.
        model_id = '' if settings.engine_kind == 'recorded' else settings.model
        memory = None if settings.memory is None else open_memory(settings.memory)
        file = '' if settings.memory is None else settings.memory.file
        return cls(
            engine, model_id, settings.config, profile=profile, memory=memory, memory_file=file
        )

    def save_memory(self) -> Path | None:
        """
        Write the object memory to ``memory_file`` (atomically).

        The path written, or None without a memory or a file. Raises OSError.
        """
        if self.memory is None or not self.memory_file:
            return None
        path = Path(self.memory_file).expanduser()
        self.memory.save(path)
        return path

    async def start(self) -> None:
        await self.engine.start()

    async def shutdown(self) -> None:
        await self.engine.shutdown()

    # -------------------------------------------------------------- decoding

    def decode_with_warnings(self, paired: RgbdSet) -> tuple[RgbdFrame, list[str]]:
        """
        Decode one paired set; the warnings name input problems (units, frames, sizes).

        The frame is kept (the newest :data:`DECODED_FRAMES_KEPT` of its camera) for
        :meth:`rgb_of`.
        """
        frame, warnings = make_rgbd_frame_with_warnings(
            paired.rgb.payload,
            paired.depth.payload,
            paired.info.payload,
            self.config.depth,
            self.config.intrinsics_source,
        )
        with self._decoded_lock:
            kept = self._decoded.setdefault(paired.camera, OrderedDict())
            kept[paired.stamp_ns] = frame
            kept.move_to_end(paired.stamp_ns)
            while len(kept) > DECODED_FRAMES_KEPT:
                kept.popitem(last=False)
        return frame, warnings

    def rgb_of(self, paired: RgbdSet) -> npt.NDArray[np.uint8]:
        """
        Return the decoded colour image of ``paired``.

        The one perception decoded when it is still kept, else decoded now (only the colour image).
        """
        with self._decoded_lock:
            kept = self._decoded.get(paired.camera)
            frame = None if kept is None else kept.get(paired.stamp_ns)
        if frame is not None:
            return frame.rgb
        return decode_color_any(paired.rgb.payload)

    # -------------------------------------------------------------- perception

    async def perceive(
        self,
        frame: RgbdFrame,
        *,
        vocabulary: Sequence[str] | None = None,
        now_ns: Callable[[], int] | int | None = None,
        target_frame: str = '',
        target_from_camera: FloatArray | None = None,
        relation_frame: str = '',
        relation_from_camera: FloatArray | None = None,
        warnings: Sequence[str] = (),
        timings: StageTimings | None = None,
        deadline: Deadline | None = None,
        memory_from_camera: FloatArray | None = None,
        memory_reason: str = '',
    ) -> Scene:
        """
        Ground, lift, remember and relate one frame.

        ``now_ns`` gives the clock that latency is measured against (ROS time in the node);
        None measures the wall time spent here (bag time does not advance in a replay).
        ``timings`` carries the stages measured before this call (receive, pair, queue,
        decode); the engine, lift, memory and relations stages are measured here.
        ``deadline`` is the request's one deadline; the engine call gets what is left of it.
        ``memory_from_camera`` is ``T_memory_from_camera`` at the image stamp (not needed when
        the memory frame is the camera frame; None otherwise: ``memory_reason`` says why).
        A ``vocabulary`` other than the configured one gives the memory no negative evidence.
        """
        started_s = time.perf_counter()
        words = tuple(vocabulary) if vocabulary is not None else self.config.vocabulary
        response = await self.engine.generate(
            EngineRequest(
                images=(frame.rgb,),
                task=TaskKind.GROUND,
                stamp_ns=frame.stamp_ns,
                vocabulary=words,
                timeout_s=_remaining_s(deadline),
            )
        )
        engine_ms = 1e3 * (time.perf_counter() - started_s)
        return build_scene(
            frame,
            response,
            self.config,
            model_id=self.model_id,
            target_frame=target_frame,
            target_from_camera=target_from_camera,
            relation_frame=relation_frame,
            relation_from_camera=relation_from_camera,
            warnings=warnings,
            timings=replace(timings or StageTimings(), engine_ms=engine_ms),
            inference_ms=_inference_ms(response, started_s),
            latency_ms=lambda: _latency_ms(frame.stamp_ns, now_ns, started_s),
            memory=self.memory_input(
                frame,
                memory_from_camera,
                memory_reason,
                configured=vocabulary is None or tuple(vocabulary) == self.config.vocabulary,
            ),
        )

    def memory_frame(self, camera_frame: str) -> str:
        """
        Return the memory's frame ('' without a memory).

        A memory without a frame takes ``camera_frame``.
        """
        return '' if self.memory is None else self.memory.adopt_frame(camera_frame)

    def memory_input(
        self,
        frame: RgbdFrame,
        memory_from_camera: FloatArray | None = None,
        reason: str = '',
        configured: bool = True,
    ) -> MemoryInput | None:
        """
        Return the memory step of ``frame`` (None without a memory).

        ``configured``: the frame was grounded with the configured vocabulary (else it gives no
        negative evidence).
        """
        memory = self.memory
        if memory is None:
            return None
        memory_frame = memory.adopt_frame(frame.frame_id)
        transform = memory_from_camera
        if memory_frame == frame.frame_id:
            transform = np.eye(4)
        elif transform is None and not reason:
            reason = f'no transform {frame.frame_id} -> {memory_frame} was looked up'
        vocabulary = self.config.vocabulary
        return MemoryInput(
            memory,
            transform,
            reason,
            negative_evidence=configured,
            searched_labels=tuple(vocabulary) if vocabulary else None,
        )

    async def perceive_paired(
        self,
        paired: RgbdSet,
        *,
        vocabulary: Sequence[str] | None = None,
        now_ns: Callable[[], int] | int | None = None,
        transforms: TransformLookup | None = None,
        timings: StageTimings | None = None,
        deadline: Deadline | None = None,
    ) -> Scene:
        """
        Decode (off the event loop), look up transforms at the image stamp, perceive.

        ``timings`` may carry the receive, pair and queue stages the caller measured;
        ``deadline`` is the request's one deadline.
        """
        _, scene = await self._perceive_paired_frame(
            paired, vocabulary, now_ns, transforms, timings, deadline
        )
        return scene

    async def _perceive_paired_frame(
        self,
        paired: RgbdSet,
        vocabulary: Sequence[str] | None,
        now_ns: Callable[[], int] | int | None,
        transforms: TransformLookup | None,
        timings: StageTimings | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[RgbdFrame, Scene]:
        loop = asyncio.get_running_loop()
        decode_started_s = time.perf_counter()
        frame, warnings = await loop.run_in_executor(None, self.decode_with_warnings, paired)
        decode_ms = 1e3 * (time.perf_counter() - decode_started_s)
        scene = await self.perceive_frame(
            frame,
            transforms,
            vocabulary=vocabulary,
            now_ns=now_ns,
            warnings=warnings,
            timings=replace(timings or StageTimings(), decode_ms=decode_ms),
            deadline=deadline,
        )
        return frame, scene

    async def perceive_frame(
        self,
        frame: RgbdFrame,
        transforms: TransformLookup | None,
        *,
        vocabulary: Sequence[str] | None = None,
        now_ns: Callable[[], int] | int | None = None,
        warnings: Sequence[str] = (),
        timings: StageTimings | None = None,
        deadline: Deadline | None = None,
    ) -> Scene:
        """
        Look up the frames at the image stamp and :meth:`perceive` a decoded frame.

        The target, relation and memory frames are looked up off the event loop: a TF lookup
        may wait.
        """
        notes = list(warnings)
        frames = await asyncio.get_running_loop().run_in_executor(
            None, self.frames_for, frame, transforms, notes
        )
        return await self.perceive(
            frame,
            vocabulary=vocabulary,
            now_ns=now_ns,
            target_frame=frames.target[0],
            target_from_camera=frames.target[1],
            relation_frame=frames.relation[0],
            relation_from_camera=frames.relation[1],
            warnings=notes,
            timings=timings,
            deadline=deadline,
            memory_from_camera=frames.memory[0],
            memory_reason=frames.memory[1],
        )

    def frames_for(
        self, frame: RgbdFrame, transforms: TransformLookup | None, warnings: list[str]
    ) -> FrameTransforms:
        """
        Return the transforms from ``frame``'s camera frame at its stamp.

        A missing target or relation frame adds a warning (the scene then uses the camera frame).
        """
        looked_up: dict[str, tuple[FloatArray | None, str]] = {}

        def lookup(name: str) -> tuple[FloatArray | None, str]:
            # One lookup per frame name (a TF lookup may wait for tf_timeout_s).
            if name not in looked_up:
                if transforms is None:
                    looked_up[name] = (None, f'no transform {frame.frame_id} -> {name}: no TF')
                else:
                    result = transforms.lookup(name, frame.frame_id, frame.stamp_ns)
                    reason = result.reason or f'no transform {frame.frame_id} -> {name}'
                    looked_up[name] = (result.matrix, '' if result.matrix is not None else reason)
            return looked_up[name]

        def resolve(name: str) -> tuple[str, FloatArray | None]:
            if not name or name == frame.frame_id or transforms is None:
                return (frame.frame_id, None)
            matrix, reason = lookup(name)
            if matrix is None:
                # Publish in the camera frame (header.frame_id says so) and report why.
                warnings.append(f'{reason}; using the camera frame {frame.frame_id!r}')
                return (frame.frame_id, None)
            return (name, matrix)

        target = resolve(self.config.target_frame)
        relation = resolve(self.config.relation_frame)
        memory: tuple[FloatArray | None, str] = (None, '')
        memory_frame = self.memory_frame(frame.frame_id)
        if memory_frame and memory_frame != frame.frame_id:
            memory = lookup(memory_frame)
        return FrameTransforms(target, relation, memory)

    # -------------------------------------------------------------- questions and locate

    async def snapshot(
        self,
        paired: RgbdSet,
        *,
        scene: Scene | None = None,
        vocabulary: Sequence[str] | None = None,
        now_ns: Callable[[], int] | int | None = None,
        transforms: TransformLookup | None = None,
        deadline: Deadline | None = None,
    ) -> QuerySnapshot:
        """
        One consistent snapshot of ``paired`` for :meth:`answer` and :meth:`locate`.

        ``scene`` is that frame's grounding when it exists (the published one: no second engine
        call); otherwise the frame is grounded now, within ``deadline``. The relation frame's
        transform is looked up at the scene's stamp, as the scene's relations were computed.
        """
        loop = asyncio.get_running_loop()
        if scene is None:
            frame, scene = await self._perceive_paired_frame(
                paired, vocabulary, now_ns, transforms, deadline=deadline
            )
            rgb = frame.rgb
        else:  # the grounding exists: only the colour image is needed (usually still kept)
            rgb = await loop.run_in_executor(None, self.rgb_of, paired)
        relation = await loop.run_in_executor(None, relation_transform, scene, transforms)
        return QuerySnapshot(scene, rgb, relation)

    async def answer(
        self,
        snapshot: QuerySnapshot,
        question: str,
        *,
        deadline: Deadline | None = None,
        options: QueryOptions | None = None,
    ) -> GroundedAnswer:
        """``question`` answered on ``snapshot``, every quantity measured (``~/query``)."""
        return await answer_question(
            snapshot, question, self.engine, self.profile, deadline=deadline, options=options
        )

    async def locate(
        self,
        snapshot: QuerySnapshot,
        description: str,
        *,
        memory: Sequence[RememberedCandidate] = (),
        deadline: Deadline | None = None,
        settings: LocateSettings | None = None,
    ) -> LocateOutcome:
        """
        Find the object ``description`` refers to in ``snapshot`` or ``memory`` (``~/locate``).

        ``memory``: remembered objects in the scene's frame. With candidates and scores.
        """
        return await locate(
            snapshot,
            description,
            memory=memory,
            engine=self.engine,
            profile=self.profile,
            deadline=deadline,
            settings=settings,
        )


@dataclass(frozen=True)
class FrameTransforms:
    """
    Transforms from a frame's camera frame at its stamp (:meth:`SpatialPipeline.frames_for`).

    ``target`` and ``relation``: (frame name, ``T_frame_from_camera`` or None for the camera
    frame); ``memory``: (``T_memory_from_camera`` or None, why it is None).
    """

    target: tuple[str, FloatArray | None]
    relation: tuple[str, FloatArray | None]
    memory: tuple[FloatArray | None, str] = (None, '')


def build_scene(
    frame: RgbdFrame,
    response: EngineResponse,
    config: PipelineConfig,
    *,
    model_id: str = '',
    target_frame: str = '',
    target_from_camera: FloatArray | None = None,
    relation_frame: str = '',
    relation_from_camera: FloatArray | None = None,
    warnings: Sequence[str] = (),
    timings: StageTimings | None = None,
    inference_ms: float = math.nan,
    latency_ms: float | Callable[[], float] = math.nan,
    memory: MemoryInput | None = None,
) -> Scene:
    """
    Build the whole :class:`Scene`, once.

    Detections of one response + the frame's depth → objects, ids, relations, frames.

    Objects are lifted in the camera frame; with ``memory`` they take the object memory's
    ids (associated in the memory frame, see :func:`remember`), else per-frame ids
    (:func:`assign_ids`); then come the relations and the move to ``target_frame``.

    Pure apart from timing and the memory it updates: ``timings`` holds the stages measured
    before (their lift, memory and relations entries are measured here), and a callable
    ``latency_ms`` is read just before the scene is built, so the age includes all of it.
    """
    parsed = response.parsed
    error = ''
    detections: list[Detection] = []
    if isinstance(parsed, GroundingResult):
        detections = list(parsed.detections)
        problems = [w for w in parsed.warnings if w not in ERROR_FLAGS]
        if not detections and problems:
            # Every item was invalid: an empty scene must not look like "nothing there".
            error = 'no usable object in the model output: ' + '; '.join(problems)
    elif isinstance(parsed, ParseFailure):
        error = f'model output not usable: {parsed.reason}'
    error_flags = [flag for flag in response.flags if flag in ERROR_FLAGS]
    if error_flags:
        error = (error + '; ' if error else '') + ','.join(error_flags)
    detections = sorted(detections, key=lambda d: -d.confidence)[: config.max_objects]
    lift_started_s = time.perf_counter()
    objects = lift_detections(frame, detections, config)
    memory_started_s = time.perf_counter()
    notes = list(warnings)
    if memory is not None:
        # Misses count only where the frame can show absence: not after an engine failure.
        objects, memory_warnings = remember(frame, objects, memory, trusted=not error)
        notes.extend(memory_warnings)
    relations_started_s = time.perf_counter()
    relations = compute_relations(objects, config.relations, relation_from_camera)
    relations_done_s = time.perf_counter()
    positions_frame = frame.frame_id
    transform = None
    if target_from_camera is not None and target_frame and target_frame != frame.frame_id:
        objects = transform_objects(objects, target_from_camera)
        positions_frame = target_frame
        transform = target_from_camera
    stages = replace(
        timings or StageTimings(),
        lift_ms=1e3 * (memory_started_s - lift_started_s),
        memory_ms=math.nan if memory is None else 1e3 * (relations_started_s - memory_started_s),
        relations_ms=1e3 * (relations_done_s - relations_started_s),
    )
    return Scene(
        stamp_ns=frame.stamp_ns,
        frame_id=positions_frame,
        camera_frame_id=frame.frame_id,
        objects=objects,
        relations=relations,
        relation_frame_id=relation_frame if relation_from_camera is not None else frame.frame_id,
        model_id=model_id or response.model_id,
        engine=response.engine,
        latency_ms=latency_ms() if callable(latency_ms) else float(latency_ms),
        inference_ms=float(inference_ms),
        error=error,
        warnings=notes,
        timings=stages,
        T_frame_from_camera=transform,
    )


def relation_transform(scene: Scene, transforms: TransformLookup | None) -> FloatArray | None:
    """
    T_relation_from_camera of ``scene`` at its stamp.

    None when relations are in the camera view or the transform cannot be looked up (then
    quantities are read in the scene's frame).
    """
    relation_frame = scene.relation_frame_id
    if not relation_frame or relation_frame == scene.camera_frame_id or transforms is None:
        return None
    matrix: FloatArray | None = transforms.lookup(
        relation_frame, scene.camera_frame_id, scene.stamp_ns
    ).matrix
    return matrix


def _left_to_right(item: Detection | SpatialObject) -> tuple[str, float, float]:
    """Sort key: label, then box centre x, then y (the order ids are numbered in)."""
    center_x, center_y = item.box.center
    return (item.label, center_x, center_y)


def assign_ids(detections: Sequence[Detection]) -> list[str]:
    """
    Object ids of one frame's detections, in the given order.

    ``<label>_<n>`` with spaces in the label replaced by ``_`` and n counting that label's
    instances left to right (box centre x, then y), from 0. Per-frame ordinals, used without an
    object memory (with one, :func:`remember` gives the memory's ids; their first frame numbers
    alike).
    """
    order = sorted(range(len(detections)), key=lambda i: _left_to_right(detections[i]))
    ids = [''] * len(detections)
    counts: dict[str, int] = {}
    for index in order:
        label = detections[index].label
        ids[index] = f'{label.replace(" ", "_")}_{counts.get(label, 0)}'
        counts[label] = counts.get(label, 0) + 1
    return ids


def lift_detections(
    frame: RgbdFrame, detections: Sequence[Detection], config: PipelineConfig
) -> list[SpatialObject]:
    """Lift each detection and give it an id (:func:`assign_ids`); sorted by id."""
    # All boxes together, so that a box lifted to a nearer boxed object's surface is redone
    # without that object's pixels (core/lifting.py, lift_boxes).
    depth_boxes = [rgb_box_to_depth(detection.box, frame) for detection in detections]
    lifts = lift_boxes(frame.depth_m, frame.depth_intrinsics, depth_boxes, config.lifting)
    objects = [
        SpatialObject(
            id=object_id,
            label=detection.label,
            confidence=detection.confidence,
            box=detection.box,
            lifted=lifted,
        )
        for object_id, detection, lifted in zip(
            assign_ids(detections), detections, lifts, strict=True
        )
    ]
    return sorted(objects, key=lambda obj: obj.id)


def remember(
    frame: RgbdFrame, objects: Sequence[SpatialObject], memory: MemoryInput, trusted: bool = True
) -> tuple[list[SpatialObject], list[str]]:
    """
    Return ``objects`` with the object memory's ids, and the memory's warnings.

    ``objects`` are lifted in ``frame``'s camera frame.

    Objects go to the memory left to right per label, so that the ids it creates in one frame
    are numbered in that order: the first frame's ids equal :func:`assign_ids`' ordinals.
    ``trusted`` False (the engine failed) gives no negative evidence. A malformed view (it
    cannot happen with a decoded frame) leaves the memory alone: fresh, unstored ids.
    """
    ordered = sorted(objects, key=_left_to_right)
    warnings = []
    view = None
    if memory.T_memory_from_camera is not None:
        view = CameraView.from_frame(
            frame,
            memory.T_memory_from_camera,
            negative_evidence=trusted and memory.negative_evidence,
            searched_labels=memory.searched_labels,
        )
    elif memory.reason:
        warnings.append(memory.reason)
    try:
        update = memory.memory.update(frame.stamp_ns, ordered, view)
    except ObjectMemoryError as error:
        warnings.append(f'object memory: {error}')
        update = memory.memory.update(frame.stamp_ns, ordered, None)
    warnings.extend(update.warnings)
    return list(update.objects), warnings


def open_memory(settings: MemorySettings) -> ObjectMemory:
    """
    Return a new object memory, or the one saved in ``settings.file`` when that exists.

    Raises :class:`ObjectMemoryError` for a file that cannot be used (malformed, another
    frame): the caller must not start and later overwrite it.
    """
    path = Path(settings.file).expanduser() if settings.file else None
    if path is None or not path.exists():
        return ObjectMemory(settings.frame, settings.config)
    try:
        memory = ObjectMemory.load(path, settings.config, settings.frame or None)
    except OSError as error:
        raise ObjectMemoryError(f'memory_file {path}: {error}') from error
    except ObjectMemoryError as error:
        raise ObjectMemoryError(f'memory_file {path}: {error}') from error
    LOGGER.info('object memory: %d objects loaded from %s', len(memory), path)
    return memory


def _remaining_s(deadline: Deadline | None) -> float | None:
    """
    Return what an engine call may still take (None: the engine's own default).

    A passed deadline leaves a token budget rather than 0, which engines would read as "no
    deadline".
    """
    if deadline is None:
        return None
    return max(deadline.remaining_s(), 1e-3)


def _inference_ms(response: EngineResponse, started_s: float) -> float:
    inference_s = response.timings.inference_s or response.timings.total_s
    return 1e3 * (inference_s if inference_s > 0 else time.perf_counter() - started_s)


def _latency_ms(stamp_ns: int, now_ns: Callable[[], int] | int | None, started_s: float) -> float:
    if now_ns is None:
        return 1e3 * (time.perf_counter() - started_s)
    current = now_ns() if callable(now_ns) else int(now_ns)
    return max(0.0, (current - stamp_ns) / 1e6)
