"""Names from an untrusted source (issue 15, item 6): memory, spellings, numbers.

- Failed lookups are cached as text, never as exception objects with their
  tracebacks, and every cache is bounded in bytes: a thousand long names leave
  the process under ``DEFAULT_MAX_CACHE_BYTES``.
- Every spelling that UTS-46 folds together (fullwidth letters, the ideographic
  full stop, soft hyphens, zero-width spaces, the ``xn--`` form) is one name,
  for the hosts table and the lookup alike: a pinned name is never sent to DNS
  spelled another way.
- Ports and zones are checked before ``int()`` sees them; a numeric zone is a
  uint32; a bool is never a port, flow label or zone.

No real DNS: names are answered (or refused) by fakes installed through
``trio.socket.set_custom_hostname_resolver``; connections use loopback only.
The name a lookup sends is read from the fake, which sees exactly what
getaddrinfo is asked for.
"""

from __future__ import annotations

import gc
import socket
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

import trionet
from trionet import DEFAULT_MAX_CACHE_BYTES, Address, AddressError, ResolutionError, Resolver, parse_host_port

from .resolver_fakes import FakeResolver, installed_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeResolver]:
    async with installed_fake() as resolver:
        yield resolver


class _Ballast:
    """Something a lookup's frame holds, to see whether the cache keeps that frame."""


class CountingResolver(trio.abc.HostnameResolver):
    """Fails every name, or answers it with ``answers`` addresses; counts calls only.

    (``FakeResolver`` records every name it is asked for, which would itself
    grow with the names this module feeds it.)
    """

    def __init__(self, answers: int = 0) -> None:
        self.calls = 0
        self.answers = answers
        self.ballast: weakref.ref[_Ballast] | None = None

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        self.calls += 1
        ballast = _Ballast()  # a local of this frame: alive while its traceback is
        self.ballast = weakref.ref(ballast)
        await trio.lowlevel.checkpoint()
        if not self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 0, "", (f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}", 0))
            for i in range(self.answers)
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.fixture
async def counting() -> AsyncIterator[CountingResolver]:
    resolver = CountingResolver()
    previous = trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


def long_name(i: int) -> str:
    """A distinct name as long as DNS allows: 253 characters, labels of 63."""
    return ".".join([f"{i:06d}" + "a" * 57, "b" * 63, "c" * 63, "d" * 61])


# Each refused before any lookup; none is cached.
ILLEGAL_NAMES: list[Callable[[int], str]] = [
    lambda i: f"{i}" + "x" * 256 * 1024,  # a 256 KiB name, every character legal
    lambda i: f"{i:06d}" + "a" * 58 + ".test",  # a label of 64
    lambda i: long_name(i) + "e",  # 254 characters
    lambda i: f"{i}" + "\u00e9" * 70 + ".test",  # a label over 63 once encoded
]


def traced_growth(before: int) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


def start_tracing() -> int:
    gc.collect()
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


# --- memory -----------------------------------------------------------------------


async def test_a_cached_failure_keeps_no_traceback_of_the_lookup(counting: CountingResolver) -> None:
    resolver = Resolver()
    with pytest.raises(ResolutionError) as first:
        await resolver.resolve("nowhere.test", 80)
    cause = first.value.__cause__
    assert isinstance(cause, socket.gaierror)
    assert (cause.errno, cause.strerror) == (socket.EAI_NONAME, "Name or service not known")
    assert cause.__traceback__ is None
    del first, cause
    gc.collect()
    assert counting.ballast is not None
    assert counting.ballast() is None, "the negative cache keeps the failed lookup's frames alive"
    # The cached failure still gives each caller the system's error as __cause__.
    with pytest.raises(ResolutionError, match="Name or service not known") as again:
        await resolver.resolve("nowhere.test", 80)
    assert isinstance(again.value.__cause__, socket.gaierror)
    assert again.value.__cause__.errno == socket.EAI_NONAME
    assert (counting.calls, resolver.statistics().negative_hits) == (1, 1)


