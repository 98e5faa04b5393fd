"""The root of MessageChannel: its slots, its state checks, send ownership, the abort.

:class:`~trionet.MessageChannel` is one class built on a chain of private
bases, a module each, every one seeing those below it:
``channel_state.py`` (here: what every path shares) < ``channel_timeout.py``
(``frame_timeout``) < ``channel_stream.py`` (TLS, memory and custom streams)
< ``channel_socket.py`` (the socket fast path, docs/design/fast-path.rst, and
trio's socket methods) < ``channel.py`` (the public surface). Bases rather
than functions taking the channel: the hot path pays the same attribute
lookups and ``await`` frames as when it was one class.
"""

from __future__ import annotations

import contextlib
import socket as _stdlib_socket
import struct
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from .._sansio.codecs import Codec, Decoder
from ..errors import FrameTimeout, IncompleteFrame
from .activity import ActivityTracker, RecordClock

__all__ = ["DEFAULT_ABORT_TIMEOUT", "DEFAULT_READ_SIZE", "ChannelState", "MessageChannelStatistics"]

#: How many bytes one read asks the stream for. Large reads let one system call
#: bring in many small frames; 64 KiB is the usual socket buffer size on Linux and
#: the read size of tokio's ``FramedRead`` once its buffer has grown.
DEFAULT_READ_SIZE: Final = 65536

#: Seconds a frame that has started may take to finish once its sender has been
#: cancelled, before the channel gives up and aborts the connection. Long enough
#: for a healthy peer to drain a socket buffer over a slow link; short enough that
#: a stalled peer cannot hold a cancelled task (and a server's shutdown) hostage.
DEFAULT_ABORT_TIMEOUT: Final = 10.0

# SO_LINGER with a zero timeout makes close() send a TCP reset: the peer learns that
# the connection was aborted instead of seeing an orderly end after half a frame.
_LINGER_ABORT: Final = struct.pack("ii", 1, 0)


@final
@dataclass(frozen=True, slots=True)
class MessageChannelStatistics:
    """A snapshot of a :class:`MessageChannel`'s state, from :meth:`~MessageChannel.statistics`.

    Attributes:
      messages_sent: Frames written whole to the stream.
      messages_received: Frames returned by :meth:`~MessageChannel.receive`.
      buffered_bytes: Received bytes held that are not yet part of a returned frame.
      tasks_waiting_send: Tasks queued behind the one that is writing.
      aborted: Whether the channel gave up on a frame and aborted the stream.
      held_bytes: Bytes of receive buffer memory the channel keeps (its
          decoder's buffer capacity, at least ``buffered_bytes``).
      bytes_received: Bytes read from the stream (frames and their headers;
          above TLS, the decrypted bytes).
      bytes_sent: Bytes of the frames written whole to the stream.
    """

    messages_sent: int
    messages_received: int
    buffered_bytes: int
    tasks_waiting_send: int
    aborted: bool
    held_bytes: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


