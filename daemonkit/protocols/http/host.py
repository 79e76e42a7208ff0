"""HttpHost: the host of an ``http``/``https``/``ws``/``wss`` endpoint.

The daemon makes one per HTTP endpoint (see ``daemonkit.daemon._host_for``).
It reads the endpoint's options, gives each connection an
:class:`~daemonkit.framing.http.HttpRequestFramer` with the endpoint's
limits, resolves the handler's ``on_request`` once, and decides which
upgrade requests go to the WebSocket side.

Options (``Endpoint("http://...", max_body=..., ...)``), each checked when
the daemon is created:

=====================  =======================================================
``max_head``           longest request head in bytes (431)
``max_headers``        most header fields (431)
``max_body``           largest request body in bytes (413)
``max_target``         longest request target in bytes (414)
``header_timeout``     seconds for a request head to arrive, and the longest
                       silence inside a body (408); None: no deadline
``keepalive_timeout``  seconds an idle keep-alive connection is kept; None:
                       for ever
``websocket``          the WebSocket routes: a path, a list of paths (served
                       by the endpoint's handler) or a dict path -> handler
=====================  =======================================================

It also takes ``tls_handshake_timeout`` (https) and the WebSocket options.

The hand-over to WebSocket, a contract with :mod:`daemonkit.websocket`:

* An upgrade request (``request.upgrade == "websocket"``) whose path is a
  WebSocket route is not given to ``on_request``. Once every request before
  it is answered, the host calls, from ``daemonkit.websocket`` (imported
  then)::

      accept(conn, request, handler, host=http_host, trailing=framer.trailing)

  *handler* is the route's handler, *trailing* the bytes the client sent
  after the request head (they belong to the WebSocket stream).
* Before the call the connection stops being HTTP: its deadline timer is
  cancelled and its ``data_received`` becomes plain
  :class:`~daemonkit.core.connection.Connection` behaviour. Reading is paused
  (the framer paused at the upgrade); the host resumes it after ``accept``
  returns if the connection was rehosted.
* ``accept`` writes the ``101`` response (``conn.write``) and calls
  ``conn._rehost(ws_host, ws_framer)`` before it returns, and may set
  ``conn._upgraded`` to an object with ``close(code, reason, timeout)``:
  ``conn.close(timeout, code=..., reason=...)`` goes to it from then on.
  To refuse the handshake it writes the HTTP error and closes the
  connection instead. An exception from ``accept`` goes to ``on_error``
  and closes the connection.
* Options: the host accepts ``daemonkit.websocket.OPTIONS`` as endpoint
  options, and for an endpoint with WebSocket routes calls
  ``daemonkit.websocket.check_options(options, str(endpoint))`` when the
  daemon is created (a bad value is a ConfigError then, not at the first
  upgrade), keeping the result as ``host.websocket_settings``.
* Routes: for ``ws://``/``wss://`` endpoints without a ``websocket``
  option every path is a route (served by the endpoint's handler); else
  only the option's paths. An upgrade request to any other path gets
  ``404`` and a close; a plain request to a route path is ordinary HTTP;
  an upgrade to another protocol (``h2c``...) is ignored, as RFC 9110 7.8
  allows, and the request served as plain HTTP.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any, ClassVar

from daemonkit.core.connection import Connection
from daemonkit.core.endpoints import DEFAULT_TLS_HANDSHAKE_TIMEOUT, Endpoint
from daemonkit.errors import ConfigError
from daemonkit.framework.handler import serve_handler
from daemonkit.framework.hosts import EndpointOwner, StreamHost
from daemonkit.framing.http import (
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_TARGET,
    HttpRequest,
    HttpRequestFramer,
)
from daemonkit.protocols.http.connection import HttpConnection
from daemonkit.protocols.http.response import Response

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_KEEPALIVE_TIMEOUT", "HttpHost"]

# HAProxy's documentation recommends "timeout http-request 10s" against
# slowloris; nginx's client_header_timeout is 60 s, Apache's RequestReadTimeout
# header=20-40, Node's headersTimeout 60 s: generous for a daemon's API.
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds from a request's first byte to the end of its head (408 after)."""

