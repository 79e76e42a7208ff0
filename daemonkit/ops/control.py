"""The control socket and the metrics endpoint: a running daemon, seen and steered from outside.

``Daemon.control = "/run/app/ctl.sock"`` (or ``--control PATH``) opens a
unix stream socket that speaks one JSON object per line each way::

    -> {"cmd": "status"}
    <- {"ok": true, "status": {"pid": 4242, "connections": 3, ...}}
    -> {"cmd": "stop", "timeout": 5}
    <- {"ok": true, "stopping": true, "connections": 3, "timeout": 5}
    -> {"cmd": "nope"}
    <- {"ok": false, "error": "unknown command 'nope'; commands: status, ..."}

Every line gets exactly one reply line, in order. The commands are listed
in :data:`COMMANDS`; ``python -m daemonkit ctl`` (:mod:`daemonkit.cli.ctl`) is
the client. ``Daemon.metrics = "tcp://127.0.0.1:9100"`` (or ``--metrics``)
serves the daemon's ``metrics_registry`` on ``GET /metrics``: daemonkit's
figures, the process's and the application's own, as Prometheus text or, when
the scraper asks, OpenMetrics (see :mod:`daemonkit.ops.metrics`); the
``metrics`` command answers the same text. ``GET /healthz`` there is the load
balancers' check: ``200 ok`` while the daemon serves, ``503`` once it stops.

Rules it keeps:

* **Only the daemon's user and root get in.** The socket is created with
  mode 0600 (umask around ``bind``, then ``chmod``) in a directory that must
  be neither world-writable nor owned by another user (the check tmux makes
  of its socket directory); the daemon refuses to start otherwise. Each
  peer's uid is then read with ``SO_PEERCRED``: another uid gets an error
  reply and the connection is closed.
* **Hostile input never disturbs the daemon.** Lines are framed by
  :class:`~daemonkit.framing.Lines` with a 4 KiB bound, malformed JSON and
  unknown commands get an error reply, a client that says nothing is closed
  after :data:`CONTROL_IDLE_TIMEOUT`, and at most
  :data:`CONTROL_MAX_CLIENTS` are served at once (the rest are closed at
  accept).
* **Its connections are not the daemon's.** They run on daemonkit's own
  :class:`~daemonkit.core.connection.Connection` and the reactor's listener, but
  through hosts of their own, so they never appear in ``daemon.connections``
  or ``daemon.stats`` and never count against ``max_connections``.
* **It dies with the daemon.** :class:`Operations` is registered with
  ``daemon.cleanup()``: at stop its listeners close (the socket file is
  removed), its connections close and the watchdog thread ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.core.durations import check_duration
from daemonkit.core.endpoints import Address, parse_endpoint
from daemonkit.core.log import LEVELS
from daemonkit.daemon import DEFAULT_WRITE_LOW_WATER, StartError
from daemonkit.errors import ConfigError, FrameTooLarge, FramingError, UpgradeError
from daemonkit.framing import Framer, Lines
from daemonkit.framing.http import HttpError, HttpRequest, HttpRequestFramer, encode_response
from daemonkit.ops.metrics import (
    DEFAULT_LAG_INTERVAL,
    DEFAULT_SLOW_CALLBACK,
    LagMonitor,
    Sample,
    SlowCallbackWatchdog,
    register_collectors,
    render,
    require_client,
    sample,
    unregister_collectors,
)

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from daemonkit.core.reactor import Listener, Reactor
    from daemonkit.daemon import Daemon

__all__ = [
    "COMMANDS",
    "CONTROL_IDLE_TIMEOUT",
    "CONTROL_MAX_CLIENTS",
    "CONTROL_MAX_LINE",
    "CONTROL_MAX_REPLY",
    "CONTROL_SOCKET_MODE",
    "METRICS_IDLE_TIMEOUT",
    "METRICS_MAX_CLIENTS",
    "Operations",
    "RequestError",
    "Served",
    "check_operations",
    "check_request",
    "check_socket_dir",
    "handed_over_listeners",
    "open_endpoints",
    "parse_request",
    "set_log_level",
]

#: Longest request line, in bytes: the longest request defined is under 100
#: bytes; one page (4 KiB, also PIPE_BUF on Linux) leaves room and bounds junk.
CONTROL_MAX_LINE = 4096

#: Seconds a control client may stay silent before it is closed. A ctl
#: request is one line written at once; sshd gives a login 120 s
#: (LoginGraceTime) because a human types it, a program needs far less.
CONTROL_IDLE_TIMEOUT = 10.0

#: Control clients served at once; more are closed at accept. An operator
#: and a few monitoring agents need a handful (sshd's MaxStartups starts
#: refusing unauthenticated connections at 10).
CONTROL_MAX_CLIENTS = 16

#: Mode of the control socket file: owner read/write only, as Docker's and
#: containerd's sockets are (those add a group, which you can with chmod).
CONTROL_SOCKET_MODE = 0o600

#: Largest reply buffered for one control client: the ``connections`` list of
#: 10,000 connections (the default ``max_connections`` cap) is about 2 MB of
#: JSON, so 32 MiB leaves room and still bounds a client that never reads.
CONTROL_MAX_REPLY = 32 * 1024 * 1024

#: Seconds an idle metrics client is kept: nginx's keepalive_timeout (75 s)
#: outlasts Prometheus's usual 15-60 s scrape interval, so scrapes reuse it.
METRICS_IDLE_TIMEOUT = 75.0

#: Metrics clients served at once (a Prometheus pair and a curl or two).
METRICS_MAX_CLIENTS = 16

# A scrape is a GET with a few headers: 8 KiB heads (nginx's
# large_client_header_buffers line size) and 1 KiB targets and bodies are plenty.
_METRICS_MAX_HEAD = 8 * 1024
_METRICS_MAX_TARGET = 1024
_METRICS_MAX_BODY = 1024

# Seconds a closing internal connection may take to flush its reply
# (nginx's lingering_timeout is 5 s).
_CLOSE_TIMEOUT = 5.0

# Requests of one client waiting for a reply that comes later (the
# supervisor of --workers asks its workers first): past this many, the
# client's reading pauses until replies go out. A ctl client sends one at a
# time; Prometheus one scrape per connection.
_MAX_WAITING = 8

#: The control commands, each with the one line ``ctl --help`` shows.
COMMANDS: Mapping[str, str] = MappingProxyType(
    {
        "status": "pid, uptime, endpoints, counts, bytes, timers, fds, RSS, loop lag, links",
        "connections": 'one entry per connection ({"limit": N} for the oldest N)',
        "reload": "call on_reload(), as SIGHUP does",
        "stop": 'stop gracefully, as SIGTERM does ({"timeout": S} overrides shutdown_timeout)',
        "log-level": 'change the log level ({"level": "debug"})',
        "metrics": "the Prometheus text of the metrics endpoint (needs daemonkit[metrics])",
        "upgrade": "replace the process by a new copy without dropping clients, as SIGUSR2",
    }
)

# The fields each command takes besides "cmd", and whether they are required.
_FIELDS: dict[str, dict[str, bool]] = {
    "status": {},
    "connections": {"limit": False},
    "reload": {},
    "stop": {"timeout": False},
    "log-level": {"level": True},
    "metrics": {},
    "upgrade": {},
}

# struct ucred of SO_PEERCRED: pid_t pid, uid_t uid, gid_t gid (uid_t is unsigned).
_UCRED = struct.Struct("iII")

_EXAMPLE = '{"cmd": "status"}'


class RequestError(Exception):
    """A control request is malformed or cannot be carried out (the client's fault).

    Its message is sent back as ``{"ok": false, "error": message}``.
    """


def parse_request(line: bytes) -> dict[str, Any]:
    """Parse one request line into its JSON object; :class:`RequestError` if it is not one.

    Checks the shape only (an object with a string ``cmd``); the command
    and its fields are checked when it runs.
    """
    try:
        obj = json.loads(line)
    except UnicodeDecodeError:
        raise RequestError(
            f"malformed request: not UTF-8 text; send one JSON object per line, e.g. {_EXAMPLE}"
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise RequestError(
            f"malformed request: {reason}; send one JSON object per line, e.g. {_EXAMPLE}"
        ) from None
    if not isinstance(obj, dict):
        raise RequestError(f"a request must be a JSON object, e.g. {_EXAMPLE}")
    if not isinstance(obj.get("cmd"), str):
        raise RequestError(f'a request needs "cmd", a string, e.g. {_EXAMPLE}')
    return obj


def check_request(request: dict[str, Any]) -> str:
    """The command of a parsed request whose fields fit it; :class:`RequestError` otherwise.

    An unknown command, a field the command does not take, or a required
    field missing. The values themselves are checked by the command.
    """
    cmd = request.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise RequestError(f"unknown command {cmd!r}; commands: {', '.join(COMMANDS)}")
    fields = _FIELDS[cmd]
    unknown = sorted(set(request) - {"cmd"} - set(fields))
    if unknown:
        takes = ", ".join(fields) or "nothing else"
        raise RequestError(f"{cmd} does not take {unknown[0]!r} (it takes: {takes})")
    missing = [name for name, required in fields.items() if required and name not in request]
    if missing:
        raise RequestError(f'{cmd} needs "{missing[0]}"')
    return cmd


def set_log_level(level: object, log: logging.Logger) -> tuple[str, str]:
    """Set this process's log level to ``level`` (a name); ``(was, now)`` as seen by ``log``.

    :class:`RequestError` for a name that is not in
    :data:`~daemonkit.core.log.LEVELS`.
    """
    number = LEVELS.get(level.strip().lower()) if isinstance(level, str) else None
    if number is None:
        raise RequestError(f"unknown log level {level!r}; choose one of {', '.join(LEVELS)}")
    was = logging.getLevelName(log.getEffectiveLevel()).lower()
    # The loggers daemonkit.core.log.setup() configures: "daemonkit" (every
    # daemon's logger is its child) and the root, which application and
    # library loggers follow.
    logging.getLogger("daemonkit").setLevel(number)
    logging.getLogger().setLevel(number)
    return was, logging.getLevelName(log.getEffectiveLevel()).lower()


def check_socket_dir(path: str) -> None:
    """Refuse a control socket path whose directory others could tamper with.

    Raises :class:`~daemonkit.errors.ConfigError` when the directory is
    missing, world-writable (``/tmp``), or owned by a user other than the
    daemon's or root: anyone who can write there can replace the socket
    and answer the daemon's operators in its place.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise ConfigError(
            f"control socket directory {directory} does not exist; create it first "
            "(e.g. mode 0700, owned by the daemon's user)"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"control socket directory {directory} is not a directory")
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        raise ConfigError(
            f"control socket directory {directory} is world-writable (mode {mode:04o}): "
            "anyone could replace the socket; use a directory only the daemon's user "
            "can write, e.g. /run/NAME with mode 0700"
        )
    uid = os.geteuid()
    if info.st_uid not in (uid, 0):
        raise ConfigError(
            f"control socket directory {directory} belongs to uid {info.st_uid}, not to the "
            f"daemon's user (uid {uid}) or root: that user could replace the socket"
        )


