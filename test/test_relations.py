# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Relations between lifted objects in the camera view and in a body frame, full and compact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatial_vlm_ros.core.relations import (
    COMPACT,
    FULL,
    RelationConfig,
    RelationError,
    compute_relations,
    normal_cdf,
    transform_objects,
)
from spatial_vlm_ros.core.transforms import (
    T_BODY_FROM_OPTICAL,
    TransformError,
    compose,
    make_transform,
    rotation_from_quaternion,
)
from spatial_vlm_ros.core.types import (
    ABOVE,
    BEHIND,
    BELOW,
    CONVERSE_PREDICATE,
    IN_FRONT_OF,
    LEFT_OF,
    NEAR,
    PREDICATES,
    RIGHT_OF,
    Lifted3D,
    PixelBox,
    SpatialObject,
)


def make_object(object_id, position, sigma=0.01, size=(0.1, 0.1, 0.1)):
    if position is None:
        lifted = Lifted3D(None, None, None, 0.0, 0)
    else:
        covariance = np.diag(np.square(np.broadcast_to(sigma, 3)).astype(float))
        lifted = Lifted3D(np.array(position, float), covariance, np.array(size, float), 1.0, 100)
    return SpatialObject(object_id, object_id, 1.0, PixelBox(0, 0, 1, 1), lifted)


def triples(relations):
    return {(relation.subject, relation.predicate, relation.object) for relation in relations}


FULL_SET = RelationConfig(mode=FULL)


def test_camera_view_axes():
    objects = [
        make_object('a', (-0.5, 0.0, 2.0)),
        make_object('b', (0.5, 0.0, 2.0)),
        make_object('c', (0.0, -0.6, 2.0)),
        make_object('d', (-0.5, 0.0, 4.0)),
    ]
    found = triples(compute_relations(objects, FULL_SET))
    assert ('a', LEFT_OF, 'b') in found and ('b', RIGHT_OF, 'a') in found
    assert ('c', ABOVE, 'a') in found and ('a', BELOW, 'c') in found
    assert ('a', IN_FRONT_OF, 'd') in found and ('d', BEHIND, 'a') in found
    # Equal coordinates state nothing along that axis.
    assert not {('a', ABOVE, 'b'), ('a', BELOW, 'b'), ('a', IN_FRONT_OF, 'b')} & found
    assert not {('a', LEFT_OF, 'd'), ('a', RIGHT_OF, 'd')} & found


def test_every_relation_comes_with_its_converse_and_the_same_numbers():
    rng = np.random.default_rng(0)
    objects = [
        make_object(f'o{i}', rng.uniform((-1, -1, 1), (1, 1, 4)), rng.uniform(0.005, 0.05))
        for i in range(8)
    ]
    relations = compute_relations(objects, FULL_SET)
    assert relations
    by_triple = {(r.subject, r.predicate, r.object): r for r in relations}
    for relation in relations:
        converse = by_triple[
            (relation.object, CONVERSE_PREDICATE[relation.predicate], relation.subject)
        ]
        assert converse.distance == relation.distance
        assert converse.confidence == relation.confidence
        assert (
            relation.subject,
            CONVERSE_PREDICATE[relation.predicate],
            relation.object,
        ) not in by_triple


def test_distance_and_confidence():
    a = make_object('a', (0.0, 0.0, 2.0), sigma=0.05)
    b = make_object('b', (0.2, 0.0, 2.0), sigma=0.05)
    (left,) = [r for r in compute_relations([a, b]) if r.predicate == LEFT_OF]
    assert left.distance == pytest.approx(0.2)
    assert left.confidence == pytest.approx(normal_cdf(0.2 / math.sqrt(2 * 0.05**2)))
    assert normal_cdf(0.0) == pytest.approx(0.5)
    assert normal_cdf(2.0) == pytest.approx(0.97725, abs=1e-5)


def test_ambiguous_pairs_get_no_directional_relation():
    config = RelationConfig()
    # Well measured but closer than the 5 cm margin.
    close = [make_object('a', (0.0, 0.0, 2.0), 1e-4), make_object('b', (0.04, 0.0, 2.0), 1e-4)]
    assert not {LEFT_OF, RIGHT_OF} & {r.predicate for r in compute_relations(close, config)}
    # Far enough apart but too uncertain: 0.2 m against a combined sigma of 0.14 m.
    vague = [make_object('a', (0.0, 0.0, 2.0), 0.1), make_object('b', (0.2, 0.0, 2.0), 0.1)]
    assert not {LEFT_OF, RIGHT_OF} & {r.predicate for r in compute_relations(vague, config)}
    relaxed = RelationConfig(min_z_score=1.0)
    assert ('a', LEFT_OF, 'b') in triples(compute_relations(vague, relaxed))


