# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
In-process Qwen3-VL on Hugging Face transformers, with request batching and xgrammar.

The seed models' own loading path (``AutoModelForImageTextToText`` + ``AutoProcessor``) on CUDA
when there is one, else the CPU. Concurrent :meth:`TransformersEngine.generate` calls are queued;
one worker thread takes up to ``max_batch_size`` requests that arrive within ``batch_window_s`` of
the first and runs them as one left-padded batch through ``model.generate``, then resolves each
caller's future on its event loop. The model only ever runs in that thread, so the caller's loop
is never blocked.

Grounding requests are decoded greedily under the grounding JSON schema (``engines.schema``) with
xgrammar's transformers logits processor; the compiled grammar is built once at start. Question
requests use the profile's sampling. Only requests with the same decoding settings share a batch,
because ``generate`` takes one setting (and one grammar processor) per call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import queue
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.engines.base import (
    Completion,
    EngineError,
    EngineHealth,
    EngineRequest,
    EngineTimeout,
    EngineUnavailableError,
    FinishReason,
    OutputConstraint,
    SamplingParams,
    TaskKind,
    Timings,
    TokenCounts,
    VlmEngine,
)
from spatial_vlm_ros.engines.hub import hub_access, offline_hint
from spatial_vlm_ros.engines.imaging import InvalidImageError, resize_for_profile, validate_rgb
from spatial_vlm_ros.engines.profiles import ModelProfile, resolve_profile
from spatial_vlm_ros.engines.prompts import (
    PromptError,
    hf_chat_messages,
    presence_penalty_for,
    sampling_for,
    uses_grounding_schema,
)
from spatial_vlm_ros.engines.schema import (
    GROUNDING_LABEL_MAX_LENGTH,
    GROUNDING_MAX_ITEMS,
    grounding_schema,
)

LOG = logging.getLogger(__name__)

MAX_IMAGES_PER_REQUEST = 8
# Grounded answers carry a grammar per scene (its ids); keep the last few compiled.
_MAX_CACHED_CONSTRAINTS = 32


class InvalidRequestError(EngineError, ValueError):
    """The request cannot be run (no image, empty question, unknown task)."""


@dataclass(frozen=True)
class EngineStats:
    """Counters of the batching worker (a snapshot)."""

    requests: int = 0  # requests that reached the model
    batches: int = 0  # model.generate calls
    largest_batch: int = 0
    failed_batches: int = 0
    cancelled: int = 0  # timed out or cancelled before their batch started


@dataclass(frozen=True)
class _BatchKey:
    constrained: bool
    sampling: SamplingParams
    presence_penalty: float
    output_constraint: OutputConstraint | None = None  # a request's own grammar (questions)


@dataclass
class _Pending:
    """One queued request, owned by the worker once enqueued."""

    text: str
    images: list[npt.NDArray[np.uint8]]
    key: _BatchKey
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[_Outcome]
    enqueued_at: float
    cancelled: bool = False


@dataclass(frozen=True)
class _Outcome:
    text: str
    tokens: TokenCounts
    queue_s: float
    preprocess_s: float  # this batch's processor call (tokenize, patchify)
    inference_s: float
    batch_size: int
    hit_max_new_tokens: bool


@dataclass
class _Counters:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed_batches: int = 0
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_STOP = object()


def _resolve_device(device: str) -> str:
    import torch

    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    return device


def _resolve_dtype(dtype: str) -> Any:
    import torch

    if dtype == 'auto':
        return 'auto'  # the checkpoint's own dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise EngineError(f'unknown torch dtype {dtype!r}')
    return resolved