def check_operations(control: object, metrics: object) -> tuple[str | None, Address | None]:
    """Check the ``control`` and ``metrics`` settings as the start does; what they name.

    Returns the control socket path (or None) and the metrics address (or
    None). Raises :class:`~daemonkit.errors.ConfigError` for a control path
    that is not a string or whose directory fails :func:`check_socket_dir`,
    and for a metrics endpoint that does not parse, is not tcp/http/unix, or
    lacks prometheus-client (the ``metrics`` extra).
    The start calls it before binding and ``daemonkit --check`` calls it
    alone, so a setting that would fail the start fails the check too.
    """
    path: str | None = None
    if control is not None:
        given = os.fspath(control) if isinstance(control, str | os.PathLike) else control
        if not isinstance(given, str) or not given:
            raise ConfigError(f"control must be a socket path, not {control!r}")
        path = given.removeprefix("unix://")
        check_socket_dir(path)
    address: Address | None = None
    if metrics is not None:
        address = parse_endpoint(str(metrics))
        if address.scheme not in ("tcp", "http", "unix"):
            raise ConfigError(
                f"metrics endpoint {metrics}: use tcp://HOST:PORT (served as HTTP) or unix:///path"
            )
        require_client(f"metrics endpoint {metrics}")
    return path, address


def _peer_credentials(conn: Connection) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of a unix-socket peer; None where SO_PEERCRED does not exist.

    Where it exists but cannot be read, the uid is -1, which no check admits.
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None  # not Linux: the socket file's mode 0600 is the only check
    transport = conn.transport
    sock: Any = transport.get_extra_info("socket") if transport is not None else None
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    except (AttributeError, OSError, struct.error):
        return -1, -1, -1
    return int(pid), int(uid), int(gid)


