"""Stream bots over TLS: examples/chat_bot.py against examples/chat_daemon.py on tls://."""

from __future__ import annotations

from pathlib import Path

from daemonkit import Endpoint
from daemonkit.bots import BotRunner
from daemonkit.testing import DaemonRunner
from tests.helpers import load_example

chat_daemon = load_example("chat_daemon")
chat_bot = load_example("chat_bot")


def test_chat_bots_over_tls_with_a_ca_file(ca: tuple[Path, Path, Path], backend: str) -> None:
    cert, key, ca_file = ca
    listen = Endpoint("tls://127.0.0.1:0", certfile=str(cert), keyfile=str(key))
    with DaemonRunner(chat_daemon.ChatDaemon(listen=listen), backend=backend) as daemon:
        target = str(daemon.address)
        assert target.startswith("tls://")

        class TlsChatBot(chat_bot.ChatBot):
            cafile = str(ca_file)
            think_time = 0.05

        class Unverified(chat_bot.ChatBot):
            pass  # the system's CAs do not know this certificate

        result = BotRunner(TlsChatBot, target, bots=4, duration=0.8, stop_timeout=1.0).run()
        refused = BotRunner(Unverified, target, bots=2, duration=0.3, stop_timeout=1.0).run()
    ops = result.stats.operations
    assert ops["nick"].count == 4 and ops["join"].count == 4
    assert ops["say"].count > 8 and result.stats.errors == 0
    # Before, tls:// was dialled as plain TCP: the bots "connected" and got no replies.
    assert refused.peak_connected == 0
    assert refused.stats.connect_errors == {"tls: certificate verify failed": 2}
