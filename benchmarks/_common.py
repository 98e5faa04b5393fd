"""Helpers shared by the benchmarks: loopback connections, timing, medians, tables.

Every benchmark here follows the same method, so its numbers can be compared:

* loopback TCP on ``127.0.0.1`` only, default socket buffer sizes, ``TCP_NODELAY`` on;
* a fresh event loop and a fresh connection for every measurement (set-up is not
  timed);
* several runs per cell, the implementations interleaved within each run (A, B, C,
  A, B, C, ...) and the starting one rotated, so a burst of machine noise hits
  every implementation rather than one; the median of the runs is reported.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import platform
import socket
import statistics
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import trio

__all__ = [
    "LOOPBACK",
    "Cell",
    "ImplRunner",
    "asyncio_tcp_pair",
    "format_rate",
    "format_ratio",
    "interleaved_order",
    "machine_description",
    "markdown_table",
    "median",
    "ratio",
    "run_asyncio",
    "set_nodelay",
    "trio_tcp_pair",
    "uvloop_loop_factory",
]

T = TypeVar("T")

#: The only address the benchmarks use: results must not depend on a network.
LOOPBACK: Final = "127.0.0.1"

#: A loop factory for :func:`run_asyncio`: stdlib asyncio's or uvloop's.
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


# --------------------------------------------------------------------- statistics


def median(samples: Sequence[float]) -> float:
    """The median of one cell's runs (the mean of the middle two for an even count).

    Raises:
      ValueError: ``samples`` is empty.
    """
    if not samples:
        raise ValueError("median of no samples")
    return float(statistics.median(samples))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass
class Cell:
    """The samples of one implementation in one table row, as rates per second."""

    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        """The median rate, or ``None`` before the first sample."""
        return median(self.rates) if self.rates else None

    @property
    def spread(self) -> float | None:
        """``(max - min) / median`` of the samples: how noisy the cell was."""
        mid = self.median
        if not mid or len(self.rates) < 2:
            return None
        return (max(self.rates) - min(self.rates)) / mid


def interleaved_order(names: Sequence[T], runs: int) -> Iterator[tuple[int, T]]:
    """Yield ``(run, name)`` pairs: every name once per run, rotating the first.

    Run 0 measures A, B, C; run 1 measures B, C, A; run 2 C, A, B; and so on. Machine
    noise (another process waking up, a thermal step) then spreads over all
    implementations, and no implementation always runs right after the same one.
    """
    count = len(names)
    for run in range(runs):
        for i in range(count):
            yield run, names[(run + i) % count]


# ------------------------------------------------------------------------ output


def format_rate(rate: float | None) -> str:
    """A rate for a table: ``31.2k``, ``1.05M``, ``812``; ``n/a`` when missing."""
    if rate is None:
        return "n/a"
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e4:
        return f"{rate / 1e3:.1f}k"
    if rate >= 1e3:
        return f"{rate / 1e3:.2f}k"
    return f"{rate:.0f}"


def format_ratio(value: float | None) -> str:
    """A ratio for a table: ``0.97x``; ``n/a`` when missing."""
    return "n/a" if value is None else f"{value:.2f}x"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table with padded columns (readable as plain text too).

    The first two columns are left-aligned (labels), the others right-aligned
    (numbers).
    """
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the header {len(headers)}: {row!r}")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * w) if i < 2 else ("-" * (w - 1) + ":") for i, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(rule) + " |", *map(line, rows)])


def machine_description() -> str:
    """One line naming the CPU, core count, OS and the Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for text in f:
                if text.startswith("model name"):
                    cpu = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"{cpu}, {os.cpu_count()} logical CPUs",
        f"{platform.system()} {platform.release()}",
        f"{platform.python_implementation()} {platform.python_version()}",
        f"trio {trio.__version__}",
    ]
    factory = uvloop_loop_factory()
    if factory is not None:
        parts.append(f"uvloop {importlib.import_module('uvloop').__version__}")
    return "; ".join(parts)


# ------------------------------------------------------------------------- trio


async def trio_tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected ``(client, server)`` pair of trio streams over loopback TCP.

    trio's ``SocketStream`` turns ``TCP_NODELAY`` on by itself; socket buffers keep
    the kernel's defaults.
    """
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream(LOOPBACK, port)
        try:
            server = await listeners[0].accept()
        except BaseException:
            await trio.aclose_forcefully(client)
            raise
    finally:
        for listener in listeners:
            await listener.aclose()
    return client, server


# ---------------------------------------------------------------------- asyncio


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    """Turn ``TCP_NODELAY`` on for an asyncio stream, as trio does for its own.

    asyncio and uvloop already do this for TCP transports; saying it explicitly
    keeps the comparison fair whatever their version.
    """
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


AsyncioStreams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def asyncio_tcp_pair() -> tuple[AsyncioStreams, AsyncioStreams, asyncio.Server]:
    """A connected ``(client, server)`` pair of asyncio streams over loopback TCP.

    Returns:
      ``((client_reader, client_writer), (server_reader, server_writer), server)``.
      Close both writers, then the server (``close()`` and ``wait_closed()``).
    """
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[AsyncioStreams] = loop.create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepted.done():
            accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    client = await asyncio.open_connection(LOOPBACK, port)
    served = await accepted
    set_nodelay(client[1])
    set_nodelay(served[1])
    return client, served, server


def uvloop_loop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop`` if uvloop imports here, else ``None``.

    Imported by name so that neither this module nor mypy needs uvloop installed.
    """
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run_asyncio(
    main: Callable[[], Coroutine[Any, Any, T]], loop_factory: LoopFactory | None = None
) -> T:
    """Run ``main()`` to completion in a new event loop, then close the loop.

    The equivalent of Python 3.11's ``asyncio.Runner(loop_factory=...)``, which the
    benchmarks cannot use while Python 3.10 is supported.
    """
    loop = (loop_factory or asyncio.new_event_loop)()
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# ------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class ImplRunner:
    """Runs one implementation's measurement in a fresh event loop.

    Attributes:
      name: The implementation's column title.
      measure: Called as ``measure(scenario, payload_size, count)``; returns the
          seconds the timed section took.
    """

    name: str
    measure: Callable[[str, int, int], float]

    def rate(self, scenario: str, payload_size: int, count: int) -> float:
        """Measure once and return ``count`` divided by the elapsed seconds.

        A collection before the measurement makes each run start from the same
        garbage-collector state; the collector stays enabled, as in real programs.
        """
        gc.collect()
        elapsed = self.measure(scenario, payload_size, count)
        if elapsed <= 0:
            raise RuntimeError(f"{self.name}: non-positive elapsed time {elapsed!r}")
        return count / elapsed
