"""Requests over a UDP endpoint: retransmitted until answered, one reply each.

:class:`DatagramRequester` is the requesting part of :class:`~trionet.UDPEndpoint`
(its base class, above :class:`~trionet._adapters.udp_send.DatagramSender`):
:meth:`~DatagramRequester.request`, the per-peer turns that bound the requests
in progress, and the memory of finished requests by which their late replies
are dropped. When to transmit, how long to wait and when to give up is decided
by the sans-IO :class:`~trionet._sansio.retransmit.Retransmission`; this module
only drives it with trio's clock and the endpoint's socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

import trio

from .._sansio.addresses import Address
from .._sansio.matching import ReplyMatcher
from .._sansio.randomness import current_random
from .._sansio.retransmit import GiveUp, Retransmission
from .._sansio.retry import RetryPolicy, RttEstimator
from ..errors import DatagramTooLarge, RequestTimeout
from .observe import Observer, emit
from .resolver import Resolver
from .udp_options import EndpointOptions
from .udp_receive import Datagram, PeerState, Waiter
from .udp_send import DatagramSender
from .udp_send import Target as Target
from .udp_socket import AddressLike, OpenedSocket

__all__ = ["DEFAULT_RETRY_POLICY", "DatagramRequester", "Target"]

DEFAULT_RETRY_POLICY: Final = RetryPolicy()
# Late replies (issue 14.2), trionet's choice: per peer, the matchers of this
# many recently finished requests are remembered (32 requests in flight per peer
# is already far beyond RFC 8085's advice), for at most this many peers, each
# for the window its Retransmission gives (LATE_REPLY_WINDOW_FACTOR times the
# wait given to the request's latest transmission).
_LATE_REQUESTS_PER_PEER: Final = 32
_LATE_PEERS: Final = 4096

_Predicate = Callable[[Datagram], bool]


class DatagramRequester(DatagramSender):
    """The requesting part of a UDP endpoint (private base of :class:`~trionet.UDPEndpoint`).

    :meth:`request` sends through the sending half below it (its destination
    cache, ``_target`` and ``_transmit``); this class keeps the request
    counters, the turns and the late-reply memory.
    """

    def __init__(
        self,
        opened: OpenedSocket,
        options: EndpointOptions,
        *,
        remote: Address | None,
        resolver: Resolver | None,
        observer: Observer | None,
    ) -> None:
        super().__init__(opened, options, remote=remote, resolver=resolver, observer=observer)
        self._cap = options.max_outstanding_per_peer
        self._active = self._completed = self._timed_out = self._retransmissions = 0
        # peer -> (expiry time, match) of its recently finished requests
        self._late: dict[Address, deque[tuple[float, _Predicate]]] = {}
        self._late_dropped = 0

    # ---------------------------------------------------------------- turns

    async def _wait_turn(self, peer: Address, state: PeerState) -> None:
        turns = state.turns
        if turns is None:
            turns = state.turns = trio.lowlevel.ParkingLot()
        if self._observer is not None:
            emit(self._observer, "udp.peer_limit", peer=peer, outstanding=state.outstanding)
        await turns.park()  # woken with the turn of a finished request
        self._check_open()

    @staticmethod
    def _end_turn(state: PeerState) -> None:
        turns = state.turns
        if turns is not None and turns.unpark(count=1):
            return  # handed straight over, so that a newcomer cannot overtake
        state.outstanding -= 1

    # --------------------------------------------------------- late replies

    def _remember(self, peer: Address, match: _Predicate, window: float) -> None:
        """Keep a finished request's ``match`` for ``window`` seconds, to drop its late replies."""
        late = self._late
        entries = late.get(peer)
        if entries is None:
            if len(late) >= _LATE_PEERS:
                now = trio.current_time()
                for key in [key for key, kept in late.items() if max(e for e, _ in kept) <= now]:
                    del late[key]
                if len(late) >= _LATE_PEERS:
                    del late[next(iter(late))]  # the peer remembered longest ago
            entries = late[peer] = deque(maxlen=_LATE_REQUESTS_PER_PEER)
        entries.append((trio.current_time() + window, match))

    def _is_late(self, datagram: Datagram) -> bool:
        """Whether ``datagram`` (claimed by no request in progress) answers a finished request."""
        address = datagram.address
        state = self._peers.get(address)
        if state is not None:
            # Requests answered, whose task has not run yet to finish them.
            for waiter in state.waiters:
                if waiter.reply is not None and _accepts(waiter.match, datagram):
                    return True
        entries = self._late.get(address)
        if entries is None:
            return False
        now = trio.current_time()
        while entries and entries[0][0] <= now:
            entries.popleft()
        if not entries:
            del self._late[address]
            return False
        return any(expires > now and _accepts(match, datagram) for expires, match in entries)

    def _drop_late(self, datagram: Datagram) -> bool:
        if (
            (self._late or self._requests_waiting)
            and not datagram.truncated
            and self._is_late(datagram)
        ):
            self._late_dropped += 1
            if self._observer is not None:
                emit(self._observer, "udp.dropped", peer=datagram.address, reason="late reply")
            return True
        return False

    # ------------------------------------------------------------- requests

    async def request(
        self,
        data: bytes | bytearray | memoryview,
        address: AddressLike | None = None,
        *,
        policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        match: ReplyMatcher | Callable[[Datagram], bool],
        rtt: RttEstimator | None = None,
    ) -> Datagram:
        """Send a request and retransmit it until a reply arrives.

        ::

            reply = await endpoint.request(query, "192.0.2.53:53", match=trionet.match_dns_id)

        The datagram is sent, then sent again each time a timeout of ``policy``
        expires without a reply, until ``policy``'s attempts or deadline are
        spent. A reply is a datagram from ``address`` that is not truncated and
        that ``match`` accepts; it may answer any of the transmissions. At most
        ``max_outstanding_per_peer`` requests (see :func:`open_udp_endpoint`)
        are in progress per peer; more wait their turn, in order, before their
        first transmission.

        Why ``match`` is required: a UDP reply carries nothing that ties it to
        its request but what the protocol puts in it. The sender's address and
        port are the only authentication a reply has (anyone who can send from,
        or forge, that address can answer), and they say nothing about *which*
        request is answered: the reply to a cancelled request, to an earlier
        copy of a retransmitted one, or a duplicate, arrives from the same
        address as the next request's. Only an id echoed from request to reply
        tells them apart; choose ids that are unique among a peer's recent
        requests (and random, where a forger off the path must not guess them).

        Late replies: when a request that transmitted at least once ends
        (answered, timed out, cancelled) its
        ``match`` is remembered for twice the wait given to its latest
        transmission (with a backoff
        multiplier of 2 or more, longer than the request lasted), for the last
        32 finished requests per peer. A datagram from the peer, taken from the
        socket within that window, that no request in progress claims and that
        one of them matches is dropped, counted in
        ``late_replies_dropped`` of :meth:`statistics` and reported as
        ``udp.dropped`` (reason ``"late reply"``), instead of waiting in the
        receive queue for :meth:`receive`. Older or evicted ones reach
        :meth:`receive`.

        Args:
          data: The request's payload, the same for every transmission.
          address: The peer, as for :meth:`send`; ``None`` on a connected
              endpoint.
          policy: When to retransmit and when to give up.
          match: Which datagram from the peer answers this request. Required,
              keyword-only. One of:

              - :data:`~trionet.match_dns_id` (DNS: the first 2 bytes, the
                message ID, equal the request's),
                :data:`~trionet.match_coap_message_id` (CoAP: bytes 2-3),
                :func:`~trionet.match_bytes` ``(offset, length)`` for an id at
                a fixed place in request and reply. A request too short to
                hold the id is a :exc:`ValueError`.
              - a callable taking the candidate :class:`Datagram` and
                returning whether it answers (compare an id, say); an
                exception it raises is raised by this call.
              - :data:`~trionet.match_address_only`: any datagram from the
                peer. Unsafe with retransmission (a late reply to this
                request, or a duplicate, can answer the next one) and with
                concurrent requests to the peer (replies can be swapped); an
                explicit opt-in for protocols without ids, one request at a
                time. Its late-reply memory drops *every* datagram from the
                peer for the window above.
          rtt: The peer's round-trip estimator, read when the request's first
              transmission is due (after its turn, if it waited for one). Once
              it has a sample, or has been backed off, its ``rto`` replaces
              ``policy.initial_timeout``:
              the first wait is then ``rto`` times the policy's random spread
              (1 to ``policy.random_factor``), capped at ``policy.max_timeout``.
              Before that (a new estimator), ``policy.initial_timeout`` is used,
              so that an estimator's RFC 6298 start of 1 s does not override a
              policy's own choice. It takes a sample when a reply answers the
              only transmission (Karn's rule), and backs off when a timeout
              expires.

        Returns:
          The reply.

        Raises:
          RequestTimeout: No reply within the policy's budget; ``attempts`` says
              how many transmissions were made. It is a :exc:`trio.TooSlowError`.
          DatagramTooLarge: ``data`` is too large; nothing was sent.
          PeerUnreachable: The connected endpoint's peer is unreachable.
          trio.ClosedResourceError: The endpoint was closed.
          AddressError, ResolutionError, OSError: As for :meth:`send`.
          ValueError: ``data`` is too short for the id ``match`` compares.
          TypeError: ``match`` is missing or not a matcher.

        Events:
          ``udp.transmit`` (peer, attempt, timeout, size) for the first
          transmission, ``udp.retransmit`` (the same) for each later one, where
          ``timeout`` is how long this attempt waits; ``udp.reply`` (peer,
          attempts, rtt: seconds since the latest transmission);
          ``udp.give_up`` (peer, attempts, elapsed); ``udp.cancelled`` (peer,
          attempts, elapsed) when the request is cancelled after its first
          transmission; ``udp.peer_limit`` (peer, outstanding) when the request
          waits for a slot. Times (``timeout``, ``rtt``, ``elapsed``) are
          seconds, as floats.

        Cancellation:
          A cancelled request stops at once: no transmission follows, and a
          reply that arrives later is a late reply (dropped and counted, see
          above). If it raises :exc:`trio.Cancelled` before its first
          transmission, nothing was sent.
        """
        if address is None:
            target = self._remote_target
        else:
            try:
                target = self._targets.get(address)
            except TypeError:
                target = None
        if target is None:
            target = await self._target(address)
        peer, sockaddr, limit = target
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > limit:
            raise DatagramTooLarge(size, limit)
        predicate = _predicate(match, data)
        observer = self._observer
        state = self._peer_state(peer)
        cap = self._cap
        self._active += 1
        try:
            if cap is not None and state.outstanding >= cap:
                await self._wait_turn(peer, state)
            else:
                state.outstanding += 1
        except BaseException:
            self._active -= 1
            raise
        sent = False  # whether any transmission left: only then can a reply come
        waiter = Waiter(True, predicate)
        state.waiters.append(waiter)
        self._requests_waiting += 1
        try:
            # The first wait is drawn when the request's turn comes, from the
            # estimator as the requests before it left it (a sample, a backoff).
            # The spread comes from the run's random source (seeded by an
            # installed VirtualNetwork) unless the policy brings its own.
            schedule = Retransmission(policy, rtt, rng=current_random())
            transmit = schedule.start(trio.current_time())
            while True:
                attempt = transmit.attempt
                if attempt > 1:
                    self._retransmissions += 1
                if observer is not None:
                    emit(observer, "udp.transmit" if attempt == 1 else "udp.retransmit",
                         peer=peer, attempt=attempt, timeout=transmit.timeout, size=size)
                await self._transmit(data, sockaddr, peer)
                sent = True
                if waiter.reply is None and waiter.error is None:
                    await self._wait_reply(waiter, transmit.deadline)
                if waiter.error is not None:
                    raise waiter.error
                if waiter.reply is not None:
                    answered = schedule.on_reply(trio.current_time())
                    self._completed += 1
                    if observer is not None:
                        emit(observer, "udp.reply", peer=peer, attempts=answered.attempts,
                             rtt=answered.rtt)
                    return waiter.reply
                decision = schedule.on_timeout(trio.current_time())
                if isinstance(decision, GiveUp):
                    self._timed_out += 1
                    if observer is not None:
                        emit(observer, "udp.give_up", peer=peer, attempts=decision.attempts,
                             elapsed=decision.elapsed)
                    raise RequestTimeout(decision.message(peer), decision.attempts)
                transmit = decision
        except trio.Cancelled:
            started = schedule.started_at
            if observer is not None and started is not None:
                # Seen on a timeline too: the request stopped here, not for lack of a reply.
                emit(observer, "udp.cancelled", peer=peer, attempts=schedule.transmissions,
                     elapsed=trio.current_time() - started)
            raise
        finally:
            state.waiters.remove(waiter)
            self._requests_waiting -= 1
            self._active -= 1
            if not self._closed:
                self._end_turn(state)
                if sent:  # (a request that sent nothing can get no reply)
                    window = schedule.late_reply_window
                    if window is not None:
                        self._remember(peer, predicate, window)


def _accept_any(datagram: Datagram) -> bool:
    return True


def _predicate(
    match: ReplyMatcher | Callable[[Datagram], bool], data: bytes | bytearray | memoryview
) -> _Predicate:
    """The test a datagram from the peer must pass to answer the request ``data``."""
    if isinstance(match, ReplyMatcher):
        if not match.length:
            return _accept_any
        key = match.key(data)
        start, end = match.offset, match.offset + match.length

        def has_key(datagram: Datagram) -> bool:
            return datagram.data[start:end] == key

        return has_key
    if not callable(match):
        raise TypeError(
            "match must be a ReplyMatcher (match_dns_id, match_bytes(...), ...) or a "
            f"callable taking the reply Datagram, not {match!r}"
        )
    return match


def _accepts(match: _Predicate | None, datagram: Datagram) -> bool:
    if match is None:
        return False
    try:
        return match(datagram)
    except Exception:  # raised to its request already, or a bug that request will meet
        return False

