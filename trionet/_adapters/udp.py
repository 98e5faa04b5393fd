"""UDP endpoints: send, receive, and requests that are retransmitted until answered.

:class:`UDPEndpoint` is made of three halves, its base classes: receiving
(:mod:`~trionet._adapters.udp_receive`), sending
(:mod:`~trionet._adapters.udp_send`) and requests
(:mod:`~trionet._adapters.udp_request`). This module adds its state, closing and
multicast, and :func:`open_udp_endpoint`.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import final

import trio

from .._sansio.addresses import Address
from .._sansio.errors import AddressError
from .observe import Observer
from .resolver import Resolver
from .udp_options import (
    DEFAULT_MAX_OUTSTANDING_PER_PEER,
    DEFAULT_MAX_RECEIVE_SIZE,
    DEFAULT_RECEIVE_QUEUE_BYTES,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    EndpointOptions,
)
from .udp_receive import Datagram, PeerUnreachable
from .udp_request import DEFAULT_RETRY_POLICY, DatagramRequester
from .udp_socket import (
    MAX_DATAGRAM_SIZE,
    AddressLike,
    adopt_socket,
    host_port,
    multicast_request,
    open_socket,
    resolve_one,
)

__all__ = [
    "DEFAULT_MAX_OUTSTANDING_PER_PEER",
    "DEFAULT_MAX_RECEIVE_SIZE",
    "DEFAULT_RECEIVE_QUEUE_BYTES",
    "DEFAULT_RECEIVE_QUEUE_SIZE",
    "DEFAULT_RETRY_POLICY",
    "MAX_DATAGRAM_SIZE",
    "AddressLike",
    "Datagram",
    "PeerUnreachable",
    "UDPEndpoint",
    "UDPEndpointStatistics",
    "open_udp_endpoint",
]

@final
@dataclass(frozen=True, slots=True)
class UDPEndpointStatistics:
    """A snapshot of a :class:`UDPEndpoint`'s counters (see :meth:`UDPEndpoint.statistics`).

    Attributes:
      datagrams_sent: Datagrams handed to the system, retransmissions included.
      datagrams_received: Datagrams taken from the system.
      datagrams_queued: Datagrams waiting in the receive queue now.
      bytes_queued: Their payload bytes (bounded by ``receive_queue_bytes``).
      datagrams_dropped: Datagrams dropped because the receive queue was full.
      datagrams_truncated: Datagrams larger than ``max_receive_size``.
      requests_active: Requests in progress now, those waiting for a turn included.
      requests_completed: Requests that got their reply.
      requests_timed_out: Requests that raised :exc:`~trionet.RequestTimeout`.
      retransmissions: Transmissions beyond each request's first.
      late_replies_dropped: Datagrams dropped as late replies: from a peer, not
          claimed by a request in progress, and matched by the ``match`` of a
          request to that peer that finished (answered, timed out, cancelled)
          recently (see :meth:`UDPEndpoint.request`). They never reach
          :meth:`~UDPEndpoint.receive`.
    """

    datagrams_sent: int
    datagrams_received: int
    datagrams_queued: int
    datagrams_dropped: int
    datagrams_truncated: int
    requests_active: int
    requests_completed: int
    requests_timed_out: int
    retransmissions: int
    late_replies_dropped: int = 0
    bytes_queued: int = 0


@final
class UDPEndpoint(DatagramRequester, trio.abc.AsyncResource):
    """A bound UDP socket, with sends, receives and retransmitted requests.

    Made by :func:`open_udp_endpoint`; see there for the options. Any number of
    tasks may use one endpoint at once: they share its receive queue, and each
    :meth:`request` gets its own reply.
    """

    # ---------------------------------------------------------------- state

    @property
    def local(self) -> Address:
        """The socket's local address (``[::]:port`` for a dual-stack endpoint).

        For a connected endpoint, the address the system chose for the peer's
        route (``127.0.0.1:port`` towards a loopback peer, say), as the peer
        sees it.
        """
        return self._local

    @property
    def peer(self) -> Address | None:
        """The peer of a connected endpoint, else ``None`` (as :attr:`TCPConnection.peer`)."""
        return self._remote

    @property
    def dual_stack(self) -> bool:
        """Whether this IPv6 endpoint also sends to and receives from IPv4 peers."""
        return self._dual_stack

    @property
    def socket(self) -> trio.socket.SocketType:
        """The trio socket, for options trionet does not wrap (``setsockopt``)."""
        return self._sock

    def statistics(self) -> UDPEndpointStatistics:
        """Return the endpoint's counters, as a frozen snapshot."""
        return UDPEndpointStatistics(
            datagrams_sent=self._sent,
            datagrams_received=self._received,
            datagrams_queued=len(self._queue),
            datagrams_dropped=self._dropped,
            datagrams_truncated=self._truncated,
            requests_active=self._active,
            requests_completed=self._completed,
            requests_timed_out=self._timed_out,
            retransmissions=self._retransmissions,
            late_replies_dropped=self._late_dropped,
            bytes_queued=self._queued_bytes,
        )

    def __repr__(self) -> str:
        peer = "" if self._remote is None else f" -> {self._remote}"
        state = " closed" if self._closed else ""
        return f"<UDPEndpoint {self._local}{peer}{state}>"

    # -------------------------------------------------------------- closing

    def close(self) -> None:
        """Close the socket. Waiting tasks get :exc:`trio.ClosedResourceError`; queued datagrams are lost."""
        if self._closed:
            return
        self._sock.close()  # wakes a driver waiting for readability
        self._close_receiving()
        self._late.clear()
        for state in self._peers.values():
            if state.turns is not None:
                state.turns.unpark_all()

    async def aclose(self) -> None:
        """Close the endpoint, as :meth:`close`.

        Cancellation:
          The endpoint is closed even if this call is cancelled (it closes
          before its checkpoint).
        """
        self.close()
        await trio.lowlevel.checkpoint()

    # ---------------------------------------------------------- multicast

    def join_multicast(self, group: str, *, interface: str | int | None = None) -> None:
        """Receive the datagrams sent to the multicast ``group``.

        Args:
          group: An IPv4 or IPv6 multicast address. A dual-stack endpoint can
              join groups of both families.
          interface: Which interface joins: for an IPv4 group, the interface's
              IPv4 address; for an IPv6 group, its index or name. ``None``: the
              system chooses (by its routing table).

        Raises:
          AddressError: ``group`` is not a multicast address of a family this
              endpoint can receive, or ``interface`` does not fit it.
          OSError: The system refused (for example no route for the group).
        """
        self._check_open()
        level, join, _, value = multicast_request(group, interface, self._family)
        self._sock.setsockopt(level, join, value)

    def leave_multicast(self, group: str, *, interface: str | int | None = None) -> None:
        """Stop receiving ``group``, joined with the same arguments by :meth:`join_multicast`."""
        self._check_open()
        level, _, leave, value = multicast_request(group, interface, self._family)
        self._sock.setsockopt(level, leave, value)


