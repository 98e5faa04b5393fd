"""serve_unix, open_unix_server and connect_unix: echo, shutdown, and the socket file."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trionet import (
    EventLog,
    LengthPrefixed,
    Lines,
    UnixConnection,
    UnixServer,
    connect_unix,
    open_unix_server,
    serve_unix,
)

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


@pytest.fixture
def sock_path() -> Iterator[str]:
    # Not tmp_path: socket paths are limited to about 100 bytes.
    directory = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    try:
        yield os.path.join(directory, "s.sock")
    finally:
        shutil.rmtree(directory)


async def echo(conn: UnixConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


async def test_fifty_clients_each_get_their_echoes_in_order(
    sock_path: str, no_fd_leak: None
) -> None:
    async with open_unix_server(echo, sock_path, codec=LengthPrefixed()) as server:
        assert server.path == sock_path
        assert stat.S_ISSOCK(os.stat(sock_path).st_mode)

        async def client(number: int) -> None:
            messages = [b"%d-%d" % (number, i) for i in range(100)]
            async with await connect_unix(sock_path, codec=LengthPrefixed()) as conn:
                await conn.channel.send_many(messages)
                assert [await conn.channel.receive() for _ in messages] == messages

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for number in range(50):
                    nursery.start_soon(client, number)
        assert server.statistics().connections_accepted == 50
    assert not await trio.Path(sock_path).exists()


async def test_graceful_shutdown_finishes_handlers_and_removes_the_socket_file(
    sock_path: str, no_fd_leak: None
) -> None:
    received = trio.Event()
    release = trio.Event()

    async def slow(conn: UnixConnection) -> None:
        request = await conn.channel.receive()
        received.set()
        await release.wait()
        await conn.channel.send(request.upper())

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve_unix, slow, sock_path, codec=Lines()))
            assert isinstance(server, UnixServer)
            conn = await connect_unix(sock_path, codec=Lines())
            await conn.channel.send(b"quiet")
            await received.wait()

            async def shut() -> None:
                await server.shutdown(grace=100)

            nursery.start_soon(shut)
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().shutting_down
            assert not await trio.Path(sock_path).exists()  # removed as soon as shutdown starts
            with pytest.raises(FileNotFoundError):
                await connect_unix(sock_path)
            release.set()  # the handler still running finishes its reply
            assert await conn.channel.receive() == b"QUIET"
            with pytest.raises(trio.EndOfChannel):
                await conn.channel.receive()
            await conn.aclose()


async def test_the_connection_knows_the_paths_and_its_server(sock_path: str) -> None:
    seen: list[tuple[str, str, object]] = []

    async def record(conn: UnixConnection) -> None:
        seen.append((conn.local, conn.peer, conn.server))

    async with open_unix_server(record, sock_path) as server:
        client = await connect_unix(sock_path)
        async with client:
            assert await client.stream.receive_some() == b""
            assert client.peer == sock_path
            assert client.local == ""
            assert client.server is None
            assert repr(client) == f"<UnixConnection local='' peer={sock_path!r}>"
    assert seen == [(sock_path, "", server)]


async def test_a_stale_socket_file_is_replaced(sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # the file stays behind, as after a crash
    assert await trio.Path(sock_path).exists()
    async with (
        open_unix_server(echo, sock_path, codec=Lines()),
        await connect_unix(sock_path, codec=Lines()) as conn,
    ):
        await conn.channel.send(b"fresh")
        assert await conn.channel.receive() == b"fresh"


async def test_a_path_in_use_is_not_taken_over(sock_path: str) -> None:
    async with open_unix_server(echo, sock_path) as first:
        with pytest.raises(OSError, match="in use"):
            async with open_unix_server(echo, sock_path):
                pass
        assert first.statistics().accepting
    await trio.Path(sock_path).write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        async with open_unix_server(echo, sock_path):
            pass


async def test_the_file_of_a_newer_server_is_left_alone(sock_path: str) -> None:
    async with open_unix_server(echo, sock_path):
        os.unlink(sock_path)
        newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        newer.bind(sock_path)
    assert await trio.Path(sock_path).exists()
    newer.close()


async def test_cancelling_the_server_removes_the_socket_file(
    sock_path: str, no_fd_leak: None
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(serve_unix, echo, sock_path))
        assert await trio.Path(sock_path).exists()
        nursery.cancel_scope.cancel()
    assert not await trio.Path(sock_path).exists()


async def test_mode_sets_the_socket_file_permissions(sock_path: str) -> None:
    async with open_unix_server(echo, sock_path, mode=0o600):
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600


@pytest.mark.skipif(sys.platform != "linux", reason="abstract sockets are Linux-only")
async def test_an_abstract_socket_has_no_file(no_fd_leak: None) -> None:
    name = f"\0trionet-test-{os.getpid()}"
    async with open_unix_server(echo, name, codec=Lines()) as server:
        assert server.path == name
        async with await connect_unix(name, codec=Lines()) as conn:
            await conn.channel.send(b"abstract")
            assert await conn.channel.receive() == b"abstract"


async def test_unix_servers_share_the_tcp_features(sock_path: str) -> None:
    log = EventLog()
    running = 0
    most = 0
    idle = 0.25  # the real clock: Unix sockets are the kernel's

    async def handler(conn: UnixConnection) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await conn.channel.send(await conn.channel.receive())
            await conn.channel.receive()  # then idle until shed
        finally:
            running -= 1

    with trio.fail_after(10):
        async with open_unix_server(
            handler, sock_path, codec=Lines(), max_connections=2, idle_timeout=idle, observer=log
        ) as server:
            conns = [await connect_unix(sock_path, codec=Lines()) for _ in range(4)]
            begin = trio.current_time()
            for conn in conns:
                await conn.channel.send(b"hi")
            for conn in conns:
                assert await conn.channel.receive() == b"hi"
                with pytest.raises(trio.EndOfChannel):
                    await conn.channel.receive()
                await conn.aclose()
            assert trio.current_time() - begin >= 2 * idle  # two waves, each shed when idle
            assert most == 2
            assert server.statistics().connections_shed == 4
    kinds = {event.kind for event in log}
    assert {"unix.listening", "unix.accept", "unix.paused", "unix.shed"} <= kinds


async def test_connect_unix_to_nothing_raises_file_not_found(sock_path: str) -> None:
    with pytest.raises(FileNotFoundError):
        await connect_unix(sock_path)
