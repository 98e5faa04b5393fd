"""Accept rate and memory per idle connection: trionet.serve_tcp against trio.serve_tcp.

Run from the repository root::

    .venv/bin/python -m benchmarks.tcp_accept            # 5 runs per cell, about 1 minute
    .venv/bin/python -m benchmarks.tcp_accept --quick    # seconds; numbers meaningless

Two servers are compared, each in a subprocess of its own (one trio loop, pinned
to one CPU when the machine has two), with the same handlers:

``trio.serve_tcp``
    ``trio.serve_tcp(handler, 0, host="127.0.0.1")``; the handler gets a
    :class:`trio.SocketStream`.
``trionet``
    ``trionet.serve_tcp(handler, 0, host="127.0.0.1")`` with its defaults (no
    codec, no limits); the handler gets a :class:`trionet.TCPConnection` and uses
    its ``stream``. The ``trionet + idle_timeout`` memory row adds
    ``idle_timeout=3600``, which costs one watcher task per connection.

Measurements:

accepted connections/s
    The client (this process, pinned to the other CPU) keeps 64 connections in
    flight: each connects, reads the one byte the handler sends, sees the server
    close, and closes (with a reset, so that no TIME_WAIT state piles up). The
    rate is connections served per second of wall time, after an untimed warm-up.
memory per idle connection
    The client opens N connections (1,000 and 5,000) and keeps them open; each
    handler waits in ``receive_some``. The server's resident set size (VmRSS) is
    read before the connections (after a warm-up) and once all N handlers are
    running; the difference divided by N is the cost of one idle connection in
    the server process (kernel socket buffers are not part of it).

Targets: trionet at least 0.9x trio's accept rate, and at most 1.2x its memory
per idle connection. Runs are interleaved (trio, trionet; then trionet, trio...)
and the medians of at least 3 runs are compared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import trio

from ._common import (
    LOOPBACK,
    format_rate,
    format_ratio,
    interleaved_order,
    machine_description,
    markdown_table,
    median,
    ratio,
)

__all__ = ["main"]

TRIO: Final = "trio.serve_tcp"
TRIONET: Final = "trionet"
TRIONET_IDLE: Final = "trionet + idle_timeout"
IMPLEMENTATIONS: Final = (TRIO, TRIONET)
#: Connections the accept-rate client keeps in flight.
CONCURRENCY: Final = 64
#: Untimed connections before each measurement.
WARM_UP: Final = 200
DEFAULT_ACCEPTS: Final = 6000
DEFAULT_IDLE_SIZES: Final = (1000, 5000)
QUICK_ACCEPTS: Final = 300
QUICK_IDLE_SIZES: Final = (100,)
ACCEPT_RATE_TARGET: Final = 0.9
MEMORY_TARGET: Final = 1.2
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


# ------------------------------------------------------------------ the server


def _raise_fd_limit() -> None:
    # 5,000 idle connections need more than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin(cpu_index: int) -> None:
    """Pin this process to one CPU when there are two or more (less scheduler noise)."""
    if not hasattr(os, "sched_getaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[cpu_index % len(cpus)]})


async def _serve(impl: str, mode: str, expect: int) -> None:
    import trionet

    active = 0

    async def greet_trio(stream: trio.SocketStream) -> None:
        await stream.send_all(b"x")

    async def greet_trionet(conn: trionet.TCPConnection) -> None:
        await conn.stream.send_all(b"x")

    async def wait(stream: trio.abc.Stream) -> None:
        nonlocal active
        active += 1
        if active == expect:
            print("ready", flush=True)
        try:
            await stream.receive_some(1)
        except trio.BrokenResourceError:
            pass  # the client closes with a reset
        finally:
            active -= 1

    async def idle_trio(stream: trio.SocketStream) -> None:
        await wait(stream)

    async def idle_trionet(conn: trionet.TCPConnection) -> None:
        await wait(conn.stream)

    async with trio.open_nursery() as nursery:
        if impl == TRIO:
            handler: Callable[[Any], Awaitable[None]] = greet_trio if mode == "accept" else idle_trio
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host=LOOPBACK)
            )
            port = listeners[0].socket.getsockname()[1]
        else:
            handler = greet_trionet if mode == "accept" else idle_trionet
            server = await nursery.start(
                functools.partial(
                    trionet.serve_tcp, handler, 0, host=LOOPBACK,
                    idle_timeout=3600 if impl == TRIONET_IDLE else None,
                )
            )
            port = server.port
        print(f"port {port}", flush=True)
        # Serve until the parent closes our stdin.
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        async with stdin:
            while await stdin.receive_some():
                pass
        nursery.cancel_scope.cancel()


def _server_main(impl: str, mode: str, expect: int) -> None:
    _raise_fd_limit()
    _pin(0)
    trio.run(_serve, impl, mode, expect)


# ------------------------------------------------------------------ the client


class _Server:
    """A server subprocess and its stdout, read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = process.stdout
        self._buffer = b""

    @classmethod
    async def start(cls, impl: str, mode: str, expect: int = 0) -> tuple[_Server, int]:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "benchmarks.tcp_accept", "--serve", impl, mode, str(expect)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        server = cls(process)
        try:
            line = await server.next_line()
            if not line.startswith("port "):
                raise RuntimeError(f"unexpected output from the {impl} server: {line!r}")
        except BaseException:
            await server.stop()
            raise
        return server, int(line.split()[1])

    async def next_line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = await self._stdout.receive_some()
            if not chunk:
                raise RuntimeError("the server process ended early")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def rss(self) -> int:
        """The server's resident set size in bytes."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/PID/status")

    async def stop(self) -> None:
        """Close the server's stdin (it then exits), and wait for it; kill it if it hangs."""
        with trio.CancelScope(shield=True):
            assert self.process.stdin is not None
            await self.process.stdin.aclose()
            with trio.move_on_after(10):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            await self._stdout.aclose()


