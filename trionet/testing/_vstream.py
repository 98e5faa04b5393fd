"""A virtual TCP endpoint's byte stream: finite buffers, a window, FIN and RST.

The model, per connection endpoint:

- A **send buffer** (``SO_SNDBUF``) holds bytes the application handed to
  ``send()`` until the peer acknowledges them. ``send()`` accepts only what
  fits, so it returns short counts near the limit and blocks when the buffer is
  full: that is backpressure.
- A **receive buffer** (``SO_RCVBUF``) holds bytes that arrived and were not yet
  read. The sender never has more bytes in flight or unread at the peer than the
  peer's receive buffer holds (a window, credited back as the reader reads).
- Sizes follow Linux: a new socket's buffers are ``tcp_wmem[1]`` and
  ``tcp_rmem[1]`` (16 KiB and 128 KiB); a connected socket's send buffer is
  ``tcp_wmem[2]`` (4 MiB: on loopback Linux grows it to about that at once),
  and its receive buffer doubles, up to ``tcp_rmem[2]``, each time the
  application has read a full buffer's worth (a coarse model of Linux's
  receive autotuning, which grows it only for a reader that keeps up). So a
  peer that does not read holds back a writer after about 4 MiB + 128 KiB, as on
  Linux, and one ``recv()`` returns up to a window (128 KiB at first).
  ``setsockopt(SO_SNDBUF/SO_RCVBUF, n)`` stores ``2 * n``, clamped as Linux
  clamps it, and turns autotuning off; so does the network's fixed
  ``tcp_buffer_size``. Sizes count payload bytes, not kernel memory.
- Segments of up to 64 KiB cross a :class:`~._vflow.Flow`, which keeps them in
  order and holds them while the path is cut.

Endings: ``shutdown(SHUT_WR)`` sends FIN after the pending data (the peer reads
``b""``). Data arriving at a closed endpoint is answered with RST. A reset
endpoint reports ``ECONNRESET`` once, after the data it had already received;
later sends fail with ``EPIPE`` and receives return ``b""``. As on Linux
(``tcp_reset()``, ``tcp_recvmsg()``): an RST that comes after the peer's FIN
reports ``EPIPE`` instead, and a receive after a FIN returns ``b""`` even with an
error pending; once both FINs are acknowledged the connection is closed
(``getpeername()`` and ``shutdown()`` fail with ``ENOTCONN``) and an RST changes
nothing.

How connections are made, listened for and closed is in :mod:`._vtcp`, whose
:class:`~._vtcp.TCPSocket` builds on :class:`TCPStream`.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import Any, Final, Literal

from ._vcalls import BLOCKED, SocketCalls, _Blocked
from ._vflow import Flow
from ._vsocket import fail, linux_buffer_size
from ._vtypes import Address, Host, Network

__all__ = ["TCPStream"]

# Largest segment handed to the network at once (a TSO/GSO-sized burst);
# smaller ones only make more events.
_SEGMENT: Final = 65536

TCPState = Literal["new", "listening", "connecting", "connected", "failed"]


class TCPStream(SocketCalls):
    """The data path of a virtual ``SOCK_STREAM`` socket (see :class:`~._vtcp.TCPSocket`)."""

    def __init__(
        self,
        net: Network,
        host: Host,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        proto: int,
    ) -> None:
        super().__init__(net, host, family, kind, proto)
        self._state: TCPState = "new"
        fixed = net.tcp_buffer_size
        self._sndbuf = fixed or net.tcp_wmem[1]
        self._rcvbuf = fixed or net.tcp_rmem[1]
        self._snd_locked = self._rcv_locked = fixed is not None  # no autotuning
        self._read_since_growth = 0
        self._peer: TCPStream | None = None
        self._local_ip: str | None = None
        self._remote: Address | None = None
        self._flow: Flow | None = None
        self._unsent = bytearray()
        self._unacked = 0
        self._credit = 0
        self._rbuf = bytearray()
        self._eof = False  # FIN received
        self._shut_rd = False
        self._shut_wr = False
        self._fin_sent = False
        self._fin_first = False  # our FIN left before the peer's arrived: TIME_WAIT is ours
        self._fin_acked = False  # our FIN reached the peer
        self._error: OSError | None = None  # reported once, by whichever call comes first
        self._gone = False  # reset, timed out or crashed: sends and receives nothing more

    # ---- state queries ----------------------------------------------------

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return self._shut_wr

    def _take_error(self) -> int:
        error, self._error = self._error, None
        return error.errno if error is not None and error.errno is not None else 0

    def _buffer_size(self, which: Literal["send", "receive"]) -> int:
        return self._sndbuf if which == "send" else self._rcvbuf

    def _set_buffer_size(self, which: Literal["send", "receive"], size: int) -> None:
        value = linux_buffer_size(which, size)
        if which == "send":
            self._sndbuf, self._snd_locked = value, True
        else:
            self._rcvbuf, self._rcv_locked = value, True

    def _on_established(self) -> None:
        """Send-buffer autotuning: Linux grows a connected loopback socket's at once."""
        if not self._snd_locked:
            self._sndbuf = max(self._sndbuf, self._net.tcp_wmem[2])

    def _space(self) -> int:
        return self._sndbuf - len(self._unsent) - self._unacked

    def _src(self) -> Address:
        assert self._local is not None
        assert self._local_ip is not None
        return (self._local_ip, self._local[1])

    def getsockname(self) -> tuple[Any, ...]:
        self._check_open()
        if self._local_ip is not None and self._local is not None:
            return self._sockaddr(self._local_ip, self._local[1])
        return super().getsockname()

    def _finished(self) -> bool:
        """Both FINs are through: Linux's TCP_CLOSE (or TIME_WAIT, which looks the same)."""
        return self._eof and self._fin_acked

    def _established(self) -> bool:
        return self._state == "connected" and not self._gone and not self._finished()

    def getpeername(self) -> tuple[Any, ...]:
        self._check_open()
        if not self._established() or self._remote is None:
            raise fail(errno.ENOTCONN)
        return self._sockaddr(*self._remote)

    # ---- data -------------------------------------------------------------

    def _send_now(self, now: float, data: memoryview, address: object) -> int | _Blocked:
        # Linux's tcp_sendmsg() ignores a destination address, and fails with
        # EPIPE on a socket that is not connected (new or listening).
        if self._state == "connecting":
            return BLOCKED
        if self._state not in ("connected", "failed"):
            raise fail(errno.EPIPE)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._gone or self._shut_wr or self._state == "failed":
            raise fail(errno.EPIPE)
        if not data:
            return 0
        space = self._space()
        if space <= 0:
            return BLOCKED
        taken = min(space, len(data))
        self._unsent += data[:taken]
        self._pump(now)
        return taken

    def _recv_now(self, now: float, nbytes: int, peek: bool) -> tuple[bytes, None, int] | _Blocked:
        if self._state == "connecting":
            return BLOCKED
        if self._state not in ("connected", "failed"):
            raise fail(errno.ENOTCONN)
        if self._rbuf and nbytes:
            data = bytes(self._rbuf[:nbytes])
            if not peek:
                del self._rbuf[: len(data)]
                window = len(data) + self._autotune_receive(len(data))
                if self._peer is not None and self._flow is not None and not self._gone:
                    credit = functools.partial(self._peer._on_window, window)
                    self._flow.send(now, "window", 0, credit)
            return data, None, 0
        if self._eof:
            return b"", None, 0  # tcp_recvmsg(): SOCK_DONE before sk_err
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._shut_rd or self._gone or self._state == "failed" or not nbytes:
            return b"", None, 0
        return BLOCKED

    def _autotune_receive(self, read: int) -> int:
        """Grow the receive buffer for a reader that keeps up; return the growth."""
        if self._rcv_locked:
            return 0
        self._read_since_growth += read
        limit = self._net.tcp_rmem[2]
        if self._read_since_growth < self._rcvbuf or self._rcvbuf >= limit:
            return 0
        grown = min(2 * self._rcvbuf, limit)
        growth, self._rcvbuf, self._read_since_growth = grown - self._rcvbuf, grown, 0
        return growth

    async def wait_writable(self) -> None:
        """Wait until ``send()`` would accept a byte (or fail at once).

        Cancellation:
          Raises :class:`trio.Cancelled`; nothing else happens.
        """

        def attempt(now: float) -> _Blocked | None:
            if self._state == "connecting":
                return BLOCKED
            writable = self._state != "connected" or self._gone or self._shut_wr
            return None if writable or self._space() > 0 else BLOCKED

        await self._io("write", attempt)

    def _pump(self, now: float) -> None:
        """Hand as much unsent data (then the FIN) to the network as the window allows."""
        peer, flow = self._peer, self._flow
        if peer is None or flow is None or self._gone:
            return
        src = self._src()
        while self._unsent and self._credit > 0:
            size = min(len(self._unsent), self._credit, _SEGMENT)
            chunk = bytes(self._unsent[:size])
            del self._unsent[:size]
            self._credit -= size
            self._unacked += size
            self._net._record(now, self._host, "tcp.send", src, flow.dst, size)
            flow.send(now, "data", size, functools.partial(peer._on_data, chunk), counted=True)
        if self._shut_wr and not self._unsent and not self._fin_sent:
            self._fin_sent = True
            self._fin_first = not self._eof
            flow.send(now, "fin", 0, peer._on_fin, counted=True)

    def _on_data(self, chunk: bytes, now: float) -> None:
        peer, flow = self._peer, self._flow
        assert peer is not None
        assert flow is not None
        if self._closed or self._frozen or self._gone:
            self._abort(now, "data arrived after the peer closed")
            return
        self._rbuf += chunk
        self._net._record(now, self._host, "tcp.deliver", flow.dst, self._src(), len(chunk))
        self._net._counts["stream_bytes"] += len(chunk)
        flow.send(now, "ack", 0, functools.partial(peer._on_ack, len(chunk)))

    def _on_ack(self, size: int, now: float) -> None:
        self._unacked = max(0, self._unacked - size)

    def _on_window(self, size: int, now: float) -> None:
        self._credit += size
        self._pump(now)

    def _on_fin(self, now: float) -> None:
        if self._gone or self._eof:
            return
        self._eof = True
        assert self._flow is not None
        assert self._peer is not None
        self._net._record(now, self._host, "tcp.fin", self._flow.dst, self._src())
        self._flow.send(now, "ack", 0, self._peer._on_fin_ack)

    def _on_fin_ack(self, now: float) -> None:
        self._fin_acked = True

    def _on_rst(self, reason: str, now: float) -> None:
        if self._gone or self._finished():
            return
        self._gone = True
        self._unsent.clear()
        self._unacked = 0
        if self._flow is not None:
            self._flow.discard()
        if not self._closed:
            # tcp_reset(): in CLOSE_WAIT (the peer's FIN came, ours did not go) it is EPIPE.
            code = errno.EPIPE if self._eof and not self._fin_sent else errno.ECONNRESET
            self._error = fail(code, reason)
        src, dst = (self._src(), self._flow.dst) if self._flow is not None else (None, None)
        self._net._record(now, self._host, "tcp.reset", dst, src, 0, reason)
        self._net._counts["resets"] += 1

    def _abort(self, now: float, reason: str) -> None:
        """Reset the connection: drop what is unsent, tell the peer with RST."""
        if self._gone:
            return
        self._gone = True
        self._unsent.clear()
        peer, flow = self._peer, self._flow
        if peer is not None and flow is not None:
            flow.discard(dead=False)
            flow.send(now, "rst", 0, functools.partial(peer._on_rst, reason))

    def _timed_out(self, now: float) -> None:
        if self._gone or self._state != "connected":
            return
        seconds = self._net.tcp_user_timeout
        if not self._closed:
            self._error = fail(errno.ETIMEDOUT, f"no acknowledgement for {seconds} s")
        assert self._flow is not None
        note = f"unacknowledged for {seconds} s"
        self._net._record(now, self._host, "tcp.timeout", self._src(), self._flow.dst, 0, note)
        self._abort(now, "the peer timed out")

    # ---- ending ----------------------------------------------------------

    def shutdown(self, flag: int) -> None:
        self._check_open()
        now = self._net._events.advance()
        if flag not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise fail(errno.EINVAL)
        if not self._established():
            raise fail(errno.ENOTCONN)
        if flag in (socket.SHUT_RD, socket.SHUT_RDWR):
            self._shut_rd = True
        if flag in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._shut_wr = True
            self._pump(now)
        self._net._events.notify()
