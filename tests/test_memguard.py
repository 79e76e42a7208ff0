"""The memory guard's pieces: sizes, the trigger rule, the settings (the real recycle is in
test_upgrade.py: test_memory_guard_recycles_a_leaking_process)."""

from __future__ import annotations

import pytest

from daemonkit import ConfigError, Daemon, cli
from daemonkit.ops.memguard import (
    DEFAULT_MEMORY_CHECK_INTERVAL,
    MEMORY_RETRY_DELAY,
    MemoryGuard,
    check_memory_settings,
    format_size,
    parse_size,
)
from daemonkit.ops.metrics import resident_memory
from tests.helpers import ROOT

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1048576", MiB),
        ("512M", 512 * MiB),
        ("512m", 512 * MiB),
        ("300MiB", 300 * MiB),
        ("300MB", 300 * MiB),
        ("1.5G", 1536 * MiB),
        ("64K", 64 * 1024),
        (" 2 G ", 2048 * MiB),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "is not a size"), ("lots", "is not a size"), ("-5M", "is not a size"), ("0", "> 0|more")],
)
def test_parse_size_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(100 * MiB) == "100.0 MiB"
    assert format_size(3 * 1024 * MiB) == "3.0 GiB"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_guard_triggers_over_the_limit_then_waits_before_triggering_again() -> None:
    rss = [90 * MiB]
    clock = Clock()
    guard = MemoryGuard(100 * MiB, clock, sample=lambda: rss[0])
    assert guard.exceeded() is None
    rss[0] = 100 * MiB
    assert guard.exceeded() is None  # at the limit is not over it
    rss[0] = 150 * MiB
    assert guard.exceeded() == 150 * MiB
    clock.t += MEMORY_RETRY_DELAY - 1
    assert guard.exceeded() is None  # the upgrade it asked for is under way or failed
    clock.t += 1
    assert guard.exceeded() == 150 * MiB
    assert guard.triggers == 2


def test_guard_without_a_reading_never_triggers() -> None:
    guard = MemoryGuard(1, Clock(), sample=lambda: None)
    assert guard.exceeded() is None


def test_guard_reads_this_process() -> None:
    rss = resident_memory()
    assert rss is not None and rss > MiB
    assert MemoryGuard(1, Clock()).exceeded() is not None  # one byte: surely over
    assert MemoryGuard(1 << 50, Clock()).exceeded() is None


@pytest.mark.parametrize(
    ("max_memory", "interval", "message"),
    [
        (0, 5.0, "max_memory must be"),
        ("512M", 5.0, "max_memory must be"),
        (True, 5.0, "max_memory must be"),
        (None, 0, "memory_check_interval must be"),
        (None, "5", "memory_check_interval must be"),
    ],
)
def test_bad_settings_are_refused(max_memory: object, interval: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_memory_settings(max_memory, interval)
    with pytest.raises(ConfigError, match=message):
        Daemon(max_memory=max_memory, memory_check_interval=interval)


def test_settings_default_to_off() -> None:
    d = Daemon()
    assert d.max_memory is None
    assert d.memory_check_interval == DEFAULT_MEMORY_CHECK_INTERVAL
    assert Daemon(max_memory=512 * MiB).max_memory == 512 * MiB


def test_cli_option(capsys: pytest.CaptureFixture[str]) -> None:
    echo = str(ROOT / "examples" / "echo_daemon.py")
    assert cli.main([echo, "--check", "--max-memory", "512M"]) == cli.EXIT_OK
    assert cli.main([echo, "--max-memory", "lots"]) == cli.EXIT_USAGE
    assert "'lots' is not a size; write e.g. 512M" in capsys.readouterr().err