async def _connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        await sock.connect((LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _serve_connections(port: int, count: int) -> None:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            with await _connect(port) as sock:
                while await sock.recv(64):
                    pass

    async with trio.open_nursery() as nursery:
        for _ in range(min(CONCURRENCY, count)):
            nursery.start_soon(worker)


async def _accept_rate(impl: str, count: int) -> float:
    server, port = await _Server.start(impl, "accept")
    try:
        await _serve_connections(port, WARM_UP)
        started = time.perf_counter()
        await _serve_connections(port, count)
        return count / (time.perf_counter() - started)
    finally:
        await server.stop()


async def _idle_memory(impl: str, count: int) -> float:
    server, port = await _Server.start(impl, "idle", count)
    sockets: list[trio.socket.SocketType] = []
    try:
        warm = [await _connect(port) for _ in range(20)]
        for sock in warm:
            sock.close()
        await trio.sleep(0.3)  # let the warm-up handlers end
        before = server.rss()

        async def opener(share: int) -> None:
            for _ in range(share):
                sockets.append(await _connect(port))

        async with trio.open_nursery() as nursery:
            workers = 50
            for index in range(workers):
                nursery.start_soon(opener, count // workers + (index < count % workers))
        with trio.fail_after(60):
            while await server.next_line() != "ready":
                pass
        await trio.sleep(0.1)  # let the allocator settle
        return (server.rss() - before) / count
    finally:
        for sock in sockets:
            sock.close()
        await server.stop()


def _measure(function: Callable[[str, int], Awaitable[float]], impl: str, count: int) -> float:
    return trio.run(function, impl, count)


# ------------------------------------------------------------------ reporting


def _kib(size: float | None) -> str:
    return "n/a" if size is None else f"{size / 1024:.2f} KiB"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tcp_accept",
        description="Accept rate and memory per idle connection, trionet against trio.",
    )
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per cell; medians are reported (default 5, at least 3; "
                             "1 with --quick)")
    parser.add_argument("--accepts", type=int, default=None,
                        help=f"connections per accept-rate measurement (default {DEFAULT_ACCEPTS})")
    parser.add_argument("--sizes", default=None,
                        help="idle connection counts, comma-separated (default 1000,5000)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts and 1 run: a smoke test; its numbers mean nothing")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target fails")
    parser.add_argument("--serve", nargs=3, metavar=("IMPL", "MODE", "EXPECT"),
                        help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.serve:
        impl, mode, expect = args.serve
        _server_main(impl, mode, int(expect))
        return 0
    runs: int = args.runs if args.runs is not None else (1 if args.quick else 5)
    if runs < 1 or (runs < 3 and not args.quick):
        parser.error("--runs must be at least 3 (medians of at least 3 runs); --quick allows 1")
    accepts = args.accepts or (QUICK_ACCEPTS if args.quick else DEFAULT_ACCEPTS)
    sizes = (
        [int(size) for size in args.sizes.split(",")] if args.sizes
        else list(QUICK_IDLE_SIZES if args.quick else DEFAULT_IDLE_SIZES)
    )
    _raise_fd_limit()
    _pin(1)

    started = time.perf_counter()
    rates: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    memory: dict[tuple[str, int], list[float]] = {}
    memory_impls = (*IMPLEMENTATIONS, TRIONET_IDLE)
    for run, impl in interleaved_order(IMPLEMENTATIONS, runs):
        print(f"[run {run + 1}/{runs}] {impl}: accept rate", file=sys.stderr, flush=True)
        rates[impl].append(_measure(_accept_rate, impl, accepts))
    for size in sizes:
        for run, impl in interleaved_order(memory_impls, runs):
            print(f"[run {run + 1}/{runs}] {impl}: {size} idle connections",
                  file=sys.stderr, flush=True)
            memory.setdefault((impl, size), []).append(_measure(_idle_memory, impl, size))
    elapsed = time.perf_counter() - started

    trio_rate, trionet_rate = median(rates[TRIO]), median(rates[TRIONET])
    accept_ratio = ratio(trionet_rate, trio_rate)
    rows = [[
        "accepted connections/s (higher is better)", format_rate(trio_rate),
        format_rate(trionet_rate), "n/a", format_ratio(accept_ratio),
        f">= {ACCEPT_RATE_TARGET}x",
    ]]
    verdicts = [accept_ratio is not None and accept_ratio >= ACCEPT_RATE_TARGET]
    for size in sizes:
        base = median(memory[(TRIO, size)])
        ours = median(memory[(TRIONET, size)])
        idle = median(memory[(TRIONET_IDLE, size)])
        memory_ratio = ratio(ours, base)
        verdicts.append(memory_ratio is not None and memory_ratio <= MEMORY_TARGET)
        rows.append([
            f"memory per idle connection, {size:,} connections", _kib(base), _kib(ours),
            _kib(idle), format_ratio(memory_ratio), f"<= {MEMORY_TARGET}x",
        ])
    print(
        f"TCP accept benchmark over loopback, median of {runs} run{'s' if runs != 1 else ''}"
        f"{' (--quick: not a measurement)' if args.quick else ''}; took {elapsed:.0f} s.\n"
        f"Machine: {machine_description()}.\n"
    )
    print(markdown_table(
        ["measurement", TRIO, TRIONET, TRIONET_IDLE, "trionet/trio", "target"], rows
    ))
    met = all(verdicts)
    print(f"\nTargets {'met' if met else 'NOT met'}: accept rate >= {ACCEPT_RATE_TARGET}x "
          f"trio's, memory per idle connection <= {MEMORY_TARGET}x trio's "
          "(the idle_timeout column is for information).")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({
                "machine": machine_description(), "runs": runs, "accepts": accepts,
                "accept_rates": rates,
                "memory_per_connection": {f"{impl} {size}": samples
                                          for (impl, size), samples in memory.items()},
                "targets_met": met,
            }, out, indent=2)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
