# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Which objects a text names: whole words, plurals, synonyms, ids (core/mentions.py)."""

from __future__ import annotations

from spatial_vlm_ros.core.mentions import find_mentions, label_score, referenced_ids

OBJECTS = [
    ('cup_0', 'cup'),
    ('cupboard_0', 'cupboard'),
    ('coke_can_0', 'coke can'),
    ('coke_can_1', 'coke can'),
    ('chair_0', 'chair'),
    ('person_0', 'person'),
    ('box_0', 'box'),
]


def test_labels_match_whole_words_only():
    assert referenced_ids('The cupboard is open.', OBJECTS) == ('cupboard_0',)
    assert referenced_ids('I cannot see it.', OBJECTS) == ()
    assert referenced_ids('Pick up the cup.', OBJECTS) == ('cup_0',)
    assert label_score('the cupboard', 'cup') == 0.0


def test_plurals_ids_and_label_mentions():
    assert referenced_ids('two coke cans and three chairs', OBJECTS) == (
        'coke_can_0',
        'coke_can_1',
        'chair_0',
    )
    assert referenced_ids('the boxes and the people', OBJECTS) == ('person_0', 'box_0')
    assert referenced_ids('coke_can_1 is nearer', OBJECTS) == ('coke_can_1',)
    assert referenced_ids('coke can 1 is nearer', OBJECTS) == ('coke_can_1',)


def test_longest_mention_wins_and_scores_say_how():
    mentions = find_mentions('the coke can', ['coke can', 'trash can'])
    assert [(m.text, m.label, m.kind) for m in mentions] == [('coke can', 'coke can', 'label')]
    head = find_mentions('the can', ['coke can', 'trash can'])
    assert {(m.label, m.kind, m.score) for m in head} == {
        ('coke can', 'head_noun', 0.85),
        ('trash can', 'head_noun', 0.85),
    }
    assert label_score('a cup of tea', 'mug') == 0.75  # synonym
    assert label_score('the armchair', 'chair') == 0.0  # broader terms are not synonyms
