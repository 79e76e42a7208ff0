"""Bots against a C echo server: throughput beside a C load generator, and 10,000 held bots.

The bots' performance requirement, measured against ``bench/cecho.c`` (a C
epoll echo server pinned to the server core):

* **Workload A, throughput** (100 connections, 64-byte lines, pipeline 1,
  closed loop). Interleaved for ``--rounds`` rounds, each round runs, in an
  order rotated every round:

  (a) ``bench/loadgen.c --connections 100 --size 64 --pipeline 1``, pinned to
      the load core: the reference;
  (b) one ``python -m daemonkit bots`` process with 100 ``Echo64Bot`` bots
      (``bench/bots_echo64.py``), pinned to the same load core. Target: at
      least 0.5x the load generator's msgs/s of the same round;
  (c) the same bots spread with ``--procs 2`` and left unpinned (they share
      cores with the server and with each other): informational.

  Both kinds of load run ``--warmup`` s before ``--duration`` measured
  seconds; a bots run's rate is taken from its per-second samples after the
  warm-up, and its CPU from the same samples (``cpu`` in its ``--json``).

* **Workload B, held bots**: one bots process holds ``--hold-bots`` (10,000)
  ``HoldBot`` bots connected to cecho (one short line every 4-6 s each),
  spawned at 2,000/s, for ``--hold-duration`` s. Target: peak connected >=
  10,000. Reports the bots process's RSS (sampled from /proc/PID/statm while it
  runs), KiB per bot over a one-bot run's RSS, cecho's KiB per bot, errors and
  CPU.

Every figure has the bots processes' CPU beside it (1.0 = one core), and
``its runq``: the share of the run it waited for its core while another task
held it. On a shared machine that wait swings the msgs/s of every contender,
so A also reports ``CPU-eff``: the C generator's CPU per message over the
bots' in the same round, which does not depend on how much CPU each one got.
The verdict stays the msgs/s ratio the requirement names. Results
go to bench/results/bots-<timestamp>.jsonl, one JSON object per line (every
sample, then the summaries). ``--profile`` adds one run of (b) under cProfile
and prints its 15 costliest functions by own time.

Usage: python bench/bots.py [--quick] [--rounds N] [--duration S] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import pstats
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from _common import (
    BENCH_DIR,
    REPO_DIR,
    RESULTS_DIR,
    STOP_TIMEOUT,
    BenchError,
    CpuPlan,
    Server,
    build_c,
    child_env,
    core_shares,
    core_times,
    free_port,
    pin,
    plan_cpus,
    python_executable,
    run_loadgen,
    runq_wait_seconds,
    spread,
    stop_all,
)

#: The requirement: one bots process reaches this fraction of the C load generator.
RATIO_TARGET = 0.5
#: The requirement: one bots process holds this many connected bots.
HOLD_TARGET = 10_000
CONNECTIONS = 100
SIZE = 64  # bench/bots_echo64.py sends 63 bytes + "\n"
PIPELINE = 1
HOLD_SPAWN_RATE = 2000
BOTFILE = BENCH_DIR / "bots_echo64.py"
#: Extra seconds a bots run may take past its duration (interpreter start,
#: connects, the runner's 2 s stop timeout, closing 10,000 sockets).
BOTS_SLACK = 30.0
#: Descriptors a bots process or cecho needs beyond one per bot.
FD_SPARE = 100
#: Seconds between RSS samples of a running bots process.
RSS_EVERY = 0.2
#: Above this share of a run spent waiting for its core, a load generator's rate is doubtful.
NOISE_HIGH = 0.1
#: Above this share of the load core stolen by the hypervisor, a figure is doubtful.
STEAL_HIGH = 0.1

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Settings:
    rounds: int
    duration: float
    warmup: float
    procs: int
    hold_bots: int
    hold_duration: float
    profile: bool
    skip_hold: bool


# -- processes -----------------------------------------------------------------


def raise_nofile(need: int) -> int:
    """Raise this process's soft open-file limit toward ``need`` (children inherit it).

    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def read_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` from /proc/PID/statm, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def user_system_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) clock ticks of ``pid`` from /proc/PID/stat; OSError if it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]), int(fields[12])


def user_share(ticks: Sequence[tuple[float, int, int]], duration: float) -> float | None:
    """Share of a run's CPU spent in user space (Python and uvloop, not the kernel).

    Taken over the middle of the run's last ``duration`` s (its start-up,
    imports, and its close are left out). None when too little was sampled.
    """
    if len(ticks) < 2:
        return None
    end = ticks[-1][0] - 0.5
    begin = end - 0.8 * duration
    inside = [t for t in ticks if begin <= t[0] <= end]
    if len(inside) < 2:
        return None
    du, ds = inside[-1][1] - inside[0][1], inside[-1][2] - inside[0][2]
    return du / (du + ds) if du + ds >= 10 else None


def bots_argv(
    cls: str, port: int | str, bots: int, duration: float, json_path: str, extra: Sequence[str] = ()
) -> list[str]:
    """The ``python -m daemonkit bots`` command line of one bots run."""
    return [
        "-m",
        "daemonkit",
        "bots",
        f"{BOTFILE.relative_to(REPO_DIR)}:{cls}",
        "--target",
        f"tcp://127.0.0.1:{port}",
        "--bots",
        str(bots),
        "--duration",
        f"{duration:g}s",
        "--json",
        json_path,
        "--quiet",
        *extra,
    ]


def run_bots(
    args: Sequence[str],
    *,
    duration: float,
    cpus: frozenset[int] | None,
    json_path: str,
    python_args: Sequence[str] = (),
    sample_rss: bool = False,
) -> dict[str, Any]:
    """Run one bots process to its end; return its ``--json`` result plus what we saw.

    ``cpus`` pins it (None: every CPU this process may use, i.e. unpinned).
    With ``sample_rss`` its RSS is read every RSS_EVERY s while it runs
    (``rss_peak``, ``rss_samples``). Raises BenchError if it fails or overruns
    its duration by BOTS_SLACK s (it is then killed, its workers too).
    """
    cmd = [python_executable(), *python_args, *args]
    # The bots process starts its --procs workers itself; they inherit its CPUs.
    err_file = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_DIR,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        start_new_session=True,  # its own process group: a kill reaches its workers
    )
    try:
        try:
            pin(proc.pid, cpus if cpus is not None else frozenset(os.sched_getaffinity(0)))
        except OSError:
            pass  # it already exited; its status says why
        deadline = time.monotonic() + duration + BOTS_SLACK
        rss_peak, samples = 0, []
        runq = 0.0
        ticks: list[tuple[float, int, int]] = []  # (seconds since start, utime, stime)
        t0 = time.monotonic()
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                runq = runq_wait_seconds(proc.pid)
                ticks.append((time.monotonic() - t0, *user_system_ticks(proc.pid)))
            if time.monotonic() > deadline:
                raise BenchError(f"bots process overran {duration + BOTS_SLACK:.0f} s; killed")
            if sample_rss:
                rss = read_rss(proc.pid)
                if rss is not None:
                    rss_peak = max(rss_peak, rss)
                    samples.append((round(time.monotonic() - t0, 2), rss))
            time.sleep(RSS_EVERY if sample_rss else 0.05)
        err_file.seek(0)
        stderr = err_file.read().decode(errors="replace").strip()
        try:
            with open(json_path) as f:
                result: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as exc:
            raise BenchError(
                f"bots process exited {proc.returncode} without a JSON result: {stderr[-2000:]}"
            ) from exc
        if proc.returncode != 0:
            raise BenchError(f"bots process exited {proc.returncode}: {stderr[-2000:]}")
        if stderr:
            result["stderr"] = stderr[-2000:]
        # Share of its life the main thread waited for a CPU held by another task.
        result["runq_share"] = runq / max(time.monotonic() - t0, 1e-9)
        result["user_share"] = user_share(ticks, duration)
        if sample_rss:
            result["rss_peak"] = rss_peak
            result["rss_samples"] = samples
        return result
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        err_file.close()


def measured_window(result: dict[str, Any], warmup: float, duration: float) -> dict[str, Any]:
    """Rate and CPU of a bots run over its per-second samples after ``warmup``.

    Samples end at their ``t``; those ending after warmup (and by warmup +
    duration) make the window. The ``cpu`` list holds one share per sample.
    """
    series = result["stats"]["series"]
    cpu = result.get("cpu") or []
    ends = [s["t"] for s in series]
    # The first sample boundary at or after the warm-up opens the window.
    start = next((i for i, t in enumerate(ends) if t >= warmup - 0.05), None)
    last = max((i for i, t in enumerate(ends) if t <= warmup + duration + 0.05), default=None)
    if start is None or last is None or last <= start:
        share = sum(cpu) / len(cpu) if cpu else None
        return {"msgs_per_s": result["rps"], "seconds": result["elapsed"], "cpu": share}
    window = series[start + 1 : last + 1]
    seconds = ends[last] - ends[start]
    msgs = sum(s["requests"] for s in window)
    shares = cpu[start + 1 : last + 1] if len(cpu) == len(series) else cpu[-len(window) :]
    return {
        "msgs": msgs,
        "seconds": seconds,
        "msgs_per_s": msgs / seconds,
        "cpu": sum(shares) / len(shares) if shares else None,
        "cpu_max": max(shares) if shares else None,
    }


# -- workload A ------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    kind: str  # "loadgen" | "bots"
    procs: int = 1
    pinned: bool = True


def contenders(st: Settings) -> list[Contender]:
    return [
        Contender("c-loadgen", "C loadgen (pinned)", "loadgen"),
        Contender("bots", "daemonkit bots, 1 proc (pinned)", "bots"),
        Contender(
            f"bots-procs{st.procs}",
            f"bots --procs {st.procs} (UNPINNED, shares server core)",
            "bots",
            procs=st.procs,
            pinned=False,
        ),
    ]


def measure_a(
    who: Contender, st: Settings, port: int, cpus: CpuPlan, server: Server, loadgen: Path
) -> dict[str, Any]:
    """One run of workload A by ``who``; returns its sample."""
    t_before, srv_before = core_times(), server.cpu_seconds()
    start = time.monotonic()
    sample: dict[str, Any] = {"name": who.name}
    if who.kind == "loadgen":
        rec = run_loadgen(
            loadgen,
            port=port,
            connections=CONNECTIONS,
            size=SIZE,
            pipeline=PIPELINE,
            duration=st.duration,
            warmup=st.warmup,
            cpus=cpus.loadgen,
        )
        sample |= {
            "msgs_per_s": rec["msgs_per_s"],
            "cpu": rec["cpu_seconds"] / rec["seconds"],
            "runq": rec.get("runq_wait_seconds", 0.0) / rec["seconds"],
            "user_share": rec["cpu_user"] / rec["cpu_seconds"] if rec["cpu_seconds"] else None,
            "us_per_msg": 1e6 * rec["cpu_seconds"] / rec["msgs"] if rec["msgs"] else None,
            "errors": rec["errors"],
            "loadgen": rec,
        }
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bots.json")
            extra = ["--procs", str(who.procs)] if who.procs > 1 else []
            argv = bots_argv("Echo64Bot", port, CONNECTIONS, st.warmup + st.duration, path, extra)
            res = run_bots(
                argv,
                duration=st.warmup + st.duration,
                cpus=cpus.loadgen if who.pinned else None,
                json_path=path,
            )
        win = measured_window(res, st.warmup, st.duration)
        sample |= {
            "msgs_per_s": win["msgs_per_s"],
            "cpu": win["cpu"],
            "cpu_max": win.get("cpu_max"),
            "us_per_msg": 1e6 * win["cpu"] / win["msgs_per_s"]
            if win["cpu"] is not None and win["msgs_per_s"]
            else None,
            "errors": res["errors"],
            # --procs: the parent only merges; its workers' run-queue waits are not read.
            "runq": res["runq_share"] if who.procs == 1 else None,
            "user_share": res["user_share"] if who.procs == 1 else None,
            "whole_run_rps": res["rps"],
            "peak_connected": res["peak_connected"],
            "bots_warnings": res.get("warnings", []),
            "series": res["stats"]["series"],
            "cpu_series": res.get("cpu", []),
        }
    if sample.get("us_per_msg") is not None and sample.get("user_share") is not None:
        sample["user_us_per_msg"] = sample["us_per_msg"] * sample["user_share"]
    wall = time.monotonic() - start
    shares = core_shares(t_before, core_times(), cpus.loadgen)
    sample["load_core_steal"] = shares[1] if shares else None
    sample["server_cpu"] = (server.cpu_seconds() - srv_before) / wall
    return sample


def run_workload_a(
    st: Settings, cpus: CpuPlan, server: Server, loadgen: Path, out: TextIO
) -> dict[str, list[dict[str, Any]]]:
    """Interleave the contenders for st.rounds rounds; return their samples by name."""
    who = contenders(st)
    samples: dict[str, list[dict[str, Any]]] = {c.name: [] for c in who}
    for rnd in range(st.rounds):
        order = who[rnd % len(who) :] + who[: rnd % len(who)]
        for c in order:
            try:
                s = measure_a(c, st, server.port, cpus, server, loadgen)
            except (BenchError, OSError) as exc:
                s = {"name": c.name, "error": str(exc)}
                print(f"  A round {rnd + 1}/{st.rounds} {c.name:<12} FAILED: {exc}", flush=True)
            else:
                cpu = "-" if s["cpu"] is None else f"{s['cpu']:.0%}"
                print(
                    f"  A round {rnd + 1}/{st.rounds} {c.name:<12}"
                    f" {s['msgs_per_s']:>10,.0f} msgs/s  cpu {cpu}",
                    flush=True,
                )
            s["round"] = rnd
            samples[c.name].append(s)
            out.write(json.dumps({"type": "sample", "workload": "A"} | s) + "\n")
            out.flush()
    return samples


def _r(values: Sequence[float], fmt: str) -> tuple[str, str]:
    med, lo, hi = spread(values)
    return format(med, fmt), f"{format(lo, fmt)}-{format(hi, fmt)}"


def summarize_a(st: Settings, samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ref = {s["round"]: s for s in samples["c-loadgen"] if "error" not in s}
    rows = []
    for c in contenders(st):
        good = [s for s in samples[c.name] if "error" not in s]
        row: dict[str, Any] = {"name": c.name, "label": c.label, "runs": len(good)}
        row["errors_runs"] = [s["error"] for s in samples[c.name] if "error" in s]
        if good:
            keys = ("msgs_per_s", "cpu", "us_per_msg", "user_us_per_msg", "runq")
            keys += ("server_cpu", "load_core_steal")
            for key in keys:
                vals = [s[key] for s in good if s.get(key) is not None]
                if vals:
                    row[key] = dict(zip(("median", "min", "max"), spread(vals), strict=True))
            row["errors"] = sum(s["errors"] for s in good)
            if c.name != "c-loadgen":
                ratios = [
                    s["msgs_per_s"] / ref[s["round"]]["msgs_per_s"]
                    for s in good
                    if s["round"] in ref and ref[s["round"]]["msgs_per_s"] > 0
                ]
                if ratios:
                    row["ratio"] = dict(zip(("median", "min", "max"), spread(ratios), strict=True))
                # CPU-normalised: the C generator's CPU per message over ours, same round.
                # It does not depend on how much of its core each one got.
                effs = [
                    ref[s["round"]]["us_per_msg"] / s["us_per_msg"]
                    for s in good
                    if s["round"] in ref and s.get("us_per_msg") and ref[s["round"]]["us_per_msg"]
                ]
                if effs:
                    row["eff"] = dict(zip(("median", "min", "max"), spread(effs), strict=True))
        rows.append(row)
    bots = rows[1].get("ratio")
    verdict = None if bots is None else ("PASS" if bots["median"] >= RATIO_TARGET else "MISS")
    return {"type": "summary", "workload": "A", "rows": rows, "verdict": verdict}


def _med(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    v = row.get(key)
    return "-" if v is None else format(v["median"] * scale, fmt)


def print_a(st: Settings, summary: dict[str, Any]) -> None:
    print()
    print(
        f"### A: {CONNECTIONS} connections, {SIZE}-byte lines, pipeline {PIPELINE},"
        f" cecho pinned; {st.rounds} round(s) x {st.duration:g} s (+{st.warmup:g} s warm-up)"
    )
    print()
    print(
        "| load generator | msgs/s | min-max | its CPU | its µs/msg | user µs/msg | its runq"
        " | cecho CPU"
        " | steal | ratio vs C | min-max | CPU-eff vs C | target >= 0.5 | errs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for row in summary["rows"]:
        if "msgs_per_s" not in row:
            why = (row["errors_runs"] or ["no samples"])[0].splitlines()[0][:100]
            print(f"| {row['label']} | FAILED: {why} ||||||||||||")
            continue
        m = row["msgs_per_s"]
        rng = f"{m['min']:,.0f}-{m['max']:,.0f}"
        if row["name"] == "c-loadgen":
            ratio, ratio_rng, verdict, eff = "1.00", "(reference)", "", "1.00"
        elif "ratio" in row:
            r = row["ratio"]
            ratio, ratio_rng = f"{r['median']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}"
            e = row.get("eff")
            eff = "-" if e is None else f"{e['median']:.2f} ({e['min']:.2f}-{e['max']:.2f})"
            if row["name"] == "bots":
                verdict = "PASS" if r["median"] >= RATIO_TARGET else "MISS"
            else:
                verdict = "(info)"
        else:
            ratio, ratio_rng, verdict, eff = "-", "-", "-", "-"
        print(
            f"| {row['label']} | {m['median']:,.0f} | {rng} | {_med(row, 'cpu', '.0%')}"
            f" | {_med(row, 'us_per_msg', '.2f')} | {_med(row, 'user_us_per_msg', '.2f')}"
            f" | {_med(row, 'runq', '.0%')}"
            f" | {_med(row, 'server_cpu', '.0%')} | {_med(row, 'load_core_steal', '.0%')}"
            f" | {ratio} | {ratio_rng} | {eff} | {verdict}"
            f" | {row['errors']} |"
        )
        for err in row["errors_runs"]:
            print(f"  (a run failed: {err.splitlines()[0][:150]})")
    for row in summary["rows"]:
        runq = row.get("runq")
        if runq and runq["median"] > NOISE_HIGH:
            print(
                f"WARNING {row['name']}: it waited for its core {runq['median']:.0%} of the run"
                " (other tasks on it): its msgs/s is low by as much; 'CPU-eff' does not depend"
                " on that"
            )
        steal = row.get("load_core_steal")
        if steal and steal["max"] > STEAL_HIGH:
            print(
                f"WARNING {row['name']}: up to {steal['max']:.0%} of the load core was stolen"
                " by the hypervisor in a run"
            )


# -- workload B ------------------------------------------------------------------


def run_workload_b(st: Settings, cpus: CpuPlan, server: Server, out: TextIO) -> dict[str, Any]:
    """Hold st.hold_bots bots from one process; then one bot alone, for the RSS baseline."""
    assert server.proc is not None
    summary: dict[str, Any] = {"type": "summary", "workload": "B", "bots": st.hold_bots}
    spawn = ["--spawn-rate", str(HOLD_SPAWN_RATE)]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = os.path.join(tmp, "hold1.json")
            argv = bots_argv("HoldBot", server.port, 1, 2.0, path)
            one = run_bots(argv, duration=2.0, cpus=cpus.loadgen, json_path=path, sample_rss=True)
            summary["rss_one_bot"] = one["rss_peak"]
        except (BenchError, OSError) as exc:
            summary["baseline_error"] = str(exc)
        path = os.path.join(tmp, "hold.json")
        extra = [*spawn, "--server-pid", str(server.proc.pid)]
        argv = bots_argv("HoldBot", server.port, st.hold_bots, st.hold_duration, path, extra)
        shown = bots_argv("HoldBot", "PORT", st.hold_bots, st.hold_duration, "FILE.json", spawn)
        summary["command"] = shlex.join(["python", *shown, "--server-pid", "CECHO_PID"])
        print(f"  B holding {st.hold_bots:,} bots for {st.hold_duration:g} s ...", flush=True)
        try:
            res = run_bots(
                argv, duration=st.hold_duration, cpus=cpus.loadgen, json_path=path, sample_rss=True
            )
        except (BenchError, OSError) as exc:
            summary["error"] = str(exc)
            out.write(json.dumps(summary) + "\n")
            return summary
    peak = res["peak_connected"]
    cpu = res.get("cpu") or []
    series = res["stats"]["series"]
    # The hold phase: seconds in which every bot that would connect had connected.
    held = [c for s, c in zip(series, cpu, strict=False) if s["active"] >= peak > 0]
    summary |= {
        "peak_connected": peak,
        "verdict": hold_verdict(peak, st.hold_bots),
        "errors": res["errors"],
        "connect_errors": res["stats"].get("connect_errors", {}),
        "requests": res["requests"],
        "rss_peak": res["rss_peak"],
        "cpu_mean": sum(cpu) / len(cpu) if cpu else None,
        "cpu_max": max(cpu) if cpu else None,
        "cpu_held": sum(held) / len(held) if held else None,
        "connect_p99": res["summary"]["connect"]["p99"] if "summary" in res else None,
        "server": res.get("server"),
        "rss_samples": res["rss_samples"],
        "series": series,
        "cpu_series": cpu,
        "warnings": res.get("warnings", []),
    }
    base = summary.get("rss_one_bot")
    if base and peak > 1:
        summary["kib_per_bot"] = (res["rss_peak"] - base) / (peak - 1) / 1024
    out.write(json.dumps(summary) + "\n")
    return summary


def hold_verdict(peak: int, asked: int) -> str:
    """PASS/MISS against HOLD_TARGET; a run asked for fewer bots (--quick) tests nothing."""
    if peak >= HOLD_TARGET:
        return "PASS"
    return "MISS" if asked >= HOLD_TARGET else f"NOT TESTED (only {asked:,} asked)"


def print_b(st: Settings, b: dict[str, Any]) -> None:
    print()
    print(
        f"### B: {st.hold_bots:,} HoldBot bots (one 4-byte line every 4-6 s) from one"
        f" pinned bots process, spawn {HOLD_SPAWN_RATE:,}/s, {st.hold_duration:g} s"
    )
    print()
    if "error" in b:
        print(f"FAILED: {b['error'][:500]}")
        return
    mib = 1024 * 1024
    base = b.get("rss_one_bot")
    srv = b.get("server") or {}
    srv_kib = srv.get("per_bot_bytes")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    print(
        "| peak connected | target >= 10,000 | bots RSS | RSS 1 bot | KiB/bot | cecho KiB/bot"
        " | bots CPU held | mean | max (spawning) | connect p99 | errors |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    p99 = b.get("connect_p99")
    kib = "-" if "kib_per_bot" not in b else f"{b['kib_per_bot']:.1f}"
    print(
        f"| {b['peak_connected']:,} | {b['verdict']} | {b['rss_peak'] / mib:.1f} MiB"
        f" | {'-' if base is None else f'{base / mib:.1f} MiB'}"
        f" | {kib}"
        f" | {'-' if srv_kib is None else f'{srv_kib / 1024:.1f}'}"
        f" | {pct(b['cpu_held'])} | {pct(b['cpu_mean'])} | {pct(b['cpu_max'])}"
        f" | {'-' if p99 is None else f'{p99 * 1000:.1f} ms'} | {b['errors']} |"
    )
    if b["connect_errors"]:
        print(f"  connect errors: {b['connect_errors']}")
    for w in b.get("warnings", []):
        print(f"  bots warning: {w}")


# -- profile ----------------------------------------------------------------------


def run_profile(st: Settings, cpus: CpuPlan, port: int, prof: Path) -> str:
    """Run workload A's (b) once under cProfile; return its top 15 functions by tottime."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bots.json")
        argv = bots_argv("Echo64Bot", port, CONNECTIONS, st.warmup + st.duration, path)
        res = run_bots(
            argv,
            duration=st.warmup + st.duration,
            cpus=cpus.loadgen,
            json_path=path,
            python_args=["-m", "cProfile", "-o", str(prof)],
        )
    win = measured_window(res, st.warmup, st.duration)
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.sort_stats("tottime").print_stats(15)
    head = (
        f"profiled run (cProfile slows it): {win['msgs_per_s']:,.0f} msgs/s,"
        f" {res['requests']:,} requests in all; profile saved to {prof}"
    )
    return head + "\n" + buf.getvalue()


# -- main -------------------------------------------------------------------------


def machine_line() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        out = subprocess.run(
            [python_executable(), "-c", "import uvloop; print(uvloop.__version__)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        uvloop = out.stdout.strip() or "not installed"
    except (OSError, subprocess.TimeoutExpired):
        uvloop = "?"
    return (
        f"machine: nproc {os.cpu_count()} (usable {sorted(os.sched_getaffinity(0))}),"
        f" cpu {model!r}, python {platform.python_version()}, uvloop {uvloop},"
        f" kernel {platform.release()}"
    )


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        description="daemonkit bots against a C echo server: throughput beside a C load"
        " generator, and 10,000 held bots."
    )
    p.add_argument("--quick", action="store_true", help="1 round x 2 s; 2,000 held bots")
    p.add_argument("--rounds", type=int, help="interleaved rounds of A (default 3)")
    p.add_argument("--duration", type=float, help="measured seconds per A run (default 5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds per A run (default 1)")
    p.add_argument("--procs", type=int, default=2, help="processes of A's (c) (default 2)")
    p.add_argument("--hold-bots", type=int, help="bots of B (default 10000)")
    p.add_argument("--hold-duration", type=float, help="seconds of B (default 10)")
    p.add_argument("--skip-hold", action="store_true", help="run workload A only")
    p.add_argument("--profile", action="store_true", help="also run A's (b) once under cProfile")
    a = p.parse_args(argv)
    st = Settings(
        rounds=a.rounds or (1 if a.quick else 3),
        duration=a.duration or (2.0 if a.quick else 5.0),
        warmup=a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0),
        procs=a.procs,
        hold_bots=a.hold_bots or (2000 if a.quick else HOLD_TARGET),
        hold_duration=a.hold_duration or (4.0 if a.quick else 10.0),
        profile=a.profile,
        skip_hold=a.skip_hold,
    )
    if st.rounds < 1 or st.duration <= 0 or st.warmup < 0 or st.procs < 2 or st.hold_bots < 2:
        p.error("need --rounds >= 1, --duration > 0, --warmup >= 0, --procs >= 2, --hold-bots >= 2")
    return st


def main(argv: Sequence[str] | None = None) -> int:
    st = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv])
    try:
        loadgen = build_c("loadgen")
        cecho = build_c("cecho")
    except BenchError as exc:
        print(f"bots.py: {exc}", file=sys.stderr)
        return 2
    cpus = plan_cpus()
    machine = machine_line()  # before pinning: it lists the CPUs this run may use
    pin(0, cpus.loadgen)  # this process only waits; keep it off the server's core
    limit = raise_nofile(st.hold_bots + FD_SPARE)
    if not st.skip_hold and limit < st.hold_bots + FD_SPARE:
        print(
            f"bots.py: the open-file limit is {limit}: holding {limit - FD_SPARE} bots"
            f" instead of {st.hold_bots}"
        )
        st.hold_bots = limit - FD_SPARE
    started = datetime.datetime.now()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS_DIR / f"bots-{started:%Y%m%d-%H%M%S}.jsonl"
    print(f"bots.py: {cpus.note}; open-file limit {limit}")
    print(machine)
    t0 = time.monotonic()
    server = Server("c-echo", [str(cecho), "PORT"], cpus.server)
    summary_a = summary_b = None
    profile = None
    with open(out_path, "w") as out:
        meta = {
            "type": "meta",
            "started": started.isoformat(timespec="seconds"),
            "command": command,
            "machine": machine,
            "cpus": cpus.note,
            "nofile": limit,
            "settings": vars(st),
        }
        out.write(json.dumps(meta) + "\n")
        try:
            port = free_port()
            server.argv = [str(cecho), str(port)]
            server.start(port)
            server.wait_ready()
            samples = run_workload_a(st, cpus, server, loadgen, out)
            summary_a = summarize_a(st, samples)
            out.write(json.dumps(summary_a) + "\n")
            if not st.skip_hold:
                summary_b = run_workload_b(st, cpus, server, out)
            if st.profile:
                prof = RESULTS_DIR / f"bots-{started:%Y%m%d-%H%M%S}.prof"
                try:
                    profile = run_profile(st, cpus, port, prof)
                except (BenchError, OSError) as exc:
                    profile = f"profile run failed: {exc}"
                out.write(json.dumps({"type": "profile", "text": profile}) + "\n")
        except (BenchError, OSError) as exc:
            print(f"bots.py: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all([server])
    if summary_a is not None:
        print_a(st, summary_a)
    if summary_b is not None:
        print_b(st, summary_b)
    print()
    if summary_a is not None:
        bots = summary_a["rows"][1]
        r = bots.get("ratio")
        line = (
            "NOT MEASURED"
            if r is None
            else (f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) {summary_a['verdict']}")
        )
        e = bots.get("eff")
        if e is not None:
            line += f"; CPU-eff {e['median']:.2f}x ({e['min']:.2f}-{e['max']:.2f})"
        print(
            f"VERDICT A: one pinned bots process vs C loadgen, target >= 0.50x: {line}"
            f"; bots CPU {_med(bots, 'cpu', '.0%')} of one core"
        )
    if summary_b is not None and "peak_connected" in summary_b:
        print(
            f"VERDICT B: one bots process held {summary_b['peak_connected']:,} connected bots,"
            f" target >= {HOLD_TARGET:,}: {summary_b['verdict']}"
        )
    if profile:
        print()
        print(profile)
    print(f"command: {command}")
    print(
        "bots command: "
        + shlex.join(
            [
                "python",
                *bots_argv("Echo64Bot", "PORT", CONNECTIONS, st.warmup + st.duration, "FILE.json"),
            ]
        )
    )
    print(
        f"loadgen command: {loadgen.relative_to(REPO_DIR)} --host=127.0.0.1 --port=PORT"
        f" --connections={CONNECTIONS} --size={SIZE} --pipeline={PIPELINE}"
        f" --duration={st.duration:g} --warmup={st.warmup:g}"
    )
    if summary_b is not None and "command" in summary_b:
        print(f"hold command: {summary_b['command']}")
    print(f"results: {out_path.relative_to(REPO_DIR)} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
