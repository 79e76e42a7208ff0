"""``--workers N`` with ``--control`` and ``--metrics``, and staggered recycling.

One set of 2 real workers (module fixture) answers ``ctl status``,
``connections`` and one scrape for the whole set; a worker stopped with
SIGSTOP shows as unresponsive without hanging the supervisor; workers over
``max_memory`` are recycled one at a time. The supervisor's queue and the
pieces (the query client, the merge, the worker's variables) are tested here too,
in this process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Daemon
from daemonkit.cli import ctl
from daemonkit.cli import run as cli
from daemonkit.core.reactor import Reactor
from daemonkit.core.timers import FakeClock
from daemonkit.ops.control import open_endpoints
from daemonkit.ops.upgrade import RUNTIME_RETRY_DELAY, Upgrader
from daemonkit.ops.workers import (
    ENV_WORKER_CONTROL,
    ENV_WORKER_REQUESTS,
    ENV_WORKER_STAGGER,
    Supervisor,
    supervisor_link_from_env,
    worker_control_path,
)
from daemonkit.ops.workerset import ask_worker, merge_scrapes
from tests.helpers import PYTHON, ROOT, WAIT, Served, daemonkit_log_to, free_port, recv_until

pytest.importorskip("prometheus_client")

# A Lines echo answering "PID WORKER_ID LINE"; "grow N" makes worker N hold GROW bytes.
DAEMON = """
import os
from daemonkit import Daemon, Lines

GROW = 80 * 1024 * 1024


class Echo(Daemon):
    framing = Lines
    blob = b""

    def on_read(self, conn, line):
        if line == b"grow %d" % self.worker_id:
            self.blob = b"x" * GROW  # written, so resident
        conn.send(b"%d %s %s" % (os.getpid(), str(self.worker_id).encode(), line))
