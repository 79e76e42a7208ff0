"""The job queue benchmark works end to end (issue 12); it asserts no speed.

``bench/jobqueue.py`` runs once with tiny counts, into a temporary
directory, against the real beanstalkd and ``examples/jobqueue``: it must exit
0, both servers must have answered every load (cycle, mix, memory) with no
wrong reply, and the report and its JSON lines must carry the figures the
issue asks for (ops/s and their ratio, p50/p99, memory per ready job and its
ratio). And the load generator itself must count a reply it does not expect
as an error, loudly, rather than measure it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

# A parallel run (make unit: pytest -n 2 --dist loadfile) runs this whole
# module in one worker: both of its tests may compile bench/.build/bstalk_load,
# and two compilers writing one binary while it runs would break a test.

#: Seconds the tiny run may take (about 10 s on 2 busy cores).
RUN_TIMEOUT = 90
#: Seconds the fake server below waits for its client.
FAKE_TIMEOUT = 10.0
#: Jobs put for the memory figure in the tiny run.
FILL_JOBS = 2000

needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="needs Linux (epoll, /proc)"
)
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for bstalk_load")


@pytest.mark.slow
@needs_linux
@needs_gcc
@pytest.mark.skipif(shutil.which("beanstalkd") is None, reason="needs the beanstalkd program")
@pytest.mark.skipif(
    not (REPO / "examples" / "jobqueue" / "server.py").exists(),
    reason="examples/jobqueue/server.py is not there yet",
)
@pytest.mark.timeout(RUN_TIMEOUT + 30)
def test_tiny_run_measures_both_servers(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "jobqueue.py"),
            "--quick",
            "--duration=0.5",
            "--warmup=0",
            "--count=300",
            "--connections=10",
            f"--fill-jobs={FILL_JOBS}",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    output = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output

    files = sorted(tmp_path.glob("jobqueue-*.jsonl"))
    assert len(files) == 1, output
    records = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    assert records[0]["kind"] == "meta" and records[0]["quick"] is True
    assert records[-1]["kind"] == "end"
    servers = [t["name"] for t in records[0]["targets"]]
    assert servers == ["beanstalkd", "jobqueue-uvloop"], output

    samples = [r for r in records if r["kind"] == "sample"]
    assert not [s for s in samples if s.get("error")], output
    for server in servers:
        for mode in ("cycle", "mix"):
            (s,) = [x for x in samples if x["server"] == server and x["mode"] == mode]
            client = s["client"]
            assert client["errors"] == 0 and client["jobs"] > 0
            assert client["puts"] > 0 and client["reserves"] > 0 and client["deletes"] > 0
            assert s["ops_per_s"] > 0 and s["lat_p99_us"] >= s["lat_p50_us"] > 0
        (m,) = [x for x in samples if x["server"] == server and x["mode"] == "memory"]
        assert m["jobs"] == FILL_JOBS and m["jobs_ready"] == FILL_JOBS, output
        assert m["rss_after_kib"] > 0 and "bytes_per_job" in m

    summaries = {(r["mode"], r["server"]): r for r in records if r["kind"] == "summary"}
    for mode in ("cycle", "mix", "memory"):
        rec = summaries[(mode, "jobqueue-uvloop")]
        assert rec["ratio"] is not None and rec["verdict"] in ("PASS", "MISS")
    report = proc.stdout
    assert "ops/s median" in report and "p50 / p99 latency" in report
    assert "bytes per job median" in report and "Machine:" in report
    assert report.count("VERDICT jobqueue-uvloop") == 3


class _WrongServer:
    """A one-connection TCP server on 127.0.0.1 answering every line with OUT_OF_MEMORY."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(FAKE_TIMEOUT)
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        deadline = time.monotonic() + FAKE_TIMEOUT
        with conn:
            conn.settimeout(FAKE_TIMEOUT)
            data = b""
            while time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                data += chunk
                while b"\r\n" in data:
                    line, data = data.split(b"\r\n", 1)
                    if line.startswith(b"put "):
                        data = data.partition(b"\r\n")[2]  # the body
                    conn.sendall(b"OUT_OF_MEMORY\r\n")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(FAKE_TIMEOUT)


@needs_linux
@needs_gcc
def test_load_generator_counts_a_wrong_reply_as_an_error() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _common import build_c
    finally:
        sys.path.remove(str(BENCH))
    binary = build_c("bstalk_load")
    server = _WrongServer()
    try:
        proc = subprocess.run(
            [
                str(binary),
                f"--port={server.port}",
                "--mode=cycle",
                "--connections=1",
                "--warmup=0",
                "--duration=5",
            ],
            capture_output=True,
            text=True,
            timeout=FAKE_TIMEOUT + 30,
            check=False,
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["errors"] == 1 and record["jobs"] == 0
    assert "OUT_OF_MEMORY" in proc.stderr and "after put" in proc.stderr
