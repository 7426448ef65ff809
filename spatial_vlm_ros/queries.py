# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
``~/query`` and ``~/locate`` as two async functions on one snapshot: grounded in measurements.

:func:`answer_question` shows the model the set-of-marks image and the measured facts, asks for
a structured answer (constrained where the engine can), then states every quantity from the
geometry: a number the model guessed is kept only as ``model_value`` and flagged when it
disagrees. Without a usable model answer it answers what geometry alone can answer (distance
between two named objects, nearest, left/right, largest...) and says so.

:func:`locate` resolves a referring expression (``core.referring``) against the scene and the
remembered objects, asks the model to choose among the marked candidates when appearance
decides, and adds an approach pose for Nav2 (``core.approach``) when the scene's frame is
gravity-aligned.

Both are ROS-free: the node's service handlers (and the replay, the CLI and the benchmark) call
them with a :class:`QuerySnapshot` and one deadline. docs/QUERIES.md is the specification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
import math
import re

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.annotate import Mark, draw_marks
from spatial_vlm_ros.core.approach import (
    DEFAULT_STANDOFF_M,
    ApproachError,
    ApproachPose,
    approach_pose,
)
from spatial_vlm_ros.core.approach import footprint_radius as footprint_radius_of
from spatial_vlm_ros.core.measurements import (
    Measurement,
    MeasurementError,
    MeasurementKind,
    PlacedObject,
    QueryFrame,
    disagrees,
    measure,
    measurement_key,
    place_scene,
    query_frame,
)
from spatial_vlm_ros.core.mentions import referenced_ids
from spatial_vlm_ros.core.question_plan import (
    QuestionPlan,
    geometry_answer,
    plan_question,
)
from spatial_vlm_ros.core.referring import (
    LocateCandidate,
    LocateOptions,
    LocatePlan,
    LocateResult,
    ModelChoice,
    RememberedCandidate,
    finish_locate,
    prepare_locate,
    remembered_candidates,
)
from spatial_vlm_ros.core.scheduling import Deadline
from spatial_vlm_ros.core.transforms import (
    apply_transform,
    compose,
    rotate_covariance,
    validate_transform,
)
from spatial_vlm_ros.core.types import FloatArray, Scene
from spatial_vlm_ros.engines.base import (
    EngineError,
    EngineRequest,
    EngineResponse,
    EngineTimeout,
    TaskKind,
    TokenCounts,
    VlmEngine,
)
from spatial_vlm_ros.engines.parsing import ParseFailure, parse_answer
from spatial_vlm_ros.engines.profiles import ModelProfile
from spatial_vlm_ros.engines.question import (
    ANSWER_MAX_CHARS,
    ANSWER_SCHEMA_NAME,
    CHOICE_SCHEMA_NAME,
    FactsBlock,
    FactsOptions,
    StructuredAnswer,
    answer_schema,
    choice_schema,
    choice_text,
    constraint_for,
    facts_block,
    parse_choice,
    parse_structured_answer,
    question_text,
)

MAX_QUESTION_BYTES = 4096  # SpatialQuery.srv: 1 to 4096 bytes
MAX_DESCRIPTION_BYTES = 512  # LocateObject.srv: 1 to 512 bytes

SOURCE_MODEL = 'model'  # a structured model answer, quantities measured
SOURCE_MODEL_TEXT = 'model_text'  # free model text (no structured answer), quantities measured
SOURCE_GEOMETRY = 'geometry'  # no usable model answer; answered from the measurements alone


@dataclass(frozen=True)
class QuerySnapshot:
    """
    One consistent snapshot: a scene and the colour image it was computed on.

    The scene carries where its positions are (``Scene.frame_id``, ``T_frame_from_camera``);
    ``T_relation_from_camera`` is the transform of the relation frame
    (``scene.relation_frame_id``) at the scene's stamp, None when relations are in the camera
    view or the transform is not known (then quantities are read in the scene's frame).
    """

    scene: Scene
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) RGB, the image the scene's boxes refer to
    T_relation_from_camera: FloatArray | None = None

    def query_frame(self) -> QueryFrame:
        """Return the frame quantities are read in (``core.measurements.query_frame``)."""
        return query_frame(self.scene, self.T_relation_from_camera)


