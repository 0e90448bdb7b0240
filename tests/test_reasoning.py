"""The ``<think>`` parser, one-shot and streamed, on DeepSeek-R1-format output.

The samples below are written in the exact shapes DeepSeek-R1 produces (its chat template
ends the prompt with ``<think>\\n``, so the output starts inside the block; R1-0528 repeats
the tag), not captured from a running R1: no R1 can run on these machines.
"""

from __future__ import annotations

import pytest

from mcp_server.engines.embedded.decoding.reasoning import ReasoningParser, parser_opens

R1_TEMPLATE_OPENED = (
    "Okay, the user asks for 17 * 3. 17 * 3 = 51. Let me double-check: 10*3 = 30, "
    "7*3 = 21, 30 + 21 = 51.\n</think>\n\n17 × 3 = **51**."
)
R1_0528_WITH_TAG = "<think>\nThe capital of France is Paris.\n</think>\n\nParis."
R1_CUT_BY_MAX_TOKENS = "Hmm, the user wants a proof that there are infinitely many primes. Suppose"
QWEN3_NO_THINK = "Paris is the capital of France."


def streamed(kind: str, text: str, size: int, **kwargs) -> tuple[str, str]:
    parser = ReasoningParser(kind, **kwargs)
    pieces = [parser.feed(text[i:i + size]) for i in range(0, len(text), size)] + [parser.finish()]
    return "".join(r for r, _ in pieces), "".join(c for _, c in pieces)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("deepseek-r1", R1_TEMPLATE_OPENED, (R1_TEMPLATE_OPENED.split("</think>")[0], "17 × 3 = **51**.")),
        ("deepseek-r1", R1_0528_WITH_TAG, ("The capital of France is Paris.\n", "Paris.")),
        ("deepseek-r1", R1_CUT_BY_MAX_TOKENS, (R1_CUT_BY_MAX_TOKENS, "")),
        ("qwen3", QWEN3_NO_THINK, ("", QWEN3_NO_THINK)),
        ("qwen3", "<think>\nshort</think>Answer", ("short", "Answer")),
        ("qwen3", "<think>never closed", ("never closed", "")),
    ],
)
def test_one_shot_and_every_streaming_split_agree(kind, text, expected):
    assert ReasoningParser(kind).parse(text) == expected
    for size in (1, 2, 3, 7, len(text) or 1):
        assert streamed(kind, text, size) == expected


def test_partial_closing_tag_is_held_back_until_decided():
    parser = ReasoningParser("deepseek-r1")
    assert parser.feed("step one </th") == ("step one ", "")
    assert parser.in_reasoning
    assert parser.feed("ink>\n\nDone") == ("", "Done")
    assert not parser.in_reasoning
    assert parser.finish() == ("", "")


def test_a_prompt_that_did_not_open_the_block_gives_plain_content():
    prompt = "<｜User｜>Hi<｜Assistant｜>"
    assert not parser_opens("deepseek-r1", prompt)
    assert parser_opens("deepseek-r1", prompt + "<think>\n")
    parser = ReasoningParser("deepseek-r1", prompt_opened=parser_opens("deepseek-r1", prompt))
    assert parser.parse("Hello there.") == ("", "Hello there.")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        ReasoningParser("nope")
