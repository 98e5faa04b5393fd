"""A resolver's lookups: single-flight, limited and timed out, without tasks.

:class:`Lookups` makes the backend lookups of one :class:`~trionet.Resolver`
(:func:`trio.socket.getaddrinfo` calls by default): concurrent identical
lookups share one call, at most ``max_concurrent_lookups`` run at once, each
is bounded by ``lookup_timeout``, and each answer goes into the resolver's
:class:`~trionet._adapters.resolver_cache.AnswerCache`, for the TTL the
backend reported or else the resolver's fixed one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Final, final

import trio

from .._sansio.addresses import Address
from .._sansio.ordering import interleave_families
from .resolver_backend import LookupResult, ResolverBackend
from .resolver_cache import Answer, AnswerCache, CacheKey, failure

__all__ = ["FAMILY_NAMES", "Lookups"]

FAMILY_NAMES: Final = {0: "any family", socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


@dataclass(slots=True, eq=False)
class _Flight:
    """A system lookup that one caller drives and others wait for."""

    answer: Answer | None = None
    changed: trio.Event = field(default_factory=trio.Event)  # answer set, or driver left
    driving: bool = False
    followers: int = 0
    shield: trio.CancelScope | None = None  # the driver's, while the system call runs

    def update_shield(self) -> None:
        if self.shield is not None:
            self.shield.shield = self.followers > 0

    def abandoned(self) -> bool:
        """Nobody drives or waits for this lookup any more, and it has no answer."""
        return self.answer is None and not self.driving and not self.followers


# Single-flight without background tasks
# ======================================
#
# Concurrent identical lookups share one system call: the first caller (the
# driver) makes it in its own task, and later callers (followers) wait for its
# answer. trionet runs no hidden tasks, so the call lives in the driver's task,
# and a cancelled driver must not take the lookup away from the followers (the
# issue's contract, and Go's net.Resolver keeps shared lookups alive the same
# way). Two mechanisms keep that promise while leaving trio's cancellation
# semantics intact:
#
# 1. While the system call runs, the driver holds it in a cancel scope whose
#    `shield` is on exactly when at least one follower waits. A cancelled driver
#    then finishes the call, publishes the answer to the followers, and raises
#    Cancelled straight after. The last follower to leave turns the shield off
#    again, so a driver that nobody depends on is cancelled at once. The delay
#    a shielded driver can see is bounded by `lookup_timeout`, which applies
#    inside the shield.
# 2. A driver cancelled before the call starts (queued on the capacity
#    limiter), or one that lost the race between a follower joining and its own
#    cancellation, hands the lookup over: a follower wakes up and drives it.
#    Nothing has been lost in that case except a place in the limiter's queue.
#
# Every waiter sits in an ordinary checkpoint in its own task; when the last of
# them is gone, nothing remains. (A system getaddrinfo() thread that trio
# abandoned on cancellation runs to its end, as with trio.socket.getaddrinfo.)


@final
class Lookups:
    """The system lookups of one resolver, and their counters.

    Args:
      backend: What looks names up.
      cache: Where answers go: for the TTL the backend reported, else for
          ``ttl`` seconds, failures for ``negative_ttl`` (0: not cached).
      max_concurrent_lookups: How many backend lookups may run at once.
      lookup_timeout: Seconds from the request (the wait for a slot included)
          after which a lookup fails; :data:`math.inf` for none.
    """

    def __init__(
        self,
        backend: ResolverBackend,
        cache: AnswerCache,
        *,
        ttl: float,
        negative_ttl: float,
        max_concurrent_lookups: int,
        lookup_timeout: float,
    ) -> None:
        self._backend = backend
        self._cache = cache
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._lookup_timeout = lookup_timeout
        self._limiter = trio.CapacityLimiter(max_concurrent_lookups)
        self._flights: dict[CacheKey, _Flight] = {}
        self.coalesced = 0  # waits that joined a lookup under way
        self.lookups = 0  # backend lookups made
        self.failures = 0  # answers that are failures
        self.in_flight = 0  # backend lookups running now

    async def wait(self, key: CacheKey) -> Answer:
        """The answer for ``key``: from a lookup under way, or one this call drives."""
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        else:
            self.coalesced += 1
        while flight.answer is None:
            if not flight.driving:
                return await self._drive(flight, key)
            flight.followers += 1
            flight.update_shield()
            try:
                await flight.changed.wait()
            except BaseException:
                flight.followers -= 1
                flight.update_shield()
                if flight.abandoned():
                    self._drop_flight(key, flight)
                raise
            flight.followers -= 1
            flight.update_shield()
        return flight.answer

    async def _drive(self, flight: _Flight, key: CacheKey) -> Answer:
        flight.driving = True
        # lookup_timeout counts from the request: a lookup queued behind
        # max_concurrent_lookups others (hung ones, say) must not wait forever.
        deadline = trio.current_time() + self._lookup_timeout
        try:
            with trio.move_on_at(deadline) as slot_wait:
                await self._limiter.acquire()
            if slot_wait.cancelled_caught:  # acquire() is atomic: no slot was taken
                answer = Answer(
                    reason=f"no lookup slot came free within lookup_timeout={self._lookup_timeout:g} s "
                    f"(all {self._limiter.total_tokens:g} max_concurrent_lookups stayed busy)",
                    cacheable=False,  # about this resolver's load, not about the name
                )
            else:
                try:
                    answer = await self._system_lookup(flight, key, deadline)
                finally:
                    self._limiter.release()
        except Exception as exc:  # a broken custom resolver: report it, do not retry
            flight.driving = False
            flight.shield = None
            broken = Answer(reason=f"the lookup raised {exc!r}", cause=exc, cacheable=False)
            self._publish(key, flight, broken)
            raise
        except BaseException:  # Cancelled (or KeyboardInterrupt) before an answer
            flight.driving = False
            flight.shield = None
            if flight.followers:
                woken, flight.changed = flight.changed, trio.Event()
                woken.set()  # hand over: a follower drives next
            else:
                self._drop_flight(key, flight)
            raise
        self._publish(key, flight, answer)
        await trio.lowlevel.checkpoint_if_cancelled()  # a shielded driver's own cancel
        return answer

    async def _system_lookup(self, flight: _Flight, key: CacheKey, deadline: float) -> Answer:
        name, family, type_, flags = key
        self.lookups += 1
        self.in_flight += 1
        try:
            result: LookupResult | None = None
            error: OSError | None = None
            with trio.CancelScope(shield=flight.followers > 0) as shield:
                flight.shield = shield
                with trio.move_on_at(deadline):
                    try:
                        result = await self._backend.lookup(name, family, type=type_, flags=flags)
                    except OSError as exc:
                        error = exc
            flight.shield = None
        finally:
            self.in_flight -= 1
        if error is not None:
            return failure(error)
        if result is None:
            return Answer(reason=f"the lookup took longer than {self._lookup_timeout:g} s")
        if result.error is not None:
            return failure(result.error, result.ttl)
        found: list[Address] = []
        for address in result.addresses:  # IPv4-mapped ones are IPv4 already (Address)
            if address.port:
                address = address.with_port(0)
            if address not in found and family in (0, address.family):
                found.append(address)
        if not found:
            return Answer(reason=f"no {FAMILY_NAMES[family]} address found", ttl=result.ttl)
        return Answer(addresses=tuple(interleave_families(found)), ttl=result.ttl)

    def _publish(self, key: CacheKey, flight: _Flight, answer: Answer) -> None:
        if answer.reason is not None:
            self.failures += 1
        ttl = answer.ttl
        if ttl is None:
            ttl = self._ttl if answer.reason is None else self._negative_ttl
        if answer.cacheable and ttl > 0:
            self._cache.put(key, answer, trio.current_time() + ttl)
        flight.answer = answer
        self._drop_flight(key, flight)
        flight.changed.set()

    def _drop_flight(self, key: CacheKey, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
