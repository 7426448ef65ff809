# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Frame → engine → parsing → 3D → relations → Scene: one pipeline for the node and the replay.

ROS-free. The node feeds it paired raw messages (decoded here, on the worker thread, never in a
subscription callback) and the replay feeds it rosbags messages; both get the same Scene.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
import difflib
import math
import threading
import time
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros import settings as settings_table
from spatial_vlm_ros.core.camera import (
    DepthConfig,
    make_rgbd_frame_with_warnings,
    rgb_box_to_depth,
)
from spatial_vlm_ros.core.image_decoding import decode_color_any
from spatial_vlm_ros.core.lifting import LiftingConfig, lift_boxes
from spatial_vlm_ros.core.pairing import RgbdSet
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
from spatial_vlm_ros.engines.results import AnswerResult, GroundingResult, ParseFailure


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
    lifting: LiftingConfig = field(default_factory=LiftingConfig)
    relations: RelationConfig = field(default_factory=RelationConfig)
    max_objects: int = 64
    target_frame: str = ''  # '' = publish in the camera optical frame
    relation_frame: str = ''  # '' = relations in the camera view


@dataclass(frozen=True)
class PipelineSettings:
    """Everything needed to build a pipeline and its engine (from node parameters or the CLI)."""

    engine_kind: str
    model: str
    config: PipelineConfig
    engine_options: dict[str, Any] = field(default_factory=dict)
    record_outputs: str = ''
    request_timeout_s: float = 30.0  # one deadline per request (scene, query, locate)

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> PipelineSettings:
        """Settings from node parameters or CLI flags: names and defaults of
        ``spatial_vlm_ros.settings`` (missing names take the table's default)."""
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
        return cls(
            engine_kind=kind,
            model=str(values['model']),
            config=config,
            engine_options=options,
            record_outputs=str(values['record_outputs']),
            request_timeout_s=float(values['request_timeout_s']),
        )


@dataclass(frozen=True)
class Answer:
    """A SpatialQuery result: the answer, the objects it names, the scene it was computed on."""

    ok: bool
    text: str
    object_ids: tuple[str, ...]
    scene: Scene
    message: str = ''


# Decoded frames kept per camera for the annotated image and ~/query on a published scene, so
# the colour image is decoded once per frame (the newest few suffice: both follow the scene).
DECODED_FRAMES_KEPT = 4


