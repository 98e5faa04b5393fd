"""The sans-IO internals, tested directly. Imports private ``trionet._sansio``
modules: the state machines (Happy Eyeballs, retransmission), the reply cache,
escaping and rate/log limiting, and the RFC constants behind public defaults are
internal, and the docstring examples of the codec, address and host name modules
run from the private modules themselves.

No sockets, no clock. Everything here is also reached through the public API by
the other test files (``connect_tcp``, ``UDPEndpoint.request``, ``serve_udp``,
the CLI, logging).
"""

from __future__ import annotations

import dataclasses
import doctest
import errno
import heapq
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trionet import (
    DEFAULT_REPLY_CACHE_BYTES,
    DEFAULT_REPLY_CACHE_LIFETIME,
    Address,
    ConnectAttempt,
    ProxyProtocolError,
    RetryPolicy,
    RttEstimator,
    interleave_families,
)
from trionet._sansio import addresses as addresses_module
from trionet._sansio import codecs, delimited
from trionet._sansio import hostnames as hostnames_module
from trionet._sansio.escape import escape_text
from trionet._sansio.happy_eyeballs import (
    MAX_CONNECTION_ATTEMPT_DELAY,
    MIN_CONNECTION_ATTEMPT_DELAY,
    HappyEyeballs,
    Won,
)
from trionet._sansio.loglimit import Admission, RecordLimiter
from trionet._sansio.ordering import rfc6724_order
from trionet._sansio.proxy import NeedMore, ProxyHeader, parse_proxy_header
from trionet._sansio.ratelimit import SourceRateLimit
from trionet._sansio.replies import ReplyCache
from trionet._sansio.retransmit import LATE_REPLY_WINDOW_FACTOR, Answered, GiveUp, Retransmission, Transmit
from trionet._sansio.retry import (
    ACK_RANDOM_FACTOR,
    ACK_TIMEOUT,
    MAX_RETRANSMIT,
    RTO_INITIAL,
    RTO_MAX,
    RTO_MIN,
)

from .docstring_examples import run_docstring_examples
from .peer_text import HOSTILE_NAME, unsafe_chars

# ================================================================================================
# The Happy Eyeballs race as a state machine (RFC 8305 sections 4 and 5), without a clock
# Times are plain numbers fed with each event; every decision is asserted exactly.
# The property tests drive the machine with a small discrete-event loop, the pure
# twin of connect_tcp's trio loop. (Was tests/test_happy_eyeballs_machine.py.)
# ================================================================================================


A6, B6, C6 = (Address.parse(f"[2001:db8::{n}]:443") for n in "abc")
X4, Y4, Z4 = (Address.parse(f"192.0.2.{n}:443") for n in (1, 2, 3))
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def finished(race: HappyEyeballs) -> bool:
    """``race.done``, read through a call: mypy keeps an asserted property narrowed."""
    return race.done


def start_all(race: HappyEyeballs, now: float) -> list[Address]:
    """Every attempt due at ``now``, as a driver starts them."""
    started = []
    while (address := race.next_attempt(now)) is not None:
        started.append(address)
    return started


# ---------------------------------------------------------------- order (section 4)


def test_the_first_answer_starts_an_attempt_at_once() -> None:
    race = HappyEyeballs()
    assert race.next_attempt(0.0) is None
    assert race.next_wakeup() is None
    race.on_addresses([A6, B6], 0.02)
    assert race.next_wakeup() == 0.02
    assert start_all(race, 0.02) == [A6]
    assert race.running == (A6,)


def test_families_are_interleaved_keeping_the_first_address_first() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, B6, C6, X4, Y4], 0.0)
    starts = [(t, start_all(race, t)) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert starts == [(0.0, [A6]), (0.25, [X4]), (0.5, [B6]), (0.75, [Y4]), (1.0, [C6])]


def test_an_ipv4_first_answer_starts_with_ipv4() -> None:
    race = HappyEyeballs()
    race.on_addresses([X4, Y4], 0.05)
    race.on_addresses([A6, B6], 0.1)
    assert [start_all(race, t) for t in (0.1, 0.35, 0.6, 0.85)] == [[X4], [A6], [Y4], [B6]]


def test_first_address_family_count_tries_that_many_of_the_first_family_first() -> None:
    race = HappyEyeballs(first_address_family_count=2)
    race.on_addresses([A6, B6, C6], 0.0)
    race.on_addresses([X4, Y4], 0.0)
    assert [start_all(race, t) for t in (0.0, 0.25, 0.5, 0.75, 1.0)] == [[A6], [B6], [X4], [C6], [Y4]]


def test_a_late_answer_of_the_second_family_is_merged_into_the_order() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, B6, C6], 0.0)
    assert start_all(race, 0.0) == [A6]
    assert start_all(race, 0.25) == [B6]
    # IPv4 answers after two IPv6 attempts. Its addresses take the places they
    # would have had in the order A6 X4 B6 Y4 C6; those places are past, so
    # they come next, before the third IPv6 address.
    race.on_addresses([X4, Y4], 0.3)
    assert start_all(race, 0.3) == []  # the slot is not free before 0.5
    assert [start_all(race, t) for t in (0.5, 0.75, 1.0)] == [[X4], [Y4], [C6]]