def test_uncertainty_along_the_axis_matters_not_across_it():
    a = make_object('a', (0.0, 0.0, 2.0), sigma=(0.01, 0.01, 0.5))
    b = make_object('b', (0.2, 0.0, 2.5), sigma=(0.01, 0.01, 0.5))
    found = triples(compute_relations([a, b]))
    assert ('a', LEFT_OF, 'b') in found  # x is well known
    assert ('a', IN_FRONT_OF, 'b') not in found  # z is not


def test_near_uses_the_gap_between_extents():
    config = RelationConfig(near_threshold_m=0.3, mode=FULL)
    table = make_object('table', (0.0, 0.5, 3.0), size=(1.6, 0.1, 0.8))
    cup = make_object('cup', (0.7, 0.42, 3.2), size=(0.08, 0.1, 0.08))  # on the table's end
    lamp = make_object('lamp', (2.0, 0.0, 3.0), size=(0.3, 0.3, 0.3))
    found = triples(compute_relations([table, cup, lamp], config))
    # Centroids 0.74 m apart, but the extents touch.
    assert ('cup', NEAR, 'table') in found and ('table', NEAR, 'cup') in found
    # Gap between table (x to 0.8) and lamp (x from 1.85): 1.05 m.
    assert ('lamp', NEAR, 'table') not in found
    assert ('lamp', NEAR, 'cup') not in found  # gap 1.81 - 0.74 = 1.07 m


def test_near_needs_confidence_too():
    config = RelationConfig(near_threshold_m=0.5)
    certain = [make_object('a', (0, 0, 2), 0.01), make_object('b', (0.55, 0, 2), 0.01)]
    assert ('a', NEAR, 'b') in triples(compute_relations(certain, config))  # gap 0.45
    vague = [make_object('a', (0, 0, 2), 0.1), make_object('b', (0.55, 0, 2), 0.1)]
    assert ('a', NEAR, 'b') not in triples(compute_relations(vague, config))


def test_body_frame_predicates():
    # Camera at the body origin, looking along body x (optical z), level.
    objects = [make_object('near', (0.0, 0.0, 1.0)), make_object('far_left', (-1.0, -0.5, 3.0))]
    body = triples(compute_relations(objects, FULL_SET, T_ref_from_camera=T_BODY_FROM_OPTICAL))
    camera = triples(compute_relations(objects, FULL_SET))
    assert body == camera  # a level camera: both readings agree
    assert ('far_left', LEFT_OF, 'near') in body
    assert ('far_left', ABOVE, 'near') in body
    assert ('near', IN_FRONT_OF, 'far_left') in body


def test_body_frame_uses_gravity_not_the_image_for_above():
    # A camera 1.2 m up, pitched 40 degrees down, sees two cups on the floor (z = 0).
    pitch = math.radians(40.0)
    tilt = rotation_from_quaternion((0.0, math.sin(pitch / 2), 0.0, math.cos(pitch / 2)))
    t_body_from_link = make_transform((0.0, 0.0, 1.2), tilt)
    t_body_from_camera = compose(t_body_from_link, T_BODY_FROM_OPTICAL)
    t_camera_from_body = np.linalg.inv(t_body_from_camera)
    floor_points = {'near_cup': (1.0, 0.0, 0.0), 'far_cup': (3.0, 0.0, 0.0)}
    objects = [
        make_object(name, (t_camera_from_body @ (*point, 1.0))[:3])
        for name, point in floor_points.items()
    ]
    camera = triples(compute_relations(objects, FULL_SET))
    body = triples(compute_relations(objects, FULL_SET, T_ref_from_camera=t_body_from_camera))
    assert ('far_cup', ABOVE, 'near_cup') in camera  # higher in the tilted image
    assert not {('far_cup', ABOVE, 'near_cup'), ('far_cup', BELOW, 'near_cup')} & body
    assert ('near_cup', IN_FRONT_OF, 'far_cup') in body and (
        'near_cup',
        IN_FRONT_OF,
        'far_cup',
    ) in camera


def test_objects_without_position_are_left_out():
    objects = [
        make_object('a', (0, 0, 2)),
        make_object('ghost', None),
        make_object('b', (1, 0, 2)),
    ]
    relations = compute_relations(objects)
    assert relations
    assert all('ghost' not in (r.subject, r.object) for r in relations)
    assert compute_relations([]) == []
    assert compute_relations([make_object('only', (0, 0, 1))]) == []


def test_ordering_is_deterministic_and_input_order_free():
    rng = np.random.default_rng(1)
    objects = [make_object(f'o{i}', rng.uniform((-1, -1, 1), (1, 1, 4))) for i in range(6)]
    relations = compute_relations(objects)
    shuffled = compute_relations(list(reversed(objects)))
    assert relations == shuffled
    keys = [(r.subject, r.object, PREDICATES.index(r.predicate)) for r in relations]
    assert keys == sorted(keys)


