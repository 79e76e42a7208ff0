"""Benchmark target: examples/http_hello.py's hello world with a ``server`` header.

The example answers ``/`` with three header fields (content-type, date,
content-length); uvicorn and aiohttp send four (they add ``server``). This
daemon sends the same 14-byte body and the same four fields, so that every
server of bench/http_ws.py writes a response of about the same size (150
bytes here, 148 for uvicorn, 167 for aiohttp). Like the uvicorn app, it
answers with prebuilt constants (the fields as pairs, the body as bytes), the
fastest idiomatic form; the per-request work is otherwise the example's. Run
as::

    python -m daemonkit bench/servers/http_daemonkit.py \\
        --listen http://127.0.0.1:PORT --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon

if TYPE_CHECKING:
    from daemonkit.framing.http import HttpRequest
    from daemonkit.protocols.http.connection import HttpConnection


HEADERS = (("content-type", "text/plain; charset=utf-8"), ("server", "daemonkit"))
NOT_FOUND_HEADERS = (("server", "daemonkit"),)
BODY = b"Hello, world!\n"


class HelloDaemon(Daemon):
    """``Hello, world!`` on ``/`` as text/plain, 404 elsewhere (the example's router)."""

    listen = "http://127.0.0.1:8080"

    def on_request(self, conn: HttpConnection, request: HttpRequest) -> None:
        if request.path != "/":
            conn.respond(404, NOT_FOUND_HEADERS, b"")
            return
        conn.respond(200, HEADERS, BODY)
