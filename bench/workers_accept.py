"""Inherited listening socket vs SO_REUSEPORT, for ``--workers`` (docs/design.md).

Run: python bench/workers_accept.py [CONNECTIONS]

1. Fairness: 2 worker processes serve CONNECTIONS short connections (connect,
   read the worker's id, close); prints how many each served.
2. Death: worker 1 stops accepting, 50 connections queue, worker 1 dies;
   prints how many of them were still answered (by worker 0) and how many
   were reset.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time


def serve(sock: socket.socket, wid: int, pause: bool) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if pause:
        signal.pause()  # bound, never accepting: its queue fills
    sock.setblocking(False)
    while True:
        select.select([sock], [], [])
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            continue  # another worker won the wake-up
        conn.sendall(b"%d" % wid)
        conn.close()


def reuseport_socket(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def start(mode: str, pause_second: bool = False) -> tuple[int, list[int]]:
    shared = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = shared.getsockname()[1]
    if mode == "reuseport":
        shared.close()
    pids = []
    for wid in range(2):
        sock = shared if mode == "inherit" else reuseport_socket(port)
        pid = os.fork()
        if pid == 0:
            serve(sock, wid, pause_second and wid == 1)
            os._exit(0)
        if mode == "reuseport":
            sock.close()
        pids.append(pid)
    if mode == "inherit":
        shared.close()
    time.sleep(0.2)
    return port, pids


def ask(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            return c.recv(16).decode() or "closed"
    except OSError as exc:
        return type(exc).__name__


def stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    for mode in ("inherit", "reuseport"):
        port, pids = start(mode)
        counts: dict[str, int] = {}
        for _ in range(n):
            r = ask(port)
            counts[r] = counts.get(r, 0) + 1
        stop(pids)
        print(f"{mode:10} fairness over {n} connections: {dict(sorted(counts.items()))}")

        port, pids = start(mode, pause_second=True)
        # Worker 0 is also stopped for a moment so both queues fill.
        os.kill(pids[0], signal.SIGSTOP)
        clients = []
        for _ in range(50):
            c = socket.socket()
            c.settimeout(3)
            c.connect(("127.0.0.1", port))  # completes in the kernel: queued
            clients.append(c)
        os.kill(pids[1], signal.SIGKILL)
        os.waitpid(pids[1], 0)
        os.kill(pids[0], signal.SIGCONT)
        outcome: dict[str, int] = {}
        for c in clients:
            try:
                r = c.recv(16).decode() or "closed"
            except OSError as exc:
                r = type(exc).__name__
            c.close()
            outcome[r] = outcome.get(r, 0) + 1
        stop(pids[:1])
        print(f"{mode:10} 50 queued, worker 1 killed: {dict(sorted(outcome.items()))}")


if __name__ == "__main__":
    main()
