# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Keep each frame's raw model output for the replay report, without changing the pipeline.

:class:`RawOutputTap` wraps the pipeline's engine for the length of a replay (like
:class:`~spatial_vlm_ros.engines.recorded.RecordingEngine` wraps one to record to a file) and
remembers the raw text of every grounding response by image stamp, until the runner takes it
for the report. The scenes JSON schema is untouched: the text only goes to report.html.
"""

from __future__ import annotations

from collections import OrderedDict

from spatial_vlm_ros.engines.base import (
    EngineHealth,
    EngineRequest,
    EngineResponse,
    TaskKind,
    VlmEngine,
)


class RawOutputTap(VlmEngine):
    """
    Delegates to ``inner``; :meth:`take` returns the raw text answered for a stamp.

    At most ``capacity`` texts wait to be taken (frames whose scene is never written, e.g. a
    failed frame, must not grow it without bound).
    """

    def __init__(self, inner: VlmEngine, capacity: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.capacity = capacity
        self._texts: OrderedDict[int, str] = OrderedDict()

    async def generate(self, request: EngineRequest) -> EngineResponse:
        response = await self.inner.generate(request)
        if request.task == TaskKind.GROUND:
            self._texts[request.stamp_ns] = response.raw_text
            while len(self._texts) > self.capacity:
                self._texts.popitem(last=False)
        return response

    def take(self, stamp_ns: int) -> str | None:
        """Return the raw grounding output for ``stamp_ns`` (once), or None when there was none."""
        return self._texts.pop(stamp_ns, None)

    async def start(self) -> None:
        await self.inner.start()

    async def health(self) -> EngineHealth:
        return await self.inner.health()

    async def shutdown(self) -> None:
        await self.inner.shutdown()
