# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
``~/query`` and ``~/locate``: on-demand requests on one consistent snapshot.

The handlers are coroutines: rclpy runs them as tasks, and while one awaits the worker it holds
no executor thread, so any number of concurrent calls leave subscriptions, timers, parameter and
lifecycle services running. Each request gets ONE deadline (``request_timeout_s``) when it
arrives; it bounds the wait for a priority slot and every engine call of the request.

The work is the pipeline's (``SpatialPipeline.snapshot`` / ``answer`` / ``locate``, ROS-free,
docs/QUERIES.md); the handlers pick the frame, look up transforms and fill every reply field.

The snapshot buffer keeps the newest paired frames (for SpatialQuery by stamp) and the published
scenes (so a question or a locate on a frame that was already grounded makes no second call).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
import threading
from typing import Any

from geometry_msgs.msg import PoseStamped

from spatial_vlm_ros.core import message_fields
from spatial_vlm_ros.core.pairing import RgbdSet
from spatial_vlm_ros.core.referring import LocateOptions, LocateResult, RememberedCandidate
from spatial_vlm_ros.core.scheduling import Deadline
from spatial_vlm_ros.core.types import FloatArray, Scene, SpatialVlmError
from spatial_vlm_ros.engines.base import EngineTimeout
from spatial_vlm_ros.msg import LocateCandidate, SpatialMeasurement
from spatial_vlm_ros.pipeline import SpatialPipeline
from spatial_vlm_ros.queries import (
    MAX_DESCRIPTION_BYTES,
    MAX_QUESTION_BYTES,
    GroundedAnswer,
    LocateOutcome,
    LocateSettings,
    QuerySnapshot,
)
from spatial_vlm_ros.ros import conversions
from spatial_vlm_ros.ros.diagnostics import ErrorLog
from spatial_vlm_ros.ros.tf import TransformSource
from spatial_vlm_ros.srv import LocateObject, SpatialQuery

SCENE_CACHE = 30  # published scenes kept for snapshot reuse
# The model calls of a request end this much before its deadline (at most, and at most 10 % of
# request_timeout_s), so that a reply can still be composed from the geometry when the model
# runs out of time, before the priority lane cancels the request at the deadline itself.
REPLY_RESERVE_S = 0.5

# Remembered objects for ~/locate, positions in the given frame (the scene's). The object memory
# provides it; without one there are none.
RememberedCandidates = Callable[[str], Sequence[RememberedCandidate]]


def no_remembered_candidates(frame_id: str) -> Sequence[RememberedCandidate]:
    """Return the seam's default: no object memory, no remembered candidates."""
    return ()


