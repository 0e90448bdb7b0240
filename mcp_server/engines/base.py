"""The engine interface: one small protocol that every inference runtime implements.

Nothing above this module knows which engine runs. The service turns one validated
chat-completions request into one :class:`GenerationRequest` per choice (``n`` of them)
and consumes the :class:`GenerationDelta` stream of each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from mcp_server.catalog import ModelCard

__all__ = [
    "Engine",
    "EngineLoad",
    "ModelInfo",
    "GenerationDelta",
    "GenerationRequest",
    "SamplingParams",
    "TokenLogprob",
    "ToolCallDelta",
]

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings, with OpenAI's meanings and ranges.

    Attributes:
        temperature: 0 means greedy decoding; range [0, 2].
        top_p: nucleus mass kept, (0, 1].
        top_k: keep only the k most likely tokens; 0 or None disables it.
        seed: when set, the same seed and request give the same output.
        presence_penalty: [-2, 2], subtracted once from every token already generated.
        frequency_penalty: [-2, 2], subtracted per occurrence of a generated token.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate (one choice of a chat completion).

    Attributes:
        model: the served model id the client asked for.
        messages: OpenAI chat messages, validated and normalized
            (:func:`mcp_server.protocol.content.normalize_messages`): roles as OpenAI's
            except ``developer`` (read as ``system``); content None, a string, or, for a
            model that accepts images, a list of parts.
        max_tokens: most new tokens to generate; None means what is left of the context.
        stop: up to 4 stop strings; neither a stop string nor a prefix of one is ever
            emitted in ``text`` deltas.
        sampling: the sampling settings.
        tools: OpenAI tool definitions (``[{"type": "function", "function": {...}}]``), or None.
        tool_choice: ``"none" | "auto" | "required" | {"type": "function", "function": {"name"}}``.
        parallel_tool_calls: False allows at most one tool call.
        response_format: OpenAI ``response_format`` object, or None.
        logprobs: OpenAI ``logprobs``: report the log-probability of each generated token
            (:attr:`GenerationDelta.logprobs`).
        top_logprobs: OpenAI ``top_logprobs`` (0..20): with ``logprobs``, also report this
            many most likely tokens at each position.
        tenant: who sent the request, for fairness between callers and the prefix cache's
            isolation: the id of an API key of the store (``key_...``), else ``address:<client
            address>`` (set by the gateway); None is one anonymous tenant (MCP over stdio).
        cache_salt: vLLM's ``cache_salt``: requests with the same salt may share cached
            prompt prefixes whoever sends them; without one, only requests of one tenant do.
    """

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    tenant: str | None = None
    cache_salt: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """One token and its log-probability, in OpenAI's ``logprobs.content`` terms.

    Attributes:
        token: the token's text (bytes that are not whole UTF-8 characters read as U+FFFD).
        logprob: natural log of the token's probability, <= 0.
        bytes: the token's exact raw bytes (OpenAI sends them as a list of ints).
        top_logprobs: the most likely tokens at this position, most likely first (each
            with no ``top_logprobs`` of its own); () when none were asked for.
    """

    token: str
    logprob: float
    bytes: bytes
    top_logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of one tool call, in OpenAI's streaming shape.

    The first piece of a call carries ``id`` and ``name``; later pieces carry only
    ``arguments`` text. The pieces of one call concatenate to its JSON arguments string.

    Attributes:
        index: position of the call in the message's ``tool_calls`` (0-based).
        id: ``call_...`` on the first piece, else None.
        name: the function name on the first piece, else None.
        arguments: a piece of the JSON-encoded arguments (may be empty).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class GenerationDelta:
    """A step of output for one sequence.

    Attributes:
        text: new visible content (never a partial UTF-8 character, never a stop string or
            a prefix of one that may still complete).
        prompt_tokens: tokens in the rendered prompt.
        completion_tokens: tokens generated so far (cumulative).
        finish_reason: None until the last delta, then ``stop``, ``length`` or ``tool_calls``.
        reasoning_content: new chain-of-thought text of a reasoning model (kept apart from
            ``text``), or "".
        tool_calls: tool-call pieces parsed from the output, or ().
        logprobs: with ``GenerationRequest.logprobs``, one entry per token generated in
            this step, even when its text is held back (a stop-string prefix, a partial
            UTF-8 character) or never shown (an end-of-sequence token, a stop string);
            otherwise ().
        cached_tokens: leading prompt tokens served from a prefix cache instead of
            computed (OpenAI's ``usage.prompt_tokens_details.cached_tokens``), or 0.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    reasoning_content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    cached_tokens: int = 0


@dataclass(frozen=True)
class EngineLoad:
    """How busy an engine is, in SGLang's ``/get_load`` terms.

    Attributes:
        num_reqs: sequences submitted and not finished (running plus waiting).
        num_waiting_reqs: of those, the ones waiting for a batch slot.
        num_tokens: tokens the running and waiting sequences hold (prompt plus generated).
    """

    num_reqs: int = 0
    num_waiting_reqs: int = 0
    num_tokens: int = 0

    def __add__(self, other: EngineLoad) -> EngineLoad:
        return EngineLoad(
            self.num_reqs + other.num_reqs,
            self.num_waiting_reqs + other.num_waiting_reqs,
            self.num_tokens + other.num_tokens,
        )


@dataclass(frozen=True)
class ModelInfo:
    """Where a served model comes from, in SGLang's ``/model_info`` terms.

    Attributes:
        model_path: the weights (a GGUF file, a directory, or a Hugging Face repository id).
        tokenizer_path: where the tokenizer comes from.
        model_type: the architecture family (GGUF ``general.architecture``, or the
            ``model_type`` of a Hugging Face ``config.json``), None where unknown.
        architectures: the Hugging Face model classes (``config.json``), () where unknown.
    """

    model_path: str
    tokenizer_path: str
    model_type: str | None = None
    architectures: tuple[str, ...] = ()


@runtime_checkable
class Engine(Protocol):
    """An inference runtime.

    ``generate`` yields deltas for one sequence; it raises
    :class:`mcp_server.errors.InvalidRequest` for input it cannot serve (for example a
    prompt longer than the context) before yielding anything, and
    :class:`mcp_server.errors.EngineUnavailable` when the runtime is down. Cancelling the
    iteration (closing the async generator) stops the sequence and frees its batch slot.
    """

    @property
    def models(self) -> list[ModelCard]:
        """The models this engine serves; the first is the default."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Generate one sequence, yielding deltas until one carries a finish_reason."""
        ...

    async def start(self) -> None:
        """Load the model / connect; called once before the first request."""
        ...

    def describe(self) -> dict[str, str]:
        """How the engine runs, for the start-up summary line: setting name -> value (e.g.
        ``{"runner": "llamacpp", "threads": "1"}``); complete once :meth:`start` has returned."""
        ...

    async def aclose(self) -> None:
        """Stop the runtime and release its resources."""
        ...