"""

# Over the RSS of a fresh worker (about 40 MiB on uvloop with prometheus-client),
# under one that holds GROW.
MAX_MEMORY = "100M"


class WorkerSet(Served):
    """``--workers 2 --control PATH --metrics ADDR --max-memory ...`` of :data:`DAEMON`."""

    def __init__(self, tmp: Path) -> None:
        tmp.chmod(0o700)  # the control socket's directory: nobody else's
        self.control = str(tmp / "ctl.sock")
        self.metrics_port = free_port()
        super().__init__(
            tmp,
            2,
            *("--control", self.control, "--metrics", f"tcp://127.0.0.1:{self.metrics_port}"),
            *("--max-memory", MAX_MEMORY, "--memory-check-interval", "0.1"),
            source=DAEMON,
        )

    def tell(self, worker: str, line: bytes) -> int:
        """Send ``line`` until worker ``worker`` answered it; its pid."""
        for _ in range(200):
            pid, wid = self.ask(line)
            if wid == worker:
                return pid
        raise AssertionError(f"worker {worker} never answered")

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        reply = ctl.request(self.control, {"cmd": "status"}, timeout=timeout)
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    def pids(self) -> dict[int, int]:
        """Worker id -> pid of the ready workers, as ``ctl status`` says."""
        return {w["id"]: w["pid"] for w in self.status()["workers"] if w["state"] == "ready"}

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerSet]:
    """A supervisor with 2 ready workers, serving --control and --metrics for the set."""
    s = WorkerSet(tmp_path_factory.mktemp("set"))
    try:
        s.wait_log(r"all 2 worker\(s\) ready")
        yield s
    finally:
        s.close()


# -- one set, seen from outside (these run in order on the module's set) ------------


def test_the_supervisor_binds_the_endpoints_and_each_worker_a_private_one(
    workers: WorkerSet,
) -> None:
    # Before, each worker bound the configured path and port: the first won,
    # the other exited with status 5 until its slot was a crash loop.
    log = workers.log
    assert f"control socket at {workers.control}\n" in log
    assert re.search(
        rf"\] INFO +daemonkit\.Echo\.control: metrics at .*:{workers.metrics_port}", log
    )
    assert "exited with status" not in log
    assert (
        len(re.findall(rf"w\d control socket at {re.escape(workers.control)}\.w\d\.\d+", log)) == 2
    )


def test_ctl_status_shows_every_worker_with_its_pid(
    workers: WorkerSet, capsys: pytest.CaptureFixture[str]
) -> None:
    answered = {workers.tell(w, b"hi"): w for w in ("0", "1")}  # pid -> worker id
    status = workers.status()
    assert status["pid"] == workers.proc.pid and status["role"] == "supervisor"
    assert status["workers_configured"] == 2 and status["workers_ready"] == 2
    by_id = {str(w["id"]): w for w in status["workers"]}
    assert {by_id[wid]["pid"]: wid for wid in ("0", "1")} == answered
    for w in by_id.values():
        assert w["state"] == "ready" and w["restarts"] == 0
        assert isinstance(w["rss"], int) and w["rss"] > 0
        assert w["loop_lag"]["samples"] >= 0 and w["connections"] == 0
        assert w["control"] == worker_control_path(workers.control, w["id"], w["pid"])
    assert ctl.main(["status", "--control", workers.control]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^supervisor +Echo \(pid {workers.proc.pid}\)$", out, re.M), out
    for pid, wid in answered.items():
        assert re.search(rf"^{wid} +{pid} +ready +\d+ +[\d.]+ MiB ", out, re.M), out


def test_ctl_connections_lists_every_workers_with_its_worker(workers: WorkerSet) -> None:
    clients = []
    try:
        for _ in range(40):  # until both workers hold one open
            sock = socket.create_connection(("127.0.0.1", workers.port), timeout=10)
            sock.sendall(b"hold\n")
            clients.append((sock, recv_until(sock, b"\n").split(b" ")[1].decode()))
            if {wid for _, wid in clients} == {"0", "1"}:
                break
        held = {(int(wid), f"127.0.0.1:{sock.getsockname()[1]}") for sock, wid in clients}
        reply = ctl.request(workers.control, {"cmd": "connections"})
    finally:
        for sock, _ in clients:
            sock.close()
    assert reply["ok"] and reply["unresponsive"] == []
    assert reply["total"] == len(reply["connections"]) >= len(clients)
    assert held <= {(c["worker"], c["peer"]) for c in reply["connections"]}, reply


def test_one_scrape_has_every_worker_and_the_supervisor(workers: WorkerSet) -> None:
    text = workers.scrape()
    for wid in ("0", "1"):
        assert f'daemonkit_connections{{worker="{wid}"}}' in text
        assert re.search(rf'process_resident_memory_bytes{{worker="{wid}"}} \d', text)
        assert f'daemonkit_worker_restarts_total{{worker="{wid}"}} 0.0' in text
        assert f'daemonkit_worker_up{{worker="{wid}"}} 1.0' in text
    assert "daemonkit_workers 2.0" in text and "daemonkit_workers_ready 2.0" in text
    assert text.count("# TYPE daemonkit_connections gauge") == 1  # once per family
    reply = ctl.request(workers.control, {"cmd": "metrics"})
    assert 'daemonkit_connections{worker="1"}' in reply["metrics"]


def test_the_supervisor_answers_the_health_check_for_the_set(workers: WorkerSet) -> None:
    url = f"http://127.0.0.1:{workers.metrics_port}/healthz"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert (response.status, response.read()) == (200, b"ok\n")


def test_bad_requests_to_the_set_are_error_replies(workers: WorkerSet) -> None:
    reply = ctl.request(workers.control, {"cmd": "stop", "timeout": -5})
    assert not reply["ok"] and "timeout" in reply["error"]
    reply = ctl.request(workers.control, {"cmd": "log-level", "level": "loud"})
    assert not reply["ok"] and "unknown log level" in reply["error"]
    assert workers.proc.poll() is None


def test_a_stopped_worker_is_unresponsive_and_nothing_hangs(workers: WorkerSet) -> None:
    pids = workers.pids()
    os.kill(pids[1], signal.SIGSTOP)
    try:
        scraped: list[str] = []
        scraper = threading.Thread(target=lambda: scraped.append(workers.scrape()))
        started = time.monotonic()
        scraper.start()  # the scrape and the status wait for worker 1 at the same time
        status = workers.status(timeout=8.0)
        scraper.join(WAIT)
        took = time.monotonic() - started
    finally:
        os.kill(pids[1], signal.SIGCONT)
    by_id = {w["id"]: w for w in status["workers"]}
    assert by_id[1]["state"] == "unresponsive" and by_id[1]["pid"] == pids[1]
    assert "no reply within 2s" in by_id[1]["error"] and by_id[1]["rss"] is None
    assert by_id[0]["state"] == "ready" and by_id[0]["rss"] > 0
    assert status["workers_ready"] == 1
    assert took < 8.0, took  # each waited for its deadline, not for the worker
    (text,) = scraped
    assert 'daemonkit_connections{worker="0"}' in text
    assert 'daemonkit_connections{worker="1"}' not in text
    assert 'daemonkit_worker_scrape_errors_total{worker="1"} 1.0' in text
    assert 'daemonkit_worker_up{worker="1"} 0.0' in text
    assert workers.pids() == pids  # back, and nobody was restarted


def test_a_worker_over_max_memory_is_recycled_and_the_other_untouched(
    workers: WorkerSet,
) -> None:
    before = workers.pids()
    workers.tell("1", b"grow 1")
    workers.wait_log(r"worker 1: recycling it \(RSS [\d.]+ MiB is over max_memory 100.0 MiB\)")
    workers.wait_log(rf"worker 1: pid {before[1]} exited with status 0")
    after = workers.pids()
    assert after[0] == before[0] and after[1] != before[1]
    log = workers.log
    new_ready = log.index(f"worker 1: pid {after[1]} is ready")
    assert new_ready < log.index(f"worker 1: pid {before[1]} exited")  # the new one first
    assert "worker 0: recycling" not in log
    status = workers.status()
    assert [w["recycles"] for w in status["workers"]] == [0, 1]
    assert [w["restarts"] for w in status["workers"]] == [0, 0]  # a recycle is no death


def test_two_workers_asking_at_once_are_recycled_one_after_the_other(
    workers: WorkerSet,
) -> None:
    """Both grow past max_memory; each memory guard asks on its own timer.

    Whether the second request comes while the first replacement runs (it
    waits its turn) or after (it goes at once) is up to those timers: the
    queue itself is test_the_supervisor_recycles_one_worker_at_a_time's. Here:
    both are replaced, and never two replacements at once.
    """
    before = workers.pids()
    start = len(workers.log)
    workers.tell("0", b"grow 0")
    workers.tell("1", b"grow 1")
    for wid in ("0", "1"):
        workers.wait_log(rf"worker {wid}: pid {before[int(wid)]} exited with status 0")
    assert not set(workers.pids().values()) & set(before.values())
    # Never two replacements at once: a new worker starts only once the one
    # started before it is ready (however many recycles the guards asked for).
    text = workers.log[start:]
    events = re.findall(r"worker \d: (?:started pid (\d+)|pid (\d+) is ready)", text)
    assert len([started for started, _ in events if started]) >= 2, text
    pending: str | None = None
    for started, ready in events:
        if started:
            assert pending is None, f"{pending} and {started} replaced at once:\n{text}"
            pending = started
        elif ready == pending:
            pending = None


def test_ctl_stop_stops_the_set_and_its_private_sockets_go(workers: WorkerSet) -> None:
    reply = ctl.request(workers.control, {"cmd": "stop", "timeout": 5})
    assert reply["ok"] and reply["stopping"] and reply["workers"] == 2
    assert reply["timeout"] == 5
    assert workers.proc.wait(WAIT) == 0
    directory = Path(workers.control).parent
    assert [p.name for p in directory.iterdir() if p.name.startswith("ctl.sock")] == []


# -- the pieces, in this process ------------------------------------------------------

# A worker that notes its stagger, says it is ready, and asks to be recycled
# when it gets SIGUSR1.
RECYCLING_WORKER = """
import os, signal, sys, time
wid = os.environ["DAEMONKIT_WORKER"]
with open(os.path.join(sys.argv[1], "staggers"), "a") as f:
    f.write(wid + " " + os.environ["DAEMONKIT_WORKER_STAGGER"] + "\\n")
