"""Jump-forward's drafts: the tokens a sequence's grammar forces next, and the counts that
show what feeding them saved (:mod:`.scheduler` feeds and takes them).

Jump-forward (SGLang's name for it): where a row's grammar forces what comes next (a JSON
object's fixed keys), the matcher's forced tokens (:meth:`.GrammarMatcher.forced_tokens`)
are *drafts*: the next step feeds them after the row's token, as several tokens of that row
(``takes_drafts`` runners), and gets logits after each. The row's tokens are then chosen
one position at a time, exactly as one-token steps would choose them (same penalties,
masks, random draws and logits, the runner's rows being computed independently): a draft
is taken when that choice picks it, and the first choice that differs ends the row's step,
the untaken drafts' cells rolled back. So a step yields several tokens of a row and output
never changes (tested against ``jump_forward=False``); a forced token's log-probability is
the model's, from its own logits. What a row took in one step goes out as one delta.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.engines.embedded.sequence import Sequence

__all__ = ["MAX_DRAFT_TOKENS", "StepStats", "drafts", "fed_depth"]

MAX_DRAFT_TOKENS = 16
"""Most drafts fed after one row's token: a step's cost grows with its tokens, and a
neighbouring stream waits for the whole step."""


@dataclass
class StepStats:
    """Counts of the scheduler's work since it started (read from any thread; approximate).

    Attributes:
        decode_steps: runner decode calls.
        drafted_tokens: forced tokens fed as drafts (jump-forward).
        accepted_drafts: of those, the ones sampling picked (the rest were rolled back).
    """

    decode_steps: int = 0
    drafted_tokens: int = 0
    accepted_drafts: int = 0


def drafts(sequence: Sequence, context_length: int) -> list[int]:
    """The tokens ``sequence``'s grammar forces next (:meth:`.GrammarMatcher.forced_tokens`), as
    many as its ``max_new_tokens`` and ``context_length`` leave room for after one more chosen
    token, at most :data:`MAX_DRAFT_TOKENS`; [] without a grammar."""
    if sequence.matcher is None:
        return []
    room = min(
        MAX_DRAFT_TOKENS,
        sequence.max_new_tokens - sequence.completion_tokens - 1,
        context_length - len(sequence.prompt_ids) - sequence.completion_tokens - 1,
    )
    return sequence.matcher.forced_tokens()[:room] if room > 0 else []


def fed_depth(counts: list[int]) -> int:
    """How many drafts each row feeds this step, given each row's draft count: as many as
    every row has (all of them for a row alone).

    llama.cpp computes a batch whose rows hold different numbers of tokens as several
    ubatches, each with as many tokens of every sequence in it (``split_equal``, needed for
    the per-sequence caches), and each ubatch costs about what a one-row step costs on top
    of its rows (measured on one AMX core: 8 rows of 1 token 27 ms; one row of 5 beside 7
    of 1, 42 ms). At 8 rows, feeding every row's drafts took 25-36% more scheduler-thread
    CPU per token than feeding none, and feeding the depth half the rows reach about 12%
    more (``json_schema`` records of 14 keys, greedy, in-process; the runs' noise is about
    10%). Alone, a row feeds all its drafts: 5 tokens in 19 ms against 9.2 ms for 1.
    """
    return min(counts, default=0)