class SpatialPipeline:
    """Turns one RGB-D frame into a :class:`Scene` with one engine call."""

    def __init__(self, engine: VlmEngine, model_id: str, config: PipelineConfig) -> None:
        self.engine = engine
        self.model_id = model_id
        self.config = config
        # Per camera: two cameras may well share a stamp (hardware-synchronised rigs).
        self._decoded: dict[str, OrderedDict[int, RgbdFrame]] = {}
        self._decoded_lock = threading.Lock()

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
        return cls(engine, model_id, settings.config)

    async def start(self) -> None:
        await self.engine.start()

    async def shutdown(self) -> None:
        await self.engine.shutdown()

    # -------------------------------------------------------------- decoding

    def decode_with_warnings(self, paired: RgbdSet) -> tuple[RgbdFrame, list[str]]:
        """Decode one paired set; the warnings name input problems (units, frames, sizes).

        The frame is kept (the newest :data:`DECODED_FRAMES_KEPT` of its camera) for
        :meth:`rgb_of`.
        """
        frame, warnings = make_rgbd_frame_with_warnings(
            paired.rgb.payload, paired.depth.payload, paired.info.payload, self.config.depth
        )
        with self._decoded_lock:
            kept = self._decoded.setdefault(paired.camera, OrderedDict())
            kept[paired.stamp_ns] = frame
            kept.move_to_end(paired.stamp_ns)
            while len(kept) > DECODED_FRAMES_KEPT:
                kept.popitem(last=False)
        return frame, warnings

    def rgb_of(self, paired: RgbdSet) -> npt.NDArray[np.uint8]:
        """The decoded colour image of ``paired``: the one perception decoded when it is still
        kept, else decoded now (only the colour image)."""
        with self._decoded_lock:
            frame = self._decoded.get(paired.camera, {}).get(paired.stamp_ns)
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
    ) -> Scene:
        """Ground, lift and relate one frame.

        ``now_ns`` gives the clock that latency is measured against (ROS time in the node);
        None measures the wall time spent here (bag time does not advance in a replay).
        ``timings`` carries the stages measured before this call (receive, pair, queue,
        decode); the engine, lift and relations stages are measured here. ``deadline`` is the
        request's one deadline; the engine call gets what is left of it.
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
        """Decode (off the event loop), look up transforms at the image stamp, perceive.

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
        target, relation = await loop.run_in_executor(
            None, self._frames_for, frame, transforms, warnings
        )
        scene = await self.perceive(
            frame,
            vocabulary=vocabulary,
            now_ns=now_ns,
            target_frame=target[0],
            target_from_camera=target[1],
            relation_frame=relation[0],
            relation_from_camera=relation[1],
            warnings=warnings,
            timings=replace(timings or StageTimings(), decode_ms=decode_ms),
            deadline=deadline,
        )
        return frame, scene

    def _frames_for(
        self, frame: RgbdFrame, transforms: TransformLookup | None, warnings: list[str]
    ) -> tuple[tuple[str, FloatArray | None], tuple[str, FloatArray | None]]:
        def resolve(name: str) -> tuple[str, FloatArray | None]:
            if not name or name == frame.frame_id or transforms is None:
                return (frame.frame_id, None)
            result = transforms.lookup(name, frame.frame_id, frame.stamp_ns)
            if result.matrix is None:
                # Publish in the camera frame (header.frame_id says so) and report why.
                warnings.append(f'{result.reason}; using the camera frame {frame.frame_id!r}')
                return (frame.frame_id, None)
            return (name, result.matrix)

        return resolve(self.config.target_frame), resolve(self.config.relation_frame)

    async def answer_paired(
        self,
        paired: RgbdSet,
        question: str,
        *,
        scene: Scene | None = None,
        vocabulary: Sequence[str] | None = None,
        now_ns: Callable[[], int] | int | None = None,
        transforms: TransformLookup | None = None,
        deadline: Deadline | None = None,
    ) -> Answer:
        """Answer ``question`` on one snapshot; ``scene`` reuses an already computed grounding.

        ``deadline`` covers both engine calls (grounding, when needed, and the answer)."""
        if scene is None:
            frame, scene = await self._perceive_paired_frame(
                paired, vocabulary, now_ns, transforms, deadline=deadline
            )
            rgb = frame.rgb
        else:  # the grounding exists: only the colour image is needed (usually still kept)
            rgb = await asyncio.get_running_loop().run_in_executor(None, self.rgb_of, paired)
        response = await self.engine.generate(
            EngineRequest(
                images=(rgb,),
                task=TaskKind.QUESTION,
                stamp_ns=paired.stamp_ns,
                question=question,
                timeout_s=_remaining_s(deadline),
            )
        )
        parsed = response.parsed
        if isinstance(parsed, AnswerResult):
            text = parsed.answer
            return Answer(True, text, referenced_object_ids(scene, text), scene)
        reason = parsed.reason if isinstance(parsed, ParseFailure) else 'no answer'
        return Answer(False, response.raw_text.strip(), (), scene, f'unparsed answer: {reason}')


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
) -> Scene:
    """Detections of one response + the frame's depth → objects, relations, frames: the whole
    :class:`Scene`, built once.

    Pure apart from timing: ``timings`` holds the stages measured before (their lift and
    relations entries are measured here), and a callable ``latency_ms`` is read just before
    the scene is built, so the age includes lifting and relations.
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
        lift_ms=1e3 * (relations_started_s - lift_started_s),
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
        warnings=list(warnings),
        timings=stages,
        T_frame_from_camera=transform,
    )


def assign_ids(detections: Sequence[Detection]) -> list[str]:
    """Object ids of one frame's detections, in the given order: ``<label>_<n>`` with spaces
    in the label replaced by ``_`` and n counting that label's instances left to right (box
    centre x, then y), from 0. Per-frame ordinals: the object memory replaces them with
    persistent ids."""
    order = sorted(
        range(len(detections)),
        key=lambda i: (
            detections[i].label,
            detections[i].box.center[0],
            detections[i].box.center[1],
        ),
    )
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


def find_best_match(scene: Scene | None, description: str) -> SpatialObject | None:
    """The object whose label best matches ``description`` (exact, contained, then fuzzy)."""
    if scene is None or not scene.objects:
        return None
    wanted = ' '.join(description.lower().split())

    def score(obj: SpatialObject) -> tuple[float, int, float]:
        label = obj.label.lower()
        if label == wanted:
            similarity = 1.0
        elif label in wanted or wanted in label:
            similarity = 0.8
        else:
            similarity = difflib.SequenceMatcher(None, label, wanted).ratio() * 0.7
        return (similarity, int(obj.lifted.position is not None), obj.confidence)

    best = max(scene.objects, key=score)
    return best if score(best)[0] >= 0.5 else None


def referenced_object_ids(scene: Scene, text: str) -> tuple[str, ...]:
    """Ids of the scene objects whose id or label occurs in the answer text."""
    lowered = text.lower()
    return tuple(
        obj.id
        for obj in scene.objects
        if obj.id.lower() in lowered or obj.label.lower() in lowered
    )


def _remaining_s(deadline: Deadline | None) -> float | None:
    """What an engine call may still take (None: the engine's own default). A passed deadline
    leaves a token budget rather than 0, which engines would read as "no deadline"."""
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
