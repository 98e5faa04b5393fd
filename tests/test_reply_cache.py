"""ReplyCache, serve_udp's duplicate suppression, as a sans-IO object: lifetime, size, bytes.

Imports the private ``trionet._sansio.replies``: ReplyCache is internal (serve_udp
uses it; its options are the public ``reply_cache_*`` parameters).
"""

from __future__ import annotations

import pytest

from trionet import DEFAULT_REPLY_CACHE_BYTES, DEFAULT_REPLY_CACHE_LIFETIME
from trionet._sansio.replies import ReplyCache

# ------------------------------------------------------------- lifetime and size


def test_the_reply_cache_expires_entries_after_their_lifetime() -> None:
    assert DEFAULT_REPLY_CACHE_LIFETIME == 247.0  # CoAP's EXCHANGE_LIFETIME
    cache = ReplyCache(lifetime=10.0, size=100)
    cache.put("a", b"A", now=0.0)
    cache.put("b", None, now=5.0)
    assert cache.get("a", now=9.9) == (b"A",)
    assert cache.get("b", now=9.9) == (None,)  # "answered with no reply" is cached too
    assert cache.get("a", now=10.0) is None
    assert cache.get("missing", now=0.0) is None
    cache.put("c", b"C", now=15.0)  # purges "b", expired at 15
    assert len(cache) == 1


def test_the_reply_cache_drops_the_oldest_entries_beyond_its_size() -> None:
    cache = ReplyCache(lifetime=100.0, size=3)
    for i, key in enumerate("abcde"):
        cache.put(key, key.encode(), now=float(i))
    assert len(cache) == 3
    assert [cache.get(key, now=5.0) for key in "abcde"] == [None, None, (b"c",), (b"d",), (b"e",)]
    cache.put("c", b"C2", now=6.0)  # storing again moves it to the back
    cache.put("f", b"F", now=7.0)
    assert cache.get("d", now=7.0) is None
    assert cache.get("c", now=7.0) == (b"C2",)


@pytest.mark.parametrize(("kwargs", "name"), [({"lifetime": 0, "size": 1}, "lifetime"),
                                              ({"lifetime": 1, "size": 0}, "size")])
def test_the_reply_cache_refuses_bad_bounds(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ReplyCache(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------- byte bound and fair eviction (issue 15.2)


def test_the_reply_cache_is_bounded_in_bytes() -> None:
    cache = ReplyCache(lifetime=247.0, size=10_000, max_bytes=1_000_000)
    reply = b"x" * 60_000
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), reply, now=0.0, peer="10.0.0.3")
        assert cache.held_bytes <= 1_000_000
    assert len(cache) == 16  # 16 * 60,000 <= 1,000,000 < 17 * 60,000


def test_the_default_reply_cache_bound_holds_under_the_findings_flood() -> None:
    # The finding: 10,000 requests of 60 KB from one address held 602 MiB.
    cache = ReplyCache(lifetime=DEFAULT_REPLY_CACHE_LIFETIME, size=10_000)
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), b"x" * 60_000, now=0.0, peer="10.0.0.3")
    assert cache.held_bytes <= DEFAULT_REPLY_CACHE_BYTES == 16 * 1024 * 1024


def test_a_reply_larger_than_the_byte_bound_is_not_cached() -> None:
    cache = ReplyCache(lifetime=10.0, size=10, max_bytes=100)
    cache.put("small", b"s", now=0.0)
    cache.put("big", b"b" * 101, now=0.0)
    assert cache.get("big", now=1.0) is None
    assert cache.get("small", now=1.0) == (b"s",)
    assert cache.held_bytes == 1


def test_a_flooding_sender_evicts_its_own_replies_not_another_clients() -> None:
    cache = ReplyCache(lifetime=247.0, size=100)
    cache.put(("10.0.0.2:4000", "client"), b"client's reply", now=0.0, peer="10.0.0.2")
    for i in range(10_000):
        cache.put(("10.0.0.3:5000", i), b"x", now=1.0, peer="10.0.0.3")
    assert cache.get(("10.0.0.2:4000", "client"), now=2.0) == (b"client's reply",)
    assert len(cache) == 100


def test_a_lone_busy_client_can_use_the_whole_cache() -> None:
    cache = ReplyCache(lifetime=247.0, size=100)
    for i in range(250):
        cache.put(i, b"r", now=0.0, peer="10.0.0.2")
    assert len(cache) == 100
    assert cache.get(249, now=1.0) == (b"r",)
    assert cache.get(149, now=1.0) is None


def test_expired_and_replaced_entries_release_their_bytes() -> None:
    cache = ReplyCache(lifetime=10.0, size=10, max_bytes=1000)
    cache.put("a", b"1234", now=0.0, peer="p")
    cache.put("a", b"12", now=1.0, peer="q")
    assert cache.held_bytes == 2
    cache.put("b", b"123", now=20.0, peer="p")  # "a" expired
    assert cache.held_bytes == 3
    assert len(cache) == 1


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5])
def test_the_reply_cache_byte_bound_must_be_a_positive_int(max_bytes: object) -> None:
    with pytest.raises(ValueError, match="reply_cache_bytes"):
        ReplyCache(lifetime=1.0, size=1, max_bytes=max_bytes)  # type: ignore[arg-type]
