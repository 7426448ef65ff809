# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Build an engine by kind name: ``sglang`` | ``openai`` | ``transformers`` | ``recorded``.

Backends are imported only when asked for, so a machine without sglang or torch can still build
the others (the node, the replay and the tests need only what they use).
"""

from __future__ import annotations

from collections.abc import Callable
import os
from typing import Any

from spatial_vlm_ros.engines.base import EngineError, VlmEngine
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile

ENGINE_KINDS = ('sglang', 'openai', 'transformers', 'recorded')


class EngineConfigError(EngineError, ValueError):
    """The engine kind or its options are wrong (raised before anything is loaded)."""


class UnknownEngineKindError(EngineConfigError):
    """No backend of that name."""


def _sglang(profile: ModelProfile, **options: Any) -> VlmEngine:
    from spatial_vlm_ros.engines.sglang_engine import SGLangEngine

    return SGLangEngine(profile, **options)


def _openai(profile: ModelProfile, **options: Any) -> VlmEngine:
    from spatial_vlm_ros.engines.openai_engine import OpenAIEngine

    return OpenAIEngine(profile, **options)


def _transformers(profile: ModelProfile, **options: Any) -> VlmEngine:
    try:
        from spatial_vlm_ros.engines.transformers_engine import TransformersEngine
    except ImportError as error:
        raise EngineError(
            'the transformers engine needs torch and transformers: pip install '
            f"'spatial_vlm_ros[transformers]' (import failed: {error})"
        ) from None
    return TransformersEngine(profile, **options)


def _recorded(profile: ModelProfile, **options: Any) -> VlmEngine:
    from spatial_vlm_ros.engines.recorded import RecordedEngine

    return RecordedEngine(profile, **options)


_FACTORIES: dict[str, Callable[..., VlmEngine]] = {
    'sglang': _sglang,
    'openai': _openai,
    'transformers': _transformers,
    'recorded': _recorded,
}


def create_engine(
    kind: str,
    profile: ModelProfile | str | None = None,
    *,
    record_to: str | os.PathLike[str] | None = None,
    **options: Any,
) -> VlmEngine:
    """
    Return a new engine of ``kind`` for ``profile`` (name, HF id, local path or ModelProfile).

    ``options`` go to the backend's constructor (e.g. ``base_url=`` for openai, ``path=`` for
    recorded, ``model_path=``/``device=`` for transformers). ``record_to`` wraps the engine in a
    :class:`~spatial_vlm_ros.engines.recorded.RecordingEngine` writing raw outputs to that JSONL.
    """
    name = kind.strip().lower() if isinstance(kind, str) else ''
    factory = _FACTORIES.get(name)
    if factory is None:
        raise UnknownEngineKindError(
            f'unknown engine kind {kind!r}; choose one of: {", ".join(ENGINE_KINDS)}'
        )
    resolved = resolve_profile(profile)
    try:
        engine = factory(resolved, **options)
    except TypeError as error:
        raise EngineConfigError(f'bad options for the {name} engine: {error}') from error
    if record_to:
        from spatial_vlm_ros.engines.recorded import RecordingEngine

        engine = RecordingEngine(engine, record_to)
    return engine
