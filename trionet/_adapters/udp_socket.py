"""Opening the socket of a UDP endpoint: family, dual stack, options, multicast.

Kept apart from :mod:`trionet._adapters.udp` so that the endpoint module holds only
what runs per datagram.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

import trio

from .._sansio.addresses import Address, parse_host_port, validate_port
from .._sansio.errors import AddressError
from .resolver import Resolver, resolve
from .trio_compat import stdlib_socket_of
from .udp_options import EndpointOptions

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = [
    "MAX_DATAGRAM_SIZE",
    "AddressLike",
    "NonBlocking",
    "NonBlockingDatagrams",
    "NonBlockingView",
    "OpenedSocket",
    "host_port",
    "is_local_address",
    "multicast_request",
    "nonblocking_of",
    "open_socket",
]

# The largest UDP payload per family, which a datagram over the limit cannot be
# sent as: 65535 (the 16-bit IPv4 total length) minus the 20-byte IPv4 header
# and the 8-byte UDP header; for IPv6 the payload length excludes the IPv6
# header, so 65535 minus the UDP header (RFC 768, RFC 791, RFC 8200; Linux's
# udp(7) limits agree). IPv6 jumbograms (RFC 2675) are not supported.
MAX_DATAGRAM_SIZE: Final = {socket.AF_INET: 65507, socket.AF_INET6: 65527}

#: What an address argument may be: an :class:`Address`, ``"host:port"`` text
#: (with brackets around an IPv6 address), a ``(host, port)`` tuple, or an IPv6
#: socket address ``(host, port, flowinfo, scope_id)``. Hosts may be names,
#: resolved through trionet's resolver.
AddressLike: TypeAlias = Address | str | tuple[str, int] | tuple[str, int, int, int]

_V4_WILDCARD: Final = "0.0.0.0"
_V6_WILDCARD: Final = "::"


def host_port(address: object, *, what: str) -> tuple[str | None, int]:
    """Split an address argument into (host or ``None`` for the wildcard, port)."""
    if isinstance(address, Address):
        return address.host, address.port
    if isinstance(address, bool):
        raise AddressError(f"{what} must be an address, not {address!r}")
    if isinstance(address, int):
        return None, validate_port(address)
    if isinstance(address, str):
        if address.startswith(":") and address[1:].isdigit():  # ":8000", as Go writes it
            return None, validate_port(int(address[1:]), context=address)
        host, port = parse_host_port(address)
        return host, port
    if isinstance(address, tuple) and len(address) == 4:  # an IPv6 socket address
        parsed = Address.from_sockaddr(address)
        zone = f"%{parsed.scope_id}" if parsed.scope_id else ""
        return parsed.host + zone, parsed.port
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if host is not None and not isinstance(host, str):
            raise AddressError(f"{what}: host must be a str, not {host!r}")
        if host == "":
            # serve_tcp refuses "" too: the wildcard is spelled None, so that an
            # empty string from a config file cannot open every interface.
            raise AddressError(f"{what}: the host is empty; use None to mean every address")
        return host, validate_port(port)
    raise AddressError(
        f"{what} must be an Address, 'host:port' text or a (host, port) tuple, not {address!r}"
    )


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def cacheable(address: Hashable) -> bool:
    """Whether resolving ``address`` always gives the same answer (no name in it)."""
    if isinstance(address, Address):
        return True
    host = address[0] if isinstance(address, tuple) else parse_host_port(str(address)).host
    return host is None or is_ip_literal(host)


async def resolve_one(
    host: str, port: int, *, family: int, passive: bool, resolver: Resolver | None
) -> Address:
    flags = socket.AI_PASSIVE if passive else 0
    found = await resolve(host, port, family=family, type=socket.SOCK_DGRAM, flags=flags,
                          resolver=resolver)
    return found[0]


def real_sockets() -> bool:
    """Whether ``trio.socket.socket()`` makes system sockets now (no custom factory).

    trio has no getter for the factory; the setter returns the previous one,
    and setting it back at once, with no checkpoint between, changes nothing.
    """
    previous = trio.socket.set_custom_socket_factory(None)
    trio.socket.set_custom_socket_factory(previous)
    return previous is None


# One code path on real and virtual sockets
# =========================================
#
# The endpoint's receive drain (udp_receive.py) and its send fast path
# (udp_send.py) call the socket without a checkpoint per call: a non-blocking
# recvfrom() until BlockingIOError, a non-blocking sendto(), and between
# batches an await for readability. On a real socket these are the stdlib
# socket's methods and trio.lowlevel.wait_readable/wait_writable on it. trio's
# socket API has no such calls (every trio socket method is async, one
# checkpoint each), so a socket of a custom factory, the virtual network's
# included, can only offer them by a hook of its own: a method
# ``_nonblocking_view()`` returning an object with the calls of
# NonBlockingView. The virtual network's UDP sockets have it, so a test on the
# virtual network runs the drain, its batch limits and early stops as they run
# in production. A custom socket without it (a user's own fake) is read
# through its async recvfrom(), one datagram per call (the endpoint's
# _drive_generic), and written through its async sendto().
#
# The choice is made once per endpoint: on the real path the drain binds the
# stdlib socket's recvfrom as before, with no extra call per datagram.


class NonBlockingDatagrams(Protocol):
    """The non-blocking calls of a datagram socket (a :class:`socket.socket` in non-blocking mode).

    Each call returns at once: it raises :exc:`BlockingIOError` when it would
    wait (nothing to receive, a full send buffer), and the :exc:`OSError` a
    system socket raises otherwise (``ECONNREFUSED`` once after an ICMP
    port-unreachable, on a connected socket). ``recvfrom(n)`` returns at most
    ``n`` bytes of a datagram, the rest of a longer one being discarded.
    """

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...

    def send(self, data: Buffer, /) -> int: ...

    def sendto(self, data: Buffer, address: Any, /) -> int: ...


class NonBlockingView(NonBlockingDatagrams, Protocol):
    """What a custom socket's ``_nonblocking_view()`` returns: the calls, and the waits between them.

    ``wait_readable()`` returns once a datagram or an error is pending;
    ``wait_writable()`` once a send may succeed. Both are checkpoints,
    cancellable with nothing consumed, and raise
    :exc:`trio.ClosedResourceError` if the socket is closed meanwhile.
    """

    async def wait_readable(self) -> None: ...

    async def wait_writable(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NonBlocking:
    """A socket's non-blocking calls, and how to wait for them to succeed."""

    calls: NonBlockingDatagrams
    wait_readable: Callable[[], Awaitable[None]]
    wait_writable: Callable[[], Awaitable[None]]