def test_malformed_inputs_raise():
    good = make_object('a', (0, 0, 2))
    with pytest.raises(RelationError):
        compute_relations([good, good])  # duplicate id
    with pytest.raises(RelationError):
        compute_relations([good, make_object('b', (np.nan, 0, 2))])
    with pytest.raises(RelationError):
        compute_relations([good, 'not an object'])
    with pytest.raises(RelationError):
        compute_relations([good], T_ref_from_camera=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(RelationError):
        compute_relations([good], config={'min_z_score': 2})
    with pytest.raises(RelationError):
        RelationConfig(min_separation_m=-1.0)
    with pytest.raises(RelationError):
        RelationConfig(near_threshold_m=float('inf'))
    with pytest.raises(RelationError):
        RelationConfig(mode='some')
    with pytest.raises(RelationError):
        RelationConfig(per_object=-1)


def test_transform_objects_moves_positions_and_rotates_covariances():
    lifted = Lifted3D(
        np.array([0.5, -0.2, 2.0]), np.diag([1e-4, 4e-4, 9e-4]), np.array([0.3, 0.2, 0.1]), 0.8, 50
    )
    objects = [
        SpatialObject('cup', 'cup', 0.9, PixelBox(1, 2, 3, 4), lifted),
        make_object('ghost', None),
    ]
    transform = compose(make_transform((0.1, 0.0, 1.0)), T_BODY_FROM_OPTICAL)
    moved = transform_objects(objects, transform)
    np.testing.assert_allclose(moved[0].position, (2.1, -0.5, 1.2))
    np.testing.assert_allclose(np.diag(moved[0].lifted.covariance), (9e-4, 1e-4, 4e-4))
    np.testing.assert_allclose(moved[0].lifted.size, lifted.size)  # sizes stay in camera axes
    assert moved[0].box == objects[0].box and moved[0].confidence == 0.9
    assert moved[1] == objects[1]
    assert objects[0].lifted.position[0] == 0.5  # inputs untouched
    with pytest.raises(TransformError):
        transform_objects(objects, np.eye(3))


# ----------------------------------------------------------------------------- compact set


def random_objects(seed, count=8):
    rng = np.random.default_rng(seed)
    return [
        make_object(f'o{i}', rng.uniform((-1.5, -1, 1), (1.5, 1, 5)), rng.uniform(0.005, 0.03))
        for i in range(count)
    ]


def test_compact_is_the_default_and_states_each_pair_once_per_axis():
    assert RelationConfig().mode == COMPACT
    objects = random_objects(2)
    compact = compute_relations(objects)
    assert compact
    stated = set()
    for relation in compact:
        # Only the first predicate of each axis: no converses.
        assert relation.predicate in (LEFT_OF, IN_FRONT_OF, NEAR), relation
        if relation.predicate == NEAR:
            assert relation.subject < relation.object
        key = (frozenset((relation.subject, relation.object)), relation.predicate)
        assert key not in stated, f'{key} stated twice'
        stated.add(key)
    # Every compact relation holds in the full set too, with the same numbers.
    full = {(r.subject, r.predicate, r.object): r for r in compute_relations(objects, FULL_SET)}
    for relation in compact:
        same = full[(relation.subject, relation.predicate, relation.object)]
        assert (same.distance, same.confidence) == (relation.distance, relation.confidence)


def test_compact_says_nothing_about_above_in_the_camera_view_but_does_in_a_body_frame():
    objects = [make_object('high', (0.0, -0.8, 2.0)), make_object('low', (0.0, 0.8, 2.0))]
    assert ('high', ABOVE, 'low') in triples(compute_relations(objects, FULL_SET))
    assert not {ABOVE, BELOW} & {r.predicate for r in compute_relations(objects)}
    body = compute_relations(objects, T_ref_from_camera=T_BODY_FROM_OPTICAL)
    assert ('high', ABOVE, 'low') in triples(body)


def test_compact_keeps_only_nearest_neighbours():
    # Five objects in a row, 1 m apart: with one neighbour each, only adjacent pairs remain.
    objects = [make_object(f'o{i}', (float(i), 0.0, 3.0)) for i in range(5)]
    one = compute_relations(objects, RelationConfig(per_object=1))
    assert {(r.subject, r.object) for r in one} <= {(f'o{i}', f'o{i + 1}') for i in range(4)}
    assert ('o0', LEFT_OF, 'o1') in triples(one) and ('o3', LEFT_OF, 'o4') in triples(one)
    every = compute_relations(objects, RelationConfig(per_object=0))
    assert ('o0', LEFT_OF, 'o4') in triples(every)
    assert len({(r.subject, r.object) for r in every}) == 10  # all unordered pairs


def test_compact_is_much_smaller_than_full_for_eight_objects():
    objects = random_objects(3)
    full = compute_relations(objects, FULL_SET)
    compact = compute_relations(objects)
    pairs = {(r.subject, r.object) for r in compact}
    assert len(pairs) <= 8 * 3
    assert len(compact) < len(full) / 2, (len(compact), len(full))
