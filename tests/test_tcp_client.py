"""connect_tcp: Happy Eyeballs (RFC 8305) on the virtual network, to the millisecond."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing
import trustme

from trionet import ConnectError, LengthPrefixed, ResolutionError, Resolver
from trionet._observe import EventLog
from trionet._tcp_client import ConnectAttempt, connect_tcp
from trionet.testing import VirtualNetwork

V6 = "fd00::1"
V6B = "fd00::11"
V4 = "10.0.0.1"
V4B = "10.0.0.11"


@pytest.fixture
async def net() -> AsyncIterator[VirtualNetwork]:
    network = VirtualNetwork(seed=0)
    network.add_host("server", V4, V6, V4B, V6B)
    network.add_host("client", "10.0.0.2", "fd00::2")
    with network.install(default_host="client"):
        yield network


async def listen(net: VirtualNetwork, address: str, port: int = 80) -> trio.socket.SocketType:
    with net.host("server"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = trio.socket.socket(family)
        await listener.bind((address, port))
        listener.listen()
    return listener


def attempt_times(log: EventLog) -> list[tuple[str, float]]:
    return [
        (str(event.details["address"]), round(event.time, 6)) for event in log.of_kind("connect.attempt")
    ]


async def test_blackholed_ipv6_loses_to_ipv4_started_after_250_ms(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V6, V4)
    net.blackhole(V6)
    log = EventLog()
    with await listen(net, V4), await listen(net, V6):
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == f"{V4}:80"
            assert trio.current_time() == pytest.approx(0.25, abs=1e-9)
    assert attempt_times(log) == [(f"[{V6}]:80", 0.0), (f"{V4}:80", 0.25)]
    assert [str(event.details["address"]) for event in log.of_kind("connect.cancelled")] == [f"[{V6}]:80"]


async def test_refused_attempt_starts_the_next_at_once(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.link("client", "server", latency=0.05)  # a refusal takes one round trip: 100 ms
    listener = await listen(net, V4)
    net.set_dns("example.test", V6, V4)
    log = EventLog()
    with listener:
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == f"{V4}:80"
            assert trio.current_time() == pytest.approx(0.2)
    assert attempt_times(log) == [(f"[{V6}]:80", 0.0), (f"{V4}:80", 0.1)]
    assert [event.time for event in log.of_kind("connect.failed")] == [pytest.approx(0.1)]


async def test_every_attempt_failing_raises_one_connect_error_naming_each(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V6, V6B, V4, V4B)
    with pytest.raises(ConnectError) as info:
        await connect_tcp("example.test", 80, resolver=Resolver())
    error = info.value
    assert isinstance(error, OSError)
    assert [str(attempt.address) for attempt in error.attempts] == [
        f"[{V6}]:80", f"{V4}:80", f"[{V6B}]:80", f"{V4B}:80"
    ]
    assert all(isinstance(attempt, ConnectAttempt) for attempt in error.attempts)
    assert all(isinstance(attempt.error, ConnectionRefusedError) for attempt in error.attempts)
    message = str(error)
    assert message.startswith("all 4 connection attempts to 'example.test' port 80 failed:")
    for address in (f"[{V6}]:80", f"{V4}:80", f"[{V6B}]:80", f"{V4B}:80"):
        assert address in message
    assert isinstance(error.__cause__, ConnectionRefusedError)
    assert net.statistics().sockets == 0


async def test_ipv4_answering_first_waits_for_ipv6_within_the_resolution_delay(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V6, V4, ipv4_delay=0.0, ipv6_delay=0.02)
    log = EventLog()
    with await listen(net, V4), await listen(net, V6):
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == f"[{V6}]:80"
    assert attempt_times(log) == [(f"[{V6}]:80", 0.02)]


async def test_ipv4_answer_is_used_after_the_resolution_delay_when_ipv6_is_slow(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V6, V4, ipv4_delay=0.0, ipv6_delay=0.2)
    log = EventLog()
    with await listen(net, V4), await listen(net, V6):
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == f"{V4}:80"
    assert attempt_times(log) == [(f"{V4}:80", 0.05)]


async def test_delay_none_makes_attempts_strictly_one_after_another(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.link("client", "server", latency=0.05)
    net.set_dns("example.test", V6, V4, V6B)
    net.blackhole(V6B)
    log = EventLog()
    with pytest.raises(ConnectError, match=r"within connect_timeout=5s") as info:
        await connect_tcp(
            "example.test", 80, happy_eyeballs_delay=None, connect_timeout=5, resolver=Resolver(),
            observer=log,
        )
    # Each attempt starts when the one before it was refused, never on a timer;
    # the black-holed third is still waiting when the connect gives up at 5 s.
    assert attempt_times(log) == [(f"[{V6}]:80", 0.0), (f"{V4}:80", 0.1), (f"[{V6B}]:80", 0.2)]
    assert trio.current_time() == pytest.approx(5)
    assert "still connecting when the connect gave up" in str(info.value)
    assert net.statistics().sockets == 0


async def test_slow_first_attempt_is_closed_when_a_later_one_wins(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.add_host("far", "fd00::99")
    net.link("client", "far", latency=0.2)
    with net.host("far"):
        far = trio.socket.socket(socket.AF_INET6)
        await far.bind(("fd00::99", 80))
        far.listen()
    near = await listen(net, V4)
    net.set_dns("example.test", "fd00::99", V4)
    log = EventLog()
    with far, near:
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == f"{V4}:80"
            assert trio.current_time() == pytest.approx(0.25)
        assert [str(event.details["address"]) for event in log.of_kind("connect.cancelled")] == [
            "[fd00::99]:80"
        ]
        # The far server sees the losing connection closed.
        loser, _ = await far.accept()
        with loser, trio.fail_after(1), contextlib.suppress(ConnectionResetError):
            assert await loser.recv(10) == b""


@pytest.mark.parametrize(("delay", "clamped"), [(0, 0.01), (5, 2.0)])
async def test_delay_is_clamped_to_rfc_8305_bounds(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, delay: float, clamped: float
) -> None:
    net.set_dns("example.test", V6, V4, V6B)
    net.blackhole(V6, V4)
    log = EventLog()
    with await listen(net, V6B):
        async with await connect_tcp(
            "example.test", 80, happy_eyeballs_delay=delay, resolver=Resolver(), observer=log
        ):
            pass
    assert attempt_times(log) == [(f"[{V6}]:80", 0.0), (f"{V4}:80", clamped), (f"[{V6B}]:80", 2 * clamped)]


async def test_unknown_name_raises_resolution_error_naming_the_host(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(ResolutionError, match=r"nowhere\.test") as info:
        await connect_tcp("nowhere.test", 80, resolver=Resolver())
    assert "IPv6" in str(info.value)
    assert "IPv4" in str(info.value)


async def test_local_address_restricts_attempts_to_its_family(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await listen(net, V6)
    net.set_dns("example.test", V4, V6)
    log = EventLog()
    with listener:
        async with await connect_tcp(
            "example.test", 80, local_address="fd00::2", resolver=Resolver(), observer=log
        ) as conn:
            assert str(conn.local.host) == "fd00::2"
    assert attempt_times(log) == [(f"[{V6}]:80", 0.0)]


async def test_bad_arguments_raise_before_any_lookup() -> None:
    with pytest.raises(ValueError, match="happy_eyeballs_delay"):
        await connect_tcp("127.0.0.1", 80, happy_eyeballs_delay=-1)
    with pytest.raises(ValueError, match="port"):
        await connect_tcp("127.0.0.1", 70000)
    with pytest.raises(ValueError, match="host"):
        await connect_tcp("", 80)


# ------------------------------------------------------------------ real loopback


@pytest.mark.usefixtures("no_fd_leak")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connects_over_loopback_with_a_codec(host: str) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host=host))
        port = listeners[0].socket.getsockname()[1]
        async with await connect_tcp(host, port, codec=LengthPrefixed()) as conn:
            await conn.channel.send(b"over real loopback")
            assert await conn.channel.receive() == b"over real loopback"
            assert conn.peer.port == port
            assert conn.server is None
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("trionet.example").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


async def test_tls_round_trip_and_wrong_hostname(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = tls_contexts

    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        async with stream:
            try:
                while data := await stream.receive_some():
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            trio.serve_ssl_over_tcp, echo, 0, server_context  # type: ignore[arg-type]
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with await connect_tcp(
            "127.0.0.1", port, ssl_context=client_context, server_hostname="trionet.example",
            codec=LengthPrefixed(),
        ) as conn:
            assert isinstance(conn.stream, trio.SSLStream)
            await conn.channel.send(b"secret")
            assert await conn.channel.receive() == b"secret"
        with pytest.raises(trio.BrokenResourceError) as info:
            await connect_tcp(
                "127.0.0.1", port, ssl_context=client_context, server_hostname="wrong.example"
            )
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()
