"""ChatService: the one chat-completions implementation behind REST and MCP.

Data flow (DESIGN.md): a validated request body becomes one :class:`ChatRequest`; the
service fans it out into ``n`` :class:`~mcp_server.engines.base.GenerationRequest` s, runs
them on the engine, and turns their deltas into OpenAI ``chat.completion.chunk`` dicts.
The non-streaming response is that same stream, drained (:func:`drain`), so the two paths
can never disagree.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mcp_server import __version__
from mcp_server.capability.schemas import validate_request
from mcp_server.engines.base import (
    Engine,
    GenerationDelta,
    GenerationRequest,
    ModelCard,
    SamplingParams,
    ToolCallDelta,
)
from mcp_server.errors import InvalidRequest, ModelNotFound
from mcp_server.protocol.content import check_image_inputs

__all__ = ["ChatRequest", "ChatService", "ProgressCallback", "UsageCallback", "drain", "parse_request"]

ProgressCallback = Callable[[int], Awaitable[None]]
"""Called with the total completion tokens generated so far, across all choices."""

UsageCallback = Callable[[int, int], None]
"""Called with the prompt tokens and the completion tokens so far (all choices), as they grow."""

SYSTEM_FINGERPRINT = f"chatcap-{__version__}"


@dataclass(frozen=True)
class ChatRequest:
    """A validated, normalized chat-completions request.

    Attributes:
        generation: the per-choice generation request (seed already applied for choice 0).
        n: number of choices, >= 1.
        stream: whether the client asked for SSE.
        include_usage: ``stream_options.include_usage``: send a final usage chunk.
    """

    generation: GenerationRequest
    n: int = 1
    stream: bool = False
    include_usage: bool = False


def parse_request(body: Any) -> ChatRequest:
    """Validate a chat-completions body against ``schemas/`` and normalize it.

    Args:
        body: the decoded JSON body, as sent by an OpenAI client.

    Returns:
        The normalized request.

    Raises:
        InvalidRequest: the body does not match the request schema; ``param`` names the
            failing field (e.g. ``messages[0].role``).
    """
    validate_request(body)
    # OpenAI clients send explicit nulls for unset options: null means "the default".
    fields = {key: value for key, value in body.items() if value is not None}
    _check_supported(fields)
    fields["messages"] = [_without_nulls(m, keep=("content",)) for m in fields["messages"]]
    if "tools" in fields:
        fields["tools"] = [{**t, "function": _without_nulls(t["function"])} for t in fields["tools"]]
    try:
        json.dumps(fields["messages"], ensure_ascii=False).encode("utf-8")
        json.dumps(fields.get("tools"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "A string in messages or tools contains an unpaired UTF-16 surrogate; send valid Unicode text.",
            param="messages",
        ) from None
    # JSON Schema's "integer" admits 2.0: make integer fields Python ints.
    for key in ("n", "max_tokens", "max_completion_tokens", "top_k", "seed"):
        if isinstance(fields.get(key), float):
            fields[key] = int(fields[key])
    stop = fields.get("stop", ())
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    sampling = SamplingParams(
        temperature=float(fields.get("temperature", 1.0)),
        top_p=float(fields.get("top_p", 1.0)),
        top_k=fields.get("top_k") if fields.get("top_k", 0) > 0 else None,
        seed=fields.get("seed"),
        presence_penalty=float(fields.get("presence_penalty", 0.0)),
        frequency_penalty=float(fields.get("frequency_penalty", 0.0)),
    )
    response_format = fields.get("response_format")
    if response_format is not None and response_format.get("type") == "text":
        response_format = None
    generation = GenerationRequest(
        model=fields.get("model", ""),
        messages=fields["messages"],
        max_tokens=fields.get("max_completion_tokens", fields.get("max_tokens")),
        stop=tuple(s for s in stops if s),
        sampling=sampling,
        tools=fields.get("tools") or None,
        tool_choice=fields.get("tool_choice"),
        parallel_tool_calls=fields.get("parallel_tool_calls", True),
        response_format=response_format,
    )
    return ChatRequest(
        generation=generation,
        n=fields.get("n", 1),
        stream=fields.get("stream", False),
        include_usage=(fields.get("stream_options") or {}).get("include_usage") is True,
    )


UNSUPPORTED = {
    "logprobs": lambda v: v is True,
    "top_logprobs": lambda v: True,
    "logit_bias": lambda v: bool(v),
    "min_p": lambda v: v != 0,
    "repetition_penalty": lambda v: v != 1,
}
"""Accepted fields whose non-default values this service does not implement yet."""


def _check_supported(fields: dict[str, Any]) -> None:
    """Refuse, rather than silently ignore, options that are not implemented.

    Raises:
        InvalidRequest: a field in :data:`UNSUPPORTED` has a non-default value,
            ``tool_choice`` is given without ``tools``, or ``stream_options`` without
            ``stream`` true (the OpenAI API and vLLM refuse both).
    """
    for name, is_set in UNSUPPORTED.items():
        if name in fields and is_set(fields[name]):
            raise InvalidRequest(f"'{name}' is not supported by this server yet; leave it unset.", param=name)
    if "tool_choice" in fields and not fields.get("tools"):
        raise InvalidRequest("tool_choice is only allowed with tools, and no tools are given.", param="tool_choice")
    if "stream_options" in fields and not fields.get("stream"):
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")


def _without_nulls(item: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """``item`` without its null fields (clients send null for "absent"), except those in ``keep``."""
    return {key: value for key, value in item.items() if value is not None or key in keep}


class ChatService:
    """Runs chat completions on an engine and shapes the results as OpenAI chunks.

    Args:
        engine: any :class:`~mcp_server.engines.base.Engine`.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def list_models(self) -> dict[str, Any]:
        """Return the OpenAI model list ``{"object": "list", "data": [model, ...]}``."""
        return {"object": "list", "data": [self._model_object(m.id) for m in self.engine.models]}

    def retrieve_model(self, model_id: str) -> dict[str, Any]:
        """Return one OpenAI model object.

        Raises:
            ModelNotFound: ``model_id`` is not served; the message lists the served models.
        """
        self._check_model(model_id)
        return self._model_object(model_id)

    def _card(self, model_id: str) -> ModelCard:
        return next(m for m in self.engine.models if m.id == model_id)

    def _model_object(self, model_id: str) -> dict[str, Any]:
        card = self._card(model_id)
        return {"id": card.id, "object": "model", "created": 0, "owned_by": card.owned_by}

    def _with_model(self, request: ChatRequest) -> ChatRequest:
        """Fill in the default model when the body named none; check a named one."""
        if not request.generation.model:
            default = self.engine.models[0].id
            return replace(request, generation=replace(request.generation, model=default))
        self._check_model(request.generation.model)
        return request

    def _check_model(self, model_id: str) -> None:
        served = [m.id for m in self.engine.models]
        if model_id not in served:
            raise ModelNotFound(
                f"The model '{model_id}' does not exist or is not served here. "
                f"Served models: {', '.join(served)}.",
                param="model",
            )

    async def stream(
        self,
        request: ChatRequest,
        progress: ProgressCallback | None = None,
        on_usage: UsageCallback | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run a request and yield OpenAI ``chat.completion.chunk`` dicts.

        Args:
            request: the normalized request.
            progress: optional callback, awaited after each delta with the total number of
                completion tokens generated so far.
            on_usage: optional callback, called as soon as the first deltas arrive and after
                each delta, so a caller that stops early still knows what was generated.

        Order: one role chunk per choice, content deltas, one finish chunk per choice,
        then (with ``include_usage``) a usage chunk with ``choices: []``.

        Errors the engine raises before it generates (a prompt longer than the context,
        a schema it cannot enforce) are raised here before the first chunk is yielded,
        so a caller can still answer with an HTTP error status.

        Raises:
            ModelNotFound: the model is not served.
            InvalidRequest: the engine rejected the request.
        """
        request = self._with_model(request)
        check_image_inputs(request.generation.messages, self._card(request.generation.model))
        generators = [self.engine.generate(g) for g in _choices(request)]
        try:
            # Prime every choice: errors surface before the first chunk is sent.
            firsts = [await gen.__anext__() for gen in generators]
            if on_usage is not None:
                on_usage(firsts[0].prompt_tokens, sum(d.completion_tokens for d in firsts))
            meta = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": request.generation.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
            usage_field = {"usage": None} if request.include_usage else {}

            def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
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
                        on_usage(last[0].prompt_tokens, sum(d.completion_tokens for d in last.values()))
                    if progress is not None:
                        await progress(sum(d.completion_tokens for d in last.values()))
                    payload = _delta_payload(delta)
                    if payload:
                        yield chunk(index, payload)
                    if delta.finish_reason is not None:
                        yield chunk(index, {}, delta.finish_reason)
                        del active[index]
            if request.include_usage:
                prompt = last[0].prompt_tokens if last else 0
                completion = sum(d.completion_tokens for d in last.values())
                yield {**meta, "choices": [], "usage": _usage(prompt, completion)}
        finally:
            for gen in generators:
                await gen.aclose()

    async def complete(
        self, request: ChatRequest, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Run a request to the end and return an OpenAI ``chat.completion`` dict.

        Raises:
            ModelNotFound, InvalidRequest: as :meth:`stream`.
        """
        return await drain(self.stream(replace(request, include_usage=True), progress))


def _choices(request: ChatRequest) -> list[GenerationRequest]:
    """One generation request per choice; choice i gets seed + i so choices differ."""
    base = request.generation
    seed = base.sampling.seed
    if seed is None:
        return [base] * request.n
    return [replace(base, sampling=replace(base.sampling, seed=seed + i)) for i in range(request.n)]


def _delta_payload(delta: GenerationDelta) -> dict[str, Any]:
    """The OpenAI ``delta`` object for a generation delta ({} when it carries nothing)."""
    payload: dict[str, Any] = {}
    if delta.reasoning_content:
        payload["reasoning_content"] = delta.reasoning_content
    if delta.text:
        payload["content"] = delta.text
    if delta.tool_calls:
        payload["tool_calls"] = [_tool_call_piece(call) for call in delta.tool_calls]
    return payload


def _tool_call_piece(call: ToolCallDelta) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": call.index}
    function: dict[str, Any] = {"arguments": call.arguments}
    if call.id is not None:
        piece.update(id=call.id, type="function")
        function = {"name": call.name, **function}
    piece["function"] = function
    return piece


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def drain(chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """Fold a chunk stream into one OpenAI ``chat.completion`` dict.

    Args:
        chunks: ``chat.completion.chunk`` dicts as :meth:`ChatService.stream` yields them.

    Returns:
        ``{"id", "object": "chat.completion", "created", "model", "choices", "usage", ...}``;
        ``usage`` is None unless the stream carried a usage chunk.
    """
    completion: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    async for chunk in chunks:
        if not completion:
            completion = {k: chunk[k] for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            completion["usage"] = chunk["usage"]
        for c in chunk["choices"]:
            choice = choices.setdefault(
                c["index"],
                {"index": c["index"], "message": {"role": "assistant", "content": None},
                 "logprobs": None, "finish_reason": None},
            )
            _fold_delta(choice["message"], c["delta"])
            if c["finish_reason"] is not None:
                choice["finish_reason"] = c["finish_reason"]
    for choice in choices.values():
        message = choice["message"]
        if message.get("tool_calls") and not message["content"]:
            message["content"] = None  # OpenAI: content is null when there are only tool calls
    return {
        "id": completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": completion["model"],
        "system_fingerprint": completion["system_fingerprint"],
        "choices": [choices[i] for i in sorted(choices)],
        "usage": completion.get("usage"),
    }


def _fold_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    """Append one streamed ``delta`` to an assistant ``message`` (content, reasoning, calls)."""
    for key in ("content", "reasoning_content"):
        if delta.get(key) is not None:
            message[key] = (message.get(key) or "") + delta[key]
    for piece in delta.get("tool_calls") or ():
        calls = message.setdefault("tool_calls", [])
        if piece["index"] == len(calls):
            calls.append({"id": piece["id"], "type": "function",
                          "function": {"name": piece["function"]["name"], "arguments": ""}})
        calls[piece["index"]]["function"]["arguments"] += piece["function"].get("arguments", "")
