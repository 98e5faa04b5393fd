"""Happy Eyeballs input (RFC 8305 section 3): per-family answers, the 50 ms delay.

On ``MockClock(autojump_threshold=0)`` with a fake resolver whose answers come
after per-family delays, so every time is asserted to the millisecond.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from tests.resolver_fakes import (
    V4,
    V6,
    FakeResolver,
    addresses,
    bounded_nursery,
    installed_fake,
    now_ms,
)
from trionet import RESOLUTION_DELAY, Address, FamilyAnswer, Resolver, resolve_happy_eyeballs
from trionet.errors import AddressError, ResolutionError


@pytest.fixture
async def fake() -> AsyncIterator[FakeResolver]:
    async with installed_fake() as resolver:
        yield resolver


async def happy_eyeballs(
    fake: FakeResolver, host: str = "dual.test", **kwargs: Any
) -> list[tuple[int, float, tuple[Address, ...], ResolutionError | None]]:
    """Run the Happy Eyeballs lookups; return (family, received at, addresses, error)."""
    received: list[tuple[int, float, tuple[Address, ...], ResolutionError | None]] = []
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    async with bounded_nursery() as nursery:
        nursery.start_soon(partial(resolve_happy_eyeballs, host, 80, send, **kwargs))
        async with receive:
            async for answer in receive:
                received.append((answer.family, now_ms(), answer.addresses, answer.error))
    return received


async def test_ipv6_answering_within_the_resolution_delay_goes_first(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.010, V4: 0.0}
    received = await happy_eyeballs(fake)
    assert [(family, time) for family, time, _, _ in received] == [
        (V6, 10.0),
        (V4, 10.0),
    ]
    assert received[0][2] == tuple(addresses("2001:db8::1", "2001:db8::2"))
    assert received[1][2] == tuple(addresses("192.0.2.1", "192.0.2.2"))
    assert sorted((name, family) for name, family, _ in fake.calls) == [
        ("dual.test", V4),
        ("dual.test", V6),
    ]


async def test_ipv4_is_held_for_the_50_ms_resolution_delay_then_sent(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.200, V4: 0.0}
    received = await happy_eyeballs(fake)
    assert RESOLUTION_DELAY == 0.050
    assert [(family, time) for family, time, _, _ in received] == [
        (V4, 50.0),
        (V6, 200.0),
    ]


async def test_answered_at_is_when_the_answer_arrived_not_when_it_was_released(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.200, V4: 0.030}
    answers: list[FamilyAnswer] = []
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    async with bounded_nursery() as nursery:
        nursery.start_soon(resolve_happy_eyeballs, "dual.test", 80, send)
        async for answer in receive:
            answers.append(answer)
            assert now_ms() == (80.0 if answer.family == V4 else 200.0)
    assert [(a.family, round(a.answered_at * 1000, 3)) for a in answers] == [
        (V4, 30.0),
        (V6, 200.0),
    ]


async def test_ipv4_answering_after_ipv6_is_sent_at_once(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.0, V4: 0.030}
    received = await happy_eyeballs(fake)
    assert [(family, time) for family, time, _, _ in received] == [
        (V6, 0.0),
        (V4, 30.0),
    ]


async def test_a_failed_ipv6_lookup_releases_ipv4_at_once(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.020, V4: 0.0}
    received = await happy_eyeballs(fake, "v4.test")
    (v6_family, v6_time, v6_addresses, v6_error), (v4_family, v4_time, v4_addresses, v4_error) = received
    assert (v6_family, v6_time, v6_addresses) == (V6, 20.0, ())
    assert isinstance(v6_error, ResolutionError)
    assert "'v4.test' port 80" in str(v6_error)
    assert (v4_family, v4_time, v4_addresses, v4_error) == (
        V4,
        20.0,
        (Address("192.0.2.7", 80),),
        None,
    )


async def test_when_both_families_fail_each_answer_carries_its_error(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    received = await happy_eyeballs(fake, "nowhere.test")
    assert sorted(family for family, _, _, _ in received) == [V4, V6]
    for _, _, found, error in received:
        assert found == ()
        assert isinstance(error, ResolutionError)
        assert error.host == "nowhere.test"


async def test_a_literal_sends_one_answer_without_lookups(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    assert await happy_eyeballs(fake, "::1") == [(V6, 0.0, (Address("::1", 80),), None)]
    assert await happy_eyeballs(fake, "127.0.0.1") == [(V4, 0.0, (Address("127.0.0.1", 80),), None)]
    assert fake.calls == []


async def test_happy_eyeballs_shares_the_cache_and_the_hosts_table(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = Resolver(hosts={"static.test": ["127.0.0.1", "::1"]})
    received = await happy_eyeballs(fake, "static.test", resolver=resolver)
    assert [(family, time) for family, time, _, _ in received] == [(V6, 0.0), (V4, 0.0)]
    await happy_eyeballs(fake, "dual.test", resolver=resolver)
    assert len(fake.calls) == 2
    await resolver.resolve("dual.test", 80, family=V6)
    await resolver.resolve("dual.test", 80, family=V4)
    await happy_eyeballs(fake, "dual.test", resolver=resolver)
    assert len(fake.calls) == 2


async def test_after_the_receiver_closes_the_next_answer_ends_the_lookups(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.0, V4: 10.0}
    send, receive = trio.open_memory_channel[FamilyAnswer](0)
    returned_at: list[float] = []

    async def producer() -> None:
        await resolve_happy_eyeballs("dual.test", 80, send)
        returned_at.append(now_ms())

    async with bounded_nursery() as nursery:
        nursery.start_soon(producer)
        first = await receive.receive()
        await receive.aclose()
    assert first.family == V6
    # The IPv4 answer found nobody to take it, and nothing was left running.
    assert returned_at == [10000.0]
    assert fake.cancelled == []


async def test_a_send_to_a_closed_receiver_cancels_the_other_lookup(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 1.0, V4: 0.0}
    send, receive = trio.open_memory_channel[FamilyAnswer](0)
    await receive.aclose()  # nobody will listen
    await resolve_happy_eyeballs("dual.test", 80, send, resolution_delay=0.0)
    assert now_ms() == 0.0
    assert fake.cancelled == [("dual.test", V6, 0.0)]


async def test_cancelling_happy_eyeballs_cancels_lookups_and_closes_the_channel(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays = {V6: 0.1, V4: 0.1}
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    with trio.move_on_after(0.03):
        await resolve_happy_eyeballs("dual.test", 80, send)
    assert now_ms() == 30.0
    assert sorted(fake.cancelled) == [
        ("dual.test", V4, 30.0),
        ("dual.test", V6, 30.0),
    ]
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()


async def test_happy_eyeballs_refuses_bad_arguments_and_closes_the_channel(
    fake: FakeResolver,
) -> None:
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    with pytest.raises(AddressError, match="port 70000 is out of range"):
        await resolve_happy_eyeballs("dual.test", 70000, send)
    with pytest.raises(trio.EndOfChannel):
        receive.receive_nowait()
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    with pytest.raises(ValueError, match="resolution_delay must be >= 0"):
        await resolve_happy_eyeballs("dual.test", 80, send, resolution_delay=-1)
    assert fake.calls == []


async def test_a_broken_custom_resolver_is_a_failed_answer_not_an_exception_group(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.add("buggy.test", "192.0.2.9")
    fake.broken.add("buggy.test")
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    await resolve_happy_eyeballs("buggy.test", 80, send, resolver=Resolver())
    answers = [answer async for answer in receive]
    assert sorted(answer.family for answer in answers) == sorted([V4, V6])
    for answer in answers:
        assert answer.addresses == ()
        assert isinstance(answer.error, ResolutionError)
        assert answer.error.reason == "the lookup raised RuntimeError('bug in the resolver')"
        assert isinstance(answer.error.__cause__, RuntimeError)


async def test_connect_tcp_meets_a_broken_custom_resolver_with_one_resolution_error(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    from trionet import connect_tcp

    fake.broken.add("buggy.test")
    with pytest.raises(ResolutionError) as info:
        await connect_tcp("buggy.test", 80, resolver=Resolver())
    assert str(info.value) == (
        "cannot resolve 'buggy.test' port 80: IPv6: the lookup raised RuntimeError('bug in the resolver'); "
        "IPv4: the lookup raised RuntimeError('bug in the resolver')"
    )
