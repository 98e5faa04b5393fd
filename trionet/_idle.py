"""Idle timeouts: notice a connection on which no byte has moved for a while.

A server with ``idle_timeout`` wraps each accepted stream in an
:class:`IdleTrackingStream`, which notes the time of the last byte sent or
received, and watches it with the server's one :class:`IdleTimer`. The data path
pays one attribute store per call; the timer wakes at the earliest moment a
connection could have gone idle, rechecks, and pushes the connection back if
bytes moved meanwhile. Nothing is rescheduled on each read or write, which is
what pushing a cancel scope's deadline forward would cost, and no connection has
a task of its own for it. :func:`wait_idle` is the same rule for one stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final, final

import trio

__all__ = ["IdleEntry", "IdleTimer", "IdleTrackingStream", "wait_idle"]

# Idle connections the timer handles before it lets other tasks run.
_BATCH: Final = 256
# Finished connections left in the heap before it is rebuilt without them (and
# only once they are more than half of it).
_STALE_MIN: Final = 64


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


@final
class IdleEntry:
    """One connection watched by an :class:`IdleTimer`.

    ``deadline`` is the first moment the connection could have been idle for the
    timer's period (``last_activity + period`` when the entry was last pushed);
    it only ever moves later. ``scope``, ``sock`` and ``address`` are the
    server's, for the ``on_idle`` callback. ``done`` marks an entry whose
    connection has finished, dropped from the heap lazily.
    """

    __slots__ = ("address", "deadline", "done", "scope", "sock", "stream")

    def __init__(
        self,
        stream: IdleTrackingStream,
        scope: trio.CancelScope,
        sock: trio.socket.SocketType,
        address: Any,
        deadline: float,
    ) -> None:
        self.stream = stream
        self.scope = scope
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.done = False

    def __lt__(self, other: IdleEntry) -> bool:
        return self.deadline < other.deadline


@final
class IdleTimer:
    """Idle timeouts for every connection of a server, in one task.

    :meth:`run` sleeps until the earliest deadline in a heap of
    :class:`IdleEntry`; when it comes it reads the connection's
    ``last_activity`` again, pushes the entry back if bytes moved meanwhile,
    and otherwise calls ``on_idle(entry)`` exactly ``period`` seconds after the
    last byte. A connection costs one small entry instead of a sleeping task and
    its nursery (issue 14.10: 12.6 KiB a connection with a task each), and the
    data path still pays only the store of a time. Entries of finished
    connections are dropped when they reach the top, or all together once they
    are more than half of the heap (as trio's own deadline heap does).

    Args:
      period: Seconds of silence after which a connection is idle; positive.
      on_idle: Called (synchronously, from :meth:`run`'s task) with the entry of
          each connection that went idle; the entry is out of the heap then.
    """

    __slots__ = ("_heap", "_on_idle", "_period", "_scope", "_stale", "_wakeup")

    def __init__(self, period: float, on_idle: Callable[[IdleEntry], None]) -> None:
        self._period = period
        self._on_idle = on_idle
        self._heap: list[IdleEntry] = []
        self._stale = 0
        self._wakeup: trio.Event | None = None
        self._scope = trio.CancelScope()

    def __len__(self) -> int:
        """Entries in the heap, finished ones not yet dropped included."""
        return len(self._heap)

    def watch(
        self, stream: IdleTrackingStream, scope: trio.CancelScope, sock: trio.socket.SocketType,
        address: Any,
    ) -> IdleEntry:
        """Start watching ``stream``; pass the entry to :meth:`unwatch` when it is done."""
        entry = IdleEntry(stream, scope, sock, address, stream.last_activity + self._period)
        heapq.heappush(self._heap, entry)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()
        return entry

    def unwatch(self, entry: IdleEntry) -> None:
        """Stop watching a connection (it has finished); a no-op once it went idle."""
        if entry.done:
            return
        entry.done = True
        self._stale += 1
        heap = self._heap
        if self._stale > _STALE_MIN and 2 * self._stale > len(heap):
            heap[:] = [item for item in heap if not item.done]
            heapq.heapify(heap)
            self._stale = 0

    def stop(self) -> None:
        """Make :meth:`run` return (at once, or as soon as it starts)."""
        self._scope.cancel()

    async def run(self) -> None:
        """Watch the connections until :meth:`stop`.

        Cancellation:
          Safe to cancel at any point; the entries stay where they are.
        """
        # A new entry (now + period) is never earlier than the first one, and
        # entries only move later: sleeping until the first deadline misses nothing.
        period = self._period
        heap = self._heap
        with self._scope:
            while True:
                if not heap:
                    self._wakeup = wakeup = trio.Event()
                    await wakeup.wait()
                    continue
                now = trio.current_time()
                if heap[0].deadline > now:
                    await trio.sleep_until(heap[0].deadline)
                    continue
                for _ in range(_BATCH):
                    if not heap or heap[0].deadline > now:
                        break
                    entry = heapq.heappop(heap)
                    if entry.done:
                        self._stale -= 1
                        continue
                    deadline = entry.stream.last_activity + period
                    if deadline > now:
                        entry.deadline = deadline
                        heapq.heappush(heap, entry)
                    else:
                        entry.done = True
                        self._on_idle(entry)
                await trio.lowlevel.checkpoint()
