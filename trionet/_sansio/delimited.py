"""Delimiter-based sans-IO codecs: :class:`Delimited` and :class:`Lines`.

A frame is its payload followed by a delimiter. The decoders remember where the
last search stopped, so a long line arriving in small pieces is scanned once,
and give up once ``max_size`` is certainly exceeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import final

from .errors import FrameTooLarge, InvalidMessage
from .framing import (
    _SHRINK_CONSUMED,
    DEFAULT_MAX_LINE_SIZE,
    Buffer,
    BufferedDecoder,
    Decoder,
    _check_max_size,
)

__all__ = ["Delimited", "Lines"]


def _has_border(delimiter: bytes) -> bool:
    # A delimiter whose proper prefix equals its suffix (b"aa", b"abab") can
    # overlap the end of a message and be found too early.
    return any(delimiter[:k] == delimiter[-k:] for k in range(1, len(delimiter)))


class _SearchingDecoder(BufferedDecoder):
    """A decoder that searches for a delimiter and remembers where it stopped."""

    __slots__ = ("_max_size", "_search")

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self._max_size = max_size
        # Index into _buf where the next search starts: the bytes before it
        # cannot start a delimiter, so no byte is searched twice.
        self._search = 0

    def feed(self, data: Buffer) -> None:
        pos = self._pos
        super().feed(data)
        self._search -= pos - self._pos  # the buffer now starts at the old _pos

    def _moved(self, count: int) -> None:
        self._search -= count


@final
class _DelimitedDecoder(_SearchingDecoder):
    __slots__ = ("_delimiter", "_width")

    def __init__(self, delimiter: bytes, max_size: int) -> None:
        super().__init__(max_size)
        self._delimiter = delimiter
        self._width = len(delimiter)

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        # Unbounded: a search runs past max_size only once, when it fails.
        found = buf.find(self._delimiter, self._search)
        if 0 <= found - pos <= self._max_size:
            # A bytes buffer left empty is dropped by the next call, which finds
            # no frame (a length check here costs 6 % of the decoding rate).
            self._pos = self._search = found + self._width
            if type(buf) is bytes:
                return buf[pos:found]
            return self._take(buf, pos, found)
        self._not_found(found)
        if self._pos >= _SHRINK_CONSUMED:
            self._shrink()
        return None

    def _not_found(self, found: int) -> None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            if buf:
                self._drop()
            return
        if found >= 0:
            raise self._fail(FrameTooLarge(found - pos, self._max_size, self._base + pos))
        available = len(buf) - pos
        if available > self._max_size:
            # Too large unless the delimiter can still start at or before
            # max_size, which needs the buffer to end with a prefix of it there.
            first = max(len(buf) - self._width + 1, pos)
            last = pos + self._max_size
            tail = bytes(buf[first:])
            if not any(self._delimiter.startswith(tail[i:]) for i in range(last - first + 1)):
                raise self._fail(
                    FrameTooLarge(available, self._max_size, self._base + pos, at_least=True)
                )
        self._search = max(len(buf) - self._width + 1, pos)


@final
@dataclass(frozen=True, init=False, slots=True)
class Delimited:
    """Frames ended by a delimiter, which messages must not contain.

    Wire format, for each message::

        payload       any bytes that do not contain the delimiter
        delimiter     the delimiter bytes (default b"\\n")

    >>> Delimited(b"\\0").encode(b"hi")
    b'hi\\x00'
    >>> decoder = Delimited(b"\\r\\n").decoder()
    >>> decoder.feed(b"one\\r\\ntwo\\r")
    >>> decoder.next_frame(), decoder.next_frame(), decoder.buffered
    (b'one', None, 4)

    The decoder remembers how far it searched, so decoding is linear in the
    stream length however it is chunked, and raises
    :exc:`~trionet.FrameTooLarge` once the delimiter can no longer end a payload
    of at most ``max_size`` bytes.

    Args:
      delimiter: The non-empty byte string that ends each frame.
      max_size: The largest payload in bytes, not counting the delimiter;
          :data:`DEFAULT_MAX_LINE_SIZE` (64 KiB) by default.

    Raises:
      ValueError: The delimiter is empty or ``max_size`` is out of range.
    """

    delimiter: bytes
    max_size: int
    _has_border: bool = field(init=False, repr=False, compare=False)

    def __init__(self, delimiter: Buffer = b"\n", *, max_size: int = DEFAULT_MAX_LINE_SIZE) -> None:
        if not isinstance(delimiter, (bytes, bytearray, memoryview)):
            raise TypeError(f"delimiter must be bytes, not {type(delimiter).__name__}")
        delimiter = bytes(delimiter)
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        _check_max_size(max_size)
        object.__setattr__(self, "delimiter", delimiter)
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "_has_border", _has_border(delimiter))

    def _check(self, message: Buffer) -> bytes | bytearray:
        if type(message) is memoryview:
            message = message.tobytes()
        if len(message) > self.max_size:
            raise FrameTooLarge(len(message), self.max_size)
        delimiter = self.delimiter
        if delimiter in message:
            raise InvalidMessage(f"message contains the delimiter {delimiter!r}")
        if self._has_border:
            tail = bytes(message[1 - len(delimiter) :]) + delimiter
            if tail.find(delimiter) != len(tail) - len(delimiter):
                raise InvalidMessage(
                    f"message ends with a prefix of the delimiter {delimiter!r}, which "
                    "would be decoded as an earlier delimiter"
                )
        return message

    def encode(self, message: Buffer) -> bytes:
        return b"".join((self._check(message), self.delimiter))

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        out += self._check(message)
        out += self.delimiter

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        return b"".join(map(self.encode, messages))

    def decoder(self) -> Decoder:
        return _DelimitedDecoder(self.delimiter, self.max_size)


@final
class _LinesDecoder(_SearchingDecoder):
    __slots__ = ()

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        found = buf.find(b"\n", self._search)
        if 0 <= found - pos <= self._max_size:
            self._pos = self._search = found + 1
            # At pos > 0, buf[pos - 1] is the previous b"\n"; at 0 it is not ours.
            if buf[found - 1] == 0x0D and found > pos:
                found -= 1
            if type(buf) is bytes:
                return buf[pos:found]
            return self._take(buf, pos, found)
        return self._not_found(found)

    def _not_found(self, found: int) -> bytes | None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        if pos == len(buf):
            if buf:
                self._drop()
            return None
        max_size = self._max_size
        if found - pos == max_size + 1 and buf[found - 1] == 0x0D:
            # The line is max_size bytes long and ends with b"\r\n".
            self._pos = self._search = stop = found + 1
            if stop == len(buf):
                self._drop()
            if type(buf) is bytes:
                return buf[pos : found - 1]
            return self._take(buf, pos, found - 1)
        if found >= 0:
            raise self._fail(FrameTooLarge(found - pos, max_size, self._base + pos))
        available = len(buf) - pos
        # Only a b"\r" right after max_size bytes can still end a short enough line.
        if available > max_size + 1 or (available == max_size + 1 and buf[pos + max_size] != 0x0D):
            raise self._fail(FrameTooLarge(available, max_size, self._base + pos, at_least=True))
        self._search = len(buf)
        if pos >= _SHRINK_CONSUMED:
            self._shrink()
        return None


@final
@dataclass(frozen=True, init=False, slots=True)
class Lines:
    """Lines of text (or bytes) ended by ``b"\\n"`` or ``b"\\r\\n"``.

    Wire format, for each message::

        payload       any bytes without b"\\r" or b"\\n"
        newline       b"\\n" or b"\\r\\n" (decoding accepts both and strips them)

    Encoding refuses messages containing ``b"\\r"`` or ``b"\\n"``: a bare CR is a
    line break to some peers and is forbidden by line protocols such as SMTP
    (RFC 5321, section 2.3.8), and a trailing one would be stripped on decode.
    Decoding removes one ``b"\\r"`` before the ``b"\\n"`` and keeps any other.

    >>> Lines().encode(b"hi")
    b'hi\\n'
    >>> Lines(newline=b"\\r\\n").encode(b"hi")
    b'hi\\r\\n'
    >>> decoder = Lines().decoder()
    >>> decoder.feed(b"one\\r\\ntwo\\nthr")
    >>> decoder.next_frame(), decoder.next_frame(), decoder.next_frame()
    (b'one', b'two', None)

    Args:
      max_size: The longest line in bytes, without its line ending;
          :data:`DEFAULT_MAX_LINE_SIZE` (64 KiB) by default.
      newline: What :meth:`encode` appends: ``b"\\n"`` or ``b"\\r\\n"``.

    Raises:
      ValueError: ``newline`` or ``max_size`` is out of range.
    """

    max_size: int
    newline: bytes

    def __init__(self, *, max_size: int = DEFAULT_MAX_LINE_SIZE, newline: bytes = b"\n") -> None:
        _check_max_size(max_size)
        if newline not in (b"\n", b"\r\n"):
            raise ValueError(f"newline must be b'\\n' or b'\\r\\n', got {newline!r}")
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "newline", bytes(newline))

    def _check(self, message: Buffer) -> bytes | bytearray:
        if type(message) is memoryview:
            message = message.tobytes()
        if len(message) > self.max_size:
            raise FrameTooLarge(len(message), self.max_size)
        if b"\n" in message or b"\r" in message:
            raise InvalidMessage("a line must not contain b'\\r' or b'\\n'")
        return message

    def encode(self, message: Buffer) -> bytes:
        return b"".join((self._check(message), self.newline))

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        out += self._check(message)
        out += self.newline

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        return b"".join(map(self.encode, messages))

    def decoder(self) -> Decoder:
        return _LinesDecoder(self.max_size)


