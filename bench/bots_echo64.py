"""Bots for bench/bots.py: a 64-byte line echo, and cheap bots that mostly hold a connection.

``Echo64Bot`` sends one 64-byte line (63
bytes + ``"\\n"``) and, in the closed model, the next one as soon as the echo
came back: the same load as ``bench/loadgen.c --size 64 --pipeline 1`` on
one connection. Each echo is compared with what was sent, as loadgen does.

``HoldBot`` is connected but nearly idle: one short line every 4-6 s, so
10,000 of them measure what holding a bot costs, not what its traffic costs.

    python -m daemonkit bots bench/bots_echo64.py:Echo64Bot --target tcp://127.0.0.1:PORT
    python -m daemonkit bots bench/bots_echo64.py:HoldBot --target ... --bots 10000
"""

from __future__ import annotations

from daemonkit import Lines
from daemonkit.bots.bot import Bot, between

#: 63 bytes; Lines adds the "\n" that makes it 64 on the wire.
PAYLOAD = b"daemonkit-bots-64-byte-echo-benchmark-line-abcdefghijklmnopqrst"
assert len(PAYLOAD) == 63


class Echo64Bot(Bot):
    """Closed loop, pipeline 1: send a 64-byte line, wait for its echo, repeat."""

    framing = Lines()

    def on_tick(self) -> None:
        self.request(PAYLOAD, name="echo64")

    def on_read(self, frame: bytes) -> None:
        if frame != PAYLOAD:
            self.fail("echo64", "wrong reply")


class HoldBot(Bot):
    """Stays connected; one short line every 4-6 s keeps it live but cheap."""

    framing = Lines()
    think_time = between(4, 6)

    def on_tick(self) -> None:
        self.request(b"ping", name="ping")