@dataclass(frozen=True)
class QueryOptions:
    facts: FactsOptions = field(default_factory=FactsOptions)
    answer_max_chars: int = ANSWER_MAX_CHARS
    think_max_tokens: int | None = None  # None: the profile's max_new_tokens less the answer
    constrained: bool = True  # send the answer grammar (engines without one ignore it)


@dataclass(frozen=True)
class GroundedAnswer:
    """The reply of ``~/query`` (SpatialQuery.srv without the scene)."""

    success: bool
    answer: str
    object_ids: tuple[str, ...]
    measurements: tuple[Measurement, ...]
    source: str  # SOURCE_MODEL, SOURCE_MODEL_TEXT or SOURCE_GEOMETRY ('' on failure)
    message: str
    model_text: str = ''  # the raw model output, for diagnostics
    prompt_text: str = ''  # the user text sent with the image
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timed_out: bool = False  # the model call ran out of the request's deadline


async def _generate(
    engine: VlmEngine, request: EngineRequest, deadline: Deadline | None
) -> EngineResponse:
    """One engine call bounded by what is left of the request's one deadline."""
    if deadline is not None:
        if deadline.expired:
            raise EngineTimeout('the request deadline passed before the model was asked')
        request = replace(request, timeout_s=max(deadline.remaining_s(), 1e-3))
    return await engine.generate(request)


# ----------------------------------------------------------------------------- numbers in text

_UNITS_M = {
    'm': 1.0, 'meter': 1.0, 'meters': 1.0, 'metre': 1.0, 'metres': 1.0,
    'cm': 0.01, 'centimeter': 0.01, 'centimeters': 0.01, 'centimetre': 0.01,
    'centimetres': 0.01, 'mm': 0.001, 'millimeter': 0.001, 'millimeters': 0.001,
    'millimetre': 0.001, 'millimetres': 0.001, 'ft': 0.3048, 'foot': 0.3048, 'feet': 0.3048,
    'in': 0.0254, 'inch': 0.0254, 'inches': 0.0254,
}  # fmt: skip
_WORD_NUMBERS = {
    'half a': 0.5, 'half': 0.5, 'a': 1.0, 'one': 1.0, 'two': 2.0, 'three': 3.0, 'four': 4.0,
    'five': 5.0, 'six': 6.0, 'seven': 7.0, 'eight': 8.0, 'nine': 9.0, 'ten': 10.0,
}  # fmt: skip
_UNIT_PATTERN = '|'.join(sorted((re.escape(u) for u in _UNITS_M), key=len, reverse=True))
_NUMBER_PATTERN = r'-?\d+(?:[.,]\d+)?|' + '|'.join(
    sorted((re.escape(w) for w in _WORD_NUMBERS), key=len, reverse=True)
)
_METRIC_QUANTITY = re.compile(
    rf'(?<![\w.])({_NUMBER_PATTERN})\s*({_UNIT_PATTERN})(?![\w])', re.IGNORECASE
)


def metric_quantities(text: str) -> list[float]:
    """Lengths stated in ``text`` ("About 2 metres", "47 cm", "half a metre"), in metres."""
    values = []
    for number, unit in _METRIC_QUANTITY.findall(text):
        key = number.lower()
        value = _WORD_NUMBERS[key] if key in _WORD_NUMBERS else float(key.replace(',', '.'))
        values.append(value * _UNITS_M[unit.lower()])
    return values


# ----------------------------------------------------------------------------- ~/query


def _measure_stated(
    structured: StructuredAnswer | None,
    plan: QuestionPlan,
    placed: Sequence[PlacedObject],
    frame: QueryFrame,
) -> tuple[list[Measurement], list[str]]:
    """
    Return the model's stated measurements, then the plan's.

    Each is measured once from geometry.
    """
    by_id = {obj.id: obj for obj in placed}
    requests: list[tuple[MeasurementKind, tuple[str, ...], float]] = []
    if structured is not None:
        requests.extend((m.kind, m.object_ids, m.value_m) for m in structured.measurements)
    requests.extend((kind, ids, math.nan) for kind, ids in plan.requests)
    measured: dict[tuple[MeasurementKind, tuple[str, ...]], Measurement] = {}
    problems: list[str] = []
    for kind, ids, stated in requests:
        key = measurement_key(kind, ids)
        reverse = measurement_key(kind, ids[::-1]) if len(ids) == 2 else key
        if key in measured or reverse in measured:
            continue
        try:
            measurement = measure(kind, [by_id[i] for i in ids], frame)
        except (MeasurementError, KeyError) as error:
            problems.append(f'cannot measure {kind.value} of {"/".join(ids)}: {error}')
            continue
        if math.isfinite(stated):
            measurement = replace(measurement, model_value=stated)
        measured[key] = measurement
    return list(measured.values()), problems


