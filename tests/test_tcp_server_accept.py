"""The accept loop drains the backlog; idle timeouts need no task per connection; options are checked.

Imports private ``IdleTimer``, ``IdleEntry`` and ``ACCEPT_BATCH``: the accept loop's
batching and the shared idle timer are internal.
"""

from __future__ import annotations

import collections
import functools
import socket
from typing import Any

import pytest
import trio
import trio.testing

from trionet import (
    Event,
    TCPConnection,
    connect_unix,
    open_listening_sockets,
    open_tcp_server,
    open_unix_server,
    serve_tcp,
    serve_unix,
)
from trionet._adapters.idle import IdleEntry, IdleTimer, IdleTrackingStream
from trionet._endpoints.server_core import ACCEPT_BATCH, stdlib_socket


async def forever(conn: TCPConnection) -> None:
    await trio.sleep_forever()


# ------------------------------------------------------------------ draining


async def test_trio_still_keeps_the_stdlib_socket_where_the_accept_loop_reads_it() -> None:
    # Fails loudly if trio renames the private attribute: the accept loop would
    # then silently fall back to one accept per scheduler pass.
    sock = trio.socket.socket()
    with sock:
        raw = stdlib_socket(sock)
        assert isinstance(raw, socket.socket)
        assert raw.fileno() == sock.fileno()


class TaskSteps(trio.abc.Instrument):
    """Counts each task's steps: one step runs a task from one schedule point to the next."""

    def __init__(self) -> None:
        self.steps: collections.Counter[trio.lowlevel.Task] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


async def test_a_backlog_is_accepted_in_batches_of_accept_batch_per_scheduler_pass(
    no_fd_leak: None,
) -> None:
    # Before: trio's accept() took one connection per scheduler pass, so a
    # backlog of 100 took 100 passes. Each accept is stamped with the step of the
    # task that accepted it (exact, unlike counting passes from another task,
    # which trio's shuffled batches make uncertain by one).
    count = ACCEPT_BATCH + 36
    steps = TaskSteps()
    accepted_at: list[tuple[trio.lowlevel.Task, int]] = []
    all_accepted = trio.Event()

    def observer(event: Event) -> None:
        if event.kind == "tcp.accept":
            task = trio.lowlevel.current_task()
            accepted_at.append((task, steps.steps[task]))
            if len(accepted_at) == count:
                all_accepted.set()

    clients: list[socket.socket] = []
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(functools.partial(
                    serve_tcp, forever, 0, host="127.0.0.1", observer=observer))
                # Blocking connects, without a checkpoint: the kernel completes
                # them into the backlog before the server runs again.
                for _ in range(count):
                    clients.append(socket.create_connection(("127.0.0.1", server.port)))
                await all_accepted.wait()
                assert server.connection_count == count
                nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(steps)
        for client in clients:
            client.close()
    assert len({task for task, _ in accepted_at}) == 1  # one listener, one accept loop
    batches = sorted(collections.Counter(accepted_at).values(), reverse=True)
    assert batches == [ACCEPT_BATCH, count - ACCEPT_BATCH]


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
            tasks[idle_timeout] = count_tasks(trio.lowlevel.current_root_task())
            for stream in streams:
                await stream.aclose()
    assert tasks[3600] - tasks[None] == 1


class Quiet(trio.abc.Stream):
    async def send_all(self, data: object) -> None: ...
    async def wait_send_all_might_not_block(self) -> None: ...
    async def receive_some(self, max_bytes: int | None = None) -> bytes: return b""
    async def aclose(self) -> None: ...


async def test_the_idle_timer_fires_exactly_one_period_after_each_streams_last_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    timer = IdleTimer(10, lambda entry: fired.append((entry.address, trio.current_time())))
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        quiet, busy, done = (IdleTrackingStream(Quiet()) for _ in range(3))
        for name, stream in (("quiet", quiet), ("busy", busy), ("done", done)):
            timer.watch(stream, trio.CancelScope(), None, name)  # type: ignore[arg-type]
        entry_done = timer._heap[-1] if timer._heap[-1].address == "done" else next(
            e for e in timer._heap if e.address == "done")
        await trio.sleep(5)
        timer.unwatch(entry_done)  # finished before its deadline: never fires
        await trio.sleep(2)
        for _ in range(3):  # activity at 7, 14 and 21 s
            busy.last_activity = trio.current_time()
            await trio.sleep(7)
        await trio.sleep(100)
        timer.stop()
    assert fired == [("quiet", start + 10), ("busy", start + 31)]


async def test_the_idle_heap_drops_the_entries_of_finished_connections() -> None:
    timer = IdleTimer(3600, lambda entry: None)
    entries: list[IdleEntry] = [
        timer.watch(IdleTrackingStream(Quiet()), trio.CancelScope(), None, n)  # type: ignore[arg-type]
        for n in range(1000)
    ]
    for entry in entries[:990]:
        timer.unwatch(entry)
    # Rebuilt whenever the finished ones were more than half: never 1000 entries.
    assert len(timer) <= 10 + 64 + 1


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


async def test_open_listening_sockets_refuses_a_negative_backlog(no_fd_leak: None) -> None:
    # listen(-1) would quietly mean a backlog of 0.
    with pytest.raises(ValueError, match="backlog"):
        await open_listening_sockets(0, host="127.0.0.1", backlog=-1)


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
