"""A rate limit on log records, per key (sans-IO).

A server logs a handler's exception with its traceback, about a kilobyte. A
remote peer that can make the handler fail (one byte in a datagram is enough
for many handlers) could otherwise write a kilobyte of log per packet it sends.
:class:`RecordLimiter` lets at most ``burst`` records per key through in each
``window`` seconds (a key is typically the peer's host and the error's type),
says once when it starts holding records back, and reports how many it held
back when the window ends. Each key's window starts with its first record.

This is the shape of the Linux kernel's ``printk_ratelimit`` (a burst per
interval, then "N callbacks suppressed") and of journald's per-service limit,
applied per peer and per kind of error so that one noisy peer does not hide
another's first error.

The table of keys is bounded (``max_keys``): when it is full, new keys share
one overflow window (reported with the key ``None``), so a flood from many
(possibly spoofed) sources costs at most ``(max_keys + 1) * (burst + 1)``
records per window, and bounded memory.

The clock is passed in (``now``), so the limiter works with any event loop and
is deterministic to test.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable
from typing import Final, Generic, TypeVar, final

__all__ = [
    "DEFAULT_LOG_BURST",
    "DEFAULT_LOG_MAX_KEYS",
    "DEFAULT_LOG_WINDOW",
    "Admission",
    "RecordLimiter",
]

# trionet's choice (issue 19.1): the first traceback of a kind from a host is
# the one that diagnoses the error; the next ones are counted, not printed, so
# 100 identical errors give one traceback and a count, and a flood costs a few
# hundred bytes a minute per host.
DEFAULT_LOG_BURST: Final = 1
DEFAULT_LOG_WINDOW: Final = 60.0
# trionet's choice: keys tracked at once before new ones share the overflow key.
DEFAULT_LOG_MAX_KEYS: Final = 64

KeyT = TypeVar("KeyT", bound=Hashable)


@final
class Admission(enum.Enum):
    """What to do with one record, as :meth:`RecordLimiter.admit` decides."""

    #: Log it in full.
    LOG = "log"
    #: The key's burst is spent: log one line, without details, saying that
    #: similar records are held back until the window ends.
    NOTICE = "notice"
    #: Count it only; :meth:`RecordLimiter.expire` reports the count later.
    SUPPRESS = "suppress"


@final
class _Window:
    __slots__ = ("admitted", "ends", "noticed", "suppressed")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.admitted = 0
        self.noticed = False
        self.suppressed = 0


@final
class RecordLimiter(Generic[KeyT]):
    """At most ``burst`` log records per key in each ``window`` seconds.

    Args:
      burst: Records logged in full per key and window (at least 1).
      window: The window's length, in seconds (positive).
      max_keys: Keys tracked at once (at least 1); see the module documentation.

    Raises:
      ValueError: An argument is out of range.
    """

    __slots__ = ("_burst", "_max_keys", "_overflow", "_window", "_windows")

    def __init__(
        self,
        *,
        burst: int = DEFAULT_LOG_BURST,
        window: float = DEFAULT_LOG_WINDOW,
        max_keys: int = DEFAULT_LOG_MAX_KEYS,
    ) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be a positive int, not {burst!r}")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a positive int, not {max_keys!r}")
        if not (isinstance(window, (int, float)) and 0 < window < math.inf):
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        self._burst = burst
        self._window = float(window)
        self._max_keys = max_keys
        # Every window lasts the same time, so insertion order is the order
        # in which windows end: expiry pops from the front.
        self._windows: dict[KeyT, _Window] = {}
        self._overflow: _Window | None = None  # shared by new keys while the table is full

    @property
    def window(self) -> float:
        """The window's length, in seconds."""
        return self._window

    def admit(self, key: KeyT, now: float) -> Admission:
        """Count one record for ``key`` at time ``now`` and say what to do with it.

        Call :meth:`expire` first to learn about the windows that have ended
        (a window that has ended is also restarted here, but its count of held
        back records is then reported by nobody).
        """
        window = self._windows.get(key)
        if window is not None and now >= window.ends:
            del self._windows[key]
            window = None
        if window is None:
            if len(self._windows) < self._max_keys:
                window = self._windows[key] = _Window(now + self._window)
            else:
                window = self._overflow
                if window is None or now >= window.ends:
                    window = self._overflow = _Window(now + self._window)
        if window.admitted < self._burst:
            window.admitted += 1
            return Admission.LOG
        if not window.noticed:
            window.noticed = True
            return Admission.NOTICE
        window.suppressed += 1
        return Admission.SUPPRESS

    def expire(self, now: float) -> list[tuple[KeyT | None, int]]:
        """Forget the windows that ended by ``now``.

        Returns:
          ``(key, count)`` for each of them that held records back (``count``
          records admitted as :attr:`Admission.SUPPRESS`): what a caller logs
          as "suppressed COUNT similar records". The key is
          ``None`` for the overflow window that new keys shared while the
          table was full.
        """
        ended: list[tuple[KeyT | None, int]] = []
        overflow = self._overflow
        if overflow is not None and now >= overflow.ends:
            self._overflow = None
            if overflow.suppressed:
                ended.append((None, overflow.suppressed))
        windows = self._windows
        while windows:
            key, window = next(iter(windows.items()))
            if now < window.ends:
                break
            del windows[key]
            if window.suppressed:
                ended.append((key, window.suppressed))
        return ended
