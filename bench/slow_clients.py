"""What slow clients can hold: tricklers against a line echo, non-readers of an HTTP stream.

Two bounded runs on 127.0.0.1, each against a daemon started with the
command line (``python -m daemonkit bench/slow_clients.py:CLASS``), each run
twice: with the deadlines off (what daemonkit did before ``frame_timeout``
and ``send_timeout`` existed) and with them on.

* ``trickle``: 1,000 clients each send one byte a second of a line they
  never finish. Reported: the daemon's RSS growth and the connections it
  still holds after each ten seconds.
* ``stream``: 100 clients ask for a 64 MiB HTTP response and read nothing.
  Reported: the bytes the kernel queues for them (``ss -tn``: the daemon's
  send queues plus the clients' receive queues) and the connections held.

A third ``stream`` run bounds the kernel's share instead, with the endpoint
option ``sndbuf=65536`` and no deadline.

Run it (about 90 s in all; the default open-file limit of 20,000 is enough)::

    .venv/bin/python bench/slow_clients.py
    .venv/bin/python bench/slow_clients.py trickle --clients 1000 --seconds 25

Nothing leaves the machine; every wait has a deadline; the daemons are
stopped (SIGTERM, then SIGKILL) whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daemonkit import Connection, Daemon, Lines
from daemonkit.core.endpoints import Endpoint

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
#: Seconds the daemon gets to listen before the run is abandoned.
READY_TIMEOUT = 15.0
#: Size of the HTTP response each stream client asks for (the issue's 64 MiB).
STREAM_BYTES = 64 << 20
CHUNK = b"s" * (64 * 1024)


class TrickleEcho(Daemon):
    """Echoes lines; what a trickler is measured against."""

    listen = "tcp://127.0.0.1:7000"
    framing = Lines
    max_connections = 5000

    def on_read(self, conn: Connection, line: Any) -> None:
        conn.send(line)


def _buffers() -> dict[str, int]:
    """The ``sndbuf`` option the ``stream`` run asks for (through the environment)."""
    size = os.environ.get("SLOW_CLIENTS_SNDBUF")
    return {"sndbuf": int(size)} if size else {}


class BigStream(Daemon):
    """Answers every GET with a 64 MiB body, written as fast as the client takes it."""

    listen = Endpoint("http://127.0.0.1:7000", **_buffers())

    def on_request(self, conn: Any, request: Any) -> None:
        conn.respond_stream(200, [("content-length", str(STREAM_BYTES))])
        conn.state["left"] = STREAM_BYTES
        self.on_drain(conn)

    def on_drain(self, conn: Connection) -> None:
        left = conn.state.get("left", 0)
        while left > 0:
            left -= len(CHUNK)
            more = conn.write_body(CHUNK)  # type: ignore[attr-defined]
            if not more:
                break
        conn.state["left"] = left
        if left <= 0 and conn.request is not None:  # type: ignore[attr-defined]
            conn.end_body()  # type: ignore[attr-defined]


# -- plumbing ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def daemon(
    target: str, port: int, flags: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m daemonkit HERE:target`` on ``port``; stop it on the way out."""
    scheme = "http" if target == "BigStream" else "tcp"
    cmd = [sys.executable, "-m", "daemonkit", f"{HERE}:{target}"]
    cmd += ["--listen", f"{scheme}://127.0.0.1:{port}", "--log-level", "warning", *flags]
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"{target} did not start: {err[-2000:]}") from None
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_sockets(sockets: list[socket.socket | None]) -> int:
    """Close the clients whose connection the daemon ended; return how many are left."""
    for i, sock in enumerate(sockets):
        if sock is None:
            continue
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            sock.close()
            sockets[i] = None
    return sum(s is not None for s in sockets)


