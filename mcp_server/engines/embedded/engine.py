"""The embedded engine: llama.cpp or transformers, plus a grammar backend, in this process, with continuous batching.

Usage::

    engine = EmbeddedEngine()          # the bundled SmolLM2-135M-Instruct
    await engine.start()               # loads the model (about 2 s once cached)
    async for delta in engine.generate(request):
        ...
    await engine.aclose()

The model runs on one scheduler thread (:mod:`.scheduler`) through a runner
(:mod:`.runners`: llama.cpp for GGUF files on the CPU, torch otherwise); ``generate``
prepares the sequence (tokenizing and grammar compiling on worker threads, off the event
loop) and waits for its deltas. On the llama.cpp runner nothing imports torch (sampling is
numpy, :mod:`.sampling`; the default grammar backend is llguidance). The engine needs anyio's
asyncio backend (the thread hands results over through a :class:`.handoff.Outbox`: one
``loop.call_soon_threadsafe`` for what a step sends to one loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from mcp_server.catalog import ModelCard, default_entry, find_entry, load_catalog
from mcp_server.engines.base import GenerationDelta, GenerationRequest
from mcp_server.engines.embedded.decoding import check_catalog
from mcp_server.engines.embedded.decoding.backends import DEFAULT_GRAMMAR_BACKEND, GRAMMAR_BACKENDS, make_backend
from mcp_server.engines.embedded.decoding.toolcalls import (
    GrammarProvider as ToolGrammarProvider,
)
from mcp_server.engines.embedded.decoding.output import PROMPT_TAIL_TOKENS, OutputProcessor
from mcp_server.engines.embedded.decoding.toolcalls.support import check_tools_allowed
from mcp_server.engines.embedded.family import ServedFamily, keeps_special_tokens
from mcp_server.engines.embedded.handoff import Outbox
from mcp_server.engines.embedded.jumpforward import StepStats
from mcp_server.engines.embedded.model_check import check_model_path
from mcp_server.engines.embedded.model_facts import WorkerFacts
from mcp_server.engines.embedded.model_files import load_tokenizer
from mcp_server.engines.embedded.policy import Limits, cache_scope
from mcp_server.engines.embedded.progress import Progress
from mcp_server.engines.embedded.prompt import completion_budget, render_chat
from mcp_server.engines.embedded.runners import (  # fmt: skip
    ModelRunner, check_llamacpp_option, limit_malloc_arenas, resolve_runner, resolve_threads, return_freed_memory,
)
from mcp_server.engines.embedded.runners.llamacpp import DEFAULT_KV_CACHE_DTYPE, KV_CACHE_DTYPES, LlamaCppRunner
from mcp_server.engines.embedded.runners.llamacpp import DEFAULT_MAX_BATCH_SIZE as LLAMACPP_MAX_BATCH_SIZE
from mcp_server.engines.embedded.runners.repack import REPACK_MODES
from mcp_server.engines.embedded.sampling import new_generator
from mcp_server.engines.embedded.scheduler import Scheduler, Sequence
from mcp_server.engines.embedded.textstream import TextStream
from mcp_server.errors import EngineUnavailable, InvalidRequest, ServiceError

if TYPE_CHECKING:
    from mcp_server.settings import Settings

__all__ = ["EmbeddedEngine", "GrammarProvider"]

logger = logging.getLogger(__name__)

GrammarProvider = Callable[[GenerationRequest, Any], Any]
"""``(request, tokenizer) -> compiled grammar of the engine's grammar backend | None``; may raise InvalidRequest."""


