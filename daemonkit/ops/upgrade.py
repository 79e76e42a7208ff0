"""Zero-downtime upgrade: replace the running process by a new copy of itself.

On SIGUSR2, ``ctl upgrade``, the memory guard or ``max_runtime``, a running daemon starts a
new copy of itself: the same command line (``sys.executable`` and
``sys.orig_argv``), from the directory it was launched in, with its
listening sockets inherited, as nginx (``NGINX=fd;fd;``) and gunicorn
(``GUNICORN_FD=fd,fd``) do on the same signal. The new process adopts the
sockets by endpoint name before it starts (:meth:`Daemon.adopt
<daemonkit.daemon.Daemon.adopt>`), loads the code afresh, and once it is
listening writes ``ready`` to a pipe the old one gave it. Only then does
the old one close its copies of the listeners and stop gracefully; it
exits 0. nginx and gunicorn leave that last step to the operator; the
readiness pipe lets daemonkit take it itself.

**The drain.** Stopping, the old process first keeps serving the
connections it already has, for up to ``upgrade_drain`` seconds (default
:data:`~daemonkit.daemon.DEFAULT_UPGRADE_DRAIN`), as nginx's old workers
(``worker_shutdown_timeout``) and HAProxy's old process
(``hard-stop-after``) do: it accepts nothing (the queues are the new
process's), its callbacks, timers and links go on, and it exits as soon as
its last connection closes. At the deadline it closes the rest as any
graceful stop does (``on_stop``, WebSocket 1001, HTTP ``Connection: close``
after the response being written, within ``shutdown_timeout``). SIGTERM
while draining ends the drain at once that same way; a second SIGTERM
aborts. ``upgrade_drain = 0`` closes them right after the hand-over. The
log says ``draining: N connection(s) left`` every
:data:`~daemonkit.daemon.DRAIN_REPORT_INTERVAL` seconds.

What the new process finds in its environment::

    DAEMONKIT_INHERIT=tcp:5,admin:6,@control:7   listeners by endpoint name
                                                 (@control, @metrics: the operations endpoints)
    DAEMONKIT_INHERIT_FILES=@control:64769:1234  the unix socket files the old process
                                                 bound, by name, as st_dev:st_ino
    DAEMONKIT_UPGRADE_FD=9                       the write end of the readiness pipe
    DAEMONKIT_UPGRADE_PID=4242                   the old process: the variables
                                                 count only for its own child

**Why no connection is dropped.** Both processes hold descriptors of the
same listening sockets, so a socket's accept queue belongs to neither:
while both run, either may accept from it; when the old one closes its
descriptor, the socket and every connection queued in its backlog live
on in the new one. A listening socket (and its queue) is destroyed only
with its last descriptor, which a hand-over never closes. Two sockets
bound with ``SO_REUSEPORT`` would each have a queue of their own, and
Linux drops what is queued on the one that closes: that is why the
descriptors are inherited rather than bound again.

**When the new process fails** (it exits, or is not ready within
:data:`UPGRADE_TIMEOUT`) the old one keeps serving and logs why: the
exit status and, when the new process ran the CLI, its one-line error
(:func:`report_start_failure` sends it through the pipe). A new process
that is not ready in time is killed.

**Who removes a unix socket file.** Only the process that owns it, and only
while the path still names the socket it bound (st_dev/st_ino). The old
process owns the files it bound; a new process owns none until it has said
it is ready: then it claims them (identified by ``DAEMONKIT_INHERIT_FILES``)
and the old one releases them. A new process that fails therefore leaves
the files of the control socket and the ``unix://`` endpoints to the
process that goes on serving them.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING

from daemonkit.core.reactor import READ
from daemonkit.errors import ConfigError, UpgradeError
from daemonkit.framework.hosts import StreamHost
from daemonkit.ops.memguard import MEMORY_RETRY_DELAY, MemoryGuard, format_size

if TYPE_CHECKING:
    from daemonkit.core.reactor import Listener, Reactor, Watch
    from daemonkit.core.timers import Timer
    from daemonkit.daemon import Daemon

__all__ = [
    "ENV_INHERIT",
    "ENV_INHERIT_FILES",
    "ENV_PARENT",
    "ENV_READY_FD",
    "LAUNCH_DIR",
    "RUNTIME_RETRY_DELAY",
    "UPGRADE_REAP_TIMEOUT",
    "UPGRADE_TIMEOUT",
    "UpgradeError",
    "Upgrader",
    "adopt_handed_over",
    "default_command",
    "report_ready",
    "report_start_failure",
    "runtime_deadline",
    "upgrading_from",
]

#: The listeners handed over, as ``NAME:FD`` pairs separated by commas.
ENV_INHERIT = "DAEMONKIT_INHERIT"
#: The unix socket files handed over, as ``NAME:DEV:INO`` separated by commas.
ENV_INHERIT_FILES = "DAEMONKIT_INHERIT_FILES"
#: The write end of the readiness pipe.
ENV_READY_FD = "DAEMONKIT_UPGRADE_FD"
#: The pid of the process being replaced; the other variables count only when it is our parent.
ENV_PARENT = "DAEMONKIT_UPGRADE_PID"

#: Seconds the new process has to bind nothing, load its code, run
#: ``on_start`` and say it is ready; past it, it is killed and the old one
#: goes on. systemd gives a service's start 90 s (DefaultTimeoutStartSec);
#: a daemon that inherits its sockets has less to do.
UPGRADE_TIMEOUT = 30.0

#: Seconds to wait for a new process that failed (closed its pipe) to exit
#: before it is killed; its exit status is what the log reports.
UPGRADE_REAP_TIMEOUT = 10.0

#: Where the process was launched: the new process starts there, so relative
#: paths on the command line mean what they meant (multiprocessing keeps
#: ``ORIGINAL_DIR`` for the same reason). None if the directory is gone.
LAUNCH_DIR: str | None
try:
    LAUNCH_DIR = os.getcwd()
except OSError:  # pragma: no cover - started in a deleted directory
    LAUNCH_DIR = None

#: Seconds before ``max_runtime`` tries the upgrade again after one that could
#: not be made or failed: the memory guard's retry delay, for the same reasons.
RUNTIME_RETRY_DELAY = MEMORY_RETRY_DELAY

# Seconds between two polls for the exit of a failed new process.
_REAP_POLL = 0.05
# Longest message read from the readiness pipe: PIPE_BUF, what one write
# delivers whole.
_MAX_MESSAGE = 4096
# Seconds the old process waits, after the hand-over, for the connections it
# accepted but has not set up yet (a TLS handshake at most: its own timeout
# ends it sooner), polling every _ATTACH_POLL.
_ATTACH_WAIT = 5.0
_ATTACH_POLL = 0.005
# Seconds close() gives a new process it stops (the daemon is stopping
# during an upgrade) before SIGKILL.
_STOP_GRACE = 5.0


def default_command() -> list[str]:
    """The command line that started this process, to start its copy with.

    ``sys.executable`` followed by ``sys.orig_argv[1:]``, so interpreter
    options (``-X``, ``-W``) and ``-m daemonkit`` are kept.
    """
    return [sys.executable, *sys.orig_argv[1:]]


def runtime_deadline(
    max_runtime: float, jitter: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds until ``max_runtime`` recycles: it plus a random extra of up to ``jitter`` of it.

    ``rand()`` is uniform in [0, 1) (``random.random``); so a fleet started
    at once spreads its restarts over ``max_runtime * jitter`` seconds.
    """
    return max_runtime * (1.0 + jitter * rand())


