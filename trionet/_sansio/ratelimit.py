"""Token buckets per source, bounded in memory (sans-IO).

A server that answers any source (the CLI's UDP echo) must not let one
source, or a loop between two such servers, make it send without bound.
:class:`SourceRateLimit` gives each source a token bucket and all sources
together one more, so that a sender forging many source addresses is held by
the shared bucket. The clock is passed in (``now``), so it is deterministic to
test and works with any event loop.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import final

__all__ = ["SourceRateLimit"]


@final
class SourceRateLimit:
    """At most ``rate`` events per second per source (bursts of ``burst``), and ``total_rate`` in all.

    Args:
      rate: Tokens a source earns per second.
      burst: The most tokens a source holds (its bucket's size); a new source
          starts full.
      total_rate: Tokens per second shared by every source (bursts of
          ``total_rate``); ``None``: ten times ``rate``.
      max_sources: The most sources remembered. Past it the one remembered
          longest is forgotten (it starts full again if it comes back, which
          the shared bucket bounds).

    Raises:
      ValueError: A rate or size is not a positive number.

    Example:
      >>> limit = SourceRateLimit(rate=1.0, burst=2.0)
      >>> [limit.allow("10.0.0.2", now=0.0) for _ in range(3)]
      [True, True, False]
      >>> limit.allow("10.0.0.2", now=1.0)
      True
    """

    __slots__ = ("_buckets", "_burst", "_max_sources", "_rate", "_total", "_total_rate")

    def __init__(
        self, rate: float, burst: float, *, total_rate: float | None = None, max_sources: int = 1024
    ) -> None:
        total = rate * 10 if total_rate is None else total_rate
        for name, value in (("rate", rate), ("burst", burst), ("total_rate", total)):
            if isinstance(value, bool) or not (
                isinstance(value, int | float) and value > 0 and math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) or max_sources < 1:
            raise ValueError(f"max_sources must be an int >= 1, not {max_sources!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._total_rate = float(total)
        self._max_sources = max_sources
        # source -> (tokens, when counted); the shared bucket under the key None
        self._buckets: dict[Hashable, tuple[float, float]] = {}
        self._total: tuple[float, float] | None = None

    def allow(self, source: Hashable, now: float) -> bool:
        """Take a token of ``source``'s bucket and of the shared one; False if either is empty."""
        tokens, then = self._total or (self._total_rate, now)
        shared = min(self._total_rate, tokens + (now - then) * self._total_rate)
        entry = self._buckets.pop(source, None)  # re-inserted: most recent last
        if entry is None:
            own = self._burst
            if len(self._buckets) >= self._max_sources:
                del self._buckets[next(iter(self._buckets))]
        else:
            own = min(self._burst, entry[0] + (now - entry[1]) * self._rate)
        allowed = own >= 1.0 and shared >= 1.0
        if allowed:
            own -= 1.0
            shared -= 1.0
        self._buckets[source] = (own, now)
        self._total = (shared, now)
        return allowed