def test_a_late_answer_arriving_after_the_first_attempt_comes_next() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, B6], 0.0)
    assert start_all(race, 0.0) == [A6]
    race.on_addresses([X4, Y4], 0.1)
    assert [start_all(race, t) for t in (0.25, 0.5, 0.75)] == [[X4], [B6], [Y4]]


def test_a_late_answer_starts_at_once_when_everything_tried_so_far_failed() -> None:
    race = HappyEyeballs()
    race.on_addresses([X4], 0.05)
    assert start_all(race, 0.05) == [X4]
    race.on_failure(X4, REFUSED, 0.06)
    assert not race.done  # the other family may still answer
    race.on_addresses([A6], 0.1)
    assert start_all(race, 0.1) == [A6]


def test_one_family_only_keeps_the_system_order() -> None:
    race = HappyEyeballs()
    race.on_addresses([Y4, X4, Z4], 0.0)
    assert [start_all(race, t) for t in (0.0, 0.25, 0.5)] == [[Y4], [X4], [Z4]]


def test_duplicate_addresses_are_attempted_once() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, A6, B6], 0.0)
    race.on_addresses([X4, A6, X4], 0.0)
    assert race.addresses == (A6, B6, X4)
    race.on_lookups_done()
    started = []
    while batch := start_all(race, 0.0):
        for address in batch:
            started.append(address)
            race.on_failure(address, REFUSED, 0.0)
    assert started == [A6, X4, B6]
    assert race.done


def test_no_addresses_is_done_with_nothing_to_report() -> None:
    race = HappyEyeballs()
    race.on_addresses([], 0.0)
    assert not finished(race)
    race.on_lookups_done()
    assert race.done
    assert race.next_attempt(0.0) is None
    assert race.next_wakeup() is None
    assert race.winner is None
    assert race.give_up() == ()


def test_a_family_filter_rules_the_other_family_out() -> None:
    race = HappyEyeballs(family=A6.family)
    race.on_addresses([X4, Y4, X4], 0.0)
    race.on_addresses([A6], 0.01)
    assert race.ruled_out == (X4, Y4)
    assert race.addresses == (A6,)
    assert start_all(race, 0.01) == [A6]
    assert start_all(race, 1.0) == []


# -------------------------------------------------------------- timing (section 5)


def test_the_next_attempt_waits_for_the_attempt_delay() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4], 0.0)
    assert start_all(race, 0.0) == [A6]
    assert race.next_wakeup() == 0.25
    assert start_all(race, 0.2499) == []
    assert start_all(race, 0.25) == [X4]
    assert race.next_wakeup() is None  # nothing left to try


def test_a_failure_starts_the_next_attempt_at_once() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4, B6], 0.0)
    assert start_all(race, 0.0) == [A6]
    attempt = race.on_failure(A6, REFUSED, 0.1)
    assert attempt == ConnectAttempt(A6, 0.0, 0.1, REFUSED)
    assert race.next_wakeup() == 0.1
    assert start_all(race, 0.1) == [X4]  # one failure frees one slot
    assert race.next_wakeup() == pytest.approx(0.35)


def test_any_failure_frees_the_slot_not_only_the_last_attempts() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4, B6], 0.0)
    assert start_all(race, 0.0) == [A6]
    assert start_all(race, 0.25) == [X4]
    race.on_failure(A6, REFUSED, 0.3)  # the older attempt fails, X4 still runs
    assert start_all(race, 0.3) == [B6]


def test_an_answer_after_the_delay_has_passed_starts_an_attempt_at_once() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6], 0.0)
    assert start_all(race, 0.0) == [A6]
    assert start_all(race, 0.25) == []
    race.on_addresses([X4, Y4], 0.3)  # A6 still running, its delay long past
    assert start_all(race, 0.3) == [X4]
    assert start_all(race, 0.5) == []
    assert start_all(race, 0.55) == [Y4]


def test_delay_none_starts_each_attempt_only_after_the_previous_failed() -> None:
    race = HappyEyeballs(attempt_delay=None)
    race.on_addresses([A6, X4], 0.0)
    assert start_all(race, 0.0) == [A6]
    assert race.next_wakeup() is None
    assert start_all(race, 1000.0) == []
    race.on_failure(A6, REFUSED, 1000.0)
    assert start_all(race, 1000.0) == [X4]


