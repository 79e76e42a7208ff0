"""The command line, in-process (main(argv)) and as real processes with real signals."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from daemonkit import cli
from tests.helpers import ALL_BACKENDS, PYTHON, ROOT, free_port, recv_all, recv_until, wait_for_port

ECHO = str(ROOT / "examples" / "echo_daemon.py")


def write_daemon(tmp_path: Path, body: str, name: str = "mydaemon.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def spawn(*args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    full_env.pop("PYTHONASYNCIODEBUG", None)
    full_env.update(env or {})
    return subprocess.Popen(
        [PYTHON, "-m", "daemonkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=ROOT,
        **kw,  # type: ignore[call-overload]
    )


# `python -c RUN_AS_NOBODY ARGS...`: the CLI as uid 65534 when started as root (root
# may read and write anywhere), as the caller otherwise. locale is imported lazily
# by argparse's gettext, and is unreadable once we are uid 65534 when the
# interpreter lives in a directory only root may enter.
RUN_AS_NOBODY = (
    "import os, sys, locale; from daemonkit import cli\n"
    "if os.geteuid() == 0:\n"
    "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def run_as_nobody(*args: str, timeout: float = 30) -> tuple[int, str]:
    """Run the CLI with ``args`` as an unprivileged user; return its exit code and stderr."""
    proc = subprocess.Popen(
        [PYTHON, "-c", RUN_AS_NOBODY, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ, NO_COLOR="1"),
    )
    return finish(proc, timeout)


def test_unreadable_daemon_file_is_a_load_error(tmp_path: Path) -> None:
    """A file the user may not look at gives one clear line and exit 3, not a traceback."""
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)  # root's: uid 65534 may not enter
    app = secret / "app.py"
    app.write_text(Path(ECHO).read_text())
    tmp_path.chmod(0o755)
    if os.geteuid() != 0:
        secret.chmod(0o000)
    try:
        code, err = run_as_nobody(str(app), "--listen", "tcp://127.0.0.1:0")
    finally:
        secret.chmod(0o700)
    assert code == cli.EXIT_LOAD, err
    assert err.count("\n") == 1, err
    assert f"cannot read {app}: Permission denied" in err


def finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"process did not exit: {err.decode()}") from None
    return proc.returncode, err.decode()


# -- in-process ---------------------------------------------------------------


def test_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([ECHO, "--check", "--backend", "asyncio", "--listen", "tcp://127.0.0.1:0"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert "ok: EchoDaemon" in out and "backend asyncio" in out


def test_run_subcommand_name_is_optional(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", ECHO, "--check"]) == cli.EXIT_OK


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["no/such/file.py"], cli.EXIT_LOAD, "no such file"),
        (["no_such_module_xyz"], cli.EXIT_LOAD, "no module named 'no_such_module_xyz'"),
        ([ECHO + ":Nope"], cli.EXIT_LOAD, "has no attribute 'Nope'"),
        ([ECHO, "--listen", "tcp://127.0.0.1"], cli.EXIT_CONFIG, "has no port"),
        ([ECHO, "--listen", "ftp://x:1"], cli.EXIT_CONFIG, "unknown scheme"),
    ],
)
def test_user_errors_give_one_line_and_a_code(
    argv: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([ECHO, "--max-connections", "zero"]) == cli.EXIT_USAGE
    assert "not a whole number" in capsys.readouterr().err


def test_ambiguous_file_needs_a_class_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_daemon(
        tmp_path,
        """
        from daemonkit import Daemon
        class A(Daemon): pass
        class B(Daemon): pass
        """,
    )
    assert cli.main([str(path), "--check"]) == cli.EXIT_LOAD
    assert "several Daemon subclasses (A, B)" in capsys.readouterr().err
    assert cli.main([f"{path}:B", "--check"]) == cli.EXIT_OK


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-1"])
@pytest.mark.parametrize(
    ("flag", "setting"),
    [("--idle-timeout", "idle_timeout"), ("--shutdown-timeout", "shutdown_timeout")],
)
def test_check_refuses_a_duration_the_daemon_cannot_use(
    flag: str, setting: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """inf passed --check, then broke every connection (idle) or stop() (shutdown)."""
    code = cli.main([ECHO, "--check", "--listen", "tcp://127.0.0.1:0", flag, value])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert f"argument {flag}: {setting}" in err
    assert "Traceback" not in err


def test_a_size_too_large_for_a_float_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """400 digits made float() return inf and int() raise OverflowError: a traceback."""
    code = cli.main([ECHO, "--check", "--max-memory", "9" * 400 + "G"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert "argument --max-memory: " in err and "too large" in err
    assert "Traceback" not in err


def _world_writable_dir(tmp_path: Path) -> Path:
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o777)
    return path


# Each passed --check and then failed the real start: (arguments, message).
START_CHECKS = {
    "control-world-writable": (
        lambda tmp: ["--control", str(_world_writable_dir(tmp) / "ctl.sock")],
        "is world-writable",
    ),
    "control-dir-missing": (
        lambda tmp: ["--control", str(tmp / "missing" / "ctl.sock")],
        "does not exist",
    ),
    "pidfile-dir-missing": (
        lambda tmp: ["--pidfile", str(tmp / "missing" / "app.pid")],
        "does not exist",
    ),
    "unknown-user": (lambda tmp: ["--user", "no_such_user_dk"], "unknown user 'no_such_user_dk'"),
    "metrics-udp": (lambda tmp: ["--metrics", "udp://127.0.0.1:0"], "metrics endpoint"),
}


@pytest.mark.parametrize("case", list(START_CHECKS))
def test_check_runs_the_checks_the_start_runs(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, message = START_CHECKS[case]
    args = [ECHO, "--listen", "tcp://127.0.0.1:0", *make_args(tmp_path)]
    assert cli.main([*args, "--check"]) == cli.EXIT_CONFIG
    checked = capsys.readouterr().err
    assert message in checked
    assert checked.count("\n") == 1 and "Traceback" not in checked
    # The real start refuses with the very same line: one check, shared.
    code, started = finish(spawn(*args))
    assert code == cli.EXIT_CONFIG, started
    assert checked.strip() in started


def test_check_passes_with_usable_control_and_pidfile_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    argv = [ECHO, "--check", "--listen", "tcp://127.0.0.1:0", "--control", str(run_dir / "c")]
    argv += ["--pidfile", str(run_dir / "app.pid"), "--metrics", "tcp://127.0.0.1:0"]
    assert cli.main(argv) == cli.EXIT_OK, capsys.readouterr().err
    assert list(run_dir.iterdir()) == []  # --check creates nothing


WS_CHAT = str(ROOT / "examples" / "ws_chat.py")


def test_plain_listen_urls_keep_each_endpoints_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ws_chat has web (http, websocket options) and lines (tcp, Lines framing)."""
    from daemonkit.cli.loader import load_daemon_class
    from daemonkit.daemon import override_listen

    listen = load_daemon_class(WS_CHAT).listen
    moved = override_listen(listen, ["ws://127.0.0.1:0", "unix:///tmp/x.sock"])
    assert [e.name for e in moved] == ["web", "lines"]
    assert moved[0].options["websocket"] == "/ws" and moved[1].framing is not None
    argv = [WS_CHAT, "--check", "--listen", "http://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"]
    assert cli.main(argv) == cli.EXIT_OK, capsys.readouterr().err


