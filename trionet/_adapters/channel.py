"""MessageChannel: whole messages over any trio stream, with cancellation-safe framing."""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import socket as _stdlib_socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, TypeVar, final

import trio

from .._sansio.codecs import Buffer, Codec, Decoder, LengthPrefixed
from ..errors import FrameTimeout, FramingError, IncompleteFrame
from .idle import FrameLate, IdleTrackingStream, TLSRecordStream
from .trio_compat import stdlib_socket_of

__all__ = ["MessageChannel", "MessageChannelStatistics"]

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

_T = TypeVar("_T")

# What trio's SocketStream maps to ClosedResourceError (trio/_highlevel_socket.py,
# _closed_stream_errnos); every other OSError is a BrokenResourceError.
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})


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
    """

    messages_sent: int
    messages_received: int
    buffered_bytes: int
    tasks_waiting_send: int
    aborted: bool
    held_bytes: int = 0


@final
class MessageChannel(trio.abc.Channel[bytes]):
    """Whole messages over a :class:`trio.abc.Stream`, framed by a codec.

    A :class:`trio.abc.Channel` of :class:`bytes`: each :meth:`send` puts one
    frame on the stream, each :meth:`receive` returns one. It works over any
    stream: :class:`trio.SocketStream`, :class:`trio.SSLStream`, the
    :mod:`trio.testing` memory streams, and the virtual network's sockets.

    Example::

        async with MessageChannel(await trio.open_tcp_stream("127.0.0.1", port)) as channel:
            await channel.send(b"hello")
            reply = await channel.receive()

    Args:
      stream: The stream to frame. The channel owns it from now on: do not use it
          directly while the channel is in use, and :meth:`aclose` closes it.
      codec: How messages are framed; :class:`~trionet.LengthPrefixed` (4-byte big
          endian length, 8 MiB limit) when omitted.
      read_size: How many bytes each read asks the stream for. Many frames are
          parsed from one read.
      abort_timeout: Seconds a started frame may take to finish after its sender is
          cancelled (see "Cancellation" below). ``math.inf`` waits for ever.
      frame_timeout: If given, a frame must be complete this many seconds after
          the channel read its first byte (wall clock, whether or not a
          :meth:`receive` is waiting meanwhile), else :meth:`receive` raises
          :exc:`~trionet.FrameTimeout`. Only a wait for more bytes is ever cut,
          and only when nothing is readable: bytes that arrived while the
          caller was busy are read first and complete the frame if they can.
          Waiting between frames is not limited (use an idle timeout, or a
          cancel scope, for that). It sheds peers that trickle bytes to hold a
          connection open. (On a server's TLS connection, the bytes of a TLS
          record not yet whole count as a started frame.) ``None`` (the
          default for a channel of your own): no limit.

    Cancellation:
      Both directions are safe to cancel, which ``send_all`` on a trio stream is
      not (a cancelled ``send_all`` leaves an unknown prefix of the data on the wire).

      * :meth:`receive`: a cancelled receive loses nothing. The bytes read so far
        stay buffered in the channel and the next :meth:`receive` continues the
        same frame.
      * :meth:`send` and :meth:`send_many`: if the call raises
        :exc:`trio.Cancelled`, no byte of the message was written, and the channel
        is still usable. If it returns, every byte was written. Once the first byte
        of a frame is on the wire the frame is finished even when the caller is
        cancelled meanwhile; the call then returns, and the cancellation is
        delivered at the caller's next checkpoint. If the peer does not accept the
        rest of the frame within ``abort_timeout`` seconds of the cancellation, the
        channel aborts the stream (a TCP reset where the stream is a socket) and
        raises :exc:`trio.BrokenResourceError`: the peer sees an error, never half a
        frame followed by another frame.

      On a :class:`trio.SocketStream` the channel writes through the socket and
      knows exactly when the first byte leaves. Other streams (TLS, memory streams)
      cannot report partial writes, so there a frame counts as started once the
      stream reports that it can take data (``wait_send_all_might_not_block``) and
      the channel hands the frame to it; a cancellation after that point is handled
      as above. (A shielded write cannot see its caller's cancellation, so on these
      streams each send runs a short-lived watcher task inside the call.)

      Each :meth:`send` and :meth:`receive` is one trio checkpoint. On a
      :class:`trio.SocketStream` it is also exactly one schedule point when the
      call does not have to wait (docs/design/fast-path.rst): a cancellation can
      take effect only before anything happened.

    Graceful shutdown:
      :meth:`end_when_idle` ends the receiving direction at the next frame
      boundary: a :meth:`receive` waiting for a new frame raises
      :exc:`trio.EndOfChannel`, one in the middle of a frame finishes it first.
      Servers call it on their connections' channels when a graceful shutdown
      begins, so that idle connections close at once and busy ones finish.

    Error handling:
      A frame the peer announces larger than the codec's ``max_size`` raises
      :exc:`~trionet.FrameTooLarge` before its payload is buffered; bytes that break
      the wire format raise :exc:`~trionet.ProtocolError`. Frames that arrived
      complete before the bad bytes are returned first; after that the error is
      raised by every receive. The end of the stream at a frame boundary raises
      :exc:`trio.EndOfChannel`; in the middle of a frame,
      :exc:`~trionet.IncompleteFrame` (a :exc:`trio.BrokenResourceError`).
    """

    # A server holds one channel per connection: slots keep each one small.
    __slots__ = (
        "_abort_timeout",
        "_aborted",
        "_activity",
        "_closed",
        "_codec",
        "_decoder",
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

    def __init__(
        self,
        stream: trio.abc.Stream,
        codec: Codec | None = None,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
        frame_timeout: float | None = None,
    ) -> None:
        if not isinstance(stream, trio.abc.Stream):
            raise TypeError(f"MessageChannel needs a trio.abc.Stream, not {type(stream).__name__}")
        if read_size < 1:
            raise ValueError(f"read_size must be at least 1, not {read_size}")
        if not abort_timeout > 0:
            raise ValueError(f"abort_timeout must be positive, not {abort_timeout}")
        if frame_timeout is not None and not frame_timeout > 0:
            raise ValueError(f"frame_timeout must be positive or None, not {frame_timeout}")
        self._stream = stream
        self._codec: Codec = codec if codec is not None else LengthPrefixed()
        self._decoder: Decoder = self._codec.decoder()
        self._read_size = read_size
        self._abort_timeout = float(abort_timeout)
        self._frame_timeout = frame_timeout
        # For frame_timeout: where in the stream the unfinished frame starts, the
        # moment it must be complete by, and when bytes were last read.
        self._partial_offset = -1
        self._frame_deadline = math.inf
        self._last_feed_at = 0.0
        self._receive_failure: FrameTimeout | None = None
        # A server's TLS connection: the transport under the SSLStream follows the
        # TLS records, so that a record trickled byte by byte counts as a started
        # frame, and this channel reports application bytes as progress.
        self._tls: TLSRecordStream | None = None
        if isinstance(stream, trio.SSLStream) and isinstance(stream.transport_stream, TLSRecordStream):
            self._tls = stream.transport_stream
        # Writing through the socket tells us exactly how many bytes left; see
        # _write_socket. trio.SocketStream is final, so the check is exact. A
        # server's idle-timeout wrapper is seen through, and told of each write.
        self._activity: IdleTrackingStream | TLSRecordStream | None = (
            stream if isinstance(stream, IdleTrackingStream) else self._tls
        )
        inner = stream.inner if isinstance(stream, IdleTrackingStream) else stream
        self._socket = inner.socket if isinstance(inner, trio.SocketStream) else None
        # The fast path (docs/design/fast-path.rst) calls the stdlib socket under a
        # trio socket directly; None for the virtual network's sockets, which keep
        # the trio-socket path above.
        self._raw = stdlib_socket_of(self._socket) if self._socket is not None else None
        # Send ownership: the task that set _sending owns the stream's sending
        # side; later senders park here and are handed the ownership in FIFO
        # order, as trio's StrictFIFOLock does, without its two checkpoints.
        self._sending = False
        # Created by the first sender that has to wait: most channels never need
        # one, and a server holds a channel per connection.
        self._send_waiters: trio.lowlevel.ParkingLot | None = None
        self._receiving = False
        # end_when_idle(): set once; a receive waiting for a frame's first byte is
        # woken through _waiting_first_byte (fast path: notify_closing) or
        # _first_byte_scope (other streams: the scope is cancelled).
        self._ending = False
        self._waiting_first_byte = False
        self._first_byte_scope: trio.CancelScope | None = None
        self._closed = False
        self._eof_received = False
        self._eof_sent = False
        self._aborted: trio.BrokenResourceError | None = None
        self._messages_sent = 0
        self._messages_received = 0

    @property
    def stream(self) -> trio.abc.Stream:
        """The stream the channel reads and writes."""
        return self._stream

    @property
    def codec(self) -> Codec:
        """The codec that frames messages."""
        return self._codec

    def statistics(self) -> MessageChannelStatistics:
        """Return a :class:`MessageChannelStatistics` snapshot of the channel."""
        decoder = self._decoder
        return MessageChannelStatistics(
            messages_sent=self._messages_sent,
            messages_received=self._messages_received,
            buffered_bytes=decoder.buffered,
            tasks_waiting_send=len(self._send_waiters) if self._send_waiters is not None else 0,
            aborted=self._aborted is not None,
            held_bytes=getattr(decoder, "held", decoder.buffered),
        )

    def end_when_idle(self) -> None:
        """End the receiving direction at the next frame boundary (graceful shutdown).

        From now on a :meth:`receive` that has nothing of a frame buffered and
        nothing readable right now raises :exc:`trio.EndOfChannel` instead of
        waiting, and a :meth:`receive` waiting at this moment for a frame's first
        byte is woken and raises it. A receive with part of a frame buffered keeps
        waiting until the frame is complete, and bytes that already arrived (on a
        socket: readable in the kernel) are still read and delivered first. On
        streams that cannot tell whether bytes are waiting (memory streams, custom
        streams), only frames already buffered in the channel are delivered.
        Sending is not affected, so a handler can still answer and say goodbye.

        Calling it again does nothing. Call it from a task in the channel's trio
        run (it is synchronous and never blocks).

        Graceful shutdown:
          A server calls this on every connection's channel when its shutdown
          begins: handlers waiting for the next request see the end of the
          channel at once and return, handlers in the middle of a request finish
          it within the shutdown grace.
        """
        if self._ending:
            return
        self._ending = True
        if self._waiting_first_byte:
            assert self._raw is not None
            # Wakes the wait_readable() of _wait_readable_raw with
            # ClosedResourceError without closing anything; see there.
            trio.lowlevel.notify_closing(self._raw)
        elif self._first_byte_scope is not None:
            self._first_byte_scope.cancel()

    # ------------------------------------------------------------------ receiving

    @trio.lowlevel.enable_ki_protection
    async def receive(self) -> bytes:
        """Return the next whole message.

        Returns:
          The payload of the next frame.

        Raises:
          trio.EndOfChannel: The stream ended at a frame boundary.
          IncompleteFrame: The stream ended in the middle of a frame.
          FrameTooLarge: The next frame exceeds the codec's ``max_size``.
          ProtocolError: The peer broke the codec's wire format.
          trio.BusyResourceError: Another task is already receiving.
          trio.ClosedResourceError: The channel was closed.
          trio.BrokenResourceError: The stream broke (for example a reset), or
              the channel aborted it.

        Cancellation:
          Nothing is lost. Bytes already read stay buffered in the channel, and
          the next call continues the same frame.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the channel was closed")
            frame = self._decoder.next_frame()
            if frame is not None:
                # A frame was buffered: finish the checkpoint without a chance of
                # losing it to a cancellation (trio's memory channels do the same).
                await trio.lowlevel.cancel_shielded_checkpoint()
            elif self._raw is not None:
                frame = await self._read_frame_raw(self._raw)
            else:
                frame = await self._read_frame()
            self._messages_received += 1
            return frame
        finally:
            self._receiving = False

    def receive_nowait(self) -> bytes:
        """Return the next message if it is already buffered, without waiting.

        Returns:
          The payload of the next frame.

        Raises:
          trio.WouldBlock: No whole frame is buffered; :meth:`receive` would wait.
          trio.EndOfChannel: After :meth:`end_when_idle`, when :meth:`receive`
              would end the channel instead of waiting: nothing of a frame is
              buffered and nothing is readable.
          The same as :meth:`receive` otherwise.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        frame = self._decoder.next_frame()
        if frame is None:
            self._check_receive_state()
            if self._ending and not self._decoder.buffered and not self._readable_now():
                raise trio.EndOfChannel
            raise trio.WouldBlock
        self._messages_received += 1
        return frame

    async def receive_many(self, max_count: int | None = None) -> list[bytes]:
        """Return every message already buffered, waiting for at least one.

        One checkpoint for many messages: where a peer sends bursts of small
        frames, this delivers each burst at the cost of one :meth:`receive`.

        Args:
          max_count: Return at most this many messages; the rest stay buffered.

        Returns:
          One or more payloads, in order.

        Raises:
          The same as :meth:`receive`. An error found after the first message is
          raised by the next call, once the messages before it are delivered.

        Cancellation:
          As for :meth:`receive`: if cancelled, nothing is lost.
        """
        if max_count is not None and max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        frames = [await self.receive()]
        limit = max_count if max_count is not None else -1
        next_frame = self._decoder.next_frame
        while len(frames) != limit:
            try:
                frame = next_frame()
            except FramingError:
                break  # Sticky: the next receive raises it, after these frames.
            if frame is None:
                break
            frames.append(frame)
        self._messages_received += len(frames) - 1
        return frames

    async def _read_frame_raw(self, sock: _stdlib_socket.socket) -> bytes:
        # The fast path (docs/design/fast-path.rst): read the stdlib socket
        # directly and wait only when it has nothing, so a receive that finds its
        # bytes already in the kernel costs one schedule point (the shielded one
        # below), and one that waited costs no more than the wait. Bytes read are
        # fed to the decoder before any yield: a cancellation loses nothing.
        scheduled = False
        try:
            while True:
                try:
                    frame = self._read_raw_nowait(sock)
                except BlockingIOError:
                    frame = None
                    would_block = True
                else:
                    would_block = False
                if would_block:
                    # Waited for outside the except clause: an exception being
                    # handled stays alive, with its traceback, for as long as
                    # the clause runs (545 bytes per idle connection).
                    if self._ending and not self._decoder.buffered:
                        raise trio.EndOfChannel
                    await self._wait_readable_raw(sock)
                    scheduled = True
                    continue
                if frame is not None:
                    break
        except Exception:
            # Errors are checkpoints too, as trio's own socket calls make them.
            if not scheduled:
                await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return frame

    def _read_raw_nowait(self, sock: _stdlib_socket.socket) -> bytes | None:
        self._check_receive_state()
        try:
            data = sock.recv(self._read_size)
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError("the stream was closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if data:
            if self._activity is not None or self._frame_timeout is not None:
                now = trio.current_time()
                if self._activity is not None:
                    self._activity.last_activity = now
                self._last_feed_at = now
        else:
            self._eof_received = True
            self._check_receive_state()
        decoder = self._decoder
        decoder.feed(data)
        return decoder.next_frame()

    async def _wait_readable_raw(self, sock: _stdlib_socket.socket) -> None:
        try:
            if self._decoder.buffered:
                if self._frame_timeout is None:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await self._within_frame_timeout(functools.partial(trio.lowlevel.wait_readable, sock))
                return
            self._waiting_first_byte = True
            try:
                await trio.lowlevel.wait_readable(sock)
            finally:
                self._waiting_first_byte = False
        except trio.ClosedResourceError as exc:
            # Either aclose() (ours or the stream's) closed the socket, or
            # end_when_idle() woke this wait with notify_closing() and the socket
            # is still open: then return, and the caller reads what is readable
            # and ends the channel if there is nothing.
            if self._aborted is not None:
                raise trio.BrokenResourceError("the channel was aborted") from exc
            if self._closed or sock.fileno() == -1 or not self._ending:
                raise

    async def _read_frame(self) -> bytes:
        decoder = self._decoder
        while True:
            self._check_receive_state()
            try:
                if not decoder.buffered:
                    data = await self._receive_first_bytes()
                elif self._frame_timeout is None:
                    data = await self._stream.receive_some(self._read_size)
                else:
                    data = await self._within_frame_timeout(
                        functools.partial(self._stream.receive_some, self._read_size)
                    )
            except trio.ClosedResourceError as exc:
                if self._aborted is not None:
                    raise trio.BrokenResourceError("the channel was aborted") from exc
                raise
            if not data:
                self._eof_received = True
                self._check_receive_state()
            elif self._tls is not None or self._frame_timeout is not None:
                now = trio.current_time()
                if self._tls is not None:
                    self._tls.last_activity = now  # application bytes: progress
                self._last_feed_at = now
            decoder.feed(data)
            frame = decoder.next_frame()
            if frame is not None:
                return frame

    async def _receive_first_bytes(self) -> bytes | bytearray:
        # Waiting for a new frame is where end_when_idle() may end a receive on a
        # stream other than a plain socket: the wait runs in a scope it cancels.
        # (A CancelScope costs about a schedule point, which the fast path avoids
        # with notify_closing() instead.)
        if self._ending and not self._readable_now():
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        tls = self._tls if self._frame_timeout is not None else None
        if tls is not None:
            return await self._receive_first_bytes_tls(tls)
        with trio.CancelScope() as scope:
            self._first_byte_scope = scope
            try:
                return await self._stream.receive_some(self._read_size)
            finally:
                self._first_byte_scope = None
        raise trio.EndOfChannel

    async def _receive_first_bytes_tls(self, tls: TLSRecordStream) -> bytes | bytearray:
        # Under TLS the first byte of a frame is preceded by the first byte of
        # the record that carries it, and a record can be trickled for ever
        # without a byte reaching us. The transport arms the frame's deadline
        # when a record starts (or has started: its first byte came with the
        # previous frame), and cuts a wait that would pass it (issue 15.3).
        timeout = self._frame_timeout
        assert timeout is not None
        armed = math.inf
        with trio.CancelScope() as scope:
            self._first_byte_scope = scope
            tls.arm_after = timeout
            if tls.partial_since is not None:
                tls.frame_deadline = tls.partial_since + timeout
            try:
                data = await self._stream.receive_some(self._read_size)
            except FrameLate:
                raise self._frame_timed_out() from None
            finally:
                self._first_byte_scope = None
                armed = tls.frame_deadline
                tls.arm_after = None
                tls.frame_deadline = math.inf
            if data:
                # The frame that begins here started when its record did.
                self._partial_offset = self._decoder.offset
                self._frame_deadline = armed if armed != math.inf else trio.current_time() + timeout
            return data
        raise trio.EndOfChannel

    def _readable_now(self) -> bool:
        # Whether the socket under the stream (also under TLS) has bytes or an end
        # to read; False where the stream cannot tell (memory streams).
        stream = self._stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if isinstance(stream, (IdleTrackingStream, TLSRecordStream)):
            stream = stream.inner
        if isinstance(stream, trio.SocketStream):
            return stream.socket.is_readable()
        return False

    async def _within_frame_timeout(self, wait: Callable[[], Awaitable[_T]]) -> _T:
        # A started frame must be complete frame_timeout after its first byte was
        # read (wall clock: also while the handler is elsewhere). Only a wait is
        # ever cut, and only when nothing is readable: bytes that arrived while a
        # slow handler was busy are read first, so they cannot shed a good peer.
        timeout = self._frame_timeout
        assert timeout is not None
        decoder = self._decoder
        if decoder.offset != self._partial_offset:
            # A new frame: its first bytes came with the last read.
            self._partial_offset = decoder.offset
            self._frame_deadline = self._last_feed_at + timeout
        deadline = self._frame_deadline
        tls = self._tls
        if tls is not None:
            # The transport under TLS cuts the waits, also those inside one record.
            tls.frame_deadline = deadline
            try:
                return await wait()
            except FrameLate:
                pass
            finally:
                tls.frame_deadline = math.inf
        else:
            if trio.current_time() >= deadline and self._readable_now():
                return await wait()
            with trio.move_on_at(deadline):
                return await wait()
        raise self._frame_timed_out()

    def _frame_timed_out(self) -> FrameTimeout:
        assert self._frame_timeout is not None
        self._receive_failure = FrameTimeout(self._frame_timeout, self._decoder.buffered)
        return self._receive_failure

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

    # -------------------------------------------------------------------- sending

    @trio.lowlevel.enable_ki_protection
    async def send(self, value: Buffer) -> None:
        """Send one message as one frame.

        Args:
          value: The message (:class:`bytes`, :class:`bytearray` or
              :class:`memoryview`).

        Raises:
          FrameTooLarge: The message exceeds the codec's ``max_size``; nothing
              was sent.
          InvalidMessage: The codec cannot carry the message (for example it
              contains the delimiter); nothing was sent.
          trio.ClosedResourceError: The channel was closed, or :meth:`send_eof`
              was called.
          trio.BrokenResourceError: The stream broke, or a started frame could not
              be finished within ``abort_timeout`` after a cancellation.

        Cancellation:
          If this raises :exc:`trio.Cancelled`, nothing was written and the channel
          is still usable. If it returns, the whole frame was written; a
          cancellation that arrived after the first byte left is delivered at the
          caller's next checkpoint. Concurrent senders are served in FIFO order and
          their frames never interleave.
        """
        sock = self._raw
        if sock is None or self._sending:
            await self._write(self._codec.encode(value), 1)
            return
        # The fast path (docs/design/fast-path.rst), inlined: nobody else is
        # sending, so the channel is ours without waiting, and one non-blocking
        # send() usually writes the whole frame. The one schedule point is then
        # the shielded one after it: a cancellation acts only before the first byte.
        await trio.lowlevel.checkpoint_if_cancelled()
        data = self._codec.encode(value)
        self._check_send_state()
        self._sending = True
        try:
            sent = self._send_raw_nowait(sock, data)
            if sent != len(data):
                await self._finish_raw_frame(sock, data, sent)  # has waited: scheduled
                self._messages_sent += 1
                return
            self._messages_sent += 1
        finally:
            self._release_sender()
        await trio.lowlevel.cancel_shielded_checkpoint()

    @trio.lowlevel.enable_ki_protection
    async def send_many(self, values: Iterable[Buffer]) -> None:
        """Send several messages with as few writes as possible.

        All frames are encoded into one buffer and written together: one system
        call for many small messages, where :meth:`send` would make one each.

        Args:
          values: The messages, in order.

        Raises:
          The same as :meth:`send`. An unencodable message raises before anything
          is written.

        Cancellation:
          The batch is one unit: if this raises :exc:`trio.Cancelled` none of the
          messages was written; if it returns, all were.
        """
        messages = values if isinstance(values, (list, tuple)) else list(values)
        await self._write(self._codec.encode_many(messages), len(messages))

    @trio.lowlevel.enable_ki_protection
    async def _write(self, data: bytes | bytearray, count: int) -> None:
        scheduled = await self._acquire_sender()
        try:
            self._check_send_state()
            sock = self._raw
            if sock is not None:
                sent = self._send_raw_nowait(sock, data)
                if sent != len(data):
                    await self._finish_raw_frame(sock, data, sent)
                    scheduled = True
            else:
                scheduled = True
                if self._socket is not None:
                    await self._write_socket(self._socket, data)
                else:
                    await self._write_stream(data)
            self._messages_sent += count
        finally:
            self._release_sender()
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()

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

    def _send_raw_nowait(self, sock: _stdlib_socket.socket, data: Buffer) -> int:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS or sock.fileno() == -1:
                raise trio.ClosedResourceError("the stream was closed") from exc
            self._aborted = trio.BrokenResourceError(f"socket connection broken: {exc}")
            raise self._aborted from exc
        if self._activity is not None:
            self._activity.last_activity = trio.current_time()
        return sent

    async def _wait_writable_raw(self, sock: _stdlib_socket.socket) -> None:
        while True:
            try:
                await trio.lowlevel.wait_writable(sock)
                return
            except trio.ClosedResourceError:
                # end_when_idle() wakes the socket's waiters with notify_closing()
                # without closing it: then wait again.
                if self._closed or sock.fileno() == -1:
                    raise

    async def _finish_raw_frame(self, sock: _stdlib_socket.socket, data: Buffer, sent: int) -> None:
        # The socket did not take the whole frame at once: the slow path, with
        # the semantics of _write_socket_frame below. Until the first byte is out
        # a cancellation means nothing was sent; after it, the frame is finished
        # under a shield, bounded by abort_timeout.
        activity = self._activity
        if activity is not None:
            activity.sending += 1
        try:
            with memoryview(data) as view:
                total = len(view)
                while not sent:
                    await self._wait_writable_raw(sock)
                    sent = self._send_raw_nowait(sock, view)
                try:
                    while sent < total:
                        await self._wait_writable_raw(sock)
                        sent += self._send_raw_nowait(sock, view[sent:])
                    return
                except trio.Cancelled:
                    # The frame has started: finish it below. The caller's scope
                    # stays cancelled, so its next checkpoint raises Cancelled again.
                    pass
                with trio.move_on_after(self._abort_timeout, shield=True):
                    while sent < total:
                        await self._wait_writable_raw(sock)
                        sent += self._send_raw_nowait(sock, view[sent:])
                if sent < total:
                    await self._abort(f"{sent} of {total} bytes were written")
        finally:
            if activity is not None:
                activity.sending -= 1

    def _check_send_state(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self._aborted is not None:
            raise trio.BrokenResourceError("the channel was aborted") from self._aborted
        if self._eof_sent:
            raise trio.ClosedResourceError("cannot send after send_eof()")

    async def _write_socket(self, sock: trio.socket.SocketType, data: bytes | bytearray) -> None:
        # trio's socket methods have exact cancellation semantics: a send() that
        # raises Cancelled sent nothing, and one that returns reports how much it
        # sent. So the first call is the only point at which a cancellation may
        # take effect, and after it we know precisely how much of the frame is out.
        activity = self._activity
        if activity is not None:
            activity.last_activity = trio.current_time()
            activity.sending += 1
        try:
            await self._write_socket_frame(sock, data)
        finally:
            if activity is not None:
                activity.sending -= 1

    async def _write_socket_frame(self, sock: trio.socket.SocketType, data: bytes | bytearray) -> None:
        with memoryview(data) as view:
            total = len(view)
            sent = await self._socket_send(sock, view)
            if sent == total:
                return
            try:
                while sent < total:
                    sent += await self._socket_send(sock, view[sent:])
                return
            except trio.Cancelled:
                # The frame has started: finish it below. The caller's scope stays
                # cancelled, so the next checkpoint raises Cancelled again.
                pass
            with trio.move_on_after(self._abort_timeout, shield=True):
                while sent < total:
                    sent += await self._socket_send(sock, view[sent:])
            if sent < total:
                await self._abort(f"{sent} of {total} bytes were written")

    async def _socket_send(self, sock: trio.socket.SocketType, view: memoryview) -> int:
        try:
            sent = await sock.send(view)
            if self._activity is not None:
                self._activity.last_activity = trio.current_time()
            return sent
        except OSError as exc:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("the stream was closed") from exc
            self._aborted = trio.BrokenResourceError(f"socket connection broken: {exc}")
            raise self._aborted from exc

    async def _write_stream(self, data: bytes | bytearray) -> None:
        # A generic stream cannot say how much a cancelled send_all wrote, so the
        # write must not be cancelled at all once it begins. It begins when the
        # stream says it can take data, which we wait for cancellably; from then on
        # the frame counts as started and is written under a shield. A shielded
        # task cannot see its caller's cancellation, so a short-lived watcher task,
        # outside the shield, sees it instead and starts the abort timer.
        stream = self._stream
        await stream.wait_send_all_might_not_block()
        write_scope = trio.CancelScope(shield=True)
        failure: BaseException | None = None

        async def start_abort_timer_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                # Not re-raised: the caller's scope stays cancelled and delivers the
                # cancellation at the caller's next checkpoint, after the frame.
                write_scope.deadline = trio.current_time() + self._abort_timeout

        tls = self._tls  # application bytes leaving are progress (see _read_frame)
        if tls is not None:
            tls.last_activity = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_abort_timer_when_cancelled)
            with write_scope:
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    failure = exc
            nursery.cancel_scope.cancel()
        if tls is not None:
            tls.last_activity = trio.current_time()
        if isinstance(failure, trio.BrokenResourceError):
            self._aborted = failure
        if failure is not None:
            raise failure
        if write_scope.cancelled_caught:
            await self._abort(f"{len(data)} bytes were handed to {type(stream).__name__}")

    async def _abort(self, progress: str) -> None:
        self._aborted = trio.BrokenResourceError(
            f"a frame could not be finished within abort_timeout={self._abort_timeout}s "
            f"after its sender was cancelled ({progress}); the channel was aborted"
        )
        if self._socket is not None and self._socket.type == _stdlib_socket.SOCK_STREAM:
            # A Unix socket refuses SO_LINGER; then it closes plainly.
            with contextlib.suppress(OSError, NotImplementedError):
                self._socket.setsockopt(
                    _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_LINGER, _LINGER_ABORT
                )
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)
        raise self._aborted

    # -------------------------------------------------------------------- closing

    async def send_eof(self) -> None:
        """Close the sending direction; the peer's :meth:`receive` then raises
        :exc:`trio.EndOfChannel` after the frames already sent.

        Only for streams that are :class:`trio.abc.HalfCloseableStream`, such as
        :class:`trio.SocketStream`. Calling it twice does nothing the second time.

        Raises:
          TypeError: The stream cannot half-close.
          trio.ClosedResourceError: The channel was closed.

        Cancellation:
          Waits for a send in progress to finish first; a cancellation while
          waiting leaves the sending direction open.
        """
        stream = self._stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(stream).__name__} cannot half-close: it has no send_eof()")
        await self._send_eof(stream)

    @trio.lowlevel.enable_ki_protection
    async def _send_eof(self, stream: trio.abc.HalfCloseableStream) -> None:
        await self._acquire_sender()
        try:
            if self._closed:
                raise trio.ClosedResourceError("the channel was closed")
            if self._eof_sent:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            await stream.send_eof()
            self._eof_sent = True
        finally:
            self._release_sender()

    async def aclose(self) -> None:
        """Close the channel and its stream.

        Calls in progress in other tasks raise :exc:`trio.ClosedResourceError`. A
        frame being written by another task at that moment is cut short: the peer
        sees the stream end in the middle of a frame (:exc:`~trionet.IncompleteFrame`).
        Closing twice does nothing the second time.

        Cancellation:
          Like :meth:`trio.abc.AsyncResource.aclose`: even if cancelled, the channel
          and its stream are closed.
        """
        self._closed = True
        await self._stream.aclose()
