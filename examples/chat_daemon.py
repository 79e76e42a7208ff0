"""Chat daemon: nicknames, rooms and broadcast over a line protocol.

Run it:   python -m daemonkit examples/chat_daemon.py
Try it:   nc 127.0.0.1 7001          (in two terminals, with two nicknames)
Load it:  python -m daemonkit bots examples/chat_bot.py --target tcp://127.0.0.1:7001

The protocol: one command per line, answered by lines whose first word says
what they are, so a client (or a bot) can tell replies from broadcasts.

=====================  ==================================================
command                reply
=====================  ==================================================
``NICK name``          ``OK nick name`` | ``ERR bad-nick`` | ``ERR nick-taken``
``JOIN room``          ``OK join room``; the room's other members get
                       ``JOINED room nick``
``PART room``          ``OK part room``; the others get ``PARTED room nick``
``SAY room text...``   every member of the room, the sender included, gets
                       ``MSG room nick text...`` (the sender's copy is its
                       acknowledgement: bots time it as broadcast latency)
``LIST``               ``ROOMS room:count ...`` (sorted by name)
``QUIT``               ``BYE``, then the daemon closes the connection
=====================  ==================================================

Commands are case-insensitive; arguments are not. A connection needs a
nickname before ``JOIN``, ``PART`` and ``SAY``
(``ERR no-nick``); ``NICK`` again renames it. Names of nicks and rooms are
1..32 letters, digits, ``_``, ``-`` (rooms may start with ``#``). Other
errors: ``ERR bad-room``, ``ERR room-full``, ``ERR too-many-rooms``,
``ERR not-in-room``, ``ERR no-text``, ``ERR bad-arguments``,
``ERR unknown-command``. Blank lines are ignored and a trailing ``\\r`` is
dropped, so ``telnet`` works too. A member who leaves or disconnects is
removed from its rooms, and a room is removed with its last member.

An example session (``>`` sent by alice, ``<`` received by alice, bob is
already in ``#lobby``)::

    > NICK alice
    < OK nick alice
    > JOIN #lobby
    < OK join #lobby                 (bob gets: JOINED #lobby alice)
    > SAY #lobby hi all
    < MSG #lobby alice hi all        (bob gets the same line)
    < MSG #lobby bob hello alice
    > LIST
    < ROOMS #lobby:2
    > QUIT
    < BYE

A member that does not read its messages is not waited for: its output
buffer grows up to ``max_write_buffer``, then it is disconnected ("output
buffer overflow") and leaves its rooms like any other.
"""

from __future__ import annotations

import re
from typing import Any

from daemonkit import CloseReason, Connection, Daemon, Lines

# A SAY costs one write per member, so the member cap bounds the work (and
# output) one input line can cause: 1,000 members x 4 KiB lines is at most
# 4 MB queued per line read. IRC networks cap channels at a few thousand.
MAX_ROOM_MEMBERS = 1_000
# Rooms live as long as they have members, so this bounds the daemon's room
# table, and with names of at most 32 bytes and counts of at most 4 digits it
# keeps the LIST reply under 40 KB: within the default line limit of a
# Lines() client (64 KiB).
MAX_ROOMS = 1_000
# Longest input line (command and text) accepted; a longer one closes the
# connection ("frame too large"). The MSG line adds room and nick: < 4.2 KB.
MAX_LINE = 4096

NICK_RE = re.compile(rb"[A-Za-z0-9_-]{1,32}")
ROOM_RE = re.compile(rb"#?[A-Za-z0-9_-]{1,32}")


