"""UDP blast benchmark: how much of a burst a trio receiver keeps.

Run from the repository root::

    .venv/bin/python -m benchmarks.udp_blast            # 300,000 datagrams, 3 runs each, ~1 min
    .venv/bin/python -m benchmarks.udp_blast --quick    # seconds; numbers meaningless

A blocking sender in another process (``subprocess``, plain :mod:`socket`)
sends 300,000 datagrams of 64 bytes to ``127.0.0.1`` as fast as it can; the
receiver, in this process, counts what it gets. With ``--pin`` the sender runs
on the second CPU and the receiver on the first; by default the system places
them (pinning helps on an idle machine, and hurts badly when another job
occupies one of the two CPUs). Nothing is resent: whatever does not
fit in the receiving socket's buffer (Linux's default, ``net.core.rmem_default``)
when it arrives is lost. Receivers:

``plain thread (no event loop)``
    A thread blocked in ``socket.recvfrom`` in a loop, no event loop at all: the
    ceiling of what Python can take on this machine now. When it loses too,
    the machine (its other load) is the limit, not the event loop.
``trio recvfrom loop``
    ``await sock.recvfrom(2048)`` in a loop on a :mod:`trio.socket` socket: one
    datagram per call, each call a trip through trio's scheduler.
``trionet receive()``
    ``async for datagram in endpoint`` with the default bounded queue (4,096
    datagrams): the endpoint drains the socket until ``BlockingIOError`` into
    the queue on each wakeup, and the consumer takes one datagram per call.
``trionet receive() + receive_nowait()``
    The target row: after each ``await endpoint.receive()``, the consumer takes
    everything queued with ``receive_nowait()`` (no checkpoint per datagram),
    as a consumer of a burst should. The endpoint must keep at least 99%.
``... receive_buffer_size=4 MiB``
    The same with ``open_udp_endpoint(receive_buffer_size=4 MiB)``: the
    system buffer then covers the moments when the process is not scheduled.

The receiver stops when the sender has exited and nothing has arrived for
0.3 s. The median of the runs (at least 3) is reported, as the fraction received
and the rate (datagrams kept per second of the sender's run), with the share
of CPU time the machine had idle during the runs: on a shared machine, another
job's load decides much of the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio
import trio.testing

from trionet._adapters.udp import open_udp_endpoint

from ._common import LOOPBACK, format_rate, machine_description, markdown_table, median

DATAGRAMS: Final = 300_000
SIZE: Final = 64
TARGET: Final = 0.99
QUIET: Final = 0.3
TARGET_NAME: Final = "trionet receive() + receive_nowait()"

# The sender: plain blocking sockets, no event loop, as fast as Python goes.
SENDER: Final = """
import os, socket, struct, sys
port, count, size, pin = (int(arg) for arg in sys.argv[1:5])
if pin:
    os.sched_setaffinity(0, {1})
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
padding = b"." * (size - 4)
pack = struct.Struct("!I").pack
sendto, address = sock.sendto, ("127.0.0.1", port)
for number in range(count):
    sendto(pack(number) + padding, address)
