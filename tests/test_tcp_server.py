"""serve_tcp and open_tcp_server on loopback: addresses, echo under load, shutdown, errors.

Tests timed on ``autojump_clock`` take ``net``: the same loopback literals, on the
virtual network (a mock clock must not jump while a kernel delivers bytes).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trionet import (
    Address,
    EventLog,
    LengthPrefixed,
    Lines,
    MessageChannel,
    ServerStatistics,
    TCPConnection,
    TCPServer,
    open_tcp_server,
    serve_tcp,
)
from trionet.testing import VirtualNetwork

from .conftest import trionet_records

pytestmark = pytest.mark.net(default_host="client")

LOOPBACKS = ("127.0.0.1", "::1")
# Tests on real sockets use the real clock: a short grace period, and the most a
# loaded machine may add to it.
GRACE = 0.3
SLACK = 5.0


async def echo(conn: TCPConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


async def connect(port: int, host: str = "127.0.0.1", codec: object = None) -> MessageChannel:
    stream = await trio.open_tcp_stream(host, port)
    return MessageChannel(stream, codec if codec is not None else LengthPrefixed())  # type: ignore[arg-type]


async def refused(host: str, port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return True
    await stream.aclose()
    return False


@pytest.fixture
async def echo_server() -> AsyncIterator[TCPServer]:
    async with open_tcp_server(echo, 0, codec=LengthPrefixed()) as server:
        yield server


# ------------------------------------------------------------------ listening


async def test_host_none_listens_on_ipv4_and_ipv6_loopback_on_one_port(
    echo_server: TCPServer,
) -> None:
    assert {a.host for a in echo_server.addresses} == {"::", "0.0.0.0"}
    assert {a.port for a in echo_server.addresses} == {echo_server.port}
    assert echo_server.port != 0
    for host in LOOPBACKS:
        async with await connect(echo_server.port, host) as channel:
            await channel.send(host.encode())
            assert await channel.receive() == host.encode()


async def test_a_literal_host_listens_on_that_address_only() -> None:
    async with open_tcp_server(echo, 0, host="127.0.0.1", codec=LengthPrefixed()) as server:
        assert server.addresses == (Address("127.0.0.1", server.port),)
        async with await connect(server.port) as channel:
            await channel.send(b"x")
            assert await channel.receive() == b"x"
        assert await refused("::1", server.port)


async def test_serve_tcp_with_nursery_start_returns_a_listening_server() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_tcp, echo, 0, codec=Lines()))
        assert isinstance(server, TCPServer)
        async with await connect(server.port, codec=Lines()) as channel:
            await channel.send(b"hello")
            assert await channel.receive() == b"hello"
        await server.shutdown(grace=1)
    assert server.connection_count == 0


async def test_two_hundred_clients_each_get_a_hundred_echoes_in_order(
    echo_server: TCPServer, no_fd_leak: None
) -> None:
    received: dict[int, list[bytes]] = {}

    async def client(number: int) -> None:
        host = LOOPBACKS[number % 2]
        messages = [f"{number}:{i}".encode() * (1 + i % 7) for i in range(100)]
        async with await connect(echo_server.port, host) as channel, trio.open_nursery() as nursery:

            async def send_all() -> None:
                for message in messages:
                    await channel.send(message)

            nursery.start_soon(send_all)
            got = received.setdefault(number, [])
            for _ in messages:
                got.append(await channel.receive())
        assert got == messages

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for number in range(200):
                nursery.start_soon(client, number)
    assert len(received) == 200
    assert all(len(got) == 100 for got in received.values())
    stats = echo_server.statistics()
    assert stats.connections_accepted == 200
    assert stats.handler_errors == 0


# ---------------------------------------------------------- connection object


async def test_connection_reports_normalised_peer_and_local_addresses_and_its_server() -> None:
    seen: list[tuple[Address, Address, object]] = []

    async def record(conn: TCPConnection) -> None:
        seen.append((conn.peer, conn.local, conn.server))
        await conn.stream.send_all(b"ok")

    async with open_tcp_server(record, 0) as server:
        for host in LOOPBACKS:
            stream = await trio.open_tcp_stream(host, server.port)
            async with stream:
                assert await stream.receive_some() == b"ok"
                client_port = stream.socket.getsockname()[1]
            peer, local, owner = seen[-1]
            assert peer == Address(host, client_port)
            assert local == Address(host, server.port)
            assert owner is server


async def test_a_client_side_connection_finds_its_addresses_itself_and_has_no_server(
    echo_server: TCPServer,
) -> None:
    stream = await trio.open_tcp_stream("::1", echo_server.port)
    channel = MessageChannel(stream, LengthPrefixed())
    async with TCPConnection(stream, socket=stream.socket, channel=channel) as conn:
        assert conn.server is None
        assert conn.peer == Address("::1", echo_server.port)
        assert conn.local.host == "::1"
        assert repr(conn) == f"<TCPConnection peer=[::1]:{echo_server.port}>"
        await conn.channel.send(b"mine")
        assert await conn.channel.receive() == b"mine"
    with pytest.raises(trio.ClosedResourceError):
        await channel.send(b"closed with the connection")
    fresh = TCPConnection(stream, socket=stream.socket)
    assert repr(fresh) == "<TCPConnection peer=?>"  # closed before anyone asked


async def test_connection_without_codec_has_no_channel_and_says_why() -> None:
    messages: list[str] = []

    async def handler(conn: TCPConnection) -> None:
        assert not conn.has_channel
        with pytest.raises(RuntimeError, match="no codec was given") as info:
            _ = conn.channel
        messages.append(str(info.value))
        await conn.stream.send_all(b"done")

    async with (
        open_tcp_server(handler, 0, host="127.0.0.1") as server,
        await trio.open_tcp_stream("127.0.0.1", server.port) as stream,
    ):
        assert await stream.receive_some() == b"done"
    assert "codec=" in messages[0]


async def test_handler_need_not_close_its_connection(no_fd_leak: None) -> None:
    async def handler(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"bye")

    async with (
        open_tcp_server(handler, 0, host="127.0.0.1") as server,
        await trio.open_tcp_stream("127.0.0.1", server.port) as stream,
    ):
        assert await stream.receive_some() == b"bye"
        assert await stream.receive_some() == b""  # the server closed it


# ------------------------------------------------------------------- shutdown


async def test_shutdown_lets_in_flight_handlers_finish_and_their_last_replies_arrive(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    started = trio.Event()
    count = 0

    async def slow_reply(conn: TCPConnection) -> None:
        nonlocal count
        request = await conn.channel.receive()
        count += 1
        if count == 5:
            started.set()
        await trio.sleep(3)
        await conn.channel.send(b"reply to " + request)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_tcp, slow_reply, 0, codec=LengthPrefixed())
        )
        replies: list[bytes] = []

        async def client(number: int) -> None:
            async with await connect(server.port, LOOPBACKS[number % 2]) as channel:
                await channel.send(b"%d" % number)
                replies.append(await channel.receive())

        for number in range(5):
            nursery.start_soon(client, number)
        await started.wait()
        begin = trio.current_time()
        await server.shutdown(grace=10)
        assert trio.current_time() - begin == pytest.approx(3)
    assert sorted(replies) == sorted(b"reply to %d" % n for n in range(5))
    assert net.statistics().sockets == 0  # nothing left open


async def test_shutdown_cancels_handlers_still_running_at_the_grace_deadline(no_fd_leak: None) -> None:
    # Real sockets and the real clock: the peer of a handler cancelled at the
    # deadline sees a clean end of stream, a property of the kernel's sockets
    # (the virtual network's cannot be polled, so the server resets them all).
    cancelled = 0
    running = trio.Event()
    log = EventLog()

    async def forever(conn: TCPConnection) -> None:
        nonlocal cancelled
        running.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled += 1
            raise

    with trio.fail_after(GRACE + SLACK):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve_tcp, forever, 0, observer=log))
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await running.wait()
                begin = trio.current_time()
                await server.shutdown(grace=GRACE)
                assert GRACE <= trio.current_time() - begin < GRACE + SLACK
                assert await stream.receive_some() == b""
    assert cancelled == 1
    kinds = [event.kind for event in log if event.kind.startswith("tcp.shutdown")]
    assert kinds == ["tcp.shutdown.begin", "tcp.shutdown.grace_expired", "tcp.shutdown.done"]
    assert log.of_kind("tcp.shutdown.grace_expired")[0].details["cancelled"] == 1


async def test_no_connection_is_accepted_after_shutdown_starts(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    accepted = 0

    async def handler(conn: TCPConnection) -> None:
        nonlocal accepted
        accepted += 1
        await trio.sleep(5)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_tcp, handler, 0))
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with first:
            await trio.testing.wait_all_tasks_blocked()
            server.shutdown_nowait(grace=10)
            assert server.statistics().shutting_down
            assert not server.statistics().accepting
            for host in LOOPBACKS:
                assert await refused(host, server.port)
            assert server.connection_count == 1
    assert accepted == 1


async def test_leaving_open_tcp_server_shuts_down_gracefully_and_leaves_nothing_open(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    finished = False
    runner_nursery = trio.lowlevel.current_task().parent_nursery
    assert runner_nursery is not None
    runner_tasks = len(runner_nursery.child_tasks)  # the test's and its fixtures'

    async def handler(conn: TCPConnection) -> None:
        nonlocal finished
        await conn.channel.receive()
        await trio.sleep(1)
        await conn.channel.send(b"late")
        finished = True

    async with trio.open_nursery() as outer:
        async with open_tcp_server(handler, 0, codec=LengthPrefixed(), shutdown_grace=5) as server:
            channel = await connect(server.port)
            await channel.send(b"go")
            await trio.testing.wait_all_tasks_blocked()

            async def read_late() -> None:
                async with channel:
                    assert await channel.receive() == b"late"

            outer.start_soon(read_late)
        assert finished
        assert server.connection_count == 0
    # Only the test runner's tasks remain: nothing of the server's.
    assert len(runner_nursery.child_tasks) == runner_tasks
    assert net.statistics().sockets == 0  # nothing left open


async def test_cancelling_the_surrounding_scope_stops_the_server_at_once(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    running = trio.Event()
    handler_cancelled = False

    async def forever(conn: TCPConnection) -> None:
        nonlocal handler_cancelled
        running.set()
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled = True

    with trio.CancelScope() as scope:
        async with open_tcp_server(forever, 0, shutdown_grace=100) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await running.wait()
            begin = trio.current_time()
            scope.cancel()
            await trio.sleep_forever()
    assert trio.current_time() == begin
    assert handler_cancelled
    assert await stream.receive_some() == b""
    await stream.aclose()
    assert net.statistics().sockets == 0  # nothing left open


async def test_an_exception_in_the_block_comes_out_unwrapped_and_cancels_the_server(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled = trio.Event()

    async def forever(conn: TCPConnection) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    streams: list[trio.SocketStream] = []

    async def block_that_fails() -> None:
        async with open_tcp_server(forever, 0) as server:
            streams.append(await trio.open_tcp_stream("127.0.0.1", server.port))
            await trio.testing.wait_all_tasks_blocked()
            raise KeyError("from the body")

    begin = trio.current_time()
    with pytest.raises(KeyError, match="from the body"):
        await block_that_fails()
    assert cancelled.is_set()
    assert trio.current_time() == begin
    await streams[0].aclose()


async def test_a_second_shutdown_can_bring_the_deadline_closer(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def forever(conn: TCPConnection) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_tcp, forever, 0))
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await trio.testing.wait_all_tasks_blocked()
            begin = trio.current_time()
            server.shutdown_nowait(grace=100)
            await trio.sleep(1)
            await server.shutdown(grace=200)  # cannot extend it...
            assert trio.current_time() - begin == 100
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_tcp, forever, 0))
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await trio.testing.wait_all_tasks_blocked()
            begin = trio.current_time()
            server.shutdown_nowait(grace=100)
            await trio.sleep(1)
            await server.shutdown(grace=2)  # ...but can shorten it
            assert trio.current_time() - begin == 3


async def test_a_cancelled_shutdown_call_does_not_stop_the_shutdown() -> None:
    # Real sockets and the real clock, for the clean end of stream (see above).
    running = trio.Event()

    async def forever(conn: TCPConnection) -> None:
        running.set()
        await trio.sleep_forever()

    with trio.fail_after(GRACE + SLACK):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve_tcp, forever, 0))
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await running.wait()
                begin = trio.current_time()
                with trio.move_on_after(GRACE / 5) as scope:
                    await server.shutdown(grace=GRACE)
                assert scope.cancelled_caught
                assert server.statistics().shutting_down
                assert await stream.receive_some() == b""  # closed at the grace deadline
                assert GRACE <= trio.current_time() - begin < GRACE + SLACK
        assert GRACE <= trio.current_time() - begin < GRACE + SLACK


async def test_a_handler_can_stop_its_own_server_with_shutdown_nowait(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def quit_on_request(conn: TCPConnection) -> None:
        if await conn.channel.receive() == b"quit":
            assert conn.server is not None
            conn.server.shutdown_nowait(grace=1)
            await conn.channel.send(b"bye")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_tcp, quit_on_request, 0, codec=LengthPrefixed())
        )
        async with await connect(server.port) as channel:
            await channel.send(b"quit")
            assert await channel.receive() == b"bye"
    assert not server.statistics().shutting_down or server.connection_count == 0
    await server.shutdown()  # already stopped: returns at once


async def test_shutdown_rejects_a_negative_grace(echo_server: TCPServer) -> None:
    with pytest.raises(ValueError, match="grace"):
        await echo_server.shutdown(grace=-1)
    with pytest.raises(ValueError, match="grace"):
        echo_server.shutdown_nowait(grace=math.nan)


# ------------------------------------------------------------- handler errors


async def test_a_failing_handler_is_logged_once_with_the_peer_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trionet")

    async def picky(conn: TCPConnection) -> None:
        message = await conn.channel.receive()
        if message == b"bad":
            raise ZeroDivisionError("handler bug")
        await conn.channel.send(message)

    async with open_tcp_server(picky, 0, codec=LengthPrefixed()) as server:
        async with await connect(server.port) as good_before:
            async with await connect(server.port, "::1") as bad:
                await bad.send(b"bad")
                with pytest.raises(trio.EndOfChannel):
                    await bad.receive()
                bad_port = bad.stream.socket.getsockname()[1]  # type: ignore[attr-defined]
            await good_before.send(b"still here")
            assert await good_before.receive() == b"still here"
        async with await connect(server.port) as good_after:
            await good_after.send(b"after")
            assert await good_after.receive() == b"after"
        assert server.statistics().handler_errors == 1
    records = trionet_records(caplog)
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert f"[::1]:{bad_port}" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ZeroDivisionError)


async def test_a_peer_caused_error_is_logged_at_debug_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet")
    async with (
        open_tcp_server(echo, 0, codec=LengthPrefixed(max_size=10)) as server,
        await trio.open_tcp_stream("127.0.0.1", server.port) as stream,
    ):
        await stream.send_all(b"\x00\x00\x10\x00")  # announces a 4 KiB frame
        assert await stream.receive_some() == b""
    records = trionet_records(caplog)
    # A peer's doing: DEBUG (issue 19.1), counted in the summary at stop.
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert "FrameTooLarge" in records[0].getMessage()
    assert records[0].exc_info is None


async def test_strict_mode_propagates_a_handler_exception_out_of_the_nursery(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    other_cancelled = trio.Event()

    async def handler(conn: TCPConnection) -> None:
        if await conn.channel.receive() == b"boom":
            raise ZeroDivisionError("strict")
        try:
            await trio.sleep_forever()
        finally:
            other_cancelled.set()

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_tcp, handler, 0, codec=LengthPrefixed(), strict=True)
            )
            calm = await connect(server.port)
            await calm.send(b"calm")
            boom = await connect(server.port)
            await trio.testing.wait_all_tasks_blocked()
            await boom.send(b"boom")
            await trio.sleep_forever()
    assert other_cancelled.is_set()
    await calm.aclose()
    await boom.aclose()
    assert net.statistics().sockets == 0  # nothing left open


async def test_strict_mode_in_open_tcp_server_raises_the_group_from_the_block(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(conn: TCPConnection) -> None:
        raise ZeroDivisionError("strict")

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with open_tcp_server(handler, 0, strict=True) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio.sleep_forever()
    await stream.aclose()


# ---------------------------------------------------- statistics and events


async def test_statistics_is_a_frozen_snapshot(echo_server: TCPServer) -> None:
    before = echo_server.statistics()
    async with await connect(echo_server.port) as channel:
        await channel.send(b"x")
        await channel.receive()
        during = echo_server.statistics()
    assert isinstance(before, ServerStatistics)
    assert (before.connections_active, before.connections_accepted) == (0, 0)
    assert (during.connections_active, during.connections_accepted) == (1, 1)
    assert before.accepting
    assert not before.shutting_down
    with pytest.raises(AttributeError):
        before.connections_active = 5  # type: ignore[misc]


async def test_the_observer_sees_listening_accepts_closes_and_shutdown_phases(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog(kinds=("tcp.",))
    async with open_tcp_server(echo, 0, host="127.0.0.1", codec=Lines(), observer=log) as server:
        async with await connect(server.port, codec=Lines()) as channel:
            await channel.send(b"hi")
            await channel.receive()
            client = channel.stream.socket.getsockname()  # type: ignore[attr-defined]
        await trio.testing.wait_all_tasks_blocked()
    assert [event.kind for event in log] == [
        "tcp.listening",
        "tcp.accept",
        "tcp.closed",
        "tcp.shutdown.begin",
        "tcp.shutdown.done",
    ]
    assert log.events[0].details["addresses"] == (f"127.0.0.1:{server.port}",)
    assert log.events[1].details["peer"] == Address.from_sockaddr(client)
    assert log.events[3].details == {"grace": 30.0, "active": 0}


async def test_options_are_checked_before_anything_is_opened(no_fd_leak: None) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        await serve_tcp(echo, 0, max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        await serve_tcp(echo, 0, idle_timeout=-1)
    with pytest.raises(ValueError, match="tls_handshake_timeout"):
        await serve_tcp(echo, 0, tls_handshake_timeout=math.nan)
    with pytest.raises(ValueError, match="shutdown_grace"):
        async with open_tcp_server(echo, 0, shutdown_grace=-1):
            pass


async def test_a_port_in_use_raises_oserror_naming_the_address(echo_server: TCPServer) -> None:
    with pytest.raises(OSError, match=str(echo_server.port)):
        async with open_tcp_server(echo, echo_server.port, host="127.0.0.1"):
            pass
