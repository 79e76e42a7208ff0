"""systemd integration without libsystemd: readiness notification and socket activation.

Two small protocols, each documented in one man page and written here in
plain Python (as gunicorn and uvicorn do):

* **sd_notify(3).** :class:`SystemdNotifier` sends newline-separated
  ``VAR=value`` datagrams to the ``AF_UNIX`` socket named by
  ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket):
  ``READY=1`` once the daemon listens, a short ``STATUS=`` line every few
  seconds, ``RELOADING=1`` with ``MONOTONIC_USEC=`` then ``READY=1``
  around ``on_reload`` (what ``Type=notify-reload`` waits for),
  ``STOPPING=1`` at shutdown, and ``WATCHDOG=1`` from a timer on the
  daemon's own loop at half ``$WATCHDOG_USEC``. The timer runs on the
  loop, not in a thread, on purpose: a wedged loop stops the pings and
  systemd kills and restarts the service, which a thread would hide.
  Without ``$NOTIFY_SOCKET`` every call is a no-op. A send never blocks
  the loop and never raises: a full or vanished socket costs a warning.
* **sd_listen_fds(3).** :func:`listen_fds` takes the sockets systemd
  passed as descriptors 3, 4, ... (``$LISTEN_FDS``), only when
  ``$LISTEN_PID`` is our pid, named by ``$LISTEN_FDNAMES``, and unsets the
  three variables so that child processes do not take them too.
  :func:`adopt_listen_fds` matches them to the daemon's endpoints by name
  (unnamed ones in order) and hands them to :meth:`Daemon.adopt
  <daemonkit.daemon.Daemon.adopt>`, so those endpoints serve the socket
  systemd holds instead of binding. A socket no endpoint can take is an
  error that names it, never silently ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Protocol, cast

from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from daemonkit.core.reactor import Reactor
    from daemonkit.core.timers import Timer
    from daemonkit.daemon import Daemon

__all__ = [
    "DEFAULT_STATUS_INTERVAL",
    "LISTEN_FDS_START",
    "Notified",
    "SystemdNotifier",
    "adopt_listen_fds",
    "listen_fds",
    "notify",
]

#: The first passed descriptor: SD_LISTEN_FDS_START in systemd's sd-daemon.h
#: (0, 1 and 2 stay stdin, stdout and stderr).
LISTEN_FDS_START = 3

#: Seconds between ``STATUS=`` updates. The line is read by a person in
#: ``systemctl status``; ``top`` refreshes every 3 s and ``watch`` every 2 s,
#: so a few seconds is fresh enough, and costs one tiny datagram.
DEFAULT_STATUS_INTERVAL = 5.0

# sd_watchdog_enabled(3): "the daemon should ... send WATCHDOG=1 ... at half
# the interval" of WATCHDOG_USEC, so one late ping is not yet a kill.
_WATCHDOG_SHARE = 0.5

# The names systemd gives a socket nobody named: sd_listen_fds_with_names(3)
# reports "unknown" without LISTEN_FDNAMES, and FileDescriptorName= defaults
# to the socket unit's name ("echo.socket"). Such sockets match in order.
_UNNAMED = ("", "unknown")
_UNIT_SUFFIX = ".socket"

_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")

_log = logging.getLogger("daemonkit.systemd")


def _notify_address(value: str | None) -> str | bytes | None:
    """The socket address of ``$NOTIFY_SOCKET``; None when unset or of a kind we do not speak."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    _log.warning(
        "NOTIFY_SOCKET=%r is neither a path nor an @abstract name; not notifying systemd", value
    )
    return None