async def test_a_thousand_long_names_leave_memory_under_the_documented_byte_bound(
    counting: CountingResolver,
) -> None:
    # lookup_timeout=None: with a finite one, trio keeps up to 1,000 stale
    # deadline entries of finished cancel scopes in its own heap (pruned in
    # batches); that is trio's memory, bounded by trio, not the resolver's.
    resolver = Resolver(lookup_timeout=None)
    for warm_up in ("warm.test", "w\u00e4rm.test"):  # loads the IDNA tables and trio's thread-free path
        with pytest.raises(ResolutionError):
            await resolver.resolve(warm_up, 80)
    resolver.clear_cache()
    before = start_tracing()
    try:
        for i in range(1000):
            with pytest.raises(ResolutionError):
                await resolver.resolve(long_name(i), 80)
            for illegal in ILLEGAL_NAMES:
                with pytest.raises(AddressError):
                    await resolver.resolve(illegal(i), 80)
        growth = traced_growth(before)
    finally:
        tracemalloc.stop()
    stats = resolver.statistics()
    assert counting.calls == 1000 + 2, "an illegal name reached getaddrinfo"
    assert stats.cache_entries == 1000
    assert stats.cache_bytes <= DEFAULT_MAX_CACHE_BYTES
    assert growth <= DEFAULT_MAX_CACHE_BYTES, f"{growth} bytes held after 1,000 failed names"


async def test_a_thousand_answers_with_many_addresses_stay_under_the_byte_bound() -> None:
    counting = CountingResolver(answers=5)
    previous = trio.socket.set_custom_hostname_resolver(counting)
    try:
        resolver = Resolver(lookup_timeout=None)
        await resolver.resolve("warm.test", 80)
        resolver.clear_cache()
        before = start_tracing()
        try:
            for i in range(1000):
                assert len(await resolver.resolve(long_name(i), 80)) == 5
            growth = traced_growth(before)
        finally:
            tracemalloc.stop()
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    stats = resolver.statistics()
    assert 0 < stats.cache_entries < 1000  # the bytes bound, not the count, decided
    assert stats.cache_bytes <= DEFAULT_MAX_CACHE_BYTES
    assert growth <= DEFAULT_MAX_CACHE_BYTES, f"{growth} bytes held after 1,000 answers"


async def test_the_cache_evicts_the_oldest_answers_past_max_cache_bytes(counting: CountingResolver) -> None:
    resolver = Resolver(max_cache_bytes=4096)
    for i in range(10):
        with pytest.raises(ResolutionError):
            await resolver.resolve(f"n{i}.test", 80)
        assert resolver.statistics().cache_bytes <= 4096
    cached = resolver.statistics().cache_entries
    assert 1 < cached < 10
    calls = counting.calls
    with pytest.raises(ResolutionError):  # the newest is still cached ...
        await resolver.resolve("n9.test", 80)
    assert counting.calls == calls
    with pytest.raises(ResolutionError):  # ... the oldest went first
        await resolver.resolve("n0.test", 80)
    assert counting.calls == calls + 1


async def test_an_answer_larger_than_max_cache_bytes_is_returned_but_not_cached() -> None:
    counting = CountingResolver(answers=50)
    previous = trio.socket.set_custom_hostname_resolver(counting)
    try:
        resolver = Resolver(max_cache_bytes=4096)
        for _ in range(2):
            assert len(await resolver.resolve("many.test", 80)) == 50
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert counting.calls == 2
    assert (resolver.statistics().cache_entries, resolver.statistics().cache_bytes) == (0, 0)


@pytest.mark.parametrize("value", [0, True, 1.5])
def test_max_cache_bytes_must_be_a_positive_int(value: object) -> None:
    with pytest.raises((ValueError, TypeError), match="max_cache_bytes must be"):
        Resolver(max_cache_bytes=value)  # type: ignore[arg-type]


async def test_a_long_failure_reason_is_cached_cut_short() -> None:
    class Wordy(CountingResolver):
        async def getaddrinfo(self, *args: Any, **kwargs: Any) -> list[Any]:
            self.calls += 1
            await trio.lowlevel.checkpoint()
            raise OSError("x" * 100_000)

    wordy = Wordy()
    previous = trio.socket.set_custom_hostname_resolver(wordy)
    try:
        resolver = Resolver()
        for _ in range(2):
            with pytest.raises(ResolutionError) as info:
                await resolver.resolve("wordy.test", 80)
            assert len(info.value.reason) <= 200
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    assert wordy.calls == 1
    assert resolver.statistics().cache_bytes < 2048


