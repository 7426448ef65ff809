# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Which scene objects a piece of text names: ids, labels, head nouns, plurals, synonyms.

Matching is on whole words only, so "cup" never matches "cupboard" and "can" never matches
"cannot". An object is named

* by its **id** (``coke_can_1``; also written with spaces, ``coke can 1``): score 1.0;
* by its **label** (``coke can``, or the plural ``coke cans``): score 1.0;
* by the label's **head noun** (its last word: ``can`` for ``coke can``, ``mouse`` for
  ``computer mouse``): score 0.85;
* by a **synonym** of the label or its head noun from a small fixed table (``cup`` for ``mug``,
  ``desk`` for ``table``): score 0.75.

Used by ``~/query`` (which ids an answer or a question refers to) and ``~/locate`` (which
candidates a description can mean). Pure: strings in, typed matches out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import functools
import re
import unicodedata

ID_SCORE = 1.0
LABEL_SCORE = 1.0
HEAD_NOUN_SCORE = 0.85
SYNONYM_SCORE = 0.75

# Words a person uses for the same thing. Keys and values are normalized labels or head nouns;
# the relation is applied in both directions. Kept small and literal on purpose: a wrong
# synonym makes ~/locate answer with the wrong object, and broader terms are not synonyms (an
# armchair is a chair, but "the leftmost chair" should not pick it over the chairs).
_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ('mug', 'cup'),
    ('sofa', 'couch'),
    ('monitor', 'screen', 'display'),
    ('tv', 'television'),
    ('table', 'desk'),
    ('person', 'man', 'woman', 'people', 'human', 'child', 'kid'),
    ('bin', 'trash can', 'garbage can', 'wastebasket', 'dustbin'),
    ('teddy bear', 'teddy', 'stuffed animal', 'plush toy'),
    ('laptop', 'notebook computer'),
    ('potted plant', 'plant', 'houseplant'),
    ('tape roll', 'tape', 'duct tape'),
    ('bottle', 'flask'),
    ('phone', 'telephone'),
    ('cell phone', 'mobile phone', 'smartphone'),
    ('bag', 'handbag'),
    ('backpack', 'rucksack'),
    ('box', 'carton'),
    ('cardboard box', 'carton'),
)


@dataclass(frozen=True)
class Mention:
    """One place in the text that names a label (or one object, for an id mention)."""

    start: int  # character span in the normalized text
    end: int
    text: str  # the words matched
    label: str  # normalized label of the objects it can mean
    kind: str  # 'id' | 'label' | 'head_noun' | 'synonym'
    score: float
    object_id: str = ''  # set for id mentions


def normalize_text(text: str) -> str:
    """Lower case, NFKC, typographic quotes unified, whitespace collapsed."""
    normalized = unicodedata.normalize('NFKC', str(text)).lower()
    normalized = normalized.replace('’', "'").replace('‘', "'")
    return ' '.join(normalized.split())


def normalize_label(label: str) -> str:
    """Return a label as it is matched: lower case, underscores as spaces, single spaces."""
    return ' '.join(normalize_text(label).replace('_', ' ').split())


def _plural_forms(word: str) -> tuple[str, ...]:
    forms = [word, word + 's']
    if word.endswith(('s', 'x', 'z', 'ch', 'sh')):
        forms.append(word + 'es')
    if len(word) > 2 and word.endswith('y') and word[-2] not in 'aeiou':
        forms.append(word[:-1] + 'ies')
    if word.endswith('man'):
        forms.append(word[:-3] + 'men')
    if word == 'person':
        forms.append('people')
    return tuple(dict.fromkeys(forms))


