# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Check that an OpenAI-compatible server is up and serves the model we ask for.

Each server kind has its own honest health signal (checked against their code, docs/ENGINES.md):

* sglang-router / SGLang Model Gateway: ``/health`` is pure liveness and answers 200 with zero
  workers; ``/readiness`` answers 503 until a worker is healthy. Detected by ``/readiness``.
* SGLang server: ``/health`` and ``/health_generate`` run a one-token generation and sleep at
  least 1 s before looking; ``/ready`` is the cheap readiness flag. Detected by ``/model_info``.
  The generation probe runs at start and then at most every ``deep_interval_s``, and not at all
  while real requests succeed.
* vLLM: ``/health`` answers 503 when the engine core died. Detected by ``/version``.
* anything else: ``/health`` when it exists.

Then ``/v1/models`` says which names the server answers to: the configured
``served_model_name`` must be one of them; with none configured the server's only model is used
(or the profile's id when it serves several). Every finding is an :class:`EngineHealth` whose
message and fix fit one line each.
"""

from __future__ import annotations

from dataclasses import dataclass
import enum
import time
from typing import Any

import httpx

from spatial_vlm_ros.engines.base import EngineHealth


class ServerKind(str, enum.Enum):
    AUTO = 'auto'  # detect on first contact
    ROUTER = 'router'  # sglang-router / SGLang Model Gateway
    SGLANG = 'sglang'  # python -m sglang.launch_server
    VLLM = 'vllm'  # vllm serve
    OPENAI = 'openai'  # any other OpenAI-compatible server


@dataclass(frozen=True)
class Probe:
    """One GET: its status (None when nothing answered), duration and JSON body (or None)."""

    status: int | None
    seconds: float
    body: Any = None
    error: str = ''


async def probe(client: httpx.AsyncClient, url: str, timeout_s: float) -> Probe:
    """GET ``url``; never raises."""
    started = time.monotonic()
    try:
        response = await client.get(url, timeout=timeout_s)
    except httpx.TimeoutException:
        return Probe(None, time.monotonic() - started, error=f'no answer within {timeout_s:g} s')
    except httpx.HTTPError as error:
        return Probe(None, time.monotonic() - started, error=f'{type(error).__name__}: {error}')
    try:
        body = response.json()
    except ValueError:
        body = None
    return Probe(response.status_code, time.monotonic() - started, body)


async def detect_kind(
    client: httpx.AsyncClient, base_url: str, timeout_s: float
) -> tuple[ServerKind | None, Probe]:
    """
    Return the kind of server at ``base_url``.

    None (with the failed probe) when none answers.
    """
    readiness = await probe(client, f'{base_url}/readiness', timeout_s)
    if readiness.status is None:
        return None, readiness
    if readiness.status in (200, 503):
        return ServerKind.ROUTER, readiness
    model_info = await probe(client, f'{base_url}/model_info', timeout_s)
    if model_info.status == 200 and isinstance(model_info.body, dict):
        return ServerKind.SGLANG, model_info
    version = await probe(client, f'{base_url}/version', timeout_s)
    if version.status == 200 and isinstance(version.body, dict) and 'version' in version.body:
        return ServerKind.VLLM, version
    return ServerKind.OPENAI, version


def unreachable(base_url: str, failed: Probe) -> EngineHealth:
    return EngineHealth.error(
        f'no server answers at {base_url} ({failed.error})',
        'start the model server (docs/ENGINES.md) or set server_url to where it listens',
        server_url=base_url,
    )


async def liveness(
    client: httpx.AsyncClient,
    base_url: str,
    kind: ServerKind,
    timeout_s: float,
    *,
    deep: bool,
    deep_timeout_s: float,
) -> EngineHealth:
    """Return the kind's own health signal (not yet the model name)."""
    values = {'server_url': base_url, 'server_kind': kind.value}
    if kind == ServerKind.ROUTER:
        ready = await probe(client, f'{base_url}/readiness', timeout_s)
        if ready.status is None:
            return unreachable(base_url, ready)
        workers = _router_workers(ready.body)
        if ready.status != 200:
            return EngineHealth.error(
                f'the router at {base_url} has no healthy worker{workers}',
                'start or repair the workers behind the router (its /workers lists them)',
                **values,
            )
        return EngineHealth.ok(f'router ready{workers}', **values)
    if kind == ServerKind.SGLANG:
        ready = await probe(client, f'{base_url}/ready', timeout_s)
        if ready.status is None:
            return unreachable(base_url, ready)
        if ready.status != 200:
            return EngineHealth.error(
                f'the SGLang server at {base_url} is not ready (HTTP {ready.status}: starting, '
                'shutting down or unhealthy)',
                'wait for it to finish loading, or read its log',
                **values,
            )
        if not deep:
            return EngineHealth.ok('SGLang server ready', **values)
        generated = await probe(client, f'{base_url}/health_generate', deep_timeout_s)
        if generated.status != 200:
            found = generated.error or f'HTTP {generated.status}'
            return EngineHealth.error(
                f'the SGLang server at {base_url} failed a one-token generation ({found})',
                'read the server log (scheduler or GPU failure); restart the server',
                **values,
            )
        return EngineHealth.ok(
            f'SGLang server generated a token in {generated.seconds:.1f} s',
            health_generate_s=f'{generated.seconds:.2f}',
            **values,
        )
    health = await probe(client, f'{base_url}/health', timeout_s)
    if health.status is None:
        return unreachable(base_url, health)
    if health.status in (404, 405) and kind == ServerKind.OPENAI:
        return EngineHealth.ok('server answers (no /health endpoint)', **values)
    if health.status != 200:
        return EngineHealth.error(
            f'the {kind.value} server at {base_url} reports unhealthy (HTTP {health.status})',
            'read the server log (its engine process may have died); restart the server',
            **values,
        )
    return EngineHealth.ok(f'{kind.value} server healthy', **values)


def _router_workers(body: Any) -> str:
    if isinstance(body, dict) and 'healthy_workers' in body:
        return f' ({body.get("healthy_workers")} of {body.get("total_workers", "?")} workers)'
    return ''


# sglang-router (0.3.2) answers /v1/models itself, with the names it read from its workers'
# SGLang-only /server_info and /model_info; a vLLM (or any other) worker is listed under this
# placeholder, so behind such a router /v1/models cannot confirm a name.
ROUTER_PLACEHOLDER_MODEL = 'unknown'


def router_hides_models(kind: ServerKind | None, served: list[str] | None) -> bool:
    """
    Return True when a router lists only its placeholder.

    Then its workers' names are unknown to it.
    """
    return (
        kind == ServerKind.ROUTER
        and bool(served)
        and all(name == ROUTER_PLACEHOLDER_MODEL for name in served or ())
    )


async def served_models(
    client: httpx.AsyncClient, base_url: str, timeout_s: float
) -> tuple[list[str] | None, Probe]:
    """Return the model ids ``/v1/models`` lists, or None with the probe when it lists none."""
    models = await probe(client, f'{base_url}/v1/models', timeout_s)
    data = models.body.get('data') if isinstance(models.body, dict) else None
    if models.status != 200 or not isinstance(data, list):
        return None, models
    ids = [str(item['id']) for item in data if isinstance(item, dict) and 'id' in item]
    return ids, models


def choose_model(
    base_url: str, configured: str, served: list[str], profile_model: str
) -> tuple[str | None, EngineHealth | None]:
    """
    Return the model name to send, or None and an ERROR saying which name to configure.

    ``configured`` must be served; '' picks the only served model, or ``profile_model`` among
    several.
    """
    listed = ', '.join(repr(name) for name in served) or 'nothing'
    if configured:
        if configured in served:
            return configured, None
        return None, EngineHealth.error(
            f'the server at {base_url} does not serve model {configured!r}; it serves {listed}',
            f'set served_model_name to one of {listed}, or to "" to use its only model',
            server_url=base_url,
        )
    if len(served) == 1:
        return served[0], None
    if profile_model and profile_model in served:
        return profile_model, None
    return None, EngineHealth.error(
        f'the server at {base_url} serves {len(served)} models ({listed}) and none was chosen',
        f'set served_model_name to one of {listed}',
        server_url=base_url,
    )
