"""``--workers N``: a supervisor and real worker processes sharing its listeners."""

from __future__ import annotations

import logging
import os
import re
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit.cli import run as cli
from daemonkit.errors import ConfigError
from daemonkit.ops.upgrade import ENV_PARENT
from daemonkit.ops.workers import (
    ACCEPT_SHARE_SLACK,
    ACCEPT_SHARE_STALE,
    CRASH_BURST,
    ENV_SHARES,
    ENV_WORKER,
    EXIT_NO_WORKERS,
    MAX_WORKERS_PER_CPU,
    AcceptShares,
    CrashLoop,
    Supervisor,
    check_workers,
    tag_worker_logs,
    worker_id_from_env,
)
from tests.helpers import (
    LOAD_THREADS,
    PYTHON,
    ROOT,
    SPLIT_CONNECTIONS,
    TINY_WORKER,
    WAIT,
    Load,
    Served,
    recv_until,
    supervise_here,
)

# Connections the accept-sharing test holds open at once, and the least
# share of them each of 2 workers must hold (generous: it measured 41-52 %).
HELD_CONNECTIONS = 400
HELD_MIN_SHARE = 0.2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A supervisor with 2 workers, all ready (on uvloop; the single process on asyncio)."""
    s = Served(tmp_path, 2)
    try:
        s.wait_log(r"all 2 worker\(s\) ready")
        yield s
    finally:
        s.close()


# -- the guard, the settings, the bookkeeping ------------------------------------------


def test_the_fork_bomb_guard_needs_force() -> None:
    limit = MAX_WORKERS_PER_CPU * 2
    assert check_workers(limit, cpus=2) == limit
    with pytest.raises(ConfigError, match=r"more than 4 per CPU .*--workers-force"):
        check_workers(limit + 1, cpus=2)
    assert check_workers(limit + 1, cpus=2, force=True) == limit + 1
    with pytest.raises(ConfigError):
        check_workers(0)


def test_too_many_workers_is_a_config_error_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    too_many = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1) + 1
    args = [str(ROOT / "examples" / "echo_daemon.py"), "--listen", "tcp://127.0.0.1:0"]
    assert cli.main([*args, "--workers", str(too_many)]) == cli.EXIT_CONFIG
    assert "--workers-force" in capsys.readouterr().err
    assert cli.main([*args, "--workers", "0"]) == cli.EXIT_USAGE


def test_a_crash_loop_is_burst_deaths_within_the_interval() -> None:
    loop = CrashLoop(burst=3, interval=10.0)
    assert not loop.died(0.0)
    assert not loop.died(4.0)
    assert not loop.died(11.0)  # 0..11: three deaths, but over 11 s
    assert loop.died(12.0)  # 4, 11, 12: within 10 s
    assert CRASH_BURST == 5


def test_the_worker_id_counts_only_from_our_parent() -> None:
    mine = {ENV_WORKER: "3", ENV_PARENT: str(os.getppid())}
    assert worker_id_from_env(mine) == 3
    assert worker_id_from_env({**mine, ENV_PARENT: str(os.getppid() + 1)}) is None
    assert worker_id_from_env({ENV_PARENT: str(os.getppid())}) is None


def test_a_worker_defers_only_to_a_live_clearly_less_loaded_one() -> None:
    shares = AcceptShares.create(3)
    try:
        assert shares.loads() == [None, None, None]  # no live worker yet
        assert not shares.over_share(0, 50, 0.0)  # nobody to defer to
        shares.publish(1, 50)
        assert not shares.over_share(0, 50, 0.0)  # equal loads never defer
        assert ACCEPT_SHARE_SLACK == 8  # 57 - 50 >= 57 // 8, but 56 - 50 < 56 // 8
        assert not shares.over_share(0, 56, 0.0)  # within the slack
        assert shares.over_share(0, 57, 0.0)
        assert not shares.over_share(1, 50, 0.0)  # the less loaded never defers
        assert shares.loads() == [57, 50, None]
        shares.publish(0, 0)
        assert shares.over_share(1, 1, 0.0)  # one connection is enough at small loads
        shares.clear(0)  # its worker died
        assert not shares.over_share(1, 1, 0.0) and shares.loads() == [None, 1, None]
    finally:
        shares.close()
        shares.close()  # idempotent
    assert shares.fd == -1


def test_nobody_defers_to_a_worker_that_stopped_publishing() -> None:
    shares = AcceptShares.create(2)
    try:
        shares.publish(1, 0)
        assert shares.over_share(0, 10, 100.0)  # first seen now
        assert shares.over_share(0, 10, 100.0 + ACCEPT_SHARE_STALE)
        assert not shares.over_share(0, 10, 100.1 + ACCEPT_SHARE_STALE)  # blocked, stopped
        assert shares.observe(100.2 + ACCEPT_SHARE_STALE)[1] == 0  # reads as absent
        shares.publish(1, 0)  # alive again: its loop ran (a refresh, an accept)
        assert shares.over_share(0, 10, 200.0)
    finally:
        shares.close()


def test_a_worker_without_a_usable_table_accepts_alone(caplog: pytest.LogCaptureFixture) -> None:
    assert AcceptShares.from_env({}) is None
    env = {ENV_SHARES: "not a descriptor"}
    assert AcceptShares.from_env(env) is None
    assert env == {}  # not for the worker's own children
    read_fd, write_fd = os.pipe()
    try:
        assert AcceptShares.from_env({ENV_SHARES: str(read_fd)}) is None  # 0 bytes: no table
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert "is not a table of worker loads" in caplog.text
    assert "accepting without sharing" in caplog.text


# -- the supervisor in this process, with tiny workers ----------------------------------


def test_a_crash_loop_gives_up_the_slot_and_with_none_left_exits_1() -> None:
    code, log, sup = supervise_here(
        [PYTHON, "-c", "raise SystemExit(3)"], 2, seconds=WAIT, crash_interval=WAIT
    )
    assert code == EXIT_NO_WORKERS
    assert any("worker 0: crash loop (5 deaths" in line for line in log), log
    assert any("worker 1: crash loop" in line for line in log), log
    assert any("no worker left" in line for line in log), log
    assert all(len(slot.pids) == CRASH_BURST for slot in sup.slots)  # restarted 4 times each


def test_a_worker_never_ready_is_killed_and_the_others_keep_serving(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(TINY_WORKER)
    code, log, sup = supervise_here(
        [PYTHON, str(script)],
        2,
        seconds=3.0,
        ready_timeout=0.5,
        crash_burst=100,
        environ=dict(os.environ, STALL="1"),
    )
    assert code == 0
    assert any(re.match(r"worker 1: pid \d+ not ready within 0.5s; killing it", x) for x in log)
    assert any("worker 1: restarting in" in line for line in log), log
    # Worker 0 became ready once and served on: never restarted, stopped by the stop.
    assert len(sup.slots[0].pids) == 1
    assert len(sup.slots[1].pids) >= 2
    assert any(re.match(r"worker 0: pid \d+ is ready", line) for line in log)


# A worker that stays through its first SIGTERM (a long graceful stop) and
# ends at the second (the stop at once).
TWO_TERMS_WORKER = """
import os, signal, sys, time
terms = []
signal.signal(signal.SIGTERM, lambda *_: terms.append(1) if not terms else sys.exit(0))
os.write(int(os.environ["DAEMONKIT_UPGRADE_FD"]), b"ready\\n")
while True:
    time.sleep(0.02)
