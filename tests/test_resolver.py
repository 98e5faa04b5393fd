"""The resolver: literals, caching, single-flight, limits, hosts table, statistics.

Names are answered by a fake resolver installed through trio's own hook
(``trio.socket.set_custom_hostname_resolver``), on ``MockClock(autojump_threshold=0)``,
so every time below is exact.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from dataclasses import FrozenInstanceError
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
from trionet import DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, Address, Resolver, default_resolver, resolve
from trionet.errors import AddressError, ResolutionError, TrionetError


@pytest.fixture
async def fake() -> AsyncIterator[FakeResolver]:
    async with installed_fake() as resolver:
        yield resolver


# --- literals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("2001:DB8::1", "2001:db8::1"),
    ],
)
async def test_literals_make_no_lookup_at_all(
    host: str,
    expected: str,
    fake: FakeResolver,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    through_trio: list[object] = []
    real_getaddrinfo = trio.socket.getaddrinfo

    async def counting_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        through_trio.append(args)
        return await real_getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(trio.socket, "getaddrinfo", counting_getaddrinfo)
    resolver = Resolver()
    assert await resolver.resolve(host, 80) == [Address(expected, 80)]
    assert await resolve(host, 80) == [Address(expected, 80)]
    assert through_trio == []
    assert fake.calls == []
    assert resolver.statistics().lookups == 0
    assert now_ms() == 0.0
    # The counting wrapper does see names, so it would have seen literals.
    await resolver.resolve("dual.test", 80)
    assert len(through_trio) == 1


async def test_a_literal_of_the_wrong_family_is_a_resolution_error(fake: FakeResolver) -> None:
    with pytest.raises(ResolutionError, match=r"cannot resolve '127\.0\.0\.1' port 80: it is not an IPv6"):
        await resolve("127.0.0.1", 80, family=V6)
    assert await resolve("::1", 80, family=V6) == [Address("::1", 80)]
    assert fake.calls == []


async def test_a_zone_name_in_a_literal_becomes_an_interface_index(fake: FakeResolver) -> None:
    [address] = await resolve("fe80::1%lo", 80)
    assert address.scope_id == socket.if_nametoindex("lo")
    assert address.to_sockaddr() == ("fe80::1", 80, 0, socket.if_nametoindex("lo"))
    with pytest.raises(ResolutionError, match="no network interface named 'nosuchif0'") as info:
        await resolve("fe80::1%nosuchif0", 80)
    assert isinstance(info.value.__cause__, OSError)
    assert fake.calls == []


# --- names, ordering and errors ------------------------------------------------------


async def test_names_are_ordered_per_rfc_8305_and_deduplicated(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.add("many.test", "2001:db8::a", "2001:db8::b", "2001:db8::c", "192.0.2.1", "::ffff:192.0.2.1")
    result = await resolve("many.test", 443)
    assert result == addresses("2001:db8::a", "192.0.2.1", "2001:db8::b", "2001:db8::c", port=443)
    assert fake.calls == [("many.test", 0, 0.0)]


async def test_family_is_passed_to_getaddrinfo(fake: FakeResolver) -> None:
    assert await resolve("dual.test", 1, family=V4) == addresses("192.0.2.1", "192.0.2.2", port=1)
    assert await resolve("dual.test", 1, family=V6) == addresses("2001:db8::1", "2001:db8::2", port=1)
    assert [family for _, family, _ in fake.calls] == [V4, V6]


async def test_resolution_error_names_host_and_port_and_is_an_oserror(fake: FakeResolver) -> None:
    with pytest.raises(OSError, match="nowhere") as info:  # `except OSError` keeps working
        await resolve("nowhere.test", 8080)
    error = info.value
    assert isinstance(error, ResolutionError)
    assert isinstance(error, TrionetError)
    assert str(error) == "cannot resolve 'nowhere.test' port 8080: Name or service not known"
    assert (error.host, error.port) == ("nowhere.test", 8080)
    assert isinstance(error.__cause__, socket.gaierror)
    assert error.__cause__.errno == socket.EAI_NONAME


@pytest.mark.parametrize(
    ("host", "port", "error", "message"),
    [
        ("", 80, AddressError, "host must be a non-empty str"),
        (b"dual.test", 80, AddressError, "host must be a non-empty str, not b'dual.test'"),
        ("dual.test", 65536, AddressError, "port 65536 is out of range"),
        ("dual.test", "80", AddressError, "port must be an int"),
    ],
)
async def test_bad_arguments_are_refused_before_any_lookup(
    host: Any, port: Any, error: type[Exception], message: str, fake: FakeResolver
) -> None:
    with pytest.raises(error, match=message):
        await resolve(host, port)
    with pytest.raises(ValueError, match="family must be 0, AF_INET or AF_INET6"):
        await resolve("dual.test", 80, family=socket.AF_UNIX)
    assert fake.calls == []


# --- single-flight -------------------------------------------------------------------


async def test_100_concurrent_resolves_of_one_name_make_one_call(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 0.5
    resolver = Resolver()
    results: list[list[Address]] = []

    async def one(port: int) -> None:
        results.append(await resolver.resolve("dual.test", port))

    async with bounded_nursery() as nursery:
        for port in range(100):
            nursery.start_soon(one, port)
    assert len(fake.calls) == 1
    assert len(results) == 100
    assert sorted(r[0].port for r in results) == list(range(100))  # each caller's own port
    assert all([a.host for a in r] == [a.host for a in results[0]] for r in results)
    assert now_ms() == 500.0
    stats = resolver.statistics()
    assert (stats.misses, stats.coalesced, stats.lookups, stats.in_flight) == (100, 99, 1, 0)


async def test_different_requests_are_not_coalesced(fake: FakeResolver) -> None:
    resolver = Resolver()
    async with bounded_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "dual.test", 80)
        nursery.start_soon(resolver.resolve, "v4.test", 80)
        nursery.start_soon(partial(resolver.resolve, "dual.test", 80, type=socket.SOCK_DGRAM))
    assert sorted(fake.names_called()) == ["dual.test", "dual.test", "v4.test"]


async def test_cancelling_a_follower_leaves_the_driver_with_the_answer(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1.0
    resolver = Resolver()
    outcome: dict[str, object] = {}

    async def driver() -> None:
        outcome["driver"] = await resolver.resolve("dual.test", 80)
        outcome["driver_at"] = now_ms()

    async def follower() -> None:
        with trio.move_on_after(0.5) as scope:
            await resolver.resolve("dual.test", 80)
        outcome["follower_cancelled"] = scope.cancelled_caught
        outcome["follower_at"] = now_ms()

    async with bounded_nursery() as nursery:
        nursery.start_soon(driver)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follower)
    assert outcome["follower_cancelled"] is True
    assert outcome["follower_at"] == 500.0
    assert outcome["driver"] == addresses("2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2")
    assert outcome["driver_at"] == 1000.0
    assert len(fake.calls) == 1
    assert fake.cancelled == []


async def test_cancelling_the_driver_leaves_the_follower_with_the_answer(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1.0
    resolver = Resolver()
    outcome: dict[str, object] = {}

    async def driver() -> None:
        with trio.move_on_after(0.5) as scope:
            await resolver.resolve("dual.test", 80)
            outcome["driver_returned"] = True
        outcome["driver_cancelled"] = scope.cancelled_caught
        outcome["driver_at"] = now_ms()

    async def follower() -> None:
        outcome["follower"] = await resolver.resolve("dual.test", 80)
        outcome["follower_at"] = now_ms()

    async with bounded_nursery() as nursery:
        nursery.start_soon(driver)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follower)
    # The follower gets the answer of the one lookup, on time; the driver
    # finished the shared lookup for it, then raised Cancelled.
    assert outcome["follower"] == addresses("2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2")
    assert outcome["follower_at"] == 1000.0
    assert outcome["driver_cancelled"] is True
    assert "driver_returned" not in outcome
    assert outcome["driver_at"] == 1000.0
    assert len(fake.calls) == 1
    assert fake.cancelled == []
    assert resolver.statistics().cache_entries == 1


async def test_a_cancelled_driver_nobody_waits_for_stops_at_once_and_caches_nothing(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1.0
    resolver = Resolver()
    with trio.move_on_after(0.25):
        await resolver.resolve("dual.test", 80)
    assert now_ms() == 250.0
    assert fake.cancelled == [("dual.test", 0, 250.0)]
    assert resolver.statistics().cache_entries == 0
    await resolver.resolve("dual.test", 80)
    assert len(fake.calls) == 2


async def test_when_the_last_follower_leaves_a_cancelled_driver_stops_too(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1.0
    resolver = Resolver()
    left_at: dict[str, float] = {}

    async def caller(name: str, patience: float) -> None:
        with trio.move_on_after(patience):
            await resolver.resolve("dual.test", 80)
        left_at[name] = now_ms()

    async with bounded_nursery() as nursery:
        nursery.start_soon(caller, "driver", 0.25)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(caller, "follower", 0.6)
    assert left_at == {"driver": 600.0, "follower": 600.0}
    assert fake.cancelled == [("dual.test", 0, 600.0)]
    assert resolver.statistics().cache_entries == 0
    assert resolver.statistics().in_flight == 0


async def test_a_driver_cancelled_while_queued_hands_the_lookup_to_a_follower(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.name_delays["v4.test"] = 1.0  # holds the only lookup slot until t=1
    resolver = Resolver(max_concurrent_lookups=1)
    outcome: dict[str, object] = {}

    async def driver() -> None:
        with trio.move_on_after(0.5):
            await resolver.resolve("dual.test", 80)
        outcome["driver_at"] = now_ms()

    async def follower() -> None:
        outcome["follower"] = await resolver.resolve("dual.test", 80)
        outcome["follower_at"] = now_ms()

    async with bounded_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "v4.test", 80)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(driver)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follower)
    assert outcome["driver_at"] == 500.0  # left the queue at once
    assert outcome["follower_at"] == 1000.0
    assert len(outcome["follower"]) == 4  # type: ignore[arg-type]
    assert fake.names_called() == ["v4.test", "dual.test"]


async def test_a_follower_that_joined_during_the_queue_wait_keeps_the_lookup_alive(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.name_delays["v4.test"] = 1.0  # holds the only lookup slot until t=1
    fake.delays[0] = 1.0  # so the shared lookup runs from t=1 to t=2
    resolver = Resolver(max_concurrent_lookups=1)
    outcome: dict[str, object] = {}

    async def driver() -> None:
        with trio.move_on_after(1.5) as scope:
            await resolver.resolve("dual.test", 80)
        outcome["driver_cancelled"] = scope.cancelled_caught
        outcome["driver_at"] = now_ms()

    async def follower() -> None:
        await resolver.resolve("dual.test", 80)
        outcome["follower_at"] = now_ms()

    async with bounded_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "v4.test", 80)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(driver)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follower)
    assert outcome == {"driver_cancelled": True, "driver_at": 2000.0, "follower_at": 2000.0}
    assert fake.names_called() == ["v4.test", "dual.test"]
    assert fake.cancelled == []


async def test_a_broken_custom_resolver_fails_every_waiter_and_is_not_cached(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.add("buggy.test", "192.0.2.9")
    fake.broken.add("buggy.test")
    fake.delays[0] = 0.1
    resolver = Resolver()
    errors: dict[str, BaseException] = {}

    async def caller(name: str) -> None:
        try:
            await resolver.resolve("buggy.test", 80)
        except Exception as exc:
            errors[name] = exc

    async with bounded_nursery() as nursery:
        nursery.start_soon(caller, "driver")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(caller, "follower")
    assert isinstance(errors["driver"], RuntimeError)
    follower_error = errors["follower"]
    assert isinstance(follower_error, ResolutionError)
    assert "the lookup raised RuntimeError('bug in the resolver')" in str(follower_error)
    assert follower_error.__cause__ is errors["driver"]
    fake.broken.clear()
    assert await resolver.resolve("buggy.test", 80) == [Address("192.0.2.9", 80)]
    assert len(fake.calls) == 2


async def test_a_hung_lookup_fails_after_lookup_timeout(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1000.0
    resolver = Resolver(lookup_timeout=5.0)
    with pytest.raises(ResolutionError, match="the lookup took longer than 5 s"):
        await resolver.resolve("dual.test", 80)
    assert now_ms() == 5000.0
    assert resolver.statistics().failures == 1


# --- caching -------------------------------------------------------------------------


async def test_a_cached_name_makes_no_call_until_its_ttl_passes(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = Resolver(ttl=30.0)
    await resolver.resolve("dual.test", 80)
    assert len(fake.calls) == 1
    await trio.sleep(29.999)
    assert await resolver.resolve("dual.test", 443) == addresses(
        "2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2", port=443
    )
    assert len(fake.calls) == 1
    await trio.sleep(0.001)
    await resolver.resolve("dual.test", 80)
    assert [time for _, _, time in fake.calls] == [0.0, 30000.0]
    stats = resolver.statistics()
    assert (stats.hits, stats.misses, stats.lookups) == (1, 2, 2)


async def test_the_ttl_counts_from_when_the_answer_arrived(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 2.0
    resolver = Resolver(ttl=10.0)
    await resolver.resolve("dual.test", 80)  # answered at t=2
    await trio.sleep(9.999)
    await resolver.resolve("dual.test", 80)
    assert len(fake.calls) == 1
    await trio.sleep(0.001)
    await resolver.resolve("dual.test", 80)
    assert len(fake.calls) == 2


async def test_a_failed_name_is_cached_negatively_for_the_shorter_ttl(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    resolver = Resolver(ttl=30.0, negative_ttl=10.0)
    with pytest.raises(ResolutionError, match="Name or service not known") as first:
        await resolver.resolve("late.test", 80)
    fake.add("late.test", "192.0.2.5")  # the name appears, but the failure is cached
    await trio.sleep(9.999)
    with pytest.raises(ResolutionError, match=r"'late\.test' port 81") as again:
        await resolver.resolve("late.test", 81)
    assert again.value is not first.value  # one exception per caller
    assert isinstance(again.value.__cause__, socket.gaierror)
    assert len(fake.calls) == 1
    await trio.sleep(0.001)
    assert await resolver.resolve("late.test", 80) == [Address("192.0.2.5", 80)]
    assert len(fake.calls) == 2
    stats = resolver.statistics()
    assert (stats.hits, stats.negative_hits, stats.failures) == (1, 1, 1)


async def test_the_default_ttls_are_30_and_10_seconds(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    assert (DEFAULT_TTL, DEFAULT_NEGATIVE_TTL) == (30.0, 10.0)
    await resolve("dual.test", 80)
    with pytest.raises(ResolutionError):
        await resolve("nowhere.test", 80)
    await trio.sleep(DEFAULT_NEGATIVE_TTL - 0.001)
    await resolve("dual.test", 80)
    with pytest.raises(ResolutionError):
        await resolve("nowhere.test", 80)
    assert len(fake.calls) == 2
    await trio.sleep(0.001)
    with pytest.raises(ResolutionError):
        await resolve("nowhere.test", 80)
    assert len(fake.calls) == 3
    await trio.sleep(DEFAULT_TTL - DEFAULT_NEGATIVE_TTL)
    await resolve("dual.test", 80)
    assert fake.names_called() == ["dual.test", "nowhere.test", "nowhere.test", "dual.test"]


async def test_ttl_zero_disables_the_cache_but_not_coalescing(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 0.1
    resolver = Resolver(ttl=0, negative_ttl=0)
    async with bounded_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(resolver.resolve, "dual.test", 80)
    assert len(fake.calls) == 1
    await resolver.resolve("dual.test", 80)
    assert len(fake.calls) == 2
    assert resolver.statistics().cache_entries == 0


async def test_the_cache_is_bounded_and_drops_the_oldest_entry(fake: FakeResolver) -> None:
    fake.add("a.test", "192.0.2.1")
    fake.add("b.test", "192.0.2.2")
    resolver = Resolver(max_cache_entries=2)
    for name in ("a.test", "b.test", "v4.test", "b.test", "a.test"):
        await resolver.resolve(name, 80)
    assert fake.names_called() == ["a.test", "b.test", "v4.test", "a.test"]
    assert resolver.statistics().cache_entries == 2


async def test_clear_cache_forgets_one_name_or_all(fake: FakeResolver) -> None:
    resolver = Resolver()
    await resolver.resolve("dual.test", 80)
    await resolver.resolve("v4.test", 80)
    resolver.clear_cache("DUAL.test")
    await resolver.resolve("dual.test", 80)
    await resolver.resolve("v4.test", 80)
    assert fake.names_called() == ["dual.test", "v4.test", "dual.test"]
    resolver.clear_cache()
    await resolver.resolve("v4.test", 80)
    assert fake.names_called()[-1] == "v4.test"
    assert len(fake.calls) == 4


# --- limits, hosts table, statistics, default resolver ---------------------------------


async def test_concurrent_system_lookups_are_bounded(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    fake.delays[0] = 1.0
    for index in range(5):
        fake.add(f"n{index}.test", f"192.0.2.{index + 1}")
    resolver = Resolver(max_concurrent_lookups=2)
    in_flight: list[int] = []

    async def watch() -> None:
        await trio.sleep(0.5)
        in_flight.append(resolver.statistics().in_flight)

    async with bounded_nursery() as nursery:
        nursery.start_soon(watch)
        for index in range(5):
            nursery.start_soon(resolver.resolve, f"n{index}.test", 80)
    assert fake.max_running == 2
    assert in_flight == [2]
    assert now_ms() == 3000.0
    assert [time for _, _, time in fake.calls] == [0.0, 0.0, 1000.0, 1000.0, 2000.0]


async def test_the_hosts_table_answers_without_a_lookup(fake: FakeResolver) -> None:
    resolver = Resolver(hosts={"DB.test": ["::1", "127.0.0.1", "::2"], "one.test": "10.0.0.1"})
    assert await resolver.resolve("db.test", 5432) == addresses("::1", "127.0.0.1", "::2", port=5432)
    assert await resolver.resolve("db.TEST.", 1, family=V4) == addresses("127.0.0.1", port=1)
    assert await resolver.resolve("one.test", 1) == addresses("10.0.0.1", port=1)
    with pytest.raises(ResolutionError, match="the hosts table has no IPv6 address"):
        await resolver.resolve("one.test", 1, family=V6)
    resolver.set_host("dual.test", ["192.0.2.99"])  # overrides what the system would say
    assert await resolver.resolve("dual.test", 1) == addresses("192.0.2.99", port=1)
    assert resolver.hosts == {
        "db.test": ("::1", "127.0.0.1", "::2"),
        "one.test": ("10.0.0.1",),
        "dual.test": ("192.0.2.99",),
    }
    assert fake.calls == []
    resolver.remove_host("dual.test")
    assert len(await resolver.resolve("dual.test", 1)) == 4
    assert len(fake.calls) == 1
    assert resolver.statistics().static_hits == 5  # the failed IPv6 one included


def test_the_hosts_table_refuses_what_is_not_an_ip_address() -> None:
    with pytest.raises(AddressError, match=r"'db\.internal' is not an IP address"):
        Resolver(hosts={"db.test": ["db.internal"]})
    with pytest.raises(AddressError, match=r"no addresses given for host 'db\.test'"):
        Resolver().set_host("db.test", [])


def test_settings_are_validated() -> None:
    for kwargs, message in [
        ({"ttl": -1}, "ttl must be >= 0"),
        ({"negative_ttl": math.nan}, "negative_ttl must be >= 0"),
        ({"lookup_timeout": 0}, "lookup_timeout must be > 0 or None"),
        ({"max_cache_entries": 0}, "max_cache_entries must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            Resolver(**kwargs)  # type: ignore[arg-type]


async def test_statistics_are_a_frozen_snapshot(fake: FakeResolver) -> None:
    resolver = Resolver()
    before = resolver.statistics()
    await resolver.resolve("dual.test", 80)
    await resolver.resolve("dual.test", 80)
    after = resolver.statistics()
    assert before.misses == 0
    assert (after.hits, after.misses, after.lookups, after.cache_entries) == (1, 1, 1, 1)
    with pytest.raises(FrozenInstanceError):
        after.hits = 5  # type: ignore[misc]


def test_statistics_work_outside_trio() -> None:
    assert Resolver().statistics().cache_entries == 0


async def test_resolve_uses_one_default_resolver_per_run_unless_given_one(
    fake: FakeResolver,
) -> None:
    assert default_resolver() is default_resolver()
    await resolve("dual.test", 80)
    await resolve("dual.test", 80)
    assert len(fake.calls) == 1
    assert default_resolver().statistics().hits == 1
    mine = Resolver(hosts={"dual.test": "192.0.2.42"})
    assert await resolve("dual.test", 80, resolver=mine) == [Address("192.0.2.42", 80)]
    assert len(fake.calls) == 1


def test_each_run_gets_a_fresh_default_resolver() -> None:
    async def get() -> Resolver:
        return default_resolver()

    assert trio.run(get) is not trio.run(get)


@pytest.mark.parametrize("host", ["127.0.0.1", "static.test", "dual.test"])
async def test_every_path_is_a_checkpoint(host: str, fake: FakeResolver) -> None:
    resolver = Resolver(hosts={"static.test": "10.0.0.1"})
    with trio.testing.assert_checkpoints():
        await resolver.resolve(host, 80)  # literal, hosts table, or a lookup
    with trio.testing.assert_checkpoints():
        await resolver.resolve(host, 80)  # ... or a cache hit


async def test_a_cancelled_call_raises_cancelled_on_every_path(fake: FakeResolver) -> None:
    resolver = Resolver(hosts={"static.test": "10.0.0.1"})
    await resolver.resolve("dual.test", 80)  # cached now
    for host in ("127.0.0.1", "static.test", "dual.test", "v4.test"):
        with trio.CancelScope() as scope:
            scope.cancel()
            await resolver.resolve(host, 80)
            pytest.fail(f"resolve({host!r}) returned while cancelled")
        assert scope.cancelled_caught
    assert fake.names_called() == ["dual.test"]


# --- issue 14 item 7: counts, the slot wait, host names ----------------------------


@pytest.mark.parametrize("name", ["max_concurrent_lookups", "max_cache_entries"])
def test_counts_below_one_and_booleans_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} must be >= 1, not 0"):
        Resolver(**{name: 0})
    with pytest.raises(ValueError, match=f"{name} must be >= 1, not -3"):
        Resolver(**{name: -3})
    with pytest.raises(TypeError, match=f"{name} must be an int, not True"):
        Resolver(**{name: True})
    with pytest.raises(TypeError, match=f"{name} must be an int, not 2.0"):
        Resolver(**{name: 2.0})


async def test_lookup_timeout_covers_the_wait_for_a_lookup_slot(
    fake: FakeResolver, autojump_clock: trio.testing.MockClock
) -> None:
    for name in ("h1.test", "h2.test", "h3.test"):
        fake.name_delays[name] = 1000.0
    resolver = Resolver(max_concurrent_lookups=1, lookup_timeout=5.0)
    errors: dict[str, tuple[str, float]] = {}

    async def lookup(name: str) -> None:
        with pytest.raises(ResolutionError) as info:
            await resolver.resolve(name, 80)
        errors[name] = (info.value.reason, now_ms())

    async with bounded_nursery() as nursery:
        nursery.start_soon(lookup, "h1.test")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lookup, "h2.test")  # these two queue behind h1
        nursery.start_soon(lookup, "h3.test")
    # Before, h2 got the slot at 5 s and failed at 10 s, h3 at 15 s.
    slot_wait = (
        "no lookup slot came free within lookup_timeout=5 s (all 1 max_concurrent_lookups stayed busy)"
    )
    assert errors == {
        "h1.test": ("the lookup took longer than 5 s", 5000.0),
        "h2.test": (slot_wait, 5000.0),
        "h3.test": (slot_wait, 5000.0),
    }
    # The queued names never reached getaddrinfo, and their failure is not cached.
    assert fake.names_called() == ["h1.test"]
    fake.name_delays["h2.test"] = 0.0
    fake.add("h2.test", "192.0.2.8")
    assert await resolver.resolve("h2.test", 80) == addresses("192.0.2.8")


async def test_the_hosts_table_finds_a_unicode_name_by_its_ascii_form_and_back(
    fake: FakeResolver,
) -> None:
    resolver = Resolver(hosts={"bücher.test": "192.0.2.1", "xn--caf-dma.test": "192.0.2.2"})
    assert await resolver.resolve("xn--bcher-kva.test", 80) == addresses("192.0.2.1")
    assert await resolver.resolve("BÜCHER.test.", 80) == addresses("192.0.2.1")
    assert await resolver.resolve("café.test", 80) == addresses("192.0.2.2")
    assert resolver.hosts == {"xn--bcher-kva.test": ("192.0.2.1",), "xn--caf-dma.test": ("192.0.2.2",)}
    resolver.remove_host("XN--BCHER-KVA.test")
    assert "xn--bcher-kva.test" not in resolver.hosts
    assert fake.calls == []


def test_the_hosts_table_refuses_a_label_over_63_bytes_once_encoded() -> None:
    label = "é" * 70  # 70 characters, far more once punycoded
    with pytest.raises(AddressError, match="Label too long"):
        Resolver(hosts={f"{label}.test": "192.0.2.1"})
    with pytest.raises(AddressError, match="empty label"):
        Resolver().set_host("a..test", "192.0.2.1")


async def test_a_unicode_name_is_looked_up_in_its_idna_2008_form(fake: FakeResolver) -> None:
    fake.add("xn--bcher-kva.test", "192.0.2.5")
    resolver = Resolver()
    assert await resolver.resolve("Bücher.test", 80) == addresses("192.0.2.5")
    # The same name in ASCII is the same cache entry.
    assert await resolver.resolve("xn--bcher-kva.test", 80) == addresses("192.0.2.5")
    assert fake.names_called() == ["xn--bcher-kva.test"]
    # IDNA 2008 maps the German sharp s to itself (IDNA 2003, Python's codec, made it "ss").
    fake.add("xn--fa-hia.test", "192.0.2.6")
    assert await resolver.resolve("faß.test", 80) == addresses("192.0.2.6")
