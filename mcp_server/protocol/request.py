"""Request parsing: a chat-completions body, validated against ``schemas/``, becomes one
normalized :class:`ChatRequest` (the only place sampling is mapped to engine parameters).

Usage::

    request = parse_request(body)   # raises InvalidRequest naming the failing field
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_server.capability.schemas import load_schema, validate_request
from mcp_server.engines.base import GenerationRequest, SamplingParams
from mcp_server.errors import InvalidRequest
from mcp_server.protocol.content import normalize_messages

__all__ = [
    "ACCEPTED_EXTENSIONS", "MAX_BODY_DEPTH", "SAMPLING_EPS", "UNSUPPORTED", "ChatRequest", "json_depth", "parse_request",
]

MAX_BODY_DEPTH = 200
"""Levels of arrays and objects a request may nest (its schemas are bounded further on, at 32);
deeper ones would exhaust Python's recursion limit in the checks that follow."""

SAMPLING_EPS = 1e-5
"""``temperature`` or ``top_p`` below this is greedy decoding (vLLM's threshold)."""


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
        InvalidRequest: the body nests deeper than :data:`MAX_BODY_DEPTH` (checked first,
            without recursion), or does not match the request schema; ``param`` names the
            failing field (e.g. ``messages[0].role``).
    """
    if (depth := json_depth(body)) > MAX_BODY_DEPTH:
        raise InvalidRequest(f"The request nests JSON {depth} levels deep; at most {MAX_BODY_DEPTH} are accepted.",
                             code="limit_exceeded")
    _check_unicode(body)
    validate_request(body)
    # OpenAI clients send explicit nulls for unset options: null means "the default".
    fields = {key: value for key, value in body.items() if value is not None}
    _check_known(fields)
    _check_supported(fields)
    if "tools" in fields:
        fields["tools"] = [{**t, "function": _without_nulls(t["function"])} for t in fields["tools"]]
    # JSON Schema's "integer" admits 2.0: make integer fields Python ints.
    for key in ("n", "max_tokens", "max_completion_tokens", "top_k", "seed", "top_logprobs"):
        if isinstance(fields.get(key), float):
            fields[key] = int(fields[key])
    stop = fields.get("stop", ())
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    top_p = float(fields.get("top_p", 1.0))
    temperature = float(fields.get("temperature", 1.0))
    # A temperature or top_p of (almost) 0 keeps only the most likely token: greedy decoding,
    # as vLLM (its _SAMPLING_EPS) and SGLang read it. Dividing by a temperature below it
    # would overflow float32.
    greedy = temperature < SAMPLING_EPS or top_p < SAMPLING_EPS
    sampling = SamplingParams(
        temperature=0.0 if greedy else temperature,
        top_p=1.0 if greedy else top_p,
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
        messages=normalize_messages(fields["messages"]),
        max_tokens=fields.get("max_completion_tokens", fields.get("max_tokens")),
        stop=tuple(s for s in stops if s),
        sampling=sampling,
        tools=fields.get("tools") or None,
        tool_choice=fields.get("tool_choice"),
        parallel_tool_calls=fields.get("parallel_tool_calls", True),
        response_format=response_format,
        logprobs=fields.get("logprobs", False),
        top_logprobs=fields.get("top_logprobs", 0),
        cache_salt=fields.get("cache_salt"),
    )
    return ChatRequest(
        generation=generation,
        n=fields.get("n", 1),
        stream=fields.get("stream", False),
        include_usage=(fields.get("stream_options") or {}).get("include_usage") is True,
    )


def _check_unicode(body: Any) -> None:
    """Refuse a body holding a lone UTF-16 surrogate (JSON ``"\\ud800"``), which is no text.

    Checked first, so that no later error message echoes a string that cannot be encoded.

    Raises:
        InvalidRequest: ``param`` is the path of the first such string (e.g. ``model``,
            ``messages[0].content``, ``response_format.json_schema.schema.properties``).
    """
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
        return
    except UnicodeEncodeError:
        pass

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return None if _encodes(value) else path
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            if isinstance(key, str) and not _encodes(key):
                return path or "body"
            child_path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
            if (found := find(child, child_path)) is not None:
                return found
        return None

    param = find(body, "") or "body"
    raise InvalidRequest(
        f"A string in '{param}' contains an unpaired UTF-16 surrogate; send valid Unicode text.", param=param
    )


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


UNSUPPORTED = {
    "logit_bias": lambda v: bool(v),
    "min_p": lambda v: v != 0,
    "repetition_penalty": lambda v: v != 1,
}
"""Accepted fields whose non-default values this service does not implement yet."""


def _is(default: Any) -> Callable[[Any], bool]:
    return lambda value: value == default


def _empty(value: Any) -> bool:
    return not value


def _anything(value: Any) -> bool:
    return True


ACCEPTED_EXTENSIONS: dict[str, Callable[[Any], bool]] = {
    # OpenAI fields that only label, route or hint (nothing in the answer depends on them).
    "service_tier": _anything,
    "prompt_cache_key": _anything,
    "prompt_cache_retention": _anything,
    "safety_identifier": _anything,
    "modalities": lambda value: value == ["text"],
    # SGLang's extensions (its ChatCompletionRequest; the SGLang router forwards them with their
    # defaults). Request ids and routing hints are accepted whatever their value.
    "rid": _anything,
    "priority": _anything,
    "routed_dp_rank": _anything,
    "data_parallel_rank": _anything,
    "disagg_prefill_dp_rank": _anything,
    "bootstrap_host": _anything,
    "bootstrap_port": _anything,
    "bootstrap_room": _anything,
    "custom_labels": _anything,
    # The rest only at the value that changes nothing here.
    "ignore_eos": _is(False),
    "no_stop_trim": _is(False),
    "skip_special_tokens": _is(True),
    "spaces_between_special_tokens": _is(True),
    "separate_reasoning": _is(True),
    "stream_reasoning": _is(True),
    "continue_final_message": _is(False),
    "return_hidden_states": _is(False),
    "return_routed_experts": _is(False),
    "return_cached_tokens_details": _is(False),
    "return_prompt_token_ids": _is(False),
    "return_token_ids": _is(False),
    "return_meta_info": _is(False),
    "use_audio_in_video": _is(False),
    "min_tokens": _is(0),
    "chat_template_kwargs": _empty,
    "stop_token_ids": _empty,
    "stop_regex": _empty,
    "regex": _empty,
    "ebnf": _empty,
    "lora_path": _empty,
    "session_id": _empty,
    "session_params": _empty,
    "custom_logit_processor": _empty,
    "custom_params": _empty,
    "images_config": _empty,
    "input_ids": _empty,
    "extra_key": _empty,
}
"""Top-level fields outside the request schema that are accepted, each with the test of the
values accepted (a null field is always absent). Any other value is refused with 400 naming the
field: the server does not implement it, and ignoring it would change the answer silently."""


@functools.cache
def _schema_fields() -> frozenset[str]:
    """The top-level fields the request schema declares."""
    return frozenset(load_schema("chat-completion-request")["properties"])


def _check_known(fields: dict[str, Any]) -> None:
    """Refuse top-level fields that are neither in the request schema nor accepted extensions.

    The rule (README, "Unknown fields"): OpenAI's API refuses an unknown argument with 400;
    peers that forward requests (the SGLang router) add their own extensions to every request,
    so those in :data:`ACCEPTED_EXTENSIONS` are accepted at the values that change nothing.

    Raises:
        InvalidRequest: ``param`` names the first unknown field (in sorted order), or the
            extension whose value is not supported.
    """
    known = _schema_fields()
    unknown = sorted(name for name in fields if name not in known and name not in ACCEPTED_EXTENSIONS)
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {', '.join(unknown)}.", param=unknown[0],
            code="unknown_parameter",
        )
    for name, accepts in ACCEPTED_EXTENSIONS.items():
        if name in fields and not accepts(fields[name]):
            raise InvalidRequest(
                f"'{name}' is accepted only at the value that changes nothing here; this server does not "
                "implement the value sent. Leave it unset.",
                param=name,
            )


def _check_supported(fields: dict[str, Any]) -> None:
    """Refuse, rather than silently ignore, options that are not implemented.

    Raises:
        InvalidRequest: a field in :data:`UNSUPPORTED` has a non-default value,
            ``tool_choice`` is given without ``tools``, ``stream_options`` without ``stream``
            true, ``top_logprobs`` above 0 without ``logprobs`` true (the OpenAI API and vLLM refuse
            all three), or a JSON ``response_format`` comes
            with ``tools`` that may be called (the tool-call grammar would replace the
            schema's, so the schema could not be enforced).
    """
    for name, is_set in UNSUPPORTED.items():
        if name in fields and is_set(fields[name]):
            raise InvalidRequest(f"'{name}' is not supported by this server yet; leave it unset.", param=name)
    choice = fields.get("tool_choice")
    if "tool_choice" in fields and not fields.get("tools"):
        raise InvalidRequest("tool_choice is only allowed with tools, and no tools are given.", param="tool_choice")
    if "stream_options" in fields and not fields.get("stream"):
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options")
    if fields.get("top_logprobs") and not fields.get("logprobs"):  # 0 asks for nothing: accepted
        raise InvalidRequest("top_logprobs is only allowed when logprobs is true.", param="top_logprobs")
    kind = (fields.get("response_format") or {}).get("type", "text")
    if fields.get("tools") and choice != "none" and kind != "text":
        raise InvalidRequest(
            f"response_format {kind!r} cannot be enforced together with tools; send one of them, "
            "or set tool_choice to 'none'.",
            param="response_format",
        )


def _without_nulls(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without its null fields (clients send null for "absent")."""
    return {key: value for key, value in item.items() if value is not None}


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value: 0 for a scalar, 1 for a flat object or array.

    Iterative, so a hostile document cannot exhaust the Python stack.
    """
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest
