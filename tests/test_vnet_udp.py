"""Virtual UDP: loss, duplication, reordering, delay, size limits, ICMP refusal."""

from __future__ import annotations

import errno
import socket

import pytest
import trio
import trio.testing

from trionet.testing import VirtualNetwork
from trionet.testing._vudp import linux_truesize

LATENCY = 0.010
pytestmark = pytest.mark.net(latency=LATENCY)


async def endpoints(
    net: VirtualNetwork, family: int = socket.AF_INET
) -> tuple[trio.socket.SocketType, trio.socket.SocketType, tuple[object, ...]]:
    """(client socket, server socket bound to port 53, the server's address)."""
    with net.host("server"):
        server = trio.socket.socket(family, socket.SOCK_DGRAM)
        await server.bind(("", 53))
    with net.host("client"):
        client = trio.socket.socket(family, socket.SOCK_DGRAM)
    address = ("fd00::1", 53, 0, 0) if family == socket.AF_INET6 else ("10.0.0.1", 53)
    return client, server, address


async def drain(sock: trio.socket.SocketType, quiet: float = 1.0) -> list[bytes]:
    """Receive until nothing arrives for ``quiet`` seconds."""
    got: list[bytes] = []
    while True:  # bounded: every datagram sent is received at most twice
        with trio.move_on_after(quiet) as scope:
            got.append(await sock.recv(65536))
        if scope.cancelled_caught:
            return got


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
async def test_datagrams_arrive_after_the_link_latency(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, family: int
) -> None:
    client, server, address = await endpoints(net, family)
    start = trio.current_time()
    assert await client.sendto(b"query", address) == 5
    data, source = await server.recvfrom(100)
    assert data == b"query"
    assert trio.current_time() - start == pytest.approx(LATENCY)
    assert source[0] == ("fd00::2" if family == socket.AF_INET6 else "10.0.0.2")
    assert source[1] == client.getsockname()[1] == 49152  # the host's first ephemeral port
    await server.sendto(b"answer", source)
    assert await client.recvfrom(100) == (b"answer", address)


async def test_loss_of_one_fifth_delivers_four_fifths_of_ten_thousand_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, loss=0.2)
    client, server, address = await endpoints(net)
    # Room for 10,000 small datagrams at Linux's 832 bytes each (the largest
    # buffer Linux allows by default: twice net.core.rmem_max).
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    for i in range(10_000):
        await client.sendto(b"%d" % i, address)
    delivered = len(await drain(server))
    assert abs(delivered / 10_000 - 0.8) <= 0.02
    stats = net.statistics()
    assert stats.datagrams_delivered == delivered
    assert stats.datagrams_dropped == 10_000 - delivered


async def test_duplication_delivers_a_datagram_twice(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, duplicate=1.0)
    client, server, address = await endpoints(net)
    await client.sendto(b"once", address)
    assert await drain(server) == [b"once", b"once"]


async def test_reordering_lets_later_datagrams_overtake(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, reorder=0.3)
    client, server, address = await endpoints(net)
    for i in range(100):
        await client.sendto(b"%03d" % i, address)
    got = await drain(server)
    assert sorted(got) == [b"%03d" % i for i in range(100)]
    assert got != sorted(got)


async def test_jitter_spreads_arrivals_within_its_bound(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, jitter=0.050)
    client, server, address = await endpoints(net)
    start = trio.current_time()
    for i in range(50):
        await client.sendto(b"%d" % i, address)
    delays = []
    for _ in range(50):
        await server.recv(10)
        delays.append(trio.current_time() - start)
    assert all(LATENCY <= d <= LATENCY + 0.050 for d in delays)
    assert max(delays) - min(delays) > 0.025


@pytest.mark.parametrize(
    ("family", "limit"), [(socket.AF_INET, 65507), (socket.AF_INET6, 65527)], ids=["ipv4", "ipv6"]
)
async def test_datagrams_over_the_family_limit_fail_with_emsgsize(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, family: int, limit: int
) -> None:
    client, server, address = await endpoints(net, family)
    with pytest.raises(OSError, match="Message too long") as info:
        await client.sendto(b"x" * (limit + 1), address)
    assert info.value.errno == errno.EMSGSIZE
    assert await client.sendto(b"x" * limit, address) == limit
    assert len(await server.recv(70000)) == limit


