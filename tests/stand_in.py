"""In-process HTTP stand-ins for an upstream server (SGLang-shaped), on a free loopback port.

Usage::

    class Handler(StandInHandler):
        def do_GET(self):
            self.send_json(200, {"object": "list", "data": []})

    server = StandInServer(Handler)   # serving on server.url until server.close()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["StandInHandler", "StandInServer"]


class StandInHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler with JSON answers and chunked server-sent events."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status: int, payload: dict) -> None:
        """Answer ``payload`` as JSON with ``status``."""
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def start_events(self) -> None:
        """Start a 200 ``text/event-stream`` answer, chunked; :meth:`send_chunk` ("") ends it."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, text: str) -> None:
        """Write one HTTP chunk (an empty one ends the body)."""
        raw = text.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()


class StandInServer:
    """Serves ``handler`` on ``127.0.0.1`` in a daemon thread.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
