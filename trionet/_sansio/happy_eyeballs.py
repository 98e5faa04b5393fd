"""The Happy Eyeballs connection race (RFC 8305 sections 4 and 5), sans-IO.

:class:`HappyEyeballs` decides which address to try next and when, from the
events it is fed: addresses arriving from the lookups, attempts failing or
connecting, and the time of each. It opens no socket and reads no clock, so
the race can be tested to the microsecond without one; :func:`trionet.connect_tcp`
drives it with trio (sockets, tasks, cancellation and the timer are there).

The lookups themselves, and RFC 8305 section 3's Resolution Delay (an IPv4
answer that comes first waits up to 50 ms for the IPv6 one), are the input
side's business (:func:`trionet.resolve_happy_eyeballs`): the machine takes
each family's answer when that side lets it through.

A driver loops::

    race = HappyEyeballs()
    # on each answer:      race.on_addresses(answer.addresses, now)
    # when lookups end:    race.on_lookups_done()
    # then, and after every event or when race.next_wakeup() comes:
    while (address := race.next_attempt(now)) is not None:
        start an attempt to address
    # an attempt failed:   race.on_failure(address, error, now)
    # an attempt connected: won = race.on_success(address, now)
    #     (None: the race was already over, close that connection)
    # race.done: stop; race.winner, or race.give_up() for the failures
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from .addresses import Address
from .ordering import FIRST_ADDRESS_FAMILY_COUNT, interleave_families

__all__ = [
    "CONNECTION_ATTEMPT_DELAY",
    "MAX_CONNECTION_ATTEMPT_DELAY",
    "MIN_CONNECTION_ATTEMPT_DELAY",
    "ConnectAttempt",
    "HappyEyeballs",
    "Won",
]

# RFC 8305 section 5: "One recommended value for a default delay is 250
# milliseconds" -- the same default as trio's open_tcp_stream.
CONNECTION_ATTEMPT_DELAY: Final = 0.25
# RFC 8305 section 5: "a subsequent connection MUST NOT be started within 10
# milliseconds of the previous attempt", and the delay "SHOULD have an upper
# bound", 2 seconds (section 8, Maximum Connection Attempt Delay).
MIN_CONNECTION_ATTEMPT_DELAY: Final = 0.01
MAX_CONNECTION_ATTEMPT_DELAY: Final = 2.0


@final
@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    """One connection attempt of :func:`connect_tcp`, as :exc:`~trionet.ConnectError` reports it.

    Attributes:
      address: Where it tried to connect.
      started_at: When the attempt began (:func:`trio.current_time` in
          :func:`connect_tcp`).
      ended_at: When it failed, or ``None`` if it was still running (or was
          cancelled) when the connect gave up.
      error: Why it failed, or ``None`` if it was still running.
    """

    address: Address
    started_at: float
    ended_at: float | None
    error: BaseException | None

    def __str__(self) -> str:
        if self.error is None:
            return f"{self.address}: still connecting when the connect gave up"
        return f"{self.address}: {_describe(self.error)}"


def _describe(error: BaseException) -> str:
    """Why an attempt failed, without the address (the attempt names it once).

    trio's connect() writes the address into its OSError's message
    ("Error connecting to ('127.0.0.1', 8000): Connection refused"); the
    errno says everything that matters.
    """
    if isinstance(error, OSError) and error.errno is not None and error.errno > 0:
        name = errno.errorcode.get(error.errno)
        return f"{os.strerror(error.errno)}" + (f" ({name})" if name else "")
    return str(error) or type(error).__name__


@final
@dataclass(frozen=True, slots=True)
class Won:
    """The decision :meth:`HappyEyeballs.on_success` returns to the first attempt that connects.

    Attributes:
      address: The winner: keep its connection.
      cancel: The attempts still running, in the order they started; they lost,
          and the driver cancels them and closes their sockets.
    """

    address: Address
    cancel: tuple[Address, ...]


@final
class HappyEyeballs:
    """The state of one Happy Eyeballs race over a host's addresses (RFC 8305).

    Feed it events, each with the time it happened (any clock, in seconds,
    that never goes backwards), and ask it what to do. It raises
    :exc:`ValueError` when it is misused (an outcome for an address that is not
    being attempted, time going backwards); it never fails because of what the
    network did.

    Args:
      attempt_delay: Seconds between the starts of attempts (the Connection
          Attempt Delay). RFC 8305's bounds apply: it is raised to 10 ms and
          capped at 2 s. ``None`` makes attempts strictly one after another,
          each after the previous failed.
      first_address_family_count: How many addresses of the first family to
          try before the other family (RFC 8305 section 4).
      family: If given, only addresses of this family are attempted (the
          family of the local address to connect from); the others are set
          aside in :attr:`ruled_out`.

    Raises:
      ValueError: ``attempt_delay`` is negative, or
          ``first_address_family_count`` is less than 1.
      TypeError: ``first_address_family_count`` is not an int.
    """

    __slots__ = (
        "_arrived",
        "_count",
        "_delay",
        "_failed",
        "_family",
        "_given_up",
        "_lookups_done",
        "_next_start",
        "_now",
        "_pending",
        "_ruled_out",
        "_running",
        "_started",
        "_winner",
    )

    def __init__(
        self,
        *,
        attempt_delay: float | None = CONNECTION_ATTEMPT_DELAY,
        first_address_family_count: int = FIRST_ADDRESS_FAMILY_COUNT,
        family: int | None = None,
    ) -> None:
        if attempt_delay is None:
            self._delay = math.inf
        elif not attempt_delay >= 0:
            raise ValueError(f"attempt_delay must be >= 0 or None, not {attempt_delay!r}")
        else:
            self._delay = min(max(attempt_delay, MIN_CONNECTION_ATTEMPT_DELAY), MAX_CONNECTION_ATTEMPT_DELAY)
        if isinstance(first_address_family_count, bool) or not isinstance(first_address_family_count, int):
            raise TypeError(f"first_address_family_count must be an int, not {first_address_family_count!r}")
        if first_address_family_count < 1:
            raise ValueError(
                f"first_address_family_count must be at least 1, not {first_address_family_count}"
            )
        self._count = first_address_family_count
        self._family = family
        self._arrived: dict[Address, None] = {}  # attemptable, in order of arrival
        self._ruled_out: list[Address] = []
        self._pending: list[Address] = []  # not tried yet, in the order to try them
        # When each attempt started, in the order they started (one that
        # connected is removed: the race is over then), and the failed ones'
        # records (the running ones' are made when asked for).
        self._started: dict[Address, float] = {}
        self._failed: dict[Address, ConnectAttempt] = {}
        self._running: set[Address] = set()
        self._next_start = -math.inf
        self._now = -math.inf
        self._lookups_done = False
        self._given_up = False
        self._winner: Address | None = None

    # ------------------------------------------------------------------ events

    def on_addresses(self, addresses: Iterable[Address], now: float) -> None:
        """A lookup answered: add its addresses to those not tried yet.

        Call it once per family's answer, as it arrives (an empty answer, a
        failed lookup, may be left out). An address already given is ignored.

        Args:
          addresses: The answer, in the system's order of preference.
          now: The time it arrived.
        """
        self._tick(now)
        for address in addresses:
            if self._family is not None and address.family != self._family:
                if address not in self._ruled_out:
                    self._ruled_out.append(address)
            else:
                self._arrived.setdefault(address)
        # RFC 8305 section 3: "If new records arrive while connection attempts
        # are in progress, but before any connection has been established,
        # then any newly received addresses are incorporated into the list of
        # available candidate addresses". We keep every address in order of
        # arrival and sort them all again with section 4's interleaving (a
        # handful of addresses: it costs nothing worth saving), then drop those
        # tried: each late address takes the place it would have had had it
        # come with the first answer. Sorting only the untried ones instead
        # would put the first family's next address first (its preference
        # again), and a late IPv4 answer after two IPv6 attempts would wait
        # behind a third.
        order = interleave_families(self._arrived, first_address_family_count=self._count)
        self._pending = [address for address in order if address not in self._started]

    def on_lookups_done(self) -> None:
        """Every lookup has answered: no more addresses will come.

        Until then, the race is not lost when every attempt so far has failed.
        """
        self._lookups_done = True

    def on_failure(self, address: Address, error: BaseException, now: float) -> ConnectAttempt:
        """The attempt to ``address`` failed.

        Args:
          address: An address that :meth:`next_attempt` returned, whose attempt
              has not ended yet.
          error: Why it failed.
          now: When it failed.

        Returns:
          The failed attempt, as the :exc:`~trionet.ConnectError` will list it.

        Raises:
          ValueError: No attempt to ``address`` is running.
        """
        self._tick(now)
        self._end(address)
        attempt = ConnectAttempt(address, self._started[address], now, error)
        self._failed[address] = attempt
        # A failure frees the slot at once (see next_attempt): any attempt's,
        # not only the last one's as in trio's open_tcp_stream, and the slot
        # stays free until an attempt takes it, also while no address is left
        # to try until the other family answers.
        self._next_start = -math.inf
        return attempt

    def on_success(self, address: Address, now: float) -> Won | None:
        """The attempt to ``address`` connected.

        Args:
          address: An address that :meth:`next_attempt` returned, whose attempt
              has not ended yet.
          now: When it connected.

        Returns:
          :class:`Won` if it is the first to connect: the race is over, and it
          names the attempts to cancel. ``None`` if the race was already won
          (two attempts connected in the same instant) or given up: the
          driver closes this connection.

        Raises:
          ValueError: No attempt to ``address`` is running.
        """
        self._tick(now)
        self._end(address)
        del self._started[address]  # a connection is not a failure to report
        if self._winner is not None or self._given_up:
            return None
        self._winner = address
        return Won(address, self.running)

    def give_up(self) -> tuple[ConnectAttempt, ...]:
        """End the race without a winner (a timeout, or every attempt failed).

        No attempt starts after this. Attempts still running are for the
        driver to cancel; a success reported later gets ``None``.

        Returns:
          :attr:`attempts`: what the :exc:`~trionet.ConnectError` lists.
        """
        if self._winner is None:
            self._given_up = True
        return self.attempts

    # --------------------------------------------------------------- decisions

    # When the next attempt starts, RFC 8305 section 5:
    #
    #     "connection attempts SHOULD NOT be made simultaneously. Instead, one
    #     connection attempt to a single address is started first, followed by
    #     the others in the list, one at a time. Starting a new connection
    #     attempt does not affect previous attempts"
    #
    # and the next one waits for the Connection Attempt Delay (250 ms). The
    # delay is how long we give an attempt that may still succeed: one that
    # failed has nothing left to wait for, so its failure starts the next at
    # once (as trio's open_tcp_stream and RFC 6555 implementations do), and
    # with nothing running there is nothing to wait for either. So an attempt
    # is due when nothing runs, or an attempt failed since the last start, or
    # the delay has passed since the last start. attempt_delay=None is an
    # infinite delay: strictly one attempt at a time, each after the previous
    # failed (trio's happy_eyeballs_delay=None still starts the next after
    # 250 ms, against its own documentation).
    #
    # "Once one of the connection attempts succeeds ..., all other connections
    # attempts that have not yet succeeded SHOULD be canceled. Any address that
    # was not yet attempted as a connection SHOULD be ignored": after a win,
    # nothing starts, and on_success names the attempts to cancel.
    def next_attempt(self, now: float) -> Address | None:
        """The address to start an attempt to now, or ``None`` if none is due.

        An address returned counts as attempted from ``now`` on; call again
        until it returns ``None`` (at most one attempt is due per call).

        Args:
          now: The current time.
        """
        if now < self._now:
            self._tick(now)  # raises
        self._now = now
        if not self._pending or self._winner is not None or self._given_up:
            return None
        # RFC 8305 section 5: one at a time, the next after the delay or at
        # once when an attempt failed (the reasoning is above). Nothing
        # running means that nothing started yet or the last one failed: both
        # leave _next_start at -inf.
        if now < self._next_start:
            return None
        address = self._pending.pop(0)
        self._running.add(address)
        self._started[address] = now
        self._next_start = now + self._delay
        return address

    def next_wakeup(self) -> float | None:
        """When :meth:`next_attempt` will next return an address if nothing else happens.

        Returns:
          That time, which is at most the last time the machine was given if
          an attempt is due now; ``None`` if no attempt can start before the
          next event (nothing left to try, or ``attempt_delay=None`` and an
          attempt running, or the race is over).
        """
        if not self._pending or self._winner is not None or self._given_up:
            return None
        if self._next_start == math.inf:
            return None
        return max(self._next_start, self._now)

    # ------------------------------------------------------------------- state

    @property
    def done(self) -> bool:
        """Whether the race is over: won, given up, or every address tried and failed."""
        return (
            self._winner is not None
            or self._given_up
            or (self._lookups_done and not self._pending and not self._running)
        )

    @property
    def winner(self) -> Address | None:
        """The address that connected first, or ``None``."""
        return self._winner

    @property
    def attempts(self) -> tuple[ConnectAttempt, ...]:
        """Every attempt that has not connected, in the order they started.

        An attempt still running (or cancelled because another won) has
        ``ended_at`` and ``error`` ``None``.
        """
        return tuple(
            self._failed.get(address) or ConnectAttempt(address, started, None, None)
            for address, started in self._started.items()
        )

    @property
    def running(self) -> tuple[Address, ...]:
        """The attempts that have started and not ended, in the order they started."""
        return tuple(a for a in self._started if a in self._running)

    @property
    def addresses(self) -> tuple[Address, ...]:
        """Every address given that may be attempted, in order of arrival."""
        return tuple(self._arrived)

    @property
    def ruled_out(self) -> tuple[Address, ...]:
        """The addresses given of another family than ``family``, in order of arrival."""
        return tuple(self._ruled_out)

    # ----------------------------------------------------------------- helpers

    def _tick(self, now: float) -> None:
        if now < self._now:
            raise ValueError(f"time went backwards: {now!r} after {self._now!r}")
        self._now = now

    def _end(self, address: Address) -> None:
        try:
            self._running.remove(address)
        except KeyError:
            raise ValueError(f"no attempt to {address} is running") from None