# nginx's keepalive_timeout is 75 s (uvicorn's 5 s, Apache's KeepAliveTimeout 5 s).
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle keep-alive connection waits for its next request."""

_LIMITS = (
    ("max_head", DEFAULT_MAX_HEAD),
    ("max_headers", DEFAULT_MAX_HEADERS),
    ("max_body", DEFAULT_MAX_BODY),
    ("max_target", DEFAULT_MAX_TARGET),
)
_WS_SCHEMES = frozenset({"ws", "wss"})
_NOT_FOUND = Response.text("404 Not Found\n", 404)
_CLOSE = ("connection", "close")
_TEXT = ("content-type", "text/plain; charset=utf-8")


def _websocket() -> Any:
    """The :mod:`daemonkit.websocket` module, or None if it cannot be imported.

    Imported on use, never by this module's own imports, so that either
    package may import the other first.
    """
    try:
        return importlib.import_module("daemonkit.websocket")
    except ImportError:
        return None


def _websocket_options() -> frozenset[str]:
    """The endpoint options of the WebSocket side (none without it)."""
    return frozenset(getattr(_websocket(), "OPTIONS", ()))


def _no_on_request(conn: HttpConnection, request: HttpRequest) -> Response:
    """``on_request`` of a handler that defines none: every path is 404."""
    return _NOT_FOUND


def _on_read(conn: Connection, request: Any) -> None:
    """The host's ``_on_read``: a request frame delivered the generic way joins the queue."""
    assert isinstance(conn, HttpConnection)
    conn._queue.append(request)
    conn._pump()


