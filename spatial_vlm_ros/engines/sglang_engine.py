# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
In-process SGLang (``sglang.Engine``) on its own event-loop thread.

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
* signal handlers are only installed from the main thread (SGLang logs that it skips them here);
* it reconfigures the root logger (``logging.basicConfig(force=True)`` at its ``log_level``): the
  engine puts the host's handlers and level back right after the build;
* the real ``import sglang.srt.entrypoints.engine`` sets uvloop as the asyncio policy for the
  whole process, so ``Engine`` builds a loop of its own instead of the thread's (handled below).

Images go as JPEG bytes (or ``data:`` URLs, or PIL images). Never as bare base64: every JPEG's
base64 starts with ``/9j/`` and SGLang opens a string that starts with ``/`` as a file path.

Offline: when the model hub cannot be reached (``engines/hub.py``) the engine sets
``HF_HUB_OFFLINE=1`` for SGLang's processes and reads the chat template from local files only.

sglang is imported lazily: it needs a CUDA machine (``pip install 'spatial_vlm_ros[sglang]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from typing import Any

from spatial_vlm_ros.engines.base import (
    Completion,
    EngineError,
    EngineHealth,
    EngineRequest,
    EngineTimeout,
    EngineUnavailableError,
    FinishReason,
    Timings,
    TokenCounts,
    VlmEngine,
    token_count,
)
from spatial_vlm_ros.engines.hub import hub_access, is_local_model, offline_hint
from spatial_vlm_ros.engines.imaging import (
    DEFAULT_JPEG_QUALITY,
    InvalidImageError,
    encode_jpeg,
    image_tokens_for,
    jpeg_data_url,
    model_input_size,
    resize_for_profile,
    validate_rgb,
)
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
# How images reach sglang's loader: JPEG bytes (also takes its GPU JPEG decoder), a data URL
# (what its HTTP server receives) or PIL images (no JPEG round trip).
IMAGE_TRANSPORTS = ('jpeg_bytes', 'jpeg_data_url', 'pil')
DEFAULT_IMAGE_TRANSPORT = 'jpeg_bytes'
_REFUSED_TRANSPORTS = {
    'jpeg_base64': (
        "bare base64 does not work with SGLang: every JPEG's base64 starts with '/9j/', and "
        "sglang's image loader opens any string starting with '/' as a file path "
        "(OSError: File name too long; sgl-project/sglang#7199); use 'jpeg_bytes' or "
        "'jpeg_data_url'"
    ),
}

ChatTemplate = Callable[[list[dict[str, Any]]], str]
EngineFactory = Callable[..., Any]


def _import_sglang_engine() -> EngineFactory:
    """``sglang.Engine``, behind the offline check of :func:`prepare_model_source`."""
    try:
        import sglang  # optional, CUDA-only dependency
    except ImportError as error:
        raise EngineError(f'{INSTALL_HINT} (import failed: {error})') from None

    def build(**kwargs: Any) -> Any:
        prepare_model_source(str(kwargs.get('model_path', '')))
        return sglang.Engine(**kwargs)

    return build


def prepare_model_source(model: str) -> None:
    """
    Keep SGLang off an unreachable model hub; fail at once when the model is nowhere local.

    Without a network, SGLang's own download path would retry the hub for minutes before it
    falls back to the cache. With the hub unreachable, ``HF_HUB_OFFLINE=1`` is set for SGLang's
    processes (they are spawned, so they read it at import) and a model missing from the cache
    is an :class:`EngineUnavailableError` that says what to do.
    """
    if is_local_model(model):
        return
    access = hub_access(model)
    if access.online:
        return
    if not _in_hub_cache(model):
        raise EngineUnavailableError(
            EngineHealth.error(
                f'cannot load {model!r} offline', offline_hint(model, access), model=model
            )
        )
    os.environ['HF_HUB_OFFLINE'] = '1'
    LOGGER.warning(
        'model hub unreachable (%s): SGLang loads %s from the local cache', access.reason, model
    )


def check_image_transport(image_transport: str) -> str:
    """``image_transport`` if SGLang can load it, else an :class:`EngineError` saying why not."""
    if image_transport in _REFUSED_TRANSPORTS:
        raise EngineError(
            f'image_transport {image_transport!r}: {_REFUSED_TRANSPORTS[image_transport]}'
        )
    if image_transport not in IMAGE_TRANSPORTS:
        raise EngineError(
            f'image_transport must be one of {IMAGE_TRANSPORTS}, not {image_transport!r}'
        )
    return image_transport


def build_sglang_request(
    request: EngineRequest,
    profile: ModelProfile,
    chat_template: ChatTemplate | None = None,
    *,
    image_transport: str = DEFAULT_IMAGE_TRANSPORT,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
) -> dict[str, Any]:
    """
    ``{'prompt', 'image_data', 'sampling_params'}`` for ``Engine.async_generate`` (pure).

    The prompt comes from ``chat_template`` (the processor's ``apply_chat_template``) when given,
    else from the hand-rendered Qwen3-VL template; either way it contains one
    ``<|vision_start|><|image_pad|><|vision_end|>`` per image. Images are resized to the profile's
    budget and sent as JPEG bytes, JPEG data URLs (what the SGLang server receives) or PIL
    images. ``json_schema`` is a JSON *string*, as SGLang's sampling params require, and the
    seed goes as ``sampling_seed`` (SGLang's name; its OpenAI layer maps ``seed`` onto it).
    """
    check_image_transport(image_transport)
    if not request.images:
        raise InvalidImageError('the request has no image')
    resized = [resize_for_profile(validate_rgb(image), profile) for image in request.images]
    images: list[Any]
    if image_transport == 'pil':
        from PIL import Image  # only this transport needs PIL

        images = [Image.fromarray(image) for image in resized]
    elif image_transport == 'jpeg_bytes':
        images = [encode_jpeg(image, jpeg_quality) for image in resized]
    else:
        images = [jpeg_data_url(image, jpeg_quality) for image in resized]
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
    if sampling.seed is not None:
        params['sampling_seed'] = sampling.seed
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
    """
    Return the checkpoint's own chat template via transformers, or None when unavailable.

    Local files only: it runs after SGLang loaded the checkpoint, which put it in the Hugging
    Face cache, and a hub lookup without a network retries for minutes.
    """
    try:
        from transformers import AutoProcessor  # optional dependency

        processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError) as error:
        # What transformers raises for a checkpoint it cannot read or a model type it does not
        # know (OSError: files missing; ValueError/KeyError: unrecognised configuration). Any
        # other exception is a bug and propagates.
        LOGGER.warning(
            'no local processor chat template for %s (%s: %s); using the built-in Qwen3-VL one',
            model_path,
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else '',
        )
        return None

    def render(messages: list[dict[str, Any]]) -> str:
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