def _send(address: str | bytes, message: str, log: logging.Logger) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a full socket drops the message, never stalls the loop
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning(
            "cannot notify systemd (%s): %s",
            message.partition("\n")[0],
            exc.strerror or exc,
        )
        return False
    return True


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``VAR=value`` lines) to the service manager, as sd_notify(3) does.

    Returns True when sent, False when ``$NOTIFY_SOCKET`` (read from
    ``environ``, default ``os.environ``) is unset, or the send failed (then
    a warning is logged). Never raises, never blocks.
    """
    env = os.environ if environ is None else environ
    address = _notify_address(env.get("NOTIFY_SOCKET"))
    return address is not None and _send(address, message, _log)


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings for process ``pid``, or None when not asked for."""
    text = env.get("WATCHDOG_USEC")
    if not text:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None  # meant for another process of the service
    try:
        usec = int(text)
    except ValueError:
        usec = 0
    if usec <= 0:
        _log.warning("WATCHDOG_USEC=%r is not a positive number; no watchdog pings", text)
        return None
    return usec / 1_000_000 * _WATCHDOG_SHARE


class Notified(Protocol):
    """What :class:`SystemdNotifier` follows: a :class:`~daemonkit.daemon.Daemon`,
    or the supervisor of a ``--workers`` set (:class:`~daemonkit.ops.workers.Supervisor`).

    Its lifecycle hooks announce ``ready``, ``reloading``, ``reloaded`` and
    ``stopping``; ``every`` runs a timer that ends with it.
    """

    @property
    def log(self) -> logging.Logger: ...

    @property
    def reactor(self) -> Reactor: ...

    def add_lifecycle_hook(self, hook: Callable[[str], object]) -> None: ...

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer: ...


class SystemdNotifier:
    """Tell systemd what ``daemon`` is doing; a no-op without ``$NOTIFY_SOCKET``.

    Call :meth:`install` before the daemon starts. From then on it sends
    ``READY=1`` when the daemon listens (after ``MAINPID=`` when
    ``main_pid`` is true: the daemon detached, or replaces another in an
    upgrade, so systemd must learn its pid; that needs
    ``NotifyAccess=all``), ``STATUS=`` every ``status_interval`` seconds,
    ``RELOADING=1`` + ``MONOTONIC_USEC=`` and then ``READY=1`` around a
    reload (SIGHUP or ``ctl reload``), ``STOPPING=1`` when the stop
    begins, and ``WATCHDOG=1`` at half ``$WATCHDOG_USEC`` when
    ``$WATCHDOG_PID`` is unset or ours. Its timers are the daemon's
    (:meth:`Daemon.every <daemonkit.daemon.Daemon.every>`), so they run on
    its clock and end with it.

    ``daemon`` may be a ``--workers`` supervisor (:class:`Notified`): then
    ``status`` gives the ``STATUS=`` line (the default reads a daemon's counters).
    """

    def __init__(
        self,
        daemon: Notified,
        *,
        environ: Mapping[str, str] | None = None,
        main_pid: bool = False,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
        status: Callable[[], str] | None = None,
    ) -> None:
        self.daemon = daemon
        self._status = status
        self._env = os.environ if environ is None else environ
        self.address = _notify_address(self._env.get("NOTIFY_SOCKET"))
        self.main_pid = main_pid
        self.status_interval = status_interval

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a socket to notify."""
        return self.address is not None

    def install(self) -> None:
        """Follow the daemon's start, reloads and stop (does nothing when not :attr:`enabled`)."""
        if self.enabled:
            self.daemon.add_lifecycle_hook(self._on_event)

    def send(self, message: str) -> bool:
        """Send one ``VAR=value`` message; False if not enabled or it could not be sent."""
        address = self.address
        return address is not None and _send(address, message, self.daemon.log)

    def status(self) -> str:
        """The ``STATUS=`` text: the live connections and the counts since start."""
        if self._status is not None:
            return self._status()
        daemon = cast("Daemon", self.daemon)
        stats = daemon.stats
        live = len(daemon.connections)
        if daemon.is_stopping():
            return f"stopping: {live} connection(s) left"
        return (
            f"{live} connection(s); accepted {stats['accepted']}, "
            f"rejected {stats['rejected']}, errors {stats['errors']}"
        )

    def _on_event(self, event: str) -> None:
        handler: Callable[[], object] | None = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler()

    def _on_ready(self) -> None:
        pid = os.getpid()
        if self.main_pid:
            # Now: before the process that systemd knows (the one we detached
            # from, or replace in an upgrade) can exit. systemd reads its notify
            # socket before SIGCHLD, so the new pid is known by the time it
            # hears of that exit.
            self.send(f"MAINPID={pid}")
        # READY=1 on the loop's first turn, not now: uvloop listens for signals
        # only once its loop runs, and systemd may send SIGHUP or SIGTERM as
        # soon as it reads READY=1; a signal before that would be lost.
        self.daemon.reactor.call_soon(self._ready, pid)

    def _ready(self, pid: int) -> None:
        self.send("READY=1")
        self._send_status()
        daemon = self.daemon
        daemon.every(self.status_interval, self._send_status)
        interval = _watchdog_interval(self._env, pid)
        if interval is not None:
            daemon.log.info("systemd watchdog: pinging every %.3gs", interval)
            daemon.every(interval, self.send, "WATCHDOG=1")

    def _on_reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def _on_reloaded(self) -> None:
        self.send("READY=1")
        self._send_status()

    def _on_stopping(self) -> None:
        self.send("STOPPING=1")
        self._send_status()

    def _send_status(self) -> None:
        self.send(f"STATUS={self.status()}")