def _stdlib_nonblocking(std: socket.socket) -> NonBlocking:
    return NonBlocking(
        std,
        functools.partial(trio.lowlevel.wait_readable, std),
        functools.partial(trio.lowlevel.wait_writable, std),
    )


def nonblocking_of(sock: trio.socket.SocketType) -> NonBlocking | None:
    """The calls on ``sock`` that never wait, and the waits between them.

    Returns:
      For trio's own socket, the stdlib socket under it with
      :func:`trio.lowlevel.wait_readable` / :func:`~trio.lowlevel.wait_writable`;
      for a custom socket with a ``_nonblocking_view()`` method (the virtual
      network's UDP sockets), that view (a :class:`NonBlockingView`); else
      ``None``, and the endpoint uses the socket's async methods.
    """
    std = stdlib_socket_of(sock)
    if std is not None:
        return _stdlib_nonblocking(std)
    view_of = getattr(sock, "_nonblocking_view", None)
    if not callable(view_of):
        return None
    view: NonBlockingView = view_of()
    return NonBlocking(view, view.wait_readable, view.wait_writable)


@dataclass(frozen=True, slots=True)
class OpenedSocket:
    sock: trio.socket.SocketType
    # The calls on `sock` without a checkpoint each: the system socket behind
    # it, or a custom socket's view; None for a custom socket without one.
    nonblocking: NonBlocking | None
    local: Address
    dual_stack: bool


async def open_socket(
    local: Address | None,
    *,
    family: int,
    dual_stack: bool,
    options: EndpointOptions,
) -> OpenedSocket:
    """Open and bind a UDP socket; ``local=None`` binds the family's wildcard, port 0.

    With ``dual_stack`` (``local`` is then ``None`` or ``[::]:port``) the
    socket is AF_INET6 with IPV6_V6ONLY off, so it also receives from IPv4
    peers. Where the system refuses that (IPv6 disabled: ``EAFNOSUPPORT`` or
    ``EADDRNOTAVAIL``; no dual-stack sockets: ``ENOPROTOOPT``, as OpenBSD
    answers), an IPv4 socket is bound to ``0.0.0.0``
    on the same port instead.
    """
    if dual_stack:
        try:
            return await _open(local, socket.AF_INET6, True, options)
        except OSError as exc:
            unsupported = exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.ENOPROTOOPT)
            if not unsupported:
                raise
        port = 0 if local is None else local.port
        return await _open(Address(_V4_WILDCARD, port), socket.AF_INET, False, options)
    return await _open(local, family, False, options)


