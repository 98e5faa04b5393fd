"""The root of trionet's exception hierarchy, and the errors the sans-IO core raises.

These classes import nothing from trio, so the sans-IO modules can raise them.
:mod:`trionet.errors` re-exports them together with the errors that derive from
trio's own exception types.
"""

from __future__ import annotations

from typing import final


class TrionetError(Exception):
    """Base class of every exception that trionet defines."""


class FramingError(TrionetError):
    """Base class of the errors about message framing.

    A decoder that raised a :class:`FramingError` is in an error state: it
    raises the same exception from then on (the error is sticky, as in h11),
    because the byte stream can no longer be split into frames reliably.
    """


@final
class FrameTooLarge(FramingError):
    """A frame is larger than the codec's ``max_size``.

    Raised by a decoder as soon as a header announces too large a frame (before
    any of its payload is buffered), or once a delimiter search has looked at more
    than ``max_size`` bytes; and by an encoder asked to encode a message that is too
    large.

    Attributes:
      size: The size in bytes: the size a header announced, the length of a
          message given to an encoder, or, when ``at_least`` is true, a lower
          bound (the bytes of the frame seen so far).
      max_size: The codec's limit.
      offset: The offset of the frame's first byte in the decoded stream, or
          ``None`` when raised by an encoder.
      at_least: Whether ``size`` is only a lower bound: a delimiter search gave
          up before the delimiter arrived, or a netstring's length digits exceeded
          the limit before they ended. The message then says "at least".
    """

    def __init__(
        self, size: int, max_size: int, offset: int | None = None, *, at_least: bool = False
    ) -> None:
        self.size = size
        self.max_size = max_size
        self.offset = offset
        self.at_least = at_least
        where = "" if offset is None else f" at stream offset {offset}"
        bound = "at least " if at_least else ""
        super().__init__(f"frame of {bound}{size} bytes{where} exceeds max_size={max_size}")


@final
class ProtocolError(FramingError):
    """The peer sent bytes that are not valid in the codec's wire format.

    Attributes:
      offset: The offset, in the decoded stream, of the first offending byte.
    """

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"{message} (at stream offset {offset})")


@final
class InvalidMessage(FramingError, ValueError):
    """A message cannot be represented in the codec's wire format.

    For example a message for a :class:`~trionet.Delimited` codec that contains
    the delimiter. It is also a :class:`ValueError`: the caller passed a bad value.
    """


class AddressError(TrionetError, ValueError):
    """An address, host or port could not be parsed or is out of range.

    It is also a :class:`ValueError`, so existing ``except ValueError`` clauses
    keep working.
    """


@final
class ProxyProtocolError(FramingError):
    """A connection's PROXY protocol header is missing, malformed or too long.

    Raised while a server started with ``proxy_protocol=True`` reads the
    header a load balancer sends before the client's bytes; the connection is
    closed, and the server counts it (``connections_shed``, reason
    ``"proxy_protocol"``).
    """
