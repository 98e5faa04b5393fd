"""What a test on the virtual network costs: many connections, the virtual network against real loopback.

Run from the repository root::

    .venv/bin/python -m benchmarks.vnet_connections            # 3 runs per cell, about 1 minute
    .venv/bin/python -m benchmarks.vnet_connections --quick    # seconds; numbers meaningless

One program, written with :mod:`trio.socket` only, runs twice per cell: on real
loopback (``127.0.0.1``, trio's own clock) and on a
:class:`~trionet.testing.VirtualNetwork` (hosts ``server`` and ``client``, a
1 ms link, ``MockClock(autojump_threshold=0)``). A server task accepts and
echoes; N client tasks are started at once, each connects, sends 16 bytes and
reads them back 5 times (``send()`` / ``recv()`` per message on both sides), and
closes. The figure is the wall time from the first connect to the last close,
divided by N; set-up (the network, the listener) is not timed.

The ratio virtual / real says how much slower a test on the virtual network
runs than the same test on loopback, and its growth with N says whether the
simulation stays linear in the number of connections (the port lookup for a
new connection, for instance, must not scan the connections already accepted).

A second table keeps M connections open and idle (each server task waiting in
``recv()``) while one more connection makes 500 round trips of 16 bytes
(``send()`` / ``recv()`` per message on both sides): the wall time per round
trip. On real sockets idle connections cost the busy one nothing; on the
virtual network they must not either (an arrival wakes the tasks waiting on
its socket, not every waiting task).

Runs alternate (real, virtual; then virtual, real...) and the median of the
runs is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio.testing

from trionet.testing import VirtualNetwork

from ._common import interleaved_order, machine_description, markdown_table, median

ROUND_TRIPS = 5
MESSAGE = b"0123456789abcdef"
IMPLS = ("real loopback", "virtual network")


Scenario = Callable[[str, int, trio.socket.SocketType], Awaitable[float]]


async def _echo(conn: trio.socket.SocketType) -> None:
    with conn:
        while data := await conn.recv(1024):
            await conn.send(data)


async def _round_trip(sock: trio.socket.SocketType) -> None:
    await sock.send(MESSAGE)
    received = b""
    while len(received) < len(MESSAGE):
        received += await sock.recv(1024)


async def _serving(listener: trio.socket.SocketType, measure: Callable[[], Awaitable[float]]) -> float:
    """Accept and echo on ``listener`` while ``measure()`` runs; what it returned."""
    async with trio.open_nursery() as nursery:

        async def acceptor() -> None:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_echo, conn)

        nursery.start_soon(acceptor)
        result = await measure()
        nursery.cancel_scope.cancel()
    return result


async def _at_once(server_host: str, count: int, listener: trio.socket.SocketType) -> float:
    """Seconds per connection of ``count`` clients started at once."""
    address = (server_host, listener.getsockname()[1])

    async def client() -> None:
        with trio.socket.socket() as sock:
            await sock.connect(address)
            for _ in range(ROUND_TRIPS):
                await _round_trip(sock)

    async def measure() -> float:
        started = time.perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(count):
                clients.start_soon(client)
        return (time.perf_counter() - started) / count

    return await _serving(listener, measure)


BUSY_ROUND_TRIPS = 500


async def _beside_idle(server_host: str, idle: int, listener: trio.socket.SocketType) -> float:
    """Seconds per round trip of one busy connection beside ``idle`` idle ones."""
    address = (server_host, listener.getsockname()[1])

    async def measure() -> float:
        idle_socks = []
        try:
            for _ in range(idle):
                sock = trio.socket.socket()
                idle_socks.append(sock)
                await sock.connect(address)
            with trio.socket.socket() as busy:
                await busy.connect(address)
                await trio.testing.wait_all_tasks_blocked()  # every idle handler waits in recv()
                started = time.perf_counter()
                for _ in range(BUSY_ROUND_TRIPS):
                    await _round_trip(busy)
                return (time.perf_counter() - started) / BUSY_ROUND_TRIPS
        finally:
            for sock in idle_socks:
                sock.close()

    return await _serving(listener, measure)


def _on_real(scenario: Scenario, n: int) -> float:
    async def main() -> float:
        with trio.socket.socket() as listener:
            await listener.bind(("127.0.0.1", 0))
            listener.listen(4096)
            return await scenario("127.0.0.1", n, listener)

    return trio.run(main)


def _on_virtual(scenario: Scenario, n: int) -> float:
    async def main() -> float:
        net = VirtualNetwork(seed=0)
        net.add_host("server", "10.0.0.1")
        net.add_host("client", "10.0.0.2")
        net.link("client", "server", latency=0.001)
        with net.install(default_host="client"):
            with net.host("server"):
                listener = trio.socket.socket()
                await listener.bind(("10.0.0.1", 7))
            with listener:
                listener.listen(4096)
                return await scenario("10.0.0.1", n, listener)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


WORLDS: dict[str, Callable[[Scenario, int], float]] = {
    "real loopback": _on_real, "virtual network": _on_virtual,
}


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def measure(
    scenario: Scenario, sizes: list[int], runs: int, *, size: str, unit: str
) -> list[dict[str, object]]:
    """Per size: each world's seconds per ``unit`` (median of ``runs``) and the ratio."""
    _raise_fd_limit(2 * max(sizes) + 100)
    rows: list[dict[str, object]] = []
    for n in sizes:
        samples: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        for _run, impl in interleaved_order(IMPLS, runs):
            gc.collect()
            samples[impl].append(WORLDS[impl](scenario, n))
        medians = {impl: median(values) for impl, values in samples.items()}
        rows.append({
            size: n,
            "samples": samples,
            f"median_s_per_{unit}": medians,
            "virtual_over_real": medians["virtual network"] / medians["real loopback"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.vnet_connections", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--counts", default="100,1000,3000", help="connections per cell, comma-separated")
    parser.add_argument("--idle", default="0,1000,3000", help="idle connections beside the busy one")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell, median reported")
    parser.add_argument("--json", type=Path, help="also write the samples as JSON")
    parser.add_argument("--quick", action="store_true", help="20 and 40 connections, 1 run: a smoke test")
    args = parser.parse_args(argv)
    counts = [20, 40] if args.quick else [int(c) for c in args.counts.split(",")]
    idle_counts = [0, 20] if args.quick else [int(c) for c in args.idle.split(",")]
    runs = 1 if args.quick else max(1, args.runs)
    rows = measure(_at_once, counts, runs, size="connections", unit="connection")
    idle_rows = measure(_beside_idle, idle_counts, runs, size="idle", unit="round_trip")
    first = rows[0]["median_s_per_connection"]
    assert isinstance(first, dict)
    table = [[
        f"{row['connections']:,}",
        *(f"{row['median_s_per_connection'][impl] * 1e6:,.0f} µs" for impl in IMPLS),  # type: ignore[index]
        f"{row['virtual_over_real']:.2f}x",
        f"{row['median_s_per_connection']['virtual network'] / first['virtual network']:.2f}x",  # type: ignore[index]
    ] for row in rows]
    print(machine_description())
    print(f"{ROUND_TRIPS} round trips of {len(MESSAGE)} B per connection, all connections at once; "
          f"median of {1 if args.quick else args.runs} runs\n")
    print(markdown_table(["connections", *(f"{impl} per connection" for impl in IMPLS),
                          "virtual / real", f"virtual per connection / at {counts[0]:,}"], table))
    idle_table = [[
        f"{row['idle']:,}",
        *(f"{row['median_s_per_round_trip'][impl] * 1e6:,.0f} µs" for impl in IMPLS),  # type: ignore[index]
        f"{row['virtual_over_real']:.2f}x",
    ] for row in idle_rows]
    print(f"\nOne connection's round trip ({BUSY_ROUND_TRIPS} of {len(MESSAGE)} B) beside idle ones\n")
    print(markdown_table(["idle connections", *(f"{impl} per round trip" for impl in IMPLS),
                          "virtual / real"], idle_table))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "idle_rows": idle_rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