def test_plain_listen_url_of_another_protocol_says_to_name_the_endpoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to say "unknown endpoint option(s): max_message, websocket"."""
    argv = [WS_CHAT, "--check", "--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0"]
    assert cli.main(argv) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "unknown endpoint option" not in err
    assert "endpoint 'web' (http://127.0.0.1:8000)" in err
    assert "--listen NAME=URL" in err and err.count("\n") == 1
    # By name, the same mistake gets the same explanation, minus the hint.
    assert cli.main([WS_CHAT, "--check", "--listen", "web=tcp://127.0.0.1:0"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "endpoint 'web' (http://127.0.0.1:8000)" in err and "unknown endpoint" not in err


def test_exit_codes_in_the_docs_match_the_code() -> None:
    """docs/cli.md lists every EXIT_* constant of the cli module, with its number."""
    text = (ROOT / "docs" / "cli.md").read_text()
    codes = {name: getattr(cli, name) for name in cli.__all__ if name.startswith("EXIT_")}
    for name, number in codes.items():
        assert f"`{name}`" in text, name
        assert re.search(rf"^\| {number} \|", text, re.MULTILINE), (name, number)


# -- the command line shows itself ---------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_top_level_help_lists_the_subcommands_and_the_signals(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_OK
    out = capsys.readouterr().out
    for word in ("run", "bots", "ctl", "help"):
        assert re.search(rf"^  {word} +\S", out, re.MULTILINE), (word, out)
    for signal_name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2"):
        assert signal_name in out
    assert "python -m daemonkit TARGET" in out


@pytest.mark.parametrize(
    ("command", "marker"),
    [("run", "--idle-timeout"), ("bots", "--spawn-rate"), ("ctl", "COMMAND")],
)
def test_help_command_prints_each_subcommands_help(
    command: str, marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`help` was taken for a module name to load."""
    assert cli.main(["help", command]) == cli.EXIT_OK
    assert marker in capsys.readouterr().out


