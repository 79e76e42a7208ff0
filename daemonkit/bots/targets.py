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
certificate).
"""

from __future__ import annotations

import asyncio
import errno
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from daemonkit.core.endpoints import Address
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from daemonkit.bots.bot import Bot
    from daemonkit.bots.runner import Fleet
    from daemonkit.core.connection import Connection

__all__ = ["BOT_FOR_SCHEME", "check_target", "client_context", "connector"]

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

# What each scheme is on the wire: the transport reactor.connect() opens.
_TRANSPORT = {"http": "tcp", "ws": "tcp", "https": "tls", "wss": "tls"}


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


def client_context(bot_class: type[Bot], address: Address) -> ssl.SSLContext | None:
    """The TLS client context for *address* (None for a plain scheme), per the class's settings.

    Raises :class:`~daemonkit.errors.ConfigError` when ``cafile`` cannot be loaded.
    """
    if not address.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=bot_class.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{bot_class.__name__}.cafile {bot_class.cafile!r}: {exc}") from None
    if not bot_class.verify:
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
    address: Address, timeout: float, bot_class: type[Bot]
) -> Callable[[Fleet, Bot, Connection], None]:
    """The runner's connector for *address*: ``connect(fleet, bot, conn)`` starts one connect.

    On success the transport calls ``conn.connection_made``; on failure
    ``fleet.connect_failed(bot, kind)`` is called with what went wrong
    (``"ECONNREFUSED"``, ``"connect timeout"``, ``"tls: certificate verify
    failed"``...). Sets each bot's :attr:`~daemonkit.bots.Bot.target`.
    """
    context = client_context(bot_class, address)
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
