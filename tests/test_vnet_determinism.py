"""The same program on the same seed gives the same trace, simultaneous steps included (issue 17.6).

connect_tcp looks up AAAA and A in two tasks woken at the same virtual
instant; trio runs such tasks in a shuffled order on purpose, which made the
trace of a seeded network differ between runs (16 one way and 4 the other in
20). ``VirtualNetwork.install()`` seeds the scheduler's tie-breaking from the
network's seed.
"""

from __future__ import annotations

import trio
import trio.testing

import trionet
from trionet import TCPConnection
from trionet.testing import VirtualNetwork

RUNS = 50


async def greet(conn: TCPConnection) -> None:
    await conn.stream.send_all(b"hello")


async def scenario(seed: int) -> str:
    net = VirtualNetwork(seed=seed)
    net.add_host("server", "10.0.0.1", "fd00::1")
    net.add_host("client", "10.0.0.2", "fd00::2")
    net.set_dns("example.test", "10.0.0.1", "fd00::1")
    net.link("client", "server", latency=0.001, jitter=0.0005)
    with net.install():
        with net.host("server"):
            server_cm = trionet.open_tcp_server(greet, 80, shutdown_grace=0)
            await server_cm.__aenter__()
        try:
            with net.host("client"):
                async with trio.open_nursery() as nursery:
                    for _ in range(3):  # three clients at the same instant
                        nursery.start_soon(connect_and_read)
        finally:
            await server_cm.__aexit__(None, None, None)
    return "\n".join(map(str, net.trace))


async def connect_and_read() -> None:
    async with await trionet.connect_tcp("example.test", 80) as conn:
        assert await conn.stream.receive_some() == b"hello"


def run(seed: int) -> str:
    return trio.run(scenario, seed, clock=trio.testing.MockClock(autojump_threshold=0))


def test_fifty_runs_of_a_seeded_scenario_with_simultaneous_events_give_one_trace() -> None:
    traces = {run(seed=7) for _ in range(RUNS)}
    assert len(traces) == 1
    (trace,) = traces
    assert trace.count("dns.resolve") == 2  # the AAAA and A lookups, at the same instant

