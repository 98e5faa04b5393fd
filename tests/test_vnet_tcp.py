"""Virtual TCP: trio's own helpers run on it; streams, buffers, cancellation, failures."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
import trio
import trio.testing

from trionet.testing import VirtualNetwork, VirtualSocket

LATENCY = 0.010
pytestmark = pytest.mark.net(latency=LATENCY)


async def socket_pair(
    net: VirtualNetwork, port: int = 7, family: int = socket.AF_INET
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """(client socket, accepted server socket), connected over the virtual network."""
    with net.host("server"):
        listener = trio.socket.socket(family)
        await listener.bind(("", port))
        listener.listen()
    with net.host("client"):
        client = trio.socket.socket(family)
        await client.connect(("server", port))
    server, _ = await listener.accept()
    listener.close()
    return client, server


async def fill(sock: trio.socket.SocketType) -> int:
    """Send until the buffers are full and stay full; return the bytes accepted."""
    total = 0
    for _round in range(100):  # finite buffers fill in a few rounds
        accepted = 0
        for _ in range(1000):
            try:
                accepted += await sock.send(b"a" * 65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
        total += accepted
        if not accepted:
            return total
        await trio.sleep(1)
    raise AssertionError(f"the send buffers never filled ({total} bytes accepted)")


async def echo(stream: trio.SocketStream) -> None:
    async for data in stream:
        await stream.send_all(data)


# ---- trio's high-level helpers ------------------------------------------------


async def test_trio_serve_tcp_and_open_tcp_stream_exchange_data(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, no_fd_leak: None
) -> None:
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            listeners = await nursery.start(trio.serve_tcp, echo, 7)
        assert {listener.socket.family for listener in listeners} == {
            socket.AF_INET,
            socket.AF_INET6,
        }
        with net.host("client"):
            start = trio.current_time()
            stream = await trio.open_tcp_stream("server", 7)
            assert trio.current_time() - start == pytest.approx(2 * LATENCY)
            async with stream:
                await stream.send_all(b"hello, virtual world")
                assert await stream.receive_some() == b"hello, virtual world"
                assert trio.current_time() - start == pytest.approx(4 * LATENCY)
                assert stream.socket.getpeername() == ("10.0.0.1", 7)
        nursery.cancel_scope.cancel()


async def test_handler_tasks_act_as_the_server_host(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    seen: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        assert isinstance(stream.socket, VirtualSocket)
        seen.append(stream.socket.host.name)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(trio.serve_tcp, handler, 7)
        with net.host("client"):
            stream = await trio.open_tcp_stream("10.0.0.1", 7)
            assert await stream.receive_some() == b""
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert seen == ["server"]


async def test_socket_stream_passes_trios_half_closeable_stream_checks(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        client, server = await socket_pair(net)
        return trio.SocketStream(client), trio.SocketStream(server)

    async def clogged_stream_maker() -> tuple[trio.SocketStream, trio.SocketStream]:
        client, server = await stream_maker()
        await fill(client.socket)
        await fill(server.socket)
        return client, server

    await trio.testing.check_half_closeable_stream(stream_maker, clogged_stream_maker)


async def test_refused_where_nothing_listens(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        sock = trio.socket.socket()
        start = trio.current_time()
        with pytest.raises(ConnectionRefusedError, match=r"10\.0\.0\.1:9"):
            await sock.connect(("10.0.0.1", 9))
        assert trio.current_time() - start == pytest.approx(2 * LATENCY)
        sock.close()
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("server", 9)
    assert [e.event for e in net.trace].count("tcp.refused") == 3
    assert net.statistics().sockets == 0


# ---- data transfer ----------------------------------------------------------------


async def test_send_accepts_only_what_fits_in_the_buffers(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == net.tcp_buffer_size
    # The peer's window and our send buffer: together 2 buffers' worth, then nothing.
    sent = await client.send(b"a" * 200_000)
    assert sent == net.tcp_buffer_size
    await trio.sleep(1)
    sent += await client.send(b"a" * 200_000)
    assert sent == 2 * net.tcp_buffer_size
    with pytest.raises(BlockingIOError):
        await client.send(b"a", socket.MSG_DONTWAIT)
    received = 0
    while received < sent:
        received += len(await server.recv(100_000))
    assert received == sent


async def test_cancelled_send_accepts_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    accepted = await fill(client)
    assert accepted == 2 * net.tcp_buffer_size
    with trio.move_on_after(5) as scope:
        await client.send(b"b" * 10)
    assert scope.cancelled_caught
    client.shutdown(socket.SHUT_WR)
    data = bytearray()
    while chunk := await server.recv(65536):
        data += chunk
    assert data == b"a" * accepted


async def test_cancelled_recv_consumes_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    with trio.move_on_after(1) as scope:
        await server.recv(10)
    assert scope.cancelled_caught
    await client.send(b"abc")
    assert await server.recv(10, socket.MSG_PEEK) == b"abc"
    assert await server.recv(2) == b"ab"
    assert await server.recv(10) == b"c"


async def test_every_socket_call_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    await client.send(b"x")
    await trio.sleep(1)
    with trio.testing.assert_checkpoints():
        await server.recv(1)
    with trio.testing.assert_checkpoints():
        await client.send(b"y")
    with trio.testing.assert_checkpoints():
        await client.wait_writable()
    with net.host("client"), trio.testing.assert_checkpoints():
        await trio.socket.socket().bind(("", 0))


async def test_data_arrives_after_the_link_latency_in_order(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, jitter=0.005)
    client, server = await socket_pair(net)
    start = trio.current_time()
    for i in range(50):
        await client.send(b"%03d" % i)
    data = b""
    while len(data) < 150:
        data += await server.recv(1000)
    assert data == b"".join(b"%03d" % i for i in range(50))
    assert LATENCY <= trio.current_time() - start <= LATENCY + 0.005


async def test_bandwidth_limits_throughput(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=0.0, bandwidth=100_000)
    client, server = await socket_pair(net)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.SocketStream(client).send_all, b"z" * 500_000)
        received = 0
        while received < 500_000:
            received += len(await server.recv(65536))
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_loss_on_a_tcp_link_delays_but_never_corrupts(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, loss=0.3)
    client, server = await socket_pair(net)
    payload = bytes(range(256)) * 4000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.SocketStream(client).send_all, payload)
        data = bytearray()
        while len(data) < len(payload):
            data += await server.recv(65536)
    assert data == payload


# ---- endings ------------------------------------------------------------------------


async def test_half_close_lets_the_peer_answer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    await client.send(b"request")
    client.shutdown(socket.SHUT_WR)
    assert client.did_shutdown_SHUT_WR
    with pytest.raises(BrokenPipeError):
        await client.send(b"more")
    assert await server.recv(100) == b"request"
    assert await server.recv(100) == b""
    await server.send(b"reply")
    server.close()
    assert await client.recv(100) == b"reply"
    assert await client.recv(100) == b""


async def test_close_with_unread_data_resets_the_peer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    await client.send(b"unread")
    await trio.sleep(1)
    server.close()
    await trio.sleep(1)
    with pytest.raises(ConnectionResetError, match="unread data"):
        await client.recv(10)
    with pytest.raises(BrokenPipeError):
        await client.send(b"x")


async def test_so_linger_zero_makes_close_reset(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()
    with pytest.raises(ConnectionResetError):
        await client.recv(10)


async def test_closing_a_socket_wakes_its_blocked_reader(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    _client, server = await socket_pair(net)
    async with trio.open_nursery() as nursery:

        async def reader() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await server.recv(10)

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        server.close()
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        await server.recv(10)
    assert info.value.errno == errno.EBADF
    assert server.fileno() == -1


async def test_two_readers_on_one_socket_are_busy(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    _client, server = await socket_pair(net)
    with pytest.RaisesGroup(trio.BusyResourceError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.recv, 1)
            await trio.testing.wait_all_tasks_blocked()
            await server.recv(1)


# ---- listening ----------------------------------------------------------------------


async def test_full_backlog_delays_the_handshake_until_accept(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        listener = trio.socket.socket()
        await listener.bind(("10.0.0.1", 80))
        listener.listen(0)  # room for backlog + 1 = 1 connection, as on Linux
    done: list[float] = []

    async def connect() -> None:
        with net.host("client"):
            sock = trio.socket.socket()
            await sock.connect(("10.0.0.1", 80))
            done.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connect)
        nursery.start_soon(connect)
        await trio.sleep(5)
        assert done == [pytest.approx(2 * LATENCY)]
        await listener.accept()
    assert done[1] == pytest.approx(5 + LATENCY)
    assert "tcp.backlog" in [e.event for e in net.trace]


async def test_cancelled_accept_takes_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        listener = trio.socket.socket()
        await listener.bind(("", 80))
        listener.listen()
    with trio.move_on_after(1):
        await listener.accept()
    with net.host("client"):
        client = trio.socket.socket()
        await client.connect(("10.0.0.1", 80))
    conn, address = await listener.accept()
    assert address == client.getsockname() == ("10.0.0.2", 49152)
    assert conn.getsockname() == ("10.0.0.1", 80)


async def test_address_in_use_and_not_available(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        first = trio.socket.socket()
        await first.bind(("", 80))
        second = trio.socket.socket()
        with pytest.raises(OSError, match="Address already in use") as info:
            await second.bind(("10.0.0.1", 80))
        assert info.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError, match="not an address of host 'server'") as info:
            await second.bind(("10.0.0.2", 80))
        assert info.value.errno == errno.EADDRNOTAVAIL
        await second.bind(("127.0.0.1", 81))
        assert second.getsockname() == ("127.0.0.1", 81)


# ---- hanging, partitions, crashes ------------------------------------------------------


async def test_connect_to_a_blackhole_hangs_until_the_callers_timeout(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.blackhole("10.0.0.1")
    with net.host("client"):
        sock = trio.socket.socket()
        with trio.move_on_after(30) as scope:
            await sock.connect(("10.0.0.1", 7))
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(30)
    assert sock.fileno() == -1  # a cancelled connect closes the socket, as trio's does
    assert net.statistics().sockets == 0


async def test_connect_gives_up_after_the_connect_timeout(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.tcp_connect_timeout = 3.0
    with net.host("client"):
        sock = trio.socket.socket()
        with pytest.raises(TimeoutError, match=r"no answer within 3\.0 s"):
            await sock.connect(("10.9.9.9", 7))  # an address no host owns
    assert trio.current_time() == pytest.approx(3.0)


async def test_partition_stalls_a_transfer_and_healing_resumes_it(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    payload = b"p" * 1_000_000
    finished: list[float] = []

    async def send() -> None:
        await trio.SocketStream(client).send_all(payload)
        finished.append(trio.current_time())

    received = bytearray()

    async def receive() -> None:
        while len(received) < len(payload):
            received.extend(await server.recv(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(receive)
        await trio.sleep(0.1)
        net.partition("client", "server")
        assert net.is_partitioned("server", "client")
        await trio.sleep(0.1)  # what was in flight lands
        stalled_at = len(received)
        assert 0 < stalled_at < len(payload)
        await trio.sleep(60)
        assert len(received) == stalled_at
        assert not finished
        net.heal()
    assert received == payload
    assert finished[0] > 60.2
    events = [e.event for e in net.trace]
    assert {"net.partition", "tcp.stall", "net.heal", "tcp.resume"} <= set(events)


async def test_partition_outlasting_the_user_timeout_resets_the_connection(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.tcp_user_timeout = 10.0
    client, server = await socket_pair(net)
    net.partition("client", "server")
    start = trio.current_time()
    stream = trio.SocketStream(client)
    await fill(client)
    with pytest.raises(trio.BrokenResourceError) as info:
        await stream.send_all(b"d")
    assert isinstance(info.value.__cause__, TimeoutError)
    assert trio.current_time() - start == pytest.approx(10.0)
    net.heal()
    with pytest.raises(ConnectionResetError, match="timed out"):
        await server.recv(10)


async def test_crashing_a_host_resets_its_peers_connections(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(trio.serve_tcp, echo, 7)
        with net.host("client"):
            stream = await trio.open_tcp_stream("server", 7)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            crashed_at = trio.current_time()
            net.crash("server")
            with pytest.raises(trio.BrokenResourceError) as info:
                await stream.receive_some()
            cause = info.value.__cause__
            assert isinstance(cause, ConnectionResetError)
            assert "host 'server' crashed" in str(cause)
            assert trio.current_time() - crashed_at == pytest.approx(LATENCY)
            # The crashed server no longer listens; a restarted one could.
            with pytest.raises(OSError, match="all attempts"):
                await trio.open_tcp_stream("server", 7)
        nursery.cancel_scope.cancel()
    assert net.statistics().resets == 1


async def test_a_connect_cancelled_after_its_syn_left_resets_the_queued_connection(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        listener = trio.socket.socket()
        await listener.bind(("", 80))
        listener.listen()
    with net.host("client"):
        client = trio.socket.socket()
        with trio.move_on_after(LATENCY * 1.5):  # the SYN arrived, the SYN-ACK did not
            await client.connect(("10.0.0.1", 80))
    assert client.fileno() == -1
    conn, _ = await listener.accept()
    with pytest.raises(ConnectionResetError, match="gave up"):
        await conn.recv(10)
