"""The order in which to try a host's addresses (RFC 8305 section 4), sans-IO.

A dual-stack client that tries all IPv6 addresses before any IPv4 one waits
through every IPv6 timeout when IPv6 is broken. RFC 8305 section 4 fixes this
by interleaving the families, while keeping the first address the system
prefers (getaddrinfo already sorted the list by RFC 6724's rules, which know the
host's routes and policy table; we do not second-guess them):

    "the client SHOULD ... [start] with the first address in the list,
    followed by addresses of the other address family ... The First Address
    Family Count specifies how many addresses of the preferred address family
    should be attempted before attempting the next address family."

Within a family the system's order is kept. Families are taken in the order
they first appear, so a list whose first address is IPv4 starts with IPv4.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, Protocol, TypeVar, overload

from .addresses import Address

__all__ = ["FIRST_ADDRESS_FAMILY_COUNT", "interleave_families", "rfc6724_order"]

FIRST_ADDRESS_FAMILY_COUNT: Final = 1  # RFC 8305 section 4: the recommended value is 1


class _HasFamily(Protocol):
    @property
    def family(self) -> int: ...


_F = TypeVar("_F", bound=_HasFamily)
_T = TypeVar("_T")


@overload
def interleave_families(addresses: Iterable[_F], *, first_address_family_count: int = ...) -> list[_F]: ...


@overload
def interleave_families(
    addresses: Iterable[_T],
    *,
    first_address_family_count: int = ...,
    key: Callable[[_T], Hashable],
) -> list[_T]: ...


def interleave_families(
    addresses: Iterable[Any],
    *,
    first_address_family_count: int = FIRST_ADDRESS_FAMILY_COUNT,
    key: Callable[[Any], Hashable] | None = None,
) -> list[Any]:
    """Order addresses for connection attempts as RFC 8305 section 4 says.

    The first address stays first (it is the system's preference). Then come
    the rest of the first ``first_address_family_count`` addresses of that
    family, and from there the families alternate, starting with the other
    one, each in the order it was given. When one family runs out, the rest of
    the other follows. Input with a single family comes back unchanged.

    Args:
      addresses: The addresses in the system's order of preference, for
          example as :func:`socket.getaddrinfo` returned them. Each must have a
          ``family`` attribute (as :class:`trionet.Address` has), unless
          ``key`` is given.
      first_address_family_count: How many addresses of the first family to
          try before the first address of the other family. RFC 8305 recommends
          1 (the default); a host that knows its IPv6 path is good may use 2.
      key: A function giving an item's family, for items without a ``family``
          attribute (for :func:`socket.getaddrinfo` entries, ``lambda e: e[0]``).

    Returns:
      A new list with the same items, reordered.

    Raises:
      ValueError: ``first_address_family_count`` is less than 1.

    Example:
      Three IPv6 and two IPv4 addresses, as a resolver might return them:

      >>> addresses = [
      ...     Address.parse(text)
      ...     for text in ["[2001:db8::a]:443", "[2001:db8::b]:443", "[2001:db8::c]:443",
      ...                  "192.0.2.1:443", "192.0.2.2:443"]
      ... ]
      >>> for address in interleave_families(addresses):
      ...     print(address)
      [2001:db8::a]:443
      192.0.2.1:443
      [2001:db8::b]:443
      192.0.2.2:443
      [2001:db8::c]:443
      >>> for address in interleave_families(addresses, first_address_family_count=2):
      ...     print(address)
      [2001:db8::a]:443
      [2001:db8::b]:443
      192.0.2.1:443
      [2001:db8::c]:443
      192.0.2.2:443
    """
    if isinstance(first_address_family_count, bool) or not isinstance(first_address_family_count, int):
        raise TypeError(f"first_address_family_count must be an int, not {first_address_family_count!r}")
    if first_address_family_count < 1:
        raise ValueError(f"first_address_family_count must be at least 1, not {first_address_family_count}")
    family_of: Callable[[Any], Hashable] = key if key is not None else lambda item: item.family
    # One queue per family, in the order the families first appear.
    queues: dict[Hashable, list[Any]] = {}
    for item in addresses:
        queues.setdefault(family_of(item), []).append(item)
    if len(queues) <= 1:
        return [item for queue in queues.values() for item in queue]
    lanes = list(queues.values())
    result = lanes[0][:first_address_family_count]
    positions = [len(result)] + [0] * (len(lanes) - 1)
    # Round robin from the second family on: other, first, other, first, ...
    order = [*range(1, len(lanes)), 0]
    remaining = sum(len(lane) for lane in lanes) - len(result)
    while remaining:
        for index in order:
            if positions[index] < len(lanes[index]):
                result.append(lanes[index][positions[index]])
                positions[index] += 1
                remaining -= 1
    return result


# Address order: RFC 6724 section 6, rule 6 (prefer higher precedence) with
# the default policy table of section 2.1. getaddrinfo applies all ten rules;
# rules 1-5, 7 and 8 need the host's source addresses and routes, which a
# DNS client does not have without probing, and Happy Eyeballs already covers
# what they are for (a family that does not work). The sort is stable: within
# a precedence the DNS server's order is kept.
_POLICY: Final = tuple(
    (ipaddress.IPv6Network(prefix), precedence)
    for prefix, precedence in (
        ("::1/128", 50), ("::/0", 40), ("::ffff:0:0/96", 35), ("2002::/16", 30),
        ("2001::/32", 5), ("fc00::/7", 3), ("::/96", 1), ("fec0::/10", 1), ("3ffe::/16", 1),
    )
)


_IPV4_PRECEDENCE: Final = 35  # every IPv4 address is in ::ffff:0:0/96 (as ::ffff:a.b.c.d)


def _precedence(address: Address) -> int:
    ip = address.ip
    if ip.version == 4:
        return _IPV4_PRECEDENCE
    _, precedence = max(((net, p) for net, p in _POLICY if ip in net), key=lambda row: row[0].prefixlen)
    return precedence


def rfc6724_order(addresses: Sequence[Address]) -> list[Address]:
    """``addresses`` by RFC 6724 precedence (rule 6, default policy table), stable."""
    if len(addresses) < 2:
        return list(addresses)
    return sorted(addresses, key=lambda address: -_precedence(address))
