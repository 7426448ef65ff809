# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Engine start time with no route to the model hub (issue 10: "offline is normal on robots").

Simulates a robot without a network wherever it runs: ``HF_ENDPOINT`` points at a local port
nothing listens on (every hub request is refused at once), the Hugging Face cache is an empty
temporary directory and ``HF_HUB_OFFLINE`` is unset, so only the engines' own handling decides
how long a start takes. Two starts of a Hugging Face id that is not cached:

* ``sglang``: ``SGLangEngine.start()`` with a stand-in ``Engine`` factory (sglang needs CUDA), so
  what is timed is the engine's own lookups (the checkpoint's chat template);
* ``transformers``: ``TransformersEngine.start()`` (processor, then model).

The baseline is importing the transformers classes the lookups use, in the same process (what
any lookup costs at least); the starts run after it. To compare with the code before issue 10:
``git archive 9a65d9d | tar -x -C /tmp/old && PYTHONPATH=/tmp/old .venv/bin/python
bench/bench_offline_start.py`` (the stand-in factory works with both).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
from typing import Any


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


class StandInSglangEngine:
    """Not sglang: the keyword constructor, ``loop``, ``async_generate`` and ``shutdown``."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    async def async_generate(self, **payload: Any) -> dict[str, Any]:
        return {'text': '[]', 'meta_info': {}}

    def shutdown(self) -> None:
        pass


async def _start(engine: Any) -> tuple[float, str]:
    started = time.monotonic()
    outcome = 'started'
    try:
        await engine.start()
    except Exception as error:  # noqa: BLE001 - the outcome is what is reported
        outcome = f'{type(error).__name__}: {str(error).splitlines()[0][:110]}'
    seconds = time.monotonic() - started
    await engine.shutdown()
    return seconds, outcome


def main() -> int:
    os.environ['HF_ENDPOINT'] = f'http://127.0.0.1:{_closed_port()}'
    os.environ.pop('HF_HUB_OFFLINE', None)
    os.environ['HF_HOME'] = tempfile.mkdtemp(prefix='hf-empty-')
    started = time.monotonic()
    from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: F401 - baseline

    import_s = time.monotonic() - started
    from spatial_vlm_ros.engines.profiles import resolve_profile
    from spatial_vlm_ros.engines.sglang_engine import SGLangEngine
    from spatial_vlm_ros.engines.transformers_engine import TransformersEngine

    engines = {
        'sglang (stand-in Engine), spatial-ssrl-4b-fp8': SGLangEngine(
            resolve_profile('spatial-ssrl-4b-fp8'), engine_factory=StandInSglangEngine
        ),
        'transformers, qwen3-vl-2b-grace-w8g128': TransformersEngine(
            'qwen3-vl-2b-grace-w8g128', device='cpu'
        ),
    }
    hub = os.environ['HF_ENDPOINT']
    print(f'baseline: importing the transformers Auto classes {import_s:.1f} s (hub: {hub})')
    print(f'{"start() of": <48} {"s": >7} {"x import": >9}  outcome')
    for label, engine in engines.items():
        seconds, outcome = asyncio.run(_start(engine))
        print(f'{label: <48} {seconds: >7.1f} {seconds / import_s: >9.2f}  {outcome}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
