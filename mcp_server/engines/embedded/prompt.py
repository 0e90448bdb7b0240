"""The prompt: chat messages rendered through the model's chat template into token ids,
with message text never read as control tokens; and the completion budget it leaves."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import TemplateError

from mcp_server.engines.base import GenerationRequest
from mcp_server.errors import InvalidRequest

__all__ = ["completion_budget", "render_prompt"]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Render messages through the tokenizer's chat template and return the prompt's token ids.

    Message text never becomes a control token: text that contains one of the
    tokenizer's special tokens (``<|im_start|>``, ``<|eot_id|>``, ...) is tokenized as
    plain text (:func:`_render_literal`), so a user cannot forge turns. Other prompts are
    tokenized as the template's own ``apply_chat_template`` does.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: ``[{"role", "content"}]`` with string content (as
            :func:`~mcp_server.engines.embedded.decoding.toolcalls.render_messages` returns).

    Returns:
        The prompt's token ids, generation prompt included.

    Raises:
        InvalidRequest: (param ``messages``) the template rejected the messages, or changes
            message text that holds a control token.
    """
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    try:
        if any(token in m["content"] for m in messages for token in specials):
            return _render_literal(tokenizer, messages)
        rendered = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from exc
    return list(rendered["input_ids"])


def _render_literal(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Tokenize the template's text with control tokens, each message's content without.

    The template is rendered with a placeholder for each content; the pieces between
    placeholders are tokenized as usual and the contents with ``split_special_tokens``.

    Raises:
        InvalidRequest: (param ``messages``) the template changes message content
            (e.g. trims it), so the content cannot be placed literally.
    """
    marks = [f"\x00chatcap-content-{i}\x00" for i in range(len(messages))]
    held = [{**m, "content": mark} for m, mark in zip(messages, marks)]
    text = tokenizer.apply_chat_template(
        held, add_generation_prompt=True, tokenize=False
    )
    real = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    pieces = re.split("\x00chatcap-content-(\\d+)\x00", text)
    order = [int(i) for i in pieces[1::2]]
    if (
        order != list(range(len(messages)))
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
