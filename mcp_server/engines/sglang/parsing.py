"""chatcap's family table over SGLang's raw output (``--sglang-parsers chatcap``, the default).

SGLang's own parsers fail 171 of the 469 fixtures of the canitoolcall corpus where ours fail 4
(``benchmarks/bench_toolcalls.py``, SGLang 0.5.23). So by default chatcap asks SGLang for the
model's raw text and parses it with the same :class:`~mcp_server.engines.embedded.decoding.output.OutputProcessor`
the embedded engine runs, streamed and not; ``--sglang-parsers sglang`` keeps SGLang's parsers.

What SGLang 0.5.23 is asked for (its ``ChatCompletionRequest``, ``serving_chat.py``), per
request, by :meth:`RawFormats.body`:

* the tools still go to SGLang, since its chat template renders them; SGLang renders them only
  when ``tool_choice`` is not ``none`` (``_process_messages``), and ``chat_template_kwargs``
  cannot carry them (its renderer passes ``tools=`` itself: a duplicate argument). SGLang's
  tool-call parser is a server flag, not a request field, so the server runs without
  ``--tool-call-parser`` (the launcher leaves it out; an attached server that has one is
  answered by SGLang's parsers, see :class:`~.engine.SGLangEngine`);
* ``tool_choice: "auto"`` whatever the client asked: ``required`` and a named function are
  enforced by the family's structural tag, and SGLang without a parser would add its own JSON
  constraint for them and refuse it beside ``response_format``;
* ``response_format``: the family's structural tag (xgrammar's JSON form, the constraint the
  embedded engine compiles: :meth:`~mcp_server.engines.embedded.decoding.toolcalls.format.ToolCallFormat.constraint`),
  replacing the client's ``response_format`` while calls are allowed, as in the embedded engine;
  a format without a call template gets no constraint under ``auto`` (``required``/named: 400);
* ``separate_reasoning: false`` (the think block stays in the text) and
  ``skip_special_tokens: false`` when a tool-call or reasoning parser reads the text (the markers
  of many families are special tokens).

Whether the prompt opened the think block (DeepSeek-R1's and Qwen3-Thinking's templates end
with ``<think>``) is not in SGLang's chat answer; at start-up :func:`served_formats` asks SGLang
to render a one-message chat for each reasoning model (``POST /v1/tokenize`` with ``messages``,
then ``POST /v1/detokenize`` of the last tokens) and reads the end of that generation prompt.
Where SGLang cannot tell (a router), it is assumed for :data:`TEMPLATE_OPENS_REASONING` only
(as SGLang's own ``DeepSeekR1Detector`` does). A redundant opener written by the model is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from mcp_server.catalog import ModelCard, find_entry
from mcp_server.engines.base import GenerationDelta, GenerationRequest
from mcp_server.engines.embedded.decoding.output import PROMPT_TAIL_TOKENS, OutputProcessor
from mcp_server.engines.embedded.decoding.toolcalls.support import check_tools_allowed, constrains, grammar_format
from mcp_server.errors import EngineUnavailable
from mcp_server.families import REASONING_PARSERS, check_names, prompt_opens

__all__ = ["TEMPLATE_OPENS_REASONING", "RawFormats", "generation_prompt_tail", "served_formats"]

logger = logging.getLogger(__name__)

TEMPLATE_OPENS_REASONING = frozenset({"deepseek-r1"})
"""Reasoning formats whose chat template is assumed to open the think block (DeepSeek-R1's
ends with ``<think>\\n``) where SGLang cannot render the generation prompt."""


def _no_check(schema: Any, param: str) -> None:
    """SGLang's grammar backend checks the schemas (its 400 is passed on)."""


