"""A redis-server of a test's own: a free port of 127.0.0.1, nothing written to disk.

The broker's tests and the asyncio-library tests both drive a real Redis
(Debian's ``redis-server``, installed by ``scripts/ensure-test-tools``).
:class:`RedisServer` starts one, stops it gracefully (:meth:`stop`) or
abruptly (:meth:`kill`: an outage, nothing saved), pauses it (SIGSTOP) and
starts it again on the same port. Only the process started here is ever
signalled, by its pid. :data:`REDIS_SERVER` is None when the program is
missing: the modules skip then, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import free_port, wait_for_port

__all__ = ["REDIS_SERVER", "WAIT", "RedisServer"]

#: The program, or None when it is not installed.
REDIS_SERVER = shutil.which("redis-server")
#: Real seconds a start, a stop or a command may take at most.
WAIT = 10.0


class RedisServer:
    """A redis-server on a free port of 127.0.0.1, without persistence; restartable there."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it accepts."""
        assert REDIS_SERVER is not None and self.proc is None
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots, no append-only file: nothing to disk
            "appendonly": "no",
            "dir": str(self.workdir),
            "logfile": str(self.workdir / "redis.log"),
        }
        argv = [REDIS_SERVER]
        for name, value in options.items():
            argv += [f"--{name}", value]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, self.proc, WAIT)

    def stop(self) -> None:
        """Stop it gracefully (SIGCONT first, in case a test paused it) and reap it."""
        self._end(abrupt=False)

    def kill(self) -> None:
        """SIGKILL it (an outage: nothing is saved) and reap it."""
        self._end(abrupt=True)

    def _end(self, *, abrupt: bool) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if abrupt:
                    os.kill(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
                try:
                    proc.wait(WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(WAIT)
        finally:
            if proc.stderr is not None:
                proc.stderr.close()

    def pause(self) -> None:
        """SIGSTOP: the server holds every command it is sent until :meth:`resume`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def client(self) -> Any:
        """A blocking redis-py client of this server (close it: ``with ... as client``)."""
        import redis  # the modules that use this skip without it

        return redis.Redis(port=self.port, socket_timeout=WAIT)

    def get(self, key: str) -> bytes | None:
        """The value of ``key``, read with redis-py's blocking client."""
        with self.client() as client:
            value: bytes | None = client.get(key)
            return value
