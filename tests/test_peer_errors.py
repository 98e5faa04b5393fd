"""A peer's reset is the peer's doing, also inside a handler's own nursery (issue 17.4).

A handler that runs a nursery of its own (a reader task and a writer task, as
the chat step of the tutorial teaches) gets a client's reset wrapped in an
exception group. The servers classify the group by its leaves: made only of
errors the peer caused, it is logged as one (DEBUG, no traceback), for TCP,
Unix and UDP servers alike; anything else in it keeps it a handler bug (ERROR,
with its traceback).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable

import pytest
import trio

import trionet
from trionet import Datagram, EventLog, TCPConnection, UnixConnection

from .conftest import trionet_records

TIMEOUT = 10


async def reader_and_writer(conn: TCPConnection | UnixConnection) -> None:
    # Two tasks per connection: the peer's reset reaches the handler in a group.
    async def read() -> None:
        while await conn.stream.receive_some():
            pass
        raise trio.BrokenResourceError("the peer left")

    async def write() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Watch:
    """An observer that keeps the events and sets ``seen`` at the first of ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.log = EventLog()
        self.seen = trio.Event()

    def __call__(self, event: trionet.Event) -> None:
        self.log(event)
        if event.kind == self.kind:
            self.seen.set()


async def reset_by_a_client(
    serve: Callable[..., Awaitable[None]], where: object,
    connect: Callable[[object], socket.socket], kind: str,
) -> EventLog:
    """Serve reader_and_writer; a client sends a few bytes and resets the connection."""
    watch = Watch(f"{kind}.closed")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve, reader_and_writer, where,
                                                           observer=watch))
            client = await trio.to_thread.run_sync(connect, server)
            client.sendall(b"hello")
            reset(client)
            await watch.seen.wait()
            server.shutdown_nowait(grace=0)
    return watch.log


def assert_logged_as_the_peers_doing(caplog: pytest.LogCaptureFixture) -> None:
    records = trionet_records(caplog)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    (record,) = [r for r in records if "ended by" in r.getMessage()]
    assert record.levelno == logging.DEBUG  # a peer's doing: not even INFO (issue 19.1)
    assert record.exc_info is None
    assert "ended by BrokenResourceError" in record.getMessage()


async def test_a_reset_inside_a_tcp_handlers_nursery_is_logged_as_the_peers_doing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet")

    def connect(server: object) -> socket.socket:
        assert isinstance(server, trionet.TCPServer)
        return socket.create_connection(("127.0.0.1", server.port))

    serve = functools.partial(trionet.serve_tcp, host="127.0.0.1")
    log = await reset_by_a_client(serve, 0, connect, "tcp")
    errors = log.of_kind("tcp.handler_error")
    assert len(errors) == 1
    assert hasattr(errors[0].details["error"], "exceptions")
    assert_logged_as_the_peers_doing(caplog)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
async def test_a_reset_inside_a_unix_handlers_nursery_is_logged_as_the_peers_doing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet")
    directory = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    path = os.path.join(directory, "s.sock")

    def connect(server: object) -> socket.socket:
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        return client

    try:
        log = await reset_by_a_client(trionet.serve_unix, path, connect, "unix")
    finally:
        shutil.rmtree(directory)
    assert len(log.of_kind("unix.handler_error")) == 1
    assert_logged_as_the_peers_doing(caplog)


async def test_a_group_with_a_bug_in_it_is_still_a_handler_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet")
    async def buggy(datagram: Datagram) -> bytes:
        async def bad_input() -> None:
            raise trionet.InvalidMessage("the peer sent garbage")

        async def bug() -> None:
            raise KeyError("a bug of ours")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bad_input)
            nursery.start_soon(bug)
        return b""

    async def peer_only(datagram: Datagram) -> bytes:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(_raise, trionet.InvalidMessage("garbage")))
        return b""

    handlers: list[tuple[Callable[[Datagram], Awaitable[bytes]], int]] = [
        (buggy, logging.ERROR), (peer_only, logging.DEBUG),
    ]
    for handler, level in handlers:
        caplog.clear()
        watch = Watch("udp.handler_error")
        with trio.fail_after(TIMEOUT):
            async with (
                trionet.open_udp_server(handler, 0, host="127.0.0.1", observer=watch,
                                        shutdown_grace=0) as server,
                trionet.open_udp_endpoint() as client,
            ):
                await client.send(b"x", ("127.0.0.1", server.port))
                await watch.seen.wait()
        (record,) = [r for r in trionet_records(caplog) if "datagram from" in r.getMessage()]
        assert record.levelno == level, record.getMessage()
        assert (record.exc_info is not None) == (level == logging.ERROR)


async def _raise(error: BaseException) -> None:
    raise error
