"""What one generation has produced so far, and the one log line it leaves when it ends."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Meter"]

request_log = logging.getLogger("chatcap.requests")
"""One INFO line per admitted request, written when it settles (:meth:`Meter.log`)."""


@dataclass
class Meter:
    """What one generation has produced so far (times from ``time.monotonic()``)."""

    model: str
    started: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    completion_id: str | None = None
    first_chunk: float | None = None
    chunks: list[dict[str, Any]] | None = None
    """The chunks sent, kept only for an idempotent request (its answer is stored)."""

    def update(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens, self.completion_tokens, self.cached_tokens = prompt_tokens, completion_tokens, cached_tokens

    def log(self, request_id: str | None, key_id: str | None, status: str, error_code: str | None) -> None:
        """Log the request's line: its id (the ledger row's; a new one without a ledger), key id
        (never the secret; ``-`` without one), model, status, tokens, time to first chunk and
        total time in milliseconds."""
        request_log.info(
            "request %s key=%s model=%s status=%s%s prompt_tokens=%d completion_tokens=%d cached_tokens=%d "
            "ttft_ms=%s total_ms=%d",
            request_id or "req_" + secrets.token_hex(12), key_id or "-", self.model, status,
            f" error={error_code}" if error_code else "", self.prompt_tokens, self.completion_tokens,
            self.cached_tokens, "-" if self.first_chunk is None else round((self.first_chunk - self.started) * 1000),
            round((time.monotonic() - self.started) * 1000),
        )