@asynccontextmanager
async def open_udp_endpoint(
    local: AddressLike | int | None = None,
    remote: AddressLike | None = None,
    *,
    sock: trio.socket.SocketType | None = None,
    family: int = 0,
    reuse_port: bool = False,
    broadcast: bool = False,
    max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
    receive_buffer_size: int | None = None,
    max_outstanding_per_peer: int | None = DEFAULT_MAX_OUTSTANDING_PER_PEER,
    resolver: Resolver | None = None,
    observer: Observer | None = None,
) -> AsyncIterator[UDPEndpoint]:
    """Open a UDP endpoint for the duration of an ``async with`` block.

    ::

        async with trionet.open_udp_endpoint() as endpoint:
            reply = await endpoint.request(b"\x00\x01ping", "example.net:7",
                                           match=trionet.match_bytes(0, 2))
            print(reply.data, "from", reply.address)

    Without ``local`` and ``remote`` the endpoint is dual-stack: one IPv6
    socket bound to ``[::]`` on a port the system picks, with IPV6_V6ONLY off,
    which sends to and receives from IPv4 peers as well (their addresses come
    back as plain IPv4, never ``::ffff:a.b.c.d``). Where IPv6 is unavailable
    (or dual-stack sockets are, as on OpenBSD), it is IPv4 only.

    The endpoint runs no task of its own: the tasks that call
    :meth:`~UDPEndpoint.receive` and :meth:`~UDPEndpoint.request` take turns at
    receiving for each other, so nothing runs outside the block, and nothing
    reads the socket while nobody waits for a datagram (the system's buffer
    holds them meanwhile, up to its size).

    Args:
      local: Where to bind: an :class:`~trionet.Address`, ``"host:port"``
          text, a ``(host, port)`` tuple or a port number (on every address).
          ``None``: every address, a port the system picks. ``"[::]:port"``
          is dual-stack unless ``family=AF_INET6``.
      remote: Connect the endpoint to this peer: :meth:`~UDPEndpoint.send` and
          :meth:`~UDPEndpoint.request` then need no address, only the peer's
          datagrams are received, and an ICMP "port unreachable" from it is
          raised as :exc:`PeerUnreachable`.
      sock: Instead of ``local``: a UDP socket bound by someone else, such as
          a service manager (:func:`~trionet.listen_fds`). IPv4 or IPv6,
          bound; the endpoint owns it from now on and closes it when the
          block ends. ``broadcast`` and ``receive_buffer_size`` are applied to
          it; ``family`` and ``reuse_port`` do not apply.
      family: ``0`` (either), :data:`socket.AF_INET` or
          :data:`socket.AF_INET6`: restricts what names resolve to and the
          socket's family (``AF_INET6`` makes a wildcard endpoint IPv6 only).
      reuse_port: Set SO_REUSEPORT, so several sockets (processes) can bind
          the same port; the system spreads datagrams among them.
      broadcast: Set SO_BROADCAST, needed to send to a broadcast address.
      max_receive_size: The largest datagram received whole, in bytes (1 to
          65,535). A larger one is delivered truncated to this size with
          :attr:`Datagram.truncated` set; it is never cut silently.
      receive_queue_size: How many received datagrams may wait for
          :meth:`~UDPEndpoint.receive`; more are dropped (and counted, and
          reported as ``udp.dropped``), as a full socket buffer drops them.
      receive_queue_bytes: How many payload bytes those datagrams may hold
          (4 MiB by default); past it datagrams are dropped the same way, so
          a sender of large datagrams cannot make an endpoint that is not
          reading hold ``receive_queue_size`` times 64 KiB. One datagram is
          always let in, whatever its size.
      receive_buffer_size: Ask the system for a receive buffer of this many
          bytes (SO_RCVBUF; ``None`` keeps the system's default, 208 KiB on
          Linux). The endpoint drains the socket whenever a task waits on it,
          but while no task runs (the process is busy elsewhere, or not
          scheduled) only this buffer holds arriving datagrams: raise it for
          bursty traffic. Linux caps it at ``net.core.rmem_max`` and charges
          each small datagram about 1 KiB of it.
      max_outstanding_per_peer: How many :meth:`~UDPEndpoint.request` calls
          may wait for replies from one peer at once; further ones wait for a
          turn. The default, 1, is CoAP's NSTART (RFC 7252 section 4.7) and
          what RFC 8085 section 3.1.3 asks of applications without congestion
          control, so that a lossy path is not flooded with retransmissions.
          Raise it for protocols with request ids (and a ``match``);
          ``None`` for no limit.
      resolver: The :class:`~trionet.Resolver` for host names (the run's
          default one if ``None``).
      observer: Receives an :class:`~trionet.Event` for each step; see
          :meth:`~UDPEndpoint.request` and "Events".

    Yields:
      The :class:`UDPEndpoint`, bound (and connected, with ``remote``). It is
      closed when the block ends.

    Raises:
      OSError: The socket could not be opened, bound or connected (for
          example ``EADDRINUSE``).
      ResolutionError: ``local`` or ``remote`` could not be resolved.
      AddressError: An address is malformed.
      ValueError: An option is out of range.

    Events:
      Besides the events of :meth:`~UDPEndpoint.request`: ``udp.truncated``
      (peer, limit), ``udp.dropped`` (peer, reason), ``udp.peer_unreachable``
      (peer).

    Cancellation:
      A cancelled opening leaves no socket open. Cancelling a task that waits
      on the endpoint cancels only that task's call; the endpoint stays usable.
    """
    options = EndpointOptions(
        family=family, reuse_port=reuse_port, broadcast=broadcast,
        max_receive_size=max_receive_size, receive_queue_size=receive_queue_size,
        receive_queue_bytes=receive_queue_bytes, receive_buffer_size=receive_buffer_size,
        max_outstanding_per_peer=max_outstanding_per_peer,
    )
    if sock is None:
        endpoint = await _open_endpoint(local, remote, options, resolver=resolver, observer=observer)
    elif local is not None or remote is not None or family or reuse_port:
        raise TypeError("open_udp_endpoint takes sock= or local, remote, family and reuse_port, not both")
    else:
        endpoint = UDPEndpoint(adopt_socket(sock, options), options, remote=None,
                               resolver=resolver, observer=observer)
    try:
        yield endpoint
    finally:
        endpoint.close()


