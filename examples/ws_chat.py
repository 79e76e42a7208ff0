"""WebSocket chat: one room, two protocols.

Run it:   python -m daemonkit examples/ws_chat.py
Try it:   open http://127.0.0.1:8000/ in a browser (the page is served by
          this daemon) and, in a terminal, nc 127.0.0.1 7001
          then NICK bob, JOIN #lobby, SAY #lobby hi: both see both.

Two endpoints, one daemon, one set of rooms:

* ``web`` (``http://127.0.0.1:8000``): ``GET /`` is the chat page (inline
  below); the page opens a WebSocket on ``/ws``.
* ``lines`` (``tcp://127.0.0.1:7001``): the line protocol of
  ``examples/chat_daemon.py``, one command per line.

The protocol is the same on both: the commands and replies of
``chat_daemon.py`` (``NICK name``, ``JOIN room``, ``PART room``, ``SAY room
text...``, ``LIST``, ``QUIT``; replies ``OK ...``, ``ERR ...``, ``MSG room
nick text``, ``JOINED``/``PARTED room nick``, ``ROOMS ...``, ``BYE``). Over
WebSocket each message is one line without its newline (a message with
newlines is read as several lines). The daemon's replies and broadcasts are
the same ``bytes`` frames for everybody: a line client's framer adds the
newline, a WebSocket connection's framer sends them as binary messages
holding UTF-8 text (the page decodes them with a ``TextDecoder``). That is
what lets one :meth:`~daemonkit.framework.groups.Group.broadcast` reach both kinds of
member, each through its own framer, and skip a member that does not read
instead of waiting for it. The one difference: ``QUIT`` over WebSocket
ends with a Close frame (code 1000) after ``BYE``.

The rules (names, limits, errors) are copied from ``chat_daemon.py``
(``examples/`` is not a package, so it is not imported), with rooms kept as
daemon groups (``self.group(room)``) instead of sets.
"""

from __future__ import annotations

import re
from typing import Any

from daemonkit import CloseReason, Connection, Daemon, Endpoint, Lines
from daemonkit.http import HttpRequest, Response

# The limits of chat_daemon.py: a line (or WebSocket message) of at most
# 4 KiB; rooms of at most 1,000 members; at most 1,000 rooms.
MAX_LINE = 4096
MAX_ROOM_MEMBERS = 1_000
MAX_ROOMS = 1_000

NICK_RE = re.compile(rb"[A-Za-z0-9_-]{1,32}")
ROOM_RE = re.compile(rb"#?[A-Za-z0-9_-]{1,32}")


def endpoints(
    web: str = "http://127.0.0.1:8000", lines: str = "tcp://127.0.0.1:7001"
) -> list[Endpoint]:
    """The two endpoints, at the given addresses (tests pass port 0)."""
    return [
        # max_message: a WebSocket message is one line, bounded like one.
        Endpoint(web, name="web", websocket="/ws", max_message=MAX_LINE),
        Endpoint(lines, name="lines", framing=Lines(max_length=MAX_LINE)),
    ]


