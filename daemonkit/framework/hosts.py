"""Endpoint hosts: what stands between a daemon's endpoint and its connections.

Each endpoint of a daemon gets one host object when the daemon is created.
The host binds the endpoint at start, makes its connections, and is their
:class:`~daemonkit.core.connection.ConnectionHost`: it carries the settings they
read, routes their events to the endpoint's handler (the daemon unless the
endpoint names another), isolates the handler's exceptions, and keeps the
daemon's books (``connections``, ``stats``). One host per endpoint, not per
connection, so a connection costs nothing extra for it.

Protocols extend :class:`StreamHost` (HTTP) or replace it (UDP); the daemon
picks the host class from the endpoint's scheme.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from daemonkit.core.connection import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    FRAME_IDLE_FACTOR,
    CloseReason,
    Connection,
)
from daemonkit.core.durations import check_optional_duration
from daemonkit.core.endpoints import DEFAULT_TLS_HANDSHAKE_TIMEOUT, INHERIT, Address, Endpoint
from daemonkit.errors import ConfigError
from daemonkit.framework.handler import Handler, HandlerCalls, serve_handler
from daemonkit.framing import Framer, Raw

if TYPE_CHECKING:
    import logging

    from daemonkit.core.reactor import Listener, Reactor

#: Largest ``sndbuf``/``rcvbuf`` endpoint option, in bytes: Linux keeps twice
#: the size asked for in a C int, so 1 GiB is the most it can represent.
MAX_SOCKET_BUFFER = 1 << 30


__all__ = ["MAX_SOCKET_BUFFER", "EndpointHost", "EndpointOwner", "StreamHost", "framer_factory"]


class EndpointOwner(Protocol):
    """What an endpoint host needs from the daemon that owns it, and nothing more.

    :class:`~daemonkit.daemon.Daemon` is the one implementation; hosts (and
    the protocols built on them) depend on this interface, never on the
    daemon's class or its private state, so the framework layer does not
    import the daemon. The books: admission, connection ids, the set of live
    connections and their groups, the drain at stop, sockets handed over.
    """

    @property
    def reactor(self) -> Reactor:
        """The reactor the daemon runs on."""

    @property
    def log(self) -> logging.Logger:
        """The daemon's logger."""

    @property
    def stats(self) -> dict[str, int]:
        """The daemon's counters; hosts add to ``"errors"``."""

    def is_stopping(self) -> bool:
        """True once a stop has begun."""

    # The daemon-wide connection settings an endpoint inherits.
    @property
    def framing(self) -> Any:
        """The daemon's ``framing`` setting."""

    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence before ``on_timeout``, or None."""

    @property
    def write_high_water(self) -> int:
        """Bytes buffered past which ``write()`` says stop."""

    @property
    def write_low_water(self) -> int:
        """Bytes buffered below which ``on_drain`` fires."""

    @property
    def max_write_buffer(self) -> int:
        """Hard cap on one connection's output buffer."""

    @property
    def close_timeout(self) -> float:
        """Seconds a graceful close waits for the peer."""

    @property
    def frame_timeout(self) -> float | None:
        """Seconds from a frame's first byte to its last (None: automatic)."""

    @property
    def send_timeout(self) -> float | None:
        """Seconds a paused writer's peer may take nothing, or None."""

    def admit_connection(self) -> bool:
        """May one more client be accepted now?"""

    def new_connection_id(self) -> int:
        """The next connection id."""

    def take_inherited(self, name: str) -> socket.socket | None:
        """The socket handed over for the endpoint ``name`` (and its ownership), or None."""

    def connection_opened(self, conn: Connection) -> None:
        """Book a new connection."""

    def connection_closed(self, conn: Connection) -> None:
        """Book a closed connection, before its ``on_close``."""

    def check_drained(self) -> None:
        """After an ``on_close``: finish a stop once no connection is left."""


def framer_factory(framing: Any) -> Callable[[], Framer] | None:
    """Turn a ``framing`` setting into a per-connection factory (None = raw bytes)."""
    if framing is None or framing is Raw:
        return None
    if isinstance(framing, Raw):
        return None
    if isinstance(framing, Framer):
        return framing.fresh
    if isinstance(framing, type) and issubclass(framing, Framer):
        return _shared_settings(framing)
    if callable(framing):
        return framing  # type: ignore[no-any-return]
    raise ConfigError(
        f"framing must be a Framer class (e.g. Lines), a Framer instance or a factory, "
        f"not {framing!r}"
    )


def _shared_settings(cls: type[Framer]) -> Callable[[], Framer]:
    """A factory of ``cls()`` whose framers share one settings dict (as ``fresh()`` copies do).

    Each framer is still made by ``cls()`` itself; only a settings dict equal
    to the first one's is replaced by it, so a connection keeps no dict of
    its own (~200 bytes) for settings every connection has.
    """
    shared: dict[str, Any] | None = None

    def make() -> Framer:
        nonlocal shared
        framer = cls()
        settings = framer._settings
        if shared is None:
            shared = settings
        elif settings == shared:
            framer._settings = shared
        return framer

    return make


