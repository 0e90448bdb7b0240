"""ChatService: the one chat-completions implementation behind REST and MCP.

Data flow (docs/architecture.md): a validated request body becomes one :class:`ChatRequest`; the
service fans it out into ``n`` :class:`~mcp_server.engines.base.GenerationRequest` s, runs
them on the engine, and turns their deltas into OpenAI ``chat.completion.chunk`` dicts.
The non-streaming response is that same stream, drained
(:func:`mcp_server.protocol.chunks.drain`), so the two paths can never disagree.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from mcp_server import __version__
from mcp_server.engines.base import (
    Engine,
    GenerationDelta,
    GenerationRequest,
    ModelCard,
)
from mcp_server.errors import ModelNotFound
from mcp_server.protocol.chunks import delta_payload, logprobs_payload, usage
from mcp_server.protocol.content import check_image_inputs
from mcp_server.protocol.request import ChatRequest

__all__ = ["ChatService", "ProgressCallback", "UsageCallback"]

ProgressCallback = Callable[[int], Awaitable[None]]
"""Called with the total completion tokens generated so far, across all choices."""

UsageCallback = Callable[[int, int, int], None]
"""Called with the prompt tokens, the completion tokens so far (all choices) and the prompt
tokens a prefix cache served (OpenAI's ``cached_tokens``), as they grow."""

SYSTEM_FINGERPRINT = f"chatcap-{__version__}"
"""Every response's ``system_fingerprint`` (OpenAI: the backend configuration that answered,
to read with ``seed``), followed by ``-<backend>`` where the engine names it (``ModelCard.backend``)."""


class ChatService:
    """Runs chat completions on an engine and shapes the results as OpenAI chunks.

    Args:
        engine: any :class:`~mcp_server.engines.base.Engine`.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def list_models(self) -> dict[str, Any]:
        """Return the OpenAI model list ``{"object": "list", "data": [model, ...]}``."""
        return {"object": "list", "data": [_model_object(card) for card in self.engine.models]}

    def retrieve_model(self, model_id: str) -> dict[str, Any]:
        """Return one OpenAI model object.

        Raises:
            ModelNotFound: ``model_id`` is not served; the message lists the served models.
        """
        return _model_object(self.resolve(model_id))

    def resolve(self, model_id: str) -> ModelCard:
        """The served model a request names; the engine's first (its default) when it names none.

        Raises:
            ModelNotFound: ``model_id`` is not served (404 ``model_not_found``, param
                ``model``); the message lists the served models.
        """
        served = self.engine.models
        if not model_id:
            return served[0]
        for card in served:
            if card.id == model_id:
                return card
        raise ModelNotFound(
            f"The model '{model_id}' does not exist or is not served here. "
            f"Served models: {', '.join(card.id for card in served)}.",
            param="model",
        )

    def prepare(self, request: ChatRequest) -> ModelCard:
        """Resolve the request's model and check what only the model can judge (its images).

        Call it before admitting the request: what it raises is the client's fault.

        Returns:
            The served model's card, to pass to :meth:`stream`.

        Raises:
            ModelNotFound: the model is not served.
            InvalidRequest: the model cannot read the messages' images, or a ``data:`` URI
                is not a valid image (:func:`~mcp_server.protocol.content.check_image_inputs`).
        """
        card = self.resolve(request.generation.model)
        check_image_inputs(request.generation.messages, card)
        return card

    async def stream(
        self,
        request: ChatRequest,
        card: ModelCard,
        progress: ProgressCallback | None = None,
        on_usage: UsageCallback | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run a request and yield OpenAI ``chat.completion.chunk`` dicts.

        Args:
            request: the normalized request.
            card: the served model it names, from :meth:`prepare` (once, by the caller).
            progress: optional callback, awaited after each delta with the total number of
                completion tokens generated so far.
            on_usage: optional callback, called as soon as the first deltas arrive and after
                each delta, so a caller that stops early still knows what was generated.

        Order: one role chunk per choice, content deltas (with ``logprobs``, each carries
        the entries of the tokens generated since the last one, and a chunk with an empty
        ``delta`` carries those of tokens whose text is held back), one finish chunk per choice,
        then (with ``include_usage``) a usage chunk with ``choices: []``.

        Errors the engine raises before it generates (a prompt longer than the context,
        a schema it cannot enforce) are raised here before the first chunk is yielded,
        so a caller can still answer with an HTTP error status.

        Raises:
            InvalidRequest: the engine rejected the request.
        """
        request = replace(request, generation=replace(request.generation, model=card.id))
        generators = [self.engine.generate(g) for g in _choices(request)]
        try:
            # Prime every choice: errors surface before the first chunk is sent.
            firsts = [await gen.__anext__() for gen in generators]
            if on_usage is not None:
                on_usage(firsts[0].prompt_tokens, sum(d.completion_tokens for d in firsts), firsts[0].cached_tokens)
            meta = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": request.generation.model,
                "system_fingerprint": f"{SYSTEM_FINGERPRINT}-{card.backend}" if card.backend else SYSTEM_FINGERPRINT,
            }
            usage_field = {"usage": None} if request.include_usage else {}

            def chunk(
                index: int, delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None
            ) -> dict[str, Any]:
                choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                return {**meta, "choices": [choice], **usage_field}

            for index in range(request.n):
                yield chunk(index, {"role": "assistant", "content": ""})
            last: dict[int, GenerationDelta] = {}
            pending = dict(enumerate(firsts))
            active = dict(enumerate(generators))
            while active:
                for index in list(active):
                    delta = pending.pop(index, None)
                    if delta is None:
                        try:
                            delta = await active[index].__anext__()
                        except StopAsyncIteration:
                            del active[index]
                            continue
                    last[index] = delta
                    if on_usage is not None:
                        on_usage(
                            last[0].prompt_tokens, sum(d.completion_tokens for d in last.values()), last[0].cached_tokens
                        )
                    if progress is not None:
                        await progress(sum(d.completion_tokens for d in last.values()))
                    payload, logprobs = delta_payload(delta), logprobs_payload(delta)
                    if payload or logprobs:  # a token's logprobs go out even while its text is held back
                        yield chunk(index, payload, logprobs=logprobs)
                    if delta.finish_reason is not None:
                        yield chunk(index, {}, _finish_reason(delta.finish_reason, request.generation.tool_choice))
                        del active[index]
            if request.include_usage:
                prompt, cached = (last[0].prompt_tokens, last[0].cached_tokens) if last else (0, 0)
                completion = sum(d.completion_tokens for d in last.values())
                yield {**meta, "choices": [], "usage": usage(prompt, completion, cached)}
        finally:
            for gen in generators:
                await gen.aclose()


def _finish_reason(finish_reason: str, tool_choice: Any) -> str:
    """The ``finish_reason`` a client sees: OpenAI's API ends an answer forced to call one named
    function (``tool_choice: {"type": "function", ...}``) with ``stop``, not ``tool_calls`` (vLLM
    does the same); ``auto`` and ``required`` keep ``tool_calls``."""
    return "stop" if finish_reason == "tool_calls" and isinstance(tool_choice, dict) else finish_reason


def _model_object(card: ModelCard) -> dict[str, Any]:
    """The OpenAI model object for a served model."""
    return {"id": card.id, "object": "model", "created": 0, "owned_by": card.owned_by}


def _choices(request: ChatRequest) -> list[GenerationRequest]:
    """One generation request per choice; choice i gets seed + i so choices differ."""
    base = request.generation
    seed = base.sampling.seed
    if seed is None:
        return [base] * request.n
    return [replace(base, sampling=replace(base.sampling, seed=seed + i)) for i in range(request.n)]


