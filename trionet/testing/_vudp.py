"""Virtual UDP: datagrams that meet the link's loss, duplication, reordering and delay.

Sending never blocks (there is no send queue to fill) and never fails for
network reasons: a datagram that cannot arrive is dropped and the trace says
why (``loss``, ``partition``, ``blackhole``, ``no such host``, ``receive buffer
full``). Datagrams larger than the family's limit, or than the link's MTU, fail
with ``EMSGSIZE`` before anything is sent.

A datagram that reaches a host where no socket is bound to its port is answered
with an ICMP port-unreachable message. As on Linux, only a *connected* socket
hears of it: its next ``recv``/``send`` raises ``ECONNREFUSED`` (once).

The receive queue holds at most ``SO_RCVBUF`` bytes of payload (default
``udp_buffer_size``); datagrams that do not fit are dropped, as the kernel does.
"""

from __future__ import annotations

import errno
import functools
import socket
from collections import deque
from typing import Any, Final, Literal, final

from ._vcalls import BLOCKED, SocketCalls, _Blocked
from ._vsocket import VirtualSocket, fail
from ._vtrace import format_address
from ._vtypes import Address, Host, Network

__all__ = ["MAX_DATAGRAM", "UDPSocket"]

# Largest UDP payload: 65535 minus the IPv4 (20) and UDP (8) headers; for IPv6
# the payload-length field allows 65535 minus the UDP header, and Linux limits
# it to 65527 (RFC 768, RFC 8200, udp(7)).
MAX_DATAGRAM: Final = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
# IP + UDP header bytes, counted against a link's MTU.
_HEADERS: Final = {socket.AF_INET: 28, socket.AF_INET6: 48}


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
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._queued = 0
        self._rcvbuf = net.udp_buffer_size
        self._sndbuf = net.udp_buffer_size
        self._peer: Address | None = None
        self._source: str | None = None  # source address chosen by connect()
        self._error: OSError | None = None

    def _buffer_size(self, which: Literal["send", "receive"]) -> int:
        return self._sndbuf if which == "send" else self._rcvbuf

    def _set_buffer_size(self, which: Literal["send", "receive"], size: int) -> None:
        if which == "send":
            self._sndbuf = size
        else:
            self._rcvbuf = size

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
        raise NotImplementedError("shutdown() is not supported on virtual UDP sockets")

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
        if port == 0:
            raise fail(errno.EINVAL, "destination port 0")
        limit = MAX_DATAGRAM[self._family]
        if len(data) > limit:
            raise fail(errno.EMSGSIZE, f"{len(data)} bytes > {limit}-byte datagram limit")
        source = self._source_for(ip)
        net = self._net
        dst_host = net._host_for(self._host, ip)
        if dst_host is not None:
            mtu = net._link_between(self._host, dst_host).mtu
            if mtu is not None and len(data) + _HEADERS[self._family] > mtu:
                raise fail(errno.EMSGSIZE, f"{len(data)} bytes do not fit the link MTU of {mtu}")
        assert self._local is not None
        _transmit(net, self._host, (source, self._local[1]), (ip, port), bytes(data), now)
        return len(data)

    def _recv_now(self, now: float, nbytes: int, peek: bool) -> tuple[bytes, tuple[Any, ...], int] | _Blocked:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self._queue:
            return BLOCKED
        data, source = self._queue[0]
        if not peek:
            self._queue.popleft()
            self._queued -= len(data)
        flags = socket.MSG_TRUNC if len(data) > nbytes else 0
        return data[:nbytes], self._sockaddr(*source), flags

    def _arrive(self, data: bytes, src: Address, dst: Address, now: float) -> None:
        net = self._net
        if self._peer is not None and self._peer != src:
            _drop(net, self._host, src, dst, len(data), "not from the connected peer", now)
        elif self._queued + len(data) > self._rcvbuf:
            _drop(net, self._host, src, dst, len(data), "receive buffer full", now)
        else:
            self._queue.append((data, src))
            self._queued += len(data)
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
    net: Network, host: Host, src: Address, dst: Address, data: bytes, now: float
) -> None:
    """Put one datagram on the wire, deciding its fate with the flow's random stream."""
    net._record(now, host, "udp.send", src, dst, len(data))
    net._counts["datagrams_sent"] += 1
    reason = net._blocked(host, dst[0])
    if reason is not None:
        _drop(net, host, src, dst, len(data), reason, now)
        return
    dst_host = net._host_for(host, dst[0])
    assert dst_host is not None
    link = net._link_between(host, dst_host)
    key = f"udp {format_address(*src)}>{format_address(*dst)}"
    rng = net._rng(key)
    if link.loss and rng.random() < link.loss:
        _drop(net, host, src, dst, len(data), "loss", now)
        return
    copies = 1
    if link.duplicate and rng.random() < link.duplicate:
        copies = 2
        net._record(now, host, "udp.duplicate", src, dst, len(data))
    arrive = functools.partial(_arrive, net, dst_host, src, dst, data)
    for _ in range(copies):
        departure = net._depart(now, host, dst_host, len(data), link)
        delay = link.latency
        if link.jitter:
            delay += rng.uniform(0.0, link.jitter)
        if link.reorder and rng.random() < link.reorder:
            delay = 0.0
        net._events.schedule(departure + delay, key, arrive)


def _arrive(
    net: Network, host: Host, src: Address, dst: Address, data: bytes, now: float
) -> None:
    family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
    sock = host._lookup(socket.SOCK_DGRAM, family, *dst)
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
    sock = host._lookup(socket.SOCK_DGRAM, family, *src)
    if isinstance(sock, UDPSocket):
        sock._unreachable(dst, now)
