"""``--procs N``: the bots of one run spread over N worker processes on this machine.

One Python process tops out near one core; past that its numbers measure
itself, not the daemon. Like Locust's distributed mode, the parent runs no
bots: it starts N workers (``daemonkit bots ... --worker``), each with its
share of the bots, the spawn rate and the request rate, and a disjoint range
of bot indices. Each worker writes one JSON line per interval (its raw
:class:`~daemonkit.bots.stats.Interval`, histogram included, and its CPU)
and one at the end (its :class:`~daemonkit.bots.result.RunResult`). The
parent adds the intervals of the same second together before it reads
percentiles, so the merged p99 is a true p99, not an average of p99s.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, TextIO

from daemonkit.bots.result import RunResult, ServerMemory
from daemonkit.bots.runner import SATURATED_CPU, read_rss
from daemonkit.bots.stats import Interval, Stats
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from daemonkit.bots.progress import Progress
    from daemonkit.bots.runner import BotRunner

__all__ = ["WorkerReporter", "merge_warnings", "run_procs", "shares"]

# Beyond the run's own bounded phases, how long the parent waits for its workers.
_WORKER_GRACE = 30.0


def shares(total: float, n: int) -> list[float]:
    """Split ``total`` into ``n`` shares that add up to it (whole numbers stay whole)."""
    if float(total).is_integer():
        whole = int(total)
        return [float(whole // n + (1 if i < whole % n else 0)) for i in range(n)]
    return [total / n] * n


class WorkerReporter:
    """In a worker: writes the runner's intervals and result as JSON lines to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def attach(self, runner: BotRunner) -> None:
        """Send every interval ``runner`` closes."""

        def on_interval(interval: Interval, cpu: float | None) -> None:
            self._send({"type": "interval", "interval": interval.to_dict(), "cpu": cpu})

        runner.on_interval = on_interval

    def finish(self, result: RunResult, *, unfinished: int = 0) -> None:
        """Send the final result."""
        self._send({"type": "result", "result": result.to_dict(), "unfinished": unfinished})

    def _send(self, message: dict[str, Any]) -> None:
        self.stream.write(json.dumps(message, separators=(",", ":")) + "\n")
        self.stream.flush()


def merge_warnings(per_worker: list[list[str]]) -> list[str]:
    """The workers' warnings, each said once: ``workers 0, 1: ...`` for the same one.

    Warnings that differ only in their figures (97 % CPU here, 95 % there)
    are the same warning; the first worker's wording is kept.
    """
    merged: dict[str, tuple[str, list[int]]] = {}
    for index, warnings in enumerate(per_worker):
        for warning in warnings:
            key = re.sub(r"\d[\d,.]*", "#", warning)
            text, workers = merged.setdefault(key, (warning, []))
            if index not in workers:
                workers.append(index)
    out = []
    for text, workers in merged.values():
        who = "worker" if len(workers) == 1 else "workers"
        out.append(f"{who} {', '.join(map(str, workers))}: {text}")
    return out


def _reader(index: int, pipe: IO[str], out: queue.Queue[tuple[int, str | None]]) -> None:
    for line in pipe:
        out.put((index, line))
    out.put((index, None))