"""

Counter = list[int]  # one cell, shared by the receiving task and the watchdog
Receive = Callable[[Counter], Awaitable[None]]


PIN = [0]  # 1 with --pin


def _sender(port: int, count: int) -> list[str]:
    return [sys.executable, "-c", SENDER, str(port), str(count), str(SIZE), str(PIN[0])]


async def _blast(port: int, count: int, receive: Receive) -> tuple[int, float]:
    """Run the sender against ``receive``; return (datagrams received, seconds)."""
    received: Counter = [0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive, received)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        await trio.run_process(_sender(port, count), check=True)
        end = time.perf_counter()
        last = -1
        while received[0] != last:  # bounded: at most `count` datagrams can arrive
            last = received[0]
            await trio.sleep(QUIET)
        nursery.cancel_scope.cancel()
    return received[0], end - start


def _trio_loop(count: int) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind((LOOPBACK, 0))

            async def receive(received: Counter) -> None:
                recvfrom = sock.recvfrom
                while True:
                    await recvfrom(2048)
                    received[0] += 1

            return await _blast(sock.getsockname()[1], count, receive)

    return trio.run(main)


def _trionet(count: int, *, batches: bool, buffer: int | None = None) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        async with open_udp_endpoint(f"{LOOPBACK}:0", receive_buffer_size=buffer) as endpoint:

            async def receive(received: Counter) -> None:
                if not batches:
                    async for _ in endpoint:
                        received[0] += 1
                receive, receive_nowait = endpoint.receive, endpoint.receive_nowait
                while True:
                    await receive()
                    received[0] += 1
                    try:
                        while True:
                            receive_nowait()
                            received[0] += 1
                    except trio.WouldBlock:
                        pass

            return await _blast(endpoint.local.port, count, receive)

    return trio.run(main)


def _plain_thread(count: int) -> tuple[int, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(QUIET)
        received: Counter = [0]

        def receive() -> None:
            while True:
                try:
                    sock.recvfrom(2048)
                except TimeoutError:
                    return
                received[0] += 1

        thread = threading.Thread(target=receive)
        thread.start()
        start = time.perf_counter()
        subprocess.run(_sender(sock.getsockname()[1], count), check=True)
        end = time.perf_counter()
        thread.join()
    return received[0], end - start


BIG_BUFFER: Final = 4 * 1024 * 1024

RECEIVERS: Final[dict[str, Callable[[int], tuple[int, float]]]] = {
    "plain thread (no event loop)": _plain_thread,
    "trio recvfrom loop": _trio_loop,
    "trionet receive()": lambda count: _trionet(count, batches=False),
    TARGET_NAME: lambda count: _trionet(count, batches=True),
    "... receive_buffer_size=4 MiB": lambda count: _trionet(count, batches=True,
                                                           buffer=BIG_BUFFER),
}


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of the whole machine, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(value) for value in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields)


@dataclass
class Result:
    fractions: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.udp_blast", description=(
        "A blocking sender blasts 64-byte datagrams; how many does a trio receiver keep?"))
    parser.add_argument("--runs", type=int, default=3, help="runs per receiver (at least 3)")
    parser.add_argument("--count", type=int, default=DATAGRAMS,
                        help=f"datagrams per blast (default {DATAGRAMS:,})")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target fails")
    parser.add_argument("--pin", action="store_true",
                        help="run the receiver on CPU 0 and the sender on CPU 1")
    parser.add_argument("--quick", action="store_true",
                        help="3,000 datagrams, 1 run: a smoke test; its numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.count = 1, 3000
    elif args.runs < 3:
        parser.error("--runs must be at least 3 (medians of fewer mean little)")
    if args.pin:
        if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
            parser.error("--pin needs two CPUs and sched_setaffinity")
        os.sched_setaffinity(0, {0})  # the sender takes CPU 1
        PIN[0] = 1
    results = {name: Result() for name in RECEIVERS}
    cpu_before = _cpu_times()
    for run in range(args.runs):
        names = list(RECEIVERS)
        for name in names[run % len(names):] + names[: run % len(names)]:
            received, seconds = RECEIVERS[name](args.count)
            results[name].fractions.append(received / args.count)
            results[name].rates.append(received / seconds)
    rows = [
        [name, f"{args.count:,} x {SIZE} B", f"{median(r.fractions):.1%}",
         f"{1 - median(r.fractions):.1%}", format_rate(median(r.rates))]
        for name, r in results.items()
    ]
    cpu_after = _cpu_times()
    idle = "n/a"
    if cpu_before is not None and cpu_after is not None and cpu_after[1] > cpu_before[1]:
        idle = f"{(cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1]):.0%}"
    kept = median(results[TARGET_NAME].fractions)
    ok = kept >= TARGET
    print(f"Machine: {machine_description()}")
    print(f"Median of {args.runs} run(s); the machine's CPUs were {idle} idle meanwhile.\n")
    print(markdown_table(["receiver", "blast", "received", "lost", "received/s"], rows))
    print()
    print(f"{'PASS' if ok else 'FAIL'}: {TARGET_NAME} receives >= {TARGET:.0%} "
          f"(measured {kept:.2%})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": machine_description(), "count": args.count, "idle": idle,
                       "results": {name: vars(r) for name, r in results.items()}}, f, indent=2)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
