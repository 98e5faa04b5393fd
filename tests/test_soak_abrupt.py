"""Abrupt ends: peers that reset mid-frame or drop out of a TLS handshake.

Each case repeats the abrupt end many times against one server and checks that
every connection ends with a typed error (never a hang: each test runs under
``trio.fail_after``), that the server keeps serving a well-behaved client, that
nothing is logged above INFO for it, and that no task or file descriptor is left.
The UDP case (a peer vanishing during an exchange) is in test_soak_udp.py.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct

import pytest
import trio

from tests.soak.common import count_tasks
from trionet import (
    Event,
    LengthPrefixed,
    Lines,
    MessageChannel,
    TCPConnection,
    connect_tcp,
    open_tcp_server,
)
from trionet.errors import FramingError

from .conftest import TLS_HOSTNAME as HOSTNAME

ROUNDS = 50
LINGER_RESET = struct.pack("ii", 1, 0)


def reset_on_close(sock: trio.socket.SocketType) -> None:
    """SO_LINGER with a zero timeout: close() sends a TCP reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)


def client_hello(client_context: ssl.SSLContext) -> bytes:
    """The bytes a TLS client sends first (its ClientHello), made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def send_until_it_fails(channel: MessageChannel) -> None:
    # After a reset the first send may still be accepted by the local kernel.
    for _ in range(100):
        await channel.send(b"anyone there?")


def loud_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("trionet") and r.levelno > logging.INFO]


@pytest.mark.parametrize("codec", [LengthPrefixed(), Lines()], ids=["LengthPrefixed", "Lines"])
async def test_peers_that_reset_mid_frame_end_their_handlers_with_a_broken_resource_error(
    codec: LengthPrefixed | Lines, no_fd_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trionet")
    endings: list[BaseException] = []
    all_ended = trio.Event()
    tasks_before = count_tasks()

    async def echo(conn: TCPConnection) -> None:
        try:
            async for message in conn.channel:
                await conn.channel.send(message)
        except BaseException as exc:
            endings.append(exc)
            if len(endings) == ROUNDS:
                all_ended.set()
            raise

    frame = codec.encode(b"a frame that will never be finished" * 100)
    with trio.fail_after(30):
        async with open_tcp_server(echo, 0, host="127.0.0.1", codec=codec) as server:
            for round_ in range(ROUNDS):
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.send_all(frame[: 1 + round_ * 37 % (len(frame) - 1)])
                reset_on_close(stream.socket)
                await stream.aclose()
            await all_ended.wait()
            async with MessageChannel(await trio.open_tcp_stream("127.0.0.1", server.port), codec) as good:
                await good.send(b"still serving")
                assert await good.receive() == b"still serving"
            assert server.statistics().handler_errors == ROUNDS
    assert all(isinstance(e, trio.BrokenResourceError) for e in endings), endings
    assert count_tasks() == tasks_before
    assert loud_records(caplog) == []
    # A peer's doing: no line per reset at INFO (issue 19.1; each is at DEBUG),
    # and one INFO line when the server stops counts them.
    info = [r.getMessage() for r in caplog.records if r.name.startswith("trionet")]
    assert not [m for m in info if "ended by BrokenResourceError" in m]
    assert info[-1].endswith(f"stopped after {ROUNDS + 1}; {ROUNDS} ended by the peer "
                             f"(BrokenResourceError: {ROUNDS})")


async def test_a_peer_that_resets_while_the_handler_sends_breaks_the_handler_send(
    no_fd_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    endings: list[BaseException] = []
    all_ended = trio.Event()
    big = b"b" * 1_000_000  # more than the socket buffers hold: the send is mid-frame

    async def stream_forever(conn: TCPConnection) -> None:
        try:
            for _ in range(1000):
                await conn.channel.send(big)
        except BaseException as exc:
            endings.append(exc)
            if len(endings) == ROUNDS:
                all_ended.set()
            raise

    tasks_before = count_tasks()
    with trio.fail_after(30):
        async with open_tcp_server(
            stream_forever, 0, host="127.0.0.1", codec=LengthPrefixed()
        ) as server:
            for _ in range(ROUNDS):
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.receive_some(1000)
                reset_on_close(stream.socket)
                await stream.aclose()
            await all_ended.wait()
    assert all(isinstance(e, trio.BrokenResourceError) for e in endings), endings
    assert count_tasks() == tasks_before
    assert loud_records(caplog) == []


async def test_a_server_that_resets_mid_frame_breaks_the_client_channel_with_a_typed_error(
    no_fd_leak: None, caplog: pytest.LogCaptureFixture
) -> None:
    frame = LengthPrefixed().encode(b"x" * 100_000)

    async def half_a_frame_then_reset(conn: TCPConnection) -> None:
        await conn.stream.send_all(frame[: len(frame) // 2])
        reset_on_close(conn.socket)
        # Returning closes the connection: with SO_LINGER 0, a reset.

    tasks_before = count_tasks()
    with trio.fail_after(30):
        async with open_tcp_server(half_a_frame_then_reset, 0, host="127.0.0.1") as server:
            for _ in range(ROUNDS):
                conn = await connect_tcp("127.0.0.1", server.port, codec=LengthPrefixed())
                async with conn:
                    with pytest.raises(trio.BrokenResourceError):
                        await conn.channel.receive()
                    # The channel stays broken, for receiving and for sending.
                    with pytest.raises(trio.BrokenResourceError):
                        await conn.channel.receive()
                    with pytest.raises(trio.BrokenResourceError):
                        await send_until_it_fails(conn.channel)
    assert count_tasks() == tasks_before
    assert loud_records(caplog) == []


@pytest.mark.parametrize(
    "how", ["nothing", "half a ClientHello", "ClientHello then close", "ClientHello then reset"]
)
async def test_clients_that_drop_out_of_the_tls_handshake_are_counted_and_others_served(
    how: str,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    no_fd_leak: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_context, client_context = contexts
    hello = client_hello(client_context)
    handled: list[TCPConnection] = []
    failures = 0
    all_failed = trio.Event()

    def count_failed_handshakes(event: Event) -> None:
        nonlocal failures
        if event.kind == "tcp.handshake_failed" or (
            event.kind == "tcp.shed" and event.details.get("reason") == "tls_handshake_timeout"
        ):
            failures += 1
            if failures == ROUNDS:
                all_failed.set()

    async def echo(conn: TCPConnection) -> None:
        handled.append(conn)
        async for message in conn.channel:
            await conn.channel.send(message)

    tasks_before = count_tasks()
    with trio.fail_after(30):
        async with open_tcp_server(
            echo, 0, host="127.0.0.1", codec=LengthPrefixed(), ssl_context=server_context,
            observer=count_failed_handshakes,
        ) as server:
            for _ in range(ROUNDS):
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                if how == "half a ClientHello":
                    await stream.send_all(hello[: len(hello) // 2])
                elif how != "nothing":
                    await stream.send_all(hello)
                    await stream.receive_some()  # the server's first flight has begun
                if how.endswith("reset"):
                    reset_on_close(stream.socket)
                await stream.aclose()
            await all_failed.wait()
            good = await connect_tcp(
                "127.0.0.1", server.port, codec=LengthPrefixed(), ssl_context=client_context,
                server_hostname=HOSTNAME,
            )
            async with good:
                await good.channel.send(b"still serving")
                assert await good.channel.receive() == b"still serving"
        statistics = server.statistics()
    assert statistics.handshake_failures == ROUNDS
    assert statistics.handler_errors == 0
    assert len(handled) == 1  # only the good client reached the handler
    assert count_tasks() == tasks_before
    assert loud_records(caplog) == []


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_server_that_drops_out_of_the_tls_handshake_fails_connect_tcp_with_a_typed_error(
    how: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    _, client_context = contexts
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def read_hello_then_drop() -> None:
        for _ in range(ROUNDS):
            stream = await listeners[0].accept()
            await stream.receive_some()
            if how == "reset":
                reset_on_close(stream.socket)
            await stream.aclose()

    tasks_before = count_tasks()
    with trio.fail_after(30):
        async with listeners[0], trio.open_nursery() as nursery:
            nursery.start_soon(read_hello_then_drop)
            for _ in range(ROUNDS):
                with pytest.raises(trio.BrokenResourceError) as raised:
                    await connect_tcp(
                        "127.0.0.1", port, ssl_context=client_context, server_hostname=HOSTNAME
                    )
                assert not isinstance(raised.value, FramingError)
    assert count_tasks() == tasks_before
