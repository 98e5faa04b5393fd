"""A fake hostname resolver for tests, installed through trio's own hook.

``trio.socket.set_custom_hostname_resolver`` is the hook trionet's virtual network
uses too, so resolver code under test cannot tell the fake from the system.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trionet import Address

V6, V4 = socket.AF_INET6, socket.AF_INET


def now_ms() -> float:
    """trio's clock in milliseconds (MockClock time is exact; rounding drops float noise)."""
    return round(trio.current_time() * 1000, 3)


class FakeResolver(trio.abc.HostnameResolver):
    """Answers from a table, after a per-family delay, and records every call."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.delays: dict[int, float] = {}  # family asked for -> seconds
        self.name_delays: dict[str, float] = {}
        self.broken: set[str] = set()  # names whose lookup raises a bug
        self.calls: list[tuple[str, int, float]] = []  # (name, family, ms)
        self.cancelled: list[tuple[str, int, float]] = []
        self.running = 0
        self.max_running = 0

    def add(self, name: str, *addresses: str) -> None:
        self.records[name] = list(addresses)

    def names_called(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        assert isinstance(host, bytes)
        name = host.decode("ascii")
        self.calls.append((name, family, now_ms()))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await trio.sleep(self.name_delays.get(name, self.delays.get(family, 0.0)))
        except trio.Cancelled:
            self.cancelled.append((name, family, now_ms()))
            raise
        finally:
            self.running -= 1
        if name in self.broken:
            raise RuntimeError("bug in the resolver")
        found = [a for a in self.records.get(name, []) if family in (0, Address(a, 0).family)]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert isinstance(port, int)
        entries: list[Any] = []
        for text in found:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):  # as with type=0
                if ":" in text:
                    entries.append((V6, kind, 0, "", (text, port, 0, 0)))
                else:
                    entries.append((V4, kind, 0, "", (text, port)))
        return entries

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@asynccontextmanager
async def installed_fake() -> AsyncIterator[FakeResolver]:
    """Install a FakeResolver (with dual.test and v4.test) and restore the previous one."""
    resolver = FakeResolver()
    resolver.add("dual.test", "2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2")
    resolver.add("v4.test", "192.0.2.7")
    previous = trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


@asynccontextmanager
async def bounded_nursery(seconds: float = 60.0) -> AsyncIterator[trio.Nursery]:
    """A nursery that fails instead of hanging (on MockClock, a deadlock jumps here)."""
    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            yield nursery


def addresses(*texts: str, port: int = 80) -> list[Address]:
    return [Address(text, port) for text in texts]
