"""The playground: a small chat page at ``/`` that uses this server's own ``/v1`` API.

Three static files in ``static/`` (HTML, JavaScript, CSS; no framework, no build step, nothing
fetched from elsewhere, so it works offline). The page streams answers with ``fetch`` and
parses the server-sent events itself; it offers the served models (``GET /v1/models``), a
system prompt, temperature, max tokens, a JSON-schema mode, a tools mode that shows the
returned ``tool_calls``, and time to first token, tokens per second and usage. When ``/v1``
answers 401 it shows an API key field, whose value stays in the browser's ``localStorage``.
The page itself needs no key: it holds nothing but code.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["PLAYGROUND_PATH", "playground_routes"]

PLAYGROUND_PATH = "/"
STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_HEADERS = {
    # Only this server's own scripts, styles and API: an injected answer cannot load or send anything.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def playground_routes() -> list[Route]:
    """The routes of the page: ``GET /`` (the HTML) and ``GET /playground/{name}`` (its script
    and style sheet; another name is 404). The files are read once, here.

    Raises:
        FileNotFoundError: a file of ``static/`` is missing (a broken installation).
    """
    files = {path.name: (path.read_bytes(), _TYPES[path.suffix]) for path in STATIC.iterdir() if path.suffix in _TYPES}
    page = files.pop("index.html")

    async def index(request: Request) -> Response:
        return Response(page[0], media_type=page[1], headers=_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            raise HTTPException(404, f"Unknown playground file '{name}'")
        body, media_type = files[name]
        return Response(body, media_type=media_type, headers=_HEADERS)

    return [Route(PLAYGROUND_PATH, index, methods=["GET"]), Route("/playground/{name}", asset, methods=["GET"])]
