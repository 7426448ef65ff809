# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
The scenes JSON schema: one object per scene.

Shared by replay's scenes.jsonl and the node's ``~/scene_json`` topic (docs/SCENES_JSON.md).
Keep it stable; change only with a version note.

Schema version 2 mirrors SpatialScene.msg version 2 field for field (``null`` where the message
has NaN); :func:`scene_from_dict` reads versions 1 and 2.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from spatial_vlm_ros.core.message_fields import STAGE_NAMES, box_orientation
from spatial_vlm_ros.core.positions import Position, placed
from spatial_vlm_ros.core.transforms import transform_from_translation_quaternion
from spatial_vlm_ros.core.types import (
    Lifted3D,
    PixelBox,
    Relation,
    Scene,
    SpatialObject,
    StageTimings,
)

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


class SceneJsonError(ValueError):
    """A scenes JSON record has an unknown schema version or is malformed."""


def _rounded(values: Any, digits: int) -> list[float]:
    if type(values) is np.ndarray and values.dtype == np.float64:
        return [round(value, digits) for value in values.ravel().tolist()]
    return [round(float(value), digits) for value in np.asarray(values, dtype=float).ravel()]


def _finite_or_none(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def object_to_dict(obj: SpatialObject, scene: Scene) -> dict[str, Any]:
    """One ``objects[]`` / ``objects_without_position[]`` entry (SpatialObject.msg)."""
    ((_, position, distance),) = placed(scene, [obj])
    return _object_dict(obj, position, distance, _rounded(box_orientation(scene), 6))


def _object_dict(
    obj: SpatialObject, position: Position | None, distance: float, orientation: list[float]
) -> dict[str, Any]:
    """
    Return :func:`object_to_dict` of an object already placed (core/positions.py).

    The box orientation is already rounded.
    """
    lifted = obj.lifted
    positioned = position is not None
    box = obj.box
    return {
        'id': obj.id,
        'label': obj.label,
        'confidence': round(float(obj.confidence), 4),
        'bbox': [
            round(float(box.x_min), 2),
            round(float(box.y_min), 2),
            round(float(box.x_max), 2),
            round(float(box.y_max), 2),
        ],
        'position': None if position is None else [round(value, 4) for value in position],
        'orientation': list(orientation) if positioned else None,
        'size': _rounded(lifted.size, 4) if positioned and lifted.size is not None else None,
        'covariance': (
            _rounded(lifted.covariance, 8)
            if positioned and lifted.covariance is not None
            else None
        ),
        'range': _finite_or_none(distance, 4),
        'valid_depth_ratio': round(float(lifted.valid_depth_ratio), 4),
    }


def relation_to_dict(relation: Relation) -> dict[str, Any]:
    """One ``relations[]`` entry (SpatialRelation.msg)."""
    return {
        'subject': relation.subject,
        'predicate': relation.predicate,
        'object': relation.object,
        'distance': round(float(relation.distance), 4),
        'confidence': round(float(relation.confidence), 4),
    }


def stages_to_dict(timings: StageTimings) -> dict[str, float | None]:
    """StageLatency.msg, with ``null`` for a stage that did not run."""
    return {name: _finite_or_none(getattr(timings, name), 3) for name in STAGE_NAMES}


def camera_pose_to_dict(scene: Scene) -> dict[str, list[float]]:
    """Pose of the camera optical frame in ``frame_id`` (SpatialScene.camera_pose)."""
    return {
        'position': _rounded(scene.camera_origin, 6),
        'orientation': _rounded(box_orientation(scene), 9),
    }


def scene_to_dict(scene: Scene) -> dict[str, Any]:
    """
    Return the documented scenes.jsonl object.

    Extra keys beyond the documented ones are additive.
    """
    orientation = _rounded(box_orientation(scene), 6)
    objects: list[dict[str, Any]] = []
    without_position: list[dict[str, Any]] = []
    for obj, position, distance in placed(scene):
        entry = _object_dict(obj, position, distance, orientation)
        (objects if position is not None else without_position).append(entry)
    record: dict[str, Any] = {
        'schema_version': SCHEMA_VERSION,
        'stamp_ns': int(scene.stamp_ns),
        'frame_id': scene.frame_id,
        'camera_frame_id': scene.camera_frame_id,
        'relation_frame_id': scene.relation_frame_id,
        'camera_pose': camera_pose_to_dict(scene),
        'objects': objects,
        'objects_without_position': without_position,
        'relations': [relation_to_dict(relation) for relation in scene.relations],
        'model_id': scene.model_id,
        'engine': scene.engine,
        'latency_ms': _finite_or_none(scene.latency_ms, 3),
        'inference_ms': _finite_or_none(scene.inference_ms, 3),
        'stages': stages_to_dict(scene.timings),
    }
    if scene.error:
        record['error'] = scene.error
    if scene.warnings:
        record['warnings'] = list(scene.warnings)
    return record


def scene_to_json(scene: Scene) -> str:
    """One compact JSON line (no NaN or Infinity: they are ``null``)."""
    return json.dumps(scene_to_dict(scene), separators=(',', ':'), allow_nan=False)


def _optional_array(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64).reshape(shape)
    return array if np.all(np.isfinite(array)) else None


def _object_from_dict(item: dict[str, Any]) -> SpatialObject:
    return SpatialObject(
        id=str(item['id']),
        label=str(item['label']),
        confidence=float(item.get('confidence', 1.0)),
        box=PixelBox(*(float(v) for v in item['bbox'])),
        lifted=Lifted3D(
            position=_optional_array(item.get('position'), (3,)),
            covariance=_optional_array(item.get('covariance'), (3, 3)),
            size=_optional_array(item.get('size'), (3,)),
            valid_depth_ratio=float(item.get('valid_depth_ratio', math.nan)),
        ),
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _camera_transform(record: dict[str, Any]) -> np.ndarray | None:
    pose = record.get('camera_pose')
    if record.get('frame_id', '') == record.get('camera_frame_id', '') or not pose:
        return None
    return transform_from_translation_quaternion(pose['position'], pose['orientation'])


def scene_from_dict(record: dict[str, Any]) -> Scene:
    """
    Inverse of :func:`scene_to_dict` for schema versions 1 and 2.

    Version 1 lines (no ``objects_without_position``, ``camera_pose`` or ``stages``; relations
    with ``source``) read as version 2 scenes: objects with a ``null`` position go to
    :attr:`Scene.objects_without_position`, ``source`` is dropped, and a target-frame scene has
    no camera pose (``T_frame_from_camera`` None, which v1 did not record).
    Raises :class:`SceneJsonError` for another version.

    Nothing in the node or the replay calls it (they only write scenes): it is the reader for
    users' scripts on scenes.jsonl or ``~/scene_json`` (docs/SCENES_JSON.md, "Reading it"), and
    test/test_replay.py checks that it inverts a replay's output exactly.
    """
    version = int(record.get('schema_version', 1))
    if version not in READABLE_VERSIONS:
        raise SceneJsonError(
            f'scenes JSON schema_version {version} is not readable here (reads '
            f'{", ".join(map(str, READABLE_VERSIONS))}); update spatial_vlm_ros'
        )
    items = [*record.get('objects', []), *record.get('objects_without_position', [])]
    objects = sorted((_object_from_dict(item) for item in items), key=lambda obj: obj.id)
    relations = [
        Relation(
            subject=str(item['subject']),
            predicate=str(item['predicate']),
            object=str(item['object']),
            distance=float(item['distance']),
            confidence=float(item['confidence']),
        )
        for item in record.get('relations', [])
    ]
    stages = record.get('stages') or {}
    return Scene(
        stamp_ns=int(record['stamp_ns']),
        frame_id=str(record.get('frame_id', '')),
        camera_frame_id=str(record.get('camera_frame_id', record.get('frame_id', ''))),
        objects=objects,
        relations=relations,
        relation_frame_id=str(record.get('relation_frame_id', '')),
        model_id=str(record.get('model_id', '')),
        engine=str(record.get('engine', '')),
        latency_ms=_number(record.get('latency_ms', 0.0)),
        inference_ms=_number(record.get('inference_ms', 0.0)),
        error=str(record.get('error', '')),
        warnings=[str(warning) for warning in record.get('warnings', [])],
        timings=StageTimings(**{name: _number(stages.get(name)) for name in STAGE_NAMES}),
        T_frame_from_camera=_camera_transform(record) if version >= 2 else None,
    )
