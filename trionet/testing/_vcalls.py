"""How virtual socket calls wait, and the calls that move data (``recv*``, ``send*``).

Cancellation follows trio's real sockets exactly. Every async method is a
checkpoint. An operation either completes, or raises :class:`trio.Cancelled`
having done nothing: a cancelled ``send`` accepted no bytes, a cancelled ``recv``
or ``accept`` consumed nothing, a cancelled ``connect`` closed the socket (as
trio's does). A call that cannot complete at once parks the task (at most one
task may wait to read and one to write, else :class:`trio.BusyResourceError`);
closing the socket wakes it with :class:`trio.ClosedResourceError`; a call on a
closed socket raises ``EBADF``.

Every call is built on :meth:`SocketCalls._io`: the protocol supplies an
*attempt* that either completes the operation with the network as it is now, or
returns ``BLOCKED`` having changed nothing. TCP and UDP implement the data hooks
``_recv_now`` and ``_send_now`` that way.

:class:`NonBlockingCalls` runs the same attempts once, synchronously, as a
non-blocking system call does: the result, or :exc:`BlockingIOError` where
``_io`` would wait. It is the view a virtual UDP socket gives trionet's UDP
endpoint (``_nonblocking_view()``), so the endpoint's receive drain runs on the
virtual network as on a system socket.

Supported flags: ``MSG_PEEK`` and ``MSG_DONTWAIT`` for receiving (``MSG_TRUNC``
is reported in ``recvmsg``'s flags when a datagram was cut), ``MSG_DONTWAIT``
and ``MSG_NOSIGNAL`` for sending. Other flags and ancillary data raise
:class:`NotImplementedError`.

``MSG_DONTWAIT`` does not make a call fail with ``EAGAIN``: trio's real sockets
run every call through ``_nonblocking_helper``, which treats ``EAGAIN`` (what the
flag makes the kernel return) like any would-block and waits for the socket, so
``await sock.recv(n, MSG_DONTWAIT)`` waits there too. Code that wants "only if
ready" uses a cancel scope (``trio.move_on_after(0)``) on either.
"""

from __future__ import annotations

import enum
import errno
import operator
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import trio

from ._vsocket import VirtualSocket, fail

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["BLOCKED", "NonBlockingCalls", "SocketCalls"]

T = TypeVar("T")


class _Blocked(enum.Enum):
    BLOCKED = 0


#: Returned by an attempt that must wait for the network.
BLOCKED: Final = _Blocked.BLOCKED

_RECV_FLAGS: Final = socket.MSG_PEEK | socket.MSG_DONTWAIT
_SEND_FLAGS: Final = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


