"""Configuration from outside the code: a TOML file, DAEMONKIT_* variables, the command line.

One settings table (daemonkit.cli.config.SETTINGS) drives the options, the
file keys and the variables; these tests hold it to the Daemon class and to
docs/operations.md, and feed every kind of bad input through the real
``main(argv)``: one line naming the source (file:LINE or the variable), exit 2.
"""

from __future__ import annotations

import json
import re
import socket
import textwrap
from pathlib import Path

import pytest
import trustme

from daemonkit import cli
from daemonkit.cli import config
from daemonkit.core.durations import parse_duration
from daemonkit.daemon import Daemon
from daemonkit.errors import ConfigError
from tests.helpers import ROOT, free_port, recv_until, wait_for_port
from tests.test_cli import finish, spawn

ECHO = str(ROOT / "examples" / "echo_daemon.py")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DAEMONKIT_* setting of the caller's shell leaks into these tests."""
    for setting in config.SETTINGS:
        if setting.env is not None:
            monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)


def write(tmp_path: Path, text: str, name: str = "daemon.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# -- one duration syntax ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), (" 1.5 ", 1.5)],
)
def test_parse_duration_reads_every_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "5 minutes", "m", "1d"])
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ConfigError, match="write e.g. 30s, 2m, 500ms or 1h"):
        parse_duration(text)


def test_bots_parse_duration_is_the_core_one() -> None:
    from daemonkit.cli import bots

    assert bots.parse_duration("2m") == parse_duration("2m") == 120.0


