"""Idle timeouts: notice a connection on which no byte has moved for a while.

A server with ``idle_timeout`` wraps each accepted stream in an
:class:`IdleTrackingStream`, which notes the time of the last byte sent or
received, and runs :func:`wait_idle` in the connection's own nursery. The data
path pays one attribute store per call; the timer is a single sleeping task per
connection that wakes at the earliest moment the connection could have gone
idle, rechecks, and sleeps again if bytes moved meanwhile. Nothing is rescheduled
on each read or write, which is what pushing a cancel scope's deadline forward
would cost.
"""

from __future__ import annotations

from typing import final

import trio

__all__ = ["IdleTrackingStream", "wait_idle"]


@final
class IdleTrackingStream(trio.abc.HalfCloseableStream):
    """A stream that remembers when bytes last moved through it, in either direction.

    Every operation is passed to ``inner`` unchanged. ``last_activity`` is
    :func:`trio.current_time` when the stream was created and is moved forward
    when :meth:`receive_some` returns data and when :meth:`send_all` starts and
    finishes (a send that stays blocked because the peer reads nothing counts as
    idle, so a peer that stops reading is shed too).

    Args:
      inner: The stream to wrap, usually a :class:`trio.SocketStream`.
          :meth:`send_eof` needs it to be a :class:`trio.abc.HalfCloseableStream`.

    Attributes:
      inner: The wrapped stream.
      last_activity: When bytes last moved, on trio's clock.
      sending: Sends in progress (a :class:`~trionet.MessageChannel` writing
          through the socket underneath counts its writes here too).
    """

    __slots__ = ("inner", "last_activity", "sending")

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.last_activity = trio.current_time()
        self.sending = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.last_activity = trio.current_time()
        self.sending += 1
        try:
            await self.inner.send_all(data)
        finally:
            self.sending -= 1
        self.last_activity = trio.current_time()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.last_activity = trio.current_time()
        return data

    async def send_eof(self) -> None:
        inner = self.inner
        if not isinstance(inner, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(inner).__name__} cannot half-close: it has no send_eof()")
        await inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def wait_idle(stream: IdleTrackingStream, period: float) -> None:
    """Return once no byte has moved through ``stream`` for ``period`` seconds.

    It sleeps until ``last_activity + period``; if bytes moved meanwhile it
    sleeps again until the new deadline, so it wakes at most once per
    ``period`` of activity, and returns exactly ``period`` seconds after the
    last byte.

    Args:
      stream: The stream to watch.
      period: Seconds of silence to wait for; positive.

    Cancellation:
      Safe to cancel at any point; it holds nothing.
    """
    while True:
        deadline = stream.last_activity + period
        if trio.current_time() >= deadline:
            await trio.lowlevel.checkpoint()
            return
        await trio.sleep_until(deadline)
