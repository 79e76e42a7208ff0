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
* on **SIGUSR2** upgrades the whole set (:meth:`Supervisor.upgrade`): it
  starts a new supervisor from the same command line, handing over its
  listening sockets (and the set's control socket and metrics endpoint) as
  :mod:`daemonkit.ops.upgrade` does; the new one starts its N workers and
  says it is ready only once all are. Then this supervisor sends its
  workers :data:`HAND_OVER_SIGNAL` (they drain, as an upgraded single
  process does: ``upgrade_drain``) and exits 0. A new set that fails, or is
  not ready within :data:`~daemonkit.ops.upgrade.UPGRADE_TIMEOUT` (then it
  is killed), leaves this one serving.
* **recycles** a worker that asks for it (its ``max_memory`` or
  ``max_runtime`` passed) exactly as SIGHUP replaces one, one worker at a
  time: requests that arrive meanwhile wait their turn (:meth:`Supervisor.recycle`).
* **shares the accepts**: every worker is woken for each new client and the
  busiest, already running, tends to win it. The supervisor maps a small
  table (:class:`AcceptShares`) into every worker, in which each publishes
  how many connections it holds; a worker clearly over its share leaves the
  queue to the others for a moment (:func:`share_accepts`).

Besides the sockets and the readiness pipe, each worker gets a **request
pipe** (``DAEMONKIT_WORKER_FD``) on which it asks to be recycled, the
fraction of ``max_runtime`` by which to **stagger** its first recycle
(``DAEMONKIT_WORKER_STAGGER``: worker i of N started with the others waits
i/N of it longer, so a set started together does not recycle together), and,
when the supervisor serves ``--control`` or ``--metrics``, the base of its
**private control socket** (``DAEMONKIT_WORKER_CONTROL``; see
:func:`worker_control_path` and :mod:`daemonkit.ops.workerset`).

The supervisor announces ``ready`` (every worker ready, once), ``reloading``
and ``reloaded`` (around a SIGHUP), ``stopping`` and ``handed_over`` to the
hooks of :meth:`Supervisor.add_lifecycle_hook`, as a daemon does: that is
how the pidfile, ``--daemon`` and systemd follow a set
(:meth:`Deployment.run_supervisor <daemonkit.ops.process.Deployment.run_supervisor>`).
Workers get no ``NOTIFY_SOCKET``: systemd's main process is the supervisor.

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
import stat
import subprocess
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from daemonkit.core.endpoints import Endpoint, bind_socket
from daemonkit.core.reactor import READ, Listener, Reactor, Watch
from daemonkit.core.timers import Timer
from daemonkit.errors import ConfigError, UpgradeError
from daemonkit.framework.links import Backoff
from daemonkit.ops.upgrade import (
    ENV_INHERIT,
    ENV_INHERIT_FILES,
    ENV_PARENT,
    ENV_READY_FD,
    LAUNCH_DIR,
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
    "ENV_WORKER_CONTROL",
    "ENV_WORKER_REQUESTS",
    "ENV_WORKER_STAGGER",
    "EXIT_NO_WORKERS",
    "HAND_OVER_SIGNAL",
    "MAX_WORKERS_PER_CPU",
    "READY_TIMEOUT",
    "RESTART_MAX_DELAY",
    "RESTART_MIN_DELAY",
    "STOP_MARGIN",
    "SUPERVISOR_CHECK_INTERVAL",
    "AcceptShares",
    "CrashLoop",
    "Supervisor",
    "SupervisorLink",
    "WorkerInfo",
    "bind_endpoints",
    "check_workers",
    "release_endpoints",
    "share_accepts",
    "supervisor_link_from_env",
    "tag_worker_logs",
    "watch_supervisor",
    "worker_control_path",
    "worker_id_from_env",
]

#: The worker's id (0..N-1), next to the upgrade's variables.
ENV_WORKER = "DAEMONKIT_WORKER"
#: The base path of the worker's private control socket (see :func:`worker_control_path`).
ENV_WORKER_CONTROL = "DAEMONKIT_WORKER_CONTROL"
#: The write end of the pipe on which the worker asks the supervisor to recycle it.
ENV_WORKER_REQUESTS = "DAEMONKIT_WORKER_FD"
#: The fraction of ``max_runtime`` added to the worker's first recycle deadline.
ENV_WORKER_STAGGER = "DAEMONKIT_WORKER_STAGGER"

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

#: What a supervisor sends its workers once a new set took over (SIGUSR2): drain,
#: then stop, as an upgraded single process does. nginx's binary upgrade uses
#: SIGWINCH for the same step ("gracefully shut down the old worker processes");
#: its default action is to ignore it, so a stray one (a terminal resize) is harmless.
HAND_OVER_SIGNAL = signal.SIGWINCH

# What a worker must not inherit: systemd's main process is the supervisor,
# which alone notifies it and pings its watchdog.
_SUPERVISOR_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

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


def worker_control_path(base: str, worker_id: int, pid: int) -> str:
    """The private control socket of worker ``worker_id`` running as ``pid``: ``BASE.wID.PID``.

    The pid keeps the old and the new worker of a slot apart while a reload
    or a recycle runs both. The supervisor and the worker each compute it here.
    """
    return f"{base}.w{worker_id}.{pid}"


@dataclass(frozen=True)
class SupervisorLink:
    """What a supervisor gave a worker besides its sockets (:func:`supervisor_link_from_env`).

    ``control`` is the worker's private control socket path (None: the
    supervisor serves no control socket or metrics); ``requests`` the pipe
    to ask for a recycle on (:meth:`ask_recycle`); ``stagger`` the fraction
    of ``max_runtime`` to add to its first deadline.
    """

    control: str | None = None
    requests: int | None = None
    stagger: float = 0.0

    def ask_recycle(self, reason: str) -> bool:
        """Ask the supervisor to replace this worker; False if it cannot be asked now.

        One line on the request pipe (shorter than PIPE_BUF, so written whole);
        the pipe is non-blocking, so a supervisor that does not read never
        blocks the worker's loop: the caller asks again later.
        """
        if self.requests is None:
            return False
        line = b"recycle " + reason.replace("\n", " ").encode(errors="replace")[:200] + b"\n"
        try:
            return os.write(self.requests, line) == len(line)
        except OSError:  # full (BlockingIOError) or the supervisor is gone
            return False


def supervisor_link_from_env(
    worker_id: int, environ: MutableMapping[str, str] | None = None
) -> SupervisorLink:
    """Take this worker's :class:`SupervisorLink` out of the environment (not for its children)."""
    env = os.environ if environ is None else environ
    base = env.pop(ENV_WORKER_CONTROL, "")
    fd = env.pop(ENV_WORKER_REQUESTS, "")
    stagger = env.pop(ENV_WORKER_STAGGER, "")
    requests: int | None = None
    if fd.isdigit():
        requests = int(fd)
        try:
            os.set_inheritable(requests, False)
            os.set_blocking(requests, False)
        except OSError:
            requests = None
    try:
        fraction = float(stagger) if stagger else 0.0
    except ValueError:
        fraction = 0.0
    return SupervisorLink(
        control=worker_control_path(base, worker_id, os.getpid()) if base else None,
        requests=requests,
        stagger=min(fraction, 1.0) if fraction > 0.0 else 0.0,  # NaN and junk: none
    )


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
    #: The read end of its request pipe (see :meth:`Supervisor.recycle`).
    requests: int | None = None
    requests_watch: Watch | None = None
    requests_data: bytes = b""
    #: Its private control socket, when the supervisor serves --control/--metrics.
    control: str | None = None


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
    #: Times its worker was recycled at its own request (memory, runtime).
    recycles: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """One worker (or an empty slot) as :meth:`Supervisor.members` sees it.

    ``state`` is ``starting``, ``ready``, ``stopping`` (replaced, or the set
    stops), ``restarting`` (dead, its slot waits for the backoff) or
    ``crash loop`` (the slot was given up); ``pid`` and ``control`` are None
    for an empty slot. ``restarts`` and ``recycles`` count the slot's.
    """

    id: int
    pid: int | None
    state: str
    restarts: int
    recycles: int
    control: str | None


class Supervisor:
    """Runs ``workers`` worker processes on ``sockets`` until stopped; see the module doc.

    ``sockets`` maps endpoint names to bound sockets (the supervisor keeps
    and closes them); ``command`` is each worker's command line (default:
    this process's, :func:`~daemonkit.ops.upgrade.default_command`), and the
    new supervisor's in an upgrade; ``cwd`` where they start (default:
    :data:`~daemonkit.ops.upgrade.LAUNCH_DIR`, since ``--daemon`` moves to ``/``).
    :meth:`run` serves until a stop and returns the exit status.

    ``drain`` is the workers' ``upgrade_drain``: after an upgrade the stop
    waits that much longer for them. ``quiet`` gives workers ``/dev/null``
    as standard streams (a detached supervisor's terminal is not theirs).
    ``strict_start`` (the new supervisor of an upgrade) makes a crash loop
    before every worker was ready once end the run with
    :data:`EXIT_NO_WORKERS`: a new set must be whole to take over.
    ``upgrade_timeout`` is how long a new supervisor has (SIGUSR2).
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
        worker_control: str | None = None,
        drain: float = 0.0,
        quiet: bool = False,
        strict_start: bool = False,
        upgrade_timeout: float = UPGRADE_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.sockets = dict(sockets)
        self.command = list(command) if command is not None else default_command()
        self.log = log if log is not None else logging.getLogger("daemonkit.workers")
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self.cwd = cwd if cwd is not None else LAUNCH_DIR
        self.drain = drain
        self.quiet = quiet
        self.strict_start = strict_start
        self.upgrade_timeout = upgrade_timeout
        #: Whether the unix socket files of :attr:`sockets` are ours to remove at
        #: exit: not once handed over to a new supervisor, and not before our set
        #: is ready when we are that new supervisor (set by its deployment).
        self.owns_files = True
        #: The pid of the supervisor that took over in an upgrade, once one did.
        self.successor: int | None = None
        #: The set's control socket and metrics endpoint, as ``("@control",
        #: listener)``, handed over with the sockets in an upgrade; whoever opens
        #: them sets it (:mod:`daemonkit.ops.workerset`; none by default).
        self.service_listeners: Callable[[], list[tuple[str, Listener]]] = list
        #: Why a ``strict_start`` set did not start, once it failed (for the old supervisor).
        self.failure: str | None = None
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
        self._exit = 0
        self._reloading: list[int] | None = None  # slots still to replace
        self._reload_new: _Worker | None = None
        self._all_ready_logged = False
        self._hooks: list[Callable[[str], object]] = []
        self._upgrade: _Worker | None = None  # the new supervisor, until ready or failed
        #: Base path of the workers' private control sockets, or None (see
        #: :func:`worker_control_path`): set when the supervisor serves
        #: ``--control`` or ``--metrics`` for the set.
        self.worker_control = worker_control
        #: ``time.monotonic()`` at creation, for the set's uptime.
        self.started = time.monotonic()
        # Why the replacements under way run: "reload" (SIGHUP) or "recycle".
        self._replace_why = "reload"
        # Workers started together (the set's start, a reload) stagger max_runtime.
        self._staggered = True
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
                _release(sock, unlink=self.owns_files)
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
        self._staggered = False

    def workers(self) -> list[tuple[int, int, bool]]:
        """The live workers as ``(worker id, pid, ready)``, retiring ones included."""
        return [(w.slot, pid, w.ready) for pid, w in sorted(self._workers.items())]

    def _spawn(self, slot: _Slot) -> _Worker | None:
        slot.respawn = None
        if self._stopping:
            return None
        link_env, request_fd, request_child_fd = self._link(slot)
        env = dict(self._env)
        env.update(link_env)
        env.pop(ENV_INHERIT_FILES, None)  # the supervisor owns the unix socket files
        env[ENV_WORKER] = str(slot.id)
        for name in _SUPERVISOR_ONLY:
            env.pop(name, None)
        more = [request_child_fd]
        if self.shares is not None:
            env[ENV_SHARES] = str(self.shares.fd)
            more.append(self.shares.fd)
        try:
            worker = self._launch(
                slot.id, env, self.sockets, self.ready_timeout, worker=True, more=more
            )
        except (OSError, subprocess.SubprocessError) as exc:
            os.close(request_fd)
            self.log.error("worker %d: cannot start %s: %s", slot.id, shlex.join(self.command), exc)
            self._died(slot, None)
            return None
        finally:
            os.close(request_child_fd)
        self._listen_requests(worker, request_fd)
        proc = worker.proc
        self._workers[proc.pid] = worker
        slot.pids.append(proc.pid)
        self.log.info("worker %d: started pid %d", slot.id, proc.pid)
        return worker

    def _launch(
        self,
        slot: int,
        env: dict[str, str],
        sockets: Mapping[str, socket.socket],
        timeout: float,
        *,
        worker: bool,
        more: Sequence[int] = (),
    ) -> _Worker:
        """Start ``command`` on ``sockets`` with a readiness pipe: a worker, or a new supervisor.

        ``more`` are more descriptors to pass (a worker's request pipe, the loads table).
        Raises ``OSError`` or ``SubprocessError`` when it cannot be started.
        """
        read_fd, write_fd = os.pipe()
        env[ENV_INHERIT] = ",".join(f"{name}:{s.fileno()}" for name, s in sockets.items())
        env[ENV_READY_FD] = str(write_fd)
        env[ENV_PARENT] = str(os.getpid())
        null = subprocess.DEVNULL if self.quiet and worker else None
        try:
            proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=env,
                pass_fds=[*(s.fileno() for s in sockets.values()), write_fd, *more],
                # A terminal's Ctrl-C reaches the supervisor only; a new supervisor
                # stays in ours, as an upgrade's new process does.
                start_new_session=worker,
                stdin=null,
                stdout=null,
                stderr=null,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        started = _Worker(slot, proc, read_fd)
        started.watch = self.reactor.watch(read_fd, READ, lambda w, e: self._on_pipe(started))
        on_timeout = self._not_ready if worker else self._upgrade_timed_out
        started.deadline = self.reactor.call_later(timeout, on_timeout, started)
        return started

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
        if worker is self._upgrade:
            self._upgrade_ready(worker)
            return
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
            self._announce("ready")

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
            self._forget(worker)
            if worker.deadline is not None:
                worker.deadline.cancel()
                worker.deadline = None
            self._exited(worker, code)
        self._reap_upgrade()
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
                "%s: the new worker %d failed; the old one goes on, %s stopped",
                self._replace_why,
                slot.id,
                self._replace_why,
            )
            self._reloading = None
            if self._replace_why == "reload":
                self._announce("reloaded")  # the old worker serves on: the set is ready again
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
            if self.strict_start and not self._all_ready_logged:
                self.failure = f"worker {slot.id} never became ready (crash loop)"
                self.log.critical("%s: this set cannot take over", self.failure)
                self._exit = EXIT_NO_WORKERS
                self.stop("crash loop at start")
                return
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
        name = signal.Signals(signum).name
        if self._stopping:
            # A second SIGTERM, or one after a hand-over: the workers' own
            # SIGTERM ends their drain, or stops them at once.
            self.log.warning(
                "%s while stopping: passing it on (draining workers close their "
                "connections now, stopping ones stop at once)",
                name,
            )
            self._forward(signal.SIGTERM)
            return
        self.stop(name)

    def stop(self, why: str = "stop", *, drain: bool = False, timeout: float | None = None) -> None:
        """Stop every worker gracefully (SIGTERM); SIGKILL past ``stop_timeout``; idempotent.

        ``drain=True`` is the stop after a hand-over to a new set: ready workers get
        :data:`HAND_OVER_SIGNAL` (they drain for up to :attr:`drain` seconds first),
        and the deadline grows by as much. ``timeout`` (``ctl stop SECONDS``) bounds
        the graceful part instead of the workers' own ``shutdown_timeout``: a worker
        still running after it gets a second SIGTERM (its stop at once: what is
        left is closed), and SIGKILL :data:`STOP_MARGIN` later.
        """
        if self._stopping:
            return
        self._stopping = True
        self._reloading = None
        if timeout is not None:
            self.reactor.call_later(timeout, self._stop_stragglers, timeout)
            limit = timeout + STOP_MARGIN
        else:
            limit = self.stop_timeout + (self.drain if drain else 0.0)
        timeout = limit
        self.log.info(
            "%s: stopping %d worker(s) gracefully (at most %gs)",
            why,
            len(self._workers),
            timeout,
        )
        self._announce("handed_over" if drain else "stopping")
        for slot in self.slots:
            if slot.respawn is not None:
                slot.respawn.cancel()
                slot.respawn = None
        for worker in self._workers.values():
            ready = drain and worker.ready and not worker.retiring
            with contextlib.suppress(OSError):
                worker.proc.send_signal(HAND_OVER_SIGNAL if ready else signal.SIGTERM)
        if self._upgrade is not None:
            self._cancel_upgrade()
        self.reactor.call_later(timeout, self._stop_timed_out, timeout)
        self._reap()

    def _stop_stragglers(self, timeout: float) -> None:
        """``ctl stop SECONDS`` ran out: the workers still running stop at once."""
        if self._workers:
            self.log.warning(
                "%d worker(s) still running %gs after the stop; stopping them at once",
                len(self._workers),
                timeout,
            )
            self._forward(signal.SIGTERM)

    def _stop_timed_out(self, timeout: float) -> None:
        if self._workers:
            self.log.error(
                "%d worker(s) still running %gs after the stop; killing them",
                len(self._workers),
                timeout,
            )
            self._kill_all()

    def _forward(self, signum: int) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(OSError):
                worker.proc.send_signal(signum)

    def _on_usr2(self, signum: int) -> None:
        self.log.info("SIGUSR2: upgrading the set")
        with contextlib.suppress(UpgradeError):  # logged by upgrade()
            self.upgrade()

    def reload(self) -> None:
        """Replace every worker, one at a time (SIGHUP); the old one stops once the new is ready."""
        if self._stopping:
            return
        if self._reloading is not None:
            if self._replace_why == "reload":
                self.log.warning("SIGHUP: a reload is under way already")
            else:
                self._reload_after_recycles()
            return
        self._replace_why = "reload"
        self._staggered = True
        self._reloading = [s.id for s in self.slots if not s.given_up]
        self.log.info("SIGHUP: replacing %d worker(s) one at a time", len(self._reloading))
        self._announce("reloading")
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
        self._staggered = False
        if self._replace_why == "reload":
            self.log.info("reload: every worker replaced")
            self._announce("reloaded")
        else:
            self.log.info("recycle: done; no worker waits for its turn")

    def _kill_all(self) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(OSError):
                worker.proc.kill()
        for pid, worker in list(self._workers.items()):
            worker.proc.wait()
            self._close_pipe(worker)
            self._forget(worker)
            if worker.deadline is not None:
                worker.deadline.cancel()
            del self._workers[pid]

    # -- what the deployment follows (pidfile, --daemon, systemd) ----------------------

    def add_lifecycle_hook(self, hook: Callable[[str], object]) -> None:
        """Call ``hook(event)`` at each event of the set, as :meth:`Daemon.add_lifecycle_hook
        <daemonkit.daemon.Daemon.add_lifecycle_hook>` does for one process.

        Events: ``ready`` (every worker ready, once), ``reloading`` and
        ``reloaded`` (around a SIGHUP replacement, failed or not), ``stopping``,
        and ``handed_over`` (a new set took over; this one drains and stops).
        """
        self._hooks.append(hook)

    def _announce(self, event: str) -> None:
        for hook in self._hooks:
            hook(event)

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds on the supervisor's loop."""
        return self.reactor.call_every(interval, fn, *args)

    def status(self) -> str:
        """One line for a person (systemd's ``STATUS=``): ready workers and restarts."""
        ready = sum(1 for s in self.slots if s.current is not None and s.current.ready)
        restarts = sum(s.restarts for s in self.slots)
        if self._stopping:
            return f"stopping: {len(self._workers)} worker(s) left"
        return f"{ready} of {len(self.slots)} worker(s) ready; {restarts} restart(s)"

    # -- upgrading the set (SIGUSR2) -------------------------------------------------

    def upgrade(self) -> int:
        """Start a new supervisor on our sockets and return its pid (SIGUSR2); see the module doc.

        Once its workers are all ready, ours drain and stop and :meth:`run`
        returns 0; if it fails, we serve on and the log says why. Raises
        :class:`~daemonkit.errors.UpgradeError` (logged) when one is under
        way, the set is stopping, or the process cannot be started.
        """
        try:
            if self._stopping:
                raise UpgradeError("the supervisor is stopping")
            if self._upgrade is not None:
                raise UpgradeError(
                    f"an upgrade is already under way (new supervisor {self._upgrade.proc.pid})"
                )
            env = dict(self._env)
            env.pop(ENV_WORKER, None)
            services = self.service_listeners()
            # The set's control socket and metrics endpoint go too: operators
            # reach the new supervisor at the same path once it is ready.
            sockets = {**self.sockets, **{name: lst.sock for name, lst in services}}
            env[ENV_INHERIT_FILES] = ",".join(
                f"{name}:{lst.socket_file[1]}:{lst.socket_file[2]}"
                for name, lst in services
                if lst.socket_file is not None
            )
            try:
                new = self._launch(-1, env, sockets, self.upgrade_timeout, worker=False)
            except (OSError, subprocess.SubprocessError) as exc:
                raise UpgradeError(f"cannot start {shlex.join(self.command)}: {exc}") from exc
        except UpgradeError as exc:
            self.log.error("upgrade not started: %s", exc)
            raise
        self._upgrade = new
        self.log.info(
            "upgrade: started new supervisor %d with %d listener(s); it has %gs to have "
            "all its workers ready",
            new.proc.pid,
            len(sockets),
            self.upgrade_timeout,
        )
        return new.proc.pid

    def _upgrade_ready(self, new: _Worker) -> None:
        self._upgrade = None
        if new.deadline is not None:
            new.deadline.cancel()
            new.deadline = None
        if self._stopping:
            self.log.warning(
                "upgrade: new supervisor %d is ready, but this one is stopping; stopping it too",
                new.proc.pid,
            )
            with contextlib.suppress(OSError):
                new.proc.terminate()
            return
        self.successor = new.proc.pid
        self.owns_files = False  # the unix socket files are the new supervisor's now
        for _, listener in self.service_listeners():
            listener.release_socket_file()  # the new supervisor owns the file now
            listener.close()  # operators reach the new supervisor
        self.log.info(
            "upgrade: new supervisor %d is ready with all its workers; handing over "
            "(our workers drain for up to %gs, then stop)",
            new.proc.pid,
            self.drain,
        )
        self.stop("upgrade", drain=True)

    def _upgrade_timed_out(self, new: _Worker) -> None:
        new.deadline = None
        if new is not self._upgrade or new.proc.poll() is not None:
            return
        new.message = b"error not ready within %gs; killed\n" % self.upgrade_timeout
        # Its workers notice their supervisor is gone and stop (watch_supervisor).
        with contextlib.suppress(OSError):
            new.proc.kill()

    def _reap_upgrade(self) -> None:
        new = self._upgrade
        if new is None:
            return
        code = new.proc.poll()
        if code is None:
            return
        self._upgrade = None
        self._close_pipe(new)
        if new.deadline is not None:
            new.deadline.cancel()
            new.deadline = None
        reason = ""
        if new.message.startswith(b"error "):
            reason = ": " + new.message[6:].split(b"\n", 1)[0].decode(errors="replace")
        self.log.error(
            "upgrade failed: new supervisor %d %s before its workers were ready%s; "
            "the old set serves on (supervisor pid %d)",
            new.proc.pid,
            _describe(code),
            reason,
            os.getpid(),
        )

    def _cancel_upgrade(self) -> None:
        """The set stops while a new one starts: the stop wins; stop the new supervisor too."""
        new, self._upgrade = self._upgrade, None
        if new is None:
            return
        self._close_pipe(new)
        if new.deadline is not None:
            new.deadline.cancel()
            new.deadline = None
        self.log.warning("upgrade cancelled: stopping new supervisor %d", new.proc.pid)
        with contextlib.suppress(OSError):
            new.proc.terminate()

    # -- recycling, and what the set's control socket asks -----------------------

    def _link(self, slot: _Slot) -> tuple[dict[str, str], int, int]:
        """A worker's request pipe and variables: (env, read end, the worker's write end)."""
        read_fd, write_fd = os.pipe()
        stagger = slot.id / len(self.slots) if self._staggered else 0.0
        env = {ENV_WORKER_REQUESTS: str(write_fd), ENV_WORKER_STAGGER: repr(stagger)}
        if self.worker_control is not None:
            env[ENV_WORKER_CONTROL] = self.worker_control
        return env, read_fd, write_fd

    def _listen_requests(self, worker: _Worker, fd: int) -> None:
        os.set_blocking(fd, False)
        worker.requests = fd
        worker.requests_watch = self.reactor.watch(fd, READ, lambda w, e: self._on_requests(worker))
        if self.worker_control is not None:
            worker.control = worker_control_path(self.worker_control, worker.slot, worker.proc.pid)

    def _on_requests(self, worker: _Worker) -> None:
        if worker.requests is None:
            return
        try:
            data = os.read(worker.requests, _MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker exited (or closed it): nothing more to hear
            self._close_requests(worker)
            return
        buffered = worker.requests_data + data
        *lines, rest = buffered.split(b"\n")
        worker.requests_data = rest[:_MAX_MESSAGE]
        for line in lines:
            verb, _, reason = line.decode(errors="replace").partition(" ")
            if verb == "recycle":
                if worker.retiring or worker is not self.slots[worker.slot].current:
                    continue  # already on its way out
                self.recycle(worker.slot, reason or "asked")

    def _close_requests(self, worker: _Worker) -> None:
        if worker.requests_watch is not None:
            worker.requests_watch.cancel()
            worker.requests_watch = None
        if worker.requests is not None:
            os.close(worker.requests)
            worker.requests = None

    def _forget(self, worker: _Worker) -> None:
        """A worker exited: close its request pipe, remove its private socket if left behind."""
        self._close_requests(worker)
        path = worker.control
        if path is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)  # a worker killed (-9) could not remove it itself

    def recycle(self, worker_id: int, reason: str) -> bool:
        """Replace worker ``worker_id`` by a fresh one when its turn comes; False if not now.

        Exactly as SIGHUP replaces a worker: the new one starts, and once it
        is ready the old one stops gracefully. One replacement runs at a
        time: a request that arrives meanwhile (or during a reload) waits its
        turn. A worker whose replacement is queued already, a given-up slot
        or a stopping set is not recycled (False). A worker asks through its
        request pipe when its ``max_memory`` or ``max_runtime`` passed.
        """
        slot = self.slots[worker_id]
        if self._stopping or slot.given_up or slot.current is None:
            return False
        new = self._reload_new
        if worker_id in (self._reloading or ()) or (new is not None and new.slot == worker_id):
            self.log.info(
                "worker %d asks to be recycled (%s); its replacement is on its way already",
                worker_id,
                reason,
            )
            return False
        slot.recycles += 1
        if self._reloading is None:
            self._replace_why = "recycle"
            self._reloading = [worker_id]
            self.log.info(
                "worker %d: recycling it (%s): a new worker first, then the old one stops",
                worker_id,
                reason,
            )
            self._reload_next()
        else:
            self._reloading.append(worker_id)
            self.log.info(
                "worker %d: recycling it (%s) once the %d replacement(s) before it are done",
                worker_id,
                reason,
                len(self._reloading) - 1 + (new is not None),
            )
        return True

    def _reload_after_recycles(self) -> None:
        """SIGHUP while recycles run: queue every other slot behind them, as one reload."""
        assert self._reloading is not None
        new = self._reload_new
        busy = {*self._reloading, *(() if new is None else (new.slot,))}
        more = [s.id for s in self.slots if not s.given_up and s.id not in busy]
        self._reloading.extend(more)
        self._replace_why = "reload"
        self._staggered = True
        self.log.info("SIGHUP: replacing %d more worker(s) after the recycles under way", len(more))
        self._announce("reloading")

    @property
    def stopping(self) -> bool:
        """True once a stop began (SIGTERM, ``ctl stop``, no worker left)."""
        return self._stopping

    def stop_now(self) -> None:
        """A second stop: pass SIGTERM on again, so the workers stop at once."""
        self.log.warning("stop requested again: stopping the workers at once")
        self._forward(signal.SIGTERM)

    def members(self) -> list[WorkerInfo]:
        """Every live worker (retiring ones and replacements too) and every empty slot, by id."""
        found: list[WorkerInfo] = []
        for slot in self.slots:
            live = [w for w in self._workers.values() if w.slot == slot.id]
            for w in sorted(live, key=lambda w: w.proc.pid):
                if w.retiring or self._stopping:
                    state = "stopping"
                else:
                    state = "ready" if w.ready else "starting"
                found.append(
                    WorkerInfo(slot.id, w.proc.pid, state, slot.restarts, slot.recycles, w.control)
                )
            if not live:
                state = "crash loop" if slot.given_up else "restarting"
                found.append(WorkerInfo(slot.id, None, state, slot.restarts, slot.recycles, None))
        return found


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


def release_endpoints(sockets: Mapping[str, socket.socket], *, unlink: bool = True) -> None:
    """Close what :func:`bind_endpoints` bound when no supervisor will.

    Unix socket files go too, unless ``unlink`` is false (they were handed over
    by an upgrading supervisor, which still owns them).
    """
    for sock in sockets.values():
        _release(sock, unlink=unlink)


def _release(sock: socket.socket, *, unlink: bool = True) -> None:
    """Close a listening socket; a unix one's file goes too when ``unlink`` (it is ours)."""
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if unlink and isinstance(path, str) and path and not path.startswith("\0"):
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
