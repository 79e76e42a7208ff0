"""``--workers``: how connections spread over the workers, and the server CPU per message.

Run: python bench/workers.py [--part spread|cpu|all] [--backends uvloop,asyncio,pyuv]
                             [--tree DIR] [--connections N] [--duration S]

Every part runs a real set, ``python -m daemonkit
bench/servers/daemonkit_workers.py --workers N`` (a Lines echo that answers
``?worker`` with its worker id), and stops it before the next.

1. **spread** (2 workers, on each backend): ``--connections`` clients
   (default 400) connect at once and stay connected, then each asks which
   worker holds it; then 4 threads make short connections (connect, ask,
   close) for 2 s. Prints the split of each; then does both again while
   bench/loadgen.c keeps 16 other connections busy (16 pipelined lines
   each), where the busiest worker, already awake, tends to win every
   accept (and prints how many of the 16 each worker holds); and once more
   with worker 1 stopped (SIGSTOP, as a loop blocked for long): how long the
   other takes to answer them all. This is the measure of the
   accept sharing (docs/design.md, "Workers: one shared accept queue");
   ``--tree`` runs another checkout's daemonkit (e.g. the commit before) to
   compare.
2. **cpu** (uvloop, 1 then 2 workers, the same load): bench/loadgen.c keeps
   64 connections of 16 pipelined 64-byte lines busy for ``--duration``
   seconds (default 3). Prints messages/s, the server CPU (supervisor plus
   every worker, from /proc) in µs per message, and how many of the 64
   connections each worker held. With 2 cores the load generator competes
   with the workers, so the figures are per CPU second, not a speed-up.

Nothing is pinned. Bounded: every wait has a deadline, each run is a few
seconds, the whole script well under 2 minutes. On a shared machine, say so
next to the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _common import (
    REPO_DIR,
    BenchError,
    Server,
    build_c,
    free_port,
    process_cpu_seconds,
    python_executable,
    run_loadgen,
)

TARGET = REPO_DIR / "bench" / "servers" / "daemonkit_workers.py"
ASK = b"?worker\n"
#: Seconds a set has to say every worker is ready, and a client to be answered.
READY_TIMEOUT = 30.0
CLIENT_TIMEOUT = 10.0
#: The short-connection load of the spread part: threads, seconds.
SHORT_THREADS = 4
SHORT_SECONDS = 2.0
#: The cpu part's load: connections, pipelined lines each, bytes per line.
CPU_CONNECTIONS = 64
CPU_PIPELINE = 16
CPU_SIZE = 64
#: The busy spread's background load: connections (of CPU_PIPELINE lines).
BUSY_CONNECTIONS = 16
#: Seconds worker 1 is stopped before the clients of the "stopped" spread come.
STOPPED_FOR = 0.5


@contextmanager
def running(tree: Path, backend: str, workers: int) -> Iterator[Server]:
    """A ``--workers`` set (one process for 1) of ``tree``'s daemonkit, every worker ready."""
    # -P: the working directory (this checkout) must not come before --tree.
    server = Server(
        f"{backend}-{workers}",
        [
            *(python_executable(), "-P", "-m", "daemonkit", str(TARGET)),
            *("--backend", backend, "--workers", str(workers), "--log-level", "info"),
        ],
        env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
            "NO_COLOR": "1",
        },
    )
    port = free_port()
    server.argv += ["--listen", f"tcp://127.0.0.1:{port}"]
    try:
        server.start(port)
        server.wait_ready(READY_TIMEOUT)
        ready = r"all \d+ worker\(s\) ready" if workers > 1 else r"listening on"
        deadline = time.monotonic() + READY_TIMEOUT
        while not re.search(ready, server.stderr_tail(1 << 20)):
            if not server.alive() or time.monotonic() > deadline:
                raise BenchError(f"the set did not start:\n{server.stderr_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def pids_of(server: Server) -> list[int]:
    """The supervisor (or single process) and its workers."""
    assert server.proc is not None
    pid = server.proc.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def held_split(port: int, count: int) -> Counter[str]:
    """``count`` clients connect at once, stay, and ask their worker; by worker id."""
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
            sel.register(sock, selectors.EVENT_WRITE)
        split: Counter[str] = Counter()
        waiting = count
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for key, events in sel.select(1.0):
                sock = key.fileobj  # type: ignore[assignment]
                if events & selectors.EVENT_WRITE:
                    sock.send(ASK)
                    sel.modify(sock, selectors.EVENT_READ)
                else:
                    sel.unregister(sock)
                    split[sock.recv(64).strip().decode() or "closed"] += 1
                    waiting -= 1
        if waiting:
            split["no answer"] += waiting
        return split
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def short_split(port: int) -> Counter[str]:
    """SHORT_THREADS threads making short connections for SHORT_SECONDS; by worker id."""
    split: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + SHORT_SECONDS

    def client() -> None:
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT) as sock:
                    sock.sendall(ASK)
                    answer = sock.recv(64).strip().decode() or "closed"
            except OSError as exc:
                answer = type(exc).__name__
            with lock:
                split[answer] += 1

    threads = [threading.Thread(target=client) for _ in range(SHORT_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return split


def sockets_of(pid: int) -> int:
    """How many sockets process ``pid`` has open (0 if it is gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def count_held(pids: list[int], idle: dict[int, int], into: dict[int, int]) -> None:
    """Put in ``into`` how many sockets each of ``pids`` holds beyond its ``idle`` count."""
    into.update({pid: sockets_of(pid) - idle[pid] for pid in pids})


def show(split: Counter[str]) -> str:
    total = sum(split.values())
    parts = [f"w{k}: {v} ({100 * v / total:.0f}%)" for k, v in sorted(split.items())]
    return ", ".join(parts) + f" of {total}"


def part_spread(tree: Path, backends: list[str], connections: int) -> None:
    loadgen = build_c("loadgen")
    for backend in backends:
        for busy in (False, True):
            with running(tree, backend, 2) as served:
                load = None
                if busy:
                    idle = {p: sockets_of(p) for p in pids_of(served)[1:]}
                    load = subprocess.Popen(
                        [
                            *(str(loadgen), "--host=127.0.0.1", f"--port={served.port}"),
                            *(f"--connections={BUSY_CONNECTIONS}", f"--pipeline={CPU_PIPELINE}"),
                            f"--duration={SHORT_SECONDS + 3}",
                            "--warmup=0",
                        ],
                        stdout=subprocess.DEVNULL,
                    )
                    time.sleep(0.5)  # connected and busy
                    busy_held = [sockets_of(p) - n for p, n in idle.items()]
                try:
                    held = held_split(served.port, connections)
                    short = short_split(served.port)
                finally:
                    if load is not None:
                        load.kill()
                        load.wait()
            how = f"busy (loadgen's {BUSY_CONNECTIONS} held {busy_held})" if busy else "idle"
            print(f"spread {backend:8} {how}: {connections} held at once: {show(held)}")
            print(f"spread {backend:8} {how}: short x{SHORT_THREADS} threads: {show(short)}")


def part_stopped(tree: Path, backends: list[str], connections: int) -> None:
    """Worker 1 accepts nothing (SIGSTOP, a loop blocked for long): how long worker 0 takes."""
    for backend in backends:
        with running(tree, backend, 2) as served:
            stopped = pids_of(served)[2]
            os.kill(stopped, signal.SIGSTOP)
            try:
                time.sleep(STOPPED_FOR)
                began = time.monotonic()
                held = held_split(served.port, connections)
                took = time.monotonic() - began
            finally:
                os.kill(stopped, signal.SIGCONT)
        print(f"spread {backend:8} w1 stopped: {connections} at once in {took:.2f}s: {show(held)}")


def part_cpu(tree: Path, duration: float) -> None:
    loadgen = build_c("loadgen")
    for workers in (1, 2):
        with running(tree, "uvloop", workers) as served:
            pids = pids_of(served)
            idle = {pid: sockets_of(pid) for pid in pids}
            before = {pid: process_cpu_seconds(pid) for pid in pids}
            held: dict[int, int] = {}
            sampler = threading.Timer(duration / 2, count_held, (pids, idle, held))
            sampler.start()
            record = run_loadgen(
                loadgen,
                port=served.port,
                connections=CPU_CONNECTIONS,
                size=CPU_SIZE,
                pipeline=CPU_PIPELINE,
                duration=duration,
                warmup=0.0,
                cpus=None,
            )
            sampler.join()
            cpu = {pid: process_cpu_seconds(pid) - before[pid] for pid in pids}
        msgs = record["msgs_total"]
        supervisor = cpu[pids[0]] if workers > 1 else 0.0
        total = sum(cpu.values())
        spread = [held.get(p, 0) for p in pids[1:]] if workers > 1 else [held.get(pids[0], 0)]
        print(
            f"cpu    {workers} worker(s): {msgs / record['seconds']:,.0f} msg/s, "
            f"server CPU {total:.2f} s = {1e6 * total / max(1, msgs):.2f} µs/msg "
            f"(supervisor {supervisor:.2f} s), "
            f"connections per worker {spread} of {CPU_CONNECTIONS}, "
            f"loadgen CPU {record['cpu_seconds']:.2f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("spread", "cpu", "all"), default="all")
    parser.add_argument("--backends", default="uvloop,asyncio")
    parser.add_argument("--tree", type=Path, default=REPO_DIR, help="daemonkit checkout to run")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    if not 1 <= args.connections <= 10_000 or not 0 < args.duration <= 30:
        parser.error("--connections is 1 to 10000, --duration up to 30 s")
    print(f"daemonkit from {args.tree.resolve()}; {os.cpu_count()} CPU(s), nothing pinned")
    try:
        if args.part in ("spread", "all"):
            part_spread(args.tree, args.backends.split(","), args.connections)
            part_stopped(args.tree, args.backends.split(","), args.connections)
        if args.part in ("cpu", "all"):
            part_cpu(args.tree, args.duration)
    except BenchError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
