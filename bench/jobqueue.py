"""The job queue benchmark: examples/jobqueue against beanstalkd, in one run.

What it measures, with one client for both servers (``bench/bstalk_load.c``:
C, epoll, speaking the beanstalkd protocol and checking every reply):

* ``cycle``: 100 connections each looping put -> reserve -> delete, one
  command in flight per connection, on one tube. An op is one command and
  its reply; ops/s, jobs/s (one job = 3 ops) and the latency of an op (p50,
  p99, and p99 of put, reserve and delete apart).
* ``mix``: 50 producers putting and 50 consumers reserving and deleting, on
  one tube; producers pause while 1,000 jobs wait unreserved, so the run is
  a steady state rather than a queue growing for as long as it lasts.
* ``memory``: a fresh server, its RSS, 200,000 jobs of 100 bytes put (ready,
  not reserved), its RSS again; (after - before) / jobs is the memory per
  ready job. The tube's ``current-jobs-ready`` is checked against the count.

The targets (issue 12): the example at least 0.5x beanstalkd's ops/s in each
mode, and its memory per ready job within 2x beanstalkd's.

The servers: ``beanstalkd -l 127.0.0.1 -p PORT`` (the program as installed,
in memory: no ``-b`` binlog) and the example, ``python -m daemonkit
examples/jobqueue/server.py --listen tcp://127.0.0.1:PORT --backend uvloop``
(no write-ahead log: ``JOBQUEUE_WAL`` is removed from its environment); if
the CLI cannot load that file, ``PYTHONPATH=examples python -m daemonkit
jobqueue.server ...``; the report says which ran. ``--backend both`` adds the
example on the stdlib loop. Each server runs on the first core, the load
generator on the second; a fresh server per round and per memory sample;
rounds are interleaved, the order rotated each round, and every ratio is
taken within a round, then the median of the rounds is shown.

Usage::

    python bench/jobqueue.py                 # 3 rounds x 5 s, 200,000 jobs (about 2 minutes)
    python bench/jobqueue.py --quick         # 1 round x 1 s, 20,000 jobs (about 15 s)
    python bench/jobqueue.py --report bench/results/jobqueue-....jsonl   # re-print

Prints progress on stderr and a markdown report on stdout, and writes JSON
lines to bench/results/jobqueue-<timestamp>.jsonl (``--out DIR`` elsewhere).
Exit status: 0 when every row ran without an error, 1 when a row failed or a
reply was wrong (the report says which, loudly), 2 when beanstalkd or gcc is
missing. Needs Linux (epoll, /proc, sched_setaffinity).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import (
    REPO_DIR,
    RESULTS_DIR,
    BenchError,
    CpuPlan,
    Server,
    build_c,
    free_port,
    plan_cpus,
    python_executable,
    rss_kib,
    run_loadgen_args,
)
from http_ws import baseline_load, cpu_model, loadavg

#: Client connections of the cycle and mix loads: the issue's figure.
CONNECTIONS = 100
#: Bytes of every job body (the issue's example size: a small JSON payload).
BODY_SIZE = 100
#: Ready jobs put for the memory figure, full run and --quick.
FILL_JOBS = 200_000
QUICK_FILL_JOBS = 20_000
#: Connections and puts in flight each while filling: enough that the fill
#: takes seconds, not minutes, without one client's buffers showing in RSS.
FILL_CONNECTIONS = 4
FILL_PIPELINE = 64
#: mix: producers pause while this many jobs wait unreserved.
MIX_BACKLOG = 1000
#: The issue's targets: example ops/s over beanstalkd's, memory per job ratio.
OPS_TARGET = 0.5
MEMORY_TARGET = 2.0
#: Seconds to let a server finish its turn before its RSS is read.
SETTLE = 0.5
#: Seconds a fill may take at most (200,000 puts take a few seconds).
FILL_TIMEOUT = 300.0
#: Seconds a load run may take past warm-up + duration (connects, setup, exit).
SLACK = 40.0
#: Seconds to wait for one reply of a server when probing or asking stats-tube.
REPLY_TIMEOUT = 5.0
#: A load generator busier than this share of its run may have been the limit.
SATURATED = 0.9
#: A run where the server or the client waited for its core longer than this
#: share of it was disturbed (flagged in the report; bench/README.md uses 10 % too).
NOISY = 0.10
#: One tube per load, so that what one leaves behind never meets the next.
TUBES = {"cycle": "bench-cycle", "mix": "bench-mix", "memory": "bench-fill"}
MODES = ("cycle", "mix", "memory")
REFERENCE = "beanstalkd"


@dataclass(frozen=True)
class Target:
    """One server: its name, command line (``{port}`` filled in), extra environment."""

    name: str
    argv: tuple[str, ...]
    note: str
    env: dict[str, str] = field(default_factory=dict)

    def server(self, port: int, cpus: frozenset[int] | None) -> Server:
        argv = [a.format(port=port) for a in self.argv]
        return Server(self.name, argv, cpus=cpus, env=dict(self.env) or None)


def beanstalkd_target(path: str) -> Target:
    argv = (path, "-l", "127.0.0.1", "-p", "{port}")
    return Target(REFERENCE, argv, f"`{_shown(argv)}` (in memory, no binlog)")


def _shown(argv: Sequence[str]) -> str:
    """A command line for the report: ``{port}`` as PORT, the interpreter as python."""
    words = ["python" if w == python_executable() else w for w in argv]
    return " ".join(words).replace("{port}", "PORT")


def example_targets(py: str, backend: str) -> list[Target]:
    """The two ways to start the example, the preferred one first."""
    tail = ("--listen", "tcp://127.0.0.1:{port}", "--backend", backend, "--log-level", "warning")
    name = f"jobqueue-{backend}"
    by_file = (py, "-m", "daemonkit", "examples/jobqueue/server.py", *tail)
    by_module = (py, "-m", "daemonkit", "jobqueue.server", *tail)
    path = os.pathsep.join(
        p for p in (str(REPO_DIR / "examples"), os.environ.get("PYTHONPATH")) if p
    )
    return [
        Target(name, by_file, f"`{_shown(by_file)}` (no WAL)"),
        Target(
            name,
            by_module,
            f"`PYTHONPATH=examples {_shown(by_module)}` (no WAL)",
            env={"PYTHONPATH": path},
        ),
    ]


# -- talking to a server -------------------------------------------------------------


def _exchange(port: int, command: bytes, *, body: bool) -> bytes:
    """Send one command; return its reply line, or with ``body`` the ``OK <n>`` data."""
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(command)
        data = b""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            head, sep, rest = data.partition(b"\r\n")
            if sep and not body:
                return head
            if sep and head.startswith(b"OK "):
                size = int(head[3:])
                if len(rest) >= size + 2:
                    return rest[:size]
            elif sep:
                raise BenchError(f"{command.strip()!r} answered {head!r}")
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    raise BenchError(f"no whole answer to {command.strip()!r}: {data[:200]!r}")


def probe(port: int) -> None:
    """Check the server speaks the protocol (``use`` -> ``USING``); raise BenchError if not."""
    reply = _exchange(port, b"use bench-probe\r\n", body=False)
    if reply != b"USING bench-probe":
        raise BenchError(f"'use bench-probe' answered {reply!r}")


def ready_jobs(port: int, tube: str) -> int | None:
    """Return the tube's ``current-jobs-ready`` from ``stats-tube`` (None if not given)."""
    stats = _exchange(port, f"stats-tube {tube}\r\n".encode(), body=True)
    for line in stats.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "current-jobs-ready":
            return int(value)
    return None


