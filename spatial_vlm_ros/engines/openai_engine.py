# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Any OpenAI-compatible chat-completions server: SGLang server or router, vLLM.

One ``POST {base_url}/v1/chat/completions`` per request with the image(s) as JPEG data URLs
(resized client-side to the profile's pixel budget) and, for grounding, the grounding schema as
``response_format`` (``json_schema``, ``strict: false``). Retries 429/5xx and connection errors
with exponential backoff and jitter, never past the request's deadline. The API key is read from
an environment variable (its *name* is configurable) and never appears in repr, logs or errors.
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

from spatial_vlm_ros.engines.base import (
    FLAG_MAX_NEW_TOKENS,
    EngineError,
    EngineRequest,
    EngineResponse,
    EngineTimeout,
    OutputConstraint,
    Timings,
    TokenCounts,
    VlmEngine,
)
from spatial_vlm_ros.engines.imaging import (
    DEFAULT_JPEG_QUALITY,
    InvalidImageError,
    PreparedImage,
    prepare_image,
)
from spatial_vlm_ros.engines.parsing import parse_for_request
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile
from spatial_vlm_ros.engines.prompts import (
    chat_messages,
    presence_penalty_for,
    sampling_for,
    uses_grounding_schema,
)
from spatial_vlm_ros.engines.schema import openai_response_format

LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Same flag as the transformers engine: the answer hit max_new_tokens and may be cut off.
FINISH_LENGTH_FLAG = FLAG_MAX_NEW_TOKENS
_BODY_SNIPPET_CHARS = 300


def build_chat_request(
    request: EngineRequest,
    profile: ModelProfile,
    model: str,
    images: Sequence[PreparedImage],
    *,
    sampling_extras: bool = True,
) -> dict[str, Any]:
    """The chat-completions JSON body for ``request`` (pure; the images are already prepared).

    ``sampling_extras`` adds ``top_k`` / ``repetition_penalty``, which SGLang and vLLM accept
    beyond the OpenAI API; turn it off for servers that reject unknown fields.
    """
    sampling = sampling_for(request, profile)
    body: dict[str, Any] = {
        'model': model,
        'messages': chat_messages(request, profile, [image.data_url for image in images]),
        'max_tokens': sampling.max_new_tokens,
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


def _int_or_zero(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _abandon_acquire(acquiring: asyncio.Future[Any], semaphore: asyncio.Semaphore) -> None:
    """Stop waiting for a slot; a slot won at the same moment is given back, never leaked."""
    if acquiring.done():
        if not acquiring.cancelled():
            semaphore.release()
        return
    acquiring.cancel()
    acquiring.add_done_callback(lambda done: None if done.cancelled() else semaphore.release())


async def _acquire_before(semaphore: asyncio.Semaphore, timeout_s: float) -> bool:
    """Acquire a slot within ``timeout_s``; False on timeout. Written out instead of
    ``asyncio.wait_for`` because that can drop a just-won acquisition before Python 3.12."""
    acquiring = asyncio.ensure_future(semaphore.acquire())
    try:
        done, _ = await asyncio.wait({acquiring}, timeout=max(timeout_s, 0.0))
    except asyncio.CancelledError:
        _abandon_acquire(acquiring, semaphore)
        raise
    if done:
        return True
    _abandon_acquire(acquiring, semaphore)
    return False


class OpenAIEngine(VlmEngine):
    """Client of an OpenAI-compatible server. Bound to the event loop it first runs on."""

    name = 'openai'

    def __init__(
        self,
        profile: ModelProfile | str | None = None,
        base_url: str = 'http://127.0.0.1:30000',
        model: str | None = None,
        api_key_env: str = 'OPENAI_API_KEY',
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.25,
        backoff_max_s: float = 4.0,
        max_concurrency: int = 8,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        sampling_extras: bool = True,
        health_timeout_s: float = 2.0,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0 or health_timeout_s <= 0:
            raise EngineError('timeouts must be positive')
        if max_attempts < 1:
            raise EngineError(f'max_attempts must be >= 1, got {max_attempts}')
        if max_concurrency < 1:
            raise EngineError(f'max_concurrency must be >= 1, got {max_concurrency}')
        if backoff_initial_s < 0 or backoff_max_s < 0:
            raise EngineError('backoff delays must be >= 0')
        self.profile = resolve_profile(profile)
        self.base_url = _normalize_base_url(base_url)
        self.model = model or self.profile.hf_id
        if not self.model:
            raise EngineError('no model name: pass model= or a profile with an hf_id')
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
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        key_state = 'set' if self.__api_key else 'unset'
        return (
            f'OpenAIEngine(base_url={self.base_url!r}, model={self.model!r}, '
            f'api_key_env={self.api_key_env!r} ({key_state}), '
            f'max_concurrency={self.max_concurrency})'
        )

    @property
    def chat_url(self) -> str:
        return f'{self.base_url}/v1/chat/completions'

    def _headers(self) -> dict[str, str]:
        return {'Authorization': f'Bearer {self.__api_key}'} if self.__api_key else {}

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            )
            self._client = httpx.AsyncClient(limits=limits, headers=self._headers())
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._client

    async def start(self) -> None:
        self._ensure_client()

    async def shutdown(self) -> None:
        client, self._client, self._semaphore = self._client, None, None
        if client is not None:
            await client.aclose()

    async def health(self) -> bool:
        """GET /health, falling back to /v1/models where /health does not exist; never raises."""
        client = self._ensure_client()
        for path in ('/health', '/v1/models'):
            try:
                response = await client.get(
                    f'{self.base_url}{path}', timeout=self.health_timeout_s
                )
            except httpx.HTTPError:
                return False
            if response.status_code in (404, 405):
                continue
            return response.status_code == 200
        return False

    def _prepare(self, request: EngineRequest) -> list[PreparedImage]:
        if not request.images:
            raise InvalidImageError('the request has no image')
        return [prepare_image(image, self.profile, self.jpeg_quality) for image in request.images]

    async def generate(self, request: EngineRequest) -> EngineResponse:
        started = time.monotonic()
        timeout_s = request.timeout_s if request.timeout_s else self.timeout_s
        deadline = started + timeout_s
        client = self._ensure_client()
        semaphore = self._semaphore
        assert semaphore is not None  # set with the client
        images = await asyncio.to_thread(self._prepare, request)
        body = build_chat_request(
            request, self.profile, self.model, images, sampling_extras=self.sampling_extras
        )
        prepared = time.monotonic()
        if not await _acquire_before(semaphore, deadline - prepared):
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
        text, finish_reason, usage = _read_completion(data, self.chat_url)
        first = images[0]
        parsed = parse_for_request(text, request, self.profile, (first.width, first.height))
        if attempts > 1:
            LOGGER.info('%s answered after %d attempts', self.chat_url, attempts)
        return EngineResponse(
            raw_text=text,
            parsed=parsed,
            tokens=TokenCounts(
                prompt_tokens=_int_or_zero(usage.get('prompt_tokens')),
                image_tokens=sum(image.tokens for image in images),
                completion_tokens=_int_or_zero(usage.get('completion_tokens')),
            ),
            timings=Timings(
                preprocess_s=prepared - started,
                queue_s=admitted - prepared,
                inference_s=finished - admitted,
                total_s=finished - started,
            ),
            engine=self.name,
            model_id=self.model,
            flags=(FINISH_LENGTH_FLAG,) if finish_reason == 'length' else (),
        )

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
                    raise EngineError(
                        f'{url} returned HTTP {response.status_code}: {_snippet(response)}'
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
