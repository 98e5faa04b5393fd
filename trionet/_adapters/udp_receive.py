"""Receiving on a UDP endpoint: draining the socket and dispatching datagrams to waiting tasks.

:class:`DatagramReceiver` is the receiving half of :class:`~trionet.UDPEndpoint`
(its base class): the bounded receive queue, :meth:`receive`, and the turn-taking
by which the tasks that wait on an endpoint receive for each other.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import Any, Final

import trio

from .._sansio.addresses import Address
from ..errors import PeerUnreachable
from .datagram import Datagram, PeerState, Waiter
from .observe import Observer, emit
from .udp_options import EndpointOptions
from .udp_socket import NonBlocking

__all__ = ["Datagram", "DatagramReceiver", "PeerState", "PeerUnreachable", "Waiter"]

# One drain of the socket takes at most this many datagrams (about 2 ms of work)
# before the receiving task yields, so a flood cannot starve the other tasks.
_DRAIN_LIMIT: Final = 1024
# While datagrams are queued, receive() and receive_nowait() drain the socket
# again only every this many datagrams taken: often enough that the system's
# buffer (about 300 small datagrams by default, 1 ms of a fast sender) does not
# fill while a task works through the queue, rarely enough that the failing
# system call that ends a drain (BlockingIOError) is not paid per datagram.
_DRAIN_EVERY: Final = 32
# Bound of the cache from socket address tuples to Address objects (parsing an
# address costs about 20 times a dictionary lookup), and of the number of idle
# peers whose state is kept.
_ADDRESS_CACHE_SIZE: Final = 4096
_IDLE_PEERS: Final = 4096
# Errors a socket reports for an ICMP message about an earlier datagram.
_ICMP_ERRNOS: Final = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH})


# One receiving task at a time, and no hidden one
# ===============================================
#
# Only one task may wait for a socket to become readable (trio raises
# BusyResourceError for a second), and many tasks wait on one endpoint: many
# concurrent request() calls, and receive() calls. A background receiver task
# would need a nursery hidden in open_udp_endpoint (trionet starts no task the
# user did not, and trio-websocket's hidden nursery cost it exception-group
# unwrapping in every caller), and would add a task switch to every reply.
#
# Instead the waiters take turns, leader/follower style: the first task that
# needs a datagram becomes the *driver*. It waits for readability, then drains
# the socket without blocking until BlockingIOError (at most _DRAIN_LIMIT per
# turn), dispatching each datagram: to the first request waiting on that peer
# whose `match` accepts it (waking that task), otherwise to the bounded receive
# queue (waking one parked receiver). Every other waiter parks. A driver stops
# when its own wait is over (reply, timeout, cancellation) and in the same step
# wakes one parked waiter to take over; a woken waiter that finds nothing left
# to wait for passes the turn on the same way. So whenever a task is parked, a
# driver exists or one is about to run; and a lone request costs what a
# hand-written sendto/recvfrom loop costs, with no extra task switch.
#
# Draining matters: a trio task that takes one datagram per wakeup pays a trip
# through the scheduler for each, and a blocking sender outruns it. With
# Linux's default receive buffer about 64% of a 300,000-datagram blast was lost
# that way, and 0.1% when the socket was drained on each wakeup. receive() and
# receive_nowait() drain too, without waiting: whenever the queue is empty, and
# every _DRAIN_EVERY datagrams while it is not, so a busy consumer keeps the
# system's buffer from filling.


class DatagramReceiver:
    """The receiving half of a UDP endpoint (private base of :class:`~trionet.UDPEndpoint`)."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        nonblocking: NonBlocking | None,
        *,
        remote: Address | None,
        options: EndpointOptions,
        observer: Observer | None,
    ) -> None:
        self._sock = sock
        # `sock`'s calls without a checkpoint each (the system socket behind
        # it, or the virtual network's view of its socket: see udp_socket.py),
        # and the waits between them; None for a custom socket without them.
        self._nonblocking = nonblocking
        self._raw = None if nonblocking is None else nonblocking.calls
        self._remote = remote
        self._observer = observer
        self._closed = False
        self._max_receive = options.max_receive_size
        self._bufsize = options.max_receive_size + 1  # one byte more, to see truncation
        self._queue: deque[Datagram] = deque()
        self._queue_limit = options.receive_queue_size
        self._queue_bytes_limit = options.receive_queue_bytes
        self._queued_bytes = 0  # payload bytes in the queue (issue 15.2: a byte budget)
        self._driver: Waiter | None = None
        self._parked_requests: dict[Waiter, None] = {}
        self._parked_receivers: dict[Waiter, None] = {}
        self._peers: dict[Address, PeerState] = {}
        self._addresses: dict[Any, Address] = {}
        self._received = self._dropped = self._truncated = 0
        self._taken = 0  # datagrams taken from the queue since the last drain
        self._requests_waiting = 0  # requests registered for a reply

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the UDP endpoint is closed")

    def _close_receiving(self) -> None:
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        for parked in (self._parked_requests, self._parked_receivers):
            for waiter in list(parked):
                self._wake(waiter, parked)

    def _unreachable(self, peer: Address) -> PeerUnreachable:
        if self._observer is not None:
            emit(self._observer, "udp.peer_unreachable", peer=peer)
        return PeerUnreachable(peer)

    # ------------------------------------------------------------ dispatch

    def _drain(self, waiter: Waiter | None = None) -> bool:
        """Dispatch what the socket holds; True if it stopped at the batch limit.

        With ``waiter``, it stops early once that waiter's wait is over and no
        other task waits: what remains stays in the system's buffer until
        somebody asks, which saves a system call per reply. It also stops when
        the queue is full and no request waits for a reply.
        """
        assert self._raw is not None
        recvfrom = self._raw.recvfrom
        bufsize = self._bufsize
        queue, limit = self._queue, self._queue_limit
        for _ in range(_DRAIN_LIMIT):
            if (len(queue) >= limit or self._queued_bytes >= self._queue_bytes_limit) and (
                not self._requests_waiting
            ):
                # Nothing taken now could be kept: let the system drop it, at no
                # cost to this process (a request's reply would still be looked for).
                return False
            try:
                data, sockaddr = recvfrom(bufsize)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._receive_failed(exc)
                continue
            self._dispatch(data, sockaddr)
            if (
                waiter is not None
                and (waiter.reply is not None or waiter.error is not None)
                and not self._parked_requests
                and not self._parked_receivers
            ):
                return False
        return True

    def _receive_failed(self, exc: OSError) -> None:
        if exc.errno not in _ICMP_ERRNOS:
            raise exc
        if self._remote is None:
            return  # Windows reports ICMP errors to unconnected sockets too: nobody to tell
        # Every request of a connected endpoint waits on this one peer: all learn it now.
        for state in self._peers.values():
            for waiter in state.waiters:
                if waiter.reply is None and waiter.error is None:
                    waiter.error = PeerUnreachable(self._remote)
                    self._wake(waiter, self._parked_requests)
        raise self._unreachable(self._remote) from exc

    def _dispatch(self, data: bytes, sockaddr: Any) -> None:
        datagram = self._route(data, sockaddr)
        if datagram is not None:
            self._enqueue(datagram)

    def _route(self, data: bytes, sockaddr: Any) -> Datagram | None:
        """The datagram to hand out, or ``None`` if a request claimed it or it was dropped."""
        address = self._addresses.get(sockaddr)
        if address is None:
            address = Address.from_sockaddr(sockaddr)
            if len(self._addresses) >= _ADDRESS_CACHE_SIZE:
                self._addresses.clear()
            self._addresses[sockaddr] = address
        self._received += 1
        if len(data) > self._max_receive:
            self._truncated += 1
            if self._observer is not None:
                emit(self._observer, "udp.truncated", peer=address, limit=self._max_receive)
            return Datagram(data[: self._max_receive], address, True)
        datagram = Datagram(data, address)
        if self._peers:
            state = self._peers.get(address)
            if state is not None and state.waiters and self._claim(state.waiters, datagram):
                return None
        if self._drop_late(datagram):
            return None
        return datagram

    def _drop_late(self, datagram: Datagram) -> bool:
        """Whether to drop ``datagram``, claimed by no request, as a late reply (see UDPEndpoint)."""
        return False

    def _take_nowait(self) -> tuple[Datagram, Any]:
        """The next datagram and the socket address it came from (``None`` if not known).

        The servers' receive path (issue 11.4): what the queue holds, else one
        ``recvfrom`` straight from the socket, with no queue in between. The
        socket address lets the reply go back without converting the address.

        Raises:
          trio.WouldBlock: Nothing has arrived.
        """
        self._check_open()
        queue = self._queue
        if queue:
            return self._take(queue.popleft()), None
        raw = self._raw
        if raw is None:
            raise trio.WouldBlock
        recvfrom, bufsize, addresses = raw.recvfrom, self._bufsize, self._addresses
        for _ in range(_DRAIN_LIMIT):
            try:
                data, sockaddr = recvfrom(bufsize)
            except BlockingIOError:
                break
            except OSError as exc:
                self._receive_failed(exc)
                continue
            address = addresses.get(sockaddr)
            if address is not None and len(data) < bufsize and not self._peers:
                # The common case, _route() inlined: a known sender, no request waiting.
                self._received += 1
                datagram = Datagram(data, address)
                if not self._drop_late(datagram):
                    return datagram, sockaddr
                continue
            routed = self._route(data, sockaddr)
            if routed is not None:
                return routed, sockaddr
        raise trio.WouldBlock

    def _claim(self, waiters: list[Waiter], datagram: Datagram) -> bool:
        for waiter in waiters:
            if waiter.reply is not None or waiter.error is not None:
                continue
            match = waiter.match
            if match is not None:
                try:
                    if not match(datagram):
                        continue
                except Exception as exc:  # the request's own bug: raised there
                    waiter.error = exc
                    self._wake(waiter, self._parked_requests)
                    continue
            waiter.reply = datagram
            self._wake(waiter, self._parked_requests)
            return True
        return False

    def _enqueue(self, datagram: Datagram) -> None:
        size = len(datagram.data)
        if len(self._queue) >= self._queue_limit or (
            self._queued_bytes + size > self._queue_bytes_limit and self._queue
        ):
            self._dropped += 1
            if self._observer is not None:
                emit(self._observer, "udp.dropped", peer=datagram.address,
                     reason="receive queue full")
            return
        self._queue.append(datagram)
        self._queued_bytes += size
        parked = self._parked_receivers
        # A driving receiver takes the first queued datagram itself.
        if parked and (self._driver is None or self._driver.request or len(self._queue) > 1):
            self._wake(next(iter(parked)), parked)

    def _take(self, datagram: Datagram) -> Datagram:
        """Account for ``datagram`` leaving the queue."""
        self._queued_bytes -= len(datagram.data)
        return datagram

    # --------------------------------------------------------- turn-taking

    @staticmethod
    def _wake(waiter: Waiter, parked: dict[Waiter, None]) -> None:
        if waiter in parked:
            del parked[waiter]
            assert waiter.task is not None
            trio.lowlevel.reschedule(waiter.task)

    @staticmethod
    async def _park(waiter: Waiter, parked: dict[Waiter, None]) -> None:
        waiter.task = trio.lowlevel.current_task()
        parked[waiter] = None

        def abort(_: Any) -> trio.lowlevel.Abort:
            parked.pop(waiter, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _done(self, waiter: Waiter) -> bool:
        if waiter.error is not None:
            return True
        return waiter.reply is not None if waiter.request else bool(self._queue)

    async def _drive(self, waiter: Waiter, *, drained: bool = False) -> None:
        """Receive for every waiter until ``waiter``'s own wait is over.

        ``drained`` says the socket was drained just now, with no checkpoint
        since: the driver then waits for readability before trying again.
        """
        self._driver = waiter
        try:
            nonblocking = self._nonblocking
            if nonblocking is None:
                await self._drive_generic(waiter)
                return
            wait_readable = nonblocking.wait_readable
            if drained:
                await wait_readable()
            while not self._done(waiter):
                self._check_open()
                if self._drain(waiter):
                    await trio.lowlevel.checkpoint()  # more may be waiting: let others run
                elif not self._done(waiter):
                    await wait_readable()
        finally:
            self._driver = None
            self._handover()

    async def _drive_generic(self, waiter: Waiter) -> None:
        # A custom socket without non-blocking calls (a user's own fake; the
        # virtual network's sockets have them) is read through its async API,
        # one datagram per call. A cancelled recvfrom() consumed nothing.
        sock, bufsize = self._sock, self._bufsize
        while not self._done(waiter):
            self._check_open()
            try:
                data, sockaddr = await sock.recvfrom(bufsize)
            except OSError as exc:
                self._receive_failed(exc)
                continue
            self._dispatch(data, sockaddr)

    def _handover(self) -> None:
        """If nobody drives, wake one parked waiter to take the turn."""
        if self._driver is None:
            parked = self._parked_requests or self._parked_receivers
            if parked:
                self._wake(next(iter(parked)), parked)

    def _peer_state(self, peer: Address) -> PeerState:
        state = self._peers.get(peer)
        if state is None:
            if len(self._peers) >= _IDLE_PEERS:
                for idle in [key for key, value in self._peers.items() if value.idle()]:
                    del self._peers[idle]
            state = self._peers[peer] = PeerState()
        return state

    async def _wait_reply(self, waiter: Waiter, deadline: float) -> None:
        """Wait until ``waiter`` has a reply or an error, or ``deadline`` passes."""
        drained = False
        if self._raw is not None:
            # The reply may have arrived while the request's transmission
            # yielded (a peer in the same process answers at once): take it
            # without the cost of a cancel scope.
            self._drain(waiter)
            if waiter.reply is not None or waiter.error is not None:
                return
            drained = True
        try:
            with trio.CancelScope(deadline=deadline):
                while waiter.reply is None and waiter.error is None:
                    self._check_open()
                    if self._driver is None:
                        await self._drive(waiter, drained=drained)
                    else:
                        await self._park(waiter, self._parked_requests)
                    drained = False
        finally:
            self._handover()

    # ---------------------------------------------------------- receiving

    async def receive(self) -> Datagram:
        """Receive the next datagram, from any sender (from the peer, when connected).

        Datagrams come in the order the system received them, except those
        that answer a :meth:`~trionet.UDPEndpoint.request`, which go to it.
        Late or duplicated replies to requests that finished a moment ago are
        dropped and counted (``late_replies_dropped``; see
        :meth:`~trionet.UDPEndpoint.request`); other datagrams that no request
        claims come here.

        Returns:
          The :class:`Datagram`. Check :attr:`Datagram.truncated` if datagrams
          larger than ``max_receive_size`` may arrive.

        Raises:
          PeerUnreachable: A connected endpoint's peer was found unreachable.
          trio.ClosedResourceError: The endpoint is (or was, while waiting) closed.

        Cancellation:
          If it raises :exc:`trio.Cancelled`, no datagram was taken: what
          arrived meanwhile stays queued for the next call.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        datagram = self._pop_queued()
        if datagram is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return datagram
        queue = self._queue
        waiter = Waiter(False)
        try:
            while not queue:
                if waiter.error is not None:
                    raise waiter.error
                self._check_open()
                if self._driver is None:
                    await self._drive(waiter)
                else:
                    await self._park(waiter, self._parked_receivers)
            return self._take(queue.popleft())
        finally:
            self._handover()

    def receive_nowait(self) -> Datagram:
        """Take a datagram if one has arrived, without waiting.

        After :meth:`receive`, this empties a burst with no checkpoint per
        datagram.

        Raises:
          trio.WouldBlock: No datagram is waiting.
          PeerUnreachable: A connected endpoint's peer was found unreachable.
          trio.ClosedResourceError: The endpoint is closed.
        """
        self._check_open()
        datagram = self._pop_queued()
        if datagram is None:
            raise trio.WouldBlock
        return datagram

    def _pop_queued(self) -> Datagram | None:
        """The first queued datagram, or ``None``; drains the socket first when due."""
        queue = self._queue
        if self._raw is not None and (not queue or self._taken >= _DRAIN_EVERY):
            self._taken = 0
            self._drain()
        if not queue:
            return None
        self._taken += 1
        return self._take(queue.popleft())

    def __aiter__(self) -> DatagramReceiver:
        return self

    async def __anext__(self) -> Datagram:
        return await self.receive()
