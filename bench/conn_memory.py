"""Where the memory of an idle connection goes: a per-connection breakdown.

bench/run.py's ``idle-memory`` workload says *how much* RSS each idle
connection costs (issue 17's target: ``examples/echo_daemon.py`` at or below
a raw uvloop Protocol). This script says *what* holds it. It starts the
daemon as the benchmark does (the CLI, uvloop, log level info) in a child
process with :mod:`tracemalloc` on, opens N connections from this process
(each sends 64 bytes and reads them back, as the load generator's idle mode
does), then reports from the child, divided by N:

* the RSS growth (inflated by tracemalloc's own bookkeeping; ``--no-trace``
  gives the figure bench/run.py measures);
* the traced allocations that grew, grouped by the line that made them
  (``<unknown>`` is an allocation with no Python frame on the stack: the
  compiled core, or uvloop's C code, called from the event loop directly);
* ``sys.getsizeof`` (GC header included) of each object a connection owns --
  the Connection, its ``_Extras``, an idle timer and its arguments, its
  framer, the framer's buffer and settings, the transport -- and of the
  daemon's containers that hold one entry per connection. An object shared
  by connections counts once.

The daemonkit measured is the one in this file's tree (the child runs in
it, its directory first on ``sys.path``, as ``python -m`` would): to measure
another checkout, run that checkout's copy.

``raw`` as the target runs bench/servers/raw_uvloop.py's Protocol instead,
the reference the target is measured against. ``--pure`` sets
``DAEMONKIT_NO_EXTENSIONS=1`` (the pure-Python core).

Run::

    python bench/conn_memory.py                          # the example, 2,000 conns
    python bench/conn_memory.py --pure -n 10000          # the pure core
    python bench/conn_memory.py bench/servers/daemonkit_lines.py
    python bench/conn_memory.py raw --no-trace

Every wait has a deadline; the child is stopped (SIGTERM, then SIGKILL) in
every case. Only the standard library is needed in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
#: The daemon measured by default: the issue 17 target, as shipped.
DEFAULT_TARGET = "examples/echo_daemon.py"
#: Seconds the child gets to listen, and the connections to be seen by it.
WAIT = 60.0
#: Bytes each connection echoes before going idle (the load generator's idle mode).
MESSAGE = b"x" * 63 + b"\n"
#: Frames kept per traced allocation: enough to reach the daemonkit caller.
TRACE_FRAMES = 8
#: Pages of /proc/self/statm.
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_KIB


# -- the child: the server, measured ----------------------------------------------


class _Probe:
    """The child's side: answers the parent's commands on stdin, one JSON line each."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.base: tracemalloc.Snapshot | None = None
        self.rss0 = 0
        self.count = lambda: 0

    def serve(self) -> None:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "base":
                self._wait_count(0)
                gc.collect()
                self.rss0 = _rss_kib()
                self.base = tracemalloc.take_snapshot() if self.trace else None
                reply: dict[str, Any] = {"rss_kib": self.rss0}
            elif cmd == "loaded":
                n = int(arg)
                self._wait_count(n)
                gc.collect()
                reply = {"rss_kib": _rss_kib(), "per_conn_rss_kib": (_rss_kib() - self.rss0) / n}
                if self.base is not None:
                    reply["traced"] = _traced(self.base, tracemalloc.take_snapshot(), n)
                reply["objects"] = _objects(n)
            else:
                reply = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(reply), flush=True)

    def _wait_count(self, n: int) -> None:
        deadline = time.monotonic() + WAIT
        while self.count() != n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count()} connections seen, not {n}")
            time.sleep(0.01)


