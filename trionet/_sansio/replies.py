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

__all__ = [
    "DEFAULT_REPLY_CACHE_BYTES",
    "DEFAULT_REPLY_CACHE_LIFETIME",
    "DEFAULT_REPLY_CACHE_SIZE",
    "ReplyCache",
]

# CoAP's EXCHANGE_LIFETIME (RFC 7252 section 4.8.2), 247 s: how long a CoAP
# server must remember a message ID to recognise every retransmission of it
# (MAX_TRANSMIT_SPAN 45 s + 2 * MAX_LATENCY 100 s + PROCESSING_DELAY 2 s).
DEFAULT_REPLY_CACHE_LIFETIME: Final = 247.0
# trionet's choice: at the default lifetime, room for 40 new requests per
# second; the oldest entries go first when it is full.
DEFAULT_REPLY_CACHE_SIZE: Final = 10_000
# trionet's choice (issue 15.2): the cached replies hold at most 16 MiB of
# payload. Counted in entries only, 10,000 replies of 60 KB held 602 MiB for
# the whole 247 s lifetime.
DEFAULT_REPLY_CACHE_BYTES: Final = 16 * 1024 * 1024


@final
class ReplyCache:
    """Replies to recent requests, by key, each kept for ``lifetime`` seconds.

    The cache holds at most ``size`` entries and ``max_bytes`` bytes of
    replies. Entries all live ``lifetime`` seconds from when they were stored,
    so the oldest entry is always the first to expire: expiry drops entries
    from the front of an insertion-ordered dict, in amortised constant time.

    Fair eviction: each entry belongs to a peer (the sender, as the server
    sees it). When a new entry overflows a bound, a peer that holds more than
    its fair share (entries / peers) loses its own oldest entry; otherwise the
    oldest entry of all goes. So one sender that floods the cache with new keys
    evicts its own replies, not another client's (whose retransmission would
    otherwise run a non-idempotent handler twice), while a lone busy client
    can still use the whole cache. A sender that forges many source addresses
    is many peers to the cache: only the bounds hold against it.

    Args:
      lifetime: Seconds an entry is kept.
      size: The most entries kept.
      max_bytes: The most reply bytes kept; a reply larger than this is not
          cached at all.

    Raises:
      ValueError: ``lifetime`` is not a positive number, or ``size`` or
          ``max_bytes`` < 1.

    Example:
      >>> cache = ReplyCache(lifetime=10.0, size=2)
      >>> cache.put(("10.0.0.2:5683", 7), b"reply", now=0.0)
      >>> cache.get(("10.0.0.2:5683", 7), now=9.0)
      (b'reply',)
      >>> cache.get(("10.0.0.2:5683", 7), now=10.0) is None
      True
    """

    __slots__ = ("_bytes", "_entries", "_lifetime", "_max_bytes", "_peers", "_size")

    def __init__(self, lifetime: float, size: int, max_bytes: int = DEFAULT_REPLY_CACHE_BYTES) -> None:
        if not (lifetime > 0 and math.isfinite(lifetime)):
            raise ValueError(f"reply_cache_lifetime must be a positive number, not {lifetime!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"reply_cache_size must be an int >= 1, not {size!r}")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ValueError(f"reply_cache_bytes must be an int >= 1, not {max_bytes!r}")
        self._lifetime = float(lifetime)
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        # key -> (expiry, reply, peer), oldest first
        self._entries: dict[Hashable, tuple[float, bytes | None, Hashable]] = {}
        # peer -> its keys, oldest first
        self._peers: dict[Hashable, dict[Hashable, None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """The reply bytes held now."""
        return self._bytes

    def get(self, key: Hashable, now: float) -> tuple[bytes | None] | None:
        """``(reply,)`` stored for ``key`` and not expired, else ``None``.

        ``reply`` is ``None`` when the handler returned no reply.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._remove(key)
            return None
        return (entry[1],)

    def put(self, key: Hashable, reply: bytes | None, now: float, peer: Hashable = None) -> None:
        """Store ``reply`` for ``key`` (sent by ``peer``); drop expired entries and evict past the bounds."""
        size = 0 if reply is None else len(reply)
        if key in self._entries:
            self._remove(key)  # a re-stored key moves to the back
        if size > self._max_bytes:
            return
        entries, peers = self._entries, self._peers
        entries[key] = (now + self._lifetime, reply, peer)
        self._bytes += size
        mine = peers.get(peer)
        if mine is None:
            mine = peers[peer] = {}
        mine[key] = None
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now:
                break
            self._remove(oldest)
        while len(entries) > self._size or self._bytes > self._max_bytes:
            if len(mine) > 1 and len(mine) * len(peers) > len(entries):
                self._remove(next(iter(mine)))  # over its fair share: its own oldest
            else:
                self._remove(next(iter(entries)))

    def _remove(self, key: Hashable) -> None:
        _, reply, peer = self._entries.pop(key)
        if reply is not None:
            self._bytes -= len(reply)
        keys = self._peers[peer]
        del keys[key]
        if not keys:
            del self._peers[peer]
