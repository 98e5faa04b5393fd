"""The accept loops of a stream server, and how they survive EMFILE.

One loop runs per listening socket, in the server's accept nursery (see
``server_core.py``). It takes connections from the kernel's backlog, pauses at
the server's limits, backs off when the process is out of file descriptors,
and hands each connection to the server, which starts its task. The loops
reach the server only through :class:`AcceptingServer`, the protocol that
``ServerCore`` implements.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any, Final, Protocol

import trio

from .._adapters.trio_compat import stdlib_socket_of

__all__ = [
    "ACCEPT_BACKOFF_INITIAL",
    "ACCEPT_BACKOFF_MAX",
    "ACCEPT_BATCH",
    "AcceptingServer",
    "accept_loop",
    "stdlib_socket",
]

LOGGER: Final = logging.getLogger("trionet.server")

# Go's net/http Server.Serve: on a temporary accept error it sleeps 5 ms, doubles
# the delay on each further error up to 1 s, and resets it after a success.
ACCEPT_BACKOFF_INITIAL: Final = 0.005
ACCEPT_BACKOFF_MAX: Final = 1.0
# Connections taken from the backlog per wake-up before the accept loop lets the
# handlers run (Twisted's tcp.Port takes up to 100 per wake; libuv and asyncio
# loop until EAGAIN). trio's accept() takes one per scheduler pass, so under load
# a backlog of N waited N passes (issue 11.3); bounded so that a flood of
# connects cannot starve the connections already open.
ACCEPT_BATCH: Final = 64

# accept() errors that mean the system is out of a resource, not that the
# listener is broken: wait and try again (trio.serve_listeners' list).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Errors about the one connection being accepted (it was reset, or refused by a
# firewall) rather than the listener: skip it (trio.SocketListener's list).
_IGNORABLE_ACCEPT_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
        "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)


class AcceptingServer(Protocol):
    """What the accept loops need of the server they accept for (``ServerCore``)."""

    @property
    def shutting_down(self) -> bool:
        """Whether shutdown has begun: the listeners' close is then ours, not an error."""
        ...

    @property
    def accept_limited(self) -> bool:
        """Whether ``max_connections`` or ``max_pending_handshakes`` is set."""
        ...

    @property
    def slot_freed(self) -> trio.lowlevel.ParkingLot:
        """Unparked when a connection (or a TLS handshake) ends below the limit."""
        ...

    @property
    def accept_scopes(self) -> list[trio.CancelScope]:
        """The scopes of accepts waiting below the limit, which a pause cancels."""
        ...

    def at_capacity(self) -> bool: ...

    def pause_accepting(self) -> None: ...

    def accept_failed(self, errno_name: str, delay: float) -> None:
        """Count an accept error that the loop survives, and report it as an event."""
        ...

    def start_connection(self, sock: trio.socket.SocketType, address: Any) -> None: ...


def stdlib_socket(sock: trio.socket.SocketType) -> socket.socket | None:
    """The standard library socket under a trio socket, or ``None`` if there is none.

    trio offers no non-blocking ``accept``; the accept loop calls the standard
    socket's ``accept()`` itself so that it can take every waiting connection in
    one wake-up. The socket comes from :mod:`trionet._adapters.trio_compat`, trionet's one
    reach into trio's internals. Anything else (the virtual network's sockets,
    test doubles) gives ``None`` and is accepted through its ``accept()``, one
    connection at a time. ``tests/test_tcp_server_accept.py`` fails if trio
    moves the socket.
    """
    return stdlib_socket_of(sock)


async def accept_loop(server: AcceptingServer, listener: trio.socket.SocketType) -> None:
    """Accept connections on ``listener`` for ``server`` until shutdown closes it."""
    raw = stdlib_socket(listener)
    if raw is not None:
        await _accept_backlog(server, raw)
    else:
        await _accept_one_at_a_time(server, listener)


