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

__all__ = ["MAX_DRAFT_TOKENS", "StepStats", "drafts"]

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
