"""How many requests a SIGTERM loses: 100 clients making short connections, stop mid-run.

Each run starts a daemon (``bench/servers/daemonkit_lines.py`` or
``bench/servers/http_daemonkit.py``) through the CLI, lets CLIENTS threads
connect, send one request, read the reply and close, in a loop, sends
SIGTERM after WARMUP seconds, and lets the clients go on until the port
refuses them. A request counts as **lost** when the client had sent all of
it before the signal was sent and got a reset or an EOF instead of its
reply; connections refused (or requests sent) after the signal do not
count. Every run is bounded: RUN_DEADLINE seconds, and each socket
operation SOCKET_TIMEOUT::

    .venv/bin/python bench/stop_loss.py                 # 10 runs x {uvloop, asyncio} x {echo, http}
    .venv/bin/python bench/stop_loss.py --runs 3 --backends asyncio --protocols http
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "echo": (ROOT / "bench/servers/daemonkit_lines.py", "tcp"),
    "http": (ROOT / "bench/servers/http_daemonkit.py", "http"),
}
REQUESTS = {"echo": (b"hello\n", b"\n"), "http": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"!\n")}
CLIENTS = 100
WARMUP = 0.5  # seconds of load before the SIGTERM
RUN_DEADLINE = 20.0  # no run lasts longer
SOCKET_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(backend: str, protocol: str) -> tuple[int, int, int]:
    """Return (requests answered, requests lost, connections refused after the signal)."""
    path, scheme = SERVERS[protocol]
    request, end = REQUESTS[protocol]
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "daemonkit", str(path), "--backend", backend),
            *("--listen", f"{scheme}://127.0.0.1:{port}", "--log-level", "warning"),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + RUN_DEADLINE
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"daemon on port {port} did not start") from None
            time.sleep(0.02)
    signalled = threading.Event()
    lock = threading.Lock()
    counts = {"answered": 0, "lost": 0, "refused": 0}

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
            except OSError:
                if signalled.is_set():
                    with lock:
                        counts["refused"] += 1
                    return
                continue
            with sock:
                try:
                    sock.sendall(request)
                except OSError:
                    continue  # not fully sent: never counts as lost
                sent_before = not signalled.is_set()
                data = b""
                try:
                    while not data.endswith(end):
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                with lock:
                    if data.endswith(end):
                        counts["answered"] += 1
                    elif sent_before:
                        counts["lost"] += 1
            if signalled.is_set() and proc.poll() is not None:
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(WARMUP)
    signalled.set()  # before the signal: a request sent after this line is not counted
    os.kill(proc.pid, signal.SIGTERM)
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return counts["answered"], counts["lost"], counts["refused"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backends", default="uvloop,asyncio")
    parser.add_argument("--protocols", default="echo,http")
    args = parser.parse_args(argv)
    for protocol in args.protocols.split(","):
        for backend in args.backends.split(","):
            losses = []
            answered = 0
            for _ in range(args.runs):
                ok, lost, _refused = one_run(backend, protocol)
                answered += ok
                losses.append(lost)
            print(
                f"{protocol:5} {backend:8} runs={args.runs} lost per run={losses} "
                f"total lost={sum(losses)} answered={answered}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
