"""Two daemons behind a real HAProxy and a real nginx, with the configurations of docs/scaling.md.

The guide's ``haproxy.cfg`` and ``nginx.conf`` blocks are read from the page
itself and run as written, with what a test machine needs changed and
nothing else: the two machines' addresses (``10.0.0.11``, ``10.0.0.12``) and
ports become the ephemeral ports of two in-process daemons on 127.0.0.1,
the proxies' listening ports free ones, the stats socket, pid and
temporary paths go to ``tmp_path``, and the test that waits for HAProxy's
check shortens its interval. Both proxies run in the foreground as the
current user and are stopped by their pid. Debian's ``haproxy`` and
``nginx`` (with ``libnginx-mod-stream``) are installed by
``scripts/ensure-test-tools``; without them these tests skip and say so.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from daemonkit import Connection, Daemon, Endpoint, Lines
from daemonkit.http import HttpRequest, Response
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, free_port, operations_of, recv_until

#: Real seconds a proxy's start, a check or an answer may take at most.
WAIT = 10.0

# Where Debian puts the daemons: /usr/sbin, which a user's PATH may lack.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
HAPROXY = shutil.which("haproxy", path=_SEARCH)
NGINX = shutil.which("nginx", path=_SEARCH)

_INSTALL = "; sh scripts/ensure-test-tools installs it (CI does)"
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed" + _INSTALL)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed" + _INSTALL)

PAGE = ROOT / "docs" / "scaling.md"
_BLOCK = re.compile(r"```\w*\n# (haproxy\.cfg|nginx\.conf)\n(.*?)```", re.DOTALL)

# The guide's machines and ports, and what each port is on a machine.
_MACHINES = {"10.0.0.11": 0, "10.0.0.12": 1}
_SERVICE = {"7001": "lines", "8000": "web", "9100": "metrics"}


def documented(name: str) -> str:
    """The block of docs/scaling.md that starts with ``# name``, exactly one."""
    found = [text for file, text in _BLOCK.findall(PAGE.read_text()) if file == name]
    assert len(found) == 1, f"docs/scaling.md has {len(found)} blocks named {name}"
    return found[0]


# -- the daemons: one per "machine" -----------------------------------------------------


class Web(Daemon):
    """A line endpoint, an HTTP endpoint whose ``/ws`` upgrades, the metrics endpoint.

    Every answer starts with the daemon's name, so a test sees who served
    it. ``hold`` starts a task a graceful stop waits for (until
    :meth:`release`): a daemon that stays ``stopping`` as long as a test needs.
    """

    listen = [
        Endpoint("tcp://127.0.0.1:0", name="lines", framing=Lines),
        Endpoint("http://127.0.0.1:0", name="web", websocket="/ws"),
    ]
    metrics = "tcp://127.0.0.1:0"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def on_start(self) -> None:
        self.held = asyncio.Event()

    def on_read(self, conn: Connection, line: bytes) -> None:
        if line == b"hold":
            self.spawn(self.held.wait())
        conn.send(b"%s %s" % (self.name.encode(), line))

    def on_request(self, conn: Connection, request: HttpRequest) -> Response:
        forwarded = request.header("x-forwarded-for") or "-"
        return Response.text(f"{self.name} {request.path} {forwarded}\n")

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        conn.send(f"{self.name} {message!s}")

    def release(self) -> None:
        self.held.set()


@dataclass
class Machine:
    """One daemon and its three ports, as the guide's machines have them."""

    daemon: Web
    runner: DaemonRunner
    ports: dict[str, int]


def start_machines(stack: contextlib.ExitStack) -> list[Machine]:
    machines = []
    for name in ("web1", "web2"):
        daemon = Web(name)
        runner = stack.enter_context(DaemonRunner(daemon))
        metrics = operations_of(daemon).metrics
        assert metrics is not None and metrics.address is not None
        ports = {key: address.port for key, address in runner.addresses.items()}
        ports["metrics"] = metrics.address.port
        machines.append(Machine(daemon, runner, ports))
    return machines


