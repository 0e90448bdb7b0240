"""THE family table: every model family's tool-call syntax, reasoning format, stop tokens and
chat-template signatures, in one place.

Names are SGLang's: ``--tool-call-parser`` names for :data:`TOOL_CALL_PARSERS`,
``--reasoning-parser`` names for :data:`REASONING_PARSERS`. Each :class:`Family` row says
which pair a model family uses and how its chat template gives it away
(:mod:`mcp_server.families.detect` reads ``signatures``). The syntax of each tool-call
format is its own small module (``hermes.py``, ``llama3.py``, ...) behind one interface
(:class:`~mcp_server.families.base.ToolSyntax`); formats that differ only in data share one.

Sources: each model's own chat template and model card; the canitoolcall 0.1.1 corpus
(``family.json`` of each family: markers, reference models, stop tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.families.base import CallTemplate, ReasoningFormat, ToolSyntax
from mcp_server.families.deepseek import DEEPSEEK_V3, DEEPSEEK_V31
from mcp_server.families.dsml import DSML, dsml
from mcp_server.families.gemma4 import GEMMA4
from mcp_server.families.glm import GLM45, GLM47
from mcp_server.families.harmony import HARMONY_REASONING
from mcp_server.families.hermes import HERMES
from mcp_server.families.kimi_k2 import KIMI_K2
from mcp_server.families.kimi_k3 import KIMI_K3, KIMI_K3_REASONING
from mcp_server.families.llama3 import LLAMA3
from mcp_server.families.mistral import MISTRAL
from mcp_server.families.pythonic import PYTHONIC
from mcp_server.families.qwen3_coder import QWEN3_CODER

__all__ = ["FAMILIES", "HARMONY", "REASONING_PARSERS", "TOOL_CALL_PARSERS", "Family"]

HARMONY = "gpt-oss"
"""The one format whose reasoning and calls are channels of one syntax (its own splitter)."""

_HARMONY_TOOLS = ToolSyntax(
    HARMONY,
    (),  # parsed by HarmonySplitter
    lambda text, final, tools: None,
    template=CallTemplate(
        "<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>", "<|end|>", "<|channel|>commentary to=", "<|start|>assistant"
    ),
)

TOOL_CALL_PARSERS: dict[str, ToolSyntax] = {
    syntax.name: syntax
    for syntax in (
        HERMES,
        LLAMA3,
        PYTHONIC,
        QWEN3_CODER,
        MISTRAL,
        DEEPSEEK_V3,
        DEEPSEEK_V31,
        DSML,
        dsml("deepseekv4", "tool_calls"),
        dsml("deepseekv41", " calls"),
        KIMI_K2,
        KIMI_K3,
        GLM45,
        GLM47,
        GEMMA4,
        _HARMONY_TOOLS,
    )
}
"""Tool-call syntaxes by SGLang ``--tool-call-parser`` name (``qwen25`` is ``hermes``)."""
TOOL_CALL_PARSERS["qwen25"] = TOOL_CALL_PARSERS["qwen"] = HERMES

REASONING_PARSERS: dict[str, ReasoningFormat] = {
    fmt.name: fmt
    for fmt in (
        ReasoningFormat("qwen3"),  # <think>...</think>; Qwen3, QwQ; opened by the model or the template
        ReasoningFormat("deepseek-r1"),  # the same tags; R1's template opens the block
        ReasoningFormat("deepseek-v3"),  # V3.1+ thinking mode: <think> in the prompt
        ReasoningFormat("glm45"),
        ReasoningFormat("kimi"),
        ReasoningFormat("mistral", start="[THINK]", end="[/THINK]"),
        ReasoningFormat("gemma4", start="<|channel>thought", end="<channel|>"),
        KIMI_K3_REASONING,
        HARMONY_REASONING,
    )
}
"""Reasoning formats by SGLang ``--reasoning-parser`` name. Whether the block is already
open comes from the rendered prompt (:func:`~mcp_server.families.base.prompt_opens`)."""


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: a short name (``qwen3``, ``llama3``, ...).
        tool_call_parser: its :data:`TOOL_CALL_PARSERS` name.
        reasoning_parser: its :data:`REASONING_PARSERS` name, or None (no chain of thought).
        signatures: strings whose presence in a chat template identifies the family (all
            must occur); the floor under detection by rendering.
        stop_tokens: end-of-turn tokens besides the tokenizer's EOS.
        models: examples, for the README and the start-up log.
    """

    name: str
    tool_call_parser: str
    reasoning_parser: str | None
    signatures: tuple[str, ...]
    stop_tokens: tuple[str, ...] = ()
    models: str = ""


