"""trionet's pytest plugin (pytest11 entry point): the fixtures as a user's tests use them."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import trio

import trionet
from trionet.testing import VirtualNetwork
from trionet.testing.pytest_plugin import StartServer


async def echo(conn: trionet.TCPConnection) -> None:
    async for line in conn.channel:
        await conn.channel.send(line)


def test_the_plugin_is_registered_for_pytest() -> None:
    (plugin,) = [point for point in entry_points(group="pytest11") if point.name == "trionet"]
    assert plugin.value == "trionet.testing.pytest_plugin"


# The whole of a user's test: five lines with the plugin's fixture.
async def test_echo(virtual_server: StartServer) -> None:
    await virtual_server(trionet.serve_tcp, echo, 7, codec=trionet.Lines())
    async with await trionet.connect_tcp("server.test", 7, codec=trionet.Lines()) as conn:
        await conn.channel.send(b"hi")
        assert await conn.channel.receive() == b"hi"


async def test_the_network_runs_on_the_autojump_clock_with_the_marked_link(
    virtual_server: StartServer, virtual_network: VirtualNetwork
) -> None:
    server = await virtual_server(trionet.serve_tcp, echo, 7, codec=trionet.Lines())
    assert server.port == 7
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    assert virtual_network.link_config("client", "server").latency == 0  # unmarked: perfect
    began = trio.current_time()
    await trio.sleep(3600)  # an hour, at once
    assert trio.current_time() - began == 3600


@pytest.mark.virtual_network(latency=0.010, seed=5)
async def test_the_marker_sets_the_link_and_the_seed(
    virtual_server: StartServer, virtual_network: VirtualNetwork
) -> None:
    assert virtual_network.seed == 5
    await virtual_server(trionet.serve_tcp, echo, 7, codec=trionet.Lines())
    async with await trionet.connect_tcp("10.0.0.1", 7, codec=trionet.Lines()) as conn:
        began = trio.current_time()
        await conn.channel.send(b"ping")
        assert await conn.channel.receive() == b"ping"
        assert trio.current_time() - began == pytest.approx(0.020)  # one round trip, exactly


async def test_a_udp_server_too(virtual_server: StartServer) -> None:
    async def square(datagram: trionet.Datagram) -> bytes:
        return str(int(datagram.data) ** 2).encode()

    await virtual_server(trionet.serve_udp, square, 53)
    async with trionet.open_udp_endpoint() as client:
        reply = await client.request(b"12", ("10.0.0.1", 53), match=trionet.match_address_only)
    assert reply.data == b"144"
