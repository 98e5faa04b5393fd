"""The accept loop drains the backlog; idle timeouts need no task per connection; options are checked.

Through the public API; the accept loop's batches of ``ACCEPT_BATCH`` and the
shared idle timer itself are tested in ``test_adapter_internals.py``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing

from trionet import (
    TCPConnection,
    bind_listening_sockets,
    connect_unix,
    open_tcp_server,
    open_unix_server,
    serve_tcp,
    serve_unix,
)

from .backlog import accepted_per_pass, forever

# ------------------------------------------------------------------ draining


async def test_a_backlog_is_accepted_many_connections_per_scheduler_pass(no_fd_leak: None) -> None:
    # trio's accept() takes one connection per scheduler pass. The accept loop
    # takes a batch per pass through the stdlib socket under trio's; if a trio
    # release moves that socket (trionet/_adapters/trio_compat.py), the loop falls
    # back to trio's accept() and this fails. (The batch size itself, an internal
    # constant, is checked in test_adapter_internals.py.)
    count = 100
    batches = await accepted_per_pass(count)
    assert sum(batches) == count
    assert max(batches) > 1, "one connection per scheduler pass: the accept loop lost its batches"


async def test_draining_never_takes_a_connection_past_max_connections(no_fd_leak: None) -> None:
    running = 0

    async def handler(conn: TCPConnection) -> None:
        nonlocal running
        running += 1
        await trio.sleep_forever()

    clients: list[socket.socket] = []
    try:
        with trio.fail_after(10):
            async with open_tcp_server(handler, 0, host="127.0.0.1", max_connections=7,
                                       shutdown_grace=0) as server:
                for _ in range(20):
                    clients.append(socket.create_connection(("127.0.0.1", server.port)))
                while running < 7:
                    await trio.testing.wait_all_tasks_blocked()
                await trio.testing.wait_all_tasks_blocked()
                stats = server.statistics()
                assert (stats.connections_active, stats.connections_accepted) == (7, 7)
                assert not stats.accepting
    finally:
        for client in clients:
            client.close()


# ------------------------------------------------------------ idle timeouts


def count_tasks(nursery_owner: trio.lowlevel.Task) -> int:
    total = 1
    for nursery in nursery_owner.child_nurseries:
        for task in nursery.child_tasks:
            total += count_tasks(task)
    return total


@pytest.mark.parametrize("codec", [None, "lines"])
async def test_idle_timeout_adds_one_task_per_server_not_one_per_connection(
    codec: str | None, no_fd_leak: None
) -> None:
    # Before: one watcher task (and a nursery) per connection.
    from trionet import Lines

    async def idle(conn: TCPConnection) -> None:
        if conn.has_channel:
            await conn.channel.receive()
        else:
            await conn.stream.receive_some()

    tasks = {}
    for idle_timeout in (None, 3600):
        async with open_tcp_server(idle, 0, host="127.0.0.1", idle_timeout=idle_timeout,
                                   codec=Lines() if codec else None) as server:
            streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(20)]
            while server.connection_count < 20:
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            root = trio.lowlevel.current_root_task()
            assert root is not None
            tasks[idle_timeout] = count_tasks(root)
            for stream in streams:
                await stream.aclose()
    assert tasks[3600] - tasks[None] == 1


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(("options", "error"), [
    ({"max_connections": True}, TypeError),
    ({"max_connections": 2.0}, TypeError),
    ({"max_connections": 0}, ValueError),
    ({"backlog": -1}, ValueError),
    ({"backlog": 0}, ValueError),
    ({"backlog": True}, TypeError),
    ({"idle_timeout": True}, TypeError),
    ({"abort_timeout": 0}, ValueError),
    ({"frame_timeout": -1}, ValueError),
])
async def test_bad_options_are_refused_with_a_clear_error(
    options: dict[str, Any], error: type[Exception], no_fd_leak: None
) -> None:
    name = next(iter(options))
    with pytest.raises(error, match=name):
        await serve_tcp(forever, 0, host="127.0.0.1", **options)
    with pytest.raises(error, match=name):
        async with open_tcp_server(forever, 0, host="127.0.0.1", **options):
            pass  # pragma: no cover


async def test_bind_listening_sockets_refuses_a_negative_backlog(no_fd_leak: None) -> None:
    # listen(-1) would quietly mean a backlog of 0.
    with pytest.raises(ValueError, match="backlog"):
        await bind_listening_sockets(0, host="127.0.0.1", backlog=-1)


async def test_an_empty_unix_path_is_a_value_error_not_an_index_error(no_fd_leak: None) -> None:
    with pytest.raises(ValueError, match="path must not be empty"):
        await serve_unix(forever, "")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path must not be empty"):
        async with open_unix_server(forever, ""):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="path must not be empty"):
        await connect_unix("")
    with pytest.raises(TypeError, match="max_connections"):
        await serve_unix(forever, "/tmp/unused.sock", max_connections=True)  # type: ignore[arg-type]
