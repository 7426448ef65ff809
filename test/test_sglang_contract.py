# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What the sglang and openai engines send, checked by the real sglang package on a CPU.

The checks (test/fixtures/sglang_contract.py) run once per session in a subprocess with the
sglang contract environment's interpreter (``make setup`` builds it: sglang 0.5.23 and the
modules its request path imports, next to the main venv's torch). Each check is one test here,
so a broken contract names itself. What each check catches is in its docstring; the image one
failed on the code before issue 10 (bare base64 opened as a file path by sglang's loader).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
from typing import Any

import pytest

from fixtures import sglang_contract
from side_envs import REPO_ROOT, REQUIRE_ENV, SGLANG_CONTRACT_PYTHON, side_python

pytestmark = pytest.mark.slow
SGLANG_VERSION = '0.5.23'  # scripts/setup_sglang_contract.sh, docs/ENGINES.md


@pytest.fixture(scope='module')
def contract(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = side_python(SGLANG_CONTRACT_PYTHON, 'the sglang contract environment', 'make setup')
    out = tmp_path_factory.mktemp('sglang_contract') / 'results.json'
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONNOUSERSITE='1')
    run = subprocess.run(
        [str(python), str(Path(sglang_contract.__file__)), str(out)],
        env=env,
        cwd=str(out.parent),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and out.is_file(), run.stderr[-3000:]
    return json.loads(out.read_text(encoding='utf-8'))


def test_the_contract_is_checked_against_the_pinned_sglang(contract: dict[str, Any]) -> None:
    assert contract['versions']['sglang'] == SGLANG_VERSION
    # sglang 0.5.23's own pins, so its code runs as released (not the main venv's versions).
    assert contract['versions']['transformers'] == '5.19.0'
    assert contract['versions']['xgrammar'] == '0.2.7'


@pytest.mark.parametrize('name', [name for name, _ in sglang_contract.CHECKS])
def test_contract(contract: dict[str, Any], name: str) -> None:
    result = next(check for check in contract['checks'] if check['name'] == name)
    assert result['ok'], result['detail']


def test_a_missing_side_environment_skips_locally_and_fails_in_ci(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(REQUIRE_ENV, '1')
    with pytest.raises(pytest.fail.Exception, match='may not skip'):
        side_python(tmp_path / 'missing', 'an environment', 'make something')
    monkeypatch.delenv(REQUIRE_ENV)
    with pytest.raises(pytest.skip.Exception, match='make something'):
        side_python(tmp_path / 'missing', 'an environment', 'make something')
