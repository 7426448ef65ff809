# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Any OpenAI-compatible chat-completions server: SGLang server or router, vLLM.

One ``POST {base_url}/v1/chat/completions`` per request with the image(s) as JPEG data URLs
(resized client-side to the profile's pixel budget) and, for grounding, the grounding schema as
``response_format`` (``json_schema``, ``strict: true``). Retries 429/5xx and connection errors
with exponential backoff and jitter, never past the request's deadline. The API key is read from
an environment variable (its *name* is configurable) and never appears in repr, logs or errors.

The model name sent is ``served_model_name``, or, when that is '', the one the server lists in
``/v1/models`` (its only model, or the profile's id among several). :meth:`OpenAIEngine.start`
checks the server the way its kind wants (``server_check``) and raises
:class:`EngineUnavailableError` with the fix when it is down or does not serve that name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
import json
import logging
import os
import random
import time
from typing import Any

import httpx

from spatial_vlm_ros.core.scheduling import acquire_before
from spatial_vlm_ros.engines.base import (
    Completion,
    EngineError,
    EngineHealth,
    EngineRequest,
    EngineTimeout,
    EngineUnavailableError,
    FinishReason,
    OutputConstraint,
    Timings,
    TokenCounts,
    VlmEngine,
    token_count,
)
from spatial_vlm_ros.engines.imaging import (
    DEFAULT_JPEG_QUALITY,
    InvalidImageError,
    PreparedImage,
    prepare_image,
)
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile
from spatial_vlm_ros.engines.prompts import (
    chat_messages,
    presence_penalty_for,
    sampling_for,
    uses_grounding_schema,
)
from spatial_vlm_ros.engines.schema import openai_response_format
from spatial_vlm_ros.engines.server_check import (
    ServerKind,
    choose_model,
    detect_kind,
    liveness,
    router_hides_models,
    served_models,
    unreachable,
)

LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Client errors after which the engine asks /v1/models whether the model name is the problem.
MODEL_NAME_SUSPECT_STATUS = frozenset({400, 404, 422})
_BODY_SNIPPET_CHARS = 300


def build_chat_request(
    request: EngineRequest,
    profile: ModelProfile,
    model: str,
    images: Sequence[PreparedImage],
    *,
    sampling_extras: bool = True,
) -> dict[str, Any]:
    """
    Return the chat-completions JSON body for ``request`` (pure; the images are already prepared).

    ``sampling_extras`` adds ``top_k`` / ``repetition_penalty``, which SGLang and vLLM accept
    beyond the OpenAI API; turn it off for servers that reject unknown fields.
    """
    sampling = sampling_for(request, profile)
    body: dict[str, Any] = {
        'model': model,
        'messages': chat_messages(request, profile, [image.data_url for image in images]),
        # max_tokens is deprecated in SGLang, vLLM and the router; all three read this one.
        'max_completion_tokens': sampling.max_new_tokens,
        'temperature': sampling.temperature,
        'top_p': sampling.top_p,
        'stream': False,
    }
    if sampling.seed is not None:
        body['seed'] = sampling.seed
    presence_penalty = presence_penalty_for(request, profile)
    if presence_penalty:
        body['presence_penalty'] = presence_penalty
    if sampling_extras:
        if sampling.top_k > 0:
            body['top_k'] = sampling.top_k
        if sampling.repetition_penalty != 1.0:
            body['repetition_penalty'] = sampling.repetition_penalty
    if request.output_constraint is not None:
        body['response_format'] = constraint_response_format(request.output_constraint)
    elif uses_grounding_schema(request, profile):
        body['response_format'] = openai_response_format()
    return body


def constraint_response_format(constraint: OutputConstraint) -> dict[str, Any]:
    """``response_format`` for a request's own grammar (SGLang and vLLM accept both forms)."""
    if constraint.structural_tag:
        return json.loads(constraint.structural_tag)
    return {
        'type': 'json_schema',
        'json_schema': {
            'name': constraint.name,
            'schema': json.loads(constraint.json_schema),
            'strict': False,
        },
    }


def _normalize_base_url(base_url: str) -> str:
    url = base_url.strip().rstrip('/')
    if not url.startswith(('http://', 'https://')):
        raise EngineError(f'base_url must start with http:// or https://, got {base_url!r}')
    return url[: -len('/v1')] if url.endswith('/v1') else url


def _retry_after_s(response: httpx.Response) -> float:
    value = response.headers.get('retry-after', '')
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace('\n', ' ')
    return text[:_BODY_SNIPPET_CHARS] + ('...' if len(text) > _BODY_SNIPPET_CHARS else '')


def _read_completion(data: Any, url: str) -> tuple[str, str, dict[str, Any]]:
    """``(text, finish_reason, usage)``; a reasoning field is folded back as a <think> block."""
    try:
        choice = data['choices'][0]
        message = choice['message']
        content = message.get('content') or ''
        reasoning = message.get('reasoning_content') or message.get('reasoning') or ''
        finish_reason = choice.get('finish_reason') or ''
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EngineError(
            f'malformed chat-completions response from {url}: no choices[0].message'
        ) from None
    if not isinstance(content, str) or not isinstance(reasoning, str):
        raise EngineError(f'malformed chat-completions response from {url}: content is not text')
    usage = data.get('usage') if isinstance(data.get('usage'), dict) else {}
    text = f'<think>{reasoning}</think>{content}' if reasoning else content
    return text, str(finish_reason), usage


class OpenAIEngine(VlmEngine):
    """Client of an OpenAI-compatible server. Bound to the event loop it first runs on."""

    name = 'openai'

    def __init__(
        self,
        profile: ModelProfile | str | None = None,
        base_url: str = 'http://127.0.0.1:30000',
        served_model_name: str = '',
        api_key_env: str = 'OPENAI_API_KEY',
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 4.0,
        max_concurrency: int = 8,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        sampling_extras: bool = True,
        health_timeout_s: float = 5.0,
        server_kind: ServerKind | str = ServerKind.AUTO,
        deep_health_interval_s: float = 60.0,
        deep_health_timeout_s: float = 15.0,
    ) -> None:
        if min(timeout_s, connect_timeout_s, health_timeout_s, deep_health_timeout_s) <= 0:
            raise EngineError('timeouts must be positive')
        if max_attempts < 1:
            raise EngineError(f'max_attempts must be >= 1, got {max_attempts}')
        if max_concurrency < 1:
            raise EngineError(f'max_concurrency must be >= 1, got {max_concurrency}')
        if backoff_initial_s < 0 or backoff_max_s < 0 or deep_health_interval_s < 0:
            raise EngineError('backoff delays and intervals must be >= 0')
        try:
            kind = ServerKind(server_kind)
        except ValueError:
            choices = ', '.join(k.value for k in ServerKind)
            raise EngineError(
                f'server_kind must be one of {choices}, not {server_kind!r}'
            ) from None
        self.profile = resolve_profile(profile)
        self.base_url = _normalize_base_url(base_url)
        self.served_model_name = served_model_name.strip()
        self.api_key_env = api_key_env
        self.__api_key = os.environ.get(api_key_env, '') if api_key_env else ''
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_concurrency = max_concurrency
        self.jpeg_quality = jpeg_quality
        self.sampling_extras = sampling_extras
        self.health_timeout_s = health_timeout_s
        self.deep_health_interval_s = deep_health_interval_s
        self.deep_health_timeout_s = deep_health_timeout_s
        self._kind: ServerKind | None = None if kind == ServerKind.AUTO else kind
        self._model: str | None = None  # the name sent; resolved against /v1/models
        self._last_deep_check = float('-inf')  # monotonic time of the last deep probe or answer
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._resolve_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        key_state = 'set' if self.__api_key else 'unset'
        return (
            f'OpenAIEngine(base_url={self.base_url!r}, '
            f'served_model_name={self.served_model_name!r}, '
            f'api_key_env={self.api_key_env!r} ({key_state}), '
            f'max_concurrency={self.max_concurrency})'
        )

    @property
    def chat_url(self) -> str:
        return f'{self.base_url}/v1/chat/completions'

    @property
    def model(self) -> str | None:
        """Return the model name requests carry (None until resolved against the server)."""
        return self._model

    @property
    def server_kind(self) -> ServerKind | None:
        """Return the kind of server found (None before the first contact)."""
        return self._kind

    def _headers(self) -> dict[str, str]:
        return {'Authorization': f'Bearer {self.__api_key}'} if self.__api_key else {}

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.max_concurrency + 1,  # one spare for health probes
                max_keepalive_connections=self.max_concurrency,
            )
            self._client = httpx.AsyncClient(limits=limits, headers=self._headers())
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._resolve_lock = asyncio.Lock()
        return self._client

    async def start(self) -> None:
        """Check the server and resolve the model name; raise when it cannot serve."""
        health = await self._check(deep=True)
        if not health.serving:
            raise EngineUnavailableError(health)
        LOGGER.info('%s (model %r)', health.message, self._model)

    async def shutdown(self) -> None:
        client, self._client, self._semaphore = self._client, None, None
        if client is not None:
            await client.aclose()

    async def health(self) -> EngineHealth:
        """Return the server's own health signal plus the model-name check; never raises."""
        deep = time.monotonic() - self._last_deep_check >= self.deep_health_interval_s
        return await self._check(deep=deep)

    async def _check(self, *, deep: bool) -> EngineHealth:
        client = self._ensure_client()
        if self._kind is None:
            kind, failed = await detect_kind(client, self.base_url, self.health_timeout_s)
            if kind is None:
                return unreachable(self.base_url, failed)
            self._kind = kind
        state = await liveness(
            client,
            self.base_url,
            self._kind,
            self.health_timeout_s,
            deep=deep,
            deep_timeout_s=self.deep_health_timeout_s,
        )
        if deep and state.serving:
            self._last_deep_check = time.monotonic()
        if not state.serving:
            return state
        model_health = await self._resolve_model(client)
        if model_health is not None:
            return model_health
        values = (*state.values, ('served_model', str(self._model)))
        mismatch = self._profile_mismatch()
        if mismatch:
            return EngineHealth.warn(mismatch[0], mismatch[1], **dict(values))
        return EngineHealth(state.level, state.message, state.fix, values)

    async def _detect_kind_once(self, client: httpx.AsyncClient) -> None:
        """Learn the server kind if generate() ran before start(): a router lists names its way."""
        if self._kind is None:
            self._kind, _ = await detect_kind(client, self.base_url, self.health_timeout_s)

    async def _resolve_model(self, client: httpx.AsyncClient) -> EngineHealth | None:
        """Set ``self._model`` from ``/v1/models``; an ERROR when no usable name is served."""
        await self._detect_kind_once(client)
        served, listing = await served_models(client, self.base_url, self.health_timeout_s)
        if served is None:
            if listing.status is None:
                return unreachable(self.base_url, listing)
            return EngineHealth.error(
                f'{self.base_url}/v1/models answered HTTP {listing.status}: not an '
                'OpenAI-compatible server, or a path is missing from server_url',
                'set server_url to the server root (http://host:port)',
                server_url=self.base_url,
            )
        if router_hides_models(self._kind, served):
            # Behind the router the name is checked by the worker on the first request (a 404
            # names the worker's models): the configured name, else the profile's checkpoint id,
            # which is what vLLM and SGLang serve unless told otherwise.
            self._model = self.served_model_name or self.profile.hf_id or None
            if self._model is None:
                return EngineHealth.error(
                    f'the router at {self.base_url} does not know which model its workers '
                    'serve (it lists only "unknown"), and no served_model_name is set',
                    'set served_model_name to the name the workers serve (--served-model-name)',
                    server_url=self.base_url,
                )
            return None
        model, problem = choose_model(
            self.base_url, self.served_model_name, served, self.profile.hf_id
        )
        self._model = model
        return problem

    def _profile_mismatch(self) -> tuple[str, str] | None:
        """Why the served checkpoint and the profile's disagree (both Hugging Face ids)."""
        served, expected = self._model or '', self.profile.hf_id
        if '/' in served and expected and '/' in expected and served != expected:
            return (
                f'the server serves {served!r} but profile {self.profile.name!r} is for '
                f'{expected!r}: its prompts and settings may not fit',
                f'set model to {served!r} (or to the profile of the served checkpoint)',
            )
        return None

    async def _model_name(self, client: httpx.AsyncClient) -> str:
        """
        Return the configured name as is, else the served one.

        The configured name is checked at start and on a 4xx.
        """
        if self.served_model_name:
            return self.served_model_name
        if self._model is None:
            assert self._resolve_lock is not None  # set with the client
            async with self._resolve_lock:
                if self._model is None:
                    problem = await self._resolve_model(client)
                    if problem is not None:
                        raise EngineUnavailableError(problem)
        assert self._model is not None
        return self._model

    def _prepare(self, request: EngineRequest) -> list[PreparedImage]:
        if not request.images:
            raise InvalidImageError('the request has no image')
        return [prepare_image(image, self.profile, self.jpeg_quality) for image in request.images]

    async def complete(self, request: EngineRequest) -> Completion:
        started = time.monotonic()
        timeout_s = request.timeout_s if request.timeout_s else self.timeout_s
        deadline = started + timeout_s
        client = self._ensure_client()
        semaphore = self._semaphore
        assert semaphore is not None  # set with the client
        images = await asyncio.to_thread(self._prepare, request)
        model = await self._model_name(client)
        body = build_chat_request(
            request, self.profile, model, images, sampling_extras=self.sampling_extras
        )
        prepared = time.monotonic()
        if not await acquire_before(semaphore, deadline - prepared):
            raise EngineTimeout(
                f'waited {timeout_s:.1f}s for a free slot ({self.max_concurrency} in flight) '
                f'to {self.chat_url}'
            )
        admitted = time.monotonic()
        try:
            data, attempts = await self._post_with_retries(client, body, deadline, timeout_s)
        finally:
            semaphore.release()
        finished = time.monotonic()
        self._last_deep_check = finished  # a real answer proves more than a health probe
        text, finish_reason, usage = _read_completion(data, self.chat_url)
        if attempts > 1:
            LOGGER.info('%s answered after %d attempts', self.chat_url, attempts)
        first = images[0]
        return Completion(
            text=text,
            finish_reason=FinishReason.from_backend(finish_reason),
            tokens=TokenCounts(
                prompt_tokens=token_count(usage.get('prompt_tokens')),
                image_tokens=sum(image.tokens for image in images),
                completion_tokens=token_count(usage.get('completion_tokens')),
            ),
            timings=Timings(
                preprocess_s=prepared - started,
                queue_s=admitted - prepared,
                inference_s=finished - admitted,
                total_s=finished - started,
            ),
            model_id=model,
            input_size=(first.width, first.height),
        )

    async def _diagnose_client_error(
        self, client: httpx.AsyncClient, status: int, snippet: str
    ) -> EngineError:
        """
        Turn a 4xx answer into an error.

        The served-model error when the name is the cause, else the HTTP one.
        """
        if status in MODEL_NAME_SUSPECT_STATUS:
            sent = self.served_model_name or self._model
            self._model = None  # resolved again on the next request
            await self._detect_kind_once(client)
            served, _ = await served_models(client, self.base_url, self.health_timeout_s)
            if router_hides_models(self._kind, served):
                served = None  # the worker's own 404 (in the snippet) names its models
            if served is not None and sent not in served:
                _, problem = choose_model(self.base_url, sent or '', served, '')
                if problem is not None:
                    return EngineUnavailableError(problem)
        return EngineError(f'{self.chat_url} returned HTTP {status}: {snippet}')

    def _backoff_s(self, attempt: int, retry_after_s: float) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        # Equal jitter: half fixed, half random, so clients that failed together spread out.
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        return max(delay, retry_after_s)

    async def _post_with_retries(
        self, client: httpx.AsyncClient, body: dict[str, Any], deadline: float, timeout_s: float
    ) -> tuple[Any, int]:
        url = self.chat_url
        last_error = ''
        for attempt in range(1, self.max_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeout = httpx.Timeout(remaining, connect=min(self.connect_timeout_s, remaining))
            retry_after = 0.0
            try:
                response = await client.post(url, json=body, timeout=timeout)
            except httpx.ConnectTimeout:
                last_error = f'connect timeout after {min(self.connect_timeout_s, remaining):.1f}s'
            except httpx.TimeoutException:
                raise EngineTimeout(
                    f'no response from {url} within the {timeout_s:.1f}s deadline '
                    f'(attempt {attempt})'
                ) from None
            except httpx.TransportError as error:
                last_error = f'connection error: {type(error).__name__}: {error}'
            else:
                if response.status_code == 200:
                    try:
                        return response.json(), attempt
                    except ValueError:
                        raise EngineError(
                            f'malformed response from {url}: body is not JSON: '
                            f'{_snippet(response)}'
                        ) from None
                if response.status_code not in RETRYABLE_STATUS:
                    raise await self._diagnose_client_error(
                        client, response.status_code, _snippet(response)
                    )
                last_error = f'HTTP {response.status_code}: {_snippet(response)}'
                retry_after = _retry_after_s(response)
            if attempt == self.max_attempts:
                break
            delay = self._backoff_s(attempt, retry_after)
            if time.monotonic() + delay >= deadline:
                raise EngineTimeout(
                    f'{url}: the {timeout_s:.1f}s deadline leaves no time for another attempt '
                    f'after {attempt}; last error: {last_error}'
                )
            LOGGER.debug('retrying %s in %.2fs after %s', url, delay, last_error)
            await asyncio.sleep(delay)
        if not last_error:
            raise EngineTimeout(f'{url}: the {timeout_s:.1f}s deadline passed before a response')
        raise EngineError(f'{url} failed after {self.max_attempts} attempt(s); last: {last_error}')