def pick_example(forms: list[Target]) -> tuple[Target, list[str]]:
    """Return the first way of starting the example that answers, and why the others did not."""
    why: list[str] = []
    for target in forms:
        port = free_port()
        server = target.server(port, None)
        try:
            server.start(port)
            server.wait_ready()
            probe(port)
            return target, why
        except (BenchError, OSError) as exc:
            why.append(f"{target.note}: {exc}")
        finally:
            server.stop()
    raise BenchError("the example did not start either way:\n" + "\n".join(why))


# -- the measurements ----------------------------------------------------------------


@dataclass
class Context:
    """What every measurement needs: settings, CPUs, the client, the JSON lines."""

    args: argparse.Namespace
    plan: CpuPlan
    client: Path
    out: IO[str]
    samples: list[dict[str, Any]]

    def emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def sample(self, record: dict[str, Any]) -> None:
        """Keep, write and show one measurement (failed or not)."""
        record = {"kind": "sample", **record}
        self.samples.append(record)
        self.emit(record)
        if record.get("error"):
            what = f"FAILED: {record['error']}"
        elif record["mode"] == "memory":
            what = f"{record['bytes_per_job']:,.0f} bytes per ready job"
        else:
            what = f"{record['ops_per_s']:,.0f} ops/s, p99 {record['lat_p99_us'] / 1e3:.2f} ms"
        print(
            f"  round {record['round'] + 1} {record['mode']:<6} {record['server']:<18} {what}",
            file=sys.stderr,
            flush=True,
        )
        if record.get("error"):
            print(
                f"ERROR in {record['server']} {record['mode']}: {record['error']}", file=sys.stderr
            )


