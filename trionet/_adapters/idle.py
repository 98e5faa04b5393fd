"""Idle timeouts: notice a connection on which no byte has moved for a while.

A server with ``idle_timeout`` wraps each accepted stream in an
:class:`IdleTrackingStream`, which notes the time of the last byte sent or
received, and watches it with the server's one :class:`IdleTimer`. The data path
pays one attribute store per call; the timer wakes at the earliest moment a
connection could have gone idle, rechecks, and pushes the connection back if
bytes moved meanwhile. Nothing is rescheduled on each read or write, which is
what pushing a cancel scope's deadline forward would cost, and no connection has
a task of its own for it. :func:`wait_idle` is the same rule for one stream.

On Linux, a plain TCP connection needs no wrapper at all: the kernel keeps the
times of the last data segment sent and received (``TCP_INFO``), and
:class:`KernelActivity` reads them when the timer rechecks, so the handler gets
trio's own :class:`trio.SocketStream` and the data path pays nothing (issue 14.10:
a wrapper's ``receive_some`` frame costs 232 bytes per waiting connection).

Under TLS a raw byte is not progress: a peer can trickle one TLS record a byte at a
time, and neither the application nor the channel sees anything until the record is
whole. There the server puts a :class:`TLSRecordStream` under the
:class:`trio.SSLStream` instead: it counts progress in whole TLS records (or lets the
channel above report application bytes), remembers when the incomplete record began,
and bounds the waits for the rest of it when a frame's timeout is armed (issue 15.3).
"""

from __future__ import annotations

import heapq
import math
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Final, Protocol, final

import trio

from .activity import FrameLate
from .tcp_info import LAST_DATA_RECV, LAST_DATA_SENT, TCP_INFO_ACTIVITY_SIZE

__all__ = [
    "ActivityStream",
    "FrameLate",
    "IdleEntry",
    "IdleTimer",
    "IdleTrackingStream",
    "KernelActivity",
    "TLSRecordStream",
    "wait_idle",
]

# Idle connections the timer handles before it lets other tasks run.
_BATCH: Final = 256
# Finished connections left in the heap before it is rebuilt without them (and
# only once they are more than half of it).
_STALE_MIN: Final = 64
# A TLS record starts with a 5-byte header: content type, version (2 bytes), and
# the length of the body (2 bytes, big endian) (RFC 8446 section 5.1; RFC 5246 6.2).
_TLS_HEADER_SIZE: Final = 5


class ActivityStream(Protocol):
    """What :class:`IdleTimer` reads of a watched connection."""

    @property
    def last_activity(self) -> float:
        """When bytes last moved, on trio's clock."""
        ...

    @property
    def sending(self) -> int:
        """Sends in progress (non-zero: the peer may have stopped reading)."""
        ...


@final
class KernelActivity:
    """When data last moved on a TCP socket, read from the kernel (Linux ``TCP_INFO``).

    An :class:`ActivityStream` for :class:`IdleTimer` that wraps nothing: the
    handler uses the socket's own stream, and the time is computed only when
    the timer asks. Data the kernel received counts even if the handler has
    not read it yet; a send stuck behind a peer that reads nothing does not.
    Use :meth:`for_socket`, which says ``None`` where this cannot work.

    Attributes:
      last_activity: When data last moved: the later of the kernel's last data
          segment sent or received, the last time set here, and the last
          answer given (it never goes backwards, though the kernel's clock
          counts whole milliseconds).
      sending: 1 while the kernel holds bytes not yet acknowledged by the peer
          (SIOCOUTQ), else 0: at an idle timeout, a send stuck behind a peer
          that stopped reading.
    """

    __slots__ = ("_since", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._since = trio.current_time()

    @classmethod
    def for_socket(cls, sock: socket.socket | None) -> KernelActivity | None:
        """A :class:`KernelActivity` for ``sock``, or ``None`` to wrap the stream instead.

        ``None`` off Linux, for a socket that is not the system's (the virtual
        network's), and under a clock that is not trio's system clock: the
        kernel's times are real milliseconds, which a ``MockClock`` does not
        follow.
        """
        if sock is None or not sys.platform.startswith("linux"):
            return None
        if type(trio.lowlevel.current_clock()).__name__ != "SystemClock":
            return None
        return cls(sock)

    @property
    def last_activity(self) -> float:
        now = trio.current_time()
        try:
            info = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_ACTIVITY_SIZE)
        except OSError:  # closed meanwhile: nothing moves any more
            return self._since
        if len(info) < TCP_INFO_ACTIVITY_SIZE:  # pragma: no cover - a kernel without these fields
            return now
        sent_ago: int = struct.unpack_from("I", info, LAST_DATA_SENT)[0]
        received_ago: int = struct.unpack_from("I", info, LAST_DATA_RECV)[0]
        # The kernel counts whole milliseconds: a later read may say "1 ms ago"
        # where an earlier one said "0 ms ago", which would move the time back.
        # Kept, so that the answer never goes backwards.
        self._since = max(self._since, now - min(sent_ago, received_ago) / 1000)
        return self._since

    @last_activity.setter
    def last_activity(self, when: float) -> None:
        self._since = max(self._since, when)

    @property
    def sending(self) -> int:
        import fcntl  # Linux only, as this class: imported where it is used
        import termios

        try:
            queued = fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):  # closed meanwhile (fileno() is -1)
            return 0
        return 1 if struct.unpack("i", queued)[0] > 0 else 0


