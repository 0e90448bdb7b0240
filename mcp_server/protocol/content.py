"""Message content, the one place its rules live: normalization once at parse time, and
checks on image input before a request reaches an engine.

:func:`normalize_messages` runs when a request is parsed: null fields other than ``content``
go, role ``developer`` (OpenAI's newer name for the system role) becomes ``system``, and a
content list of text parts becomes one
string, the parts joined by newlines (vLLM's rule for text parts). A list that holds an
image stays a list, so that only :func:`check_image_inputs` decides whether the model may
read it. Engines therefore see content that is None, a string, or (for a model that
accepts images) a list of parts.

OpenAI's vision input (platform.openai.com/docs/guides/images-vision): a user message's
``content`` may be a list of parts; an image part is
``{"type": "image_url", "image_url": {"url": ..., "detail": "auto" | "low" | "high"}}``
where ``url`` is an https URL or a ``data:`` URI holding base64 image bytes (PNG, JPEG,
WEBP or non-animated GIF). The request schema already checks the part's shape and
``detail``; this module checks what a schema cannot: the model accepts images at all (its
catalog entry's ``input_modalities``), and each ``data:`` URI is base64 of an image of
the type it claims, under :data:`MAX_IMAGE_BYTES`.

Usage::

    messages = normalize_messages(body["messages"])   # when the request is parsed
    check_image_inputs(messages, card)                # raises InvalidRequest, else returns None
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any

from mcp_server.catalog import ModelCard
from mcp_server.errors import InvalidRequest

__all__ = ["IMAGE_TYPES", "MAX_IMAGE_BYTES", "check_image_inputs", "image_parts", "normalize_messages"]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest decoded image of a ``data:`` URI, in bytes (OpenAI's per-image limit, 20 MB)."""

IMAGE_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # then 4 size bytes and b"WEBP", checked below
}
"""Accepted MIME types and the signatures their bytes start with."""

_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL)


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the messages with ``developer`` read as ``system``, text-only content as one
    string, and null fields other than ``content`` dropped (clients such as the ``openai``
    SDK's ``model_dump()`` send null for "absent": ``name``, ``tool_calls``, ``refusal``).

    Args:
        messages: OpenAI chat messages, already schema-validated (they are not changed).

    Returns:
        New message dicts; content is None, a string, or a list of parts that holds an image.
    """
    normalized = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None or key == "content"}
        if message["role"] == "developer":
            message["role"] = "system"
        content = message.get("content")
        if isinstance(content, list) and all(part.get("type") == "text" for part in content):
            message["content"] = "\n".join(part["text"] for part in content)
        normalized.append(message)
    return normalized


def image_parts(messages: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(param, image_url)`` for every image part, ``param`` like ``messages[1].content[0]``."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "image_url":
                yield f"messages[{i}].content[{j}]", part.get("image_url") or {}


def check_image_inputs(messages: list[dict[str, Any]], card: ModelCard) -> None:
    """Reject image input the model cannot take or a ``data:`` URI that is not a valid image.

    Args:
        messages: OpenAI chat messages (already schema-validated).
        card: the requested model's card; images need ``"image"`` in its ``input_modalities``.

    Raises:
        InvalidRequest: the model is text-only, a URL is neither https nor ``data:``, or a
            ``data:`` URI is not base64, not an accepted image type, does not hold the
            image it claims, or is larger than :data:`MAX_IMAGE_BYTES`; ``param`` names
            the part (``messages[i].content[j]``).
    """
    for param, image_url in image_parts(messages):
        if "image" not in card.input_modalities:
            raise InvalidRequest(
                f"The model '{card.id}' does not accept image input; send text only, or "
                "choose a vision model.",
                param=param, code="image_input_not_supported",
            )
        url = str(image_url.get("url", ""))
        if url.startswith("data:"):
            _check_data_uri(url, param)
        elif not url.startswith("https://"):
            raise InvalidRequest(
                f"Image URL must be an https URL or a data: URI (got '{url[:40]}').", param=param
            )


def _check_data_uri(url: str, param: str) -> None:
    match = _DATA_URI.fullmatch(url)
    if match is None or ";base64" not in match["params"].lower():
        raise InvalidRequest("Image data URI must look like 'data:image/png;base64,<data>'.", param=param)
    mime = match["mime"].lower()
    if mime not in IMAGE_TYPES:
        raise InvalidRequest(
            f"Image type '{mime}' is not accepted; use one of: {', '.join(IMAGE_TYPES)}.", param=param
        )
    data = match["data"]
    if len(data) * 3 // 4 > MAX_IMAGE_BYTES + 2:
        raise InvalidRequest(f"Image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("Image data URI is not valid base64.", param=param) from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"Image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB.", param=param)
    webp_ok = mime != "image/webp" or raw[8:12] == b"WEBP"
    if not raw.startswith(IMAGE_TYPES[mime]) or not webp_ok:
        raise InvalidRequest(f"Image data is not a {mime} image.", param=param)
