"""daemonkit side by side with its peers: every workload, one run, ratios, tables and charts.

The single entry point of the benchmarks (``make bench``, ``make bench-quick``).
It installs what it needs when it is missing (bench/_deps.py), builds the C
programs, then measures every workload of bench/_catalog.py:

* throughput (raw echo 64 B / 1 KiB at pipeline 1 and 16, line echo 64 B at
  pipeline 1 and 16, broadcast fan-out to 1,000 subscribers): each group's
  servers are started once, pinned to the server core, and measured by the C
  load generator (bench/loadgen.c) pinned to the other core, interleaved:
  every round runs every workload of the group against every server, in an
  order rotated each round, so slow drifts of a shared machine hit all alike;
* event-loop lag p99 under the raw 64 B pipeline 16 load (the servers time a
  10 ms timer; bench/servers/_probe.py);
* memory per idle connection (a fresh server per sample) and connection churn
  (fds and RSS back at baseline after N connect/close cycles);
* timers and idle-timeout cost per read (bench/micro.py, in-process).

Every sample goes to ``bench/results/run-<timestamp>.jsonl`` as it is taken
(one JSON object per line, with a meta line first); bench/render.py turns that
file into the tables, the PASS/MISS list of the targets and the charts. A
complete run (no --quick, --only or --servers) renders into docs/benchmarks.md
and docs/_static/bench/ (where it also copies the JSON lines, as
results.jsonl, so that the page can be re-rendered from a clone); any other
run renders into ``bench/results/run-<timestamp>/``. ``--out DIR`` puts the
JSON lines and the rendering in DIR instead (what the test suite does).

The exit status is 0 when the benchmark ran, whatever the figures; 2 when the
load generator does not build.

Usage: python bench/run.py [--quick] [--only WORKLOAD,...] [--rounds N] [--duration S]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from _catalog import (
    ALIASES,
    BY_NAME,
    C_EPOLL,
    C_LIBUV,
    C_NAMES,
    WORKLOAD_NAMES,
    WORKLOADS,
    ServerSpec,
    Workload,
)
from _common import (
    BENCH_DIR,
    BUILD_DIR,
    LOADGEN_SLACK,
    REPO_DIR,
    RESULTS_DIR,
    BenchError,
    CpuPlan,
    Server,
    build_c,
    child_env,
    core_shares,
    core_times,
    free_port,
    open_fds,
    pin,
    plan_cpus,
    python_executable,
    rss_kib,
    run_loadgen,
    run_loadgen_args,
    stop_all,
)
from _deps import ensure_all, missing_modules

#: Source addresses (127.0.0.1 ... 127.0.0.N) of the idle and churn connections.
SOURCES = 8
#: Connections at a time in the churn workload.
CHURN_CONCURRENCY = 32
#: Seconds a server gets to settle before its baseline fds and RSS are read.
SETTLE = 0.3
#: Seconds to wait for a server's fds to come back to baseline after churn.
FD_DEADLINE = 10.0
#: Seconds an idle-mode load generator may take to open its connections.
IDLE_READY_TIMEOUT = 150.0
#: Seconds the micro-benchmark child may run.
MICRO_TIMEOUT = 1200.0
#: Seconds bench/broker_fanout.py may take: npm ci, then per round two servers x (start, warm-up,
#: run, stop); a full run takes about a minute.
BROKER_TIMEOUT = 1200.0
#: Slowest churn rate assumed when bounding a churn run (cycles/s).
CHURN_FLOOR_RATE = 500.0
#: The RESP load generator (Debian's redis-tools package, beside redis-server).
REDIS_BENCHMARK = "redis-benchmark"
#: Requests per test (SET, then GET) of the redis-benchmark run that warms a
#: RESP server up and gives the rate the measured run is sized from: 100 per
#: connection, about 0.25 s per test at the ~40,000 requests/s the Python
#: servers reached at pipeline 1 on the 2-core machine this was written on.
RESP_PROBE_REQUESTS = 10_000
#: Bounds of the measured run's requests per test: at least the probe's, at
#: most 10 s at 2M requests/s, beyond what redis-benchmark's one thread sent
#: here (about 0.5M/s against redis-server at pipeline 16).
RESP_MAX_REQUESTS = 20_000_000
#: A redis-benchmark run may take this many times what the probe's rate
#: predicts (plus LOADGEN_SLACK) before it is killed.
RESP_OVERRUN = 5.0
#: Seconds the probe run may take: 2 x 10,000 requests at 500 requests/s.
RESP_PROBE_TIMEOUT = 40.0


@dataclass
class Settings:
    """The run's knobs, from the command line."""

    quick: bool
    rounds: int
    duration: float
    warmup: float
    workloads: tuple[str, ...]
    servers: frozenset[str] | None
    idle_levels: tuple[int, ...]
    churn_cycles: int
    timers_n: int
    idle_conns: int
    idle_reads: int
    install: bool
    out: Path | None
    note: str
    spin_us: float
    complete: bool = False
    argv: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What every measurement needs: binaries, cores, the result file."""

    st: Settings
    loadgen: Path
    cpus: CpuPlan
    c_server: str | None  # C_LIBUV, C_EPOLL or None
    out: TextIO
    tmp: Path  # scratch files of this run (the servers' core files)
    missing: dict[str, str] = field(default_factory=dict)  # module -> why

    def emit(self, record: dict[str, Any]) -> None:
        """Write one JSON line and flush it (a crashed run keeps what it measured)."""
        self.out.write(json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()


# -- servers --------------------------------------------------------------------


def max_connections() -> int:
    """The daemonkit servers' --max-connections: 90 % of the open-file hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    return max(100, int(hard * 0.9))


