"""The RESP benchmark servers (issue 17) answer the Redis protocol correctly; no speed.

``bench/servers/_resp.py`` holds the parser and the store; ``raw_resp.py``
calls the parser from a bare uvloop Protocol, and ``daemonkit_resp.py`` reads
with daemonkit's own ``Resp`` framer (tested in tests/framing/test_resp.py).
Both servers, run as processes on real sockets, give the same replies to the
same pipelined commands; the daemonkit one, started the way bench/run.py starts it, reports
the core it runs (pure when ``DAEMONKIT_NO_EXTENSIONS=1``). The catalog's
pure variants, the shipped example in the memory workload and the targets
are checked to name servers that exist.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SERVERS = BENCH / "servers"
for _path in (str(BENCH), str(SERVERS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _catalog  # noqa: E402
import _resp  # noqa: E402
import render  # noqa: E402

#: Seconds a server process gets to accept its first connection.
READY_TIMEOUT = 15.0
#: Seconds a test waits for all the replies it expects.
REPLY_TIMEOUT = 10.0

# A pipelined exchange: the commands, then the replies in order.
EXCHANGE: list[tuple[list[bytes], bytes]] = [
    ([b"PING"], b"+PONG\r\n"),
    ([b"GET", b"k"], b"$-1\r\n"),
    ([b"SET", b"k", b"v\r\nwith crlf"], b"+OK\r\n"),
    ([b"get", b"k"], b"$12\r\nv\r\nwith crlf\r\n"),
    ([b"INCR", b"n"], b":1\r\n"),
    ([b"INCR", b"n"], b":2\r\n"),
    ([b"INCR", b"k"], b"-ERR value is not an integer or out of range\r\n"),
    ([b"GET"], b"-ERR wrong number of arguments for 'get' command\r\n"),
    ([b"NOPE"], b"-ERR unknown command 'NOPE'\r\n"),
    ([b"PING", b"hi"], b"$2\r\nhi\r\n"),
]
COMMANDS = [cmd for cmd, _ in EXCHANGE]
STREAM = b"".join(_resp.encode_command(cmd) for cmd in COMMANDS)
REPLIES = b"".join(reply for _, reply in EXCHANGE)


# -- the store (the servers' framers: daemonkit's Resp, tests/framing/test_resp.py) ---


def test_store_answers_the_exchange() -> None:
    store = _resp.Store()
    assert [store.execute(cmd) for cmd in COMMANDS] == [reply for _, reply in EXCHANGE]
    assert store.execute([b"CONFIG", b"GET", b"save"]) == b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"


# -- the servers, on real sockets --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Start the server named by the test's parameter; yield (port, core file)."""
    kind = request.param
    port = _free_port()
    core = tmp_path / "core"
    env = dict(os.environ, BENCH_CORE_FILE=str(core))
    if kind == "raw":
        argv = [sys.executable, str(SERVERS / "raw_resp.py"), str(port)]
    else:
        argv = [
            sys.executable,
            str(SERVERS / "_dk_run.py"),
            str(SERVERS / "daemonkit_resp.py"),
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
        if kind == "daemonkit-pure":
            env.update(_catalog.PURE_ENV)
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{kind} server not accepting"
                time.sleep(0.05)
        yield port, core
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def _exchange(port: int, chunks: list[bytes]) -> bytes:
    """Send ``chunks`` (each its own send) and return the replies, up to len(REPLIES) bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
        got = b""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while len(got) < len(REPLIES) and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            got += data
        return got


@pytest.mark.slow
@pytest.mark.parametrize("server", ["raw", "daemonkit", "daemonkit-pure"], indirect=True)
def test_server_answers_a_pipelined_exchange(server: tuple[int, Path]) -> None:
    port, _ = server
    assert _exchange(port, [STREAM]) == REPLIES


@pytest.mark.slow
@pytest.mark.parametrize("server", ["raw", "daemonkit"], indirect=True)
def test_server_answers_commands_split_anywhere(server: tuple[int, Path]) -> None:
    port, _ = server
    # A fresh key space per server: the same exchange gives the same replies.
    pieces = [STREAM[i : i + 7] for i in range(0, len(STREAM), 7)]
    assert _exchange(port, pieces) == REPLIES


@pytest.mark.slow
@pytest.mark.parametrize("server", ["daemonkit-pure"], indirect=True)
def test_daemonkit_server_reports_the_pure_core_when_forced(server: tuple[int, Path]) -> None:
    _, core = server
    assert core.read_text().strip() == "pure"


# -- the catalog and the report ------------------------------------------------------------


def test_pure_variants_run_their_compiled_sibling_with_the_pure_environment() -> None:
    pures = {
        s.name: s
        for w in _catalog.WORKLOADS
        for s in w.servers
        if s.name.endswith(_catalog.PURE_SUFFIX)
    }
    assert {
        "daemonkit-uvloop-pure",
        "daemonkit-lines-uvloop-pure",
        "daemonkit-lines-batch-uvloop-pure",
        "daemonkit-resp-uvloop-pure",
        "daemonkit-example-uvloop-pure",
    } <= set(pures)
    for w in _catalog.WORKLOADS:
        names = {s.name: s for s in w.servers}
        for name, spec in names.items():
            if name.endswith(_catalog.PURE_SUFFIX):
                sibling = names[name.removesuffix(_catalog.PURE_SUFFIX)]
                assert spec.env == _catalog.PURE_ENV
                assert (spec.kind, spec.path, spec.backend) == (
                    sibling.kind,
                    sibling.path,
                    sibling.backend,
                )
                assert not sibling.env


def test_memory_workload_measures_the_shipped_example() -> None:
    servers = {s.name: s for s in _catalog.BY_NAME["idle-memory"].servers}
    example = servers["daemonkit-example-uvloop"]
    assert example.path == "examples/echo_daemon.py"
    assert (REPO / example.path).is_file()


def test_every_target_names_servers_of_its_workload() -> None:
    for t in _catalog.TARGETS:
        wl = _catalog.BY_NAME[t.workload]
        if not wl.servers:
            continue  # micro-benchmarks: variants are named by bench/micro.py
        names = {s.name for s in wl.servers} | set(_catalog.C_NAMES)
        assert t.server in names, t.name
        assert t.other is None or t.other in names, t.name


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_targets_use_their_metric_and_level(tmp_path: Path) -> None:
    def sample(wl: str, server: str, **fields: Any) -> dict[str, Any]:
        return {"kind": "sample", "workload": wl, "server": server, "round": 0, **fields}

    path = _write(
        tmp_path / "run.jsonl",
        [
            {"kind": "meta", "workloads": ["raw-64-p1", "idle-memory"]},
            sample("raw-64-p1", "raw-uvloop", msgs_per_s=100.0, server_user_us_per_msg=2.0),
            sample("raw-64-p1", "daemonkit-uvloop", msgs_per_s=110.0, server_user_us_per_msg=3.0),
            sample("idle-memory", "raw-uvloop", level=2000, kib_per_conn=1.0),
            sample("idle-memory", "daemonkit-example-uvloop", level=2000, kib_per_conn=0.9),
            {"kind": "end"},
        ],
    )
    res = render.load(path)
    by_name = {t.name: t for t in _catalog.TARGETS}
    speed = by_name["raw-64-p1: daemonkit-uvloop >= 1.0x raw-uvloop"]
    cpu = by_name["raw-64-p1: daemonkit-uvloop user CPU per message <= 1.0x raw-uvloop's"]
    memory = next(t for t in _catalog.TARGETS if t.server == "daemonkit-example-uvloop")
    assert render.verdict(res, speed) == ("PASS", "1.10x")
    assert render.verdict(res, cpu) == ("MISS", "1.50x")
    assert render.verdict(res, memory) == ("PASS", "0.90x at 2,000, not 10,000")


def test_report_shows_the_core_each_server_ran(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "run.jsonl",
        [
            {"kind": "meta", "workloads": ["raw-64-p1"]},
            {
                "kind": "sample",
                "workload": "raw-64-p1",
                "server": "daemonkit-uvloop-pure",
                "round": 0,
                "msgs_per_s": 1.0,
                "core": "compiled",
            },
            {"kind": "end"},
        ],
    )
    page = render.render(path, tmp_path / "docs", echo=False)
    assert "core: compiled; **expected the pure core**" in page
    assert "compiled: `daemonkit-uvloop-pure`" in page


def test_report_sets_each_compiled_row_beside_its_pure_twin(tmp_path: Path) -> None:
    def sample(wl: str, server: str, rnd: int, **fields: Any) -> dict[str, Any]:
        return {"kind": "sample", "workload": wl, "server": server, "round": rnd, **fields}

    idle = {"level": 10, "rss_base_kib": 10_000.0}
    path = _write(
        tmp_path / "run.jsonl",
        [
            {"kind": "meta", "workloads": ["resp-p16", "idle-memory"]},
            sample("resp-p16", "daemonkit-resp-uvloop", 0, msgs_per_s=300.0),
            sample("resp-p16", "daemonkit-resp-uvloop-pure", 0, msgs_per_s=100.0),
            sample("resp-p16", "daemonkit-resp-uvloop", 1, msgs_per_s=200.0),
            sample("resp-p16", "daemonkit-resp-uvloop-pure", 1, msgs_per_s=100.0),
            sample("idle-memory", "daemonkit-example-uvloop", 0, kib_per_conn=1.5, **idle),
            sample("idle-memory", "daemonkit-example-uvloop-pure", 0, kib_per_conn=2.0, **idle),
            {"kind": "end"},
        ],
    )
    page = render.render(path, tmp_path / "docs", echo=False)
    section = page.split("## The compiled core against the pure core")[1].split("\n## ")[0]
    # Round by round: 3.0 and 2.0, median 2.5; memory 1.5 / 2.0.
    assert "| `resp-p16` | `daemonkit-resp-uvloop` | 100 | 250 | 2.50 (2.00-3.00) |" in section
    assert "| `idle-memory` | `daemonkit-example-uvloop` | 2.00 | 1.50 | 0.75 " in section


def test_report_has_no_compiled_section_without_pure_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "run.jsonl",
        [
            {"kind": "meta", "workloads": ["raw-64-p1"]},
            {"kind": "sample", "workload": "raw-64-p1", "server": "raw-uvloop", "round": 0,
             "msgs_per_s": 1.0},
            {"kind": "end"},
        ],
    )  # fmt: skip
    assert "against the pure core" not in render.render(path, tmp_path / "docs", echo=False)