# -- internal hosts --------------------------------------------------------------


class Served(Protocol):
    """What the control socket and the metrics endpoint serve: a daemon's :class:`Operations`,
    or the ``--workers`` supervisor's (:mod:`daemonkit.ops.workerset`).

    ``daemon`` names the logger and numbers the connections; ``submit`` and
    ``scrape_later`` answer now or later by calling ``done`` once: replies
    still go out in request order.
    """

    @property
    def daemon(self) -> Daemon:
        """The daemon served (in a supervisor: the one its workers run, never started)."""

    @property
    def reactor(self) -> Reactor:
        """The loop the endpoints run on."""

    def submit(self, request: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """Run one parsed control request; ``done(reply)`` once, now or later."""

    def scrape_later(self, accept: str, done: Callable[[bytes, str], None]) -> None:
        """One scrape; ``done(body, content_type)`` once, now or later."""

    def unhealthy(self) -> str | None:
        """Why ``GET /healthz`` should answer 503 now (``"stopping"``...), or None: 200."""


class _ServiceConnection(Connection):
    """A connection of an internal host: framing errors get a reply before the close."""

    __slots__ = ()

    def _framing_error(self, exc: FramingError) -> None:
        host = self._host
        assert isinstance(host, _ServiceHost)
        host._on_bad_input(self, exc)


class _ServiceHost:
    """The :class:`~daemonkit.core.connection.ConnectionHost` of an internal endpoint.

    Keeps its connections in its own books: the daemon's ``connections``,
    ``stats`` and ``max_connections`` never see them.
    """

    kind: ClassVar[str] = "service"

    def __init__(
        self,
        ops: Served,
        address: Address,
        *,
        max_clients: int,
        idle_timeout: float,
        max_buffer: int,
    ) -> None:
        self.ops = ops
        self.daemon = ops.daemon
        self.bind_address = address
        self.max_clients = max_clients
        self.idle_timeout: float | None = idle_timeout
        self.write_high_water = max_buffer
        self.write_low_water = DEFAULT_WRITE_LOW_WATER
        self.max_write_buffer = max_buffer
        self.close_timeout = _CLOSE_TIMEOUT
        self._on_read: Callable[[Connection, Any], object] = self.on_frame
        self._on_frames: Callable[[Connection, list[Any]], object] | None = None
        self._log = ops.daemon.log.getChild(self.kind)
        self.listener: Listener | None = None
        #: The live connections of this endpoint, by id.
        self.clients: dict[int, Connection] = {}
        #: Clients closed at accept because :attr:`max_clients` were being served.
        self.refused = 0
        # Per client id: its requests' replies in order; None until ready.
        self._waiting: dict[int, deque[list[Callable[[], object] | None]]] = {}
        # Clients not read while _MAX_WAITING replies are outstanding.
        self._paused: set[int] = set()

    @property
    def reactor(self) -> Reactor:
        """The daemon's reactor."""
        return self.ops.reactor

    @property
    def log(self) -> logging.Logger:
        """This endpoint's logger."""
        return self._log

    @property
    def address(self) -> Address | None:
        """The bound address, once open."""
        return self.listener.address if self.listener is not None else None

    def open(self) -> None:
        """Bind and start accepting; raises ``OSError``."""
        self.listener = self.reactor.listen(
            self.bind_address,
            self._new_connection,
            admit=self._admit,
            sock=self.daemon.inherited_sockets.pop(f"@{self.kind}", None),  # from an upgrade
        )

    def close(self) -> None:
        """Stop accepting (a unix socket file is removed) and close every client; idempotent."""
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.clients.values()):
            conn._close(CloseReason.SHUTDOWN)

    def timers(self) -> int:
        """Active timers held by this endpoint's connections (not the user's)."""
        count = 0
        for conn in self.clients.values():
            x = conn._x
            # The idle deadline waits in a timer or in a bucket of the idle wheel.
            for timer in (conn._idle_wait, x.close_timer if x is not None else None):
                if timer is not None and timer.active:
                    count += 1
        return count

    def new_framer(self) -> Framer:
        """A framer for a new connection."""
        raise NotImplementedError

    def on_frame(self, conn: Connection, frame: Any) -> None:
        """One request arrived."""
        raise NotImplementedError

    def on_accept(self, conn: Connection) -> None:
        """A client connected."""

    def _on_bad_input(self, conn: Connection, exc: FramingError) -> None:
        conn.log.info("%s; closing", exc)
        conn._close(CloseReason.PROTOCOL_ERROR)

    def _admit(self) -> bool:
        listener = self.listener
        pending = listener.pending if listener is not None else 0
        if len(self.clients) + pending >= self.max_clients:
            self.refused += 1
            return False
        return True

    def _new_connection(self) -> Connection:
        return _ServiceConnection(self, self.daemon.new_connection_id(), self.new_framer())

    def _reply_slot(self, conn: Connection) -> Callable[[Callable[[], object]], None]:
        """A place for the reply to the request just read: ``fill(send)`` once it is known.

        ``send()`` writes the reply; it runs once every earlier request's
        reply has gone out, so a reply that comes later (the supervisor asks
        its workers) never overtakes one that came at once. A client with
        :data:`_MAX_WAITING` replies outstanding stops being read until they go.
        """
        queue = self._waiting.setdefault(conn.id, deque())
        entry: list[Callable[[], object] | None] = [None]
        queue.append(entry)
        if len(queue) >= _MAX_WAITING and conn.id not in self._paused:
            self._paused.add(conn.id)
            conn.pause_reading()

        def fill(send: Callable[[], object]) -> None:
            if entry[0] is not None or self._waiting.get(conn.id) is not queue:
                return  # answered already, or the client is gone
            entry[0] = send
            while queue and (ready := queue[0][0]) is not None:
                queue.popleft()
                ready()
            if not queue:
                self._waiting.pop(conn.id, None)
            if len(queue) < _MAX_WAITING and conn.id in self._paused:
                self._paused.discard(conn.id)
                conn.resume_reading()

        return fill

    # -- the ConnectionHost interface ------------------------------------

    def _on_connection_made(self, conn: Connection) -> None:
        self.clients[conn.id] = conn
        try:
            self.on_accept(conn)
        except Exception as exc:
            self._call_error(conn, exc)

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        self.clients.pop(conn.id, None)
        self._waiting.pop(conn.id, None)
        self._paused.discard(conn.id)

    def _call_error(self, conn: Connection, exc: Exception) -> None:
        conn.log.error("internal error in the %s endpoint; closing", self.kind, exc_info=exc)
        conn._close(CloseReason.HANDLER_ERROR)

    def _call_eof(self, conn: Connection) -> bool:
        return False

    def _call_drain(self, conn: Connection) -> None:
        pass

    def _call_timeout(self, conn: Connection) -> None:
        conn._close(CloseReason.IDLE_TIMEOUT)