class WsChatDaemon(Daemon):
    listen = endpoints()  # --listen web=URL or lines=URL on the command line overrides them

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
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

    # -- the page ----------------------------------------------------------

    def on_request(self, conn: Any, request: HttpRequest) -> Response:
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return Response.html(PAGE)
        return Response.text("404 Not Found\n", 404)

    # -- both protocols ----------------------------------------------------

    def on_accept(self, conn: Connection) -> None:
        # Every connection, HTTP ones included (a WebSocket starts as one).
        conn.state["nick"] = None  # bytes once NICK succeeded
        conn.state["rooms"] = set()  # the rooms this connection is in

    def on_read(self, conn: Connection, line: bytes) -> None:
        """A line from the ``lines`` endpoint."""
        self.command(conn, line)

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        """A WebSocket message from the page: one line, or several."""
        data = message.encode() if isinstance(message, str) else message
        for line in data.split(b"\n"):
            if conn.closing:
                break
            self.command(conn, line)

    def on_stop(self) -> None:
        self.stopping = True  # every connection is closing: no PARTED notices

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        # The daemon has already taken conn out of its groups.
        nick = conn.state.get("nick")
        for room in conn.state.get("rooms", ()):
            group = self.groups.get(room.decode())
            if group is not None and not self.stopping:
                group.broadcast(b"PARTED %s %s" % (room, nick))
        if nick is not None and self.nicks.get(nick) is conn:
            del self.nicks[nick]

    # -- commands ------------------------------------------------------------

    def command(self, conn: Connection, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        command, _, args = line.partition(b" ")
        handler = self.commands.get(command.upper())
        if handler is None:
            conn.send(b"ERR unknown-command")
        else:
            handler(conn, args)

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
        if args in conn.state["rooms"]:
            conn.send(b"OK join " + args)  # already a member: nothing changes
            return
        existing = self.groups.get(args.decode())
        if existing is None and len(self.groups) >= MAX_ROOMS:
            conn.send(b"ERR too-many-rooms")
            return
        if existing is not None and len(existing) >= MAX_ROOM_MEMBERS:
            conn.send(b"ERR room-full")
            return
        group = self.group(args.decode())
        group.broadcast(b"JOINED %s %s" % (args, nick))
        group.add(conn)
        conn.state["rooms"].add(args)
        conn.send(b"OK join " + args)

    def cmd_part(self, conn: Connection, args: bytes) -> None:
        nick = self.need_nick(conn)
        if nick is None:
            return
        if args not in conn.state["rooms"]:
            conn.send(b"ERR not-in-room")
            return
        conn.state["rooms"].discard(args)
        group = self.group(args.decode())
        group.discard(conn)
        group.broadcast(b"PARTED %s %s" % (args, nick))
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
        # Every member, the sender included: its copy is its acknowledgement.
        self.group(room.decode()).broadcast(b"MSG %s %s %s" % (room, nick, text))

    def cmd_list(self, conn: Connection, args: bytes) -> None:
        if args.strip():
            conn.send(b"ERR bad-arguments")
            return
        groups = self.groups
        counts = [b"%s:%d" % (name.encode(), len(groups[name])) for name in sorted(groups)]
        conn.send(b" ".join([b"ROOMS", *counts]))

    def cmd_quit(self, conn: Connection, args: bytes) -> None:
        if args.strip():
            conn.send(b"ERR bad-arguments")
            return
        conn.send(b"BYE")
        conn.close()  # flushes BYE first (a WebSocket sends its Close after it)

    def need_nick(self, conn: Connection) -> bytes | None:
        """The connection's nick, or None after answering ``ERR no-nick``."""
        nick: bytes | None = conn.state["nick"]
        if nick is None:
            conn.send(b"ERR no-nick")
        return nick


# The page: no framework, no build step. Each received message is one line
# in the log; the forms send commands.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>daemonkit chat</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 40em; }
  form { display: flex; gap: .5em; margin: .5em 0; }
  input[type=text] { flex: 1; }
  #log { list-style: none; padding: .5em; height: 20em; overflow-y: auto;
         border: 1px solid #ccc; font-family: ui-monospace, monospace; }
  #status { color: #666; }
</style>
</head>
<body>
<h1>daemonkit chat</h1>
<p id="status">connecting...</p>
<form id="nick-form"><input id="nick" type="text" placeholder="nickname" required>
  <button>Set nick</button></form>
<form id="join-form"><input id="room" type="text" value="#lobby" required>
  <button>Join</button></form>
<form id="say-form"><input id="text" type="text" placeholder="message" required>
  <button>Send</button></form>
<ul id="log"></ul>
<script>
"use strict";
const log = document.getElementById("log");
const status = document.getElementById("status");
const decoder = new TextDecoder();
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.binaryType = "arraybuffer";  // the daemon sends each line as a binary message

function show(line) {
  const item = document.createElement("li");
  item.textContent = line;
  log.append(item);
  log.scrollTop = log.scrollHeight;
}
function send(line) {
  show("> " + line);
  ws.send(line);
}
ws.onopen = () => { status.textContent = "connected"; };
ws.onclose = (event) => { status.textContent = `closed (${event.code})`; };
ws.onmessage = (event) => {
  show(typeof event.data === "string" ? event.data : decoder.decode(event.data));
};
function on(form, handler) {
  document.getElementById(form).addEventListener("submit", (event) => {
    event.preventDefault();
    handler();
  });
}
on("nick-form", () => send("NICK " + document.getElementById("nick").value));
on("join-form", () => send("JOIN " + document.getElementById("room").value));
on("say-form", () => {
  const text = document.getElementById("text");
  send(`SAY ${document.getElementById("room").value} ${text.value}`);
  text.value = "";
});
</script>
</body>
</html>
"""
