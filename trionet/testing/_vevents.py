"""The virtual network's clock: a lazily driven discrete-event queue.

Everything that happens on the wire (a datagram arriving, an acknowledgement
coming back, a connect timer firing) is an event at a point on trio's clock.
There is no background task. Events are run *lazily*: every operation on the
network first runs, in time order, all events that are due at the current time
(:meth:`EventQueue.advance`), and a task that must wait parks until the earliest
pending event is due or until the network's state changes. Under
``MockClock(autojump_threshold=0)`` the clock then jumps straight to the next
event, so simulated seconds cost nothing.

Each event runs with *its own* time as "now" (not the possibly later time at
which some task happened to run it), so what the simulation computes does not
depend on which task drives it.

Ties: events due at the same instant run in order of a key the caller gives
(the flow the event belongs to, e.g. ``"udp 10.0.0.2:49152>10.0.0.1:7"``) and
then in the order they were scheduled. trio runs tasks that wake at the same
moment in a random order; ordering by flow keeps that order from changing what
the network does.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import final

import trio

__all__ = ["EventQueue"]

Callback = Callable[[float], None]


@final
class EventQueue:
    """Pending events, ordered by (time, key, scheduling order).

    Waiters park on one :class:`trio.lowlevel.ParkingLot`. One of them, the
    *timekeeper*, parks with a deadline at the earliest pending event, so that
    someone runs the events when they are due; the others park without one (a
    deadline per waiter costs a cancel scope each, and every one of them would
    fire at each event). Invariant: while anyone is parked, the timekeeper is
    parked with the current earliest event time as its deadline, so scheduling
    a later event needs no wake-up; scheduling an earlier one, running events,
    or any other state change wakes them all and they recompute (the first to
    park again keeps time). A timekeeper that leaves otherwise (cancelled)
    wakes one other waiter, which takes over.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int, Callback]] = []
        self._counter = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self._advancing = False
        self._timekeeper: object | None = None

    def schedule(self, at: float, key: str, callback: Callback) -> None:
        """Run ``callback(at)`` once trio's clock reaches ``at``."""
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (at, key, next(self._counter), callback))
        if at < earliest:
            self._lot.unpark_all()

    def advance(self) -> float:
        """Run every event due by now, in order; return the current time.

        Outside a trio run (configuring a network before ``trio.run``) nothing
        is due and the time is reported as 0.0. Events that schedule events
        already due are run in the same call. Re-entrant calls (from inside an
        event) return at once.
        """
        try:
            now = trio.current_time()
        except RuntimeError:
            return 0.0
        if self._advancing:
            return now
        ran = False
        self._advancing = True
        try:
            while self._heap and self._heap[0][0] <= now:
                at, _key, _n, callback = heapq.heappop(self._heap)
                callback(at)
                ran = True
        finally:
            self._advancing = False
        if ran:
            self._lot.unpark_all()
        return now

    def notify(self) -> None:
        """Wake every waiter so that it re-checks the state it waits for."""
        self._lot.unpark_all()

    def next_time(self) -> float:
        """Time of the earliest pending event, or ``inf``."""
        return self._heap[0][0] if self._heap else math.inf

    async def wait(self) -> None:
        """Park until the next event is due or the state changes.

        Cancellation:
          Raises :class:`trio.Cancelled` having changed nothing.
        """
        if self._timekeeper is not None:
            await self._lot.park()  # woken by a state change, or by a leaving timekeeper
            return
        me = self._timekeeper = object()
        try:
            with trio.move_on_at(self.next_time()):
                await self._lot.park()
        finally:
            if self._timekeeper is me:
                self._timekeeper = None
                if self._lot:  # others still parked: one of them keeps time now
                    self._lot.unpark(count=1)

    def __len__(self) -> int:
        return len(self._heap)
