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
# Linux's buffer sizes, which the network mirrors: a connected socket's send
# buffer (tcp_wmem[2]) and a new receive buffer (tcp_rmem[1]).
SNDBUF = 4 * 1024 * 1024
RCVBUF = 128 * 1024
pytestmark = pytest.mark.net(latency=LATENCY)


async def socket_pair(
    net: VirtualNetwork, port: int = 7, family: int = socket.AF_INET
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """(client socket, accepted server socket), connected over the virtual network."""
    with net.host("server"):
        listener = trio.socket.socket(family)
        # As every server does (trio's open_tcp_listeners too): the port may
        # still hold connections in TIME_WAIT from an earlier pair.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await listener.bind(("", port))
        listener.listen()
    with net.host("client"):
        client = trio.socket.socket(family)
        await client.connect(("server", port))
    server, _ = await listener.accept()
    listener.close()
    return client, server


async def listening(net: VirtualNetwork, port: int) -> trio.socket.SocketType:
    """A socket listening on host ``server``'s every address at ``port``."""
    with net.host("server"):
        listener = trio.socket.socket()
        await listener.bind(("", port))
        listener.listen()
    return listener


async def fill(sock: trio.socket.SocketType, *, patience: float = 1.0) -> int:
    """Send until the buffers are full and stay full; return the bytes accepted.

    "Full" is a send that waits ``patience`` seconds without being accepted, as
    one would tell on a real trio socket: there ``MSG_DONTWAIT`` does not raise
    (trio waits on ``EAGAIN``), so the cancel scope is the way to stop waiting.
    """
    total = 0
    for _ in range(10_000):  # finite buffers fill in at most a few hundred sends
        with trio.move_on_after(patience) as scope:
            total += await sock.send(b"a" * 65536)
        if scope.cancelled_caught:
            return total
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
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == SNDBUF
    assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == RCVBUF
    # Our send buffer and the peer's window: together SNDBUF + RCVBUF, then nothing.
    sent = await client.send(b"a" * 5_000_000)
    assert sent == SNDBUF
    await trio.sleep(1)
    sent += await client.send(b"a" * 5_000_000)
    assert sent == SNDBUF + RCVBUF
    with trio.move_on_after(1) as scope:
        await client.send(b"a")
    assert scope.cancelled_caught
    received = 0
    while received < sent:
        received += len(await server.recv(100_000))
    assert received == sent


async def test_a_reader_that_keeps_up_grows_its_receive_buffer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.SocketStream(client).send_all, b"g" * 20_000_000)
        largest = received = 0
        while received < 20_000_000:
            chunk = len(await server.recv(1 << 30))
            largest, received = max(largest, chunk), received + chunk
    assert largest > RCVBUF
    assert RCVBUF < server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 32 * 1024 * 1024


async def test_setsockopt_doubles_a_buffer_size_and_stops_its_autotuning(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("server"):
        listener = trio.socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 10_000)
        await listener.bind(("", 7))
        listener.listen()
    with net.host("client"):
        client = trio.socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 10_000)
        await client.connect(("server", 7))
    server, _ = await listener.accept()
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 20_000  # not grown on connect
    assert server.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 20_000  # inherited from the listener
    assert await fill(client) == 40_000
    for sock in (listener, client, server):
        sock.close()