def _where(frame: tracemalloc.Frame) -> str:
    path = Path(frame.filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(REPO_DIR)
    parts = path.parts
    if "site-packages" in parts:
        path = Path(*parts[parts.index("site-packages") + 1 :])
    return f"{path}:{frame.lineno}"


def _traced(base: tracemalloc.Snapshot, now: tracemalloc.Snapshot, n: int) -> list[dict[str, Any]]:
    """The allocations that grew by about one per connection or more, biggest first."""
    rows = []
    for stat in now.compare_to(base, "traceback"):
        if stat.size_diff < n:  # under a byte per connection: not per-connection state
            continue
        frames = [_where(f) for f in reversed(stat.traceback)][:4] or ["<unknown>"]
        rows.append(
            {
                "bytes": round(stat.size_diff / n, 1),
                "blocks": round(stat.count_diff / n, 2),
                "where": frames,
            }
        )
    rows.sort(key=lambda r: -r["bytes"])
    return rows


def _size(obj: object) -> int:
    return sys.getsizeof(obj) if obj is not None else 0


def _objects(n: int) -> dict[str, float]:
    """``sys.getsizeof`` per connection of what the live connections hold."""
    try:
        from daemonkit.core.connection import Connection
        from daemonkit.daemon import Daemon
    except ImportError:  # the raw reference
        return _raw_objects(n)
    daemons = [o for o in gc.get_objects() if isinstance(o, Daemon)]
    if not daemons:
        return _raw_objects(n)
    daemon = daemons[0]
    conns: list[Connection] = list(daemon.connections)
    sizes: dict[str, int] = {}
    seen: set[int] = set()

    def add(name: str, obj: object) -> None:
        # Once per object: what connections share (a framer's settings) counts once.
        if obj is not None and id(obj) not in seen:
            seen.add(id(obj))
            sizes[name] = sizes.get(name, 0) + _size(obj)
        else:
            sizes.setdefault(name, 0)

    for conn in conns:
        add("Connection", conn)
        x = getattr(conn, "_x", None)
        add("Connection._x (_Extras)", x)
        wait = getattr(conn, "_idle_wait", None)
        timer = wait if hasattr(wait, "_args") else None
        add("idle timer (a near deadline)", timer)
        args = getattr(timer, "_args", None)
        add("idle timer arguments (tuple)", args if args else None)
        framer = getattr(conn, "_framer", None)
        add("framer", framer)
        if framer is not None:
            add("framer._buffer", getattr(framer, "_buffer", None))
            add("framer._settings", getattr(framer, "_settings", None))
        add("transport (getsizeof only)", conn.transport)
    cset = daemon.connections
    add("ConnectionSet._by_id dict", getattr(cset, "_by_id", None))
    add("ConnectionSet._since dict", getattr(cset, "_since", None))
    add("Daemon._groups dict", getattr(daemon, "_groups", None))
    wheel = getattr(daemon.reactor, "idle_wheel", None)
    for bucket in getattr(wheel, "_buckets", {}).values():
        add("idle wheel buckets (far deadlines)", bucket.conns)
    timers = daemon.reactor.timers
    for slot in ("_buckets", "_keys", "_coarse", "_ckeys"):
        container = getattr(timers, slot, None)
        add(f"TimerQueue.{slot}", container)
        if isinstance(container, dict):
            for value in container.values():
                add(f"TimerQueue.{slot} values", value)
    per = {name: round(size / n, 1) for name, size in sizes.items()}
    per["total of the above"] = round(sum(sizes.values()) / n, 1)
    return per


def _raw_objects(n: int) -> dict[str, float]:
    protocols = [o for o in gc.get_objects() if isinstance(o, asyncio.Protocol)]
    size = sum(_size(p) + _size(getattr(p, "__dict__", None)) for p in protocols)
    transports = sum(_size(getattr(p, "transport", None)) for p in protocols)
    return {
        "Protocol + its __dict__": round(size / n, 1),
        "transport (getsizeof only)": round(transports / n, 1),
    }


def _child(target: str, port: int, trace: bool) -> None:
    if trace:
        tracemalloc.start(TRACE_FRAMES)
    probe = _Probe(trace)
    if target == "raw":
        sys.path.insert(0, str(BENCH_DIR / "servers"))
        import uvloop
        from raw_uvloop import Echo

        protocols: set[asyncio.Protocol] = set()

        class Counted(Echo):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                protocols.add(self)

            def connection_lost(self, exc: Exception | None) -> None:
                protocols.discard(self)

        probe.count = lambda: len(protocols)

        async def serve() -> None:
            server = await asyncio.get_running_loop().create_server(Counted, "127.0.0.1", port)
            print(json.dumps({"ready": True}), flush=True)
            await asyncio.to_thread(probe.serve)
            server.close()

        uvloop.run(serve())
        return
    sys.path.insert(0, os.getcwd())
    from daemonkit.cli.run import main
    from daemonkit.daemon import Daemon

    def count() -> int:
        daemons = [obj for obj in gc.get_objects() if isinstance(obj, Daemon)]
        if not daemons:
            return -1
        connections = daemons[0].connections
        probe.count = lambda: len(connections)
        return len(connections)

    probe.count = count
    argv = [target, "--listen", f"tcp://127.0.0.1:{port}", "--backend", "uvloop"]
    thread = threading.Thread(target=probe.serve, daemon=True)
    thread.start()
    print(json.dumps({"ready": True}), flush=True)
    main([*argv, "--log-level", "info"])


# -- the parent: the clients and the report ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _server(args: argparse.Namespace, port: int) -> Iterator[subprocess.Popen[str]]:
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)
    if args.pure:
        env["DAEMONKIT_NO_EXTENSIONS"] = "1"
    cmd = [sys.executable, __file__, "--child", str(port), args.target]
    if args.no_trace:
        cmd.append("--no-trace")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the example logs a line per connection
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def _ask(proc: subprocess.Popen[str], command: str) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    if command:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the server exited (status {proc.poll()}) before answering")
    reply: dict[str, Any] = json.loads(line)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run one server, hold ``args.connections`` idle connections, return the child's report."""
    port = _free_port()
    socks: list[socket.socket] = []
    with _server(args, port) as proc:
        _ask(proc, "")  # ready
        _connect(port).close()  # accepting
        base = _ask(proc, "base")
        try:
            for _ in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                socks.append(s)
                s.sendall(MESSAGE)
            for s in socks:
                got = b""
                while len(got) < len(MESSAGE):
                    chunk = s.recv(len(MESSAGE) - len(got))
                    if not chunk:
                        raise RuntimeError("the server closed a connection")
                    got += chunk
            loaded = _ask(proc, f"loaded {len(socks)}")
        finally:
            for s in socks:
                s.close()
    loaded["rss_base_kib"] = base["rss_kib"]
    return loaded