# -- the proxies ------------------------------------------------------------------------


def localize(config: str, machines: list[Machine], fronts: dict[str, int]) -> str:
    """The guide's config on this machine: its addresses and ports made local, line by line."""
    out = []
    for line in config.splitlines():
        found = re.search(r"\b(10\.0\.0\.\d+):(\d+)", line)
        if found:
            machine = machines[_MACHINES[found[1]]]
            line = line.replace(found[0], f"127.0.0.1:{machine.ports[_SERVICE[found[2]]]}")
            line = line.replace("port 9100", f"port {machine.ports['metrics']}")
        line = re.sub(r"\bbind :(\d+)", lambda m: f"bind 127.0.0.1:{fronts[m[1]]}", line)
        line = re.sub(r"\blisten (\d+);", lambda m: f"listen 127.0.0.1:{fronts[m[1]]};", line)
        out.append(line)
    text = "\n".join(out) + "\n"
    assert "10.0.0." not in text and "9100" not in text, text
    return text


class Proxy:
    """A proxy process in the foreground, its output in a file; stopped by its pid."""

    def __init__(self, argv: list[str], log: Path, fronts: dict[str, int]) -> None:
        self.log = log
        self.fronts = fronts
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        # Both bind every listener before serving any: the HTTP one is enough to probe,
        # and a bare connect there reaches no daemon (a TCP one would be passed on).
        self.ready(lambda: self.wait_for_port(fronts["80"]))

    def ready(self, wait: Callable[[], object]) -> None:
        """``wait()``; if it fails, stop the proxy before passing the failure on."""
        try:
            wait()
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_port(self, port: int) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.output()}")
            assert time.monotonic() < deadline, f"port {port} not open:\n{self.output()}"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # haproxy and nginx: stop at once
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(WAIT)


def start_haproxy(tmp: Path, machines: list[Machine]) -> Proxy:
    assert HAPROXY is not None
    fronts = {"7001": free_port(), "80": free_port()}
    config = localize(documented("haproxy.cfg"), machines, fronts)
    config = config.replace("/run/haproxy/", f"{tmp}/")
    # The guide checks every 2 s; the tests every 100 ms (fall 2: out after 2 failures).
    assert "inter 2s" in config
    config = config.replace("inter 2s", "inter 100ms")
    path = tmp / "haproxy.cfg"
    path.write_text(config)
    proxy = Proxy([HAPROXY, "-db", "-f", str(path)], tmp / "haproxy.log", fronts)
    # Each server starts UP and is checked at once: wait for the checks to say so.
    both = {"web1", "web2"}
    proxy.ready(lambda: wait_until(lambda: servers(tmp, "UP", "L7OK") == both, "checks", proxy))
    return proxy


def nginx_stream_module() -> str | None:
    """``load_module`` for this nginx: the module's path, "" if built in, None if missing."""
    assert NGINX is not None
    built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, check=True).stderr
    if "--with-stream " in built + " " and "--with-stream=dynamic" not in built:
        return ""
    found = re.search(r"--modules-path=(\S+)", built)
    prefix = re.search(r"--prefix=(\S+)", built)
    folder = Path(found[1]) if found else Path(prefix[1] if prefix else "/") / "modules"
    module = folder / "ngx_stream_module.so"
    return str(module) if module.exists() else None