def upgrading_from(environ: Mapping[str, str] | None = None) -> int | None:
    """The pid of the process this one is replacing, if it was started by an upgrade.

    For code that must behave differently in the new process (a pidfile
    held by the old one, a ``--daemon`` that must not detach again). None
    once the new process has said it is ready.
    """
    env = os.environ if environ is None else environ
    parent = env.get(ENV_PARENT, "")
    return int(parent) if parent.isdigit() and int(parent) == os.getppid() else None


def report_start_failure(message: str, environ: MutableMapping[str, str] | None = None) -> None:
    """In a new process started by an upgrade, tell the old one why this one fails.

    The CLI calls it with its one-line error before it exits, so the old
    process's log says what went wrong, not only the exit status. Does
    nothing in any other process.
    """
    env = os.environ if environ is None else environ
    _write_ready_pipe(env, b"error " + message.encode(errors="replace") + b"\n")


def report_ready(environ: MutableMapping[str, str] | None = None) -> bool:
    """In a process started by an upgrade (or a supervisor), tell its parent it is ready.

    Writes ``ready`` to the readiness pipe and forgets the upgrade's
    variables; True if there was a parent to tell. Call it once listening,
    after the pidfile and systemd name this process.
    """
    return _write_ready_pipe(os.environ if environ is None else environ, b"ready\n")