FAMILIES: tuple[Family, ...] = (
    # Most specific signatures first: detection takes the first row whose signatures all match.
    Family("gpt-oss", HARMONY, HARMONY, ("<|channel|>", "<|message|>"), ("<|call|>", "<|return|>"), "gpt-oss-20b/120b"),
    Family("deepseek-v32", "deepseekv32", "deepseek-v3", ("｜DSML｜", "function_calls"), ("<｜end▁of▁sentence｜>",), "DeepSeek V3.2"),
    Family("deepseek-v4", "deepseekv4", "deepseek-v3", ("｜DSML｜",), ("<｜end▁of▁sentence｜>",), "DeepSeek V4 / V4.1"),
    Family("deepseek-r1", "deepseekv3", "deepseek-r1", ("<｜tool▁calls▁begin｜>", "```json", "think>"), ("<｜end▁of▁sentence｜>",), "DeepSeek R1"),
    Family("deepseek-v3", "deepseekv3", None, ("<｜tool▁calls▁begin｜>", "```json"), ("<｜end▁of▁sentence｜>",), "DeepSeek V3"),
    Family("deepseek-v31", "deepseekv31", "deepseek-v3", ("<｜tool▁calls▁begin｜>",), ("<｜end▁of▁sentence｜>",), "DeepSeek V3.1"),
    Family("kimi-k3", "kimi_k3", "kimi_k3", ("<|open|>", "<|sep|>"), ("<|end_of_msg|>",), "Kimi K3"),
    Family("kimi-k2", "kimi_k2", "kimi", ("<|tool_calls_section_begin|>",), ("<|im_end|>",), "Kimi K2 / K2.5 / K2.6"),
    Family("glm47", "glm47", "glm45", ("</arg_key><arg_value>",), ("<|user|>", "<|observation|>"), "GLM-4.7, GLM-5"),
    Family("glm45", "glm45", "glm45", ("<arg_key>",), ("<|user|>", "<|observation|>"), "GLM-4.5, GLM-4.6"),
    Family("gemma4", "gemma4", "gemma4", ("<|tool_call>",), ("<turn|>", "<|tool_response>"), "Gemma 4"),
    Family("qwen3-coder", "qwen3_coder", "qwen3", ("<function=", "<parameter="), ("<|im_end|>",), "Qwen3-Coder, Qwen3.5+"),
    # Magistral 2506 thinks in plain-text <think> tags (its template's system prompt asks for
    # them; [THINK] tokens came with the v13 tokenizer of Magistral 2509).
    Family("magistral-2506", "mistral", "qwen3", ("[TOOL_CALLS]", "<think>"), ("</s>",), "Magistral Small / Medium 2506"),
    Family("mistral", "mistral", "mistral", ("[TOOL_CALLS]",), ("</s>",), "Mistral 7B v0.3, Small 3.x, Devstral, Magistral 2509+"),
    Family("llama4", "pythonic", None, ("<|python_start|>",), ("<|eot|>", "<|eom|>"), "Llama 4"),
    Family("llama3", "llama3", None, ("<|python_tag|>",), ("<|eot_id|>", "<|eom_id|>"), "Llama 3.1 / 3.3"),
    Family("llama3.2", "llama3", None, ("<|start_header_id|>", '"parameters"'), ("<|eot_id|>", "<|eom_id|>"), "Llama 3.2"),
    Family("qwen3", "hermes", "qwen3", ("<tool_call>", "<think>"), ("<|im_end|>",), "Qwen3"),
    Family("hermes", "hermes", None, ("<tool_call>",), ("<|im_end|>",), "Hermes 2 Pro / 3, Qwen 2.5"),
)
"""Model families, most specific signatures first."""