@pytest.mark.parametrize(
    ("delay", "clamped"),
    [(0, MIN_CONNECTION_ATTEMPT_DELAY), (0.005, 0.01), (0.1, 0.1), (5, MAX_CONNECTION_ATTEMPT_DELAY)],
)
def test_the_delay_is_clamped_to_rfc_8305_bounds(delay: float, clamped: float) -> None:
    race = HappyEyeballs(attempt_delay=delay)
    race.on_addresses([A6, X4], 10.0)
    assert start_all(race, 10.0) == [A6]
    assert race.next_wakeup() == 10.0 + clamped


@pytest.mark.parametrize("delay", [-1, math.nan])
def test_a_negative_delay_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="attempt_delay must be >= 0 or None"):
        HappyEyeballs(attempt_delay=delay)


def test_a_bad_first_address_family_count_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HappyEyeballs(first_address_family_count=0)
    with pytest.raises(TypeError, match="must be an int"):
        HappyEyeballs(first_address_family_count=True)


# ------------------------------------------------------------------- outcomes


def test_every_attempt_failing_gives_up_reporting_each_failure_in_start_order() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, B6], 0.0)
    race.on_addresses([X4], 0.01)
    race.on_lookups_done()
    assert start_all(race, 0.01) == [A6]
    assert start_all(race, 0.26) == [X4]
    timeout = TimeoutError("no answer")
    race.on_failure(X4, REFUSED, 0.3)
    assert start_all(race, 0.3) == [B6]
    race.on_failure(B6, REFUSED, 0.3)
    assert not finished(race)  # A6 still runs
    race.on_failure(A6, timeout, 0.4)
    assert race.done
    assert race.winner is None
    assert race.give_up() == (
        ConnectAttempt(A6, 0.01, 0.4, timeout),
        ConnectAttempt(X4, 0.26, 0.3, REFUSED),
        ConnectAttempt(B6, 0.3, 0.3, REFUSED),
    )


def test_success_ends_the_race_and_names_the_attempts_to_cancel() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, B6, C6], 0.0)
    race.on_addresses([X4], 0.0)
    assert [start_all(race, t) for t in (0.0, 0.25, 0.5)] == [[A6], [X4], [B6]]
    won = race.on_success(X4, 0.6)
    assert won == Won(X4, cancel=(A6, B6))
    assert race.done
    assert race.winner == X4
    assert race.next_attempt(10.0) is None  # C6 is never tried
    assert race.next_wakeup() is None
    # The losers are reported unfinished, should the connect fail later (TLS).
    assert race.attempts == (ConnectAttempt(A6, 0.0, None, None), ConnectAttempt(B6, 0.5, None, None))


def test_a_second_success_in_the_same_instant_is_told_to_close() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4], 0.0)
    start_all(race, 0.0)
    start_all(race, 0.25)
    assert race.on_success(A6, 0.3) == Won(A6, cancel=(X4,))
    assert race.on_success(X4, 0.3) is None
    assert race.winner == A6
    assert race.attempts == ()


def test_give_up_reports_running_attempts_unfinished_and_stops_the_race() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4, B6], 0.0)
    start_all(race, 0.0)
    start_all(race, 0.25)
    race.on_failure(X4, REFUSED, 0.3)
    attempts = race.give_up()
    assert attempts == (ConnectAttempt(A6, 0.0, None, None), ConnectAttempt(X4, 0.25, 0.3, REFUSED))
    assert [str(attempt) for attempt in attempts] == [
        f"{A6}: still connecting when the connect gave up",
        f"{X4}: Connection refused (ECONNREFUSED)",
    ]
    assert race.done
    assert race.next_attempt(0.3) is None
    assert race.on_success(A6, 0.4) is None  # too late: the driver closes it


def test_misuse_raises_value_error() -> None:
    race = HappyEyeballs()
    race.on_addresses([A6, X4], 1.0)
    with pytest.raises(ValueError, match="no attempt to"):
        race.on_failure(A6, REFUSED, 1.0)  # not started
    start_all(race, 1.0)
    race.on_failure(A6, REFUSED, 1.0)
    with pytest.raises(ValueError, match="no attempt to"):
        race.on_success(A6, 1.0)  # already ended
    with pytest.raises(ValueError, match="time went backwards"):
        race.next_attempt(0.5)


