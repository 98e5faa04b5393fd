"""Load: thousands of concurrent connections to one server, then a graceful shutdown.

``connections`` clients connect at once to one :func:`~trionet.open_tcp_server`
echo server (a length-prefixed codec, real loopback sockets, the real clock),
each sends ``messages`` numbered messages and checks every echo. Then a few of
them start a request the handler takes ``busy_seconds`` to answer, and the
server shuts down with ``grace`` seconds while every other connection is open
and quiet (a keep-alive client between requests).

Checked: every message echoed intact and in order on its own connection; every
busy request answered before its connection ended (a graceful shutdown lets a
handler that is working finish); the shutdown returned within ``grace`` plus one
second; afterwards the server counts no active connection and one close event
per accepted connection; no task or file descriptor is left over.
"""

from __future__ import annotations

import contextlib
import random
import resource
import time
from dataclasses import dataclass, field
from typing import Final

import trio
import trio.testing

import trionet
from trionet import LengthPrefixed, TCPConnection

from .common import LOOPBACK_V4, count_tasks, ensure_fd_limit, open_fd_count, trace_peak_memory

__all__ = ["LoadReport", "run_load"]

#: The first byte of a message the handler answers only after ``busy_seconds``.
_BUSY: Final = b"B"
_PLAIN: Final = b"M"
#: Descriptors a connection costs in this process (client and server side), and slack.
_FDS_PER_CONNECTION: Final = 2
_FD_SLACK: Final = 256


@dataclass
class LoadReport:
    """What a load run did and saw.

    Attributes:
      connections: Clients connected at once.
      messages: Messages each client sent before the shutdown.
      echoed: Echoes received intact, in order, on their own connection.
      busy: Requests in progress when the shutdown began.
      busy_answered: Of those, answered before their connection ended.
      connect_seconds: From the first connect to the last one established.
      echo_seconds: From the first message to the last echo.
      grace: The shutdown's grace.
      shutdown_seconds: How long ``shutdown(grace=...)`` took.
      active_after: ``connections_active`` after the server left.
      accepted, closed_events: Connections accepted, and ``tcp.closed`` events seen.
      tasks_before, tasks_after, fds_before, fds_after: Resource counts around the run.
      peak_traced: Peak of traced Python allocations above the start (bytes).
      seconds: Wall-clock time of the whole run.
      problems: Contract violations seen; empty if everything held.
    """

    connections: int
    messages: int
    echoed: int = 0
    busy: int = 0
    busy_answered: int = 0
    connect_seconds: float = 0.0
    echo_seconds: float = 0.0
    grace: float = 0.0
    shutdown_seconds: float = 0.0
    active_after: int = -1
    accepted: int = 0
    closed_events: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    peak_traced: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _message(client: int, sequence: int, size: int) -> bytes:
    head = b"%s%d:%d:" % (_PLAIN, client, sequence)
    return head + bytes((client + sequence + i) & 0xFF for i in range(max(0, size - len(head))))


async def run_load(
    *,
    connections: int = 2000,
    messages: int = 10,
    size: int = 64,
    busy: int = 20,
    busy_seconds: float = 0.5,
    grace: float = 5.0,
    seed: int = 0,
) -> LoadReport:
    """Run the load scenario in the caller's ``trio.run`` (real clock) and report.

    Args:
      connections: Clients connected at once.
      messages: Messages each client sends and checks before the shutdown.
      size: Bytes per message.
      busy: Clients with a request in progress when the shutdown begins.
      busy_seconds: How long the handler takes to answer such a request.
      grace: The shutdown's grace; it must be longer than ``busy_seconds``.
      seed: Seeds which clients are the busy ones.
    """
    if not 0 <= busy <= connections:
        raise ValueError("busy must be between 0 and connections")
    if not grace > busy_seconds:
        raise ValueError("grace must be longer than busy_seconds, or no busy request can finish")
    report = LoadReport(connections=connections, messages=messages, busy=busy, grace=grace)
    old_limit = ensure_fd_limit(_FDS_PER_CONNECTION * connections + _FD_SLACK)
    started = time.perf_counter()
    try:
        with trace_peak_memory() as memory:
            report.tasks_before = count_tasks()
            report.fds_before = open_fd_count()
            await _run(report, size=size, busy_seconds=busy_seconds, seed=seed)
            report.tasks_after = count_tasks()
            report.fds_after = open_fd_count()
        report.peak_traced = memory.growth
    finally:
        if old_limit is not None:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (old_limit, hard))
    report.seconds = time.perf_counter() - started
    _check(report)
    return report


