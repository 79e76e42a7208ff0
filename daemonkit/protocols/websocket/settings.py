"""The WebSocket endpoint options, their defaults and their checks.

An HTTP endpoint with WebSocket routes takes these as endpoint options,
``Endpoint("http://...", websocket="/ws", max_message=1 << 20)``;
:func:`check_options` turns them into a :class:`WebSocketSettings` record
or raises :class:`~daemonkit.errors.ConfigError` naming the bad one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemonkit.errors import ConfigError
from daemonkit.framing.websocket import DEFAULT_MAX_MESSAGE, Deflate

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_COMPRESSION",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "OPTIONS",
    "WebSocketSettings",
    "check_options",
]

# websockets' ping_interval and ping_timeout are both 20 s; browsers send no
# pings of their own, and NAT and proxy idle timeouts are often 30-60 s.
DEFAULT_PING_INTERVAL = 20.0
"""Seconds between keepalive pings (None or 0: no pings)."""

DEFAULT_PING_TIMEOUT = 20.0
"""Seconds a ping waits for its pong before the connection is closed with 1011."""

# websockets' close_timeout is 10 s (Node's ws waits 30 s).
DEFAULT_CLOSE_TIMEOUT = 10.0
"""Seconds the closing handshake waits for the peer's Close frame."""

# websockets' server default (enable_server_permessage_deflate): a 4 KiB
# window and memLevel 5, about 64 KiB of zlib state per connection instead
# of 256 KiB with zlib's defaults, for most of the ratio on chat-sized text.
DEFAULT_COMPRESSION = Deflate(server_max_window_bits=12, mem_level=5)
"""The permessage-deflate parameters offered when ``compression="deflate"`` (the default)."""

OPTIONS = frozenset(
    {
        "max_message",
        "ping_interval",
        "ping_timeout",
        "close_timeout",
        "compression",
        "subprotocols",
        "origins",
    }
)
"""The endpoint options this package reads (an HTTP endpoint accepts them)."""


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """The WebSocket options of one endpoint, checked; see :func:`check_options`."""

    max_message: int = DEFAULT_MAX_MESSAGE
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    compression: Deflate | None = DEFAULT_COMPRESSION
    subprotocols: tuple[str, ...] = ()
    origins: frozenset[str] | None = None


def _seconds(options: Mapping[str, Any], name: str, default: float, where: str) -> float | None:
    value = options.get(name, default)
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: {name} must be seconds > 0, or None for none; not {value!r}")
    return float(value)


def check_options(options: Mapping[str, Any], where: str = "endpoint") -> WebSocketSettings:
    """Read the WebSocket options out of *options* (other keys are ignored).

    =================  ==============================  ===========================
    option             default                         meaning
    =================  ==============================  ===========================
    ``max_message``    1 MiB                           longest message, in bytes
    ``ping_interval``  20 s                            keepalive ping period
    ``ping_timeout``   20 s                            wait for a pong (then 1011)
    ``close_timeout``  10 s                            wait for the peer's Close
    ``compression``    ``"deflate"``                   ``None`` or a ``Deflate``
    ``subprotocols``   none                            names, in preference order
    ``origins``        any                             allowed ``Origin`` values
    =================  ==============================  ===========================

    Raises :class:`~daemonkit.errors.ConfigError` naming the option and
    *where* (the endpoint) for a bad value.
    """
    max_message = options.get("max_message", DEFAULT_MAX_MESSAGE)
    if isinstance(max_message, bool) or not isinstance(max_message, int) or max_message < 1:
        raise ConfigError(f"{where}: max_message must be a whole number of bytes >= 1")
    close_timeout = _seconds(options, "close_timeout", DEFAULT_CLOSE_TIMEOUT, where)
    if close_timeout is None:
        raise ConfigError(f"{where}: close_timeout must be seconds > 0")
    compression = options.get("compression", "deflate")
    if compression == "deflate":
        compression = DEFAULT_COMPRESSION
    elif compression is not None and not isinstance(compression, Deflate):
        raise ConfigError(
            f"{where}: compression must be 'deflate', None or a Deflate(...), not {compression!r}"
        )
    subprotocols = options.get("subprotocols", ())
    if isinstance(subprotocols, str):
        subprotocols = (subprotocols,)
    if not all(isinstance(name, str) and name for name in subprotocols):
        raise ConfigError(f"{where}: subprotocols must be names (str), not {subprotocols!r}")
    origins = options.get("origins")
    if isinstance(origins, str):
        origins = (origins,)
    if origins is not None and not all(isinstance(origin, str) for origin in origins):
        raise ConfigError(f"{where}: origins must be strings like 'https://example.com'")
    return WebSocketSettings(
        max_message=max_message,
        ping_interval=_seconds(options, "ping_interval", DEFAULT_PING_INTERVAL, where),
        ping_timeout=_seconds(options, "ping_timeout", DEFAULT_PING_TIMEOUT, where),
        close_timeout=close_timeout,
        compression=compression,
        subprotocols=tuple(subprotocols),
        origins=None if origins is None else frozenset(origins),
    )
