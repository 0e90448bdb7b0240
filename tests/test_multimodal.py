"""Image input checks: model modalities, https and ``data:`` URIs, and where they run."""

from __future__ import annotations

import base64

import anyio
import pytest

from mcp_server.catalog import ModelCard, default_entry, find_entry
from mcp_server.errors import InvalidRequest
from mcp_server.protocol.content import MAX_IMAGE_BYTES, check_image_inputs
from mcp_server.protocol.request import parse_request
from mcp_server.service import ChatService

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
VISION = find_entry("Qwen/Qwen2-VL-7B-Instruct").card()
TEXT_ONLY = default_entry().card()


def image_message(url: str, detail: str = "auto") -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]}]


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def test_vision_model_accepts_https_and_valid_data_uris():
    check_image_inputs(image_message("https://example.com/cat.png", "high"), VISION)
    check_image_inputs(image_message(data_uri(PNG), "low"), VISION)
    check_image_inputs([{"role": "user", "content": "text only"}], TEXT_ONLY)


def test_text_only_model_refuses_images_naming_the_part():
    with pytest.raises(InvalidRequest, match="does not accept image input") as caught:
        check_image_inputs(image_message("https://example.com/cat.png"), TEXT_ONLY)
    assert caught.value.param == "messages[0].content[1]"
    assert TEXT_ONLY.id in caught.value.message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/cat.png", "https URL or a data: URI"),
        ("file:///etc/passwd", "https URL or a data: URI"),
        ("data:image/png,notbase64", "must look like"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        (data_uri(b"%PDF-1.4", "application/pdf"), "is not accepted"),
        (data_uri(b"GIF89a...", "image/png"), "not a image/png image"),
        (data_uri(b"RIFF0000WAVEfmt ", "image/webp"), "not a image/webp image"),
    ],
)
def test_bad_image_urls_are_400_naming_the_part(url, message):
    with pytest.raises(InvalidRequest, match=message) as caught:
        check_image_inputs(image_message(url), VISION)
    assert caught.value.param == "messages[0].content[1]"


def test_oversized_data_uri_is_refused_before_decoding():
    huge = "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 16)
    with pytest.raises(InvalidRequest, match="larger than 20 MB"):
        check_image_inputs(image_message(huge), VISION)


class _CardOnlyEngine:
    """An engine that must never be reached: the service rejects images before it runs."""

    def __init__(self, card: ModelCard):
        self.models = [card]

    def generate(self, request):
        raise AssertionError("the engine ran")


def test_service_rejects_images_for_a_text_only_model_before_the_engine_runs():
    service = ChatService(_CardOnlyEngine(TEXT_ONLY))
    request = parse_request({"model": TEXT_ONLY.id, "messages": image_message(data_uri(PNG))})

    async def first_chunk():
        return await anext(service.stream(request, service.prepare(request)))

    with pytest.raises(InvalidRequest, match="does not accept image input"):
        anyio.run(first_chunk)


def test_text_parts_are_joined_and_developer_is_system_once_at_parse_time():
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": "of France?"}]
    image = [*parts, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    messages = parse_request({"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": parts},
        {"role": "user", "content": image},
    ]}).generation.messages
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"] == "What is the capital\nof France?"
    assert messages[2]["content"] == image  # only the image check decides about images