@pytest.mark.parametrize(("text", "seconds"), [("2m", 120.0), ("500ms", 0.5), ("1h", 3600.0)])
def test_run_takes_the_duration_syntax_bots_takes(
    text: str, seconds: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """run refused --idle-timeout 2m and 500ms while bots accepted them."""
    code = cli.main([ECHO, "--print-config", "--idle-timeout", text])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert re.search(rf"^idle_timeout +{seconds:g} +command line$", out, re.MULTILINE), out


# -- the table ------------------------------------------------------------------------


def test_the_table_covers_every_daemon_setting() -> None:
    names = {s.name for s in config.SETTINGS if s.scope == "daemon"}
    assert names | set(config.CLASS_ONLY) == set(Daemon._SETTINGS)
    assert not names & set(config.CLASS_ONLY)


def test_every_setting_has_help_an_option_and_a_variable() -> None:
    for setting in config.SETTINGS:
        assert setting.help, setting.name
        if setting.scope != "endpoint":
            assert setting.option == "--" + setting.name.replace("_", "-")
            assert setting.env == "DAEMONKIT_" + setting.name.upper()
    parser = cli.build_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    for setting in config.SETTINGS:
        if setting.option is not None:
            assert setting.option in options, setting.option


def test_the_reference_in_the_docs_is_the_table() -> None:
    """docs/operations.md carries config.render_reference() between its markers."""
    text = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(
        rf"{re.escape(config.REFERENCE_START)}\n(.*?){re.escape(config.REFERENCE_END)}",
        text,
        re.DOTALL,
    )
    assert match is not None, f"docs/operations.md lacks {config.REFERENCE_START}"
    rendered = config.render_reference()
    assert match.group(1) == rendered, (
        "docs/operations.md is out of date; paste this between the markers:\n" + rendered
    )


# -- precedence: class < file < environment < command line ----------------------------


def test_file_environment_and_command_line_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        # comment
        idle_timeout = "2m"
        send_timeout = 5
        shutdown_timeout = "3s"
        log_level = "warning"
        """,
    )
    monkeypatch.setenv("DAEMONKIT_SEND_TIMEOUT", "7s")
    monkeypatch.setenv("DAEMONKIT_SHUTDOWN_TIMEOUT", "8")
    code = cli.main([ECHO, "-c", str(path), "--shutdown-timeout", "500ms", "--print-config"])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines() if line}
    assert rows["idle_timeout"] == ["120", f"file {path}:2"]
    assert rows["send_timeout"] == ["7", "env DAEMONKIT_SEND_TIMEOUT"]
    assert rows["shutdown_timeout"] == ["0.5", "command line"]
    assert rows["log_level"] == ["warning", f"file {path}:5"]
    assert rows["close_timeout"] == ["10", "class"]
    assert rows["backend"] == ["auto", "default"]


def test_the_config_file_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'max_connections = 77\nlisten = "tcp://127.0.0.1:0"\n')
    monkeypatch.setenv("DAEMONKIT_CONFIG", str(path))
    assert cli.main([ECHO, "--print-config"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert re.search(rf"^max_connections +77 +file {re.escape(str(path))}:1$", out, re.MULTILINE)
    assert re.search(r"^listen +tcp://127\.0\.0\.1:0 ", out, re.MULTILINE)


def test_flags_and_lists_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAEMONKIT_LISTEN", "tcp://127.0.0.1:0, unix:///tmp/dk-never-bound.sock")
    monkeypatch.setenv("DAEMONKIT_DAEMON", "yes")
    monkeypatch.setenv("DAEMONKIT_SIGNALS", "USR2 SIGWINCH")
    assert cli.main([ECHO, "--print-config", "--no-daemon"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert re.search(r"^listen +tcp://127\.0\.0\.1:0, unix:///tmp/dk-never-bound\.sock ", out, re.M)
    assert re.search(r"^daemon +false +command line$", out, re.MULTILINE)
    assert re.search(r"^signals +SIGUSR2, SIGWINCH +env DAEMONKIT_SIGNALS$", out, re.M)


def test_check_validates_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, 'listen = "tcp://127.0.0.1:0"\nbackend = "asyncio"\n')
    assert cli.main([ECHO, "--config", str(path), "--check"]) == cli.EXIT_OK
    assert "backend asyncio" in capsys.readouterr().out


# -- endpoints -----------------------------------------------------------------------


def test_an_endpoint_table_replaces_that_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        [endpoint.tcp]
        url = "tcp://127.0.0.1:0"
        idle_timeout = "1m"
        send_timeout = "250ms"
        sndbuf = "64K"
        """,
    )
    assert cli.main([ECHO, "-c", str(path), "--print-config"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    where = f"file {path}"
    assert re.search(rf"^endpoint\.tcp\.url +tcp://127\.0\.0\.1:0 +{where}:2$", out, re.M), out
    assert re.search(rf"^endpoint\.tcp\.idle_timeout +60 +{where}:3$", out, re.M)
    assert re.search(rf"^endpoint\.tcp\.send_timeout +0\.25 +{where}:4$", out, re.M)
    assert re.search(rf"^endpoint\.tcp\.sndbuf +65536 +{where}:5$", out, re.M)


def test_certfile_serves_a_tls_url_given_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certfile, keyfile = tls_files(tmp_path)
    argv = [ECHO, "--check", "--listen", "tls://127.0.0.1:0"]
    assert cli.main(argv) == cli.EXIT_CONFIG
    assert "needs certfile" in capsys.readouterr().err
    argv += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
    assert cli.main(argv) == cli.EXIT_OK, capsys.readouterr().err
    assert "listen tls://127.0.0.1:0" in capsys.readouterr().out


def test_an_endpoint_table_brings_its_own_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certfile, keyfile = tls_files(tmp_path)
    path = write(
        tmp_path,
        f"""
        [endpoint.tcp]
        url = "tls://127.0.0.1:0"
        certfile = "{certfile}"
        keyfile = "{keyfile}"
        """,
    )
    assert cli.main([ECHO, "-c", str(path), "--check"]) == cli.EXIT_OK, capsys.readouterr().err
    assert "listen tls://127.0.0.1:0" in capsys.readouterr().out


def test_certfile_without_keyfile_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([ECHO, "--check", "--certfile", "c.pem"]) == cli.EXIT_USAGE
    assert "--certfile and --keyfile go together" in one_error(capsys)


def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, written to ``tmp_path``."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return certfile, keyfile


# -- bad input: one line, the source, exit 2 ------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idle_timeout = \n", r"daemon\.toml:1: .*(Invalid|invalid) value"),
        (
            "\n\nidle_timout = 3\n",
            r"daemon\.toml:3: unknown key 'idle_timout'.*did you mean idle_timeout",
        ),
        ('max_connections = "many"\n', r"daemon\.toml:1: max_connections: .*whole number"),
        ("\nmax_connections = 0\n", r"daemon\.toml:2: max_connections: 0 must be at least 1"),
        ('idle_timeout = "inf"\n', r"daemon\.toml:1: idle_timeout: .*finite"),
        ("idle_timeout = -1\n", r"daemon\.toml:1: idle_timeout: .*at least 0"),
        ("daemon = 1\n", r"daemon\.toml:1: daemon: .*true or false"),
        ('backend = "tokio"\n', r"daemon\.toml:1: backend: .*'tokio'.*auto, uvloop, asyncio"),
        (
            '[endpoint.nope]\nurl = "tcp://127.0.0.1:0"\n',
            r"daemon\.toml:1: .*no endpoint named 'nope'.*tcp",
        ),
        ("[endpoint.tcp]\nport = 3\n", r"daemon\.toml:2: unknown key 'port' in \[endpoint\.tcp\]"),
        ('[endpoint.tcp]\nurl = "tcp://x"\n', r"daemon\.toml:2: endpoint\.tcp\.url: .*has no port"),
        ("[server]\nlisten = 3\n", r"daemon\.toml:1: unknown table \[server\]"),
        (
            "max_runtime_jitter = 1.5\n",
            r"daemon\.toml:1: max_runtime_jitter: 1\.5 is not a fraction from 0 to 1",
        ),
        (
            "max_runtime_jitter = true\n",
            r"daemon\.toml:1: max_runtime_jitter: .*write e\.g\. max_runtime_jitter = 0\.1",
        ),
    ],
)
def test_a_bad_file_is_one_line_with_its_line_number(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text(text)
    assert cli.main([ECHO, "-c", str(path), "--check"]) == cli.EXIT_USAGE
    err = one_error(capsys)
    assert re.search(message, err), err
    assert err.startswith("daemonkit: error: ")


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([ECHO, "-c", str(tmp_path / "none.toml"), "--check"]) == cli.EXIT_USAGE
    assert "cannot read config file" in one_error(capsys)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("DAEMONKIT_IDLE_TIMEOUT", "soon", "'soon' is not a duration"),
        ("DAEMONKIT_MAX_CONNECTIONS", "0", "0 must be at least 1"),
        ("DAEMONKIT_DAEMON", "maybe", "true or false"),
        ("DAEMONKIT_SIGNALS", "SIGNOPE", "no signal named 'SIGNOPE'"),
        ("DAEMONKIT_MAX_MEMORY", "lots", "is not a size"),
        ("DAEMONKIT_MAX_RUNTIME_JITTER", "-0.1", "-0.1 is not a fraction from 0 to 1"),
        ("DAEMONKIT_MAX_RUNTIME_JITTER", "10%", "'10%' is not a number"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(
    var: str,
    value: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(var, value)
    assert cli.main([ECHO, "--check"]) == cli.EXIT_USAGE
    err = one_error(capsys)
    assert f"environment {var}={value!r}: " in err and message in err, err


# -- max_runtime_jitter: a setting like the others (it was class-only) --------------


def test_max_runtime_jitter_from_the_file_the_environment_and_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def jitter_row(*argv: str) -> list[str]:
        assert cli.main([ECHO, "--print-config", *argv]) == cli.EXIT_OK
        out = capsys.readouterr().out
        found = [line for line in out.splitlines() if line.startswith("max_runtime_jitter ")]
        assert len(found) == 1, out
        return found[0].split(None, 2)[1:]

    assert jitter_row() == ["0.1", "class"]
    path = write(tmp_path, 'max_runtime = "6h"\nmax_runtime_jitter = 0.25\n')
    assert jitter_row("-c", str(path)) == ["0.25", f"file {path}:2"]
    monkeypatch.setenv("DAEMONKIT_MAX_RUNTIME_JITTER", "0.5")
    assert jitter_row("-c", str(path)) == ["0.5", "env DAEMONKIT_MAX_RUNTIME_JITTER"]
    assert jitter_row("-c", str(path), "--max-runtime-jitter", "0") == ["0", "command line"]


@pytest.mark.parametrize("word", ["1.01", "nan", "a tenth"])
def test_a_bad_max_runtime_jitter_option_is_a_usage_error(
    word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main([ECHO, "--check", "--max-runtime-jitter", word])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert "argument --max-runtime-jitter: " in err, err
    assert "is not a fraction from 0 to 1" in err or "is not a number" in err, err
    assert "Traceback" not in err


# -- a real process configured only by a file and the environment -------------------


def test_a_daemon_configured_only_by_file_and_environment(tmp_path: Path) -> None:
    port = free_port()
    path = write(
        tmp_path,
        f"""
        # echo.toml
        listen = "tcp://127.0.0.1:{port}"
        idle_timeout = "2m"
        """,
    )
    env = {
        "DAEMONKIT_CONFIG": str(path),
        "DAEMONKIT_BACKEND": "asyncio",
        "DAEMONKIT_LOG_FORMAT": "json",
    }
    proc = spawn(ECHO, env=env)
    wait_for_port(port, proc)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"configured\n")
        assert recv_until(sock, b"\n") == b"configured\n"
    proc.terminate()
    code, err = finish(proc)
    assert code == 0, err
    messages = [json.loads(line)["message"] for line in err.splitlines()]
    assert f"listening on tcp://127.0.0.1:{port} (backend asyncio)" in messages


def test_a_log_config_file_that_cannot_be_read_is_a_setting_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAEMONKIT_LOG_CONFIG", str(tmp_path / "missing.json"))
    assert cli.main([ECHO, "--check"]) == cli.EXIT_CONFIG
    assert "cannot set up logging" in one_error(capsys)