def _print(report: dict[str, Any], args: argparse.Namespace, top: int) -> None:
    core = "pure" if args.pure else "compiled if built"
    n = args.connections
    traced = "no tracemalloc" if args.no_trace else "tracemalloc on: RSS inflated"
    print(f"{args.target} ({core} core), {n} idle connections")
    print(f"RSS per connection: {report['per_conn_rss_kib']:.2f} KiB ({traced})")
    if "traced" in report:
        rows = report["traced"]
        total = sum(r["bytes"] for r in rows)
        print(f"\ntraced allocations per connection: {total:.0f} bytes in all; by where made:")
        for row in rows[:top]:
            where = " <- ".join(row["where"])
            print(f"  {row['bytes']:7.1f} B {row['blocks']:5.2f} blocks  {where}")
    print("\nsys.getsizeof per connection:")
    for name, size in report["objects"].items():
        print(f"  {size:7.1f} B  {name}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, measure, print the breakdown; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET, help="daemon file, or raw")
    parser.add_argument("-n", "--connections", type=int, default=2000)
    parser.add_argument("--pure", action="store_true", help="DAEMONKIT_NO_EXTENSIONS=1")
    parser.add_argument("--no-trace", action="store_true", help="RSS only, no tracemalloc")
    parser.add_argument("--top", type=int, default=15, help="traced rows to show")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.target, args.child, not args.no_trace)
        return 0
    if not 1 <= args.connections <= 18000:
        parser.error("--connections must be 1..18000 (the open-file limit is 20,000 per process)")
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report, args, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
