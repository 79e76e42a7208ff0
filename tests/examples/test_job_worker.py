"""examples/job_worker.py: its reply framer in-process, and the worker as a real process.

The worker runs as a user runs it (``python -m daemonkit
examples/job_worker.py`` with its environment variables) against both
beanstalkd and examples/jobqueue (``server`` is parametrized over both; see
:mod:`tests.examples.beanstalk`), and the tests watch the queue through
greenstalk: jobs done are deleted, SIGTERM finishes the job in hand, a
failing job is released with a delay then buried, ``--max-runtime`` exits 75, and
a server killed and restarted is reconnected to.

    PYTHONASYNCIODEBUG=1 .venv/bin/python -m pytest -q tests/examples/test_job_worker.py
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import greenstalk
import pytest

from daemonkit import FrameTooLarge, ProtocolError
from daemonkit.cli.run import EXIT_RECYCLE
from tests.examples.beanstalk import KINDS, Server, start_server
from tests.helpers import PYTHON, ROOT, load_example

worker = load_example("job_worker")
Reply = worker.Reply

#: Seconds any one wait in these tests may take; a passing test waits far less.
WAIT = 20.0
#: Seconds between two looks at the queue while waiting.
POLL = 0.02


# -- the framer, in-process ------------------------------------------------------------

STREAM = (
    b"USING default\r\n"
    b"RESERVED 7 5\r\nhello\r\n"
    b"OK 9\r\n---\na: 1\n\r\n"
    b"RESERVED 8 0\r\n\r\n"
    b"FOUND 9 4\r\na\r\nb\r\n"
    b"TIMED_OUT\r\n"
)
FRAMES = [
    Reply(b"USING", (b"default",), None),
    Reply(b"RESERVED", (b"7", b"5"), b"hello"),
    Reply(b"OK", (b"9",), b"---\na: 1\n"),
    Reply(b"RESERVED", (b"8", b"0"), b""),
    Reply(b"FOUND", (b"9", b"4"), b"a\r\nb"),
    Reply(b"TIMED_OUT", (), None),
]


def test_framer_whole() -> None:
    assert worker.BeanstalkReplies().feed(STREAM) == FRAMES


def test_framer_one_byte_at_a_time() -> None:
    framer = worker.BeanstalkReplies()
    frames = []
    for n in range(len(STREAM)):
        frames += framer.feed(STREAM[n : n + 1])
    assert frames == FRAMES
    assert framer.buffered == 0


def test_framer_with_trailing_data() -> None:
    framer = worker.BeanstalkReplies()
    assert framer.feed(STREAM + b"RESERVED 3 10\r\nhal") == FRAMES
    assert framer.buffered == len(b"hal")
    assert framer.feed(b"f a job\r\n") == [Reply(b"RESERVED", (b"3", b"10"), b"half a job")]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"X" * worker.MAX_REPLY_LINE, FrameTooLarge, "reply line longer"),
        (b"RESERVED 1 5\r\nhelloXX", ProtocolError, "not followed by CRLF"),
        (b"OK x\r\n", ProtocolError, "without a body size"),
        (b"FOUND\r\n", ProtocolError, "without a body size"),
        (b"OK %d\r\n" % (worker.MAX_REPLY_BODY + 1), FrameTooLarge, "over max_body"),
    ],
)
def test_framer_refuses_bad_replies(data: bytes, error: type[Exception], message: str) -> None:
    framer = worker.BeanstalkReplies()
    with pytest.raises(error, match=message) as caught:
        framer.feed(b"DELETED\r\n" + data)
    assert caught.value.frames == [Reply(b"DELETED", (), None)]  # type: ignore[attr-defined]
    with pytest.raises(error):
        framer.feed(b"DELETED\r\n")  # broken for good
    assert framer.fresh().feed(b"DELETED\r\n") == [Reply(b"DELETED", (), None)]


def test_framer_encodes_command_lines() -> None:
    framer = worker.BeanstalkReplies()
    assert framer.encode(b"delete 7") == b"delete 7\r\n"
    with pytest.raises(ValueError, match="CR or LF"):
        framer.encode(b"delete 7\r\nput")


def test_run_job_and_retry_delay() -> None:
    digest = b"x"
    for _ in range(3):
        digest = hashlib.sha256(digest).digest()
    assert worker.run_job(b"sha256 3 x") == (True, digest.hex())
    assert worker.run_job(b"sleep 0") == (True, "slept 0s")
    assert worker.run_job(b"explode") == (False, "ValueError: unknown job 'explode'")
    assert worker.run_job(b"sha256 0 x")[0] is False
    assert worker.run_job(b"\xff")[0] is False  # not UTF-8: a failure, never a crash
    assert [worker.retry_delay(n, 2) for n in range(4)] == [2, 4, 8, 16]
    assert worker.retry_delay(0, 0) == 0
    assert worker.retry_delay(1000, 1) == worker.MAX_RETRY_DELAY


# -- the worker process against both servers ----------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    """One server of each kind for the module, started on first use."""
    servers: dict[str, Server] = {}
    log_dir = tmp_path_factory.mktemp("servers")

    def get(kind: str) -> Server:
        if kind not in servers or servers[kind].proc.poll() is not None:
            servers[kind] = start_server(kind, log_dir)
        return servers[kind]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tube(request: pytest.FixtureRequest) -> str:
    """A tube of this test's own on the shared server."""
    return re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]