fd = int(os.environ["DAEMONKIT_WORKER_FD"])
signal.signal(signal.SIGUSR1, lambda *_: os.write(fd, b"recycle test " + wid.encode() + b"\\n"))
os.write(int(os.environ["DAEMONKIT_UPGRADE_FD"]), b"ready\\n")
time.sleep(60)
"""


def test_the_supervisor_recycles_one_worker_at_a_time(tmp_path: Path) -> None:
    script = tmp_path / "recycling.py"
    script.write_text(RECYCLING_WORKER)
    log: list[str] = []
    refused: list[bool] = []
    sock = socket.create_server(("127.0.0.1", 0))
    reactor = Reactor("asyncio")
    try:
        sup = Supervisor(reactor, {"tcp": sock}, 3, command=[PYTHON, str(script), str(tmp_path)])

        def check() -> None:
            members = sup.members()
            if not all(m.state == "ready" for m in members):
                return
            if all(s.recycles == 0 for s in sup.slots):
                # Two at once here, the third through its request pipe.
                assert sup.recycle(0, "test 0") and sup.recycle(1, "test 1")
                refused.append(sup.recycle(0, "again"))  # queued already
                os.kill(members[2].pid or 0, signal.SIGUSR1)
            elif all(s.recycles == 1 for s in sup.slots):
                sup.stop("done")

        reactor.call_every(0.02, check)
        reactor.call_later(WAIT, sup.stop, "test deadline")
        with daemonkit_log_to(lambda r: log.append(r.getMessage())):
            assert sup.run() == 0
    finally:
        reactor.close()
    text = "\n".join(log)
    assert "test deadline: stopping" not in text, text
    assert refused == [False]
    assert "worker 0: recycling it (test 0): a new worker first" in text
    assert "worker 1: recycling it (test 1) once the 1 replacement(s) before it" in text
    assert "worker 0 asks to be recycled (again); its replacement is on its way" in text
    assert re.search(r"worker 2: recycling it \(test 2\)", text), text  # asked by pipe
    assert "recycle: done" in text
    # Never two replacements at once: a second-generation worker starts only
    # once the one started before it is ready.
    starts: dict[str, list[str]] = {}
    pending: str | None = None
    for wid, pid, what in re.findall(
        r"worker (\d): (?:started pid (\d+)|pid (\d+) is ready)", text
    ):
        if pid:
            starts.setdefault(wid, []).append(pid)
            if len(starts[wid]) == 2:
                assert pending is None, f"{pending} and {pid} replaced at once:\n{text}"
                pending = pid
        elif what == pending:
            pending = None
    assert all(len(slot.pids) == 2 and slot.restarts == 0 for slot in sup.slots)
    # Started together, worker i of 3 staggers max_runtime by i/3; a replacement
    # started alone does not.
    staggers = sorted((tmp_path / "staggers").read_text().splitlines())
    assert staggers == ["0 0.0", "0 0.0", "1 0.0", f"1 {1 / 3!r}", "2 0.0", f"2 {2 / 3!r}"]


def test_a_worker_reads_what_the_supervisor_gave_it() -> None:
    read_fd, write_fd = os.pipe()
    env = {
        ENV_WORKER_CONTROL: "/run/app/ctl.sock",
        ENV_WORKER_REQUESTS: str(write_fd),
        ENV_WORKER_STAGGER: "0.5",
    }
    try:
        link = supervisor_link_from_env(1, env)
        assert env == {}  # not for the worker's own children
        assert link.control == f"/run/app/ctl.sock.w1.{os.getpid()}"
        assert link.stagger == 0.5
        assert link.ask_recycle("RSS 600 MiB\nis over")
        assert os.read(read_fd, 100) == b"recycle RSS 600 MiB is over\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)
    junk = supervisor_link_from_env(0, {ENV_WORKER_STAGGER: "nan", ENV_WORKER_REQUESTS: "x"})
    assert junk.stagger == 0.0 and junk.requests is None and junk.control is None
    assert not junk.ask_recycle("memory")  # nobody to ask


def test_the_query_client_has_a_deadline_and_reports_why(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen()  # connects are queued, never answered
    answers: dict[str, Any] = {}
    reactor = Reactor("asyncio")
    try:
        for name, path in (
            ("missing", tmp_path / "none.sock"),
            ("silent", tmp_path / "silent.sock"),
        ):
            ask_worker(
                reactor,
                str(path),
                {"cmd": "status"},
                lambda reply, error, name=name: answers.__setitem__(name, (reply, error)),
                timeout=0.2,
            )
        assert answers == {}  # never before ask_worker returns
        reactor.call_later(WAIT, reactor.stop)
        reactor.call_every(0.02, lambda: len(answers) == 2 and reactor.stop())
        reactor.run()
    finally:
        reactor.close()
        silent.close()
    assert answers["missing"][0] is None and "cannot reach" in answers["missing"][1]
    assert answers["silent"] == (None, "no reply within 0.2s")


def test_merged_scrapes_label_each_worker_and_keep_one_help_per_family() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    text = '# HELP jobs Jobs.\n# TYPE jobs counter\njobs_total{queue="a"} 3.0\n'
    other = "# HELP jobs Jobs.\n# TYPE jobs gauge\njobs 1.0\n"  # typed otherwise: left out
    families = merge_scrapes({"0": text, "1": text.replace("3.0", "4.0"), "2": other})

    class Collector:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    body = generate_latest(registry).decode()
    assert body.count("# TYPE jobs_total counter") == 1
    assert 'jobs_total{queue="a",worker="0"} 3.0' in body
    assert 'jobs_total{queue="a",worker="1"} 4.0' in body
    assert 'worker="2"' not in body
    with pytest.raises(ValueError):
        merge_scrapes({"0": "not { an exposition"})


def test_a_control_path_too_long_for_the_workers_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / ("d" * (100 - len(str(tmp_path))))
    deep.mkdir(mode=0o700)
    args = [str(ROOT / "examples" / "echo_daemon.py"), "--listen", "tcp://127.0.0.1:0"]
    code = cli.main([*args, "--workers", "2", "--control", str(deep / "c.sock")])
    assert code == cli.EXIT_CONFIG
    assert "too long for the workers' private sockets" in capsys.readouterr().err
    assert list(deep.iterdir()) == []


def test_ctl_prints_an_unresponsive_worker_and_why() -> None:
    status = {
        "name": "Echo",
        "pid": 10,
        "role": "supervisor",
        "workers_configured": 2,
        "workers_ready": 1,
        "workers": [
            {"id": 0, "pid": 11, "state": "ready", "connections": 3, "rss": 1 << 25},
            {"id": 1, "pid": 12, "state": "unresponsive", "connections": None, "rss": None,
             "loop_lag": None, "restarts": 2, "error": "no reply within 2s"},
        ],
    }  # fmt: skip
    text = ctl.format_status(status)
    assert re.search(r"^1 +12 +unresponsive +- +- +- +- +2 ", text, re.M), text
    assert "worker 1 (pid 12): no reply within 2s" in text


def test_a_worker_past_its_staggered_max_runtime_asks_the_supervisor() -> None:
    clock = FakeClock()
    reactor = Reactor("asyncio", clock=clock)
    daemon = Daemon(listen="tcp://127.0.0.1:0", max_runtime=10.0, max_runtime_jitter=0.0)
    upgrader = Upgrader(daemon)
    asked: list[str] = []
    upgrader.recycle_request = lambda reason: asked.append(reason) is None
    upgrader.runtime_stagger = 0.5  # worker 1 of 2
    upgrades: list[int] = []
    daemon.set_upgrade_handler(lambda: upgrades.append(1) or 4242)
    try:
        upgrader.start(reactor)
        clock.advance(14.9)  # max_runtime plus half of it
        assert asked == []
        clock.advance(0.1)
        assert asked == ["max_runtime=10s passed"]
        clock.advance(RUNTIME_RETRY_DELAY)  # not replaced (the supervisor's new one failed)
        assert asked == ["max_runtime=10s passed"] * 2
        assert upgrades == [] and not daemon.retired  # never an upgrade of its own
    finally:
        reactor.close()


class _LateOperations:
    """A :class:`~daemonkit.ops.control.Served` that answers each request later, the
    earlier ones last (as a supervisor waiting for a slow worker would)."""

    def __init__(self, reactor: Reactor) -> None:
        self.daemon = Daemon(listen=[])
        self.reactor = reactor

    def submit(self, request: dict[str, Any], done: Any) -> None:
        n = int(request["level"])
        self.reactor.call_later(0.01 * (12 - n), done, {"ok": True, "n": n})

    def scrape_later(self, accept: str, done: Any) -> None:
        self.reactor.call_later(0.01, done, b"late 1\n", "text/plain")


def test_replies_that_come_later_go_out_in_request_order(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    path = str(tmp_path / "late.sock")
    reactor = Reactor("asyncio")
    replies: list[int] = []
    ops = _LateOperations(reactor)
    control, _ = open_endpoints(ops, path, None, ops.daemon.log)
    assert control is not None

    def client() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(WAIT)
            sock.connect(path)
            # 12 pipelined: past the 8 waiting, the client is not read until replies go.
            lines = (json.dumps({"cmd": "log-level", "level": str(n)}) for n in range(12))
            sock.sendall("\n".join(lines).encode() + b"\n")
            data = b""
            while data.count(b"\n") < 12:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            sock.sendall(b'{"cmd": "log-level", "level": "11"}\n')  # read again
            while data.count(b"\n") < 13:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        replies.extend(json.loads(line)["n"] for line in data.splitlines())

    thread = threading.Thread(target=client)
    try:
        thread.start()
        reactor.call_every(0.02, lambda: thread.is_alive() or reactor.stop())
        reactor.call_later(WAIT, reactor.stop)
        reactor.run()
    finally:
        control.close()
        thread.join(WAIT)
        reactor.close()
    assert replies == [*range(12), 11]