# --- one name, however it is spelled ------------------------------------------------

SPELLINGS = [
    pytest.param("db.test", id="plain"),
    pytest.param("DB.Test.", id="upper-case-and-root-dot"),
    pytest.param("\uff44\uff42.test", id="fullwidth-letters"),
    pytest.param("\uff24\uff22\uff0e\uff34\uff25\uff33\uff34", id="fullwidth-everything"),
    pytest.param("db\u3002test", id="ideographic-full-stop"),
    pytest.param("db\uff61test", id="halfwidth-ideographic-full-stop"),
    pytest.param("d\u00adb.test", id="soft-hyphen"),
    pytest.param("d\u200bb.te\u200bst", id="zero-width-space"),
    pytest.param("d\u2060b.test", id="word-joiner"),
    pytest.param("\ufeffdb.test", id="byte-order-mark"),
    pytest.param("\u00add\u00adb\u00ad.test\u3002", id="soft-hyphens-and-ideographic-root-dot"),
]
IDN_SPELLINGS = [
    pytest.param("b\u00fccher.test", id="unicode"),
    pytest.param("B\u00dcCHER.TEST", id="unicode-upper-case"),
    pytest.param("xn--bcher-kva.test", id="xn--"),
    pytest.param("XN--BCHER-KVA.TEST", id="xn---upper-case"),
    pytest.param("\uff38n--bcher-kva.test", id="xn---fullwidth-x"),
    pytest.param("b\u00fc\u00adcher\u3002test", id="unicode-soft-hyphen-ideographic-stop"),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_every_spelling_is_looked_up_as_one_name(spelling: str, fake: FakeResolver) -> None:
    fake.add("db.test", "192.0.2.66")
    fake.add("db.test.", "192.0.2.66")  # a root dot is kept: the fake answers that spelling too
    assert await Resolver().resolve(spelling, 80) == [Address("192.0.2.66", 80)]
    assert {name.rstrip(".") for name in fake.names_called()} == {"db.test"}
    assert Resolver(hosts={spelling: "127.0.0.1"}).hosts.keys() == {"db.test"}


@pytest.mark.parametrize("spelling", IDN_SPELLINGS)
async def test_every_idn_spelling_is_looked_up_in_its_xn_form(spelling: str, fake: FakeResolver) -> None:
    fake.add("xn--bcher-kva.test", "192.0.2.67")
    assert await Resolver().resolve(spelling, 80) == [Address("192.0.2.67", 80)]
    assert set(fake.names_called()) == {"xn--bcher-kva.test"}
    assert Resolver(hosts={spelling: "127.0.0.1"}).hosts.keys() == {"xn--bcher-kva.test"}


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_pinned_name_is_answered_from_the_hosts_table_however_it_is_spelled(
    spelling: str, fake: FakeResolver
) -> None:
    fake.add("db.test", "192.0.2.66")  # what DNS would say: must never be asked
    pinned = Resolver(hosts={"db.test": "127.0.0.1"})
    assert await pinned.resolve(spelling, 80) == [Address("127.0.0.1", 80)]
    pinned_oddly = Resolver(hosts={spelling: "127.0.0.1"})
    assert await pinned_oddly.resolve("db.test", 80) == [Address("127.0.0.1", 80)]
    assert await pinned_oddly.resolve(spelling, 80) == [Address("127.0.0.1", 80)]
    assert pinned_oddly.hosts == {"db.test": ("127.0.0.1",)}
    assert fake.calls == [], "DNS was asked for a pinned name"


@pytest.mark.parametrize("spelling", IDN_SPELLINGS)
async def test_a_pinned_idn_is_answered_from_the_hosts_table_in_every_form(
    spelling: str, fake: FakeResolver
) -> None:
    for pin in ("b\u00fccher.test", "xn--bcher-kva.test", spelling):
        resolver = Resolver(hosts={pin: "127.0.0.1"})
        for asked in ("b\u00fccher.test", "xn--bcher-kva.test", spelling):
            assert await resolver.resolve(asked, 80) == [Address("127.0.0.1", 80)]
    assert fake.calls == []


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_happy_eyeballs_input_finds_the_pin_however_it_is_spelled(
    spelling: str, fake: FakeResolver
) -> None:
    resolver = Resolver(hosts={"db.test": ["::1", "127.0.0.1"]})
    send, receive = trio.open_memory_channel[trionet.FamilyAnswer](2)
    await trionet.resolve_happy_eyeballs(spelling, 80, send, resolver=resolver)
    answers = [answer async for answer in receive]
    assert [answer.addresses for answer in answers] == [(Address("::1", 80),), (Address("127.0.0.1", 80),)]
    assert fake.calls == []


@pytest.mark.parametrize("spelling", ["d\u00adb.test", "\uff44\uff42\u3002test", "d\u200bb.test"])
async def test_connect_tcp_reaches_the_pinned_address_however_the_name_is_spelled(
    spelling: str, fake: FakeResolver
) -> None:
    fake.add("db.test", "192.0.2.66")
    listener = trio.socket.socket(socket.AF_INET)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        resolver = Resolver(hosts={"db.test": "127.0.0.1"})
        with trio.fail_after(10):
            async with await trionet.connect_tcp(spelling, port, resolver=resolver) as conn:
                assert str(conn.peer) == f"127.0.0.1:{port}"
    assert fake.calls == []


@pytest.mark.parametrize("spelling", ["d\u00adb.test", "db\u3002test", "d\u200bb.test"])
async def test_udp_sends_to_the_pinned_address_however_the_name_is_spelled(
    spelling: str, fake: FakeResolver
) -> None:
    fake.add("db.test", "192.0.2.66")
    resolver = Resolver(hosts={"db.test": "127.0.0.1"})
    async with trionet.open_udp_endpoint(local=("127.0.0.1", 0)) as receiver, trionet.open_udp_endpoint(
        local=("127.0.0.1", 0), resolver=resolver
    ) as sender:
        await sender.send(b"hi", (spelling, receiver.local.port))
        await sender.send(b"ho", f"{spelling}:{receiver.local.port}")
        with trio.fail_after(10):
            assert (await receiver.receive()).data == b"hi"
            assert (await receiver.receive()).data == b"ho"
    assert fake.calls == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("d\u200eb.test", id="left-to-right-mark"),
        pytest.param("d\u202eb.test", id="right-to-left-override"),
        pytest.param("d\u0085b.test", id="c1-control"),
        pytest.param("\u00e9\x07.test", id="ascii-control-in-an-idn"),
        pytest.param("\u00e9/x.test", id="slash-in-an-idn"),
    ],
)
async def test_invisible_characters_that_uts46_disallows_are_refused(name: str, fake: FakeResolver) -> None:
    with pytest.raises(AddressError):
        await Resolver(hosts={"db.test": "127.0.0.1"}).resolve(name, 80)
    with pytest.raises(AddressError):
        Resolver(hosts={name: "127.0.0.1"})
    assert fake.calls == []


