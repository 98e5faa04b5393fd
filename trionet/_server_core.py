"""The server machinery that serve_tcp and serve_unix share: ServerCore.

A server is two nurseries in the task that ``nursery.start`` runs: one with an
accept loop per listening socket, inside one with a task per connection. The
handler runs in that task; with ``idle_timeout`` a watcher runs beside it in a
nursery of the connection's own, and nothing else runs anywhere. Shutdown
cancels the accept loops and closes the listening sockets at once (synchronously,
so no connection is accepted after it starts), lets the handlers run until the
grace deadline, then cancels the rest, and returns when every connection is
closed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar, final

import trio

from ._channel import MessageChannel
from ._connection import Connection
from ._idle import IdleTrackingStream, wait_idle
from ._observe import Observer, emit
from ._sansio.codecs import Codec
from ._sansio.errors import FramingError
from ._server_base import BaseServer, ServerStatistics

__all__ = [
    "ACCEPT_BACKOFF_INITIAL",
    "ACCEPT_BACKOFF_MAX",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "ServerCore",
]

#: The logger for handler errors, accept errors and shed connections.
LOGGER: Final = logging.getLogger("trionet")

# Go's net/http Server.Serve: on a temporary accept error it sleeps 5 ms, doubles
# the delay on each further error up to 1 s, and resets it after a success.
ACCEPT_BACKOFF_INITIAL: Final = 0.005
ACCEPT_BACKOFF_MAX: Final = 1.0
# asyncio's ssl_handshake_timeout default (asyncio.constants.SSL_HANDSHAKE_TIMEOUT).
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 60.0
# SO_LINGER on with a zero timeout: close() sends a TCP reset.
_LINGER_ABORT: Final = struct.pack("ii", 1, 0)
# After a handler returns, a TLS connection sends close_notify (so the peer can
# tell an orderly end from a truncation); a peer that does not read gets this long.
_TLS_CLOSE_TIMEOUT: Final = 5.0

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
# Exceptions a handler lets escape because of what the peer did, not because of
# a bug: logged at INFO without a traceback, so a bad peer cannot flood the log.
_PEER_ERRORS: Final = (trio.BrokenResourceError, trio.EndOfChannel, FramingError)

ConnT = TypeVar("ConnT", bound=Connection[Any])
MakeConnection = Callable[
    [trio.abc.Stream, trio.socket.SocketType, Any, "MessageChannel | None"], ConnT
]


def _check_timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


@final
class ServerCore(Generic[ConnT]):
    """Accept loops, connection tasks, limits and shutdown for one server.

    Private: :func:`~trionet.serve_tcp` and :func:`~trionet.serve_unix` build one
    and hand it their listening sockets and a factory for their connection type.
    ``kind`` prefixes the observer events (``"tcp"``, ``"unix"``).
    """

    def __init__(
        self,
        handler: Callable[[ConnT], Awaitable[object]],
        *,
        kind: str,
        describe_peer: Callable[[Any], object],
        codec: Codec | None,
        max_connections: int | None,
        idle_timeout: float | None,
        frame_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None,
        tls_handshake_timeout: float,
        strict: bool,
        observer: Observer | None,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, not {handler!r}")
        if max_connections is not None and (
            not isinstance(max_connections, int) or max_connections < 1
        ):
            raise ValueError(
                f"max_connections must be a positive int or None, not {max_connections!r}"
            )
        self._handler = handler
        self._kind = kind
        self._describe_peer = describe_peer
        self._codec = codec
        self._limit = max_connections
        self._idle_timeout = _check_timeout("idle_timeout", idle_timeout)
        self._frame_timeout = _check_timeout("frame_timeout", frame_timeout)
        self._ssl_context = ssl_context
        self._handshake_timeout = _check_timeout("tls_handshake_timeout", tls_handshake_timeout)
        self._strict = strict
        self._observer = observer
        self._make_connection: MakeConnection[ConnT] | None = None
        self._on_listeners_closed: Callable[[], None] | None = None
        self._sockets: list[trio.socket.SocketType] = []
        self._handlers: trio.Nursery | None = None
        self._accept_scope = trio.CancelScope()
        self._accept_scopes: list[trio.CancelScope] = []  # accepts that a limit may cut short
        self._slot_freed = trio.lowlevel.ParkingLot()
        self._all_closed = trio.Event()
        self._stopped = trio.Event()
        self._grace_scope: trio.CancelScope | None = None
        self._grace_deadline = math.inf
        self._running = False
        self._shutting_down = False
        self._paused = False
        self._active = 0
        self._accepted = 0
        self._shed = 0
        self._handshake_failures = 0
        self._handler_errors = 0
        self._accept_errors = 0

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> int:
        return self._active

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            connections_active=self._active,
            connections_accepted=self._accepted,
            connections_shed=self._shed,
            handshake_failures=self._handshake_failures,
            handler_errors=self._handler_errors,
            accept_errors=self._accept_errors,
            accepting=self._running and not self._shutting_down and not self._paused,
            shutting_down=self._shutting_down,
        )

    # -------------------------------------------------------------------- run

    async def run(
        self,
        sockets: list[trio.socket.SocketType],
        make_connection: MakeConnection[ConnT],
        server: BaseServer,
        task_status: trio.TaskStatus[Any],
        *,
        listening: object,
        on_listeners_closed: Callable[[], None] | None = None,
    ) -> None:
        """Serve on ``sockets`` (which it owns and closes) until shut down."""
        self._sockets = sockets
        self._make_connection = make_connection
        self._on_listeners_closed = on_listeners_closed
        self._running = True
        try:
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                with self._accept_scope:
                    async with trio.open_nursery() as acceptors:
                        for sock in sockets:
                            acceptors.start_soon(self._accept_loop, sock)
                        emit(self._observer, f"{self._kind}.listening", addresses=listening)
                        task_status.started(server)
                # The accept loops end only when shutdown has begun.
                await self._drain(handlers)
            emit(self._observer, f"{self._kind}.shutdown.done")
        finally:
            self._running = False
            self._close_listeners()
            self._stopped.set()

    async def _drain(self, handlers: trio.Nursery) -> None:
        if self._active:
            with trio.CancelScope(deadline=self._grace_deadline) as scope:
                self._grace_scope = scope
                await self._all_closed.wait()
            self._grace_scope = None
        if self._active:
            emit(self._observer, f"{self._kind}.shutdown.grace_expired", cancelled=self._active)
            handlers.cancel_scope.cancel()

    def _close_listeners(self) -> None:
        for sock in self._sockets:
            sock.close()
        hook, self._on_listeners_closed = self._on_listeners_closed, None
        if hook is not None:
            hook()

    # --------------------------------------------------------------- shutdown

    def begin_shutdown(self, grace: float) -> None:
        if not grace >= 0:
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        if not self._running:
            return
        deadline = trio.current_time() + grace
        if self._shutting_down:
            # A second call may only bring the deadline closer.
            if deadline < self._grace_deadline:
                self._grace_deadline = deadline
                if self._grace_scope is not None:
                    self._grace_scope.deadline = deadline
            return
        self._shutting_down = True
        self._grace_deadline = deadline
        emit(self._observer, f"{self._kind}.shutdown.begin", grace=grace, active=self._active)
        self._accept_scope.cancel()
        # Closing now, not when the accept tasks next run, is what makes "no
        # connection is accepted after shutdown starts" hold: the kernel refuses
        # new connections from this moment.
        self._close_listeners()
        if self._active == 0:
            self._all_closed.set()

    async def shutdown(self, grace: float) -> None:
        self.begin_shutdown(grace)
        await self._stopped.wait()

    # ---------------------------------------------------------------- accepts

    async def _accept_loop(self, listener: trio.socket.SocketType) -> None:
        accept = listener.accept
        limit = self._limit
        observer = self._observer
        delay = 0.0
        while True:
            try:
                if limit is None:
                    sock, address = await accept()
                else:
                    accepted = await self._accept_within_limit(listener, limit)
                    if accepted is None:
                        continue
                    sock, address = accepted
            except (OSError, trio.ClosedResourceError) as exc:
                if self._shutting_down:
                    return  # our own close of the listener woke the accept
                if isinstance(exc, trio.ClosedResourceError):
                    raise
                if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                    continue
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                delay = min(delay * 2, ACCEPT_BACKOFF_MAX) if delay else ACCEPT_BACKOFF_INITIAL
                self._accept_error(exc, delay)
                await trio.sleep(delay)
                continue
            delay = 0.0
            self._active += 1
            self._accepted += 1
            if observer is not None:
                emit(observer, f"{self._kind}.accept", peer=self._describe_peer(address),
                     active=self._active)
            if limit is not None and self._active >= limit:
                self._pause()
            assert self._handlers is not None
            self._handlers.start_soon(self._serve, sock, address)

    async def _accept_within_limit(
        self, listener: trio.socket.SocketType, limit: int
    ) -> tuple[trio.socket.SocketType, Any] | None:
        # Accepting pauses at the limit: connections wait in the kernel's backlog
        # (nothing is refused) until a handler finishes.
        while self._active >= limit:
            self._pause()
            await self._slot_freed.park()
        # With several listeners (IPv4 and IPv6), each waits in accept() while
        # below the limit; the one that takes the last slot cancels the others.
        # trio's accept() is exact on cancellation: if it raises Cancelled, no
        # connection was taken from the backlog.
        with trio.CancelScope() as scope:
            self._accept_scopes.append(scope)
            try:
                accepted = await listener.accept()
            finally:
                self._accept_scopes.remove(scope)
        if scope.cancelled_caught:
            return None
        if self._active >= limit:
            # A sibling's accept completed in the same instant as the cancellation
            # that should have stopped it: hold the connection until a slot frees.
            try:
                while self._active >= limit:
                    await self._slot_freed.park()
            except BaseException:
                accepted[0].close()
                raise
        return accepted

    def _pause(self) -> None:
        for scope in self._accept_scopes:
            scope.cancel()
        if not self._paused:
            self._paused = True
            emit(self._observer, f"{self._kind}.paused", active=self._active, limit=self._limit)

    def _accept_error(self, exc: OSError, delay: float) -> None:
        self._accept_errors += 1
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        LOGGER.warning(
            "accept() failed with %s (%s); the server keeps running and retries in %.3f s",
            name, os.strerror(exc.errno or 0), delay,
        )
        emit(self._observer, f"{self._kind}.accept_error", errno=name, delay=delay)

    def _connection_done(self) -> None:
        self._active -= 1
        if self._shutting_down:
            if self._active == 0:
                self._all_closed.set()
        elif self._limit is not None and self._active < self._limit:
            if self._paused:
                self._paused = False
                emit(self._observer, f"{self._kind}.resumed", active=self._active)
            self._slot_freed.unpark_all()

    # ------------------------------------------------------------ connections

    async def _serve(self, sock: trio.socket.SocketType, address: Any) -> None:
        stream: trio.abc.Stream | None = None
        error: Exception | None = None
        try:
            stream = trio.SocketStream(sock)
            idle = None
            if self._idle_timeout is not None:
                stream = idle = IdleTrackingStream(stream)
            if self._ssl_context is not None:
                stream = trio.SSLStream(stream, self._ssl_context, server_side=True)
                if not await self._handshake(stream, address):
                    return
            channel = (
                MessageChannel(stream, self._codec, frame_timeout=self._frame_timeout)
                if self._codec is not None
                else None
            )
            assert self._make_connection is not None
            conn = self._make_connection(stream, sock, address, channel)
            if idle is None:
                try:
                    await self._handler(conn)
                except Exception as exc:
                    error = exc
            else:
                error = await self._run_with_idle_timeout(conn, idle, address)
            if error is not None:
                self._handler_failed(address, error)
            elif self._ssl_context is not None:
                with trio.move_on_after(_TLS_CLOSE_TIMEOUT):
                    await conn.aclose()  # sends close_notify
        finally:
            if stream is None:
                sock.close()
            else:
                await trio.aclose_forcefully(stream)
            self._connection_done()
            if self._observer is not None:
                emit(self._observer, f"{self._kind}.closed", peer=self._describe_peer(address))

    async def _handshake(self, stream: trio.SSLStream[Any], address: Any) -> bool:
        assert self._handshake_timeout is not None
        with trio.move_on_after(self._handshake_timeout):
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                self._handshake_failures += 1
                peer = self._describe_peer(address)
                reason = exc.__cause__ or exc
                LOGGER.info("TLS handshake with %s failed: %s", peer, reason,
                            extra={"peer": str(peer)})
                emit(self._observer, f"{self._kind}.handshake_failed", peer=peer, error=reason)
                return False
            return True
        self._shed_connection(address, "tls_handshake_timeout")
        return False

    async def _run_with_idle_timeout(
        self, conn: ConnT, idle: IdleTrackingStream, address: Any
    ) -> Exception | None:
        error: Exception | None = None
        with trio.CancelScope() as handler_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._shed_when_idle, idle, handler_scope, conn.socket, address)
                try:
                    await self._handler(conn)
                except Exception as exc:  # caught here so that no group wraps it
                    error = exc
                nursery.cancel_scope.cancel()
        # Once shed, whatever the handler raised comes from the closing.
        return None if handler_scope.cancel_called else error

    async def _shed_when_idle(
        self,
        idle: IdleTrackingStream,
        handler_scope: trio.CancelScope,
        sock: trio.socket.SocketType,
        address: Any,
    ) -> None:
        assert self._idle_timeout is not None
        await wait_idle(idle, self._idle_timeout)
        self._shed_connection(address, "idle_timeout")
        handler_scope.cancel()
        if idle.sending:
            # A send has been stuck for idle_timeout: the peer stopped reading.
            # Cancelled mid-frame, the channel would give it abort_timeout more
            # to finish the frame. Reset the connection now instead (as nginx's
            # reset_timedout_connection): the stuck send fails at once. A quiet
            # connection keeps its orderly close (and TLS its close_notify).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                sock.shutdown(socket.SHUT_RDWR)

    def _shed_connection(self, address: Any, reason: str) -> None:
        self._shed += 1
        peer = self._describe_peer(address)
        LOGGER.debug("closing the connection from %s: %s", peer, reason, extra={"peer": str(peer)})
        emit(self._observer, f"{self._kind}.shed", peer=peer, reason=reason)

    def _handler_failed(self, address: Any, error: Exception) -> None:
        self._handler_errors += 1
        peer = self._describe_peer(address)
        emit(self._observer, f"{self._kind}.handler_error", peer=peer, error=error)
        if self._strict:
            raise error
        name = type(error).__name__
        if isinstance(error, _PEER_ERRORS):
            LOGGER.info("connection from %s ended by %s: %s", peer, name, error,
                        extra={"peer": str(peer)})
        else:
            LOGGER.error("handler for the connection from %s raised %s; the connection was "
                         "closed and the server keeps serving", peer, name,
                         exc_info=error, extra={"peer": str(peer)})