class Worker:
    """The example as a process: started with its environment, stopped by the test."""

    def __init__(self, server: Server, tube: str, log: Path, *args: str, **env: str | int) -> None:
        environ = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
        environ.pop("PYTHONASYNCIODEBUG", None)
        environ.update(JOB_WORKER_SERVER=server.url, JOB_WORKER_TUBE=tube)
        environ.update({f"JOB_WORKER_{k.upper()}": str(v) for k, v in env.items()})
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "daemonkit", str(ROOT / "examples" / "job_worker.py"), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=environ,
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str) -> re.Match[str]:
        """Wait until the log has a line matching ``pattern`` (bounded)."""
        deadline = time.monotonic() + WAIT
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            assert self.proc.poll() is None or time.monotonic() < deadline, (
                f"worker exited with {self.proc.returncode} before {pattern!r}:\n{self.log()}"
            )
            assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{self.log()}"
            time.sleep(POLL)

    def terminate(self) -> int:
        """SIGTERM, then the exit status (killed after WAIT: a failure)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
            raise AssertionError(f"the worker did not exit:\n{self.log()}") from None


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers; any still running at the end is killed (by its pid)."""
    workers: list[Worker] = []

    def start(server: Server, tube: str, *args: str, **env: str | int) -> Worker:
        w = Worker(server, tube, tmp_path / f"worker-{len(workers)}.log", *args, **env)
        workers.append(w)
        return w

    yield start
    for w in workers:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait(timeout=WAIT)


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(POLL)


def gone(client: greenstalk.Client, job_id: int) -> bool:
    try:
        client.peek(job_id)
    except greenstalk.NotFoundError:
        return True
    return False


def state(client: greenstalk.Client, job_id: int) -> str:
    return str(client.stats_job(job_id)["state"])


@pytest.mark.slow
def test_jobs_are_done_and_deleted_and_sigterm_finishes_the_job_in_hand(
    kind: str, shared: Callable[[str], Server], tube: str, start_worker: Callable[..., Worker]
) -> None:
    server = shared(kind)
    with greenstalk.Client(server.address, use=tube) as client:
        ids = [client.put("sha256 1000 a"), client.put("sleep 0.1"), client.put("sha256 1 b")]
        w = start_worker(server, tube)
        for job_id in ids:
            wait_until(lambda job_id=job_id: gone(client, job_id), f"job {job_id} deleted")
        digest = b"a"
        for _ in range(1000):
            digest = hashlib.sha256(digest).digest()
        assert f"job {ids[0]} done: {digest.hex()}" in w.log()
        stats = client.stats_tube(tube)
        assert (stats["total-jobs"], stats["cmd-delete"], stats["current-watching"]) == (3, 3, 1)

        job_id = client.put("sleep 0.5")
        w.wait_log(rf"job {job_id}: running")  # the blocking call has started: SIGTERM
        assert w.terminate() == 0, w.log()
        assert f"job {job_id} done: slept 0.5s" in w.log()
        wait_until(lambda: gone(client, job_id), "the finished job deleted")
        assert client.stats_tube(tube)["cmd-delete"] == 4
    assert "Traceback" not in w.log()


@pytest.mark.slow
def test_a_failing_job_is_released_with_a_delay_then_buried(
    kind: str, shared: Callable[[str], Server], tube: str, start_worker: Callable[..., Worker]
) -> None:
    server = shared(kind)
    with greenstalk.Client(server.address, use=tube) as client:
        job_id = client.put("explode", priority=3)
        w = start_worker(server, tube, max_failures=2, retry_delay=1)
        w.wait_log(rf"job {job_id} failed \(ValueError: unknown job 'explode'\); retry in 1s")
        wait_until(lambda: state(client, job_id) == "buried", "the job buried")
        stats = client.stats_job(job_id)
        assert (stats["releases"], stats["buries"], stats["reserves"], stats["pri"]) == (1, 1, 2, 3)
        assert f"job {job_id} failed 2 times, burying it" in w.log()
        assert w.terminate() == 0, w.log()


def test_max_runtime_exits_75_after_the_job(
    kind: str, shared: Callable[[str], Server], tube: str, start_worker: Callable[..., Worker]
) -> None:
    server = shared(kind)
    with greenstalk.Client(server.address, use=tube) as client:
        job_id = client.put("sleep 0.5")
        w = start_worker(server, tube, "--max-runtime", "0.5s")
        assert w.wait() == EXIT_RECYCLE == 75, w.log()
        log = w.log()
        assert "max_runtime" in log
        assert log.index(f"job {job_id} done") < log.index("stopped")
        wait_until(lambda: gone(client, job_id), "the finished job deleted")


@pytest.mark.slow
def test_the_worker_reconnects_after_the_server_restarts(
    kind: str, tmp_path: Path, tube: str, start_worker: Callable[..., Worker]
) -> None:
    server = start_server(kind, tmp_path)
    try:
        w = start_worker(server, tube)
        w.wait_log("link .* up")
        server.kill()  # kill -9: an outage
        w.wait_log("queue connection closed")
        server = start_server(kind, tmp_path, port=server.port)
        with greenstalk.Client(server.address, use=tube) as client:
            job_id = client.put("sha256 1 after")
            wait_until(lambda: gone(client, job_id), "the job after the restart deleted")
        assert "reconnecting in" in w.log()  # the link's backoff, not the worker, did it
        assert w.proc.poll() is None, w.log()
        assert w.terminate() == 0, w.log()
        assert "Traceback" not in w.log()
    finally:
        server.stop()