def server_argv(spec: ServerSpec, port: int, c_server: str | None) -> list[str]:
    """The command line that serves ``spec`` on 127.0.0.1:``port``."""
    python = python_executable()
    if spec.kind == "c":
        binary = "cecho" if c_server == C_EPOLL else spec.path
        return [str(BUILD_DIR / binary), str(port), *spec.args]
    if spec.kind == "exe":
        return [spec.path, *(a.format(port=port) for a in spec.args)]
    if spec.kind == "script":
        return [python, spec.path, str(port), *spec.args]
    assert spec.backend is not None
    # `python -m daemonkit ...`, through a file that first reports the core it loaded.
    return [
        python,
        str(BENCH_DIR / "servers" / "_dk_run.py"),
        spec.path,
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--backend",
        spec.backend,
        "--log-level",
        spec.log_level,
        "--max-connections",
        str(max_connections()),
    ]


def server_env(ctx: Context, row: str, spec: ServerSpec) -> dict[str, str]:
    """Return the variables to add to the environment of ``spec`` about to start as ``row``.

    Its own (``spec.env``), and for a daemonkit server ``BENCH_CORE_FILE``,
    where it writes the core it loaded (read back by :func:`read_core`; an
    earlier server's file is removed first).
    """
    env = dict(spec.env)
    if spec.kind == "daemonkit":
        path = core_file(ctx, row)
        path.unlink(missing_ok=True)
        env["BENCH_CORE_FILE"] = str(path)
    return env


def core_file(ctx: Context, row: str) -> Path:
    """Where the daemonkit server ``row`` writes its core."""
    return ctx.tmp / f"{row}.core"


def read_core(ctx: Context, row: str, spec: ServerSpec) -> str | None:
    """Return the core a started daemonkit server reported ("compiled", "pure"; "?" if none).

    None for a server that is not daemonkit.
    """
    if spec.kind != "daemonkit":
        return None
    try:
        return core_file(ctx, row).read_text().strip() or "?"
    except OSError:
        return "?"


def resolve(ctx: Context, spec: ServerSpec, wl: Workload) -> tuple[str, str | None]:
    """Return (row name, why it cannot run or None) for ``spec`` under ``wl``."""
    if spec.kind == "exe":
        if shutil.which(spec.path) is None:
            return spec.name, f"{spec.path} not installed"
        return spec.name, None
    if spec.kind == "c":
        if ctx.c_server is None:
            return spec.name, "no C server built"
        if ctx.c_server == C_EPOLL:
            if spec.args:
                return C_LIBUV, "libuv not available (bench/cecho.c has no fan-out mode)"
            return C_EPOLL, None
        return C_LIBUV, None
    needs = list(spec.needs) + ([spec.backend] if spec.backend in ("uvloop", "pyuv") else [])
    for module in needs:
        if module in ctx.missing:
            return spec.name, f"{module} not available"
    return spec.name, None


def selected(ctx: Context, specs: Sequence[ServerSpec], wl: Workload) -> list[ServerSpec]:
    """The servers of ``specs`` that --servers keeps (the reference and the C server always)."""
    only = ctx.st.servers
    if only is None:
        return list(specs)
    keep = only | {wl.reference or "", *C_NAMES}
    return [s for s in specs if s.name in keep]


@contextlib.contextmanager
def started(
    ctx: Context, specs: Sequence[tuple[str, ServerSpec]], env: dict[str, dict[str, str]]
) -> Iterator[tuple[dict[str, Server], dict[str, str]]]:
    """Start servers (name, spec) at once; yield (running by name, failures by name); stop all."""
    servers: dict[str, Server] = {}
    failures: dict[str, str] = {}
    try:
        for name, spec in specs:
            port = free_port()
            server = Server(name, server_argv(spec, port, ctx.c_server), ctx.cpus.server)
            server.env = server_env(ctx, name, spec) | env.get(name, {})
            try:
                server.start(port)
            except OSError as exc:
                failures[name] = f"failed to start: {exc}"
                continue
            servers[name] = server
        spec_of = dict(specs)
        for name, server in list(servers.items()):
            try:
                server.wait_ready()
            except BenchError as exc:
                failures[name] = f"failed to start: {exc}"
                server.stop(timeout=0)
                del servers[name]
                continue
            server.core = read_core(ctx, name, spec_of[name])
        yield servers, failures
    finally:
        stop_all(list(servers.values()))


# -- throughput ------------------------------------------------------------------


