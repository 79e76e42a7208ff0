"""HTTP/1.1 endpoints: requests as frames, answered in order.

An ``http://`` (or ``https://``, ``ws://``, ``wss://``) endpoint calls its
handler's ``on_request(conn, request)`` once per request, with an
:class:`HttpConnection` and an :class:`~daemonkit.framing.http.HttpRequest`.
Answer with ``conn.respond(status, headers, body)``, by returning a
:class:`Response`, or by streaming (``respond_stream``, ``write_body``,
``end_body``); now or later. Keep-alive, pipelining, chunked request bodies,
``Expect: 100-continue``, ``HEAD`` and the limits are the connection's job.
:class:`Router` maps method + path to handlers.

::

    from daemonkit import Daemon
    from daemonkit.http import Response, Router

    router = Router()

    @router.get("/health")
    def health(conn, request):
        return Response.text("ok\\n")

    class Api(Daemon):
        listen = "http://127.0.0.1:8080"
        on_request = router.dispatch

The request parser and the response encoder are in
:mod:`daemonkit.framing.http` (sans-IO); :mod:`daemonkit.protocols.http.host` holds
the endpoint options and the contract with :mod:`daemonkit.websocket`.
"""

from __future__ import annotations

from daemonkit.framing.http import HttpError, HttpRequest
from daemonkit.protocols.http.connection import LINGER_TIMEOUT, MAX_PIPELINE, HttpConnection
from daemonkit.protocols.http.host import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    HttpHost,
)
from daemonkit.protocols.http.response import Headers, Response
from daemonkit.protocols.http.router import Router

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "LINGER_TIMEOUT",
    "MAX_PIPELINE",
    "Headers",
    "HttpConnection",
    "HttpError",
    "HttpHost",
    "HttpRequest",
    "Response",
    "Router",
]
