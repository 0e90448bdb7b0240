"""Idempotent requests: a retried request is answered once and billed once.

A client or a proxy in front of several replicas (the SGLang router retries 408/429/5xx
answers) may send the same request twice. A request that carries ``Idempotency-Key: <k>``
(OpenAI's and Stripe's header; ``X-Request-Id`` is read when it is absent, as proxies set
it) is scoped to its API key and:

- while an earlier request of the key with the same ``<k>`` runs, on any replica: 409
  ``idempotency_conflict`` (the unique ``reservations (key_id, idempotency_key)``);
- once one completed: its stored answer again, as JSON or as a stream (one chunk per choice
  carrying the whole message, then the usage chunk when asked for), not charged and not
  generated again; it still counts against RPM;
- after a failed or cancelled attempt: generated again (each attempt pays for the tokens it
  generated, a failed one usually none).

MCP tool calls that bill (``chat``, ``create-chat-completion``) take the key from the call's
``_meta.idempotency_key`` (on any transport), else from the same headers of the HTTP request
that carried the call (streamable HTTP): :func:`tool_call_idempotency_key`.

The answer is kept in the ledger row (``ledger.response``) only for completed requests with
an idempotency key. Requests without an API key ignore the header (nothing is billed).
Keys are 1 to 255 printable ASCII characters.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_server.errors import InvalidRequest
from mcp_server.protocol.chunks import drain

__all__ = ["HEADERS", "MAX_LENGTH", "META_KEY", "idempotency_key", "replay_chunks", "stored_answer",
           "tool_call_idempotency_key"]

HEADERS = (b"idempotency-key", b"x-request-id")
MAX_LENGTH = 255
META_KEY = "idempotency_key"
"""The key of an MCP request's ``_meta`` that carries its idempotency key."""


def idempotency_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's idempotency key from ASGI ``headers`` (the first of :data:`HEADERS` sent).

    Raises:
        InvalidRequest: the header is empty, longer than :data:`MAX_LENGTH`, sent twice or
            not printable ASCII; ``param`` names it.
    """
    for name in HEADERS:
        values = [value for header, value in headers if header == name]
        if not values:
            continue
        header = name.decode().title()
        if len(values) > 1:
            raise InvalidRequest(f"Send one '{header}' header, not several.", param=header)
        return _checked(values[0].decode("latin-1"), f"The '{header}' header", header)
    return None


def tool_call_idempotency_key(meta: dict[str, Any] | None, headers: list[tuple[bytes, bytes]] | None) -> str | None:
    """An MCP tool call's idempotency key: ``meta[META_KEY]`` (the request's ``_meta``), else
    the :data:`HEADERS` of the HTTP request that carried it (``headers``, None over stdio).

    Raises:
        InvalidRequest: the ``_meta`` value is not a string of 1 to :data:`MAX_LENGTH`
            printable ASCII characters (``param`` ``_meta.idempotency_key``), or a header is
            bad as :func:`idempotency_key` says.
    """
    if meta and META_KEY in meta:
        value = meta[META_KEY]
        name = f"_meta.{META_KEY}"
        return _checked(value if isinstance(value, str) else "", f"'{name}'", name)
    return idempotency_key(headers) if headers is not None else None


def _checked(value: str, what: str, param: str) -> str:
    if not 1 <= len(value) <= MAX_LENGTH or not all(0x20 < ord(char) < 0x7F for char in value):
        raise InvalidRequest(f"{what} must be 1 to {MAX_LENGTH} printable ASCII characters without spaces.",
                             param=param)
    return value


def replay_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A stored ``chat.completion`` as ``chat.completion.chunk`` dicts that
    :func:`~mcp_server.protocol.chunks.drain` folds back into the same completion.

    Args:
        completion: the stored answer.
        include_usage: end with the usage chunk (``stream_options.include_usage``) and give
            every chunk a ``usage`` field, as the service does.
    """
    meta = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    meta["object"] = "chat.completion.chunk"
    usage_field = {"usage": None} if include_usage else {}
    chunks = []
    for choice in completion["choices"]:
        message = choice["message"]
        delta: dict[str, Any] = {"role": "assistant"}
        for field in ("reasoning_content", "content"):
            if message.get(field) is not None:
                delta[field] = message[field]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append({**meta, "choices": [{"index": choice["index"], "delta": delta, "logprobs": choice["logprobs"],
                                            "finish_reason": choice["finish_reason"]}], **usage_field})
    if include_usage:
        chunks.append({**meta, "choices": [], "usage": completion["usage"]})
    return chunks


async def stored_answer(chunks: list[dict[str, Any]], usage: dict[str, Any]) -> str:
    """A completed request's answer as the ledger keeps it for replays: the chunks it sent,
    drained into one ``chat.completion``, with its ``usage`` (compact JSON text)."""

    async def sent():
        for chunk in chunks:
            yield chunk

    completion = await drain(sent())
    completion["usage"] = usage
    return json.dumps(completion, separators=(",", ":"))
