"""Idle time read from the kernel (Linux TCP_INFO): no wrapper on a plain TCP connection.

With ``idle_timeout`` on a plain TCP server (the default since issue 15.4), the
handler gets trio's own :class:`trio.SocketStream`, and the server's idle
timer asks the kernel when data last moved (issue 14.10: a wrapper's
``receive_some`` frame cost 232 bytes per waiting connection). Real loopback
sockets and trio's real clock: the kernel's times are real milliseconds.

Imports private ``KernelActivity`` and ``IdleTrackingStream``: the two internal
sources of a connection's idle time.
"""

from __future__ import annotations

import socket
import sys

import pytest
import trio
import trio.testing

import trionet
from trionet import TCPConnection
from trionet._adapters.idle import IdleTrackingStream, KernelActivity
from trionet.testing import VirtualNetwork

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")


async def loopback_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    client.setblocking(False)
    return server, client


async def test_a_plain_tcp_handler_gets_trios_own_stream_with_an_idle_timeout() -> None:
    streams: list[object] = []

    async def handler(conn: TCPConnection) -> None:
        streams.append(conn.stream)

    async with trionet.open_tcp_server(handler, 0, host="127.0.0.1", idle_timeout=60) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert await stream.receive_some() == b""  # the handler returned
            await stream.aclose()
    assert [type(s) for s in streams] == [trio.SocketStream]


async def test_a_silent_connection_is_shed_after_the_idle_timeout(no_fd_leak: None) -> None:
    log = trionet.EventLog()

    async def handler(conn: TCPConnection) -> None:
        await conn.stream.receive_some()

    async with trionet.open_tcp_server(handler, 0, host="127.0.0.1", idle_timeout=0.2,
                                       observer=log) as server:
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            start = trio.current_time()
            assert await stream.receive_some() == b""  # the server closed it
            took = trio.current_time() - start
            await stream.aclose()
    assert took >= 0.2
    assert [e.details["reason"] for e in log.events if e.kind == "tcp.shed"] == ["idle_timeout"]


async def test_data_the_handler_has_not_read_yet_is_activity() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        created = activity.last_activity
        client.send(b"ping")
        await trio.lowlevel.wait_readable(server)  # arrived, and nobody read it
        before = trio.current_time()
        last = activity.last_activity
        assert created <= last <= trio.current_time()
        assert last >= before - 0.5  # just now, to the kernel's millisecond


async def test_a_send_stuck_behind_a_peer_that_stopped_reading_counts_as_sending() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        assert activity.sending == 0
        chunk = b"x" * 65536
        for _ in range(10_000):  # bounded: loopback buffers hold a few MiB
            try:
                server.send(chunk)
            except BlockingIOError:
                break
        else:  # pragma: no cover
            pytest.fail("the send buffer never filled")
        assert activity.sending == 1


async def test_a_time_set_by_the_server_is_kept_when_it_is_later() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        later = trio.current_time() + 100
        activity.last_activity = later
        assert activity.last_activity == later
        activity.last_activity = later - 50  # never moves back
        assert activity.last_activity == later


async def test_a_closed_socket_reports_the_last_known_time() -> None:
    server, client = await loopback_pair()
    with client:
        activity = KernelActivity(server)
        server.close()
        assert activity.last_activity <= trio.current_time()
        assert activity.sending == 0


def test_under_a_mock_clock_the_stream_is_wrapped_instead() -> None:
    async def main() -> None:
        server, client = await loopback_pair()
        with server, client:
            assert KernelActivity.for_socket(server) is None
            assert KernelActivity.for_socket(None) is None

    trio.run(main, clock=trio.testing.MockClock())


async def test_a_socket_of_the_virtual_network_is_wrapped_instead() -> None:
    network = VirtualNetwork(seed=0)
    network.add_host("server", "10.0.0.1")
    network.add_host("client", "10.0.0.2")
    network.link("client", "server", latency=0.001)
    streams: list[object] = []

    async def handler(conn: TCPConnection) -> None:
        streams.append(conn.stream)

    with network.install(), network.host("server"):
        async with trionet.open_tcp_server(handler, 80, idle_timeout=60) as server:
            with network.host("client"):
                stream = await trio.open_tcp_stream("10.0.0.1", server.port)
                assert await stream.receive_some() == b""
                await stream.aclose()
    assert [type(s) for s in streams] == [IdleTrackingStream]