def test_help_of_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["help", "nope"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no command 'nope'; there are: run, bots, ctl, build-pyuv, help" in err


def test_no_arguments_prints_the_top_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == cli.EXIT_USAGE
    assert "bots" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["--version"], ["run", "--version"], ["bots", "--version"], ["ctl", "--version"]]
)
def test_every_subcommand_has_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from daemonkit import CORE, __version__

    assert cli.main(argv) == cli.EXIT_OK
    assert capsys.readouterr().out == f"daemonkit {__version__} ({CORE} core)\n"


def test_every_option_of_every_subcommand_has_help() -> None:
    from daemonkit.cli import bots, ctl

    parsers = [cli.build_parser(), bots.build_parser(), ctl.build_parser()]
    for sub in parsers[2]._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        parsers.append(sub)
    for parser in parsers:
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"


# -- real processes ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_echo_example_serves_and_stops_on_sigterm(backend: str) -> None:
    port = free_port()
    proc = spawn(ECHO, "--listen", f"tcp://127.0.0.1:{port}", "--backend", backend)
    wait_for_port(port, proc)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"hello\n")
        assert recv_until(sock, b"\n") == b"hello\n"
        proc.send_signal(signal.SIGTERM)
        assert recv_all(sock) == b""  # the graceful stop closed us
    code, err = finish(proc)
    assert code == 0, err
    assert f"listening on tcp://127.0.0.1:{port} (backend {backend})" in err
    assert re.search(r"#1 127\.0\.0\.1:\d+ connected", err)
    assert "SIGTERM: stopping gracefully" in err
    assert "stopped" in err


def test_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    path = write_daemon(
        tmp_path,
        """
        from daemonkit import Daemon
        class Hold(Daemon):
            shutdown_timeout = 600  # a graceful stop would wait ten minutes
            close_timeout = 600
            # 16 MiB: more than loopback's socket buffers take, so the
            # connection cannot finish closing on its own (or overflow).
            max_write_buffer = 64 * 1024 * 1024
            def on_read(self, conn, data):
                for _ in range(256):
                    conn.write(b"h" * 65536)
        """,
    )
    port = free_port()
    proc = spawn(str(path), "--listen", f"tcp://127.0.0.1:{port}")
    wait_for_port(port, proc)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    with sock:
        sock.sendall(b"go")
        recv_until(sock, b"h", limit=1)
        proc.send_signal(signal.SIGTERM)
        # wait for the first signal to be logged before sending the second
        line = b""
        seen = b""
        assert proc.stderr is not None
        while b"stopping gracefully" not in line:
            line = proc.stderr.readline()
            assert line, "daemon exited early"
            seen += line
        proc.send_signal(signal.SIGTERM)
        # read() also returns what readline() buffered (communicate() would skip it)
        err = (seen + proc.stderr.read()).decode()
        code, _ = finish(proc, timeout=20)
    assert code == 0, err
    assert "SIGTERM again: stopping now" in err


def test_port_in_use_exit_code() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = finish(spawn(ECHO, "--listen", f"tcp://127.0.0.1:{port}"))
    assert code == cli.EXIT_ADDRESS_IN_USE
    assert "daemonkit: error: cannot listen on" in err and "in use" in err
    assert "Traceback" not in err


