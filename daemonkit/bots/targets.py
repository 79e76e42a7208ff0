"""Which bot class speaks which target, and how a bot's connection is opened.

Every bot class names the target schemes it speaks (:attr:`Bot.schemes
<daemonkit.bots.Bot.schemes>`): a plain :class:`~daemonkit.bots.Bot` speaks
``tcp``, ``unix`` and ``tls``, :class:`~daemonkit.bots.HttpBot` ``http`` and
``https``, :class:`~daemonkit.bots.WebSocketBot` ``ws`` and ``wss``.
:func:`check_target` refuses any other pairing before the run, naming the
class to use: a WebSocket endpoint is never spoken to as raw TCP.

:func:`connector` opens each bot's connection: TCP for ``tcp``, ``http``
and ``ws``; TLS for ``tls``, ``https`` and ``wss``, verifying the server's
certificate against the system's CAs, or the class's ``cafile``, or not at
all when the class says ``verify = False`` (for tests with a private
certificate); a run's ``cafile`` and ``verify`` (``--cafile``,
``--insecure``) override the class's.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from daemonkit.core.endpoints import Address, parse_endpoint
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from daemonkit.bots.bot import Bot
    from daemonkit.bots.runner import Fleet
    from daemonkit.core.connection import Connection

__all__ = ["BOT_FOR_SCHEME", "check_target", "client_context", "connector", "split_target"]

BOT_FOR_SCHEME = {
    "tcp": "daemonkit.bots.Bot",
    "unix": "daemonkit.bots.Bot",
    "tls": "daemonkit.bots.Bot",
    "http": "daemonkit.bots.HttpBot",
    "https": "daemonkit.bots.HttpBot",
    "ws": "daemonkit.bots.WebSocketBot",
    "wss": "daemonkit.bots.WebSocketBot",
}
"""The bot class that speaks each target scheme (what the refusal message names)."""

# The schemes whose targets may carry a path: the handshake's request target
# for ws:// and wss://, the base of the bot's paths for http:// and https://.
_PATH_SCHEMES = ("http", "https", "ws", "wss")

# What each scheme is on the wire: the transport reactor.connect() opens.
_TRANSPORT = {"http": "tcp", "ws": "tcp", "https": "tls", "wss": "tls"}


def split_target(target: str | Address) -> tuple[Address, str]:
    """A bots target's endpoint and path: ``ws://h:8000/chat`` gives ``(ws://h:8000, "/chat")``.

    A path (with a query, for WebSocket) is taken for ``http``, ``https``,
    ``ws`` and ``wss`` targets; it is ``""`` when there is none. Raises
    :class:`~daemonkit.errors.ConfigError` for a path on a stream target
    (``tcp://``, ``tls://``: stream bots send no path), a query on an HTTP
    target (its path is a base, see :class:`~daemonkit.bots.HttpBot`), or a
    target that is no endpoint.
    """
    if isinstance(target, Address):
        return target, ""
    scheme, sep, rest = target.partition("://")
    scheme = scheme.lower()
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
    if not sep or cut < 0 or scheme == "unix":
        return parse_endpoint(target), ""
    if scheme not in _PATH_SCHEMES:
        raise ConfigError(
            f"target {target}: a {scheme}:// target has no path; stream bots send none "
            f"(a path is for http://, https://, ws:// and wss:// targets)"
        )
    path = rest[cut:]
    if path.startswith("?"):
        path = "/" + path
    if "?" in path and scheme in ("http", "https"):
        raise ConfigError(
            f"target {target}: the path of an {scheme}:// target is the base of the bot's "
            "paths and takes no query; put the query in the bot's requests"
        )
    return parse_endpoint(f"{scheme}://{rest[:cut]}"), path


def check_target(bot_class: type[Bot], address: Address) -> None:
    """Raise :class:`~daemonkit.errors.ConfigError` unless *bot_class* speaks *address*'s scheme.

    The message names the class to use instead (``ws://`` with a plain Bot:
    "use daemonkit.bots.WebSocketBot").
    """
    scheme = address.scheme
    if scheme in bot_class.schemes:
        return
    name = bot_class.__name__
    speaks = ", ".join(f"{s}://" for s in bot_class.schemes)
    use = BOT_FOR_SCHEME.get(scheme)
    if use is None:
        raise ConfigError(
            f"target {address}: bots cannot speak {scheme}:// ({name} speaks {speaks})"
        )
    raise ConfigError(
        f"target {address}: {name} speaks {speaks}, not {scheme}://; "
        f"use {use} (make the bot a subclass of it)"
    )


def client_context(
    bot_class: type[Bot],
    address: Address,
    *,
    cafile: str | None = None,
    verify: bool | None = None,
) -> ssl.SSLContext | None:
    """The TLS client context for *address* (None for a plain scheme).

    The class's ``cafile`` and ``verify`` decide, unless the run overrides
    them (``cafile``, ``verify``: the command line's ``--cafile`` and
    ``--insecure``). Raises :class:`~daemonkit.errors.ConfigError` when the
    CA file cannot be loaded.
    """
    if not address.tls:
        return None
    if cafile is None:
        cafile, source = bot_class.cafile, f"{bot_class.__name__}.cafile"
    else:
        source = "cafile"
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{source} {cafile!r}: {exc}") from None
    if not (bot_class.verify if verify is None else verify):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "connect timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls: certificate verify failed"
    if isinstance(exc, ssl.SSLError):
        return f"tls: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


def connector(
    address: Address,
    timeout: float,
    bot_class: type[Bot],
    *,
    cafile: str | None = None,
    verify: bool | None = None,
) -> Callable[[Fleet, Bot, Connection], None]:
    """The runner's connector for *address*: ``connect(fleet, bot, conn)`` starts one connect.

    On success the transport calls ``conn.connection_made``; on failure
    ``fleet.connect_failed(bot, kind)`` is called with what went wrong
    (``"ECONNREFUSED"``, ``"connect timeout"``, ``"tls: certificate verify
    failed"``...). Sets each bot's :attr:`~daemonkit.bots.Bot.target`.
    ``cafile`` and ``verify`` override the class's TLS settings (see
    :func:`client_context`).
    """
    context = client_context(bot_class, address, cafile=cafile, verify=verify)
    scheme = _TRANSPORT.get(address.scheme, address.scheme)
    wire = address if scheme == address.scheme else Address(scheme, address.host, address.port)

    def connect(fleet: Fleet, bot: Bot, conn: Connection) -> None:
        bot.target = address

        async def attempt() -> None:
            try:
                await fleet.reactor.connect(wire, lambda: conn, ssl=context, timeout=timeout)
            except asyncio.CancelledError:
                fleet.connect_failed(bot, "cancelled")
                raise
            except Exception as exc:
                fleet.connect_failed(bot, _error_kind(exc))

        fleet.reactor.spawn(attempt())

    return connect
