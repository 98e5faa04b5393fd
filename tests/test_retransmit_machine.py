"""The retransmission schedule as a sans-IO state machine: times in, decisions out, no clock.

Imports private ``trionet._sansio.retransmit``: the sans-IO retransmission state
machine behind ``request()`` is internal.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionet import RetryPolicy, RttEstimator
from trionet._sansio.retransmit import LATE_REPLY_WINDOW_FACTOR, Answered, GiveUp, Retransmission, Transmit

T0 = 1000.0  # an arbitrary clock reading: the machine only ever sees differences


def policy(**kwargs: object) -> RetryPolicy:
    """A policy with no random spread unless asked (``rng``, ``random_factor``)."""
    kwargs.setdefault("random_factor", 1.0)
    return RetryPolicy(**kwargs)  # type: ignore[arg-type]


def run_to_give_up(machine: Retransmission, start: float = T0) -> tuple[list[Transmit], GiveUp]:
    """Feed every expiry exactly at its deadline until the machine gives up."""
    decision: Transmit | GiveUp = machine.start(start)
    sent: list[Transmit] = []
    while isinstance(decision, Transmit):
        sent.append(decision)
        decision = machine.on_timeout(decision.deadline)
    return sent, decision


def counting(value: float) -> tuple[Callable[[], float], list[int]]:
    """A random source that always returns ``value`` and counts its calls."""
    calls = [0]

    def rng() -> float:
        calls[0] += 1
        return value

    return rng, calls


# ------------------------------------------------------------------ first wait


def test_the_first_wait_is_the_policys_initial_timeout() -> None:
    machine = Retransmission(policy(initial_timeout=0.5))
    assert machine.start(T0) == Transmit(attempt=1, timeout=0.5, deadline=T0 + 0.5)


def test_the_first_wait_is_spread_by_the_injected_random_draw() -> None:
    machine = Retransmission(RetryPolicy(initial_timeout=2.0, random_factor=1.5, rng=lambda: 0.5))
    assert machine.start(T0).timeout == pytest.approx(2.5)  # 2 * (1 + 0.5 * 0.5)


def test_the_random_draw_happens_once_when_the_machine_is_made() -> None:
    rng, calls = counting(0.25)
    machine = Retransmission(RetryPolicy(rng=rng))
    assert calls == [1]
    run_to_give_up(machine)
    assert calls == [1]  # only the first wait is spread; later ones derive from it


def test_a_new_estimator_does_not_replace_the_policys_initial_timeout() -> None:
    # Issue 14.9: RttEstimator's RFC 6298 start (1 s) must not override 0.2 s.
    machine = Retransmission(policy(initial_timeout=0.2), RttEstimator())
    assert machine.start(T0).timeout == 0.2


def test_an_estimator_with_a_sample_gives_the_first_wait_times_the_spread() -> None:
    rtt = RttEstimator(min_rto=0.05)
    rtt.sample(0.1)  # rto = 0.1 + 4 * 0.05 = 0.3
    machine = Retransmission(RetryPolicy(initial_timeout=5.0, rng=lambda: 0.5), rtt)
    assert machine.start(T0).timeout == pytest.approx(0.3 * 1.25)


def test_a_backed_off_estimator_gives_the_first_wait() -> None:
    rtt = RttEstimator(min_rto=0.05)
    rtt.backoff(0.4)
    assert Retransmission(policy(initial_timeout=0.2), rtt).start(T0).timeout == 0.8


def test_the_first_wait_is_read_from_the_estimator_when_the_machine_is_made() -> None:
    rtt = RttEstimator(min_rto=0.05)
    rtt.sample(0.1)
    machine = Retransmission(policy(), rtt)
    rtt.backoff()  # meanwhile (the request waited for its turn, say)
    assert machine.start(T0).timeout == pytest.approx(0.3)


def test_the_first_wait_is_capped() -> None:
    machine = Retransmission(RetryPolicy(initial_timeout=10.0, max_timeout=3.0, rng=lambda: 0.9))
    assert machine.start(T0).timeout == 3.0


# -------------------------------------------------------------------- backoff


def test_waits_double_up_to_the_cap() -> None:
    machine = Retransmission(policy(initial_timeout=1.0, max_timeout=5.0, max_attempts=6))
    sent, _ = run_to_give_up(machine)
    assert [t.timeout for t in sent] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert [t.attempt for t in sent] == [1, 2, 3, 4, 5, 6]


def test_the_multiplier_sets_the_backoff() -> None:
    sent, _ = run_to_give_up(Retransmission(policy(initial_timeout=1.0, multiplier=3.0,
                                                   max_attempts=3)))
    assert [t.timeout for t in sent] == [1.0, 3.0, 9.0]


def test_the_default_schedule_is_coaps() -> None:
    # RFC 7252 section 4.2: 2 to 3 s, doubled, MAX_RETRANSMIT = 4 retransmissions.
    sent, give_up = run_to_give_up(Retransmission(RetryPolicy(rng=lambda: 0.0)))
    assert [t.timeout for t in sent] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert [t.deadline - T0 for t in sent] == [2.0, 6.0, 14.0, 30.0, 62.0]
    assert give_up == GiveUp(attempts=5, elapsed=62.0)


def test_retransmissions_are_due_at_the_expired_deadline_not_when_the_expiry_is_noticed() -> None:
    machine = Retransmission(policy(initial_timeout=1.0))
    first = machine.start(T0)
    second = machine.on_timeout(first.deadline + 0.3)  # the caller woke up late
    assert second == Transmit(attempt=2, timeout=2.0, deadline=T0 + 3.0)


def test_the_schedule_is_retry_policys_timeouts() -> None:
    made = RetryPolicy(initial_timeout=0.3, multiplier=1.7, max_timeout=2.0, max_attempts=8,
                       deadline=7.0, rng=lambda: 0.4)
    sent, _ = run_to_give_up(Retransmission(made))
    assert [t.timeout for t in sent] == list(made.timeouts())


# ------------------------------------------------------------------ budgets


def test_the_attempt_budget_ends_the_request() -> None:
    sent, give_up = run_to_give_up(Retransmission(policy(initial_timeout=1.0, max_attempts=3)))
    assert len(sent) == 3
    assert give_up == GiveUp(attempts=3, elapsed=7.0)


def test_a_single_attempt_gives_up_at_the_first_expiry() -> None:
    machine = Retransmission(policy(initial_timeout=1.0, max_attempts=1))
    machine.start(T0)
    assert machine.on_timeout(T0 + 1.0) == GiveUp(attempts=1, elapsed=1.0)
    assert machine.done
    assert machine.state == "gave up"


def test_the_deadline_cuts_the_last_wait_and_gives_up_there() -> None:
    sent, give_up = run_to_give_up(Retransmission(policy(initial_timeout=2.0, deadline=10.0)))
    assert [t.timeout for t in sent] == [2.0, 4.0, 4.0]  # the third cut from 8 to 4
    assert sent[-1].deadline == T0 + 10.0
    assert give_up == GiveUp(attempts=3, elapsed=10.0)


def test_a_deadline_shorter_than_the_first_wait_allows_one_transmission() -> None:
    sent, give_up = run_to_give_up(Retransmission(policy(initial_timeout=2.0, deadline=0.5)))
    assert sent == [Transmit(attempt=1, timeout=0.5, deadline=T0 + 0.5)]
    assert give_up.attempts == 1


def test_give_up_reports_the_time_since_the_first_transmission_as_observed() -> None:
    machine = Retransmission(policy(initial_timeout=1.0, max_attempts=1))
    machine.start(T0)
    give_up = machine.on_timeout(T0 + 1.25)
    assert isinstance(give_up, GiveUp)
    assert give_up.elapsed == 1.25


def test_the_give_up_message_names_the_peer_transmissions_and_time() -> None:
    assert GiveUp(1, 2.0).message("10.0.0.1:7") == (
        "no reply from 10.0.0.1:7 after 1 transmission over 2 s")
    assert GiveUp(5, 93.0).message("[::1]:53") == (
        "no reply from [::1]:53 after 5 transmissions over 93 s")


# --------------------------------------------------------------- RTT, Karn


def test_a_reply_to_the_only_transmission_is_a_round_trip_sample() -> None:
    rtt = RttEstimator(min_rto=0.01)
    machine = Retransmission(policy(), rtt)
    machine.start(T0)
    answered = machine.on_reply(T0 + 0.1)
    assert (answered.attempts, answered.sampled) == (1, True)
    assert answered.rtt == pytest.approx(0.1)
    assert rtt.samples == 1
    assert rtt.srtt == pytest.approx(0.1)
    assert machine.state == "answered"


def test_karns_rule_a_reply_to_a_retransmitted_request_is_no_sample() -> None:
    rtt = RttEstimator(min_rto=0.01)
    machine = Retransmission(policy(initial_timeout=1.0), rtt)
    first = machine.start(T0)
    machine.on_timeout(first.deadline)
    answered = machine.on_reply(first.deadline + 0.1)
    # The time since the latest transmission, reported but not sampled.
    assert (answered.attempts, answered.sampled) == (2, False)
    assert answered.rtt == pytest.approx(0.1)
    assert rtt.samples == 0


def test_without_an_estimator_a_reply_is_reported_not_sampled() -> None:
    machine = Retransmission(policy())
    machine.start(T0)
    assert machine.on_reply(T0 + 0.5) == Answered(1, 0.5, False)


def test_each_expiry_backs_the_estimator_off_the_last_one_included() -> None:
    rtt = RttEstimator(max_rto=100.0)
    run_to_give_up(Retransmission(policy(initial_timeout=1.0, max_attempts=3), rtt))
    assert rtt.backed_off
    assert rtt.rto == 8.0  # 2 * the last wait of 4 s


def test_the_backed_off_rto_starts_the_next_request() -> None:
    rtt = RttEstimator(min_rto=0.05)
    run_to_give_up(Retransmission(policy(initial_timeout=0.2, max_attempts=2), rtt))
    assert rtt.rto == pytest.approx(0.8)  # 2 * the 0.4 s wait that expired
    assert Retransmission(policy(initial_timeout=0.2), rtt).start(T0).timeout == pytest.approx(0.8)


# --------------------------------------------------------- late-reply window


def test_nothing_transmitted_means_no_late_reply_window() -> None:
    machine = Retransmission(policy())
    assert machine.late_reply_window is None
    assert machine.transmissions == 0
    assert machine.deadline is None


def test_the_late_reply_window_is_twice_the_latest_wait() -> None:
    assert LATE_REPLY_WINDOW_FACTOR == 2.0
    machine = Retransmission(policy(initial_timeout=1.0))
    machine.start(T0)
    assert machine.late_reply_window == 2.0  # abandoned while waiting (cancelled)
    machine.on_timeout(T0 + 1.0)
    assert machine.late_reply_window == 4.0
    machine.on_reply(T0 + 1.5)
    assert machine.late_reply_window == 4.0  # the window outlives the answer


def test_the_late_reply_window_after_a_give_up_follows_the_cut_last_wait() -> None:
    machine = Retransmission(policy(initial_timeout=2.0, deadline=7.0))
    run_to_give_up(machine)
    assert machine.late_reply_window == 2.0  # 2 * the last wait, cut from 8 to 1


def test_with_a_doubling_backoff_the_window_covers_the_whole_request() -> None:
    machine = Retransmission(policy(initial_timeout=1.0, max_attempts=5))
    _, give_up = run_to_give_up(machine)
    assert machine.late_reply_window is not None
    assert machine.late_reply_window >= give_up.elapsed


# ------------------------------------------------------------------ misuse


@pytest.mark.parametrize("event", ["on_timeout", "on_reply"])
def test_events_before_the_first_transmission_are_refused(event: str) -> None:
    machine = Retransmission(policy())
    with pytest.raises(RuntimeError, match="idle"):
        getattr(machine, event)(T0)
    assert machine.state == "idle"


@pytest.mark.parametrize("event", ["start", "on_timeout", "on_reply"])
def test_events_after_the_end_are_refused_and_change_nothing(event: str) -> None:
    rtt = RttEstimator()
    machine = Retransmission(policy(max_attempts=1), rtt)
    machine.start(T0)
    machine.on_reply(T0 + 0.2)
    before = repr(rtt), machine.transmissions, machine.late_reply_window
    with pytest.raises(RuntimeError, match="answered"):
        getattr(machine, event)(T0 + 5)
    assert (repr(rtt), machine.transmissions, machine.late_reply_window) == before


def test_a_started_machine_cannot_start_again() -> None:
    machine = Retransmission(policy())
    machine.start(T0)
    with pytest.raises(RuntimeError, match="waiting"):
        machine.start(T0 + 1)


def test_the_machine_shows_its_state() -> None:
    machine = Retransmission(policy(initial_timeout=1.5))
    assert repr(machine) == "<Retransmission idle, 0 transmission(s), timeout=1.5>"


# --------------------------------------------------------------- properties


policies = st.builds(
    RetryPolicy,
    initial_timeout=st.floats(0.001, 100),
    multiplier=st.floats(1, 4),
    max_timeout=st.floats(0.001, 200),
    random_factor=st.floats(1, 3),
    max_attempts=st.integers(1, 12),
    deadline=st.none() | st.floats(0.001, 1000),
    rng=st.floats(0, 0.999999).map(lambda draw: lambda: draw),
)


@given(made=policies, start=st.floats(0, 1e6))
def test_the_schedule_respects_every_bound(made: RetryPolicy, start: float) -> None:
    machine = Retransmission(made)
    sent, give_up = run_to_give_up(machine, start)
    waits = [t.timeout for t in sent]
    # Never more transmissions than the budget, numbered 1, 2, ...
    assert 1 <= len(sent) <= made.max_attempts
    assert [t.attempt for t in sent] == list(range(1, len(sent) + 1))
    assert give_up.attempts == machine.transmissions == len(sent)
    # Each wait within [min, cap]: the first from the policy's spread, later
    # ones no shorter, none above the cap; only a last wait cut by the
    # deadline may be shorter.
    floor = min(made.initial_timeout, made.max_timeout)
    assert all(0 < w <= made.max_timeout for w in waits)
    assert all(w >= floor * (1 - 1e-12) for w in waits[:-1])
    assert waits[0] <= min(made.initial_timeout * made.random_factor, made.max_timeout) * (1 + 1e-12)
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(waits[:-1]))
    # Deadlines never go back, and each is the sum of the waits before it.
    deadlines = [t.deadline for t in sent]
    assert all(a <= b for a, b in itertools.pairwise([start, *deadlines]))
    assert deadlines[-1] - start == pytest.approx(math.fsum(waits), rel=1e-9, abs=1e-6)
    if made.deadline is not None:
        assert give_up.elapsed <= made.deadline * (1 + 1e-9) + 1e-6
    assert give_up.elapsed <= made.max_wait * (1 + 1e-9) + 1e-6


@given(made=policies)
def test_deadlines_strictly_increase_when_waits_are_not_slivers(made: RetryPolicy) -> None:
    sent, _ = run_to_give_up(Retransmission(made), 0.0)
    deadlines = [0.0, *(t.deadline for t in sent)]
    assert all(a < b for a, b in itertools.pairwise(deadlines[:-1]))
    assert all(a < b for a, b in itertools.pairwise(deadlines)) or sent[-1].timeout < 1e-9


@given(made=policies, answer_after=st.integers(0, 11), delay=st.floats(0, 1))
def test_only_a_reply_to_a_single_transmission_feeds_the_estimator(
    made: RetryPolicy, answer_after: int, delay: float
) -> None:
    rtt = RttEstimator(min_rto=0.001)
    machine = Retransmission(made, rtt)
    sent_at = 0.0
    decision: Transmit | GiveUp = machine.start(sent_at)
    for _ in range(answer_after):
        if isinstance(decision, GiveUp):
            return
        sent_at = decision.deadline  # the next transmission is due then
        decision = machine.on_timeout(sent_at)
    if isinstance(decision, GiveUp):
        return
    answered = machine.on_reply(sent_at + delay)
    assert answered.attempts == answer_after + 1
    assert answered.sampled == (answered.attempts == 1)
    assert rtt.samples == (1 if answered.attempts == 1 else 0)
    assert answered.rtt == pytest.approx(delay, abs=1e-6)
