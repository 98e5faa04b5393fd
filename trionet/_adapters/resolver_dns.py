"""A resolver backend that asks DNS servers itself, on dnspython's trio support.

:class:`DnsPythonBackend` sends the A and AAAA queries in parallel from the
calling task (two tasks of a nursery for both families), over trio sockets:
no worker thread per lookup, as :func:`trio.socket.getaddrinfo` needs. Its
answers carry the records' TTLs, so a :class:`~trionet.Resolver` caches each
for as long as its DNS server said, within bounds. dnspython is an optional
dependency (``pip install 'trionet[dns]'``), imported when a backend is made.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

import trio

from .._sansio.addresses import Address, validate_port
from .._sansio.errors import AddressError
from .._sansio.ordering import rfc6724_order
from .resolver_backend import LookupResult

if TYPE_CHECKING:
    import dns._asyncbackend
    import dns.asyncresolver
    import dns.message
    import dns.resolver

__all__ = ["DnsPythonBackend"]

# dnspython's own default: dns.resolver.Resolver.lifetime, the whole time a
# query may take over every name server and retry.
DEFAULT_DNS_TIMEOUT: Final = 5.0
# The bounds on a record's TTL, as a caching resolver applies them. 0: a TTL
# of 0 means "do not cache" (RFC 1035 section 3.2.1), which unbound obeys
# too (cache-min-ttl defaults to 0). 3600: glibc's nscd keeps a host for at
# most an hour (positive-time-to-live hosts 3600, its shipped nscd.conf), so
# a long TTL cannot pin a moved service for a day.
DEFAULT_MIN_TTL: Final = 0.0
DEFAULT_MAX_TTL: Final = 3600.0
# RFC 2308 section 5: a negative answer lives min(SOA TTL, SOA MINIMUM); the
# bound is unbound's cache-max-negative-ttl default (one hour, the low end
# of the one to three hours RFC 2308 suggests as a resolver's cap).
DEFAULT_MAX_NEGATIVE_TTL: Final = 3600.0

_QUERIES: Final[dict[int, tuple[str, ...]]] = {socket.AF_INET6: ("AAAA",), socket.AF_INET: ("A",)}
_EAI_NODATA: Final = getattr(socket, "EAI_NODATA", socket.EAI_NONAME)
_LOOPBACK: Final = (Address("::1", 0), Address("127.0.0.1", 0))


@dataclass(frozen=True, slots=True)
class _Part:
    """One query's outcome (A or AAAA)."""

    kind: str  # "A" or "AAAA"
    addresses: tuple[Address, ...] = ()
    ttl: float | None = None  # unclamped; None: no TTL known
    error: OSError | None = None
    transient: bool = False  # a timeout or a server failure, not an answer about the name
    nxdomain: bool = False


def _clamp(ttl: float, low: float, high: float) -> float:
    return min(max(ttl, low), high)


def _require_dnspython() -> None:
    try:
        import dns.asyncbackend
        import dns.asyncresolver
    except ImportError as exc:
        raise ImportError(
            "DnsPythonBackend needs dnspython: install it with pip install 'trionet[dns]'",
            name="dns",
        ) from exc
    try:
        dns.asyncbackend.get_backend("trio")
    except ImportError as exc:  # dnspython 2.8's trio backend needs trio 0.30 or newer
        raise ImportError(
            f"DnsPythonBackend needs dnspython's trio backend, which refuses trio {trio.__version__} "
            f"({exc}): install it with pip install 'trionet[dns]', which asks for trio>=0.30",
            name="dns",
        ) from exc


