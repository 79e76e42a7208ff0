"""Echo bot: sends a line, times the echo, checks that it came back intact.

Run it against a line echo daemon (any daemon that sends each line back)::

    python -m daemonkit bots examples/echo_bot.py --target tcp://127.0.0.1:7000 \\
        --bots 1000 --spawn-rate 200 --duration 30s

Each bot is driven by ticks: in the closed model (the default) it sends its
next line once the previous one came back (plus ``think_time``, here none);
with ``--rate N/s`` the runner calls ``on_tick`` on a fixed schedule.
"""

from __future__ import annotations

from collections import deque

from daemonkit import Lines
from daemonkit.bots.bot import Bot


class EchoBot(Bot):
    framing = Lines()  # frames are lines: send() appends "\n", replies arrive without it

    expected: deque[bytes]  # the lines sent and not yet echoed, oldest first

    def on_connect(self) -> None:
        self.expected = deque()
        self.state["sent"] = 0

    def on_tick(self) -> None:
        # A sequence number makes every line different, so a lost, duplicated
        # or reordered echo shows up as a wrong reply.
        self.state["sent"] += 1
        line = b"hello from bot %d: %d" % (self.index, self.state["sent"])
        self.expected.append(line)
        self.request(line, name="echo")  # timed until the next line arrives (FIFO)

    def on_read(self, frame: bytes) -> None:
        # Called after the frame was matched to the oldest request and timed.
        if not self.expected or frame != self.expected.popleft():
            self.fail("echo", "wrong reply")