class HttpHost(StreamHost):
    """The host of an HTTP endpoint: settings, ``on_request``, WebSocket routes.

    Its connections are :class:`~daemonkit.http.HttpConnection` objects,
    each with an :class:`~daemonkit.framing.http.HttpRequestFramer` built
    from the endpoint's limits. The handler's ``on_request(conn, request)``
    is looked up once; a handler without one answers ``404`` to every
    request that is not a WebSocket upgrade (so a ``ws://`` endpoint needs
    none). See the module documentation for the options and the WebSocket
    hand-over.
    """

    connection_class: ClassVar[type[Connection]] = HttpConnection

    #: The endpoint options this host reads: HTTP's and those of
    #: :mod:`daemonkit.websocket` (asked again when the options are checked,
    #: in case that module could not be imported yet when this one was).
    OPTIONS: ClassVar[frozenset[str]] = (
        StreamHost.OPTIONS
        | frozenset(
            {
                "max_head",
                "max_headers",
                "max_body",
                "max_target",
                "header_timeout",
                "keepalive_timeout",
                "websocket",
            }
        )
        | _websocket_options()
    )

    def __init__(self, daemon: EndpointOwner, endpoint: Endpoint) -> None:
        self.max_head = DEFAULT_MAX_HEAD
        self.max_headers = DEFAULT_MAX_HEADERS
        self.max_body = DEFAULT_MAX_BODY
        self.max_target = DEFAULT_MAX_TARGET
        self.header_timeout: float | None = DEFAULT_HEADER_TIMEOUT
        self.keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT
        self._websocket_routes: dict[str, Any] = {}
        self._websocket_everywhere = False
        #: What ``daemonkit.websocket.check_options`` made of the options,
        #: for an endpoint with WebSocket routes (None otherwise).
        self.websocket_settings: Any = None
        super().__init__(daemon, endpoint)  # calls check_options()
        limits = {
            "max_head": self.max_head,
            "max_headers": self.max_headers,
            "max_body": self.max_body,
            "max_target": self.max_target,
        }
        self._framer_factory = functools.partial(HttpRequestFramer, **limits)
        self._on_read = _on_read
        self._on_frames = None
        on_request = getattr(self.handler, "on_request", None)
        if on_request is not None and not callable(on_request):
            raise ConfigError(f"{type(self.handler).__name__}.on_request must be a method")
        self._on_request: Callable[[HttpConnection, HttpRequest], object] = (
            on_request if on_request is not None else _no_on_request
        )
        self._date_second = -1
        self._date_field = ("date", "")

    def check_options(self) -> None:
        """Read the endpoint's options; :class:`ConfigError` for a bad or unknown one."""
        endpoint = self.endpoint
        options = endpoint.options
        known = self.OPTIONS | _websocket_options()
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"{endpoint}: unknown endpoint option(s): {', '.join(unknown)} "
                f"(this endpoint takes: {', '.join(sorted(known))})"
            )
        timeout = options.get("tls_handshake_timeout", DEFAULT_TLS_HANDSHAKE_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{endpoint}: tls_handshake_timeout must be seconds > 0")
        self.tls_handshake_timeout = float(timeout)
        for name, default in _LIMITS:
            value = options.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{endpoint}: {name} must be a whole number >= 1, not {value!r}")
            setattr(self, name, value)
        self.header_timeout = self._seconds("header_timeout", DEFAULT_HEADER_TIMEOUT)
        self.keepalive_timeout = self._seconds("keepalive_timeout", DEFAULT_KEEPALIVE_TIMEOUT)
        self._read_routes(options.get("websocket"))
        if self._websocket_routes or self._websocket_everywhere:
            # Refuse a bad WebSocket option now, not at the first upgrade.
            check = getattr(_websocket(), "check_options", None)
            if check is not None:
                self.websocket_settings = check(options, str(endpoint))

    def _seconds(self, name: str, default: float) -> float | None:
        value = self.endpoint.options.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{self.endpoint}: {name} must be seconds > 0 or None, not {value!r}")
        return float(value)

    def _read_routes(self, routes: Any) -> None:
        """Read the ``websocket`` option into path -> handler."""
        endpoint = self.endpoint
        self._websocket_everywhere = routes is None and endpoint.address.scheme in _WS_SCHEMES
        if routes is None:
            return
        if isinstance(routes, str):
            routes = {routes: self.handler}
        elif isinstance(routes, list | tuple | set | frozenset):
            routes = dict.fromkeys(routes, self.handler)
        elif not isinstance(routes, Mapping):
            raise ConfigError(
                f"{endpoint}: websocket must be a path, a list of paths or a dict "
                f"path -> handler, not {routes!r}"
            )
        for path, handler in routes.items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigError(f"{endpoint}: websocket path {path!r} must start with '/'")
            if handler is None:
                raise ConfigError(f"{endpoint}: websocket path {path!r} has no handler")
            serve_handler(handler, self.daemon)
        self._websocket_routes = dict(routes)

    # -- what connections use ----------------------------------------------

    def websocket_handler(self, path: str) -> Any:
        """The handler of the WebSocket route *path*, or None if it is not one."""
        handler = self._websocket_routes.get(path)
        if handler is None and self._websocket_everywhere:
            return self.handler
        return handler

    def _date(self) -> tuple[str, str]:
        """The ``Date`` field (RFC 9110 6.6.1), made once a second."""
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date_field = ("date", formatdate(second, usegmt=True))
        return self._date_field

    def _upgrade(self, conn: HttpConnection, request: HttpRequest) -> bool:
        """Deal with an upgrade request; True if it is answered or handed over.

        False means: serve it as a plain request (the upgrade is declined).
        """
        if request.upgrade != "websocket":
            conn._decline_upgrade(request)
            return False
        handler = self.websocket_handler(request.path)
        if handler is None:
            conn._current = request
            conn.respond(404, [_CLOSE, _TEXT], b"404 Not Found: not a WebSocket path\n")
            return True
        accept = getattr(_websocket(), "accept", None)
        if accept is None:
            conn.log.warning("WebSocket upgrade, but daemonkit.websocket is not available")
            conn._current = request
            conn.respond(501, [_CLOSE, _TEXT], b"501 Not Implemented\n")
            return True
        conn._hand_over(accept, request, handler)
        return True