async def _open(
    local: Address | None,
    family: int,
    dual_stack: bool,
    options: EndpointOptions,
) -> OpenedSocket:
    nonblocking: NonBlocking | None
    if real_sockets():
        std = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock = trio.socket.from_stdlib_socket(std)
        except BaseException:
            std.close()
            raise
        nonblocking = _stdlib_nonblocking(std)
    else:
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        nonblocking = nonblocking_of(sock)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        if options.reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if options.broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if options.receive_buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.receive_buffer_size)
        if local is None:
            local = Address(_V6_WILDCARD if family == socket.AF_INET6 else _V4_WILDCARD, 0)
        try:
            await sock.bind(local.to_sockaddr(family=family))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind {local}: {exc.strerror or exc}") from exc
        bound = Address.from_sockaddr(sock.getsockname())
    except BaseException:
        sock.close()
        raise
    return OpenedSocket(sock, nonblocking, bound, dual_stack)


def adopt_socket(sock: trio.socket.SocketType, options: EndpointOptions) -> OpenedSocket:
    """Check a UDP socket bound by someone else (a service manager), and set ``options`` on it.

    Raises:
      ValueError: ``sock`` is not a bound IPv4 or IPv6 datagram socket.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"a UDP endpoint needs an IPv4 or IPv6 datagram socket, not {sock!r}")
    local = Address.from_sockaddr(sock.getsockname())
    if local.port == 0:
        raise ValueError(f"{sock!r} is not bound")
    dual_stack = sock.family == socket.AF_INET6 and local.host == _V6_WILDCARD and not sock.getsockopt(
        socket.IPPROTO_IPV6, socket.IPV6_V6ONLY
    )
    if options.broadcast:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if options.receive_buffer_size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.receive_buffer_size)
    return OpenedSocket(sock, nonblocking_of(sock), local, dual_stack)


def multicast_request(
    group: str, interface: str | int | None, family: int
) -> tuple[int, int, int, bytes]:
    """``(level, join option, leave option, value)`` for joining ``group``.

    Args:
      group: A multicast IP address.
      interface: For an IPv4 group, the IPv4 address of the interface (``None``:
          the system chooses); for an IPv6 group, an interface index or name
          (``None``: 0, the system chooses).
      family: The socket's family. A dual-stack IPv6 socket joins IPv4 groups
          with the IPv4 options, which Linux accepts.

    Raises:
      AddressError: ``group`` is not a multicast address, or ``interface`` does
          not fit the group's family.
    """
    try:
        ip = ipaddress.ip_address(group)
    except ValueError:
        raise AddressError(f"{group!r} is not an IP address") from None
    if not ip.is_multicast:
        raise AddressError(f"{group} is not a multicast address")
    if isinstance(ip, ipaddress.IPv4Address):
        if isinstance(interface, int):
            raise AddressError("an IPv4 group's interface is given by its IPv4 address")
        local = ipaddress.IPv4Address(interface or _V4_WILDCARD)
        value = ip.packed + local.packed  # struct ip_mreq
        return socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.IP_DROP_MEMBERSHIP, value
    if family != socket.AF_INET6:
        raise AddressError(f"an IPv4 endpoint cannot join the IPv6 group {group}")
    if isinstance(interface, str):
        try:
            index = socket.if_nametoindex(interface)
        except OSError:
            raise AddressError(f"no network interface named {interface!r}") from None
    else:
        index = interface or 0
    value = ip.packed + struct.pack("@I", index)  # struct ipv6_mreq
    return socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, socket.IPV6_LEAVE_GROUP, value


async def is_local_address(address: Address) -> bool:
    """Whether ``address``'s host is an address of this host (of the virtual one, on a virtual network).

    A throwaway socket binds it, with port 0, which only a local address
    allows (EADDRNOTAVAIL otherwise). For the servers' guard against
    datagrams forged to come from themselves (issue 15.2).
    """
    host, _, *rest = address.to_sockaddr()
    sock = trio.socket.socket(address.family, trio.socket.SOCK_DGRAM)
    try:
        await sock.bind((host, 0, *rest))
    except OSError:
        return False
    finally:
        sock.close()
    return True
