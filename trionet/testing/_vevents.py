"""The virtual network's clock: a lazily driven discrete-event queue.

Everything that happens on the wire (a datagram arriving, an acknowledgement
coming back, a connect timer firing) is an event at a point on trio's clock.
There is no background task. Events are run *lazily*: every operation on the
network first runs, in time order, all events that are due at the current time
(:meth:`EventQueue.advance`), and a task that must wait parks until the earliest
pending event is due or until the state of its socket changes. Under
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

import functools
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, final

import trio

__all__ = ["EventQueue"]

Callback = Callable[[float], None]


@final
class EventQueue:
    """Pending events, ordered by (time, key, scheduling order), and the tasks waiting on them.

    A task waits on the :class:`trio.lowlevel.ParkingLot` of the socket it
    called (:meth:`wait`). Who is woken:

    - An event whose callback is a method of a socket (``peer._on_data``, or a
      :func:`functools.partial` of one) changes that socket alone (it may
      schedule more events, but touches no other socket): it wakes the tasks
      waiting on that socket. Any other event (a SYN reaching a listener, a
      datagram, a timer of the network's) and :meth:`notify` (a close, a crash,
      a partition) wake every waiting task, which then re-checks its own
      socket.
    - One waiting task, the *timekeeper*, parks with a deadline at the earliest
      pending event, so that someone runs the events when they are due; the
      others park without one (a deadline each would cost a cancel scope each,
      and all of them would fire at every event). Invariant: while any task is
      parked, the timekeeper is parked with the current earliest event time as
      its deadline. Scheduling an earlier event wakes the timekeeper (to take
      the new deadline); a task that stops waiting while no timekeeper is
      parked (:meth:`release`) wakes one other waiting task, which takes over.

    So n connections exchanging data cost O(1) wake-ups per segment, not O(n).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int, Callback]] = []
        self._counter = itertools.count()
        self._advancing = False
        # Lots that may have parked tasks (emptied lazily), in order of first use.
        self._lots: dict[trio.lowlevel.ParkingLot, None] = {}
        self._timekeeper: object | None = None
        self._timekeeper_lot: trio.lowlevel.ParkingLot | None = None

    def schedule(self, at: float, key: str, callback: Callback) -> None:
        """Run ``callback(at)`` once trio's clock reaches ``at``."""
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (at, key, next(self._counter), callback))
        if at < earliest and self._timekeeper_lot is not None:
            self._timekeeper_lot.unpark_all()  # the timekeeper takes the earlier deadline

    def advance(self) -> float:
        """Run every event due by now, in order, and wake whom they concern; return the time.

        Outside a trio run (configuring a network before ``trio.run``) nothing
        is due and the time is reported as 0.0. Events that schedule events
        already due are run in the same call. Re-entrant calls (from inside an
        event) return at once.
        """
        try:
            now = trio.current_time()
        except RuntimeError:
            return 0.0
        if self._advancing or not self._heap or self._heap[0][0] > now:
            return now
        touched: dict[trio.lowlevel.ParkingLot, None] = {}
        everyone = False
        self._advancing = True
        try:
            while self._heap and self._heap[0][0] <= now:
                at, _key, _n, callback = heapq.heappop(self._heap)
                callback(at)
                if not everyone:
                    lot = _lot_of(callback)
                    if lot is None:
                        everyone = True
                    else:
                        touched[lot] = None
        finally:
            self._advancing = False
        if everyone:
            self.notify()
        else:
            for lot in touched:
                lot.unpark_all()
        return now

    def notify(self) -> None:
        """Wake every waiting task so that it re-checks the state it waits for."""
        lots, self._lots = self._lots, {}
        for lot in lots:
            lot.unpark_all()

    def next_time(self) -> float:
        """Time of the earliest pending event, or ``inf``."""
        return self._heap[0][0] if self._heap else math.inf

    async def wait(self, lot: trio.lowlevel.ParkingLot) -> None:
        """Park on ``lot`` (the calling socket's) until woken, or the next event is due.

        The caller re-checks its state and waits again, or calls
        :meth:`release` once it stops waiting.

        Cancellation:
          Raises :class:`trio.Cancelled` having changed nothing.
        """
        self._lots[lot] = None
        if self._timekeeper is not None:
            await lot.park()
            return
        token = self._timekeeper = object()
        self._timekeeper_lot = lot
        try:
            with trio.move_on_at(self.next_time()):
                await lot.park()
        finally:
            if self._timekeeper is token:
                self._timekeeper = self._timekeeper_lot = None

    def release(self) -> None:
        """A task that waited stops waiting: if nobody keeps time now, wake one waiter to."""
        if self._timekeeper is not None:
            return
        lots = self._lots
        while lots:
            lot = next(iter(lots))  # the oldest entry: a stale (empty) one is dropped
            if lot:
                lot.unpark(count=1)
                return
            del lots[lot]

    def __len__(self) -> int:
        return len(self._heap)


def _lot_of(callback: Callable[..., Any]) -> trio.lowlevel.ParkingLot | None:
    """The lot of the socket whose method ``callback`` is (through a partial), or ``None``."""
    while isinstance(callback, functools.partial):
        callback = callback.func
    lot = getattr(getattr(callback, "__self__", None), "_lot", None)
    return lot if isinstance(lot, trio.lowlevel.ParkingLot) else None