class ChannelState:
    """A channel's attributes and shared helpers (a private base of :class:`~trionet.MessageChannel`)."""

    # A server holds one channel per connection: slots keep each one small. The
    # classes above add none (``__slots__ = ()``), so no instance has a __dict__.
    __slots__ = (
        "_abort_timeout",
        "_aborted",
        "_activity",
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_codec",
        "_decoder",
        "_detached",
        "_ending",
        "_eof_received",
        "_eof_sent",
        "_first_byte_scope",
        "_frame_deadline",
        "_frame_timeout",
        "_last_feed_at",
        "_messages_received",
        "_messages_sent",
        "_partial_offset",
        "_raw",
        "_read_size",
        "_receive_failure",
        "_receiving",
        "_send_waiters",
        "_sending",
        "_socket",
        "_stream",
        "_tls",
        "_waiting_first_byte",
    )

    # Set, and explained, by MessageChannel.__init__.
    _abort_timeout: float
    _aborted: trio.BrokenResourceError | None
    _activity: ActivityTracker | None
    _bytes_received: int
    _bytes_sent: int
    _closed: bool
    _codec: Codec[Any]
    _detached: bool
    _decoder: Decoder[Any]
    _ending: bool
    _eof_received: bool
    _eof_sent: bool
    _first_byte_scope: trio.CancelScope | None
    _frame_deadline: float
    _frame_timeout: float | None
    _last_feed_at: float
    _messages_received: int
    _messages_sent: int
    _partial_offset: int
    _raw: _stdlib_socket.socket | None
    _read_size: int
    _receive_failure: FrameTimeout | None
    _receiving: bool
    _send_waiters: trio.lowlevel.ParkingLot | None
    _sending: bool
    _socket: trio.socket.SocketType | None
    _stream: trio.abc.Stream
    _tls: RecordClock | None
    _waiting_first_byte: bool

    # ------------------------------------------------------------------ receiving

    def _check_receive_state(self) -> None:
        if self._receive_failure is not None:
            raise self._receive_failure
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self._aborted is not None:
            raise trio.BrokenResourceError("the channel was aborted") from self._aborted
        if self._eof_received:
            if self._decoder.buffered:
                raise IncompleteFrame(self._decoder.buffered)
            raise trio.EndOfChannel

    def _readable_now(self) -> bool:
        # Whether the socket under the stream (also under TLS) has bytes or an end
        # to read; False where the stream cannot tell (memory streams).
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
            if self._tls is not None and stream is self._tls:
                stream = self._tls.inner
        if isinstance(stream, trio.SocketStream):
            return stream.socket.is_readable()
        return False

    # -------------------------------------------------------------------- sending

    async def _acquire_sender(self) -> bool:
        # Take the sending side; True if that took a schedule point. Must be
        # followed by try/finally: _release_sender() (KI-protected callers only).
        if self._sending:
            # Queued behind another sender: cancellable, and nothing is written.
            # The sender ahead hands the ownership over when it leaves, so the
            # woken task owns the channel even if it is cancelled meanwhile.
            if self._send_waiters is None:
                self._send_waiters = trio.lowlevel.ParkingLot()
            await self._send_waiters.park()
            return True
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        return False

    def _release_sender(self) -> None:
        if self._send_waiters:  # None or empty: nobody waits
            self._send_waiters.unpark()  # handed over: _sending stays True
        else:
            self._sending = False

    def _check_send_state(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self._aborted is not None:
            raise trio.BrokenResourceError("the channel was aborted") from self._aborted
        if self._eof_sent:
            raise trio.ClosedResourceError("cannot send after send_eof()")

    async def _abort(self, progress: str) -> None:
        self._aborted = trio.BrokenResourceError(
            f"a frame could not be finished within abort_timeout={self._abort_timeout}s "
            f"after its sender was cancelled ({progress}); the channel was aborted"
        )
        if self._socket is not None and self._socket.type == _stdlib_socket.SOCK_STREAM:
            # A Unix socket refuses SO_LINGER; then it closes plainly.
            with contextlib.suppress(OSError):
                self._socket.setsockopt(
                    _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_LINGER, _LINGER_ABORT
                )
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)
        raise self._aborted

    # -------------------------------------------------------------------- switching

    def detach(self) -> tuple[trio.abc.Stream, bytes]:
        """Stop framing, and give back the stream with the bytes read but not delivered.

        For a protocol switch (after a PROXY protocol line, an HTTP ``Upgrade``
        or a STARTTLS command read as messages): bytes that came with the last
        message are in the channel, not the stream, and come before anything
        the stream delivers next. ``stream, early = channel.detach()``.

        Returns:
          The stream, now the caller's (the channel is closed, the stream is
          not), and the bytes received that no :meth:`receive` returned.

        Raises:
          trio.BusyResourceError: A receive or send is in progress.
          trio.ClosedResourceError: The channel was closed or detached.
          TypeError: The codec's decoder cannot give its bytes back (it has no
              ``take_buffered()``; every built-in decoder has).
          FramingError: The decoder had failed (the bytes are gone).
        """
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self._receiving or self._sending:
            raise trio.BusyResourceError("a receive or send is in progress on the channel")
        take = getattr(self._decoder, "take_buffered", None)
        if take is None:
            raise TypeError(f"{type(self._decoder).__name__} cannot give back its buffered "
                            "bytes: it has no take_buffered()")
        data: bytes = take()
        self._closed = self._detached = True
        return self._stream, data