# --- ports, zones, flow labels ------------------------------------------------------

MANY_DIGITS = "1" * 5000  # past CPython's 4,300-digit int() limit


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        pytest.param(Address.parse, f"127.0.0.1:{MANY_DIGITS}", id="Address.parse-port"),
        pytest.param(Address.parse, f"[::1]:{MANY_DIGITS}", id="Address.parse-bracketed-port"),
        pytest.param(parse_host_port, f"example.test:{MANY_DIGITS}", id="parse_host_port-port"),
        pytest.param(Address.parse, f"[fe80::1%{MANY_DIGITS}]:80", id="Address.parse-zone"),
        pytest.param(parse_host_port, f"[fe80::1%{MANY_DIGITS}]:80", id="parse_host_port-zone"),
        pytest.param(lambda text: Address(text, 80), f"fe80::1%{MANY_DIGITS}", id="Address-zone"),
        pytest.param(lambda text: Address("fe80::1", 80, scope_id=text), MANY_DIGITS, id="Address-scope_id"),
        pytest.param(
            lambda text: Resolver().set_host(text, "::1"),
            f"fe80::1%{MANY_DIGITS}",
            id="Resolver.set_host-zone",
        ),
    ],
)
def test_thousands_of_digits_are_an_address_error_with_a_short_message(
    parse: Callable[[str], object], text: str
) -> None:
    with pytest.raises(AddressError, match=r"of 5000 digits|characters long") as info:
        parse(text)
    assert len(str(info.value)) < 200


