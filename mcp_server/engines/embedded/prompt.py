"""The prompt: chat messages rendered through the model's chat template into token ids,
with message text never read as control tokens; and the completion budget it leaves.

Tools, assistant tool calls and tool results go through the template itself when it renders
them (:func:`template_tools`; Qwen 2.5/3, Hermes, Llama 3.1, Mistral templates take
``tools``, ``tool_calls`` and ``role: tool``, as Hugging Face's ``apply_chat_template``
passes them); what a template does not render (all of it for ChatML without tools, the
tool list for DeepSeek V3.1's) the family's instructions write as plain text first
(:func:`~mcp_server.engines.embedded.decoding.toolcalls.render_messages`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.toolcalls import ToolCallFormat, render_messages, with_tool_list
from mcp_server.errors import InvalidRequest
from mcp_server.families.detect import SAMPLE_CALL, SAMPLE_TOOL

__all__ = ["TemplateTools", "completion_budget", "render_chat", "render_prompt", "template_messages", "template_tools"]


def render_chat(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, fmt: ToolCallFormat, support: TemplateTools
) -> list[int]:
    """A request's prompt token ids: tool calls and results through the chat template where it
    renders them (``support``, :func:`template_tools`), the tool list too where it lists
    tools; what the template does not render, ``fmt``'s instructions write as text.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: OpenAI chat messages, normalized (content None or a string).
        tools: OpenAI tool definitions the model may call, or None.
        fmt: the served family's format (its instructions and call text).
        support: what the template renders of tool use.

    Raises:
        InvalidRequest: as :func:`render_prompt`.
    """
    if not support.calls:
        return render_prompt(tokenizer, render_messages(fmt, messages, tools))
    if support.tool_list:
        return render_prompt(tokenizer, template_messages(messages), tools)
    return render_prompt(tokenizer, with_tool_list(fmt, template_messages(messages), tools))


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Render messages through the tokenizer's chat template and return the prompt's token ids.

    Message text never becomes a control token: text that contains one of the
    tokenizer's special tokens (``<|im_start|>``, ``<|eot_id|>``, ...) is tokenized as
    plain text (:func:`_render_literal`), so a user cannot forge turns. Other prompts are
    tokenized as the template's own ``apply_chat_template`` does.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: ``[{"role", "content"}]`` with string content (as
            :func:`~mcp_server.engines.embedded.decoding.toolcalls.render_messages` returns),
            or, for a template that renders tools, :func:`template_messages` (``tool_calls``
            and ``role: tool`` kept).
        tools: OpenAI tool definitions for the template's ``tools`` variable, or None.

    Returns:
        The prompt's token ids, generation prompt included.

    Raises:
        InvalidRequest: (param ``messages``) the template rejected the messages, or changes
            message text that holds a control token; (param ``tools`` or ``messages``) a tool
            definition or a past tool call holds a control token (only message text can be
            placed as plain text).
    """
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    _refuse_control_tokens(specials, tools, messages)
    try:
        if any(token in m["content"] for m in messages for token in specials):
            return _render_literal(tokenizer, messages, tools)
        rendered = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, return_dict=True
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from exc
    return list(rendered["input_ids"])


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates that render tools expect them (vLLM does the same).

    Content None becomes ``""`` (templates concatenate it); each tool call's ``arguments``,
    JSON text in OpenAI's API, becomes the object it encodes, which templates print with
    ``tojson`` (arguments that are not a JSON object stay text). ``tool_calls`` and
    ``role: tool`` messages (with ``tool_call_id``) are kept for the template.
    """
    converted = []
    for message in messages:
        message = {**message, "content": message.get("content") or ""}
        if message.get("tool_calls"):
            message["tool_calls"] = [_object_arguments(call) for call in message["tool_calls"]]
        converted.append(message)
    return converted


def _object_arguments(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call.get("function", {}).get("arguments")
    try:
        decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return call
    return {**call, "function": {**call["function"], "arguments": decoded}} if isinstance(decoded, dict) else call


_SAMPLE_TURNS = [
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": "", "tool_calls": [SAMPLE_CALL]},
    {"role": "tool", "tool_call_id": SAMPLE_CALL["id"], "content": "chatcap-sample-result"},
]


@dataclass(frozen=True)
class TemplateTools:
    """What a chat template renders of tool use by itself.

    Attributes:
        calls: an assistant's ``tool_calls`` (object arguments) and a ``role: tool`` result
            both appear in its text.
        tool_list: the ``tools`` variable (the tool definitions) appears in its text.
    """

    calls: bool = False
    tool_list: bool = False


def template_tools(tokenizer: Any) -> TemplateTools:
    """What the tokenizer's chat template renders of tool use, found by rendering a sample
    conversation (a tool, a call, its result). A template that raises renders nothing;
    ChatML without tools (SmolLM2's) prints only role and content; DeepSeek V3.1's renders
    calls and results but no tool list."""
    try:
        listed = tokenizer.apply_chat_template(_SAMPLE_TURNS[:1], tools=[SAMPLE_TOOL], tokenize=False, add_generation_prompt=True)
        turns = tokenizer.apply_chat_template(_SAMPLE_TURNS, tools=[SAMPLE_TOOL], tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - any template error: the family's instructions render tools
        return TemplateTools()
    return TemplateTools(
        calls="Zanzibar" in turns and "chatcap-sample-result" in turns,
        tool_list=SAMPLE_TOOL["function"]["name"] in listed,
    )


def _refuse_control_tokens(specials: list[str], tools: list[dict[str, Any]] | None, messages: list[dict[str, Any]]) -> None:
    for param, value in (("tools", tools), ("messages", [m.get("tool_calls") for m in messages])):
        text = json.dumps(value, ensure_ascii=False)
        if any(token in text for token in specials):
            raise InvalidRequest(
                f"A {'tool definition' if param == 'tools' else 'tool call'} contains a control token of the model's "
                "chat template, which the template would read as markup; remove the token.",
                param=param,
            )


def _render_literal(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Tokenize the template's text with control tokens, each message's content without.

    The template is rendered with a placeholder for each content; the pieces between
    placeholders are tokenized as usual and the contents with ``split_special_tokens``.

    Raises:
        InvalidRequest: (param ``messages``) the template changes message content
            (e.g. trims it), so the content cannot be placed literally.
    """
    # Empty content keeps no placeholder: templates test it (``if message.content``).
    held = [{**m, "content": f"\x00chatcap-content-{i}\x00"} if m["content"] else m for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(
        held, tools=tools, add_generation_prompt=True, tokenize=False
    )
    real = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False
    )
    pieces = re.split("\x00chatcap-content-(\\d+)\x00", text)
    order = [int(i) for i in pieces[1::2]]
    if (
        order != [i for i, m in enumerate(messages) if m["content"]]
        or "".join(
            messages[int(p)]["content"] if k % 2 else p for k, p in enumerate(pieces)
        )
        != real
    ):
        raise InvalidRequest(
            "A message contains a control token of the model's chat template, and this template "
            "changes message text, so it cannot be sent as plain text; remove the token.",
            param="messages",
        )
    ids: list[int] = []
    for k, piece in enumerate(pieces):
        literal = k % 2 == 1
        piece = messages[int(piece)]["content"] if literal else piece
        ids += tokenizer(piece, add_special_tokens=False, split_special_tokens=literal)[
            "input_ids"
        ]
    return ids


def completion_budget(request: GenerationRequest, prompt_tokens: int, context_length: int) -> int:
    """The tokens a request may generate: its ``max_tokens``, or all the context its prompt leaves.

    Raises:
        InvalidRequest: (code ``context_length_exceeded``) the prompt fills the context (param
            ``messages``), or ``max_tokens`` exceeds what it leaves (param ``max_tokens``);
            a negative ``max_tokens`` (param ``max_tokens``).
    """
    left = context_length - prompt_tokens
    if left <= 0:
        raise InvalidRequest(
            f"The prompt is {prompt_tokens} tokens but the context window is {context_length} tokens, "
            "so no tokens are left for the completion. Shorten the messages.",
            param="messages",
            code="context_length_exceeded",
        )
    if request.max_tokens is None:
        return left
    if request.max_tokens < 0:
        raise InvalidRequest("max_tokens must not be negative.", param="max_tokens")
    if request.max_tokens > left:
        raise InvalidRequest(
            f"max_tokens is {request.max_tokens if request.max_tokens < 10**12 else 'over 10^12'}, "
            f"but the prompt is {prompt_tokens} tokens of a "
            f"{context_length}-token context, so only {left} tokens are left.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return request.max_tokens
