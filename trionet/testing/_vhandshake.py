"""How virtual TCP connections are made, queued for ``accept()``, and refused.

``connect()`` sends a SYN. When it arrives, the destination host looks for a
socket listening on that address and port (a specific binding first, then the
wildcard). None: it answers with RST and the client's ``connect()`` fails with
``ECONNREFUSED``. Otherwise the handshake completes in the listener's kernel, as
on Linux: a new connected socket waits in the listener's accept queue and a
SYN-ACK goes back, so ``connect()`` returns after one round trip whether or not
the server has called ``accept()`` yet.

A full accept queue (``backlog + 1`` entries, as Linux counts) keeps further
SYNs waiting until ``accept()`` makes room; that stands for the client's SYN
retransmissions, without their timing. A SYN that cannot get through (black
hole, partition, address nobody owns) is held like any TCP packet, so
``connect()`` waits until the caller gives up or the network's
``tcp_connect_timeout`` passes (``ETIMEDOUT``).

Closing a listener resets the connections still in its queue and refuses the
SYNs still waiting, as Linux does.
"""

from __future__ import annotations

import functools
import socket
from typing import TYPE_CHECKING

from ._vlink import Flow

if TYPE_CHECKING:
    from ._vevents import Callback
    from ._vhost import VirtualHost
    from ._vnet import VirtualNetwork
    from ._vtcp import TCPSocket

__all__ = ["drop_queues", "establish", "send_rst", "syn_arrived"]

Address = tuple[str, int]


def syn_arrived(client: TCPSocket, src: Address, dst: Address, now: float) -> None:
    """A SYN from ``client`` (at ``src``) reached ``dst``: accept, queue or refuse it."""
    net = client._net
    host = net._host_for(client._host, dst[0])
    assert host is not None  # the SYN got through, so someone owns the address
    listener = host._lookup(socket.SOCK_STREAM, client.family, *dst)
    if not isinstance(listener, type(client)) or listener._state != "listening":
        refuse = functools.partial(client._on_refused, "nothing listens there")
        send_rst(net, host, dst, src, refuse, now)
    elif len(listener._accept_queue) >= listener._backlog:
        net._record(now, host, "tcp.backlog", src, dst, 0, "accept queue full")
        listener._syn_queue.append((client, src, dst))
    else:
        establish(listener, client, src, dst, now)


def establish(listener: TCPSocket, client: TCPSocket, src: Address, dst: Address, now: float) -> None:
    """Complete a handshake in the listener's kernel and queue the new connection."""
    if client._state != "connecting" or client._closed:
        return  # the client gave up meanwhile
    net = listener._net
    conn = type(listener)(net, listener.host, listener.family, socket.SOCK_STREAM, listener.proto)
    conn._state = "connected"
    conn._local = dst
    conn._local_ip = dst[0]
    conn._remote = src
    conn._peer = client
    conn._sndbuf, conn._rcvbuf = listener._sndbuf, listener._rcvbuf
    conn._credit = client._rcvbuf
    conn._flow = Flow(net, listener.host, dst, src, on_timeout=conn._timed_out)
    listener._accept_queue.append(conn)
    net._record(now, listener.host, "tcp.syn", src, dst)
    conn._flow.send(now, "synack", 0, functools.partial(client._on_synack, conn))


def drop_queues(listener: TCPSocket, now: float, reason: str) -> None:
    """The listener is gone: reset queued connections, refuse waiting SYNs."""
    while listener._accept_queue:
        conn = listener._accept_queue.popleft()
        conn._abort(now, reason)
        conn.close()
    while listener._syn_queue:
        client, src, dst = listener._syn_queue.popleft()
        refuse = functools.partial(client._on_refused, reason)
        send_rst(listener._net, listener.host, dst, src, refuse, now)


def send_rst(
    net: VirtualNetwork, host: VirtualHost, src: Address, dst: Address, arrive: Callback, now: float
) -> None:
    """Send a lone RST from ``src`` on ``host`` to ``dst``, outside any connection."""
    Flow(net, host, src, dst).send(now, "rst", 0, arrive)
