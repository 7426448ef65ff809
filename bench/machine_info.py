# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The machine line every benchmark prints above its table."""

from __future__ import annotations

import os
from pathlib import Path
import platform
import subprocess

import numpy as np


def machine() -> str:
    cpu = platform.processor() or ''
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = '?'
    return f'{os.cpu_count()} cores, {cpu}, numpy {np.__version__}, commit {commit or "?"}'
