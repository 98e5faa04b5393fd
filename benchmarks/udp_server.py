"""UDP server throughput under a flood: serve_udp echo against a blocking and a plain trio server.

Run from the repository root::

    .venv/bin/python -m benchmarks.udp_server            # 5 interleaved runs, about 40 s
    .venv/bin/python -m benchmarks.udp_server --quick    # seconds; numbers meaningless

The question of trio issue #1595 (a trio UDP server answered 5,007 queries/s
where blocking sockets answered 9,498): how many 64-byte echo replies per
second does a server send while a load generator keeps it busy?

Servers, each in a process of its own, on ``127.0.0.1``:

``blocking``
    A blocking :mod:`socket` loop: ``recvfrom(65536)`` then ``sendto``.
``plain trio``
    The same loop on a :mod:`trio.socket` socket: ``await sock.recvfrom`` then
    ``await sock.sendto`` (a schedule point, and often an ``epoll_wait``, each).
``serve_udp``
    ``trionet.serve_udp`` with an ``async def echo(d): return d.data`` handler
    and every default (100 workers, dual-stack off: ``host="127.0.0.1"``).

The load generator is a separate process with a blocking socket. It keeps a
**window of 64 requests outstanding**: it sends 64 datagrams, then sends one
more for each reply it receives, so the server is never idle and never more
than 64 datagrams behind (an open-loop flood would only measure how fast the
kernel drops datagrams from a full buffer). If no reply comes for 20 ms (the
window was lost to a full buffer), it sends a fresh window. It counts replies
for a fixed ``--seconds`` after a warm-up, and QPS is replies / seconds.
Servers are measured one after the other, interleaved within each run, and
the medians of ``--runs`` runs are compared.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Final

import trio

from trionet._adapters.udp import Datagram
from trionet._endpoints.udp_server import serve_udp

PAYLOAD: Final = b"x" * 64
WINDOW: Final = 64
STALL: Final = 0.020
SERVERS: Final = ("blocking", "plain trio", "serve_udp")
TARGET_BLOCKING: Final = 1.0  # issue 11's acceptance
TARGET_TRIO: Final = 1.5


def _blocking_server(sock: socket.socket) -> None:
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, address = recvfrom(65536)
        sendto(data, address)


async def _plain_trio_server(std: socket.socket) -> None:
    sock = trio.socket.from_stdlib_socket(std)
    while True:
        data, address = await sock.recvfrom(65536)
        await sock.sendto(data, address)


async def _echo(datagram: Datagram) -> bytes:
    return datagram.data


async def _serve_udp_server(ready: multiprocessing.Queue[int]) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_udp, _echo, 0, host="127.0.0.1"))
        ready.put(server.port)


def _run_server(kind: str, ready: multiprocessing.Queue[int]) -> None:  # pragma: no cover
    if kind == "serve_udp":
        trio.run(_serve_udp_server, ready)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    ready.put(sock.getsockname()[1])
    if kind == "blocking":
        _blocking_server(sock)
    else:
        trio.run(_plain_trio_server, sock)


def _generate(port: int, seconds: float, warmup: float, result: multiprocessing.Queue[float]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(STALL)
    target = ("127.0.0.1", port)
    sendto, recv = sock.sendto, sock.recv

    def send(payload: bytes) -> None:
        sendto(payload, target)

    def window() -> None:
        for _ in range(WINDOW):
            send(PAYLOAD)

    window()
    replies = 0
    start = time.perf_counter()
    counting_from = start + warmup
    end = counting_from + seconds
    counted = False
    while True:
        try:
            recv(65536)
        except TimeoutError:
            window()
            continue
        now = time.perf_counter()
        if now >= end:
            break
        if not counted and now >= counting_from:
            counted, replies = True, 0
        replies += 1
        send(PAYLOAD)
    sock.close()
    result.put(replies / seconds)


def measure(kind: str, seconds: float, warmup: float) -> float:
    """Start the server ``kind``, flood it from another process, return replies per second."""
    context = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[int] = context.Queue()
    result: multiprocessing.Queue[float] = context.Queue()
    server = context.Process(target=_run_server, args=(kind, ready), daemon=True)
    server.start()
    try:
        port = ready.get(timeout=30)
        generator = context.Process(target=_generate, args=(port, seconds, warmup, result))
        generator.start()
        qps = result.get(timeout=seconds + warmup + 60)
        generator.join(timeout=10)
        return qps
    finally:
        server.terminate()
        server.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="1 run of 0.3 s: a smoke test")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (medians of fewer runs mean little)")
    runs, seconds, warmup = (1, 0.3, 0.1) if args.quick else (args.runs, args.seconds, 0.5)
    samples: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    for run in range(runs):
        order = SERVERS[run % 3:] + SERVERS[: run % 3]  # interleaved: each goes first in turn
        for kind in order:
            samples[kind].append(measure(kind, seconds, warmup))
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    print(f"64-byte UDP echo, window {WINDOW}, {runs} run(s) of {seconds} s, medians:")
    print("| server     |     QPS | runs |")
    print("| ---------- | ------: | ---- |")
    for kind in SERVERS:
        shown = " ".join(f"{v / 1000:.1f}k" for v in samples[kind])
        print(f"| {kind:<10} | {medians[kind] / 1000:6.1f}k | {shown} |")
    vs_blocking = medians["serve_udp"] / medians["blocking"]
    vs_trio = medians["serve_udp"] / medians["plain trio"]
    ok = vs_blocking >= TARGET_BLOCKING and vs_trio >= TARGET_TRIO
    print(f"{'PASS' if ok else 'FAIL'}: serve_udp {vs_blocking:.2f}x blocking "
          f"(target {TARGET_BLOCKING}x), {vs_trio:.2f}x plain trio (target {TARGET_TRIO}x)")
    return 0



if __name__ == "__main__":
    sys.exit(main())
