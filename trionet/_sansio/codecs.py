"""Sans-IO framing codecs: encoders and incremental decoders for message frames.

A :class:`Codec` turns messages into frames (:meth:`~Codec.encode`) and hands out
:class:`Decoder` objects that split a byte stream, received in any chunking, back
into messages. Nothing here performs I/O: :class:`~trionet.MessageChannel` feeds
a decoder what it reads from a trio stream, and any other event loop can do the
same.

Every codec has a finite ``max_size`` (the largest payload, in bytes). A decoder
checks it on the header before buffering any payload, and gives up a delimiter
search once the limit is certainly exceeded, so a hostile peer can make it hold
at most about ``max_size`` bytes plus one fed chunk.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias, final, runtime_checkable

from .errors import FrameTooLarge, FramingError, InvalidMessage, ProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Buffer",
    "Codec",
    "Decoder",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "LengthPrefixed",
    "Varint",
    "Delimited",
    "Lines",
    "Netstring",
]

#: What encoders and decoders accept as input.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Default ``max_size`` of the length-prefixed codecs: 8 MiB, tokio-util's
#: ``LengthDelimitedCodec`` default (``Builder::new`` sets ``max_frame_len:
#: 8 * 1_024 * 1_024`` in tokio-util/src/codec/length_delimited.rs).
DEFAULT_MAX_FRAME_SIZE: Final = 8 * 1024 * 1024

#: Default ``max_size`` of the delimiter codecs: 64 KiB, asyncio's ``StreamReader``
#: default limit (``_DEFAULT_LIMIT = 2 ** 16`` in asyncio/streams.py).
DEFAULT_MAX_LINE_SIZE: Final = 64 * 1024

# protobuf varints encode at most 64 bits, in at most 10 bytes.
_MAX_VARINT_BYTES: Final = 10
_MAX_VARINT_VALUE: Final = 2**64 - 1

# While fewer bytes than this are pending, a feed copies them into a new bytes
# object together with the new chunk (frames are then sliced as bytes with one
# copy); past it, and when the pending bytes outnumber the new chunk, they grow
# in a bytearray instead, so that a large frame arriving in small pieces costs
# O(n) and not O(n**2).
_COPY_PENDING_BELOW: Final = 512


@runtime_checkable
class Decoder(Protocol):
    """An incremental decoder: bytes in, whole frame payloads out.

    Typical use reads, feeds, then drains::

        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            handle(frame)

    Error handling:
      Errors are sticky, as in h11: once :meth:`next_frame` raised
      :exc:`~trionet.FrameTooLarge` or :exc:`~trionet.ProtocolError`, the decoder
      drops its buffer, and :meth:`feed` and :meth:`next_frame` raise the same
      exception again on every later call.
    """

    def feed(self, data: Buffer) -> None:
        """Append received bytes; any chunking of a stream yields the same frames.

        Raises:
          FramingError: The decoder already failed; the error is raised again.
        """

    def next_frame(self) -> bytes | None:
        """Return the next whole frame's payload, or ``None`` if more bytes are needed.

        Frames that are complete before a bad header or payload are returned
        first; the error is raised when the decoder reaches the bad bytes.

        Raises:
          FrameTooLarge: A frame exceeds the codec's ``max_size``.
          ProtocolError: The bytes violate the wire format.
        """

    @property
    def buffered(self) -> int:
        """Bytes held that have not been returned as part of a frame (0 at a frame boundary)."""

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet consumed into a returned frame."""


@runtime_checkable
class Codec(Protocol):
    """A framing scheme: encodes messages to frames and creates decoders."""

    @property
    def max_size(self) -> int:
        """The largest payload, in bytes, that the codec encodes or decodes."""

    def encode(self, message: Buffer) -> bytes:
        """Return the whole frame for ``message`` (header, payload and any trailer).

        Raises:
          FrameTooLarge: ``message`` is longer than ``max_size`` (``offset`` is ``None``).
          InvalidMessage: ``message`` cannot be framed (e.g. contains the delimiter).
        """

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        """Append the frame for ``message`` to ``out`` (to batch frames into one write).

        Raises:
          FrameTooLarge: As for :meth:`encode`; ``out`` is then left unchanged.
          InvalidMessage: As for :meth:`encode`; ``out`` is then left unchanged.
        """

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        """Return the frames for ``messages``, concatenated (one write for many messages).

        Raises:
          FrameTooLarge: As for :meth:`encode`; nothing is returned.
          InvalidMessage: As for :meth:`encode`; nothing is returned.
        """

    def decoder(self) -> Decoder:
        """Return a fresh incremental :class:`Decoder` for this codec's wire format."""


