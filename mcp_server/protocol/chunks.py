"""Chunk shaping: engine deltas as OpenAI ``chat.completion.chunk`` pieces, and a chunk
stream drained into one ``chat.completion`` (so the streamed and the non-streamed answer
can never disagree).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mcp_server.engines.base import GenerationDelta, TokenLogprob, ToolCallDelta

__all__ = ["delta_payload", "drain", "logprobs_payload", "usage"]


def delta_payload(delta: GenerationDelta) -> dict[str, Any]:
    """The OpenAI ``delta`` object for a generation delta ({} when it carries nothing):
    ``reasoning_content``, ``content`` and ``tool_calls`` pieces (the first piece of a call
    carries its ``id``, ``type`` and ``name``)."""
    payload: dict[str, Any] = {}
    if delta.reasoning_content:
        payload["reasoning_content"] = delta.reasoning_content
    if delta.text:
        payload["content"] = delta.text
    if delta.tool_calls:
        payload["tool_calls"] = [_tool_call_piece(call) for call in delta.tool_calls]
    return payload


def logprobs_payload(delta: GenerationDelta) -> dict[str, Any] | None:
    """The OpenAI choice ``logprobs`` object for a delta's tokens, None when it has none:
    ``{"content": [{"token", "logprob", "bytes": [int, ...], "top_logprobs": [...]}, ...]}``."""
    if not delta.logprobs:
        return None
    return {"content": [{**_token(entry), "top_logprobs": [_token(t) for t in entry.top_logprobs]}
                        for entry in delta.logprobs]}


def _token(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}


def _tool_call_piece(call: ToolCallDelta) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": call.index}
    function: dict[str, Any] = {"arguments": call.arguments}
    if call.id is not None:
        piece.update(id=call.id, type="function")
        function = {"name": call.name, **function}
    piece["function"] = function
    return piece


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    """The OpenAI ``usage`` object; ``cached_tokens`` (part of ``prompt_tokens``) came from a prefix cache."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
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
            if c.get("logprobs"):
                choice["logprobs"] = {"content": [*(choice["logprobs"] or {}).get("content", ()),
                                                  *c["logprobs"]["content"]]}
            if c["finish_reason"] is not None:
                choice["finish_reason"] = c["finish_reason"]
    for choice in choices.values():
        message = choice["message"]
        if not message["content"]:
            # OpenAI: content is null when there are only tool calls; so it is when there is no
            # text at all (a call cut by max_tokens leaves neither call nor text).
            message["content"] = None
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
