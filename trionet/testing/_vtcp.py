"""Virtual TCP sockets: listening, connecting, the handshake, closing.

The byte stream of a connection (buffers, window, FIN, RST) is
:class:`~._vstream.TCPStream`; :class:`TCPSocket` adds how connections are made,
queued for ``accept()``, refused and closed.

``connect()`` sends a SYN. When it arrives, the destination host looks for a
socket listening on that address and port (a specific binding first, then the
wildcard). None: it answers with RST and the client's ``connect()`` fails with
``ECONNREFUSED``. Otherwise the handshake completes in the listener's kernel, as
on Linux: a new connected socket waits in the listener's accept queue and a
SYN-ACK goes back, so ``connect()`` returns after one round trip whether or not
the server has called ``accept()`` yet.

A full accept queue (``backlog + 1`` entries, as Linux counts) drops further
SYNs, as Linux does (``tcp_conn_request()``, counted as ListenOverflows). The
client sends its SYN again on the network's ``tcp_syn_retransmits`` schedule
(Linux: 1, 2, 3, 4, 5, 7, ... s after ``connect()``), so a connect held by a
full backlog completes at the first retransmission after ``accept()`` made
room, not at the ``accept()``. Not modelled: Linux can also drop the
handshake's final ACK when the queue fills between SYN and ACK, so that the
client's ``connect()`` returns while the server holds the connection back
until a SYN-ACK retransmission.

A SYN that cannot get through (black hole, partition, an address nobody owns
behind a router) is held like any TCP packet (the held SYN stands for its
retransmissions), so ``connect()`` waits until the caller gives up or the
network's ``tcp_connect_timeout`` passes (``ETIMEDOUT``). An unowned address
on the connecting host's own subnet (same /24, or /64 for IPv6) fails after the
network's ``arp_timeout`` with ``EHOSTUNREACH``, as Linux does when address
resolution gets no answer.

Closing a listener resets the connections still in its queue, as Linux does.
Closing a connection sends FIN after the pending data, in the background,
unless unread data is left, in which case it resets the connection (RFC 2525
section 2.17, as Linux does). A process exit closes its sockets the same way.

Misuse fails with Linux's errnos: ``connect()`` on a listener ``EISCONN``; a
second ``connect()`` after a failed one ``ECONNABORTED`` (a third one tries
again); after a successful one, the next ``connect()`` returns and later ones
fail with ``EISCONN`` (trio's non-blocking connect leaves Linux's socket
``SS_CONNECTING`` until then); ``send()`` on a listener or an unconnected
socket ``EPIPE``; ``shutdown(SHUT_RD)`` of a listener stops it listening and
``shutdown(SHUT_WR)`` of one does nothing.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, final

import trio

from ._vcalls import BLOCKED, _Blocked
from ._vflow import Flow, send_rst
from ._vsocket import VirtualSocket, fail
from ._vstream import TCPStream
from ._vtrace import format_address
from ._vtypes import Address, Host, Network

__all__ = [
    "DEFAULT_ARP_TIMEOUT",
    "DEFAULT_TCP_CONNECT_TIMEOUT",
    "DEFAULT_TCP_RMEM",
    "DEFAULT_TCP_SYN_RETRANSMITS",
    "DEFAULT_TCP_WMEM",
    "TCPSocket",
    "check_tcp_options",
]

# Linux's net.ipv4.tcp_rmem and tcp_wmem (min, default, max), as on 6.18 (the
# receive maximum became 32 MiB in 6.16; tcp(7) documents the older 6 MiB).
DEFAULT_TCP_RMEM: Final = (4096, 131072, 33554432)
DEFAULT_TCP_WMEM: Final = (4096, 16384, 4194304)
# Linux (6.5+) resends an unanswered SYN after RTOs of 1, 1, 1, 1, 1, 2, 4, ... s
# (tcp_syn_linear_timeouts = 4, then exponential backoff), tcp_syn_retries = 6
# plus the 4 linear ones = 10 times: "67 seconds till the last retransmission",
# "the final timeout ... after 131 seconds" (Documentation/networking/ip-sysctl.rst).
# Measured on loopback (6.18): a SYN dropped by a full backlog is resent 1 s and
# 2 s after connect().
DEFAULT_TCP_SYN_RETRANSMITS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 11.0, 19.0, 35.0, 67.0)
DEFAULT_TCP_CONNECT_TIMEOUT: Final = 131.0
# Linux gives up resolving a neighbour after mcast_solicit = 3 probes
# retrans_time_ms = 1000 ms apart; connect() then fails with EHOSTUNREACH.
DEFAULT_ARP_TIMEOUT: Final = 3.0

# Linux caps listen() backlogs at net.core.somaxconn (4096 since 5.4).
_SOMAXCONN: Final = 4096
# What counts as on-link (resolved by ARP / neighbour discovery rather than
# reached through a router): the common subnet sizes.
_ON_LINK_PREFIX: Final = {4: 24, 6: 64}


@final
class TCPSocket(TCPStream):
    """A virtual ``SOCK_STREAM`` socket."""

    def __init__(
        self,
        net: Network,
        host: Host,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        proto: int,
    ) -> None:
        super().__init__(net, host, family, kind, proto)
        self._backlog = 0
        self._accept_queue: deque[TCPSocket] = deque()
        self._syn_answered = False  # a listener took (or refused) our SYN
        self._connect_started = 0.0
        self._autobound = False  # connect() chose the local port
        self._connect_unconfirmed = False  # see connect()

    # ---- state queries ----------------------------------------------------

    def _listening(self) -> bool:
        return self._state == "listening"

    def is_readable(self) -> bool:
        self._net._events.advance()
        if self._state == "listening":
            return bool(self._accept_queue)
        return bool(self._rbuf or self._eof or self._shut_rd or self._gone or self._state == "failed")

    # ---- listening --------------------------------------------------------

    async def bind(self, address: object) -> None:
        """Bind to ``(host, port)``; host ``""`` is the wildcard, port 0 picks a free port.

        Cancellation:
          Raises :class:`trio.Cancelled` before binding; the socket is not bound.
        """
        await self._io("", lambda now: self._bind_now(*self._parse(address, call="bind")))

    def listen(self, backlog: int = min(socket.SOMAXCONN, 128)) -> None:
        self._check_open()
        self._net._events.advance()
        if self._state not in ("new", "listening"):
            raise fail(errno.EINVAL, "socket is connected")
        if self._local is None:
            self._bind_now(None, 0)
        assert self._local is not None
        self._host._check_listen(self, *self._local)
        self._state = "listening"
        self._backlog = min(max(backlog, 0), _SOMAXCONN) + 1  # Linux admits backlog + 1

    async def accept(self) -> tuple[VirtualSocket, Any]:
        """Take the next connection from the accept queue.

        Cancellation:
          Raises :class:`trio.Cancelled` having taken no connection from the queue.
        """

        def attempt(now: float) -> tuple[VirtualSocket, Any] | _Blocked:
            if self._state != "listening":
                raise fail(errno.EINVAL, "socket is not listening")
            if not self._accept_queue:
                return BLOCKED
            conn = self._accept_queue.popleft()
            assert conn._remote is not None
            return conn, conn._sockaddr(*conn._remote)

        return await self._io("read", attempt)

    # ---- connecting -------------------------------------------------------

    async def connect(self, address: object) -> None:
        """Open a connection; returns once the SYN-ACK is back (one round trip).

        Cancellation:
          The socket is closed, as trio closes a real one (a half-made connection
          cannot be resumed); a SYN-ACK that arrives later is answered with RST,
          so a connection the server already queued is reset.
        """
        started = False

        def attempt(now: float) -> _Blocked | None:
            nonlocal started
            if not started:
                if self._state == "connecting":
                    raise fail(errno.EALREADY)
                if self._state == "connected" and self._connect_unconfirmed:
                    # trio's non-blocking connect() learns the outcome from
                    # SO_ERROR, so Linux still has the socket as SS_CONNECTING:
                    # the next connect() (to any address) just confirms it.
                    self._connect_unconfirmed = False
                    return None
                if self._state in ("connected", "listening"):
                    raise fail(errno.EISCONN)  # inet_stream_connect(): not TCP_CLOSE
                if self._state == "failed":
                    # Linux reports the failure once (sk_err), then this; the
                    # socket is unconnected again and the next connect() retries.
                    self._unconnect()
                    raise fail(errno.ECONNABORTED, "the previous connect() failed")
                self._start_connect(now, address)
                started = True
                return BLOCKED
            if self._state == "connecting":
                return BLOCKED
            if self._state == "failed":
                error, self._error = self._error, None
                raise error or fail(errno.ECONNABORTED)
            self._connect_unconfirmed = True
            return None

        try:
            await self._io("write", attempt)
        except trio.Cancelled:
            self.close()
            raise

    def _start_connect(self, now: float, address: object) -> None:
        ip, port = self._parse(address, call="connect")
        if ip is None:
            ip = "::1" if self._family == socket.AF_INET6 else "127.0.0.1"
        self._autobound = self._local is None
        self._local_ip = self._source_for(ip)
        self._remote = (ip, port)
        src = self._src()
        self._flow = Flow(self._net, self._host, src, self._remote, on_timeout=self._timed_out)
        self._state = "connecting"
        self._syn_answered = False
        self._connect_started = now
        self._net._record(now, self._host, "tcp.connect", src, self._remote)
        events, key = self._net._events, self._flow.key
        arp_timeout = self._net.arp_timeout
        if arp_timeout is not None and self._unresolvable(ip):
            events.schedule(now + arp_timeout, key, self._neighbour_unreachable)
            return
        self._send_syn(now)
        self._schedule_retransmit(0)
        events.schedule(now + self._net.tcp_connect_timeout, key, self._connect_timed_out)

    def _unresolvable(self, ip: str) -> bool:
        """Whether ``ip`` is on one of our subnets, owned by nobody (and not a black hole)."""
        if self._net._blocked(self._host, ip) != "no such host":
            return False
        address = ipaddress.ip_address(ip)
        prefix = _ON_LINK_PREFIX[address.version]
        for own in self._host.addresses:
            subnet = ipaddress.ip_network(f"{own}/{prefix}", strict=False)
            if address.version == subnet.version and address in subnet:
                return True
        return False

    def _neighbour_unreachable(self, now: float) -> None:
        if self._state != "connecting" or self._closed or self._frozen:
            return
        assert self._flow is not None
        self._flow.discard()
        self._fail(now, errno.EHOSTUNREACH, f"no ARP/neighbour answer within {self._net.arp_timeout} s")

    def _send_syn(self, now: float) -> None:
        assert self._flow is not None
        assert self._remote is not None
        src = self._src()
        self._flow.send(now, "syn", 0, functools.partial(syn_arrived, self, src, self._remote))

    def _schedule_retransmit(self, index: int) -> None:
        schedule = self._net.tcp_syn_retransmits
        if index < len(schedule) and schedule[index] < self._net.tcp_connect_timeout:
            assert self._flow is not None
            retransmit = functools.partial(self._retransmit_syn, index)
            self._net._events.schedule(self._connect_started + schedule[index], self._flow.key, retransmit)

    def _retransmit_syn(self, index: int, now: float) -> None:
        if self._state != "connecting" or self._closed or self._frozen or self._syn_answered:
            return
        assert self._flow is not None
        if not self._flow.holding:  # a held SYN already stands for the retransmissions
            self._net._record(now, self._host, "tcp.retransmit", self._src(), self._flow.dst, 0, "SYN")
            self._send_syn(now)
        self._schedule_retransmit(index + 1)

    def _unconnect(self) -> None:
        """After a failed connect: unconnected again, the chosen port released (as Linux does)."""
        self._state = "new"
        self._remote = None
        self._flow = None
        self._local_ip = None
        self._error = None
        if self._autobound:
            self._unbind()
            self._local = None

    def _connect_timed_out(self, now: float) -> None:
        if self._state != "connecting" or self._closed:
            return
        assert self._flow is not None
        assert self._remote is not None
        self._flow.discard()
        seconds = self._net.tcp_connect_timeout
        self._fail(now, errno.ETIMEDOUT, f"no answer within {seconds} s")

    def _fail(self, now: float, code: int, why: str) -> None:
        assert self._remote is not None
        self._state = "failed"
        self._error = fail(code, f"connecting to {format_address(*self._remote)}: {why}")
        events = {errno.ECONNREFUSED: "tcp.refused", errno.EHOSTUNREACH: "tcp.unreachable"}
        event = events.get(code, "tcp.timeout")
        self._net._record(now, self._host, event, self._src(), self._remote, 0, why)

    def _on_refused(self, reason: str, now: float) -> None:
        if self._state == "connecting" and not self._closed:
            self._fail(now, errno.ECONNREFUSED, reason)

    def _on_synack(self, server: TCPSocket, now: float) -> None:
        if self._state != "connecting" or self._closed or self._frozen:
            reset = functools.partial(server._on_rst, "the client gave up connecting")
            send_rst(self._net, self._host, self._src(), server._src(), reset, now)
            return
        self._state = "connected"
        self._peer = server
        self._on_established()
        self._credit = server._rcvbuf
        assert self._remote is not None
        self._net._record(now, self._host, "tcp.established", self._src(), self._remote)
        self._net._counts["connections"] += 1

    # ---- ending ----------------------------------------------------------

    def shutdown(self, flag: int) -> None:
        if self._state != "listening" or flag not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            super().shutdown(flag)
            return
        self._check_open()
        # inet_shutdown(): SHUT_WR leaves a listener alone; a read shutdown
        # disconnects it (it stops listening, as if closed, but stays bound).
        if flag != socket.SHUT_WR:
            now = self._net._events.advance()
            drop_queues(self, now, "the listener was shut down")
            self._state = "new"
            self._net._events.notify()

    def _on_close(self, now: float) -> None:
        if self._state == "listening":
            drop_queues(self, now, "the listener closed")
        elif self._state == "connecting":
            assert self._flow is not None
            self._flow.discard()
            self._state = "failed"
        elif self._state == "connected":
            if self._abort_on_close:
                self._abort(now, "the peer closed with SO_LINGER 0")
            elif self._rbuf:
                self._abort(now, "the peer closed with unread data")
            else:
                self._shut_wr = True
                self._pump(now)

    def _time_wait_binding(self) -> tuple[str | None, int] | None:
        # The side that sent its FIN first (an active close) holds TIME_WAIT;
        # a reset connection holds nothing.
        if self._state != "connected" or self._gone or self._local is None:
            return None
        if self._fin_first or not self._eof:
            return self._local_ip, self._local[1]
        return None

    def _on_crash(self, now: float) -> None:
        reason = f"host {self._host.name!r} crashed"
        if self._state == "listening":
            drop_queues(self, now, reason)
        elif self._state == "connecting":
            assert self._flow is not None
            self._flow.discard()
        elif self._state == "connected":
            self._abort(now, reason)


def check_tcp_options(
    rmem: Sequence[int], wmem: Sequence[int], syn_retransmits: Sequence[float], arp_timeout: float | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...], float | None]:
    """Validate the network's TCP options; return them normalised (tuples).

    Raises:
      ValueError: A buffer triple is not ``0 < min <= default <= max``, the SYN
          retransmission times are not positive and increasing, or the ARP
          timeout is not positive.
    """
    for name, triple in (("tcp_rmem", rmem), ("tcp_wmem", wmem)):
        if len(triple) != 3 or not 0 < triple[0] <= triple[1] <= triple[2]:
            raise ValueError(f"{name} must be (min, default, max) with 0 < min <= default <= max")
    retransmits = tuple(float(t) for t in syn_retransmits)
    if any(not a < b for a, b in zip((0.0, *retransmits), retransmits, strict=False)):
        raise ValueError("tcp_syn_retransmits must be positive and increasing")
    if arp_timeout is not None and not arp_timeout > 0:
        raise ValueError("arp_timeout must be positive or None")
    return tuple(rmem), tuple(wmem), retransmits, arp_timeout


# ---- the handshake ------------------------------------------------------------


def syn_arrived(client: TCPSocket, src: Address, dst: Address, now: float) -> None:
    """A SYN from ``client`` (at ``src``) reached ``dst``: accept, queue or refuse it."""
    net = client._net
    host = net._host_for(client._host, dst[0])
    assert host is not None  # the SYN got through, so someone owns the address
    if client._syn_answered:
        return  # a retransmitted SYN whose first copy got through
    listener = host._lookup(socket.SOCK_STREAM, client.family, *dst, src=src)
    if not isinstance(listener, type(client)) or listener._state != "listening":
        client._syn_answered = True
        refuse = functools.partial(client._on_refused, "nothing listens there")
        send_rst(net, host, dst, src, refuse, now)
    elif len(listener._accept_queue) >= listener._backlog:
        net._record(now, host, "tcp.backlog", src, dst, 0, "accept queue full: SYN dropped")
    else:
        establish(listener, client, src, dst, now)


def establish(listener: TCPSocket, client: TCPSocket, src: Address, dst: Address, now: float) -> None:
    """Complete a handshake in the listener's kernel and queue the new connection."""
    if client._state != "connecting" or client._closed:
        return  # the client gave up meanwhile
    client._syn_answered = True
    net = listener._net
    conn = type(listener)(net, listener.host, listener.family, socket.SOCK_STREAM, listener.proto)
    conn._state = "connected"
    conn._local = dst
    conn._local_ip = dst[0]
    conn._remote = src
    conn._peer = client
    conn._options = dict(listener._options)
    listener.host._add_child(conn, dst[0], dst[1])  # in the port's bucket, as Linux keeps it
    conn._in_table = True
    conn._sndbuf, conn._rcvbuf = listener._sndbuf, listener._rcvbuf
    conn._snd_locked, conn._rcv_locked = listener._snd_locked, listener._rcv_locked
    conn._on_established()
    conn._credit = client._rcvbuf
    conn._flow = Flow(net, listener.host, dst, src, on_timeout=conn._timed_out)
    listener._accept_queue.append(conn)
    net._record(now, listener.host, "tcp.syn", src, dst)
    conn._flow.send(now, "synack", 0, functools.partial(client._on_synack, conn))


def drop_queues(listener: TCPSocket, now: float, reason: str) -> None:
    """The listener is gone: reset the connections in its accept queue.

    SYNs it dropped while full are retransmitted by their clients and refused then.
    """
    while listener._accept_queue:
        conn = listener._accept_queue.popleft()
        conn._abort(now, reason)
        conn.close()