@dataclass(frozen=True)
class RawFormats:
    """The formats chatcap parses one served model's raw SGLang output with.

    Attributes:
        tool_call_parser: a family-table (SGLang) tool-call parser name, or None (unknown:
            requests with tools get 400).
        reasoning_parser: a family-table reasoning parser name, or None.
        prompt: the end of the generation prompt SGLang renders for the model (whether it
            opens the think block), or "".

    Raises:
        ValueError: a name the family table does not have.
    """

    tool_call_parser: str | None
    reasoning_parser: str | None
    prompt: str = ""

    def __post_init__(self) -> None:
        check_names(self.tool_call_parser, self.reasoning_parser)

    def body(self, request: GenerationRequest) -> dict[str, Any]:
        """The request fields that make SGLang return the raw text under the family's constraint
        (see the module docstring); a value None means "leave the field out".

        Raises:
            InvalidRequest: tools for a model whose format is unknown (param ``tools``),
                ``required``/named for a format without a constraint, a malformed tool or
                ``tool_choice`` (params ``tools[i]``, ``tool_choice``).
        """
        check_tools_allowed(request, self.tool_call_parser)
        calls = bool(request.tools) and request.tool_choice != "none"
        fields: dict[str, Any] = {"separate_reasoning": False}
        if calls or self.reasoning_parser:
            fields["skip_special_tokens"] = False
        if calls:
            fmt = grammar_format(self.tool_call_parser)
            fields["tool_choice"] = "auto"
            fields["response_format"] = (
                fmt.constraint(request.tools, request.tool_choice, request.parallel_tool_calls, _no_check)
                if fmt and constrains(None, fmt)
                else None
            )
        return fields

    async def parse(self, request: GenerationRequest, deltas: AsyncIterator[GenerationDelta]) -> AsyncIterator[GenerationDelta]:
        """Split SGLang's raw text deltas into content, reasoning and tool calls, as the embedded
        engine does; a repeated call ends the answer early (the rest is not read).

        Raises:
            ServiceError: (``invalid_output``) the finished output does not validate; output
                cut by the client's ``stop`` strings is not checked.
            EngineUnavailable: SGLang parsed the output itself (it runs ``--tool-call-parser``
                or separated the reasoning), so the raw text is not there.
        """
        output = OutputProcessor(
            request, self.tool_call_parser, self.reasoning_parser, prompt=self.prompt, stop_hit=lambda: bool(request.stop)
        )
        async for delta in deltas:
            if delta.tool_calls or delta.reasoning_content:
                raise EngineUnavailable(
                    "SGLang parsed the output itself (it runs --tool-call-parser); restart it without that flag, "
                    "or start chatcap with --sglang-parsers sglang."
                )
            processed = output.process(delta)
            yield processed
            if processed.finish_reason is not None:
                return


async def served_formats(
    client: httpx.AsyncClient, cards: list[ModelCard], server_info: dict[str, Any], flags: tuple[str | None, str | None]
) -> dict[str, RawFormats]:
    """Each served model's formats, logged: the ``--tool-call-parser`` / ``--reasoning-parser``
    flags, else the model's catalog entry (its SGLang parser names), else (reasoning) the
    SGLang server's own ``reasoning_parser`` when the family table has it; for a reasoning
    model, the end of its generation prompt (:func:`generation_prompt_tail`).

    Args:
        client: an HTTP client on the SGLang server.
        cards: the served models.
        server_info: SGLang's ``GET /server_info`` (its resolved server arguments).
        flags: ``(tool_call_parser, reasoning_parser)``, None where not given.

    Raises:
        EngineUnavailable: a flag names a format the family table does not have.
    """
    server_reasoning = server_info.get("reasoning_parser")
    server_reasoning = server_reasoning if server_reasoning in REASONING_PARSERS else None
    formats = {}
    for card in cards:
        entry = find_entry(card.id)
        tool = flags[0] or (entry.tool_call_parser or entry.embedded_tool_call_format if entry else None)
        reasoning = flags[1] or (entry.reasoning_parser if entry else None) or server_reasoning
        try:
            check_names(tool, reasoning)
        except ValueError as error:
            raise EngineUnavailable(f"model {card.id}: {error}") from None
        prompt, how = "", "none"
        if reasoning is not None:
            tail = await generation_prompt_tail(client, card.id)
            fmt = REASONING_PARSERS[reasoning]
            if tail is None:  # SGLang cannot render it here: the family's rule
                prompt, how = (fmt.start if reasoning in TEMPLATE_OPENS_REASONING else ""), "assumed"
            else:
                prompt, how = tail, "rendered"
            how = f"{'open' if prompt_opens(fmt, prompt) else 'closed'} at the prompt's end ({how})"
        formats[card.id] = RawFormats(tool, reasoning, prompt)
        logger.info(
            "Model %s: chatcap parses SGLang's raw output (tool calls %s, reasoning %s, think block %s)",
            card.id, tool or "unknown: requests with tools get 400", reasoning or "none", how,
        )
    return formats


async def generation_prompt_tail(client: httpx.AsyncClient, model: str) -> str | None:
    """The end of the generation prompt SGLang renders for a one-message chat to ``model``
    (``POST /v1/tokenize`` with ``messages``, then ``POST /v1/detokenize`` of the last
    :data:`~mcp_server.engines.embedded.family.PROMPT_TAIL_TOKENS` tokens, special tokens
    kept), or None when SGLang does not answer both."""
    try:
        rendered = await client.post("/v1/tokenize", json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})
        tokens = rendered.json()["tokens"][-PROMPT_TAIL_TOKENS:]
        decoded = await client.post("/v1/detokenize", json={"model": model, "tokens": tokens, "skip_special_tokens": False})
        text = decoded.json()["text"]
    except (httpx.TransportError, ValueError, KeyError, TypeError):
        return None
    return text if isinstance(text, str) and rendered.status_code == decoded.status_code == 200 else None
