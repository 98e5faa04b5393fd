"""The generic-stream paths of a MessageChannel: TLS, memory streams and custom streams.

A stream that is not a socket cannot say how much a cancelled ``send_all``
wrote, nor whether bytes wait to be read; these paths keep the channel's
contract with what :class:`trio.abc.Stream` offers: a frame starts once the
stream says it can take data, and is then written under a shield, with a
watcher task that arms ``abort_timeout`` when the caller is cancelled.
"""

from __future__ import annotations

import functools
from typing import Any

import trio

from .channel_timeout import ChannelFrameTimeout

__all__ = ["ChannelStreamPaths"]


class ChannelStreamPaths(ChannelFrameTimeout):
    """Framing over any :class:`trio.abc.Stream` (a private base of :class:`~trionet.MessageChannel`)."""

    __slots__ = ()

    # ------------------------------------------------------------------ receiving

    async def _read_frame(self) -> Any:
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
            elif self._activity is not None or self._frame_timeout is not None:
                now = trio.current_time()
                if self._activity is not None:
                    self._activity.last_activity = now  # application bytes: progress
                self._last_feed_at = now
            self._bytes_received += len(data)
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

    # -------------------------------------------------------------------- sending

    async def _write_stream(self, data: bytes | bytearray) -> None:
        # Application bytes leaving are progress (see _read_frame), and a send
        # waiting for the stream (a peer that does not read) is one in progress.
        # A record clock under TLS counts the sends through it itself; another
        # tracker is told here.
        activity = self._activity
        if activity is None:
            await self._write_frame_to_stream(data)
            return
        counted = activity is not self._tls
        activity.last_activity = trio.current_time()
        if counted:
            activity.sending += 1
        try:
            await self._write_frame_to_stream(data)
        finally:
            if counted:
                activity.sending -= 1
            activity.last_activity = trio.current_time()

    async def _write_frame_to_stream(self, data: bytes | bytearray) -> None:
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

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start_abort_timer_when_cancelled)
            with write_scope:
                try:
                    await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    failure = exc
            nursery.cancel_scope.cancel()
        if isinstance(failure, trio.BrokenResourceError):
            self._aborted = failure
        if failure is not None:
            raise failure
        if write_scope.cancelled_caught:
            await self._abort(f"{len(data)} bytes were handed to {type(stream).__name__}")
