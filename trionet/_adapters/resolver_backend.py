"""Where a :class:`~trionet.Resolver`'s lookups go: the backend seam, and the default backend.

A backend answers one question, "the addresses of this name, for this
family", and may say how long the answer stays true (a DNS record's TTL).
Everything else a resolver does (literals, the hosts table, the cache,
single-flight, the bound on concurrent lookups, ``lookup_timeout``, the
order of the addresses) stays in the :class:`~trionet.Resolver`, the same
whichever backend it has.

:class:`GetaddrinfoBackend` is the default: :func:`trio.socket.getaddrinfo`,
which reports no TTL. :class:`~trionet.DnsPythonBackend`
(``resolver_dns.py``) asks DNS servers itself and reports the records' TTLs.
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from typing import Protocol, final

import trio

from .._sansio.addresses import Address
from .._sansio.errors import AddressError

__all__ = ["GetaddrinfoBackend", "LookupResult", "ResolverBackend"]


@final
@dataclass(frozen=True, slots=True)
class LookupResult:
    """What a :class:`ResolverBackend` found for one name and family.

    Attributes:
      addresses: The addresses found, in the backend's order of preference
          (their ports are ignored); empty if there are none, and then
          ``error`` may say why.
      ttl: How many seconds the answer (positive or negative) may be
          reused, or ``None`` for the :class:`~trionet.Resolver`'s own
          ``ttl`` or ``negative_ttl``.
      error: Why the name has no address (a :class:`socket.gaierror`, say),
          or ``None``. It becomes the ``__cause__`` of the
          :exc:`~trionet.ResolutionError` that callers get.

    Raises:
      ValueError: ``ttl`` is negative, infinite or NaN.
    """

    addresses: tuple[Address, ...]
    ttl: float | None
    error: OSError | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "addresses", tuple(self.addresses))  # a list would do too
        if self.ttl is not None and not (math.isfinite(self.ttl) and self.ttl >= 0):
            raise ValueError(f"ttl must be a finite number >= 0 or None, not {self.ttl!r}")


class ResolverBackend(Protocol):
    """How a :class:`~trionet.Resolver` looks a name up: pass one as ``Resolver(backend=...)``.

    A backend is asked only for names: IP literals and names in the hosts
    table never reach it, and the resolver coalesces identical concurrent
    lookups, bounds how many run at once, and times them out
    (``lookup_timeout``) before it asks.
    """

    async def lookup(self, name: str, family: int, *, type: int, flags: int) -> LookupResult:
        """Look ``name`` up.

        Args:
          name: The name in its lookup form: checked, ASCII in lower case
              (a non-ASCII name already IDNA-encoded), perhaps with one
              trailing dot.
          family: 0 for both families, or :data:`socket.AF_INET` /
              :data:`socket.AF_INET6` for one. Addresses of another family
              in the result are ignored.
          type: The socket type the caller asked for (getaddrinfo's).
          flags: The ``AI_*`` flags the caller asked for (getaddrinfo's).

        Returns:
          The addresses, or none and why.

        Raises:
          OSError: The lookup failed; the resolver keeps the failure for its
              ``negative_ttl``. Any other exception is taken for a bug: it
              is not cached, and the calls waiting for the lookup fail with
              it as the cause.

        Cancellation:
          A cancelled lookup must leave nothing running.
        """
        ...


@final
class GetaddrinfoBackend:
    """The default backend: :func:`trio.socket.getaddrinfo`.

    Each lookup is one getaddrinfo call: the system's resolver (``/etc/hosts``,
    ``nsswitch.conf``, DNS...) in one of trio's worker threads, or the hostname
    resolver installed with :func:`trio.socket.set_custom_hostname_resolver`
    (such as trionet's virtual network). getaddrinfo does not report the
    records' TTLs, so answers carry none: the resolver keeps them for its
    fixed ``ttl``.
    """

    __slots__ = ()

    async def lookup(
        self, name: str, family: int, *, type: int = socket.SOCK_STREAM, flags: int = 0
    ) -> LookupResult:
        """Call getaddrinfo (see :meth:`ResolverBackend.lookup`).

        Raises:
          OSError: getaddrinfo failed (a :class:`socket.gaierror`, as a rule).

        Cancellation:
          As :func:`trio.socket.getaddrinfo`: a cancelled call returns at
          once; the system call it abandoned runs to its end in its thread.
        """
        # Port 0: the answer is shared by callers of any port.
        raw = await trio.socket.getaddrinfo(name, 0, family, type, 0, flags)
        found: list[Address] = []
        for entry in raw:
            try:
                address = Address.from_sockaddr(entry[4]).with_port(0)
            except AddressError:
                continue  # neither IPv4 nor IPv6
            if address not in found:
                found.append(address)
        return LookupResult(tuple(found), None)
