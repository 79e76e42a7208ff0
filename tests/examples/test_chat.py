"""The chat daemon's protocol over real sockets, and the example bots against real daemons."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from daemonkit import cli
from daemonkit.bots.runner import BotRunner
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, load_example

LOCAL = "tcp://127.0.0.1:0"
TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long


chat = load_example("chat_daemon")
chat_bot = load_example("chat_bot")
echo = load_example("echo_daemon")
echo_bot = load_example("echo_bot")

StartDaemon = Callable[..., DaemonRunner]


class Client:
    """A blocking line client: send a command, read reply lines one at a time."""

    def __init__(self, runner: DaemonRunner) -> None:
        self.sock = runner.connect(timeout=TIMEOUT)
        self.buf = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def ask(self, line: bytes) -> bytes:
        self.send(line)
        return self.line()

    def closed(self) -> bool:
        """True if the daemon closed the connection with nothing more to read."""
        return not self.buf and self.sock.recv(65536) == b""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server(run_daemon: StartDaemon) -> DaemonRunner:
    return run_daemon(chat.ChatDaemon(listen=LOCAL))


@pytest.fixture
def client(server: DaemonRunner) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(nick: bytes | None = None, *rooms: bytes) -> Client:
        c = Client(server)
        clients.append(c)
        if nick is not None:
            assert c.ask(b"NICK " + nick) == b"OK nick " + nick
        for room in rooms:
            assert c.ask(b"JOIN " + room) == b"OK join " + room
        return c

    yield make
    for c in clients:
        c.close()


# -- the protocol ----------------------------------------------------------------


def test_session(client: Callable[..., Client]) -> None:
    alice = client()
    assert alice.ask(b"LIST") == b"ROOMS"
    assert alice.ask(b"NICK alice") == b"OK nick alice"
    assert alice.ask(b"JOIN #lobby") == b"OK join #lobby"
    assert alice.ask(b"JOIN #lobby") == b"OK join #lobby"  # again: no change
    assert alice.ask(b"JOIN dev") == b"OK join dev"
    assert alice.ask(b"LIST") == b"ROOMS #lobby:1 dev:1"
    assert alice.ask(b"SAY #lobby hello  world ") == b"MSG #lobby alice hello  world "
    assert alice.ask(b"PART #lobby") == b"OK part #lobby"
    assert alice.ask(b"LIST") == b"ROOMS dev:1"
    assert alice.ask(b"QUIT") == b"BYE"
    assert alice.closed()


def test_nick_rules(client: Callable[..., Client]) -> None:
    alice = client(b"alice")
    bob = client()
    for bad in [b"NICK", b"NICK ", b"NICK a b", b"NICK bad!", b"NICK " + b"x" * 33]:
        assert bob.ask(bad) == b"ERR bad-nick", bad
    assert bob.ask(b"NICK alice") == b"ERR nick-taken"
    assert bob.ask(b"NICK Alice") == b"OK nick Alice"  # nicks are case-sensitive
    assert alice.ask(b"NICK alice") == b"OK nick alice"  # its own nick again
    assert alice.ask(b"NICK alice2") == b"OK nick alice2"  # a rename frees the old nick
    assert bob.ask(b"NICK alice") == b"OK nick alice"
    assert bob.ask(b"NICK " + b"x" * 32) == b"OK nick " + b"x" * 32


def test_commands_need_a_nick(client: Callable[..., Client]) -> None:
    anon = client()
    assert anon.ask(b"JOIN #lobby") == b"ERR no-nick"
    assert anon.ask(b"SAY #lobby hi") == b"ERR no-nick"
    assert anon.ask(b"PART #lobby") == b"ERR no-nick"
    assert anon.ask(b"LIST") == b"ROOMS"  # LIST needs none: and nothing was joined


def test_message_reaches_every_member_and_only_them(client: Callable[..., Client]) -> None:
    alice = client(b"alice", b"#lobby")
    bob = client(b"bob", b"#lobby")
    carol = client(b"carol", b"#other")
    assert alice.line() == b"JOINED #lobby bob"
    bob.send(b"SAY #lobby hi alice")
    assert bob.line() == b"MSG #lobby bob hi alice"  # the sender's own copy
    assert alice.line() == b"MSG #lobby bob hi alice"
    # The SAY was handled before carol's LIST is read: a MSG for her would come first.
    assert carol.ask(b"LIST") == b"ROOMS #lobby:2 #other:1"
    assert bob.ask(b"PART #lobby") == b"OK part #lobby"
    assert alice.line() == b"PARTED #lobby bob"
    assert bob.ask(b"SAY #lobby still there?") == b"ERR not-in-room"


def test_a_closed_member_leaves_its_rooms(
    server: DaemonRunner, client: Callable[..., Client]
) -> None:
    alice = client(b"alice", b"#lobby")
    bob = client(b"bob", b"#lobby", b"#dev")
    assert alice.line() == b"JOINED #lobby bob"
    bob.close()
    assert alice.line() == b"PARTED #lobby bob"  # sent by on_close
    assert alice.ask(b"LIST") == b"ROOMS #lobby:1"  # #dev left with its last member
    assert client().ask(b"NICK bob") == b"OK nick bob"  # the nick is free again
    alice.close()
    daemon = server.daemon
    server.wait_for(lambda: not daemon.rooms, timeout=TIMEOUT)
    assert client().ask(b"LIST") == b"ROOMS"


def test_bad_commands(client: Callable[..., Client]) -> None:
    alice = client(b"alice", b"#lobby")
    assert alice.ask(b"FOO bar") == b"ERR unknown-command"
    assert alice.ask(b"SAYX #lobby hi") == b"ERR unknown-command"
    assert alice.ask(b"SAY #lobby") == b"ERR no-text"
    assert alice.ask(b"SAY #lobby  ") == b"ERR no-text"
    assert alice.ask(b"SAY #elsewhere hi") == b"ERR not-in-room"
    assert alice.ask(b"PART #elsewhere") == b"ERR not-in-room"
    for bad in [b"JOIN", b"JOIN a b", b"JOIN ##x", b"JOIN " + b"r" * 33]:
        assert alice.ask(bad) == b"ERR bad-room", bad
    assert alice.ask(b"LIST all") == b"ERR bad-arguments"
    assert alice.ask(b"QUIT now") == b"ERR bad-arguments"
    alice.send(b"")  # blank lines are ignored
    assert alice.ask(b"list\r") == b"ROOMS #lobby:1"  # any case; CRLF is fine


def test_room_caps(client: Callable[..., Client], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat, "MAX_ROOM_MEMBERS", 2)
    monkeypatch.setattr(chat, "MAX_ROOMS", 2)
    alice = client(b"alice", b"a", b"b")
    client(b"bob", b"a")
    carol = client(b"carol")
    assert carol.ask(b"JOIN a") == b"ERR room-full"
    assert carol.ask(b"JOIN c") == b"ERR too-many-rooms"
    assert alice.line() == b"JOINED a bob"
    assert alice.ask(b"PART b") == b"OK part b"
    assert carol.ask(b"JOIN c") == b"OK join c"


def test_a_line_too_long_closes_the_connection(client: Callable[..., Client]) -> None:
    alice = client(b"alice")
    alice.sock.sendall(b"SAY #lobby " + b"x" * chat.MAX_LINE + b"\n")
    assert alice.closed()


def test_the_cli_loads_it() -> None:
    path = str(ROOT / "examples" / "chat_daemon.py")
    assert cli.main([path, "--check", "--listen", LOCAL]) == cli.EXIT_OK


# -- the bots --------------------------------------------------------------------


def test_chat_bots(run_daemon: StartDaemon, backend: str) -> None:
    runner = run_daemon(chat.ChatDaemon(listen=LOCAL))
    port = runner.address.port
    started = time.monotonic()
    result = BotRunner(
        chat_bot.ChatBot, f"tcp://127.0.0.1:{port}", bots=20, duration=2.0, backend=backend
    ).run()
    assert time.monotonic() - started < 3.0
    stats = result.stats
    assert stats.errors == 0, stats.errors_by_kind()
    assert stats.operations["nick"].count == 20
    assert stats.operations["join"].count == 20
    say = stats.operations["say"]
    assert say.count >= 20  # every bot talks at once, then every 0.5..1.5 s
    assert 0 < say.latency.percentile(99) < 1.0
    assert not result.warnings


def test_echo_bots(run_daemon: StartDaemon, backend: str) -> None:
    # The example echo daemon echoes raw bytes: whole lines come back whole,
    # however the stream is split, and the bot's Lines framer cuts them again.
    runner = run_daemon(echo.EchoDaemon(listen=LOCAL))
    port = runner.address.port
    result = BotRunner(
        echo_bot.EchoBot, f"tcp://127.0.0.1:{port}", bots=10, duration=1.0, backend=backend
    ).run()
    stats = result.stats
    assert stats.errors == 0, stats.errors_by_kind()
    assert stats.operations["echo"].count > 0
    assert not result.warnings
