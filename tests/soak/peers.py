"""Slow and idle peers: slow-loris connections and silent ones, against a guarded server.

A :func:`~trionet.serve_tcp` echo server runs over loopback with ``idle_timeout``
and ``frame_timeout``. Then ``slow`` clients each trickle a frame one byte per
second (a slow loris: never idle, never finishing a frame) and ``idle`` clients
connect and send nothing. While they hold their connections, a well-behaved
client connects every few seconds and must get its echo within a deadline.

Checked: every slow loris is shed ``frame_timeout`` after its first byte (its
handler's ``receive()`` raises :exc:`~trionet.FrameTimeout`), every silent peer
``idle_timeout`` after it connected (reported as a ``tcp.shed`` event with
reason ``idle_timeout``), every probe is served within its deadline, nothing is
logged above WARNING, and no task or file descriptor is left over.

Time is virtual: the caller runs this under
``trio.testing.MockClock(autojump_threshold=0)``, so the run takes seconds of
wall time for minutes of the clock. The sockets are real.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio
import trio.testing

from trionet import (
    EventLog,
    FrameTimeout,
    LengthPrefixed,
    MessageChannel,
    TCPConnection,
    TCPServer,
    open_tcp_server,
)

from .common import LOOPBACK_V4, capture_logs, count_tasks, ensure_fd_limit, open_fd_count

TLSContexts = tuple[ssl.SSLContext, ssl.SSLContext, str]

__all__ = ["PeersReport", "descriptors_needed", "run_slow_and_idle"]

#: The frame each slow loris trickles: a header announcing 1000 bytes, then them.
_SLOW_FRAME: Final = LengthPrefixed().encode(b"s" * 1000)
#: Seconds between two bytes of a slow loris.
SLOW_INTERVAL: Final = 1.0
#: Slack on the shed times: the timers are exact, the sockets add a clock tick.
_SLACK: Final = 1.5


@dataclass
class PeersReport:
    """What a slow-and-idle run did and saw.

    Attributes:
      slow, idle: How many peers of each kind attacked.
      slow_shed_after: For each slow loris, virtual seconds from its first byte
          to the server closing the connection.
      idle_shed_after: For each silent peer, from connecting to being closed.
      frame_timeouts: Handlers whose ``receive()`` raised FrameTimeout.
      idle_sheds: ``tcp.shed`` events with reason ``idle_timeout``.
      probe_latencies: Virtual seconds each well-behaved probe took (connect,
          send, receive the echo).
      virtual_seconds: How much of the clock the run took.
      seconds: Wall-clock duration.
      tasks_before, tasks_after, fds_before, fds_after: Resource counts.
      problems: Contract violations; empty when everything held.
    """

    slow: int
    idle: int
    slow_shed_after: list[float] = field(default_factory=list)
    idle_shed_after: list[float] = field(default_factory=list)
    frame_timeouts: int = 0
    idle_sheds: int = 0
    probe_latencies: list[float] = field(default_factory=list)
    virtual_seconds: float = 0.0
    seconds: float = 0.0
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    problems: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _plain_twin(
    server: TCPServer, echo: Callable[[TCPConnection], Awaitable[None]], tls: TLSContexts | None
) -> AsyncIterator[TCPServer]:
    # Probes are plain TCP; with TLS they go to a second server in the same run.
    if tls is None:
        yield server
        return
    async with open_tcp_server(echo, 0, host=LOOPBACK_V4, codec=LengthPrefixed()) as twin:
        yield twin


def descriptors_needed(slow: int, idle: int) -> int:
    """File descriptors the run opens at once: both ends of every connection, and slack."""
    return 2 * (slow + idle) + 256


async def _connect(port: int, tls: TLSContexts | None) -> trio.abc.Stream:
    tcp = await trio.open_tcp_stream(LOOPBACK_V4, port)
    if tls is None:
        return tcp
    stream = trio.SSLStream(tcp, tls[1], server_hostname=tls[2])
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def _slow_loris(port: int, report: PeersReport, tls: TLSContexts | None) -> None:
    stream = await _connect(port, tls)
    first_byte_at = trio.current_time()

    async def trickle() -> None:
        for index in range(len(_SLOW_FRAME)):
            await stream.send_all(_SLOW_FRAME[index : index + 1])
            await trio.sleep(SLOW_INTERVAL)

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass  # closed with our last byte unread: a reset
        report.slow_shed_after.append(trio.current_time() - first_byte_at)
        nursery.cancel_scope.cancel()


async def _silent(port: int, report: PeersReport, tls: TLSContexts | None) -> None:
    stream = await _connect(port, tls)
    connected_at = trio.current_time()
    async with stream:
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
        report.idle_shed_after.append(trio.current_time() - connected_at)


async def _probe(port: int, deadline: float, report: PeersReport) -> None:
    start = trio.current_time()
    with trio.move_on_after(deadline):
        stream = await trio.open_tcp_stream(LOOPBACK_V4, port)
        async with MessageChannel(stream) as channel:
            await channel.send(b"are you there?")
            if await channel.receive() == b"are you there?":
                report.probe_latencies.append(trio.current_time() - start)
                return
    report.problems.append(f"a well-behaved client was not served within {deadline} s at t={start:.1f}")


async def run_slow_and_idle(
    *,
    slow: int = 500,
    idle: int = 500,
    frame_timeout: float = 10.0,
    idle_timeout: float = 30.0,
    probe_every: float = 2.5,
    probe_deadline: float = 1.0,
    tls: TLSContexts | None = None,
) -> PeersReport:
    """Run the scenario in the current ``trio.run``, which must use a MockClock.

    Args:
      slow: Slow-loris peers.
      idle: Silent peers.
      frame_timeout: The server's ``frame_timeout``.
      idle_timeout: The server's ``idle_timeout``; larger than ``frame_timeout``
          and than ``SLOW_INTERVAL``, so that only the frame timeout sheds a
          slow loris.
      probe_every: Virtual seconds between two well-behaved probes.
      probe_deadline: Virtual seconds a probe may take.
      tls: ``(server_context, client_context, server_hostname)`` to run every
          connection over TLS (the peers complete the handshake, then trickle
          or stay silent; probes stay plain TCP on a second server).

    Raises:
      OSError: RLIMIT_NOFILE cannot be raised high enough (see
          :func:`descriptors_needed`).
      RuntimeError: The clock is not a ``trio.testing.MockClock``.
    """
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError("run_slow_and_idle needs trio.testing.MockClock(autojump_threshold=0)")
    report = PeersReport(slow=slow, idle=idle)
    ensure_fd_limit(descriptors_needed(slow, idle))
    sheds = EventLog(kinds=("tcp.shed",))

    async def echo(conn: TCPConnection) -> None:
        try:
            async for message in conn.channel:
                await conn.channel.send(message)
        except FrameTimeout:
            report.frame_timeouts += 1
            raise

    report.fds_before = open_fd_count()
    report.tasks_before = count_tasks()
    started, clock_started = time.perf_counter(), trio.current_time()
    attack_ends = clock_started + idle_timeout + frame_timeout + 10 * _SLACK
    with capture_logs() as logs, trio.fail_after(2 * attack_ends):
        async with open_tcp_server(
            echo, 0, host=LOOPBACK_V4, codec=LengthPrefixed(),
            idle_timeout=idle_timeout, frame_timeout=frame_timeout, observer=sheds,
            ssl_context=None if tls is None else tls[0],
        ) as server, _plain_twin(server, echo, tls) as probed:
            async with trio.open_nursery() as attackers:
                for index in range(max(slow, idle)):
                    if index < slow:
                        attackers.start_soon(_slow_loris, server.port, report, tls)
                    if index < idle:
                        attackers.start_soon(_silent, server.port, report, tls)
                    await trio.lowlevel.checkpoint()
                # Probe while the attackers hold their connections, and after.
                while trio.current_time() < attack_ends:
                    await _probe(probed.port, probe_deadline, report)
                    await trio.sleep(probe_every)
            if server.connection_count:
                report.problems.append(f"{server.connection_count} connections still open")
            report.idle_sheds = sum(event.details.get("reason") == "idle_timeout" for event in sheds)
    report.seconds = time.perf_counter() - started
    report.virtual_seconds = trio.current_time() - clock_started
    report.tasks_after = count_tasks()
    report.fds_after = open_fd_count()
    _check(report, frame_timeout, idle_timeout, logs.above(logging.WARNING))
    return report


def _check(report: PeersReport, frame_timeout: float, idle_timeout: float, loud: list[str]) -> None:
    problems = report.problems
    for kind, count, times, timeout in (
        ("slow loris", report.slow, report.slow_shed_after, frame_timeout),
        ("silent peer", report.idle, report.idle_shed_after, idle_timeout),
    ):
        if len(times) != count:
            problems.append(f"{len(times)} of {count} {kind} connections were closed")
        late = [t for t in times if not timeout <= t <= timeout + _SLACK]
        if late:
            problems.append(
                f"{len(late)} {kind} connections closed outside [{timeout}, {timeout + _SLACK}] s: "
                f"{sorted(late)[:3]}...{sorted(late)[-3:]}"
            )
    if report.frame_timeouts != report.slow:
        problems.append(f"{report.frame_timeouts} FrameTimeout in handlers for {report.slow} slow lorises")
    if report.idle_sheds != report.idle:
        problems.append(f"{report.idle_sheds} idle_timeout sheds for {report.idle} silent peers")
    if not report.probe_latencies:
        problems.append("no probe was served")
    problems.extend(f"logged for a bad peer: {line}" for line in loud)
    if report.tasks_after != report.tasks_before:
        problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
    if report.fds_after != report.fds_before:
        problems.append(f"file descriptors: {report.fds_before} before, {report.fds_after} after")