class _ControlHost(_ServiceHost):
    """The control socket: JSON lines, peers checked with SO_PEERCRED."""

    kind = "control"

    def __init__(self, ops: Served, path: str) -> None:
        super().__init__(
            ops,
            Address("unix", path=path),
            max_clients=CONTROL_MAX_CLIENTS,
            idle_timeout=CONTROL_IDLE_TIMEOUT,
            max_buffer=CONTROL_MAX_REPLY,
        )
        self.path = path
        self._uids = frozenset({os.geteuid(), 0})

    def open(self) -> None:
        """Check the directory, bind with mode 0600, start accepting."""
        check_socket_dir(self.path)
        # umask around bind: the file never exists with a wider mode, even briefly.
        old = os.umask(0o777 & ~CONTROL_SOCKET_MODE)
        try:
            super().open()
        finally:
            os.umask(old)
        os.chmod(self.path, CONTROL_SOCKET_MODE)

    def new_framer(self) -> Framer:
        """Lines of at most :data:`CONTROL_MAX_LINE` bytes."""
        return Lines(max_length=CONTROL_MAX_LINE)

    def on_accept(self, conn: Connection) -> None:
        """Let in the daemon's user and root only."""
        creds = _peer_credentials(conn)
        if creds is None or creds[1] in self._uids:
            return
        pid, uid, _ = creds
        self.log.warning(
            "refused a control client: pid %d runs as uid %d, not as the daemon's uid %d or root",
            pid,
            uid,
            os.geteuid(),
        )
        self._reply(
            conn,
            {
                "ok": False,
                "error": f"permission denied: uid {uid} may not control "
                f"this daemon (only uid {os.geteuid()} and root may)",
            },
        )
        conn._close(CloseReason.LOCAL)

    def on_frame(self, conn: Connection, frame: Any) -> None:
        """One request line: parse, run, reply (now, or later for a supervisor)."""
        fill = self._reply_slot(conn)

        def done(reply: dict[str, Any]) -> None:
            fill(lambda: self._reply(conn, reply))

        try:
            self.ops.submit(parse_request(frame), done)
        except RequestError as exc:
            done({"ok": False, "error": str(exc)})

    def _on_bad_input(self, conn: Connection, exc: FramingError) -> None:
        if isinstance(exc, FrameTooLarge):
            message = f"request line longer than {CONTROL_MAX_LINE} bytes; closing"
        else:
            message = f"{exc}; closing"
        self.log.info("control client %s", message)
        self._reply(conn, {"ok": False, "error": message})
        too_large = isinstance(exc, FrameTooLarge)
        conn._close(CloseReason.FRAME_TOO_LARGE if too_large else CloseReason.PROTOCOL_ERROR)

    def _call_timeout(self, conn: Connection) -> None:
        self._reply(
            conn, {"ok": False, "error": f"no request within {CONTROL_IDLE_TIMEOUT:g}s; closing"}
        )
        conn._close(CloseReason.IDLE_TIMEOUT)

    def _call_error(self, conn: Connection, exc: Exception) -> None:
        self._reply(conn, {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"})
        super()._call_error(conn, exc)

    @staticmethod
    def _reply(conn: Connection, reply: dict[str, Any]) -> None:
        conn.send(json.dumps(reply, separators=(",", ":"), allow_nan=False).encode())


class _MetricsHost(_ServiceHost):
    """``GET /metrics`` and ``GET /healthz`` over plain HTTP/1.1 (keep-alive, pipelining, HEAD).

    ``/healthz`` is for load balancers: a cheap ``200 ok`` while the daemon
    serves, ``503`` with the reason (``stopping``, ``draining``) once it
    stops, so that HAProxy's ``option httpchk`` takes it out of rotation.
    """

    kind = "metrics"

    def __init__(self, ops: Served, address: Address) -> None:
        super().__init__(
            ops,
            address,
            max_clients=METRICS_MAX_CLIENTS,
            idle_timeout=METRICS_IDLE_TIMEOUT,
            max_buffer=CONTROL_MAX_REPLY,
        )

    def new_framer(self) -> Framer:
        """An HTTP request framer with small limits: a scrape is a bare GET."""
        return HttpRequestFramer(
            max_head=_METRICS_MAX_HEAD, max_target=_METRICS_MAX_TARGET, max_body=_METRICS_MAX_BODY
        )

    def on_frame(self, conn: Connection, frame: Any) -> None:
        """Answer one request."""
        assert isinstance(frame, HttpRequest)
        keep = frame.keep_alive and frame.upgrade is None
        head = frame.method == "HEAD"
        fill = self._reply_slot(conn)

        def send(data: bytes) -> None:
            conn.write(data)
            if not keep:
                conn._close(CloseReason.LOCAL)

        if frame.method not in ("GET", "HEAD"):
            data = encode_response(
                405,
                {"allow": "GET, HEAD"},
                b"only GET and HEAD: /metrics, /healthz\n",
                keep_alive=keep,
            )
            fill(lambda: send(data))
        elif frame.path == "/healthz":
            why = self.ops.unhealthy()
            status, body = (200, b"ok\n") if why is None else (503, f"{why}\n".encode())
            data = encode_response(
                status, {"content-type": "text/plain"}, body, keep_alive=keep, head=head
            )
            fill(lambda: send(data))
        elif frame.path != "/metrics":
            data = encode_response(
                404, (), b"not found; try /metrics or /healthz\n", keep_alive=keep
            )
            fill(lambda: send(data))
        else:

            def done(body: bytes, content_type: str) -> None:
                response = encode_response(
                    200, {"content-type": content_type}, body, keep_alive=keep, head=head
                )
                fill(lambda: send(response))

            # Prometheus asks for OpenMetrics in Accept; anything else gets the classic text.
            accept = ", ".join(value for name, value in frame.headers if name == "accept")
            self.ops.scrape_later(accept, done)

    def _on_bad_input(self, conn: Connection, exc: FramingError) -> None:
        status = exc.status if isinstance(exc, HttpError) else 400
        conn.log.info("bad metrics request: %s; closing", exc)
        conn.write(encode_response(status, (), f"{exc}\n".encode(), keep_alive=False))
        conn._close(CloseReason.PROTOCOL_ERROR)


# -- the whole -----------------------------------------------------------------------


class Operations:
    """A daemon's control socket, metrics endpoint, lag monitor and slow-callback watchdog.

    Made by the daemon at start when ``control`` or ``metrics`` is set
    (:meth:`start`), and released by its cleanups at stop (:meth:`close`).
    :meth:`execute` runs one control request and returns the reply; the
    control socket calls it, tests may too.
    """

    def __init__(
        self,
        daemon: Daemon,
        reactor: Reactor,
        *,
        lag_interval: float = DEFAULT_LAG_INTERVAL,
        slow_callback: float = DEFAULT_SLOW_CALLBACK,
    ) -> None:
        self.daemon = daemon
        self.reactor = reactor
        self.log = daemon.log.getChild("control")
        loop = reactor.loop
        #: The event-loop lag monitor.
        self.lag = LagMonitor(loop.call_later, loop.time, interval=lag_interval)
        #: The slow-callback watchdog (its warnings go to the daemon's logger).
        self.watchdog = SlowCallbackWatchdog(loop, daemon.log, threshold=slow_callback)
        self.control: _ControlHost | None = None
        self.metrics: _MetricsHost | None = None
        self.started = time.monotonic()
        self.start_time = time.time()
        self._closed = False
        # What register_collectors put in the daemon's registry: at open with a
        # metrics endpoint, else at the first ``metrics`` command; None until then.
        self._collectors: list[Collector] | None = None

    @classmethod
    def start(cls, daemon: Daemon, reactor: Reactor) -> Operations:
        """Open what ``daemon.control``/``daemon.metrics`` ask for and register the cleanup.

        Raises :class:`~daemonkit.errors.ConfigError` for a bad setting (a
        world-writable directory, a metrics endpoint that is not tcp/http/unix)
        and :class:`~daemonkit.daemon.StartError` when a socket cannot be
        bound; the daemon's listeners are closed first, as a failed bind of
        its own would.
        """
        ops = cls(daemon, reactor)
        try:
            ops._open()
        except BaseException:
            ops.close()
            for host in daemon.endpoint_hosts:
                host.close()
            daemon.listeners.clear()
            raise
        daemon.cleanup(ops)
        # The monitors start with the loop: on_start may take its time first.
        reactor.call_soon(ops._start_monitors)
        return ops

    def _open(self) -> None:
        daemon = self.daemon
        path, address = check_operations(daemon.control, daemon.metrics)
        if address is not None:
            self._register()  # before binding: a name clash fails the start (ConfigError)
        self.control, self.metrics = open_endpoints(self, path, address, self.log)

    def _start_monitors(self) -> None:
        if not self._closed:
            self.lag.start()
            self.watchdog.start()

    def close(self) -> None:
        """Close the endpoints and their clients, stop the monitors; idempotent."""
        if self._closed:
            return
        self._closed = True
        for host in (self.control, self.metrics):
            if host is not None:
                host.close()
        self.lag.close()
        self.watchdog.close()
        if self._collectors is not None:
            unregister_collectors(self.daemon.metrics_registry, self._collectors)

    # -- metrics ------------------------------------------------------------

    def _register(self) -> None:
        if self._collectors is None:
            registry = self.daemon.metrics_registry  # ConfigError without prometheus-client
            # A scrape's process figures come from prometheus-client's collector.
            self._collectors = register_collectors(registry, lambda: self.sample(process=False))

    def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """One scrape of the daemon's ``metrics_registry``: body and Content-Type.

        daemonkit's figures, the process's and the application's metrics;
        OpenMetrics when ``accept`` asks for it (see
        :func:`daemonkit.ops.metrics.render`). Raises
        :class:`~daemonkit.errors.ConfigError` without prometheus-client, or
        when an application metric took a name daemonkit exports.
        """
        self._register()
        return render(self.daemon.metrics_registry, accept)

    # -- commands ----------------------------------------------------------

    def sample(self, *, process: bool = True) -> Sample:
        """The daemon's figures now (see :func:`daemonkit.ops.metrics.sample`)."""
        hosts = [h for h in (self.control, self.metrics) if h is not None]
        return sample(
            self.daemon,
            lag=self.lag,
            watchdog=self.watchdog,
            started=self.started,
            start_time=self.start_time,
            hidden_timers=sum(h.timers() for h in hosts),
            hidden_tasks=sum(h.listener.pending for h in hosts if h.listener is not None),
            process=process,
        )

    def submit(self, request: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """Run one request and pass its reply to ``done`` at once (see :class:`Served`)."""
        done(self.execute(request))

    def scrape_later(self, accept: str, done: Callable[[bytes, str], None]) -> None:
        """One scrape, passed to ``done`` at once (see :class:`Served`)."""
        done(*self.scrape(accept))

    def unhealthy(self) -> str | None:
        """``"draining"`` or ``"stopping"`` once a stop began, else None (see :class:`Served`).

        An upgrade's old process hands its metrics listener to the new one
        before it drains, so a check that connects anew reaches the new
        process and stays healthy.
        """
        daemon = self.daemon
        if daemon.is_draining():
            return "draining"
        return "stopping" if daemon.is_stopping() else None

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one parsed request and return its reply; :class:`RequestError` if it is wrong."""
        cmd = check_request(request)
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
            self, "_cmd_" + cmd.replace("-", "_")
        )
        return handler(request)

    def _cmd_status(self, request: dict[str, Any]) -> dict[str, Any]:
        status = self.sample().to_dict()
        status["control"] = self.control.path if self.control is not None else None
        metrics = self.metrics.address if self.metrics is not None else None
        status["metrics"] = str(metrics) if metrics is not None else None
        return {"ok": True, "status": status}

    def _cmd_connections(self, request: dict[str, Any]) -> dict[str, Any]:
        limit = request.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise RequestError(f"limit must be a whole number >= 0, not {limit!r}")
        conns = self.daemon.connections
        now = self.reactor.clock.now()
        ordered = sorted(conns, key=lambda c: c.id)
        entries = []
        for conn in ordered if limit is None else ordered[:limit]:
            since = conns.accepted_at(conn.id)
            endpoint = conn.endpoint
            entries.append(
                {
                    "id": conn.id,
                    "endpoint": endpoint.name if endpoint is not None else None,
                    "peer": conn.peer,
                    "age": round(now - since, 3) if since is not None else None,
                    # Known only with an idle timeout: without one the connection
                    # does not record its reads (that would cost every read).
                    "idle": round(now - conn._last_read, 3) if conn._idle else None,
                    "bytes_in": conn.bytes_in,
                    "bytes_out": conn.bytes_out,
                    "write_buffer": conn.write_buffer_size,
                }
            )
        return {"ok": True, "total": len(ordered), "connections": entries}

    def _cmd_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        self.log.info("reload requested: calling on_reload")
        try:
            self.daemon.reload()  # the path SIGHUP takes; logs the failure
        except Exception as exc:
            raise RequestError(f"on_reload failed: {type(exc).__name__}: {exc}") from exc
        return {"ok": True}

    def _cmd_upgrade(self, request: dict[str, Any]) -> dict[str, Any]:
        self.log.info("upgrade requested")
        try:
            new_pid = self.daemon.upgrade()  # the path SIGUSR2 takes
        except UpgradeError as exc:
            raise RequestError(f"upgrade not started: {exc}") from exc
        return {"ok": True, "upgrading": True, "pid": os.getpid(), "new_pid": new_pid}

    def _cmd_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        daemon = self.daemon
        timeout = request.get("timeout")
        if timeout is not None:
            try:  # 1e308 let in here once made stop() raise half-way
                timeout = check_duration("timeout", timeout)
            except ConfigError as exc:
                raise RequestError(str(exc)) from None
        if daemon.is_stopping():
            # Like a second SIGTERM: stop at once.
            self.log.warning("stop requested again: stopping now")
            self.reactor.call_soon(lambda: daemon.stop(now=True))
            return {
                "ok": True,
                "stopping": True,
                "now": True,
                "connections": len(daemon.connections),
            }
        if timeout is not None:
            daemon.shutdown_timeout = timeout
        self.log.info(
            "stop requested: stopping gracefully (shutdown_timeout=%gs)", daemon.shutdown_timeout
        )
        # After this reply is written: the stop may close this very connection.
        self.reactor.call_soon(daemon.stop)
        return {
            "ok": True,
            "stopping": True,
            "connections": len(daemon.connections),
            "timeout": daemon.shutdown_timeout,
        }

    def _cmd_log_level(self, request: dict[str, Any]) -> dict[str, Any]:
        was, now = set_log_level(request["level"], self.daemon.log)
        self.log.warning("log level changed from %s to %s", was, now)
        return {"ok": True, "level": now, "was": was}

    def _cmd_metrics(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            body, _ = self.scrape()
        except ConfigError as exc:
            raise RequestError(str(exc)) from None
        return {"ok": True, "metrics": body.decode()}


def handed_over_listeners(
    control: _ControlHost | None, metrics: _MetricsHost | None
) -> list[tuple[str, Listener]]:
    """The open listeners of a control socket and a metrics endpoint, named as an upgrade
    hands them over (``"@control"``, ``"@metrics"``): a daemon's, or a ``--workers`` set's."""
    found = []
    for name, host in (("control", control), ("metrics", metrics)):
        listener = host.listener if host is not None else None
        if listener is not None and listener.active:
            found.append((f"@{name}", listener))
    return found


def open_endpoints(
    ops: Served, path: str | None, address: Address | None, log: logging.Logger
) -> tuple[_ControlHost | None, _MetricsHost | None]:
    """Open the control socket at ``path`` and the metrics endpoint at ``address`` for ``ops``.

    Either may be None (not opened). Raises :class:`~daemonkit.daemon.StartError`
    when one cannot be bound (what was opened is closed again), and
    :class:`~daemonkit.errors.ConfigError` for a control directory that fails
    :func:`check_socket_dir`. A daemon's :class:`Operations` and the
    ``--workers`` supervisor both open theirs here.
    """
    control = _ControlHost(ops, path) if path is not None else None
    metrics = _MetricsHost(ops, address) if address is not None else None
    try:
        if control is not None:
            try:
                control.open()
            except OSError as exc:
                raise StartError(
                    f"cannot open the control socket {control.path}: {exc.strerror or exc}"
                ) from exc
            log.info("control socket at %s", control.path)
        if metrics is not None and address is not None:
            try:
                metrics.open()
            except OSError as exc:
                raise StartError(
                    f"cannot listen for metrics on {address}: {exc.strerror or exc}"
                ) from exc
            bound = metrics.address
            if address.scheme == "unix":
                log.info("metrics at %s (GET /metrics)", bound)
            else:
                log.info("metrics at %s/metrics", str(bound).replace("tcp://", "http://", 1))
    except BaseException:
        for host in (control, metrics):
            if host is not None:
                host.close()
        raise
    return control, metrics
