"""The wire under a :class:`~trionet.testing.VirtualNetwork`: routes, links, generators.

What carries a packet from one host to another, and the seeded generators every
random decision draws from: a private base of the network class, kept apart so
that the public class holds only its API.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Final

import trio

from ._vevents import EventQueue
from ._vlink import LinkConfig
from ._vtypes import Host, Retryable

__all__ = ["Wire", "pairs", "seed_trio_scheduler"]

# Traffic from a host to itself (loopback or its own addresses).
_LOCAL_LINK: Final = LinkConfig()
_LOOPBACK: Final = frozenset({"::1", "0.0.0.0", "::"})


class Wire:
    """Routing, links and generators (a private base of ``VirtualNetwork``)."""

    # Set by VirtualNetwork.__init__.
    seed: int | str
    default_link: LinkConfig
    _events: EventQueue
    _owners: Mapping[str, Host]
    _links: dict[tuple[str, str], LinkConfig]
    _cuts: set[frozenset[str]]
    _blackholes: set[str]
    _busy: dict[tuple[str, str], float]
    _rngs: dict[str, random.Random]
    _stalled: list[Retryable]

    def _rng(self, key: str) -> random.Random:
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self.seed!r}|{key}")
        return rng

    def _host_for(self, src: Host, ip: str) -> Host | None:
        if ip.startswith("127.") or ip in _LOOPBACK:
            return src
        return self._owners.get(ip)

    def _blocked(self, src: Host, ip: str) -> str | None:
        """Why packets from ``src`` to ``ip`` cannot get through now, or None."""
        if ip in self._blackholes:
            return "blackhole"
        dst = self._host_for(src, ip)
        if dst is None:
            return "no such host"
        if dst is not src and frozenset((src.name, dst.name)) in self._cuts:
            return "partition"
        return None

    def _link_between(self, a: Host, b: Host) -> LinkConfig:
        config = self._links.get((a.name, b.name))
        if config is None:
            return _LOCAL_LINK if a is b else self.default_link
        return config

    def _depart(self, now: float, a: Host, b: Host, size: int, link: LinkConfig) -> float:
        """When a packet sent at ``now`` has left ``a`` (queueing behind earlier ones)."""
        if link.bandwidth is None:
            return now
        start = max(now, self._busy.get((a.name, b.name), now))
        done = start + size / link.bandwidth
        self._busy[(a.name, b.name)] = done
        return done

    def _retry_stalled(self, now: float) -> None:
        self._stalled = [flow for flow in self._stalled if not flow.retry(now)]
        self._events.notify()

def pairs(groups: list[list[str]]) -> Iterator[frozenset[str]]:
    for i, first in enumerate(groups):
        for a, b in itertools.product(first, itertools.chain.from_iterable(groups[i + 1 :])):
            if a != b:
                yield frozenset((a, b))


def seed_trio_scheduler(seed: str) -> None:
    """Seed the generator trio's scheduler breaks ties with, if this trio has one."""
    run_module = getattr(getattr(trio, "_core", None), "_run", None)
    generator = getattr(run_module, "_r", None)
    if isinstance(generator, random.Random):
        generator.seed(seed)