class _ActivityWrapper(trio.abc.HalfCloseableStream):
    """What the two activity-tracking wrappers share: ``inner``, sends, and the calls passed through.

    A send counts as activity when it starts and when it finishes, if
    ``count_records`` (a blocked send is idleness: the peer stopped reading).
    """

    __slots__ = ("count_records", "inner", "last_activity", "sending")

    def __init__(self, inner: trio.abc.Stream, *, count_records: bool = True) -> None:
        self.inner = inner
        self.last_activity = trio.current_time()
        self.sending = 0
        self.count_records = count_records

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        counted = self.count_records
        if counted:
            self.last_activity = trio.current_time()
        self.sending += 1
        try:
            await self.inner.send_all(data)
        finally:
            self.sending -= 1
        if counted:
            self.last_activity = trio.current_time()

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        inner = self.inner
        if not isinstance(inner, trio.abc.HalfCloseableStream):
            raise TypeError(f"{type(inner).__name__} cannot half-close: it has no send_eof()")
        await inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@final
class IdleTrackingStream(_ActivityWrapper):
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

    __slots__ = ()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.last_activity = trio.current_time()
        return data


def _readable_now(stream: trio.abc.Stream) -> bool:
    return isinstance(stream, trio.SocketStream) and stream.socket.is_readable()


@final
class TLSRecordStream(_ActivityWrapper):
    """The transport under a server's :class:`trio.SSLStream`: progress in whole TLS records.

    Passes every operation to ``inner`` and follows the TLS record boundaries in
    the bytes received (5-byte headers announce each record's length; nothing is
    decrypted). Bytes of a record that is not yet whole cannot reach the
    application, so they are not progress:

    * ``last_activity`` moves when a record completes (with ``count_records``),
      and when :meth:`send_all` starts and finishes, as in
      :class:`IdleTrackingStream`. Without ``count_records`` the layer above (a
      :class:`~trionet.MessageChannel`) moves it when application bytes arrive or
      leave, so that only application progress counts.
    * ``partial_since`` is when the first byte of the incomplete record arrived
      (``None`` at a record boundary): for the channel, such bytes are a frame
      that has started.
    * ``frame_deadline``: a wait for more bytes that would pass it raises
      :exc:`FrameLate` (bytes that are already readable are still read).
      ``arm_after``: when set, a record that starts while no deadline is set
      sets ``frame_deadline`` to its first byte's time plus ``arm_after``. The
      channel sets both while it receives.

    A stream that does not begin like a TLS record (an SSLv2-style hello) is
    not followed: every byte received then counts, as before this class.
    """

    __slots__ = (
        "_body_left",
        "_header",
        "arm_after",
        "frame_deadline",
        "partial_since",
    )

    def __init__(self, inner: trio.abc.Stream, *, count_records: bool = True) -> None:
        super().__init__(inner, count_records=count_records)
        self.partial_since: float | None = None
        self.frame_deadline = math.inf
        self.arm_after: float | None = None
        # The header bytes of the record being read (None: not following
        # records), and how many bytes of its body are still to come.
        self._header: bytes | None = b""
        self._body_left = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.arm_after is not None and self.partial_since is None:
            # Armed, and the records so far were whole but brought the layer above
            # nothing (else it would not wait again): no frame has started yet.
            self.frame_deadline = math.inf
        deadline = self.frame_deadline
        if deadline == math.inf or (trio.current_time() >= deadline and _readable_now(self.inner)):
            data = await self.inner.receive_some(max_bytes)
        else:
            with trio.move_on_at(deadline):
                data = await self.inner.receive_some(max_bytes)
                self._advance(data)
                return data
            raise FrameLate
        self._advance(data)
        return data

    def _advance(self, data: bytes | bytearray) -> None:
        if not data:
            return
        was_partial = self.partial_since is not None
        header = self._header
        if header is None:
            completed = True
        elif not header and not self._body_left and data[0] & 0x80:
            # Not a TLS record header (an SSLv2-compatible hello): stop following.
            self._header = None
            self.partial_since = None
            completed = True
        else:
            completed = self._scan(data, header)
        now = trio.current_time()
        if completed and self.count_records:
            self.last_activity = now
        if self._header is None or (not self._header and not self._body_left):
            self.partial_since = None
        elif completed or not was_partial:
            self.partial_since = now
            if self.arm_after is not None and self.frame_deadline == math.inf:
                self.frame_deadline = now + self.arm_after

    def _scan(self, data: bytes | bytearray, header: bytes) -> bool:
        # Walk the record boundaries in ``data``; True if a record ended in it.
        completed = False
        left = self._body_left
        size = len(data)
        at = 0
        while at < size:
            if left:
                step = min(left, size - at)
                left -= step
                at += step
                completed = completed or not left
                continue
            take = min(_TLS_HEADER_SIZE - len(header), size - at)
            header += bytes(data[at : at + take])
            at += take
            if len(header) == _TLS_HEADER_SIZE:
                left = (header[3] << 8) | header[4]
                header = b""
                completed = completed or not left
        self._header = header
        self._body_left = left
        return completed



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
        stream: ActivityStream,
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
        self, stream: ActivityStream, scope: trio.CancelScope, sock: trio.socket.SocketType,
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
