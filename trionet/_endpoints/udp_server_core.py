"""What runs a UDP server: UDPServerCore, its pool of workers, duplicates and shutdown.

:class:`UDPServerCore` is what runs in the task that ``nursery.start(serve_udp,
...)`` starts (the :class:`~trionet.UDPServer` that call returns is a handle on
it): one endpoint and ``max_concurrency`` worker tasks. Each
worker receives a datagram (the workers take turns at receiving, see
:mod:`trionet._adapters.udp_receive`), runs the handler and sends its reply, then
receives again. :func:`~trionet.serve_udp` and :func:`~trionet.open_udp_server`,
which check the options and open the endpoint, are in
:mod:`trionet._endpoints.udp_server`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, final

import trio

from .._adapters.observe import emit, log_handler_error, log_server_stopped
from .._adapters.udp import UDPEndpoint
from .._adapters.udp_receive import Datagram
from .._adapters.udp_socket import is_local_address
from .._sansio.addresses import Address
from .._sansio.errors import FramingError
from .._sansio.replies import ReplyCache
from .options import RequestKey, UDPServerOptions
from .shutdown import GracefulShutdown

__all__ = ["LOGGER", "RequestKey", "UDPHandler", "UDPServerCore", "UDPServerStatistics"]

#: The logger for handler errors, shared with the TCP servers.
LOGGER: Final = logging.getLogger("trionet.udp")

# A worker serves at most this many already-received datagrams in a row with
# no schedule point of its own (the handlers' awaits aside): the endpoint's
# drain granularity (_DRAIN_EVERY), so other tasks run at least that often.
_SERVE_BATCH: Final = 32
# Handler exceptions caused by what the peer sent: logged at DEBUG, without a
# traceback, so a peer sending garbage cannot flood the log (as for TCP).
_PEER_ERRORS: Final = (FramingError,)
# Bound of the cache of "is this host one of ours" answers (issue 15.2).
_LOCAL_HOSTS_CACHE: Final = 1024

Reply = bytes | bytearray | memoryview
UDPHandler = Callable[[Datagram], Awaitable[Reply | None]]


@final
@dataclass(frozen=True, slots=True)
class UDPServerStatistics:
    """A snapshot of a :class:`UDPServer`'s state (see :meth:`UDPServer.statistics`).

    Attributes:
      handlers_active: Handlers running now.
      datagrams_handled: Datagrams whose handler ran to completion or failed.
      handler_errors: Handlers that raised (or whose reply could not be sent).
      duplicates_replayed: Retransmitted requests answered from the reply cache.
      duplicates_dropped: Retransmitted requests dropped because the first copy's
          handler was still running (its reply answers them).
      reply_cache_entries: Replies in the cache now (expired ones not yet purged
          included).
      shutting_down: Whether shutdown has started.
      reply_cache_bytes: The bytes of those replies.
      from_self_dropped: Datagrams dropped because they claimed to come from
          the server's own address (see :func:`serve_udp`).
    """

    handlers_active: int
    datagrams_handled: int
    handler_errors: int
    duplicates_replayed: int
    duplicates_dropped: int
    reply_cache_entries: int
    shutting_down: bool
    reply_cache_bytes: int = 0
    from_self_dropped: int = 0


@final
class UDPServerCore:
    """The worker pool, duplicate suppression and shutdown of one UDP server.

    Private: :func:`~trionet.serve_udp` builds one on its endpoint and runs it;
    :class:`~trionet.UDPServer` is the handle users get.
    """

    def __init__(
        self, endpoint: UDPEndpoint, handler: UDPHandler, options: UDPServerOptions,
        cache: ReplyCache,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, not {handler!r}")
        self._endpoint = endpoint
        self._handler = handler
        self.options = options
        self._request_key = options.request_key
        self._cache = cache
        self._in_progress: set[Hashable] = set()
        self._observer = options.observer
        self._idle_workers: dict[trio.CancelScope, None] = {}
        self._parked = trio.lowlevel.ParkingLot()
        self._standby = False  # a worker waits in the endpoint's receive()
        self._woken = 0  # parked workers woken that have not run yet
        self._parked_workers = 0
        self._port = endpoint.local.port
        self._local_hosts: dict[str, bool] = {}
        self._from_self_dropped = 0
        self._shutdown = GracefulShutdown("udp", self._observer, lambda: self._busy)
        self._shutting_down = False  # read per datagram: a plain attribute
        self._busy = 0
        self._handled = self._errors = self._replayed = self._duplicates_dropped = 0
        self._peer_endings: Counter[str] = Counter()  # handler errors the peers caused, by type

    # ----------------------------------------------------- for the UDPServer

    @property
    def endpoint(self) -> UDPEndpoint:
        return self._endpoint

    @property
    def active(self) -> int:
        return self._busy

    @property
    def shutdown_requested(self) -> trio.Event:
        return self._shutdown.requested

    @property
    def shutdown_grace(self) -> float:
        return self.options.shutdown_grace

    def statistics(self) -> UDPServerStatistics:
        return UDPServerStatistics(
            handlers_active=self._busy,
            datagrams_handled=self._handled,
            handler_errors=self._errors,
            duplicates_replayed=self._replayed,
            duplicates_dropped=self._duplicates_dropped,
            reply_cache_entries=len(self._cache),
            shutting_down=self._shutting_down,
            reply_cache_bytes=self._cache.held_bytes,
            from_self_dropped=self._from_self_dropped,
        )

    def begin_shutdown(self, grace: float) -> None:
        if not self._shutdown.begin(grace):
            return
        self._shutting_down = True
        for scope in self._idle_workers:
            scope.cancel()

    async def shutdown(self, grace: float) -> None:
        self.begin_shutdown(grace)
        await self._shutdown.stopped.wait()

    # ------------------------------------------------------------------ run

    async def run(self, server: object, task_status: trio.TaskStatus[Any]) -> None:
        """Serve until shut down; ``server`` (the handle) goes to ``task_status``."""
        where = str(self._endpoint.local)
        with self._shutdown.run():
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(self.options.max_concurrency):
                        nursery.start_soon(self._worker)
                    emit(self._observer, "udp.listening", addresses=(where,))
                    LOGGER.info("udp server listening on %s", where)
                    task_status.started(server)
                    await self._shutdown.requested.wait()
                    if await self._shutdown.wait_drained():
                        nursery.cancel_scope.cancel()
            finally:
                log_server_stopped(LOGGER, f"udp server on {where}", self._handled, self._peer_endings)

    # One waiting worker, the others parked
    # ======================================
    #
    # A worker takes what the endpoint already holds without waiting
    # (receive_nowait(), which drains the socket when its queue is empty) and
    # runs the handler inline. Only when nothing is there does it wait, and only
    # one worker waits in the endpoint at a time (the "standby"): the others
    # park here, at no cost per datagram. A handler that never blocks is thus
    # run by one task back to back, with a schedule point per _SERVE_BATCH
    # datagrams and no task switch per datagram (issue 11.4: the earlier pool
    # woke a parked worker for each queued datagram, about two task switches
    # per reply).
    #
    # A handler may block, though (an upstream call): the other datagrams must
    # not wait for it. So whenever a worker starts a handler with no standby
    # and nobody woken to become one, it wakes one parked worker first. If the
    # handler blocks, that worker runs at once and takes the next datagrams; if
    # it does not, the woken worker runs at the next schedule point, finds the
    # socket empty or serves a batch of its own, and parks again. The cost is
    # one task switch per batch, not per datagram.

    async def _worker(self) -> None:
        endpoint = self._endpoint
        receive, take_nowait = endpoint.receive, endpoint._take_nowait
        idle, lot = self._idle_workers, self._parked
        with trio.CancelScope() as scope:
            datagram: Datagram | None = None
            sockaddr: Any = None  # where the datagram came from, if known
            while not self._shutting_down:
                if datagram is None:
                    try:
                        datagram, sockaddr = take_nowait()
                    except trio.WouldBlock:
                        idle[scope] = None
                        try:
                            if self._standby:
                                self._parked_workers += 1
                                try:
                                    await lot.park()
                                finally:
                                    self._parked_workers -= 1
                                self._woken -= 1
                                continue
                            self._standby = True
                            try:
                                datagram, sockaddr = await receive(), None
                            finally:
                                self._standby = False
                        finally:
                            del idle[scope]
                        if scope.cancel_called:
                            return  # shutdown began as it arrived: not ours to handle any more
                for _ in range(_SERVE_BATCH):
                    if not self._standby and not self._woken and self._parked_workers:
                        self._woken += 1
                        lot.unpark()
                    self._busy += 1
                    try:
                        await self._serve(datagram, sockaddr)
                    finally:
                        self._busy -= 1
                        stopping = self._shutdown.requested.is_set()
                        if stopping:
                            self._shutdown.work_done()
                    if stopping:  # take nothing more
                        return
                    try:
                        datagram, sockaddr = take_nowait()
                    except trio.WouldBlock:
                        datagram = None
                        break
                else:
                    # A batch served with no schedule point of ours: let the others run.
                    await trio.lowlevel.checkpoint()

    async def _serve(self, datagram: Datagram, sockaddr: Any) -> None:
        if datagram.truncated:
            LOGGER.debug("ignoring a truncated datagram from %s", datagram.address)
            return
        if datagram.address.port == self._port and await self._from_self(datagram.address):
            # A datagram forged to come from this server (or another socket of
            # this host on its port): its reply would come back as a new
            # request, and an echo handler would loop for ever (issue 15.2).
            self._from_self_dropped += 1
            emit(self._observer, "udp.dropped", peer=datagram.address,
                 reason="from the server's own address")
            return
        key: Hashable | None = None
        if self._request_key is not None:
            try:
                request_key = self._request_key(datagram)
            except Exception as exc:
                self._failed(datagram.address, exc)
                return
            if request_key is not None:
                key = (datagram.address, request_key)
                if await self._is_duplicate(key, datagram, request_key):
                    return
                self._in_progress.add(key)
        try:
            reply = await self._handler(datagram)
            if reply is not None:
                if type(reply) is not bytes:
                    reply = bytes(reply)
                endpoint = self._endpoint
                if not endpoint._send_to_nowait(reply, sockaddr, datagram.address):
                    await endpoint.send(reply, datagram.address)
                # Only a reply that was sent is cached (issue 14.3): a handler
                # that returned None, or a reply that could not be sent, leaves
                # nothing, so the client's retransmission is handled again.
                # While the reply is being sent, duplicates are dropped as "in
                # progress" (its key is still in _in_progress).
                if key is not None:
                    self._cache.put(key, reply, trio.current_time(), datagram.address.host)
        except Exception as exc:  # the handler's, or sending its reply (DatagramTooLarge...)
            self._failed(datagram.address, exc)
        finally:
            self._handled += 1
            if key is not None:
                self._in_progress.discard(key)

    async def _is_duplicate(self, key: Hashable, datagram: Datagram, label: Hashable) -> bool:
        cached = self._cache.get(key, trio.current_time())
        if cached is None:
            if key in self._in_progress:
                self._duplicates_dropped += 1
                emit(self._observer, "udp.duplicate_in_progress", peer=datagram.address, key=label)
                return True
            return False
        self._replayed += 1
        emit(self._observer, "udp.duplicate_replayed", peer=datagram.address, key=label)
        (reply,) = cached
        if reply is not None:
            try:
                await self._endpoint.send(reply, datagram.address)
            except OSError as exc:
                self._failed(datagram.address, exc)
        return True

    async def _from_self(self, peer: Address) -> bool:
        """Whether ``peer`` (which has the server's port) is an address of this host.

        Asked only for datagrams from the server's own port, and cached: a
        throwaway socket binds the address, which only a local address allows.
        """
        local = self._local_hosts.get(peer.host)
        if local is None:
            local = await is_local_address(peer)
            if len(self._local_hosts) >= _LOCAL_HOSTS_CACHE:
                self._local_hosts.clear()
            self._local_hosts[peer.host] = local
        return local

    def _failed(self, peer: Address, error: Exception) -> None:
        self._errors += 1
        emit(self._observer, "udp.handler_error", peer=peer, error=error)
        if self.options.strict:
            raise error
        # Any host can send datagrams that make a handler raise, one per packet:
        # the shared policy escapes and rate-limits what is logged.
        log_handler_error(
            LOGGER, self, peer, error, peer_errors=_PEER_ERRORS, peer_endings=self._peer_endings,
            ended="datagram from %s rejected by %s",
            raised="handler for a datagram from %s raised %s; no reply was sent and the "
            "server keeps serving",
        )
