"""Virtual TCP sockets: listening, connecting, the handshake, closing.

The byte stream of a connection (buffers, window, FIN, RST) is
:class:`~._vstream.TCPStream`; :class:`TCPSocket` adds how connections are made,
queued for ``accept()``, refused and closed.

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
SYNs still waiting, as Linux does. Closing a connection sends FIN after the
pending data, in the background, unless unread data is left, in which case it
resets the connection (RFC 2525 section 2.17, as Linux does).
"""

from __future__ import annotations

import errno
import functools
import socket
from collections import deque
from typing import Any, Final, final

import trio

from ._vcalls import BLOCKED, _Blocked
from ._vflow import Flow, send_rst
from ._vsocket import VirtualSocket, fail
from ._vstream import TCPStream
from ._vtrace import format_address
from ._vtypes import Address, Host, Network

__all__ = ["TCPSocket"]

# Linux caps listen() backlogs at net.core.somaxconn (4096 since 5.4).
_SOMAXCONN: Final = 4096


@final
class TCPSocket(TCPStream):
    """A virtual ``SOCK_STREAM`` socket."""

    def __init__(
        self,
        net: Network,
        host: Host,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        proto: int,
    ) -> None:
        super().__init__(net, host, family, kind, proto)
        self._backlog = 0
        self._accept_queue: deque[TCPSocket] = deque()
        self._syn_queue: deque[tuple[TCPSocket, Address, Address]] = deque()

    # ---- state queries ----------------------------------------------------

    def _listening(self) -> bool:
        return self._state == "listening"

    def is_readable(self) -> bool:
        self._net._events.advance()
        if self._state == "listening":
            return bool(self._accept_queue)
        return bool(self._rbuf or self._eof or self._shut_rd or self._gone or self._state == "failed")

    # ---- listening --------------------------------------------------------

    async def bind(self, address: object) -> None:
        """Bind to ``(host, port)``; host ``""`` is the wildcard, port 0 picks a free port.

        Cancellation:
          Raises :class:`trio.Cancelled` before binding; the socket is not bound.
        """
        await self._io("", lambda now: self._bind_now(*self._parse(address, call="bind")))

    def listen(self, backlog: int = min(socket.SOMAXCONN, 128)) -> None:
        self._check_open()
        self._net._events.advance()
        if self._state not in ("new", "listening"):
            raise fail(errno.EINVAL, "socket is connected")
        if self._local is None:
            self._bind_now(None, 0)
        self._state = "listening"
        self._backlog = min(max(backlog, 0), _SOMAXCONN) + 1  # Linux admits backlog + 1

    async def accept(self) -> tuple[VirtualSocket, Any]:
        """Take the next connection from the accept queue.

        Cancellation:
          Raises :class:`trio.Cancelled` having taken no connection from the queue.
        """

        def attempt(now: float) -> tuple[VirtualSocket, Any] | _Blocked:
            if self._state != "listening":
                raise fail(errno.EINVAL, "socket is not listening")
            if not self._accept_queue:
                return BLOCKED
            conn = self._accept_queue.popleft()
            while self._syn_queue and len(self._accept_queue) < self._backlog:
                establish(self, *self._syn_queue.popleft(), now)
            assert conn._remote is not None
            return conn, conn._sockaddr(*conn._remote)

        return await self._io("read", attempt)

    # ---- connecting -------------------------------------------------------

    async def connect(self, address: object) -> None:
        """Open a connection; returns once the SYN-ACK is back (one round trip).

        Cancellation:
          The socket is closed, as trio closes a real one (a half-made connection
          cannot be resumed); a SYN-ACK that arrives later is answered with RST,
          so a connection the server already queued is reset.
        """
        started = False

        def attempt(now: float) -> _Blocked | None:
            nonlocal started
            if not started:
                if self._state == "connecting":
                    raise fail(errno.EALREADY)
                if self._state in ("connected", "listening"):
                    raise fail(errno.EISCONN if self._state == "connected" else errno.EINVAL)
                if self._state == "failed":
                    raise fail(errno.EBADFD, "a failed connect cannot be retried")
                self._start_connect(now, address)
                started = True
                return BLOCKED
            if self._state == "connecting":
                return BLOCKED
            if self._state == "failed":
                error, self._error = self._error, None
                raise error or fail(errno.ECONNABORTED)
            return None

        try:
            await self._io("write", attempt)
        except trio.Cancelled:
            self.close()
            raise

    def _start_connect(self, now: float, address: object) -> None:
        ip, port = self._parse(address, call="connect")
        if ip is None:
            ip = "::1" if self._family == socket.AF_INET6 else "127.0.0.1"
        self._local_ip = self._source_for(ip)
        self._remote = (ip, port)
        src = self._src()
        self._flow = Flow(self._net, self._host, src, self._remote, on_timeout=self._timed_out)
        self._state = "connecting"
        self._net._record(now, self._host, "tcp.connect", src, self._remote)
        arrive = functools.partial(syn_arrived, self, src, self._remote)
        self._flow.send(now, "syn", 0, arrive)
        deadline = now + self._net.tcp_connect_timeout
        self._net._events.schedule(deadline, self._flow.key, self._connect_timed_out)

    def _connect_timed_out(self, now: float) -> None:
        if self._state != "connecting" or self._closed:
            return
        assert self._flow is not None
        assert self._remote is not None
        self._flow.discard()
        seconds = self._net.tcp_connect_timeout
        self._fail(now, errno.ETIMEDOUT, f"no answer within {seconds} s")

    def _fail(self, now: float, code: int, why: str) -> None:
        assert self._remote is not None
        self._state = "failed"
        self._error = fail(code, f"connecting to {format_address(*self._remote)}: {why}")
        event = "tcp.refused" if code == errno.ECONNREFUSED else "tcp.timeout"
        self._net._record(now, self._host, event, self._src(), self._remote, 0, why)

    def _on_refused(self, reason: str, now: float) -> None:
        if self._state == "connecting" and not self._closed:
            self._fail(now, errno.ECONNREFUSED, reason)

    def _on_synack(self, server: TCPSocket, now: float) -> None:
        if self._state != "connecting" or self._closed or self._frozen:
            reset = functools.partial(server._on_rst, "the client gave up connecting")
            send_rst(self._net, self._host, self._src(), server._src(), reset, now)
            return
        self._state = "connected"
        self._peer = server
        self._credit = server._rcvbuf
        assert self._remote is not None
        self._net._record(now, self._host, "tcp.established", self._src(), self._remote)
        self._net._counts["connections"] += 1

    # ---- ending ----------------------------------------------------------

    def _on_close(self, now: float) -> None:
        if self._state == "listening":
            drop_queues(self, now, "the listener closed")
        elif self._state == "connecting":
            assert self._flow is not None
            self._flow.discard()
            self._state = "failed"
        elif self._state == "connected":
            if self._abort_on_close:
                self._abort(now, "the peer closed with SO_LINGER 0")
            elif self._rbuf:
                self._abort(now, "the peer closed with unread data")
            else:
                self._shut_wr = True
                self._pump(now)

    def _on_crash(self, now: float) -> None:
        reason = f"host {self._host.name!r} crashed"
        if self._state == "listening":
            drop_queues(self, now, reason)
        elif self._state == "connecting":
            assert self._flow is not None
            self._flow.discard()
        elif self._state == "connected":
            self._abort(now, reason)


# ---- the handshake ------------------------------------------------------------


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