async def _run(report: LoadReport, *, size: int, busy_seconds: float, seed: int) -> None:
    connections, messages = report.connections, report.messages
    busy_clients = set(random.Random(seed).sample(range(connections), report.busy))
    closed_events = 0

    def observe(event: trionet.Event) -> None:
        nonlocal closed_events
        if event.kind == "tcp.closed":
            closed_events += 1

    async def handler(conn: TCPConnection) -> None:
        async for message in conn.channel:
            if message[:1] == _BUSY:
                await trio.sleep(busy_seconds)  # real work, on the real clock
            await conn.channel.send(message)

    connected = trio.Event()
    echoed_all = trio.Event()
    busy_sent = trio.Event()
    counts = {"connected": 0, "echo_done": 0, "busy_sent": 0}
    times = {"first_message": 0.0, "last_echo": 0.0}

    def count(name: str, target: int, event: trio.Event) -> None:
        counts[name] += 1
        if counts[name] == target:
            event.set()

    async def client(index: int, port: int) -> None:
        conn = await trionet.connect_tcp(LOOPBACK_V4, port, codec=LengthPrefixed())
        async with conn:
            count("connected", connections, connected)
            await connected.wait()
            times["first_message"] = times["first_message"] or time.perf_counter()
            for sequence in range(messages):
                expected = _message(index, sequence, size)
                await conn.channel.send(expected)
                if await conn.channel.receive() == expected:
                    report.echoed += 1
                else:
                    report.problems.append(f"client {index}: echo {sequence} corrupted or out of order")
            times["last_echo"] = time.perf_counter()
            count("echo_done", connections, echoed_all)
            if index in busy_clients:
                await echoed_all.wait()
                request = _BUSY + b"%d" % index
                await conn.channel.send(request)
                count("busy_sent", len(busy_clients), busy_sent)
                try:
                    if await conn.channel.receive() == request:
                        report.busy_answered += 1
                except (trio.EndOfChannel, trio.BrokenResourceError) as exc:
                    report.problems.append(f"busy client {index}: connection ended first ({exc!r})")
            # Keep the connection open, quiet, until the server ends it.
            with contextlib.suppress(trio.EndOfChannel, trio.BrokenResourceError):
                extra = await conn.channel.receive()
                report.problems.append(f"client {index}: unexpected message {extra[:20]!r}")

    began = time.perf_counter()
    async with trio.open_nursery() as clients:
        async with trionet.open_tcp_server(
            handler, 0, host=LOOPBACK_V4, codec=LengthPrefixed(), observer=observe,
            shutdown_grace=report.grace,
        ) as server:
            for index in range(connections):
                clients.start_soon(client, index, server.port)
            with trio.move_on_after(120) as connecting:
                await connected.wait()
            if connecting.cancelled_caught:
                report.problems.append(f"{counts['connected']} of {connections} connected in 120 s")
            report.connect_seconds = time.perf_counter() - began
            with trio.move_on_after(300) as echoing:
                await echoed_all.wait()
                if report.busy:
                    await busy_sent.wait()
            if echoing.cancelled_caught:
                report.problems.append(f"{counts['echo_done']} of {connections} finished echoing")
            report.echo_seconds = times["last_echo"] - times["first_message"]
            # Let the busy requests reach their handlers before the shutdown begins.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            stopping = time.perf_counter()
            await server.shutdown(grace=report.grace)
            report.shutdown_seconds = time.perf_counter() - stopping
            statistics = server.statistics()
            report.accepted = statistics.connections_accepted
        report.active_after = server.statistics().connections_active
    report.closed_events = closed_events


def _check(report: LoadReport) -> None:
    problems = report.problems
    expected = report.connections * report.messages
    if report.echoed != expected:
        problems.append(f"{report.echoed:,} of {expected:,} messages echoed")
    if report.busy_answered != report.busy:
        problems.append(f"{report.busy_answered} of {report.busy} busy requests answered before the end")
    if report.shutdown_seconds > report.grace + 1.0:
        problems.append(f"shutdown took {report.shutdown_seconds:.2f} s with grace {report.grace} s")
    if report.active_after != 0:
        problems.append(f"connections_active is {report.active_after} after the server left")
    if report.accepted != report.connections:
        problems.append(f"{report.accepted} connections accepted, {report.connections} made")
    if report.closed_events != report.accepted:
        problems.append(f"{report.closed_events} tcp.closed events for {report.accepted} connections")
    if report.tasks_after != report.tasks_before:
        problems.append(f"tasks before/after: {report.tasks_before}/{report.tasks_after}")
    if report.fds_after != report.fds_before:
        problems.append(f"fds before/after: {report.fds_before}/{report.fds_after}")
