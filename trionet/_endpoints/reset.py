"""Ending stuck connections with a TCP reset, at once.

A send blocked on a peer that stopped reading would hold a closing connection
for ``abort_timeout`` (``MessageChannel`` finishes a started frame under a
shield). When a server must end such connections now (the shutdown grace is
over, an idle timeout fired), it resets them instead: the blocked send wakes
at once and the kernel drops what it held for that peer.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from typing import Final

import trio

from .._adapters.trio_compat import stdlib_socket_of

__all__ = ["LINGER_ABORT", "blocked_for_sending", "reset", "reset_in_place"]

# SO_LINGER on with a zero timeout: close() sends a TCP reset.
LINGER_ABORT: Final = struct.pack("ii", 1, 0)


def reset(sock: trio.socket.SocketType) -> None:
    """Close ``sock`` with a TCP reset: a send blocked on it wakes at once."""
    if sock.family != socket.AF_UNIX:  # a Unix socket refuses SO_LINGER
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
    sock.close()  # trio's close() wakes the tasks waiting on it (notify_closing)


def reset_in_place(sock: trio.socket.SocketType) -> None:
    """Reset ``sock`` but leave it open: a send stuck on it fails at once.

    The task that owns the socket still closes it, as usual.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        sock.shutdown(socket.SHUT_RDWR)


def blocked_for_sending(socks: list[trio.socket.SocketType]) -> list[trio.socket.SocketType]:
    """The sockets that cannot take a byte now: their send buffer is full.

    Sockets that cannot be polled (the virtual network's, or every socket where
    :func:`select.poll` is missing) are all reported, to be on the safe side.
    """
    if not hasattr(select, "poll"):
        return socks
    poller = select.poll()
    blocked: list[trio.socket.SocketType] = []
    by_fd: dict[int, trio.socket.SocketType] = {}
    for sock in socks:
        raw = stdlib_socket_of(sock)
        fd = raw.fileno() if raw is not None else -1
        if fd < 0:
            blocked.append(sock)
        else:
            by_fd[fd] = sock
            poller.register(fd, select.POLLOUT)
    if by_fd:
        writable = {fd for fd, events in poller.poll(0) if events == select.POLLOUT}
        blocked.extend(sock for fd, sock in by_fd.items() if fd not in writable)
    return blocked