def client_args(ctx: Context, port: int, mode: str) -> list[str]:
    args = ctx.args
    common = [f"--port={port}", f"--size={args.size}", f"--tube={TUBES[mode]}"]
    if mode == "memory":
        return [
            *common,
            "--mode=fill",
            f"--connections={FILL_CONNECTIONS}",
            f"--pipeline={FILL_PIPELINE}",
            f"--count={args.fill_jobs}",
            f"--duration={FILL_TIMEOUT}",
        ]
    extra = [f"--count={args.count}"] if args.count else []
    return [
        *common,
        f"--mode={mode}",
        f"--connections={args.connections}",
        f"--backlog={MIX_BACKLOG}",
        f"--duration={args.duration}",
        f"--warmup={args.warmup}",
        *extra,
    ]


def run_client(ctx: Context, server: Server, mode: str) -> tuple[dict[str, Any], float, float]:
    """One client run against ``server``.

    Returns the client's record, the server's CPU seconds during the run and
    the seconds the server waited for its core (run-queue wait: noise).
    """
    timeout = (FILL_TIMEOUT if mode == "memory" else ctx.args.warmup + ctx.args.duration) + SLACK
    cpu0, runq0 = server.cpu_seconds(), server.runq_wait_seconds()
    rec = run_loadgen_args(
        ctx.client, client_args(ctx, server.port, mode), timeout=timeout, cpus=ctx.plan.loadgen
    )
    if not server.alive():
        raise BenchError(f"the server died during the {mode} load:\n{server.stderr_tail()}")
    cpu, runq = server.cpu_seconds() - cpu0, server.runq_wait_seconds() - runq0
    if rec["errors"]:
        raise BenchError(
            f"{rec['errors']} wrong or missing replies in {mode}: {rec.get('stderr', '')}"
        )
    if rec["jobs"] == 0:
        raise BenchError(f"no job went through in {mode}: {rec.get('stderr', '')}")
    return rec, cpu, runq


