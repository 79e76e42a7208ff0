"""Pidfiles: one holder, stale files replaced, removal rules, races, and the CLI's --pidfile."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import cli
from daemonkit.ops.pidfile import PIDFILE_MODE, AlreadyRunning, Pidfile, PidfileError, read_pid
from tests.helpers import PYTHON, ROOT, free_port, wait_for_port
from tests.test_cli import ECHO, finish, run_as_nobody, spawn

# Real seconds a test waits for a process or a file before failing.
DEADLINE = 20.0


def wait_until(predicate: object, what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait(DEADLINE)
    return proc.pid


# -- in-process ---------------------------------------------------------------


def test_acquire_records_our_pid_and_release_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pidfile = Pidfile(path)
    pidfile.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        assert read_pid(path) == os.getpid()
        assert path.stat().st_mode & 0o777 == PIDFILE_MODE
        assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]  # no temp file left
        assert pidfile.held
    finally:
        assert pidfile.release() is True
    assert not path.exists()
    assert pidfile.release() is False  # idempotent


def test_a_second_holder_is_refused_and_told_who_runs(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with Pidfile(path):
        with pytest.raises(AlreadyRunning) as info:
            Pidfile(path).acquire()
        assert info.value.pid == os.getpid()
        assert str(info.value) == f"already running: pid {os.getpid()} holds the pidfile {path}"
        assert read_pid(path) == os.getpid()  # the refused one changed nothing
        assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]


@pytest.mark.parametrize("content", [b"", b"junk\n", b"1"], ids=["empty", "junk", "init"])
def test_a_stale_file_does_not_block(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "app.pid"
    path.write_bytes(content)  # left by a process that died: nobody holds its lock
    with Pidfile(path):
        assert read_pid(path) == os.getpid()


def test_a_stale_file_of_a_dead_process_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{dead_pid()}\n")
    with Pidfile(path):
        assert read_pid(path) == os.getpid()
    assert not path.exists()


def test_release_keeps_a_file_that_records_another_pid(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pidfile = Pidfile(path)
    pidfile.acquire()
    path.write_text("4242\n")  # a successor (an upgrade) took it over
    assert pidfile.release() is False
    assert path.read_text() == "4242\n"


def test_release_of_a_file_removed_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pidfile = Pidfile(path)
    pidfile.acquire()
    path.unlink()
    assert pidfile.release() is False
    assert not pidfile.held


def test_rewrite_records_the_new_pid_without_letting_go(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    with Pidfile(path) as pidfile:
        before = path.stat().st_ino
        pidfile.rewrite()
        assert path.stat().st_ino != before  # a new file, put in place atomically
        assert read_pid(path) == os.getpid()
        with pytest.raises(AlreadyRunning):
            Pidfile(path).acquire()
        assert [p.name for p in tmp_path.iterdir()] == ["app.pid"]


def test_close_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pidfile = Pidfile(path)
    pidfile.acquire()
    pidfile.close()  # as the parent of a fork does: the child's descriptor keeps the lock
    assert read_pid(path) == os.getpid()
    with Pidfile(path):  # here nobody else holds it, so it is free again
        pass


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "app.pid"
    with pytest.raises(PidfileError, match=r"the directory .*/no/such does not exist"):
        Pidfile(path).acquire()


def test_an_unreleased_pidfile_warns(tmp_path: Path) -> None:
    pidfile = Pidfile(tmp_path / "app.pid")
    pidfile.acquire()
    with pytest.warns(ResourceWarning, match="unreleased"):
        del pidfile


def race(
    path: Path, barrier: threading.Barrier, winners: list[Pidfile], refused: list[BaseException]
) -> None:
    """One racer: acquire ``path`` as soon as all are ready; record how it went."""
    pidfile = Pidfile(path)
    barrier.wait(DEADLINE)
    try:
        pidfile.acquire()
    except BaseException as exc:
        refused.append(exc)  # list.append is atomic
    else:
        winners.append(pidfile)


@pytest.mark.parametrize("stale", [False, True], ids=["absent", "stale"])
def test_racing_acquirers_have_exactly_one_winner(tmp_path: Path, stale: bool) -> None:
    """Many acquirers at once (threads: flock locks are per open file, so they contend)."""
    racers = 12
    gone = dead_pid()
    for round_ in range(15):
        path = tmp_path / f"race{round_}.pid"
        if stale:
            path.write_text(f"{gone}\n")
        barrier = threading.Barrier(racers)
        winners: list[Pidfile] = []
        refused: list[BaseException] = []
        threads = [
            threading.Thread(target=race, args=(path, barrier, winners, refused))
            for _ in range(racers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        assert len(winners) == 1, (winners, refused)
        assert len(refused) == racers - 1
        assert all(isinstance(exc, AlreadyRunning) for exc in refused), refused
        assert read_pid(path) == os.getpid()
        assert winners[0].release() is True
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


# -- the command line ---------------------------------------------------------------


def test_cli_missing_directory_exits_with_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [ECHO, "--listen", "tcp://127.0.0.1:0", "--pidfile", str(tmp_path / "no" / "a.pid")]
    assert cli.main(argv) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter and read (pytest's own live under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="daemonkit-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cli_unwritable_directory_is_a_permission_error(open_dir: Path) -> None:
    """Run as an unprivileged user (root may write anywhere): a clear line and exit 6."""
    locked = open_dir / "locked"
    locked.mkdir(mode=0o755)  # others may enter and read, not write
    # A copy of the daemon the unprivileged user can read wherever the checkout
    # lives (a clone in a 0700 directory would fail on loading, not on the pidfile).
    app = open_dir / "echo_daemon.py"
    app.write_text(Path(ECHO).read_text())
    if os.geteuid() != 0:
        locked.chmod(0o555)
    code, err = run_as_nobody(
        str(app), "--listen", "tcp://127.0.0.1:0", "--pidfile", f"{locked}/a.pid", timeout=DEADLINE
    )
    assert code == cli.EXIT_PERMISSION, err
    assert err.count("\n") == 1, err
    assert f"cannot write the pidfile {locked}/a.pid: Permission denied" in err
    assert "RuntimeDirectory=" in err


def test_cli_two_starts_at_once_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    args = ("--pidfile", str(path), "--backend", "asyncio")
    procs = [spawn(ECHO, "--listen", f"tcp://127.0.0.1:{free_port()}", *args) for _ in range(2)]
    try:
        # The loser exits at once; the winner runs until told to stop.
        wait_until(lambda: any(p.poll() is not None for p in procs), "one start to be refused")
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        code, err = finish(loser, DEADLINE)
        assert code == cli.EXIT_RUNNING, err
        assert (
            err == f"daemonkit: error: already running: pid {winner.pid} holds the pidfile {path}\n"
        )
        assert read_pid(path) == winner.pid
        winner.send_signal(signal.SIGTERM)
        code, err = finish(winner, DEADLINE)
        assert code == cli.EXIT_OK, err
        assert not path.exists()  # removed at the clean exit
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_cli_pidfile_left_by_kill_9_does_not_block_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    port = free_port()
    first = spawn(ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--pidfile", str(path))
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(port, first)
        assert read_pid(path) == first.pid
        first.kill()  # SIGKILL: no cleanup ran, the file stays behind
        first.communicate(timeout=DEADLINE)
        assert read_pid(path) == first.pid
        second = spawn(ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--pidfile", str(path))
        wait_for_port(port, second)
        assert read_pid(path) == second.pid
        second.send_signal(signal.SIGTERM)
        code, err = finish(second, DEADLINE)
        assert code == cli.EXIT_OK, err
        assert not path.exists()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_take_over_moves_the_file_and_its_lock(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    old = Pidfile(path)
    old.acquire()
    before = path.stat().st_ino
    new = Pidfile(path)
    new.take_over()  # as the new process of an upgrade does, once ready
    try:
        assert path.stat().st_ino != before
        assert read_pid(path) == os.getpid()
        old.close()  # the old process exits: its lock was on the file it had
        with pytest.raises(AlreadyRunning):
            Pidfile(path).acquire()
    finally:
        assert new.release() is True
    assert [p.name for p in tmp_path.iterdir()] == []


def test_cli_an_upgrade_hands_the_pidfile_to_the_new_process(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    log = tmp_path / "app.log"
    port = free_port()
    # Not through pipes: the new process inherits the old one's stdio and outlives it.
    argv = [ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--pidfile", str(path)]
    old = subprocess.Popen(
        [PYTHON, "-m", "daemonkit", *argv, "--log-file", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    new_pid: int | None = None
    try:
        wait_for_port(port, old)
        old.send_signal(signal.SIGUSR2)
        assert old.wait(DEADLINE) == cli.EXIT_OK, log.read_text()  # it stops once the new is ready
        new_pid = read_pid(path)
        assert new_pid not in (None, old.pid), log.read_text()  # the new one's; the old left it
        third = spawn(ECHO, "--listen", f"tcp://127.0.0.1:{free_port()}", "--pidfile", str(path))
        code, err = finish(third, DEADLINE)
        assert code == cli.EXIT_RUNNING, err
        assert f"already running: pid {new_pid} holds" in err
        os.kill(new_pid, signal.SIGTERM)
        wait_until(lambda: not path.exists(), "the new process to remove the pidfile")
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(DEADLINE)
        if new_pid is not None and path.exists():
            os.kill(new_pid, signal.SIGKILL)
