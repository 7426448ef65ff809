# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The scenes JSON schema: one object per scene, shared by replay's scenes.jsonl and the node's
``~/scene_json`` topic (docs/SCENES_JSON.md). Keep it stable; change only with a version note.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from spatial_vlm_ros.core.types import Lifted3D, PixelBox, Relation, Scene, SpatialObject

SCHEMA_VERSION = 1


def _rounded(values: Any, digits: int) -> list[float]:
    return [round(float(value), digits) for value in np.asarray(values, dtype=float).ravel()]


def object_to_dict(obj: SpatialObject) -> dict[str, Any]:
    lifted = obj.lifted
    return {
        'id': obj.id,
        'label': obj.label,
        'confidence': round(float(obj.confidence), 4),
        'bbox': _rounded(obj.box.as_list(), 2),
        'position': None if lifted.position is None else _rounded(lifted.position, 4),
        'size': None if lifted.size is None else _rounded(lifted.size, 4),
        'covariance': None if lifted.covariance is None else _rounded(lifted.covariance, 8),
        'valid_depth_ratio': round(float(lifted.valid_depth_ratio), 4),
    }


def relation_to_dict(relation: Relation) -> dict[str, Any]:
    return {
        'subject': relation.subject,
        'predicate': relation.predicate,
        'object': relation.object,
        'distance': round(float(relation.distance), 4),
        'confidence': round(float(relation.confidence), 4),
        'source': relation.source,
    }


def scene_to_dict(scene: Scene) -> dict[str, Any]:
    """The documented scenes.jsonl object (extra keys beyond the documented ones are additive)."""
    record: dict[str, Any] = {
        'stamp_ns': int(scene.stamp_ns),
        'frame_id': scene.frame_id,
        'camera_frame_id': scene.camera_frame_id,
        'relation_frame_id': scene.relation_frame_id,
        'objects': [object_to_dict(obj) for obj in scene.objects],
        'relations': [relation_to_dict(relation) for relation in scene.relations],
        'latency_ms': round(float(scene.latency_ms), 3),
        'inference_ms': round(float(scene.inference_ms), 3),
        'model_id': scene.model_id,
        'engine': scene.engine,
        'schema_version': SCHEMA_VERSION,
    }
    if scene.error:
        record['error'] = scene.error
    if scene.warnings:
        record['warnings'] = list(scene.warnings)
    return record


def scene_to_json(scene: Scene) -> str:
    return json.dumps(scene_to_dict(scene), separators=(',', ':'), allow_nan=False)


def _optional_array(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64).reshape(shape)
    return array if np.all(np.isfinite(array)) else None


def scene_from_dict(record: dict[str, Any]) -> Scene:
    """Inverse of :func:`scene_to_dict` (used by golden tests and report generation)."""
    objects = []
    for item in record.get('objects', []):
        position = _optional_array(item.get('position'), (3,))
        objects.append(
            SpatialObject(
                id=str(item['id']),
                label=str(item['label']),
                confidence=float(item.get('confidence', 1.0)),
                box=PixelBox(*(float(v) for v in item['bbox'])),
                lifted=Lifted3D(
                    position=position,
                    covariance=_optional_array(item.get('covariance'), (3, 3)),
                    size=_optional_array(item.get('size'), (3,)),
                    valid_depth_ratio=float(item.get('valid_depth_ratio', math.nan)),
                ),
            )
        )
    relations = [
        Relation(
            subject=str(item['subject']),
            predicate=str(item['predicate']),
            object=str(item['object']),
            distance=float(item['distance']),
            confidence=float(item['confidence']),
            source=str(item.get('source', 'geometry')),
        )
        for item in record.get('relations', [])
    ]
    return Scene(
        stamp_ns=int(record['stamp_ns']),
        frame_id=str(record.get('frame_id', '')),
        camera_frame_id=str(record.get('camera_frame_id', record.get('frame_id', ''))),
        objects=objects,
        relations=relations,
        relation_frame_id=str(record.get('relation_frame_id', '')),
        model_id=str(record.get('model_id', '')),
        engine=str(record.get('engine', '')),
        latency_ms=float(record.get('latency_ms', 0.0)),
        inference_ms=float(record.get('inference_ms', 0.0)),
        error=str(record.get('error', '')),
        warnings=[str(warning) for warning in record.get('warnings', [])],
    )