def measured(ctx: Context, server: Server, drive: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run the load ``drive()`` against ``server``; return its record plus the server's CPU.

    ``drive`` returns a record with ``msgs`` (measured), ``msgs_total``
    (warm-up included: what the server's CPU time covers), ``seconds`` and
    ``errors``. Raises BenchError if the server died, the load failed or
    nothing came back.
    """
    cpus = ctx.cpus
    if not server.alive():
        raise BenchError(f"server died:\n{server.stderr_tail()}")
    cores0, t0 = core_times(), time.monotonic()
    (user0, sys0), runq0 = server.cpu_times(), server.runq_wait_seconds()
    record = drive()
    try:
        (user1, sys1), runq1 = server.cpu_times(), server.runq_wait_seconds()
    except OSError:
        raise BenchError(f"server died during the run:\n{server.stderr_tail()}") from None
    t1, cores1 = time.monotonic(), core_times()
    if record["msgs"] == 0:
        raise BenchError(
            f"nothing came back ({record['errors']} connection errors; load generator:"
            f" {record.get('stderr', '-')}); server stderr:\n{server.stderr_tail()}"
        )
    wall = t1 - t0
    cpu = (user1 + sys1) - (user0 + sys0)
    record["t_end"] = t1
    record["server_cpu_seconds"] = cpu
    record["server_cpu_share"] = cpu / wall
    record["server_us_per_msg"] = cpu / record["msgs_total"] * 1e6
    record["server_user_us_per_msg"] = (user1 - user0) / record["msgs_total"] * 1e6
    record["server_runq_share"] = (runq1 - runq0) / wall
    noise = [record["server_runq_share"]]
    if "loadgen_runq_share" in record:
        noise.append(record["loadgen_runq_share"])
    for role, core_set in (("server", cpus.server), ("loadgen", cpus.loadgen)):
        shares = core_shares(cores0, cores1, core_set)
        if shares is not None:
            record[f"{role}_core_busy"], record[f"{role}_core_steal"] = shares
            noise.append(shares[1])
    if cpus.server is not None:
        record["noise"] = max(noise)
    if server.core is not None:
        record["core"] = server.core
    return record


def measure_load(
    ctx: Context, server: Server, wl: Workload, mode: str, size: int, pipeline: int
) -> dict[str, Any]:
    """Run one bench/loadgen.c load against ``server``; return the sample (see measured())."""
    st = ctx.st
    extra = [f"--mode={mode}"]
    if st.spin_us:
        extra.append(f"--spin-us={st.spin_us}")

    def drive() -> dict[str, Any]:
        record = run_loadgen(
            ctx.loadgen,
            port=server.port,
            connections=wl.connections,
            size=size,
            pipeline=pipeline,
            duration=st.duration,
            warmup=st.warmup,
            cpus=ctx.cpus.loadgen,
            extra=extra,
        )
        seconds = record["seconds"]
        if record["msgs"]:
            record["loadgen_cpu_share"] = record["cpu_seconds"] / seconds
            record["loadgen_busy"] = 1.0 - record["wait_seconds"] / seconds
            record["loadgen_runq_share"] = record["runq_wait_seconds"] / seconds
        return record

    return measured(ctx, server, drive)


def redis_benchmark(
    ctx: Context, port: int, wl: Workload, requests: int, timeout: float
) -> dict[str, Any]:
    """Run ``redis-benchmark -t get,set`` with ``requests`` per test; return its figures.

    The record has ``msgs`` (= ``msgs_total``: the requests of both tests),
    ``seconds`` (the time both tests took by redis-benchmark's own rates),
    ``msgs_per_s``, each test's rate, latency percentiles (p50: the mean of
    the two tests', p99: the larger) and the generator's CPU time. Raises
    BenchError if it fails, prints no result or runs past ``timeout``.
    """
    cmd = [
        REDIS_BENCHMARK,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-c",
        str(wl.connections),
        "-n",
        str(requests),
        "-P",
        str(wl.pipeline),
        "-t",
        "get,set",
        "--csv",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with contextlib.suppress(OSError):
        pin(proc.pid, ctx.cpus.loadgen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"redis-benchmark overran {timeout:.0f} s") from None
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"redis-benchmark exited {proc.returncode}: {err.strip()[-500:]}")
    tests = {row[0]: row for row in csv.reader(out.splitlines()) if row and row[0] != "test"}
    if set(tests) != {"SET", "GET"}:
        raise BenchError(f"redis-benchmark printed no SET and GET rates: {out!r} {err!r}")
    rates = {name: float(row[1]) for name, row in tests.items()}
    if min(rates.values()) <= 0:
        raise BenchError(f"redis-benchmark measured a zero rate: {out!r}")
    seconds = sum(requests / r for r in rates.values())
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    record: dict[str, Any] = {
        "msgs": 2 * requests,
        "msgs_total": 2 * requests,
        "requests_per_test": requests,
        "seconds": seconds,
        "wall_seconds": wall,
        "msgs_per_s": 2 * requests / seconds,
        "set_per_s": rates["SET"],
        "get_per_s": rates["GET"],
        "lat_p50_us": sum(float(row[4]) for row in tests.values()) / 2 * 1e3,
        "lat_p99_us": max(float(row[6]) for row in tests.values()) * 1e3,
        "cpu_seconds": cpu,
        "loadgen_cpu_share": cpu / wall if wall > 0 else 0.0,
        "errors": 0,
    }
    if err.strip():
        record["stderr"] = err.strip()[-500:]
    return record


def measure_resp(ctx: Context, server: Server, wl: Workload) -> dict[str, Any]:
    """Warm ``server`` up with a redis-benchmark probe, then measure a run sized from its rate.

    The measured run takes about ``--duration`` seconds (``-n`` is the
    probe's rate times the duration, within RESP_PROBE_REQUESTS and
    RESP_MAX_REQUESTS); see redis_benchmark() for the record.
    """
    if not server.alive():
        raise BenchError(f"server died:\n{server.stderr_tail()}")
    probe = redis_benchmark(ctx, server.port, wl, RESP_PROBE_REQUESTS, RESP_PROBE_TIMEOUT)
    rate = probe["msgs_per_s"]
    requests = int(min(RESP_MAX_REQUESTS, max(RESP_PROBE_REQUESTS, rate * ctx.st.duration / 2)))
    timeout = 2 * requests / rate * RESP_OVERRUN + LOADGEN_SLACK
    record = measured(ctx, server, lambda: redis_benchmark(ctx, server.port, wl, requests, timeout))
    record["probe_per_s"] = rate
    return record


def lag_stats(path: Path, start: float, end: float) -> dict[str, Any] | None:
    """Return p50/p99/max lag (ms) of the samples in [start, end] of a lag file, or None."""
    lags = []
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                t, late = float(parts[0]), float(parts[1])
                if start <= t <= end:
                    lags.append(late * 1e3)
    if not lags:
        return None
    lags.sort()

    def pct(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    return {
        "lag_p50_ms": pct(0.5),
        "lag_p99_ms": pct(0.99),
        "lag_max_ms": lags[-1],
        "lag_samples": len(lags),
    }


def run_throughput(ctx: Context, group: str, names: Sequence[str]) -> None:
    """Measure the selected workloads of one server group, interleaved; emit every sample."""
    st = ctx.st
    wls = [BY_NAME[n] for n in names if BY_NAME[n].group == group and BY_NAME[n].kind != "lag"]
    lag_wanted = "lag" in names and group == "raw"
    lag_wl = BY_NAME["lag"]
    runs: list[tuple[Workload, str]] = [
        (w, "fanout" if w.kind == "fanout" else "echo") for w in wls
    ]
    if lag_wanted and not any(w.size == lag_wl.size and w.pipeline == lag_wl.pipeline for w in wls):
        runs.append((lag_wl, "echo"))
    if not runs:
        return
    # The group's servers: the union of its workloads' lists (a workload may
    # add a few, such as the pure-core variants of raw-64-*); each workload
    # runs its own.
    specs: dict[str, ServerSpec] = {}
    members = {wl.name: {s.name for s in wl.servers} for wl, _ in runs}
    for wl, _ in runs:
        for spec in selected(ctx, wl.servers, wl):
            specs.setdefault(spec.name, spec)
    tool_missing = None
    if group == "resp" and shutil.which(REDIS_BENCHMARK) is None:
        tool_missing = f"{REDIS_BENCHMARK} not installed (Debian's redis-tools)"
    runnable: list[tuple[str, ServerSpec]] = []
    spec_of: dict[str, ServerSpec] = {}
    for spec in specs.values():
        row, why = resolve(ctx, spec, runs[0][0])
        why = tool_missing or why
        if why is not None:
            for wl, _ in runs:
                if spec.name in members[wl.name]:
                    ctx.emit({"kind": "skip", "workload": wl.name, "server": row, "reason": why})
            if lag_wanted and spec.lag:
                ctx.emit({"kind": "skip", "workload": "lag", "server": row, "reason": why})
            continue
        runnable.append((row, spec))
        spec_of[row] = spec
    with tempfile.TemporaryDirectory(prefix="dk-bench-lag-") as tmp:
        lag_files = {
            row: Path(tmp) / f"{row}.lag" for row, spec in runnable if lag_wanted and spec.lag
        }
        env = {row: {"BENCH_LAG_FILE": str(p)} for row, p in lag_files.items()}
        lag_runs: list[tuple[str, int, dict[str, Any]]] = []
        with started(ctx, runnable, env) as (servers, failures):
            for row, why in failures.items():
                for wl, _ in runs:
                    if spec_of[row].name in members[wl.name]:
                        ctx.emit(
                            {"kind": "error", "workload": wl.name, "server": row, "error": why}
                        )
            dead: dict[str, str] = {}
            told: set[tuple[str, str]] = set()
            order = list(servers)
            for rnd in range(st.rounds):
                for wl, mode in runs:
                    k = rnd % len(order) if order else 0
                    for row in order[k:] + order[:k]:
                        if spec_of[row].name not in members[wl.name]:
                            continue
                        if row in dead:
                            if (wl.name, row) not in told:
                                told.add((wl.name, row))
                                ctx.emit(
                                    {
                                        "kind": "error",
                                        "workload": wl.name,
                                        "server": row,
                                        "error": f"failed in an earlier run: {dead[row]}",
                                    }
                                )
                            continue
                        try:
                            if wl.kind == "resp":
                                sample = measure_resp(ctx, servers[row], wl)
                            else:
                                sample = measure_load(
                                    ctx, servers[row], wl, mode, wl.size, wl.pipeline
                                )
                        except (BenchError, OSError) as exc:
                            dead[row] = str(exc)
                            told.add((wl.name, row))
                            ctx.emit(
                                {
                                    "kind": "error",
                                    "workload": wl.name,
                                    "server": row,
                                    "error": str(exc),
                                    "round": rnd,
                                }
                            )
                            continue
                        # A load run only for the lag table is not a throughput row.
                        kind = "load" if wl.kind == "lag" else "sample"
                        sample.update(kind=kind, workload=wl.name, server=row, round=rnd)
                        ctx.emit(sample)
                        if row in lag_files and (wl.size, wl.pipeline) == (64, 16):
                            lag_runs.append((row, rnd, sample))
                        print(
                            f"  {wl.name:<13} round {rnd + 1}/{st.rounds} {row:<30}"
                            f" {sample['msgs_per_s']:>12,.0f} {wl.unit}"
                            + (f" ({sample['core']} core)" if "core" in sample else ""),
                            flush=True,
                        )
        # The servers have stopped (and flushed their lag files).
        for row, rnd, sample in lag_runs:
            end = sample["t_end"]
            stats = lag_stats(lag_files[row], end - sample["seconds"], end)
            if stats is None:
                ctx.emit(
                    {
                        "kind": "error",
                        "workload": "lag",
                        "server": row,
                        "round": rnd,
                        "error": "no lag samples in the measured window",
                    }
                )
                continue
            stats.update(
                kind="sample",
                workload="lag",
                server=row,
                round=rnd,
                msgs_per_s=sample["msgs_per_s"],
                loadgen_busy=sample["loadgen_busy"],
                noise=sample.get("noise"),
                server_cpu_share=sample["server_cpu_share"],
            )
            if "core" in sample:
                stats["core"] = sample["core"]
            ctx.emit(stats)


# -- memory and churn --------------------------------------------------------------


def read_ready_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Return the JSON 'ready' line an idle-mode load generator prints, within ``timeout`` s."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"idle connections not ready after {timeout:.0f} s")
            if sel.select(timeout=min(left, 1.0)):
                line = proc.stdout.readline()
                if not line:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise BenchError(f"load generator ended before ready: {err.strip()}")
                record: dict[str, Any] = json.loads(line)
                return record


def wait_fds(pid: int, target: int, timeout: float) -> int:
    """Poll the fd count of ``pid`` until it is <= ``target`` or ``timeout`` passes; return it."""
    deadline = time.monotonic() + timeout
    while True:
        count = open_fds(pid)
        if count <= target or time.monotonic() >= deadline:
            return count
        time.sleep(0.05)


def fresh_server(ctx: Context, row: str, spec: ServerSpec) -> Server:
    """Start one server for one sample and wait until it accepts; the caller stops it."""
    port = free_port()
    server = Server(row, server_argv(spec, port, ctx.c_server), ctx.cpus.server)
    server.env = server_env(ctx, row, spec)
    server.start(port)
    try:
        server.wait_ready()
    except BenchError:
        server.stop(timeout=0)
        raise
    server.core = read_core(ctx, row, spec)
    time.sleep(SETTLE)
    return server


def memory_sample(ctx: Context, row: str, spec: ServerSpec, level: int) -> dict[str, Any]:
    """Hold ``level`` idle connections to a fresh server; return its RSS per connection."""
    server = fresh_server(ctx, row, spec)
    proc: subprocess.Popen[str] | None = None
    try:
        assert server.proc is not None
        pid = server.proc.pid
        rss0, fds0, cpu0 = rss_kib(pid), open_fds(pid), server.cpu_seconds()
        proc = subprocess.Popen(
            [
                str(ctx.loadgen),
                "--mode=idle",
                f"--port={server.port}",
                f"--connections={level}",
                f"--sources={SOURCES}",
                "--hold=600",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with contextlib.suppress(OSError):
            pin(proc.pid, ctx.cpus.loadgen)
        ready = read_ready_line(proc, IDLE_READY_TIMEOUT)
        time.sleep(SETTLE)
        if not server.alive():
            raise BenchError(f"server died:\n{server.stderr_tail()}")
        rss1, fds1 = rss_kib(pid), open_fds(pid)
        out, err = proc.communicate(input="", timeout=60)  # end of stdin: it closes all
        final = json.loads(out.strip().splitlines()[-1])
        idle = int(ready["idle"])
        if idle == 0:
            raise BenchError(f"no idle connection was made: {err.strip()}")
        return {
            "kind": "sample",
            "workload": "idle-memory",
            "server": row,
            "level": level,
            "idle": idle,
            "failed": int(ready["failed"]),
            "connect_seconds": ready["seconds"],
            "rss_base_kib": rss0,
            "rss_kib": rss1,
            "fds_base": fds0,
            "fds_loaded": fds1,
            "kib_per_conn": (rss1 - rss0) / idle,
            "server_cpu_seconds": server.cpu_seconds() - cpu0,
            "errors": final.get("errors", 0),
            "stderr": err.strip() or None,
            **({"core": server.core} if server.core is not None else {}),
        }
    finally:
        try:
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        with contextlib.suppress(OSError, ValueError):
                            pipe.close()
        finally:
            server.stop()


def churn_run(ctx: Context, port: int, cycles: int) -> dict[str, Any]:
    """One churn load of ``cycles`` connect/echo/close cycles."""
    bound = cycles / CHURN_FLOOR_RATE + 10.0
    return run_loadgen_args(
        ctx.loadgen,
        [
            "--mode=churn",
            f"--port={port}",
            f"--connections={CHURN_CONCURRENCY}",
            f"--cycles={cycles}",
            f"--sources={SOURCES}",
            f"--duration={bound}",
        ],
        timeout=bound + 30.0,
        cpus=ctx.cpus.loadgen,
    )


def churn_sample(ctx: Context, row: str, spec: ServerSpec, cycles: int) -> dict[str, Any]:
    """Churn a fresh server; return cycles/s, and fds and RSS before, after 10 % and at the end."""
    server = fresh_server(ctx, row, spec)
    try:
        assert server.proc is not None
        pid = server.proc.pid
        rss0, fds0, cpu0 = rss_kib(pid), open_fds(pid), server.cpu_seconds()
        first = max(1, cycles // 10)
        rec1 = churn_run(ctx, server.port, first)
        fds1 = wait_fds(pid, fds0, FD_DEADLINE)
        rss1 = rss_kib(pid)
        rec2 = churn_run(ctx, server.port, cycles - first) if cycles > first else rec1
        fds2 = wait_fds(pid, fds0, FD_DEADLINE)
        rss2 = rss_kib(pid)
        done = rec1["cycles"] + (rec2["cycles"] if rec2 is not rec1 else 0)
        seconds = rec1["seconds"] + (rec2["seconds"] if rec2 is not rec1 else 0.0)
        lg_cpu = rec1["cpu_seconds"] + (rec2["cpu_seconds"] if rec2 is not rec1 else 0.0)
        errors = rec1["errors"] + (rec2["errors"] if rec2 is not rec1 else 0)
        if done == 0:
            raise BenchError(f"no cycle completed: {rec1.get('stderr', '')}")
        return {
            "kind": "sample",
            "workload": "churn",
            "server": row,
            "cycles": done,
            "cycles_target": cycles,
            "seconds": seconds,
            "cycles_per_s": done / seconds if seconds > 0 else 0.0,
            "loadgen_cpu_share": lg_cpu / seconds if seconds > 0 else 0.0,
            "server_cpu_seconds": server.cpu_seconds() - cpu0,
            "server_us_per_cycle": (server.cpu_seconds() - cpu0) / done * 1e6,
            "fds_base": fds0,
            "fds_first": fds1,
            "fds_end": fds2,
            "rss_base_kib": rss0,
            "rss_first_kib": rss1,
            "rss_end_kib": rss2,
            "rss_growth_kib": rss2 - rss1,
            "back_at_baseline": fds2 <= fds0,
            "errors": errors,
            "stderr": rec1.get("stderr") or rec2.get("stderr"),
            **({"core": server.core} if server.core is not None else {}),
        }
    finally:
        server.stop()


def run_fresh(ctx: Context, wl: Workload) -> None:
    """Memory or churn: a fresh server per sample, rounds interleaved like the rest."""
    st = ctx.st
    runnable: list[tuple[str, ServerSpec]] = []
    for spec in selected(ctx, wl.servers, wl):
        row, why = resolve(ctx, spec, wl)
        if why is not None:
            ctx.emit({"kind": "skip", "workload": wl.name, "server": row, "reason": why})
        else:
            runnable.append((row, spec))
    levels = st.idle_levels if wl.kind == "memory" else (st.churn_cycles,)
    dead: set[str] = set()
    for rnd in range(st.rounds):
        for level in levels:
            k = rnd % len(runnable) if runnable else 0
            for row, spec in runnable[k:] + runnable[:k]:
                if row in dead:
                    continue
                try:
                    if wl.kind == "memory":
                        sample = memory_sample(ctx, row, spec, level)
                        shown = f"{sample['kib_per_conn']:8.2f} KiB/conn at {level:,}"
                        if "core" in sample:
                            shown += f" ({sample['core']} core)"
                    else:
                        sample = churn_sample(ctx, row, spec, level)
                        shown = (
                            f"{sample['cycles_per_s']:8,.0f} cycles/s; fds"
                            f" {sample['fds_base']}->{sample['fds_end']}, RSS"
                            f" {sample['rss_growth_kib']:+,} KiB after the first 10 %"
                        )
                except (BenchError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                    dead.add(row)
                    ctx.emit(
                        {
                            "kind": "error",
                            "workload": wl.name,
                            "server": row,
                            "round": rnd,
                            "error": str(exc),
                        }
                    )
                    continue
                sample["round"] = rnd
                ctx.emit(sample)
                print(f"  {wl.name:<13} round {rnd + 1}/{st.rounds} {row:<30} {shown}", flush=True)


# -- micro-benchmarks ----------------------------------------------------------------


def run_script(
    ctx: Context,
    wl: Workload,
    cmd: list[str],
    timeout: float,
    cpus: frozenset[int] | None = None,
    *,
    show_stderr: bool = False,
) -> str:
    """Run a bench script that prints JSON lines; return its stdout ("" if it timed out).

    It runs pinned to ``cpus`` when given (else where it pins its own
    children). A timeout or a failing exit is emitted as an error record;
    ``show_stderr`` prints its stderr (its progress lines) once it is done.
    """
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_DIR,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if cpus is not None:
            with contextlib.suppress(OSError):
                pin(proc.pid, cpus)
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        ctx.emit({"kind": "error", "workload": wl.name, "server": "-", "error": "timed out"})
        return ""
    if show_stderr:
        for line in err.splitlines():
            print(f"  {line.strip()}", flush=True)
    if proc.returncode != 0:
        script = Path(cmd[1]).relative_to(REPO_DIR)
        ctx.emit(
            {
                "kind": "error",
                "workload": wl.name,
                "server": "-",
                "error": f"{script} exited {proc.returncode}: {err.strip()[-1500:]}",
            }
        )
    return out


def run_micro(ctx: Context, wl: Workload) -> None:
    """Run bench/micro.py pinned to the server core; emit its lines as samples."""
    st = ctx.st
    args = (
        ["timers", f"--n={st.timers_n}"]
        if wl.kind == "timers"
        else ["idle-timeout", f"--n={st.idle_conns}", f"--reads={st.idle_reads}"]
    )
    cmd = [python_executable(), str(BENCH_DIR / "micro.py"), *args, f"--rounds={st.rounds}"]
    out = run_script(ctx, wl, cmd, MICRO_TIMEOUT, ctx.cpus.server)
    for line in out.splitlines():
        rec = json.loads(line)
        rec.update(kind="sample", workload=wl.name, server=rec.pop("variant"))
        ctx.emit(rec)
        value = rec.get(wl.metric)
        print(
            f"  {wl.name:<13} round {rec['round'] + 1}/{st.rounds} {rec['server']:<44}"
            f" {value:10.1f} {wl.unit}",
            flush=True,
        )


# -- cross-instance fan-out through Redis ------------------------------------------------


def run_broker(ctx: Context, wl: Workload) -> None:
    """Run bench/broker_fanout.py (it starts Redis and both servers' instances); emit its samples.

    A quick run uses 2 x 100 subscribers instead of 2 x 500; the script
    installs the pinned Socket.IO packages unless --no-install.
    """
    st = ctx.st
    cmd = [python_executable(), str(BENCH_DIR / "broker_fanout.py"), "--jsonl"]
    cmd += [f"--rounds={st.rounds}", f"--duration={st.duration}", f"--warmup={st.warmup}"]
    cmd += [f"--subscribers={100 if st.quick else wl.connections // 2}"]
    cmd += [f"--pipeline={wl.pipeline}", f"--size={wl.size}"]
    if not st.install:
        cmd.append("--no-install")
    out = run_script(ctx, wl, cmd, BROKER_TIMEOUT, show_stderr=True)
    for line in out.splitlines():
        ctx.emit(json.loads(line))


# -- the run ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The machine, for the report: cores, CPU model, kernel, load, versions."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for dist in ("daemonkit", "uvloop", "twisted", "gevent", "tornado", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        libuv = subprocess.run(
            ["pkg-config", "--modversion", "libuv"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        libuv = ""
    versions["libuv"] = libuv or None
    versions["redis"] = None
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        banner = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        versions["redis"] = next(
            (w[2:] for w in banner.split() if w.startswith("v=")), None
        )  # "Redis server v=7.0.15 sha=..."
    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "versions": versions,
    }


def expand_only(text: str | None, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """Turn --only's comma-separated names and aliases into workload names, in catalog order."""
    if not text:
        return WORKLOAD_NAMES
    wanted: set[str] = set()
    for name in (n.strip() for n in text.split(",") if n.strip()):
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in BY_NAME:
            wanted.add(name)
        else:
            parser.error(
                f"unknown workload {name!r}; known: {', '.join(WORKLOAD_NAMES)}"
                f" (and {', '.join(ALIASES)})"
            )
    return tuple(n for n in WORKLOAD_NAMES if n in wanted)


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Parse the command line (argparse exits on bad input)."""
    parser = argparse.ArgumentParser(
        description="daemonkit side by side with its peers: every workload, ratios, charts."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: ~2 minutes, every workload"
    )
    parser.add_argument(
        "--only", help="comma-separated workloads (or raw, lines, throughput, micro)"
    )
    parser.add_argument("--servers", help="comma-separated servers (references always run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per load (default 4)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds per load (default 1)")
    parser.add_argument("--idle-levels", help="idle connections per memory sample (10000,15000)")
    parser.add_argument("--churn-cycles", type=int, help="connect/close cycles (default 100000)")
    parser.add_argument("--timers", type=int, help="timers per schedule+cancel batch (1000000)")
    parser.add_argument(
        "--spin-us", type=float, default=0.0, help="load generator poll (see README)"
    )
    parser.add_argument("--out", type=Path, help="write results and rendering here (not docs/)")
    parser.add_argument(
        "--no-install", action="store_true", help="install nothing; skip what is missing"
    )
    parser.add_argument(
        "--note", default="", help="a sentence for the report (e.g. 'busy machine')"
    )
    parser.add_argument("--list", action="store_true", help="list workloads and servers, then exit")
    args = parser.parse_args(argv)
    if args.list:
        for wl in WORKLOADS:
            print(f"{wl.name:<13} {wl.title}")
            for spec in wl.servers:
                print(f"    {spec.name:<30} {spec.about}")
        sys.exit(0)
    q = args.quick
    levels: tuple[int, ...] = (2000,) if q else (10_000, 15_000)
    if args.idle_levels:
        levels = tuple(int(x) for x in args.idle_levels.split(","))
    st = Settings(
        quick=q,
        rounds=args.rounds or (1 if q else 3),
        duration=args.duration or (0.5 if q else 4.0),
        warmup=args.warmup if args.warmup is not None else (0.25 if q else 1.0),
        workloads=expand_only(args.only, parser),
        servers=frozenset(s.strip() for s in args.servers.split(",")) if args.servers else None,
        idle_levels=levels,
        churn_cycles=args.churn_cycles or (5_000 if q else 100_000),
        timers_n=args.timers or (200_000 if q else 1_000_000),
        idle_conns=20_000 if q else 100_000,
        idle_reads=200_000 if q else 1_000_000,
        install=not args.no_install,
        out=args.out,
        note=args.note,
        spin_us=args.spin_us,
    )
    if st.rounds < 1 or st.duration <= 0 or st.warmup < 0 or st.churn_cycles < 10:
        parser.error("need --rounds >= 1, --duration > 0, --warmup >= 0, --churn-cycles >= 10")
    if any(n < 1 or n > 18_000 for n in st.idle_levels):
        parser.error("--idle-levels must be between 1 and 18000 (the open-file limit is 20,000)")
    st.complete = not q and args.only is None and args.servers is None
    st.argv = list(sys.argv[1:] if argv is None else argv)
    return st


def build(ctx_notes: list[str]) -> tuple[Path, str | None]:
    """Build the load generator (required) and a C server: libuv, else plain epoll."""
    loadgen = build_c("loadgen")
    try:
        build_c("cecho_uv", ["-luv"])
        return loadgen, C_LIBUV
    except BenchError as exc:
        ctx_notes.append(f"libuv C server not built, using bench/cecho.c (epoll): {exc}")
    try:
        build_c("cecho")
        return loadgen, C_EPOLL
    except BenchError as exc:
        ctx_notes.append(f"no C server: {exc}")
        return loadgen, None


def raise_own_nofile() -> None:
    """Take the whole open-file limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    """Install, build, measure every selected workload, save the JSON lines, render."""
    st = parse_args(argv)
    raise_own_nofile()
    t_start = time.monotonic()
    notes = ensure_all(st.install)
    try:
        loadgen, c_server = build(notes)
    except BenchError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 2
    cpus = plan_cpus()
    pin(0, cpus.loadgen)  # this process only waits during a load: keep it off the server core
    started_at = datetime.datetime.now()
    stamp = f"run-{started_at:%Y%m%d-%H%M%S}"
    results_dir = st.out if st.out is not None else RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}.jsonl"
    modules = ("uvloop", "pyuv", "twisted", "gevent", "tornado")
    missing = {m: "not importable" for m in missing_modules(modules)}
    for note in notes:
        print(f"run.py: {note}")
    print(
        f"run.py: {cpus.note}; C server: {c_server or 'none'};"
        f" missing: {', '.join(missing) or 'nothing'}; results: {path}"
    )
    with open(path, "w") as out, tempfile.TemporaryDirectory(prefix="dk-bench-") as tmp:
        ctx = Context(st, loadgen, cpus, c_server, out, Path(tmp), missing)
        meta = {
            "kind": "meta",
            "started": started_at.isoformat(timespec="seconds"),
            "command": "python bench/run.py" + (" " + shlex.join(st.argv) if st.argv else ""),
            "quick": st.quick,
            "complete": st.complete,
            "rounds": st.rounds,
            "duration": st.duration,
            "warmup": st.warmup,
            "workloads": list(st.workloads),
            "idle_levels": list(st.idle_levels),
            "churn_cycles": st.churn_cycles,
            "timers_n": st.timers_n,
            "idle_conns": st.idle_conns,
            "idle_reads": st.idle_reads,
            "cpus": cpus.note,
            "c_server": c_server,
            "missing": sorted(missing),
            "install_notes": notes,
            "note": st.note,
            "machine": machine_info(),
        }
        ctx.emit(meta)
        names = st.workloads
        for group in ("raw", "lines", "fanout", "resp"):
            if any(BY_NAME[n].group == group for n in names):
                print(f"== {group} ==", flush=True)
                run_throughput(ctx, group, names)
        for name in names:
            wl = BY_NAME[name]
            if wl.kind in ("memory", "churn"):
                print(f"== {name} ==", flush=True)
                run_fresh(ctx, wl)
            elif wl.kind in ("timers", "idle-timeout"):
                print(f"== {name} ==", flush=True)
                run_micro(ctx, wl)
            elif wl.kind == "broker-fanout":
                print(f"== {name} ==", flush=True)
                run_broker(ctx, wl)
            # kind "http" (to come): start uvicorn/aiohttp/daemonkit servers with
            # started(), drive them with wrk pinned to cpus.loadgen, emit samples
            # with msgs_per_s = requests/s; render.py shows them as a throughput table.
        ctx.emit(
            {
                "kind": "end",
                "elapsed_s": round(time.monotonic() - t_start, 1),
                "loadavg_end": os.getloadavg(),
            }
        )
    import render

    if st.out is not None:
        docs = st.out
    elif st.complete:
        docs = REPO_DIR / "docs"
    else:
        docs = results_dir / stamp
    render.render(path, docs, echo=True)
    if docs == REPO_DIR / "docs":
        # Commit the raw lines with the page, so that a clone can re-render it.
        shutil.copyfile(path, docs / render.CHART_DIR / "results.jsonl")
    print(f"\nresults: {path}\nreport:  {docs / 'benchmarks.md'}")
    print(f"elapsed: {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
