"""Reasoning through the family table, one-shot and streamed, on DeepSeek-R1-format output.

The samples below are written in the exact shapes DeepSeek-R1 produces (its chat template
ends the prompt with ``<think>\\n``, so the output starts inside the block; R1-0528 repeats
the tag), not captured from a running R1: no R1 can run on these machines.
"""

from __future__ import annotations

import pytest

from mcp_server.families import REASONING_PARSERS, collect, make_splitter, parse
from mcp_server.families.base import prompt_opens

R1_PROMPT = "<｜User｜>Hi<｜Assistant｜><think>\n"
R1_TEMPLATE_OPENED = (
    "Okay, the user asks for 17 * 3. 17 * 3 = 51. Let me double-check: 10*3 = 30, "
    "7*3 = 21, 30 + 21 = 51.\n</think>\n\n17 × 3 = **51**."
)
R1_0528_WITH_TAG = "<think>\nThe capital of France is Paris.\n</think>\n\nParis."
R1_CUT_BY_MAX_TOKENS = "Hmm, the user wants a proof that there are infinitely many primes. Suppose"
QWEN3_NO_THINK = "Paris is the capital of France."


def split(kind: str, text: str, size: int, prompt: str) -> tuple[str | None, str | None]:
    splitter = make_splitter(None, kind, None, prompt)
    events = [e for i in range(0, len(text), size) for e in splitter.feed(text[i : i + size])] + splitter.finish()
    content, reasoning, _ = collect(events)
    return reasoning, content


@pytest.mark.parametrize(
    ("kind", "prompt", "text", "expected"),
    [
        ("deepseek-r1", R1_PROMPT, R1_TEMPLATE_OPENED, (R1_TEMPLATE_OPENED.split("\n</think>")[0], "17 × 3 = **51**.")),
        ("deepseek-r1", R1_PROMPT, R1_0528_WITH_TAG, ("The capital of France is Paris.", "Paris.")),
        ("deepseek-r1", R1_PROMPT, R1_CUT_BY_MAX_TOKENS, (R1_CUT_BY_MAX_TOKENS, None)),
        ("qwen3", "", QWEN3_NO_THINK, (None, QWEN3_NO_THINK)),
        ("qwen3", "", "<think>\nshort</think>Answer", ("short", "Answer")),
        ("qwen3", "", "<think>never closed", ("never closed", None)),
        ("mistral", "[/INST]", "[THINK]Plan.[/THINK]Done.", ("Plan.", "Done.")),
        ("gemma4", "<|turn>model\n", "<|channel>thought\nHm.<channel|>Yes.", ("Hm.", "Yes.")),
    ],
)
def test_one_shot_and_every_streaming_split_agree(kind, prompt, text, expected):
    assert parse(None, kind, text, prompt=prompt)[1::-1] == expected
    for size in (1, 2, 3, 7, len(text) or 1):
        assert split(kind, text, size, prompt) == expected


def test_partial_closing_tag_is_held_back_until_decided():
    splitter = make_splitter(None, "deepseek-r1", None, R1_PROMPT)
    assert collect(splitter.feed("step one </th"))[:2] == (None, "step one")
    assert collect(splitter.feed("ink>\n\nDone"))[:2] == ("Done", None)
    assert collect(splitter.finish())[:2] == (None, None)


def test_a_prompt_that_did_not_open_the_block_gives_plain_content():
    fmt = REASONING_PARSERS["deepseek-r1"]
    assert not prompt_opens(fmt, "<｜User｜>Hi<｜Assistant｜>")
    assert prompt_opens(fmt, R1_PROMPT)
    assert not prompt_opens(fmt, "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert parse(None, "deepseek-r1", "Hello there.", prompt="<｜User｜>Hi<｜Assistant｜>")[:2] == ("Hello there.", None)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown reasoning parser"):
        make_splitter(None, "nope", None)
