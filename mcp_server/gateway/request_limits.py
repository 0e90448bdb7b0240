"""Size limits on what a request may ask for, checked before it reaches the engine.

Usage::

    limits = RequestLimits(max_body_bytes=4 << 20)
    limits.check(chat_request)          # InvalidRequest naming the field and the limit

Limits the request schema already states (``n`` <= 8, ``tools`` <= 128 items, ``stop``
<= 4 strings) are enforced by schema validation; ``max_tokens`` against the context is
the engine's check (400 ``context_length_exceeded`` saying how many tokens are left).
This module adds what JSON Schema cannot say or an operator may tune: the body size
(413, enforced by :class:`~mcp_server.gateway.http.GatewayMiddleware`), the number of
messages, and the size and nesting depth of each JSON schema a request carries (a tool's
``parameters`` and ``response_format.json_schema.schema``), which bound the grammar
compiler's work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_server.errors import InvalidRequest
from mcp_server.protocol.request import ChatRequest, json_depth

__all__ = ["RequestLimits", "json_depth"]


@dataclass(frozen=True)
class RequestLimits:
    """Limits on one request.

    Attributes:
        max_body_bytes: largest request body, in bytes (413 above it).
        max_messages: most entries in ``messages``.
        max_schema_bytes: largest JSON schema (compact JSON text, UTF-8 bytes) in a tool
            or ``response_format``.
        max_schema_depth: deepest nesting of objects and arrays in such a schema.
        read_timeout: seconds the body may pause between two parts (408 after it).
    """

    max_body_bytes: int = 4 * 1024 * 1024
    read_timeout: float = 30.0
    max_messages: int = 1024
    max_schema_bytes: int = 64 * 1024
    max_schema_depth: int = 32

    def check(self, request: ChatRequest) -> None:
        """Check a parsed request against the limits.

        Raises:
            InvalidRequest: a limit is exceeded; ``param`` names the field and the message
                gives the limit and the request's value (code ``limit_exceeded``).
        """
        generation = request.generation
        if len(generation.messages) > self.max_messages:
            raise InvalidRequest(
                f"messages has {len(generation.messages)} entries; at most {self.max_messages} are accepted.",
                param="messages",
                code="limit_exceeded",
            )
        for param, schema in _schemas(generation.tools, generation.response_format):
            depth = json_depth(schema)
            if depth > self.max_schema_depth:
                raise InvalidRequest(
                    f"The schema at {param} nests {depth} levels deep; at most {self.max_schema_depth} are accepted.",
                    param=param,
                    code="limit_exceeded",
                )
            size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
            if size > self.max_schema_bytes:
                raise InvalidRequest(
                    f"The schema at {param} is {size} bytes; at most {self.max_schema_bytes} are accepted.",
                    param=param,
                    code="limit_exceeded",
                )


def _schemas(tools: list[dict[str, Any]] | None, response_format: dict[str, Any] | None):
    """Yield ``(param path, schema)`` for every JSON schema in the request."""
    for i, tool in enumerate(tools or ()):
        parameters = (tool.get("function") or {}).get("parameters")
        if parameters is not None:
            yield f"tools[{i}].function.parameters", parameters
    if response_format and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            yield "response_format.json_schema.schema", schema