@final
class DnsPythonBackend:
    """A :class:`ResolverBackend` that queries DNS servers, with dnspython, without threads.

    Pass it to a resolver: ``Resolver(backend=DnsPythonBackend())``. Each
    lookup sends A and AAAA queries (one of them for a single family) at the
    same time, from the calling task, over trio's sockets: no worker thread,
    so thousands of lookups cost no more threads than one. Needs dnspython
    (``pip install 'trionet[dns]'``).

    TTLs: an answer carries the smallest TTL of the records it was made of
    (a CNAME chain's included; for both families, of both answers), clamped
    to ``[min_ttl, max_ttl]``. A negative answer (no such name, NXDOMAIN;
    or no record of the family, NODATA) carries the TTL RFC 2308 section 5
    gives it, the smaller of the SOA record's TTL and its MINIMUM field,
    clamped to ``[min_ttl, max_negative_ttl]``; without an SOA record it
    carries 0 (RFC 2308: not to be cached), raised to ``min_ttl``. A timeout
    or a server failure (SERVFAIL, REFUSED, a port that refuses) carries no
    TTL: the resolver keeps it for its ``negative_ttl``.

    What differs from getaddrinfo: ``/etc/hosts`` and ``nsswitch.conf`` are
    not read (use the resolver's hosts table), except that ``localhost`` and
    names under it are loopback (RFC 6761 section 6.3) without a query; the
    search list is not applied (a name is looked up as given); ``type`` and
    ``flags`` are ignored. Addresses are ordered by RFC 6724's precedence
    (rule 6, default policy table: IPv6 before IPv4), the server's order
    kept within it; the resolver then interleaves the families.

    Errors: every failure is a :class:`socket.gaierror` in the result, which
    the resolver raises as the ``__cause__`` of a
    :exc:`~trionet.ResolutionError`: ``EAI_NONAME`` for NXDOMAIN,
    ``EAI_NODATA`` for no record of the family, ``EAI_AGAIN`` for a timeout
    or failed servers, ``EAI_FAIL`` for anything else dnspython reports. No
    ``dns.*`` exception leaves a lookup.

    Args:
      nameservers: The DNS servers' IP addresses, tried in order; ``None``
          for those of ``/etc/resolv.conf`` (read now, with its ``timeout``,
          ``rotate`` and ``edns0`` options).
      port: The servers' port.
      timeout: How long a lookup may take, in seconds, over every server
          and retry (within it, one try waits up to dnspython's 2 s, or the
          ``timeout`` option of ``/etc/resolv.conf``). Counted on trio's clock.
      min_ttl: The least TTL an answer carries, in seconds.
      max_ttl: The most TTL a positive answer carries, in seconds (default
          one hour).
      max_negative_ttl: The most TTL a negative answer carries, in seconds
          (default one hour).

    Raises:
      ImportError: dnspython is not installed (the message names the extra).
      AddressError: A name server is not an IP address, or ``port`` is out
          of range.
      ValueError: A duration is negative (or ``timeout`` is 0), or
          ``min_ttl`` is above ``max_ttl`` or ``max_negative_ttl``.
      OSError: ``nameservers`` is ``None`` and ``/etc/resolv.conf`` cannot
          be read or names no server.
    """

    __slots__ = ("_backend", "_max_negative_ttl", "_max_ttl", "_min_ttl", "_resolver", "_timeout")

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = DEFAULT_DNS_TIMEOUT,
        min_ttl: float = DEFAULT_MIN_TTL,
        max_ttl: float = DEFAULT_MAX_TTL,
        max_negative_ttl: float = DEFAULT_MAX_NEGATIVE_TTL,
    ) -> None:
        _require_dnspython()
        import dns.asyncbackend
        import dns.asyncresolver
        import dns.exception

        if not (isinstance(timeout, (int, float)) and timeout > 0 and not math.isnan(timeout)):
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        bounds = {"min_ttl": min_ttl, "max_ttl": max_ttl, "max_negative_ttl": max_negative_ttl}
        for label, value in bounds.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, not {value!r}")
        if min_ttl > min(max_ttl, max_negative_ttl):
            raise ValueError(f"min_ttl={min_ttl!r} is above max_ttl or max_negative_ttl")
        port = validate_port(port)
        if nameservers is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except (dns.exception.DNSException, OSError) as exc:
                raise OSError(f"cannot read the system's DNS configuration: {exc}") from None
        else:
            servers = [nameservers] if isinstance(nameservers, str) else list(nameservers)
            for server in servers:
                try:
                    ipaddress.ip_address(server)
                except (TypeError, ValueError):
                    raise AddressError(f"a name server must be an IP address, not {server!r}") from None
            if not servers:
                raise AddressError("no name servers given")
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = servers
        resolver.port = port
        resolver.lifetime = float(timeout)  # on the wall clock; lookup() bounds it on trio's
        resolver.timeout = min(resolver.timeout, float(timeout))
        resolver.cache = None  # the trionet Resolver caches
        self._resolver: dns.asyncresolver.Resolver = resolver
        self._backend: dns._asyncbackend.Backend = dns.asyncbackend.get_backend("trio")
        self._timeout = float(timeout)
        self._min_ttl, self._max_ttl = float(min_ttl), float(max_ttl)
        self._max_negative_ttl = float(max_negative_ttl)

    def __repr__(self) -> str:
        servers = ", ".join(str(server) for server in self._resolver.nameservers)
        return f"DnsPythonBackend([{servers}], port={self._resolver.port}, timeout={self._timeout:g})"

    async def lookup(
        self, name: str, family: int, *, type: int = socket.SOCK_STREAM, flags: int = 0
    ) -> LookupResult:
        """Query the A and AAAA records of ``name`` (see :meth:`ResolverBackend.lookup`).

        Returns:
          The addresses and their TTL, or none, why, and how long that holds.

        Cancellation:
          A cancelled lookup closes its sockets and leaves nothing running.
          Replies that arrive later are dropped by the system.
        """
        bare = name.rstrip(".")
        if bare == "localhost" or bare.endswith(".localhost"):  # RFC 6761 section 6.3
            await trio.lowlevel.checkpoint()
            return LookupResult(_LOOPBACK, None)
        kinds = _QUERIES.get(family, ("AAAA", "A"))
        parts: dict[str, _Part] = {}
        with trio.move_on_after(self._timeout):
            if len(kinds) == 1:
                parts[kinds[0]] = await self._query(name, kinds[0])
            else:
                async with trio.open_nursery() as nursery:
                    for kind in kinds:
                        nursery.start_soon(self._query_into, parts, name, kind)
        for kind in kinds:
            if kind not in parts:
                reason = f"no answer from the name servers within {self._timeout:g} s"
                parts[kind] = _Part(kind, error=socket.gaierror(socket.EAI_AGAIN, reason), transient=True)
        return self._combine([parts[kind] for kind in kinds])

    async def _query_into(self, parts: dict[str, _Part], name: str, kind: str) -> None:
        parts[kind] = await self._query(name, kind)

    async def _query(self, name: str, kind: str) -> _Part:
        import dns.exception
        import dns.resolver

        try:
            # search=False: the name as given, like an absolute name.
            answer = await self._resolver.resolve(
                name, kind, search=False, raise_on_no_answer=False, backend=self._backend
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.kwargs["responses"].values())
            ttl = _negative_ttl(responses[0]) if responses else 0.0
            error = socket.gaierror(socket.EAI_NONAME, "no such name (NXDOMAIN)")
            return _Part(kind, ttl=ttl, error=error, nxdomain=True)
        except dns.exception.Timeout:
            reason = f"no answer from the name servers within {self._timeout:g} s"
            return _Part(kind, error=socket.gaierror(socket.EAI_AGAIN, reason), transient=True)
        except dns.resolver.NoNameservers as exc:
            reason = f"the name servers failed: {_server_errors(exc)}"
            return _Part(kind, error=socket.gaierror(socket.EAI_AGAIN, reason), transient=True)
        except dns.exception.DNSException as exc:
            return _Part(kind, error=socket.gaierror(socket.EAI_FAIL, f"DNS error: {exc}"), transient=True)
        if answer.rrset is None:  # NODATA: the name exists, without this record
            error = socket.gaierror(_EAI_NODATA, f"no {kind} record (NODATA)")
            return _Part(kind, ttl=_negative_ttl(answer.response), error=error)
        found = tuple(Address(rdata.address, 0) for rdata in answer.rrset)
        return _Part(kind, addresses=found, ttl=float(answer.chaining_result.minimum_ttl))

    def _combine(self, parts: list[_Part]) -> LookupResult:
        """One result from the AAAA and A parts (in that order)."""
        positive = [part for part in parts if part.addresses]
        if positive:
            ttls = [part.ttl for part in parts if part.ttl is not None and not part.transient]
            addresses = rfc6724_order([a for part in positive for a in part.addresses])
            ttl = _clamp(min(ttls), self._min_ttl, self._max_ttl) if ttls else None
            return LookupResult(tuple(addresses), ttl)
        # No address: a server's failure outweighs an answer about the name.
        failed = next((p for p in parts if p.transient), None) or next(
            (p for p in parts if p.nxdomain), None
        )
        if failed is None:  # NODATA for every family asked
            kinds = " or ".join(part.kind for part in parts)
            failed = _Part(
                kinds,
                ttl=min((p.ttl for p in parts if p.ttl is not None), default=0.0),
                error=socket.gaierror(_EAI_NODATA, f"no {kinds} record (NODATA)"),
            )
        if failed.ttl is None:
            return LookupResult((), None, failed.error)
        return LookupResult((), _clamp(failed.ttl, self._min_ttl, self._max_negative_ttl), failed.error)


def _negative_ttl(response: dns.message.Message) -> float:
    """RFC 2308 section 5: min(SOA TTL, SOA MINIMUM) from the authority section; 0 without one."""
    import dns.rdatatype

    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, min(rdata.minimum for rdata in rrset)))
    return 0.0


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    """What each server answered, from a dnspython NoNameservers error."""
    errors = exc.kwargs.get("errors") or []
    texts = [f"{server} port {port}: {error}" for server, _tcp, port, error, _response in errors]
    return "; ".join(texts) or "no server to ask"
