"""MessageChannel: whole messages over any trio stream, with cancellation-safe framing.

The public surface. The paths a message takes are private bases, a module
each (``channel_socket.py`` and those below it: see ``channel_state.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast, final, overload

import trio

from .._sansio.codecs import Buffer, Codec, LengthPrefixed
from .._sansio.framing import FrameT
from ..errors import FramingError
from .activity import ActivityTracker, RecordClock
from .channel_socket import ChannelSocketPaths
from .channel_state import DEFAULT_ABORT_TIMEOUT, DEFAULT_READ_SIZE, MessageChannelStatistics
from .trio_compat import stdlib_socket_of

__all__ = ["DEFAULT_ABORT_TIMEOUT", "DEFAULT_READ_SIZE", "MessageChannel", "MessageChannelStatistics"]

@final
class MessageChannel(ChannelSocketPaths, trio.abc.Channel[FrameT]):
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
      activity: An :class:`~trionet.ActivityTracker` told when bytes move (for
          a server's ``idle_timeout``). If it is also the transport under an
          :class:`trio.SSLStream` and follows TLS records, ``frame_timeout``
          counts from the first byte of the record that starts a frame.

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

    # A server holds one channel per connection: slots keep each one small. They
    # are declared, with their types, on ChannelState (channel_state.py).
    __slots__ = ()

    def __init__(
        self,
        stream: trio.abc.Stream,
        codec: Codec[FrameT] | None = None,
        *,
        read_size: int = DEFAULT_READ_SIZE,
        abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
        frame_timeout: float | None = None,
        activity: ActivityTracker | None = None,
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
        self._codec = codec if codec is not None else LengthPrefixed()
        self._decoder = self._codec.decoder()
        self._read_size = read_size
        self._abort_timeout = float(abort_timeout)
        self._frame_timeout = frame_timeout
        # For frame_timeout: where in the stream the unfinished frame starts, the
        # moment it must be complete by, and when bytes were last read.
        self._partial_offset = -1
        self._frame_deadline = math.inf
        self._last_feed_at = 0.0
        self._receive_failure = None
        # Told of every byte that moves (a server's idle timer reads it). When it
        # is also the transport right under an SSLStream, it follows the TLS
        # records (a RecordClock): a record trickled byte by byte then counts as
        # a started frame, and application bytes are the progress reported.
        self._activity = activity
        self._tls = None
        if activity is not None and isinstance(stream, trio.SSLStream) and (
            stream.transport_stream is activity
        ):
            self._tls = cast(RecordClock, activity)
        # Writing through the socket tells us exactly how many bytes left; see
        # _write_socket. trio.SocketStream is final, so the check is exact.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
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
        self._send_waiters = None
        self._receiving = False
        # end_when_idle(): set once; a receive waiting for a frame's first byte is
        # woken through _waiting_first_byte (fast path: notify_closing) or
        # _first_byte_scope (other streams: the scope is cancelled).
        self._ending = False
        self._waiting_first_byte = False
        self._first_byte_scope = None
        self._closed = False
        self._detached = False
        self._eof_received = False
        self._eof_sent = False
        self._aborted = None
        self._messages_sent = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._messages_received = 0

    @property
    def stream(self) -> trio.abc.Stream:
        """The stream the channel reads and writes."""
        return self._stream

    @property
    def codec(self) -> Codec[FrameT]:
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
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
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
    async def receive(self) -> FrameT:
        """Return the next whole message.

        Returns:
          The next frame's message: its payload, or what a typed codec decoded.

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
            frame: FrameT | None = self._decoder.next_frame()
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

    def receive_nowait(self) -> FrameT:
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
        frame: FrameT | None = self._decoder.next_frame()
        if frame is None:
            self._check_receive_state()
            if self._ending and not self._decoder.buffered and not self._readable_now():
                raise trio.EndOfChannel
            raise trio.WouldBlock
        self._messages_received += 1
        return frame

    async def receive_many(self, max_count: int | None = None) -> list[FrameT]:
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

    # -------------------------------------------------------------------- sending

    @overload
    async def send(self: MessageChannel[bytes], value: Buffer) -> None: ...
    @overload
    async def send(self, value: FrameT) -> None: ...
    @trio.lowlevel.enable_ki_protection
    async def send(self, value: Any) -> None:
        """Send one message as one frame.

        Args:
          value: The message: :class:`bytes`, :class:`bytearray` or
              :class:`memoryview`, or what a typed codec encodes.

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
            sent_len = len(data)
            if sent != sent_len:
                await self._finish_raw_frame(sock, data, sent)  # has waited: scheduled
                self._messages_sent += 1
                self._bytes_sent += sent_len
                return
            self._messages_sent += 1
            self._bytes_sent += sent_len
        finally:
            self._release_sender()
        await trio.lowlevel.cancel_shielded_checkpoint()

    @overload
    async def send_many(self: MessageChannel[bytes], values: Iterable[Buffer]) -> None: ...
    @overload
    async def send_many(self, values: Iterable[FrameT]) -> None: ...
    @trio.lowlevel.enable_ki_protection
    async def send_many(self, values: Iterable[Any]) -> None:
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
        """Close the channel and its stream (after :meth:`detach`, the stream is the caller's).

        Calls in progress in other tasks raise :exc:`trio.ClosedResourceError`. A
        frame being written by another task at that moment is cut short: the peer
        sees the stream end in the middle of a frame (:exc:`~trionet.IncompleteFrame`).
        Closing twice does nothing the second time.

        Cancellation:
          Like :meth:`trio.abc.AsyncResource.aclose`: even if cancelled, the channel
          and its stream are closed.
        """
        self._closed = True
        if self._detached:
            await trio.lowlevel.checkpoint()
            return
        await self._stream.aclose()
