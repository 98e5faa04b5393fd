"""The server machinery that serve_tcp and serve_unix share: ServerCore.

A server is two nurseries in the task that ``nursery.start`` runs: one with an
accept loop per listening socket (``accept.py``), inside one with a task per connection. The
handler runs in that task, and nothing else runs per connection: with
``idle_timeout`` one timer task per server watches every connection (see
:class:`~trionet._adapters.idle.IdleTimer`). Shutdown cancels the accept loops and closes the listening
sockets at once (synchronously, so no connection is accepted after it starts),
ends the channels that are idle, lets the handlers run until the grace deadline,
then cancels the rest and resets their connections, and returns when every
connection is closed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final, Generic, TypeVar, final

import trio

from .._adapters.channel import MessageChannel
from .._adapters.idle import IdleEntry, IdleTimer, IdleTrackingStream, KernelActivity, TLSRecordStream
from .._adapters.observe import emit, log_handler_error, log_peer_error, log_server_stopped
from .._adapters.proxy_read import read_proxy_header
from .._adapters.tcp_info import connection_byte_counts
from .._adapters.trio_compat import stdlib_socket_of
from .._sansio.errors import FramingError, ProxyProtocolError
from .._sansio.escape import escape_text
from .._sansio.proxy import ProxyHeader
from .accept import ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX, ACCEPT_BATCH, accept_loop, stdlib_socket
from .connection import Connection
from .options import PROXY_HEADER_TIMEOUT, StreamServerOptions
from .reset import blocked_for_sending, reset, reset_in_place
from .server_base import BaseServer, ServerStatistics
from .shutdown import GracefulShutdown

# Re-exported: ACCEPT_* and stdlib_socket live in accept.py.
__all__ = ["ACCEPT_BACKOFF_INITIAL", "ACCEPT_BACKOFF_MAX", "ACCEPT_BATCH", "ServerCore", "stdlib_socket"]

#: The logger for handler errors, accept errors and shed connections.
LOGGER: Final = logging.getLogger("trionet.server")

# After a handler returns, a TLS connection sends close_notify (so the peer can
# tell an orderly end from a truncation); a peer that does not read gets this long.
_TLS_CLOSE_TIMEOUT: Final = 5.0

# Exceptions a handler lets escape because of what the peer did, not because of
# a bug: logged at DEBUG without a traceback (counted at stop), so a bad peer
# cannot flood the log.
_PEER_ERRORS: Final = (trio.BrokenResourceError, trio.EndOfChannel, FramingError)

ConnT = TypeVar("ConnT", bound=Connection[Any, Any])
MakeConnection = Callable[
    [trio.abc.Stream, trio.socket.SocketType, Any, "MessageChannel[Any] | None", "ProxyHeader | None"],
    ConnT,
]


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
        options: StreamServerOptions,
        *,
        kind: str,
        describe_peer: Callable[[Any], object],
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, not {handler!r}")
        self._handler = handler
        self._kind = kind
        self._describe_peer = describe_peer
        self.options = options
        self._codec = options.codec
        self._limit = options.max_connections
        self._idle_timeout = options.idle_timeout
        self._frame_timeout = options.frame_timeout
        self._ssl_context = options.ssl_context
        # Without TLS there is no handshake to count.
        self._handshake_limit = options.max_pending_handshakes if options.ssl_context else None
        self._handshaking = 0
        self._observer = options.observer
        self._make_connection: MakeConnection[ConnT] | None = None
        self._on_listeners_closed: Callable[[], None] | None = None
        self._sockets: list[trio.socket.SocketType] = []
        self._handlers: trio.Nursery | None = None
        self._accept_scope = trio.CancelScope()
        self._accept_scopes: list[trio.CancelScope] = []  # accepts that a limit may cut short
        self._slot_freed = trio.lowlevel.ParkingLot()
        # Every open connection's socket, and its channel once there is one: what
        # shutdown ends when idle, and resets when the grace is over.
        self._connections: dict[trio.socket.SocketType, MessageChannel | None] = {}
        self._shutdown = GracefulShutdown(kind, self._observer, lambda: self._active)
        self._idle_timer = (
            IdleTimer(self._idle_timeout, self._shed_idle) if self._idle_timeout is not None else None
        )
        self._cut = False
        self._paused = False
        self._active = 0
        self._accepted = 0
        self._shed = 0
        self._handshake_failures = 0
        self._handler_errors = 0
        self._accept_errors = 0
        self._peer_endings: Counter[str] = Counter()  # handler errors the peers caused, by type

    # ------------------------------------------------------------------ state

    @property
    def active(self) -> int:
        return self._active

    @property
    def shutdown_requested(self) -> trio.Event:
        """Set when shutdown begins."""
        return self._shutdown.requested

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.shutting_down

    @property
    def shutdown_grace(self) -> float:
        return self.options.shutdown_grace

    @property
    def accept_limited(self) -> bool:
        return self._limit is not None or self._handshake_limit is not None

    @property
    def slot_freed(self) -> trio.lowlevel.ParkingLot:
        return self._slot_freed

    @property
    def accept_scopes(self) -> list[trio.CancelScope]:
        return self._accept_scopes

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(
            connections_active=self._active,
            connections_accepted=self._accepted,
            connections_shed=self._shed,
            handshake_failures=self._handshake_failures,
            handler_errors=self._handler_errors,
            accept_errors=self._accept_errors,
            accepting=self._shutdown.running and not self.shutting_down and not self._paused,
            shutting_down=self.shutting_down,
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
        with self._shutdown.run():
            try:
                async with trio.open_nursery() as handlers:
                    self._handlers = handlers
                    try:
                        if self._idle_timer is not None:
                            handlers.start_soon(self._idle_timer.run)
                        with self._accept_scope:
                            async with trio.open_nursery() as acceptors:
                                for sock in sockets:
                                    acceptors.start_soon(accept_loop, self, sock)
                                emit(self._observer, f"{self._kind}.listening", addresses=listening)
                                LOGGER.info("%s server listening on %s", self._kind, _where(listening))
                                task_status.started(server)
                        # The accept loops end only when shutdown has begun.
                        await self._drain(handlers)
                    except BaseException:
                        # Cancelled from outside, or a handler's error with strict=True:
                        # the handlers are being cancelled, and a send stuck on a peer that
                        # does not read must not hold them for abort_timeout.
                        self._cut_connections()
                        raise
                    finally:
                        if self._idle_timer is not None:
                            self._idle_timer.stop()
            finally:
                self._close_listeners()  # before the server counts as stopped
                log_server_stopped(LOGGER, f"{self._kind} server on {_where(listening)}",
                                   self._accepted, self._peer_endings)

    async def _drain(self, handlers: trio.Nursery) -> None:
        if await self._shutdown.wait_drained():
            handlers.cancel_scope.cancel()
            self._cut_connections()

    def _cut_connections(self) -> None:
        # The handlers are being cancelled. Those waiting for the peer unwind at
        # once and close in order; a send blocked on a peer that does not read
        # would not (MessageChannel finishes a started frame under a shield for
        # abort_timeout, 10 s by default). So a connection whose socket cannot
        # take a byte now is reset: the send wakes at once, the kernel drops what
        # it held for that peer, and the shutdown takes its grace and no more
        # (issue 12.1).
        self._cut = True
        for sock in blocked_for_sending(list(self._connections)):
            reset(sock)

    def _close_listeners(self) -> None:
        for sock in self._sockets:
            sock.close()
        hook, self._on_listeners_closed = self._on_listeners_closed, None
        if hook is not None:
            hook()

    # --------------------------------------------------------------- shutdown

    def begin_shutdown(self, grace: float) -> None:
        if not self._shutdown.begin(grace):
            return
        self._accept_scope.cancel()
        # Closing now, not when the accept tasks next run, is what makes "no
        # connection is accepted after shutdown starts" hold: the kernel refuses
        # new connections from this moment.
        self._close_listeners()
        if self.options.end_idle_on_shutdown:
            # As Go's Server.Shutdown: idle keep-alive connections end now, busy
            # ones when their handler next waits for a message.
            for channel in self._connections.values():
                if channel is not None:
                    channel.end_when_idle()

    async def shutdown(self, grace: float) -> None:
        self.begin_shutdown(grace)
        await self._shutdown.stopped.wait()

    # ------------------------------------------------ accepts (see accept.py)

    def start_connection(self, sock: trio.socket.SocketType, address: Any) -> None:
        self._active += 1
        self._accepted += 1
        self._connections[sock] = None
        if self._handshake_limit is not None:
            self._handshaking += 1  # from now: the accept loop must see it at once
        if self._observer is not None:
            emit(self._observer, f"{self._kind}.accept", peer=self._describe_peer(address),
                 active=self._active)
        if self.at_capacity():
            self.pause_accepting()
        assert self._handlers is not None
        self._handlers.start_soon(self._serve, sock, address)

    def at_capacity(self) -> bool:
        # At max_connections, or at max_pending_handshakes: accepting pauses.
        limit = self._limit
        if limit is not None and self._active >= limit:
            return True
        pending = self._handshake_limit
        return pending is not None and self._handshaking >= pending

    def pause_accepting(self) -> None:
        for scope in self._accept_scopes:
            scope.cancel()
        if not self._paused:
            self._paused = True
            emit(self._observer, f"{self._kind}.paused", active=self._active, limit=self._limit)

    def accept_failed(self, errno_name: str, delay: float) -> None:
        self._accept_errors += 1  # logged by the accept loop
        emit(self._observer, f"{self._kind}.accept_error", errno=errno_name, delay=delay)

    def _connection_done(self, sock: trio.socket.SocketType) -> None:
        # Synchronous, and reached whatever closing the connection raised: the
        # count and the close event must not depend on a cancellation (issue 12.2).
        self._connections.pop(sock, None)
        self._active -= 1
        if self.shutting_down:
            self._shutdown.work_done()
        elif self._limit is not None:
            self._capacity_freed()

    def _capacity_freed(self) -> None:
        if not self.at_capacity():
            if self._paused:
                self._paused = False
                emit(self._observer, f"{self._kind}.resumed", active=self._active)
            self._slot_freed.unpark_all()

    # ------------------------------------------------------------ connections

    async def _serve(self, sock: trio.socket.SocketType, address: Any) -> None:
        opened = trio.current_time()
        stream: trio.abc.Stream | None = None
        error: Exception | None = None
        handshaking = self._handshake_limit is not None  # counted by _start_connection
        proxy: ProxyHeader | None = None
        channel: MessageChannel[Any] | None = None
        conn: Connection[Any, Any] | None = None
        try:
            if self.options.proxy_protocol:
                proxy = await self._read_proxy_header(sock, address)
                if proxy is None:
                    return
            stream = trio.SocketStream(sock)
            idle: IdleTrackingStream | TLSRecordStream | KernelActivity | None = None
            # What the channel reports its progress to (None: the kernel keeps
            # the times, or nobody asks), and the stream it frames.
            tracker: IdleTrackingStream | TLSRecordStream | None = None
            framed: trio.abc.Stream = stream
            if self._ssl_context is None:
                if self._idle_timeout is not None:
                    idle = KernelActivity.for_socket(stdlib_socket_of(sock))
                    if idle is None:
                        # No kernel times (not Linux, or the virtual network): the
                        # bytes are counted here. A channel reads trio's
                        # SocketStream and reports to the tracker; a handler of
                        # the raw stream reads through it.
                        idle = tracker = IdleTrackingStream(stream)
                        if self._codec is None:
                            stream = tracker
            else:
                if self._idle_timeout is not None or self._frame_timeout is not None:
                    # Under TLS a raw byte is not progress (a record trickled a byte
                    # at a time reaches nobody): count whole records, or, with a
                    # codec, the channel's application bytes (issue 15.3).
                    stream = idle = tracker = TLSRecordStream(stream, count_records=self._codec is None)
                stream = framed = trio.SSLStream(stream, self._ssl_context, server_side=True)
                try:
                    shaken = await self._handshake(stream, address)
                finally:
                    if handshaking:
                        handshaking = False
                        self._handshake_done()
                if not shaken:
                    return
                if idle is not None:
                    idle.last_activity = trio.current_time()
            if self._codec is not None:
                channel = MessageChannel(
                    framed, self._codec, frame_timeout=self._frame_timeout,
                    abort_timeout=self.options.abort_timeout, activity=tracker,
                )
                if sock in self._connections:
                    self._connections[sock] = channel
                if self.shutting_down and self.options.end_idle_on_shutdown:
                    channel.end_when_idle()
            assert self._make_connection is not None
            conn = self._make_connection(stream, sock, address, channel, proxy)
            if idle is None or self._idle_timer is None:
                try:
                    await self._handler(conn)
                except Exception as exc:
                    error = exc
            else:
                # Inline, not a coroutine of its own: a frame less per connection.
                scope = trio.CancelScope()
                entry = self._idle_timer.watch(idle, scope, sock, address)
                try:
                    with scope:
                        try:
                            await self._handler(conn)
                        except Exception as exc:
                            error = exc
                finally:
                    self._idle_timer.unwatch(entry)
                if scope.cancel_called:
                    error = None  # once shed, whatever the handler raised comes from the closing
            if self._cut:
                error = None  # the reset is what it raised
            if error is not None:
                self._handler_failed(address, error)
            elif self._ssl_context is not None:
                with trio.move_on_after(_TLS_CLOSE_TIMEOUT):
                    await conn.aclose()  # sends close_notify
        finally:
            if handshaking:
                self._handshake_done()
            counts = None if self._observer is None else connection_byte_counts(
                stdlib_socket_of(sock), channel, None if conn is None else conn._final_counts)
            try:
                if stream is None:
                    sock.close()
                else:
                    await trio.aclose_forcefully(stream)
            finally:
                self._connection_done(sock)
                if self._observer is not None:
                    bytes_in, bytes_out = counts or (None, None)
                    emit(self._observer, f"{self._kind}.closed", peer=self._describe_peer(address),
                         duration=trio.current_time() - opened, bytes_in=bytes_in, bytes_out=bytes_out)

    async def _read_proxy_header(self, sock: trio.socket.SocketType, address: Any) -> ProxyHeader | None:
        # The load balancer's header comes first, before TLS; a connection
        # without a good one in time is shed (reason "proxy_protocol").
        error: Exception = ProxyProtocolError(
            f"no PROXY protocol header within {PROXY_HEADER_TIMEOUT:g} s"
        )
        with trio.move_on_after(PROXY_HEADER_TIMEOUT):
            try:
                return await read_proxy_header(sock)
            except (ProxyProtocolError, OSError) as exc:
                error = exc
        self._shed_connection(address, "proxy_protocol", error)
        return None

    def _handshake_done(self) -> None:
        self._handshaking -= 1
        if not self.shutting_down:
            self._capacity_freed()

    async def _handshake(self, stream: trio.SSLStream[Any], address: Any) -> bool:
        # A handshake that fails is a handshake failure; one that does not finish
        # in time is a connection shed by a limit (connections_shed, reason
        # "tls_handshake_timeout"), as an idle one is: docs/howto/tls.rst.
        with trio.move_on_after(self.options.tls_handshake_timeout):
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                self._handshake_failures += 1
                peer = self._describe_peer(address)
                reason = exc.__cause__ or exc
                log_peer_error(LOGGER, self, logging.INFO, "TLS handshake with %s failed: %s",
                               peer, reason, peer=peer, error=reason, traceback=False)
                emit(self._observer, f"{self._kind}.handshake_failed", peer=peer, error=reason)
                return False
            return True
        self._shed_connection(address, "tls_handshake_timeout")
        return False

    # -------------------------------------------------------------- idleness

    def _shed_idle(self, entry: IdleEntry) -> None:
        self._shed_connection(entry.address, "idle_timeout")
        entry.scope.cancel()
        if entry.stream.sending:
            # A send has been stuck for idle_timeout: the peer stopped reading.
            # Cancelled mid-frame, the channel would give it abort_timeout more
            # to finish the frame. Reset the connection now instead (as nginx's
            # reset_timedout_connection): the stuck send fails at once. A quiet
            # connection keeps its orderly close (and TLS its close_notify).
            reset_in_place(entry.sock)

    def _shed_connection(self, address: Any, reason: str, error: Exception | None = None) -> None:
        self._shed += 1
        peer = self._describe_peer(address)
        if error is not None:
            # A bad PROXY header: the balancer (or whoever connected) is misconfigured.
            log_peer_error(LOGGER, self, logging.INFO, "closing the connection from %s: %s: %s",
                           peer, reason, error, peer=peer, error=error, traceback=False)
            emit(self._observer, f"{self._kind}.shed", peer=peer, reason=reason, error=error)
            return
        if LOGGER.isEnabledFor(logging.DEBUG):
            text = escape_text(str(peer))
            LOGGER.debug("closing the connection from %s: %s", text, reason, extra={"peer": text})
        emit(self._observer, f"{self._kind}.shed", peer=peer, reason=reason)

    def _handler_failed(self, address: Any, error: Exception) -> None:
        self._handler_errors += 1
        peer = self._describe_peer(address)
        emit(self._observer, f"{self._kind}.handler_error", peer=peer, error=error)
        if self.options.strict:
            raise error
        log_handler_error(
            LOGGER, self, peer, error, peer_errors=_PEER_ERRORS, peer_endings=self._peer_endings,
            ended="connection from %s ended by %s",
            raised="handler for the connection from %s raised %s; the connection was closed "
            "and the server keeps serving",
        )


def _where(listening: object) -> str:
    # A server's addresses as it reports them: a tuple of texts, or a path.
    return ", ".join(listening) if isinstance(listening, tuple) else escape_text(str(listening))
