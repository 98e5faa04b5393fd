"""Retransmission timing for requests over an unreliable transport (sans-IO).

:class:`RetryPolicy` says when a request is sent again and when it is given
up: an initial timeout, spread by a random factor so that many clients that
lost their packets at the same moment do not retransmit together, multiplied
after each expiry up to a cap, for a budget of attempts and an optional overall
deadline. Its defaults are CoAP's (RFC 7252 section 4.8), the one IETF
request/response protocol over UDP that specifies all of these numbers.

:class:`RttEstimator` measures the round-trip time of a path as TCP does
(RFC 6298: SRTT, RTTVAR, RTO) and gives the initial timeout that a policy then
backs off from. It applies Karn's rule: a reply to a request that was sent more
than once says nothing about the round-trip time, because it cannot tell which
transmission it answers.

Nothing here reads a clock or sleeps: callers pass durations in and get
durations out, so the same code drives trio, asyncio or a simulation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, final

__all__ = [
    "ACK_RANDOM_FACTOR",
    "ACK_TIMEOUT",
    "DEFAULT_BACKOFF_MULTIPLIER",
    "DEFAULT_MAX_TIMEOUT",
    "MAX_RETRANSMIT",
    "RTO_CLOCK_GRANULARITY",
    "RTO_INITIAL",
    "RTO_MAX",
    "RTO_MIN",
    "RetryPolicy",
    "RttEstimator",
]

# CoAP's transmission parameters, RFC 7252 section 4.8: the first timeout is
# drawn uniformly from [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR] and a
# confirmable message is retransmitted at most MAX_RETRANSMIT times.
ACK_TIMEOUT: Final = 2.0
ACK_RANDOM_FACTOR: Final = 1.5
MAX_RETRANSMIT: Final = 4
# RFC 7252 section 4.2: "the timeout is doubled" after each retransmission.
DEFAULT_BACKOFF_MULTIPLIER: Final = 2.0
# RFC 6298 section 2.5: a maximum may be placed on RTO "provided it is at least
# 60 seconds". CoAP's defaults never reach it (their largest wait is 48 s).
DEFAULT_MAX_TIMEOUT: Final = 60.0

# RFC 6298 section 2.1: before the first measurement, RTO is 1 second.
RTO_INITIAL: Final = 1.0
# RFC 6298 section 2.4: "the RTO SHOULD be rounded up to 1 second" when the
# formula gives less. The floor protects Internet paths from spurious
# retransmissions (delayed acknowledgements, routing changes, a busy peer); on
# a LAN, where round trips take well under a millisecond and a lost datagram is
# better resent quickly, lowering it (Linux's TCP uses 200 ms, TCP_RTO_MIN) is
# reasonable.
RTO_MIN: Final = 1.0
# RFC 6298 section 2.5: the largest RTO at which the estimate is capped.
RTO_MAX: Final = 60.0
# RFC 6298's G, the clock granularity. trio's clock has sub-microsecond
# resolution; 1 ms is Linux's TCP timer granularity at HZ=1000, and keeps the
# variance term from vanishing on a path whose samples are all alike.
RTO_CLOCK_GRANULARITY: Final = 0.001
# RFC 6298 section 2.3 (from Jacobson's 1988 paper): alpha = 1/8, beta = 1/4, K = 4.
RTO_ALPHA: Final = 0.125
RTO_BETA: Final = 0.25
RTO_K: Final = 4


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive, finite number of seconds, not {value!r}")
    return float(value)


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retransmit a request, and when to give it up.

    The first transmission waits ``initial_timeout * (1 + r * (random_factor -
    1))`` seconds for a reply, with ``r`` drawn from ``rng`` in [0, 1); each
    retransmission waits ``multiplier`` times longer than the one before, at
    most ``max_timeout``. After ``max_attempts`` transmissions, or once
    ``deadline`` seconds have passed since the first, the request is given up.
    The defaults are CoAP's (RFC 7252 section 4.8): 2 to 3 s, doubled, 5
    transmissions (4 retransmissions), given up after at most 93 s
    (:attr:`max_wait`, CoAP's MAX_TRANSMIT_WAIT).

    Args:
      initial_timeout: Seconds to wait after the first transmission, before the
          random factor. An :class:`RttEstimator`'s ``rto`` replaces it when
          one is given to :meth:`timeouts`.
      multiplier: How much longer each wait is than the one before; at least 1.
      max_timeout: The longest any single wait may be.
      random_factor: The first wait is spread uniformly over ``[t, t *
          random_factor]``; 1 for none. The spread keeps many clients that
          lost packets at the same moment from retransmitting in step.
      max_attempts: Transmissions in all, the first included; at least 1.
      deadline: Seconds after the first transmission at which the request is
          given up even if attempts remain (the last wait is shortened to end
          there); ``None`` for no deadline.
      rng: Returns a float in [0, 1); pass ``random.Random(seed).random`` for
          reproducible timings. ``None`` (the default): the caller's source,
          given to :meth:`first_timeout` or :meth:`timeouts`; trionet's
          :meth:`~trionet.UDPEndpoint.request` gives the run's current one,
          which is :func:`random.random` unless a
          :class:`~trionet.testing.VirtualNetwork` is installed (then it
          derives from the network's seed); without one, :func:`random.random`.
          Not compared, hashed or printed.

    Raises:
      ValueError: An argument is out of range.

    Example:
      >>> policy = RetryPolicy(initial_timeout=1.0, random_factor=1.0, max_attempts=4)
      >>> list(policy.timeouts())
      [1.0, 2.0, 4.0, 8.0]
      >>> list(RetryPolicy(random_factor=1.0, deadline=10.0).timeouts())
      [2.0, 4.0, 4.0]
    """

    initial_timeout: float = ACK_TIMEOUT
    multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    max_timeout: float = DEFAULT_MAX_TIMEOUT
    random_factor: float = ACK_RANDOM_FACTOR
    max_attempts: int = MAX_RETRANSMIT + 1
    deadline: float | None = None
    rng: Callable[[], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _positive("initial_timeout", self.initial_timeout)
        _positive("max_timeout", self.max_timeout)
        if not (isinstance(self.multiplier, (int, float)) and 1 <= self.multiplier < math.inf):
            raise ValueError(f"multiplier must be a finite number >= 1, not {self.multiplier!r}")
        if not (isinstance(self.random_factor, (int, float)) and 1 <= self.random_factor < math.inf):
            raise ValueError(
                f"random_factor must be a finite number >= 1, not {self.random_factor!r}"
            )
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool) or (
            self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be an int >= 1, not {self.max_attempts!r}")
        if self.deadline is not None:
            _positive("deadline", self.deadline)
        if self.rng is not None and not callable(self.rng):
            raise ValueError(f"rng must be a callable returning a float in [0, 1), not {self.rng!r}")

    def first_timeout(
        self, initial_timeout: float | None = None, *, rng: Callable[[], float] | None = None
    ) -> float:
        """The wait after the first transmission, with its random spread drawn.

        Args:
          initial_timeout: Replaces the policy's ``initial_timeout`` for this
              request: typically :attr:`RttEstimator.rto`.
          rng: The source to draw from if the policy has no ``rng`` of its own
              (:func:`random.random` if neither is given).

        Raises:
          ValueError: ``initial_timeout`` is not a positive number.
        """
        if initial_timeout is None:
            first = self.initial_timeout
        else:
            first = _positive("initial_timeout", initial_timeout)
        if self.random_factor != 1:
            draw = self.rng or rng or random.random
            first *= 1 + draw() * (self.random_factor - 1)
        return first if first < self.max_timeout else self.max_timeout

    def next_timeout(self, timeout: float) -> float:
        """The wait after the transmission that follows one that waited ``timeout``."""
        timeout *= self.multiplier
        return timeout if timeout < self.max_timeout else self.max_timeout

    def timeouts(
        self, *, initial_timeout: float | None = None, rng: Callable[[], float] | None = None
    ) -> Iterator[float]:
        """The wait after each transmission, in order: one value per transmission.

        The random spread of the first wait is drawn when this is called, so
        each request should call it anew. (:meth:`first_timeout`,
        :meth:`next_timeout`, ``max_attempts`` and ``deadline`` give the same
        values one at a time.)

        Args:
          initial_timeout: Replaces the policy's ``initial_timeout`` for this
              request: typically :attr:`RttEstimator.rto`.
          rng: As for :meth:`first_timeout`.

        Returns:
          An iterator of the seconds to wait for a reply after each
          transmission. The sum of the values is when the request is given up,
          counted from the first transmission; it never exceeds ``deadline``.

        Raises:
          ValueError: ``initial_timeout`` is not a positive number.
        """
        return self._timeouts(self.first_timeout(initial_timeout, rng=rng))

    def _timeouts(self, timeout: float) -> Iterator[float]:
        remaining = math.inf if self.deadline is None else self.deadline
        for _ in range(self.max_attempts):
            if timeout >= remaining:
                yield remaining
                return
            yield timeout
            remaining -= timeout
            timeout = self.next_timeout(timeout)

    @property
    def max_wait(self) -> float:
        """The longest a request can take before it is given up, in seconds.

        The sum of the waits when the random spread is at its largest; with the
        defaults, CoAP's MAX_TRANSMIT_WAIT of 93 s (RFC 7252 section 4.8.2).
        """
        worst = RetryPolicy(
            initial_timeout=self.initial_timeout * self.random_factor,
            multiplier=self.multiplier,
            max_timeout=self.max_timeout,
            random_factor=1.0,
            max_attempts=self.max_attempts,
            deadline=self.deadline,
        )
        return math.fsum(worst.timeouts())


@final
class RttEstimator:
    """A path's smoothed round-trip time and retransmission timeout (RFC 6298).

    Feed it the round-trip time of each request that got a reply to its first
    transmission (:meth:`sample`); read :attr:`rto` as the initial timeout of
    the next request. One estimator describes one path, so keep one per peer
    and share it among the requests to that peer.

    The formulas are those of RFC 6298 section 2, with ``alpha = 1/8``,
    ``beta = 1/4`` and ``K = 4``. The first sample ``R`` sets ``SRTT = R``,
    ``RTTVAR = R/2``; each later sample ``R'`` sets ``RTTVAR = (1 - beta) *
    RTTVAR + beta * |SRTT - R'|``, then ``SRTT = (1 - alpha) * SRTT + alpha *
    R'``; then ``RTO = SRTT + max(G, K * RTTVAR)``, kept within ``[min_rto,
    max_rto]``.

    Args:
      initial_rto: RTO before the first sample (RFC 6298 section 2.1: 1 s).
          :meth:`UDPEndpoint.request <trionet.UDPEndpoint.request>` does not
          use it: until the estimator has a sample (or was backed off), a
          request's first wait comes from its ``RetryPolicy``.
      min_rto: The floor of RTO (RFC 6298 section 2.4: 1 s). On a LAN, where
          round trips take well under a millisecond, a lower floor (such as
          Linux TCP's 200 ms, or less) recovers from a lost datagram sooner;
          on the Internet the floor avoids spurious retransmissions.
      max_rto: The ceiling of RTO (RFC 6298 section 2.5: at least 60 s).
      granularity: The clock granularity G, in seconds.

    Raises:
      ValueError: A duration is not positive, or ``min_rto > max_rto``.

    Example:
      >>> rtt = RttEstimator(min_rto=0.01)
      >>> rtt.sample(0.100)
      True
      >>> round(rtt.srtt, 6), round(rtt.rttvar, 6), round(rtt.rto, 6)
      (0.1, 0.05, 0.3)
      >>> rtt.sample(5.0, retransmitted=True)  # Karn's rule: ignored
      False
    """

    __slots__ = ("_backed_off", "_granularity", "_max_rto", "_min_rto", "_rto", "_rttvar",
                 "_samples", "_srtt")

    def __init__(
        self,
        *,
        initial_rto: float = RTO_INITIAL,
        min_rto: float = RTO_MIN,
        max_rto: float = RTO_MAX,
        granularity: float = RTO_CLOCK_GRANULARITY,
    ) -> None:
        self._min_rto = _positive("min_rto", min_rto)
        self._max_rto = _positive("max_rto", max_rto)
        if self._min_rto > self._max_rto:
            raise ValueError(f"min_rto ({min_rto!r}) must not exceed max_rto ({max_rto!r})")
        self._granularity = _positive("granularity", granularity)
        self._rto = self._clamp(_positive("initial_rto", initial_rto))
        self._srtt: float | None = None
        self._rttvar: float | None = None
        self._samples = 0
        self._backed_off = False

    def _clamp(self, rto: float) -> float:
        return min(max(rto, self._min_rto), self._max_rto)

    @property
    def rto(self) -> float:
        """The retransmission timeout to use now, in seconds."""
        return self._rto

    @property
    def srtt(self) -> float | None:
        """The smoothed round-trip time, or ``None`` before the first sample."""
        return self._srtt

    @property
    def rttvar(self) -> float | None:
        """The round-trip time variation, or ``None`` before the first sample."""
        return self._rttvar

    @property
    def samples(self) -> int:
        """How many samples have been taken (ignored ones not counted)."""
        return self._samples

    @property
    def backed_off(self) -> bool:
        """Whether :meth:`backoff` raised :attr:`rto` since the last sample (or ever, before one)."""
        return self._backed_off

    @property
    def min_rto(self) -> float:
        """The floor of :attr:`rto`."""
        return self._min_rto

    @property
    def max_rto(self) -> float:
        """The ceiling of :attr:`rto`."""
        return self._max_rto

    def sample(self, rtt: float, *, retransmitted: bool = False) -> bool:
        """Take a round-trip time measurement.

        Args:
          rtt: Seconds from the transmission of a request to its reply; at
              least 0.
          retransmitted: Whether the request was sent more than once. Karn's
              rule (RFC 6298 section 3): such a sample is ambiguous, since
              the reply may answer any of the transmissions, and is ignored.

        Returns:
          Whether the sample was used.

        Raises:
          ValueError: ``rtt`` is negative or not finite.
        """
        if not (isinstance(rtt, (int, float)) and 0 <= rtt < math.inf):
            raise ValueError(f"a round-trip time must be a finite number >= 0, not {rtt!r}")
        if retransmitted:
            return False
        if self._srtt is None or self._rttvar is None:
            srtt, rttvar = float(rtt), rtt / 2
        else:
            rttvar = (1 - RTO_BETA) * self._rttvar + RTO_BETA * abs(self._srtt - rtt)
            srtt = (1 - RTO_ALPHA) * self._srtt + RTO_ALPHA * rtt
            # A weighted mean lies between its terms; rounding (of subnormal
            # floats, say) must not carry it outside.
            srtt = min(max(srtt, min(self._srtt, rtt)), max(self._srtt, rtt))
        self._srtt, self._rttvar = srtt, rttvar
        self._rto = self._clamp(srtt + max(self._granularity, RTO_K * rttvar))
        self._samples += 1
        self._backed_off = False
        return True

    def backoff(self, expired_timeout: float | None = None) -> None:
        """A retransmission timer expired: back RTO off (RFC 6298 section 5.5).

        Without an argument, ``RTO = 2 * RTO`` as RFC 6298 says. Given the
        timeout that expired, ``RTO = max(RTO, 2 * expired_timeout)``: the same
        for one request at a time, and when many concurrent requests sharing
        this estimator expire together, RTO doubles once, not once per request.
        On a new estimator (no sample, no backoff yet) it is ``2 *
        expired_timeout``: the caller's first timeout replaced the initial RTO.
        The backed-off value stays until the next sample replaces it (the second
        half of Karn's algorithm). Either way RTO stays at most ``max_rto``.
        """
        if expired_timeout is None:
            backed_off = 2 * self._rto
        else:
            expired = 2 * _positive("expired_timeout", expired_timeout)
            # Before any sample or backoff, RTO is only RFC 6298's guess, which
            # the caller's own first timeout replaced: back off from that.
            fresh = not self._samples and not self._backed_off
            backed_off = expired if fresh else max(self._rto, expired)
        self._rto = self._clamp(backed_off)
        self._backed_off = True

    def __repr__(self) -> str:
        def show(value: float | None) -> str:
            return "None" if value is None else f"{value:.6g}"

        return (
            f"RttEstimator(srtt={show(self._srtt)}, rttvar={show(self._rttvar)}, "
            f"rto={show(self._rto)}, samples={self._samples})"
        )
