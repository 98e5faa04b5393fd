"""serve_tcp unchanged on the virtual network: exact timings with link latency, dead peers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trionet import Address, EventLog, Lines, MessageChannel, TCPConnection, open_tcp_server
from trionet.testing import VirtualNetwork

LATENCY = 0.010
pytestmark = pytest.mark.net(latency=LATENCY)


async def echo(conn: TCPConnection) -> None:
    async for line in conn.channel:
        await conn.channel.send(line)


async def test_a_dual_stack_server_is_reached_over_both_virtual_families(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    peers: list[Address] = []

    async def record(conn: TCPConnection) -> None:
        peers.append(conn.peer)
        await echo(conn)

    with net.host("server"):
        async with open_tcp_server(record, 7, codec=Lines()) as server:
            assert {str(a) for a in server.addresses} == {"[::]:7", "0.0.0.0:7"}
            with net.host("client"):
                for host in ("10.0.0.1", "fd00::1"):
                    stream = await trio.open_tcp_stream(host, 7)
                    async with MessageChannel(stream, Lines()) as channel:
                        begin = trio.current_time()
                        await channel.send(b"ping")
                        assert await channel.receive() == b"ping"
                        assert trio.current_time() - begin == pytest.approx(2 * LATENCY)
    assert [peer.host for peer in peers] == ["10.0.0.2", "fd00::2"]


async def test_idle_timeout_counts_from_the_last_byte_the_server_saw_or_sent(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    with net.host("server"):
        async with open_tcp_server(echo, 7, codec=Lines(), idle_timeout=5) as server:
            with net.host("client"):
                stream = await trio.open_tcp_stream("10.0.0.1", 7)
                async with MessageChannel(stream, Lines()) as channel:
                    await channel.send(b"ping")
                    assert await channel.receive() == b"ping"
                    echoed_at = trio.current_time()  # the server sent it LATENCY ago
                    with pytest.raises(trio.EndOfChannel):
                        await channel.receive()
                    # Shed 5 s after the server's last byte; its FIN takes LATENCY too.
                    assert trio.current_time() - echoed_at == pytest.approx(5)
            assert server.statistics().connections_shed == 1


async def test_a_peer_cut_off_by_a_partition_is_shed_by_the_idle_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog(kinds=("tcp.shed",))
    with net.host("server"):
        async with open_tcp_server(
            echo, 7, codec=Lines(), idle_timeout=30, observer=log
        ) as server:
            with net.host("client"):
                stream = await trio.open_tcp_stream("fd00::1", 7)
                channel = MessageChannel(stream, Lines())
                await channel.send(b"hello")
                assert await channel.receive() == b"hello"
            net.partition(["client"], ["server"])  # the client vanishes without a FIN
            begin = trio.current_time()
            with trio.fail_after(60):
                while not log.events:
                    await trio.sleep(1)
            assert log.events[0].time - begin == pytest.approx(30 - LATENCY)
            assert server.connection_count == 0
            await trio.aclose_forcefully(channel)