# -- socket activation ---------------------------------------------------------------


def _close_all(socks: list[tuple[str | None, socket.socket]]) -> None:
    for _, sock in socks:
        sock.close()


def listen_fds(
    *,
    environ: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    first_fd: int = LISTEN_FDS_START,
) -> list[tuple[str | None, socket.socket]]:
    """The sockets the service manager passed us, as ``(name, socket)`` pairs, in order.

    Reads ``$LISTEN_PID``, ``$LISTEN_FDS`` and ``$LISTEN_FDNAMES`` from
    ``environ`` (default ``os.environ``) and unsets them, as
    ``sd_listen_fds(1)`` does, so child processes do not take the sockets
    too. Returns ``[]`` unless ``$LISTEN_PID`` is ``pid`` (default: ours).
    A name is None without ``$LISTEN_FDNAMES``. The descriptors become
    close-on-exec; the caller owns the sockets. ``first_fd`` is for tests.
    Raises :class:`~daemonkit.errors.ConfigError` for malformed variables
    or a descriptor that is not a socket.
    """
    env = os.environ if environ is None else environ
    values = {name: env.pop(name, None) for name in _LISTEN_VARS}
    owner, count_text, names_text = (values[name] for name in _LISTEN_VARS)
    if owner is None or count_text is None:
        return []
    if owner != str(os.getpid() if pid is None else pid):
        return []  # passed to another process (our parent, say) and inherited by mistake
    try:
        count = int(count_text)
    except ValueError:
        count = -1
    if count < 0:
        raise ConfigError(f"LISTEN_FDS={count_text!r} is not a number of descriptors")
    names: list[str | None] = [None] * count
    if names_text is not None:
        given = names_text.split(":")
        if len(given) != count:
            for fd in range(first_fd, first_fd + count):
                with contextlib.suppress(OSError):
                    os.close(fd)  # ours all the same: do not leak them
            raise ConfigError(
                f"LISTEN_FDNAMES={names_text!r} names {len(given)} socket(s) but LISTEN_FDS={count}"
            )
        names = list(given)
    socks: list[tuple[str | None, socket.socket]] = []
    for fd, name in zip(range(first_fd, first_fd + count), names, strict=True):
        try:
            os.set_inheritable(fd, False)
            socks.append((name, socket.socket(fileno=fd)))
        except OSError as exc:
            _close_all(socks)
            raise ConfigError(
                f"LISTEN_FDS: descriptor {fd} ({name or 'unnamed'}) is not a usable socket: "
                f"{exc.strerror or exc}"
            ) from exc
    return socks


