"""Name resolution: a cached, coalescing, bounded resolver for trio.

Every lookup of a name goes to the resolver's backend: by default
:func:`trio.socket.getaddrinfo`, so a resolver installed with
:func:`trio.socket.set_custom_hostname_resolver` (such as trionet's virtual
network) answers it; or DNS itself (``resolver_dns.py``). IP literals never
reach a backend.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, final

import trio

from .._sansio.addresses import Address, normalize_host, validate_port
from .._sansio.errors import AddressError
from .._sansio.ordering import interleave_families
from .._sansio.validate import check_count
from ..errors import ResolutionError
from .resolver_backend import GetaddrinfoBackend, ResolverBackend
from .resolver_cache import DEFAULT_MAX_CACHE_BYTES as DEFAULT_MAX_CACHE_BYTES
from .resolver_cache import DEFAULT_MAX_CACHE_ENTRIES as DEFAULT_MAX_CACHE_ENTRIES
from .resolver_cache import AnswerCache, CacheKey, HostsTable
from .resolver_lookup import FAMILY_NAMES as _FAMILY_NAMES
from .resolver_lookup import Lookups

__all__ = [
    "DEFAULT_LOOKUP_TIMEOUT",
    "DEFAULT_MAX_CACHE_BYTES",
    "DEFAULT_MAX_CACHE_ENTRIES",
    "DEFAULT_MAX_CONCURRENT_LOOKUPS",
    "DEFAULT_NEGATIVE_TTL",
    "DEFAULT_TTL",
    "Resolver",
    "ResolverStatistics",
    "default_resolver",
    "resolve",
]

# getaddrinfo() does not report the DNS records' TTLs, so the cache cannot obey
# them (DnsPythonBackend's answers carry theirs); these defaults are the JDK's
# InetAddress cache policy
# (networkaddress.cache.ttl is 30 s when no security manager is installed,
# networkaddress.cache.negative.ttl is 10 s).
DEFAULT_TTL: Final = 30.0
DEFAULT_NEGATIVE_TTL: Final = 10.0
# Half of trio's default thread limiter (40 threads), so that a burst of slow
# lookups cannot take every thread that trio.to_thread users share.
DEFAULT_MAX_CONCURRENT_LOOKUPS: Final = 20
# glibc's worst case with its defaults: RES_TIMEOUT 5 s x RES_DFLRETRY 2
# attempts x MAXNS 3 name servers. A real lookup is never cut short by it; a
# hung custom resolver is.
DEFAULT_LOOKUP_TIMEOUT: Final = 30.0
# DEFAULT_MAX_CACHE_ENTRIES and DEFAULT_MAX_CACHE_BYTES: see resolver_cache.py.


@final
@dataclass(frozen=True, slots=True)
class ResolverStatistics:
    """A snapshot of a :class:`Resolver`'s counters (see :meth:`Resolver.statistics`).

    Attributes:
      hits: Calls answered from the cache, positively or negatively.
      negative_hits: Of ``hits``, those answered with a cached failure.
      misses: Calls that found nothing in the cache and started or joined a
          backend lookup.
      coalesced: Of ``misses``, those that joined a lookup already under way
          instead of starting one (single-flight).
      lookups: Backend lookups (getaddrinfo calls, by default) made.
      failures: Of ``lookups``, those that failed or timed out.
      static_hits: Calls answered by the hosts table.
      in_flight: Backend lookups running now.
      cache_entries: Unexpired entries in the cache now.
      cache_bytes: The bytes the cache holds now, as counted against
          ``max_cache_bytes`` (expired entries not yet dropped included).
    """

    hits: int
    negative_hits: int
    misses: int
    coalesced: int
    lookups: int
    failures: int
    static_hits: int
    in_flight: int
    cache_entries: int
    cache_bytes: int


def _check_request(host: object, port: object, family: int) -> tuple[str, str, int]:
    """Check a lookup's arguments: (host as given, the name to look up, port).

    Everything that can be wrong with the request is found here, before any
    lookup starts and before anything is cached.
    """
    name = normalize_host(host)  # type: ignore[arg-type]  # it checks the type itself
    if family not in _FAMILY_NAMES:
        raise ValueError(f"family must be 0, AF_INET or AF_INET6, not {family!r}")
    return str(host), name, validate_port(port)


def _literal(host: str) -> Address | None:
    """``host`` as an address if it is an IP literal, else ``None``."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    return Address(host, 0)


