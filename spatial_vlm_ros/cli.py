# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""`spatial-vlm` command line (placeholder until the replay issue lands)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='spatial-vlm')
    parser.add_argument('--version', action='store_true')
    args = parser.parse_args(argv)
    if args.version:
        from spatial_vlm_ros import __version__

        print(__version__)
    return 0


if __name__ == '__main__':
    sys.exit(main())
