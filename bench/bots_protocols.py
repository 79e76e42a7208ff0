"""Protocol bots beside the C load generators: HttpBot vs wrk, WebSocketBot vs wsload.

The performance requirement of the HTTP and WebSocket bots, one run side by
side against the same daemonkit servers:

* **HTTP**: ``examples/http_hello.py`` (one process, pinned to the server
  core) loaded at 100 keep-alive connections, pipeline 1, by
  ``wrk -t1 -c100`` (C) and by one ``python -m daemonkit bots`` process with
  100 ``HelloBot`` bots (``bench/bots_protocols_bots.py``), each pinned to
  the load core. Target: the bots reach at least 0.5x wrk's requests/s.
* **WebSocket**: ``bench/servers/ws_daemonkit.py`` (the echo route), loaded
  at 100 connections, one 64-byte text message in flight each, by
  ``bench/wsload.c --mode echo`` (C, epoll) and by one bots process with 100
  ``WsEchoBot`` bots. Target: at least 0.5x wsload's messages/s.

Each load runs ``--warmup`` s, then ``--duration`` measured seconds: wrk with
a separate warm-up run, wsload with its own warm-up window, the bots over
their per-second samples after the warm-up (as bench/bots.py reads them).
A fresh server is started for each load generator. Pinning is done with
``sched_setaffinity`` (what ``taskset`` does): servers on the first usable
core, load generators on the second; with one core nothing is pinned and the
output says so. How busy the machine was is printed too: the load average
before the run, and for each load the busy and stolen shares of both cores
and the server's CPU, so a figure taken on a busy machine can be recognised.

Usage::

    python bench/bots_protocols.py                 # 1 round: 2 s warm-up + 5 s, about 1 min
    python bench/bots_protocols.py --rounds 3 --duration 10

Prints a markdown table and writes JSON lines to
bench/results/bots_protocols-<timestamp>.jsonl. Needs Linux, gcc and wrk
(``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO_DIR,
    RESULTS_DIR,
    BenchError,
    CpuPlan,
    Server,
    build_c,
    core_shares,
    core_times,
    free_port,
    plan_cpus,
    python_executable,
)
from bots import machine_line, measured_window, run_bots
from http_ws import WRK_SCRIPT, check_hello, run_wrk, run_wsload

#: The requirement: one bots process reaches this fraction of the C load generator.
RATIO_TARGET = 0.5
#: The issue's load: wrk's 100 connections; the WebSocket load uses as many.
CONNECTIONS = 100
#: wsload's message size, as bench/http_ws.py sends (and WsEchoBot's MESSAGE).
WS_SIZE = 64
BOTFILE = "bench/bots_protocols_bots.py"
#: Seconds a wsload run may take past its own length (start, handshakes, exit).
SLACK = 40.0


def _shares(before: dict[int, Any], after: dict[int, Any], plan: CpuPlan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, cpus in (("server_core", plan.server), ("load_core", plan.loadgen)):
        shares = core_shares(before, after, cpus)
        if shares is not None:
            out[f"{label}_busy"] = round(shares[0], 3)
            out[f"{label}_steal"] = round(shares[1], 3)
    return out


def _bots(
    cls: str, target: str, args: argparse.Namespace, plan: CpuPlan, unit_key: str
) -> dict[str, Any]:
    """One bots process, 100 bots of ``cls`` for warm-up + duration; its measured window."""
    seconds = args.warmup + args.duration
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bots.json")
        argv = [
            "-m", "daemonkit", "bots", f"{BOTFILE}:{cls}", "-H", target,
            "-u", str(CONNECTIONS), "-t", f"{seconds:g}s", "--json", path, "--quiet",
        ]  # fmt: skip
        res = run_bots(argv, duration=seconds, cpus=plan.loadgen, json_path=path)
    win = measured_window(res, args.warmup, args.duration)
    return {
        "rate": win["msgs_per_s"],
        "cpu": win["cpu"],
        "errors": res["errors"],
        "runq": res.get("runq_share"),
        "statuses": res.get("summary", {}).get("statuses"),
        "warnings": res.get("warnings", []),
        unit_key: win.get("msgs"),
    }


def http_pair(args: argparse.Namespace, plan: CpuPlan, wrk: str, script: Path) -> list[dict]:
    """wrk, then the HttpBot process, each against a fresh http_hello; their samples."""
    py = python_executable()
    out = []
    for who in ("wrk", "bots"):
        port = free_port()
        argv = [py, "-m", "daemonkit", "examples/http_hello.py"]
        argv += ["--listen", f"http://127.0.0.1:{port}", "--log-level", "warning"]
        server = Server("http_hello", argv, cpus=plan.server)
        sample: dict[str, Any] = {"bench": "http", "load": who}
        try:
            server.start(port)
            server.wait_ready()
            check_hello(port)
            url = f"http://127.0.0.1:{port}/"
            before, cpu0, t0 = core_times(), server.cpu_seconds(), time.monotonic()
            if who == "wrk":
                run_wrk(wrk, url, args.warmup, CONNECTIONS, plan.loadgen, script)
                before, cpu0, t0 = core_times(), server.cpu_seconds(), time.monotonic()
                rec, reaped = run_wrk(wrk, url, args.duration, CONNECTIONS, plan.loadgen, script)
                seconds = rec["duration_us"] / 1e6
                errors = sum(
                    rec[k]
                    for k in ("connect_errors", "read_errors", "write_errors", "status_errors")
                )
                sample |= {
                    "rate": rec["requests"] / seconds,
                    "cpu": reaped.cpu / seconds,
                    "errors": errors,
                    "requests": rec["requests"],
                }
            else:
                sample |= _bots("HelloBot", f"http://127.0.0.1:{port}", args, plan, "requests")
            wall = time.monotonic() - t0
            sample["server_cpu"] = round((server.cpu_seconds() - cpu0) / wall, 3)
            sample |= _shares(before, core_times(), plan)
        except (BenchError, OSError, ValueError, KeyError) as exc:
            sample |= {"rate": None, "error": str(exc)}
        finally:
            server.stop()
        out.append(sample)
    return out


def ws_pair(args: argparse.Namespace, plan: CpuPlan, wsload: Path) -> list[dict]:
    """wsload, then the WebSocketBot process, each against a fresh ws_daemonkit echo."""
    py = python_executable()
    out = []
    for who in ("wsload", "bots"):
        port = free_port()
        argv = [py, "-m", "daemonkit", "bench/servers/ws_daemonkit.py"]
        argv += ["--listen", f"ws://127.0.0.1:{port}", "--log-level", "warning"]
        server = Server("ws_daemonkit", argv, cpus=plan.server)
        sample: dict[str, Any] = {"bench": "ws", "load": who}
        try:
            server.start(port)
            server.wait_ready()
            before, cpu0, t0 = core_times(), server.cpu_seconds(), time.monotonic()
            if who == "wsload":
                marks: dict[str, tuple[dict[int, Any], float, float]] = {}

                def mark(name: str, marks: dict = marks, server: Server = server) -> None:
                    # wsload's window opens and closes: the server's CPU and the cores then.
                    marks[name] = (core_times(), server.cpu_seconds(), time.monotonic())

                wsargs = [
                    "--host=127.0.0.1", f"--port={port}", "--mode=echo",
                    f"--connections={CONNECTIONS}", "--pipeline=1", f"--size={WS_SIZE}",
                    f"--duration={args.duration}", f"--warmup={args.warmup}",
                ]  # fmt: skip
                timeout = args.warmup + args.duration + SLACK
                rec = run_wsload(wsload, wsargs, plan.loadgen, timeout, mark)
                if "window_open" in marks:
                    before, cpu0, t0 = marks["window_open"]
                sample |= {
                    "rate": rec["msgs_per_s"],
                    "cpu": rec["cpu_seconds"] / rec["seconds"] if rec["seconds"] else None,
                    "errors": rec["errors"],
                    "messages": rec["msgs"],
                }
                after = marks.get("window_close")
            else:
                sample |= _bots("WsEchoBot", f"ws://127.0.0.1:{port}", args, plan, "messages")
                after = None
            end, cpu1, t1 = after or (core_times(), server.cpu_seconds(), time.monotonic())
            sample["server_cpu"] = round((cpu1 - cpu0) / (t1 - t0), 3)
            sample |= _shares(before, end, plan)
        except (BenchError, OSError, ValueError, KeyError) as exc:
            sample |= {"rate": None, "error": str(exc)}
        finally:
            server.stop()
        out.append(sample)
    return out


def _median(samples: Sequence[dict], bench: str, load: str) -> float | None:
    rates = [s["rate"] for s in samples if s["bench"] == bench and s["load"] == load and s["rate"]]
    return statistics.median(rates) if rates else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def report(samples: Sequence[dict], args: argparse.Namespace, plan: CpuPlan) -> list[dict]:
    """Print the side-by-side table; return one summary record per protocol."""
    print()
    print(f"{machine_line()}; {plan.note}")
    print(
        f"{CONNECTIONS} connections, pipeline 1, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured, {args.rounds} round(s)"
    )
    print()
    print("| protocol | load | rate/s | load CPU | server CPU | server core busy | "
          "load core busy | steal | errors |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in samples:
        if s.get("rate") is None:
            print(f"| {s['bench']} | {s['load']} | FAILED: {s.get('error', '?')} |||||||")
            continue
        steal = max(s.get("server_core_steal", 0.0), s.get("load_core_steal", 0.0))
        print(
            f"| {s['bench']} | {s['load']} | {s['rate']:,.0f} | {_pct(s.get('cpu'))} | "
            f"{_pct(s.get('server_cpu'))} | {_pct(s.get('server_core_busy'))} | "
            f"{_pct(s.get('load_core_busy'))} | {steal:.1%} | {s.get('errors', 0):,} |"
        )
    print()
    summaries = []
    for bench, ref in (("http", "wrk"), ("ws", "wsload")):
        c, b = _median(samples, bench, ref), _median(samples, bench, "bots")
        ratio = b / c if b and c else None
        verdict = "-" if ratio is None else ("PASS" if ratio >= RATIO_TARGET else "FAIL")
        line = f"{bench}: bots {b or 0:,.0f}/s vs {ref} {c or 0:,.0f}/s"
        line += f" = {ratio:.2f}x (target >= {RATIO_TARGET}x): {verdict}" if ratio else ": -"
        print(line)
        summaries.append(
            {"kind": "summary", "bench": bench, "reference": ref, "bots": b, "c": c,
             "ratio": ratio, "verdict": verdict}
        )  # fmt: skip
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; exit 0 when both ratios meet the target, 1 otherwise."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="rounds (default 1)")
    p.add_argument("--duration", type=int, default=5, help="measured seconds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds (default 2)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON lines go")
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("bots_protocols: Linux only (/proc, sched_setaffinity)", file=sys.stderr)
        return 2
    wrk = shutil.which("wrk")
    if wrk is None:
        print("bots_protocols: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    os.chdir(REPO_DIR)
    plan = plan_cpus()
    try:
        wsload = build_c("wsload")
    except BenchError as exc:
        print(f"bots_protocols: {exc}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"bots_protocols-{stamp}.jsonl"
    samples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, path.open("w") as out:
        script = Path(tmp) / "summary.lua"
        script.write_text(WRK_SCRIPT)
        steps: list[Callable[[], list[dict]]] = [
            lambda: http_pair(args, plan, wrk, script),
            lambda: ws_pair(args, plan, wsload),
        ]
        for r in range(args.rounds):
            for step in steps:
                for s in step():
                    s["round"] = r
                    samples.append(s)
                    out.write(json.dumps(s) + "\n")
                    rate = "FAILED" if s.get("rate") is None else f"{s['rate']:,.0f}/s"
                    print(f"  round {r + 1} {s['bench']:<4} {s['load']:<6} {rate}", flush=True)
        summaries = report(samples, args, plan)
        for record in summaries:
            out.write(json.dumps(record) + "\n")
    print(f"\nwrote {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}")
    return 0 if all(s["verdict"] == "PASS" for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