class EmbeddedEngine(WorkerFacts):
    """An :class:`~mcp_server.engines.base.Engine` that runs a model in this process.

    Args:
        model_path: a GGUF file, a local Hugging Face model directory, or None for the
            bundled SmolLM2-135M-Instruct GGUF.
        served_model_name: the model id clients use, or several (the first is the main id,
            the others aliases, each listed and routable); defaults to
            ``HuggingFaceTB/SmolLM2-135M-Instruct`` for the bundled model, else the GGUF's
            ``general.name`` or the file's stem (:func:`.model_check.check_model_path`).
        dtype: weight dtype, ``auto`` (default: bf16 where the CPU has bf16 instructions,
            else fp32; see :func:`.model_files.resolve_dtype`), ``bfloat16``, ``float32`` or ``float16``.
        max_batch_size: most sequences decoded together; more wait for a free slot.
            None: 8 on the llama.cpp runner (:data:`.runners.llamacpp.DEFAULT_MAX_BATCH_SIZE`),
            16 on the torch runner.
        context_length: context window of each sequence in tokens; None: 2048 on the
            llama.cpp runner (:data:`.runners.llamacpp.DEFAULT_CONTEXT_LENGTH`, whose KV
            cache is allocated for every sequence up front), the model's
            ``max_position_embeddings`` on the torch runner.
        grammar_provider: builds a grammar for a request (see :data:`GrammarProvider`);
            called before the sequence joins the batch.
        cache_dir: where converted GGUF weights are kept (default
            :func:`.model_files.cache_root`, ``~/.cache/chatcap``).
        device: where the model runs (``cpu``, ``cuda``); sampling and grammars stay on the CPU.
        deterministic: torch runner: decode each sequence on its own, so that a greedy or
            seeded answer is identical whatever else runs at the same time (see
            :class:`.kv_batch.DecodeBatch`). The llama.cpp runner gives that guarantee
            always (per-sequence KV caches, :mod:`.runners.llamacpp`) and ignores the flag.
        runner: ``auto`` (llama.cpp for GGUF files on the CPU, else torch), ``llamacpp``
            or ``torch`` (:func:`.runners.resolve_runner`).
        threads: compute threads; None = :func:`.runners.default_threads` (:func:`.runners.resolve_threads`).
        prefix_cache: llama.cpp runner: reuse cached prompt prefixes (``--disable-prefix-cache`` turns it off).
        jump_forward: llama.cpp runner: feed grammar-forced tokens as drafts (:mod:`.scheduler`;
            ``--disable-jump-forward`` turns it off).
        kv_cache_dtype: llama.cpp runner: ``auto`` (:data:`.runners.llamacpp.DEFAULT_KV_CACHE_DTYPE`),
            ``q8_0`` or ``f16``.
        repack: llama.cpp runner: weight repacking for AMX, ``auto``, ``on`` or ``off``
            (:func:`.runners.repack.resolve_repack`).
        grammar_backend: ``llguidance`` (default) or ``xgrammar`` (:mod:`.decoding.backends`).
        chat_template: a Jinja file or a known template's name, replacing the model's own.
        tool_call_parser, reasoning_parser: the model's formats (family-table names, SGLang's);
            None: the catalog's, else detected from the chat template (:class:`.family.ServedFamily`).
        chunked_prefill_size, max_running_per_tenant: the scheduler's :class:`.policy.Limits`.

    Raises:
        ModelPathError: ``model_path`` or ``chat_template`` cannot be served
            (:func:`.model_check.check_model_path`: checked here, before anything loads).
        InvalidRequest: ``max_batch_size`` or ``threads`` below 1 (param ``max_running_requests``,
            ``threads``), bad limits (:meth:`.policy.Limits.resolve`), an unknown or impossible runner
            (param ``runner``), a KV cache type or repacking mode that is unknown or given to the
            torch runner (param ``kv_cache_dtype``, ``repack``), or an unknown grammar backend.

    Attributes:
        runner: the :class:`.runners.ModelRunner` (None before :meth:`start`).
        model: the transformers model on the torch runner, else None.
        tokenizer: its tokenizer (None before :meth:`start`).
        grammar_backend: the :class:`.decoding.backends.GrammarBackend` (None before :meth:`start`).
        grammar_provider: the grammar provider; may be set after construction, e.g. once
            :meth:`start` has built ``grammar_backend``.
    """

    def __init__(
        self,
        model_path: str | None = None,
        served_model_name: str | Sequence[str] | None = None,
        dtype: str = "auto",
        max_batch_size: int | None = None,
        context_length: int | None = None,
        grammar_provider: GrammarProvider | None = None,
        cache_dir: str | None = None,
        device: str = "cpu",
        deterministic: bool = False,
        runner: str = "auto",
        threads: int | None = None,
        prefix_cache: bool = True,
        jump_forward: bool = True,
        kv_cache_dtype: str = "auto",
        repack: str = "auto",
        grammar_backend: str = DEFAULT_GRAMMAR_BACKEND,
        chat_template: str | None = None,
        tool_call_parser: str | None = None,
        reasoning_parser: str | None = None,
        chunked_prefill_size: int | None = None,
        max_running_per_tenant: int | None = None,
    ):
        if max_batch_size is not None and max_batch_size < 1:
            raise InvalidRequest("max_running_requests must be at least 1.", param="max_running_requests")
        if threads is not None and threads < 1:
            raise InvalidRequest("threads must be at least 1.", param="threads")
        checked = check_model_path(model_path, chat_template)
        self._model_path, self._path, self._chat_template = model_path, checked.path, checked.chat_template
        self._dtype = dtype
        self._runner_name = resolve_runner(runner, model_path, device)
        self._max_batch_size = max_batch_size or (LLAMACPP_MAX_BATCH_SIZE if self._runner_name == "llamacpp" else 16)
        self._threads = resolve_threads(threads)
        self._context_length = context_length
        self.grammar_provider = grammar_provider
        self._cache_dir = cache_dir
        self._device = device
        self._deterministic = deterministic
        self._prefix_cache = prefix_cache
        self._jump_forward = jump_forward
        check_llamacpp_option(self._runner_name, "kv_cache_dtype", kv_cache_dtype, ("auto", *KV_CACHE_DTYPES))
        self._kv_cache_dtype = DEFAULT_KV_CACHE_DTYPE if kv_cache_dtype == "auto" else kv_cache_dtype
        self._repack = check_llamacpp_option(self._runner_name, "repack", repack, REPACK_MODES)
        if grammar_backend not in GRAMMAR_BACKENDS:
            raise InvalidRequest(f"Unknown grammar backend {grammar_backend!r}.", param="grammar_backend")
        self._grammar_backend_name = grammar_backend
        exact_resume = self._runner_name == "llamacpp" and self._kv_cache_dtype == "q8_0"  # see policy.Limits.preempt
        self._limits = Limits.resolve(chunked_prefill_size, max_running_per_tenant, self._max_batch_size, exact_resume)
        names = (served_model_name,) if isinstance(served_model_name, str) else tuple(dict.fromkeys(served_model_name or ()))
        self._ids = names or (checked.name,)
        check_catalog(load_catalog())
        entry = default_entry() if model_path is None else find_entry(model_path)
        self._family = ServedFamily(tool_call_parser, reasoning_parser, entry)
        self._card = ModelCard(
            id=self._ids[0],
            context_length=context_length or ModelCard.context_length,
            tool_call_format=self._family.tool_call_parser,  # settled in start(): flag, catalog, chat template
            reasoning_parser=self._family.reasoning_parser,
        )
        self._scheduler: Scheduler | None = None
        self._outbox = Outbox()
        self.runner: ModelRunner | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.grammar_backend: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, grammar_provider: GrammarProvider | None = None) -> EmbeddedEngine:
        """Build an engine from the service settings (``max_running_requests`` is the batch size)."""
        return cls(
            model_path=settings.model_path,
            served_model_name=settings.served_model_name,
            dtype=settings.dtype,
            max_batch_size=settings.max_running_requests,
            context_length=settings.context_length,
            grammar_provider=grammar_provider,
            cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
            device=settings.device,
            deterministic=settings.enable_deterministic_inference,
            runner=settings.runner,
            threads=settings.threads,
            prefix_cache=not settings.disable_prefix_cache,
            jump_forward=not settings.disable_jump_forward,
            kv_cache_dtype=settings.kv_cache_dtype,
            repack=settings.repack,
            grammar_backend=settings.grammar_backend,
            chat_template=settings.chat_template,
            tool_call_parser=settings.tool_call_parser,
            reasoning_parser=settings.reasoning_parser,
            chunked_prefill_size=settings.chunked_prefill_size,
            max_running_per_tenant=settings.max_running_requests_per_key,
        )

    @property
    def models(self) -> list[ModelCard]:
        """The served model, once per id (aliases); its ``context_length`` is the model's own once started."""
        return [replace(self._card, id=model_id) for model_id in self._ids]

    def describe(self) -> dict[str, str]:
        """The engine's settings for the start-up summary: runner, threads, context, KV cache, grammar backend."""
        kv_cache = self._kv_cache_dtype if self._runner_name == "llamacpp" else str(self._card.backend).split("-")[1]
        return {
            "runner": self._runner_name, "threads": str(self._threads),
            "context": f"{self.context_length} tokens x {self._max_batch_size} sequences",
            "KV cache": kv_cache, "grammar backend": self._grammar_backend_name,
        }  # fmt: skip

    @property
    def context_length(self) -> int:
        """The context window in tokens (prompt plus completion)."""
        return self._card.context_length

    @property
    def running(self) -> int:
        """Sequences waiting for a slot or being decoded."""
        return self._scheduler.running if self._scheduler else 0

    @property
    def step_stats(self) -> StepStats:
        """The scheduler's counts (decode steps, jump-forward drafts); zeros before :meth:`start`."""
        return self._scheduler.stats if self._scheduler else StepStats()

    async def start(self) -> None:
        """Load the model and start the scheduler thread (off the event loop); a second call does nothing.

        Raises:
            EngineUnavailable: the model cannot be found or loaded.
        """
        if self._scheduler is None:
            await anyio.to_thread.run_sync(self._start)

    def _start(self) -> None:
        limit_malloc_arenas()  # and return_freed_memory() once loaded: start-up garbage back to the kernel
        self.runner, self.tokenizer = self._load()
        if self._chat_template is not None:
            self.tokenizer.chat_template = self._chat_template
        self._card = self._family.settle(self._card, self.tokenizer)
        self.model = getattr(self.runner, "model", None)
        vocab_size = self.runner.vocab_size
        with Progress(f"Indexing the vocabulary ({vocab_size:,} tokens) for grammar-constrained decoding"):
            self.grammar_backend = backend = make_backend(
                self._grammar_backend_name, self.tokenizer, vocab_size, self._eos_ids(), self._threads)  # fmt: skip
        if self.grammar_provider is None:
            self.grammar_provider = ToolGrammarProvider(self.grammar_backend, self._family.tool_format)
        return_freed_memory()
        self._card = replace(self._card, context_length=self.runner.context_length, backend=self.runner.backend)
        self._scheduler = Scheduler(
            self.runner, self._eos_ids(), self._max_batch_size, backend.vocab, self._limits, self._jump_forward,
            self._outbox.flush,
        )
        self._scheduler.start()

    def _load(self) -> tuple[ModelRunner, Any]:
        """Build the runner and the Hugging Face tokenizer (blocking; run in a worker thread)."""
        if self._runner_name == "llamacpp":
            cache_dir = Path(self._cache_dir) if self._cache_dir else None
            try:  # first: the KV cache is briefly all resident (see runners.kv_pages), so the peak is lower
                runner = LlamaCppRunner(
                    self._path, self._max_batch_size, self._context_length, self._threads, self._prefix_cache,
                    self._kv_cache_dtype, self._repack, cache_dir,
                )
            except RuntimeError as exc:
                raise EngineUnavailable(str(exc)) from exc
            return runner, load_tokenizer(self._model_path, cache_dir)
        # Imported here: transformers' modeling modules cost ~120 MB of memory the llama.cpp runner does not need.
        from mcp_server.engines.embedded.runners.torch_runner import TorchRunner

        cache_dir = Path(self._cache_dir) if self._cache_dir else None
        runner = TorchRunner(
            self._model_path, self._dtype, cache_dir, self._device, self._context_length, self._threads, self._deterministic
        )
        return runner, runner.tokenizer

    async def aclose(self) -> None:
        """Stop the scheduler; unfinished sequences fail with EngineUnavailable."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await anyio.to_thread.run_sync(scheduler.stop)
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.close()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Generate one sequence, yielding deltas until one carries a finish_reason.

        Closing the iterator early cancels the sequence; it leaves the batch at the next step.

        Raises:
            InvalidRequest: before the first delta, when the messages cannot be rendered,
                the prompt leaves no room in the context (param ``messages``), max_tokens
                exceeds what is left (param ``max_tokens``), or the grammar provider refuses.
            EngineUnavailable: the engine is not started, or the model failed.
        """
        scheduler = self._scheduler
        if scheduler is None:
            raise EngineUnavailable("The engine is not started.")
        check_tools_allowed(request, self._card.tool_call_format, self.grammar_backend)
        # Tokenizing and compiling take up to seconds: off the event loop, so others go on.
        prompt_ids = await anyio.to_thread.run_sync(self._render, request)
        max_new_tokens = completion_budget(request, len(prompt_ids), self.context_length)
        matcher = await anyio.to_thread.run_sync(self._matcher, request)
        if max_new_tokens == 0:
            yield GenerationDelta("", len(prompt_ids), 0, "length")
            return
        queue: asyncio.Queue[GenerationDelta | ServiceError] = asyncio.Queue()
        sequence = Sequence(
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens,
            sampling=request.sampling,
            text=TextStream(partial(self._decode, special=keeps_special_tokens(request, self._card)), request.stop),
            emit=self._outbox.emitter(asyncio.get_running_loop(), queue.put_nowait),
            generator=new_generator(request.sampling.seed),
            matcher=matcher,
            counts=self._counts(request),
            top_logprobs=request.top_logprobs if request.logprobs else None,
            tenant=request.tenant, cache_scope=cache_scope(request),
        )
        card, prompt_tail = self._card, self.tokenizer.decode(prompt_ids[-PROMPT_TAIL_TOKENS:])  # opened <think>?
        output = OutputProcessor(request, card.tool_call_format, card.reasoning_parser, prompt_tail, lambda: sequence.text.stopped)
        scheduler.submit(sequence)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ServiceError):
                    raise item
                delta = output.process(item)
                yield delta
                if delta.finish_reason is not None:  # also when the output ended it (a repeated call)
                    return
        finally:
            sequence.cancelled = True

    def _render(self, request: GenerationRequest) -> list[int]:
        tools = request.tools if request.tool_choice != "none" else None
        return render_chat(self.tokenizer, request.messages, tools, self._family.tool_format, self._family.template_tools)

    def _matcher(self, request: GenerationRequest) -> Any:
        if self.grammar_provider is None:
            return None
        compiled = self.grammar_provider(request, self.tokenizer)
        if compiled is None:
            return None
        return self.grammar_backend.matcher(compiled)

    def _counts(self, request: GenerationRequest) -> np.ndarray | None:
        sampling = request.sampling
        if sampling.presence_penalty == 0 and sampling.frequency_penalty == 0:
            return None
        return np.zeros(self.runner.vocab_size, dtype=np.float32)

    def _decode(self, token_ids: list[int], special: bool = False) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=not special)

    def _eos_ids(self) -> set[int]:
        ids = set(self.runner.eos_ids)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