class SocketCalls(VirtualSocket):
    """The waiting machinery and data calls of a virtual socket."""

    async def _io(
        self,
        direction: Literal["read", "write", ""],
        attempt: Callable[[float], T | _Blocked],
    ) -> T:
        """Run ``attempt(now)`` until it stops returning BLOCKED, parking between tries.

        This is trio's ``_nonblocking_helper`` for the virtual network: a checkpoint
        whether or not it blocks, and ``attempt`` changes state only when it
        succeeds, so a cancel (which can only happen while parked) leaves nothing done.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False  # returned from a wait
        parked = False  # began one (a cancel may end it by raising)
        try:
            while True:
                now = self._net._events.advance()
                if self._closed:
                    if waited:
                        raise trio.ClosedResourceError("another task closed this socket")
                    raise fail(errno.EBADF)
                if not self._frozen:
                    result = attempt(now)
                    if result is not BLOCKED:
                        break
                parked = True
                await self._park(direction)
                waited = True
        except Exception:
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        finally:
            if parked:
                self._net._events.release()  # stopped waiting: someone else may keep time
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    def _nowait(self, attempt: Callable[[float], T | _Blocked]) -> T:
        """Run ``attempt(now)`` once, as a non-blocking system call: ``EAGAIN`` where ``_io`` waits.

        Not a checkpoint. Like every synchronous call it first runs the
        network's due events (:meth:`_check_open`). A crashed host's socket
        has nothing to give: ``EAGAIN``, until it is closed (``EBADF``).

        Raises:
          BlockingIOError: ``attempt`` returned BLOCKED; nothing changed.
          OSError: ``EBADF`` if the socket is closed, or what ``attempt`` raised.
        """
        now = self._net._events.advance()
        if self._closed:
            raise fail(errno.EBADF)
        if not self._frozen:
            result = attempt(now)
            if result is not BLOCKED:
                return result
        raise fail(errno.EAGAIN)

    async def _park(self, direction: Literal["read", "write", ""]) -> None:
        if self._frozen:
            # A crashed host runs no code: wait for the application to close it,
            # outside the network's waiting (if this task kept time, another does).
            self._net._events.release()
            await self._closed_event.wait()
            return
        if direction:
            if self._waiting[direction]:
                raise trio.BusyResourceError(f"another task is already waiting to {direction} on this socket")
            self._waiting[direction] = True
        try:
            await self._net._events.wait(self._lot)
        finally:
            if direction:
                self._waiting[direction] = False

    # ---- receiving --------------------------------------------------------

    def _recv_now(
        self, now: float, nbytes: int, peek: bool
    ) -> tuple[bytes, tuple[Any, ...] | None, int] | _Blocked:
        raise NotImplementedError

    async def _recv(self, call: str, nbytes: int, flags: int) -> tuple[bytes, Any, int]:
        nbytes = operator.index(nbytes)  # TypeError for 1.5, as the stdlib raises
        if nbytes < 0:
            raise ValueError(f"negative buffersize in {call}")
        if flags & ~_RECV_FLAGS:
            raise NotImplementedError(
                f"{call}() flags {flags:#x}: only MSG_PEEK and MSG_DONTWAIT are supported"
            )
        peek = bool(flags & socket.MSG_PEEK)
        return await self._io("read", lambda now: self._recv_now(now, nbytes, peek))

    async def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        """Like :meth:`socket.socket.recv`: up to ``bufsize`` bytes, ``b""`` at end of stream.

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        data, _address, _flags = await self._recv("recv", bufsize, flags)
        return data

    async def recv_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`socket.socket.recv_into`.

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        with memoryview(buffer) as view:
            data, _address, _flags = await self._recv("recv_into", nbytes or view.nbytes, flags)
            view[: len(data)] = data
        return len(data)

    async def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """Like :meth:`socket.socket.recvfrom` (the address is ``None`` for TCP).

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        data, address, _flags = await self._recv("recvfrom", bufsize, flags)
        return data, address

    async def recvfrom_into(self, buffer: Buffer, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        """Like :meth:`socket.socket.recvfrom_into`.

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        with memoryview(buffer) as view:
            data, address, _flags = await self._recv("recvfrom_into", nbytes or view.nbytes, flags)
            view[: len(data)] = data
        return len(data), address

    async def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """Like :meth:`socket.socket.recvmsg`, without ancillary data; flags may hold ``MSG_TRUNC``.

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        if ancbufsize:
            raise NotImplementedError("recvmsg() with ancillary data is not supported")
        data, address, msg_flags = await self._recv("recvmsg", bufsize, flags)
        return data, [], msg_flags, address

    async def recvmsg_into(
        self, buffers: Iterable[Buffer], ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        """Like :meth:`socket.socket.recvmsg_into`, without ancillary data.

        Cancellation:
          Raises :class:`trio.Cancelled` having consumed nothing.
        """
        if ancbufsize:
            raise NotImplementedError("recvmsg_into() with ancillary data is not supported")
        views = [memoryview(b).cast("B") for b in buffers]
        data, address, msg_flags = await self._recv("recvmsg_into", sum(v.nbytes for v in views), flags)
        offset = 0
        for view in views:
            piece = data[offset : offset + view.nbytes]
            view[: len(piece)] = piece
            offset += len(piece)
        return len(data), [], msg_flags, address

    # ---- sending ----------------------------------------------------------

    def _send_now(self, now: float, data: memoryview, address: object) -> int | _Blocked:
        raise NotImplementedError

    async def _send(self, call: str, data: memoryview, flags: int, address: object) -> int:
        if flags & ~_SEND_FLAGS:
            raise NotImplementedError(
                f"{call}() flags {flags:#x}: only MSG_DONTWAIT and MSG_NOSIGNAL are supported"
            )
        return await self._io("write", lambda now: self._send_now(now, data, address))

    async def send(self, data: Buffer, flags: int = 0, /) -> int:
        """Like :meth:`socket.socket.send`: how many bytes were accepted (TCP: maybe fewer).

        Cancellation:
          Raises :class:`trio.Cancelled` having accepted no byte.
        """
        with memoryview(data) as view:
            return await self._send("send", view.cast("B"), flags, None)

    @overload
    async def sendto(self, data: Buffer, address: tuple[object, ...] | str | Buffer, /) -> int: ...

    @overload
    async def sendto(
        self, data: Buffer, flags: int, address: tuple[object, ...] | str | Buffer, /
    ) -> int: ...

    async def sendto(self, *args: Any) -> int:
        """Like :meth:`socket.socket.sendto`: ``sendto(data[, flags], address)``.

        Cancellation:
          Raises :class:`trio.Cancelled` having sent nothing.
        """
        if len(args) == 2:
            (data, address), flags = args, 0
        elif len(args) == 3:
            data, flags, address = args
        else:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(args)} given)")
        with memoryview(data) as view:
            return await self._send("sendto", view.cast("B"), flags, address)

    async def sendmsg(
        self,
        buffers: Iterable[Buffer],
        ancdata: Iterable[tuple[int, int, Buffer]] = (),
        flags: int = 0,
        address: Any = None,
        /,
    ) -> int:
        """Like :meth:`socket.socket.sendmsg`, without ancillary data (one datagram for UDP).

        Cancellation:
          Raises :class:`trio.Cancelled` having accepted no byte.
        """
        if list(ancdata):
            raise NotImplementedError("sendmsg() with ancillary data is not supported")
        data = memoryview(b"".join(buffers))
        return await self._send("sendmsg", data, flags, address)


class NonBlockingCalls:
    """A virtual socket's calls that never wait: a socket in non-blocking mode, and its readiness.

    What ``UDPSocket._nonblocking_view()`` returns, and what trionet's UDP
    endpoint calls on a system socket: ``recvfrom``, ``send`` and ``sendto``
    return at once or raise :exc:`BlockingIOError` (and the errors the async
    calls raise: ``ECONNREFUSED`` once after an ICMP port-unreachable on a
    connected socket, ``EBADF`` once closed). ``recvfrom(n)`` of a longer
    datagram returns its first ``n`` bytes and discards the rest, as the
    system call does. ``wait_readable()`` and ``wait_writable()`` stand for
    :func:`trio.lowlevel.wait_readable` and :func:`~trio.lowlevel.wait_writable`
    on the socket.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: SocketCalls) -> None:
        self._sock = sock

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        """Like :meth:`socket.socket.recvfrom` on a non-blocking socket.

        Raises:
          BlockingIOError: Nothing has arrived; nothing changed.
        """
        sock = self._sock
        nbytes = operator.index(bufsize)
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom")
        if flags & ~_RECV_FLAGS:
            raise NotImplementedError(
                f"recvfrom() flags {flags:#x}: only MSG_PEEK and MSG_DONTWAIT are supported"
            )
        peek = bool(flags & socket.MSG_PEEK)
        data, address, _flags = sock._nowait(lambda now: sock._recv_now(now, nbytes, peek))
        return data, address

    def send(self, data: Buffer, /) -> int:
        """Like :meth:`socket.socket.send` on a non-blocking socket (to the connected peer).

        Raises:
          BlockingIOError: The send would wait; nothing was sent.
        """
        return self.sendto(data, None)

    def sendto(self, data: Buffer, address: Any, /) -> int:
        """Like :meth:`socket.socket.sendto` on a non-blocking socket (``None``: as :meth:`send`).

        Raises:
          BlockingIOError: The send would wait; nothing was sent.
        """
        sock = self._sock
        with memoryview(data) as view:
            flat = view.cast("B")
            return sock._nowait(lambda now: sock._send_now(now, flat, address))

    async def wait_readable(self) -> None:
        """Wait until a ``recvfrom`` would not raise :exc:`BlockingIOError` (data, an error).

        Raises:
          trio.ClosedResourceError: Another task closed the socket meanwhile.
          trio.BusyResourceError: Another task waits to read on the socket.

        Cancellation:
          A checkpoint; nothing is consumed.
        """
        sock = self._sock
        await sock._io("read", lambda now: None if sock.is_readable() else BLOCKED)

    async def wait_writable(self) -> None:
        """Wait until a send would not raise :exc:`BlockingIOError`.

        Cancellation:
          A checkpoint; nothing is sent.
        """
        await self._sock.wait_writable()
