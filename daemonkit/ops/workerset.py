"""``--control`` and ``--metrics`` for a ``--workers`` set, served by its supervisor.

The supervisor (:class:`~daemonkit.ops.workers.Supervisor`) serves the
control socket at the configured path and the metrics endpoint at the
configured address, once for the whole set; its workers do not bind them.
Each worker serves a **private control socket** instead, at
:func:`~daemonkit.ops.workers.worker_control_path` (``PATH.wID.PID`` next to
the configured path, or in a private directory the supervisor makes when only
``--metrics`` is given), with the same rules as any control socket: mode
0600, a directory nobody else may write, ``SO_PEERCRED``. The supervisor asks
each worker there, all at once, each with a deadline of
:data:`WORKER_QUERY_TIMEOUT`:

* ``status``: the supervisor's pid and uptime, and per worker its id, pid,
  state (``starting``, ``ready``, ``stopping``; ``unresponsive`` when a ready
  worker did not answer in time), the slot's restarts and recycles, and the
  worker's own figures (connections, RSS, loop lag...);
* ``connections``: every worker's, each with a ``worker`` field;
* ``metrics`` and ``GET /metrics``: every worker's exposition with a
  ``worker="ID"`` label (HELP and TYPE once per family), and the
  supervisor's own series (workers configured and ready, restarts, recycles,
  crash loops, scrape errors). A worker that does not answer is missing from
  that scrape and ``daemonkit_worker_scrape_errors_total`` counts it;
* ``GET /healthz``: the supervisor answers alone, asking no worker: ``200 ok``,
  or ``503 stopping`` once the set stops;
* ``reload`` replaces the workers one at a time (as SIGHUP), ``stop`` stops
  the set gracefully (as SIGTERM; again: at once), ``log-level`` is set in
  the supervisor and passed to every worker.

Rules it keeps: the supervisor's loop never waits for a worker (a query is a
non-blocking unix socket watched by the reactor, with a timer); every query
has a deadline, so every request gets its reply; replies go out in request
order (:mod:`daemonkit.ops.control`); nothing here is imported without
``--workers`` and ``--control``/``--metrics``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from daemonkit.core.durations import check_duration
from daemonkit.core.reactor import READ
from daemonkit.errors import ConfigError, UpgradeError
from daemonkit.ops.control import (
    CONTROL_MAX_REPLY,
    RequestError,
    check_operations,
    check_request,
    handed_over_listeners,
    open_endpoints,
    set_log_level,
)
from daemonkit.ops.metrics import render, require_client
from daemonkit.ops.workers import Supervisor, WorkerInfo

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from daemonkit.core.reactor import Listener, Reactor, Watch
    from daemonkit.core.timers import Timer
    from daemonkit.daemon import Daemon
    from daemonkit.ops.control import _ControlHost, _MetricsHost

__all__ = [
    "WORKER_QUERY_TIMEOUT",
    "SetOperations",
    "WorkerReply",
    "ask_worker",
    "merge_scrapes",
]

#: Seconds the supervisor waits for a worker's answer. A healthy worker
#: answers in milliseconds; 2 s passes only when its loop is stuck, and it
#: leaves the supervisor well inside ``ctl``'s 10 s and Prometheus's default
#: ``scrape_timeout`` (10 s).
WORKER_QUERY_TIMEOUT = 2.0

# Longest unix socket path (sun_path is 108 bytes with its NUL on Linux), and
# what a worker's suffix ".wID.PID" may add to the base (ids < 1000, pids < 2**22).
_MAX_SOCKET_PATH = 107
_SUFFIX_ROOM = len(".w999.4194304")


class WorkerReply:
    """A worker's answer to one query: ``reply`` (the JSON object) or ``error`` (why none)."""

    __slots__ = ("error", "info", "reply")

    def __init__(
        self, info: WorkerInfo, reply: dict[str, Any] | None, error: str | None = None
    ) -> None:
        self.info = info
        self.reply = reply
        self.error = error

    @property
    def ok(self) -> bool:
        """True if the worker answered ``{"ok": true, ...}``."""
        return self.reply is not None and self.reply.get("ok") is True


