"""Chat bot: joins a room of the chat daemon and talks; measures broadcast latency.

Start the daemon, then the bots::

    python -m daemonkit examples/chat_daemon.py
    python -m daemonkit bots examples/chat_bot.py --target tcp://127.0.0.1:7001 \\
        --bots 200 --spawn-rate 50 --duration 30s

What one bot does, and the operations it reports:

* ``nick`` — ``NICK bot<index>``, answered by ``OK nick bot<index>``;
* ``join`` — ``JOIN <room>`` (one of :data:`ROOMS`, drawn with the bot's seeded
  ``random``), answered by ``OK join <room>``;
* ``say`` — every ``think_time`` ``SAY <room> <token>``: the daemon sends
  ``MSG <room> <nick> <token>`` to every member, the sender included, so
  the time until the bot sees its *own* token come back is the latency of a
  broadcast: the daemon queues the line for the whole room before it
  flushes the sender's copy.

Replies are matched by key, not in order, because the bot's own replies are
interleaved with other members' broadcasts (``MSG`` from others, ``JOINED``,
``PARTED``): :meth:`ChatBot.reply_key` gives each line the key of the request
it answers, or :data:`OTHER`, which matches no request. The ``MSG`` lines of
other members are counted in ``state["heard"]``. An ``ERR`` line means the
bot and the daemon disagree: it is counted as an ``err`` failure and the bot
disconnects (its pending request then counts as ``closed: closed locally``).
"""

from __future__ import annotations

from collections.abc import Hashable

from daemonkit import Lines
from daemonkit.bots.bot import Bot, between

# A few rooms, so that every room has several members talking at once.
ROOMS = (b"#lobby", b"#dev", b"#ops", b"#random")

NICK_KEY = ("nick",)
# The key of a line that answers none of this bot's requests. reply_key must
# not return None for such lines: in keyed mode None would answer the oldest
# request made without a key.
OTHER = ("other",)


class ChatBot(Bot):
    framing = Lines()
    think_time = between(0.5, 1.5)  # seconds between two SAYs of one bot

    nick: bytes
    room: bytes

    def on_connect(self) -> None:
        self.nick = b"bot%d" % self.index
        self.room = self.random.choice(ROOMS)
        self.state["seq"] = 0  # SAYs sent: makes each token unique
        self.state["heard"] = 0  # MSG lines received from other members
        # Both sent at once: the daemon handles one connection's lines in
        # order, so the JOIN finds the nick set. The runner calls on_tick
        # right after on_connect, so the first SAY follows them in the same
        # way; the next ones come after each answer plus think_time.
        self.request(b"NICK " + self.nick, name="nick", key=NICK_KEY)
        self.request(b"JOIN " + self.room, name="join", key=("join", self.room))

    def on_tick(self) -> None:
        self.state["seq"] += 1
        token = b"t%d-%d" % (self.index, self.state["seq"])
        self.request(b"SAY %s %s" % (self.room, token), name="say", key=token)

    def reply_key(self, frame: bytes) -> Hashable:
        parts = frame.split(b" ", 3)
        kind = parts[0]
        if kind == b"MSG" and len(parts) == 4 and parts[2] == self.nick:
            return parts[3]  # our own message back: the token is the SAY's key
        if kind == b"OK" and len(parts) == 3:
            if parts[1] == b"nick":
                return NICK_KEY
            if parts[1] == b"join":
                return ("join", parts[2])
        return OTHER

    def on_read(self, frame: bytes) -> None:
        # Called for every line, after reply_key matched it (or not).
        if frame.startswith(b"MSG "):
            parts = frame.split(b" ", 3)
            if len(parts) == 4 and parts[2] != self.nick:
                self.state["heard"] += 1
        elif frame.startswith(b"ERR"):
            self.fail("err", frame[4:].decode("ascii", "replace") or "?")
            self.close()
