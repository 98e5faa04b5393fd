"""connect_tcp: Happy Eyeballs (RFC 8305) on the virtual network, to the millisecond."""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import re
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial

import pytest
import trio
import trio.testing

from trionet import (
    AddressError,
    ConnectAttempt,
    ConnectError,
    EventLog,
    LengthPrefixed,
    ResolutionError,
    Resolver,
    connect_tcp,
)
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME, open_fd_count
from .resolver_fakes import installed_fake

# Linux's socket option (include/uapi/linux/in.h); Python's socket module lacks it.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

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
        (str(event.details["address"]), round(event.time, 6)) for event in log.of_kind("tcp.connect.attempt")
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
    assert [str(event.details["address"]) for event in log.of_kind("tcp.connect.cancelled")] == [f"[{V6}]:80"]


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
    assert [event.time for event in log.of_kind("tcp.connect.failed")] == [pytest.approx(0.1)]


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
        assert [str(event.details["address"]) for event in log.of_kind("tcp.connect.cancelled")] == [
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
            "example.test", 80, local="fd00::2", resolver=Resolver(), observer=log
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


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"first_address_family_count": 0}, ValueError, "first_address_family_count must be at least 1"),
        ({"local": "fe80::1%eth0"}, AddressError, "is an interface name"),
        ({"local": "[::1"}, AddressError, "missing ']'"),
        ({"resolution_delay": -1}, ValueError, "resolution_delay must be >= 0"),
    ],
)
async def test_bad_options_raise_one_error_not_a_group_from_the_race(
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    net.set_dns("example.test", V6, V4)
    with pytest.raises(error, match=re.escape(message)):
        await connect_tcp("example.test", 80, resolver=Resolver(), **kwargs)  # type: ignore[arg-type]


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


async def test_tls_round_trip_and_wrong_hostname(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts

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
            "127.0.0.1", port, ssl_context=client_context, server_hostname=TLS_HOSTNAME,
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


# ------------------------------------------- issue 14 item 4: socket() failing for a family


class _RefusingFactory(trio.abc.SocketFactory):
    """A socket factory that fails for one family, as a kernel without it does."""

    def __init__(self, refused: int, errno_value: int, inner: trio.abc.SocketFactory | None) -> None:
        self.refused = refused
        self.errno_value = errno_value
        self.inner = inner
        self.refusals = 0

    def socket(
        self, family: int | None = None, type: int | None = None, proto: int | None = None
    ) -> trio.socket.SocketType:
        if family == self.refused:
            self.refusals += 1
            raise OSError(self.errno_value, os.strerror(self.errno_value))
        if self.inner is not None:
            return self.inner.socket(family, type, proto)
        return trio.socket.from_stdlib_socket(socket.socket(family or -1, type or -1, proto or 0))


@contextlib.contextmanager
def refusing(family: int, errno_value: int = errno.EAFNOSUPPORT) -> Iterator[_RefusingFactory]:
    """Install a factory that refuses ``family``, over the current one (the virtual network's)."""
    inner = trio.socket.set_custom_socket_factory(None)
    factory = _RefusingFactory(family, errno_value, inner)
    trio.socket.set_custom_socket_factory(factory)
    try:
        yield factory
    finally:
        trio.socket.set_custom_socket_factory(inner)


@pytest.mark.parametrize(
    ("refused", "winner", "won_at"),
    [
        (socket.AF_INET6, f"{V4}:80", 0.0),
        # IPv6 answers late, so that IPv4 is tried (and refused) first, at the
        # end of the 50 ms resolution delay; IPv6 is tried when it answers.
        (socket.AF_INET, f"[{V6}]:80", 0.1),
    ],
)
@pytest.mark.parametrize("errno_value", [errno.EAFNOSUPPORT, errno.EMFILE])
async def test_a_family_whose_sockets_cannot_be_created_is_skipped(
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
    refused: int,
    winner: str,
    won_at: float,
    errno_value: int,
) -> None:
    net.set_dns("example.test", V6, V4, ipv6_delay=0.1 if refused == socket.AF_INET else 0.0)
    log = EventLog()
    with await listen(net, V4), await listen(net, V6), refusing(refused, errno_value) as factory:
        async with await connect_tcp("example.test", 80, resolver=Resolver(), observer=log) as conn:
            assert str(conn.peer) == winner
            # The refusal starts the next attempt at once, not after 250 ms.
            assert trio.current_time() == pytest.approx(won_at)
    assert factory.refusals == 1
    [failed] = log.of_kind("tcp.connect.failed")
    assert isinstance(failed.details["error"], OSError)
    assert failed.details["error"].errno == errno_value  # type: ignore[attr-defined]
    assert net.statistics().sockets == 0


async def test_every_family_refusing_sockets_is_one_connect_error(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V6, V4)
    with refusing(socket.AF_INET6), refusing(socket.AF_INET), pytest.raises(ConnectError) as info:
        await connect_tcp("example.test", 80, resolver=Resolver())
    assert [attempt.error.errno for attempt in info.value.attempts] == [  # type: ignore[attr-defined]
        errno.EAFNOSUPPORT, errno.EAFNOSUPPORT
    ]
    assert "Address family not supported by protocol (EAFNOSUPPORT)" in str(info.value)


async def _dual_loopback_listeners() -> tuple[trio.socket.SocketType, trio.socket.SocketType, int]:
    """Listeners on ::1 and 127.0.0.1 with the same port (a few tries if it is taken)."""
    for _ in range(20):
        v6 = trio.socket.socket(socket.AF_INET6)
        await v6.bind(("::1", 0))
        port = v6.getsockname()[1]
        v4 = trio.socket.socket(socket.AF_INET)
        try:
            await v4.bind(("127.0.0.1", port))
        except OSError:
            v4.close()
            v6.close()
            continue
        v6.listen()
        v4.listen()
        return v6, v4, port
    raise AssertionError("no port free on both ::1 and 127.0.0.1")


@pytest.mark.parametrize(
    ("refused", "winner"), [(socket.AF_INET6, "127.0.0.1"), (socket.AF_INET, "::1")]
)
async def test_over_real_loopback_the_other_family_wins_and_no_fd_leaks(
    refused: int, winner: str
) -> None:
    v6, v4, port = await _dual_loopback_listeners()
    with v6, v4:
        gc.collect()
        before = open_fd_count()
        async with installed_fake() as fake:
            fake.add("both.test", "::1", "127.0.0.1")
            # The refused family is tried first: IPv4 goes first when IPv6
            # answers 200 ms later and IPv4 does not wait for it.
            fake.delays[socket.AF_INET6] = 0.2 if refused == socket.AF_INET else 0.0
            with refusing(refused) as factory, trio.fail_after(10):
                async with await connect_tcp(
                    "both.test", port, resolution_delay=0, resolver=Resolver()
                ) as conn:
                    assert conn.peer.host == winner
        gc.collect()
        assert open_fd_count() == before
        assert factory.refusals == 1


async def test_the_winning_socket_is_closed_when_wrapping_it_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_stream(sock: trio.socket.SocketType) -> trio.SocketStream:
        raise OSError(errno.ENOPROTOOPT, "setsockopt(TCP_NODELAY) failed")

    listener = trio.socket.socket(socket.AF_INET)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        gc.collect()
        before = open_fd_count()
        monkeypatch.setattr(trio, "SocketStream", broken_stream)
        with pytest.raises(OSError, match="TCP_NODELAY"), trio.fail_after(10):
            await connect_tcp("127.0.0.1", port)
        monkeypatch.undo()
        gc.collect()
        assert open_fd_count() == before


async def test_the_connection_is_closed_when_making_its_channel_raises() -> None:
    listener = trio.socket.socket(socket.AF_INET)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        gc.collect()
        before = open_fd_count()
        with pytest.raises(AttributeError), trio.fail_after(10):
            await connect_tcp("127.0.0.1", port, codec="lines")  # type: ignore[arg-type]
        gc.collect()
        assert open_fd_count() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_BIND_ADDRESS_NO_PORT is Linux's")
async def test_local_address_leaves_the_port_to_connect() -> None:
    listener = trio.socket.socket(socket.AF_INET)
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(10):
            async with await connect_tcp("127.0.0.1", port, local="127.0.0.1") as conn:
                assert conn.socket.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT) == 1
                assert conn.local.host == "127.0.0.1"


# ------------------------------------------------------------- issue 12 item 4, 14 item 9: messages


async def test_a_refused_attempt_names_its_address_once(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("example.test", V4)
    with pytest.raises(ConnectError) as info:
        await connect_tcp("example.test", 80, resolver=Resolver())
    message = str(info.value)
    assert message.count(V4) == 1, message
    assert f"{V4}:80: Connection refused (ECONNREFUSED)" in message


async def test_a_resolution_error_says_cannot_resolve_once_ipv6_first(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    # Each family fails in its own way; IPv4 answers first half the time.
    for ipv4_first in (True, False):
        net.set_dns("empty.test", ipv4_delay=0.0 if ipv4_first else 0.01, ipv6_delay=0.005)
        with pytest.raises(ResolutionError) as info:
            await connect_tcp("empty.test", 80, resolver=Resolver())
        message = str(info.value)
        assert message.count("cannot resolve") == 1, message
        assert message.index("IPv6:") < message.index("IPv4:"), message
        assert message.startswith("cannot resolve 'empty.test' port 80: IPv6: ")


async def test_a_local_address_that_rules_out_every_address_says_so(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    net.set_dns("v4only.test", V4)
    with pytest.raises(ConnectError) as info:
        await connect_tcp("v4only.test", 80, local="::", resolver=Resolver())
    message = str(info.value)
    assert "local='::' is IPv6, which rules out every address found" in message, message
    assert f"IPv4: {V4}:80" in message
    assert info.value.attempts == ()


async def test_a_failed_tls_handshake_says_why(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            async with stream:
                await stream.do_handshake()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_ssl_over_tcp, serve, 0, server_context)  # type: ignore[arg-type]
        port = listeners[0].transport_listener.socket.getsockname()[1]
        with pytest.raises(trio.BrokenResourceError) as info, trio.fail_after(10):
            await connect_tcp("127.0.0.1", port, ssl_context=client_context, server_hostname="wrong.example")
        message = str(info.value)
        assert message.startswith(f"TLS handshake with 127.0.0.1:{port} failed: certificate verify failed")
        assert "wrong.example" in message  # the reason names the mismatched host
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        nursery.cancel_scope.cancel()
