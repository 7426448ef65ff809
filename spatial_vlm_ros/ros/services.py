# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""``~/query`` and ``~/locate``: on-demand requests on one consistent snapshot.

The handlers are coroutines: rclpy runs them as tasks, and while one awaits the worker it holds
no executor thread, so any number of concurrent calls leave subscriptions, timers, parameter and
lifecycle services running. Each request gets ONE deadline (``request_timeout_s``) when it
arrives; it bounds the wait for a priority slot and every engine call of the request.

The snapshot buffer keeps the newest paired frames (for SpatialQuery by stamp) and the published
scenes (so a question or a locate on a frame that was already grounded makes no second call).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
import threading
from typing import Any

import numpy as np

from spatial_vlm_ros.core.pairing import RgbdSet
from spatial_vlm_ros.core.scheduling import Deadline
from spatial_vlm_ros.core.types import Scene, SpatialVlmError
from spatial_vlm_ros.engines.base import EngineTimeout
from spatial_vlm_ros.pipeline import SpatialPipeline, find_best_match
from spatial_vlm_ros.ros import conversions
from spatial_vlm_ros.ros.diagnostics import ErrorLog
from spatial_vlm_ros.ros.tf import TransformSource
from spatial_vlm_ros.srv import LocateObject, SpatialQuery

MAX_QUESTION_BYTES = 4096
MAX_DESCRIPTION_BYTES = 512
SCENE_CACHE = 30  # published scenes kept for snapshot reuse


class SnapshotBuffer:
    """The newest paired frames (per camera) and published scenes, for services (thread-safe).

    With several cameras each keeps its own ``frames`` newest sets; ``frame`` looks across all
    of them (the newest to arrive, or the closest stamp), and a scene is found by the camera
    and stamp of its frame (:meth:`scene_for`), so cameras with equal stamps are not confused.
    """

    def __init__(self, frames: int = 1, scenes: int = SCENE_CACHE) -> None:
        self._lock = threading.Lock()
        self._frames_kept = frames
        self._frames: dict[str, deque[RgbdSet]] = {}
        self._newest: RgbdSet | None = None
        self._scenes: deque[tuple[str, Scene]] = deque(maxlen=scenes)

    def resize(self, frames: int) -> None:
        """Keep ``frames`` newest sets per camera."""
        with self._lock:
            self._frames_kept = frames
            self._frames = {
                camera: deque(kept, maxlen=frames) for camera, kept in self._frames.items()
            }

    def add_frame(self, paired: RgbdSet) -> None:
        with self._lock:
            kept = self._frames.get(paired.camera)
            if kept is None:
                kept = self._frames[paired.camera] = deque(maxlen=self._frames_kept)
            kept.append(paired)
            self._newest = paired

    def add_scene(self, scene: Scene, camera: str = '') -> None:
        """A published scene of ``camera`` (the name its frames carry, RgbdSet.camera)."""
        with self._lock:
            self._scenes.append((camera, scene))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._newest = None
            self._scenes.clear()

    def frame(self, stamp_ns: int, slop_ns: int) -> RgbdSet | None:
        """The newest frame of any camera (``stamp_ns == 0``: the last to arrive) or the one
        closest to ``stamp_ns`` within ``slop_ns``; None when there is none."""
        with self._lock:
            if stamp_ns == 0:
                return self._newest
            frames = [paired for kept in self._frames.values() for paired in kept]
            if not frames:
                return None
            best = min(frames, key=lambda paired: abs(paired.stamp_ns - stamp_ns))
        return best if abs(best.stamp_ns - stamp_ns) <= max(slop_ns, 1) else None

    def scenes(self) -> list[Scene]:
        """The kept scenes, oldest first (all cameras)."""
        with self._lock:
            return [scene for _, scene in self._scenes]

    def scene(self, stamp_ns: int, camera: str = '') -> Scene | None:
        """The published scene of that exact stamp and camera, if any."""
        with self._lock:
            for scene_camera, scene in reversed(self._scenes):
                if scene.stamp_ns == stamp_ns and scene_camera == camera:
                    return scene
        return None

    def scene_for(self, paired: RgbdSet) -> Scene | None:
        """The published scene of that paired frame (its camera and stamp), if any."""
        return self.scene(paired.stamp_ns, paired.camera)


