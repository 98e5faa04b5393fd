"""The socket paths of a MessageChannel: the stdlib socket fast path, and trio's socket methods.

The fast path (docs/design/fast-path.rst) is taken when the channel's stream is
a :class:`trio.SocketStream` (also under a server's idle-timeout wrapper) over
trio's own socket: ``receive()`` and ``send()`` call the non-blocking stdlib
socket directly, and wait only when it cannot proceed. A socket of the virtual
network or of a custom factory is written through trio's socket methods instead
(``_write_socket``), whose exact cancellation semantics give the same contract;
it is read through the stream, as every other stream is (``channel_stream.py``).
"""

from __future__ import annotations

import errno
import functools
import socket as _stdlib_socket
from typing import Any, Final

import trio

from .._sansio.codecs import Buffer
from .channel_stream import ChannelStreamPaths

__all__ = ["ChannelSocketPaths"]

# What trio's SocketStream maps to ClosedResourceError (trio/_highlevel_socket.py,
# _closed_stream_errnos); every other OSError is a BrokenResourceError.
_CLOSED_ERRNOS: Final = frozenset({errno.EBADF, errno.ENOTSOCK})


class ChannelSocketPaths(ChannelStreamPaths):
    """Reading and writing a socket directly (a private base of :class:`~trionet.MessageChannel`)."""

    __slots__ = ()

    # ------------------------------------------------------------------ receiving

    async def _read_frame_raw(self, sock: _stdlib_socket.socket) -> Any:
        # The fast path (docs/design/fast-path.rst): read the stdlib socket
        # directly and wait only when it has nothing, so a receive that finds its
        # bytes already in the kernel costs one schedule point (the shielded one
        # below), and one that waited costs no more than the wait. Bytes read are
        # fed to the decoder before any yield: a cancellation loses nothing.
        scheduled = False
        try:
            while True:
                try:
                    frame = self._read_raw_nowait(sock)
                except BlockingIOError:
                    frame = None
                    would_block = True
                else:
                    would_block = False
                if would_block:
                    # Waited for outside the except clause: an exception being
                    # handled stays alive, with its traceback, for as long as
                    # the clause runs (545 bytes per idle connection).
                    if self._ending and not self._decoder.buffered:
                        raise trio.EndOfChannel
                    await self._wait_readable_raw(sock)
                    scheduled = True
                    continue
                if frame is not None:
                    break
        except Exception:
            # Errors are checkpoints too, as trio's own socket calls make them.
            if not scheduled:
                await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return frame

    def _read_raw_nowait(self, sock: _stdlib_socket.socket) -> bytes | None:
        self._check_receive_state()
        try:
            data = sock.recv(self._read_size)
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                raise trio.ClosedResourceError("the stream was closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        if data:
            if self._activity is not None or self._frame_timeout is not None:
                now = trio.current_time()
                if self._activity is not None:
                    self._activity.last_activity = now
                self._last_feed_at = now
        else:
            self._eof_received = True
            self._check_receive_state()
        self._bytes_received += len(data)
        decoder = self._decoder
        decoder.feed(data)
        return decoder.next_frame()

    async def _wait_readable_raw(self, sock: _stdlib_socket.socket) -> None:
        try:
            if self._decoder.buffered:
                if self._frame_timeout is None:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await self._within_frame_timeout(functools.partial(trio.lowlevel.wait_readable, sock))
                return
            self._waiting_first_byte = True
            try:
                await trio.lowlevel.wait_readable(sock)
            finally:
                self._waiting_first_byte = False
        except trio.ClosedResourceError as exc:
            # Either aclose() (ours or the stream's) closed the socket, or
            # end_when_idle() woke this wait with notify_closing() and the socket
            # is still open: then return, and the caller reads what is readable
            # and ends the channel if there is nothing.
            if self._aborted is not None:
                raise trio.BrokenResourceError("the channel was aborted") from exc
            if self._closed or sock.fileno() == -1 or not self._ending:
                raise

    # -------------------------------------------------------------------- sending

    @trio.lowlevel.enable_ki_protection
    async def _write(self, data: bytes | bytearray, count: int) -> None:
        # send() when another task is sending, send_many(), and every send
        # without the fast path: take the sending side, then the path at hand.
        scheduled = await self._acquire_sender()
        try:
            self._check_send_state()
            sock = self._raw
            if sock is not None:
                sent = self._send_raw_nowait(sock, data)
                if sent != len(data):
                    await self._finish_raw_frame(sock, data, sent)
                    scheduled = True
            else:
                scheduled = True
                if self._socket is not None:
                    await self._write_socket(self._socket, data)
                else:
                    await self._write_stream(data)
            self._messages_sent += count
            self._bytes_sent += len(data)
        finally:
            self._release_sender()
        if not scheduled:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _send_raw_nowait(self, sock: _stdlib_socket.socket, data: Buffer) -> int:
        try:
            sent = sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS or sock.fileno() == -1:
                raise trio.ClosedResourceError("the stream was closed") from exc
            self._aborted = trio.BrokenResourceError(f"socket connection broken: {exc}")
            raise self._aborted from exc
        if self._activity is not None:
            self._activity.last_activity = trio.current_time()
        return sent

    async def _wait_writable_raw(self, sock: _stdlib_socket.socket) -> None:
        while True:
            try:
                await trio.lowlevel.wait_writable(sock)
                return
            except trio.ClosedResourceError:
                # end_when_idle() wakes the socket's waiters with notify_closing()
                # without closing it: then wait again.
                if self._closed or sock.fileno() == -1:
                    raise

    async def _finish_raw_frame(self, sock: _stdlib_socket.socket, data: Buffer, sent: int) -> None:
        # The socket did not take the whole frame at once: the slow path, with
        # the semantics of _write_socket_frame below. Until the first byte is out
        # a cancellation means nothing was sent; after it, the frame is finished
        # under a shield, bounded by abort_timeout.
        activity = self._activity
        if activity is not None:
            activity.sending += 1
        try:
            with memoryview(data) as view:
                total = len(view)
                while not sent:
                    await self._wait_writable_raw(sock)
                    sent = self._send_raw_nowait(sock, view)
                try:
                    while sent < total:
                        await self._wait_writable_raw(sock)
                        sent += self._send_raw_nowait(sock, view[sent:])
                    return
                except trio.Cancelled:
                    # The frame has started: finish it below. The caller's scope
                    # stays cancelled, so its next checkpoint raises Cancelled again.
                    pass
                with trio.move_on_after(self._abort_timeout, shield=True):
                    while sent < total:
                        await self._wait_writable_raw(sock)
                        sent += self._send_raw_nowait(sock, view[sent:])
                if sent < total:
                    await self._abort(f"{sent} of {total} bytes were written")
        finally:
            if activity is not None:
                activity.sending -= 1


    async def _write_socket(self, sock: trio.socket.SocketType, data: bytes | bytearray) -> None:
        # trio's socket methods have exact cancellation semantics: a send() that
        # raises Cancelled sent nothing, and one that returns reports how much it
        # sent. So the first call is the only point at which a cancellation may
        # take effect, and after it we know precisely how much of the frame is out.
        activity = self._activity
        if activity is not None:
            activity.last_activity = trio.current_time()
            activity.sending += 1
        try:
            await self._write_socket_frame(sock, data)
        finally:
            if activity is not None:
                activity.sending -= 1

    async def _write_socket_frame(self, sock: trio.socket.SocketType, data: bytes | bytearray) -> None:
        with memoryview(data) as view:
            total = len(view)
            sent = await self._socket_send(sock, view)
            if sent == total:
                return
            try:
                while sent < total:
                    sent += await self._socket_send(sock, view[sent:])
                return
            except trio.Cancelled:
                # The frame has started: finish it below. The caller's scope stays
                # cancelled, so the next checkpoint raises Cancelled again.
                pass
            with trio.move_on_after(self._abort_timeout, shield=True):
                while sent < total:
                    sent += await self._socket_send(sock, view[sent:])
            if sent < total:
                await self._abort(f"{sent} of {total} bytes were written")

    async def _socket_send(self, sock: trio.socket.SocketType, view: memoryview) -> int:
        try:
            sent = await sock.send(view)
            if self._activity is not None:
                self._activity.last_activity = trio.current_time()
            return sent
        except OSError as exc:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("the stream was closed") from exc
            self._aborted = trio.BrokenResourceError(f"socket connection broken: {exc}")
            raise self._aborted from exc
