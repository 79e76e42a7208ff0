"""The daemonkit exception family.

Every error daemonkit raises derives from :class:`DaemonkitError`, so a caller
can catch them all at once. Names say whose fault it is: framing errors are
the *peer's* fault (hostile or broken input), configuration errors are the
*user's* fault (a bad endpoint, a bad target).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DaemonkitError",
    "EndpointError",
    "FrameTooLarge",
    "FramingError",
    "LoadError",
    "ProtocolError",
    "UpgradeError",
]


class DaemonkitError(Exception):
    """Base class of every exception daemonkit raises on purpose."""


class FramingError(DaemonkitError):
    """The peer sent input a framer cannot accept; the connection must close.

    ``frames`` lists the complete frames that came before the bad input in the
    same ``feed()`` call, so a daemon can still deliver them before closing.
    """

    frames: list[Any] = []


class FrameTooLarge(FramingError):
    """A frame is longer than the framer's ``max_length``.

    The message names the limit; the daemon adds the peer and closes the
    connection with the reason ``frame too large``.
    """


class ProtocolError(FramingError):
    """The peer's input is malformed for the framer's wire format.

    The daemon closes the connection with the reason ``protocol error``.
    """


class ConfigError(DaemonkitError, ValueError):
    """A setting or option has a value daemonkit cannot use (the user's fault)."""


class EndpointError(ConfigError):
    """An endpoint string cannot be parsed, e.g. ``tcp://host`` without a port."""


class LoadError(ConfigError):
    """A daemon target (file, module or ``module:Class``) cannot be loaded."""


class UpgradeError(DaemonkitError):
    """An upgrade cannot begin: one is under way, the daemon is stopping or cannot spawn.

    Raised by :meth:`Daemon.upgrade <daemonkit.daemon.Daemon.upgrade>`; the
    daemon goes on serving. Defined here (not in the operations layer that
    performs upgrades) so the daemon can name it without importing operations.
    """
