# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Where the side environments are, and what a test does when one is missing.

Side environments hold real third-party code that must not enter the main venv: the sglang
contract environment (``make setup``) and the vLLM server environment (``make setup-live``).
Locally a missing one skips its tests with the command that builds it; where
``SPATIAL_VLM_REQUIRE_SIDE_ENVS=1`` (``.ci/run`` sets it) a missing one fails them, so CI never
passes by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ENV = 'SPATIAL_VLM_REQUIRE_SIDE_ENVS'
SGLANG_CONTRACT_PYTHON = REPO_ROOT / '.venv' / 'sglang-contract' / 'bin' / 'python'
VLLM_VENV = Path(os.environ.get('SPATIAL_VLM_VLLM_VENV', REPO_ROOT / '.venv-vllm'))


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == '1'


def side_python(path: Path, what: str, build: str) -> Path:
    """``path`` if it is an interpreter; else skip (locally) or fail (CI) naming ``build``."""
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f'{what} is missing ({path}); build it with `{build}`'
    if required():
        pytest.fail(f'{message} ({REQUIRE_ENV}=1: side-environment tests may not skip)')
    pytest.skip(message)
    raise AssertionError('unreachable')  # pytest.skip raises