def test_decisions_and_records_are_immutable() -> None:
    won = Won(A6, cancel=())
    attempt = ConnectAttempt(A6, 0.0, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        won.address = X4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        attempt.error = REFUSED  # type: ignore[misc]


# -------------------------------------------------------------- properties


@dataclass
class Outcome:
    after: float  # seconds from the attempt's start
    succeeds: bool
    hangs: bool = False


@dataclass
class Run:
    """What happened in one simulated race, in the order the driver saw it."""

    log: list[tuple[str, float, Address | None]] = field(default_factory=list)
    arrival: dict[Address, float] = field(default_factory=dict)
    won: Won | None = None
    running_at_win: tuple[Address, ...] = ()


def simulate(
    race: HappyEyeballs,
    answers: list[tuple[float, list[Address]]],
    outcomes: dict[Address, Outcome],
) -> Run:
    """Drive ``race`` as connect_tcp does, with a virtual clock and a queue of events."""
    run = Run()
    events: list[tuple[float, int, str, object]] = []
    sequence = 0

    def schedule(time: float, kind: str, payload: object) -> None:
        nonlocal sequence
        heapq.heappush(events, (time, sequence, kind, payload))
        sequence += 1

    for time, addresses in answers:
        schedule(time, "answer", addresses)
    schedule(max((time for time, _ in answers), default=0.0), "lookups done", None)
    now = 0.0
    while True:
        while (address := race.next_attempt(now)) is not None:
            run.log.append(("start", now, address))
            outcome = outcomes[address]
            if not outcome.hangs:
                schedule(now + outcome.after, "outcome", address)
        if race.done:
            return run
        wakeup = race.next_wakeup()
        if events and (wakeup is None or events[0][0] <= wakeup):
            now, _, kind, payload = heapq.heappop(events)
        elif wakeup is not None:
            now = wakeup
            continue
        else:
            return run  # stuck: only hanging attempts left, as a connect_timeout would end it
        if kind == "answer":
            assert isinstance(payload, list)
            for address in payload:
                run.arrival.setdefault(address, now)
            race.on_addresses(payload, now)
        elif kind == "lookups done":
            race.on_lookups_done()
        else:
            assert isinstance(payload, Address)
            if outcomes[payload].succeeds:
                running = race.running
                won = race.on_success(payload, now)
                run.log.append(("success", now, payload))
                if won is not None:
                    run.won, run.running_at_win = won, running
            else:
                race.on_failure(payload, REFUSED, now)
                run.log.append(("failure", now, payload))


POOL_6 = [Address.parse(f"[2001:db8::{n}]:80") for n in range(1, 5)]
POOL_4 = [Address.parse(f"192.0.2.{n}:80") for n in range(1, 5)]
TIMES = st.sampled_from([0.0, 0.005, 0.01, 0.05, 0.1, 0.25, 0.3, 1.0, 2.5])
OUTCOMES = st.builds(Outcome, after=TIMES, succeeds=st.booleans(), hangs=st.booleans())


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[HappyEyeballs, float, list[tuple[float, list[Address]]], dict[Address, Outcome]]:
    delay = draw(st.sampled_from([None, 0.0, 0.01, 0.1, 0.25, 3.0]))
    race = HappyEyeballs(attempt_delay=delay, first_address_family_count=draw(st.integers(1, 3)))
    v6 = draw(st.lists(st.sampled_from(POOL_6), max_size=5))  # duplicates allowed
    v4 = draw(st.lists(st.sampled_from(POOL_4), max_size=5))
    answers = [(draw(TIMES), v6), (draw(TIMES), v4)]
    outcomes = {address: draw(OUTCOMES) for address in [*POOL_6, *POOL_4]}
    effective = math.inf if delay is None else min(max(delay, 0.01), 2.0)
    return race, effective, answers, outcomes


Scenario = tuple[HappyEyeballs, float, list[tuple[float, list[Address]]], dict[Address, Outcome]]


@settings(max_examples=400)
@given(scenarios())
def test_every_address_is_attempted_at_most_once(scenario: Scenario) -> None:
    race, _, answers, outcomes = scenario
    run = simulate(race, answers, outcomes)
    started = [address for kind, _, address in run.log if kind == "start"]
    assert len(started) == len(set(started))
    assert set(started) <= {address for _, addresses in answers for address in addresses}


@settings(max_examples=400)
@given(scenarios())
def test_attempts_start_exactly_when_the_delay_a_failure_or_an_answer_allows(scenario: Scenario) -> None:
    race, delay, answers, outcomes = scenario
    run = simulate(race, answers, outcomes)
    previous: float | None = None
    failed_since: float | None = None  # the first failure after the previous start
    for kind, time, address in run.log:
        if kind == "failure" and failed_since is None:
            failed_since = time
        if kind != "start":
            continue
        assert address is not None
        if previous is None:
            # The first attempt starts when its address arrives.
            assert time == run.arrival[address]
        else:
            # Never earlier than the delay allows unless a failure freed the
            # slot, and never later than needed.
            allowed = min(previous + delay, math.inf if failed_since is None else failed_since)
            assert time == max(allowed, run.arrival[address])
        previous, failed_since = time, None


@settings(max_examples=400)
@given(scenarios())
def test_the_race_ends_with_one_winner_or_every_failure_reported(scenario: Scenario) -> None:
    race, _, answers, outcomes = scenario
    run = simulate(race, answers, outcomes)
    started = [address for kind, _, address in run.log if kind == "start"]
    if run.won is not None:
        # The first success wins; the others running then are the ones to cancel;
        # nothing starts afterwards.
        win = next(index for index, (kind, _, _) in enumerate(run.log) if kind == "success")
        assert run.won.address == run.log[win][2] == race.winner
        assert run.won.cancel == tuple(a for a in run.running_at_win if a != run.won.address)
        assert all(kind != "start" for kind, _, _ in run.log[win:])
        assert race.next_attempt(1e9) is None
        return
    attempts = race.give_up()
    assert [attempt.address for attempt in attempts] == started
    if race.running:
        return  # stuck on hanging attempts: those are reported unfinished
    # Every address that arrived was tried, and each failure is reported once.
    assert set(started) == {address for _, addresses in answers for address in addresses}
    assert all(attempt.error is REFUSED and attempt.ended_at is not None for attempt in attempts)


@settings(max_examples=200)
@given(
    st.lists(st.sampled_from(POOL_6), unique=True),
    st.lists(st.sampled_from(POOL_4), unique=True),
    st.integers(1, 3),
    st.booleans(),
)
def test_answers_arriving_together_are_tried_in_interleaved_order(
    v6: list[Address], v4: list[Address], count: int, ipv4_first: bool
) -> None:
    race = HappyEyeballs(first_address_family_count=count)
    answers = [v4, v6] if ipv4_first else [v6, v4]
    for answer in answers:
        race.on_addresses(answer, 0.0)
    run = simulate(race, [], {address: Outcome(0.0, succeeds=False) for address in [*v6, *v4]})
    started = [address for kind, _, address in run.log if kind == "start"]
    assert started == interleave_families([*answers[0], *answers[1]], first_address_family_count=count)
    assert all(time == 0.0 for _, time, _ in run.log)


# ================================================================================================
# The retransmission schedule as a sans-IO state machine: times in, decisions out, no clock
# The machine behind UDPEndpoint.request(). (Was tests/test_retransmit_machine.py.)
# ================================================================================================


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


# ================================================================================================
# ReplyCache, serve_udp's duplicate suppression: lifetime, size, bytes
# Its options are serve_udp's public reply_cache_* parameters. (Was tests/test_reply_cache.py.)
# ================================================================================================


# ------------------------------------------------------------- lifetime and size


def test_the_reply_cache_expires_entries_after_their_lifetime() -> None:
    assert DEFAULT_REPLY_CACHE_LIFETIME == 247.0  # CoAP's EXCHANGE_LIFETIME
    cache = ReplyCache(lifetime=10.0, size=100)
    cache.put("a", b"A", now=0.0)
    cache.put("b", None, now=5.0)
    assert cache.get("a", now=9.9) == (b"A",)
    assert cache.get("b", now=9.9) == (None,)  # "answered with no reply" is cached too
    assert cache.get("a", now=10.0) is None
    assert cache.get("missing", now=0.0) is None
    cache.put("c", b"C", now=15.0)  # purges "b", expired at 15
    assert len(cache) == 1


def test_the_reply_cache_drops_the_oldest_entries_beyond_its_size() -> None:
    cache = ReplyCache(lifetime=100.0, size=3)
    for i, key in enumerate("abcde"):
        cache.put(key, key.encode(), now=float(i))
    assert len(cache) == 3
    assert [cache.get(key, now=5.0) for key in "abcde"] == [None, None, (b"c",), (b"d",), (b"e",)]
    cache.put("c", b"C2", now=6.0)  # storing again moves it to the back
    cache.put("f", b"F", now=7.0)
    assert cache.get("d", now=7.0) is None
    assert cache.get("c", now=7.0) == (b"C2",)


@pytest.mark.parametrize(("kwargs", "name"), [({"lifetime": 0, "size": 1}, "lifetime"),
                                              ({"lifetime": 1, "size": 0}, "size")])
def test_the_reply_cache_refuses_bad_bounds(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ReplyCache(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------- byte bound and fair eviction (issue 15.2)


def test_the_reply_cache_is_bounded_in_bytes() -> None:
    cache = ReplyCache(lifetime=247.0, size=10_000, max_bytes=1_000_000)
    reply = b"x" * 60_000
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), reply, now=0.0, peer="10.0.0.3")
        assert cache.held_bytes <= 1_000_000
    assert len(cache) == 16  # 16 * 60,000 <= 1,000,000 < 17 * 60,000


def test_the_default_reply_cache_bound_holds_under_the_findings_flood() -> None:
    # The finding: 10,000 requests of 60 KB from one address held 602 MiB.
    cache = ReplyCache(lifetime=DEFAULT_REPLY_CACHE_LIFETIME, size=10_000)
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), b"x" * 60_000, now=0.0, peer="10.0.0.3")
    assert cache.held_bytes <= DEFAULT_REPLY_CACHE_BYTES == 16 * 1024 * 1024


