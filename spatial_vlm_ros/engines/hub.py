# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Offline is normal on robots: decide once whether the model hub can be asked at all.

Without a network, ``from_pretrained`` of a Hugging Face id retries every file with backoff:
measured here, ``AutoProcessor.from_pretrained('internlm/Spatial-SSRL-Qwen3VL-4B')`` with no
route to huggingface.co took 141 s to fail. So before any lookup the engines ask
:func:`hub_access`: a local directory never needs the hub, ``HF_HUB_OFFLINE=1`` forbids it, and
otherwise one short request to the hub endpoint decides. When the hub cannot be reached the
lookups run with ``local_files_only=True`` (the local Hugging Face cache, in milliseconds) and
say so; a model missing from the cache then fails at once with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import os
from pathlib import Path
import threading
import time

import httpx

LOGGER = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0
_PROBE_TTL_S = 60.0  # a robot's network changes; do not trust a verdict for ever
_TRUE = ('1', 'true', 'yes', 'on')


@dataclass(frozen=True)
class HubAccess:
    """Whether lookups of ``model_ref`` may use the network, and why."""

    online: bool
    reason: str

    def pretrained_kwargs(self) -> dict[str, bool]:
        """Keyword arguments for ``from_pretrained`` (``local_files_only`` when offline)."""
        return {} if self.online else {'local_files_only': True}


_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[float, bool, str]] = {}


def is_local_model(model_ref: str) -> bool:
    """Return a checkpoint directory on this machine (no hub needed)."""
    return Path(model_ref).expanduser().is_dir()


def hub_endpoint() -> str:
    return os.environ.get('HF_ENDPOINT', 'https://huggingface.co').rstrip('/')


def _probe_hub(endpoint: str, timeout_s: float) -> tuple[bool, str]:
    try:
        httpx.head(endpoint, timeout=timeout_s)
    except httpx.HTTPError as error:
        return False, f'{endpoint} is unreachable ({type(error).__name__}: {error})'
    return True, f'{endpoint} answers'


def hub_access(model_ref: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> HubAccess:
    """May a lookup of ``model_ref`` go to the hub? Decided in at most ``timeout_s``."""
    if is_local_model(model_ref):
        return HubAccess(False, f'{model_ref} is a local directory')
    if os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in _TRUE:
        return HubAccess(False, 'HF_HUB_OFFLINE is set')
    endpoint = hub_endpoint()
    with _probe_lock:
        cached = _probe_cache.get(endpoint)
        if cached is not None and time.monotonic() - cached[0] < _PROBE_TTL_S:
            return HubAccess(cached[1], cached[2])
        online, reason = _probe_hub(endpoint, timeout_s)
        _probe_cache[endpoint] = (time.monotonic(), online, reason)
    if not online:
        LOGGER.warning('model hub: %s; using local files only', reason)
    return HubAccess(online, reason)


def offline_hint(model_ref: str, access: HubAccess) -> str:
    """Say what to do when ``model_ref`` is not local and the hub may not be asked."""
    return (
        f'{model_ref!r} is not in the local Hugging Face cache and the hub was not asked '
        f'({access.reason}): download it where there is a network '
        f'(`hf download {model_ref}`, then copy ~/.cache/huggingface) or set the model to a '
        'local checkpoint directory'
    )
