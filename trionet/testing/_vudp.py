"""Virtual UDP: datagrams that meet the link's loss, duplication, reordering and delay.

Sending never blocks (there is no send queue to fill) and never fails for
network reasons: a datagram that cannot arrive is dropped and the trace says
why (``loss``, ``partition``, ``blackhole``, ``no such host``, ``receive buffer
full``). Datagrams larger than the family's limit, or than the link's MTU, fail
with ``EMSGSIZE`` before anything is sent.

A datagram that reaches a host where no socket is bound to its port is answered
with an ICMP port-unreachable message. As on Linux, only a *connected* socket
hears of it: its next ``recv``/``send`` raises ``ECONNREFUSED`` (once).

``_nonblocking_view()`` gives the socket's calls as a non-blocking system
socket has them (:class:`~._vcalls.NonBlockingCalls`: ``recvfrom``/``sendto``
that raise :exc:`BlockingIOError` instead of waiting, and ``wait_readable()``):
trionet's UDP endpoint finds it and runs its receive drain and send fast path
on a virtual socket as on a real one.

The receive queue is accounted as Linux accounts it: each datagram costs the
kernel memory of its buffer (its *truesize*, :func:`linux_truesize`: 832 bytes
for up to about 200 bytes of payload, 2,304 for 1,000, 16,640 for 8,000)
against ``SO_RCVBUF`` (default ``udp_buffer_size``, Linux's
``net.core.rmem_default``). A datagram is queued if it fits, or if the queue is
empty (Linux 6.15 and later); otherwise it is dropped. ``setsockopt(SO_RCVBUF,
n)`` stores ``2 * n`` (at least 2,304, at most twice ``net.core.rmem_max``), and
``getsockopt`` reports that, as Linux does. ``VirtualNetwork(udp_accounting=
"payload")`` counts payload bytes instead.

Broadcast (IPv4): sending to ``255.255.255.255`` or to loopback's
``127.255.255.255`` (or connecting to one) fails with ``EACCES`` unless
``SO_BROADCAST`` is set. With it, the datagram reaches every socket of the
sending host bound to the port on a wildcard (Linux loops broadcasts back), and,
unless it was sent from a loopback address, every other host of the network, as
if all hosts shared one LAN segment. Host addresses carry no prefix, so there
are no other subnet broadcast addresses.

``shutdown()``: as on Linux, ``SHUT_WR`` makes later sends fail with ``EPIPE``;
``SHUT_RD`` changes nothing a trio program sees (datagrams still arrive, a
waiting ``recv`` keeps waiting); on an unconnected socket the call raises
``ENOTCONN`` after taking effect. Multicast options are not modelled (they raise
:class:`NotImplementedError`).
"""

from __future__ import annotations

import errno
import functools
import socket
from collections import deque
from typing import Any, Final, Literal, final

from ._vcalls import BLOCKED, NonBlockingCalls, SocketCalls, _Blocked
from ._vsocket import VirtualSocket, fail, linux_buffer_size
from ._vtrace import format_address
from ._vtypes import Address, Host, Network

__all__ = ["MAX_DATAGRAM", "UDPSocket"]

# Largest UDP payload: 65535 minus the IPv4 (20) and UDP (8) headers; for IPv6
# the payload-length field allows 65535 minus the UDP header, and Linux limits
# it to 65527 (RFC 768, RFC 8200, udp(7)).
MAX_DATAGRAM: Final = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
# IP + UDP header bytes, counted against a link's MTU.
_HEADERS: Final = {socket.AF_INET: 28, socket.AF_INET6: 48}
# Linux's net.core.wmem_default: the SO_SNDBUF a UDP socket starts with.
_WMEM_DEFAULT: Final = 212992
_BROADCASTS: Final = frozenset({"255.255.255.255", "127.255.255.255"})