def _back_off(server: AcceptingServer, exc: OSError, delay: float) -> float:
    """The next back-off delay after an accept() error, reported; raises ``exc`` unless it means capacity."""
    if exc.errno not in _CAPACITY_ERRNOS:
        raise exc
    delay = min(delay * 2, ACCEPT_BACKOFF_MAX) if delay else ACCEPT_BACKOFF_INITIAL
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    LOGGER.warning(
        "accept() failed with %s (%s); the server keeps running and retries in %.3f s",
        name, os.strerror(exc.errno or 0), delay,
    )
    server.accept_failed(name, delay)
    return delay


async def _accept_backlog(server: AcceptingServer, raw: socket.socket) -> None:
    # trio's accept() ends with a schedule point after each connection, so a
    # backlog of N connections takes N scheduler passes, each as long as every
    # busy connection's step. Here a wake-up takes up to ACCEPT_BATCH of them
    # with non-blocking accept() calls (trio made the socket non-blocking) and
    # waits for readability only when the backlog is empty. The limit is
    # checked before each call, so a connection is never taken past it, and a
    # close of the listener (shutdown) wakes the wait (notify_closing).
    limited = server.accept_limited
    from_stdlib = trio.socket.from_stdlib_socket
    delay = 0.0
    taken = 0
    while True:
        if limited and server.at_capacity():
            server.pause_accepting()
            await server.slot_freed.park()
            taken = 0
            continue
        if taken >= ACCEPT_BATCH:
            taken = 0
            await trio.lowlevel.checkpoint()
            continue
        try:
            conn, address = raw.accept()
        except BlockingIOError:
            taken = 0
            try:
                await trio.lowlevel.wait_readable(raw)
            except trio.ClosedResourceError:
                if server.shutting_down:
                    return
                raise
            continue
        except OSError as exc:
            if server.shutting_down:
                return  # our own close of the listener
            taken += 1
            if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                continue
            delay = _back_off(server, exc, delay)
            await trio.sleep(delay)
            taken = 0
            continue
        delay = 0.0
        taken += 1
        try:
            sock = from_stdlib(conn)
        except BaseException:
            conn.close()
            raise
        server.start_connection(sock, address)


async def _accept_one_at_a_time(server: AcceptingServer, listener: trio.socket.SocketType) -> None:
    accept = listener.accept
    limited = server.accept_limited
    delay = 0.0
    while True:
        try:
            if not limited:
                sock, address = await accept()
            else:
                accepted = await _accept_within_limit(server, listener)
                if accepted is None:
                    continue
                sock, address = accepted
        except (OSError, trio.ClosedResourceError) as exc:
            if server.shutting_down:
                return  # our own close of the listener woke the accept
            if isinstance(exc, trio.ClosedResourceError):
                raise
            if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                continue
            delay = _back_off(server, exc, delay)
            await trio.sleep(delay)
            continue
        delay = 0.0
        server.start_connection(sock, address)


async def _accept_within_limit(
    server: AcceptingServer, listener: trio.socket.SocketType
) -> tuple[trio.socket.SocketType, Any] | None:
    # Accepting pauses at the limit: connections wait in the kernel's backlog
    # (nothing is refused) until a handler (or a TLS handshake) finishes.
    while server.at_capacity():
        server.pause_accepting()
        await server.slot_freed.park()
    # With several listeners (IPv4 and IPv6), each waits in accept() while
    # below the limit; the one that takes the last slot cancels the others.
    # trio's accept() is exact on cancellation: if it raises Cancelled, no
    # connection was taken from the backlog.
    with trio.CancelScope() as scope:
        server.accept_scopes.append(scope)
        try:
            accepted = await listener.accept()
        finally:
            server.accept_scopes.remove(scope)
    if scope.cancelled_caught:
        return None
    if server.at_capacity():
        # A sibling's accept completed in the same instant as the cancellation
        # that should have stopped it: hold the connection until a slot frees.
        try:
            while server.at_capacity():
                await server.slot_freed.park()
        except BaseException:
            accepted[0].close()
            raise
    return accepted