def run_procs(
    args: argparse.Namespace,
    worker_argv: list[str],
    *,
    progress: Progress | None = None,
    out: TextIO | None = None,
) -> RunResult:
    """Run ``args.procs`` workers and merge what they measured into one RunResult.

    Raises :class:`~daemonkit.errors.ConfigError` when a worker fails or
    sends nothing usable (its stderr is the user's stderr, so they see why).
    """
    n = int(args.procs)
    if args.bots < n:
        raise ConfigError(f"--procs {n} needs at least {n} bots, not {args.bots}")
    bots = shares(args.bots, n)
    spawn = shares(args.spawn_rate, n) if args.spawn_rate else [None] * n
    rates = shares(args.rate, n) if args.rate else [None] * n
    procs: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    first = 0
    for i in range(n):
        argv = [*worker_argv, "--bots", str(int(bots[i])), "--seed", f"{args.seed}/{i}"]
        argv += ["--first-index", str(first)]
        if spawn[i] is not None:
            argv += ["--spawn-rate", f"{spawn[i]}"]
        if rates[i] is not None:
            argv += ["--rate", f"{rates[i]}"]
        first += int(bots[i])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        procs.append(proc)
        assert proc.stdout is not None
        reader = threading.Thread(target=_reader, args=(i, proc.stdout, lines), daemon=True)
        reader.start()
        readers.append(reader)

    server: ServerMemory | None = None
    if args.server_pid is not None:
        rss = read_rss(args.server_pid)
        if rss is not None:
            server = ServerMemory(args.server_pid, baseline=rss, peak=rss, connected=0)
    stats = Stats()
    pending: list[list[Interval]] = [[] for _ in range(n)]
    cpus: list[list[float | None]] = [[] for _ in range(n)]
    results: list[RunResult | None] = [None] * n
    unfinished = 0
    open_pipes = n
    cpu_series: list[float] = []
    deadline = time.monotonic() + args.duration + args.stop_timeout + args.connect_timeout
    deadline += _WORKER_GRACE
    try:
        while open_pipes:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise ConfigError(f"the {n} worker processes did not finish in time")
            try:
                index, line = lines.get(timeout=min(timeout, 1.0))
            except queue.Empty:
                continue
            if line is None:
                open_pipes -= 1
                continue
            try:
                message = json.loads(line)
            except ValueError:
                print(line.rstrip(), file=sys.stderr)  # a worker's stray output
                continue
            if message.get("type") == "interval":
                pending[index].append(Interval.from_dict(message["interval"]))
                cpus[index].append(message.get("cpu"))
                while all(pending[i] or results[i] is not None for i in range(n)) and any(pending):
                    merged = None
                    cpu = 0.0
                    for i in range(n):
                        if pending[i]:
                            part = pending[i].pop(0)
                            cpu += cpus[i].pop(0) or 0.0
                            if merged is None:
                                merged = part
                            else:
                                merged.merge(part)
                    if merged is None:
                        break
                    sample = merged.sample()
                    stats.series.append(sample)
                    cpu_series.append(cpu)
                    if server is not None:
                        rss = read_rss(server.pid)
                        if rss is not None and merged.active >= server.connected:
                            server.connected, server.peak = merged.active, rss
                    if progress is not None:
                        progress.update(
                            sample,
                            elapsed=min(sample.t, args.duration),
                            duration=args.duration,
                            connected=merged.active,
                            target_bots=args.bots,
                            errors_total=sum(s.errors for s in stats.series),
                            cpu=cpu,
                        )
            elif message.get("type") == "result":
                results[index] = RunResult.from_dict(message["result"])
                unfinished += int(message.get("unfinished", 0))
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(5.0)
        for proc in procs:
            if proc.stdout is not None:
                proc.stdout.close()
    failed = [i for i, proc in enumerate(procs) if proc.returncode != 0 or results[i] is None]
    if failed:
        codes = ", ".join(f"#{i} exit {procs[i].returncode}" for i in failed)
        raise ConfigError(f"bots worker process(es) failed: {codes}")
    done = [r for r in results if r is not None]
    for r in done:
        stats.merge(r.stats)
    warnings = merge_warnings([r.warnings for r in done])
    return RunResult(
        target=done[0].target,
        bot=done[0].bot,
        bots=args.bots,
        duration=args.duration,
        elapsed=max(r.elapsed for r in done),
        stats=stats,
        started=done[0].started,
        model=done[0].model,
        rate=args.rate,
        procs=n,
        peak_connected=sum(r.peak_connected for r in done),
        server=server,
        cpu=cpu_series,
        saturated=any(r.saturated for r in done) or _per_worker_saturated(cpu_series, n),
        warnings=warnings,
        classes=_merged_classes(done),
    )


def _merged_classes(results: list[RunResult]) -> dict[str, int]:
    classes: dict[str, int] = {}
    for r in results:
        for name, n in r.classes.items():
            classes[name] = classes.get(name, 0) + n
    return classes


def _per_worker_saturated(cpu: list[float], n: int) -> bool:
    return len(cpu) >= 2 and sum(cpu) / len(cpu) >= SATURATED_CPU * n