def _family_fits(sock: socket.socket, unix: bool) -> bool:
    if unix:
        return sock.family == socket.AF_UNIX
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def adopt_listen_fds(
    daemon: Daemon,
    *,
    environ: MutableMapping[str, str] | None = None,
    pid: int | None = None,
    first_fd: int = LISTEN_FDS_START,
) -> list[str]:
    """Serve the endpoints of ``daemon`` on the sockets systemd passed; their names, in order.

    A socket named like an endpoint (``FileDescriptorName=`` in the
    ``.socket`` unit) goes to that endpoint; unnamed ones (no name,
    ``unknown``, or the default ``NAME.socket``) go in order to the
    endpoints left. Endpoints that get no socket bind as usual. Call it
    before the daemon starts. Raises
    :class:`~daemonkit.errors.ConfigError`, after closing every passed
    socket, when a socket fits no endpoint: a name no endpoint has, more
    sockets than endpoints, the wrong kind (datagram for a stream endpoint,
    TCP for a unix one), or a stream socket that is not listening
    (``Accept=yes``, which daemonkit does not support). Arguments as for
    :func:`listen_fds`.
    """
    socks = listen_fds(environ=environ, pid=pid, first_fd=first_fd)
    if not socks:
        return []
    try:
        pairs = _match(daemon, socks)
        for name, sock in pairs.items():
            _check(daemon, name, sock)
    except (ConfigError, KeyError) as exc:
        _close_all(socks)
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"socket activation: {message}") from None
    for name, sock in pairs.items():
        daemon.adopt(name, sock)
        daemon.log.info("socket activation: endpoint %s takes descriptor %d", name, sock.fileno())
    return list(pairs)


def _match(
    daemon: Daemon, socks: list[tuple[str | None, socket.socket]]
) -> dict[str, socket.socket]:
    endpoint_names = [str(e.name) for e in daemon.endpoints]
    listed = ", ".join(endpoint_names)
    pairs: dict[str, socket.socket] = {}
    unnamed: list[socket.socket] = []
    for name, sock in socks:
        if name is not None and name in endpoint_names:
            if name in pairs:
                raise ConfigError(f"two sockets are named {name!r}")
            pairs[name] = sock
        elif name is None or name in _UNNAMED or name.endswith(_UNIT_SUFFIX):
            unnamed.append(sock)
        else:
            raise ConfigError(
                f"systemd passed a socket named {name!r} (descriptor {sock.fileno()}) but no "
                f"endpoint has that name; endpoints: {listed} (set FileDescriptorName= to one)"
            )
    free = [name for name in endpoint_names if name not in pairs]
    if len(unnamed) > len(free):
        raise ConfigError(
            f"systemd passed {len(unnamed)} unnamed socket(s) but only {len(free)} endpoint(s) "
            f"are left to take them ({listed}); name the sockets with FileDescriptorName="
        )
    pairs.update(zip(free, unnamed, strict=False))
    return pairs


def _check(daemon: Daemon, name: str, sock: socket.socket) -> None:
    endpoint = next(e for e in daemon.endpoints if e.name == name)
    address = endpoint.address
    unix = address.scheme == "unix"
    if not _family_fits(sock, unix):
        raise ConfigError(
            f"endpoint {name!r} ({endpoint}) needs a {'unix' if unix else 'TCP/UDP'} socket, "
            f"but descriptor {sock.fileno()} is {sock.family.name}"
        )
    wanted = socket.SOCK_DGRAM if address.datagram else socket.SOCK_STREAM
    if sock.type != wanted:
        raise ConfigError(
            f"endpoint {name!r} ({endpoint}) needs a {wanted.name} socket, "
            f"but descriptor {sock.fileno()} is {sock.type.name}"
        )
    if wanted == socket.SOCK_STREAM and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise ConfigError(
            f"descriptor {sock.fileno()} for endpoint {name!r} is not listening "
            "(Accept=yes passes connections, which daemonkit does not take; use Accept=no)"
        )
