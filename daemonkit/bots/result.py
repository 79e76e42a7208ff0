"""RunResult: everything a finished bots run knows, for the summary and the reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemonkit.bots.stats import Stats

__all__ = ["RunResult", "ServerMemory"]


@dataclass
class ServerMemory:
    """The daemon's resident memory, sampled from ``/proc/PID`` during the run.

    ``baseline`` is the RSS before the first bot connected, ``peak`` the
    highest sample, ``connected`` the connected bots at that peak; so
    ``per_bot`` is what each connected bot cost the daemon.
    """

    pid: int
    baseline: int
    peak: int
    connected: int

    @property
    def per_bot(self) -> float | None:
        """Bytes of daemon RSS per connected bot (None when no bot was connected)."""
        if self.connected <= 0:
            return None
        return max(0, self.peak - self.baseline) / self.connected

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "pid": self.pid,
            "baseline_bytes": self.baseline,
            "peak_bytes": self.peak,
            "connected": self.connected,
            "per_bot_bytes": self.per_bot,
        }


@dataclass
class RunResult:
    """A finished run: its settings, its :class:`~daemonkit.bots.stats.Stats`, and what was seen.

    ``bot`` names the bot class (several: ``"A, B"``), and ``classes`` how
    many bots of each class were started. ``elapsed`` is the measured phase
    in seconds (from the first spawn to the end of the duration); rates
    divide by it. ``cpu`` is the bots process's CPU use per second (1.0 =
    one core busy); ``saturated`` is True when it stayed near one core,
    which means the figures measure the load generator rather than the
    daemon. ``spawn_rate`` is bots started per second (None: all at once),
    ``command`` the command line of the run (when run from the shell) and
    ``verdicts`` one line per threshold judged, e.g. ``ok p99>50ms: actual
    3.2ms`` or ``FAIL errors>0: actual 2``.
    """

    target: str
    bot: str
    bots: int
    duration: float
    elapsed: float
    stats: Stats
    started: str = ""
    model: str = "closed"
    rate: float | None = None
    procs: int = 1
    peak_connected: int = 0
    server: ServerMemory | None = None
    cpu: list[float] = field(default_factory=list)
    saturated: bool = False
    warnings: list[str] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    spawn_rate: float | None = None
    command: str = ""
    verdicts: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful operations per second over the run."""
        return self.stats.requests / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float, operation: str | None = None) -> float:
        """Latency at percentile ``p`` (seconds), of one operation or of all requests together.

        Raises ``KeyError`` when no operation of that name ran, and
        ``AssertionError`` when no request succeeded: a percentile of nothing
        would let a test's bound pass with nothing measured.
        """
        stats = self.stats
        histogram = stats.latency() if operation is None else stats.operations[operation].latency
        if histogram.count == 0:
            raise AssertionError(self._nothing_measured(operation))
        return histogram.percentile(p)

    def assert_ok(self, *, max_errors: int = 0) -> None:
        """For tests: raise ``AssertionError`` unless requests were measured and at most
        ``max_errors`` things failed (connects and dropped connections included).

        The message says what happened: no request measured (and why, when
        something failed), or how many failed and of which kinds.
        """
        stats = self.stats
        if stats.requests == 0:
            raise AssertionError(self._nothing_measured(None))
        if stats.errors > max_errors:
            raise AssertionError(
                f"{stats.errors:,} failed: {self._errors_text()} "
                f"(at most {max_errors:,} allowed; {stats.requests:,} requests succeeded)"
            )

    def _errors_text(self) -> str:
        kinds = sorted(self.stats.errors_by_kind().items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{kind} {n:,}" for kind, n in kinds)

    def _nothing_measured(self, operation: str | None) -> str:
        what = "no request was measured" if operation is None else f"no {operation!r} succeeded"
        why = f"; failures: {self._errors_text()}" if self.stats.errors else ""
        return (
            f"{what} in {self.elapsed:.1f}s of {self.bot} x {self.bots} against {self.target}"
            f" ({self.peak_connected} connected{why}); did the bots make requests "
            "(request/call), against the right endpoint?"
        )

    def p50(self, operation: str | None = None) -> float:
        """The median latency in seconds (see :meth:`percentile`)."""
        return self.percentile(50, operation)

    def p99(self, operation: str | None = None) -> float:
        """The 99th percentile latency in seconds (see :meth:`percentile`)."""
        return self.percentile(99, operation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``--json`` writes)."""
        return {
            "target": self.target,
            "bot": self.bot,
            "classes": dict(self.classes),
            "spawn_rate": self.spawn_rate,
            "command": self.command,
            "verdicts": list(self.verdicts),
            "bots": self.bots,
            "model": self.model,
            "rate": self.rate,
            "procs": self.procs,
            "duration": self.duration,
            "elapsed": self.elapsed,
            "started": self.started,
            "peak_connected": self.peak_connected,
            "requests": self.stats.requests,
            "errors": self.stats.errors,
            "rps": self.rps,
            "server": self.server.to_dict() if self.server is not None else None,
            "cpu": list(self.cpu),
            "saturated": self.saturated,
            "warnings": list(self.warnings),
            "stats": self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Inverse of :meth:`to_dict` (derived figures are recomputed)."""
        server = data.get("server")
        return cls(
            target=str(data["target"]),
            bot=str(data["bot"]),
            bots=int(data["bots"]),
            duration=float(data["duration"]),
            elapsed=float(data["elapsed"]),
            stats=Stats.from_dict(data["stats"]),
            started=str(data.get("started", "")),
            model=str(data.get("model", "closed")),
            rate=None if data.get("rate") is None else float(data["rate"]),
            procs=int(data.get("procs", 1)),
            peak_connected=int(data.get("peak_connected", 0)),
            server=None
            if server is None
            else ServerMemory(
                pid=int(server["pid"]),
                baseline=int(server["baseline_bytes"]),
                peak=int(server["peak_bytes"]),
                connected=int(server["connected"]),
            ),
            cpu=[float(c) for c in data.get("cpu", [])],
            saturated=bool(data.get("saturated", False)),
            warnings=[str(w) for w in data.get("warnings", [])],
            classes={str(k): int(v) for k, v in data.get("classes", {}).items()},
            spawn_rate=None if data.get("spawn_rate") is None else float(data["spawn_rate"]),
            command=str(data.get("command", "")),
            verdicts=[str(v) for v in data.get("verdicts", [])],
        )