# The truesize of a received datagram's buffer on Linux 6.x, measured over
# loopback (the rx_queue column of /proc/net/udp after one datagram of each
# size). The kernel allocates payload + headers + reserve bytes (59 for IPv4,
# 72 for IPv6), rounded up to 64, plus a 320-byte skb_shared_info, from the
# 576-byte small-head cache or a power-of-two kmalloc bucket, and adds the
# 256-byte struct sk_buff. Larger payloads go to page fragments: payload + 832.
# An IPv6 datagram over loopback's 65,536-byte MTU is fragmented: 67,144.
_ALLOC_EXTRA: Final = {socket.AF_INET: 59, socket.AF_INET6: 72}
_SHARED_INFO: Final = 320
_SK_BUFF: Final = 256
_SMALL_HEAD: Final = 576
_LINEAR_LIMIT: Final = 16064
_PAGED_EXTRA: Final = 832
_FRAGMENTED_V6: Final = 67144


def linux_truesize(size: int, family: int) -> int:
    """The kernel memory a received datagram of ``size`` payload bytes is charged (Linux 6.x)."""
    family = socket.AF_INET6 if family == socket.AF_INET6 else socket.AF_INET
    if family == socket.AF_INET6 and size + _HEADERS[family] > 65536:
        return _FRAGMENTED_V6
    alloc = size + _ALLOC_EXTRA[family]
    if alloc >= _LINEAR_LIMIT:
        return size + _PAGED_EXTRA
    head = -(-alloc // 64) * 64 + _SHARED_INFO
    bucket = _SMALL_HEAD if head <= _SMALL_HEAD else 1 << (head - 1).bit_length()
    return bucket + _SK_BUFF


@final
class UDPSocket(SocketCalls):
    """A virtual ``SOCK_DGRAM`` socket."""

    def __init__(
        self,
        net: Network,
        host: Host,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        proto: int,
    ) -> None:
        super().__init__(net, host, family, kind, proto)
        self._queue: deque[tuple[bytes, Address, int]] = deque()  # data, source, cost
        self._queued = 0
        self._rcvbuf = net.udp_buffer_size
        self._sndbuf = _WMEM_DEFAULT
        self._peer: Address | None = None
        self._source: str | None = None  # source address chosen by connect()
        self._error: OSError | None = None
        self._shut_wr = False  # sends fail with EPIPE
        self._did_shut_wr = False  # trio's flag: set only when shutdown() succeeded

    def _connected_peer(self) -> Address | None:
        return self._peer

    def _nonblocking_view(self) -> NonBlockingCalls:
        """This socket's calls that never wait, for trionet's UDP endpoint (see the module's docstring)."""
        return NonBlockingCalls(self)

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self._did_shut_wr

    def _buffer_size(self, which: Literal["send", "receive"]) -> int:
        return self._sndbuf if which == "send" else self._rcvbuf

    def _set_buffer_size(self, which: Literal["send", "receive"], size: int) -> None:
        if which == "send":
            self._sndbuf = linux_buffer_size(which, size)
        else:
            self._rcvbuf = linux_buffer_size(which, size)

    def _take_error(self) -> int:
        error, self._error = self._error, None
        return error.errno if error is not None and error.errno is not None else 0

    async def bind(self, address: object) -> None:
        """Bind to ``(host, port)``; host ``""`` is the wildcard, port 0 picks a free port.

        Cancellation:
          Raises :class:`trio.Cancelled` before binding; the socket is not bound.
        """
        await self._io("", lambda now: self._bind_now(*self._parse(address, call="bind")))

    async def connect(self, address: object) -> None:
        """Set the default destination and accept datagrams only from it.

        Cancellation:
          Raises :class:`trio.Cancelled` before connecting; nothing changes.
        """

        def attempt(now: float) -> None:
            ip, port = self._parse(address, call="connect")
            ip = ip or ("::1" if self._family == socket.AF_INET6 else "127.0.0.1")
            self._check_broadcast(ip)
            self._source = self._source_for(ip)
            self._peer = (ip, port)
            self._error = None

        await self._io("", attempt)

    def getsockname(self) -> tuple[Any, ...]:
        self._check_open()
        if self._source is not None and self._local is not None:
            return self._sockaddr(self._source, self._local[1])
        return super().getsockname()

    def getpeername(self) -> tuple[Any, ...]:
        self._check_open()
        if self._peer is None:
            raise fail(errno.ENOTCONN)
        return self._sockaddr(*self._peer)

    def listen(self, backlog: int = 0) -> None:
        raise fail(errno.EOPNOTSUPP, "listen() on a UDP socket")

    async def accept(self) -> tuple[VirtualSocket, Any]:
        """Not for UDP: raises ``EOPNOTSUPP``.

        Cancellation:
          A checkpoint; nothing to leave behind.
        """
        return await self._io("", lambda now: _raise(fail(errno.EOPNOTSUPP, "accept() on UDP")))

    def shutdown(self, flag: int) -> None:
        """As Linux: ``SHUT_WR`` makes sends fail with ``EPIPE``; ``ENOTCONN`` if unconnected."""
        self._check_open()
        self._net._events.advance()
        if flag not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise fail(errno.EINVAL, f"shutdown({flag})")
        if flag != socket.SHUT_RD:
            self._shut_wr = True
        # Linux applies the shutdown to an unconnected socket too, then says ENOTCONN.
        if self._peer is None:
            raise fail(errno.ENOTCONN)
        self._did_shut_wr = self._shut_wr

    def _check_broadcast(self, ip: str) -> None:
        if ip in _BROADCASTS and not self._options.get((socket.SOL_SOCKET, socket.SO_BROADCAST)):
            raise fail(errno.EACCES, f"{ip} is a broadcast address and SO_BROADCAST is not set")

    def is_readable(self) -> bool:
        self._net._events.advance()
        return bool(self._queue) or self._error is not None

    async def wait_writable(self) -> None:
        """Return at once: UDP sockets are always writable.

        Cancellation:
          A checkpoint; nothing to leave behind.
        """
        await self._io("write", lambda now: None)

    def _on_close(self, now: float) -> None:
        self._queue.clear()
        self._queued = 0

    _on_crash = _on_close

    def _send_now(self, now: float, data: memoryview, address: object) -> int | _Blocked:
        if address is None:
            if self._peer is None:
                raise fail(errno.EDESTADDRREQ)
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            ip, port = self._peer
        else:
            parsed_ip, port = self._parse(address, call="sendto")
            ip = parsed_ip or ("::1" if self._family == socket.AF_INET6 else "127.0.0.1")
        if self._shut_wr:
            raise fail(errno.EPIPE)
        if port == 0:
            raise fail(errno.EINVAL, "destination port 0")
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        limit = MAX_DATAGRAM[family]
        if len(data) > limit:
            raise fail(errno.EMSGSIZE, f"{len(data)} bytes > {limit}-byte datagram limit")
        self._check_broadcast(ip)
        source = self._source_for(ip)
        net = self._net
        if ip in _BROADCASTS:
            targets = [self._host]
            if not source.startswith("127."):
                targets += [h for h in net._all_hosts() if h is not self._host]
        else:
            found = net._host_for(self._host, ip)
            targets = [found] if found is not None else []
        for dst_host in targets:
            mtu = net._link_between(self._host, dst_host).mtu
            if mtu is not None and len(data) + _HEADERS[family] > mtu:
                raise fail(errno.EMSGSIZE, f"{len(data)} bytes do not fit the link MTU of {mtu}")
        assert self._local is not None
        src = (source, self._local[1])
        if ip in _BROADCASTS:
            for dst_host in targets:
                _transmit(net, self._host, src, (ip, port), bytes(data), now, dst_host)
        else:
            _transmit(net, self._host, src, (ip, port), bytes(data), now)
        return len(data)

    def _recv_now(self, now: float, nbytes: int, peek: bool) -> tuple[bytes, tuple[Any, ...], int] | _Blocked:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self._queue:
            return BLOCKED
        data, source, cost = self._queue[0]
        if not peek:
            self._queue.popleft()
            self._queued -= cost
        flags = socket.MSG_TRUNC if len(data) > nbytes else 0
        return data[:nbytes], self._sockaddr(*source), flags

    def _arrive(self, data: bytes, src: Address, dst: Address, now: float) -> None:
        net = self._net
        family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
        cost = len(data) if net.udp_accounting == "payload" else linux_truesize(len(data), family)
        # __udp_enqueue_schedule_skb() (Linux 6.15+): drop what does not fit,
        # unless the queue is empty.
        if self._queue and self._queued + cost > self._rcvbuf:
            _drop(net, self._host, src, dst, len(data), "receive buffer full", now)
        else:
            self._queue.append((data, src, cost))
            self._queued += cost
            net._record(now, self._host, "udp.deliver", src, dst, len(data))
            net._counts["datagrams_delivered"] += 1

    def _unreachable(self, dst: Address, now: float) -> None:
        if self._closed or self._frozen or self._peer != dst:
            return  # Linux reports ICMP errors only to connected sockets
        self._error = fail(errno.ECONNREFUSED, f"port unreachable at {format_address(*dst)}")
        assert self._local is not None
        src = (self._source or "", self._local[1])
        self._net._record(now, self._host, "udp.refused", dst, src, 0, "ICMP port unreachable")


def _raise(error: OSError) -> Any:
    raise error


def _drop(
    net: Network,
    host: Host,
    src: Address,
    dst: Address,
    size: int,
    why: str,
    now: float,
) -> None:
    net._record(now, host, "udp.drop", src, dst, size, why)
    net._counts["datagrams_dropped"] += 1


def _transmit(
    net: Network,
    host: Host,
    src: Address,
    dst: Address,
    data: bytes,
    now: float,
    broadcast_to: Host | None = None,
) -> None:
    """Put one datagram on the wire, deciding its fate with the flow's random stream.

    ``broadcast_to``: the host that receives this copy of a broadcast.
    """
    note = "" if broadcast_to is None else f"broadcast to {broadcast_to.name}"
    net._record(now, host, "udp.send", src, dst, len(data), note)
    net._counts["datagrams_sent"] += 1
    if broadcast_to is None:
        reason = net._blocked(host, dst[0])
        dst_host = net._host_for(host, dst[0])
    else:
        dst_host = broadcast_to
        cut = dst_host is not host and net.is_partitioned(host.name, dst_host.name)
        reason = "partition" if cut else None
    if reason is not None:
        _drop(net, host, src, dst, len(data), reason, now)
        return
    assert dst_host is not None
    link = net._link_between(host, dst_host)
    key = f"udp {format_address(*src)}>{format_address(*dst)}"
    if broadcast_to is not None:
        key += f" {dst_host.name}"
    rng = net._rng(key)
    if link.loss and rng.random() < link.loss:
        _drop(net, host, src, dst, len(data), "loss", now)
        return
    copies = 1
    if link.duplicate and rng.random() < link.duplicate:
        copies = 2
        net._record(now, host, "udp.duplicate", src, dst, len(data))
    arrive = functools.partial(_arrive, net, dst_host, src, dst, data, broadcast_to is not None)
    for _ in range(copies):
        departure = net._depart(now, host, dst_host, len(data), link)
        delay = link.latency
        if link.jitter:
            delay += rng.uniform(0.0, link.jitter)
        if link.reorder and rng.random() < link.reorder:
            delay = 0.0
        net._events.schedule(departure + delay, key, arrive)


def _arrive(
    net: Network, host: Host, src: Address, dst: Address, data: bytes, broadcast: bool, now: float
) -> None:
    family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
    if broadcast:
        # __udp4_lib_mcast_deliver(): a copy for every socket bound to the port on a wildcard.
        receivers = [s for s in host._bound(socket.SOCK_DGRAM, *dst, src=src) if isinstance(s, UDPSocket)]
        for receiver in receivers:
            receiver._arrive(data, src, dst, now)
        if not receivers:
            net._record(now, host, "udp.drop", src, dst, len(data), "no socket for the broadcast")
            net._counts["datagrams_dropped"] += 1
        return
    sock = host._lookup(socket.SOCK_DGRAM, family, *dst, src=src)
    if isinstance(sock, UDPSocket):
        sock._arrive(data, src, dst, now)
        return
    net._record(now, host, "udp.unreachable", src, dst, len(data), "no socket on that port")
    net._counts["datagrams_dropped"] += 1
    if net._blocked(host, src[0]) is not None:
        return
    back = net._host_for(host, src[0])
    assert back is not None
    arrival = now + net._link_between(host, back).latency
    notify = functools.partial(_icmp_arrived, back, src, dst)
    net._events.schedule(arrival, f"icmp {format_address(*dst)}>{format_address(*src)}", notify)


def _icmp_arrived(host: Host, src: Address, dst: Address, now: float) -> None:
    family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    sock = host._lookup(socket.SOCK_DGRAM, family, *src, src=dst)
    if isinstance(sock, UDPSocket):
        sock._unreachable(dst, now)
