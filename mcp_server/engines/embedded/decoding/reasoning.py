"""Split a reasoning model's output into chain of thought and answer (``<think>...</think>``).

Reasoning models write their chain of thought between ``<think>`` and ``</think>``, then the
answer. OpenAI-compatible servers return the two apart: ``reasoning_content`` and
``content`` (SGLang's ``--reasoning-parser``, docs.sglang.ai "Reasoning Parser"; the same
field names in ``message`` and in streamed ``delta`` objects).

Usage, streaming (the embedded engine, once per sequence)::

    parser = ReasoningParser(card.reasoning_parser, prompt_opened=parser_opens(card.reasoning_parser, prompt))
    for piece in decoded_text_pieces:
        reasoning, content = parser.feed(piece)
    reasoning, content = parser.finish()

One-shot (recorded output)::

    reasoning, content = ReasoningParser("deepseek-r1").parse(text)

Cases:
    * no think block (and the prompt did not open one): everything is content;
    * a think block that never closes (the output hit ``max_tokens``): everything is
      reasoning, content is empty and the engine's ``finish_reason`` is ``length``;
    * a template-opened think block (DeepSeek-R1's chat template ends the prompt with
      ``<think>\\n``): the output starts inside the block, without a ``<think>`` tag, and
      ``</think>`` ends it; a redundant leading ``<think>`` is dropped.

Whitespace right after ``<think>`` and right after ``</think>`` is dropped. ``parse`` is
``feed`` + ``finish``, so the streamed pieces always join to the one-shot result.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.engines.embedded.decoding.markers import held_back

__all__ = ["FORMATS", "ReasoningFormat", "ReasoningParser", "parser_opens"]


@dataclass(frozen=True)
class ReasoningFormat:
    """How a model family marks its chain of thought.

    Attributes:
        start: the opening tag.
        end: the closing tag.
        prompt_opened: whether the family's chat template opens the block itself, so the
            output starts inside it.
    """

    start: str = "<think>"
    end: str = "</think>"
    prompt_opened: bool = False


FORMATS: dict[str, ReasoningFormat] = {
    # DeepSeek-R1: template-opened (R1-0528 also repeats the tag); SGLang "deepseek-r1".
    "deepseek-r1": ReasoningFormat(prompt_opened=True),
    # Qwen3 and others: the model opens the block itself; SGLang "qwen3".
    "qwen3": ReasoningFormat(),
}
"""Reasoning formats by SGLang ``--reasoning-parser`` name."""

_BEFORE, _OPENED, _REASONING, _AFTER_END, _CONTENT = range(5)
_SKIP_SPACE = {_OPENED: _REASONING, _AFTER_END: _CONTENT}
"""States that drop leading whitespace, and the state that follows them."""


def parser_opens(kind: str, prompt: str) -> bool:
    """Whether a rendered prompt already opened the think block (it ends with the tag).

    Args:
        kind: a :data:`FORMATS` name.
        prompt: the prompt text after the chat template.
    """
    return prompt.rstrip().endswith(FORMATS[kind].start)


class ReasoningParser:
    """Incremental ``<think>`` splitter for one sequence.

    Args:
        kind: a reasoning format name from :data:`FORMATS` (``deepseek-r1``, ``qwen3``).
        prompt_opened: whether the output starts inside the think block; default: the
            format's own (True for ``deepseek-r1``). Pass :func:`parser_opens` of the
            rendered prompt when it is known.

    Raises:
        ValueError: ``kind`` is not a known format.
    """

    def __init__(self, kind: str, *, prompt_opened: bool | None = None):
        if kind not in FORMATS:
            raise ValueError(f"unknown reasoning parser {kind!r}; known: {', '.join(FORMATS)}")
        self.format = FORMATS[kind]
        opened = self.format.prompt_opened if prompt_opened is None else prompt_opened
        # An opened block may still begin with a redundant <think>: _BEFORE drops it.
        self._state = _BEFORE
        self._opened = opened
        self._buffer = ""

    @property
    def in_reasoning(self) -> bool:
        """True while the output is inside the think block (or may still open one)."""
        return self._state in (_OPENED, _REASONING) or (self._state == _BEFORE and self._opened)

    def feed(self, text: str) -> tuple[str, str]:
        """Consume the next piece of output.

        Args:
            text: newly decoded text (any split, even inside a tag).

        Returns:
            ``(reasoning, content)``: the new text of each that is certain now; a possible
            partial tag at the end is held back until the next piece or :meth:`finish`.
        """
        self._buffer += text
        reasoning, content = [], []
        while self._buffer:
            if not self._step(reasoning, content):
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of the output.

        Returns:
            ``(reasoning, content)``: the rest; an unclosed think block stays reasoning.
        """
        rest, self._buffer = self._buffer, ""
        if self.in_reasoning:
            return (rest.lstrip() if self._state == _BEFORE else rest), ""
        return "", rest

    def parse(self, text: str) -> tuple[str, str]:
        """Split a whole output at once: ``feed(text)`` joined with ``finish()``."""
        reasoning, content = self.feed(text)
        tail_reasoning, tail_content = self.finish()
        return reasoning + tail_reasoning, content + tail_content

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        """Advance over the buffer once; return False when more text is needed."""
        start, end = self.format.start, self.format.end
        if self._state == _BEFORE:
            stripped = self._buffer.lstrip()
            if not stripped or start.startswith(stripped):
                return False  # only whitespace or a partial <think> so far
            if stripped.startswith(start):
                self._buffer, self._state = stripped[len(start):], _OPENED
            elif self._opened:
                self._buffer, self._state = stripped, _REASONING
            else:
                self._state = _CONTENT
            return True
        if self._state in _SKIP_SPACE:
            self._buffer = self._buffer.lstrip()
            if self._buffer:
                self._state = _SKIP_SPACE[self._state]
            return bool(self._buffer)
        if self._state == _REASONING:
            at = self._buffer.find(end)
            if at >= 0:
                reasoning.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(end):]
                self._state = _AFTER_END
                return True
            keep = held_back(self._buffer, [end])
            reasoning.append(self._buffer[: len(self._buffer) - keep])
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return False
        content.append(self._buffer)
        self._buffer = ""
        return False
