"""Virtual hosts: their addresses, their port tables, and which host a task acts as.

A host owns IPv4 and/or IPv6 addresses, plus ``127.0.0.1`` and ``::1`` which
lead back to itself. Its port tables map (address or wildcard, port) to a bound
socket, one table per (socket type, family): as with ``IPV6_V6ONLY`` set, an
IPv6 socket never receives IPv4 traffic. A wildcard binding conflicts with every
binding of the same port, and a specific one with itself (``EADDRINUSE``).
"""

from __future__ import annotations

import contextvars
import errno
import ipaddress
import socket
from typing import Final, final

import trio

from ._vsocket import fail
from ._vtcp import TCPSocket
from ._vtypes import Host, Network, Socket
from ._vudp import UDPSocket

__all__ = ["SocketFactory", "VirtualHost", "current_host", "host_address"]

# The dynamic port range (RFC 6335 section 6), handed out in order per host.
_EPHEMERAL_FIRST: Final = 49152
_EPHEMERAL_LAST: Final = 65535

#: The host the running task acts as; set by ``VirtualNetwork.host()``.
current_host: contextvars.ContextVar[VirtualHost | None] = contextvars.ContextVar(
    "trionet.testing.current_host", default=None
)

_Table = dict[tuple[str | None, int], Socket]
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
        self._tables: dict[tuple[int, int], _Table] = {}
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
        return ip in self.addresses or ipaddress.ip_address(ip).is_loopback

    def _table(self, kind: int, family: int) -> _Table:
        return self._tables.setdefault((int(kind), int(family)), {})

    def _bind(self, sock: Socket, ip: str | None, port: int) -> int:
        """Enter ``sock`` in the port table; return the port (chosen if 0)."""
        table = self._table(sock.type, sock.family)
        if port == 0:
            return self._bind_ephemeral(table, sock, ip)
        for bound_ip, bound_port in table:
            if bound_port == port and (bound_ip is None or ip is None or bound_ip == ip):
                where = f"{ip or '*'}:{port}"
                raise fail(errno.EADDRINUSE, f"{where} on host {self.name!r}")
        table[(ip, port)] = sock
        return port

    def _bind_ephemeral(self, table: _Table, sock: Socket, ip: str | None) -> int:
        used = {port for _ip, port in table}
        span = _EPHEMERAL_LAST - _EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = _EPHEMERAL_FIRST + (port + 1 - _EPHEMERAL_FIRST) % span
            if port not in used:
                table[(ip, port)] = sock
                return port
        raise fail(errno.EADDRINUSE, f"no free ephemeral port on host {self.name!r}")

    def _unbind(self, sock: Socket, ip: str | None, port: int) -> None:
        table = self._table(sock.type, sock.family)
        if table.get((ip, port)) is sock:
            del table[(ip, port)]

    def _lookup(self, kind: int, family: int, ip: str, port: int) -> Socket | None:
        """The socket that receives traffic for ``ip``:``port``, if any."""
        table = self._table(kind, family)
        return table.get((ip, port)) or table.get((None, port))


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