def test_a_reply_larger_than_the_byte_bound_is_not_cached() -> None:
    cache = ReplyCache(lifetime=10.0, size=10, max_bytes=100)
    cache.put("small", b"s", now=0.0)
    cache.put("big", b"b" * 101, now=0.0)
    assert cache.get("big", now=1.0) is None
    assert cache.get("small", now=1.0) == (b"s",)
    assert cache.held_bytes == 1


def test_a_flooding_sender_evicts_its_own_replies_not_another_clients() -> None:
    cache = ReplyCache(lifetime=247.0, size=100)
    cache.put(("10.0.0.2:4000", "client"), b"client's reply", now=0.0, peer="10.0.0.2")
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), b"x", now=1.0, peer="10.0.0.3")
    assert cache.get(("10.0.0.2:4000", "client"), now=2.0) == (b"client's reply",)
    assert len(cache) == 100


def test_a_lone_busy_client_can_use_the_whole_cache() -> None:
    cache = ReplyCache(lifetime=247.0, size=100)
    for i in range(250):
        cache.put(i, b"r", now=0.0, peer="10.0.0.2")
    assert len(cache) == 100
    assert cache.get(249, now=1.0) == (b"r",)
    assert cache.get(149, now=1.0) is None


def test_expired_and_replaced_entries_release_their_bytes() -> None:
    cache = ReplyCache(lifetime=10.0, size=10, max_bytes=1000)
    cache.put("a", b"1234", now=0.0, peer="p")
    cache.put("a", b"12", now=1.0, peer="q")
    assert cache.held_bytes == 2
    cache.put("b", b"123", now=20.0, peer="p")  # "a" expired
    assert cache.held_bytes == 3
    assert len(cache) == 1


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5])
def test_the_reply_cache_byte_bound_must_be_a_positive_int(max_bytes: object) -> None:
    with pytest.raises(ValueError, match="reply_cache_bytes"):
        ReplyCache(lifetime=1.0, size=1, max_bytes=max_bytes)  # type: ignore[arg-type]


