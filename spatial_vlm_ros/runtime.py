# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Process-wide settings for the node and the CLI (not for a library user's process).

Per frame the pipeline allocates a handful of arrays between a few hundred kilobytes and a few
megabytes (the decoded depth image, every lifted box's samples side by side). glibc's malloc
serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB, growing with what was freed) with fresh
``mmap`` pages and gives the top of the heap back to the kernel past ``M_TRIM_THRESHOLD``, so
every frame pays page faults for the same memory again: measured on this project's machines,
thousands of faults and several milliseconds of system time per frame (docs/PERFORMANCE.md).
Raising both thresholds keeps that memory in the process between frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap, which keeps up to TRIM_THRESHOLD_BYTES free at its top.
# 16 MiB covers a 1920x1080 float32 depth image; glibc caps the threshold at 32 MiB.
MMAP_THRESHOLD_BYTES = 16 * 2**20
TRIM_THRESHOLD_BYTES = 64 * 2**20

_tuned = False


def tune_memory_allocator() -> bool:
    """
    Raise glibc's mmap and trim thresholds once per process.

    False where malloc is not glibc's (musl, macOS) or refused the setting, which only costs speed.
    """
    global _tuned
    if _tuned:
        return True
    name = ctypes.util.find_library('c')
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _tuned = bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _tuned
