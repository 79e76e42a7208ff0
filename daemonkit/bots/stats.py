"""Stats: what a bots run measured, per operation and per second.

Bots call :meth:`Stats.record` (a request's latency, in seconds, for a
named operation), :meth:`Stats.measure` (a custom measure: its own row, not
a request), :meth:`Stats.fail` (an error of some kind for a named
operation) and :meth:`Stats.status` (an HTTP response's status code, for
every response: successes and failures alike). Only requests make the
headline: :attr:`Stats.requests`, :meth:`Stats.latency` and the per-second
series count request operations and leave custom measures out. The runner
calls :meth:`Stats.connected` for each connect time and :meth:`Stats.roll`
once a second, which closes the current interval into a :class:`Sample`
(throughput, percentiles, active bots) for the live progress line and the
charts of the report.

Everything here is plain data with ``to_dict`` / ``from_dict``, so a worker
process of ``--procs`` can send its stats as JSON and the parent can
:meth:`Stats.merge` them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daemonkit.bots.histogram import Histogram

__all__ = ["PERCENTILES", "Interval", "Operation", "Sample", "Stats"]

#: The percentiles of the summary table and the reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class Operation:
    """One named operation's measures: latencies (successes) and errors by kind.

    ``measure`` is True for a custom measure (:meth:`Stats.measure`, or a
    failure counted outside any request, such as a dropped connection): its
    row stands apart and it is not in the requests' totals. ``statuses``
    counts the HTTP responses of the operation by status code (empty for
    other protocols), whether they counted as successes or as failures.
    """

    __slots__ = ("errors", "latency", "measure", "name", "statuses")

    def __init__(self, name: str, *, measure: bool = False) -> None:
        self.name = name
        self.measure = measure
        self.latency = Histogram()
        self.errors: dict[str, int] = {}
        self.statuses: dict[int, int] = {}

    @property
    def count(self) -> int:
        """Successful operations (those with a latency)."""
        return self.latency.count

    @property
    def failures(self) -> int:
        """Failed operations, all kinds together."""
        return sum(self.errors.values())

    def merge(self, other: Operation) -> None:
        """Add ``other``'s measures to this one (a request in either is a request)."""
        self.measure = self.measure and other.measure
        self.latency.merge(other.latency)
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for code, n in other.statuses.items():
            self.statuses[code] = self.statuses.get(code, 0) + n

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (status codes as strings: JSON keys are)."""
        return {
            "name": self.name,
            "measure": self.measure,
            "latency": self.latency.to_dict(),
            "errors": dict(self.errors),
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operation:
        """Inverse of :meth:`to_dict`."""
        op = cls(str(data["name"]), measure=bool(data.get("measure", False)))
        op.latency = Histogram.from_dict(data["latency"])
        op.errors = {str(k): int(v) for k, v in data["errors"].items()}
        op.statuses = {int(k): int(v) for k, v in data.get("statuses", {}).items()}
        return op


@dataclass
class Interval:
    """One second's raw measures, before they become a :class:`Sample`.

    Kept raw (a histogram, counts) so intervals of several worker processes
    can be added together before percentiles are read.
    """

    t: float
    seconds: float
    active: int = 0
    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def merge(self, other: Interval) -> None:
        """Add another process's interval for the same second."""
        self.active += other.active
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)

    def sample(self) -> Sample:
        """Summarise into a :class:`Sample`."""
        lat = self.latency
        span = self.seconds if self.seconds > 0 else 1.0
        return Sample(
            t=round(self.t, 3),
            active=self.active,
            requests=self.requests,
            errors=self.errors,
            rps=self.requests / span,
            p50=lat.percentile(50),
            p90=lat.percentile(90),
            p99=lat.percentile(99),
            max=lat.max,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "t": self.t,
            "seconds": self.seconds,
            "active": self.active,
            "requests": self.requests,
            "errors": self.errors,
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        """Inverse of :meth:`to_dict`."""
        return cls(
            t=float(data["t"]),
            seconds=float(data["seconds"]),
            active=int(data["active"]),
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            latency=Histogram.from_dict(data["latency"]),
        )


@dataclass(frozen=True)
class Sample:
    """One point of the time series: second ``t`` of the run, latencies in seconds."""

    t: float
    active: int
    requests: int
    errors: int
    rps: float
    p50: float
    p90: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class Stats:
    """All measures of one run (or of several merged worker runs)."""

    def __init__(self) -> None:
        self.operations: dict[str, Operation] = {}
        self.connect = Histogram()
        self.connect_errors: dict[str, int] = {}
        #: Connections the daemon (or the network) closed while the run went on.
        self.drops = 0
        #: Dropped bots that connected again (``reconnect`` bots only).
        self.reconnects = 0
        #: Reconnect attempts that failed, by kind (not errors: the drop was one).
        self.reconnect_errors: dict[str, int] = {}
        #: How long each dropped bot stayed disconnected: until it reconnected,
        #: or until the run's end.
        self.outages = Histogram()
        self.series: list[Sample] = []
        # An interval's latencies are the operations' histograms minus their
        # snapshot at the interval's start: one histogram update per request.
        self._snapshots: dict[str, tuple[list[int], int, float]] = {}
        self._interval_max = 0.0
        self._interval_requests = 0
        self._interval_errors = 0

    # -- the hot path ------------------------------------------------------

    def record(self, name: str, seconds: float) -> None:
        """One successful ``name`` request that took ``seconds``."""
        op = self.operations.get(name)
        if op is None or op.measure:
            op = self._request_op(name)
        op.latency.record(seconds)
        if seconds > self._interval_max:
            self._interval_max = seconds
        self._interval_requests += 1

    def measure(self, name: str, seconds: float) -> None:
        """One custom measure ``name`` of ``seconds``: its own row, not a request.

        Recorded into a request operation's name, it counts as that request.
        """
        op = self.operations.get(name)
        if op is None:
            op = self.operations[name] = Operation(name, measure=True)
        elif not op.measure:
            self.record(name, seconds)
            return
        op.latency.record(seconds)

    def fail(self, name: str, kind: str, *, request: bool = True) -> None:
        """One failed ``name`` operation; ``kind`` says why (e.g. ``"timeout"``).

        ``request=False`` for a failure outside any request (a dropped
        connection, a bot's own check): a new name then becomes a measure's
        row, not a request's.
        """
        op = self.operations.get(name)
        if op is None or (request and op.measure):
            op = self._request_op(name) if request else self._measure_op(name)
        op.errors[kind] = op.errors.get(kind, 0) + 1
        self._interval_errors += 1

    def status(self, name: str, code: int) -> None:
        """One response with status ``code`` to a ``name`` request (HTTP bots).

        Counted for every response, whatever its verdict: the success or
        failure itself is counted by :meth:`record` or :meth:`fail`.
        """
        op = self.operations.get(name)
        if op is None or op.measure:
            op = self._request_op(name)
        statuses = op.statuses
        statuses[code] = statuses.get(code, 0) + 1

    def statuses(self) -> dict[int, int]:
        """Responses by status code, all request operations together."""
        out: dict[int, int] = {}
        for op in self.operations.values():
            for code, n in op.statuses.items():
                out[code] = out.get(code, 0) + n
        return dict(sorted(out.items()))

    def _request_op(self, name: str) -> Operation:
        op = self.operations.get(name)
        if op is None:
            op = self.operations[name] = Operation(name)
        op.measure = False
        return op

    def _measure_op(self, name: str) -> Operation:
        op = self.operations.get(name)
        if op is None:
            op = self.operations[name] = Operation(name, measure=True)
        return op

    def connected(self, seconds: float) -> None:
        """One bot connected after ``seconds``."""
        self.connect.record(seconds)

    def connect_failed(self, kind: str) -> None:
        """One bot could not connect; ``kind`` says why (e.g. ``"ConnectionRefusedError"``)."""
        self.connect_errors[kind] = self.connect_errors.get(kind, 0) + 1
        self._interval_errors += 1

    def dropped(self) -> None:
        """One connection was closed by the daemon or the network mid-run."""
        self.drops += 1

    def reconnected(self, outage: float) -> None:
        """One dropped bot connected again after ``outage`` seconds."""
        self.reconnects += 1
        self.outages.record(outage)

    def reconnect_failed(self, kind: str) -> None:
        """One reconnect attempt failed; ``kind`` says why."""
        self.reconnect_errors[kind] = self.reconnect_errors.get(kind, 0) + 1

    def stayed_down(self, outage: float) -> None:
        """A dropped bot was still disconnected at the end, after ``outage`` seconds."""
        self.outages.record(outage)

    # -- intervals ---------------------------------------------------------

    def take_interval(self, t: float, seconds: float, active: int) -> Interval:
        """Close the current interval (ending at run time ``t``) and start the next."""
        latency = Histogram()
        snapshots = self._snapshots
        for name, op in self.operations.items():
            if op.measure:
                continue  # custom measures are not requests
            before = snapshots.get(name)
            if before is None:
                latency.merge(op.latency)
            elif op.latency.count > before[1]:
                latency.merge(op.latency._since(before, self._interval_max))
            snapshots[name] = op.latency._snapshot()
        if latency.count:
            latency.max = self._interval_max
        interval = Interval(
            t=t,
            seconds=seconds,
            active=active,
            requests=self._interval_requests,
            errors=self._interval_errors,
            latency=latency,
        )
        self._interval_max = 0.0
        self._interval_requests = 0
        self._interval_errors = 0
        return interval

    def roll(self, t: float, seconds: float, active: int) -> Sample:
        """:meth:`take_interval` and append its :class:`Sample` to :attr:`series`."""
        sample = self.take_interval(t, seconds, active).sample()
        self.series.append(sample)
        return sample

    # -- totals ------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Successful requests, all names together (custom measures are not requests)."""
        return sum(op.count for op in self.operations.values() if not op.measure)

    @property
    def request_errors(self) -> int:
        """Failed requests, all names together (no measures, no connects)."""
        return sum(op.failures for op in self.operations.values() if not op.measure)

    @property
    def errors(self) -> int:
        """Failed operations and failed connects, all together."""
        return sum(op.failures for op in self.operations.values()) + sum(
            self.connect_errors.values()
        )

    def latency(self) -> Histogram:
        """All requests' latencies in one histogram (custom measures are left out)."""
        total = Histogram()
        for op in self.operations.values():
            if not op.measure:
                total.merge(op.latency)
        return total

    def errors_by_kind(self) -> dict[str, int]:
        """Error counts keyed ``"operation: kind"`` (connects as ``"connect: kind"``)."""
        out: dict[str, int] = {}
        for kind, n in self.connect_errors.items():
            out[f"connect: {kind}"] = n
        for op in self.operations.values():
            for kind, n in op.errors.items():
                key = f"{op.name}: {kind}"
                out[key] = out.get(key, 0) + n  # an operation may be named "connect" too
        return out

    def merge(self, other: Stats) -> None:
        """Add another run's totals (not its series) to these."""
        for name, op in other.operations.items():
            mine = self.operations.get(name)
            if mine is None:
                mine = self.operations[name] = Operation(name, measure=op.measure)
            mine.merge(op)
        self.connect.merge(other.connect)
        for kind, n in other.connect_errors.items():
            self.connect_errors[kind] = self.connect_errors.get(kind, 0) + n
        self.drops += other.drops
        self.reconnects += other.reconnects
        for kind, n in other.reconnect_errors.items():
            self.reconnect_errors[kind] = self.reconnect_errors.get(kind, 0) + n
        self.outages.merge(other.outages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the totals and the series."""
        return {
            "operations": [op.to_dict() for op in self.operations.values()],
            "connect": self.connect.to_dict(),
            "connect_errors": dict(self.connect_errors),
            "drops": self.drops,
            "reconnects": self.reconnects,
            "reconnect_errors": dict(self.reconnect_errors),
            "outages": self.outages.to_dict(),
            "series": [s.to_dict() for s in self.series],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        """Inverse of :meth:`to_dict`; ``ValueError``/``KeyError`` if malformed."""
        stats = cls()
        for item in data["operations"]:
            op = Operation.from_dict(item)
            stats.operations[op.name] = op
        stats.connect = Histogram.from_dict(data["connect"])
        stats.connect_errors = {str(k): int(v) for k, v in data["connect_errors"].items()}
        stats.drops = int(data.get("drops", 0))
        stats.reconnects = int(data.get("reconnects", 0))
        errors = data.get("reconnect_errors", {})
        stats.reconnect_errors = {str(k): int(v) for k, v in errors.items()}
        if "outages" in data:
            stats.outages = Histogram.from_dict(data["outages"])
        stats.series = [Sample(**s) for s in data.get("series", [])]
        return stats
