"""``--workers N``: a supervisor process and N worker processes sharing its listeners.

The supervisor binds every endpoint once, starts N copies of the command
line that started it, each told which worker it is, and serves no client
itself. A worker receives the listening sockets exactly as the new process
of a zero-downtime upgrade does (:mod:`daemonkit.ops.upgrade`): by endpoint
name in ``DAEMONKIT_INHERIT``, with a readiness pipe in
``DAEMONKIT_UPGRADE_FD`` on which it writes ``ready`` once it listens, and
``DAEMONKIT_UPGRADE_PID`` naming the supervisor. ``DAEMONKIT_WORKER`` adds
its id (0..N-1), which :attr:`Daemon.worker_id
<daemonkit.daemon.Daemon.worker_id>` returns. Every worker accepts from the
same kernel queue, so a worker that dies loses nothing queued (see
docs/design.md, "Workers: one shared accept queue").

The supervisor, as gunicorn's arbiter and Node's cluster primary do:

* **restarts** a worker that dies, in the same slot (same id), after a
  :class:`~daemonkit.framework.links.Backoff` delay; a slot whose worker
  died :data:`CRASH_BURST` times within :data:`CRASH_INTERVAL` seconds is a
  **crash loop**: it is not restarted again, and the log says so. With no
  worker left the supervisor exits with status 1.
* **kills** a worker that is not ready within :data:`READY_TIMEOUT`; the
  others keep serving, and the slot counts a death.
* on **SIGTERM/SIGINT** sends SIGTERM to every worker (their graceful
  stop), waits for them up to their ``shutdown_timeout`` plus
  :data:`STOP_MARGIN`, then SIGKILLs what is left and exits 0. A second
  SIGTERM is passed on: the workers' own second SIGTERM stops them at once.
* on **SIGHUP** replaces the workers one at a time: it starts the new one,
  waits until it is ready, then stops the old one gracefully; so at least
  N-1 workers serve throughout. A new worker that fails ends the reload;
  the old one goes on.
* passes **SIGUSR1** (reopen the log file) on to the workers.
* **shares the accepts**: every worker is woken for each new client and the
  busiest, already running, tends to win it. The supervisor maps a small
  table (:class:`AcceptShares`) into every worker, in which each publishes
  how many connections it holds; a worker clearly over its share leaves the
  queue to the others for a moment (:func:`share_accepts`).

Workers run in a session (and process group) of their own, so a Ctrl-C at a terminal
reaches the supervisor only (which stops them once, gracefully); a worker
whose supervisor vanished stops itself (:func:`watch_supervisor`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import mmap
import os
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from daemonkit.core.endpoints import Endpoint, bind_socket
from daemonkit.core.reactor import READ, Listener, Reactor, Watch
from daemonkit.core.timers import Timer
from daemonkit.errors import ConfigError
from daemonkit.framework.links import Backoff
from daemonkit.ops.upgrade import (
    ENV_INHERIT,
    ENV_INHERIT_FILES,
    ENV_PARENT,
    ENV_READY_FD,
    UPGRADE_TIMEOUT,
    default_command,
)

__all__ = [
    "ACCEPT_SHARE_REFRESH",
    "ACCEPT_SHARE_SLACK",
    "ACCEPT_SHARE_STALE",
    "CRASH_BURST",
    "CRASH_INTERVAL",
    "ENV_SHARES",
    "ENV_WORKER",
    "EXIT_NO_WORKERS",
    "MAX_WORKERS_PER_CPU",
    "READY_TIMEOUT",
    "RESTART_MAX_DELAY",
    "RESTART_MIN_DELAY",
    "STOP_MARGIN",
    "SUPERVISOR_CHECK_INTERVAL",
    "AcceptShares",
    "CrashLoop",
    "Supervisor",
    "bind_endpoints",
    "check_workers",
    "share_accepts",
    "tag_worker_logs",
    "watch_supervisor",
    "worker_id_from_env",
]

#: The worker's id (0..N-1), next to the upgrade's variables.
ENV_WORKER = "DAEMONKIT_WORKER"
#: The descriptor of the workers' shared table of loads (:class:`AcceptShares`).
ENV_SHARES = "DAEMONKIT_WORKER_SHARES"

#: A worker defers its accepts while another holds fewer connections than
#: it by at least 1/ACCEPT_SHARE_SLACK of its own (and by at least one):
#: nginx's workers stop competing for the accept mutex at 7/8 of their
#: connections (``ngx_accept_disabled``), the same eighth.
ACCEPT_SHARE_SLACK = 8
#: Seconds between two refreshes of a worker's published load, so that
#: connections it closed since its last accept stop counting against it
#: (the supervisor's :data:`SUPERVISOR_CHECK_INTERVAL`, for the same reason:
#: soon enough for a person, rare enough to cost nothing).
ACCEPT_SHARE_REFRESH = 0.1
#: Seconds without a publication after which a worker counts as not
#: accepting (its loop blocked that long, or it is stopped), so the others
#: stop deferring to it: three refreshes missed.
ACCEPT_SHARE_STALE = 3 * ACCEPT_SHARE_REFRESH

# A cell: the load plus one in the low 32 bits, a count of publications above.
_LOAD_MASK = (1 << 32) - 1
_COUNT_MASK = (1 << 31) - 1

#: The fork-bomb guard: at most this many workers per CPU unless forced.
#: gunicorn advises 2-4 x cores ("(2 x $num_cores) + 1"); past 4 x a typo
#: (``--workers 1000``) is likelier than a plan.
MAX_WORKERS_PER_CPU = 4

#: Deaths of one slot within :data:`CRASH_INTERVAL` that make a crash loop:
#: systemd's StartLimitBurst=5 in StartLimitIntervalSec=10s.
CRASH_BURST = 5
#: Seconds over which :data:`CRASH_BURST` deaths count (systemd's 10 s).
CRASH_INTERVAL = 10.0

#: Restart delays of a slot: the links' backoff between these bounds. 0.1 s
#: first, as systemd's RestartSec=100ms; at most 5 s, so a worker is back
#: "within a second or two" of the first deaths and a crash loop is caught
#: within :data:`CRASH_INTERVAL`.
RESTART_MIN_DELAY = 0.1
RESTART_MAX_DELAY = 5.0

#: Seconds a worker has to say it is ready: the upgrade's new process's
#: (:data:`~daemonkit.ops.upgrade.UPGRADE_TIMEOUT`), for the same work.
READY_TIMEOUT = UPGRADE_TIMEOUT

#: Seconds the supervisor waits for stopping workers past their own
#: ``shutdown_timeout`` before SIGKILL:
#: the daemon's own backstop is 2 s (STOP_BACKSTOP); 5 s covers it and a loaded machine.
STOP_MARGIN = 5.0

#: Seconds between two polls of the workers' exit status (gunicorn's arbiter
#: wakes every second; a tenth of that restarts a dead worker sooner).
SUPERVISOR_CHECK_INTERVAL = 0.1

#: Exit status of a supervisor left with no worker (every slot in a crash loop).
EXIT_NO_WORKERS = 1

# Longest message read from a readiness pipe (PIPE_BUF, as the upgrade's).
_MAX_MESSAGE = 4096


def check_workers(workers: int, *, force: bool = False, cpus: int | None = None) -> int:
    """``workers`` if it is a sane count for this machine; ConfigError otherwise.

    More than :data:`MAX_WORKERS_PER_CPU` per CPU needs ``force``
    (``--workers-force``): a guard against a typo that forks a thousand
    processes.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be a whole number >= 1")
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    limit = MAX_WORKERS_PER_CPU * count
    if workers > limit and not force:
        raise ConfigError(
            f"workers={workers} is more than {MAX_WORKERS_PER_CPU} per CPU "
            f"({count} CPU(s): at most {limit}); add --workers-force if you mean it"
        )
    return workers


