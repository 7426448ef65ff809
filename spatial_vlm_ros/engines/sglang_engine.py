# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""In-process SGLang (``sglang.Engine``) on its own event-loop thread.

Why a dedicated thread: ``sglang.Engine`` is not thread-safe and keeps the event loop it was built
with (``engine.loop``); its synchronous ``generate`` calls ``loop.run_until_complete`` and hangs
or fails when loops are mixed. So one thread builds the engine, then runs ``engine.loop`` forever;
every request is submitted to that loop with ``asyncio.run_coroutine_threadsafe(
engine.async_generate(...))`` and awaited in the caller's loop through ``asyncio.wrap_future``.
Concurrent requests therefore reach SGLang's scheduler together and are batched there.

Process-wide side effects of SGLang to know about (see docs/ENGINES.md):

* it forces ``multiprocessing`` start method ``spawn`` for the whole process, so the host program
  needs an ``if __name__ == '__main__':`` guard;
* ``Engine.shutdown()`` kills *every* child process of the host, not only SGLang's. Host no other
  child processes next to it, or use the SGLang server with :class:`OpenAIEngine` instead;
* signal handlers are only installed from the main thread (SGLang logs that it skips them here).

sglang is imported lazily: it needs a CUDA machine (``pip install 'spatial_vlm_ros[sglang]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import concurrent.futures
import logging
import threading
import time
from typing import Any

from spatial_vlm_ros.engines.base import (
    FLAG_MAX_NEW_TOKENS,
    EngineError,
    EngineRequest,
    EngineResponse,
    EngineTimeout,
    Timings,
    TokenCounts,
    VlmEngine,
)
from spatial_vlm_ros.engines.imaging import (
    DEFAULT_JPEG_QUALITY,
    InvalidImageError,
    image_tokens_for,
    jpeg_base64,
    model_input_size,
    resize_for_profile,
    validate_rgb,
)
from spatial_vlm_ros.engines.parsing import parse_for_request
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile
from spatial_vlm_ros.engines.prompts import (
    hf_chat_messages,
    presence_penalty_for,
    qwen_chat_prompt,
    sampling_for,
    user_text,
    uses_grounding_schema,
)
from spatial_vlm_ros.engines.schema import grounding_schema_json

LOGGER = logging.getLogger(__name__)

INSTALL_HINT = (
    "in-process SGLang needs the 'sglang' package on a CUDA machine: "
    "pip install 'spatial_vlm_ros[sglang]' (or use engine 'openai' against an SGLang server)"
)
FINISH_LENGTH_FLAG = FLAG_MAX_NEW_TOKENS
IMAGE_TRANSPORTS = ('jpeg_base64', 'pil')

ChatTemplate = Callable[[list[dict[str, Any]]], str]
EngineFactory = Callable[..., Any]


def _import_sglang_engine() -> EngineFactory:
    try:
        import sglang  # optional, CUDA-only dependency
    except ImportError as error:
        raise EngineError(f'{INSTALL_HINT} (import failed: {error})') from None
    return sglang.Engine


def build_sglang_request(
    request: EngineRequest,
    profile: ModelProfile,
    chat_template: ChatTemplate | None = None,
    *,
    image_transport: str = 'jpeg_base64',
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> dict[str, Any]:
    """``{'prompt', 'image_data', 'sampling_params'}`` for ``Engine.async_generate`` (pure).

    The prompt comes from ``chat_template`` (the processor's ``apply_chat_template``) when given,
    else from the hand-rendered Qwen3-VL template; either way it contains one
    ``<|vision_start|><|image_pad|><|vision_end|>`` per image. Images are resized to the profile's
    budget and sent as base64 JPEG (what the SGLang server receives too) or as PIL images.
    ``json_schema`` is a JSON *string*, as SGLang's sampling params require.
    """
    if image_transport not in IMAGE_TRANSPORTS:
        raise EngineError(
            f'image_transport must be one of {IMAGE_TRANSPORTS}, not {image_transport!r}'
        )
    if not request.images:
        raise InvalidImageError('the request has no image')
    resized = [resize_for_profile(validate_rgb(image), profile) for image in request.images]
    if image_transport == 'pil':
        from PIL import Image  # only this transport needs PIL

        images: list[Any] = [Image.fromarray(image) for image in resized]
    else:
        images = [jpeg_base64(image, jpeg_quality) for image in resized]
    if chat_template is not None:
        prompt = chat_template(hf_chat_messages(request, profile, images))
    else:
        prompt = qwen_chat_prompt(user_text(request, profile), len(images), profile.system_prompt)
    sampling = sampling_for(request, profile)
    params: dict[str, Any] = {
        'max_new_tokens': sampling.max_new_tokens,
        'temperature': sampling.temperature,
        'top_p': sampling.top_p,
        'top_k': sampling.top_k,
        'repetition_penalty': sampling.repetition_penalty,
    }
    presence_penalty = presence_penalty_for(request, profile)
    if presence_penalty:
        params['presence_penalty'] = presence_penalty
    if request.output_constraint is not None:
        constraint = request.output_constraint
        if constraint.structural_tag:
            params['structural_tag'] = constraint.structural_tag
        else:
            params['json_schema'] = constraint.json_schema
    elif uses_grounding_schema(request, profile):
        params['json_schema'] = grounding_schema_json()
    # One image: the bare item; several: a list for this single prompt.
    image_data: Any = images[0] if len(images) == 1 else images
    return {'prompt': prompt, 'image_data': image_data, 'sampling_params': params}


def _processor_chat_template(model_path: str) -> ChatTemplate | None:
    """The checkpoint's own chat template via transformers, or None when unavailable."""
    try:
        from transformers import AutoProcessor  # optional dependency

        processor = AutoProcessor.from_pretrained(model_path)
    except Exception as error:  # any failure falls back to the built-in template
        LOGGER.warning('no processor chat template for %s (%s); using built-in', model_path, error)
        return None

    def render(messages: list[dict[str, Any]]) -> str:
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


def _read_output(output: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if not isinstance(output, dict) or not isinstance(output.get('text'), str):
        raise EngineError(f'unexpected sglang output: {type(output).__name__} without "text"')
    meta = output.get('meta_info')
    return output['text'], meta if isinstance(meta, dict) else {}


def _finish_type(meta: dict[str, Any]) -> str:
    finish = meta.get('finish_reason')
    if isinstance(finish, dict):
        return str(finish.get('type', ''))
    return str(finish or '')


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class SGLangEngine(VlmEngine):
    """``sglang.Engine`` driven on a dedicated thread that owns its event loop."""

    name = 'sglang'

    def __init__(
        self,
        profile: ModelProfile | str | None = None,
        model_path: str | None = None,
        *,
        engine_factory: EngineFactory | None = None,
        chat_template: ChatTemplate | None = None,
        use_processor_template: bool = True,
        image_transport: str = 'jpeg_base64',
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        timeout_s: float = 60.0,
        startup_timeout_s: float = 1200.0,
        shutdown_timeout_s: float = 120.0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if image_transport not in IMAGE_TRANSPORTS:
            raise EngineError(f'image_transport must be one of {IMAGE_TRANSPORTS}')
        if timeout_s <= 0 or startup_timeout_s <= 0:
            raise EngineError('timeouts must be positive')
        self.profile = resolve_profile(profile)
        if model_path:
            self.profile = self.profile.with_model_path(model_path)
        if not self.profile.hf_id:
            raise EngineError('no model: pass model_path= or a profile with an hf_id')
        # Fail at construction, not at the first frame, when sglang is missing.
        self._factory = engine_factory if engine_factory is not None else _import_sglang_engine()
        self.engine_kwargs = self.profile.sglang_kwargs(**(engine_kwargs or {}))
        self._chat_template = chat_template
        self._use_processor_template = use_processor_template and chat_template is None
        self.image_transport = image_transport
        self.jpeg_quality = jpeg_quality
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self._thread: threading.Thread | None = None
        self._engine: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        return f'SGLangEngine(model={self.profile.hf_id!r}, profile={self.profile.name!r})'

    # -- engine thread ------------------------------------------------------------------------

    def _run_engine_thread(self) -> None:
        own_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(own_loop)
        try:
            engine = self._factory(**self.engine_kwargs)
        except BaseException as error:  # reported to start() in the caller
            self._startup_error = error
            own_loop.close()
            self._ready.set()
            return
        loop = getattr(engine, 'loop', None)
        if not isinstance(loop, asyncio.AbstractEventLoop) or loop.is_closed():
            loop = own_loop
        if loop is not own_loop:
            asyncio.set_event_loop(loop)
            own_loop.close()
        self._engine, self._loop = engine, loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                engine.shutdown()
            except Exception as error:  # shutting down; log and go on
                LOGGER.warning('sglang Engine.shutdown() failed: %s', error)
            loop.close()

    def _start_blocking(self) -> None:
        with self._start_lock:
            if self._thread is None:
                if self._use_processor_template:
                    self._chat_template = _processor_chat_template(self.profile.hf_id)
                    self._use_processor_template = False
                self._thread = threading.Thread(
                    target=self._run_engine_thread, name='sglang-engine-loop', daemon=True
                )
                self._thread.start()
        if not self._ready.wait(self.startup_timeout_s):
            raise EngineTimeout(f'sglang Engine did not start within {self.startup_timeout_s}s')
        if self._startup_error is not None:
            error = self._startup_error
            raise EngineError(
                f'sglang Engine failed to start for {self.profile.hf_id}: '
                f'{type(error).__name__}: {error}'
            ) from error

    async def start(self) -> None:
        await asyncio.to_thread(self._start_blocking)

    async def health(self) -> bool:
        loop = self._loop
        return (
            self._thread is not None
            and self._thread.is_alive()
            and loop is not None
            and loop.is_running()
            and self._startup_error is None
        )

    async def shutdown(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, self.shutdown_timeout_s)
        if thread.is_alive():
            LOGGER.warning('sglang engine thread still alive after %ss', self.shutdown_timeout_s)
        self._thread = None
        self._loop = None
        self._engine = None
        self._ready.clear()

    # -- requests -----------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> EngineResponse:
        if self._thread is None or self._loop is None:
            await self.start()
        loop, engine = self._loop, self._engine
        if loop is None or engine is None or not loop.is_running():
            raise EngineError('sglang engine is not running (shut down, or its thread died)')
        started = time.monotonic()
        timeout_s = request.timeout_s if request.timeout_s else self.timeout_s
        payload = await asyncio.to_thread(
            build_sglang_request,
            request,
            self.profile,
            self._chat_template,
            image_transport=self.image_transport,
            jpeg_quality=self.jpeg_quality,
        )
        prepared = time.monotonic()
        remaining = max(started + timeout_s - prepared, 0.0)
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            engine.async_generate(**payload), loop
        )
        try:
            output = await asyncio.wait_for(asyncio.wrap_future(future), timeout=remaining)
        except asyncio.TimeoutError:
            future.cancel()  # cancels the task in the engine loop; SGLang aborts the request
            raise EngineTimeout(f'sglang generation exceeded {timeout_s:.1f}s') from None
        except asyncio.CancelledError:
            future.cancel()
            raise
        except EngineError:
            raise
        except Exception as error:
            raise EngineError(
                f'sglang generation failed: {type(error).__name__}: {error}'
            ) from error
        finished = time.monotonic()
        text, meta = _read_output(output)
        shapes = [(int(image.shape[1]), int(image.shape[0])) for image in request.images]
        input_size = model_input_size(*shapes[0], self.profile)
        parsed = parse_for_request(text, request, self.profile, input_size)
        image_tokens = sum(
            image_tokens_for(width, height, self.profile) for width, height in shapes
        )
        return EngineResponse(
            raw_text=text,
            parsed=parsed,
            tokens=TokenCounts(
                prompt_tokens=_count(meta, 'prompt_tokens'),
                image_tokens=image_tokens,
                completion_tokens=_count(meta, 'completion_tokens'),
            ),
            timings=Timings(
                preprocess_s=prepared - started,
                inference_s=finished - prepared,
                total_s=finished - started,
            ),
            engine=self.name,
            model_id=self.profile.hf_id,
            flags=(FINISH_LENGTH_FLAG,) if _finish_type(meta) == 'length' else (),
        )
