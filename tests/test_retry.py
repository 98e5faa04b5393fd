"""RetryPolicy (CoAP's timing by default) and RttEstimator (RFC 6298, Karn's rule).

The defaults are checked here as users see them; the private RFC 7252 and RFC 6298
constants behind them are checked in ``test_sansio_internals.py``.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionet import RetryPolicy, RttEstimator


def fixed(value: float) -> RetryPolicy:
    """The default policy with the random draw pinned to ``value``."""
    return RetryPolicy(rng=lambda: value)


# ------------------------------------------------------------------ RetryPolicy


def test_defaults_are_coap_transmission_parameters() -> None:
    # RFC 7252 section 4.8: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4.
    policy = RetryPolicy()
    assert policy.initial_timeout == 2.0  # ACK_TIMEOUT
    assert policy.random_factor == 1.5  # ACK_RANDOM_FACTOR
    assert policy.max_attempts == 5  # the first transmission and MAX_RETRANSMIT = 4 more
    assert policy.multiplier == 2.0
    assert policy.deadline is None


def test_without_spread_the_timeouts_double_from_the_initial_timeout() -> None:
    assert list(fixed(0.0).timeouts()) == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_the_random_factor_spreads_the_first_timeout_and_later_ones_double_from_it() -> None:
    assert list(fixed(0.5).timeouts()) == [2.5, 5.0, 10.0, 20.0, 40.0]


def test_the_default_worst_case_is_coaps_max_transmit_wait_of_93_seconds() -> None:
    # RFC 7252 section 4.8.2: MAX_TRANSMIT_WAIT = ACK_TIMEOUT * (2 ** (MAX_RETRANSMIT + 1) - 1)
    # * ACK_RANDOM_FACTOR = 93 s.
    assert RetryPolicy().max_wait == 93.0
    assert sum(fixed(0.9999999).timeouts()) < 93.0


def test_each_call_draws_the_spread_once_from_the_injected_source() -> None:
    draws = iter([0.0, 1.0 - 1e-9, 0.5])
    calls: list[float] = []

    def rng() -> float:
        calls.append(value := next(draws))
        return value

    policy = RetryPolicy(rng=rng)
    firsts = [next(policy.timeouts()) for _ in range(3)]
    assert firsts == [2.0, pytest.approx(3.0), 2.5]
    assert len(calls) == 3


def test_a_random_factor_of_one_never_calls_the_random_source() -> None:
    def rng() -> float:
        raise AssertionError("rng called")

    assert list(RetryPolicy(random_factor=1.0, rng=rng).timeouts()) == [2, 4, 8, 16, 32]


def test_the_default_random_source_spreads_the_first_timeout_over_its_range() -> None:
    firsts = [next(RetryPolicy().timeouts()) for _ in range(200)]
    assert all(2.0 <= first < 3.0 for first in firsts)
    assert max(firsts) - min(firsts) > 0.5


def test_a_seeded_random_source_makes_timings_reproducible() -> None:
    one = RetryPolicy(rng=random.Random(7).random)
    two = RetryPolicy(rng=random.Random(7).random)
    assert list(one.timeouts()) == list(two.timeouts())


def test_timeouts_stop_growing_at_the_cap() -> None:
    policy = RetryPolicy(initial_timeout=1.0, random_factor=1.0, max_timeout=5.0, max_attempts=6)
    assert list(policy.timeouts()) == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_an_initial_timeout_above_the_cap_is_capped() -> None:
    policy = RetryPolicy(initial_timeout=10.0, random_factor=1.0, max_timeout=3.0, max_attempts=2)
    assert list(policy.timeouts()) == [3.0, 3.0]


def test_the_deadline_shortens_the_last_wait_and_ends_the_attempts() -> None:
    policy = RetryPolicy(random_factor=1.0, deadline=10.0)
    assert list(policy.timeouts()) == [2.0, 4.0, 4.0]
    assert policy.max_wait == 10.0


def test_a_deadline_that_falls_on_a_timeout_boundary_ends_there() -> None:
    assert list(RetryPolicy(random_factor=1.0, deadline=6.0).timeouts()) == [2.0, 4.0]


def test_a_deadline_shorter_than_the_first_timeout_allows_one_transmission() -> None:
    assert list(RetryPolicy(random_factor=1.0, deadline=0.5).timeouts()) == [0.5]


def test_an_initial_timeout_argument_replaces_the_policys() -> None:
    assert list(fixed(0.0).timeouts(initial_timeout=0.25))[:3] == [0.25, 0.5, 1.0]
    assert fixed(0.5).first_timeout(0.2) == pytest.approx(0.25)


def test_first_and_next_timeout_give_the_same_sequence_as_timeouts() -> None:
    policy = RetryPolicy(rng=lambda: 0.3, max_timeout=20.0)
    one_by_one = [timeout := policy.first_timeout()]
    for _ in range(policy.max_attempts - 1):
        one_by_one.append(timeout := policy.next_timeout(timeout))
    assert one_by_one == list(policy.timeouts())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_timeout": 0},
        {"initial_timeout": -1.0},
        {"initial_timeout": math.inf},
        {"initial_timeout": math.nan},
        {"max_timeout": 0},
        {"multiplier": 0.5},
        {"multiplier": math.inf},
        {"random_factor": 0.9},
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"deadline": 0},
        {"deadline": -3},
        {"rng": 0.5},
    ],
    ids=lambda kwargs: ",".join(f"{k}={v}" for k, v in kwargs.items()),
)
def test_out_of_range_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_bad_initial_timeout_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="initial_timeout"):
        RetryPolicy().timeouts(initial_timeout=0.0)


def test_policies_are_immutable_values_compared_without_their_random_source() -> None:
    assert RetryPolicy(rng=lambda: 0.0) == RetryPolicy(rng=lambda: 0.5)
    assert RetryPolicy(max_attempts=3) != RetryPolicy()
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 3  # type: ignore[misc]


@given(
    initial=st.floats(0.001, 100),
    multiplier=st.floats(1, 4),
    cap=st.floats(0.001, 200),
    factor=st.floats(1, 3),
    attempts=st.integers(1, 12),
    deadline=st.none() | st.floats(0.001, 1000),
    draw=st.floats(0, 0.999999),
)
def test_timeouts_respect_every_bound(
    initial: float,
    multiplier: float,
    cap: float,
    factor: float,
    attempts: int,
    deadline: float | None,
    draw: float,
) -> None:
    policy = RetryPolicy(
        initial_timeout=initial, multiplier=multiplier, max_timeout=cap, random_factor=factor,
        max_attempts=attempts, deadline=deadline, rng=lambda: draw,
    )
    timeouts = list(policy.timeouts())
    assert 1 <= len(timeouts) <= attempts
    assert all(0 < t <= cap for t in timeouts)
    assert timeouts[0] <= min(initial * factor, cap) + 1e-9
    if deadline is not None:
        assert math.fsum(timeouts) <= deadline * (1 + 1e-9)
    # Non-decreasing, except a last wait cut short by the deadline.
    assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(timeouts[:-1]))
    assert math.fsum(timeouts) <= policy.max_wait * (1 + 1e-9)


# ------------------------------------------------------------------ RttEstimator


# Samples and the SRTT, RTTVAR and RTO that RFC 6298 section 2 gives after each,
# with alpha = 1/8, beta = 1/4, K = 4, G = 1 ms (computed with exact fractions).
RFC6298_TABLE = [
    (0.100, 0.1, 0.05, 0.3),  # (2.2): SRTT = R, RTTVAR = R/2
    (0.120, 0.1025, 0.0425, 0.2725),  # (2.3) from here on
    (0.080, 0.0996875, 0.0375, 0.2496875),
    (0.300, 0.1247265625, 0.078203125, 0.4375390625),
    (0.100, 0.1216357421875, 0.064833984375, 0.3809716796875),
]


def test_rtt_estimator_follows_rfc_6298_formulas_on_a_table_of_samples() -> None:
    rtt = RttEstimator(min_rto=0.001)
    for sample, srtt, rttvar, rto in RFC6298_TABLE:
        assert rtt.sample(sample) is True
        assert rtt.srtt == pytest.approx(srtt, rel=1e-12)
        assert rtt.rttvar == pytest.approx(rttvar, rel=1e-12)
        assert rtt.rto == pytest.approx(rto, rel=1e-12)
    assert rtt.samples == len(RFC6298_TABLE)


def test_before_any_sample_the_rto_is_one_second() -> None:
    rtt = RttEstimator()
    assert (rtt.srtt, rtt.rttvar, rtt.rto, rtt.samples) == (None, None, 1.0, 0)
    # RFC 6298 sections 2.1, 2.4 and 2.5: an initial RTO of 1 s, a floor of 1 s, a ceiling of 60 s.
    assert (rtt.min_rto, rtt.max_rto) == (1.0, 60.0)


def test_the_rto_is_rounded_up_to_the_one_second_floor_by_default() -> None:
    rtt = RttEstimator()
    rtt.sample(0.010)
    assert rtt.srtt == 0.010
    assert rtt.rto == 1.0


def test_a_lan_floor_lets_the_rto_follow_short_round_trips() -> None:
    rtt = RttEstimator(min_rto=0.005)
    rtt.sample(0.001)
    assert rtt.rto == pytest.approx(0.005)  # 0.001 + 4 * 0.0005 = 0.003, floored to 5 ms
    rtt.sample(0.004)
    assert rtt.rto == pytest.approx(0.001375 + 4 * 0.001125)


def test_the_clock_granularity_bounds_the_variance_term_from_below() -> None:
    rtt = RttEstimator(min_rto=0.001, granularity=0.5)
    rtt.sample(0.1)
    assert rtt.rto == pytest.approx(0.1 + 0.5)  # max(G, K * RTTVAR) = max(0.5, 0.2)


def test_the_rto_is_capped_at_sixty_seconds() -> None:
    rtt = RttEstimator()
    rtt.sample(100.0)
    assert rtt.srtt == 100.0
    assert rtt.rto == 60.0


def test_karns_rule_ignores_samples_from_retransmitted_requests() -> None:
    rtt = RttEstimator(min_rto=0.001)
    rtt.sample(0.1)
    before = (rtt.srtt, rtt.rttvar, rtt.rto, rtt.samples)
    assert rtt.sample(3.0, retransmitted=True) is False
    assert (rtt.srtt, rtt.rttvar, rtt.rto, rtt.samples) == before


def test_a_first_sample_from_a_retransmitted_request_is_ignored_too() -> None:
    rtt = RttEstimator()
    assert rtt.sample(0.5, retransmitted=True) is False
    assert rtt.srtt is None
    assert rtt.rto == 1.0


def test_backoff_doubles_the_rto_until_the_next_sample_replaces_it() -> None:
    rtt = RttEstimator(min_rto=0.001)
    rtt.sample(0.1)
    rtt.backoff()
    assert rtt.rto == pytest.approx(0.6)
    rtt.backoff()
    assert rtt.rto == pytest.approx(1.2)
    rtt.sample(0.1)  # RFC 6298 section 5.7 / Karn: a valid sample recomputes RTO
    assert rtt.rto == pytest.approx(0.1 + 4 * 0.0375)


def test_backoff_stops_at_the_maximum() -> None:
    rtt = RttEstimator(initial_rto=40.0)
    rtt.backoff()
    assert rtt.rto == 60.0


def test_concurrent_expiries_of_the_same_timeout_back_off_once() -> None:
    rtt = RttEstimator()
    for _ in range(100):  # a hundred requests that shared this estimator time out together
        rtt.backoff(1.0)
    assert rtt.rto == 2.0
    rtt.backoff(2.0)
    assert rtt.rto == 4.0


@pytest.mark.parametrize(
    "kwargs",
    [{"min_rto": 0}, {"max_rto": -1}, {"min_rto": 2, "max_rto": 1}, {"granularity": 0},
     {"initial_rto": math.nan}],
)
def test_estimator_options_out_of_range_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RttEstimator(**kwargs)


@pytest.mark.parametrize("sample", [-0.1, math.inf, math.nan])
def test_impossible_samples_are_refused(sample: float) -> None:
    with pytest.raises(ValueError, match="round-trip time"):
        RttEstimator().sample(sample)


@given(st.lists(st.floats(0, 1000), min_size=1, max_size=50), st.floats(0.001, 5))
def test_the_rto_always_stays_within_its_bounds(samples: list[float], floor: float) -> None:
    rtt = RttEstimator(min_rto=floor, max_rto=60.0)
    for sample in samples:
        rtt.sample(sample)
        assert floor <= rtt.rto <= 60.0
        assert rtt.srtt is not None
        assert rtt.rttvar is not None
        assert min(samples) <= rtt.srtt <= max(samples)
        assert rtt.rttvar >= 0


def test_the_estimator_shows_its_state() -> None:
    rtt = RttEstimator()
    rtt.sample(0.25)
    assert repr(rtt) == "RttEstimator(srtt=0.25, rttvar=0.125, rto=1, samples=1)"
