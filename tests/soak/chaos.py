"""Cancellation chaos: many clients and an echo server, cancelled at random on both sides.

Every client opens a :class:`~trionet.MessageChannel` to a
:func:`~trionet.serve_tcp` echo server over loopback and runs two tasks: one
sends its share of the messages, one receives the echoes. The server's handler
receives and echoes. Every ``send()`` and ``receive()``, on both sides, runs
under a ``trio.move_on_after`` with a random timeout (zero, 100 µs, 1 ms, or
none), so cancellations land before, during and after frames, including in the
middle of large frames that fill the socket buffer.

The contract checked, per connection:

* no frame is corrupted (each carries its connection, its sequence number and
  a CRC-32 of its body);
* the server receives exactly the messages whose ``send()`` returned on the
  client, once each and in order; and the client receives exactly the echoes
  whose ``send()`` returned in the handler (a cancelled ``send()`` sent nothing);
* afterwards no task of the run is left over and no file descriptor is open.
"""

from __future__ import annotations

import math
import random
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import trio

from trionet import LengthPrefixed, MessageChannel, TCPConnection, open_tcp_server

from .common import LOOPBACK_V4, capture_logs, count_tasks, open_fd_count

__all__ = ["ChaosReport", "run_chaos"]

# Timeouts drawn for each operation: zero cancels at the first checkpoint, 100 µs
# and 1 ms land in the middle of waits (and of large frames); inf never fires.
_TIMEOUTS: Final = (0.0, 0.0001, 0.001, math.inf)
_TIMEOUT_WEIGHTS: Final = (1, 2, 2, 5)
# Mostly small messages; a few large enough to block the sender mid-frame.
_SMALL_SIZES: Final = (0, 1, 16, 200, 1400)
_LARGE_PROBABILITY: Final = 0.005
_LARGE_SIZES: Final = (64 * 1024, 256 * 1024)
_HEADER: Final = 12  # connection (4), sequence (4), CRC-32 of the body (4)
# Messages a client may have sent that the server has not yet received. Without
# a window, a client fills the kernel's socket buffers (megabytes on loopback)
# and a frame cancelled midway waits behind all of them: under the load of one
# process running 2 x 200 connections that took up to 6 s, near the channel's
# abort_timeout (10 s). Real protocols bound what is in flight, too.
WINDOW: Final = 32


@dataclass
class _Connection:
    client_sent: list[int] = field(default_factory=list)
    server_received: list[int] = field(default_factory=list)
    server_sent: list[int] = field(default_factory=list)
    client_received: list[int] = field(default_factory=list)
    broken: str | None = None  # the first BrokenResourceError on either side
    done: bool = False
    # The client waits here while WINDOW messages are on their way to the server.
    window: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    server_done: bool = False


@dataclass
class ChaosReport:
    """What a chaos run did and saw.

    Attributes:
      clients: Concurrent client connections.
      attempted: Messages the clients tried to send.
      delivered: Messages whose ``send()`` returned on a client.
      echoed: Echoes whose ``send()`` returned in a handler.
      cancelled_client_sends, cancelled_client_receives: Client operations that
          a timeout cancelled.
      cancelled_server_sends, cancelled_server_receives: The same in the handlers.
      sends_finished_after_cancel: ``send()`` calls whose timeout expired once
          the frame was being written: the frame was finished, ``send()``
          returned, and the message must arrive.
      receives_cancelled_with_bytes_buffered: ``receive()`` calls cancelled
          while the channel held received bytes (part of a frame, or frames not
          yet returned); the next call must return them.
      slowest_send_after_cancel: The longest a ``send()`` took to return after
          its timeout fired (finishing its frame), in seconds; the channel
          aborts past ``abort_timeout`` (10 s).
      broken_connections: Connections that ended with
          :exc:`trio.BrokenResourceError`: a frame could not be finished within
          ``abort_timeout`` (which happens only under overload: the peer is
          this same process), and its peer then saw the reset. The contract
          for them: each side received a prefix of what the other's
          ``send()`` returned for, in order, uncorrupted.
      corrupted: Frames whose header or CRC did not match.
      tasks_before, tasks_after: Tasks in the run before the server started and
          after it and every client finished.
      fds_before, fds_after: Open file descriptors, likewise.
      seconds: Wall-clock duration.
      problems: Contract violations; empty when everything held.
    """

    clients: int
    attempted: int
    delivered: int = 0
    echoed: int = 0
    cancelled_client_sends: int = 0
    cancelled_client_receives: int = 0
    cancelled_server_sends: int = 0
    cancelled_server_receives: int = 0
    sends_finished_after_cancel: int = 0
    receives_cancelled_with_bytes_buffered: int = 0
    slowest_send_after_cancel: float = 0.0
    broken_connections: int = 0
    corrupted: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _message(connection: int, sequence: int, rng: random.Random) -> bytes:
    if rng.random() < _LARGE_PROBABILITY:
        body = rng.randbytes(rng.randint(*_LARGE_SIZES))
    else:
        body = rng.randbytes(rng.choice(_SMALL_SIZES))
    header = connection.to_bytes(4, "big") + sequence.to_bytes(4, "big")
    return header + zlib.crc32(body).to_bytes(4, "big") + body