async def test_a_link_mtu_limits_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", mtu=1500)
    client, _server, address = await endpoints(net)
    assert await client.sendto(b"x" * 1472, address) == 1472  # 1500 - 20 - 8
    with pytest.raises(OSError, match="MTU") as info:
        await client.sendto(b"x" * 1473, address)
    assert info.value.errno == errno.EMSGSIZE


async def test_a_connected_socket_hears_icmp_port_unreachable(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        connected = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await connected.connect(("server", 9))
        unconnected = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await connected.send(b"anyone?")
    await unconnected.sendto(b"anyone?", ("10.0.0.1", 9))
    with pytest.raises(ConnectionRefusedError):
        await connected.recv(10)
    with trio.move_on_after(1) as scope:
        await unconnected.recv(10)
    assert scope.cancelled_caught  # only connected sockets hear of it, as on Linux
    await connected.send(b"reported once")  # the error was consumed
    assert "udp.unreachable" in [e.event for e in net.trace]


async def test_a_connected_socket_ignores_other_senders(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    await client.bind(("", 4000))
    with net.host("server"):
        stranger = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await client.connect(address)
    assert client.getsockname() == ("10.0.0.2", 4000)
    assert client.getpeername() == address
    await stranger.sendto(b"spam", ("10.0.0.2", 4000))
    await server.sendto(b"ham", ("10.0.0.2", 4000))
    assert await drain(client) == [b"ham"]


async def test_short_buffers_truncate_datagrams_and_say_so(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    await client.sendto(b"0123456789", address)
    data, _ancdata, flags, _source = await server.recvmsg(4)
    assert (data, flags & socket.MSG_TRUNC) == (b"0123", socket.MSG_TRUNC)
    await client.sendto(b"abc", address)
    buffer = bytearray(8)
    assert await server.recv_into(buffer) == 3
    assert bytes(buffer[:3]) == b"abc"


async def test_a_full_receive_queue_drops_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    # Linux doubles the value set, and charges a 300-byte datagram 1,280 bytes.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2000)
    assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 4000
    for _ in range(5):
        await client.sendto(b"x" * 300, address)
    assert len(await drain(server)) == 3
    assert [e.note for e in net.trace if e.event == "udp.drop"] == ["receive buffer full"] * 2


async def test_cancelled_recvfrom_consumes_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    with trio.move_on_after(1) as scope:
        await server.recvfrom(10)
    assert scope.cancelled_caught
    await client.sendto(b"kept", address)
    assert (await server.recvfrom(10))[0] == b"kept"


async def test_partitions_and_blackholes_drop_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    net.partition("client", "server")
    await client.sendto(b"cut", address)
    net.heal("client", "server")
    net.blackhole("10.0.0.1")
    await client.sendto(b"void", address)
    net.unblackhole("10.0.0.1")
    await client.sendto(b"through", address)
    assert await drain(server) == [b"through"]
    notes = [e.note for e in net.trace if e.event == "udp.drop"]
    assert notes == ["partition", "blackhole"]


async def test_crashing_a_host_closes_its_udp_ports(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    await client.connect(address)
    net.crash("server")
    await client.send(b"hello?")
    with pytest.raises(ConnectionRefusedError):
        await client.recv(10)
    with trio.move_on_after(1) as scope:
        await server.recv(10)  # a crashed host's sockets never answer
    assert scope.cancelled_caught


async def test_udp_sockets_refuse_stream_calls(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, _server, _address = await endpoints(net)
    with pytest.raises(OSError, match="not supported") as info:
        client.listen(1)
    assert info.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError, match=r"accept\(\) on UDP"):
        await client.accept()
    with pytest.raises(OSError, match="Destination address required") as info:
        await client.send(b"nowhere")
    assert info.value.errno == errno.EDESTADDRREQ


async def test_cancelled_bind_and_connect_change_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, _server, address = await endpoints(net)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.bind(("", 4000))
    assert client.getsockname() == ("0.0.0.0", 0)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.connect(address)
    with pytest.raises(OSError, match="not connected"):
        client.getpeername()


# ---- Linux's accounting, binding and broadcast rules (issue 20) ------------------------------------


def test_truesize_follows_the_kernels_allocation_steps() -> None:
    # Measured on Linux 6.x over loopback (/proc/net/udp's rx_queue after one datagram).
    expected = {
        (socket.AF_INET, 0): 832, (socket.AF_INET, 197): 832, (socket.AF_INET, 198): 1280,
        (socket.AF_INET, 646): 2304, (socket.AF_INET, 1669): 2304, (socket.AF_INET, 1670): 4352,
        (socket.AF_INET, 3718): 8448, (socket.AF_INET, 7814): 16640, (socket.AF_INET, 16004): 16640,
        (socket.AF_INET, 16005): 16837, (socket.AF_INET, 65507): 66339,
        (socket.AF_INET6, 184): 832, (socket.AF_INET6, 185): 1280, (socket.AF_INET6, 15991): 16640,
        (socket.AF_INET6, 15992): 16824, (socket.AF_INET6, 65488): 66320,
        (socket.AF_INET6, 65489): 67144, (socket.AF_INET6, 65527): 67144,
    }
    assert {key: linux_truesize(key[1], key[0]) for key in expected} == expected


@pytest.mark.parametrize(("accounting", "kept"), [("truesize", 256), ("payload", 2129)])
async def test_udp_accounting_chooses_what_a_queued_datagram_costs(
    autojump_clock: trio.testing.MockClock, accounting: str, kept: int
) -> None:
    net = VirtualNetwork(udp_accounting=accounting)
    net.add_host("server", "10.0.0.1")
    with net.install(default_host="server"), \
            trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
            trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        await receiver.bind(("127.0.0.1", 0))
        for _ in range(3000):
            await sender.sendto(b"x" * 100, receiver.getsockname())
        assert len(await drain(receiver)) == kept
    with pytest.raises(ValueError, match="udp_accounting"):
        VirtualNetwork(udp_accounting="bytes")


async def test_so_reuseport_keeps_each_flow_on_one_socket_and_spreads_flows(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        workers = [trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for worker in workers:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            await worker.bind(("", 53))
    with net.host("client"):
        clients = [trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for _ in range(3):
            for n, client in enumerate(clients):
                await client.sendto(b"%d" % n, ("10.0.0.1", 53))
        received = [set(await drain(worker)) for worker in workers]
        per_worker = [[len(await drain(worker))] for worker in workers]
        assert all(received), "both workers got flows"
        assert not received[0] & received[1], "each flow reached one worker only"
        assert len(received[0] | received[1]) == 16
        assert per_worker == [[0], [0]]
    finally:
        for sock in [*workers, *clients]:
            sock.close()


async def test_a_port_in_time_wait_needs_so_reuseaddr_on_both_sockets_for_60_seconds(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        closed = trio.socket.socket()
        closed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await closed.bind(("10.0.0.1", 8080))
        # What TCP reports for a connection this side closed first.
        closed._time_wait_binding = lambda: ("10.0.0.1", 8080)  # type: ignore[attr-defined]
        closed.close()
        with trio.socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
            await plain.bind(("", 8080))
        with trio.socket.socket() as reusing:
            reusing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await reusing.bind(("", 8080))
        await trio.sleep(60)
        with trio.socket.socket() as plain:
            await plain.bind(("", 8080))


async def test_a_broadcast_reaches_wildcard_sockets_on_every_host_unless_sent_from_loopback(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    receivers = {}
    for name in ("server", "client"):
        with net.host(name):
            receivers[name] = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await receivers[name].bind(("", 67))
    with net.host("client"):
        sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        loopback = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(PermissionError):
            await sender.sendto(b"x", ("<broadcast>", 67))
        for sock in (sender, loopback):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        await loopback.bind(("127.0.0.1", 0))
        await loopback.sendto(b"local", ("255.255.255.255", 67))
        await sender.sendto(b"everyone", ("255.255.255.255", 67))
        got = {name: await drain(sock) for name, sock in receivers.items()}
        assert got == {"server": [b"everyone"], "client": [b"local", b"everyone"]}
    finally:
        for sock in [*receivers.values(), sender, loopback]:
            sock.close()


async def test_udp_shutdown_wr_makes_sends_fail_with_epipe(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server, address = await endpoints(net)
    with client, server:
        await client.connect(address)
        client.shutdown(socket.SHUT_WR)
        assert client.did_shutdown_SHUT_WR
        with pytest.raises(BrokenPipeError):
            await client.send(b"x")
        await server.sendto(b"still arrives", client.getsockname())  # SHUT_RD was not asked
        assert await client.recv(100) == b"still arrives"
