"""The ``closed`` event says how many bytes a connection carried, in and out (issue 19.1)."""

from __future__ import annotations

import os
import ssl
import tempfile

import pytest
import trio

import trionet
from trionet import Event, EventLog, TCPConnection, UnixConnection

from .conftest import TLS_HOSTNAME

REQUEST = b"q" * 1000
REPLY = b"r" * 70_000  # more than one read and one send


def closed_events(log: EventLog) -> list[Event]:
    return [event for event in log if event.kind.endswith(".closed")]


async def test_a_raw_tcp_connection_reports_the_kernels_payload_counts() -> None:
    async def answer(conn: TCPConnection) -> None:
        data = b""
        while len(data) < len(REQUEST):
            data += await conn.stream.receive_some()
        await conn.stream.send_all(REPLY)

    log = EventLog()
    async with trionet.open_tcp_server(answer, 0, host="127.0.0.1", observer=log) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(REQUEST)
        received = 0
        while chunk := await stream.receive_some():  # to the server's close
            received += len(chunk)
        await stream.aclose()
        assert received == len(REPLY)
        await server.shutdown(grace=5)
    (closed,) = closed_events(log)
    assert (closed.details["bytes_in"], closed.details["bytes_out"]) == (len(REQUEST), len(REPLY))


async def test_a_handler_that_closes_its_raw_stream_is_still_counted() -> None:
    async def answer(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"bye")
        await conn.aclose()  # the socket is gone before the handler returns

    log = EventLog()
    async with trionet.open_tcp_server(answer, 0, host="127.0.0.1", observer=log) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"hello")
        assert await stream.receive_some() == b"bye"
        await stream.aclose()
        await server.shutdown(grace=5)
    (closed,) = closed_events(log)
    assert closed.details["bytes_out"] == 3
    assert closed.details["bytes_in"] in (0, 5)  # "hello" may arrive after the close


async def test_a_codec_connection_counts_the_channels_bytes_above_tls(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts

    async def echo(conn: TCPConnection) -> None:
        async for message in conn.channel:
            await conn.channel.send(message)

    log = EventLog()
    async with trionet.open_tcp_server(
        echo, 0, host="127.0.0.1", codec=trionet.LengthPrefixed(), ssl_context=server_context, observer=log
    ) as server:
        async with await trionet.connect_tcp(
            "127.0.0.1", server.port, codec=trionet.LengthPrefixed(),
            ssl_context=client_context, server_hostname=TLS_HOSTNAME,
        ) as conn:
            for size in (1, 100, 50_000):
                await conn.channel.send(b"m" * size)
                assert len(await conn.channel.receive()) == size
            stats = conn.channel.statistics()
        await server.shutdown(grace=5)
    framed = sum(4 + size for size in (1, 100, 50_000))  # a 4-byte length prefix each
    assert (stats.bytes_sent, stats.bytes_received) == (framed, framed)
    (closed,) = closed_events(log)
    assert (closed.details["bytes_in"], closed.details["bytes_out"]) == (framed, framed)


async def test_a_raw_unix_connection_has_no_count_and_says_none() -> None:
    async def answer(conn: UnixConnection) -> None:
        await conn.stream.send_all(b"hi")

    log = EventLog()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "s")
        async with trionet.open_unix_server(answer, path, observer=log) as server:
            stream = await trio.open_unix_socket(path)
            assert await stream.receive_some() == b"hi"
            await stream.aclose()
            await server.shutdown(grace=5)
    (closed,) = closed_events(log)
    assert closed.details["bytes_in"] is None
    assert closed.details["bytes_out"] is None


@pytest.mark.parametrize("codec", [None, trionet.Lines()])
async def test_the_closed_event_always_has_both_fields(codec: trionet.Lines | None) -> None:
    async def nothing(conn: TCPConnection) -> None:
        pass

    log = EventLog()
    async with trionet.open_tcp_server(nothing, 0, host="127.0.0.1", codec=codec, observer=log) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        assert await stream.receive_some() == b""
        await stream.aclose()
        await server.shutdown(grace=5)
    (closed,) = closed_events(log)
    assert (closed.details["bytes_in"], closed.details["bytes_out"]) == (0, 0)