def queued(port: int) -> tuple[int, int, int]:
    """The daemon's connections on ``port`` and their kernel queues, from ``ss -tan``.

    Returns (established daemon sockets, bytes in the daemon's send queues,
    bytes in the clients' receive queues). Sockets in every state count: a
    closed connection whose socket lingers, orphaned, in FIN-WAIT-1 still
    holds its send queue.
    """
    out = subprocess.run(["ss", "-tanH"], capture_output=True, text=True, timeout=10).stdout
    held = send = recv = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] == "LISTEN":
            continue
        state, rq, sq, local, peer = fields[0], int(fields[1]), int(fields[2]), fields[3], fields[4]
        if local.endswith(f":{port}"):
            send += sq
            held += state == "ESTAB"
        elif peer.endswith(f":{port}"):
            recv += rq
    return held, send, recv


# -- the runs ------------------------------------------------------------------------


def trickle(clients: int, seconds: int, flags: Sequence[str], label: str) -> None:
    port = free_port()
    with daemon("TrickleEcho", port, flags) as proc:
        time.sleep(0.5)
        base = rss_kib(proc.pid)
        sockets: list[socket.socket | None] = []
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            sockets.append(sock)
        start = time.monotonic()
        print(f"  {label}: {clients} clients, 1 byte/s each, for {seconds} s")
        for second in range(1, seconds + 1):
            for sock in sockets:
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
            left = open_sockets(sockets)
            if second % 10 == 0 or second == seconds or not left:
                grown = rss_kib(proc.pid) - base
                print(f"    t={second:3d}s  held {left:5d}  daemon RSS +{grown / 1024:6.1f} MiB")
            if not left:
                break
            time.sleep(max(0.0, start + second - time.monotonic()))
        for sock in sockets:
            if sock is not None:
                sock.close()


def stream(clients: int, seconds: int, flags: Sequence[str], label: str, sndbuf: int = 0) -> None:
    port = free_port()
    env = {"SLOW_CLIENTS_SNDBUF": str(sndbuf)} if sndbuf else None
    with daemon("BigStream", port, flags, env):
        sockets: list[socket.socket | None] = []
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n")
            sock.setblocking(False)
            sockets.append(sock)
        print(f"  {label}: {clients} clients ask for {STREAM_BYTES >> 20} MiB and read nothing")
        start = time.monotonic()
        for second in range(1, seconds + 1):
            time.sleep(max(0.0, start + second - time.monotonic()))
            left, send, recv = queued(port)
            if second in (2, 5, 10) or second == seconds:
                total = (send + recv) / (1 << 20)
                print(
                    f"    t={second:3d}s  held {left:4d}  kernel queues {total:7.1f} MiB "
                    f"(daemon send {send / (1 << 20):.1f}, clients receive {recv / (1 << 20):.1f})"
                )
        for sock in sockets:
            if sock is not None:
                sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", choices=("trickle", "stream", "all"), default="all")
    parser.add_argument("--clients", type=int, help="default: 1000 tricklers, 100 readers")
    parser.add_argument(
        "--seconds", type=int, help="length of each run (default: 25 trickle, 12 stream; max 50)"
    )
    args = parser.parse_args(argv)
    off = ["--idle-timeout", "0", "--frame-timeout", "0", "--send-timeout", "0"]
    if args.run in ("trickle", "all"):
        n = args.clients or 1000
        print("trickle: 1 byte/s of a line never finished, against a Lines echo daemon")
        seconds = min(args.seconds or 25, 50)
        trickle(n, seconds, off, "deadlines off (as before)")
        trickle(n, seconds, ["--idle-timeout", "5"], "--idle-timeout 5 (frame deadline 10 s)")
    if args.run in ("stream", "all"):
        n = args.clients or 100
        print("stream: readers of a large HTTP response that take nothing")
        seconds = min(args.seconds or 12, 50)
        stream(n, seconds, off, "deadlines off (as before)")
        stream(n, seconds, ["--send-timeout", "5"], "--send-timeout 5")
        stream(n, seconds, off, "deadlines off, sndbuf=65536", sndbuf=65536)
    return 0


if __name__ == "__main__":
    sys.exit(main())