def throughput(ctx: Context, target: Target, r: int, modes: Sequence[str]) -> None:
    """A fresh server, then each load in ``modes`` against it: one sample per mode."""
    port = free_port()
    server = target.server(port, ctx.plan.server)
    try:
        server.start(port)
        server.wait_ready()
        for mode in modes:
            base = {"mode": mode, "server": target.name, "round": r}
            try:
                rec, cpu, runq = run_client(ctx, server, mode)
            except (BenchError, OSError, ValueError, KeyError) as exc:
                ctx.sample({**base, "error": str(exc)})
                continue
            seconds = rec["seconds"]
            busy = 1.0 - rec["wait_seconds"] / seconds if seconds > 0 else 0.0
            util = rec["cpu_seconds"] / seconds if seconds > 0 else 0.0
            # The share of the run either process spent runnable but off its core.
            whole = seconds + ctx.args.warmup
            noise = max(runq / whole, rec["runq_wait_seconds"] / seconds) if seconds > 0 else 0.0
            ctx.sample(
                {
                    **base,
                    "ops_per_s": rec["ops_per_s"],
                    "jobs_per_s": rec["jobs_per_s"],
                    "lat_p50_us": rec["lat_p50_us"],
                    "lat_p99_us": rec["lat_p99_us"],
                    "lat_max_us": rec["lat_max_us"],
                    "server_cpu_us_per_job": cpu / rec["jobs_total"] * 1e6,
                    "loadgen_busy": busy,
                    "loadgen_util": util,
                    "loadgen_saturated": max(busy, util) >= SATURATED,
                    "noise": noise,
                    "client": rec,
                }
            )
    except (BenchError, OSError) as exc:
        done = {s["mode"] for s in ctx.samples if s["server"] == target.name and s["round"] == r}
        for mode in modes:
            if mode not in done:
                ctx.sample({"mode": mode, "server": target.name, "round": r, "error": str(exc)})
    finally:
        server.stop()


def memory(ctx: Context, target: Target, r: int) -> None:
    """A fresh server, its RSS, a fill of ready jobs, its RSS again: one sample."""
    base = {"mode": "memory", "server": target.name, "round": r}
    port = free_port()
    server = target.server(port, ctx.plan.server)
    try:
        server.start(port)
        server.wait_ready()
        assert server.proc is not None
        time.sleep(SETTLE)
        before = rss_kib(server.proc.pid)
        rec, cpu, _ = run_client(ctx, server, "memory")
        time.sleep(SETTLE)
        after = rss_kib(server.proc.pid)
        ready = ready_jobs(port, TUBES["memory"])
        jobs = int(rec["jobs_total"])
        if ready is not None and ready != jobs:
            raise BenchError(f"{jobs} jobs inserted but stats-tube says {ready} ready")
        ctx.sample(
            {
                **base,
                "jobs": jobs,
                "jobs_ready": ready,
                "size": ctx.args.size,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "bytes_per_job": (after - before) * 1024 / jobs,
                "fill_jobs_per_s": rec["jobs_per_s"],
                "server_cpu_us_per_job": cpu / jobs * 1e6,
                "client": rec,
            }
        )
    except (BenchError, OSError, ValueError, KeyError) as exc:
        ctx.sample({**base, "error": str(exc)})
    finally:
        server.stop()


def rotated(items: Sequence[Target], r: int) -> list[Target]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


# -- the report ----------------------------------------------------------------------


