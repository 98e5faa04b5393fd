"""A MessageChannel's ``frame_timeout``: a started frame must be complete in time.

The receive paths (``channel_stream.py``, ``channel_socket.py``) call
``_within_frame_timeout`` around a wait for more bytes of a started frame;
under a server's TLS, ``_receive_first_bytes_tls`` also bounds the wait for
a frame whose TLS record has started (issue 15.3).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..errors import FrameTimeout
from .activity import FrameLate, RecordClock
from .channel_state import ChannelState

__all__ = ["ChannelFrameTimeout"]

_T = TypeVar("_T")


class ChannelFrameTimeout(ChannelState):
    """The frame deadline of a :class:`~trionet.MessageChannel` (a private base of it)."""

    __slots__ = ()

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

    async def _receive_first_bytes_tls(self, tls: RecordClock) -> bytes | bytearray:
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

    def _frame_timed_out(self) -> FrameTimeout:
        assert self._frame_timeout is not None
        self._receive_failure = FrameTimeout(self._frame_timeout, self._decoder.buffered)
        return self._receive_failure
