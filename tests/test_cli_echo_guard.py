"""The CLI's UDP echo is no reflector, and a server reachable from the network says so (issue 15).

``python -m trionet serve --udp`` answered any source: one datagram forged to
come from the server itself looped for ever, and two echo servers ping-ponged
without end. It now refuses privileged and well-known service source ports and
its own address, rate-limits each source, and warns when it listens beyond
loopback.

Imports private ``trionet._cli.commands`` and ``SourceRateLimit``: the echo guard
and its limits are internal to the CLI.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

from tests.processes import CLI, running
from trionet import Address
from trionet._cli.commands import _ECHO_BURST, _ECHO_RATE, _EchoGuard
from trionet._sansio.ratelimit import SourceRateLimit

TIMEOUT = 30


def port_in(line: str) -> int:
    first = line.removeprefix("listening on ").split()[0].rstrip(",")
    return int(first.rsplit(":", 1)[1])


# --------------------------------------------------------------- the guard alone


@pytest.mark.parametrize("port", [7, 19, 53, 123, 1023, 1900, 3702, 5353, 5683, 11211])
async def test_the_echo_refuses_service_source_ports(port: int) -> None:
    guard = _EchoGuard(9000)
    assert not await guard.admit(Address("192.0.2.1", port))
    assert await guard.admit(Address("192.0.2.1", 40000))


async def test_the_echo_refuses_its_own_address_but_not_a_remote_peer_on_its_port() -> None:
    guard = _EchoGuard(9000)
    assert not await guard.admit(Address("127.0.0.1", 9000))
    assert not await guard.admit(Address("::1", 9000))
    # 192.0.2.0/24 (TEST-NET-1) is never an address of this machine.
    assert await guard.admit(Address("192.0.2.1", 9000))


async def test_each_source_is_echoed_at_most_the_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guard = _EchoGuard(9000)
    start = trio.current_time()
    admitted = 0
    for _ in range(1_000):
        admitted += await guard.admit(Address("192.0.2.1", 40000))
        await trio.sleep(0.001)  # 1,000 datagrams in one virtual second
    elapsed = trio.current_time() - start
    assert admitted <= _ECHO_BURST + _ECHO_RATE * elapsed + 1
    assert admitted >= _ECHO_BURST
    # Another source has a bucket of its own.
    assert await guard.admit(Address("192.0.2.2", 40000))


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


# ------------------------------------------------------ the CLI as users run it


@pytest.mark.skipif(os.geteuid() != 0, reason="forging a source address needs a raw socket (root)")
async def test_a_datagram_forged_from_the_cli_echo_server_itself_is_not_echoed() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--udp", "--host", "127.0.0.1", "--port", "0"]) as server:
            port = port_in(await server.stdout.until("listening on 127.0.0.1:"))
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
            with raw:
                raw.sendto(struct.pack("!HHHH", port, port, 8 + 5, 0) + b"loop\n", ("127.0.0.1", 0))
            line = await server.stdout.next()
            assert "not echoing (this server's own address)" in line, line
            # Still serving others, and it never echoed the forged one: had it
            # looped, it would have refused its own reply, not the forged datagram.
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"hello\n")
                assert await sock.recv(100) == b"hello\n"
            code, lines = await server.stop()
    assert code == 0
    assert sum("not echoing" in line for line in lines) == 1


@pytest.mark.parametrize(("host", "warned"), [(None, True), ("127.0.0.1", False), ("::1", False)])
async def test_serve_warns_on_stderr_when_it_listens_beyond_loopback(
    host: str | None, warned: bool
) -> None:
    where = [] if host is None else ["--host", host]
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--port", "0", *where]) as server:
            await server.stdout.until("listening on ")
            code, _ = await server.stop()
            assert server.process.stderr is not None
            stderr = b""
            while chunk := await server.process.stderr.receive_some():
                stderr += chunk
    assert code == 0
    assert (b"warning: listening beyond loopback" in stderr) is warned, stderr
