"""What a :class:`~trionet.Resolver` remembers: answers, bounded, and its hosts table.

:class:`Answer` is one lookup's outcome, shared by every caller that waited for
it. :class:`AnswerCache` keeps answers until they expire, bounded in entries
and in bytes (issue 15), oldest first out. :class:`HostsTable` is the static
``/etc/hosts``-like table, keyed by the same normalised names as lookups. The
clock is passed in: nothing here waits or reads trio's time.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, final

from .._sansio.addresses import Address, normalize_host
from .._sansio.errors import AddressError
from ..errors import ResolutionError

__all__ = [
    "DEFAULT_MAX_CACHE_BYTES",
    "DEFAULT_MAX_CACHE_ENTRIES",
    "Answer",
    "AnswerCache",
    "CacheKey",
    "HostsTable",
    "failure",
    "table_key",
]

# trionet's choice: bounds memory on a server that resolves many names; far
# above a client's working set.
DEFAULT_MAX_CACHE_ENTRIES: Final = 1024
# trionet's choice: 1,024 failures of names as long as DNS allows (253
# characters, 888 bytes an entry as counted below) fit in it, and so do 1,024
# short names with one address each; with two addresses about 950 fit, with
# three about 780: there it binds before DEFAULT_MAX_CACHE_ENTRIES does.
DEFAULT_MAX_CACHE_BYTES: Final = 1 << 20

# How the cache's bytes are counted (see _entry_size). The constants are
# upper bounds of what tracemalloc measures on CPython 3.11 for each part (a
# negative entry's key tuple, entry and answer objects and dict slot take
# about 300 bytes; an IPv6 address with its text, about 170), so the memory a
# full cache holds stays under max_cache_bytes (1,000 failed 253-character
# names: 888,000 bytes counted, 604,000 measured).
_ENTRY_OVERHEAD: Final = 512
_ADDRESS_SIZE: Final = 256
# A failure's reason text is kept up to this many characters (a custom
# resolver's error message could be of any length).
_MAX_REASON_LENGTH: Final = 200

CacheKey = tuple[str, int, int, int]  # (lookup name (normalize_host), family, type, flags)


@dataclass(frozen=True, slots=True)
class Answer:
    """A lookup's outcome, shared by every caller that waited for it.

    Not an :class:`outcome.Outcome`: an outcome can be unwrapped once, and
    re-raising one exception instance in several tasks would pile their
    tracebacks onto it. Each caller gets its own result or ResolutionError.

    A cacheable failure keeps the system's error as data (its type, errno and
    text), never as the exception object: that object's traceback holds every
    frame of the lookup, with their locals, for as long as the failure is
    cached (issue 15: a few KiB per failed name).
    """

    addresses: tuple[Address, ...] = ()  # port 0; callers substitute theirs
    reason: str | None = None  # set on failure
    error_type: type[OSError] | None = None  # socket.gaierror or OSError: the system's error ...
    error_code: int | None = None  # ... and its errno, rebuilt for each caller's __cause__
    cause: BaseException | None = None  # only on answers that are never cached
    cacheable: bool = True
    ttl: float | None = None  # the backend's (a DNS TTL); None: the resolver's ttl or negative_ttl

    def result(self, host: str, port: int) -> list[Address]:
        if self.reason is not None:
            # A new exception per caller: one instance raised in several tasks
            # would accumulate their tracebacks.
            raise ResolutionError(host, port, self.reason) from self._cause()
        return [address.with_port(port) for address in self.addresses]

    def _cause(self) -> BaseException | None:
        if self.cause is not None or self.error_type is None:
            return self.cause
        if self.error_code is None:
            return self.error_type(self.reason)
        return self.error_type(self.error_code, self.reason)


def failure(error: OSError, ttl: float | None = None) -> Answer:
    """A cacheable answer for a lookup that failed with ``error``, without ``error`` itself."""
    reason = error.strerror or str(error) or repr(error)
    if len(reason) > _MAX_REASON_LENGTH:
        reason = reason[: _MAX_REASON_LENGTH - 3] + "..."
    code = error.errno if isinstance(error.errno, int) else None
    kind = socket.gaierror if isinstance(error, socket.gaierror) else OSError
    return Answer(reason=reason, error_type=kind, error_code=code, ttl=ttl)


def _entry_size(key: CacheKey, answer: Answer) -> int:
    """The bytes a cache entry counts for against ``max_cache_bytes``."""
    reason = 0 if answer.reason is None else sys.getsizeof(answer.reason)
    return _ENTRY_OVERHEAD + sys.getsizeof(key[0]) + reason + _ADDRESS_SIZE * len(answer.addresses)


@dataclass(slots=True)
class _CacheEntry:
    answer: Answer
    expires_at: float
    size: int  # _entry_size


@final
class AnswerCache:
    """Answers by key until they expire, at most ``max_entries`` of them and ``max_bytes``.

    Past either bound the oldest answers go first; an answer larger than the
    whole byte bound is not cached at all. Expired entries stay (and count)
    until they are asked for, replaced, or pushed out.
    """

    __slots__ = ("_entries", "_held_bytes", "_max_bytes", "_max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: dict[CacheKey, _CacheEntry] = {}  # oldest first
        self._held_bytes = 0  # the sizes of the entries in _entries

    @property
    def held_bytes(self) -> int:
        """The bytes the cache holds, as counted against its bound (expired entries included)."""
        return self._held_bytes

    def live_entries(self, now: float) -> int:
        """How many entries have not expired at ``now``."""
        return sum(1 for e in self._entries.values() if e.expires_at > now)

    def get(self, key: CacheKey, now: float) -> Answer | None:
        """The answer for ``key`` if it has not expired at ``now``; an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now < entry.expires_at:
            return entry.answer
        self.discard(key)
        return None

    def put(self, key: CacheKey, answer: Answer, expires_at: float) -> None:
        """Keep ``answer`` for ``key`` until ``expires_at``, making room for it."""
        self.discard(key)
        size = _entry_size(key, answer)
        if size > self._max_bytes:  # it would evict everything, and still not fit
            return
        entries = self._entries
        entries[key] = _CacheEntry(answer, expires_at, size)
        self._held_bytes += size
        while len(entries) > self._max_entries or self._held_bytes > self._max_bytes:
            self.discard(next(iter(entries)))

    def discard(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held_bytes -= entry.size

    def forget(self, name: str) -> None:
        """Drop every answer about the lookup name ``name``, whatever its family or flags."""
        for key in [key for key in self._entries if key[0] == name]:
            self.discard(key)

    def clear(self) -> None:
        self._entries.clear()
        self._held_bytes = 0


def table_key(name: str) -> str:
    """The hosts table's key for a lookup name (from normalize_host): without a trailing dot."""
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _hosts_key(name: str) -> str:
    """The hosts table's key for a name as given: checked and normalised as a looked-up name is."""
    return table_key(normalize_host(name))


@final
class HostsTable:
    """Static answers, like ``/etc/hosts``: a name maps to IP addresses (port 0)."""

    __slots__ = ("_hosts",)

    def __init__(self) -> None:
        self._hosts: dict[str, tuple[Address, ...]] = {}

    def set(self, name: str, addresses: str | Iterable[str]) -> None:
        """As :meth:`Resolver.set_host <trionet.Resolver.set_host>`."""
        texts = [addresses] if isinstance(addresses, str) else list(addresses)
        if not texts:
            raise AddressError(f"no addresses given for host {name!r}")
        self._hosts[_hosts_key(name)] = tuple(Address(text, 0) for text in texts)

    def remove(self, name: str) -> None:
        """As :meth:`Resolver.remove_host <trionet.Resolver.remove_host>`."""
        self._hosts.pop(_hosts_key(name), None)

    def get(self, name: str) -> tuple[Address, ...] | None:
        """The addresses for the lookup name ``name`` (from normalize_host), if any."""
        return self._hosts.get(table_key(name))

    def as_text(self) -> Mapping[str, tuple[str, ...]]:
        """A copy of the table, with each address as text."""
        return {name: tuple(str(a.ip) for a in addresses) for name, addresses in self._hosts.items()}
