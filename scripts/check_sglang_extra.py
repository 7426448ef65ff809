# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""CI: `pip install '.[sglang,transformers]'` with requirements/dev.txt resolves, with sglang at
the version the contract tests check.

pip's own resolver decides, on the real package metadata (PyPI), in --dry-run mode with
--ignore-installed, so nothing is installed and the venv's contents do not help. Accepting a
resolution that backtracked to an older sglang would hide a conflict, so the chosen versions are
read back from pip's report and compared with the pins the contract was proven against.
"""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {'sglang': '0.5.23', 'transformers': '5.19.0', 'xgrammar': '0.2.7'}


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / 'report.json'
        command = [
            sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed',
            '--disable-pip-version-check', '--quiet', '--report', str(report),
            '-r', str(ROOT / 'requirements' / 'dev.txt'), f'{ROOT}[sglang,transformers]',
        ]  # fmt: skip
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if run.returncode != 0 or not report.is_file():
            print(run.stdout[-3000:], run.stderr[-3000:], sep='\n', file=sys.stderr)
            print("[ci] '.[sglang,transformers]' with requirements/dev.txt does not resolve")
            return 1
        chosen = {
            item['metadata']['name'].lower(): item['metadata']['version']
            for item in json.loads(report.read_text(encoding='utf-8'))['install']
        }
    wrong = {name: chosen.get(name) for name, version in EXPECTED.items()
             if chosen.get(name) != version}  # fmt: skip
    if wrong:
        print(f'[ci] resolved, but not to the contract versions {EXPECTED}: {wrong}')
        return 1
    print(
        f"[ci] '.[sglang,transformers]' + requirements/dev.txt resolves ({len(chosen)} packages, "
        f'{", ".join(f"{k} {v}" for k, v in EXPECTED.items())}) in '
        f'{time.monotonic() - started:.0f} s'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