class _Query:
    """One request to a worker's control socket on the supervisor's loop, with a deadline."""

    def __init__(
        self,
        reactor: Reactor,
        path: str,
        payload: dict[str, Any],
        timeout: float,
        done: Callable[[dict[str, Any] | None, str | None], None],
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._done: Callable[[dict[str, Any] | None, str | None], None] | None = done
        self._data = bytearray()
        self._watch: Watch | None = None
        self._timer: Timer | None = reactor.call_later(timeout, self._expire)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.setblocking(False)
        try:
            # A unix connect completes at once or fails (EAGAIN: backlog full),
            # and a request line is far below the socket buffer: sent whole.
            self._sock.connect(path)
            line = json.dumps(payload).encode() + b"\n"
            if self._sock.send(line) != len(line):
                raise OSError("request not sent whole")
        except OSError as exc:
            reactor.call_soon(self._finish, None, f"cannot reach {path}: {exc.strerror or exc}")
            return
        self._watch = reactor.watch(self._sock, READ, self._on_readable)

    def _on_readable(self, watch: Watch, what: int) -> None:
        while True:
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(None, f"{self.path}: {exc.strerror or exc}")
                return
            if not chunk:
                self._finish(None, f"{self.path} closed the connection without a reply")
                return
            self._data += chunk
            if len(self._data) > CONTROL_MAX_REPLY:
                self._finish(None, f"reply from {self.path} is over {CONTROL_MAX_REPLY} bytes")
                return
            if self._data.endswith(b"\n"):
                try:
                    reply = json.loads(self._data)
                except ValueError:
                    reply = None
                if isinstance(reply, dict):
                    self._finish(reply, None)
                else:
                    self._finish(None, f"{self.path} sent something that is not a JSON object")
                return

    def _expire(self) -> None:
        self._timer = None
        self._finish(None, f"no reply within {self.timeout:g}s")

    def _finish(self, reply: dict[str, Any] | None, error: str | None) -> None:
        done, self._done = self._done, None
        self.cancel()
        if done is not None:
            done(reply, error)

    def cancel(self) -> None:
        """Drop the query without calling back; idempotent."""
        self._done = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock.close()


def ask_worker(
    reactor: Reactor,
    path: str,
    payload: dict[str, Any],
    done: Callable[[dict[str, Any] | None, str | None], None],
    *,
    timeout: float = WORKER_QUERY_TIMEOUT,
) -> Callable[[], None]:
    """Send ``payload`` to the control socket at ``path``; then ``done(reply, error)``.

    ``done(reply, None)`` with the reply object, or ``done(None, why)``.

    Never blocks and never calls ``done`` before it returns; ``done`` runs
    exactly once, within ``timeout`` seconds, unless the returned function
    (which cancels the query) is called first.
    """
    return _Query(reactor, path, payload, timeout, done).cancel


def merge_scrapes(scrapes: Mapping[str, str], extra: list[Metric] | None = None) -> list[Metric]:
    """Metric families of several text expositions, each sample labelled ``worker=KEY``.

    ``scrapes`` maps a worker id to its exposition (text format 0.0.4). A
    family keeps the HELP and TYPE of the first exposition that has it; a
    family a later one types differently is left out of it. ``extra``
    families (the supervisor's) come last, unchanged. ``ValueError`` for an
    exposition that does not parse; ``ImportError`` without prometheus-client.
    """
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    merged: dict[str, Metric] = {}
    for worker, text in scrapes.items():
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = target
            elif target.type != family.type:
                continue
            for sample in family.samples:
                target.samples.append(sample._replace(labels={**sample.labels, "worker": worker}))
    return [*merged.values(), *(extra or [])]


class _Families:
    """A collector of ready-made families, for :func:`~daemonkit.ops.metrics.render`."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class SetOperations:
    """The control socket and metrics endpoint of a ``--workers`` set; see the module doc.

    Made by :meth:`open` in the supervisor, before :meth:`Supervisor.run`;
    :meth:`close` after it. ``daemon`` is the daemon the workers run (never
    started here): its settings name the endpoints, its logger logs.
    """

    def __init__(
        self,
        daemon: Daemon,
        supervisor: Supervisor,
        *,
        query_timeout: float = WORKER_QUERY_TIMEOUT,
    ) -> None:
        self.daemon = daemon
        self.supervisor = supervisor
        self.reactor = supervisor.reactor
        self.query_timeout = query_timeout
        self.log = daemon.log.getChild("control")
        self.control: _ControlHost | None = None
        self.metrics: _MetricsHost | None = None
        self.start_time = time.time()
        #: Scrapes each worker (by id) did not answer in time.
        self.scrape_errors: dict[int, int] = {}
        self._private_dir: str | None = None
        self._queries: set[Callable[[], None]] = set()
        self._closed = False

    @classmethod
    def open(cls, daemon: Daemon, supervisor: Supervisor) -> SetOperations | None:
        """Serve ``daemon.control``/``daemon.metrics`` for ``supervisor``'s set; None if neither.

        Sets the supervisor's :attr:`~Supervisor.worker_control` (the base of
        the workers' private sockets) before any worker starts. Raises
        :class:`~daemonkit.errors.ConfigError` for a bad setting and
        :class:`~daemonkit.daemon.StartError` when an endpoint cannot be bound.
        """
        path, address = check_operations(daemon.control, daemon.metrics)
        if path is None and address is None:
            return None
        ops = cls(daemon, supervisor)
        try:
            if path is not None:
                base = path
            else:  # metrics only: the private sockets go in a directory of our own
                ops._private_dir = tempfile.mkdtemp(prefix="daemonkit-workers-")
                base = os.path.join(ops._private_dir, "ctl")
            if len(base.encode()) + _SUFFIX_ROOM > _MAX_SOCKET_PATH:
                raise ConfigError(
                    f"control socket path {base} is too long for the workers' private sockets "
                    f"(at most {_MAX_SOCKET_PATH - _SUFFIX_ROOM} bytes with --workers)"
                )
            supervisor.worker_control = base
            ops.control, ops.metrics = open_endpoints(ops, path, address, ops.log)
        except BaseException:
            ops.close()
            raise
        return ops

    def listeners(self) -> list[tuple[str, Listener]]:
        """The open control socket and metrics endpoint, as a SIGUSR2 hands them to a new set."""
        return handed_over_listeners(self.control, self.metrics)

    def close(self) -> None:
        """Close the endpoints, drop the queries under way, remove a private directory."""
        if self._closed:
            return
        self._closed = True
        for host in (self.control, self.metrics):
            if host is not None:
                host.close()
        for cancel in list(self._queries):
            cancel()
        self._queries.clear()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)

    # -- asking the workers ---------------------------------------------------------

    def gather(self, payload: dict[str, Any], done: Callable[[list[WorkerReply]], None]) -> None:
        """Ask every live worker ``payload`` at once; ``done(replies)`` once all answered or not.

        ``replies`` has one entry per member of the set (:meth:`Supervisor.members`),
        in order; an empty slot's has neither reply nor error.
        """
        members = self.supervisor.members()
        replies = [WorkerReply(info, None) for info in members]
        waiting = {i for i, info in enumerate(members) if info.control is not None}
        if not waiting:
            self.reactor.call_soon(done, replies)
            return

        cancels: dict[int, Callable[[], None]] = {}

        def answered(i: int, reply: dict[str, Any] | None, error: str | None) -> None:
            self._queries.discard(cancels[i])
            replies[i].reply, replies[i].error = reply, error
            waiting.discard(i)
            if not waiting:
                done(replies)

        for i in sorted(waiting):
            path = members[i].control
            assert path is not None
            cancels[i] = ask_worker(
                self.reactor,
                path,
                payload,
                functools.partial(answered, i),
                timeout=self.query_timeout,
            )
            self._queries.add(cancels[i])

    # -- the Served interface ----------------------------------------------------------

    def submit(self, request: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """Run one control request for the set; ``done(reply)`` once every worker asked answered."""
        cmd = check_request(request)
        if cmd == "status":
            self.gather({"cmd": "status"}, lambda replies: done(self._status(replies)))
        elif cmd == "connections":
            limit = request.get("limit")
            if limit is not None and (type(limit) is not int or limit < 0):
                raise RequestError(f"limit must be a whole number >= 0, not {limit!r}")
            self.gather(request, lambda replies: done(_connections(replies, limit)))
        elif cmd == "metrics":
            try:
                require_client("ctl metrics")
            except ConfigError as exc:
                raise RequestError(str(exc)) from None
            self.scrape_later("", lambda body, _: done({"ok": True, "metrics": body.decode()}))
        elif cmd == "log-level":
            was, now = set_log_level(request["level"], self.daemon.log)
            self.log.warning(
                "log level changed from %s to %s; passing it on to the workers", was, now
            )
            self.gather(request, lambda replies: done(_log_levels(replies, was, now)))
        else:
            done(self._act(cmd, request))

    def _act(self, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
        sup = self.supervisor
        if cmd == "reload":
            if sup.stopping:
                raise RequestError("the workers are stopping")
            self.log.info("reload requested: replacing the workers one at a time")
            self.reactor.call_soon(sup.reload)
            return {"ok": True, "workers": len(sup.slots)}
        if cmd == "stop":
            timeout = request.get("timeout")
            if timeout is not None:
                try:
                    timeout = check_duration("timeout", timeout)
                except ConfigError as exc:
                    raise RequestError(str(exc)) from None
            if sup.stopping:
                self.reactor.call_soon(sup.stop_now)
                return {"ok": True, "stopping": True, "now": True, "workers": len(sup.slots)}
            # After this reply is written: the stop ends the loop once the workers are gone.
            self.reactor.call_soon(lambda: sup.stop("ctl stop", timeout=timeout))
            return {
                "ok": True,
                "stopping": True,
                "workers": len(sup.slots),
                "timeout": self.daemon.shutdown_timeout if timeout is None else timeout,
            }
        if cmd == "upgrade":
            self.log.info("upgrade requested: a new supervisor and set take over")
            try:
                new_pid = sup.upgrade()  # the path SIGUSR2 takes
            except UpgradeError as exc:
                raise RequestError(f"upgrade not started: {exc}") from exc
            return {"ok": True, "upgrading": True, "pid": os.getpid(), "new_pid": new_pid}
        raise RequestError(
            f"{cmd} is not supported with --workers yet; "
            "`ctl reload` (or SIGHUP) replaces the workers one at a time"
        )

    def unhealthy(self) -> str | None:
        """``"stopping"`` once the set stops, else None: what the set's ``GET /healthz`` says.

        A set whose workers are not all ready still answers 200: while a
        SIGUSR2's new supervisor starts its workers it already shares the
        metrics port with the old set, which serves, and a set at its start
        queues its clients in the listen backlog until a worker takes them.
        """
        return "stopping" if self.supervisor.stopping else None

    def scrape_later(self, accept: str, done: Callable[[bytes, str], None]) -> None:
        """One scrape of the whole set (see the module doc); ``done(body, content_type)``."""
        from prometheus_client import CollectorRegistry

        def merge(replies: list[WorkerReply]) -> None:
            texts: dict[str, str] = {}
            up: dict[int, bool] = {}
            for r in replies:
                if r.info.pid is None:
                    continue
                text = r.reply.get("metrics") if r.ok and r.reply is not None else None
                if isinstance(text, str):
                    texts[str(r.info.id)] = text
                    up[r.info.id] = True
                elif r.info.state in ("ready", "stopping"):
                    up.setdefault(r.info.id, False)
                    self.scrape_errors[r.info.id] = self.scrape_errors.get(r.info.id, 0) + 1
                    self.log.warning(
                        "metrics: worker %d (pid %d) left out of this scrape: %s",
                        r.info.id,
                        r.info.pid,
                        r.error or (r.reply or {}).get("error"),
                    )
            try:
                families = merge_scrapes(texts, self._families(up))
            except ValueError as exc:
                self.log.error("metrics: a worker's exposition does not parse: %s", exc)
                families = self._families(up)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Families(families))
            done(*render(registry, accept))

        self.gather({"cmd": "metrics"}, merge)

    # -- what the set looks like --------------------------------------------------------

    def _families(self, up: Mapping[int, bool]) -> list[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        members = sup.members()
        ready = {m.id for m in members if m.state == "ready"}
        answered = GaugeMetricFamily(
            "daemonkit_worker_up",
            "1 if the worker answered this scrape, 0 if it did not in time.",
            labels=("worker",),
        )
        restarts = CounterMetricFamily(
            "daemonkit_worker_restarts",
            "Times the worker's slot was restarted after a death.",
            labels=("worker",),
        )
        recycles = CounterMetricFamily(
            "daemonkit_worker_recycles",
            "Times the worker was replaced at its own request (max_memory, max_runtime).",
            labels=("worker",),
        )
        crash_loop = GaugeMetricFamily(
            "daemonkit_worker_crash_loop",
            "1 if the worker's slot was given up after a crash loop.",
            labels=("worker",),
        )
        errors = CounterMetricFamily(
            "daemonkit_worker_scrape_errors",
            "Scrapes the worker did not answer in time: its series are missing from them.",
            labels=("worker",),
        )
        for slot in sup.slots:
            label = (str(slot.id),)
            if slot.id in up:
                answered.add_metric(label, int(up[slot.id]))
            restarts.add_metric(label, slot.restarts)
            recycles.add_metric(label, slot.recycles)
            crash_loop.add_metric(label, int(slot.given_up))
            errors.add_metric(label, self.scrape_errors.get(slot.id, 0))
        return [
            GaugeMetricFamily(
                "daemonkit_workers",
                "Worker processes configured (--workers).",
                value=len(sup.slots),
            ),
            GaugeMetricFamily(
                "daemonkit_workers_ready", "Worker slots whose worker is ready.", value=len(ready)
            ),
            answered,
            restarts,
            recycles,
            crash_loop,
            errors,
            GaugeMetricFamily(
                "daemonkit_supervisor_uptime_seconds",
                "Seconds since the supervisor started.",
                value=time.monotonic() - sup.started,
            ),
        ]

    def _status(self, replies: list[WorkerReply]) -> dict[str, Any]:
        sup = self.supervisor
        workers = []
        for r in replies:
            entry: dict[str, Any] = {}
            state = r.info.state
            if r.ok and r.reply is not None and isinstance(r.reply.get("status"), dict):
                entry.update(r.reply["status"])
                entry.pop("metrics", None)  # a worker serves none: the supervisor does
            elif r.info.pid is not None:
                if state == "ready":
                    state = "unresponsive"
                entry.update(connections=None, rss=None, loop_lag=None)
                entry["error"] = r.error or (r.reply or {}).get("error")
            entry.update(
                id=r.info.id,
                pid=r.info.pid,
                state=state,
                restarts=r.info.restarts,
                recycles=r.info.recycles,
                control=r.info.control,
            )
            workers.append(entry)
        counts = [w["connections"] for w in workers if isinstance(w.get("connections"), int)]
        metrics = self.metrics.address if self.metrics is not None else None
        status = {
            "name": str(self.daemon.name),
            "pid": os.getpid(),
            "role": "supervisor",
            "state": "stopping" if sup.stopping else "running",
            "uptime": round(time.monotonic() - sup.started, 3),
            "start_time": self.start_time,
            "workers_configured": len(sup.slots),
            "workers_ready": sum(1 for w in workers if w["state"] == "ready"),
            "connections": sum(counts),
            "control": self.control.path if self.control is not None else None,
            "metrics": str(metrics) if metrics is not None else None,
            "workers": workers,
        }
        return {"ok": True, "status": status}


def _connections(replies: list[WorkerReply], limit: int | None) -> dict[str, Any]:
    """Every worker's ``connections`` reply as one, each entry with its ``worker``."""
    entries: list[dict[str, Any]] = []
    total = 0
    unresponsive: list[int] = []
    for r in replies:
        if r.info.pid is None:
            continue
        if not r.ok or r.reply is None:
            if r.info.state == "ready":
                unresponsive.append(r.info.id)
            continue
        total += int(r.reply.get("total") or 0)
        for conn in r.reply.get("connections") or []:
            if isinstance(conn, dict):
                entries.append({"worker": r.info.id, **conn})
    if limit is not None:  # the oldest `limit` of the set
        entries.sort(key=lambda c: -(c.get("age") or 0.0))
        entries = entries[:limit]
    entries.sort(key=lambda c: (c["worker"], c.get("id") or 0))
    return {"ok": True, "total": total, "connections": entries, "unresponsive": unresponsive}


def _log_levels(replies: list[WorkerReply], was: str, now: str) -> dict[str, Any]:
    """The ``log-level`` reply of the set: the supervisor's change, and each worker's answer."""
    workers: dict[str, Any] = {}
    for r in replies:
        if r.info.pid is None:
            continue
        if r.ok and r.reply is not None:
            workers[str(r.info.id)] = r.reply.get("level")
        else:
            workers[str(r.info.id)] = {"error": r.error or (r.reply or {}).get("error")}
    return {"ok": True, "level": now, "was": was, "workers": workers}
