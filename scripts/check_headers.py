# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Fail when a source file lacks the Apache-2.0 header (what ament_copyright checks)."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

HEADER_MARK = 'SPDX-License-Identifier: Apache-2.0'
CHECKED_SUFFIXES = {'.py', '.sh', '.js', '.css'}
CHECKED_NAMES = {'Makefile', 'CMakeLists.txt', 'run'}


def tracked_sources(root: Path) -> list[Path]:
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return [
        root / name
        for name in listed
        if Path(name).suffix in CHECKED_SUFFIXES or Path(name).name in CHECKED_NAMES
    ]


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    missing = [
        path
        for path in tracked_sources(root)
        if path.exists() and HEADER_MARK not in path.read_text(errors='replace')[:600]
    ]
    for path in missing:
        print(f'{path.relative_to(root)}: missing the Apache-2.0 header ({HEADER_MARK})')
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main())