def _check_max_size(max_size: int, limit: int | None = None, why: str = "") -> int:
    if not isinstance(max_size, int) or isinstance(max_size, bool):
        raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    if limit is not None and max_size > limit:
        raise ValueError(f"max_size={max_size} is larger than {why} can express ({limit})")
    return max_size


def _length(message: Buffer) -> int:
    # len() of a memoryview counts items, not bytes.
    return message.nbytes if type(message) is memoryview else len(message)


class _BufferedDecoder:
    """Buffer, stream offset and sticky error shared by every decoder.

    ``_buf[_pos:]`` holds the bytes not yet returned in a frame and ``_base`` is
    the stream offset of ``_buf[0]``. ``_buf`` is usually a ``bytes`` object (the
    fed chunk itself when nothing was pending) so that a frame costs one slice;
    it is a ``bytearray`` only while a large frame accumulates.
    """

    __slots__ = ("_base", "_buf", "_error", "_pos")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._base = 0
        self._error: FramingError | None = None

    def feed(self, data: Buffer) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)
        if type(data) is not bytes:
            data = bytes(data)  # a snapshot: the caller may reuse its buffer
        if not data:
            return
        buf = self._buf
        pos = self._pos
        pending = len(buf) - pos
        if not pending:
            self._base += len(buf)
            self._buf = data
            self._pos = 0
        elif pending <= len(data) or pending < _COPY_PENDING_BELOW:
            self._base += pos
            self._buf = b"".join((memoryview(buf)[pos:], data))
            self._pos = 0
        else:
            if isinstance(buf, bytearray):
                del buf[:pos]  # O(1): CPython advances the bytearray's start
            else:
                buf = self._buf = bytearray(memoryview(buf)[pos:])
            self._base += pos
            self._pos = 0
            buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def _fail(self, error: FramingError) -> FramingError:
        self._error = error
        self._base += self._pos
        self._buf = b""
        self._pos = 0
        return error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)

    def _take(self, start: int, stop: int) -> bytes:
        # Slow path of the frame slicing: _buf is a bytearray holding a large
        # frame. One copy through a view, released explicitly so the bytearray
        # can be resized again (PyPy frees views late).
        with memoryview(self._buf) as view, view[start:stop] as part:
            return part.tobytes()

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else f"buffered={self.buffered}"
        return f"<{type(self).__name__} offset={self.offset} {state}>"


@final
class _LengthPrefixedDecoder(_BufferedDecoder):
    __slots__ = ("_max_size", "_unpack_from", "_width")

    def __init__(self, width: int, unpack_from: Callable[..., tuple[int]], max_size: int) -> None:
        super().__init__()
        self._width = width
        self._unpack_from = unpack_from
        self._max_size = max_size

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        start = pos + self._width
        if len(buf) >= start:
            size = self._unpack_from(buf, pos)[0]
            if size > self._max_size:
                raise self._fail(FrameTooLarge(size, self._max_size, self._base + pos))
            stop = start + size
            if len(buf) < stop:
                return None
            self._pos = stop
            if type(buf) is bytes:
                return buf[start:stop]
            return self._take(start, stop)
        self._raise_if_failed()
        return None


