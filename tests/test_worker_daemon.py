"""Worker daemons: no listening endpoint, and ``max_runtime`` recycling.

A daemon with ``listen = []`` runs timers, spawned tasks and
offloaded work and serves no client. ``max_runtime`` (plus a random extra of
up to ``max_runtime_jitter`` of it) recycles the process: by the
zero-downtime upgrade when it listens, else by a clean exit with
:data:`~daemonkit.cli.run.EXIT_RECYCLE` for its supervisor to start a fresh one.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from daemonkit import ConfigError, Daemon
from daemonkit.cli.run import EXIT_RECYCLE
from daemonkit.ops.upgrade import runtime_deadline
from daemonkit.testing import DaemonRunner, FakeClock
from tests.helpers import ROOT

WAIT = 10.0  # real seconds a wait in these tests may take at most
PROCESS_WAIT = 60.0  # a whole CLI process: start, run, stop


@pytest.mark.parametrize("listen", [[], ()])
def test_a_daemon_may_listen_nowhere(listen: object) -> None:
    daemon = Daemon(listen=listen)
    assert daemon.endpoints == []


@pytest.mark.parametrize("listen", ["", "  ", None])
def test_an_empty_string_or_none_is_still_a_mistake(listen: str | None) -> None:
    with pytest.raises(ConfigError, match=r"listen = \[\]"):
        Daemon(listen=listen)


def test_a_worker_runs_its_timers_and_stops(backend: str) -> None:
    ticks: list[int] = []

    class Worker(Daemon):
        listen = []

        def on_start(self) -> None:
            self.every(1.0, ticks.append, 1)

    clock = FakeClock()
    daemon = Worker()
    with DaemonRunner(daemon, backend=backend, clock=clock) as runner:
        runner.advance(3.0)
        assert daemon.addresses == [] and daemon.listeners == []
    assert ticks == [1, 1, 1]
    assert daemon.is_stopped()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_runtime": 0}, "max_runtime"),
        ({"max_runtime": math.inf}, "max_runtime"),
        ({"max_runtime": 10, "max_runtime_jitter": -0.1}, "max_runtime_jitter"),
        ({"max_runtime": 10, "max_runtime_jitter": 1.5}, "max_runtime_jitter"),
        ({"max_runtime": 10, "max_runtime_jitter": "x"}, "max_runtime_jitter"),
    ],
)
def test_bad_runtime_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Daemon(**settings)


def test_the_deadline_takes_a_random_extra_of_up_to_the_jitter() -> None:
    assert runtime_deadline(100.0, 0.1, lambda: 0.0) == 100.0
    assert runtime_deadline(100.0, 0.1, lambda: 0.5) == pytest.approx(105.0)
    assert runtime_deadline(100.0, 0.0, lambda: 0.99) == 100.0


def test_a_worker_past_max_runtime_stops_gracefully_and_says_so(backend: str) -> None:
    clock = FakeClock()
    daemon = Daemon(listen=[], max_runtime=10.0, max_runtime_jitter=0.5)
    runner = DaemonRunner(daemon, backend=backend, clock=clock).start()
    try:
        runner.advance(9.99)  # before max_runtime: never
        assert not runner.call(daemon.is_stopping)
        assert not daemon.retired
        runner.advance(5.02)  # past max_runtime plus the largest extra: always
        runner.stop()  # waits for the thread; the stop has begun by itself
        assert daemon.retired and daemon.is_stopped()
    finally:
        runner.stop(now=True)


def test_a_listening_daemon_past_max_runtime_recycles_by_upgrade(backend: str) -> None:
    clock = FakeClock()
    daemon = Daemon(listen="tcp://127.0.0.1:0", max_runtime=10.0, max_runtime_jitter=0.0)
    upgrades: list[int] = []
    with DaemonRunner(daemon, backend=backend, clock=clock) as runner:
        runner.call(daemon.set_upgrade_handler, lambda: upgrades.append(1) or 4242)
        runner.advance(9.9)
        assert upgrades == []
        runner.advance(0.1)
        assert upgrades == [1]
        assert not runner.call(daemon.is_stopping)  # the upgrade stops it once the new one is up
        assert not daemon.retired


def test_a_worker_process_exits_with_the_recycle_status(tmp_path: Path) -> None:
    # The stop waits for the offloaded job: its callback logs before the exit.
    target = tmp_path / "worker.py"
    target.write_text(
        textwrap.dedent(
            """
            import time
            from daemonkit import Daemon

            class Worker(Daemon):
                listen = []

                def on_start(self):
                    self.offload(time.sleep, 0.5, callback=self.done)

                def done(self, _):
                    self.log.warning("job done")
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "daemonkit", f"{target}:Worker", "--max-runtime", "0.1s"],
        capture_output=True,
        cwd=ROOT,
        timeout=PROCESS_WAIT,
        check=False,
    )
    err = proc.stderr.decode()
    assert proc.returncode == EXIT_RECYCLE == 75, err
    assert "max_runtime" in err
    assert "job done" in err
    assert err.index("job done") < err.index("stopped")
    assert "Traceback" not in err


def test_max_runtime_on_the_command_line(tmp_path: Any) -> None:
    from daemonkit.cli.config import SETTINGS

    names = {s.name for s in SETTINGS}
    assert {"max_runtime", "offload_threads", "offload_processes"} <= names
    assert {"offload_queue_limit", "offload_timeout"} <= names