# ================================================================================================
# The RFC constants behind RetryPolicy's and RttEstimator's defaults
# The defaults themselves are checked through the public API in tests/test_retry.py.
# ================================================================================================


def test_the_coap_and_rfc_6298_constants_have_their_rfc_values() -> None:
    # RFC 7252 section 4.8: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4.
    assert (ACK_TIMEOUT, ACK_RANDOM_FACTOR, MAX_RETRANSMIT) == (2.0, 1.5, 4)
    # RFC 6298 sections 2.1, 2.4 and 2.5.
    assert (RTO_INITIAL, RTO_MIN, RTO_MAX) == (1.0, 1.0, 60.0)


# ================================================================================================
# escape_text: the one function that makes peer text displayable (issue 15 item 5)
# Where it is applied (logs, events, the CLI) is tested in tests/test_escaping.py and tests/test_cli.py.
# ================================================================================================


# What a peer uses against a terminal or a log: line breaks, CSI and OSC
# sequences, a C1 CSI (U+009B), bidi overrides, separators, surrogates.
SPECIALS = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u202e",
            "\u2066", "\u200b", "\ufeff", "\udcff", "\ud800", "\\"]
ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates, which st.characters omits
    st.sampled_from(SPECIALS),
)
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[ntr])")


def unescape_text(text: str) -> str:
    """The inverse of escape_text on text without backslashes (a test oracle)."""
    named = {"n": "\n", "t": "\t", "r": "\r"}
    return _ESCAPE.sub(lambda m: named.get(m[1]) or chr(int(m[1][1:], 16)), text)


def unescape_bytes(text: str) -> bytes:
    """The inverse of escape_text on bytes without backslashes."""
    out = bytearray()
    for piece in re.split(r"(\\x[0-9a-f]{2})", text):
        if piece.startswith("\\x"):
            out.append(int(piece[2:], 16))
        else:
            out += unescape_text(piece).encode("utf-8")
    return bytes(out)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE_NAME, "evil\\nCRITICAL forged line \\x1b[2K\\x1b]0;pwned\\x07\\u202e"),
        ("a\r\tb\x7f\x85", "a\\r\\tb\\x7f\\x85"),
        ("name-\udcff", "name-\\udcff"),
        ("\u2066rtl\u2069 \u2028", "\\u2066rtl\\u2069 \\u2028"),
        ("\U000e0001", "\\U000e0001"),
        ("Grüße, 東京, Ελλάδα, 🙂 C:\\dir", "Grüße, 東京, Ελλάδα, 🙂 C:\\dir"),
        (b"ok\n\x1b[2K\xff\xc3", "ok\\n\\x1b[2K\\xff\\xc3"),
        (b"\xc2\x85 \x85 caf\xc3\xa9", "\\u0085 \\x85 café"),  # decoded U+0085 vs the raw byte
        (b"\x00abstract", "\\x00abstract"),
    ],
)
def test_control_and_invisible_characters_are_shown_as_escapes(raw: str | bytes, shown: str) -> None:
    assert escape_text(raw) == shown