def summarize(samples: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per (mode, server): medians, ranges, ratios to beanstalkd within a round."""
    out: list[dict[str, Any]] = []
    for mode in MODES:
        rows = [s for s in samples if s["mode"] == mode]
        if not rows:
            continue
        key = "bytes_per_job" if mode == "memory" else "ops_per_s"
        ref_rows = [s for s in rows if s["server"] == REFERENCE and not s.get("error")]
        ref = {s["round"]: s[key] for s in ref_rows}
        ref_cpu = statistics.median(s["server_cpu_us_per_job"] for s in ref_rows) if ref_rows else 0
        for name in names:
            mine = [s for s in rows if s["server"] == name and not s.get("error")]
            rec: dict[str, Any] = {
                "kind": "summary",
                "mode": mode,
                "server": name,
                "rounds": len(mine),
                "failed": [s["error"] for s in rows if s["server"] == name and s.get("error")],
            }
            if mine:
                values = [s[key] for s in mine]
                ratios = [s[key] / ref[s["round"]] for s in mine if ref.get(s["round"])]

                def med(k: str, rows: list[dict[str, Any]] = mine) -> float:
                    return float(statistics.median(s[k] for s in rows))

                rec.update(
                    key=key,
                    median=statistics.median(values),
                    min=min(values),
                    max=max(values),
                    ratio=statistics.median(ratios) if ratios else None,
                    ratio_min=min(ratios) if ratios else None,
                    ratio_max=max(ratios) if ratios else None,
                    server_cpu_us_per_job=med("server_cpu_us_per_job"),
                    # Steadier than the ratio of rates when other work shares the cores.
                    cpu_ratio=ref_cpu / med("server_cpu_us_per_job") if ref_cpu else None,
                )
                if mode == "memory":
                    rec.update(
                        rss_before_kib=med("rss_before_kib"),
                        rss_after_kib=med("rss_after_kib"),
                        jobs=mine[0]["jobs"],
                        jobs_ready=mine[0]["jobs_ready"],
                        fill_jobs_per_s=med("fill_jobs_per_s"),
                    )
                else:
                    rec.update(
                        jobs_per_s=med("jobs_per_s"),
                        lat_p50_us=med("lat_p50_us"),
                        lat_p99_us=med("lat_p99_us"),
                        lat_put_p99_us=float(
                            statistics.median(s["client"]["lat_put_p99_us"] for s in mine)
                        ),
                        lat_reserve_p99_us=float(
                            statistics.median(s["client"]["lat_reserve_p99_us"] for s in mine)
                        ),
                        lat_delete_p99_us=float(
                            statistics.median(s["client"]["lat_delete_p99_us"] for s in mine)
                        ),
                        loadgen_busy=med("loadgen_busy"),
                        noise=med("noise"),
                        saturated_rounds=sum(bool(s["loadgen_saturated"]) for s in mine),
                    )
                if name != REFERENCE and rec["ratio"] is not None:
                    if mode == "memory":
                        ok = rec["ratio"] <= MEMORY_TARGET
                        rec["target"] = f"<= {MEMORY_TARGET:g}x"
                    else:
                        ok = rec["ratio"] >= OPS_TARGET
                        rec["target"] = f">= {OPS_TARGET:g}x"
                    rec["verdict"] = "PASS" if ok else "MISS"
            out.append(rec)
    return out


def _ratio(rec: dict[str, Any]) -> str:
    if rec["server"] == REFERENCE:
        return "1.00 (reference)"
    if rec.get("ratio") is None:
        return "-"
    text = f"{rec['ratio']:.2f}x"
    if rec["rounds"] > 1:
        text += f" ({rec['ratio_min']:.2f}-{rec['ratio_max']:.2f})"
    return text


def _cpu_ratio(rec: dict[str, Any]) -> str:
    if rec["server"] == REFERENCE or rec.get("cpu_ratio") is None:
        return ""
    return f"{rec['cpu_ratio']:.2f}x"


def _failed(rec: dict[str, Any]) -> str:
    if not rec["failed"]:
        return "not run"
    return "**FAILED**: " + " ".join(rec["failed"][0].replace("|", "/").split())[:160]


def _verdict(rec: dict[str, Any]) -> str:
    return f"**{rec['verdict']}** ({rec['target']})" if "verdict" in rec else ""


def print_report(
    meta: dict[str, Any], samples: list[dict[str, Any]], end: dict[str, Any], path: Path
) -> list[dict[str, Any]]:
    """Print the markdown report of one run; return its summary records."""
    names = [t["name"] for t in meta["targets"]]
    summaries = summarize(samples, names)
    a = meta["settings"]
    print("## Job queue: examples/jobqueue against beanstalkd\n")
    print(f"Machine: {meta['machine']}, Linux {meta['kernel']}; {meta['cpu_plan']}.")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    print(f"Command: `{meta['command']}`")
    print(
        f"Load: bench/bstalk_load.c; cycle and mix with {a['connections']} connections, "
        f"{a['size']}-byte bodies, one command in flight per connection, {a['rounds']} "
        f"round(s) of {a['duration']:g} s after {a['warmup']:g} s of warm-up"
        + (f", at most {a['count']:,} jobs per run" if a["count"] else "")
        + f"; mix: {a['connections'] // 2} producers, {a['connections'] - a['connections'] // 2}"
        f" consumers, producers paused at {MIX_BACKLOG:,} unreserved jobs; memory: "
        f"{a['fill_jobs']:,} ready jobs put by {FILL_CONNECTIONS} connections, "
        f"{FILL_PIPELINE} in flight each. A fresh server per round and per memory sample; "
        "ratios are taken within a round, then the median (min-max) of the rounds is shown."
    )
    print("\nServers:")
    for t in meta["targets"]:
        print(f"- {t['name']}: {t['note']}")
    for note in meta.get("notes", []):
        print(f"- note: {note}")

    rows = [s for s in summaries if s["mode"] != "memory"]
    if rows:
        print("\n### Throughput: ops/s (one op = one command and its reply)\n")
        print(
            "| mode | server | ops/s median (min-max) | jobs/s | vs beanstalkd | target "
            "| p50 / p99 latency | p99 put / reserve / delete | server CPU per job "
            "| vs beanstalkd, per CPU µs | load gen busy | noise |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rec in rows:
            if not rec["rounds"]:
                print(f"| {rec['mode']} | {rec['server']} | {_failed(rec)} |" + " |" * 9)
                continue
            sat = " (saturated)" if rec["saturated_rounds"] else ""
            print(
                f"| {rec['mode']} | {rec['server']} | {rec['median']:,.0f} "
                f"({rec['min']:,.0f}-{rec['max']:,.0f}) | {rec['jobs_per_s']:,.0f} | "
                f"{_ratio(rec)} | {_verdict(rec)} | {rec['lat_p50_us'] / 1e3:.2f} / "
                f"{rec['lat_p99_us'] / 1e3:.2f} ms | {rec['lat_put_p99_us'] / 1e3:.2f} / "
                f"{rec['lat_reserve_p99_us'] / 1e3:.2f} / {rec['lat_delete_p99_us'] / 1e3:.2f} ms"
                f" | {rec['server_cpu_us_per_job']:.1f} µs | {_cpu_ratio(rec)} | "
                f"{rec['loadgen_busy']:.0%}{sat} "
                f"| {rec['noise']:.0%} |"
            )
    if rows:
        print(
            "\nServer CPU per job: the server process's CPU time (warm-up included) per job "
            "(3 ops); vs beanstalkd per CPU µs: beanstalkd's CPU per job over the server's "
            "(less moved by other work on the machine than ops/s). Load gen busy: the share "
            "of the measured window the client was not waiting in epoll_wait. Noise: the "
            "largest share of the run the server or the client was runnable but not running "
            "(run-queue wait: other tasks on its core, or an idle virtual CPU being woken)."
        )
    rows = [s for s in summaries if s["mode"] == "memory"]
    if rows:
        print(f"\n### Memory per ready job ({a['size']}-byte bodies)\n")
        print(
            "| server | bytes per job median (min-max) | RSS before -> after | vs beanstalkd "
            "| target | jobs ready | fill jobs/s |"
        )
        print("|---|---|---|---|---|---|---|")
        for rec in rows:
            if not rec["rounds"]:
                print(f"| {rec['server']} | {_failed(rec)} |" + " |" * 5)
                continue
            ready = "?" if rec["jobs_ready"] is None else f"{rec['jobs_ready']:,}"
            print(
                f"| {rec['server']} | {rec['median']:,.0f} ({rec['min']:,.0f}-{rec['max']:,.0f})"
                f" | {rec['rss_before_kib'] / 1024:,.1f} -> {rec['rss_after_kib'] / 1024:,.1f} MiB"
                f" | {_ratio(rec)} | {_verdict(rec)} | {ready} of {rec['jobs']:,} "
                f"| {rec['fill_jobs_per_s']:,.0f} |"
            )

    print()
    for rec in summaries:
        if "verdict" in rec:
            what = "memory per ready job" if rec["mode"] == "memory" else f"{rec['mode']} ops/s"
            print(
                f"VERDICT {rec['server']} {what}: {rec['ratio']:.2f}x beanstalkd's "
                f"(target {rec['target']}): {rec['verdict']}"
                + (
                    f"; per server CPU µs: {rec['cpu_ratio']:.2f}x"
                    if rec["mode"] != "memory" and rec.get("cpu_ratio")
                    else ""
                )
            )
    for rec in summaries:
        for error in rec["failed"]:
            print(f"ERROR {rec['server']} {rec['mode']}: {' '.join(error.split())[:300]}")
        if rec.get("noise", 0.0) > NOISY:
            print(
                f"WARNING {rec['server']} {rec['mode']}: noise {rec['noise']:.0%} (median): the "
                "server or the client waited that share of the run for its core; ops/s ratios "
                "swing with it, the per CPU µs ratio much less"
            )
        if rec.get("saturated_rounds"):
            print(
                f"WARNING {rec['server']} {rec['mode']}: the load generator was over "
                f"{SATURATED:.0%} busy in {rec['saturated_rounds']} round(s); it may have set "
                "that figure"
            )
    base = meta["baseline_load"]
    cores = ", ".join(
        f"core {k[4:-5]} {v:.0%} busy / {base[k.replace('busy', 'steal')]:.0%} steal"
        for k, v in base.items()
        if k.endswith("_busy")
    )
    print(
        f"\nMachine load before the run: loadavg {base['loadavg']}; {cores}. "
        f"Load average at the end: {end.get('loadavg', '?')}."
    )
    print(f"\nJSON lines: {path} ({end.get('seconds', 0):.0f} s)")
    return summaries


def report(path: Path) -> int:
    """Re-print the report of an earlier run from its JSON lines."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = next(r for r in records if r["kind"] == "meta")
    samples = [r for r in records if r["kind"] == "sample"]
    end: dict[str, Any] = next((r for r in records if r["kind"] == "end"), {})
    print_report(meta, samples, end, path)
    return 0


# -- main ----------------------------------------------------------------------------


def versions(py: str, beanstalkd: str) -> dict[str, str]:
    """The versions that bear on the figures: beanstalkd, Python and the server's packages."""
    code = (
        "import json, platform\n"
        "from importlib.metadata import version\n"
        "out = {'python': platform.python_version()}\n"
        "for n in ('daemonkit', 'uvloop', 'sortedcontainers'):\n"
        "    try: out[n] = version(n)\n"
        "    except Exception: out[n] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    found: dict[str, str] = {}
    try:
        proc = subprocess.run([beanstalkd, "-v"], capture_output=True, text=True, timeout=10)
        found["beanstalkd"] = (proc.stdout + proc.stderr).replace("beanstalkd", "").strip()
        proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=30)
        found.update(json.loads(proc.stdout))
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        found["error"] = str(exc)
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The job queue example against beanstalkd: put/reserve/delete cycles, "
        "a producer/consumer mix, and memory per ready job."
    )
    parser.add_argument("--quick", action="store_true", help="1 round x 1 s, 20,000 jobs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 5; quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 1; quick 0.25)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="cycle/mix clients")
    parser.add_argument("--size", type=int, default=BODY_SIZE, help="job body bytes")
    parser.add_argument("--fill-jobs", type=int, help="ready jobs for the memory figure")
    parser.add_argument("--count", type=int, default=0, help="stop cycle/mix after N jobs")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: cycle,mix,memory"
    )
    parser.add_argument(
        "--backend",
        choices=("uvloop", "asyncio", "both"),
        default="uvloop",
        help="the example's event loop (default uvloop, the CLI's default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSONL")
    parser.add_argument("--report", type=Path, help="only re-print the report of this JSONL")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.25 if args.quick else 1.0)
    args.fill_jobs = args.fill_jobs or (QUICK_FILL_JOBS if args.quick else FILL_JOBS)
    args.modes = [m for m in args.modes.split(",") if m]
    if any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.count < 0:
        parser.error("--rounds >= 1, --duration > 0, --warmup >= 0, --count >= 0")
    if args.connections < 2 or not 0 <= args.size <= 65535 or args.fill_jobs < 1:
        parser.error("--connections >= 2, 0 <= --size <= 65535, --fill-jobs >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return report(args.report)
    if not sys.platform.startswith("linux"):
        print("needs Linux (epoll, /proc, sched_setaffinity)", file=sys.stderr)
        return 2
    beanstalkd = shutil.which("beanstalkd")
    if beanstalkd is None:
        print("beanstalkd is missing: apt-get install beanstalkd", file=sys.stderr)
        return 2
    try:
        client = build_c("bstalk_load")
    except BenchError as exc:
        print(f"cannot build the load generator: {exc}", file=sys.stderr)
        return 2
    # The example keeps a write-ahead log when this names a directory; beanstalkd
    # runs without its binlog, so the example must too.
    os.environ.pop("JOBQUEUE_WAL", None)

    started = time.time()
    py = python_executable()
    plan = plan_cpus()
    notes: list[str] = []
    targets = [beanstalkd_target(beanstalkd)]
    for backend in ("uvloop", "asyncio") if args.backend == "both" else (args.backend,):
        try:
            target, why = pick_example(example_targets(py, backend))
            targets.append(target)
            notes.extend(f"not used for {target.name}: {w}" for w in why)
        except BenchError as exc:
            # Keep the row: its samples fail with the reason, and the run reports it.
            first = example_targets(py, backend)[0]
            targets.append(first)
            notes.append(str(exc))
    machine = f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}"
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = args.out / f"jobqueue-{stamp}.jsonl"
    meta: dict[str, Any] = {
        "kind": "meta",
        "command": shlex.join([sys.executable, *sys.argv]),
        "quick": args.quick,
        "settings": {
            k: getattr(args, k)
            for k in ("rounds", "duration", "warmup", "connections", "size", "fill_jobs", "count")
        },
        "modes": args.modes,
        "machine": machine,
        "kernel": platform.release(),
        "cpu_plan": plan.note,
        "versions": versions(py, beanstalkd),
        "baseline_load": baseline_load(0.5 if args.quick else 1.0),
        "targets": [{"name": t.name, "argv": list(t.argv), "note": t.note} for t in targets],
        "notes": notes,
    }
    samples: list[dict[str, Any]] = []
    print(f"jobqueue: {machine}; {plan.note}; results -> {path}", file=sys.stderr, flush=True)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with open(path, "w") as out:
        ctx = Context(args, plan, client, out, samples)
        ctx.emit(meta)
        load_modes = [m for m in args.modes if m != "memory"]
        try:
            for r in range(args.rounds):
                if load_modes:
                    for target in rotated(targets, r):
                        throughput(ctx, target, r, load_modes)
                if "memory" in args.modes:
                    for target in rotated(targets, r):
                        memory(ctx, target, r)
        except KeyboardInterrupt:
            print("interrupted: reporting what was measured", file=sys.stderr)
        summaries = summarize(samples, [t.name for t in targets])
        for rec in summaries:
            ctx.emit(rec)
        end = {"kind": "end", "seconds": round(time.time() - started, 1), "loadavg": loadavg()}
        ctx.emit(end)
    print_report(meta, samples, end, path)
    failed = any(s.get("error") for s in samples) or any(not s["rounds"] for s in summaries)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
