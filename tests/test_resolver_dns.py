"""DnsPythonBackend: real DNS answers from a local server, cached for their TTLs, without threads.

The DNS server is a trio task on 127.0.0.1 (port 0) that answers from a table
with dnslib, and counts the queries it receives. Tests that wait for answers
run on ``MockClock()`` (no autojump: a real reply must not race a jump), and
the tests move time by hand (``clock.jump``) to expire TTLs; a server that
never answers is tested under ``autojump_clock``, where jumping is what we want.
Tests on trio's real clock are bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dnslib  # type: ignore[import-untyped]
import pytest
import trio
import trio.testing

import trionet
from tests.processes import run_benchmark
from trionet import Address, DnsPythonBackend, GetaddrinfoBackend, LookupResult, Resolver, connect_tcp
from trionet._adapters.resolver_dns import DEFAULT_MAX_TTL  # the bound is not public API
from trionet.errors import ResolutionError

from .conftest import open_fd_count

try:
    import dns.asyncbackend

    dns.asyncbackend.get_backend("trio")
except ImportError as error:  # the oldest trio CI tests: the dns extra asks for a newer one
    pytest.skip(f"dnspython's trio backend is unavailable here: {error}", allow_module_level=True)

pytestmark = pytest.mark.timeout(60)

ZONE = "test."


@dataclass
class LocalDNS:
    """A DNS server on loopback: answers from ``records``, counts ``queries``."""

    records: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict)
    queries: list[tuple[str, str]] = field(default_factory=list)
    soa: tuple[int, int] | None = (600, 60)  # (the SOA record's TTL, its MINIMUM)
    silent: bool = False  # receive, never answer
    hold_until: int = 0  # answer nothing until this many queries have arrived
    rcode: int | None = None  # answer every query with this error
    port: int = 0

    def add(self, name: str, kind: str, address: str, ttl: int) -> None:
        self.records.setdefault((name, kind), []).append((address, ttl))

    def set(self, name: str, kind: str, address: str, ttl: int) -> None:
        self.records[(name, kind)] = [(address, ttl)]

    def count(self, name: str, kind: str | None = None) -> int:
        return sum(1 for n, k in self.queries if n == name and kind in (None, k))

    def answer(self, data: bytes) -> bytes:
        request = dnslib.DNSRecord.parse(data)
        name = str(request.q.qname).rstrip(".")
        kind = dnslib.QTYPE[request.q.qtype]
        reply = request.reply()
        if self.rcode is not None:
            reply.header.rcode = self.rcode
            return bytes(reply.pack())
        found = self.records.get((name, kind), [])
        exists = any(n == name for n, _ in self.records)
        rdata = {"A": dnslib.A, "AAAA": dnslib.AAAA}
        for address, ttl in found:
            reply.add_answer(dnslib.RR(name, request.q.qtype, rdata=rdata[kind](address), ttl=ttl))
        if not found:
            if not exists:
                reply.header.rcode = dnslib.RCODE.NXDOMAIN
            if self.soa is not None:
                ttl, minimum = self.soa
                times = (1, 3600, 600, 86400, minimum)  # serial, refresh, retry, expire, minimum
                record = dnslib.SOA("ns." + ZONE, "admin." + ZONE, times)
                reply.add_auth(dnslib.RR(ZONE, dnslib.QTYPE.SOA, rdata=record, ttl=ttl))
        return bytes(reply.pack())

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            task_status.started(self.port)
            held: list[tuple[bytes, Any]] = []
            while True:
                data, peer = await sock.recvfrom(4096)
                request = dnslib.DNSRecord.parse(data)
                self.queries.append((str(request.q.qname).rstrip("."), dnslib.QTYPE[request.q.qtype]))
                if self.silent:
                    continue
                held.append((data, peer))
                if len(self.queries) < self.hold_until:
                    continue
                for query, address in held:
                    await sock.sendto(self.answer(query), address)
                held.clear()


@asynccontextmanager
async def local_dns() -> AsyncIterator[LocalDNS]:
    server = LocalDNS()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def backend_for(server: LocalDNS, **options: Any) -> DnsPythonBackend:
    return DnsPythonBackend(["127.0.0.1"], port=server.port, **options)


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every trio.to_thread.run_sync call made (getaddrinfo's worker threads go through it)."""
    calls: list[object] = []
    real = trio.to_thread.run_sync

    async def counting(sync_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(sync_fn)
        return await real(sync_fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counting)
    return calls


async def ips(resolver: Resolver, host: str, family: int = 0) -> list[str]:
    return [str(address.ip) for address in await resolver.resolve(host, 80, family=family)]


# --- the acceptance test ------------------------------------------------------------


async def test_a_1s_ttl_record_changes_after_1s_and_a_300s_one_stays_cached_with_no_thread(
    mock_clock: trio.testing.MockClock, threads: list[object]
) -> None:
    async with local_dns() as server:
        server.add("short.test", "A", "10.0.0.1", 1)
        server.add("long.test", "A", "10.0.0.2", 300)
        resolver = Resolver(backend=backend_for(server))
        assert await ips(resolver, "short.test", socket.AF_INET) == ["10.0.0.1"]
        assert await ips(resolver, "long.test", socket.AF_INET) == ["10.0.0.2"]
        server.set("short.test", "A", "10.0.1.1", 1)
        server.set("long.test", "A", "10.0.1.2", 300)

        mock_clock.jump(0.999)
        assert await ips(resolver, "short.test", socket.AF_INET) == ["10.0.0.1"]  # cached
        mock_clock.jump(0.002)  # past the 1 s TTL
        assert await ips(resolver, "short.test", socket.AF_INET) == ["10.0.1.1"]
        assert await ips(resolver, "long.test", socket.AF_INET) == ["10.0.0.2"]  # cached
        mock_clock.jump(298.9)  # 299.901 s after the first answer
        assert await ips(resolver, "long.test", socket.AF_INET) == ["10.0.0.2"]
        mock_clock.jump(0.2)
        assert await ips(resolver, "long.test", socket.AF_INET) == ["10.0.1.2"]

        assert (server.count("short.test"), server.count("long.test")) == (2, 2)
        assert resolver.statistics().lookups == 4
    assert threads == []


async def test_the_thread_counter_sees_getaddrinfo_use_a_thread(threads: list[object]) -> None:
    resolver = Resolver(backend=GetaddrinfoBackend())
    with trio.fail_after(10):
        assert await resolver.resolve("localhost", 80)
    assert len(threads) == 1


# --- answers ------------------------------------------------------------------------


async def test_both_families_are_queried_in_parallel_and_ordered_ipv6_first(
    threads: list[object],
) -> None:
    async with local_dns() as server:
        server.add("dual.test", "A", "192.0.2.1", 100)
        server.add("dual.test", "A", "192.0.2.2", 100)
        server.add("dual.test", "AAAA", "2001:db8::1", 40)
        server.add("dual.test", "AAAA", "2001:db8::2", 40)
        server.hold_until = 2  # the first query gets no answer before the second arrives
        resolver = Resolver(backend=backend_for(server, timeout=10))
        with trio.fail_after(5):
            found = await ips(resolver, "dual.test")
        assert found == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"]
        # One query each: one after the other, the first would have been retried.
        assert sorted(kind for _, kind in server.queries) == ["A", "AAAA"]
    assert threads == []


async def test_an_answer_for_both_families_lasts_as_long_as_the_shorter_ttl(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        server.add("dual.test", "A", "192.0.2.1", 100)
        server.add("dual.test", "AAAA", "2001:db8::1", 40)
        resolver = Resolver(backend=backend_for(server))
        await ips(resolver, "dual.test")
        mock_clock.jump(39.9)
        await ips(resolver, "dual.test")
        assert len(server.queries) == 2
        mock_clock.jump(0.2)
        await ips(resolver, "dual.test")
        assert len(server.queries) == 4


async def test_ttls_are_clamped_to_the_backend_bounds(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.add("zero.test", "A", "192.0.2.1", 0)
        server.add("huge.test", "A", "192.0.2.2", 7 * 86400)
        resolver = Resolver(backend=backend_for(server, min_ttl=5, max_ttl=50))
        for _ in range(2):
            await ips(resolver, "zero.test", socket.AF_INET)
            await ips(resolver, "huge.test", socket.AF_INET)
        assert len(server.queries) == 2
        mock_clock.jump(5.0)
        await ips(resolver, "zero.test", socket.AF_INET)
        await ips(resolver, "huge.test", socket.AF_INET)
        assert (server.count("zero.test"), server.count("huge.test")) == (2, 1)
        mock_clock.jump(45.0)
        await ips(resolver, "huge.test", socket.AF_INET)
        assert server.count("huge.test") == 2
    assert DEFAULT_MAX_TTL == 3600


async def test_a_zero_ttl_answer_is_not_cached_by_default(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.add("zero.test", "A", "192.0.2.1", 0)
        resolver = Resolver(backend=backend_for(server))
        for _ in range(3):
            await ips(resolver, "zero.test", socket.AF_INET)
        assert server.count("zero.test") == 3


# --- negative answers and failures --------------------------------------------------


async def test_nxdomain_is_a_resolution_error_cached_for_the_soa_minimum(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        server.soa = (600, 60)  # RFC 2308: min(600, 60) = 60 s
        resolver = Resolver(backend=backend_for(server))
        with pytest.raises(ResolutionError, match=r"no such name \(NXDOMAIN\)") as caught:
            await resolver.resolve("missing.test", 80, family=socket.AF_INET)
        cause = caught.value.__cause__
        assert type(cause) is socket.gaierror
        assert cause.errno == socket.EAI_NONAME
        mock_clock.jump(59.9)
        with pytest.raises(ResolutionError):
            await resolver.resolve("missing.test", 80, family=socket.AF_INET)
        assert server.count("missing.test") == 1
        assert resolver.statistics().negative_hits == 1
        mock_clock.jump(0.2)
        with pytest.raises(ResolutionError):
            await resolver.resolve("missing.test", 80, family=socket.AF_INET)
        assert server.count("missing.test") == 2


async def test_a_negative_ttl_is_bounded_by_max_negative_ttl(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.soa = (86400, 86400)
        resolver = Resolver(backend=backend_for(server, max_negative_ttl=30))
        for jump in (0.0, 29.9, 0.2):
            mock_clock.jump(jump)
            with pytest.raises(ResolutionError):
                await resolver.resolve("missing.test", 80, family=socket.AF_INET)
        assert server.count("missing.test") == 2


async def test_a_negative_answer_without_an_soa_record_is_not_cached(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        server.soa = None  # RFC 2308 section 5: such an answer SHOULD NOT be cached
        resolver = Resolver(backend=backend_for(server))
        for _ in range(2):
            with pytest.raises(ResolutionError, match="NXDOMAIN"):
                await resolver.resolve("missing.test", 80, family=socket.AF_INET)
        assert server.count("missing.test") == 2


async def test_a_name_without_a_record_of_the_family_is_nodata(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.add("v4only.test", "A", "192.0.2.1", 300)
        resolver = Resolver(backend=backend_for(server))
        with pytest.raises(ResolutionError, match=r"no AAAA record \(NODATA\)") as caught:
            await resolver.resolve("v4only.test", 80, family=socket.AF_INET6)
        assert isinstance(caught.value.__cause__, socket.gaierror)
        # Both families: the AAAA NODATA (60 s) shortens the A answer's 300 s.
        assert await ips(resolver, "v4only.test") == ["192.0.2.1"]
        mock_clock.jump(60.1)
        assert await ips(resolver, "v4only.test") == ["192.0.2.1"]
        assert server.count("v4only.test") == 5


async def test_a_server_that_never_answers_times_out_with_a_resolution_error(
    autojump_clock: trio.testing.MockClock, threads: list[object]
) -> None:
    async with local_dns() as server:
        server.silent = True
        resolver = Resolver(backend=backend_for(server, timeout=3.0))
        with pytest.raises(ResolutionError, match=r"no answer from the name servers within 3 s") as caught:
            await resolver.resolve("silent.test", 80)
        assert trio.current_time() == pytest.approx(3.0)
        cause = caught.value.__cause__
        assert type(cause) is socket.gaierror
        assert cause.errno == socket.EAI_AGAIN
        assert server.count("silent.test", "A") >= 1
        assert server.count("silent.test", "AAAA") >= 1
    assert threads == []


async def test_the_resolver_lookup_timeout_bounds_a_slower_backend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        server.silent = True
        resolver = Resolver(backend=backend_for(server, timeout=60.0), lookup_timeout=2.0)
        with pytest.raises(ResolutionError, match="the lookup took longer than 2 s"):
            await resolver.resolve("silent.test", 80)
        assert trio.current_time() == pytest.approx(2.0)


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
async def test_a_failing_server_is_a_resolution_error_at_once(
    rcode: str, mock_clock: trio.testing.MockClock
) -> None:
    async with local_dns() as server:
        server.rcode = getattr(dnslib.RCODE, rcode)
        resolver = Resolver(backend=backend_for(server), negative_ttl=5.0)
        with pytest.raises(ResolutionError, match=f"the name servers failed: .*{rcode}") as caught:
            await resolver.resolve("failing.test", 80, family=socket.AF_INET)
        cause = caught.value.__cause__
        assert type(cause) is socket.gaierror
        assert cause.errno == socket.EAI_AGAIN
        # No TTL from the server: the resolver's negative_ttl.
        mock_clock.jump(4.9)
        with pytest.raises(ResolutionError):
            await resolver.resolve("failing.test", 80, family=socket.AF_INET)
        assert server.count("failing.test") == 1
        mock_clock.jump(0.2)
        with pytest.raises(ResolutionError):
            await resolver.resolve("failing.test", 80, family=socket.AF_INET)
        assert server.count("failing.test") == 2


async def test_a_cancelled_lookup_leaves_nothing_running_and_closes_its_sockets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        server.silent = True
        resolver = Resolver(backend=backend_for(server, timeout=10.0))
        gc.collect()
        before = open_fd_count()
        with trio.move_on_after(1.0) as scope:
            await resolver.resolve("silent.test", 80)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(1.0)
        stats = resolver.statistics()
        assert (stats.in_flight, stats.cache_entries) == (0, 0)
        assert server.count("silent.test") == 2  # the two queries were sent ...
        gc.collect()
        assert open_fd_count() == before  # ... and their sockets are closed


# --- the Resolver around it ---------------------------------------------------------


async def test_concurrent_lookups_send_one_query(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.add("shared.test", "A", "192.0.2.7", 300)
        resolver = Resolver(backend=backend_for(server))
        results: list[list[str]] = []

        async def one() -> None:
            results.append(await ips(resolver, "shared.test", socket.AF_INET))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        assert results == [["192.0.2.7"]] * 5
        assert server.queries == [("shared.test", "A")]
        assert resolver.statistics().coalesced == 4


async def test_literals_and_the_hosts_table_never_reach_the_dns_server(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with local_dns() as server:
        resolver = Resolver(backend=backend_for(server), hosts={"pinned.test": "192.0.2.9"})
        assert await ips(resolver, "pinned.test") == ["192.0.2.9"]
        assert await ips(resolver, "::ffff:192.0.2.10") == ["192.0.2.10"]
        assert await ips(resolver, "[2001:db8::5]") == ["2001:db8::5"]
        assert server.queries == []


async def test_localhost_is_loopback_without_a_query(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        resolver = Resolver(backend=backend_for(server))
        assert await ips(resolver, "localhost") == ["::1", "127.0.0.1"]
        assert await ips(resolver, "db.localhost.", socket.AF_INET) == ["127.0.0.1"]
        assert server.queries == []


async def test_an_ipv4_mapped_aaaa_record_comes_back_as_ipv4(mock_clock: trio.testing.MockClock) -> None:
    async with local_dns() as server:
        server.add("mapped.test", "AAAA", "::ffff:c000:203", 300)  # ::ffff:192.0.2.3
        resolver = Resolver(backend=backend_for(server))
        assert await ips(resolver, "mapped.test") == ["192.0.2.3"]


async def test_connect_tcp_connects_through_a_name_the_local_dns_server_serves(
    threads: list[object],
) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)

    async with local_dns() as server, trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server.add("service.test", "A", "127.0.0.1", 60)
        resolver = Resolver(backend=backend_for(server))
        with trio.fail_after(10):
            async with await connect_tcp(
                "service.test", port, codec=trionet.LengthPrefixed(), resolver=resolver
            ) as conn:
                await conn.channel.send(b"found by DNS")
                assert await conn.channel.receive() == b"found by DNS"
                assert conn.peer == Address("127.0.0.1", port)
        assert sorted(server.queries) == [("service.test", "A"), ("service.test", "AAAA")]
        nursery.cancel_scope.cancel()
    assert threads == []


# --- the backend on its own ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"timeout": 0}, ValueError),
        ({"min_ttl": -1}, ValueError),
        ({"max_ttl": float("inf")}, ValueError),
        ({"min_ttl": 10, "max_ttl": 5}, ValueError),
        ({"port": 70000}, trionet.AddressError),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        DnsPythonBackend(["127.0.0.1"], **options)


@pytest.mark.parametrize("servers", [["dns.example"], []])
def test_name_servers_must_be_ip_addresses(servers: list[str]) -> None:
    with pytest.raises(trionet.AddressError):
        DnsPythonBackend(servers)


def test_without_name_servers_the_backend_reads_the_system_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dns.resolver

    def unreadable(self: object, f: object) -> None:
        raise dns.resolver.NoResolverConfiguration("cannot open /etc/resolv.conf")

    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", unreadable)
    with pytest.raises(OSError, match="cannot read the system's DNS configuration: cannot open"):
        DnsPythonBackend()
    monkeypatch.undo()
    if not Path("/etc/resolv.conf").is_file():
        pytest.skip("no /etc/resolv.conf here")
    backend = DnsPythonBackend()  # nothing is sent
    assert repr(backend).startswith("DnsPythonBackend([")
    assert "port=53" in repr(backend)


def test_a_lookup_result_refuses_a_bad_ttl() -> None:
    with pytest.raises(ValueError, match="ttl"):
        LookupResult((), -1.0)
    assert LookupResult((Address("::1", 0),), None).error is None


def test_without_dnspython_trionet_imports_and_the_backend_names_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['dns'] = None\n"  # as if dnspython were not installed
        "import trionet\n"
        "try:\n"
        "    trionet.DnsPythonBackend(['127.0.0.1'])\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'trionet[dns]'" in result.stdout


async def test_a_custom_backend_reports_its_own_ttl(mock_clock: trio.testing.MockClock) -> None:
    calls: list[tuple[str, int]] = []

    class Static:
        async def lookup(self, name: str, family: int, *, type: int, flags: int) -> LookupResult:
            calls.append((name, family))
            await trio.lowlevel.checkpoint()
            return LookupResult((Address("192.0.2.1", 0),), 2.0)

    backend: trionet.ResolverBackend = Static()
    resolver = Resolver(backend=backend)
    lookups: list[Callable[[], Awaitable[list[Address]]]] = [lambda: resolver.resolve("x.test", 1)] * 2
    for lookup in lookups:
        assert await lookup() == [Address("192.0.2.1", 1)]
    mock_clock.jump(2.0)
    await resolver.resolve("x.test", 1)
    assert calls == [("x.test", 0), ("x.test", 0)]


def test_the_backend_benchmark_runs_in_its_quick_mode() -> None:
    # benchmarks/resolver_backends.py; only the shape of its report is checked.
    result = run_benchmark("resolver_backends", "--quick", "--dnspython-only")
    assert result.returncode == 0, result.stderr
    assert "one family (A)   concurrent" in result.stdout
    assert "lookups/s" in result.stdout