def test_escaping_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        escape_text(42)  # type: ignore[arg-type]


@given(st.text(ANY_CHAR))
@example(HOSTILE_NAME)
def test_escaped_text_is_printable_and_has_no_control_format_or_surrogate_character(text: str) -> None:
    shown = escape_text(text)
    assert shown.isprintable()
    assert unsafe_chars(shown) == []
    shown.encode("utf-8")  # no lone surrogate: a UTF-8 log file takes it


@given(st.text(st.characters(exclude_categories=())).filter(str.isprintable))
def test_printable_text_passes_unchanged(text: str) -> None:
    assert escape_text(text) is text or escape_text(text) == text


@given(st.text(ANY_CHAR).map(lambda text: text.replace("\\", "")))
def test_distinct_texts_stay_distinguishable(text: str) -> None:
    # The backslash passes unchanged, so only text without one can be decoded;
    # on that text the escaping is injective.
    assert unescape_text(escape_text(text)) == text


@given(st.binary())
@example(b"\xc2\x85\x85")
def test_bytes_are_shown_printable_and_distinguishable(data: bytes) -> None:
    shown = escape_text(data)
    assert shown.isprintable()
    if b"\\" not in data:
        assert unescape_bytes(shown) == data


# ================================================================================================
# RecordLimiter: the per-peer limit on logged records (issue 15 item 5)
# ================================================================================================


def test_the_limiter_lets_a_burst_through_then_notes_once_and_reports_the_count_later() -> None:
    limiter: RecordLimiter[str] = RecordLimiter(burst=2, window=10.0)
    got = [limiter.admit("a", float(t)) for t in range(5)]
    assert got == [Admission.LOG, Admission.LOG, Admission.NOTICE, Admission.SUPPRESS,
                   Admission.SUPPRESS]
    assert limiter.admit("b", 5.0) is Admission.LOG  # another key has its own budget
    assert limiter.expire(9.9) == []
    assert limiter.expire(10.0) == [("a", 2)]
    assert limiter.admit("a", 10.0) is Admission.LOG
    assert limiter.expire(15.0) == []  # "b" held nothing back


def test_the_limiter_bounds_its_keys_and_new_keys_share_one_overflow_window() -> None:
    limiter: RecordLimiter[int] = RecordLimiter(burst=1, window=10.0, max_keys=3)
    admitted = [limiter.admit(key, 0.0) for key in range(1000)]
    assert admitted.count(Admission.LOG) == 4  # three keys and the overflow window
    assert admitted.count(Admission.NOTICE) == 1
    assert sorted(limiter.expire(10.0), key=str) == [(None, 995)]


@pytest.mark.parametrize("kwargs", [{"burst": 0}, {"window": 0.0}, {"window": float("nan")},
                                    {"max_keys": 0}, {"burst": True}])