def start_nginx(tmp: Path, machines: list[Machine]) -> Proxy:
    assert NGINX is not None
    module = nginx_stream_module()
    if module is None:
        pytest.skip("nginx's stream module is not installed: libnginx-mod-stream" + _INSTALL)
    fronts = {"7001": free_port(), "80": free_port()}
    config = localize(documented("nginx.conf"), machines, fronts)
    load = re.compile(r"^load_module modules/ngx_stream_module\.so;.*$", re.MULTILINE)
    assert load.search(config), "the guide's nginx.conf loads the stream module"
    config = load.sub(f"load_module {module};" if module else "", config)
    # Temporary files and the access log where this user may write them.
    paths = "".join(
        f"\n    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    paths += f"\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;"
    config = config.replace("http {", "http {" + paths + "\n    access_log off;", 1)
    path = tmp / "nginx.conf"
    path.write_text(config)
    argv = [NGINX, "-p", str(tmp), "-c", str(path), "-e", "stderr"]
    argv += ["-g", f"daemon off; master_process off; pid {tmp}/nginx.pid;"]
    return Proxy(argv, tmp / "nginx.log", fronts)


def haproxy_servers(tmp: Path) -> dict[tuple[str, str], dict[str, str]]:
    """``show stat`` on the stats socket: each server's row by (backend, server)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(tmp / "admin.sock"))
        sock.sendall(b"show stat\n")
        text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    header, *rows = [line for line in text.splitlines() if line]
    names = header.lstrip("# ").split(",")
    found = {}
    for row in rows:
        record = dict(zip(names, row.split(","), strict=False))
        if record["svname"] not in ("FRONTEND", "BACKEND"):
            found[record["pxname"], record["svname"]] = record
    return found


def servers(tmp: Path, state: str, check: str) -> set[str]:
    """The servers in ``state`` (``UP 1/2`` is UP) after a ``check`` status, in both backends."""
    try:
        rows = haproxy_servers(tmp)
    except (FileNotFoundError, ConnectionRefusedError):
        return set()  # the stats socket is not there yet
    return {
        server
        for (backend, server) in rows
        if all(
            rows[b, server]["status"].startswith(state) and rows[b, server]["check_status"] == check
            for b in ("chat_lines", "chat_web")
        )
    }


def wait_until(predicate: Callable[[], object], what: str, proxy: Proxy | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not within {WAIT}s: {what}" + (f"\n{proxy.output()}" if proxy else "")
            )
        time.sleep(0.02)


# -- clients ----------------------------------------------------------------------------


def line_client(port: int, stack: contextlib.ExitStack, text: str) -> tuple[str, socket.socket]:
    """A line connection, held open until ``stack`` closes: who answered ``text``, and it."""
    sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
    sock.sendall(text.encode() + b"\n")
    reply = recv_until(sock, b"\n")
    name, _, rest = reply.decode().partition(" ")
    assert rest == text + "\n", reply
    return name, sock


def line_clients(port: int, count: int, stack: contextlib.ExitStack) -> list[str]:
    """Open ``count`` line connections one after the other, held open; who answered each."""
    return [line_client(port, stack, f"hello {i}")[0] for i in range(count)]


def http_get(port: int, path: str) -> str:
    """One HTTP/1.1 GET through a proxy: the body of its 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: chat.example\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request.encode())
        response = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return body.decode()


def http_served(port: int, count: int) -> set[str]:
    """Who answered ``count`` GETs of ``/`` through a proxy."""
    return {http_get(port, "/").split(" ")[0] for _ in range(count)}


def websockets_through(port: int, count: int, stack: contextlib.ExitStack) -> list[str]:
    """Open ``count`` WebSockets on ``/ws`` one after the other, held open; who echoed each."""
    served = []
    for i in range(count):
        ws = stack.enter_context(ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=WAIT))
        ws.send(f"hi {i}")
        name, _, rest = str(ws.recv(timeout=WAIT)).partition(" ")
        assert rest == f"hi {i}"
        served.append(name)
    return served


# -- the tests --------------------------------------------------------------------------