@contextlib.contextmanager
def host_logging_kept() -> Iterator[None]:
    """
    Put the root logger's handlers and level back after the block.

    ``sglang.Engine`` runs ``logging.basicConfig(level=<log_level>, force=True)`` in the host
    process: it removes the host's root handlers and sets the root level for every logger.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def _read_output(output: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(output, list) and len(output) == 1:
        output = output[0]
    if not isinstance(output, dict) or not isinstance(output.get('text'), str):
        raise EngineError(f'unexpected sglang output: {type(output).__name__} without "text"')
    meta = output.get('meta_info')
    return output['text'], meta if isinstance(meta, dict) else {}


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
        image_transport: str = DEFAULT_IMAGE_TRANSPORT,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        timeout_s: float = 60.0,
        startup_timeout_s: float = 1200.0,
        shutdown_timeout_s: float = 120.0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_image_transport(image_transport)
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
            with host_logging_kept():
                engine = self._factory(**self.engine_kwargs)
        except BaseException as error:  # noqa: BLE001 - start() re-raises it in the caller
            self._startup_error = error
            own_loop.close()
            self._ready.set()
            return
        # The real sglang import installs uvloop's policy, which does not know own_loop, so the
        # Engine makes (and keeps) a loop of its own: drive whichever loop the Engine holds.
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
            except Exception as error:  # shutting down: log it and go on
                LOGGER.warning('sglang Engine.shutdown() failed: %s', error, exc_info=True)
            loop.close()

    def _start_blocking(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run_engine_thread, name='sglang-engine-loop', daemon=True
                )
                self._thread.start()
        if not self._ready.wait(self.startup_timeout_s):
            raise EngineTimeout(f'sglang Engine did not start within {self.startup_timeout_s}s')
        if self._startup_error is not None:
            error = self._startup_error
            raise EngineUnavailableError(self._startup_health(error)) from error
        with self._start_lock:
            if self._use_processor_template:
                # After the build: SGLang has put the checkpoint in the local cache by now.
                self._chat_template = _processor_chat_template(self.profile.hf_id)
                self._use_processor_template = False

    def _startup_health(self, error: BaseException) -> EngineHealth:
        return EngineHealth.error(
            f'sglang Engine failed to start for {self.profile.hf_id}: '
            f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}',
            'read the error: GPU memory (lower mem_fraction_static), CUDA, or the model path',
            model=self.profile.hf_id,
        )

    async def start(self) -> None:
        await asyncio.to_thread(self._start_blocking)

    async def health(self) -> EngineHealth:
        values = {'model': self.profile.hf_id}
        if self._startup_error is not None:
            return self._startup_health(self._startup_error)
        if self._thread is None:
            return EngineHealth.error(
                'in-process SGLang engine not started', 'configure the node (start())', **values
            )
        loop = self._loop
        if not self._thread.is_alive() or loop is None or not loop.is_running():
            return EngineHealth.error(
                'in-process SGLang engine thread stopped',
                'reconfigure the node; read the log for the cause',
                **values,
            )
        return EngineHealth.ok('in-process SGLang engine running', **values)

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

    async def complete(self, request: EngineRequest) -> Completion:
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
        return Completion(
            text=text,
            finish_reason=FinishReason.from_backend(meta.get('finish_reason')),
            tokens=TokenCounts(
                prompt_tokens=token_count(meta.get('prompt_tokens')),
                image_tokens=sum(
                    image_tokens_for(width, height, self.profile) for width, height in shapes
                ),
                completion_tokens=token_count(meta.get('completion_tokens')),
            ),
            timings=Timings(
                preprocess_s=prepared - started,
                inference_s=finished - prepared,
                total_s=finished - started,
            ),
            model_id=self.profile.hf_id,
            input_size=model_input_size(*shapes[0], self.profile),
        )


def _in_hub_cache(model_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``model_id``'s config.json."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(model_id, 'config.json'), str)
