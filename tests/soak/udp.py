"""UDP under loss: many requests over a lossy, duplicating virtual network.

A :func:`~trionet.serve_udp` server with duplicate suppression (``request_key``:
the request id) answers clients on trionet's virtual network, whose link loses
and duplicates datagrams at random (both ways). Clients send ``requests``
requests, each with a unique id, through :meth:`UDPEndpoint.request
<trionet.UDPEndpoint.request>` with a retry policy, many at once.

Checked: every request gets the reply to itself; the handler runs exactly
once per request id (a retransmission or a duplicated datagram is answered from
the reply cache, or dropped while the first copy is being handled); loss and
duplication really happened (the network dropped and duplicated datagrams, the
clients retransmitted, the server replayed replies); no task is left over.

Time is virtual: the caller runs this under
``trio.testing.MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio
import trio.testing

from trionet import (
    Datagram,
    RetryPolicy,
    UDPEndpoint,
    match_bytes,
    open_udp_endpoint,
    open_udp_server,
)
from trionet.testing import VirtualNetwork

from .common import capture_logs, count_tasks, open_fd_count, trace_peak_memory

__all__ = ["CancelReport", "UdpReport", "run_request_cancellations", "run_udp_under_loss"]

_SERVER: Final = ("10.0.0.1", 7)
_LATENCY: Final = 0.010
_JITTER: Final = 0.005


@dataclass
class UdpReport:
    """What a UDP-under-loss run did and saw.

    Attributes:
      requests: Requests made.
      loss, duplicate: The link's loss and duplication probabilities.
      replies: Requests that got their own reply.
      handler_runs: Handler invocations in all.
      handled_twice: Request ids whose handler ran more than once.
      retransmissions: Retransmissions by the clients.
      duplicates_replayed: Requests the server answered from its reply cache.
      duplicates_dropped: Requests dropped while their first copy was handled.
      datagrams_sent, datagrams_dropped, datagrams_delivered: The network's
          counters (duplicates count as delivered).
      virtual_seconds: How much of the clock the run took.
      seconds: Wall-clock duration.
      tasks_before, tasks_after: Resource counts.
      problems: Contract violations; empty when everything held.
    """

    requests: int
    loss: float
    duplicate: float
    replies: int = 0
    handler_runs: int = 0
    handled_twice: int = 0
    retransmissions: int = 0
    duplicates_replayed: int = 0
    duplicates_dropped: int = 0
    datagrams_sent: int = 0
    datagrams_dropped: int = 0
    datagrams_delivered: int = 0
    virtual_seconds: float = 0.0
    seconds: float = 0.0
    tasks_before: int = 0
    tasks_after: int = 0
    problems: list[str] = field(default_factory=list)


def _answers(request_id: bytes) -> Callable[[Datagram], bool]:
    return lambda datagram: datagram.data.split(b" ", 1)[0] == request_id


async def run_udp_under_loss(
    *,
    requests: int = 10_000,
    endpoints: int = 10,
    outstanding: int = 10,
    loss: float = 0.2,
    duplicate: float = 0.05,
    seed: int = 0,
    deduplicate: bool = True,
) -> UdpReport:
    """Run the scenario in the current ``trio.run``, which must use a MockClock.

    Args:
      requests: Requests in all, each with its own id.
      endpoints: Client endpoints (each a socket of its own).
      outstanding: Requests in flight per endpoint at once.
      loss: Probability that the link loses a datagram, each way.
      duplicate: Probability that it delivers a datagram twice.
      seed: Seeds the network and the retry jitter.
      deduplicate: Give the server a ``request_key``. Without it the handler
          runs again for retransmissions, which the check reports: a control
          that shows the check can fail.

    Raises:
      RuntimeError: The clock is not a ``trio.testing.MockClock``.
    """
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError("run_udp_under_loss needs trio.testing.MockClock(autojump_threshold=0)")
    report = UdpReport(requests=requests, loss=loss, duplicate=duplicate)
    net = VirtualNetwork(seed=seed, trace=False)
    net.add_host("server", _SERVER[0])
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=_LATENCY, jitter=_JITTER, loss=loss, duplicate=duplicate)
    # Patient enough that losing every copy of a request and its reply 30
    # times over (0.36 ** 30 at 20% loss each way) does not happen.
    policy = RetryPolicy(
        initial_timeout=0.1, max_timeout=2.0, max_attempts=30, rng=random.Random(seed).random
    )
    runs: collections.Counter[bytes] = collections.Counter()
    wrong: list[str] = []

    async def handle(datagram: Datagram) -> bytes:
        request_id = datagram.data.split(b" ", 1)[0]
        runs[request_id] += 1
        return request_id + b" done"

    async def client(endpoint: UDPEndpoint, ids: range) -> None:
        for number in ids:
            request_id = b"%06d" % number
            reply = await endpoint.request(
                request_id + b" work", _SERVER, policy=policy, match=_answers(request_id)
            )
            if reply.data == request_id + b" done":
                report.replies += 1
            else:
                wrong.append(f"request {request_id!r} got {reply.data!r}")

    report.tasks_before = count_tasks()
    started, clock_started = time.perf_counter(), trio.current_time()
    with capture_logs() as logs, net.install(), trio.fail_after(3600), net.host("server"):
        async with open_udp_server(
            handle, _SERVER[1],
            request_key=(lambda d: d.data.split(b" ", 1)[0]) if deduplicate else None,
            # Remember every reply for the whole run: more requests than the
            # cache holds, with retransmissions still coming, would be
            # handled again after eviction (as documented).
            reply_cache_size=max(requests, 1),
        ) as server:
            with net.host("client"):
                async with contextlib.AsyncExitStack() as stack:
                    opened = [
                        await stack.enter_async_context(
                            open_udp_endpoint(max_outstanding_per_peer=outstanding)
                        )
                        for _ in range(endpoints)
                    ]
                    lanes = endpoints * outstanding
                    async with trio.open_nursery() as nursery:
                        for lane in range(lanes):
                            nursery.start_soon(
                                client, opened[lane % endpoints], range(lane, requests, lanes)
                            )
                    report.retransmissions = sum(e.statistics().retransmissions for e in opened)
            statistics = server.statistics()
        network = net.statistics()
    report.seconds = time.perf_counter() - started
    report.virtual_seconds = trio.current_time() - clock_started
    report.tasks_after = count_tasks()
    report.handler_runs = sum(runs.values())
    report.handled_twice = sum(count > 1 for count in runs.values())
    report.duplicates_replayed = statistics.duplicates_replayed
    report.duplicates_dropped = statistics.duplicates_dropped
    report.datagrams_sent = network.datagrams_sent
    report.datagrams_dropped = network.datagrams_dropped
    report.datagrams_delivered = network.datagrams_delivered
    problems = report.problems
    problems.extend(wrong[:10])
    if report.replies != requests:
        problems.append(f"{report.replies} of {requests} requests got their reply")
    missing = requests - len(runs)
    if missing:
        problems.append(f"the handler never ran for {missing} requests")
    if report.handled_twice:
        twice = [key for key, count in runs.items() if count > 1][:5]
        problems.append(f"the handler ran more than once for {report.handled_twice} requests: {twice}")
    if loss and not report.retransmissions:
        problems.append("no retransmission: the network lost nothing?")
    if duplicate and not report.datagrams_delivered > report.datagrams_sent - report.datagrams_dropped:
        problems.append("no datagram was duplicated")
    problems.extend(f"logged: {line}" for line in logs.above(logging.WARNING))
    if report.tasks_after != report.tasks_before:
        problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
    return report


@dataclass
class CancelReport:
    """What :func:`run_request_cancellations` did and saw.

    Attributes:
      requests: Requests started (each cancelled at a random moment).
      cancelled: Requests whose cancel scope caught the cancellation.
      transmissions: Datagrams the silent peer received (first copies and
          retransmissions).
      seconds: Wall-clock duration.
      peak_memory: Peak traced Python allocation above the start, in bytes.
      fds_before, fds_after, tasks_before, tasks_after: Resource counts.
      problems: Contract violations; empty when everything held.
    """

    requests: int
    cancelled: int = 0
    transmissions: int = 0
    seconds: float = 0.0
    peak_memory: int = 0
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    problems: list[str] = field(default_factory=list)


async def run_request_cancellations(*, requests: int = 1000, seed: int = 0) -> CancelReport:
    """Cancel ``request()`` at random moments during its retransmissions (issue 12.7).

    Real loopback sockets and the real clock (run it under a plain ``trio.run``,
    never an autojump MockClock): a silent peer that never answers, one
    endpoint, a retry policy of 1 ms first timeout, and each request cancelled
    after a random 0 to 6 ms, so most are cancelled while waiting after their
    first, second or third transmission. Checked: every request ended by its
    cancellation, the endpoint has no request left active, and file
    descriptors and tasks are the same before and after.
    """
    report = CancelReport(requests=requests)
    rng = random.Random(seed)
    policy = RetryPolicy(initial_timeout=0.001, multiplier=2.0, max_attempts=50,
                         max_timeout=0.004, rng=rng.random)
    report.fds_before, report.tasks_before = open_fd_count(), count_tasks()
    started = time.perf_counter()
    with trace_peak_memory() as memory, trio.fail_after(120), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        target = silent.getsockname()
        async with open_udp_endpoint("127.0.0.1:0") as endpoint:
            for _ in range(requests):
                with trio.move_on_after(rng.uniform(0, 0.006)) as scope:
                    await endpoint.request(b"never answered", target, policy=policy,
                                           match=match_bytes(0, 5))
                if scope.cancelled_caught:
                    report.cancelled += 1
                while True:  # count and discard what reached the peer
                    try:
                        silent.recv(2048)
                    except BlockingIOError:
                        break
                    report.transmissions += 1
            if endpoint.statistics().requests_active:
                report.problems.append("requests still active after every cancellation")
    report.seconds = time.perf_counter() - started
    report.peak_memory = memory.growth
    report.fds_after, report.tasks_after = open_fd_count(), count_tasks()
    if report.cancelled != requests:
        report.problems.append(f"{requests - report.cancelled} requests ended otherwise")
    if report.transmissions <= requests:
        report.problems.append("no retransmission happened before the cancellations")
    if report.fds_after != report.fds_before:
        report.problems.append(f"fds: {report.fds_before} before, {report.fds_after} after")
    if report.tasks_after != report.tasks_before:
        report.problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
    return report
