"""``daemonkit bots --cafile FILE`` and ``--insecure`` against https://, wss:// and tls:// targets.

Each target is one of the project's examples behind a trustme certificate
that the system's CAs do not know: http_hello, ws_chat and chat_daemon.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import Endpoint
from daemonkit.cli import bots as bots_cli
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, load_example

http_hello = load_example("http_hello")
ws_chat = load_example("ws_chat")
chat_daemon = load_example("chat_daemon")

CHAT_BOT = str(ROOT / "examples" / "chat_bot.py")

HTTPS_BOT = """
from daemonkit.bots import HttpBot


class Visitor(HttpBot):
    think_time = 0.05

    def on_tick(self):
        self.get("/", name="home")
"""

WSS_BOT = """
from daemonkit.bots import WebSocketBot


class Chatter(WebSocketBot):
    path = "/ws"

    async def script(self):
        await self.call("NICK bot%d" % self.index, name="nick")
        await self.sleep(5)
"""


@pytest.fixture(scope="module")
def certs(ca: tuple[Path, Path, Path]) -> tuple[str, str, str]:
    """The shared certificate (conftest's ``ca``) as strings for command lines."""
    cert, key, ca_file = ca
    return str(cert), str(key), str(ca_file)


@pytest.fixture(params=["https", "wss", "tls"])
def served(
    request: pytest.FixtureRequest, certs: tuple[str, str, str], tmp_path: Path
) -> Iterator[tuple[str, str, str]]:
    """(bot file, target, operation measured) for a daemon behind the private certificate."""
    cert, key, _ = certs
    scheme = request.param
    if scheme == "https":
        daemon = http_hello.HelloDaemon(
            listen=Endpoint("https://127.0.0.1:0", certfile=cert, keyfile=key)
        )
        botfile, op = tmp_path / "visitor.py", "home"
        botfile.write_text(HTTPS_BOT)
    elif scheme == "wss":
        web = Endpoint(
            "https://127.0.0.1:0", name="web", websocket="/ws", certfile=cert, keyfile=key
        )
        daemon = ws_chat.WsChatDaemon(listen=[web])
        botfile, op = tmp_path / "chatter.py", "nick"
        botfile.write_text(WSS_BOT)
    else:
        daemon = chat_daemon.ChatDaemon(
            listen=Endpoint("tls://127.0.0.1:0", certfile=cert, keyfile=key)
        )
        botfile, op = Path(CHAT_BOT), "nick"
    with DaemonRunner(daemon) as server:
        target = str(server.address)
        if scheme == "wss":
            target = target.replace("https://", "wss://")
        yield str(botfile), target, op


def run(*argv: str) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    code = bots_cli.main(
        [*argv, "-u", "2", "-t", "0.5s", "--quiet", "--stop-timeout", "0.5s"], out=out
    )
    return code, {"out": out.getvalue()}


def test_cafile_and_insecure_override_the_class(
    served: tuple[str, str, str], certs: tuple[str, str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    botfile, target, op = served
    report = tmp_path / "r.json"
    # The class trusts the system's CAs only: refused, as the certificate is private.
    code, _ = run(botfile, "-H", target, "--json", str(report))
    assert code == bots_cli.EXIT_NO_CONNECTION
    refused = json.loads(report.read_text())["stats"]["connect_errors"]
    assert refused == {"tls: certificate verify failed": 2}
    assert "--insecure" not in capsys.readouterr().err

    code, got = run(botfile, "-H", target, "--cafile", certs[2], "--json", str(report))
    assert code == 0, got["out"]
    ops = json.loads(report.read_text())["summary"]["operations"]
    assert ops[op]["count"] >= 2 and ops[op]["errors"] == 0
    assert "--insecure" not in capsys.readouterr().err

    code, got = run(botfile, "-H", target, "--insecure", "--json", str(report))
    assert code == 0, got["out"]
    ops = json.loads(report.read_text())["summary"]["operations"]
    assert ops[op]["count"] >= 2 and ops[op]["errors"] == 0
    # Verification off is said, as the explicit choice it is.
    assert "--insecure: TLS certificates and server names are not verified" in (
        capsys.readouterr().err
    )


def test_a_cafile_that_cannot_be_read_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.pem"
    code, _ = run(CHAT_BOT, "-H", "tls://127.0.0.1:1", "--cafile", str(missing))
    assert code == bots_cli.EXIT_CONFIG
    assert f"--cafile {missing}" in capsys.readouterr().err


def test_cafile_and_insecure_together_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], certs: tuple[str, str, str]
) -> None:
    code, _ = run(CHAT_BOT, "-H", "tls://127.0.0.1:1", "--cafile", certs[2], "--insecure")
    assert code == bots_cli.EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_workers_get_the_tls_options() -> None:
    args = bots_cli.build_parser().parse_args(
        [CHAT_BOT, "-H", "tls://127.0.0.1:1", "--cafile", "ca.pem"]
    )
    argv = bots_cli._worker_argv(args)
    assert argv[argv.index("--cafile") + 1] == str(Path("ca.pem").resolve())
    args = bots_cli.build_parser().parse_args([CHAT_BOT, "-H", "tls://127.0.0.1:1", "--insecure"])
    assert "--insecure" in bots_cli._worker_argv(args)
