"""HTTP hello world and WebSocket echo: daemonkit against uvicorn, aiohttp and websockets.

The HTTP and WebSocket speed targets, measured in one run:

* HTTP: ``wrk -t1 -c100 --latency`` (keep-alive) against ``Hello, world!``
  (text/plain, 14 bytes) from daemonkit (``examples/http_hello.py`` as it
  is, and ``bench/servers/http_daemonkit.py``: the same answer with the
  ``server`` field uvicorn and aiohttp add, so every response has four header
  fields), uvicorn (raw ASGI app, httptools, uvloop, one worker) and aiohttp
  (``web.run_app``). Target: daemonkit >= 1.5x uvicorn's requests/s.
* WebSocket: bench/wsload.c (C, epoll, masked client frames) against an echo
  on daemonkit and on the ``websockets`` asyncio server (the reference; also
  shown on uvloop): 50 connections x 1 and x 16 messages in flight, 64-byte
  text messages; and a fan-out, 1 publisher to 1,000 subscribers, 4
  publications in flight. Target: daemonkit's echo >= 1.5x websockets'.

Servers run on the first core, wrk and wsload on the second. Every server is
a fresh process per round, rounds are interleaved and the order rotates each
round; each figure is the median of the rounds (min-max shown). Server CPU
comes from /proc (over wrk's run, or over wsload's measured window, which
wsload marks on its stdout); the load generators' own CPU is recorded and a
run where one was near saturation is flagged. How busy the machine was (other
processes on the two cores, hypervisor steal, the run-queue wait of the
servers and load generators) is measured before and during the run and printed.

Usage::

    python bench/http_ws.py            # 3 rounds x 5 s (about 4 minutes)
    python bench/http_ws.py --quick    # 1 round x 2 s (about 40 s)
    python bench/http_ws.py --report bench/results/http_ws-....jsonl   # re-print

Besides the ratio of medians (the target), the tables give the ratio over
the uncontended rounds only (neither process waited 5 % of the run for its
core) and the ratio of server CPU time per request or message, which other
load on the machine disturbs much less than throughput.

Prints markdown tables and writes JSON lines to
bench/results/http_ws-<timestamp>.jsonl (``--out DIR`` elsewhere). Needs
Linux, gcc, wrk (installed with ``apt-get install -y wrk`` when missing and
run as root, unless ``--no-install``) and the ``bench`` extra (uvicorn,
aiohttp, websockets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from _common import (
    RESULTS_DIR,
    BenchError,
    CoreTimes,
    CpuPlan,
    Server,
    build_c,
    core_shares,
    core_times,
    free_port,
    plan_cpus,
    python_executable,
)

TARGET = 1.5
HTTP_CONNECTIONS = 100
WS_CONNECTIONS = 50
WS_SIZE = 64
FANOUT_SUBSCRIBERS = 1000
FANOUT_PIPELINE = 4
HELLO_BODY = b"Hello, world!\n"
#: A load generator busier than this share of its run may have been the limit.
SATURATED = 0.9
#: A round is uncontended when neither server of a comparison waited for its
#: core (runnable, another task running) more than this share of the run.
QUIET = 0.05
#: Seconds a wrk or wsload run may take past its own length.
SLACK = 40.0

WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
    .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
    .. '"lat_p50_us": %.1f, "lat_p99_us": %.1f, "lat_mean_us": %.1f, "lat_max_us": %.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Target:
    """One server of a comparison: its name, command line (``{port}``), and role."""

    name: str
    argv: tuple[str, ...]
    note: str
    reference: bool = False  # the denominator of the ratios
    judged: bool = False  # held to the 1.5x target

    def command(self, port: int) -> list[str]:
        return [a.format(port=port) for a in self.argv]


@dataclass(frozen=True)
class Workload:
    """One WebSocket load: wsload's mode, connections and messages in flight."""

    name: str
    mode: str
    connections: int
    pipeline: int
    judged: bool


