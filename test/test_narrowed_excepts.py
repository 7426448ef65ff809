# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The broad excepts that were narrowed, and the catch-alls that now log a bug's traceback.

A narrowed except still turns the failures it is meant for into a typed result, and lets a bug
(an exception of any other type) through instead of reporting it as bad input. A catch-all
that must stay (a node never dies on a frame, a parser never raises) logs the traceback of an
unexpected exception once per kind, so that a regression does not read as bad input.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest

from spatial_vlm_ros.cli import model_in_local_cache
from spatial_vlm_ros.core.scheduling import StampedFrame
from spatial_vlm_ros.engines import parsing, sglang_engine
from spatial_vlm_ros.engines.base import EngineError
from spatial_vlm_ros.engines.results import ParseFailure
from spatial_vlm_ros.ros import tf as ros_tf
from spatial_vlm_ros.ros.diagnostics import DiagnosticsReporter
from spatial_vlm_ros.ros.stream import SceneStream

# ----------------------------------------------------------------------------- ros/tf.py


class _TransformException(Exception):  # noqa: N818 - the name tf2 gives it
    """Stand-in for tf2_py's TransformException (tf2_ros has no PyPI wheel)."""


class _LookupException(_TransformException):
    """Stand-in for tf2_py's LookupException, a TransformException like the other four."""


def _stand_in_tf2_ros(raised: BaseException) -> types.SimpleNamespace:
    """A stand-in for the tf2_ros module whose Buffer.lookup_transform raises ``raised``."""

    class Buffer:
        def lookup_transform(self, *args: Any, **kwargs: Any) -> Any:
            raise raised

    class TransformListener:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    return types.SimpleNamespace(
        Buffer=Buffer, TransformListener=TransformListener, TransformException=_TransformException
    )


def test_tf2_lookup_failure_is_a_result_with_the_reason(monkeypatch):
    monkeypatch.setattr(
        ros_tf, 'tf2_ros', _stand_in_tf2_ros(_LookupException('"map" passed to lookupTransform'))
    )
    source = ros_tf.TransformSource(node=None, logger=logging.getLogger('tf'))
    assert source.mode == 'tf2_ros'
    result = source.lookup('map', 'camera', 5)
    assert result.matrix is None
    assert 'no transform camera -> map at 5 ns' in result.reason
    assert 'lookupTransform' in source.status


def test_tf2_lookup_bug_is_not_reported_as_a_missing_transform(monkeypatch):
    bug = AttributeError("'NoneType' object has no attribute 'transform'")
    monkeypatch.setattr(ros_tf, 'tf2_ros', _stand_in_tf2_ros(bug))
    source = ros_tf.TransformSource(node=None, logger=logging.getLogger('tf'))
    with pytest.raises(AttributeError):
        source.lookup('map', 'camera', 5)


# ----------------------------------------------------------------------------- ros/stream.py


class _RecordingLogger:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def _stream(logger: _RecordingLogger) -> tuple[SceneStream, DiagnosticsReporter]:
    reporter = DiagnosticsReporter('spatial_vlm', logger)
    stream = SceneStream(
        worker=None,  # type: ignore[arg-type]
        reporter=reporter,
        snapshots=None,  # type: ignore[arg-type]
        pipeline=lambda: None,
        clock_offset_ns=lambda camera: None,
        transforms=lambda: None,
        publish=lambda paired, scene: None,
        now_ns=lambda: 0,
    )
    return stream, reporter


def _raise(error: BaseException) -> BaseException:
    """``error`` with a traceback, as the scheduler hands it over."""
    try:
        raise error
    except BaseException as raised:  # noqa: BLE001 - returned to the test
        return raised


def test_a_frame_bug_logs_its_traceback_once_per_type():
    logger = _RecordingLogger()
    stream, reporter = _stream(logger)
    frame = StampedFrame(stamp_ns=7, frame=object())
    for _ in range(2):
        stream._on_error(frame, _raise(AttributeError("no attribute 'lifted'")))
    assert reporter.errors.counts['frame'] == 2
    assert len(logger.errors) == 1
    assert 'Traceback' in logger.errors[0]
    assert 'AttributeError' in logger.errors[0]


def test_a_typed_frame_failure_is_counted_without_a_traceback():
    logger = _RecordingLogger()
    stream, reporter = _stream(logger)
    stream._on_error(StampedFrame(stamp_ns=7, frame=object()), EngineError('server gone'))
    assert reporter.errors.counts['frame'] == 1
    assert logger.errors == []
    assert logger.warnings == ['[frame] frame 7: EngineError: server gone']


# ----------------------------------------------------------------------------- engines/parsing.py


def test_a_parser_bug_is_a_failure_and_its_traceback_is_logged_once(monkeypatch, caplog):
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError('division by zero')

    monkeypatch.setattr(parsing, '_leading_items', broken)
    monkeypatch.setattr(parsing, '_LOGGED_INTERNAL_ERRORS', set(), raising=False)
    with caplog.at_level(logging.ERROR, logger=parsing.__name__):
        results = [parsing.parse_grounding('[]', 640, 480) for _ in range(2)]
    for result in results:
        assert isinstance(result, ParseFailure)
        assert result.reason.startswith(f'{parsing.INTERNAL_ERROR_PREFIX}: ZeroDivisionError')
    logged = [record for record in caplog.records if record.name == parsing.__name__]
    assert len(logged) == 1
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is ZeroDivisionError


# ------------------------------------------------------------------------ engines/sglang_engine.py


def _stand_in_transformers(monkeypatch, raised: BaseException) -> None:
    """A stand-in transformers module whose AutoProcessor.from_pretrained raises ``raised``."""

    class AutoProcessor:
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            raise raised

    monkeypatch.setitem(
        sys.modules, 'transformers', types.SimpleNamespace(AutoProcessor=AutoProcessor)
    )


def test_unreadable_checkpoint_falls_back_to_the_built_in_template(monkeypatch):
    _stand_in_transformers(monkeypatch, OSError('no processor_config.json in /models/x'))
    assert sglang_engine._processor_chat_template('/models/x') is None


def test_a_processor_bug_is_not_hidden_by_the_fallback(monkeypatch):
    _stand_in_transformers(monkeypatch, AttributeError('bug'))
    with pytest.raises(AttributeError):
        sglang_engine._processor_chat_template('/models/x')


# ----------------------------------------------------------------------------- cli.py


def test_model_not_in_the_local_cache(tmp_path):
    assert model_in_local_cache('nobody/no-such-model') is False  # LocalEntryNotFoundError
    assert model_in_local_cache('not a repo id') is False  # HFValidationError
    assert model_in_local_cache(str(tmp_path)) is True  # a directory
