"""The framing layer's contracts: the Codec and Decoder protocols and the buffer they share.

The concrete codecs live in :mod:`trionet._sansio.codecs` (length-based) and
:mod:`trionet._sansio.delimited` (delimiter-based). Nothing here performs I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Generic, Protocol, TypeAlias, runtime_checkable

from typing_extensions import TypeVar

from .errors import FramingError

__all__ = [
    "Buffer",
    "BufferedDecoder",
    "Codec",
    "Decoder",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "FrameT",
]

#: What a codec's messages are: ``bytes`` unless a codec decodes to more (a
#: parsed command, a record). A type parameter with a default (PEP 696), so
#: that ``Codec`` and ``MessageChannel`` alone still mean bytes.
FrameT = TypeVar("FrameT", default=bytes)
_FrameT_co = TypeVar("_FrameT_co", covariant=True, default=bytes)

#: What encoders and decoders accept as input.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Default ``max_size`` of the length-prefixed codecs: 8 MiB, tokio-util's
#: ``LengthDelimitedCodec`` default (``Builder::new`` sets ``max_frame_len:
#: 8 * 1_024 * 1_024`` in tokio-util/src/codec/length_delimited.rs).
DEFAULT_MAX_FRAME_SIZE: Final = 8 * 1024 * 1024

#: Default ``max_size`` of the delimiter codecs: 64 KiB, asyncio's ``StreamReader``
#: default limit (``_DEFAULT_LIMIT = 2 ** 16`` in asyncio/streams.py).
DEFAULT_MAX_LINE_SIZE: Final = 64 * 1024

# While fewer bytes than this are pending, a feed copies them into a new bytes
# object together with the new chunk (frames are then sliced as bytes with one
# copy); past it, and when the pending bytes outnumber the new chunk, they grow
# in a bytearray instead, so that a large frame arriving in small pieces costs
# O(n) and not O(n**2).
_COPY_PENDING_BELOW: Final = 512

# An idle connection must not keep a copy of its last large message (issue 14):
# a decoder drops its buffer as soon as a returned frame consumes the last byte
# in it, and deletes a large frame's bytes from a bytearray as the frame is
# returned (CPython reallocates a bytearray that shrinks below half its
# allocation, so the memory is given back). When a decoder runs out of whole
# frames with a consumed prefix of at least this many bytes in front of an
# unfinished frame no longer than the prefix, it copies the unfinished frame out:
# the copy is paid for by the bytes consumed, at most once per feed, so streams
# of small frames never copy. 16 KiB: a quarter of MessageChannel's 64 KiB read.
_SHRINK_CONSUMED: Final = 16 * 1024


@runtime_checkable
class Decoder(Protocol[_FrameT_co]):
    """An incremental decoder: bytes in, whole messages out (``Decoder[T]``: messages of type ``T``).

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

    def next_frame(self) -> _FrameT_co | None:
        """Return the next whole frame's message, or ``None`` if more bytes are needed.

        ``None`` means only that: no message may be ``None`` (a codec of
        nullable values gives its null a value of its own).

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

    @property
    def held(self) -> int:
        """Bytes of buffer memory the decoder retains: the capacity of its buffer.

        At least :attr:`buffered`; more while bytes of frames already returned
        share the buffer with an unfinished frame. A decoder gives its buffer
        up when a returned frame consumes the last byte in it, and shrinks it
        when a large frame is returned or a long consumed prefix sits in front
        of a short unfinished frame, so an idle connection holds (nearly)
        nothing after a large message.
        """


@runtime_checkable
class Codec(Protocol[FrameT]):
    """A framing scheme: encodes messages to frames and creates decoders.

    ``Codec[T]`` frames messages of type ``T``; plain ``Codec`` is
    ``Codec[bytes]``, as every built-in codec is.

    A codec of your own need not subclass it (any class with these methods
    is one), but naming it as the base (``class Resp(Codec[RespValue])``)
    helps mypy: where ``T`` is a recursive type, ``connect_tcp(...,
    codec=Resp())`` otherwise fails with "Cannot infer value of type
    parameter".
    """

    @property
    def max_size(self) -> int:
        """The largest payload, in bytes, that the codec encodes or decodes."""

    def encode(self, message: FrameT) -> bytes:
        """Return the whole frame for ``message`` (header, payload and any trailer).

        Raises:
          FrameTooLarge: ``message`` is longer than ``max_size`` (``offset`` is ``None``).
          InvalidMessage: ``message`` cannot be framed (e.g. contains the delimiter).
        """

    def encode_into(self, out: bytearray, message: FrameT) -> None:
        """Append the frame for ``message`` to ``out`` (to batch frames into one write).

        Raises:
          FrameTooLarge: As for :meth:`encode`; ``out`` is then left unchanged.
          InvalidMessage: As for :meth:`encode`; ``out`` is then left unchanged.
        """

    def encode_many(self, messages: Iterable[FrameT]) -> bytes:
        """Return the frames for ``messages``, concatenated (one write for many messages).

        Raises:
          FrameTooLarge: As for :meth:`encode`; nothing is returned.
          InvalidMessage: As for :meth:`encode`; nothing is returned.
        """

    def decoder(self) -> Decoder[FrameT]:
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


class BufferedDecoder(Generic[FrameT]):
    """The base of decoders: buffering, stream offsets, sticky errors, giving bytes back.

    Every built-in decoder is one. A decoder of your own subclasses it and
    implements :meth:`parse`, which finds one frame in the bytes received so
    far; the base keeps those bytes (without copying them for each feed),
    counts the stream offset, makes a framing error sticky (raised again by
    every later call, as the :class:`Decoder` protocol says), lets go of the
    buffer once a frame has consumed it, and gives back what it holds with
    :meth:`take_buffered`::

        class NetstringDecoder(trionet.BufferedDecoder[bytes]):
            def parse(self, buffer, start):
                colon = buffer.find(b":", start, start + 10)
                if colon < 0:
                    return None            # more bytes needed (a real decoder checks the limit)
                size = int(buffer[start:colon])
                end = colon + 1 + size + 1  # the payload, then ","
                if len(buffer) < end:
                    return None
                return bytes(buffer[colon + 1:end - 1]), end

    ``BufferedDecoder[T]`` decodes messages of type ``T`` (``bytes`` by
    default). The built-in decoders override :meth:`next_frame` itself with
    faster paths over the same buffer.

    Internals, for those fast paths: ``_buf[_pos:]`` holds the bytes not yet
    returned in a frame and ``_base`` is the stream offset of ``_buf[0]``.
    ``_buf`` is usually a ``bytes`` object (the fed chunk itself when nothing
    was pending) so that a frame costs one slice; it is a ``bytearray`` only
    while a large frame accumulates. A decoder passes the buffer to
    ``_take`` for frames sliced from a ``bytearray`` (which drops or
    shrinks it), calls ``_drop`` when a frame sliced from ``bytes`` ends at
    the end of ``_buf`` (the delimiter decoders do so on their next call
    instead, when it finds no frame), and calls ``_shrink`` before
    returning ``None`` with ``_pos >= _SHRINK_CONSUMED``.
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

    @property
    def held(self) -> int:
        buf = self._buf
        # __alloc__ counts a bytearray's whole allocation, including any spare
        # capacity and a deleted prefix that CPython has not reclaimed yet.
        return buf.__alloc__() if type(buf) is bytearray else len(buf)

    def take_buffered(self) -> bytes:
        """Remove and return the bytes held that no returned frame used, for a protocol switch.

        The stream's next bytes follow them: a caller that stops framing (after
        a PROXY protocol line, an HTTP ``Upgrade``, a STARTTLS command) hands
        them to whatever reads the stream next. The decoder is finished
        afterwards: ``feed()`` and :meth:`next_frame` raise
        :exc:`~trionet.FramingError`.

        Raises:
          FramingError: The decoder had failed (its buffer was dropped then).
        """
        self._raise_if_failed()
        data = bytes(memoryview(self._buf)[self._pos:])
        self._base += len(self._buf)
        self._buf = b""
        self._pos = 0
        self._error = FramingError("the decoder gave its buffered bytes away (take_buffered())")
        return data

    def _drop(self) -> None:
        # A returned frame consumed every byte held: let the buffer go.
        count = len(self._buf)
        self._base += count
        self._buf = b""
        self._pos = 0
        self._moved(count)

    def _shrink(self) -> None:
        # No whole frame is left: called by next_frame before it returns None
        # once _pos >= _SHRINK_CONSUMED. Copies the unfinished frame out of a
        # buffer mostly made of consumed bytes.
        buf = self._buf
        pos = self._pos
        if len(buf) - pos <= pos:
            self._buf = buf[pos:] if type(buf) is bytes else bytes(memoryview(buf)[pos:])
            self._base += pos
            self._pos = 0
            self._moved(pos)

    def _fail(self, error: FramingError) -> FramingError:
        self._error = error
        self._base += self._pos
        self._buf = b""
        self._pos = 0
        return error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)

    def _take(self, buf: bytes | bytearray, start: int, stop: int) -> bytes:
        # Slow path of the frame slicing: buf is a bytearray holding a large
        # frame. One copy through a view, released explicitly so the bytearray
        # can be resized again (PyPy frees views late). Then the consumed bytes
        # (up to _pos, which the caller has moved past the frame and its
        # trailer) are deleted from the bytearray, unless _drop() let it go
        # already: CPython reallocates a bytearray at the remainder's size once
        # it shrinks below half its allocation, so a large frame is not kept.
        with memoryview(buf) as view, view[start:stop] as part:
            frame = part.tobytes()
        if buf is self._buf:
            assert type(buf) is bytearray
            consumed = self._pos
            if consumed == len(buf):
                self._drop()
            else:
                del buf[:consumed]
                self._base += consumed
                self._pos = 0
                self._moved(consumed)
        return frame

    def _moved(self, count: int) -> None:
        """Hook: the first ``count`` bytes of the buffer were dropped (``_base`` moved)."""

    # ------------------------------------------------------- for subclasses

    def parse(self, buffer: bytes | bytearray, start: int) -> tuple[FrameT, int] | None:
        """Find the frame that starts at ``buffer[start]``; a subclass implements it.

        ``buffer[start:]`` is every byte received and not yet returned in a
        frame (``buffer[:start]`` are earlier frames': ignore them). Do not
        keep ``buffer`` or a view of it: copy what the message keeps.

        Returns:
          ``(message, end)``, with ``end`` the index in ``buffer`` just past
          the frame; or ``None`` while the frame is incomplete (the base calls
          again after the next ``feed()``).

        Raises:
          FrameTooLarge: The frame exceeds the limit: check it as soon as a
              header says so (or a delimiter search passes it), before the
              payload is buffered. :meth:`stream_offset` gives its ``offset``.
          ProtocolError: The bytes break the wire format.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement parse() or next_frame()")

    def stream_offset(self, index: int) -> int:
        """The stream offset of ``buffer[index]`` in :meth:`parse` (for an error's ``offset``)."""
        return self._base + index

    def next_frame(self) -> FrameT | None:
        """Return the next whole frame's message, or ``None``; see :class:`Decoder`.

        Calls :meth:`parse`; a :exc:`~trionet.FramingError` it raises is sticky.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            return None
        try:
            found = self.parse(buf, pos)
        except FramingError as exc:
            raise self._fail(exc) from None
        if found is None:
            if pos >= _SHRINK_CONSUMED:
                self._shrink()
            return None
        message, end = found
        if not pos < end <= len(buf):
            raise ValueError(f"{type(self).__name__}.parse() returned end={end}, "
                             f"not in {pos + 1}..{len(buf)}")
        if end == len(buf):
            self._drop()
        else:
            self._pos = end
        return message

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else f"buffered={self.buffered}"
        return f"<{type(self).__name__} offset={self.offset} {state}>"