def _usable(address: Address, host: str, port: int) -> Address:
    """``address`` with ``port``, and an interface name in its zone made an index."""
    if isinstance(address.scope_id, str):
        try:
            index = socket.if_nametoindex(address.scope_id)
        except OSError as exc:
            raise ResolutionError(host, port, f"no network interface named {address.scope_id!r}") from exc
        return Address(address.host, port, address.flowinfo, index)
    return address.with_port(port)


def _filter_family(
    addresses: Iterable[Address], family: int, host: str, port: int, missing: str
) -> list[Address]:
    found = [a for a in addresses if family in (0, a.family)]
    if not found:
        raise ResolutionError(host, port, missing.format(_FAMILY_NAMES[family]))
    return interleave_families(_usable(a, host, port) for a in found)


@final
class Resolver:
    """A resolver with a cache, single-flight lookups, a bound and a hosts table.

    Names are looked up by ``backend``: :class:`GetaddrinfoBackend` (the
    system's resolver through :func:`trio.socket.getaddrinfo`) unless another
    is given, such as :class:`DnsPythonBackend` (DNS queries without a
    thread, see :doc:`/howto/dns`). An answer is cached for as long as the
    backend says it stays true (a DNS backend reports the records' TTLs,
    within its bounds); when the backend says nothing, as getaddrinfo never
    does, answers are cached for ``ttl`` seconds and failures for
    ``negative_ttl`` seconds: fixed durations, not what a DNS server said.
    Durations count on trio's clock from when the answer arrived. With the
    default backend, ``ttl=0`` switches the cache off (lookups are still
    coalesced).

    Concurrent identical lookups share one backend lookup (single-flight): a
    caller that is cancelled does not cancel the lookup for those still
    waiting. At most ``max_concurrent_lookups`` lookups run at once; more
    wait their turn.

    Memory: the cache holds at most ``max_cache_entries`` answers and at most
    ``max_cache_bytes`` bytes (1 MiB by default); past either bound the
    oldest answers go first, and an answer larger than the whole bound is not
    cached. An entry counts 512 bytes, plus its name's and its failure
    reason's size (``sys.getsizeof``), plus 256 bytes per address: more
    than CPython 3.11 allocates for it, so a full cache stays under the bound
    (:meth:`statistics` reports the count as ``cache_bytes``). A failure is
    cached as text: the system error's type, number and message (up to 200
    characters), never the exception object and its traceback, and each
    caller's :exc:`ResolutionError` gets a new exception built from them as
    its ``__cause__``. Names are checked (at most 253 characters, labels of
    at most 63) before anything is looked up or cached, so a long or
    malformed name costs nothing here.

    Names: a looked-up name and a name in the hosts table go through the
    same normalisation (one function): ASCII is compared in lower case, and
    a non-ASCII name is mapped and encoded with UTS-46 and IDNA
    2008, as :func:`trio.socket.getaddrinfo` encodes it (``idna.encode(name,
    uts46=True)``). So every spelling that UTS-46 folds together is one
    name: ``"db.test"`` pinned in the hosts table answers ``"DB.test"``,
    ``"db.test"`` in fullwidth letters (U+FF44, U+FF42), ``"db\u3002test"``
    (the ideographic full stop), ``"d\u00adb.test"`` (a soft hyphen) and
    ``"d\u200bb.test"`` (a zero-width space), and ``"bücher.test"``
    answers ``"xn--bcher-kva.test"``; none of them is sent to DNS. The cache
    is keyed the same way.

    A Resolver belongs to one :func:`trio.run`, whose clock it reads.

    Args:
      ttl: How long an answer is reused, in seconds, when the backend does
          not say.
      negative_ttl: How long a failure is reused, in seconds, when the
          backend does not say.
      max_concurrent_lookups: How many backend lookups may run at once.
      lookup_timeout: How long a lookup may take, in seconds, before it
          counts as failed, counted from when it was asked for: the wait for
          one of the ``max_concurrent_lookups`` slots is included. ``None``
          for no limit.
      max_cache_entries: How many answers the cache holds; the oldest go first.
      max_cache_bytes: How many bytes the cache holds, counted as above
          (``DEFAULT_MAX_CACHE_BYTES``, 1 MiB); the oldest answers go
          first.
      hosts: Static overrides, like ``/etc/hosts``: a name maps to IP
          addresses (str), returned without any lookup. Names are compared
          in their lookup form (see "Names" above): case does not matter,
          ``"bücher.test"`` is ``"xn--bcher-kva.test"``, and ``"db.test"``
          in fullwidth letters is ``"db.test"``.
      backend: What looks names up (a :class:`ResolverBackend`); ``None``
          for a :class:`GetaddrinfoBackend`.

    Raises:
      ValueError: A duration is negative, or a count is less than 1.
      TypeError: A count is not an int (a bool is not a count).
      AddressError: A hosts table entry is not an IP address, or a name in it
          is not a valid host name.

    Example::

        resolver = trionet.Resolver(hosts={"db.test": ["::1", "127.0.0.1"]})
        addresses = await resolver.resolve("db.test", 5432)
        # [Address(host='::1', port=5432, ...), Address(host='127.0.0.1', ...)]
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        max_concurrent_lookups: int = DEFAULT_MAX_CONCURRENT_LOOKUPS,
        lookup_timeout: float | None = DEFAULT_LOOKUP_TIMEOUT,
        max_cache_entries: int = DEFAULT_MAX_CACHE_ENTRIES,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
        hosts: Mapping[str, str | Iterable[str]] | None = None,
        backend: ResolverBackend | None = None,
    ) -> None:
        for name, value in (("ttl", ttl), ("negative_ttl", negative_ttl)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        if lookup_timeout is not None and not lookup_timeout > 0:
            raise ValueError(f"lookup_timeout must be > 0 or None, not {lookup_timeout!r}")
        check_count("max_cache_entries", max_cache_entries)
        check_count("max_cache_bytes", max_cache_bytes)
        check_count("max_concurrent_lookups", max_concurrent_lookups)
        self._hosts = HostsTable()
        self._cache = AnswerCache(max_cache_entries, max_cache_bytes)
        self._lookups = Lookups(
            GetaddrinfoBackend() if backend is None else backend,
            self._cache,
            ttl=float(ttl),
            negative_ttl=float(negative_ttl),
            max_concurrent_lookups=max_concurrent_lookups,
            lookup_timeout=math.inf if lookup_timeout is None else float(lookup_timeout),
        )
        self._hits = self._negative_hits = self._misses = self._static_hits = 0
        for name, addresses in (hosts or {}).items():
            self.set_host(name, addresses)

    # -- hosts table and cache management ----------------------------------

    def set_host(self, name: str, addresses: str | Iterable[str]) -> None:
        """Make ``name`` resolve to ``addresses``, without any lookup.

        Args:
          name: The host name; case, one trailing dot, the form of a
              non-ASCII name (Unicode or ``xn--`` ASCII) and any other
              spelling that UTS-46 folds together do not matter (see the
              class's "Names" paragraph).
          addresses: IP addresses, in order of preference (a single str is
              one address).

        Raises:
          AddressError: An address is not an IP address, or there is none, or
              ``name`` is not a valid host name (too long, an empty label, a
              label over 63 bytes once encoded...).
        """
        self._hosts.set(name, addresses)

    def remove_host(self, name: str) -> None:
        """Remove ``name`` from the hosts table, if it is there.

        Raises:
          AddressError: ``name`` is not a valid host name.
        """
        self._hosts.remove(name)

    @property
    def hosts(self) -> Mapping[str, tuple[str, ...]]:
        """A copy of the hosts table, with each address as text."""
        return self._hosts.as_text()

    def clear_cache(self, host: str | None = None) -> None:
        """Forget cached answers (and failures) for ``host``, or for every name."""
        if host is None:
            self._cache.clear()
            return
        try:
            name = normalize_host(host)
        except AddressError:
            return  # a malformed name is never cached
        self._cache.forget(name)

    def statistics(self) -> ResolverStatistics:
        """Return the resolver's counters, as a frozen snapshot."""
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio.run: nothing can have expired "now"
            now = -math.inf
        lookups = self._lookups
        return ResolverStatistics(
            hits=self._hits,
            negative_hits=self._negative_hits,
            misses=self._misses,
            coalesced=lookups.coalesced,
            lookups=lookups.lookups,
            failures=lookups.failures,
            static_hits=self._static_hits,
            in_flight=lookups.in_flight,
            cache_entries=self._cache.live_entries(now),
            cache_bytes=self._cache.held_bytes,
        )

    # -- resolving ----------------------------------------------------------

    async def resolve(
        self,
        host: str,
        port: int,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
    ) -> list[Address]:
        """Resolve ``host`` to addresses, ordered for connection attempts.

        An IP literal (``"::1"``, ``"[::1]"``, ``"fe80::1%eth0"``) is returned at
        once, with no lookup. A name is checked first and put in its lookup
        form: ASCII in lower case, a non-ASCII name encoded as IDNA 2008 with
        the UTS-46 mapping (as :func:`trio.socket.getaddrinfo` does). A name
        in the hosts table is answered from it. Otherwise the
        cache answers, or one backend lookup (a :func:`trio.socket.getaddrinfo`
        call by default), shared with concurrent identical calls. The
        addresses come in RFC 8305 section 4 order: the backend's preferred
        address first, then the families
        interleaved (see :func:`interleave_families`). IPv4-mapped IPv6
        addresses come back as IPv4, duplicates once.

        Args:
          host: A host name or an IP address.
          port: The port to put in each address, 0-65535.
          family: 0 for both families, or :data:`socket.AF_INET` /
              :data:`socket.AF_INET6` for one.
          type: The socket type passed to the backend (getaddrinfo's).
          flags: ``AI_*`` flags passed to the backend (getaddrinfo's).

        Returns:
          At least one address.

        Raises:
          ResolutionError: The name could not be resolved (the system's error is
              in ``__cause__``), has no address of ``family``, or the lookup
              took longer than ``lookup_timeout`` (the wait for a lookup slot
              included).
          AddressError: ``host`` is not a valid host name or IP address (it is
              empty, too long, has an empty label or one over 63 bytes, fails
              IDNA encoding, has brackets around something other than an IPv6
              address...), or ``port`` is out of range. Nothing is looked up
              or cached.

        Cancellation:
          A cancelled call raises :exc:`trio.Cancelled` and caches nothing.
          If other calls are waiting for the lookup this call started, the
          lookup is not abandoned: it finishes for them (this call waits for it,
          at most ``lookup_timeout``) and this call then raises
          :exc:`trio.Cancelled`; or, if the lookup had not started yet, one of
          them takes it over.
        """
        host, name, port = _check_request(host, port, family)
        literal = _literal(name)
        if literal is not None:
            await trio.lowlevel.checkpoint()
            return _filter_family([literal], family, host, port, "it is not an {} address")
        static = self._hosts.get(name)
        if static is not None:
            await trio.lowlevel.checkpoint()
            self._static_hits += 1
            return _filter_family(static, family, host, port, "the hosts table has no {} address")
        key: CacheKey = (name, family, type, flags)
        cached = self._cache.get(key, trio.current_time())
        if cached is not None:
            await trio.lowlevel.checkpoint()
            self._hits += 1
            if cached.reason is not None:
                self._negative_hits += 1
            return cached.result(host, port)
        self._misses += 1
        answer = await self._lookups.wait(key)
        return answer.result(host, port)

_default: trio.lowlevel.RunVar[Resolver] = trio.lowlevel.RunVar("trionet.default_resolver")


def default_resolver() -> Resolver:
    """The resolver that trionet uses where no ``resolver=`` is passed.

    There is one per :func:`trio.run`, created with the default settings on
    first use (its cache lives on that run's clock).

    Raises:
      RuntimeError: Called outside :func:`trio.run`.
    """
    try:
        return _default.get()
    except LookupError:
        resolver = Resolver()
        _default.set(resolver)
        return resolver


async def resolve(
    host: str,
    port: int,
    *,
    family: int = 0,
    type: int = socket.SOCK_STREAM,
    flags: int = 0,
    resolver: Resolver | None = None,
) -> list[Address]:
    """Resolve ``host`` to addresses, ordered for connection attempts.

    The same as :meth:`Resolver.resolve` on ``resolver``, by default the
    run's :func:`default_resolver` (cached for :data:`DEFAULT_TTL` seconds).

    Args:
      host: A host name or an IP address.
      port: The port to put in each address, 0-65535.
      family: 0 for both families, or :data:`socket.AF_INET` /
          :data:`socket.AF_INET6` for one.
      type: The socket type passed to the backend (getaddrinfo's).
      flags: ``AI_*`` flags passed to the backend (getaddrinfo's).
      resolver: The resolver to use instead of the default one.

    Returns:
      At least one address: the system's preferred address first, then the
      families interleaved (RFC 8305 section 4).

    Raises:
      ResolutionError: The name could not be resolved; the message names the
          host and port, ``reason`` says why, and ``__cause__`` holds the
          system's error.
      AddressError: ``host`` is not a valid host name or IP address (see
          :meth:`Resolver.resolve`), or ``port`` is out of range; nothing is
          looked up.

    Cancellation:
      As for :meth:`Resolver.resolve`: a cancelled call raises
      :exc:`trio.Cancelled`; a lookup it shares with other callers finishes for
      them.

    Example::

        addresses = await trionet.resolve("example.com", 443)
        # IP literals are returned at once, IPv4-mapped ones as IPv4:
        assert await trionet.resolve("::ffff:127.0.0.1", 80) == [
            trionet.Address("127.0.0.1", 80)
        ]
    """
    resolver = default_resolver() if resolver is None else resolver
    return await resolver.resolve(host, port, family=family, type=type, flags=flags)