_DEFAULTS = Handler()


class EndpointHost(HandlerCalls):
    """Base of the hosts: the endpoint, its handler, its daemon, and opening/closing."""

    def __init__(self, daemon: EndpointOwner, endpoint: Endpoint) -> None:
        self.daemon = daemon
        self.endpoint = endpoint
        handler = endpoint.handler if endpoint.handler is not None else daemon
        self.handler = handler
        serve_handler(handler, daemon)
        #: The bound address once opened (port 0 resolved), else None.
        self.address: Address | None = None

    def callback(self, name: str) -> Callable[..., Any]:
        """The handler's callback ``name``, or the :class:`Handler` default."""
        found = getattr(self.handler, name, None)
        if found is None:
            found = getattr(_DEFAULTS, name, None)
        if found is None or not callable(found):
            raise ConfigError(
                f"{type(self.handler).__name__}.{name} must be a method (endpoint {self.endpoint})"
            )
        return found  # type: ignore[no-any-return]

    @property
    def reactor(self) -> Reactor:
        """The daemon's reactor."""
        return self.daemon.reactor

    @property
    def log(self) -> logging.Logger:
        """The daemon's logger."""
        return self.daemon.log

    #: The endpoint options this host reads (subclasses name theirs).
    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    def refuse_unknown_options(self) -> dict[str, Any]:
        """The endpoint's options; ConfigError naming any this host does not take."""
        options = self.endpoint.options
        unknown = sorted(set(options) - self.OPTIONS)
        if unknown:
            known = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ConfigError(
                f"{self.endpoint}: unknown endpoint option(s): {', '.join(unknown)} "
                f"(this endpoint takes: {known})"
            )
        return options

    def open(self, reactor: Reactor) -> Address:
        """Bind the endpoint (not yet serving); returns the bound address. Raises OSError."""
        raise NotImplementedError

    def start(self) -> None:
        """Begin serving (accepting or receiving)."""

    def pause(self) -> None:
        """Stop taking new clients (a graceful stop); existing ones go on."""

    def close(self) -> None:
        """Release the endpoint's socket; idempotent."""