def _parse(message: bytes, connection: int) -> int | None:
    """The message's sequence number, or ``None`` if it is not intact."""
    if len(message) < _HEADER or int.from_bytes(message[:4], "big") != connection:
        return None
    if zlib.crc32(message[_HEADER:]) != int.from_bytes(message[8:12], "big"):
        return None
    return int.from_bytes(message[4:8], "big")


def _timeout(rng: random.Random) -> float:
    return rng.choices(_TIMEOUTS, _TIMEOUT_WEIGHTS)[0]


async def run_chaos(
    *,
    clients: int = 200,
    messages: int = 100_000,
    seed: int = 0,
    time_limit: float = 600.0,
    tls: tuple[ssl.SSLContext, ssl.SSLContext, str] | None = None,
    idle_timeout: float | None = None,
) -> ChaosReport:
    """Run the scenario in the current ``trio.run`` (real clock) and report.

    Args:
      clients: Concurrent connections.
      messages: Messages in total, spread evenly over the clients.
      seed: Seeds the message sizes and the timeouts (the interleaving, on real
          sockets, is not reproducible).
      time_limit: Fail (``trio.TooSlowError``) if the run takes longer.
      tls: ``(server_context, client_context, server_hostname)`` to run over
          TLS, where the channel cannot see partial writes and shields whole
          ``send_all`` calls instead.
      idle_timeout: The server's ``idle_timeout`` (it wraps each connection's
          stream to track activity); long enough never to fire.
    """
    report = ChaosReport(clients=clients, attempted=messages)
    codec = LengthPrefixed(max_size=_LARGE_SIZES[1] + _HEADER)
    connections = [_Connection() for _ in range(clients)]
    shares = [messages // clients + (i < messages % clients) for i in range(clients)]

    def finished_after_cancel(scope: trio.CancelScope) -> None:
        # A send() that returned although its timeout fired: the frame was
        # finished (and must arrive); the cancellation comes at the next checkpoint.
        if scope.cancel_called and not scope.cancelled_caught:
            report.sends_finished_after_cancel += 1
            late = trio.current_time() - scope.deadline
            report.slowest_send_after_cancel = max(report.slowest_send_after_cancel, late)

    async def handler(conn: TCPConnection) -> None:
        channel = conn.channel
        hello = await channel.receive()
        index = int.from_bytes(hello, "big")
        log = connections[index]
        try:
            await channel.send(b"ready")
            await echo(channel, index, log)
        except trio.BrokenResourceError as exc:
            log.broken = log.broken or f"server: {exc}"
        finally:
            log.server_done = True
            log.window.unpark_all()

    async def echo(channel: MessageChannel, index: int, log: _Connection) -> None:
        rng = random.Random(f"{seed}/server/{index}")
        while True:
            with trio.move_on_after(_timeout(rng)) as scope:
                try:
                    message = await channel.receive()
                except trio.EndOfChannel:
                    return
                if not message:
                    return
            if scope.cancelled_caught:
                report.cancelled_server_receives += 1
                buffered = channel.statistics().buffered_bytes
                report.receives_cancelled_with_bytes_buffered += buffered > 0
                continue
            sequence = _parse(message, index)
            if sequence is None:
                report.corrupted += 1
                continue
            log.server_received.append(sequence)
            log.window.unpark_all()
            with trio.move_on_after(_timeout(rng)) as scope:
                await channel.send(message)
                # No checkpoint between a send() that returned and this line.
                log.server_sent.append(sequence)
            report.cancelled_server_sends += scope.cancelled_caught
            finished_after_cancel(scope)

    async def client(index: int, port: int) -> None:
        log = connections[index]
        rng = random.Random(f"{seed}/client/{index}")
        stream: trio.abc.Stream = await trio.open_tcp_stream(LOOPBACK_V4, port)
        if tls is not None:
            stream = trio.SSLStream(stream, tls[1], server_hostname=tls[2])
        async with MessageChannel(stream, codec) as channel:
            # Start once the handler runs: under load a server accepts one
            # connection per scheduler pass, and a frame cut short by a
            # cancellation while the connection still waits in the backlog
            # could not be finished within abort_timeout (see reliability.rst).
            await channel.send(index.to_bytes(4, "big"))
            if await channel.receive() != b"ready":
                report.corrupted += 1

            async def send_share() -> None:
                for sequence in range(shares[index]):
                    while (
                        len(log.client_sent) - len(log.server_received) >= WINDOW
                        and not log.server_done
                    ):
                        await log.window.park()
                    message = _message(index, sequence, rng)
                    with trio.move_on_after(_timeout(rng)) as scope:
                        await channel.send(message)
                        log.client_sent.append(sequence)
                    report.cancelled_client_sends += scope.cancelled_caught
                    finished_after_cancel(scope)
                if tls is None:
                    await channel.send_eof()
                else:
                    await channel.send(b"")  # TLS cannot half-close: an empty message ends

            async def receive_echoes() -> None:
                receive_rng = random.Random(f"{seed}/client-receive/{index}")
                while True:
                    with trio.move_on_after(_timeout(receive_rng)) as scope:
                        try:
                            message = await channel.receive()
                        except trio.EndOfChannel:
                            return
                        sequence = _parse(message, index)
                        if sequence is None:
                            report.corrupted += 1
                        else:
                            log.client_received.append(sequence)
                    if scope.cancelled_caught:
                        report.cancelled_client_receives += 1
                        buffered = channel.statistics().buffered_bytes
                        report.receives_cancelled_with_bytes_buffered += buffered > 0

            async def until_broken(task: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
                try:
                    await task()
                except trio.BrokenResourceError as exc:
                    log.broken = log.broken or f"client: {exc}"
                    nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_broken, send_share, nursery)
                nursery.start_soon(until_broken, receive_echoes, nursery)
        log.done = True

    report.fds_before = open_fd_count()
    report.tasks_before = count_tasks()
    started = time.perf_counter()
    with capture_logs() as logs, trio.fail_after(time_limit):
        async with open_tcp_server(
            handler, 0, host=LOOPBACK_V4, codec=codec, idle_timeout=idle_timeout,
            ssl_context=None if tls is None else tls[0],
        ) as server:
            async with trio.open_nursery() as nursery:
                for index in range(clients):
                    nursery.start_soon(client, index, server.port)
            statistics = server.statistics()
    report.seconds = time.perf_counter() - started
    report.tasks_after = count_tasks()
    report.fds_after = open_fd_count()

    for index, log in enumerate(connections):
        report.delivered += len(log.client_sent)
        report.echoed += len(log.server_sent)
        if not log.done:
            report.problems.append(f"connection {index} did not finish")
        if log.broken is not None:
            report.broken_connections += 1
            for kind, got, sent in (
                ("server", log.server_received, log.client_sent),
                ("client", log.client_received, log.server_sent),
            ):
                if got != sent[: len(got)]:
                    report.problems.append(
                        f"broken connection {index} ({log.broken}): the {kind} received "
                        f"{_describe(got)}, not a prefix of {_describe(sent)}"
                    )
            continue
        if log.server_received != log.client_sent:
            report.problems.append(
                f"connection {index}: the server received {_describe(log.server_received)}, "
                f"the client's send() returned for {_describe(log.client_sent)}"
            )
        if log.client_received != log.server_sent:
            report.problems.append(
                f"connection {index}: the client received {_describe(log.client_received)}, "
                f"the handler's send() returned for {_describe(log.server_sent)}"
            )
    if report.corrupted:
        report.problems.append(f"{report.corrupted} corrupted frames")
    if statistics.handler_errors:
        report.problems.append(f"{statistics.handler_errors} handlers raised")
    if report.tasks_after != report.tasks_before:
        report.problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
    if report.fds_after != report.fds_before:
        report.problems.append(f"file descriptors: {report.fds_before} before, {report.fds_after} after")
    report.problems.extend(logs.above(0))
    return report


def _describe(sequences: list[int]) -> str:
    head = ", ".join(map(str, sequences[:8]))
    return f"{len(sequences)} messages [{head}{', ...' if len(sequences) > 8 else ''}]"