class SpatialServices:
    """Handlers of ``~/query`` and ``~/locate``; every failure is a typed reply.

    Args:
        snapshots: frames and scenes to answer on.
        errors: where failures are counted.
        pipeline: the current pipeline (None while unconfigured).
        run_priority: awaits a coroutine factory run in the scheduler's priority lane.
        transforms: TF lookups (None without tf2_ros or while unconfigured).
        now_ns: the node clock.
        parameter: reads a node parameter's current value.
    """

    def __init__(
        self,
        snapshots: SnapshotBuffer,
        errors: ErrorLog,
        *,
        pipeline: Callable[[], SpatialPipeline | None],
        run_priority: Callable[[Callable[[], Awaitable[Any]], Deadline], Awaitable[Any]],
        transforms: Callable[[], TransformSource | None],
        now_ns: Callable[[], int],
        parameter: Callable[[str], Any],
    ) -> None:
        self._snapshots = snapshots
        self._errors = errors
        self._pipeline = pipeline
        self._run_priority = run_priority
        self._transforms = transforms
        self._now_ns = now_ns
        self._parameter = parameter

    def _slop_ns(self) -> int:
        return int(float(self._parameter('sync_slop_s')) * 1e9)

    def _deadline(self) -> Deadline:
        return Deadline.after(float(self._parameter('request_timeout_s')))

    async def _run(
        self, kind: str, work: Callable[[], Awaitable[Any]], deadline: Deadline
    ) -> tuple[Any, str]:
        """(result, '') or (None, why it failed): every failure becomes a typed reply."""
        try:
            return await self._run_priority(work, deadline), ''
        except (TimeoutError, EngineTimeout):
            timeout_s = float(self._parameter('request_timeout_s'))
            why = f'the request deadline ({timeout_s:.1f} s, request_timeout_s) passed'
        except SpatialVlmError as error:
            why = f'{type(error).__name__}: {error}'
        except Exception as error:  # noqa: BLE001 - service boundary, traceback logged
            self._errors.report_exception(kind, error)
            return None, f'{type(error).__name__}: {error}'
        self._errors.report(kind, why)
        return None, why

    async def on_query(
        self, request: SpatialQuery.Request, response: SpatialQuery.Response
    ) -> SpatialQuery.Response:
        deadline = self._deadline()
        question = request.question.strip()
        if not question or len(request.question.encode()) > MAX_QUESTION_BYTES:
            response.success = False
            response.message = f'question must be 1..{MAX_QUESTION_BYTES} bytes'
            return response
        frame = self._snapshots.frame(conversions.stamp_to_ns(request.stamp), self._slop_ns())
        if frame is None:
            response.success = False
            response.message = 'no paired RGB-D frame for that stamp (or none received yet)'
            return response
        pipeline = self._pipeline()
        if pipeline is None:
            response.success = False
            response.message = 'node is not active'
            return response
        cached = self._snapshots.scene_for(frame)
        transforms = self._transforms()
        answer, why = await self._run(
            'query',
            lambda: pipeline.answer_paired(
                frame,
                question,
                scene=cached,
                now_ns=self._now_ns,
                transforms=transforms,
                deadline=deadline,
            ),
            deadline,
        )
        if answer is None:
            response.success = False
            response.message = why
            return response
        response.success = answer.ok
        response.answer = answer.text
        response.object_ids = list(answer.object_ids)
        response.scene = conversions.scene_to_msg(answer.scene)
        response.message = answer.message
        return response

    async def on_locate(
        self, request: LocateObject.Request, response: LocateObject.Response
    ) -> LocateObject.Response:
        deadline = self._deadline()
        description = request.description.strip()
        if not description or len(request.description.encode()) > MAX_DESCRIPTION_BYTES:
            response.found = False
            response.reason = f'description must be 1..{MAX_DESCRIPTION_BYTES} bytes'
            return response
        pipeline = self._pipeline()
        frame = self._snapshots.frame(0, self._slop_ns())
        if pipeline is None or frame is None:
            response.found = False
            response.reason = 'no paired RGB-D frame received yet' if pipeline else 'not active'
            return response
        scene = self._snapshots.scene_for(frame)
        match = find_best_match(scene, description) if scene is not None else None
        transforms = self._transforms()
        if match is None:
            scene, why = await self._run(
                'locate',
                lambda: pipeline.perceive_paired(
                    frame,
                    vocabulary=(description,),
                    now_ns=self._now_ns,
                    transforms=transforms,
                    deadline=deadline,
                ),
                deadline,
            )
            if scene is None:
                response.found = False
                response.reason = why
                return response
            match = find_best_match(scene, description)
        if match is None or scene is None:
            response.found = False
            response.reason = f'no object matching {description!r} in the newest frame'
            return response
        response.object = conversions.object_to_msg(match, scene)
        if match.lifted.position is None:
            response.found = False
            response.reason = f'{match.id} has too little valid depth for a position'
            return response
        target = request.target_frame or scene.frame_id
        position = np.asarray(match.lifted.position)
        if target != scene.frame_id:
            if transforms is None:
                response.found = False
                response.reason = f'no transform {scene.frame_id} -> {target}: node not active'
                return response
            transform = transforms.lookup(target, scene.frame_id, scene.stamp_ns)
            if transform.matrix is None:
                response.found = False
                response.reason = transform.reason
                return response
            position = transform.matrix[:3, :3] @ position + transform.matrix[:3, 3]
        located = conversions.pose_of(match, target, scene.stamp_ns)
        located.pose.position.x, located.pose.position.y, located.pose.position.z = (
            float(v) for v in position
        )
        response.found = True
        response.pose = located
        return response