@functools.lru_cache(maxsize=1024)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Whole-word regex for ``phrase`` with its last word in singular or plural."""
    words = normalize_label(phrase).split()
    if not words:
        return re.compile(r'(?!x)x')  # matches nothing
    head = '|'.join(re.escape(form) for form in _plural_forms(words[-1]))
    body = r'[\s_-]+'.join(re.escape(word) for word in words[:-1])
    separator = r'[\s_-]+' if body else ''
    return re.compile(rf'(?<![\w]){body}{separator}(?:{head})(?![\w])')


@functools.lru_cache(maxsize=1024)
def _id_pattern(object_id: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in re.split(r'[\s_]+', object_id.lower()) if part]
    return re.compile(rf'(?<![\w]){"[ _]".join(parts)}(?![\w])')


def synonyms_of(label: str) -> tuple[str, ...]:
    """Other words for ``label`` or its head noun (never the label itself)."""
    normalized = normalize_label(label)
    words = normalized.split()
    keys = {normalized, words[-1]} if words else {normalized}
    found: list[str] = []
    for group in _SYNONYM_GROUPS:
        if keys & set(group):
            found.extend(word for word in group if word not in keys)
    return tuple(dict.fromkeys(word for word in found if word != normalized))


def _label_phrases(label: str) -> list[tuple[str, str, float]]:
    """``(phrase, kind, score)`` ways to name ``label``, best first."""
    normalized = normalize_label(label)
    words = normalized.split()
    phrases = [(normalized, 'label', LABEL_SCORE)]
    if len(words) > 1:
        phrases.append((words[-1], 'head_noun', HEAD_NOUN_SCORE))
    phrases.extend((synonym, 'synonym', SYNONYM_SCORE) for synonym in synonyms_of(normalized))
    return phrases


def find_mentions(
    text: str, labels: Iterable[str], object_ids: Iterable[str] = ()
) -> list[Mention]:
    """
    Every id and label mention in ``text``, in reading order, longest match first.

    A span of text that names several labels (``can`` for ``coke can`` and ``trash can``) gives
    one mention per label; overlapping mentions of *different* spans keep the longest span (so
    ``coke can`` wins over ``can`` inside it, and ``coke_can_1`` over ``coke can``).
    """
    normalized = normalize_text(text)
    found: list[Mention] = []
    for object_id in dict.fromkeys(object_ids):
        for match in _id_pattern(object_id).finditer(normalized):
            found.append(
                Mention(
                    match.start(),
                    match.end(),
                    match.group(0),
                    '',
                    'id',
                    ID_SCORE,
                    object_id,
                )
            )
    for label in dict.fromkeys(normalize_label(label) for label in labels):
        if not label:
            continue
        seen_spans: set[tuple[int, int]] = set()
        for phrase, kind, score in _label_phrases(label):
            for match in phrase_pattern(phrase).finditer(normalized):
                span = (match.start(), match.end())
                if span in seen_spans:
                    continue
                seen_spans.add(span)
                found.append(Mention(span[0], span[1], match.group(0), label, kind, score))
    return _longest_spans(found)


def _longest_spans(mentions: list[Mention]) -> list[Mention]:
    """Drop mentions whose span lies strictly inside a longer mention's span."""
    kept = [
        mention
        for mention in mentions
        if not any(
            other.start <= mention.start
            and mention.end <= other.end
            and (other.end - other.start) > (mention.end - mention.start)
            for other in mentions
        )
    ]
    return sorted(kept, key=lambda m: (m.start, -(m.end - m.start), -m.score, m.label))


def label_score(text: str, label: str) -> float:
    """How well ``text`` names ``label``: the best mention score, 0.0 when it does not."""
    mentions = [m for m in find_mentions(text, [label]) if m.kind != 'id']
    return max((m.score for m in mentions), default=0.0)


def referenced_ids(
    text: str, objects: Iterable[tuple[str, str]], *, by_label: bool = True
) -> tuple[str, ...]:
    """
    Ids of ``(id, label)`` objects that ``text`` names, on word boundaries, in scene order.

    An id mention names that object; a label mention (full label or plural, not a head noun or
    synonym, which are too loose for an answer text) names every object with that label.
    """
    pairs = list(objects)
    labels = [label for _, label in pairs] if by_label else []
    mentions = find_mentions(text, labels, [object_id for object_id, _ in pairs])
    named_ids = {m.object_id for m in mentions if m.kind == 'id'}
    named_labels = {m.label for m in mentions if m.kind == 'label'}
    return tuple(
        object_id
        for object_id, label in pairs
        if object_id in named_ids or normalize_label(label) in named_labels
    )