@dataclass
class Cluster:
    tmp: Path
    machines: list[Machine]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two daemons for the whole module: the tests that stop one start their own."""
    with contextlib.ExitStack() as stack:
        yield Cluster(tmp_path_factory.mktemp("lb"), start_machines(stack))


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def proxy(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[Proxy]:
    """Each proxy in turn in front of the module's two daemons, with the guide's config."""
    name = request.param
    binary, start = {"haproxy": (HAPROXY, start_haproxy), "nginx": (NGINX, start_nginx)}[name]
    if binary is None:
        pytest.skip(f"{name} is not installed" + _INSTALL)
    tmp = cluster.tmp / name
    tmp.mkdir()
    running = start(tmp, cluster.machines)
    yield running
    running.stop()


def test_line_clients_are_spread_over_both_daemons(proxy: Proxy) -> None:
    with contextlib.ExitStack() as stack:
        served = line_clients(proxy.fronts["7001"], 4, stack)
    # Least connections: each new client goes to the daemon with fewer.
    assert collections.Counter(served) == {"web1": 2, "web2": 2}, served


def test_http_and_websocket_reach_both_daemons(proxy: Proxy) -> None:
    port = proxy.fronts["80"]
    with contextlib.ExitStack() as stack:
        served = websockets_through(port, 4, stack)
        assert collections.Counter(served) == {"web1": 2, "web2": 2}, served
        # Plain requests while the WebSockets stay open; the client's address is passed on.
        bodies = {http_get(port, "/hello") for _ in range(4)}
    names = {body.split(" ")[0] for body in bodies}
    assert names == {"web1", "web2"}, bodies
    assert all(body.endswith(" /hello 127.0.0.1\n") for body in bodies), bodies


def machines_behind(
    start: Callable[[Path, list[Machine]], Proxy], tmp: Path, stack: contextlib.ExitStack
) -> tuple[list[Machine], Proxy]:
    """Two daemons and a proxy of a test's own (it stops one), all ended by ``stack``."""
    machines = start_machines(stack)
    proxy = start(tmp, machines)
    stack.callback(proxy.stop)
    return machines, proxy


@needs_haproxy
def test_haproxy_takes_out_a_stopping_daemon_on_its_503(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        machines, proxy = machines_behind(start_haproxy, tmp_path, stack)
        port = proxy.fronts["7001"]
        web1 = machines[0]
        clients = dict(line_client(port, stack, "hi") for _ in range(2))  # one on each
        assert clients.keys() == {"web1", "web2"}
        held = clients["web1"]  # through HAProxy, to web1: a task the stop waits for
        held.sendall(b"hold\n")
        assert recv_until(held, b"\n") == b"web1 hold\n"
        # Should an assertion fail, let web1's stop end at once rather than at shutdown_timeout.
        stack.callback(lambda: web1.daemon.is_stopped() or web1.runner.call(web1.daemon.release))
        web1.runner.call(web1.daemon.stop)  # SIGTERM: graceful, and held in "stopping"

        # The check's 503 (L7STS) takes it out of both backends; web2 stays in.
        wait_until(lambda: servers(tmp_path, "DOWN", "L7STS") == {"web1"}, "web1 DOWN", proxy)
        assert servers(tmp_path, "UP", "L7OK") == {"web2"}
        assert haproxy_servers(tmp_path)["chat_lines", "web1"]["check_code"] == "503"
        assert web1.runner.call(web1.daemon.is_stopping)
        # New clients all go to web2, through both frontends.
        assert line_clients(port, 3, stack) == ["web2"] * 3
        assert http_served(proxy.fronts["80"], 3) == {"web2"}
        # The established connection stays with web1 through its DOWN, until web1 closes it.
        held.sendall(b"still here\n")
        assert recv_until(held, b"\n") == b"web1 still here\n"
        web1.runner.call(web1.daemon.release)
        wait_until(web1.daemon.is_stopped, "web1 stopped")
        assert recv_until(held, b"\n") == b""  # its close reached the client through HAProxy


@needs_nginx
def test_nginx_passes_over_a_stopped_daemon(tmp_path: Path) -> None:
    """Open-source nginx checks passively: a refused connection is retried on the other daemon."""
    with contextlib.ExitStack() as stack:
        machines, proxy = machines_behind(start_nginx, tmp_path, stack)
        machines[0].runner.stop()
        assert line_clients(proxy.fronts["7001"], 3, stack) == ["web2"] * 3
        assert http_served(proxy.fronts["80"], 3) == {"web2"}
        assert websockets_through(proxy.fronts["80"], 2, stack) == ["web2"] * 2
    assert "connect() failed (111: Connection refused)" in proxy.output()
