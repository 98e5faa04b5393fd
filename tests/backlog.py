"""A backlog of connections for serve_tcp to accept, counted per scheduler pass.

Shared by the accept loop's public test (``test_tcp_server_accept.py``: more
than one connection per pass) and its internal one
(``test_adapter_internals.py``: exactly ``ACCEPT_BATCH`` per pass).
"""

from __future__ import annotations

import collections
import functools
import socket

import trio

from trionet import Event, TCPConnection, serve_tcp


class TaskSteps(trio.abc.Instrument):
    """Counts each task's steps: one step runs a task from one schedule point to the next."""

    def __init__(self) -> None:
        self.steps: collections.Counter[trio.lowlevel.Task] = collections.Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


async def forever(conn: TCPConnection) -> None:
    await trio.sleep_forever()


async def accepted_per_pass(count: int) -> list[int]:
    """Fill a server's backlog with ``count`` connections; how many each accept step took.

    Each accept is stamped with the step of the task that accepted it (exact,
    unlike counting passes from another task, which trio's shuffled batches
    make uncertain by one). Returns the batch sizes, largest first.
    """
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
    return sorted(collections.Counter(accepted_at).values(), reverse=True)
