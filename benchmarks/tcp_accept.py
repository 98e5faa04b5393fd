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
    ``trionet.serve_tcp(handler, 0, host="127.0.0.1", idle_timeout=None,``
    ``frame_timeout=None)``: no codec, no limits; the handler gets a
    :class:`trionet.TCPConnection` and uses its ``stream``. The memory rows add
    three configurations: ``+ codec``
    (``codec=LengthPrefixed()``, the handler waits in ``channel.receive()``),
    ``+ idle_timeout`` (``idle_timeout=3600``) and ``+ idle + frame timeouts``
    (codec, ``idle_timeout=3600``, ``frame_timeout=60``).

Measurements:

accepted connections/s
    The client (this process, pinned to the other CPU) keeps 64 connections in
    flight: each connects, reads the one byte the handler sends, sees the server
    close, and closes (with a reset, so that no TIME_WAIT state piles up). The
    rate is connections served per second of wall time, after an untimed warm-up.
accept latency with 1,000 busy connections
    A load process (pinned with the client) keeps 1,000 connections echoing
    64-byte messages as fast as the server answers; each handler echoes its
    ``stream`` (``receive_some`` / ``send_all``). Once every connection has had
    an echo, this process probes: a blocking socket connects, sends 64 bytes
    and reads the echo back; the time from ``connect()`` to the last byte is one
    sample, 5 probes 0.2 s apart per run, median per run, then the median of
    the runs. It is what a new client waits while the server is busy. The burst
    row then opens 100 connections at once (they wait in the backlog together),
    sends on each and reads every echo: the time until the last one, once per
    run. It shows the backlog drained per scheduler pass, not per connection.
memory per idle connection
    The client opens N connections (1,000 and 10,000) and keeps them open; each
    handler waits in ``receive_some`` (``channel.receive()`` with a codec). The
    server's resident set size (VmRSS) is read before the connections (after a
    warm-up) and once all N handlers are running; the difference divided by N
    is the cost of one idle connection in the server process (kernel socket
    buffers are not part of it). Both processes raise RLIMIT_NOFILE to its hard
    limit (and the hard limit too, as root, when it is below 2N + 100).

Targets: trionet at least 0.9x trio's accept rate, a new connection's first
echo within 100 ms with 1,000 busy connections, and at most 1.3x trio's memory
per idle connection in every configuration. Runs are interleaved (trio, trionet;
then trionet, trio...) and the medians of at least 3 runs are compared.
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
from typing import Any, Final, TypeVar

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

T = TypeVar("T")

TRIO: Final = "trio.serve_tcp"
TRIONET: Final = "trionet"
TRIONET_CODEC: Final = "trionet + codec"
TRIONET_IDLE: Final = "trionet + idle_timeout"
TRIONET_IDLE_FRAME: Final = "trionet + idle + frame timeouts"
IMPLEMENTATIONS: Final = (TRIO, TRIONET)
MEMORY_IMPLEMENTATIONS: Final = (TRIO, TRIONET, TRIONET_CODEC, TRIONET_IDLE, TRIONET_IDLE_FRAME)
#: Connections the accept-rate client keeps in flight.
CONCURRENCY: Final = 64
#: Untimed connections before each measurement.
WARM_UP: Final = 200
DEFAULT_ACCEPTS: Final = 6000
DEFAULT_IDLE_SIZES: Final = (1000, 10000)
QUICK_ACCEPTS: Final = 300
QUICK_IDLE_SIZES: Final = (100,)
#: Connections the load process keeps echoing for the latency row.
BUSY_CONNECTIONS: Final = 1000
QUICK_BUSY_CONNECTIONS: Final = 50
#: Probes per latency run, and the pause between them.
PROBES: Final = 5
PROBE_INTERVAL: Final = 0.2
#: New connections opened at once for the burst row.
BURST: Final = 100
#: Bytes of each echoed message (load and probes).
MESSAGE: Final = b"m" * 64
ACCEPT_RATE_TARGET: Final = 0.9
LATENCY_TARGET: Final = 0.100
MEMORY_TARGET: Final = 1.3
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


# ------------------------------------------------------------------ the server