class ChatDaemon(Daemon):
    listen = "tcp://127.0.0.1:7001"  # --listen on the command line overrides it
    framing = Lines(max_length=MAX_LINE)  # each frame is one line, without its "\n"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.rooms: dict[bytes, set[Connection]] = {}  # room -> its members
        self.nicks: dict[bytes, Connection] = {}  # nick -> who holds it
        self.stopping = False
        self.commands = {
            b"NICK": self.cmd_nick,
            b"JOIN": self.cmd_join,
            b"PART": self.cmd_part,
            b"SAY": self.cmd_say,
            b"LIST": self.cmd_list,
            b"QUIT": self.cmd_quit,
        }

    # -- connections ---------------------------------------------------------

    def on_accept(self, conn: Connection) -> None:
        conn.state["nick"] = None  # bytes once NICK succeeded
        conn.state["rooms"] = set()  # the rooms this connection is in
        conn.log.debug("connected")

    def on_read(self, conn: Connection, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        command, _, args = line.partition(b" ")
        handler = self.commands.get(command.upper())
        if handler is None:
            conn.send(b"ERR unknown-command")
        else:
            handler(conn, args)

    def on_stop(self) -> None:
        # Every connection is about to close: skip the PARTED notices, which
        # would cost members x members writes to connections that are closing.
        self.stopping = True

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        for room in list(conn.state.get("rooms", ())):
            self.leave(conn, room)
        nick = conn.state.get("nick")
        if nick is not None and self.nicks.get(nick) is conn:
            del self.nicks[nick]
        conn.log.debug("closed (%s)", reason)

    # -- commands ------------------------------------------------------------

    def cmd_nick(self, conn: Connection, args: bytes) -> None:
        if not NICK_RE.fullmatch(args):
            conn.send(b"ERR bad-nick")
            return
        holder = self.nicks.get(args)
        if holder is not None and holder is not conn:
            conn.send(b"ERR nick-taken")
            return
        old = conn.state["nick"]
        if old is not None and old != args:
            del self.nicks[old]
        self.nicks[args] = conn
        conn.state["nick"] = args
        conn.send(b"OK nick " + args)

    def cmd_join(self, conn: Connection, args: bytes) -> None:
        nick = self.need_nick(conn)
        if nick is None:
            return
        if not ROOM_RE.fullmatch(args):
            conn.send(b"ERR bad-room")
            return
        members = self.rooms.get(args)
        if members is None:
            if len(self.rooms) >= MAX_ROOMS:
                conn.send(b"ERR too-many-rooms")
                return
            members = self.rooms[args] = set()
        elif conn in members:
            conn.send(b"OK join " + args)  # already a member: nothing changes
            return
        elif len(members) >= MAX_ROOM_MEMBERS:
            conn.send(b"ERR room-full")
            return
        self.broadcast(b"JOINED %s %s\n" % (args, nick), members)
        members.add(conn)
        conn.state["rooms"].add(args)
        conn.send(b"OK join " + args)

    def cmd_part(self, conn: Connection, args: bytes) -> None:
        if self.need_nick(conn) is None:
            return
        if args not in conn.state["rooms"]:
            conn.send(b"ERR not-in-room")
            return
        self.leave(conn, args)
        conn.send(b"OK part " + args)

    def cmd_say(self, conn: Connection, args: bytes) -> None:
        nick = self.need_nick(conn)
        if nick is None:
            return
        room, _, text = args.partition(b" ")
        if room not in conn.state["rooms"]:
            conn.send(b"ERR not-in-room")
            return
        if not text.strip():
            conn.send(b"ERR no-text")
            return
        # One buffer for everyone: broadcast() writes raw bytes, hence the "\n".
        self.broadcast(b"MSG %s %s %s\n" % (room, nick, text), self.rooms[room])

    def cmd_list(self, conn: Connection, args: bytes) -> None:
        if args.strip():
            conn.send(b"ERR bad-arguments")
            return
        counts = [b"%s:%d" % (room, len(self.rooms[room])) for room in sorted(self.rooms)]
        conn.send(b" ".join([b"ROOMS", *counts]))

    def cmd_quit(self, conn: Connection, args: bytes) -> None:
        if args.strip():
            conn.send(b"ERR bad-arguments")
            return
        conn.send(b"BYE")
        conn.close()  # flushes BYE first; on_close cleans up

    # -- helpers ------------------------------------------------------------

    def need_nick(self, conn: Connection) -> bytes | None:
        """The connection's nick, or None after answering ``ERR no-nick``."""
        nick: bytes | None = conn.state["nick"]
        if nick is None:
            conn.send(b"ERR no-nick")
        return nick

    def leave(self, conn: Connection, room: bytes) -> None:
        """Take ``conn`` out of ``room``; tell the others; drop the room when empty."""
        conn.state["rooms"].discard(room)
        members = self.rooms.get(room)
        if members is None:
            return
        members.discard(conn)
        if not members:
            del self.rooms[room]
        elif not self.stopping:
            self.broadcast(b"PARTED %s %s\n" % (room, conn.state["nick"]), members)