def _attach_text_number(measurements: list[Measurement], text: str) -> list[Measurement]:
    """Return a single length in the model's text is its value for a single measurement."""
    stated = metric_quantities(text)
    if len(stated) != 1 or len(measurements) != 1 or math.isfinite(measurements[0].model_value):
        return measurements
    only = measurements[0]
    value = stated[0]
    if only.kind in (MeasurementKind.LEFT_RIGHT, MeasurementKind.FRONT_BEHIND):
        value = math.copysign(value, only.value)  # text states magnitudes with a direction word
    if only.kind == MeasurementKind.ABOVE_BELOW:
        value = math.copysign(value, only.value)
    return [replace(only, model_value=value)]


def _disagreements(measurements: Sequence[Measurement]) -> list[str]:
    notes = []
    for m in measurements:
        if disagrees(m.value, m.sigma, m.model_value):
            notes.append(
                f'the model said {m.model_value:.2f} m for {m.kind.value} '
                f'{"/".join(m.object_ids)}; measured {m.value:.2f} m'
                + (f' (+/- {m.sigma:.2f} m)' if math.isfinite(m.sigma) else '')
            )
    return notes


def _compose_answer(model_text: str, measurements: Sequence[Measurement]) -> tuple[str, str]:
    """``(answer, note)``: the model's words with every quantity stated as measured."""
    if not measurements:
        return model_text, ''
    sentences = ' '.join(m.text + '.' for m in measurements)
    if metric_quantities(model_text):
        return sentences, "the model's numbers were replaced by the measured values"
    return f'{model_text.rstrip()} Measured: {sentences}'.strip(), ''


def _answer_ids(preferred: Sequence[str], measurements: Sequence[Measurement]) -> tuple[str, ...]:
    ids = list(dict.fromkeys(preferred))
    for m in measurements:
        ids.extend(i for i in m.object_ids if i not in ids)
    return tuple(ids)


def _marks(placed_ids: Sequence[str], scene: Scene) -> list[Mark]:
    by_id = {obj.id: obj for obj in scene.objects}
    return [Mark(i, by_id[i].box, by_id[i].label) for i in placed_ids if i in by_id]


@dataclass(frozen=True)
class QuestionInput:
    """What the model is given for one question (exposed for tests and the benchmark)."""

    request: EngineRequest
    facts: FactsBlock
    plan: QuestionPlan
    placed: tuple[PlacedObject, ...]
    frame: QueryFrame
    text: str


def build_question_input(
    snapshot: QuerySnapshot,
    question: str,
    profile: ModelProfile,
    options: QueryOptions | None = None,
) -> QuestionInput:
    """Return the engine request of a grounded question: marked image, facts, question, grammar."""
    options = options or QueryOptions()
    frame = snapshot.query_frame()
    placed = place_scene(snapshot.scene, frame)
    plan = plan_question(question, placed)
    facts = facts_block(placed, frame, plan.named_ids, options.facts)
    marked = draw_marks(snapshot.rgb, _marks(facts.object_ids, snapshot.scene))
    text = question_text(profile, facts, question)
    constraint = None
    if options.constrained:
        schema = answer_schema(facts.object_ids, options.answer_max_chars)
        constraint = constraint_for(
            profile, schema, ANSWER_SCHEMA_NAME, think_max_tokens=options.think_max_tokens
        )
    request = EngineRequest(
        images=(marked.image,),
        task=TaskKind.QUESTION,
        stamp_ns=snapshot.scene.stamp_ns,
        question=text,
        output_constraint=constraint,
    )
    return QuestionInput(request, facts, plan, tuple(placed), frame, text)