class StreamHost(EndpointHost):
    """The host of a stream endpoint (``tcp``, ``unix``, ``tls``): framed connections."""

    #: The Connection class this host's connections are made of.
    connection_class: ClassVar[type[Connection]] = Connection

    #: Seconds from a frame's first byte to its last, or None (no framer, or
    #: HTTP, whose requests have ``header_timeout``); see :meth:`read_deadlines`.
    frame_timeout: float | None = None
    #: Seconds a connection whose writing is paused may see its peer take nothing, or None.
    send_timeout: float | None = None

    def __init__(self, daemon: EndpointOwner, endpoint: Endpoint) -> None:
        super().__init__(daemon, endpoint)
        framing = daemon.framing if endpoint.framing is INHERIT else endpoint.framing
        self._framer_factory: Callable[[], Framer] | None = framer_factory(framing)
        idle = daemon.idle_timeout if endpoint.idle_timeout is INHERIT else endpoint.idle_timeout
        if endpoint.address.http and idle is DEFAULT_IDLE_TIMEOUT:
            # Left at the default (the very object, not an equal number someone
            # set): HTTP's own keepalive_timeout and header_timeout are its idle
            # deadlines, and a long response to a silent client is no idleness.
            idle = None
        idle = check_optional_duration(f"{endpoint}: idle_timeout", idle)
        self.idle_timeout: float | None = idle
        #: (option, bytes) pairs set on every accepted socket (``sndbuf``/``rcvbuf``).
        self._buffers: tuple[tuple[int, int], ...] = ()
        self.write_high_water: int = daemon.write_high_water
        self.write_low_water: int = daemon.write_low_water
        self.max_write_buffer: int = daemon.max_write_buffer
        self.close_timeout: float = daemon.close_timeout
        self._on_read: Callable[[Connection, Any], object] = self.callback("on_read")
        on_frames = getattr(self.handler, "on_frames", None)
        if on_frames is not None and not callable(on_frames):
            raise ConfigError(f"{type(self.handler).__name__}.on_frames must be a method")
        self._on_frames: Callable[[Connection, list[Any]], object] | None = on_frames
        self._on_accept = self.callback("on_accept")
        self._on_close = self.callback("on_close")
        self._on_error = self.callback("on_error")
        self._on_drain = self.callback("on_drain")
        self._on_timeout = self.callback("on_timeout")
        self._on_eof: Callable[[Connection], object] | None = getattr(self.handler, "on_eof", None)
        self.listener: Listener | None = None
        self.tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
        self.check_options()
        self.read_deadlines()
        endpoint.ssl_context()  # load the certificate now: a bad file fails --check too

    #: The endpoint options this host reads (subclasses add theirs).
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"tls_handshake_timeout", "frame_timeout", "send_timeout", "sndbuf", "rcvbuf"}
    )

    def read_deadlines(self) -> None:
        """Read ``frame_timeout``, ``send_timeout``, ``sndbuf`` and ``rcvbuf``.

        Each comes from the endpoint's options, else the daemon's setting.
        ``frame_timeout=None`` means automatic: :data:`DEFAULT_FRAME_TIMEOUT`,
        or :data:`FRAME_IDLE_FACTOR` idle timeouts when that is shorter, so an
        idle timeout bounds a trickler too; ``0`` turns a deadline off.
        Raises :class:`ConfigError` naming the endpoint and the setting.
        """
        daemon, endpoint = self.daemon, self.endpoint
        options = endpoint.options
        where = f"{endpoint}: "
        frame = check_optional_duration(
            where + "frame_timeout", options.get("frame_timeout", daemon.frame_timeout)
        )
        if self._framer_factory is None or endpoint.address.http:
            frame = None  # raw bytes have no frames; HTTP has header_timeout
        elif frame is None:
            frame = DEFAULT_FRAME_TIMEOUT
            if self.idle_timeout:
                frame = min(frame, FRAME_IDLE_FACTOR * self.idle_timeout)
        self.frame_timeout = frame or None
        send = check_optional_duration(
            where + "send_timeout", options.get("send_timeout", daemon.send_timeout)
        )
        self.send_timeout = send or None
        buffers = []
        for name, option in (("sndbuf", socket.SO_SNDBUF), ("rcvbuf", socket.SO_RCVBUF)):
            size = options.get(name)
            if size is None:
                continue
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError(f"{where}{name} must be a whole number of bytes, not {size!r}")
            if size > MAX_SOCKET_BUFFER:
                raise ConfigError(
                    f"{where}{name}={size} is more than the {MAX_SOCKET_BUFFER} bytes "
                    "a socket buffer may have"
                )
            buffers.append((option, size))
        self._buffers = tuple(buffers)

    def check_options(self) -> None:
        """Read the options this host knows and refuse the others, naming them."""
        options = self.refuse_unknown_options()
        timeout = options.get("tls_handshake_timeout", DEFAULT_TLS_HANDSHAKE_TIMEOUT)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"{self.endpoint}: tls_handshake_timeout must be seconds > 0")
        self.tls_handshake_timeout = float(timeout)

    # -- opening -------------------------------------------------------------

    def open(self, reactor: Reactor) -> Address:
        """Bind the listener (accepting starts with :meth:`start`)."""
        endpoint = self.endpoint
        self.listener = reactor.listen(
            endpoint.address,
            self.new_connection,
            admit=self.daemon.admit_connection,
            start=False,
            sock=self.daemon.take_inherited(str(endpoint.name)),
            ssl=endpoint.ssl_context(),
            ssl_handshake_timeout=self.tls_handshake_timeout if endpoint.address.tls else None,
        )
        self.address = self.listener.address
        return self.address

    def start(self) -> None:
        """Begin accepting."""
        if self.listener is not None:
            self.listener.start()

    def pause(self) -> None:
        """Stop accepting; pending clients wait in the backlog."""
        if self.listener is not None:
            self.listener.pause()

    def close(self) -> None:
        """Close the listener; idempotent."""
        if self.listener is not None:
            self.listener.close()

    @property
    def pending(self) -> int:
        """Accepted sockets not yet connections (counted against max_connections)."""
        return self.listener.pending if self.listener is not None else 0

    def new_connection(self) -> Connection:
        """A new connection of this endpoint (the listener's protocol factory)."""
        factory = self._framer_factory
        framer = factory() if factory is not None else None
        return self.connection_class(self, self.daemon.new_connection_id(), framer)

    # -- the ConnectionHost interface ------------------------------------------

    def _set_buffers(self, conn: Connection) -> None:
        """Apply the ``sndbuf``/``rcvbuf`` options to the accepted socket."""
        t = conn.transport
        sock = t.get_extra_info("socket") if t is not None else None
        if sock is None:
            return
        for option, size in self._buffers:
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as exc:  # e.g. the peer already reset the connection
                conn.log.debug("cannot set the socket buffer size: %s", exc)

    def _on_connection_made(self, conn: Connection) -> None:
        if self._buffers:
            self._set_buffers(conn)
        self.daemon.connection_opened(conn)
        try:
            self._on_accept(conn)
        except Exception as exc:
            self._call_error(conn, exc)

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        daemon = self.daemon
        daemon.connection_closed(conn)
        try:
            self._on_close(conn, reason)
        except Exception:
            conn.log.exception("on_close raised")
        daemon.check_drained()

    def _error_counts(self) -> dict[str, int]:
        return self.daemon.stats

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint.name} {self.address or self.endpoint}>"
