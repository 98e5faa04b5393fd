"""Reading a PROXY protocol header off a socket, and not one byte more: read_proxy_header.

The header comes before the client's own bytes, often in the same segment. It
is read with ``MSG_PEEK`` first: the parser (``_sansio/proxy.py``) says where
the header ends, and exactly that many bytes are then taken off the socket, so
that what follows (a TLS ClientHello, the first request) is still in the
kernel for whatever reads next, with no buffer to hand over.
"""

from __future__ import annotations

import socket

import trio

from .._sansio.errors import ProxyProtocolError
from .._sansio.proxy import PROXY_HEADER_LIMIT, NeedMore, ProxyHeader, parse_proxy_header

__all__ = ["read_proxy_header"]


async def read_proxy_header(
    sock: trio.socket.SocketType, *, limit: int = PROXY_HEADER_LIMIT
) -> ProxyHeader:
    """Read the PROXY protocol header at the start of ``sock``'s byte stream.

    Raises:
      ProxyProtocolError: The connection does not begin with a well-formed
          header of at most ``limit`` bytes, or it ended before the header did.
      OSError: The socket failed (a reset).

    Cancellation:
      Safe, but the connection is then of no use: part of the header may have
      been taken off the socket.
    """
    taken = b""  # bytes consumed so far: all of them the header's
    while True:
        peeked = await sock.recv(limit - len(taken), socket.MSG_PEEK)
        if not peeked:
            raise ProxyProtocolError(
                f"the connection ended after {len(taken)} bytes, before its PROXY header did"
            )
        result = parse_proxy_header(taken + peeked, limit=limit)
        if isinstance(result, NeedMore):
            # Every byte seen is the header's: take them, and wait for more.
            await _take(sock, len(peeked))
            taken += peeked
            continue
        await _take(sock, result.length - len(taken))
        return result


async def _take(sock: trio.socket.SocketType, count: int) -> None:
    # The bytes were peeked: they are in the kernel, and recv() returns them now.
    while count:
        data = await sock.recv(count)
        if not data:  # pragma: no cover - peeked bytes cannot vanish
            raise ProxyProtocolError("the connection ended inside its PROXY header")
        count -= len(data)
