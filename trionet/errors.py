"""trionet's exception hierarchy.

Every exception trionet defines derives from :class:`TrionetError`. Where trio
already has a type with the right meaning, ours derives from it too, so code that
handles trio's exceptions handles ours:

.. code-block:: text

    TrionetError
    ├── FramingError
    │   ├── FrameTooLarge
    │   ├── ProtocolError
    │   ├── ProxyProtocolError
    │   ├── InvalidMessage          (also ValueError)
    │   ├── IncompleteFrame         (also trio.BrokenResourceError)
    │   └── FrameTimeout            (also trio.BrokenResourceError)
    ├── AddressError                (also ValueError)
    │   └── AddressTypeError        (also TypeError)
    ├── ResolutionError             (also OSError)
    ├── ConnectError                (also OSError)
    ├── DatagramTooLarge            (also ValueError)
    ├── PeerUnreachable             (also ConnectionRefusedError)
    └── RequestTimeout              (also trio.TooSlowError)

trionet also raises trio's own :class:`trio.ClosedResourceError`,
:class:`trio.BrokenResourceError`, :class:`trio.BusyResourceError` and
:class:`trio.EndOfChannel` where they fit.
"""

from __future__ import annotations

import copyreg
import errno
from typing import Any, final

import trio

from ._sansio.addresses import Address
from ._sansio.addresses import AddressTypeError as AddressTypeError
from ._sansio.errors import AddressError as AddressError
from ._sansio.errors import FrameTooLarge as FrameTooLarge
from ._sansio.errors import FramingError as FramingError
from ._sansio.errors import InvalidMessage as InvalidMessage
from ._sansio.errors import ProtocolError as ProtocolError
from ._sansio.errors import ProxyProtocolError as ProxyProtocolError
from ._sansio.errors import TrionetError as TrionetError

__all__ = [
    "TrionetError",
    "FramingError",
    "FrameTooLarge",
    "ProtocolError",
    "ProxyProtocolError",
    "InvalidMessage",
    "IncompleteFrame",
    "FrameTimeout",
    "AddressError",
    "AddressTypeError",
    "ResolutionError",
    "ConnectError",
    "DatagramTooLarge",
    "PeerUnreachable",
    "RequestTimeout",
]


@final
class IncompleteFrame(FramingError, trio.BrokenResourceError):
    """The stream ended in the middle of a frame.

    Frames that were complete before the end are delivered first; this is raised
    by the receive that finds only part of a frame left.

    Attributes:
      buffered: How many bytes of the unfinished frame had arrived.
    """

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        super().__init__(f"stream ended in the middle of a frame ({buffered} bytes of it arrived)")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.buffered,), self.__dict__


@final
class FrameTimeout(FramingError, trio.BrokenResourceError):
    """A frame began to arrive but was not complete within the channel's ``frame_timeout``.

    This is how a server sheds a peer that trickles bytes to hold a connection
    open (a "slowloris"): an idle timeout does not catch it, because bytes keep
    moving. The channel gives up on receiving; frames completed before are
    delivered first.

    Attributes:
      timeout: The ``frame_timeout`` in seconds.
      buffered: How many bytes of the unfinished frame had arrived.
    """

    def __init__(self, timeout: float, buffered: int) -> None:
        self.timeout = timeout
        self.buffered = buffered
        super().__init__(
            f"a frame was not complete {timeout}s after its first byte arrived "
            f"({buffered} bytes of it arrived)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.timeout, self.buffered), self.__dict__


class ResolutionError(TrionetError, OSError):
    """A host name could not be resolved.

    It is an :class:`OSError`, so code that catches :class:`socket.gaierror`'s
    base class keeps working. The system's reason is in ``__cause__``.

    Attributes:
      host: The name that was looked up.
      port: The port that was asked for.
      reason: Why, without the host and port (the message starts with those).
    """

    def __init__(self, host: str, port: int | str | None, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        where = host if port is None else f"{host!r} port {port}"
        super().__init__(f"cannot resolve {where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.host, self.port, self.reason), self.__dict__

    def __str__(self) -> str:
        return str(self.args[0])


class ConnectError(TrionetError, OSError):
    """Every attempt to connect failed.

    Attributes:
      attempts: One entry per address tried, in order; see the connector's
          documentation for its fields.
    """

    def __init__(self, message: str, attempts: tuple[object, ...] = ()) -> None:
        self.attempts = attempts
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.attempts), self.__dict__

    def __str__(self) -> str:
        return str(self.args[0])


@final
class DatagramTooLarge(TrionetError, ValueError):
    """A datagram exceeds what its address family can carry; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"datagram of {size} bytes exceeds the limit of {limit} bytes")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.size, self.limit), self.__dict__


class PeerUnreachable(TrionetError, ConnectionRefusedError):
    """The peer of a connected endpoint is unreachable: nothing listens on its port.

    The system learnt it from an ICMP "port unreachable" (or "host
    unreachable") message, which only a connected socket is told about. It is
    a :class:`ConnectionRefusedError`, so existing handlers of that keep working.

    Attributes:
      peer: The endpoint's remote address.
      reason: What the ICMP message said, as in the message.
    """

    def __init__(self, peer: Address, reason: str = "port unreachable") -> None:
        super().__init__(errno.ECONNREFUSED, f"{peer} is unreachable ({reason})")
        self.peer = peer
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.peer, self.reason), self.__dict__

    def __str__(self) -> str:
        return str(self.strerror)


@final
class RequestTimeout(TrionetError, trio.TooSlowError):
    """A request got no matching reply within its retry policy's budget.

    Attributes:
      attempts: How many transmissions were made.
    """

    def __init__(self, message: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.attempts), self.__dict__


# Pickling (and copy.copy) rebuilds an exception by calling its class with its
# args, but these classes take the parts of their message and keep the whole
# message in args. The classes defined here rebuild from their parts (their
# __reduce__, which subclasses inherit; an OSError's __new__ alone leaves errno
# and args empty). The two of the sans-IO core are final: each is rebuilt by
# __new__ from its args, as copy.copy rebuilds a plain object, and its
# attributes (__notes__ included) are restored from its __dict__.
def _reduce_without_init(error: FrameTooLarge | ProtocolError) -> tuple[Any, ...]:
    return copyreg.__newobj__, (type(error), *error.args), error.__dict__  # type: ignore[attr-defined]


copyreg.pickle(FrameTooLarge, _reduce_without_init)
copyreg.pickle(ProtocolError, _reduce_without_init)
