"""UDP request benchmark: trionet's ``request()`` against a raw trio loop and asyncio.

Run from the repository root::

    .venv/bin/python -m benchmarks.udp_request            # 5 runs per cell, about 30 s
    .venv/bin/python -m benchmarks.udp_request --quick    # seconds; numbers meaningless

A client sends a 64-byte datagram, an echo server sends it back, the client
waits for it, one round trip after the other. Round trips per second, for:

``raw trio``
    ``await sock.sendto(payload, address)`` then ``await sock.recvfrom(65536)``
    on a :mod:`trio.socket` socket: the obvious hand-written loop, with no
    timeout and no retransmission.
``trionet``
    ``await endpoint.request(payload, address, match=match_bytes(0, 8))``:
    with CoAP's retry policy armed (a timeout per request, which is a cancel
    scope), the reply matched to its request by peer and by an 8-byte id (as
    a correct client must; ``match`` is required), the address normalised.
``asyncio`` / ``uvloop``
    A :class:`asyncio.DatagramProtocol` client: ``transport.sendto(payload)``,
    then awaiting a future that ``datagram_received`` completes. The uvloop
    column is the same code on uvloop's loop, when uvloop imports.

Rows:

``request() -> plain echo``
    Each client against its own framework's plain echo server (a raw
    ``recvfrom``/``sendto`` loop for both trio columns, a protocol for asyncio):
    the cost of the client. The target row: trionet at least 0.85x raw trio.
``request() -> serve_udp``
    The trionet column uses ``serve_udp`` with an echo handler as the server,
    the others are as above: the cost of both trionet sides.

Client and server share one process and one event loop, as in
``benchmarks.framed_echo``: the rate is the whole per-round-trip CPU cost,
without the kernel's cross-process wake-up latency. Loopback ``127.0.0.1``,
default socket buffers, a fresh loop and fresh sockets for every measurement
(set-up not timed), implementations interleaved within each run, medians of at
least 3 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from trionet._adapters.udp import Datagram, open_udp_endpoint
from trionet._endpoints.udp_server import UDPServer, serve_udp
from trionet._sansio.matching import match_bytes

from ._common import (
    LOOPBACK,
    Cell,
    ImplRunner,
    LoopFactory,
    format_rate,
    format_ratio,
    interleaved_order,
    machine_description,
    markdown_table,
    ratio,
    run_asyncio,
    uvloop_loop_factory,
)

PAYLOAD_SIZE: Final = 64
TARGET: Final = 0.85
SCENARIOS: Final = {
    "plain": "request() -> plain echo",
    "serve_udp": "request() -> serve_udp",
}
PILOT_COUNT: Final = 2000


# ------------------------------------------------------------------------- trio


async def _raw_echo(sock: trio.socket.SocketType, count: int) -> None:
    for _ in range(count):
        data, address = await sock.recvfrom(65536)
        await sock.sendto(data, address)


async def _raw_client(address: Any, count: int, payload: bytes) -> float:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((LOOPBACK, 0))
        start = time.perf_counter()
        for _ in range(count):
            await sock.sendto(payload, address)
            data, _ = await sock.recvfrom(65536)
        elapsed = time.perf_counter() - start
        assert data == payload
    return elapsed


async def _trionet_client(address: Any, count: int, payload: bytes) -> float:
    async with open_udp_endpoint(f"{LOOPBACK}:0") as endpoint:
        request = endpoint.request
        match = match_bytes(0, 8)  # the payload's first 8 bytes, echoed
        start = time.perf_counter()
        for _ in range(count):
            reply = await request(payload, address, match=match)
        elapsed = time.perf_counter() - start
        assert reply.data == payload
        assert endpoint.statistics().retransmissions == 0
    return elapsed


async def _echo_handler(datagram: Datagram) -> bytes:
    return datagram.data


def _trio_runner(name: str) -> ImplRunner:
    client = _trionet_client if name == "trionet" else _raw_client

    def measure(scenario: str, size: int, count: int) -> float:
        payload = b"x" * size

        async def main() -> float:
            async with trio.open_nursery() as nursery:
                if name == "trionet" and scenario == "serve_udp":
                    server: UDPServer = await nursery.start(
                        functools.partial(serve_udp, _echo_handler, 0, host=LOOPBACK))
                    address: Any = (LOOPBACK, server.port)
                else:
                    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    await sock.bind((LOOPBACK, 0))
                    address = sock.getsockname()
                    nursery.start_soon(_raw_echo, sock, count)
                elapsed = await client(address, count, payload)
                nursery.cancel_scope.cancel()
            return elapsed

        return trio.run(main)

    return ImplRunner(name, measure)


# ---------------------------------------------------------------------- asyncio


class _EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # a DatagramTransport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[bytes] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)


def _asyncio_runner(name: str, loop_factory: LoopFactory | None) -> ImplRunner:
    def measure(scenario: str, size: int, count: int) -> float:
        payload = b"x" * size

        async def main() -> float:
            loop = asyncio.get_running_loop()
            server, _ = await loop.create_datagram_endpoint(_EchoProtocol,
                                                            local_addr=(LOOPBACK, 0))
            address = server.get_extra_info("sockname")
            transport, protocol = await loop.create_datagram_endpoint(
                _ClientProtocol, remote_addr=address)
            try:
                start = time.perf_counter()
                for _ in range(count):
                    protocol.waiter = loop.create_future()
                    transport.sendto(payload)
                    data = await protocol.waiter
                elapsed = time.perf_counter() - start
                assert data == payload
            finally:
                transport.close()
                server.close()
            return elapsed

        return run_asyncio(main, loop_factory)

    return ImplRunner(name, measure)


# ----------------------------------------------------------------------- report


@dataclass
class Row:
    scenario: str
    cells: dict[str, Cell] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        cell = self.cells.get(name)
        return None if cell is None else cell.median


def _measure(runners: Sequence[ImplRunner], scenario: str, runs: int, seconds: float,
             quick: bool) -> Row:
    row = Row(scenario, {runner.name: Cell() for runner in runners})
    counts: dict[str, int] = {}
    for runner in runners:  # an untimed pilot sizes each implementation's count
        if quick:
            counts[runner.name] = 300
        else:
            rate = runner.rate(scenario, PAYLOAD_SIZE, PILOT_COUNT)
            counts[runner.name] = max(PILOT_COUNT, int(rate * seconds))
    by_name = {runner.name: runner for runner in runners}
    for _, name in interleaved_order([runner.name for runner in runners], runs):
        row.cells[name].rates.append(by_name[name].rate(scenario, PAYLOAD_SIZE, counts[name]))
    return row


def _table(rows: Sequence[Row], names: Sequence[str]) -> str:
    headers = ["scenario", "payload", *names, "trionet/raw", "trionet/asyncio"]
    lines = []
    for row in rows:
        trionet = row.median("trionet")
        lines.append([
            SCENARIOS[row.scenario], f"{PAYLOAD_SIZE} B",
            *(format_rate(row.median(name)) for name in names),
            format_ratio(ratio(trionet, row.median("raw trio"))),
            format_ratio(ratio(trionet, row.median("asyncio"))),
        ])
    return markdown_table(headers, lines)


def _verdict(rows: Sequence[Row]) -> tuple[bool, str]:
    plain = next(row for row in rows if row.scenario == "plain")
    value = ratio(plain.median("trionet"), plain.median("raw trio"))
    ok = value is not None and value >= TARGET
    return ok, (f"{'PASS' if ok else 'FAIL'}: trionet request() >= {TARGET}x raw trio "
                f"(measured {format_ratio(value)})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.udp_request",
        description="64-byte UDP round trips/s: trionet request() vs raw trio vs asyncio.",
    )
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per cell, median reported (default 5, at least 3)")
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="how long each measurement aims to take (default 0.5)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target fails")
    parser.add_argument("--quick", action="store_true",
                        help="300 round trips, 1 run: a smoke test; its numbers mean nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    elif args.runs < 3:
        parser.error("--runs must be at least 3 (medians of fewer mean little)")
    runners = [_trio_runner("raw trio"), _trio_runner("trionet"),
               _asyncio_runner("asyncio", None)]
    factory = uvloop_loop_factory()
    if factory is not None:
        runners.append(_asyncio_runner("uvloop", factory))
    names = [runner.name for runner in runners]
    rows = [_measure(runners, scenario, args.runs, args.seconds, args.quick)
            for scenario in SCENARIOS]
    ok, verdict = _verdict(rows)
    print(f"Machine: {machine_description()}")
    print(f"Median of {args.runs} run(s), {args.seconds} s per measurement; round trips/s.\n")
    print(_table(rows, names))
    print()
    print(verdict)
    if args.json:
        report = {
            "machine": machine_description(),
            "runs": args.runs,
            "rows": [{"scenario": row.scenario, "payload": PAYLOAD_SIZE,
                      "results": {name: {"rates": cell.rates, "median": cell.median,
                                         "spread": cell.spread}
                                  for name, cell in row.cells.items()}} for row in rows],
            "verdict": verdict,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

