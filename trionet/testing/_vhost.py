"""Virtual hosts: their addresses, their port tables, and which host a task acts as.

A host owns IPv4 and/or IPv6 addresses, plus ``127.0.0.1`` and ``::1`` which
lead back to itself. Its port tables list, per (socket type, port), the sockets
bound there, in the order they were bound.

Binding follows Linux (``net/ipv4/inet_connection_sock.c``, ``udp.c``):

- Two bindings *overlap* as ``inet_rcv_saddr_equal()`` says: a wildcard overlaps
  every address of its family, and an ``AF_INET6`` wildcard overlaps the IPv4
  ones too unless the socket is ``IPV6_V6ONLY`` (so ``0.0.0.0:P`` and ``[::]:P``
  conflict unless the latter is IPv6-only). The kernel's quirks come along: an
  IPv4 wildcard bound after a dual-stack socket on a specific IPv6 address
  overlaps it.
- Overlapping bindings conflict (``EADDRINUSE``) unless both sockets set
  ``SO_REUSEPORT`` (one user owns every virtual socket), or both set
  ``SO_REUSEADDR`` and, for TCP, the earlier one is not listening.

Delivery picks, among the sockets bound to the destination port, the best match
(``compute_score()``): a connected UDP socket whose peer sent the datagram, then
a specific address over a wildcard, then an ``AF_INET`` socket over a dual-stack
one for IPv4. Sockets sharing the best match through ``SO_REUSEPORT`` take turns
by a hash of the 4-tuple (Linux hashes it with a boot-time secret; here the
network's seed is the secret), so one flow always reaches one socket. Without
``SO_REUSEPORT``, UDP sockets sharing a port through ``SO_REUSEADDR`` leave
unicast to the one bound last, as Linux's hash chain does.

A TCP connection closed by this side first leaves its binding in TIME_WAIT
for 60 s (``TIME_WAIT_SECONDS``), once TCP reports it through
``VirtualSocket._time_wait_binding()``; ``_check_listen()`` is the check
``listen()`` makes. Both are for the TCP socket to call.

Accepted connections and TIME_WAIT entries hold their port for ``bind()`` but
never receive a lookup (they do not listen), so they are kept in a table of
their own per port: a listener's lookup for each new connection looks only at
the sockets that can take it, however many connections it has accepted.
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import itertools
import random
import socket
from typing import Final, final

import trio

from ._vsocket import fail
from ._vtcp import TCPSocket
from ._vtypes import Address, Host, Network, Socket
from ._vudp import UDPSocket

__all__ = ["SocketFactory", "VirtualHost", "current_host", "host_address"]

# Linux's TCP_TIMEWAIT_LEN (include/net/tcp.h): how long the side that closed
# first keeps the connection's port in TIME_WAIT.
TIME_WAIT_SECONDS: Final = 60.0
# The dynamic port range (RFC 6335 section 6), handed out in order per host.
_EPHEMERAL_FIRST: Final = 49152
_EPHEMERAL_LAST: Final = 65535

#: The host the running task acts as; set by ``VirtualNetwork.host()``.
current_host: contextvars.ContextVar[VirtualHost | None] = contextvars.ContextVar(
    "trionet.testing.current_host", default=None
)

# The sockets bound to one port, with the address each is bound to (None: the
# wildcard; an IPv4 address on an AF_INET6 socket: an IPv4-mapped binding).
_Table = dict[Socket, str | None]
_ANY4: Final = "0.0.0.0"
_NOT_V4: Final = "-"  # Linux keeps 127.0.0.6 here: an IPv4 address no binding has
_PROTOCOLS: Final[dict[int, int]] = {
    socket.SOCK_STREAM: socket.IPPROTO_TCP,
    socket.SOCK_DGRAM: socket.IPPROTO_UDP,
}


@final
class VirtualHost:
    """A machine on a :class:`~trionet.testing.VirtualNetwork`.

    Made by :meth:`VirtualNetwork.add_host`; do not construct it yourself.

    Attributes:
      name: The host's name (also registered in the network's DNS).
      addresses: Its addresses, normalised, in the order given.
      network: The network it belongs to.
    """

    def __init__(self, network: Network, name: str, addresses: tuple[str, ...]) -> None:
        self.network = network
        self.name = name
        self.addresses = addresses
        self._tables: dict[tuple[int, int], _Table] = {}  # (type, port) -> bound sockets
        # (type, port) -> accepted connections and TIME_WAIT entries: they
        # conflict with a bind() but are never looked up
        self._held: dict[tuple[int, int], _Table] = {}
        self._next_port = _EPHEMERAL_FIRST
        self._sockets: dict[Socket, None] = {}  # live sockets, in creation order

    def __repr__(self) -> str:
        return f"<VirtualHost {self.name!r} {' '.join(self.addresses)}>"

    def address_of(self, family: int) -> str | None:
        """The host's first address of ``family`` (``AF_INET``/``AF_INET6``), or ``None``."""
        want = 6 if family == socket.AF_INET6 else 4
        for address in self.addresses:
            if ipaddress.ip_address(address).version == want:
                return address
        return None

    def _owns(self, ip: str) -> bool:
        return ip in self.addresses or ip == _ANY4 or ipaddress.ip_address(ip).is_loopback

    def _table(self, kind: int, port: int) -> _Table:
        return self._tables.setdefault((int(kind), port), {})

    def _holders(self, kind: int, port: int) -> _Table:
        """The port's accepted connections and TIME_WAIT entries (TIME_WAITs over purged)."""
        held = self._held.get((int(kind), port))
        if held is None:
            return {}
        _purge_time_waits(held, trio.current_time())
        if not held:
            del self._held[(int(kind), port)]
        return held

    def _bind(self, sock: Socket, ip: str | None, port: int) -> int:
        """Enter ``sock`` in the port table; return the port (chosen if 0).

        Raises:
          OSError: ``EADDRINUSE`` if an overlapping binding forbids sharing.
        """
        if port == 0:
            return self._bind_ephemeral(sock, ip)
        table = self._table(sock.type, port)
        for other, other_ip in itertools.chain(table.items(), self._holders(sock.type, port).items()):
            if _overlap(sock, ip, other, other_ip) and _conflict(sock, other):
                where = f"{ip or ('[::]' if sock.family == socket.AF_INET6 else '0.0.0.0')}:{port}"
                raise fail(errno.EADDRINUSE, f"{where} on host {self.name!r}")
        table[sock] = ip
        return port

    def _bind_ephemeral(self, sock: Socket, ip: str | None) -> int:
        span = _EPHEMERAL_LAST - _EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = _EPHEMERAL_FIRST + (port + 1 - _EPHEMERAL_FIRST) % span
            if not self._tables.get((int(sock.type), port)) and not self._holders(sock.type, port):
                self._table(sock.type, port)[sock] = ip
                return port
        raise fail(errno.EADDRINUSE, f"no free ephemeral port on host {self.name!r}")

    def _unbind(self, sock: Socket, ip: str | None, port: int) -> None:
        for tables in (self._tables, self._held):
            table = tables.get((int(sock.type), port))
            if table is not None and sock in table:
                del table[sock]
                if not table:
                    del tables[(int(sock.type), port)]

    def _add_child(self, sock: Socket, ip: str, port: int) -> None:
        """Enter an accepted connection, which shares its listener's port, without a check.

        Linux keeps accepted sockets in the port's bind bucket: a ``bind()``
        after the listener closed still conflicts with them (unless both set
        ``SO_REUSEADDR``). Lookups ignore them (they do not listen).
        """
        self._held.setdefault((int(sock.type), port), {})[sock] = ip

    def _enter_time_wait(self, sock: Socket, ip: str | None, port: int, now: float) -> None:
        """Keep ``sock``'s binding for :data:`TIME_WAIT_SECONDS` after it closed.

        For a TCP connection closed by this side first. A ``bind()`` that
        overlaps it fails with ``EADDRINUSE`` unless both the new socket and
        the closed one set ``SO_REUSEADDR`` (or both ``SO_REUSEPORT``), as
        on Linux; lookups ignore it.
        """
        self._held.setdefault((int(sock.type), port), {})[_TimeWait(sock, now + TIME_WAIT_SECONDS)] = ip

    def _check_listen(self, sock: Socket, ip: str | None, port: int) -> None:
        """Raise ``EADDRINUSE`` if a TCP socket may not listen on its binding.

        Linux checks the binding again in ``listen()``: two sockets that shared
        a port through ``SO_REUSEADDR`` cannot both listen (unless both also
        set ``SO_REUSEPORT``). Only bound sockets can be listening.
        """
        for other, other_ip in self._table(sock.type, port).items():
            if other is sock or not other._listening() or (_reuse_port(sock) and _reuse_port(other)):
                continue
            if _overlap(sock, ip, other, other_ip):
                raise fail(errno.EADDRINUSE, f"port {port} on host {self.name!r}")

    def _bound(self, kind: int, ip: str, port: int, src: Address | None = None) -> list[Socket]:
        """Every socket that would accept a packet to ``ip``:``port`` (a broadcast's receivers)."""
        table = self._tables.get((int(kind), port), {})
        return [sock for sock, bound in table.items() if _score(sock, bound, ip, src)]

    def _lookup(
        self, kind: int, family: int, ip: str, port: int, src: Address | None = None
    ) -> Socket | None:
        """The socket that receives traffic for ``ip``:``port`` (from ``src``), if any.

        ``family`` is ignored: the destination address says which sockets can
        receive (an IPv4 one reaches dual-stack ``AF_INET6`` sockets too).
        """
        table = self._tables.get((int(kind), port))
        if not table:
            return None
        best: list[Socket] = []
        top = 0
        for sock, bound in table.items():
            score = _score(sock, bound, ip, src)
            if score > top:
                best, top = [sock], score
            elif score == top and score:
                best.append(sock)
        if not best:
            return None
        shared = [sock for sock in best if _reuse_port(sock)]
        if len(shared) > 1 and _reuse_port(best[0]):
            # reuseport_select_sock(): a hash of the 4-tuple picks one of the group.
            key = f"{self.network.seed!r}|reuseport|{src}>{ip}:{port}"
            return shared[int(random.Random(key).random() * len(shared))]
        # Without SO_REUSEPORT: the head of Linux's hash chain, where the
        # socket bound last sits (UDP sharing a port through SO_REUSEADDR).
        return best[-1] if kind == socket.SOCK_DGRAM else best[0]


