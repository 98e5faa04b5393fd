"""Running programs as subprocesses in tests: bounded in time, read line by line.

Nothing here sleeps: tests wait for the lines a program prints (``listening on
...``), and every wait is bounded by the ``trio.fail_after`` of the caller.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLI = (sys.executable, "-m", "trionet")


class Lines:
    """The lines a process prints on one pipe, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def next(self) -> str:
        """The next line; fails if the program ends first."""
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some()
            if not chunk:
                raise AssertionError(f"the program ended; it printed: {self.seen}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.seen.append(line.decode())
        return self.seen[-1]

    async def until(self, prefix: str) -> str:
        """Skip lines until one starts with ``prefix``; return it."""
        while not (line := await self.next()).startswith(prefix):
            pass
        return line

    async def rest(self) -> list[str]:
        """Every line from here to the end of the output; returns all lines seen."""
        while chunk := await self._stream.receive_some():
            self._buffer += chunk
        self.seen += self._buffer.decode().splitlines()
        self._buffer = b""
        return self.seen


class Running:
    """A program started by :func:`running`: its process and its stdout lines."""

    def __init__(self, process: trio.Process, stdout: Lines) -> None:
        self.process = process
        self.stdout = stdout

    async def stop(self, signum: int = signal.SIGINT) -> tuple[int, list[str]]:
        """Send ``signum``, wait for the exit; return the exit code and every stdout line."""
        self.process.send_signal(signum)
        lines = await self.stdout.rest()
        return await self.process.wait(), lines


@asynccontextmanager
async def running(command: Sequence[str]) -> AsyncIterator[Running]:
    """Start ``command`` with its stdout piped; kill it if the block leaves it running.

    Output is unbuffered (``PYTHONUNBUFFERED``), so lines that a program prints
    without flushing arrive at once, as on a terminal.
    """
    process = await trio.lowlevel.open_process(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        yield Running(process, Lines(process.stdout))
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def run(command: Sequence[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` to its end with ``stdin``; capture its output."""
    return await trio.run_process(
        list(command), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )


def port_of(listening_line: str) -> int:
    """The port in ``listening on 127.0.0.1:8000 (...)`` or ``listening on port 8000``."""
    words = listening_line.replace(",", " ").split()
    where = words[2] if words[2] != "port" else words[3]
    return int(where.rsplit(":", 1)[-1])


def run_benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -W error -m benchmarks.<module> <args>`` from the repository root, as
    benchmarks/README.md documents it, bounded at 120 s; the result, whatever its status."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", f"benchmarks.{module}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