"""


def test_a_stop_with_a_timeout_stops_the_workers_at_once_when_it_runs_out(
    tmp_path: Path,
) -> None:
    """``ctl stop SECONDS``: past it a second SIGTERM, not SIGKILL after shutdown_timeout."""
    script = tmp_path / "two_terms.py"
    script.write_text(TWO_TERMS_WORKER)

    def stop_once_ready(sup: Supervisor) -> None:
        live = sup.workers()
        if len(live) == 2 and all(ready for _, _, ready in live):
            sup.stop("ctl stop", timeout=0.2)
        else:
            sup.reactor.call_later(0.02, stop_once_ready, sup)

    code, log, sup = supervise_here(
        [PYTHON, str(script)], 2, seconds=WAIT, then=stop_once_ready, stop_timeout=60.0
    )
    assert code == 0
    assert any("still running 0.2s after the stop; stopping them at once" in x for x in log), log
    assert not any("killing them" in line for line in log), log
    assert sup.workers() == []


def held_split(served: Served) -> Counter[str]:
    """HELD_CONNECTIONS clients connect at once and stay; by the worker id that answers."""
    sel = selectors.DefaultSelector()
    socks = [socket.socket() for _ in range(HELD_CONNECTIONS)]
    split: Counter[str] = Counter()
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", served.port))  # all at once
            sel.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + WAIT
        while sum(split.values()) < HELD_CONNECTIONS:
            assert time.monotonic() < deadline, f"answered only {split}"
            for key, events in sel.select(1.0):
                sock = key.fileobj  # type: ignore[assignment]
                if events & selectors.EVENT_WRITE:
                    sock.send(b"hi\n")
                    sel.modify(sock, selectors.EVENT_READ)
                else:
                    sel.unregister(sock)
                    sock.settimeout(WAIT)
                    split[recv_until(sock, b"\n").split(b" ")[1].decode()] += 1
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    return split


# -- the command line: real daemons ----------------------------------------------------


def test_two_workers_both_accept(served: Served) -> None:
    split: Counter[str] = Counter()
    pids: dict[str, int] = {}
    for _ in range(SPLIT_CONNECTIONS):
        pid, wid = served.ask()
        split[wid] += 1
        pids[wid] = pid
    print(f"split over {SPLIT_CONNECTIONS} connections: {dict(split)}")
    assert set(split) == {"0", "1"}, split  # both served, each knows its id
    assert served.proc.pid not in pids.values()  # the supervisor serves no client
    assert re.search(r"INFO +daemonkit\.Echo: w0 listening on", served.log)
    assert re.search(r"INFO +daemonkit\.Echo: w1 listening on", served.log)
    # The hand-over is the upgrade's, but a worker says what really happens:
    # the supervisor gave it the listeners and goes on supervising.
    assert re.search(r"w0 worker 0: took over \d+ listener\(s\) from the supervisor", served.log)
    assert "upgrade:" not in served.log and "stops now" not in served.log
    # Every worker wakes for a new client and the busiest, already awake,
    # tends to win; the workers' shared table of loads makes the busier
    # defer. Held open, so each worker's count is what it holds at the end.
    held = held_split(served)
    print(f"split of {HELD_CONNECTIONS} connections held at once: {dict(held)}")
    assert set(held) == {"0", "1"}, held
    assert min(held.values()) >= HELD_MIN_SHARE * HELD_CONNECTIONS, held


def test_a_killed_worker_is_replaced_while_the_other_serves(served: Served) -> None:
    before = served.workers()
    assert set(before) == {"0", "1"}
    load = Load(served)
    try:
        load.wait_more(50)
        os.kill(before["1"], signal.SIGKILL)
        served.wait_log(r"worker 1: pid \d+ is ready", 2)
        load.wait_more(100)
    finally:
        load.stop()
    os.kill(before["0"], 0)  # worker 0 lives on: never restarted
    assert len(re.findall(r"worker 0: started pid", served.log)) == 1
    new = re.findall(r"worker 1: started pid (\d+)", served.log)
    assert len(new) == 2 and int(new[1]) != before["1"]  # a new process in the same slot
    assert load.answered[before["0"]] > 0
    print(f"answers by pid: {dict(load.answered)}")
    # Only what the killed worker had accepted can fail: one per client at most.
    assert len(load.failures) <= LOAD_THREADS, load.failures
    print(f"kill -9 under load: {load.total()} answered, {len(load.failures)} failed")


def test_sighup_replaces_workers_one_at_a_time(served: Served) -> None:
    before = served.workers()
    load = Load(served)
    try:
        load.wait_more(50)
        served.proc.send_signal(signal.SIGHUP)
        served.wait_log(r"reload: every worker replaced")
        load.wait_more(50)
    finally:
        load.stop()
    after = served.workers()
    assert set(after) == {"0", "1"}
    assert not set(after.values()) & set(before.values())
    served.wait_log(rf"worker 1: pid {before['1']} exited")
    log = served.log
    # One at a time: the new worker 1 starts once the new worker 0 is ready,
    # and each old one exits only after its successor is ready.
    new0_ready = log.index(f"worker 0: pid {after['0']} is ready")
    new1_start = log.index(f"worker 1: started pid {after['1']}")
    assert new0_ready < new1_start
    assert new0_ready < log.index(f"worker 0: pid {before['0']} exited")
    assert log.index(f"worker 1: pid {after['1']} is ready") < log.index(
        f"worker 1: pid {before['1']} exited"
    )
    print(f"SIGHUP under load: {load.total()} answered, {len(load.failures)} failed")
    assert len(load.failures) <= LOAD_THREADS, load.failures


def test_sigterm_drains_every_worker_and_exits_0(served: Served) -> None:
    pids = served.workers()
    clients = []
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        sock.sendall(b"hello\n")
        assert recv_until(sock, b"\n").endswith(b"hello\n")
        clients.append(sock)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(WAIT) == 0
    for sock in clients:
        assert sock.recv(100) == b""  # closed by its worker's graceful stop
        sock.close()
    for wid, pid in pids.items():
        assert re.search(rf"worker {wid}: pid {pid} exited with status 0", served.log)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_worker_is_the_single_process_of_today(tmp_path: Path) -> None:
    s = Served(tmp_path, 1, backend="asyncio")
    try:
        s.wait_log("listening on")
        pid, wid = s.ask()
        assert pid == s.proc.pid  # no supervisor: the process started serves
        assert wid == "None"
        assert "worker" not in s.log
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(WAIT) == 0
    finally:
        s.close()


def test_log_lines_of_a_worker_carry_its_id() -> None:
    handler, other = logging.Handler(), logging.Handler()
    tag_worker_logs(7, [handler, other])
    record = logging.LogRecord("daemonkit.x", logging.INFO, __file__, 1, "hello %s", ("a",), None)
    assert handler.filter(record)
    assert other.filter(record)  # a second handler: still one tag
    assert record.getMessage() == "w7 hello a"
    assert getattr(record, "worker", None) == 7


def test_workers_stop_themselves_when_the_supervisor_is_killed(served: Served) -> None:
    pids = served.workers()
    served.proc.kill()
    served.proc.wait(WAIT)
    deadline = time.monotonic() + WAIT
    alive = set(pids.values())
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                alive.discard(pid)  # reaped
                continue
            if stat.rpartition(")")[2].split()[0] == "Z":
                alive.discard(pid)  # exited; a container's init may never reap it
        time.sleep(0.05)
    assert not alive, f"workers {alive} outlived their supervisor"
