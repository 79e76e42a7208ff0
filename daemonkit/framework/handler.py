"""Handler: the callbacks that serve one endpoint's connections.

A daemon serves its endpoints itself unless an endpoint names another
handler (``Endpoint("http://...", handler=Api())``): an object whose
callbacks have the same names and arguments as the daemon's. Subclass
:class:`Handler` to get the defaults and ``self.daemon``; any object with
the callbacks it needs works too. :class:`~daemonkit.daemon.Daemon` is
itself a Handler, which is why the one-endpoint case needs nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from datetime import tzinfo

    from daemonkit.core.cron import CronJob
    from daemonkit.daemon import Daemon
    from daemonkit.framework.links import Link

__all__ = ["Handler", "HandlerCalls", "serve_handler"]

T = TypeVar("T")


class Handler:
    """Base class of endpoint handlers: connection callbacks with their defaults.

    ``self.daemon`` is the daemon the handler serves, set when the daemon is
    created (None before). Callbacks follow the daemon's grammar:
    ``on_accept (on_read | on_frames | on_drain | on_eof | on_timeout |
    on_error)* on_close`` per connection; protocol endpoints add their own
    (``on_request`` for HTTP, ``on_open``/``on_message`` for WebSocket,
    ``on_datagram`` for UDP).
    """

    daemon: Daemon | None = None

    def on_accept(self, conn: Connection) -> None:
        """A client connected."""

    def on_connect(self, conn: Connection) -> None:
        """An outbound link's connection is up (the counterpart of ``on_accept``)."""

    def on_read(self, conn: Connection, data: Any) -> None:
        """Bytes (raw framing) or one frame arrived from ``conn``."""

    def on_drain(self, conn: Connection) -> None:
        """``conn.write()`` returned False earlier and ``conn`` can take more again.

        That is: the transport's buffer fell below the low-water mark, or the
        kernel took the gathered bytes at once so the transport never paused.
        """

    def on_timeout(self, conn: Connection) -> None:
        """No input for ``idle_timeout`` seconds. Default: close with reason "idle timeout"."""
        conn.log.info("idle for %.3gs; closing", conn.idle_timeout or 0.0)
        conn._close(CloseReason.IDLE_TIMEOUT)

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        """``conn`` is gone (exactly once per accepted connection)."""

    def on_error(self, conn: Connection, exc: Exception) -> None:
        """A callback for ``conn`` raised ``exc``. Default: log it and close ``conn``."""
        conn.log.error("%s raised in a callback; closing", type(exc).__name__, exc_info=exc)
        conn._close(CloseReason.HANDLER_ERROR)

    def connect(self, url: str, **options: Any) -> Link:
        """Open an outbound link served by this handler: ``self.daemon.connect(url, ...)``.

        ``handler`` defaults to this handler; see :meth:`daemonkit.Daemon.connect`.
        Raises :class:`~daemonkit.errors.ConfigError` before the handler serves a daemon.
        """
        daemon = self.daemon
        if daemon is None:
            raise ConfigError(
                f"{type(self).__name__}.connect(): this handler serves no daemon yet "
                "(give it to an Endpoint, or call the daemon's connect())"
            )
        options.setdefault("handler", self)
        return daemon.connect(url, **options)

    def cron(
        self,
        expression: str,
        fn: Callable[..., object],
        *args: object,
        tz: str | tzinfo | None = None,
    ) -> CronJob:
        """Run ``fn(*args)`` on a cron schedule: ``self.daemon.cron(...)``.

        See :meth:`daemonkit.Daemon.cron`. Raises
        :class:`~daemonkit.errors.ConfigError` before the handler serves a daemon.
        """
        daemon = self.daemon
        if daemon is None:
            raise ConfigError(
                f"{type(self).__name__}.cron(): this handler serves no daemon yet "
                "(give it to an Endpoint, or call the daemon's cron())"
            )
        return daemon.cron(expression, fn, *args, tz=tz)

    def offload(
        self,
        fn: Callable[..., T],
        *args: Any,
        callback: Callable[[T], object] | None = None,
        process: bool = False,
        timeout: float | None = None,
    ) -> asyncio.Future[T]:
        """Run the blocking call ``fn(*args)`` in a worker thread: ``self.daemon.offload(...)``.

        The result comes to ``callback`` in the loop thread, or to ``await``
        on the returned future; see :meth:`daemonkit.Daemon.offload` for
        ``process``, ``timeout``, errors and the stop that waits for the call.
        Raises :class:`~daemonkit.framework.offload.OffloadFull` at once when
        the daemon's pool is full (answer "busy"), and
        :class:`~daemonkit.errors.ConfigError` before the handler serves a daemon.
        """
        daemon = self.daemon
        if daemon is None:
            raise ConfigError(
                f"{type(self).__name__}.offload(): this handler serves no daemon yet "
                "(give it to an Endpoint, or call the daemon's offload())"
            )
        return daemon.offload(fn, *args, callback=callback, process=process, timeout=timeout)


def serve_handler(handler: object, owner: object) -> None:
    """Tell ``handler`` (a :class:`Handler`) which daemon it serves: ``handler.daemon = owner``.

    Endpoint hosts call it for every handler of their endpoint. ``owner`` is
    the daemon, seen by the hosts only through their narrow
    :class:`~daemonkit.framework.hosts.EndpointOwner` interface, which is why
    it is typed ``object`` here; the daemon itself is never its own handler's
    owner. Objects that are not :class:`Handler` instances are left alone.
    """
    if isinstance(handler, Handler) and handler is not owner:
        handler.daemon = owner  # type: ignore[assignment]  # the owner is the Daemon


class HandlerCalls:
    """A connection host's calls into its handler, with exceptions routed to ``on_error``.

    Endpoint hosts and outbound links are both a
    :class:`~daemonkit.core.connection.ConnectionHost`; they share these calls
    so an exception in ``on_eof``, ``on_drain`` or ``on_timeout`` takes the
    same path everywhere: counted in :meth:`_error_counts` ``["errors"]``,
    then ``on_error``; an ``on_error`` that raises closes the connection.
    The subclass sets the four resolved callbacks.
    """

    _on_error: Callable[[Connection, Exception], object]
    _on_drain: Callable[[Connection], object]
    _on_timeout: Callable[[Connection], object]
    _on_eof: Callable[[Connection], object] | None

    def _error_counts(self) -> dict[str, int]:
        """The counters whose ``"errors"`` a callback's exception adds to."""
        raise NotImplementedError

    def _call_error(self, conn: Connection, exc: Exception) -> None:
        self._error_counts()["errors"] += 1
        try:
            self._on_error(conn, exc)
        except Exception:
            conn.log.exception("on_error raised; closing")
            conn._close(CloseReason.HANDLER_ERROR)

    def _call_eof(self, conn: Connection) -> bool:
        on_eof = self._on_eof
        if on_eof is None:
            return False
        try:
            on_eof(conn)
        except Exception as exc:
            self._call_error(conn, exc)
        return True

    def _call_drain(self, conn: Connection) -> None:
        try:
            self._on_drain(conn)
        except Exception as exc:
            self._call_error(conn, exc)

    def _call_timeout(self, conn: Connection) -> None:
        try:
            self._on_timeout(conn)
        except Exception as exc:
            self._call_error(conn, exc)
