"""A cache of replies for duplicate suppression in request/response servers (sans-IO).

A server that answers requests over an unreliable transport sees each request
as often as the client retransmits it. If handling is not idempotent (or just
costly), the server must recognise a retransmission and send the same reply
again instead of handling it twice: CoAP's deduplication (RFC 7252 section
4.5), DNS servers' and RPC systems' duplicate request caches. :class:`ReplyCache`
keeps those replies, by a key the server chooses (the sender and a request id),
for a fixed lifetime and up to a number of entries.

The clock is passed in (``now``), so the cache works with any event loop and is
deterministic to test.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Final, final

__all__ = ["DEFAULT_REPLY_CACHE_LIFETIME", "DEFAULT_REPLY_CACHE_SIZE", "ReplyCache"]

# CoAP's EXCHANGE_LIFETIME (RFC 7252 section 4.8.2), 247 s: how long a CoAP
# server must remember a message ID to recognise every retransmission of it
# (MAX_TRANSMIT_SPAN 45 s + 2 * MAX_LATENCY 100 s + PROCESSING_DELAY 2 s).
DEFAULT_REPLY_CACHE_LIFETIME: Final = 247.0
# trionet's choice: at the default lifetime, room for 40 new requests per
# second; the oldest entries go first when it is full.
DEFAULT_REPLY_CACHE_SIZE: Final = 10_000


@final
class ReplyCache:
    """Replies to recent requests, by key, each kept for ``lifetime`` seconds, at most ``size``.

    Entries all live ``lifetime`` seconds from when they were stored, so the
    oldest entry is always the first to expire: expiry and the size bound both
    drop entries from the front of an insertion-ordered dict, in amortised
    constant time per operation.

    Args:
      lifetime: Seconds an entry is kept.
      size: The most entries kept; storing more drops the oldest.

    Raises:
      ValueError: ``lifetime`` is not a positive number, or ``size`` < 1.

    Example:
      >>> cache = ReplyCache(lifetime=10.0, size=2)
      >>> cache.put(("10.0.0.2:5683", 7), b"reply", now=0.0)
      >>> cache.get(("10.0.0.2:5683", 7), now=9.0)
      (b'reply',)
      >>> cache.get(("10.0.0.2:5683", 7), now=10.0) is None
      True
    """

    __slots__ = ("_entries", "_lifetime", "_size")

    def __init__(self, lifetime: float, size: int) -> None:
        if not (lifetime > 0 and math.isfinite(lifetime)):
            raise ValueError(f"reply_cache_lifetime must be a positive number, not {lifetime!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"reply_cache_size must be an int >= 1, not {size!r}")
        self._lifetime = float(lifetime)
        self._size = size
        self._entries: dict[Hashable, tuple[float, bytes | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, now: float) -> tuple[bytes | None] | None:
        """``(reply,)`` stored for ``key`` and not expired, else ``None``.

        ``reply`` is ``None`` when the handler returned no reply.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return (entry[1],)

    def put(self, key: Hashable, reply: bytes | None, now: float) -> None:
        """Store ``reply`` for ``key``, dropping expired entries and the oldest beyond the bound."""
        entries = self._entries
        entries.pop(key, None)  # a re-stored key moves to the back
        entries[key] = (now + self._lifetime, reply)
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now and len(entries) <= self._size:
                break
            del entries[oldest]