async def _open_endpoint(
    local: AddressLike | int | None,
    remote: AddressLike | None,
    options: EndpointOptions,
    *,
    resolver: Resolver | None,
    observer: Observer | None,
) -> UDPEndpoint:
    family = options.family
    local_address: Address | None = None
    if local is not None:
        host, port = host_port(local, what="local")
        if host is not None:
            local_address = await resolve_one(host, port, family=family, passive=True,
                                              resolver=resolver)
        elif port:
            wildcard = "0.0.0.0" if family == socket.AF_INET else "::"
            local_address = Address(wildcard, port)
    wildcard_v6 = local_address is None or local_address.host == "::"
    dual_stack = family == 0 and wildcard_v6
    remote_address: Address | None = None
    if remote is not None:
        host, port = host_port(remote, what="remote")
        if host is None or port == 0:
            raise AddressError(f"remote needs a host and a non-zero port, not {remote!r}")
        wanted = family if local_address is None or dual_stack else local_address.family
        remote_address = await resolve_one(host, port, family=wanted, passive=False,
                                           resolver=resolver)
        if local_address is None:
            dual_stack = False  # the socket takes the remote's family
    socket_family: int
    if local_address is not None:
        socket_family = local_address.family
    elif remote_address is not None:
        socket_family = remote_address.family
    else:
        socket_family = family or socket.AF_INET6
    opened = await open_socket(local_address, family=socket_family, dual_stack=dual_stack,
                               options=options)
    try:
        if remote_address is not None:
            sockaddr = remote_address.to_sockaddr(family=opened.sock.family)
            try:
                await opened.sock.connect(sockaddr)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot connect to {remote_address}: "
                                         f"{exc.strerror or exc}") from exc
            # connect() chose the local address (route's source): report it,
            # not the wildcard bound before (issue 14.9).
            opened = dataclasses.replace(
                opened, local=Address.from_sockaddr(opened.sock.getsockname()))
        return UDPEndpoint(
            opened, options, remote=remote_address, resolver=resolver, observer=observer
        )
    except BaseException:
        opened.sock.close()
        raise