def _raise_fd_limit(needed: int = 0) -> None:
    # 10,000 idle connections need more than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < needed:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError):
            pass
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
        if conn.has_channel:
            await wait_channel(conn.channel)
        else:
            await wait(conn.stream)

    async def wait_channel(channel: trionet.MessageChannel) -> None:
        nonlocal active
        active += 1
        if active == expect:
            print("ready", flush=True)
        try:
            await channel.receive()
        except (trio.BrokenResourceError, trio.EndOfChannel):
            pass
        finally:
            active -= 1

    async def echo(stream: trio.abc.Stream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async def echo_trionet(conn: trionet.TCPConnection) -> None:
        await echo(conn.stream)

    # Since issue 15.4 the defaults bound idle connections (idle_timeout) and
    # started frames (frame_timeout): the first rows turn them off.
    options: dict[str, Any] = {"idle_timeout": None, "frame_timeout": None}
    if impl in (TRIONET_CODEC, TRIONET_IDLE_FRAME):
        options["codec"] = trionet.LengthPrefixed()
    if impl in (TRIONET_IDLE, TRIONET_IDLE_FRAME):
        options["idle_timeout"] = 3600
    if impl == TRIONET_IDLE_FRAME:
        options["frame_timeout"] = 60
    handlers = {
        TRIO: {"accept": greet_trio, "idle": idle_trio, "busy": echo},
        TRIONET: {"accept": greet_trionet, "idle": idle_trionet, "busy": echo_trionet},
    }

    async with trio.open_nursery() as nursery:
        if impl == TRIO:
            handler: Callable[[Any], Awaitable[None]] = handlers[TRIO][mode]
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, handler, 0, host=LOOPBACK)
            )
            port = listeners[0].socket.getsockname()[1]
        else:
            server = await nursery.start(
                functools.partial(
                    trionet.serve_tcp, handlers[TRIONET][mode], 0, host=LOOPBACK, **options
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
    _raise_fd_limit(2 * expect + 100)
    _pin(0)
    trio.run(_serve, impl, mode, expect)


# ------------------------------------------------------------ the load process


def _load_main(port: int, count: int) -> None:
    """Keep ``count`` connections echoing MESSAGE until stdin closes (a selectors loop)."""
    import selectors

    _raise_fd_limit(count + 100)
    _pin(1)
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, int] = {}
    echoed: set[socket.socket] = set()
    for _ in range(count):
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.setblocking(False)
        sock.send(MESSAGE)
        received[sock] = 0
        selector.register(sock, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    ready = False
    deadline = time.monotonic() + 600  # bounded, whatever the parent does
    while time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is sys.stdin:
                for sock in received:
                    sock.close()
                return
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError("the server closed a busy connection")
            received[sock] += len(data)
            while received[sock] >= len(MESSAGE):
                received[sock] -= len(MESSAGE)
                sock.send(MESSAGE)
                echoed.add(sock)
        if not ready and len(echoed) == count:
            ready = True
            print("ready", flush=True)


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


def _probe(port: int) -> float:
    """Seconds from connect() to the last byte of the first echo, on a blocking socket."""
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the probe")
            got += len(chunk)
        elapsed = time.perf_counter() - started
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    return elapsed


def _probe_burst(port: int, count: int) -> float:
    """Seconds from the first of ``count`` simultaneous connects to the last first echo."""
    started = time.perf_counter()
    socks = [socket.create_connection((LOOPBACK, port), timeout=60) for _ in range(count)]
    try:
        for sock in socks:
            sock.sendall(MESSAGE)
        for sock in socks:
            got = 0
            while got < len(MESSAGE):
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed a probe")
                got += len(chunk)
        return time.perf_counter() - started
    finally:
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()


async def _busy_latency(impl: str, count: int) -> tuple[float, float]:
    server, port = await _Server.start(impl, "busy")
    try:
        load = _Server(await trio.lowlevel.open_process(
            [sys.executable, "-m", "benchmarks.tcp_accept", "--load", str(port), str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        ))
        try:
            with trio.fail_after(120):
                if await load.next_line() != "ready":
                    raise RuntimeError("unexpected output from the load process")
            await trio.sleep(0.5)  # steady state
            samples = []
            for _ in range(PROBES):
                samples.append(await trio.to_thread.run_sync(_probe, port))
                await trio.sleep(PROBE_INTERVAL)
            burst = await trio.to_thread.run_sync(_probe_burst, port, BURST)
            return median(samples), burst
        finally:
            await load.stop()
    finally:
        await server.stop()


def _measure(function: Callable[[str, int], Awaitable[T]], impl: str, count: int) -> T:
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
                        help="idle connection counts, comma-separated (default 1000,10000)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts and 1 run: a smoke test; its numbers mean nothing")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target fails")
    parser.add_argument("--busy", type=int, default=None,
                        help=f"connections echoing during the latency row (default "
                             f"{BUSY_CONNECTIONS}); 0 skips the row")
    parser.add_argument("--serve", nargs=3, metavar=("IMPL", "MODE", "EXPECT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, metavar=("PORT", "COUNT"), help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.serve:
        impl, mode, expect = args.serve
        _server_main(impl, mode, int(expect))
        return 0
    if args.load:
        _load_main(int(args.load[0]), int(args.load[1]))
        return 0
    runs: int = args.runs if args.runs is not None else (1 if args.quick else 5)
    if runs < 1 or (runs < 3 and not args.quick):
        parser.error("--runs must be at least 3 (medians of at least 3 runs); --quick allows 1")
    accepts = args.accepts or (QUICK_ACCEPTS if args.quick else DEFAULT_ACCEPTS)
    sizes = (
        [int(size) for size in args.sizes.split(",")] if args.sizes
        else list(QUICK_IDLE_SIZES if args.quick else DEFAULT_IDLE_SIZES)
    )
    busy = args.busy if args.busy is not None else (
        QUICK_BUSY_CONNECTIONS if args.quick else BUSY_CONNECTIONS)
    _raise_fd_limit(max(sizes) + 100)
    _pin(1)

    started = time.perf_counter()
    rates: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    latencies: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    bursts: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    memory: dict[tuple[str, int], list[float]] = {}
    memory_impls = MEMORY_IMPLEMENTATIONS
    for run, impl in interleaved_order(IMPLEMENTATIONS, runs):
        print(f"[run {run + 1}/{runs}] {impl}: accept rate", file=sys.stderr, flush=True)
        rates[impl].append(_measure(_accept_rate, impl, accepts))
    if busy:
        for run, impl in interleaved_order(IMPLEMENTATIONS, runs):
            print(f"[run {run + 1}/{runs}] {impl}: accept latency, {busy} busy connections",
                  file=sys.stderr, flush=True)
            latency, burst = _measure(_busy_latency, impl, busy)
            latencies[impl].append(latency)
            bursts[impl].append(burst)
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
        format_rate(trionet_rate), format_ratio(accept_ratio), f">= {ACCEPT_RATE_TARGET}x",
    ]]
    verdicts = [accept_ratio is not None and accept_ratio >= ACCEPT_RATE_TARGET]
    if busy:
        trio_latency, trionet_latency = median(latencies[TRIO]), median(latencies[TRIONET])
        verdicts.append(trionet_latency <= LATENCY_TARGET)
        rows.append([
            f"accept latency with {busy:,} busy connections (lower is better)",
            f"{trio_latency * 1000:.1f} ms", f"{trionet_latency * 1000:.1f} ms",
            format_ratio(ratio(trionet_latency, trio_latency)),
            f"<= {LATENCY_TARGET * 1000:.0f} ms",
        ])
        trio_burst, trionet_burst = median(bursts[TRIO]), median(bursts[TRIONET])
        rows.append([
            f"{BURST} new connections at once, {busy:,} busy: last first echo",
            f"{trio_burst * 1000:.0f} ms", f"{trionet_burst * 1000:.0f} ms",
            format_ratio(ratio(trionet_burst, trio_burst)), "n/a",
        ])
    for size in sizes:
        base = median(memory[(TRIO, size)])
        for impl in memory_impls[1:]:
            ours = median(memory[(impl, size)])
            memory_ratio = ratio(ours, base)
            verdicts.append(memory_ratio is not None and memory_ratio <= MEMORY_TARGET)
            label = "trionet" if impl == TRIONET else impl.removeprefix("trionet ")
            rows.append([
                f"memory per idle connection, {size:,} connections, {label}", _kib(base),
                _kib(ours), format_ratio(memory_ratio), f"<= {MEMORY_TARGET}x",
            ])
    print(
        f"TCP accept benchmark over loopback, median of {runs} run{'s' if runs != 1 else ''}"
        f"{' (--quick: not a measurement)' if args.quick else ''}; took {elapsed:.0f} s.\n"
        f"Machine: {machine_description()}.\n"
    )
    print(markdown_table(["measurement", TRIO, TRIONET, "trionet/trio", "target"], rows))
    met = all(verdicts)
    targets = [f"accept rate >= {ACCEPT_RATE_TARGET}x trio's"]
    if busy:
        targets.append(f"accept latency <= {LATENCY_TARGET * 1000:.0f} ms")
    targets.append(f"memory per idle connection <= {MEMORY_TARGET}x trio's in every configuration")
    print(f"\nTargets {'met' if met else 'NOT met'}: {', '.join(targets)}.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({
                "machine": machine_description(), "runs": runs, "accepts": accepts,
                "accept_rates": rates, "busy_connections": busy,
                "accept_latencies": latencies, "burst_latencies": bursts,
                "memory_per_connection": {f"{impl} {size}": samples
                                          for (impl, size), samples in memory.items()},
                "targets_met": met,
            }, out, indent=2)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