def _write_ready_pipe(env: MutableMapping[str, str], message: bytes) -> bool:
    """Write ``message`` to the readiness pipe and close it; False if there is none."""
    if upgrading_from(env) is None:
        return False
    value = env.pop(ENV_READY_FD, "")
    env.pop(ENV_PARENT, None)
    if not value.isdigit():
        return False
    fd = int(value)
    try:
        os.write(fd, message[:_MAX_MESSAGE])
    except OSError:
        return False  # the old process is gone: nobody to tell
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return True


def adopt_handed_over(
    daemon: Daemon, environ: MutableMapping[str, str] | None = None
) -> dict[str, tuple[int, int]]:
    """In the new process of an upgrade, give ``daemon`` the listeners the old one handed over.

    Each goes to its endpoint by name (:meth:`Daemon.adopt
    <daemonkit.daemon.Daemon.adopt>`); ``@control`` and ``@metrics`` go to
    :attr:`Daemon.inherited_sockets <daemonkit.daemon.Daemon.inherited_sockets>`;
    one no endpoint can take is closed with a warning. Unsets the variables
    (not the readiness pipe's: :func:`report_ready` uses them), and returns
    the unix socket files handed over, by name, as ``(st_dev, st_ino)``.
    Does nothing in a process no upgrade started. Raises
    :class:`~daemonkit.errors.ConfigError` for a descriptor that is not a socket.
    """
    env = os.environ if environ is None else environ
    log = daemon.log
    if ENV_PARENT not in env:
        return {}
    if upgrading_from(env) is None:
        # Meant for another process (ours exec'd through a wrapper that
        # forked?): like systemd's LISTEN_PID, ignore them, and pass them on to nobody.
        for key in (ENV_INHERIT, ENV_INHERIT_FILES, ENV_READY_FD, ENV_PARENT):
            env.pop(key, None)
        return {}
    ready = env.get(ENV_READY_FD, "")
    if ready.isdigit():
        with contextlib.suppress(OSError):
            os.set_inheritable(int(ready), False)  # not for our own children
    fds = _parse_inherit(env.pop(ENV_INHERIT, ""))
    files = _parse_files(env.pop(ENV_INHERIT_FILES, ""))
    for name, fd in fds.items():
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ConfigError(
                f"{ENV_INHERIT}: descriptor {fd} of {name!r} is not a socket: {exc.strerror or exc}"
            ) from None
        sock.set_inheritable(False)
        if name.startswith("@"):  # the control socket or the metrics endpoint
            daemon.inherited_sockets[name] = sock
            continue
        try:
            daemon.adopt(name, sock)
        except (KeyError, ConfigError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            log.warning(
                "upgrade: cannot use the listener %r handed over (%s); closing it", name, message
            )
            sock.close()
    worker = daemon.worker_id
    if worker is not None:  # a --workers supervisor reuses this hand-over
        log.info(
            "worker %d: took over %d listener(s) from the supervisor (pid %s)",
            worker,
            len(fds),
            env.get(ENV_PARENT),
        )
    else:
        log.info("upgrade: took over %d listener(s) from pid %s", len(fds), env.get(ENV_PARENT))
    return files


def _parse_inherit(value: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in filter(None, value.split(",")):
        name, sep, fd = item.rpartition(":")
        if not sep or not name or not fd.isdigit() or name in found:
            raise ConfigError(f"{ENV_INHERIT}={value!r} is malformed: expected NAME:FD,NAME:FD")
        found[name] = int(fd)
    return found


def _parse_files(value: str) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for item in filter(None, value.split(",")):
        name, _, rest = item.partition(":")
        dev, _, ino = rest.partition(":")
        if not name or not dev.isdigit() or not ino.isdigit():
            raise ConfigError(
                f"{ENV_INHERIT_FILES}={value!r} is malformed: expected NAME:DEV:INO,..."
            )
        found[name] = (int(dev), int(ino))
    return found


class Upgrader:
    """One daemon's side of zero-downtime upgrades, in both roles.

    As the **new process**: made by ``Daemon.start()`` before it binds, it
    adopts the listeners handed over (by endpoint name); :meth:`start`,
    called once the daemon listens, tells the old process it is ready and
    arms the memory guard.

    As the **old process**: :meth:`upgrade` (SIGUSR2, ``ctl upgrade``, the
    memory guard) starts the new copy and watches it; when it is ready this
    daemon stops gracefully, when it fails this daemon goes on and logs
    why. :meth:`close` (a cleanup of the daemon) stops a new process that
    was not ready yet.
    """

    def __init__(
        self,
        daemon: Daemon,
        *,
        command: Sequence[str] | None = None,
        cwd: str | None = None,
        timeout: float = UPGRADE_TIMEOUT,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.daemon = daemon
        self.log = daemon.log
        #: The command line of the new process (default: :func:`default_command`).
        self.command = list(command) if command is not None else default_command()
        #: Where the new process starts (default: :data:`LAUNCH_DIR`).
        self.cwd = cwd if cwd is not None else LAUNCH_DIR
        #: Seconds the new process has to be ready (see :data:`UPGRADE_TIMEOUT`).
        self.timeout = timeout
        #: The pid of the process that took over from this one, once one did.
        self.successor: int | None = None
        #: The memory guard, when ``max_memory`` is set and the daemon runs.
        self.guard: MemoryGuard | None = None
        self._env = os.environ if environ is None else environ
        self._reactor: Reactor | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        self._watch: Watch | None = None
        self._deadline: Timer | None = None
        self._reaper: Timer | None = None
        self._message = b""
        self._cleanup_registered = False
        #: The operations' own listeners to hand over with the endpoints, as
        #: ``("@control", listener)``, ``("@metrics", listener)``; the runner
        #: sets it when it opens them (none by default).
        self.service_listeners: Callable[[], list[tuple[str, Listener]]] = list
        # The unix socket files the old process handed over, claimed once ready.
        self._files: dict[str, tuple[int, int]] = {}
        #: In a ``--workers`` worker: asks the supervisor to recycle this
        #: worker (True if asked), in place of an upgrade, when ``max_memory``
        #: or ``max_runtime`` passes; the supervisor replaces one worker at a
        #: time. The runner sets it (None: upgrade, as a single process does).
        self.recycle_request: Callable[[str], bool] | None = None
        #: Fraction of ``max_runtime`` added to the first deadline (a worker's
        #: stagger, set by the runner).
        self.runtime_stagger = 0.0
        self._adopt()

    # -- the new process ---------------------------------------------------------

    def _adopt(self) -> None:
        self._files = adopt_handed_over(self.daemon, self._env)

    def start(self, reactor: Reactor) -> None:
        """The daemon listens: tell the process it replaces (if any), arm the memory guard."""
        self._reactor = reactor
        daemon = self.daemon
        for name in [n for n in daemon.inherited_sockets if n.startswith("@")]:
            self.log.warning("upgrade: %s handed over but not configured now; closing it", name)
            daemon.inherited_sockets.pop(name).close()
        old = upgrading_from(self._env)
        if report_ready(self._env):
            if daemon.worker_id is not None:
                self.log.info(
                    "worker %d: ready; told the supervisor (pid %d)", daemon.worker_id, old
                )
            else:
                self.log.info("upgrade: ready; the old process (pid %d) stops now", old)
            for name, listener in self._listeners():
                identity = self._files.get(name)
                if identity is not None and listener.address.scheme == "unix":
                    listener.claim_socket_file((listener.address.path, *identity))
        self._files = {}
        if daemon.max_memory is not None:
            self.guard = MemoryGuard(daemon.max_memory, reactor.time)
            reactor.call_every(daemon.memory_check_interval, self._check_memory)
        if daemon.max_runtime is not None:
            delay = runtime_deadline(daemon.max_runtime, daemon.max_runtime_jitter)
            delay += daemon.max_runtime * self.runtime_stagger
            reactor.call_later(delay, self._recycle)

    def _recycle(self) -> None:
        """``max_runtime`` passed: hand over to a fresh process, or exit for the supervisor."""
        daemon = self.daemon
        if daemon.is_stopping() or self._reactor is None:
            return
        if self.recycle_request is not None:  # a --workers worker: one at a time
            self._reactor.call_later(RUNTIME_RETRY_DELAY, self._recycle)  # if it fails
            self.log.warning(
                "max_runtime=%gs passed; asking the supervisor to recycle this worker",
                daemon.max_runtime,
            )
            self.recycle_request(f"max_runtime={daemon.max_runtime:g}s passed")
            return
        if not daemon.addresses:  # nothing to hand over: the supervisor starts the next one
            self.log.warning(
                "max_runtime=%gs passed; stopping to be replaced by a fresh process "
                "(exit status 75 for the supervisor)",
                daemon.max_runtime,
            )
            daemon.retired = True
            daemon.stop()
            return
        self._reactor.call_later(RUNTIME_RETRY_DELAY, self._recycle)  # if this one fails
        if self._proc is not None:
            return  # an upgrade is under way already
        self.log.warning(
            "max_runtime=%gs passed; recycling this process with a zero-downtime upgrade",
            daemon.max_runtime,
        )
        with contextlib.suppress(UpgradeError):  # logged by the upgrader
            daemon.upgrade()

    # -- the old process ---------------------------------------------------------

    @property
    def in_progress(self) -> bool:
        """True from :meth:`upgrade` until the new process is ready or has failed."""
        return self._proc is not None

    def upgrade(self) -> int:
        """Start the new process and return its pid; the rest happens in the loop.

        When it is ready this daemon stops gracefully; when it fails this
        daemon goes on serving and logs why. Raises :class:`UpgradeError`
        (logged here) when an upgrade is under way, the daemon is stopping
        or not running, or the process cannot be spawned.
        """
        try:
            return self._upgrade()
        except UpgradeError as exc:
            self.log.error("upgrade not started: %s", exc)
            raise

    def _upgrade(self) -> int:
        daemon, reactor = self.daemon, self._reactor
        if reactor is None or daemon.is_stopped():
            raise UpgradeError("the daemon is not running")
        if daemon.worker_id is not None:
            # Its copy would be a whole new set on the supervisor's sockets.
            raise UpgradeError(
                f"worker {daemon.worker_id} is upgraded with its set: "
                f"send SIGUSR2 to the supervisor (pid {os.getppid()})"
            )
        if daemon.is_draining():
            raise UpgradeError(
                f"this process is draining its {len(daemon.connections)} connection(s) "
                "after a hand-over: upgrade the new process instead"
            )
        if daemon.is_stopping():
            raise UpgradeError("the daemon is stopping")
        if self._proc is not None:
            raise UpgradeError(f"an upgrade is already under way (new process {self._proc.pid})")
        sockets = self._sockets()
        read_fd, write_fd = os.pipe()
        env = dict(self._env)
        env[ENV_INHERIT] = ",".join(f"{name}:{s.fileno()}" for name, s in sockets.items())
        env[ENV_INHERIT_FILES] = ",".join(
            f"{name}:{listener.socket_file[1]}:{listener.socket_file[2]}"
            for name, listener in self._listeners()
            if listener.socket_file is not None
        )
        env[ENV_READY_FD] = str(write_fd)
        env[ENV_PARENT] = str(os.getpid())
        try:
            proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                pass_fds=[*(s.fileno() for s in sockets.values()), write_fd],
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(read_fd)
            raise UpgradeError(f"cannot start {shlex.join(self.command)}: {exc}") from exc
        finally:
            os.close(write_fd)  # the child has its copy: EOF comes when it exits
        os.set_blocking(read_fd, False)
        self._proc, self._pipe, self._message = proc, read_fd, b""
        self._watch = reactor.watch(read_fd, READ, self._on_pipe)
        self._deadline = reactor.call_later(self.timeout, self._on_timeout)
        if not self._cleanup_registered:
            self._cleanup_registered = True
            daemon.cleanup(self.close)
        self.log.info(
            "upgrade: started new process %d with %d listener(s); it has %gs to be ready (%s)",
            proc.pid,
            len(sockets),
            self.timeout,
            shlex.join(self.command),
        )
        return proc.pid

    def _sockets(self) -> dict[str, socket.socket]:
        """The listening sockets to hand over, by endpoint name (``@control``, ``@metrics``)."""
        found: dict[str, socket.socket] = {}
        for host in self.daemon.endpoint_hosts:
            sock: socket.socket | None = None
            if isinstance(host, StreamHost):
                if host.listener is not None and host.listener.active:
                    sock = host.listener.sock
            else:
                sock = getattr(host, "sock", None)  # UdpHost
            if sock is not None:
                found[str(host.endpoint.name)] = sock
        for name, listener in self.service_listeners():
            found[name] = listener.sock
        return found

    def _listeners(self) -> list[tuple[str, Listener]]:
        """The stream listeners by endpoint name, the operations ones (``@control``) too."""
        found = []
        for host in self.daemon.endpoint_hosts:
            if isinstance(host, StreamHost) and host.listener is not None:
                found.append((str(host.endpoint.name), host.listener))
        return found + self.service_listeners()

    def _on_pipe(self, watch: Watch, what: int) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        try:
            data = os.read(pipe, _MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._message = (self._message + data)[:_MAX_MESSAGE]
            if self._message.startswith(b"ready\n"):
                self._ready()
            return
        self._close_pipe()  # EOF: the new process closed it without being ready
        if self._reaper is None:
            self._wait_for_exit(self._reactor_time() + UPGRADE_REAP_TIMEOUT)

    def _ready(self) -> None:
        proc = self._proc
        assert proc is not None
        self._release()
        daemon = self.daemon
        if daemon.is_stopping():
            # Stopped (SIGTERM) while the new process was starting: the stop wins.
            self.log.warning(
                "upgrade: new process %d is ready, but this daemon is stopping; stopping it too",
                proc.pid,
            )
            self._stop_child(proc)
            return
        self.successor = proc.pid
        self.log.info(
            "upgrade: new process %d is ready; handing over and stopping gracefully "
            "(upgrade_drain=%gs, shutdown_timeout=%gs)",
            proc.pid,
            daemon.upgrade_drain,
            daemon.shutdown_timeout,
        )
        self.hand_over()

    def hand_over(self) -> None:
        """Another process accepts from our listening sockets now: stop as an upgrade's old one.

        Accepts nothing more, serves the connections it has for up to
        ``upgrade_drain`` seconds, then stops gracefully (see the module
        doc). A ``--workers`` worker calls it when its supervisor's new set
        took over (:data:`~daemonkit.ops.workers.HAND_OVER_SIGNAL`).
        """
        daemon = self.daemon
        if daemon.is_stopping() or self._reactor is None:
            return
        for host in daemon.endpoint_hosts:
            host.pause()  # the new process accepts from the same queues now
        self._stop_when_attached(self._reactor_time() + _ATTACH_WAIT)

    def _stop_when_attached(self, deadline: float) -> None:
        """Stop once every connection already accepted is attached, so the stop closes it.

        ``Daemon.stop()`` would otherwise end the loop under a connection
        accepted but not yet set up (``listener.pending``), dropping it.
        """
        daemon, reactor = self.daemon, self._reactor
        assert reactor is not None
        if daemon.is_stopping():
            return
        pending = sum(listener.pending for listener in daemon.listeners)
        if pending and reactor.time() < deadline:
            reactor.call_later(_ATTACH_POLL, self._stop_when_attached, deadline)
            return
        for _, listener in self._listeners():
            listener.release_socket_file()  # the new process owns the file now
        for _, listener in self.service_listeners():
            listener.close()  # operators now reach the new process
        # The new process accepts from the same queues; ours are served until they close.
        daemon.stop(keep_backlog=True, drain=daemon.upgrade_drain)

    def _on_timeout(self) -> None:
        self._deadline = None
        proc = self._proc
        if proc is None:
            return
        self._message = b"error not ready within %gs; killed\n" % self.timeout
        self._close_pipe()
        with contextlib.suppress(OSError):
            proc.kill()
        self._wait_for_exit(self._reactor_time() + UPGRADE_REAP_TIMEOUT)

    def _wait_for_exit(self, deadline: float) -> None:
        self._reaper = None
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._reactor_time() < deadline:
                assert self._reactor is not None
                self._reaper = self._reactor.call_later(_REAP_POLL, self._wait_for_exit, deadline)
                return
            proc.kill()
            proc.wait()
        self._release()
        reason = ""
        if self._message.startswith(b"error "):
            first = self._message[6:].split(b"\n", 1)[0]
            reason = ": " + first.decode(errors="replace")
        self.log.error(
            "upgrade failed: new process %d %s before it was ready%s; still serving as pid %d",
            proc.pid,
            _describe_exit(proc.returncode),
            reason,
            os.getpid(),
        )

    def _check_memory(self) -> None:
        guard = self.guard
        if guard is None or self._proc is not None or self.daemon.is_stopping():
            return
        rss = guard.exceeded()
        if rss is None:
            return
        if self.recycle_request is not None:
            over = f"RSS {format_size(rss)} is over max_memory {format_size(guard.limit)}"
            self.log.warning("memory: %s; asking the supervisor to recycle this worker", over)
            self.recycle_request(over)
            return
        self.log.warning(
            "memory: RSS %s is over max_memory %s; recycling this process "
            "with a zero-downtime upgrade",
            format_size(rss),
            format_size(guard.limit),
        )
        with contextlib.suppress(UpgradeError):
            self.upgrade()

    # -- releasing ---------------------------------------------------------------

    def _reactor_time(self) -> float:
        return self._reactor.time() if self._reactor is not None else 0.0

    def _close_pipe(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None

    def _release(self) -> None:
        """Forget the upgrade in progress (timers, pipe); the process object goes too."""
        self._close_pipe()
        for timer in (self._deadline, self._reaper):
            if timer is not None:
                timer.cancel()
        self._deadline = self._reaper = None
        self._proc = None

    def _stop_child(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Release an upgrade in progress; a new process not yet ready is stopped (idempotent)."""
        proc = self._proc
        self._release()
        if proc is not None and proc.poll() is None:
            self.log.warning(
                "upgrade cancelled: the daemon stops; stopping new process %d", proc.pid
            )
            self._stop_child(proc)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"
