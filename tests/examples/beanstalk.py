"""Start and stop a beanstalkd-protocol server for a test: real beanstalkd, or the example.

Two kinds of server speak the protocol:

* ``"beanstalkd"``: the real program (Debian's ``beanstalkd``, 1.12), run as
  ``beanstalkd -l 127.0.0.1 -p PORT [-z MAX_JOB_SIZE]``;
* ``"jobqueue"``: ``examples/jobqueue``, run as ``python -m daemonkit
  examples/jobqueue/server.py --listen tcp://127.0.0.1:PORT`` with
  ``JOBQUEUE_MAX_JOB_SIZE``, as a user starts it.

:func:`start_server` starts one on a free port of 127.0.0.1 and waits until it
accepts; :meth:`Server.stop` ends it (SIGTERM, then SIGKILL after a deadline)
and :meth:`Server.kill` kills it (``kill -9``: an outage, or a crash). Only the
process started here is ever signalled, by its pid. :func:`running` does both
around a ``with`` block. Each server logs to a file in the directory the test
gives (its ``tmp_path``), so a failure can show the log's tail.

:func:`skip_unless_available` skips a test, with the reason, when the program
is not installed or the example is not written yet; once
``examples/jobqueue/server.py`` exists, a server that fails to start fails the
test instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import PYTHON, ROOT, free_port, wait_for_port

__all__ = [
    "JOBQUEUE_SERVER",
    "KINDS",
    "Server",
    "running",
    "skip_unless_available",
    "start_server",
]

#: The two servers the compatibility tests compare: the reference first.
KINDS = ("beanstalkd", "jobqueue")
#: The example server's main module: its existence decides skip or fail.
JOBQUEUE_SERVER = ROOT / "examples" / "jobqueue" / "server.py"
#: Seconds a server may take to accept its first connection: a Python
#: daemon's start with imports on a loaded 2-core CI machine, with room.
START_TIMEOUT = 20.0
#: Seconds a server may take to exit after SIGTERM before it is killed: the
#: daemon's graceful stop with nothing in flight takes milliseconds.
STOP_TIMEOUT = 10.0


@dataclass
class Server:
    """One running server: its kind, port and process (started by this module)."""

    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    options: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> tuple[str, int]:
        """``("127.0.0.1", port)``, as socket and greenstalk take it."""
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        """``tcp://127.0.0.1:PORT``, as a daemonkit link takes it."""
        return f"tcp://127.0.0.1:{self.port}"

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of the server's output (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, wait up to STOP_TIMEOUT, else SIGKILL; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the server (an outage) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)


def skip_unless_available(kind: str) -> None:
    """Skip the calling test when ``kind`` cannot run here, saying why."""
    if kind == "beanstalkd" and shutil.which("beanstalkd") is None:
        pytest.skip("beanstalkd is not installed (apt-get install beanstalkd)")
    if kind == "jobqueue" and not JOBQUEUE_SERVER.exists():
        pytest.skip(f"{JOBQUEUE_SERVER.relative_to(ROOT)} is not written yet")


def _command(kind: str, port: int, max_job_size: int | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    # Debug mode slows the server down many times; the tests check replies, not it.
    env.pop("PYTHONASYNCIODEBUG", None)
    if kind == "beanstalkd":
        argv = [shutil.which("beanstalkd") or "beanstalkd", "-l", "127.0.0.1", "-p", str(port)]
        if max_job_size is not None:
            argv += ["-z", str(max_job_size)]
        return argv, env
    if kind == "jobqueue":
        env.pop("JOBQUEUE_WAL", None)
        if max_job_size is not None:
            env["JOBQUEUE_MAX_JOB_SIZE"] = str(max_job_size)
        # The documented command (the cwd is the project's root).
        argv = [PYTHON, "-m", "daemonkit", str(JOBQUEUE_SERVER.relative_to(ROOT)),
                "--listen", f"tcp://127.0.0.1:{port}"]  # fmt: skip
        return argv, env
    raise ValueError(f"unknown server kind {kind!r}; expected one of {KINDS}")


def start_server(
    kind: str, log_dir: Path, *, max_job_size: int | None = None, port: int | None = None
) -> Server:
    """Start a ``kind`` server on a free (or the given) port and wait until it accepts.

    Skips the test when the server cannot run here (see
    :func:`skip_unless_available`); fails it, with the server's log, when
    the server exits or does not accept within START_TIMEOUT.
    """
    skip_unless_available(kind)
    port = free_port() if port is None else port
    argv, env = _command(kind, port, max_job_size)
    log_path = log_dir / f"{kind}-{port}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=ROOT
        )
    server = Server(kind, port, proc, log_path, {"max_job_size": max_job_size})
    try:
        wait_for_port(port, proc, timeout=START_TIMEOUT)
    except AssertionError as exc:
        server.kill()
        raise AssertionError(
            f"{kind} did not start on port {port}: {exc}\n{server.log()}"
        ) from None
    if proc.poll() is not None:  # someone else's server took the port meanwhile
        raise AssertionError(f"{kind} exited with {proc.returncode}:\n{server.log()}")
    return server


@contextlib.contextmanager
def running(kind: str, log_dir: Path, **options: object) -> Iterator[Server]:
    """A ``kind`` server for the ``with`` block; stopped (or killed) after it."""
    server = start_server(kind, log_dir, **options)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
