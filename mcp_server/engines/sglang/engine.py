"""The SGLang engine: forwards each generation to SGLang's OpenAI-compatible endpoint.

Two modes (see :meth:`SGLangEngine.from_settings`):

* attach: ``--sglang-url URL`` names an SGLang server, or an SGLang router in front of many
  workers, that is already running; the served models come from its ``GET /v1/models``;
* launch: ``python -m sglang.launch_server`` runs as a managed child on a free loopback
  port (:mod:`.sglang_launcher`), with flags chosen from the model catalog.

Each :class:`~.base.GenerationRequest` becomes one streamed ``POST /v1/chat/completions``
(:func:`sglang_body`); the SSE chunks become :class:`~.base.GenerationDelta` s as they
arrive (:func:`read_deltas`). Where SGLang differs from OpenAI (docs.sglang.ai "OpenAI
APIs"; measured on 0.5.23, see docs/architecture.md) the answer is normalised here:

* its flat error body ``{"object": "error", "message", "type", "param", "code": <status>}``
  (and the ``{"error": {...}}`` event of a failing stream) becomes a
  :class:`~mcp_server.errors.ServiceError` with that status (:func:`upstream_error`);
* ``content: ""`` next to tool calls is dropped, and a ``stop`` after tool calls becomes
  ``tool_calls``; the first piece of each call carries its id and name, later ones only
  arguments;
* tool argument schemas are enforced: every forwarded tool has ``strict: true`` (SGLang
  constrains arguments only when asked);
* ``logprobs`` / ``top_logprobs`` are forwarded, and each chunk's ``logprobs.content``
  (OpenAI's shape) becomes :attr:`~.base.GenerationDelta.logprobs`;
* SGLang unreachable, not answering within ``sglang_timeout`` or closing a stream early
  is :class:`~mcp_server.errors.EngineUnavailable` (503), never a hang.

Who parses tool calls and reasoning (``--sglang-parsers``): ``chatcap`` (the default) asks
SGLang for the raw text under the family's structural tag and parses it with the family
table (:mod:`.parsing`); SGLang must then run without ``--tool-call-parser``, which an
attached server's ``GET /server_info`` tells (a server that has one, or no ``/server_info``
to read, e.g. a router, is answered by SGLang's parsers, with a warning). ``sglang``: SGLang's
own parsers answer and the mapping above applies.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from mcp_server.catalog import ModelCard, find_entry
from mcp_server.engines.base import GenerationDelta, GenerationRequest, TokenLogprob, ToolCallDelta
from mcp_server.engines.sglang.launcher import Launcher, free_port, launch_command, require_sglang, resolve_model
from mcp_server.engines.sglang.parsing import RawFormats, served_formats
from mcp_server.errors import EngineUnavailable, InvalidRequest, ModelNotFound, ServiceError
from mcp_server.settings import Settings

__all__ = ["SGLangEngine", "read_deltas", "sglang_body", "upstream_error"]

logger = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls"}
"""SGLang finish reasons -> ours; ``abort`` (and anything else) is an error."""


def sglang_body(request: GenerationRequest, raw: RawFormats | None = None) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body for one sequence.

    Args:
        request: the generation request (one choice).
        raw: the served model's formats when chatcap parses the raw text (:mod:`.parsing`);
            None: SGLang's parsers answer.

    Returns:
        An OpenAI request body (SGLang's ``ChatCompletionRequest``): ``stream`` with
        ``stream_options.include_usage`` and SGLang's ``continuous_usage_stats`` (token
        counts on every chunk), ``n: 1``, and tools marked ``strict``; with ``raw``, the
        raw-text fields of :meth:`RawFormats.body`.

    Raises:
        InvalidRequest: with ``raw``, tools the served model's format cannot parse or constrain.
    """
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "n": 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    optional = {
        "max_completion_tokens": request.max_tokens,
        "stop": list(request.stop) or None,
        "seed": sampling.seed,
        "top_k": sampling.top_k,
        "response_format": request.response_format,
        "logprobs": request.logprobs or None,
        "top_logprobs": request.top_logprobs if request.logprobs else None,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if request.tools:
        body["tools"] = [
            {**tool, "function": {**tool["function"], "strict": True}} for tool in request.tools
        ]
        body["parallel_tool_calls"] = request.parallel_tool_calls
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
    if raw is not None:
        body.update(raw.body(request))
    return {key: value for key, value in body.items() if value is not None}


def upstream_error(status: int, payload: Any) -> ServiceError:
    """Turn an SGLang (or OpenAI-shaped) error answer into our error with that status.

    Args:
        status: the HTTP status, or the ``code`` of an in-stream error event.
        payload: the decoded body: SGLang's flat ``{"object": "error", "message", ...}``,
            an ``{"error": {...}}`` envelope, FastAPI's ``{"detail": ...}``, or text.

    Returns:
        :class:`InvalidRequest` (400, 413, 422...), :class:`ModelNotFound` (404),
        :class:`EngineUnavailable` (401/403: chatcap's access to SGLang, 429, 502-504), or a
        :class:`ServiceError` carrying ``status`` for the rest.
    """
    error = payload.get("error", payload) if isinstance(payload, dict) else {"message": str(payload)}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message") or error.get("detail") or f"SGLang answered HTTP {status}.")
    param = error.get("param") if isinstance(error.get("param"), str) else None
    code = error.get("code") if isinstance(error.get("code"), str) else None
    if status == 404:
        return ModelNotFound(message, param=param or "model")
    if status in (401, 403):
        return EngineUnavailable(f"SGLang refused chatcap's request (HTTP {status}): {message}")
    if status in (429, 502, 503, 504):
        return EngineUnavailable(f"SGLang is unavailable (HTTP {status}): {message}")
    if 400 <= status < 500:
        exc: ServiceError = InvalidRequest(message, param=param, code=code)
    else:
        exc = ServiceError(f"SGLang failed: {message}", param=param, code=code)
    exc.status_code = status
    return exc


async def read_deltas(lines: AsyncIterator[str]) -> AsyncIterator[GenerationDelta]:
    """Map SGLang's SSE lines for one sequence to generation deltas, as they arrive.

    Args:
        lines: the response body's lines (``data: {...}`` events, blank lines, ``[DONE]``).

    Yields:
        Deltas with text, reasoning or tool-call pieces; the last one (held back until the
        usage chunk or ``[DONE]``) carries ``finish_reason`` and the final token counts.

    Raises:
        ServiceError: an error event in the stream (with its status); an ``abort``
            finish, a malformed event or a stream that ended before its finish chunk
            (:class:`EngineUnavailable`).
    """
    prompt_tokens = completion_tokens = cached_tokens = 0
    finish: str | None = None
    calls: dict[int, str] = {}  # index -> id, for calls already started
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = orjson.loads(data)
        except ValueError:
            raise EngineUnavailable(f"SGLang sent a malformed stream event: {data[:200]!r}") from None
        if "error" in chunk:
            error = chunk["error"]
            status = error.get("code") if isinstance(error, dict) else None
            raise upstream_error(status if isinstance(status, int) else 500, chunk)
        usage = chunk.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens", prompt_tokens)
        completion_tokens = usage.get("completion_tokens", completion_tokens)
        cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", cached_tokens)
        for choice in chunk.get("choices", ()):
            delta = choice.get("delta") or {}
            pieces = tuple(_tool_call_piece(call, calls) for call in delta.get("tool_calls") or ())
            text, reasoning = delta.get("content") or "", delta.get("reasoning_content") or ""
            logprobs = tuple(_token_logprob(e) for e in (choice.get("logprobs") or {}).get("content") or ())
            if text or reasoning or pieces or logprobs:
                yield GenerationDelta(text, prompt_tokens, completion_tokens, None, reasoning, pieces, logprobs)
            if choice.get("finish_reason") is not None:
                finish = choice["finish_reason"]
    if finish is None:
        raise EngineUnavailable("SGLang stopped in the middle of the answer (the stream ended early).")
    if finish not in _FINISH:
        raise EngineUnavailable(f"SGLang ended the generation with finish_reason '{finish}'.")
    reason = "tool_calls" if calls and finish == "stop" else _FINISH[finish]
    yield GenerationDelta("", prompt_tokens, completion_tokens, reason, cached_tokens=cached_tokens)


def _token_logprob(entry: dict[str, Any]) -> TokenLogprob:
    """One OpenAI ``logprobs.content`` entry; without ``bytes``, the token's UTF-8 encoding."""
    raw = bytes(entry["bytes"]) if entry.get("bytes") is not None else entry["token"].encode()
    tops = tuple(_token_logprob(top) for top in entry.get("top_logprobs") or ())
    return TokenLogprob(entry["token"], float(entry["logprob"]), raw, tops)


def _tool_call_piece(call: dict[str, Any], started: dict[int, str]) -> ToolCallDelta:
    """Normalise one streamed tool-call piece: id and name only on a call's first piece."""
    index = int(call.get("index") or 0)
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    if index in started:
        return ToolCallDelta(index, arguments=arguments)
    started[index] = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
    return ToolCallDelta(index, started[index], function.get("name"), arguments)


class SGLangEngine:
    """An :class:`~mcp_server.engines.base.Engine` backed by an SGLang server.

    Args:
        base_url: the SGLang server or router, ``http://host:port`` (no ``/v1``).
        launcher: in launch mode, the child process manager (started by :meth:`start`).
        cards: in launch mode, the served model; in attach mode None (read at start).
        timeout: seconds for connecting, and between two parts of an answer.
        parsers: ``chatcap`` (parse SGLang's raw text with the family table, when the server
            allows it: see :meth:`start`) or ``sglang`` (its own parsers answer).
        formats: ``(tool_call_parser, reasoning_parser)`` flags for every served model
            (family-table names); None: the catalog's, else the server's reasoning parser.
    """

    def __init__(
        self,
        base_url: str,
        *,
        launcher: Launcher | None = None,
        cards: list[ModelCard] | None = None,
        timeout: float = 60.0,
        parsers: str = "sglang",
        formats: tuple[str | None, str | None] = (None, None),
    ):
        self.base_url = base_url.rstrip("/")
        self.launcher = launcher
        self.timeout = timeout
        self.parsers = parsers
        self._formats = formats
        self._raw: dict[str, RawFormats] = {}  # served model id -> formats, when chatcap parses
        self._cards = list(cards or [])
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SGLangEngine:
        """Attach to ``settings.sglang_url``, or prepare to launch SGLang.

        Raises:
            EngineUnavailable: launch mode without SGLang installed (names the extra to
                install), before anything starts.
        """
        options = {
            "timeout": settings.sglang_timeout,
            "parsers": settings.sglang_parsers,
            "formats": (settings.tool_call_parser, settings.reasoning_parser),
        }
        if settings.sglang_url:
            return cls(settings.sglang_url, **options)
        require_sglang()
        port = free_port()
        _, served, entry = resolve_model(settings)
        card = entry.card(served, settings.context_length) if entry else ModelCard(id=served)
        launcher = Launcher(launch_command(settings, port), f"http://127.0.0.1:{port}")
        return cls(launcher.base_url, launcher=launcher, cards=[card], **options)

    @property
    def models(self) -> list[ModelCard]:
        """The served models (attach mode: known after :meth:`start`)."""
        return list(self._cards)

    def describe(self) -> dict[str, str]:
        """The start-up summary's settings: the SGLang server, whether this process launched it, who parses."""
        return {
            "engine": "sglang",
            "SGLang": f"{self.base_url} ({'launched' if self.launcher else 'attached'})",
            "parsers": self.parsers,
        }

    async def start(self) -> None:
        """Launch SGLang (launch mode), open the HTTP client, read the served models and
        settle who parses (:meth:`_settle_parsers`).

        Raises:
            EngineUnavailable: SGLang did not start, or cannot be reached at ``base_url``.
        """
        if self.launcher is not None:
            await self.launcher.start()
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        # No cap on connections: SGLang queues requests itself; a pool cap would add a second queue.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits)
        if not self._cards:
            self._cards = await self._served_models()
        await self._settle_parsers()

    async def aclose(self) -> None:
        """Close the HTTP client and stop a launched SGLang."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.launcher is not None:
            await self.launcher.aclose()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream one sequence from SGLang (see the module docstring for the mapping).

        Raises:
            InvalidRequest, ModelNotFound: SGLang rejected the request (4xx).
            EngineUnavailable: SGLang is down, timed out, or stopped mid-answer.
            ServiceError: SGLang failed (5xx), with its status.
        """
        if self._client is None:
            raise EngineUnavailable("The SGLang engine is not started.")
        raw = self._raw.get(request.model)
        body = sglang_body(request, raw)
        try:
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise upstream_error(response.status_code, _decode(await response.aread()))
                deltas = read_deltas(response.aiter_lines())
                async for delta in raw.parse(request, deltas) if raw else deltas:
                    yield delta
        except httpx.TimeoutException:
            raise EngineUnavailable(
                f"SGLang at {self.base_url} did not answer within {self.timeout:g} s."
            ) from None
        except httpx.ConnectError as exc:
            raise EngineUnavailable(self._unreachable(exc)) from None
        except httpx.TransportError as exc:
            raise EngineUnavailable(
                f"SGLang at {self.base_url} broke off the answer: {type(exc).__name__}: {exc}"
            ) from None

    async def _settle_parsers(self) -> None:
        """With ``parsers="chatcap"``: read the server's flags (``GET /server_info``, SGLang's
        resolved server arguments) and give each served model its formats; a server that runs
        ``--tool-call-parser``, or that does not say, keeps SGLang's parsers (logged)."""
        if self.parsers != "chatcap":
            return
        info = await self._server_info()
        if info is None or info.get("tool_call_parser"):
            why = (f"runs --tool-call-parser {info['tool_call_parser']}" if info
                   else "does not say whether it runs a tool-call parser (no GET /server_info)")
            logger.warning("SGLang at %s %s: its own parsers answer; start it without --tool-call-parser "
                           "for chatcap's (README: SGLang)", self.base_url, why)
            self.parsers = "sglang"
            return
        assert self._client is not None
        self._raw = await served_formats(self._client, self._cards, info, self._formats)

    async def _server_info(self) -> dict[str, Any] | None:
        """SGLang's ``GET /server_info`` (its server arguments), or None when there is none."""
        assert self._client is not None
        try:
            response = await self._client.get("/server_info")
            info = response.json() if response.status_code == 200 else None
        except (httpx.TransportError, ValueError):
            return None
        return info if isinstance(info, dict) and "tool_call_parser" in info else None

    async def _served_models(self) -> list[ModelCard]:
        assert self._client is not None
        try:
            response = await self._client.get("/v1/models")
        except httpx.TransportError as exc:
            raise EngineUnavailable(self._unreachable(exc)) from None
        if response.status_code != 200:
            raise upstream_error(response.status_code, _decode(response.content))
        cards = [_card(model) for model in response.json().get("data", ())]
        if not cards:
            raise EngineUnavailable(f"SGLang at {self.base_url} serves no model.")
        return cards

    def _unreachable(self, exc: Exception) -> str:
        state = f" (the launched server is {self.launcher.status})" if self.launcher else ""
        return f"Cannot reach SGLang at {self.base_url}{state}: {type(exc).__name__}: {exc}"


def _card(model: dict[str, Any]) -> ModelCard:
    """A served model's card: the catalog's facts for it, else text-only defaults."""
    model_id = str(model["id"])
    entry = find_entry(model_id) or (find_entry(str(model["root"])) if model.get("root") else None)
    if entry is None:
        logger.warning("served model %s is not in the catalog: treated as text-only", model_id)
        return ModelCard(id=model_id, owned_by=str(model.get("owned_by", "sglang")),
                         context_length=model.get("max_model_len") or ModelCard.context_length)
    return entry.card(model_id, model.get("max_model_len"))


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
