"""HTTP/1.1 endpoints: the public face of :mod:`daemonkit.protocols.http`.

``from daemonkit.http import Router, Response`` is how a daemon uses HTTP; the
implementation lives in the protocols layer (``daemonkit/protocols/http/``),
this module only hands its public names on.
"""

from __future__ import annotations

from daemonkit.protocols.http import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    LINGER_TIMEOUT,
    MAX_PIPELINE,
    Headers,
    HttpConnection,
    HttpError,
    HttpHost,
    HttpRequest,
    Response,
    Router,
)

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
