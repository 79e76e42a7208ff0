"""`make demo`: start the echo daemon, talk to it, stop it with SIGTERM.

A real process, a real socket, a real signal: what a newcomer would do by
hand in three terminals, in one command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "daemonkit", str(HERE / "echo_daemon.py"), "--listen", endpoint]
    print(
        "$",
        " ".join(["python", "-m", "daemonkit", "examples/echo_daemon.py", "--listen", endpoint]),
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("demo: the daemon did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        with sock:
            for line in (b"hello, daemon\n", b"this is daemonkit\n"):
                sock.sendall(line)
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                print(f"sent {line!r}, got back {reply!r}")
        print("$ kill -TERM", proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        print(f"daemon exited with status {code}")
        return 0 if code == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