async def test_resolve_refuses_a_zone_of_thousands_of_digits_before_any_lookup(fake: FakeResolver) -> None:
    for host in (f"fe80::1%{MANY_DIGITS}", f"[fe80::1%{MANY_DIGITS}]", "fe80::1%99999999999"):
        with pytest.raises(AddressError):
            await trionet.resolve(host, 80)
    assert fake.calls == []


@pytest.mark.parametrize(
    "text",
    [
        "[fe80::1%99999999999]:80",
        "[fe80::1%4294967296]:80",
        "[fe80::1%000000000004294967296]:80",
    ],
)
def test_a_numeric_zone_over_32_bits_is_refused(text: str) -> None:
    with pytest.raises(AddressError, match="out of range: it must be 0-4294967295"):
        Address.parse(text)
    with pytest.raises(AddressError, match="out of range"):
        parse_host_port(text)
    with pytest.raises(AddressError, match="out of range"):
        Address(text[1 : text.index("]")], 80)


def test_numbers_at_the_limits_and_with_leading_zeros_still_parse() -> None:
    assert Address.parse("[fe80::1%4294967295]:80").scope_id == 4294967295
    assert Address.parse("[fe80::1%0007]:00080") == Address("fe80::1", 80, scope_id=7)
    assert Address.parse("127.0.0.1:65535").port == 65535
    assert Address.parse("127.0.0.1:" + "0" * 5000 + "80").port == 80
    with pytest.raises(AddressError, match=r"port 65536 in '127\.0\.0\.1:65536' is out of range"):
        Address.parse("127.0.0.1:65536")


def test_a_zone_name_is_bounded_in_length() -> None:
    assert Address.parse(f"[fe80::1%{'e' * 255}]:80").scope_id == "e" * 255
    with pytest.raises(AddressError, match="256 characters long; the limit is 255"):
        Address.parse(f"[fe80::1%{'e' * 256}]:80")
    with pytest.raises(AddressError) as info:
        Address.parse(f"[fe80::1%{'e' * 300_000}]:80")
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "::1", "port": True}, "port must be an int, not True"),
        ({"host": "::1", "port": 80, "flowinfo": True}, "flowinfo must be an int 0-1048575, not True"),
        ({"host": "::1", "port": 80, "flowinfo": False}, "flowinfo must be an int 0-1048575, not False"),
        ({"host": "fe80::1", "port": 80, "scope_id": True}, "scope_id must be an int 0-4294967295"),
        ({"host": "fe80::1", "port": 80, "scope_id": False}, "scope_id must be an int 0-4294967295"),
        ({"host": "::1", "port": 80, "flowinfo": 1.0}, "flowinfo must be an int"),
    ],
)
def test_a_bool_is_not_a_port_flow_label_or_zone(fields: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message) as info:
        Address(**fields)  # type: ignore[arg-type]
    assert isinstance(info.value, AddressError)  # what every address check raises


@pytest.mark.parametrize(
    "sockaddr", [("::1", True, 0, 0), ("::1", 80, True, 0), ("fe80::1", 80, 0, True), ("127.0.0.1", True)]
)
def test_from_sockaddr_refuses_bools(sockaddr: tuple[object, ...]) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        Address.from_sockaddr(sockaddr)


async def test_resolve_refuses_a_bool_port_with_a_type_error(fake: FakeResolver) -> None:
    with pytest.raises(TypeError, match="port must be an int, not True"):
        await trionet.resolve("db.test", True)
    assert fake.calls == []