@final
@dataclass(frozen=True, init=False, slots=True)
class LengthPrefixed:
    """Frames with a fixed-width unsigned length header.

    Wire format, for each message::

        width bytes   payload length, unsigned integer in ``byteorder``
        length bytes  payload

    With the defaults (``width=4``, big endian) this is the format of tokio's
    ``LengthDelimitedCodec``, Twisted's ``Int32StringReceiver`` and Netty's
    ``LengthFieldPrepender(4)`` paired with ``LengthFieldBasedFrameDecoder(max,
    0, 4, 0, 4)``.

    >>> LengthPrefixed().encode(b"hi")
    b'\\x00\\x00\\x00\\x02hi'
    >>> LengthPrefixed(2, byteorder="little").encode(b"hi")
    b'\\x02\\x00hi'
    >>> decoder = LengthPrefixed().decoder()
    >>> decoder.feed(b"\\x00\\x00\\x00\\x02hi\\x00\\x00")
    >>> decoder.next_frame(), decoder.next_frame(), decoder.buffered
    (b'hi', None, 2)

    Args:
      width: Header size in bytes: 1, 2, 4 or 8.
      byteorder: ``"big"`` (network order) or ``"little"``.
      max_size: The largest payload in bytes; by default the smaller of
          :data:`DEFAULT_MAX_FRAME_SIZE` (8 MiB) and the largest length the header
          can express.

    Raises:
      ValueError: An argument is out of range, including a ``max_size`` that
          ``width`` bytes cannot express.
    """

    width: Literal[1, 2, 4, 8]
    byteorder: Literal["big", "little"]
    max_size: int
    _struct: struct.Struct = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        width: Literal[1, 2, 4, 8] = 4,
        *,
        byteorder: Literal["big", "little"] = "big",
        max_size: int | None = None,
    ) -> None:
        formats = {1: "B", 2: "H", 4: "I", 8: "Q"}
        if width not in formats or isinstance(width, bool):
            raise ValueError(f"width must be 1, 2, 4 or 8 bytes, got {width!r}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"byteorder must be 'big' or 'little', got {byteorder!r}")
        largest = 2 ** (8 * width) - 1
        if max_size is None:
            max_size = min(DEFAULT_MAX_FRAME_SIZE, largest)
        _check_max_size(max_size, largest, f"a {width}-byte length header")
        prefix = ">" if byteorder == "big" else "<"
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "byteorder", byteorder)
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "_struct", struct.Struct(prefix + formats[width]))

    def encode(self, message: Buffer) -> bytes:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return self._struct.pack(size) + message

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        out += self._struct.pack(size)
        out += message

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        # One join of all headers and payloads: about half the cost per message
        # of appending each to a bytearray.
        pack = self._struct.pack
        max_size = self.max_size
        parts: list[Buffer] = []
        append = parts.append
        for message in messages:
            size = _length(message)
            if size > max_size:
                raise FrameTooLarge(size, max_size)
            append(pack(size))
            append(message)
        return b"".join(parts)

    def decoder(self) -> Decoder:
        return _LengthPrefixedDecoder(self.width, self._struct.unpack_from, self.max_size)

    def __reduce__(self) -> tuple[Callable[..., LengthPrefixed], tuple[int]]:
        # A struct.Struct does not pickle: rebuild it from the options.
        rebuild = functools.partial(
            LengthPrefixed, byteorder=self.byteorder, max_size=self.max_size
        )
        return rebuild, (self.width,)