def http_targets(py: str) -> list[Target]:
    dk = (py, "-m", "daemonkit")
    tail = ("--listen", "http://127.0.0.1:{port}", "--log-level", "warning")
    return [
        Target(
            "daemonkit",
            (*dk, "bench/servers/http_daemonkit.py", *tail),
            "bench/servers/http_daemonkit.py: the example's answer plus a server field",
            judged=True,
        ),
        Target(
            "daemonkit (example)",
            (*dk, "examples/http_hello.py", *tail),
            "examples/http_hello.py as it is",
            judged=True,
        ),
        Target(
            "uvicorn",
            (py, "bench/servers/http_uvicorn.py", "{port}"),
            "raw ASGI app, httptools, uvloop, 1 worker",
            reference=True,
        ),
        Target(
            "aiohttp",
            (py, "bench/servers/http_aiohttp.py", "{port}"),
            "web.run_app, stdlib asyncio loop",
        ),
    ]


def ws_targets(py: str) -> list[Target]:
    return [
        Target(
            "daemonkit",
            (
                py,
                "-m",
                "daemonkit",
                "bench/servers/ws_daemonkit.py",
                "--listen",
                "ws://127.0.0.1:{port}",
                "--log-level",
                "warning",
            ),
            "on_message -> conn.send, CLI default backend (uvloop)",
            judged=True,
        ),
        Target(
            "websockets",
            (py, "bench/servers/ws_websockets.py", "{port}"),
            "websockets.asyncio.server.serve, stdlib asyncio loop",
            reference=True,
        ),
        Target(
            "websockets (uvloop)",
            (py, "bench/servers/ws_websockets.py", "{port}", "--loop", "uvloop"),
            "the same server on uvloop",
        ),
    ]


# -- processes -------------------------------------------------------------


