"""The Happy Eyeballs race as a state machine (RFC 8305 sections 4 and 5), without a clock.

Times are plain numbers fed with each event; every decision is asserted exactly.
The property tests drive the machine with a small discrete-event loop, the pure
twin of connect_tcp's trio loop.

Imports private ``trionet._sansio.happy_eyeballs``: the sans-IO state machine behind
``connect_tcp`` is internal.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trionet import Address, ConnectAttempt, interleave_families
from trionet._sansio.happy_eyeballs import (
    MAX_CONNECTION_ATTEMPT_DELAY,
    MIN_CONNECTION_ATTEMPT_DELAY,
    HappyEyeballs,
    Won,
)

A6, B6, C6 = (Address.parse(f"[2001:db8::{n}]:443") for n in "abc")
X4, Y4, Z4 = (Address.parse(f"192.0.2.{n}:443") for n in (1, 2, 3))
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


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
    assert not race.done
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
    assert not race.done  # A6 still runs
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
