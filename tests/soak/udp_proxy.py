"""``serve_udp`` behind a lossy, duplicating proxy on real loopback sockets.

A small UDP proxy task sits between the clients and a :func:`~trionet.serve_udp`
server with duplicate suppression (``request_key``). It forwards each datagram,
in both directions, with a seeded random choice: dropped (``loss``), sent twice
(``duplicate``) or sent once. Clients, each an endpoint of its own, send
``requests`` requests with unique ids through ``request()`` with a matcher on
the id, the proxy in front of the server as their peer.

Checked: every request got the reply to itself (the server's answer to that
request's bytes); the handler ran exactly once per request id although the proxy
dropped and duplicated datagrams and the clients retransmitted; the proxy really
dropped and duplicated; no task or file descriptor is left over. The real clock:
run it under a plain ``trio.run``.
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from trionet import Datagram, RetryPolicy, open_udp_endpoint, open_udp_server

from .common import LOOPBACK_V4, count_tasks, open_fd_count, trace_peak_memory

__all__ = ["ProxyReport", "run_udp_behind_proxy"]

_MAX_DATAGRAM: Final = 2048
#: The first wait: a few loopback round trips, so that loss, not the timer, rules.
_INITIAL_TIMEOUT: Final = 0.02


@dataclass
class ProxyReport:
    """What a run behind the lossy proxy did and saw.

    Attributes:
      requests, clients: Requests made, and the endpoints that made them.
      loss, duplicate: The proxy's drop and duplication probabilities, each way.
      answered: Requests that got the right reply.
      handler_runs: Handler invocations in all.
      handled_twice: Request ids whose handler ran more than once.
      forwarded, dropped, duplicated: What the proxy did with the datagrams it got.
      retransmissions: Requests' transmissions beyond their first.
      seconds: Wall-clock duration.
      peak_memory: Peak traced Python allocations above the start, in bytes.
      fds_before, fds_after, tasks_before, tasks_after: Resource counts.
      problems: Contract violations; empty when everything held.
    """

    requests: int
    clients: int
    loss: float
    duplicate: float
    answered: int = 0
    handler_runs: int = 0
    handled_twice: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    retransmissions: int = 0
    seconds: float = 0.0
    peak_memory: int = 0
    fds_before: int = 0
    fds_after: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    problems: list[str] = field(default_factory=list)


class _LossyProxy:
    """Forwards datagrams between clients and one server, dropping and duplicating some.

    Each client address gets an upstream socket of its own, so the server's
    replies can be sent back to the client they belong to.
    """

    def __init__(self, server: tuple[str, int], report: ProxyReport, rng: random.Random) -> None:
        self.server = server
        self.report = report
        self.rng = rng
        self.front = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.upstream: dict[Any, trio.socket.SocketType] = {}

    async def bind(self) -> tuple[str, int]:
        await self.front.bind((LOOPBACK_V4, 0))
        address: tuple[str, int] = self.front.getsockname()
        return address

    async def _forward(self, sock: trio.socket.SocketType, data: bytes, to: Any) -> None:
        self.report.forwarded += 1
        draw = self.rng.random()
        if draw < self.report.loss:
            self.report.dropped += 1
            return
        copies = 2 if draw < self.report.loss + self.report.duplicate else 1
        self.report.duplicated += copies - 1
        for _ in range(copies):
            await sock.sendto(data, to)

    async def _replies(self, client: Any, upstream: trio.socket.SocketType) -> None:
        while True:
            data = await upstream.recv(_MAX_DATAGRAM)
            await self._forward(self.front, data, client)

    async def run(self, nursery: trio.Nursery) -> None:
        while True:
            data, client = await self.front.recvfrom(_MAX_DATAGRAM)
            upstream = self.upstream.get(client)
            if upstream is None:
                upstream = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
                await upstream.connect(self.server)
                self.upstream[client] = upstream
                nursery.start_soon(self._replies, client, upstream)
            await self._forward(upstream, data, self.server)

    def close(self) -> None:
        self.front.close()
        for upstream in self.upstream.values():
            upstream.close()


async def run_udp_behind_proxy(
    *,
    requests: int = 2000,
    clients: int = 50,
    loss: float = 0.3,
    duplicate: float = 0.1,
    seed: int = 0,
    deduplicate: bool = True,
) -> ProxyReport:
    """Run the scenario in the caller's ``trio.run`` (real clock) and report.

    ``deduplicate=False`` runs the server without ``request_key``: the control
    run, in which retransmissions and duplicates run the handler again.
    """
    report = ProxyReport(requests=requests, clients=clients, loss=loss, duplicate=duplicate)
    rng = random.Random(seed)
    runs: collections.Counter[bytes] = collections.Counter()
    report.fds_before, report.tasks_before = open_fd_count(), count_tasks()
    started = time.perf_counter()

    async def handler(datagram: Datagram) -> bytes:
        request_id = datagram.data.split(b":", 1)[0]
        runs[request_id] += 1
        return b"ok:" + bytes(datagram.data)

    def request_key(datagram: Datagram) -> bytes:
        return bytes(datagram.data.split(b":", 1)[0])

    # Success needs both directions: 0.49 a try at 30 % loss; 30 tries fail
    # together with a probability of about 1e-9.
    policy = RetryPolicy(initial_timeout=_INITIAL_TIMEOUT, max_timeout=0.2, max_attempts=30,
                         rng=rng.random)

    async def client(index: int, proxy_address: tuple[str, int]) -> None:
        async with open_udp_endpoint(f"{LOOPBACK_V4}:0") as endpoint:
            for number in range(index, requests, clients):
                request = b"%d:request %d from client %d" % (number, number, index)
                expected = b"ok:" + request

                def match(reply: Datagram, expected: bytes = expected) -> bool:
                    return bytes(reply.data) == expected

                reply = await endpoint.request(request, proxy_address, policy=policy, match=match)
                if bytes(reply.data) == expected:
                    report.answered += 1
                else:
                    report.problems.append(f"request {number} got {bytes(reply.data)[:40]!r}")
            report.retransmissions += endpoint.statistics().retransmissions

    with trace_peak_memory() as memory, trio.fail_after(300):
        async with open_udp_server(handler, 0, host=LOOPBACK_V4, shutdown_grace=1.0,
                                   request_key=request_key if deduplicate else None) as server:
            proxy = _LossyProxy((LOOPBACK_V4, server.port), report, rng)
            try:
                proxy_address = await proxy.bind()
                async with trio.open_nursery() as proxying:
                    proxying.start_soon(proxy.run, proxying)
                    async with trio.open_nursery() as clients_nursery:
                        for index in range(clients):
                            clients_nursery.start_soon(client, index, proxy_address)
                    proxying.cancel_scope.cancel()
            finally:
                proxy.close()
    report.seconds = time.perf_counter() - started
    report.peak_memory = memory.growth
    report.handler_runs = sum(runs.values())
    report.handled_twice = sum(1 for count in runs.values() if count > 1)
    report.fds_after, report.tasks_after = open_fd_count(), count_tasks()
    _check(report)
    return report


def _check(report: ProxyReport) -> None:
    problems = report.problems
    if report.answered != report.requests:
        problems.append(f"{report.answered} of {report.requests} requests answered correctly")
    if report.handled_twice:
        problems.append(f"{report.handled_twice} request ids handled more than once")
    if report.handler_runs != report.requests:
        problems.append(f"{report.handler_runs} handler runs for {report.requests} requests")
    if report.loss and report.dropped == 0:
        problems.append("the proxy dropped nothing")
    if report.duplicate and report.duplicated == 0:
        problems.append("the proxy duplicated nothing")
    if report.fds_after != report.fds_before:
        problems.append(f"fds: {report.fds_before} before, {report.fds_after} after")
    if report.tasks_after != report.tasks_before:
        problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