def _affinity(cpus: frozenset[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child before it starts any thread."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _task_runq_seconds(pid: int) -> float | None:
    """Seconds all threads of ``pid`` were runnable but not running (None once it is gone)."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None
    return total


@dataclass
class Reaped:
    """A finished child: its CPU seconds, and its run-queue wait as last seen alive."""

    cpu: float
    runq: float


def _reap(proc: subprocess.Popen[bytes], deadline: float, name: str) -> Reaped:
    """Wait for ``proc`` until ``deadline``; return its CPU time and run-queue wait.

    The wait is read from /proc every 20 ms while it runs (the last 20 ms
    are missed). Kills it and raises BenchError if it still runs at the deadline.
    """
    runq = 0.0
    while True:
        seen = _task_runq_seconds(proc.pid)
        if seen is not None:
            runq = max(runq, seen)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Reaped(float(usage.ru_utime + usage.ru_stime), runq)
        if time.monotonic() >= deadline:
            _kill(proc)
            raise BenchError(f"{name} overran its deadline; killed")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` (by its pid) and reap it, if it still runs."""
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            _, status = os.waitpid(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            proc.returncode = -9


def _tail(f: IO[bytes], limit: int = 1500) -> str:
    f.seek(0)
    return f.read().decode(errors="replace").strip()[-limit:]


@dataclass(frozen=True)
class Snap:
    """The server's CPU and run-queue wait, and every core's times, at one instant."""

    t: float
    cpu: float
    runq: float
    cores: dict[int, CoreTimes]


def snap(server: Server) -> Snap:
    return Snap(time.monotonic(), server.cpu_seconds(), server.runq_wait_seconds(), core_times())


def window(a: Snap, b: Snap, plan: CpuPlan) -> dict[str, Any]:
    """Server CPU, run-queue wait and the cores' busy/steal shares between two snaps."""
    seconds = b.t - a.t
    out: dict[str, Any] = {
        "window_s": round(seconds, 4),
        "server_cpu_s": round(b.cpu - a.cpu, 4),
        "server_util": round((b.cpu - a.cpu) / seconds, 4) if seconds > 0 else None,
        "server_runq_s": round(b.runq - a.runq, 4),
        "server_runq_share": round((b.runq - a.runq) / seconds, 4) if seconds > 0 else None,
    }
    for label, cpus in (("server_core", plan.server), ("loadgen_core", plan.loadgen)):
        shares = core_shares(a.cores, b.cores, cpus)
        if shares is not None:
            out[f"{label}_busy"] = round(shares[0], 4)
            out[f"{label}_steal"] = round(shares[1], 4)
    return out


def run_wrk(
    wrk: str, url: str, seconds: int, connections: int, cpus: frozenset[int] | None, script: Path
) -> tuple[dict[str, Any], Reaped]:
    """One wrk run; return wrk's JSON summary (from ``script``), its CPU and run-queue wait."""
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=_affinity(cpus)
        )
        try:
            reaped = _reap(proc, time.monotonic() + seconds + SLACK, "wrk")
        finally:
            _kill(proc)
        text = _tail(out, 100_000)
        if proc.returncode != 0:
            raise BenchError(f"wrk exited {proc.returncode}: {_tail(err)} {text[-500:]}")
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError(f"wrk printed no summary: {text[-500:]}")
    record: dict[str, Any] = json.loads(lines[-1])
    return record, reaped


def run_wsload(
    binary: Path,
    args: Sequence[str],
    cpus: frozenset[int] | None,
    timeout: float,
    on_event: Callable[[str], None],
) -> dict[str, Any]:
    """One wsload run; call ``on_event`` at its window marks; return its result record."""
    deadline = time.monotonic() + timeout
    result: dict[str, Any] | None = None
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=_affinity(cpus),
        )
        assert proc.stdout is not None
        try:
            fd = proc.stdout.fileno()
            buf = b""
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BenchError(f"wsload overran {timeout:.0f} s")
                    if not sel.select(min(left, 0.5)):
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        record = json.loads(line)
                        if "event" in record:
                            on_event(record["event"])
                        else:
                            result = record
            _reap(proc, deadline, "wsload")
        finally:
            proc.stdout.close()
            _kill(proc)
        if proc.returncode != 0 or result is None:
            raise BenchError(f"wsload exited {proc.returncode}: {_tail(err)}")
        stderr = _tail(err)
    if stderr:
        result["stderr"] = stderr
    return result


def check_hello(port: int) -> dict[str, int]:
    """GET / once; check for 200 and the hello body; return the response's size and fields."""
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and len(body) >= len(HELLO_BODY):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200") or body != HELLO_BODY:
        raise BenchError(f"unexpected answer to GET /: {data[:300]!r}")
    return {"response_bytes": len(data), "header_fields": len(lines) - 1}


# -- the benchmarks --------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    plan: CpuPlan
    out: IO[str]
    samples: list[dict[str, Any]]

    def emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def sample(self, record: dict[str, Any]) -> None:
        record = {"kind": "sample", **record}
        self.samples.append(record)
        self.emit(record)
        rate = record.get("rate")
        what = f"{rate:,.0f} {record['unit']}" if rate is not None else f"FAILED {record['error']}"
        flag = " (load generator saturated)" if record.get("loadgen_saturated") else ""
        print(
            f"  round {record['round'] + 1} {record['workload']:<14} {record['server']:<20} "
            f"{what}{flag}",
            file=sys.stderr,
            flush=True,
        )


def rotated(items: Sequence[Target], r: int) -> list[Target]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


def bench_http(ctx: Context, wrk: str, script: Path, targets: list[Target]) -> None:
    args, plan = ctx.args, ctx.plan
    for r in range(args.rounds):
        for target in rotated(targets, r):
            base = {"bench": "http", "workload": f"hello c{HTTP_CONNECTIONS}", "round": r}
            port = free_port()
            server = Server(target.name, target.command(port), cpus=plan.server)
            try:
                server.start(port)
                server.wait_ready()
                shape = check_hello(port)
                url = f"http://127.0.0.1:{port}/"
                run_wrk(wrk, url, args.warmup_wrk, HTTP_CONNECTIONS, plan.loadgen, script)
                a = snap(server)
                rec, reaped = run_wrk(
                    wrk, url, args.duration_wrk, HTTP_CONNECTIONS, plan.loadgen, script
                )
                b = snap(server)
                win = window(a, b, plan)
                seconds = rec["duration_us"] / 1e6
                errors = sum(
                    rec[k]
                    for k in ("connect_errors", "read_errors", "write_errors", "status_errors")
                )
                ctx.sample(
                    {
                        **base,
                        "server": target.name,
                        "rate": rec["requests"] / seconds,
                        "unit": "requests/s",
                        "ops": rec["requests"],
                        "seconds": seconds,
                        "errors": errors,
                        "timeouts": rec["timeouts"],
                        "lat_p50_us": rec["lat_p50_us"],
                        "lat_p99_us": rec["lat_p99_us"],
                        "server_cpu_us_per_op": win["server_cpu_s"] / rec["requests"] * 1e6,
                        "loadgen_cpu_s": reaped.cpu,
                        "loadgen_util": reaped.cpu / seconds,
                        "loadgen_saturated": reaped.cpu / seconds >= SATURATED,
                        "loadgen_runq_s": reaped.runq,
                        "loadgen_runq_share": reaped.runq / seconds,
                        **shape,
                        **win,
                    }
                )
            except (BenchError, OSError, ValueError, KeyError) as exc:
                ctx.sample({**base, "server": target.name, "rate": None, "error": str(exc)})
            finally:
                server.stop()


def bench_ws(ctx: Context, binary: Path, targets: list[Target], workloads: list[Workload]) -> None:
    args, plan = ctx.args, ctx.plan
    for r in range(args.rounds):
        for target in rotated(targets, r):
            port = free_port()
            server = Server(target.name, target.command(port), cpus=plan.server)
            try:
                server.start(port)
                server.wait_ready()
                for wl in workloads:
                    ws_one(ctx, binary, server, target, wl, r)
            except (BenchError, OSError) as exc:
                for wl in workloads:
                    ctx.sample(
                        {
                            "bench": "ws",
                            "workload": wl.name,
                            "round": r,
                            "server": target.name,
                            "rate": None,
                            "error": str(exc),
                        }
                    )
            finally:
                server.stop()


def ws_one(
    ctx: Context, binary: Path, server: Server, target: Target, wl: Workload, r: int
) -> None:
    args, plan = ctx.args, ctx.plan
    base = {"bench": "ws", "workload": wl.name, "round": r, "server": target.name}
    marks: dict[str, Snap] = {}

    def on_event(name: str) -> None:
        marks[name] = snap(server)

    wsargs = [
        "--host=127.0.0.1",
        f"--port={server.port}",
        f"--mode={wl.mode}",
        f"--connections={wl.connections}",
        f"--pipeline={wl.pipeline}",
        f"--size={WS_SIZE}",
        f"--duration={args.duration}",
        f"--warmup={args.warmup}",
    ]
    try:
        rec = run_wsload(
            binary, wsargs, plan.loadgen, args.warmup + args.duration + SLACK, on_event
        )
        if "window_open" not in marks or "window_close" not in marks:
            raise BenchError("wsload printed no window marks")
        win = window(marks["window_open"], marks["window_close"], plan)
        seconds = rec["seconds"]
        busy = 1.0 - rec["wait_seconds"] / seconds if seconds > 0 else 0.0
        util = rec["cpu_seconds"] / seconds if seconds > 0 else 0.0
        if rec["msgs"] == 0:
            raise BenchError(f"no message came back ({rec.get('stderr', '')})")
        ctx.sample(
            {
                **base,
                "rate": rec["msgs_per_s"],
                "unit": "msgs/s",
                "ops": rec["msgs"],
                "seconds": seconds,
                "errors": rec["errors"],
                "connections": wl.connections,
                "pipeline": wl.pipeline,
                "lat_p50_us": rec["lat_p50_us"],
                "lat_p99_us": rec["lat_p99_us"],
                "server_cpu_us_per_op": win["server_cpu_s"] / rec["msgs"] * 1e6,
                "loadgen_cpu_s": rec["cpu_seconds"],
                "loadgen_util": util,
                "loadgen_busy": busy,
                "loadgen_runq_s": rec["runq_wait_seconds"],
                "loadgen_runq_share": rec["runq_wait_seconds"] / seconds if seconds > 0 else 0.0,
                "loadgen_saturated": max(util, busy) >= SATURATED,
                "wsload": rec,
                **win,
            }
        )
    except (BenchError, OSError, ValueError, KeyError) as exc:
        ctx.sample({**base, "rate": None, "error": str(exc)})


# -- machine and report ----------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:4])


def versions(py: str) -> dict[str, str]:
    code = (
        "import json, platform\n"
        "from importlib.metadata import version\n"
        "out = {'python': platform.python_version()}\n"
        "for n in ('daemonkit', 'uvicorn', 'httptools', 'uvloop', 'aiohttp', 'websockets'):\n"
        "    try: out[n] = version(n)\n"
        "    except Exception: out[n] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    try:
        found: dict[str, str] = json.loads(proc.stdout)
    except ValueError:
        found = {"error": proc.stderr.strip()[-300:]}
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        found["wrk"] = (wrk.stdout + wrk.stderr).split("[")[0].replace("wrk", "").strip()
    except (OSError, subprocess.TimeoutExpired):
        found["wrk"] = "missing"
    return found


def baseline_load(seconds: float) -> dict[str, Any]:
    """How busy each core was with other work, over ``seconds`` before the run."""
    a = core_times()
    time.sleep(seconds)
    b = core_times()
    out: dict[str, Any] = {"loadavg": loadavg()}
    for cpu in sorted(b):
        shares = core_shares(a, b, frozenset({cpu}))
        if shares is not None:
            out[f"core{cpu}_busy"] = round(shares[0], 3)
            out[f"core{cpu}_steal"] = round(shares[1], 3)
    return out


def ensure_wrk(install: bool) -> str | None:
    """Return wrk's path, installing the Debian package if missing and allowed."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("wrk is missing: install it (apt-get install wrk)", file=sys.stderr)
        return None
    print("wrk is missing: apt-get install -y wrk", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "wrk"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"apt-get install wrk failed: {exc}", file=sys.stderr)
    return shutil.which("wrk")


def _loadgen_runq_share(sample: dict[str, Any]) -> float | None:
    share = sample.get("loadgen_runq_share")
    if share is None and "loadgen_runq_s" in sample and sample.get("seconds"):
        share = sample["loadgen_runq_s"] / sample["seconds"]
    return share


def _uncontended(sample: dict[str, Any]) -> bool:
    """True if neither the server nor the load generator waited for its core much."""
    lg = _loadgen_runq_share(sample)
    return bool(sample["server_runq_share"] < QUIET and (lg is None or lg < QUIET))


def _loadgen_runq_median(rows: list[dict[str, Any]]) -> float | None:
    values = [v for v in map(_loadgen_runq_share, rows) if v is not None]
    return float(statistics.median(values)) if values else None


def summarize(
    samples: list[dict[str, Any]], targets: dict[str, list[Target]]
) -> list[dict[str, Any]]:
    """One summary record per (bench, workload, server): medians, ranges, ratios, verdicts."""
    out: list[dict[str, Any]] = []
    keys: list[tuple[str, str]] = []
    for s in samples:
        if (s["bench"], s["workload"]) not in keys:
            keys.append((s["bench"], s["workload"]))
    for bench, workload in keys:
        rows = [s for s in samples if s["bench"] == bench and s["workload"] == workload]
        ref = next(t for t in targets[bench] if t.reference)
        ref_ok = [s for s in rows if s["server"] == ref.name and s["rate"]]
        ref_rates = {s["round"]: s["rate"] for s in ref_ok}
        ref_quiet = {s["round"] for s in ref_ok if _uncontended(s)}
        ref_median = statistics.median(ref_rates.values()) if ref_rates else None
        ref_cpu = [s["server_cpu_us_per_op"] for s in rows if s["server"] == ref.name and s["rate"]]
        ref_cpu_median = statistics.median(ref_cpu) if ref_cpu else None
        for target in targets[bench]:
            mine = [s for s in rows if s["server"] == target.name and s["rate"] is not None]
            failed = [s["error"] for s in rows if s["server"] == target.name and s["rate"] is None]
            rec: dict[str, Any] = {
                "kind": "summary",
                "bench": bench,
                "workload": workload,
                "server": target.name,
                "rounds": len(mine),
                "failed": failed,
            }
            if mine:
                rates = [s["rate"] for s in mine]
                med = statistics.median(rates)
                per_round = [
                    s["rate"] / ref_rates[s["round"]] for s in mine if s["round"] in ref_rates
                ]
                quiet = [
                    s["rate"] / ref_rates[s["round"]]
                    for s in mine
                    if s["round"] in ref_quiet and _uncontended(s)
                ]

                def m(key: str, rows: list[dict[str, Any]] = mine) -> float:
                    return float(statistics.median(s[key] for s in rows))

                rec.update(
                    unit=mine[0]["unit"],
                    median=med,
                    min=min(rates),
                    max=max(rates),
                    lat_p50_us=m("lat_p50_us"),
                    lat_p99_us=m("lat_p99_us"),
                    server_cpu_us_per_op=m("server_cpu_us_per_op"),
                    server_util=m("server_util"),
                    server_runq_share=m("server_runq_share"),
                    loadgen_util=m("loadgen_util"),
                    loadgen_runq_share=_loadgen_runq_median(mine),
                    loadgen_saturated_rounds=sum(bool(s["loadgen_saturated"]) for s in mine),
                    errors=sum(s["errors"] for s in mine),
                    ratio=med / ref_median if ref_median else None,
                    cpu_ratio=ref_cpu_median / m("server_cpu_us_per_op")
                    if ref_cpu_median
                    else None,
                    ratio_min=min(per_round) if per_round else None,
                    ratio_max=max(per_round) if per_round else None,
                    quiet_rounds=len(quiet),
                    ratio_quiet=statistics.median(quiet) if quiet else None,
                )
                if "response_bytes" in mine[0]:
                    rec["response_bytes"] = mine[0]["response_bytes"]
                    rec["header_fields"] = mine[0]["header_fields"]
                judged = target.judged and (bench == "http" or workload.startswith("echo"))
                if judged and rec["ratio"] is not None:
                    rec["target"] = TARGET
                    rec["verdict"] = "PASS" if rec["ratio"] >= TARGET else "MISS"
                    if rec["ratio_quiet"] is not None:
                        rec["verdict_quiet"] = "PASS" if rec["ratio_quiet"] >= TARGET else "MISS"
            out.append(rec)
    return out


def _range(rec: dict[str, Any]) -> str:
    return f"{rec['median']:,.0f} ({rec['min']:,.0f}-{rec['max']:,.0f})"


def _ratio(rec: dict[str, Any], reference: str) -> str:
    if rec.get("ratio") is None:
        return ""
    if rec["server"] == reference:
        return "1.00 (reference)"
    text = f"{rec['ratio']:.2f}x"
    if rec["ratio_min"] is not None and rec["rounds"] > 1:
        text += f" ({rec['ratio_min']:.2f}-{rec['ratio_max']:.2f})"
    return text


def _failure(rec: dict[str, Any]) -> str:
    if not rec["failed"]:
        return "not run"
    return "failed: " + " ".join(rec["failed"][0].replace("|", "/").split())[:100]


def _use(rec: dict[str, Any]) -> str:
    return f"{rec['server_util']:.0%} / {rec['server_runq_share']:.0%}"


def _lg(rec: dict[str, Any]) -> str:
    share = rec.get("loadgen_runq_share")
    wait = f" / {share:.0%}" if share is not None else " / ?"
    return f"{rec['loadgen_util']:.0%}{wait}"


def _quiet(rec: dict[str, Any]) -> str:
    if rec.get("ratio") is None or rec["server"] in ("uvicorn", "websockets"):
        return ""
    if rec.get("ratio_quiet") is None:
        return f"none of {rec['rounds']}"
    text = f"{rec['ratio_quiet']:.2f}x ({rec['quiet_rounds']} of {rec['rounds']})"
    if "verdict_quiet" in rec:
        text += f" {rec['verdict_quiet']}"
    return text


def _cpu_ratio(rec: dict[str, Any]) -> str:
    return f"{rec['cpu_ratio']:.2f}x" if rec.get("cpu_ratio") is not None else ""


def _verdict(rec: dict[str, Any]) -> str:
    return f"**{rec['verdict']}**" if "verdict" in rec else ""


def print_tables(summaries: list[dict[str, Any]], targets: dict[str, list[Target]]) -> None:
    http = [s for s in summaries if s["bench"] == "http"]
    if http:
        print("\n### HTTP hello world, wrk -t1 -c100, keep-alive\n")
        print(
            "| server | requests/s median (min-max) | p50 / p99 latency | server CPU per request "
            "| server CPU use / run-queue wait | wrk CPU / run-queue wait | vs uvicorn "
            "| target 1.5x | vs uvicorn, uncontended rounds | vs uvicorn, per CPU µs |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rec in http:
            if not rec["rounds"]:
                print(f"| {rec['server']} | {_failure(rec)} |" + " |" * 8)
                continue
            sat = " (saturated)" if rec["loadgen_saturated_rounds"] else ""
            print(
                f"| {rec['server']} | {_range(rec)} | {rec['lat_p50_us'] / 1e3:.2f} / "
                f"{rec['lat_p99_us'] / 1e3:.2f} ms | {rec['server_cpu_us_per_op']:.1f} µs | "
                f"{_use(rec)} | {_lg(rec)}{sat} | "
                f"{_ratio(rec, 'uvicorn')} | {_verdict(rec)} | {_quiet(rec)} | "
                f"{_cpu_ratio(rec)} |"
            )
    ws = [s for s in summaries if s["bench"] == "ws"]
    if ws:
        print(f"\n### WebSocket, {WS_SIZE}-byte text messages\n")
        print(
            "| workload | server | msgs/s median (min-max) | p50 / p99 latency "
            "| server CPU per msg | server CPU use / run-queue wait | wsload CPU / run-queue wait "
            "| vs websockets "
            "| target 1.5x | vs websockets, uncontended rounds | vs websockets, per CPU µs |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for rec in ws:
            if not rec["rounds"]:
                print(f"| {rec['workload']} | {rec['server']} | {_failure(rec)} |" + " |" * 8)
                continue
            sat = " (saturated)" if rec["loadgen_saturated_rounds"] else ""
            print(
                f"| {rec['workload']} | {rec['server']} | {_range(rec)} | "
                f"{rec['lat_p50_us'] / 1e3:.2f} / {rec['lat_p99_us'] / 1e3:.2f} ms | "
                f"{rec['server_cpu_us_per_op']:.2f} µs | {_use(rec)} | "
                f"{_lg(rec)}{sat} | {_ratio(rec, 'websockets')} | "
                f"{_verdict(rec)} | {_quiet(rec)} | {_cpu_ratio(rec)} |"
            )
    shapes = {s["server"]: s for s in http if "response_bytes" in s}
    print("\nServers:")
    for bench in ("http", "ws"):
        for t in targets.get(bench, []):
            shape = shapes.get(t.name) if bench == "http" else None
            size = (
                f" ({shape['response_bytes']} B response, {shape['header_fields']} header fields)"
                if shape
                else ""
            )
            print(f"- {bench} {t.name}: {t.note}{size}")


def print_load(base: dict[str, Any], samples: list[dict[str, Any]], end_load: str) -> None:
    ok = [s for s in samples if s.get("rate") is not None]
    cores = ", ".join(
        f"core {k[4:-5]} {v:.0%} busy / {base[k.replace('busy', 'steal')]:.0%} steal"
        for k, v in base.items()
        if k.endswith("_busy")
    )
    print(f"\nMachine load before the run: loadavg {base['loadavg']}; {cores}.")
    if ok:
        runq = [s["server_runq_share"] for s in ok]
        steal = [s.get("server_core_steal", 0.0) for s in ok]
        lg_steal = [s.get("loadgen_core_steal", 0.0) for s in ok]
        lg_runq = [v for v in (_loadgen_runq_share(s) for s in ok) if v is not None]
        lg_text = (
            f"the load generator {statistics.median(lg_runq):.1%} (max {max(lg_runq):.1%}); "
            if lg_runq
            else ""
        )
        print(
            f"During the runs: the server waited for its core {statistics.median(runq):.1%} of "
            f"the time (median; max {max(runq):.1%}), {lg_text}steal on the server core "
            f"{statistics.median(steal):.1%} (max {max(steal):.1%}), on the load generator's "
            f"{statistics.median(lg_steal):.1%} (max {max(lg_steal):.1%}); loadavg at the end "
            f"{end_load}."
        )


def render(
    meta: dict[str, Any],
    samples: list[dict[str, Any]],
    end: dict[str, Any],
    path: Path,
    targets: dict[str, list[Target]],
) -> None:
    """Print the markdown report of one run."""
    summaries = summarize(samples, targets)
    vers = meta["versions"]
    print("## HTTP and WebSocket: daemonkit against uvicorn, aiohttp, websockets\n")
    print(f"Machine: {meta['machine']}, Linux {meta['kernel']}; {meta['cpu_plan']}.")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".")
    print(f"Command: `{meta['command']}`")
    print(
        f"Rounds: {meta['rounds']} interleaved, order rotated, a fresh server each; "
        f"{meta['duration']:g} s per run (wrk {max(1, round(meta['duration']))} s after a "
        f"1 s warm-up run; wsload after {meta['warmup']:g} s of warm-up); median (min-max) of "
        f"the rounds. Uncontended rounds: neither server nor its load generator waited for "
        f"its core (run-queue wait) {QUIET:.0%} of the run or more. Per CPU µs: the ratio "
        f"of server CPU time per request or message."
    )
    print_tables(summaries, targets)
    print_load(meta["baseline_load"], samples, end.get("loadavg", "?"))
    print(f"\nJSON lines: {path} ({end.get('seconds', 0):.0f} s)")


def report(path: Path) -> int:
    """Re-render the report of an earlier run from its JSON lines."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    meta = next(r for r in records if r["kind"] == "meta")
    samples = [r for r in records if r["kind"] == "sample"]
    end: dict[str, Any] = next((r for r in records if r["kind"] == "end"), {})
    py = python_executable()
    ran = {(s["bench"], s["server"]) for s in samples}
    targets = {
        bench: [t for t in make(py) if (bench, t.name) in ran]
        for bench, make in (("http", http_targets), ("ws", ws_targets))
    }
    render(meta, samples, end, path, {b: ts for b, ts in targets.items() if ts})
    return 0


# -- main ------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HTTP hello (wrk) and WebSocket echo (wsload): daemonkit vs uvicorn, "
        "aiohttp and websockets."
    )
    parser.add_argument("--quick", action="store_true", help="1 round x 2 s (about a minute)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 5; quick 2)")
    parser.add_argument("--warmup", type=float, help="wsload warm-up seconds (default 1)")
    parser.add_argument("--only", choices=("http", "ws"), help="run one half only")
    parser.add_argument("--no-fanout", action="store_true", help="skip the 1-to-1000 fan-out")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSONL")
    parser.add_argument("--report", type=Path, help="only re-render the tables of this JSONL")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds >= 1, --duration > 0, --warmup >= 0")
    args.duration_wrk = max(1, round(args.duration))  # wrk takes whole seconds
    args.warmup_wrk = 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return report(args.report)
    if not sys.platform.startswith("linux"):
        print("needs Linux (/proc, epoll, sched_setaffinity)", file=sys.stderr)
        return 2
    started = time.time()
    py = python_executable()
    plan = plan_cpus()
    command = shlex.join([sys.executable, *sys.argv])
    targets: dict[str, list[Target]] = {}
    if args.only in (None, "http"):
        targets["http"] = http_targets(py)
    if args.only in (None, "ws"):
        targets["ws"] = ws_targets(py)

    wrk = ensure_wrk(not args.no_install) if "http" in targets else None
    if "http" in targets and wrk is None:
        print("HTTP half skipped: no wrk", file=sys.stderr)
        del targets["http"]
    wsload = build_c("wsload") if "ws" in targets else None
    workloads = [
        Workload(f"echo c{WS_CONNECTIONS} p1", "echo", WS_CONNECTIONS, 1, True),
        Workload(f"echo c{WS_CONNECTIONS} p16", "echo", WS_CONNECTIONS, 16, True),
    ]
    if not args.no_fanout:
        workloads.append(
            Workload(
                f"fanout 1-to-{FANOUT_SUBSCRIBERS}",
                "fanout",
                FANOUT_SUBSCRIBERS,
                FANOUT_PIPELINE,
                False,
            )
        )

    vers = versions(py)
    machine = f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}"
    base = baseline_load(0.5 if args.quick else 1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = args.out / f"http_ws-{stamp}.jsonl"
    samples: list[dict[str, Any]] = []
    with open(path, "w") as out, tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "summary.lua"
        script.write_text(WRK_SCRIPT)
        ctx = Context(args, plan, out, samples)
        meta: dict[str, Any] = {
            "kind": "meta",
            "command": command,
            "quick": args.quick,
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "machine": machine,
            "nproc": os.cpu_count(),
            "kernel": platform.release(),
            "cpu_plan": plan.note,
            "versions": vers,
            "baseline_load": base,
            "targets": {
                b: [{"name": t.name, "argv": list(t.argv), "note": t.note} for t in ts]
                for b, ts in targets.items()
            },
        }
        ctx.emit(meta)
        print(f"http_ws: {machine}; {plan.note}; results -> {path}", file=sys.stderr, flush=True)
        try:
            if "http" in targets and wrk is not None:
                bench_http(ctx, wrk, script, targets["http"])
            if "ws" in targets and wsload is not None:
                bench_ws(ctx, wsload, targets["ws"], workloads)
        except KeyboardInterrupt:
            print("interrupted: reporting what was measured", file=sys.stderr)
        summaries = summarize(samples, targets)
        for rec in summaries:
            ctx.emit(rec)
        end = {"kind": "end", "seconds": round(time.time() - started, 1), "loadavg": loadavg()}
        ctx.emit(end)

    render(meta, samples, end, path, targets)
    return 0 if all(s.get("rate") is not None for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
