"""The one place a duration is checked: finite, in range, named in its error.

Every wait in daemonkit has a deadline, and every deadline enters through a
setting, a command-line flag or a control-socket command. Each of those
entrances calls :func:`check_duration`, so ``inf``, ``nan``, ``1e308`` or a
negative number is refused where it is typed — with the setting's name —
instead of surfacing later as a timer error inside ``connection_made`` or
half-way through ``stop()``.
"""

from __future__ import annotations

import math

from daemonkit.errors import ConfigError

__all__ = ["MAX_DURATION", "check_duration", "check_optional_duration", "parse_duration"]

#: The longest wait any setting may ask for: 30 days, in seconds. A deadline
#: longer than the month a daemon is expected to run means "never", which is
#: what ``None`` is for where a setting allows it; the event loops' timers
#: (libuv keeps milliseconds in a 64-bit integer) break long before ``inf``.
MAX_DURATION = 30 * 24 * 3600.0


def check_duration(
    name: str, value: object, *, minimum: float = 0.0, positive: bool = False
) -> float:
    """Return ``value`` as seconds, or raise :class:`ConfigError` naming ``name``.

    ``value`` must be an int or float (not bool), finite, at least ``minimum``
    (strictly above it when ``positive``) and at most :data:`MAX_DURATION`.
    The message says what to write instead.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ConfigError(
            f"{name} must be a finite number of seconds, not {value!r} (at most {MAX_DURATION:g} s)"
        )
    if positive and not seconds > minimum:
        raise ConfigError(f"{name} must be more than {minimum:g} seconds, not {value!r}")
    if seconds < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g} seconds, not {value!r}")
    if seconds > MAX_DURATION:
        raise ConfigError(
            f"{name}={value!r} is longer than the {MAX_DURATION:g} s (30 days) a wait may last"
        )
    return seconds


#: Units of a written duration, longest suffix first so ``ms`` is not read as ``m``.
_UNITS = (("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def parse_duration(text: str) -> float:
    """Seconds from a written duration: ``30``, ``30s``, ``500ms``, ``2m`` or ``1h``.

    The one duration syntax of every command line, config file and environment
    variable. It only reads the words: the number is returned as written
    (``inf`` and ``-1`` included), so pass it to :func:`check_duration` with
    the setting's name. Raises :class:`ConfigError` with examples of what to
    write when ``text`` is not a number with one of those units.
    """
    body = text.strip()
    factor = 1.0
    for unit, seconds in _UNITS:
        if body.endswith(unit):
            body, factor = body[: -len(unit)].rstrip(), seconds
            break
    try:
        return float(body) * factor
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration; write e.g. 30s, 2m, 500ms or 1h") from None


def check_optional_duration(
    name: str, value: object, *, minimum: float = 0.0, positive: bool = False
) -> float | None:
    """Like :func:`check_duration`, but ``None`` (no deadline) passes through."""
    if value is None:
        return None
    return check_duration(name, value, minimum=minimum, positive=positive)
