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
from typing import TYPE_CHECKING, Final, Literal, final

from .delimited import Delimited, Lines
from .errors import FrameTooLarge, ProtocolError
from .framing import (
    _SHRINK_CONSUMED,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    Buffer,
    BufferedDecoder,
    Codec,
    Decoder,
    _check_max_size,
    _length,
)

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

# protobuf varints encode at most 64 bits, in at most 10 bytes.
_MAX_VARINT_BYTES: Final = 10
_MAX_VARINT_VALUE: Final = 2**64 - 1


@final
class _LengthPrefixedDecoder(BufferedDecoder):
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
        end = len(buf)
        if end >= start:
            size = self._unpack_from(buf, pos)[0]
            if size > self._max_size:
                raise self._fail(FrameTooLarge(size, self._max_size, self._base + pos))
            stop = start + size
            if end < stop:
                if pos >= _SHRINK_CONSUMED:
                    self._shrink()
                return None
            self._pos = stop
            if stop == end:
                self._drop()
            if type(buf) is bytes:
                return buf[start:stop]
            return self._take(buf, start, stop)
        self._raise_if_failed()
        if pos >= _SHRINK_CONSUMED:
            self._shrink()
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
class _VarintDecoder(BufferedDecoder):
    __slots__ = ("_max_size", "_one_byte_max")

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self._max_size = max_size
        self._one_byte_max = min(max_size, 0x7F)

    def next_frame(self) -> bytes | None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos < end:
            size = buf[pos]
            if size <= self._one_byte_max:
                start = pos + 1
            else:
                header = self._parse_header()
                if header is None:
                    if pos >= _SHRINK_CONSUMED:
                        self._shrink()
                    return None
                size, start = header
            stop = start + size
            if end < stop:
                if pos >= _SHRINK_CONSUMED:
                    self._shrink()
                return None
            self._pos = stop
            if stop == end:
                self._drop()
            if type(buf) is bytes:
                return buf[start:stop]
            return self._take(buf, start, stop)
        self._raise_if_failed()
        return None

    def _parse_header(self) -> tuple[int, int] | None:
        # A partial value above max_size already proves the frame too large, but
        # FrameTooLarge.size is the announced size: the whole header (at most 10
        # bytes, none of them payload) is read before the error is raised.
        buf = self._buf
        pos = self._pos
        value = 0
        for index in range(pos, min(len(buf), pos + _MAX_VARINT_BYTES)):
            byte = buf[index]
            value |= (byte & 0x7F) << (7 * (index - pos))
            if byte < 0x80:
                if value > _MAX_VARINT_VALUE:
                    # A 10th byte above 1 sets bits past the 64 that protobuf's
                    # varints carry.
                    raise self._fail(
                        ProtocolError("varint length prefix exceeds 64 bits", self._base + index)
                    )
                if value > self._max_size:
                    raise self._fail(FrameTooLarge(value, self._max_size, self._base + pos))
                return value, index + 1
        if len(buf) - pos >= _MAX_VARINT_BYTES:
            raise self._fail(
                ProtocolError(
                    f"varint length prefix does not end within {_MAX_VARINT_BYTES} bytes",
                    self._base + pos + _MAX_VARINT_BYTES - 1,
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

    A header announcing more than ``max_size`` raises
    :exc:`~trionet.FrameTooLarge` whose ``size`` is the announced size, as soon
    as the header ends (at most 10 bytes; no payload is buffered). A header that
    does not end within 10 bytes, or announces more than ``2**64 - 1``, raises
    :exc:`~trionet.ProtocolError`.

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


@final
class _NetstringDecoder(BufferedDecoder):
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
                    end = len(buf)
                    if end <= stop:
                        if pos >= _SHRINK_CONSUMED:
                            self._shrink()
                        return None
                    if buf[stop] != 0x2C:
                        raise self._fail(
                            ProtocolError(
                                "expected b',' after netstring payload", self._base + stop
                            )
                        )
                    self._pos = stop + 1
                    if stop + 1 == end:
                        self._drop()
                    if type(buf) is bytes:
                        return buf[start:stop]
                    return self._take(buf, start, stop)
        self._check_header()
        if pos >= _SHRINK_CONSUMED:
            self._shrink()
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
                # More digits would only make it larger: exact once b":" follows.
                ended = index + 1 < len(buf) and buf[index + 1] == 0x3A
                raise self._fail(
                    FrameTooLarge(value, self._max_size, self._base + pos, at_least=not ended)
                )


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