async def test_msg_dontwait_waits_as_on_a_trio_socket(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # trio retries a call that fails with EAGAIN once the socket is ready, so
    # the flag makes no call fail (tests/test_vnet_differential_tcp.py checks
    # it against real sockets).
    client, server = await socket_pair(net)
    with trio.move_on_after(1) as scope:
        await server.recv(10, socket.MSG_DONTWAIT)
    assert scope.cancelled_caught
    accepted = await fill(client)
    with trio.move_on_after(1) as scope:
        await client.send(b"b", socket.MSG_DONTWAIT)
    assert scope.cancelled_caught
    assert await server.recv(10, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"aaaaaaaaaa"
    received = 0
    while received < accepted:
        received += len(await server.recv(1 << 20, socket.MSG_DONTWAIT))
    assert received == accepted


async def test_cancelled_send_accepts_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    accepted = await fill(client)
    assert accepted == SNDBUF + RCVBUF
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


async def test_full_backlog_drops_the_syn_until_a_retransmission_after_accept(
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
        await trio.sleep(4.5)
        assert done == [pytest.approx(2 * LATENCY)]
        await listener.accept()  # room now; the SYN resent 5 s after connect() gets in
    assert done[1] == pytest.approx(5 + 2 * LATENCY)
    events = [e.event for e in net.trace]
    assert events.count("tcp.backlog") == 5  # the SYN and its retransmissions at 1, 2, 3, 4 s
    assert events.count("tcp.retransmit") == 5


async def test_syn_retransmission_schedule_is_configurable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(tcp_syn_retransmits=[0.5, 10])
    net.add_host("server", "10.0.0.1")
    with net.install(default_host="server"):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 80))
        listener.listen(0)
        first, second = trio.socket.socket(), trio.socket.socket()
        await first.connect(("127.0.0.1", 80))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(second.connect, ("127.0.0.1", 80))
            await trio.sleep(0.7)  # after the first retransmission
            conn, _ = await listener.accept()
        assert trio.current_time() == pytest.approx(10)
        for sock in (listener, first, second, conn):
            sock.close()
    with pytest.raises(ValueError, match="increasing"):
        VirtualNetwork(tcp_syn_retransmits=[2, 1])


async def test_cancelled_accept_takes_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    listener = await listening(net, 80)
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
    # 4 s for a payload larger than the buffers (so send_all waits for the peer).
    net.link("client", "server", latency=LATENCY, bandwidth=2_000_000)
    client, server = await socket_pair(net)
    payload = b"p" * 8_000_000
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
        await trio.sleep(1)  # what was in flight lands
        stalled_at = len(received)
        assert 0 < stalled_at < len(payload)
        await trio.sleep(60)
        assert len(received) == stalled_at
        assert not finished
        net.heal()
    assert received == payload
    assert finished[0] > 61.1
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


async def test_a_process_exit_sends_pending_data_then_fin_and_stops_its_listeners(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, bandwidth=1_000_000)
    listener = await listening(net, 80)
    with net.host("client"):
        client = trio.socket.socket()
        await client.connect(("10.0.0.1", 80))
        queued = trio.socket.socket()
        await queued.connect(("10.0.0.1", 80))  # never accepted
    server, _ = await listener.accept()
    sent = await server.send(b"d" * 3_000_000)  # 3 s on the wire
    assert sent == 3_000_000
    net.exit_process("server")
    assert [e.event for e in net.trace].count("net.exit") == 1
    with pytest.raises(ConnectionResetError, match="listener closed"):
        await queued.recv(10)
    data = bytearray()
    while chunk := await client.recv(1 << 20):
        data += chunk
    assert data == b"d" * sent  # everything, then a clean end of stream
    assert trio.current_time() > 3
    with net.host("client"), trio.socket.socket() as late, pytest.raises(ConnectionRefusedError):
        await late.connect(("10.0.0.1", 80))
    # The exited code never runs again: its calls wait until it is closed.
    with trio.move_on_after(1) as scope:
        await server.recv(10)
    assert scope.cancelled_caught
    for sock in (listener, server, client, queued):
        sock.close()
    assert net.statistics().sockets == 0


async def test_synchronous_calls_run_the_events_due_during_a_sleep(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    await server.send(b"unread")
    await trio.sleep(1)
    client.close()  # RST
    await trio.sleep(1)  # it arrived; nothing ran the network since
    with pytest.raises(OSError, match="not connected") as info:
        server.getpeername()
    assert info.value.errno == errno.ENOTCONN
    assert server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


async def test_a_connect_cancelled_after_its_syn_left_resets_the_queued_connection(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    listener = await listening(net, 80)
    with net.host("client"):
        client = trio.socket.socket()
        with trio.move_on_after(LATENCY * 1.5):  # the SYN arrived, the SYN-ACK did not
            await client.connect(("10.0.0.1", 80))
    assert client.fileno() == -1
    conn, _ = await listener.accept()
    with pytest.raises(ConnectionResetError, match="gave up"):
        await conn.recv(10)


async def test_so_reuseport_listeners_share_the_connections_by_flow(net: VirtualNetwork) -> None:
    # Linux hashes each connection's 4-tuple to one listener of the group.
    with net.host("server"):
        listeners = [trio.socket.socket() for _ in range(2)]
        for listener in listeners:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            await listener.bind(("", 80))
            listener.listen()
    clients = []
    with net.host("client"):
        for _ in range(20):
            client = trio.socket.socket()
            await client.connect(("server", 80))
            clients.append(client)
    accepted = []
    for listener in listeners:
        count = 0
        while True:
            with trio.move_on_after(1):
                conn, _ = await listener.accept()
                conn.close()
                count += 1
                continue
            break
        accepted.append(count)
        listener.close()
    for client in clients:
        client.close()
    assert sum(accepted) == 20
    assert min(accepted) > 0  # both took some


# ---- who keeps time -------------------------------------------------------------------


@pytest.mark.net(latency=1.0)
async def test_a_cancelled_waiter_hands_the_networks_clock_to_the_others(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Only the first task to park waits for the next event's time (the network's
    # timekeeper); the others wait for a state change. If the timekeeper is
    # cancelled, another must take over, or the data due at t=1 never arrives.
    first_client, first_server = await socket_pair(net, 7)
    second_client, second_server = await socket_pair(net, 8)
    with first_client, first_server, second_client, second_server:
        start = trio.current_time()
        await second_client.send(b"due in 1 s")
        received: list[tuple[bytes, float]] = []

        async def keeps_time_then_is_cancelled() -> None:
            with trio.move_on_after(0.5):
                await first_server.recv(10)

        async def waits_for_data() -> None:
            received.append((await second_server.recv(100), trio.current_time() - start))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keeps_time_then_is_cancelled)
                await trio.testing.wait_all_tasks_blocked()  # parked first: the timekeeper
                nursery.start_soon(waits_for_data)
        [(data, took)] = received
        assert data == b"due in 1 s"
        assert took == pytest.approx(1.0)


@pytest.mark.net(latency=0.001)
async def test_traffic_on_one_connection_wakes_no_task_waiting_on_another(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # A segment's arrival changes one socket: only the tasks waiting on that
    # socket are woken (waking every waiting task made n idle connections cost
    # O(n) per segment: 186 ms per round trip beside 3,000 idle ones; here all
    # 20 idle tasks took steps).
    idle_pairs = [await socket_pair(net, 7) for _ in range(20)]
    busy_client, busy_server = await socket_pair(net, 7)
    idle_tasks: set[trio.lowlevel.Task] = set()
    steps: list[trio.lowlevel.Task] = []

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task in idle_tasks:
                steps.append(task)

    async def wait_idle(sock: trio.socket.SocketType) -> None:
        idle_tasks.add(trio.lowlevel.current_task())
        await sock.recv(10)

    try:
        async with trio.open_nursery() as nursery:
            for _, server in idle_pairs:
                nursery.start_soon(wait_idle, server)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.add_instrument(CountSteps())
            for _ in range(50):
                await busy_client.send(b"ping")
                assert await busy_server.recv(10) == b"ping"
                await busy_server.send(b"pong")
                assert await busy_client.recv(10) == b"pong"
            # One idle task may be the network's timekeeper (it runs the events
            # when they are due); no other idle task takes a step.
            assert len(set(steps)) <= 1
            nursery.cancel_scope.cancel()
    finally:
        for pair in [*idle_pairs, (busy_client, busy_server)]:
            for sock in pair:
                sock.close()
