"""Bound sockets for servers: both families on one port.

``trio.open_tcp_listeners(0)`` binds ``0.0.0.0`` and ``::`` separately, so each
gets its own random port. Here the first address is bound with the requested
port (0: any) and the others with the port it got, so a server started with
``port=0`` has one port to print and to connect to.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterable
from typing import Final

import trio

from .._sansio.addresses import Address, validate_port, wildcard_addresses
from .._sansio.validate import check_optional_count
from .resolver import Resolver, resolve

__all__ = ["DEFAULT_BACKLOG", "SAME_PORT_ATTEMPTS", "adopt_listening_sockets", "bind_listening_sockets"]

# As trio.open_tcp_listeners: ask for the largest backlog; every system quietly
# caps it at its configured maximum (somaxconn), and many store it in 16 bits.
DEFAULT_BACKLOG: Final = 0xFFFF
# trionet's choice. A port the system picked for IPv6 is taken on IPv4 only if
# another program holds it there, with probability (ports in use) / (ephemeral
# range, about 28,000 on Linux), so ten tries fail only on an exhausted host.
SAME_PORT_ATTEMPTS: Final = 10


class _PortTaken(Exception):
    """A later address could not get the port that the first one got."""

    def __init__(self, error: OSError) -> None:
        self.error = error


async def bind_listening_sockets(
    port: int,
    *,
    host: str | None = None,
    type: int = socket.SOCK_STREAM,
    backlog: int | None = None,
    reuse_port: bool = False,
    resolver: Resolver | None = None,
) -> list[trio.socket.SocketType]:
    """Open sockets bound to ``host`` and ``port``, one per address, on one port.

    With ``host=None`` this binds the IPv6 and the IPv4 wildcard addresses
    (``::`` and ``0.0.0.0``, see :func:`wildcard_addresses`), so a server is
    reachable over both families. Each IPv6 socket has IPV6_V6ONLY set, so
    that IPv4 clients reach the IPv4 socket. With ``port=0`` every socket gets
    the same port: the first address is bound to port 0, the others to the
    port the system picked for it; if that port is taken on another address,
    everything is closed and tried again with a new port, up to
    :data:`SAME_PORT_ATTEMPTS` times. A family the system does not support is
    skipped, as long as one socket can be opened.

    Args:
      port: The port, 0-65535; 0 lets the system pick one.
      host: ``None`` for every interface of both families, or an IP address or
          a host name to bind (every address it resolves to, with
          ``AI_PASSIVE``).
      type: :data:`socket.SOCK_STREAM` (the sockets are listening) or
          :data:`socket.SOCK_DGRAM` (the sockets are only bound).
      backlog: The listen backlog for stream sockets, a positive int (capped
          at the system's maximum); ``None`` for the system's maximum.
      reuse_port: Set SO_REUSEPORT, so that several processes can listen on
          the same port and the kernel spreads connections among them.
      resolver: The resolver for a host name (the default one if ``None``).

    Returns:
      Trio sockets, bound (and listening, for stream sockets), in the order of
      their addresses: IPv6 first for ``host=None``. The caller owns them; wrap
      stream sockets in :class:`trio.SocketListener` to accept.

    Raises:
      OSError: A socket could not be opened or bound, for example
          ``EADDRINUSE`` when the port is taken; the message names the address.
      ResolutionError: ``host`` could not be resolved.
      AddressError: ``port`` is out of range.
      ValueError: ``backlog`` is below 1.
      TypeError: ``backlog`` is not an int (or is a bool).

    Resource handling:
      On any error, every socket this call opened is closed before it raises.

    Cancellation:
      A cancelled call raises :exc:`trio.Cancelled` and leaves no socket open.
    """
    validate_port(port)
    # listen() quietly turns a negative backlog into 0: say so instead.
    backlog = check_optional_count("backlog", backlog)
    if backlog is None:
        backlog = DEFAULT_BACKLOG
    backlog = min(backlog, DEFAULT_BACKLOG)
    if host is None:
        addresses = wildcard_addresses(port)
    else:
        addresses = await resolve(host, port, type=type, flags=socket.AI_PASSIVE, resolver=resolver)
    attempts = SAME_PORT_ATTEMPTS if port == 0 and len(addresses) > 1 else 1
    for attempt in range(attempts):
        try:
            return await _bind_all(addresses, port, type, backlog, reuse_port)
        except _PortTaken as taken:
            if attempt == attempts - 1:
                raise taken.error from None
    raise AssertionError("unreachable")  # pragma: no cover


async def _bind_all(
    addresses: list[Address], requested_port: int, type: int, backlog: int, reuse_port: bool
) -> list[trio.socket.SocketType]:
    port = requested_port  # becomes the port the first socket got
    sockets: list[trio.socket.SocketType] = []
    unsupported: list[OSError] = []
    try:
        for address in addresses:
            try:
                sock = trio.socket.socket(address.family, type)
            except OSError as exc:
                if exc.errno != errno.EAFNOSUPPORT:
                    raise
                unsupported.append(exc)  # e.g. a host without IPv6
                continue
            sockets.append(sock)
            if sys.platform != "win32":  # rebind while old connections sit in TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                if not hasattr(socket, "SO_REUSEPORT"):
                    raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            target = address.with_port(port)
            try:
                await sock.bind(target.to_sockaddr())
            except OSError as exc:
                error = OSError(exc.errno, f"cannot bind {target}: {exc.strerror or exc}")
                if requested_port == 0 and len(sockets) > 1 and exc.errno == errno.EADDRINUSE:
                    raise _PortTaken(error) from exc
                raise error from exc
            if port == 0:
                port = sock.getsockname()[1]
            if type == socket.SOCK_STREAM:
                sock.listen(backlog)
        if not sockets:
            raise unsupported[0]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def adopt_listening_sockets(
    sockets: Iterable[trio.socket.SocketType], *, backlog: int | None = None, unix: bool = False
) -> list[trio.socket.SocketType]:
    """Check sockets bound by someone else (a service manager) for a server, and listen on them.

    Each must be a bound stream socket: IPv4 or IPv6 for a TCP server, or
    ``AF_UNIX`` (exactly one) with ``unix``. One that is not listening yet is
    made to (with ``backlog``, the system's maximum by default); one that is
    keeps its backlog.

    Raises:
      ValueError: No socket, or one that is not a bound socket of the right kind.
    """
    adopted = list(sockets)
    if not adopted:
        raise ValueError("sockets= is empty: no socket to serve on")
    if unix and len(adopted) != 1:
        raise ValueError(f"a Unix server serves one socket, not {len(adopted)}")
    families = (socket.AF_UNIX,) if unix else (socket.AF_INET, socket.AF_INET6)
    for sock in adopted:
        if sock.family not in families or sock.type != socket.SOCK_STREAM:
            kind = "an AF_UNIX stream socket" if unix else "IPv4 or IPv6 stream sockets"
            raise ValueError(f"a {'Unix' if unix else 'TCP'} server needs {kind}, not {sock!r}")
        name = sock.getsockname()
        if (not name) if unix else Address.from_sockaddr(name).port == 0:
            raise ValueError(f"{sock!r} is not bound")
        listening = 0
        if hasattr(socket, "SO_ACCEPTCONN"):
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if not listening:
            sock.listen(DEFAULT_BACKLOG if backlog is None else backlog)
    return adopted