def _check_text(value: str, limit: int, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        return f'the {what} is empty'
    if len(value.encode('utf-8')) > limit:
        return f'the {what} is longer than {limit} bytes'
    return ''


async def answer_question(
    snapshot: QuerySnapshot,
    question: str,
    engine: VlmEngine | None,
    profile: ModelProfile,
    *,
    deadline: Deadline | None = None,
    options: QueryOptions | None = None,
) -> GroundedAnswer:
    """
    Answer ``question`` on ``snapshot`` with the model, every quantity measured.

    ``deadline`` is the request's one deadline: the engine call gets what is left of it;
    ``engine`` None answers from geometry alone. Never raises for a bad model answer or an
    engine failure: those fall back to the geometry answer when the question allows one, else
    give ``success=False`` with the reason.
    """
    problem = _check_text(question, MAX_QUESTION_BYTES, 'question')
    if problem:
        return GroundedAnswer(False, '', (), (), '', problem)
    prepared = build_question_input(snapshot, question, profile, options)
    placed, frame, plan = prepared.placed, prepared.frame, prepared.plan
    scene_ids = prepared.facts.object_ids
    model_error = ''
    timed_out = False
    response: EngineResponse | None = None
    if engine is None:
        model_error = 'no model engine'
    else:
        try:
            response = await _generate(engine, prepared.request, deadline)
        except EngineError as error:
            model_error = f'{type(error).__name__}: {error}'
            timed_out = isinstance(error, EngineTimeout)
    raw = response.raw_text if response is not None else ''
    tokens = response.tokens if response is not None else TokenCounts()
    structured = None
    notes: list[str] = []
    free_text = ''
    if response is not None:
        parsed = parse_structured_answer(raw, profile, scene_ids)
        if isinstance(parsed, StructuredAnswer):
            structured = parsed
            notes.extend(parsed.warnings)
        else:
            free = parse_answer(raw, profile.answer_format)
            # A cut-off or malformed JSON answer is not prose to pass on.
            if not isinstance(free, ParseFailure) and not free.answer.lstrip().startswith('{'):
                free_text = free.answer
            model_error = f'no structured answer: {parsed.reason}'
    measurements, problems = _measure_stated(structured, plan, placed, frame)
    notes.extend(problems)
    if structured is not None or free_text:
        model_text = structured.answer if structured is not None else free_text
        measurements = _attach_text_number(measurements, model_text)
        answer, note = _compose_answer(model_text, measurements)
        if note:
            notes.append(note)
        preferred = (
            structured.object_ids
            if structured is not None
            else referenced_ids(model_text, [(o.id, o.label) for o in placed])
        )
        if model_error:
            notes.insert(0, model_error)
        notes = _disagreements(measurements) + notes
        return GroundedAnswer(
            success=True,
            answer=answer,
            object_ids=_answer_ids(preferred, measurements),
            measurements=tuple(measurements),
            source=SOURCE_MODEL if structured is not None else SOURCE_MODEL_TEXT,
            message='; '.join(notes),
            model_text=raw,
            prompt_text=prepared.text,
            tokens=tokens,
            timed_out=timed_out,
        )
    fallback = geometry_answer(plan, measurements)
    if plan.ambiguous_labels:
        notes.append(
            'the question names '
            + ', '.join(f'"{label}"' for label in plan.ambiguous_labels)
            + ', which fits several objects: name one by id'
        )
    if fallback:
        message = f'the model gave no usable answer ({model_error}); answered from the geometry'
        return GroundedAnswer(
            True,
            fallback,
            _answer_ids(plan.named_ids, measurements),
            tuple(measurements),
            SOURCE_GEOMETRY,
            '; '.join([message, *notes]),
            model_text=raw,
            prompt_text=prepared.text,
            tokens=tokens,
            timed_out=timed_out,
        )
    return GroundedAnswer(
        False,
        '',
        (),
        tuple(measurements),
        '',
        '; '.join([f'no answer: {model_error}', *notes]),
        model_text=raw,
        prompt_text=prepared.text,
        tokens=tokens,
        timed_out=timed_out,
    )


# ----------------------------------------------------------------------------- ~/locate


@dataclass(frozen=True)
class LocateSettings:
    """
    Per-request options of :func:`locate`.

    ``target_frame`` is the frame the reply is expressed in ('' = the scene's frame);
    ``T_target_from_scene`` maps the scene's frame into it (required when they differ). The
    approach pose is computed in that frame, which must be gravity-aligned (REP 103/105, z up):
    it is refused in the camera optical frame.
    """

    locate: LocateOptions = field(default_factory=LocateOptions)
    want_approach_pose: bool = False
    standoff_m: float = DEFAULT_STANDOFF_M
    # Where the robot stands, in the target frame; None: the camera's position.
    viewpoint: FloatArray | None = None
    target_frame: str = ''
    T_target_from_scene: FloatArray | None = None


@dataclass(frozen=True)
class LocateOutcome:
    """
    The reply of ``~/locate`` (LocateObject.srv).

    Candidates' positions, covariances and the approach pose in ``frame_id``.
    """

    result: LocateResult
    frame_id: str  # frame of the candidates' positions and of the approach pose
    stamp_ns: int = 0  # when the chosen object was last measured (the scene stamp when in view)
    approach: ApproachPose | None = None
    approach_reason: str = ''  # why there is no approach pose
    model_message: str = ''  # what happened when the model was asked to choose
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timed_out: bool = False  # the model's choice ran out of the request's deadline

    @property
    def found(self) -> bool:
        return self.result.found


def _camera_in_target(scene: Scene, target_from_scene: FloatArray) -> FloatArray | None:
    """T_target_from_camera, or None when the scene does not say where the camera was."""
    if scene.frame_id == scene.camera_frame_id:
        return target_from_scene
    if scene.T_frame_from_camera is None:
        return None
    return compose(target_from_scene, scene.T_frame_from_camera)


def _in_target_frame(result: LocateResult, target_from_scene: FloatArray) -> LocateResult:
    """Every candidate's position and covariance moved from the scene frame to the target."""

    def moved(candidate: LocateCandidate) -> LocateCandidate:
        if candidate.position is None:
            return candidate
        covariance = candidate.covariance
        return replace(
            candidate,
            position=apply_transform(target_from_scene, candidate.position),
            covariance=None
            if covariance is None
            else rotate_covariance(target_from_scene, covariance),
        )

    candidates = tuple(moved(c) for c in result.candidates)
    best = None if result.best is None else moved(result.best)
    return replace(result, best=best, candidates=candidates)


def _approach(
    scene: Scene,
    result: LocateResult,
    settings: LocateSettings,
    frame_id: str,
    target_from_scene: FloatArray,
) -> tuple[ApproachPose | None, str]:
    best = result.best
    if not settings.want_approach_pose:
        return None, ''
    if not result.found or best is None or best.position is None:
        return None, 'no object was found'
    if frame_id == scene.camera_frame_id:
        return None, (
            f'an approach pose needs a gravity-aligned frame; {frame_id} is the camera optical '
            'frame (ask with target_frame, e.g. map or base_link, or set the node parameter '
            'target_frame)'
        )
    target_from_camera = _camera_in_target(scene, target_from_scene)
    viewpoint = settings.viewpoint
    if viewpoint is None:
        if target_from_camera is None:
            return None, f'the camera position in {frame_id} is unknown'
        viewpoint = target_from_camera[:3, 3]
    rotation = None if target_from_camera is None else target_from_camera[:3, :3]
    try:
        pose = approach_pose(
            best.position,
            viewpoint,
            frame_id,
            footprint_radius_m=footprint_radius_of(best.size, rotation),
            standoff_m=settings.standoff_m,
        )
    except ApproachError as error:
        return None, str(error)
    return pose, ''


async def _model_choice(
    snapshot: QuerySnapshot,
    plan: LocatePlan,
    engine: VlmEngine,
    profile: ModelProfile,
    settings: LocateSettings,
    deadline: Deadline | None,
) -> tuple[ModelChoice | None, str, TokenCounts, bool]:
    """``(choice, what happened, tokens, timed out)``."""
    by_id = {obj.id: obj for obj in snapshot.scene.objects}
    candidates = [c for c in plan.choice_candidates if c.id in by_id][
        : settings.locate.max_choice_candidates
    ]
    if not candidates:
        return None, 'no candidate in view to show the model', TokenCounts(), False
    ids = [c.id for c in candidates]
    marked = draw_marks(snapshot.rgb, [Mark(i, by_id[i].box, by_id[i].label) for i in ids])
    request = EngineRequest(
        images=(marked.image,),
        task=TaskKind.QUESTION,
        stamp_ns=snapshot.scene.stamp_ns,
        question=choice_text(profile, plan.description, [(c.id, c.label) for c in candidates]),
        output_constraint=constraint_for(profile, choice_schema(ids), CHOICE_SCHEMA_NAME),
    )
    try:
        response = await _generate(engine, request, deadline)
    except EngineError as error:
        message = f'the model could not be asked: {type(error).__name__}: {error}'
        return None, message, TokenCounts(), isinstance(error, EngineTimeout)
    parsed = parse_choice(response.raw_text, profile, ids)
    if isinstance(parsed, ParseFailure):
        return None, f'the model gave no usable choice: {parsed.reason}', response.tokens, False
    chosen = parsed.choice or 'none'
    choice = ModelChoice(parsed.choice, parsed.reason)
    return choice, f'model chose {chosen}', response.tokens, False


def _require_position(result: LocateResult) -> LocateResult:
    """Return a found object without a measured position is not found: there is no pose to give."""
    best = result.best
    if not result.found or best is None or best.position is not None:
        return result
    return replace(
        result,
        found=False,
        reason=f'{best.id} has too little valid depth for a position; {result.reason}',
    )


async def locate(
    snapshot: QuerySnapshot,
    description: str,
    *,
    memory: Sequence[RememberedCandidate] = (),
    engine: VlmEngine | None = None,
    profile: ModelProfile | None = None,
    deadline: Deadline | None = None,
    settings: LocateSettings | None = None,
    now_ns: int | None = None,
) -> LocateOutcome:
    """
    Resolve ``description`` against the snapshot (and ``memory``); see the module docstring.

    ``memory`` holds remembered objects in the scene's frame; ``now_ns`` (default: the scene
    stamp) ages them. The model is asked only when appearance words decide and ``engine`` and
    ``profile`` are given; ``deadline`` bounds that call. The reply is in
    ``settings.target_frame``. Never raises for a bad description or an engine failure.
    """
    settings = settings or LocateSettings()
    scene = snapshot.scene
    frame_id = settings.target_frame or scene.frame_id
    target_from_scene = np.eye(4)
    problem = _check_text(description, MAX_DESCRIPTION_BYTES, 'description')
    if frame_id != scene.frame_id:
        if settings.T_target_from_scene is None:
            problem = problem or f'no transform {scene.frame_id} -> {frame_id} given'
        else:
            target_from_scene = validate_transform(settings.T_target_from_scene)
    if problem:
        return LocateOutcome(LocateResult(False, False, None, (), problem), frame_id)
    frame = snapshot.query_frame()
    placed = place_scene(scene, frame)
    placed += remembered_candidates(
        memory, frame, scene.stamp_ns if now_ns is None else now_ns, [o.id for o in placed]
    )
    plan = prepare_locate(description, placed, frame, settings.locate)
    choice = None
    model_message = ''
    tokens = TokenCounts()
    timed_out = False
    if plan.needs_choice:
        if engine is None or profile is None:
            model_message = 'appearance words need the model; no engine given'
        else:
            choice, model_message, tokens, timed_out = await _model_choice(
                snapshot, plan, engine, profile, settings, deadline
            )
    result = _require_position(finish_locate(plan, choice, settings.locate))
    result = _in_target_frame(result, target_from_scene)
    stamp_ns = scene.stamp_ns
    if result.best is not None and not result.best.in_view:
        stamp_ns = next((m.last_seen_ns for m in memory if m.id == result.best.id), stamp_ns)
    approach, approach_reason = _approach(scene, result, settings, frame_id, target_from_scene)
    return LocateOutcome(
        result, frame_id, stamp_ns, approach, approach_reason, model_message, tokens, timed_out
    )