def test_permission_denied_exit_code(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root may write anywhere but in sysfs, where bind() fails with EPERM
        target = "/sys/daemonkit-test.sock"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = f"{locked}/x.sock"
    code, err = finish(spawn(ECHO, "--listen", f"unix://{target}"))
    assert code == cli.EXIT_PERMISSION, err
    assert re.search("Permission denied|Operation not permitted", err)
    assert "Traceback" not in err


def test_permission_denied_low_port_or_skip() -> None:
    if os.geteuid() == 0:
        pytest.skip("root may bind low ports")
    code, err = finish(spawn(ECHO, "--listen", "tcp://127.0.0.1:1"))
    assert code == cli.EXIT_PERMISSION, err


def test_on_start_failure_exit_code(tmp_path: Path) -> None:
    path = write_daemon(
        tmp_path,
        """
        from daemonkit import Daemon
        class Bad(Daemon):
            listen = "tcp://127.0.0.1:0"
            def on_start(self):
                raise KeyError("missing setting")
        """,
    )
    code, err = finish(spawn(str(path)))
    assert code == cli.EXIT_START
    assert "on_start failed: KeyError" in err


def test_sighup_reloads_and_sigusr1_reopens_the_log(tmp_path: Path) -> None:
    path = write_daemon(
        tmp_path,
        """
        from daemonkit import Daemon
        class Reloadable(Daemon):
            def on_reload(self):
                self.log.info("reloaded config")
        """,
    )
    port = free_port()
    log = tmp_path / "daemon.log"
    proc = spawn(str(path), "--listen", f"tcp://127.0.0.1:{port}", "--log-file", str(log))
    wait_for_port(port, proc)
    proc.send_signal(signal.SIGHUP)
    rotated = tmp_path / "daemon.log.1"
    wait_for_text(log, "reloaded config")
    log.rename(rotated)  # what logrotate does
    proc.send_signal(signal.SIGUSR1)
    wait_for_text(log, "log file reopened")
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err
    assert "reloaded config" in rotated.read_text()
    assert "stopped" in log.read_text()


def wait_for_text(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_emfile_neither_spins_nor_floods(tmp_path: Path, backend: str) -> None:
    """With a tiny open-file limit, excess clients are closed at once and the log stays short."""
    path = write_daemon(
        tmp_path,
        """
        import resource
        from daemonkit import Daemon
        class Tight(Daemon):
            max_connections = 1000  # above the descriptor limit on purpose
            def on_start(self):
                resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            def on_read(self, conn, data):
                conn.write(data)
        """,
    )
    port = free_port()
    proc = spawn(str(path), "--listen", f"tcp://127.0.0.1:{port}", "--backend", backend)
    wait_for_port(port, proc)
    clients = []
    outcomes = {"echo": 0, "closed": 0}
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(s)
        for s in clients:
            # A shed client may be reset before, during or after its first byte.
            try:
                s.sendall(b"x")
                outcomes["echo" if s.recv(1) == b"x" else "closed"] += 1
            except (ConnectionResetError, BrokenPipeError):
                outcomes["closed"] += 1
        # Still at the limit, with more clients knocking: the daemon must sit
        # idle, not spin on a listener it cannot accept from.
        for _ in range(20):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        before = _cpu_seconds(proc.pid)
        time.sleep(1.0)  # a measuring window on a real process, not a timer wait
        busy = _cpu_seconds(proc.pid) - before
    finally:
        for s in clients:
            s.close()
    # Once it has seen our clients go, the daemon serves again (a probe that
    # arrives before it has released their descriptors is shed: try again).
    assert _probe_echo(port), "the daemon did not serve again after the storm"
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err
    assert outcomes["echo"] > 0 and outcomes["closed"] > 0, outcomes
    assert outcomes["echo"] + outcomes["closed"] == 120
    emfile_lines = [line for line in err.splitlines() if "out of file descriptors" in line]
    assert 1 <= len(emfile_lines) <= 5, err
    assert busy < 0.3, f"daemon used {busy:.2f}s of CPU in 1s at the descriptor limit: spinning"


def _probe_echo(port: int, attempts: int = 100) -> bool:
    for _ in range(attempts):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"y")
                if s.recv(1) == b"y":
                    return True
        except (ConnectionResetError, BrokenPipeError):
            pass
        time.sleep(0.1)
    return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_timer_example_runs(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn(
        str(ROOT / "examples" / "timer_daemon.py"),
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--log-level",
        "debug",
    )
    wait_for_port(port, proc)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert recv_until(sock, b"\n").startswith(b"tick ")
        sock.sendall(b"ticks\n")
        reply = recv_until(sock, b"\n")
        while reply.startswith(b"tick "):
            reply = recv_until(sock, b"\n")
        assert reply.strip().isdigit()
        sock.sendall(b"what\n")
        reply = recv_until(sock, b"\n")
        while reply.startswith(b"tick "):
            reply = recv_until(sock, b"\n")
        assert reply == b"unknown command: what\n"
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 0, err
    assert "one-shot timer fired" in err
    assert "this never prints" not in err


def test_console_script_finds_a_module_in_the_working_directory(tmp_path: Path) -> None:
    write_daemon(
        tmp_path,
        """
        from daemonkit import Daemon
        class Mine(Daemon):
            listen = "tcp://127.0.0.1:0"
        """,
    )
    script = Path(PYTHON).parent / "daemonkit"
    result = subprocess.run(
        [str(script), "mydaemon", "--check"], cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"ok: Mine from mydaemon" in result.stdout


def test_make_demo_script_runs(tmp_path: Path) -> None:
    report = tmp_path / "demo.html"
    argv = [PYTHON, str(ROOT / "examples" / "demo.py"), "--bots", "50", "--duration", "2s"]
    argv += ["--report", str(report)]
    result = subprocess.run(argv, capture_output=True, timeout=90, cwd=ROOT)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "got back b'hello, daemon\\n'" in out
    assert "EchoBot x 50 bots, open model" in out
    assert "50 bots connected" in out  # the daemon's memory per bot was sampled
    assert report.read_text().count("<svg") >= 3
    assert "daemon exited with status 0" in out
