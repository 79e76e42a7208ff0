"""The identity framer: each chunk the transport reads is one frame.

There is no wire format, so there is nothing to buffer and nothing to reject.
The daemon skips :class:`Raw` on its hot path and hands chunks straight to the
user, but the class honours the full :class:`~daemonkit.framing.base.Framer`
contract so that it can be used and tested like any other framer.
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

from daemonkit.framing.base import BytesLike, Framer, _to_bytes

__all__ = ["Raw"]


@mypyc_attr(allow_interpreted_subclasses=True)
class Raw(Framer):
    """Pass bytes through unchanged: one non-empty chunk in, one frame out.

    Frames follow the transport's read boundaries, which the peer does not
    control and the network may change; use it for streams where boundaries
    do not matter (proxies, byte pipes).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()

    def feed(self, data: BytesLike) -> list[bytes]:
        """Return ``[data]`` as ``bytes``, or ``[]`` if *data* is empty.

        Never raises and never buffers: every byte is delivered at once.
        """
        if not data:
            return []
        return [data if type(data) is bytes else bytes(data)]

    def encode(self, frame: Any) -> bytes:
        """Return *frame* as ``bytes``, unchanged.

        Raises :class:`TypeError` if *frame* is not bytes-like (a ``str``
        must be encoded first).
        """
        return _to_bytes(frame)
