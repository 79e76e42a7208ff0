"""`make demo`: the echo daemon, loaded with 1,000 bots for 10 seconds.

What a newcomer would do by hand in two terminals, in one command:

1. start ``examples/echo_daemon.py`` as a real process on a free port;
2. talk to it once with a plain socket (so a broken daemon fails fast);
3. run ``python -m daemonkit bots examples/echo_bot.py`` against it: 1,000
   bots sending 5,000 requests a second in all (the open model), live
   progress, the summary table, the daemon's memory per bot, and an HTML
   report;
4. stop the daemon with SIGTERM and check that it exits cleanly.

The load is a fixed rate, not as fast as the bots can go: in the closed
model one bots process is the first to run out of CPU, and its figures then
measure itself, not the daemon. At 5,000/s the bots process stays well
under one core, so the latencies are the daemon's.

``python examples/demo.py --bots 100 --duration 3s`` makes it shorter.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPORT = HERE.parent / "reports" / "demo.html"
# Requests per second of the demo's load: about a fifth of what one bots
# process sends against the echo daemon flat out (25-30k/s on a laptop), so
# the load generator is nowhere near one core on a slow machine either.
DEMO_RATE = "5000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def show(cmd: list[str]) -> None:
    shown = [c.replace(str(Path.cwd()) + os.sep, "") for c in cmd]
    shown[0] = "python" if cmd[0] == sys.executable else shown[0]
    print("$", " ".join(shown), flush=True)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> socket.socket | None:
    deadline = time.monotonic() + 15
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", default="1000")
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--rate", default=DEMO_RATE, help="requests per second in all")
    parser.add_argument("--report", type=Path, default=REPORT, help="where the HTML report goes")
    args = parser.parse_args(argv)
    report = args.report.resolve()

    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    daemon_cmd = [sys.executable, "-m", "daemonkit", str(HERE / "echo_daemon.py")]
    daemon_cmd += ["--listen", endpoint, "--log-level", "warning"]
    show(daemon_cmd)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(daemon_cmd, env=env)
    try:
        sock = wait_for_port(port, proc)
        if sock is None:
            print("demo: the daemon did not start", file=sys.stderr)
            return 1
        with sock:
            sock.sendall(b"hello, daemon\n")
            print(f"sent b'hello, daemon\\n', got back {sock.recv(4096)!r}", flush=True)

        report.parent.mkdir(parents=True, exist_ok=True)
        bots_cmd = [sys.executable, "-m", "daemonkit", "bots", str(HERE / "echo_bot.py")]
        bots_cmd += ["--target", endpoint, "--bots", args.bots, "--spawn-rate", "500"]
        bots_cmd += ["--duration", args.duration, "--rate", args.rate]
        bots_cmd += ["--server-pid", str(proc.pid), "--html", str(report), "--fail-if", "errors>0"]
        show(bots_cmd)
        bots = subprocess.run(bots_cmd, env=env, check=False)
        if bots.returncode != 0:
            print(f"demo: the bots run failed (exit {bots.returncode})", file=sys.stderr)

        show(["kill", "-TERM", str(proc.pid)])
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        print(f"daemon exited with status {code}")
        if bots.returncode == 0:
            print(f"open {_shown(report)} in a browser for the charts")
        return 0 if code == 0 and bots.returncode == 0 else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