# ---- Linux's binding rules -----------------------------------------------------


@final
class _TimeWait:
    """What stays of a TCP socket in TIME_WAIT: its binding, for ``bind()`` to conflict with."""

    _closed = False

    def __init__(self, sock: Socket, until: float) -> None:
        self.family = sock.family
        self.type = sock.type
        self._options = dict(sock._options)
        self.until = until

    def _crash(self, now: float) -> None:
        pass

    def _exit_process(self, now: float) -> None:
        pass

    def _listening(self) -> bool:
        return False

    def _connected_peer(self) -> Address | None:
        return None


def _purge_time_waits(table: _Table, now: float) -> None:
    for entry in [e for e in table if isinstance(e, _TimeWait) and e.until <= now]:
        del table[entry]


def _option(sock: Socket, name: str) -> bool:
    return bool(sock._options.get((socket.SOL_SOCKET, getattr(socket, name, -1)), 0))


def _reuse_port(sock: Socket) -> bool:
    return _option(sock, "SO_REUSEPORT")


def _v6only(sock: Socket) -> bool:
    return sock.family == socket.AF_INET6 and bool(
        sock._options.get((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 0)
    )


def _addr_type(sock: Socket, ip: str | None) -> str:
    """ipv6_addr_type() of the binding: "any", "mapped" (IPv4 sockets too) or "v6"."""
    if sock.family == socket.AF_INET or (ip is not None and ":" not in ip):
        return "mapped"
    return "any" if ip is None else "v6"


def _v4_part(sock: Socket, ip: str | None) -> str:
    """The IPv4 address Linux keeps for the binding (sk_rcv_saddr)."""
    if ip is None:
        return _ANY4
    return ip if ":" not in ip else _NOT_V4


def _v4_equal(a: str, b: str, b_v6only: bool) -> bool:
    # ipv4_rcv_saddr_equal() with match_wildcard.
    return not b_v6only and (a == b or _ANY4 in (a, b))


def _overlap(sk: Socket, ip: str | None, sk2: Socket, ip2: str | None) -> bool:
    """inet_rcv_saddr_equal(sk, sk2, match_wildcard=true), binding ``sk`` after ``sk2``."""
    if sk.family == socket.AF_INET6:
        type1, type2 = _addr_type(sk, ip), _addr_type(sk2, ip2)
        if type1 == "mapped" and type2 == "mapped":
            return _v4_equal(_v4_part(sk, ip), _v4_part(sk2, ip2), _v6only(sk2))
        if type1 == "any" and type2 == "any":
            return True
        if type2 == "any" and not (_v6only(sk2) and type1 == "mapped"):
            return True
        if type1 == "any" and not (_v6only(sk) and type2 == "mapped"):
            return True
        return type2 == "v6" and ip == ip2
    return _v4_equal(_v4_part(sk, ip), _v4_part(sk2, ip2), _v6only(sk2))


def _conflict(sk: Socket, sk2: Socket) -> bool:
    """Whether overlapping bindings forbid ``sk`` to bind after ``sk2``."""
    # Both SO_REUSEADDR: UDP shares outright; TCP unless the earlier socket listens.
    reuse_addr = _option(sk, "SO_REUSEADDR") and _option(sk2, "SO_REUSEADDR")
    if reuse_addr and (sk.type == socket.SOCK_DGRAM or not sk2._listening()):
        return False
    return not (_reuse_port(sk) and _reuse_port(sk2))


def _score(sock: Socket, bound: str | None, ip: str, src: Address | None) -> int:
    """compute_score(): how well ``sock`` matches a packet to ``ip`` (0: not at all)."""
    if sock._closed:
        return 0
    v6 = ":" in ip
    if sock.family == socket.AF_INET:
        if v6 or bound not in (None, ip):
            return 0
        score = 2
    else:
        if v6 and bound not in (None, ip):
            return 0
        if not v6 and (_v6only(sock) or bound not in (None, _ANY4, ip)):
            return 0
        score = 1
    if bound not in (None, _ANY4):
        score += 4
    if sock.type == socket.SOCK_STREAM:
        return score if sock._listening() else 0
    peer = sock._connected_peer()
    if peer is not None:
        if peer != src:
            return 0
        score += 8
    return score


@final
class SocketFactory(trio.abc.SocketFactory):
    """Makes virtual sockets for ``trio.socket.socket()``, on the host the task acts as."""

    def __init__(self, net: Network) -> None:
        self._net = net

    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        """Make a TCP (``SOCK_STREAM``) or UDP (``SOCK_DGRAM``) virtual socket.

        Raises:
          RuntimeError: The task acts as no host of this network.
          NotImplementedError: ``AF_UNIX``, or a type other than stream or datagram.
          OSError: ``EAFNOSUPPORT`` / ``EPROTONOSUPPORT`` for other families and protocols.
        """
        host = self._acting_host()
        if family == getattr(socket, "AF_UNIX", None):
            raise NotImplementedError("socket(AF_UNIX): virtual networks carry only IP")
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise fail(errno.EAFNOSUPPORT, f"family {family}")
        kind = int(type) & ~(getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0))
        if kind not in _PROTOCOLS:
            raise NotImplementedError(f"socket(type={kind}): only SOCK_STREAM and SOCK_DGRAM are virtual")
        if proto not in (0, _PROTOCOLS[kind]):
            raise fail(errno.EPROTONOSUPPORT, f"protocol {proto}")
        cls = TCPSocket if kind == socket.SOCK_STREAM else UDPSocket
        return cls(self._net, host, socket.AddressFamily(family), socket.SocketKind(kind), _PROTOCOLS[kind])

    def _acting_host(self) -> Host:
        host = current_host.get() or self._net._default_host
        if host is None:
            raise RuntimeError(
                "no virtual host chosen: make sockets inside `with net.host(name):` "
                "or pass net.install(default_host=name)"
            )
        if host.network is not self._net:
            raise RuntimeError(f"this task acts as {host!r}, which belongs to another network")
        return host


def host_address(text: str) -> str:
    """Normalise an address a host may own; ValueError for special or malformed ones."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{ip} is special (loopback, unspecified or multicast)")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise ValueError(f"{ip} is an IPv4-mapped address; use {ip.ipv4_mapped}")
    return ip.compressed
