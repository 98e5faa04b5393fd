"""One graceful shutdown, the same for every server: GracefulShutdown.

TCP, Unix and UDP servers stop the same way: a shutdown is requested once (a
second request may only bring the deadline closer), the server stops taking
new work, the work in progress gets until the deadline, whatever is left is
cancelled, and the server's task ends. :class:`GracefulShutdown` holds that
state and emits the ``<kind>.shutdown.*`` events; each server supplies what
"stop taking work" and "work in progress" mean for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import final

import trio

from .._adapters.observe import Observer, emit
from .._sansio.validate import check_grace

__all__ = ["GracefulShutdown"]


@final
class GracefulShutdown:
    """The shutdown state of one server run.

    Args:
      kind: The event prefix (``"tcp"``, ``"unix"``, ``"udp"``).
      observer: Receives ``shutdown.begin`` (grace, active),
          ``shutdown.grace_expired`` (cancelled) and ``shutdown.done``.
      active: How much work is in progress now (connections, handlers).
    """

    __slots__ = (
        "_active", "_deadline", "_kind", "_observer", "_scope", "drained", "requested",
        "running", "stopped",
    )

    def __init__(self, kind: str, observer: Observer | None, active: Callable[[], int]) -> None:
        self._kind = kind
        self._observer = observer
        self._active = active
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None
        self.running = False
        #: Set when shutdown begins.
        self.requested = trio.Event()
        #: Set once shutdown has begun and no work is left.
        self.drained = trio.Event()
        #: Set when the server's task has ended.
        self.stopped = trio.Event()

    @property
    def shutting_down(self) -> bool:
        return self.requested.is_set()

    def begin(self, grace: float) -> bool:
        """Request a shutdown within ``grace`` seconds; True if this call started it.

        A server that is not running ignores it; a second request only moves
        the deadline closer.

        Raises:
          ValueError: ``grace`` is negative.
        """
        check_grace("grace", grace)
        if not self.running:
            return False
        deadline = trio.current_time() + grace
        if self.requested.is_set():
            if deadline < self._deadline:
                self._deadline = deadline
                if self._scope is not None:
                    self._scope.deadline = deadline
            return False
        self._deadline = deadline
        emit(self._observer, f"{self._kind}.shutdown.begin", grace=grace, active=self._active())
        self.requested.set()
        if not self._active():
            self.drained.set()
        return True

    def work_done(self) -> None:
        """Call when a piece of work ends: the last one during a shutdown drains it."""
        if self.requested.is_set() and not self._active():
            self.drained.set()

    async def wait_drained(self) -> bool:
        """Wait until no work is left or the deadline passes; True if work is left.

        When work is left, ``shutdown.grace_expired`` has been emitted and the
        caller cancels it.
        """
        if self._active():
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                await self.drained.wait()
            self._scope = None
        if self._active():
            emit(self._observer, f"{self._kind}.shutdown.grace_expired", cancelled=self._active())
            return True
        return False

    @contextmanager
    def run(self) -> Iterator[None]:
        """Mark the server running for the block; ``shutdown.done`` once it ends, however."""
        self.running = True
        try:
            yield
        finally:
            self.running = False
            emit(self._observer, f"{self._kind}.shutdown.done")
            self.stopped.set()