def test_the_limiter_rejects_settings_out_of_range(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        RecordLimiter(**kwargs)  # type: ignore[arg-type]


# ================================================================================================
# SourceRateLimit: the CLI's UDP echo rate limit per source (issue 15)
# The echo guard that uses it is tested in tests/test_cli.py.
# ================================================================================================


def test_the_shared_bucket_holds_a_sender_forging_many_sources() -> None:
    limit = SourceRateLimit(rate=10.0, burst=10.0, total_rate=50.0)
    admitted = sum(limit.allow(f"192.0.2.{i % 250}:{i}", now=0.0) for i in range(10_000))
    assert admitted == 50


def test_the_rate_limit_remembers_a_bounded_number_of_sources() -> None:
    limit = SourceRateLimit(rate=1.0, burst=1.0, total_rate=1e9, max_sources=100)
    for i in range(10_000):
        limit.allow(i, now=0.0)
    assert len(limit._buckets) == 100


@pytest.mark.parametrize("kwargs", [{"rate": 0, "burst": 1}, {"rate": 1, "burst": True},
                                    {"rate": 1, "burst": 1, "max_sources": 0},
                                    {"rate": float("inf"), "burst": 1}])
def test_the_rate_limit_refuses_settings_out_of_range(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SourceRateLimit(**kwargs)  # type: ignore[arg-type]


# ================================================================================================
# The codec modules: exports, no I/O imports, docstring examples
# The codecs themselves are tested through the public API in tests/test_codecs.py.
# ================================================================================================


def test_module_exports_its_public_names_and_imports_no_trio() -> None:
    assert set(codecs.__all__) >= {
        "Codec",
        "Decoder",
        "Buffer",
        "LengthPrefixed",
        "Varint",
        "Delimited",
        "Lines",
        "Netstring",
    }
    for module in (codecs, delimited):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert "import trio" not in source
        assert "import socket" not in source


@pytest.mark.parametrize("module", [codecs, delimited], ids=lambda module: module.__name__)
def test_docstring_examples_pass(module: ModuleType) -> None:
    results = run_docstring_examples(module, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 4
    assert results.failed == 0


# ================================================================================================
# Addresses and host names: the modules' docstring examples
# Parsing and host name checks are tested through the public API in tests/test_addresses.py.
# ================================================================================================


def test_docstring_examples_run() -> None:
    result = run_docstring_examples(addresses_module)
    assert result.attempted >= 8
    assert result.failed == 0


def test_the_host_name_docstring_examples_run() -> None:
    result = run_docstring_examples(hostnames_module)
    assert result.attempted >= 2
    assert result.failed == 0


# ================================================================================================
# The PROXY protocol parser (trionet._sansio.proxy): the specification's examples
# ================================================================================================

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# Section 2.1's examples, and a version 2 header of each family.
PROXY_EXAMPLES: list[tuple[bytes, tuple[object, ...]]] = [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     (1, "192.168.0.1:56324", "192.168.0.11:443", "PROXY", "TCP4")),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n",
     (1, "[2001:db8::1]:56324", "[2001:db8::2]:443", "PROXY", "TCP6")),
    (b"PROXY UNKNOWN\r\n", (1, None, None, "PROXY", "UNKNOWN")),
    (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
     b"65535 65535\r\n", (1, None, None, "PROXY", "UNKNOWN")),
    (PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([203, 0, 113, 7, 192, 0, 2, 10]) + b"\x10\x92\x01\xbb",
     (2, "203.0.113.7:4242", "192.0.2.10:443", "PROXY", "STREAM")),
    (PROXY_V2_SIGNATURE + b"\x21\x21\x00\x24" + bytes(15) + b"\x01" + bytes(15) + b"\x02"
     + b"\x00\x01\x00\x02",
     (2, "[::1]:1", "[::2]:2", "PROXY", "STREAM")),
    (PROXY_V2_SIGNATURE + b"\x20\x00\x00\x00", (2, None, None, "LOCAL", "UNSPEC")),
    (PROXY_V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216), (2, None, None, "PROXY", "STREAM")),
]


def _summary(header: ProxyHeader) -> tuple[object, ...]:
    source = None if header.source is None else str(header.source)
    destination = None if header.destination is None else str(header.destination)
    return (header.version, source, destination, header.command, header.transport)


@pytest.mark.parametrize(("data", "expected"), PROXY_EXAMPLES)
def test_proxy_headers_of_the_specification_parse_whole_and_a_byte_at_a_time(
    data: bytes, expected: tuple[object, ...]
) -> None:
    client_bytes = b"GET / HTTP/1.1\r\n"
    whole = parse_proxy_header(data + client_bytes)
    assert isinstance(whole, ProxyHeader)
    assert _summary(whole) == expected
    assert whole.length == len(data)  # the client's bytes start right after
    for end in range(len(data)):
        partial = parse_proxy_header(data[:end])
        assert isinstance(partial, NeedMore), end
        # What a reader may take without passing the header's end.
        assert partial.safe >= 1, end
        assert end + partial.safe <= len(data), end


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 example.test 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xff1 2\r\n",
        b"PROXY " + b"1" * 101,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + bytes(100),  # LF alone: no CRLF within the limit
        PROXY_V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
        PROXY_V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
        PROXY_V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),  # family 4
        PROXY_V2_SIGNATURE + b"\x21\x13\x00\x0c" + bytes(12),  # protocol 3
        PROXY_V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),  # address block too short
        PROXY_V2_SIGNATURE + b"\x21\x11\x00\x0e" + bytes(12) + b"\x05\x00",  # a cut TLV header
        PROXY_V2_SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x05\x00\x09x",  # a TLV overrun
        PROXY_V2_SIGNATURE + b"\x21\x11\xff\xff",  # over the 4,096-byte limit
        b"\r\n\r\nX",  # not the signature
    ],
)
def test_malformed_proxy_headers_raise_proxy_protocol_error(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


# ---- RFC 6724 precedence (the DNS backend's order) ------------------------------


def test_addresses_are_ordered_by_rfc_6724_precedence_keeping_the_server_order() -> None:
    given = [Address(text, 0) for text in ["192.0.2.1", "fd00::1", "2002::1", "2001:db8::1",
                                           "192.0.2.2", "2001:db8::2"]]
    assert [str(a.ip) for a in rfc6724_order(given)] == [
        "2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "2002::1", "fd00::1"]
