"""The retransmission schedule of one request, as a state machine (sans-IO).

:class:`Retransmission` decides, for one request over an unreliable transport,
when each transmission happens, how long it waits for a reply, when the
request is given up, which round-trip time a reply measures, and how long the
request's late replies are worth recognising after it ends. It is fed the
clock's time with each event (:meth:`~Retransmission.start`,
:meth:`~Retransmission.on_timeout`, :meth:`~Retransmission.on_reply`) and
answers with a decision (:class:`Transmit`, :class:`GiveUp`,
:class:`Answered`); the caller does the sending, the waiting and the
reporting. The timings come from a :class:`~trionet.RetryPolicy`, and an
optional :class:`~trionet.RttEstimator` is read for the first wait, backed off
at each expiry and fed the samples that Karn's rule allows.

Nothing here reads a clock or sleeps (the h11 pattern), so the schedule is
tested by feeding it times, and :meth:`UDPEndpoint.request
<trionet.UDPEndpoint.request>` is a thin trio loop around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, NamedTuple, final

from .retry import RetryPolicy, RttEstimator

__all__ = [
    "LATE_REPLY_WINDOW_FACTOR",
    "Answered",
    "GiveUp",
    "Retransmission",
    "Transmit",
]

# Late replies (issue 14.2), trionet's choice: a finished request's replies are
# recognised for this many times the wait given to its latest transmission.
# With a backoff multiplier of 2 or more that is at least as long as the request
# lasted (the latest wait is at least the sum of the earlier ones): the span over
# which its copies, and the replies to them, are still travelling.
LATE_REPLY_WINDOW_FACTOR: Final = 2.0

# The machine's states.
_IDLE: Final = 0  # created, nothing transmitted
_WAITING: Final = 1  # a transmission waits for its reply
_ANSWERED: Final = 2
_GAVE_UP: Final = 3
_STATE_NAMES: Final = ("idle", "waiting", "answered", "gave up")


# Decisions are named tuples, as Datagram is: immutable, and cheaper to make
# than frozen dataclasses on request()'s hot path (one Transmit and one
# Answered per request). The machine makes them with _new, tuple.__new__
# called directly, which skips the Python-level __new__ of a named tuple and
# halves the cost (0.1 us instead of 0.2 us of a 50 us request).
_new = tuple.__new__


@final
class Transmit(NamedTuple):
    """Send the request now, then wait for a reply until ``deadline``.

    Attributes:
      attempt: Which transmission this is: 1 for the first, more for a
          retransmission.
      timeout: How long this transmission waits for a reply, in seconds.
      deadline: When that wait ends, on the clock the machine is fed.
    """

    attempt: int
    timeout: float
    deadline: float


@final
class GiveUp(NamedTuple):
    """No reply came within the policy's budget: the request has failed.

    Attributes:
      attempts: Transmissions made, the first included.
      elapsed: Seconds from the first transmission to the expiry of the last wait.
    """

    attempts: int
    elapsed: float

    def message(self, peer: object) -> str:
        """The text of the error that reports this, naming ``peer``."""
        plural = "" if self.attempts == 1 else "s"
        return f"no reply from {peer} after {self.attempts} transmission{plural} over {self.elapsed:.3g} s"


@final
class Answered(NamedTuple):
    """A reply came: the request is done.

    Attributes:
      attempts: Transmissions made, the first included.
      rtt: Seconds from the latest transmission to the reply (a round trip if
          that transmission is the one answered).
      sampled: Whether the estimator took ``rtt`` as a sample (Karn's rule).
    """

    attempts: int
    rtt: float
    sampled: bool


@final
class Retransmission:
    """When to send one request, how long to wait, and when to give it up.

    The caller makes one per request, calls :meth:`start` when it may
    transmit, sends the request at each :class:`Transmit` and waits for a
    reply until its ``deadline``, then reports what happened first: the reply
    (:meth:`on_reply`) or the expiry (:meth:`on_timeout`, which answers with
    the next :class:`Transmit` or a :class:`GiveUp`). A request abandoned
    midway (cancelled, say) needs no event: :attr:`late_reply_window` still
    says how long to recognise its replies.

    The first wait is drawn when the machine is made (from the policy's
    ``rng``): ``policy.initial_timeout``, or ``rtt.rto`` once the estimator
    has a sample or was backed off, times the policy's random spread, capped
    at ``policy.max_timeout``. Each later wait is ``policy.multiplier`` times
    the one before, capped at ``policy.max_timeout``. Transmission ``n`` is due
    exactly the sum of the first ``n - 1`` waits after the first transmission:
    the schedule is counted from the start, so a late wake-up does not push
    later transmissions back. There are at most ``policy.max_attempts``
    transmissions, and with ``policy.deadline`` the last wait is cut to end
    that many seconds after the first transmission.

    Args:
      policy: The timings and the budget.
      rtt: The path's estimator, or ``None``. The machine reads it here, backs
          it off each time a wait expires, and gives it the round-trip time of
          a reply to a request transmitted once.
      rng: Where the first wait's random spread is drawn from when the
          policy has no ``rng`` of its own (:func:`random.random` if ``None``).

    Raises:
      RuntimeError: An event came in a state where it cannot happen (a reply
          before the first transmission, anything after the request ended):
          the caller's bug. The machine is unchanged.

    Example:
      >>> policy = RetryPolicy(initial_timeout=1.0, random_factor=1.0, max_attempts=3)
      >>> machine = Retransmission(policy)
      >>> machine.start(100.0)
      Transmit(attempt=1, timeout=1.0, deadline=101.0)
      >>> machine.on_timeout(101.0)
      Transmit(attempt=2, timeout=2.0, deadline=103.0)
      >>> machine.on_timeout(103.0)
      Transmit(attempt=3, timeout=4.0, deadline=107.0)
      >>> machine.on_timeout(107.0)
      GiveUp(attempts=3, elapsed=7.0)
      >>> machine.late_reply_window
      8.0
    """

    __slots__ = ("_attempts", "_deadline", "_policy", "_remaining", "_rtt", "_sent_at",
                 "_start", "_state", "_timeout")

    def __init__(
        self,
        policy: RetryPolicy,
        rtt: RttEstimator | None = None,
        *,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self._policy = policy
        self._rtt = rtt
        # RFC 7252 section 4.2 (CoAP): the first timeout is random within
        # [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR], so that clients that
        # lost packets together do not retransmit together. The base is the
        # policy's, or the estimator's RTO (RFC 6298 section 2) once it has
        # measured the path or backed off: a new estimator knows nothing of the
        # path, its 1 s is RFC 6298's guess, and the policy's initial_timeout is
        # the caller's (issue 14.9).
        if rtt is None or (not rtt.samples and not rtt.backed_off):
            self._timeout = policy.first_timeout(policy.initial_timeout, rng=rng)
        else:
            self._timeout = policy.first_timeout(rtt.rto, rng=rng)
        self._remaining = math.inf if policy.deadline is None else policy.deadline
        self._state = _IDLE
        self._attempts = 0
        # _start, _sent_at and _deadline are set by start().

    # ------------------------------------------------------------- state

    @property
    def state(self) -> str:
        """``"idle"``, ``"waiting"``, ``"answered"`` or ``"gave up"``."""
        return _STATE_NAMES[self._state]

    @property
    def done(self) -> bool:
        """Whether the request ended (answered or given up)."""
        return self._state >= _ANSWERED

    @property
    def transmissions(self) -> int:
        """Transmissions decided so far (0 before :meth:`start`)."""
        return self._attempts

    @property
    def timeout(self) -> float:
        """The latest transmission's wait; before :meth:`start`, the first wait drawn."""
        return self._timeout

    @property
    def started_at(self) -> float | None:
        """When :meth:`start` was called; ``None`` before."""
        return None if self._state == _IDLE else self._start

    @property
    def deadline(self) -> float | None:
        """When the latest transmission's wait ends; ``None`` before :meth:`start`."""
        return None if self._state == _IDLE else self._deadline

    @property
    def late_reply_window(self) -> float | None:
        """For how many seconds after the request ends its replies are late replies.

        ``LATE_REPLY_WINDOW_FACTOR`` times the latest transmission's wait,
        whatever ended the request (a reply, a give-up, or the caller
        abandoning it); ``None`` if nothing was transmitted, as then no reply
        can come.
        """
        if not self._attempts:
            return None
        return LATE_REPLY_WINDOW_FACTOR * self._timeout

    # ------------------------------------------------------------ events

    def start(self, now: float) -> Transmit:
        """The first transmission, at ``now``: send it and wait until its deadline.

        Raises:
          RuntimeError: The machine was started already.
        """
        if self._state != _IDLE:
            raise RuntimeError(f"start() on a request that is {self.state}")
        self._state = _WAITING
        self._start = self._sent_at = now
        # _transmit() inlined: this runs once per request, on the hot path.
        timeout = self._timeout
        if timeout > self._remaining:
            timeout = self._timeout = self._remaining
        self._remaining -= timeout
        self._attempts = 1
        self._deadline = deadline = now + timeout
        return _new(Transmit, (1, timeout, deadline))

    def on_timeout(self, now: float) -> Transmit | GiveUp:
        """The latest transmission's wait expired at ``now`` with no reply.

        The estimator backs off. The next transmission is due at the deadline
        that expired (not at ``now``, which may be a little later), and waits
        longer; unless the attempts or the overall deadline are spent, and the
        request is given up (``now`` then gives :attr:`GiveUp.elapsed`).

        Raises:
          RuntimeError: No transmission is waiting.
        """
        if self._state != _WAITING:
            raise RuntimeError(f"on_timeout() on a request that is {self.state}")
        timeout = self._timeout
        if self._rtt is not None:
            # RFC 6298 section 5.5: when the timer expires, back off the RTO
            # (the estimator doubles it once however many requests sharing it
            # expire together; see RttEstimator.backoff), and keep it until a
            # sample replaces it (Karn's algorithm, RFC 6298 section 5.7).
            self._rtt.backoff(timeout)
        policy = self._policy
        if self._attempts >= policy.max_attempts or self._remaining <= 0:
            # RFC 8085 section 3.1.3: an application over UDP must bound its
            # retransmissions; CoAP gives up after MAX_RETRANSMIT of them
            # (RFC 7252 section 4.2). The policy's deadline bounds the time too.
            self._state = _GAVE_UP
            return _new(GiveUp, (self._attempts, now - self._start))
        # RFC 8085 section 3.1.3 asks for exponential backoff of retransmissions,
        # RFC 7252 section 4.2 doubles the timeout each time, and RFC 6298 section
        # 2.5 allows a cap (of at least 60 s, the default max_timeout).
        self._timeout = policy.next_timeout(timeout)
        self._sent_at = self._deadline
        return self._transmit()

    def on_reply(self, now: float) -> Answered:
        """A reply arrived at ``now``: the request is done.

        The estimator takes the time since the latest transmission as a sample
        only if that was the first and only one.

        Raises:
          RuntimeError: No transmission is waiting.
        """
        if self._state != _WAITING:
            raise RuntimeError(f"on_reply() on a request that is {self.state}")
        self._state = _ANSWERED
        rtt = now - self._sent_at
        estimator = self._rtt
        if estimator is None:
            return _new(Answered, (self._attempts, rtt, False))
        # Karn's rule (RFC 6298 section 3): a reply to a request sent more than
        # once may answer any of its copies, so it measures nothing.
        sampled = estimator.sample(rtt, retransmitted=self._attempts > 1)
        return _new(Answered, (self._attempts, rtt, sampled))

    def _transmit(self) -> Transmit:
        timeout = self._timeout
        if timeout > self._remaining:
            # The policy's deadline cuts the last wait short.
            timeout = self._timeout = self._remaining
        self._remaining -= timeout
        self._attempts += 1
        self._deadline += timeout
        return _new(Transmit, (self._attempts, timeout, self._deadline))

    def __repr__(self) -> str:
        return (
            f"<Retransmission {self.state}, {self._attempts} transmission(s), "
            f"timeout={self._timeout:.6g}>"
        )