class TransformersEngine(VlmEngine):
    """
    Qwen3-VL through transformers ``generate``, batched across concurrent callers.

    ``profile`` (a :class:`ModelProfile`, a profile name or a checkpoint path) gives the prompts,
    sampling and pixel budget; ``model_path`` overrides its checkpoint. ``device``: ``'auto'``
    (CUDA when present, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:1'``... ``dtype``: ``'auto'``
    (the checkpoint's) or a torch dtype name. ``grounding_max_items`` and
    ``grounding_label_max_length`` bound the grounding schema (defaults: the other engines').
    """

    name = 'transformers'

    def __init__(
        self,
        profile: ModelProfile | str | None = None,
        model_path: str | Path | None = None,
        device: str = 'auto',
        dtype: str = 'auto',
        max_batch_size: int = 8,
        batch_window_s: float = 0.01,
        attn_implementation: str | None = None,
        grounding_max_items: int = GROUNDING_MAX_ITEMS,
        grounding_label_max_length: int = GROUNDING_LABEL_MAX_LENGTH,
    ) -> None:
        if max_batch_size < 1:
            raise EngineError(f'max_batch_size must be >= 1, got {max_batch_size}')
        if batch_window_s < 0:
            raise EngineError(f'batch_window_s must be >= 0, got {batch_window_s}')
        self.profile = resolve_profile(profile)
        path = str(model_path) if model_path is not None else self.profile.hf_id
        if not path:
            raise EngineError(
                f'profile {self.profile.name!r} names no checkpoint; pass model_path'
            )
        self._model_path = path
        self._device_request = device
        self._dtype_request = dtype
        self._max_batch_size = max_batch_size
        self._batch_window_s = batch_window_s
        self._attn_implementation = attn_implementation
        try:
            self._schema = grounding_schema(grounding_max_items, grounding_label_max_length)
        except ValueError as error:
            raise EngineError(str(error)) from error
        self._model: Any = None
        self._processor: Any = None
        self._grammar: Any = None
        self._grammar_compiler: Any = None
        self._constraint_grammars: dict[OutputConstraint, Any] = {}
        self._device = ''
        self._eos_ids: frozenset[int] = frozenset()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._backlog: deque[_Pending] = deque()
        self._worker: threading.Thread | None = None
        self._counters = _Counters()
        self._start_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------ lifecycle

    @property
    def grounding_schema(self) -> dict[str, Any]:
        """Return the JSON schema grounding output is constrained to (a copy)."""
        return json.loads(json.dumps(self._schema))

    @property
    def device(self) -> str:
        """Return the device the model runs on ('' before :meth:`start`)."""
        return self._device

    @property
    def stats(self) -> EngineStats:
        counters = self._counters
        with counters.lock:
            return EngineStats(
                requests=counters.requests,
                batches=counters.batches,
                largest_batch=counters.largest_batch,
                failed_batches=counters.failed_batches,
                cancelled=counters.cancelled,
            )

    async def start(self) -> None:
        async with self._start_lock:
            if self._worker is not None and self._worker.is_alive():
                return
            await asyncio.to_thread(self._load)
            self._worker = threading.Thread(
                target=self._run_worker, name='transformers-engine', daemon=True
            )
            self._worker.start()

    async def health(self) -> EngineHealth:
        values = {'model': self._model_path, 'device': self._device or 'not loaded'}
        if self._model is None:
            return EngineHealth.error(
                'transformers engine: no model loaded', 'configure the node (start())', **values
            )
        if self._worker is None or not self._worker.is_alive():
            return EngineHealth.error(
                'transformers engine: the batching worker stopped',
                'reconfigure the node; read the log for the cause',
                **values,
            )
        return EngineHealth.ok(f'transformers engine running on {self._device}', **values)

    async def shutdown(self) -> None:
        worker = self._worker
        if worker is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(worker.join)
        self._worker = None
        self._fail_waiting(EngineError('the transformers engine was shut down'))
        self._model = None
        self._processor = None
        self._grammar = None
        self._grammar_compiler = None
        self._constraint_grammars.clear()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            LOG.debug('torch.cuda.empty_cache failed', exc_info=True)

    def _load(self) -> None:
        # Decided before any lookup: without a network, a hub lookup retries for minutes.
        access = hub_access(self._model_path)
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor
            import xgrammar

            device = _resolve_device(self._device_request)
            kwargs: dict[str, Any] = {'dtype': _resolve_dtype(self._dtype_request)}
            kwargs.update(access.pretrained_kwargs())
            if self._attn_implementation:
                kwargs['attn_implementation'] = self._attn_implementation
            if device != 'cpu':
                kwargs['device_map'] = device
            processor = AutoProcessor.from_pretrained(
                self._model_path, **access.pretrained_kwargs()
            )
            # Any: transformers' decorated ``to`` confuses type checkers.
            model: Any = AutoModelForImageTextToText.from_pretrained(self._model_path, **kwargs)
            if device == 'cpu':
                model = model.to(device)
            if kwargs['dtype'] != 'auto' and not getattr(model, 'is_quantized', False):
                # A dequantized FP8 checkpoint comes back in mixed dtypes; one cast aligns them.
                model = model.to(kwargs['dtype'])
            model.eval()
            tokenizer = processor.tokenizer
            tokenizer.padding_side = 'left'  # generate appends on the right
            vocab_size = model.config.get_text_config().vocab_size
            tokenizer_info = xgrammar.TokenizerInfo.from_huggingface(
                tokenizer, vocab_size=vocab_size
            )
            # Compact JSON: with free whitespace, random or confused models can loop on spaces.
            compiler = xgrammar.GrammarCompiler(tokenizer_info)
            grammar = compiler.compile_json_schema(json.dumps(self._schema), any_whitespace=False)
            eos = model.generation_config.eos_token_id
            eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
            if tokenizer.eos_token_id is not None:
                eos_ids.add(tokenizer.eos_token_id)
        except EngineError:
            raise
        except OSError as error:
            if access.online:
                raise EngineError(
                    f'cannot load {self._model_path!r} with transformers: {error}'
                ) from error
            raise EngineUnavailableError(
                EngineHealth.error(
                    f'cannot load {self._model_path!r} from local files: '
                    f'{str(error).splitlines()[0]}',
                    offline_hint(self._model_path, access),
                    model=self._model_path,
                )
            ) from error
        except Exception as error:
            raise EngineError(
                f'cannot load {self._model_path!r} with transformers: {type(error).__name__}: '
                f'{error}'
            ) from error
        self._model = model
        self._processor = processor
        self._grammar = grammar
        self._grammar_compiler = compiler
        self._device = device
        self._eos_ids = frozenset(int(token) for token in eos_ids)

    # ------------------------------------------------------------------------------ requests

    async def complete(self, request: EngineRequest) -> Completion:
        started = time.monotonic()
        if self._worker is None or not self._worker.is_alive() or self._processor is None:
            raise EngineError('the transformers engine is not started; await start() first')
        loop = asyncio.get_running_loop()
        prepared_at = time.monotonic()
        text, images, key, input_size = await asyncio.to_thread(self._prepare, request)
        preprocess_s = time.monotonic() - prepared_at
        future: asyncio.Future[_Outcome] = loop.create_future()
        pending = _Pending(text, images, key, loop, future, enqueued_at=time.monotonic())
        self._queue.put(pending)
        try:
            if request.timeout_s is not None:
                outcome = await asyncio.wait_for(asyncio.shield(future), request.timeout_s)
            else:
                outcome = await future
        except asyncio.TimeoutError:
            pending.cancelled = True
            raise EngineTimeout(
                f'transformers engine request exceeded {request.timeout_s} s'
            ) from None
        except asyncio.CancelledError:
            pending.cancelled = True
            raise
        return Completion(
            text=outcome.text,
            finish_reason=FinishReason.LENGTH if outcome.hit_max_new_tokens else FinishReason.STOP,
            tokens=outcome.tokens,
            timings=Timings(
                preprocess_s=preprocess_s + outcome.preprocess_s,
                queue_s=outcome.queue_s,
                inference_s=outcome.inference_s,
                total_s=time.monotonic() - started,
            ),
            model_id=self._model_path,
            input_size=input_size,
        )

    def _prepare(
        self, request: EngineRequest
    ) -> tuple[str, list[npt.NDArray[np.uint8]], _BatchKey, tuple[int, int]]:
        """Validate, resize to the profile's budget and render the chat prompt (off the loop)."""
        if not isinstance(request, EngineRequest):
            raise InvalidRequestError(f'expected an EngineRequest, got {type(request).__name__}')
        if request.task not in (TaskKind.GROUND, TaskKind.QUESTION):
            raise InvalidRequestError(f'unsupported task {request.task!r}')
        if not request.images:
            raise InvalidRequestError('the request has no image')
        if len(request.images) > MAX_IMAGES_PER_REQUEST:
            raise InvalidRequestError(
                f'{len(request.images)} images in one request; at most {MAX_IMAGES_PER_REQUEST}'
            )
        try:
            images = [
                resize_for_profile(validate_rgb(image), self.profile) for image in request.images
            ]
            messages = hf_chat_messages(request, self.profile, images)
        except InvalidImageError:
            raise
        except PromptError as error:
            raise InvalidRequestError(str(error)) from error
        try:
            text = self._processor.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as error:
            raise EngineError(f'chat template failed: {type(error).__name__}: {error}') from error
        key = _BatchKey(
            constrained=uses_grounding_schema(request, self.profile),
            sampling=sampling_for(request, self.profile),
            presence_penalty=float(presence_penalty_for(request, self.profile)),
            output_constraint=request.output_constraint,
        )
        height, width = images[0].shape[:2]
        return text, images, key, (width, height)

    # ------------------------------------------------------------------------------ worker

    def _run_worker(self) -> None:
        while True:
            first = self._backlog.popleft() if self._backlog else self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            try:
                batch, stop = self._collect(first)
                live = [item for item in batch if not item.cancelled]
                with self._counters.lock:
                    self._counters.cancelled += len(batch) - len(live)
                if live:
                    self._run_batch(live)
            except Exception as error:
                LOG.exception('transformers engine worker error')
                failure = EngineError(
                    f'transformers engine worker: {type(error).__name__}: {error}'
                )
                for item in batch:
                    _resolve(item, error=failure)
            if stop:
                return

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` plus same-key requests from the backlog and the queue within the window."""
        batch = [first]
        kept: deque[_Pending] = deque()
        while self._backlog and len(batch) < self._max_batch_size:
            item = self._backlog.popleft()
            (batch if item.key == first.key else kept).append(item)
        kept.extend(self._backlog)
        self._backlog = kept
        deadline = time.monotonic() + self._batch_window_s
        stop = False
        while len(batch) < self._max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            if item.key == first.key:
                batch.append(item)
            else:
                self._backlog.append(item)
        return batch, stop

    def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            outcomes = self._generate_batch(batch, started)
        except Exception as error:
            LOG.exception('transformers batch of %d failed', len(batch))
            with self._counters.lock:
                self._counters.failed_batches += 1
            failure = EngineError(f'transformers generate failed: {type(error).__name__}: {error}')
            for item in batch:
                _resolve(item, error=failure)
            return
        for item, outcome in zip(batch, outcomes, strict=True):
            _resolve(item, result=outcome)

    def _generate_batch(self, batch: list[_Pending], started: float) -> list[_Outcome]:
        import torch
        from xgrammar.contrib.hf import LogitsProcessor as GrammarLogitsProcessor

        processor = self._processor
        model = self._model
        key = batch[0].key
        sampling = key.sampling
        inputs = processor(
            text=[item.text for item in batch],
            images=[image for item in batch for image in item.images],
            return_tensors='pt',
            padding=True,
            do_resize=False,  # already resized to the profile's budget, multiples of 32
        )
        image_tokens = _image_tokens_per_request(
            inputs['image_grid_thw'], [len(item.images) for item in batch], _merge_size(processor)
        )
        prompt_tokens = inputs['attention_mask'].sum(dim=1).tolist()
        inputs = inputs.to(self._device)
        prompt_length = int(inputs['input_ids'].shape[1])
        processed = time.monotonic()

        logits_processors: list[Any] = []
        if key.presence_penalty:
            logits_processors.append(_PresencePenalty(prompt_length, key.presence_penalty))
        if key.output_constraint is not None:
            logits_processors.append(
                GrammarLogitsProcessor(self._compiled_constraint(key.output_constraint))
            )
        elif key.constrained:
            # One matcher per row; a processor instance serves exactly one generate call.
            logits_processors.append(GrammarLogitsProcessor(self._grammar))
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        with self._counters.lock:
            self._counters.batches += 1
            self._counters.requests += len(batch)
            self._counters.largest_batch = max(self._counters.largest_batch, len(batch))
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                **_generation_kwargs(sampling, self._tokenizer_pad_id()),
                logits_processor=logits_processors,
            )
        generated = output[:, prompt_length:].tolist()
        finished = time.monotonic()
        outcomes = []
        tokenizer = processor.tokenizer
        for row, item in enumerate(batch):
            ids = generated[row]
            end = next((i for i, token in enumerate(ids) if token in self._eos_ids), None)
            kept = ids if end is None else ids[:end]
            outcomes.append(
                _Outcome(
                    text=tokenizer.decode(kept, skip_special_tokens=True),
                    tokens=TokenCounts(
                        prompt_tokens=int(prompt_tokens[row]),
                        image_tokens=image_tokens[row],
                        completion_tokens=len(kept) + (0 if end is None else 1),
                    ),
                    queue_s=max(0.0, started - item.enqueued_at),
                    preprocess_s=processed - started,
                    inference_s=finished - processed,
                    batch_size=len(batch),
                    hit_max_new_tokens=end is None and len(ids) >= sampling.max_new_tokens,
                )
            )
        return outcomes

    def _compiled_constraint(self, constraint: OutputConstraint) -> Any:
        """
        Return the request's grammar, compiled once per distinct constraint.

        Worker thread only.
        """
        compiled = self._constraint_grammars.get(constraint)
        if compiled is None:
            if constraint.structural_tag:
                compiled = self._grammar_compiler.compile_structural_tag(constraint.structural_tag)
            else:
                compiled = self._grammar_compiler.compile_json_schema(
                    constraint.json_schema, any_whitespace=False
                )
            if len(self._constraint_grammars) >= _MAX_CACHED_CONSTRAINTS:
                self._constraint_grammars.pop(next(iter(self._constraint_grammars)))
            self._constraint_grammars[constraint] = compiled
        return compiled

    def _tokenizer_pad_id(self) -> int | None:
        tokenizer = self._processor.tokenizer
        if tokenizer.pad_token_id is not None:
            return int(tokenizer.pad_token_id)
        return min(self._eos_ids) if self._eos_ids else None

    def _fail_waiting(self, error: EngineError) -> None:
        leftovers = list(self._backlog)
        self._backlog.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftovers.append(item)
        for item in leftovers:
            _resolve(item, error=error)


def _generation_kwargs(sampling: SamplingParams, pad_token_id: int | None) -> dict[str, Any]:
    """``generate`` settings that fully override the checkpoint's sampling defaults."""
    kwargs: dict[str, Any] = {
        'max_new_tokens': int(sampling.max_new_tokens),
        'repetition_penalty': float(sampling.repetition_penalty),
        'pad_token_id': pad_token_id,
    }
    if sampling.temperature <= 0.0:
        # Greedy ignores temperature/top_p/top_k, so generation_config.json's sampling values stay
        # untouched (setting them here only draws "flag ignored" warnings).
        kwargs['do_sample'] = False
    else:
        kwargs.update(
            do_sample=True,
            temperature=float(sampling.temperature),
            top_p=float(sampling.top_p),
            top_k=int(sampling.top_k) if sampling.top_k > 0 else 0,
        )
    return kwargs


def _merge_size(processor: Any) -> int:
    return int(getattr(processor.image_processor, 'merge_size', 2))


def _image_tokens_per_request(grid_thw: Any, counts: list[int], merge_size: int) -> list[int]:
    tokens_per_image = (grid_thw.prod(dim=1) // (merge_size * merge_size)).tolist()
    result = []
    index = 0
    for count in counts:
        result.append(int(sum(tokens_per_image[index : index + count])))
        index += count
    return result


def _resolve(
    item: _Pending, *, result: _Outcome | None = None, error: Exception | None = None
) -> None:
    def settle() -> None:
        if item.future.done():
            return
        if item.cancelled:
            item.future.cancel()  # nobody awaits it; a stored exception would be logged unread
        elif error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)  # type: ignore[arg-type]

    try:
        item.loop.call_soon_threadsafe(settle)
    except RuntimeError:
        LOG.debug('caller event loop closed before its result arrived')


class _PresencePenalty:
    """
    Subtract ``penalty`` from every token already generated (OpenAI ``presence_penalty``).

    transformers has repetition_penalty (multiplicative, prompt included) but no presence penalty;
    Qwen3-VL's card recommends 1.5 for VL questions.
    """

    def __init__(self, prompt_length: int, penalty: float) -> None:
        self._prompt_length = prompt_length
        self._penalty = penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids[:, self._prompt_length :]
        if generated.shape[1] == 0:
            return scores
        seen = scores.new_zeros(scores.shape, dtype=scores.dtype)
        seen.scatter_(1, generated, 1.0)
        return scores - self._penalty * seen