class SnapshotBuffer:
    """
    The newest paired frames (per camera) and published scenes, for services (thread-safe).

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
        """Keep a published scene of ``camera`` (the name its frames carry, RgbdSet.camera)."""
        with self._lock:
            self._scenes.append((camera, scene))

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._newest = None
            self._scenes.clear()

    def frame(self, stamp_ns: int, slop_ns: int) -> RgbdSet | None:
        """
        Return the newest frame, or the one closest to ``stamp_ns`` within ``slop_ns``.

        The newest of any camera (``stamp_ns == 0``: the last to arrive); None when there is
        none.
        """
        with self._lock:
            if stamp_ns == 0:
                return self._newest
            frames = [paired for kept in self._frames.values() for paired in kept]
            if not frames:
                return None
            best = min(frames, key=lambda paired: abs(paired.stamp_ns - stamp_ns))
        return best if abs(best.stamp_ns - stamp_ns) <= max(slop_ns, 1) else None

    def scenes(self) -> list[Scene]:
        """Return the kept scenes, oldest first (all cameras)."""
        with self._lock:
            return [scene for _, scene in self._scenes]

    def scene(self, stamp_ns: int, camera: str = '') -> Scene | None:
        """Return the published scene of that exact stamp and camera, if any."""
        with self._lock:
            for scene_camera, scene in reversed(self._scenes):
                if scene.stamp_ns == stamp_ns and scene_camera == camera:
                    return scene
        return None

    def scene_for(self, paired: RgbdSet) -> Scene | None:
        """Return the published scene of that paired frame (its camera and stamp), if any."""
        return self.scene(paired.stamp_ns, paired.camera)


@dataclass(frozen=True)
class _Located:
    """
    What one ~/locate computed.

    The snapshot it resolved on, the remembered objects offered, the outcome.
    """

    snapshot: QuerySnapshot
    memory: Sequence[RememberedCandidate]
    outcome: LocateOutcome
    note: str = ''  # e.g. the targeted grounding that was tried


class SpatialServices:
    """
    Handlers of ``~/query`` and ``~/locate``; every failure is a typed reply.

    :param snapshots: frames and scenes to answer on.
    :param errors: where failures are counted.
    :param pipeline: the current pipeline (None while unconfigured).
    :param run_priority: awaits a coroutine factory run in the scheduler's priority lane.
    :param transforms: TF lookups (None while unconfigured).
    :param now_ns: the node clock.
    :param parameter: reads a node parameter's current value.
    :param remembered_candidates: remembered objects (the object memory) with positions in the
        given frame, for ``~/locate``; none by default.
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
        remembered_candidates: RememberedCandidates = no_remembered_candidates,
    ) -> None:
        self._snapshots = snapshots
        self._errors = errors
        self._pipeline = pipeline
        self._run_priority = run_priority
        self._transforms = transforms
        self._now_ns = now_ns
        self._parameter = parameter
        self._remembered_candidates = remembered_candidates

    def _slop_ns(self) -> int:
        return int(float(self._parameter('sync_slop_s')) * 1e9)

    def _deadlines(self) -> tuple[Deadline, Deadline]:
        """
        ``(request deadline, deadline of its model calls)``.

        One budget per request, from its arrival; the model calls end :data:`REPLY_RESERVE_S` (at
        most 10 %) earlier.
        """
        timeout_s = float(self._parameter('request_timeout_s'))
        request = Deadline.after(timeout_s)
        return request, Deadline(request.at_s - min(REPLY_RESERVE_S, 0.1 * timeout_s))

    def _deadline_passed(self) -> str:
        timeout_s = float(self._parameter('request_timeout_s'))
        return f'the request deadline ({timeout_s:.1f} s, request_timeout_s) passed'

    async def _run(
        self, kind: str, work: Callable[[], Awaitable[Any]], deadline: Deadline
    ) -> tuple[Any, str]:
        """
        Run the work: ``(result, '')`` or ``(None, why it failed)``.

        Every failure becomes a typed reply.
        """
        try:
            return await self._run_priority(work, deadline), ''
        except (TimeoutError, EngineTimeout):
            why = self._deadline_passed()
        except SpatialVlmError as error:
            why = f'{type(error).__name__}: {error}'
        except Exception as error:  # noqa: BLE001 - service boundary, traceback logged
            self._errors.report_exception(kind, error)
            return None, f'{type(error).__name__}: {error}'
        self._errors.report(kind, why)
        return None, why

    # ---------------------------------------------------------------- ~/query

    async def on_query(
        self, request: SpatialQuery.Request, response: SpatialQuery.Response
    ) -> SpatialQuery.Response:
        deadline, model_deadline = self._deadlines()
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

        async def work() -> tuple[QuerySnapshot, GroundedAnswer]:
            snapshot = await pipeline.snapshot(
                frame,
                scene=cached,
                now_ns=self._now_ns,
                transforms=transforms,
                deadline=model_deadline,
            )
            return snapshot, await pipeline.answer(snapshot, question, deadline=model_deadline)

        result, why = await self._run('query', work, deadline)
        if result is None:
            response.success = False
            response.message = why
            return response
        snapshot, answer = result
        message = answer.message
        if answer.timed_out:
            self._errors.report('query', self._deadline_passed())
            message = f'{self._deadline_passed()}; {message}'
        response.success = answer.success
        response.answer = answer.answer
        response.object_ids = list(answer.object_ids)
        response.measurements = [
            conversions.to_message(SpatialMeasurement, message_fields.measurement_fields(m))
            for m in answer.measurements
        ]
        response.scene = conversions.scene_to_msg(snapshot.scene)
        response.message = message
        return response

    # ---------------------------------------------------------------- ~/locate

    async def on_locate(
        self, request: LocateObject.Request, response: LocateObject.Response
    ) -> LocateObject.Response:
        deadline, model_deadline = self._deadlines()
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
        standoff_m = float(request.standoff_m)
        if standoff_m <= 0.0 or standoff_m != standoff_m:  # 0 (or NaN): the node's default
            standoff_m = float(self._parameter('locate_standoff_m'))
        settings = LocateSettings(
            locate=LocateOptions(threshold=float(self._parameter('locate_min_score'))),
            want_approach_pose=bool(request.want_approach_pose),
            standoff_m=standoff_m,
            target_frame=request.target_frame.strip(),
        )
        cached = self._snapshots.scene_for(frame)
        transforms = self._transforms()

        async def resolve(snapshot: QuerySnapshot) -> tuple[LocateOutcome, Sequence[Any]]:
            scene = snapshot.scene
            memory = tuple(self._remembered_candidates(scene.frame_id))
            target = settings.target_frame or scene.frame_id
            if target == scene.frame_id:
                here = replace(settings, target_frame=target)
            else:
                matrix, why = await _lookup(transforms, target, scene.frame_id, scene.stamp_ns)
                if matrix is None:
                    failed = LocateResult(False, False, None, (), why)
                    return LocateOutcome(failed, target, scene.stamp_ns), memory
                here = replace(settings, target_frame=target, T_target_from_scene=matrix)
            outcome = await pipeline.locate(
                snapshot, description, memory=memory, deadline=model_deadline, settings=here
            )
            return outcome, memory

        async def work() -> _Located:
            snapshot = await pipeline.snapshot(
                frame,
                scene=cached,
                now_ns=self._now_ns,
                transforms=transforms,
                deadline=model_deadline,
            )
            outcome, memory = await resolve(snapshot)
            if outcome.result.noun_matched:
                return _Located(snapshot, memory, outcome)
            # No label in view or memory is named: ask the model to ground the description
            # itself on the newest frame (the stream's vocabulary may not include it).
            grounded = await pipeline.snapshot(
                frame,
                vocabulary=(description,),
                now_ns=self._now_ns,
                transforms=transforms,
                deadline=model_deadline,
            )
            retried, memory = await resolve(grounded)
            if not retried.result.noun_matched:
                note = f'a grounding of {description!r} on the newest frame found none either'
                return _Located(snapshot, memory, outcome, note)
            return _Located(grounded, memory, retried, f'grounded {description!r} on request')

        located, why = await self._run('locate', work, deadline)
        if located is None:
            response.found = False
            response.reason = why
            return response
        if located.outcome.timed_out:
            self._errors.report('locate', self._deadline_passed())
        self._fill_locate(response, located)
        return response

    def _fill_locate(self, response: LocateObject.Response, located: _Located) -> None:
        """Every field of LocateObject.Response from one outcome (docs/QUERIES.md)."""
        outcome, scene = located.outcome, located.snapshot.scene
        result, best = outcome.result, outcome.result.best
        notes = [result.reason]
        if outcome.approach_reason:
            notes.append(f'no approach pose: {outcome.approach_reason}')
        if outcome.model_message:
            notes.append(outcome.model_message)
        if located.note:
            notes.append(located.note)
        if outcome.timed_out:
            notes.insert(0, self._deadline_passed())
        response.found = result.found
        response.ambiguous = result.ambiguous
        response.reason = '; '.join(note for note in notes if note)
        response.candidates = [
            conversions.to_message(LocateCandidate, message_fields.locate_candidate_fields(c))
            for c in result.candidates
        ]
        if not result.found or best is None or best.position is None:
            # No pose to give: the covariance says "unknown", never a zero that claims certainty.
            response.position_covariance = message_fields.covariance_fields(None)
            return
        response.pose = conversions.to_message(
            PoseStamped,
            message_fields.pose_stamped_fields(outcome.stamp_ns, outcome.frame_id, best.position),
        )
        response.position_covariance = message_fields.covariance_fields(best.covariance)
        response.score = float(best.score)
        response.in_view = bool(best.in_view)
        response.age_s = float(best.age_s)
        in_scene = {obj.id: obj for obj in scene.objects}
        remembered = {item.id: item for item in located.memory}
        if best.id in in_scene:
            response.object = conversions.object_to_msg(in_scene[best.id], scene)
        elif best.id in remembered:
            response.object = conversions.to_message(
                type(response.object),
                message_fields.out_of_view_object_fields(remembered[best.id], scene),
            )
        if outcome.approach is not None:
            response.has_approach_pose = True
            response.approach_pose = conversions.to_message(
                PoseStamped, message_fields.approach_pose_fields(outcome.approach, scene.stamp_ns)
            )


async def _lookup(
    transforms: TransformSource | None, target: str, source: str, stamp_ns: int
) -> tuple[FloatArray | None, str]:
    """T_target_from_source at ``stamp_ns`` off the event loop (a TF wait blocks), or why not."""
    if transforms is None:
        return None, f'no transform {source} -> {target}: node not active'
    result = await asyncio.get_running_loop().run_in_executor(
        None, transforms.lookup, target, source, stamp_ns
    )
    return result.matrix, result.reason