def worker_id_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's worker id when a supervisor started it, else None.

    Counts only when the supervisor named in ``DAEMONKIT_UPGRADE_PID`` is our
    parent (as the upgrade's variables and systemd's LISTEN_PID do).
    """
    env = os.environ if environ is None else environ
    value, parent = env.get(ENV_WORKER, ""), env.get(ENV_PARENT, "")
    if value.isdigit() and parent.isdigit() and int(parent) == os.getppid():
        return int(value)
    return None


def tag_worker_logs(worker_id: int, handlers: Sequence[logging.Handler] | None = None) -> None:
    """Prefix every log line of this process with ``w<ID>``.

    Filters ``handlers`` (default: the root logger's, which :func:`daemonkit.core.log.setup`
    made). The record also gets a ``worker`` attribute, for a formatter of one's own.
    """
    tag = f"w{worker_id} "

    def add_tag(record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = worker_id
            record.msg = tag + str(record.msg)
        return True

    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.addFilter(add_tag)


def watch_supervisor(reactor: Reactor, stop: Callable[[], object], parent: int) -> Timer:
    """Call ``stop()`` once the supervisor ``parent`` is gone (our parent pid changed).

    Workers run in their own process group, so a supervisor killed by
    SIGKILL sends them nothing: they notice it this way, as gunicorn's
    workers do, every :data:`SUPERVISOR_CHECK_INTERVAL` x 10 seconds.
    """

    def check() -> None:
        if os.getppid() != parent:
            timer.cancel()
            stop()

    timer = reactor.call_every(SUPERVISOR_CHECK_INTERVAL * 10, check)
    return timer


class CrashLoop:
    """Counts one slot's deaths; :meth:`died` says when they make a crash loop.

    ``burst`` deaths within ``interval`` seconds (times from the caller's clock).
    """

    def __init__(self, burst: int = CRASH_BURST, interval: float = CRASH_INTERVAL) -> None:
        self.burst = burst
        self.interval = interval
        self._deaths: collections.deque[float] = collections.deque(maxlen=burst)

    def died(self, now: float) -> bool:
        """Record a death at ``now``; True if it completes a crash loop."""
        self._deaths.append(now)
        return len(self._deaths) >= self.burst and now - self._deaths[0] <= self.interval


@dataclass(eq=False)
class _Worker:
    """One worker process: its slot, its readiness pipe, and what it is doing."""

    slot: int
    proc: subprocess.Popen[bytes]
    pipe: int | None
    watch: Watch | None = None
    deadline: Timer | None = None
    ready: bool = False
    #: Told to stop (a reload or a stop): its exit is not a death.
    retiring: bool = False
    message: bytes = b""


@dataclass(eq=False)
class _Slot:
    """One of the N places a worker fills; keeps its id across restarts."""

    id: int
    crashes: CrashLoop
    backoff: Backoff
    current: _Worker | None = None
    given_up: bool = False
    respawn: Timer | None = None
    restarts: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``workers`` worker processes on ``sockets`` until stopped; see the module doc.

    ``sockets`` maps endpoint names to bound sockets (the supervisor keeps
    and closes them); ``command`` is each worker's command line (default:
    this process's, :func:`~daemonkit.ops.upgrade.default_command`).
    :meth:`run` serves until a stop and returns the exit status.
    """

    def __init__(
        self,
        reactor: Reactor,
        sockets: Mapping[str, socket.socket],
        workers: int,
        *,
        command: Sequence[str] | None = None,
        log: logging.Logger | None = None,
        stop_timeout: float = 10.0 + STOP_MARGIN,
        ready_timeout: float = READY_TIMEOUT,
        crash_burst: int = CRASH_BURST,
        crash_interval: float = CRASH_INTERVAL,
        environ: MutableMapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.sockets = dict(sockets)
        self.command = list(command) if command is not None else default_command()
        self.log = log if log is not None else logging.getLogger("daemonkit.workers")
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self._env = os.environ if environ is None else environ
        #: The slots, by worker id.
        self.slots = [
            _Slot(
                i,
                CrashLoop(crash_burst, crash_interval),
                Backoff(RESTART_MIN_DELAY, RESTART_MAX_DELAY),
            )
            for i in range(workers)
        ]
        self._workers: dict[int, _Worker] = {}  # by pid: every live worker, retiring too
        self._stopping = False
        self._stop_signals = 0
        self._exit = 0
        self._reloading: list[int] | None = None  # slots still to replace
        self._reload_new: _Worker | None = None
        self._all_ready_logged = False
        #: Each worker's load, shared with the workers (see share_accepts);
        #: mapped by :meth:`run`, unmapped when it returns.
        self.shares: AcceptShares | None = None

    # -- running -------------------------------------------------------------------

    def run(self) -> int:
        """Start every worker, serve signals until the stop; the exit status."""
        reactor = self.reactor
        for signum in (signal.SIGTERM, signal.SIGINT):
            reactor.on_signal(signum, self._on_stop_signal)
        reactor.on_signal(signal.SIGHUP, lambda signum: self.reload())
        reactor.on_signal(signal.SIGUSR1, self._forward)
        reactor.on_signal(signal.SIGUSR2, self._on_usr2)
        reactor.call_every(SUPERVISOR_CHECK_INTERVAL, self._reap)
        reactor.call_soon(self._start_all)
        self.shares = AcceptShares.create(len(self.slots))
        try:
            reactor.run()
        finally:
            self._kill_all()
            for sock in self.sockets.values():
                _release(sock)
            self.shares.close()
            self.shares = None
        return self._exit

    def _start_all(self) -> None:
        self.log.info(
            "starting %d worker(s) on %s",
            len(self.slots),
            ", ".join(self.sockets) or "no endpoint",
        )
        for slot in self.slots:
            self._spawn(slot)

    def workers(self) -> list[tuple[int, int, bool]]:
        """The live workers as ``(worker id, pid, ready)``, retiring ones included."""
        return [(w.slot, pid, w.ready) for pid, w in sorted(self._workers.items())]

    def _spawn(self, slot: _Slot) -> _Worker | None:
        slot.respawn = None
        if self._stopping:
            return None
        read_fd, write_fd = os.pipe()
        env = dict(self._env)
        env[ENV_INHERIT] = ",".join(f"{name}:{s.fileno()}" for name, s in self.sockets.items())
        env.pop(ENV_INHERIT_FILES, None)  # the supervisor owns the unix socket files
        env[ENV_READY_FD] = str(write_fd)
        env[ENV_PARENT] = str(os.getpid())
        env[ENV_WORKER] = str(slot.id)
        inherit = [*(s.fileno() for s in self.sockets.values()), write_fd]
        if self.shares is not None:
            env[ENV_SHARES] = str(self.shares.fd)
            inherit.append(self.shares.fd)
        try:
            proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                pass_fds=inherit,
                start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor only
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(read_fd)
            self.log.error("worker %d: cannot start %s: %s", slot.id, shlex.join(self.command), exc)
            self._died(slot, None)
            return None
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = _Worker(slot.id, proc, read_fd)
        worker.watch = self.reactor.watch(read_fd, READ, lambda w, e: self._on_pipe(worker))
        worker.deadline = self.reactor.call_later(self.ready_timeout, self._not_ready, worker)
        self._workers[proc.pid] = worker
        slot.pids.append(proc.pid)
        self.log.info("worker %d: started pid %d", slot.id, proc.pid)
        return worker

    def _on_pipe(self, worker: _Worker) -> None:
        if worker.pipe is None:
            return
        try:
            data = os.read(worker.pipe, _MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            worker.message = (worker.message + data)[:_MAX_MESSAGE]
            if worker.message.startswith(b"ready\n") and not worker.ready:
                self._ready(worker)
            return
        self._close_pipe(worker)  # EOF: exited (reaped by _reap) or said why not

    def _ready(self, worker: _Worker) -> None:
        worker.ready = True
        self._close_pipe(worker)
        slot = self.slots[worker.slot]
        slot.backoff.reset()  # it started: the next death starts the delays over
        self.log.info("worker %d: pid %d is ready", slot.id, worker.proc.pid)
        if worker is self._reload_new:
            self._reload_new = None
            old = slot.current
            slot.current = worker
            if old is not None:
                self._retire(old)
            self._reload_next()
        elif slot.current is None or slot.current is worker:
            slot.current = worker
        if not self._all_ready_logged and all(
            s.current is not None and s.current.ready for s in self.slots if not s.given_up
        ):
            self._all_ready_logged = True
            self.log.info("all %d worker(s) ready", len(self.slots))

    def _not_ready(self, worker: _Worker) -> None:
        worker.deadline = None
        if worker.ready or worker.proc.poll() is not None:
            return
        self.log.error(
            "worker %d: pid %d not ready within %gs; killing it",
            worker.slot,
            worker.proc.pid,
            self.ready_timeout,
        )
        with contextlib.suppress(OSError):
            worker.proc.kill()

    def _close_pipe(self, worker: _Worker) -> None:
        if worker.watch is not None:
            worker.watch.cancel()
            worker.watch = None
        if worker.deadline is not None and worker.ready:
            worker.deadline.cancel()
            worker.deadline = None
        if worker.pipe is not None:
            os.close(worker.pipe)
            worker.pipe = None

    def _reap(self) -> None:
        for pid, worker in list(self._workers.items()):
            code = worker.proc.poll()
            if code is None:
                continue
            del self._workers[pid]
            self._close_pipe(worker)
            if worker.deadline is not None:
                worker.deadline.cancel()
                worker.deadline = None
            self._exited(worker, code)
        if self._stopping and not self._workers:
            self.log.info("every worker stopped")
            self.reactor.stop()

    def _exited(self, worker: _Worker, code: int) -> None:
        slot = self.slots[worker.slot]
        if self.shares is not None and not worker.retiring:
            self.shares.clear(slot.id)  # a retiring worker's successor owns the slot's load
        reason = ""
        if worker.message.startswith(b"error "):
            reason = ": " + worker.message[6:].split(b"\n", 1)[0].decode(errors="replace")
        if worker.retiring or self._stopping:
            self.log.info("worker %d: pid %d %s", slot.id, worker.proc.pid, _describe(code))
            return
        self.log.warning(
            "worker %d: pid %d %s%s", slot.id, worker.proc.pid, _describe(code), reason
        )
        if worker is self._reload_new:
            self._reload_new = None
            self.log.error(
                "reload: the new worker %d failed; the old one goes on, reload stopped", slot.id
            )
            self._reloading = None
            self._died(slot, worker, reload=True)
            return
        if slot.current is worker or slot.current is None:
            slot.current = None
            self._died(slot, worker)

    def _died(self, slot: _Slot, worker: _Worker | None, *, reload: bool = False) -> None:
        if slot.crashes.died(self.reactor.time()):
            slot.given_up = True
            self.log.error(
                "worker %d: crash loop (%d deaths within %gs); not restarting it",
                slot.id,
                slot.crashes.burst,
                slot.crashes.interval,
            )
            if all(s.given_up for s in self.slots):
                self.log.critical("no worker left; exiting")
                self._exit = EXIT_NO_WORKERS
                self._stopping = True
                self.reactor.stop()
            return
        if reload:
            return  # the old worker serves on in that slot
        delay = slot.backoff.next()
        slot.restarts += 1
        self.log.info("worker %d: restarting in %.2fs", slot.id, delay)
        slot.respawn = self.reactor.call_later(delay, self._spawn, slot)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        with contextlib.suppress(OSError):
            worker.proc.send_signal(signal.SIGTERM)

    # -- signals -------------------------------------------------------------------

    def _on_stop_signal(self, signum: int) -> None:
        self._stop_signals += 1
        name = signal.Signals(signum).name
        if self._stop_signals > 1:
            self.log.warning("%s again: stopping the workers at once", name)
            self._forward(signal.SIGTERM)
            return
        self.stop(name)

    def stop(self, why: str = "stop") -> None:
        """Stop every worker gracefully (SIGTERM); SIGKILL past ``stop_timeout``; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._reloading = None
        self.log.info(
            "%s: stopping %d worker(s) gracefully (at most %gs)",
            why,
            len(self._workers),
            self.stop_timeout,
        )
        for slot in self.slots:
            if slot.respawn is not None:
                slot.respawn.cancel()
                slot.respawn = None
        self._forward(signal.SIGTERM)
        self.reactor.call_later(self.stop_timeout, self._stop_timed_out)
        self._reap()

    def _stop_timed_out(self) -> None:
        if self._workers:
            self.log.error(
                "%d worker(s) still running %gs after the stop; killing them",
                len(self._workers),
                self.stop_timeout,
            )
            self._kill_all()

    def _forward(self, signum: int) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(OSError):
                worker.proc.send_signal(signum)

    def _on_usr2(self, signum: int) -> None:
        self.log.warning(
            "SIGUSR2: upgrading a set of workers is not supported yet; "
            "SIGHUP replaces the workers one at a time"
        )

    def reload(self) -> None:
        """Replace every worker, one at a time (SIGHUP); the old one stops once the new is ready."""
        if self._stopping:
            return
        if self._reloading is not None:
            self.log.warning("SIGHUP: a reload is under way already")
            return
        self._reloading = [s.id for s in self.slots if not s.given_up]
        self.log.info("SIGHUP: replacing %d worker(s) one at a time", len(self._reloading))
        self._reload_next()

    def _reload_next(self) -> None:
        if self._reloading is None:
            return
        while self._reloading:
            slot = self.slots[self._reloading.pop(0)]
            if slot.given_up:
                continue
            self._reload_new = self._spawn(slot)
            if self._reload_new is not None:
                return
        self._reloading = None
        self.log.info("reload: every worker replaced")

    def _kill_all(self) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(OSError):
                worker.proc.kill()
        for pid, worker in list(self._workers.items()):
            worker.proc.wait()
            self._close_pipe(worker)
            if worker.deadline is not None:
                worker.deadline.cancel()
            del self._workers[pid]


def bind_endpoints(endpoints: Sequence[Endpoint]) -> dict[str, socket.socket]:
    """Bind every endpoint once, for the workers; by endpoint name. Raises OSError."""
    found: dict[str, socket.socket] = {}
    try:
        for endpoint in endpoints:
            found[str(endpoint.name)] = bind_socket(endpoint.address)
    except BaseException:
        for sock in found.values():
            sock.close()
        raise
    return found


def _release(sock: socket.socket) -> None:
    """Close a listening socket; a unix one's file goes too (the supervisor bound it)."""
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if isinstance(path, str) and path and not path.startswith("\0"):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class AcceptShares:
    """How many connections each worker holds, in memory the supervisor and workers share.

    One signed 64-bit cell per worker slot in a ``MAP_SHARED`` mapping of
    an anonymous file (``memfd``) the supervisor creates and every worker
    inherits by descriptor (:data:`ENV_SHARES`): a cell holds the slot's
    load plus one in its low 32 bits and a count of its publications above,
    or 0 while the slot has no live worker (the supervisor clears it when its
    worker dies). Each worker writes only its own cell; readers may see a
    value a moment old, which only makes a deferral a little more or less
    likely, never loses a client: two workers that defer to each other on
    stale values both ask again within
    :data:`~daemonkit.core.reactor.ACCEPT_DEFER_CHECK`, with fresh ones. A
    worker that published nothing for :data:`ACCEPT_SHARE_STALE` seconds
    (its loop is blocked, or it is stopped) is not accepting: nobody defers
    to it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        size = os.fstat(fd).st_size
        if size < 8 or size % 8:
            raise ValueError(f"descriptor {fd} is not a table of worker loads ({size} bytes)")
        self._map = mmap.mmap(fd, size)
        self._cells = memoryview(self._map).cast("q")
        # Per slot, as this process last saw it: (cell, when it last changed).
        self._seen = [(0, 0.0)] * len(self._cells)

    @classmethod
    def create(cls, slots: int) -> AcceptShares:
        """A new zeroed table of ``slots`` cells on a descriptor children can inherit."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("daemonkit-worker-loads", os.MFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            import tempfile

            fd, path = tempfile.mkstemp(prefix="daemonkit-worker-loads-")
            os.unlink(path)
        try:
            os.ftruncate(fd, 8 * max(1, slots))
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> AcceptShares | None:
        """The table a supervisor handed this worker (and unset its variable), or None.

        None also when the variable does not name a usable table: the
        worker then accepts as a single process does (a warning is logged).
        """
        env = os.environ if environ is None else environ
        value = env.pop(ENV_SHARES, "")
        if not value:
            return None
        try:
            return cls(int(value))
        except (ValueError, OSError) as exc:
            logging.getLogger("daemonkit.workers").warning(
                "%s=%r is not a table of worker loads (%s); accepting without sharing",
                ENV_SHARES,
                value,
                exc,
            )
            return None

    def __len__(self) -> int:
        return len(self._cells)

    def publish(self, slot: int, load: int) -> None:
        """Say that the worker in ``slot`` holds ``load`` connections now (and is alive)."""
        count = ((self._cells[slot] >> 32) + 1) & _COUNT_MASK
        self._cells[slot] = (count << 32) | (min(load, _LOAD_MASK - 1) + 1)

    def clear(self, slot: int) -> None:
        """Say that ``slot`` has no live worker: the others stop comparing with it."""
        self._cells[slot] = 0

    def loads(self) -> list[int | None]:
        """Every slot's last published load, None for a slot with no live worker."""
        return [(cell & _LOAD_MASK) - 1 if cell else None for cell in self._cells]

    def over_share(self, slot: int, load: int, now: float) -> bool:
        """Publish ``load`` for ``slot``; True when another live worker holds clearly fewer.

        "Clearly": fewer by at least 1/:data:`ACCEPT_SHARE_SLACK` of
        ``load`` and by at least one connection, so equal loads never defer.
        "Live": it published something within :data:`ACCEPT_SHARE_STALE`
        seconds before ``now`` (a monotonic time), as seen from this process.
        """
        self.publish(slot, load)
        margin = max(1, load // ACCEPT_SHARE_SLACK)
        for other, cell in enumerate(self.observe(now)):
            if other != slot and cell and (cell & _LOAD_MASK) - 1 <= load - margin:
                return True
        return False

    def observe(self, now: float) -> list[int]:
        """The cells now, with 0 for the workers that published nothing lately.

        Notes which cells changed since the last look, at ``now``; a cell
        unchanged for :data:`ACCEPT_SHARE_STALE` seconds reads as 0.
        """
        seen = self._seen
        cells = list(self._cells)
        for i, cell in enumerate(cells):
            if cell != seen[i][0]:
                seen[i] = (cell, now)
            elif now - seen[i][1] > ACCEPT_SHARE_STALE:
                cells[i] = 0  # blocked or stopped: it would not take the clients
        return cells

    def close(self) -> None:
        """Unmap the table and close its descriptor; idempotent."""
        if self.fd < 0:
            return
        self._cells.release()
        self._map.close()
        os.close(self.fd)
        self.fd = -1


def share_accepts(
    reactor: Reactor,
    listeners: Sequence[Listener],
    shares: AcceptShares,
    slot: int,
    load: Callable[[], int],
) -> Timer:
    """Make ``listeners`` defer to less loaded workers (:meth:`Listener.share`).

    The worker in ``slot`` publishes ``load()`` (its connections, open and
    being set up) in ``shares`` now, at each wake-up for new clients, after
    each batch of accepts, and every :data:`ACCEPT_SHARE_REFRESH` seconds
    (when it also notes which workers stopped publishing);
    it leaves the queue to the others for
    :data:`~daemonkit.core.reactor.ACCEPT_DEFER_DELAY` while one of them
    holds clearly fewer (:meth:`AcceptShares.over_share`). Returns the
    refresh timer: cancel it when the worker stops.
    """
    share = _WorkerShare(shares, slot, load, reactor.time)
    share.accepted()  # present from the start: the others defer to it before it first wakes
    for listener in listeners:
        listener.share(share)
    return reactor.call_every(ACCEPT_SHARE_REFRESH, share.refresh)


class _WorkerShare:
    """One worker's :class:`~daemonkit.core.reactor.AcceptShare`: its cell in the table."""

    __slots__ = ("load", "shares", "slot", "time")

    def __init__(
        self, shares: AcceptShares, slot: int, load: Callable[[], int], time: Callable[[], float]
    ) -> None:
        self.shares = shares
        self.slot = slot
        self.load = load
        self.time = time

    def defer(self) -> bool:
        return self.shares.over_share(self.slot, self.load(), self.time())

    def accepted(self) -> None:
        # At once, not at the next wake-up: a stale, low count would make
        # the others defer to a worker that has just taken the queue.
        self.shares.publish(self.slot, self.load())

    def refresh(self) -> None:
        # Also look at the others, so that one whose loop stopped is known
        # as such before the next burst of clients, not during it.
        self.shares.publish(self.slot, self.load())
        self.shares.observe(self.time())
