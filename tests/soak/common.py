"""What the soak scenarios share: resource accounting, log capture, peak memory.

The scenarios (``chaos``, ``hostile``, ``load``, ``peers``, ``udp``, ``udp_proxy``)
run in the caller's ``trio.run``: the tests in ``tests/test_soak_*.py`` run them
in short forms under pytest-trio, ``python -m tests.soak`` in long forms from the
command line. Each returns a report of what it measured together with a list of
the contract violations it saw (``problems``); an empty list means it held.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import ssl
import tracemalloc
from collections.abc import Iterator
from typing import Final

import trio
import trustme

__all__ = [
    "LOOPBACK_V4",
    "LOOPBACK_V6",
    "LogCapture",
    "capture_logs",
    "count_tasks",
    "ensure_fd_limit",
    "open_fd_count",
    "PeakMemory",
    "peak_rss",
    "reset_peak_rss",
    "tls_contexts",
    "trace_peak_memory",
]

#: The name the test certificate of :func:`tls_contexts` is issued for.
TLS_HOSTNAME: Final = "soak.trionet.test"

LOOPBACK_V4: Final = "127.0.0.1"
LOOPBACK_V6: Final = "::1"


def open_fd_count() -> int:
    """How many file descriptors this process has open (Linux: ``/proc/self/fd``).

    A collection runs first, so that sockets only garbage keeps alive are closed.
    """
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def count_tasks() -> int:
    """How many tasks the current ``trio.run`` has, counted from its root task.

    Compared before and after a scenario, it shows tasks that outlived the
    nurseries that should own them.
    """
    root = trio.lowlevel.current_root_task()
    if root is None:
        raise RuntimeError("count_tasks() must be called inside trio.run")
    count = 0
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def ensure_fd_limit(needed: int) -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit if it is below ``needed``.

    Returns:
      The previous soft limit if it was raised (restore it with
      ``resource.setrlimit``), ``None`` if it was high enough already.

    Raises:
      OSError: Even the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return None
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft


class LogCapture(logging.Handler):
    """Keeps what one logger (``"trionet"``) logs, at every level.

    Each record is kept as ``(levelno, levelname, message)``: a record's
    arguments may be an exception whose traceback holds a task's frames, which
    would distort the memory a scenario measures.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        started = " server listening on " in message
        stopped = " stopped after " in message and " ended by " not in message
        if record.levelno == logging.INFO and (started or stopped):
            return  # a server's start and stop, which every scenario has
        self.records.append((record.levelno, record.levelname, message))

    def above(self, level: int) -> list[str]:
        """The messages logged more severely than ``level``."""
        return [f"{name}: {message}" for levelno, name, message in self.records if levelno > level]


@contextlib.contextmanager
def capture_logs(name: str = "trionet") -> Iterator[LogCapture]:
    """Capture every record of logger ``name`` for the duration of the block."""
    logger = logging.getLogger(name)
    capture = LogCapture()
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)


class PeakMemory:
    """The peak of traced Python allocations above the level when tracing began."""

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0

    @property
    def growth(self) -> int:
        """Bytes the peak reached above the baseline."""
        return max(0, self.peak - self.baseline)


@contextlib.contextmanager
def trace_peak_memory() -> Iterator[PeakMemory]:
    """Trace allocations (``tracemalloc``) for the block and record their peak.

    If tracing was already on, it is left on and only its peak is reset.
    """
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    result = PeakMemory()
    gc.collect()
    tracemalloc.reset_peak()
    result.baseline = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        result.peak = tracemalloc.get_traced_memory()[1]
        if started:
            tracemalloc.stop()


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux: ``/proc/self/clear_refs``).

    Returns:
      Whether it could be reset; if not, :func:`peak_rss` reports the peak since
      the process started.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM), since the last reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext, str]:
    """A server context, a client context trusting it, and the server's name (trustme)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(TLS_HOSTNAME).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context, TLS_HOSTNAME