_ONE_BYTE_VARINTS: Final = tuple(bytes((n,)) for n in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@final
class _VarintDecoder(_BufferedDecoder):
    __slots__ = ("_max_size", "_one_byte_max")

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self._max_size = max_size
        self._one_byte_max = min(max_size, 0x7F)

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        if pos < len(buf):
            size = buf[pos]
            if size <= self._one_byte_max:
                start = pos + 1
            else:
                header = self._parse_header()
                if header is None:
                    return None
                size, start = header
            stop = start + size
            if len(buf) < stop:
                return None
            self._pos = stop
            if type(buf) is bytes:
                return buf[start:stop]
            return self._take(start, stop)
        self._raise_if_failed()
        return None

    def _parse_header(self) -> tuple[int, int] | None:
        # The value only grows with each byte, so a partial value above max_size
        # already proves the frame too large.
        buf = self._buf
        pos = self._pos
        value = 0
        for index in range(pos, min(len(buf), pos + _MAX_VARINT_BYTES)):
            byte = buf[index]
            value |= (byte & 0x7F) << (7 * (index - pos))
            if value > self._max_size:
                raise self._fail(FrameTooLarge(value, self._max_size, self._base + pos))
            if byte < 0x80:
                return value, index + 1
            if index == pos + _MAX_VARINT_BYTES - 1:
                raise self._fail(
                    ProtocolError(
                        f"varint length prefix does not end within {_MAX_VARINT_BYTES} bytes",
                        self._base + index,
                    )
                )
        return None


@final
@dataclass(frozen=True, init=False, slots=True)
class Varint:
    """Frames with a varint length header: protobuf's delimited format.

    Wire format, for each message::

        1-10 bytes    payload length as an unsigned LEB128 varint: 7 bits per
                      byte, least significant group first, high bit set on every
                      byte but the last
        length bytes  payload

    This is what protobuf's ``writeDelimitedTo`` / ``parseDelimitedFrom`` (Java)
    and ``SerializeDelimitedToOstream`` (C++) read and write. The decoder accepts
    non-minimal varints (such as ``b"\\x82\\x00"`` for 2) up to 10 bytes.

    >>> Varint().encode(b"hi")
    b'\\x02hi'
    >>> Varint().encode(bytes(300))[:2]
    b'\\xac\\x02'

    Args:
      max_size: The largest payload in bytes (at most ``2**64 - 1``).

    Raises:
      ValueError: ``max_size`` is out of range.
    """

    max_size: int

    def __init__(self, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        _check_max_size(max_size, _MAX_VARINT_VALUE, "a 64-bit varint")
        object.__setattr__(self, "max_size", max_size)

    def encode(self, message: Buffer) -> bytes:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return _varint(size) + message

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        out += _varint(size)
        out += message

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        return b"".join(map(self.encode, messages))

    def decoder(self) -> Decoder:
        return _VarintDecoder(self.max_size)


def _has_border(delimiter: bytes) -> bool:
    # A delimiter whose proper prefix equals its suffix (b"aa", b"abab") can
    # overlap the end of a message and be found too early.
    return any(delimiter[:k] == delimiter[-k:] for k in range(1, len(delimiter)))


class _SearchingDecoder(_BufferedDecoder):
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
            self._pos = self._search = found + self._width
            if type(buf) is bytes:
                return buf[pos:found]
            return self._take(pos, found)
        self._not_found(found)
        return None

    def _not_found(self, found: int) -> None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
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
                raise self._fail(FrameTooLarge(available, self._max_size, self._base + pos))
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
            return self._take(pos, found)
        return self._not_found(found)

    def _not_found(self, found: int) -> bytes | None:
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        max_size = self._max_size
        if found - pos == max_size + 1 and buf[found - 1] == 0x0D:
            # The line is max_size bytes long and ends with b"\r\n".
            self._pos = self._search = found + 1
            return bytes(buf[pos : found - 1])
        if found >= 0:
            raise self._fail(FrameTooLarge(found - pos, max_size, self._base + pos))
        available = len(buf) - pos
        # Only a b"\r" right after max_size bytes can still end a short enough line.
        if available > max_size + 1 or (available == max_size + 1 and buf[pos + max_size] != 0x0D):
            raise self._fail(FrameTooLarge(available, max_size, self._base + pos))
        self._search = len(buf)
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


@final
class _NetstringDecoder(_BufferedDecoder):
    __slots__ = ("_header_limit", "_max_size")

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self._max_size = max_size
        self._header_limit = len(str(max_size)) + 1  # digits and b":"

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        colon = buf.find(b":", pos, pos + self._header_limit)
        if colon > pos:
            digits = buf[pos:colon]
            if digits.isdigit() and (colon == pos + 1 or buf[pos] != 0x30):
                size = int(digits)
                if size <= self._max_size:
                    start = colon + 1
                    stop = start + size
                    if len(buf) <= stop:
                        return None
                    if buf[stop] != 0x2C:
                        raise self._fail(
                            ProtocolError(
                                "expected b',' after netstring payload", self._base + stop
                            )
                        )
                    self._pos = stop + 1
                    if type(buf) is bytes:
                        return buf[start:stop]
                    return self._take(start, stop)
        self._check_header()
        return None

    def _check_header(self) -> None:
        # The fast path found no valid header: find the first bad byte, or
        # conclude that the header is still incomplete.
        self._raise_if_failed()
        buf = self._buf
        pos = self._pos
        value = 0
        for index in range(pos, min(len(buf), pos + self._header_limit)):
            byte = buf[index]
            if byte == 0x3A and index > pos:
                return  # defensive: the fast path accepts every valid header
            if not 0x30 <= byte <= 0x39:
                expected = "a digit or b':'" if index > pos else "a digit"
                message = f"expected {expected} in netstring length, got {bytes((byte,))!r}"
                raise self._fail(ProtocolError(message, self._base + index))
            if index > pos and buf[pos] == 0x30:
                raise self._fail(
                    ProtocolError("netstring length has a leading zero", self._base + pos)
                )
            value = value * 10 + byte - 0x30
            if value > self._max_size:
                raise self._fail(FrameTooLarge(value, self._max_size, self._base + pos))


@final
@dataclass(frozen=True, init=False, slots=True)
class Netstring:
    """D. J. Bernstein's netstrings (https://cr.yp.to/proto/netstrings.txt).

    Wire format, for each message::

        1+ bytes      payload length in ASCII decimal, without leading zeros
                      (b"0" for the empty message)
        1 byte        b":"
        length bytes  payload
        1 byte        b","

    >>> Netstring().encode(b"hello world!")
    b'12:hello world!,'
    >>> Netstring().encode(b"")
    b'0:,'

    The decoder reads at most as many digits as ``max_size`` has (plus one)
    before deciding, and raises :exc:`~trionet.FrameTooLarge` as soon as the
    digits read exceed ``max_size``.

    Args:
      max_size: The largest payload in bytes.

    Raises:
      ValueError: ``max_size`` is out of range.
    """

    max_size: int

    def __init__(self, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        _check_max_size(max_size)
        object.__setattr__(self, "max_size", max_size)

    def encode(self, message: Buffer) -> bytes:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        return b"".join((b"%d:" % size, message, b","))

    def encode_into(self, out: bytearray, message: Buffer) -> None:
        size = _length(message)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        out += b"%d:" % size
        out += message
        out += b","

    def encode_many(self, messages: Iterable[Buffer]) -> bytes:
        return b"".join(map(self.encode, messages))

    def decoder(self) -> Decoder:
        return _NetstringDecoder(self.max_size)
