"""Run one scenario on real loopback and on the virtual network, and compare.

A scenario is an ``async def scenario(world: World) -> T`` that uses only
:mod:`trio.socket` (or trio's and trionet's helpers) on ``127.0.0.1`` / ``::1``
and returns its observations (errnos, byte counts, event orders: never raw
times, which differ between a real clock and the mock one). :func:`both` runs it
twice: under ``trio.run`` on the machine's own loopback, then on a
:class:`~trionet.testing.VirtualNetwork` with one host that reaches itself
through the same addresses, under ``MockClock(autojump_threshold=0)``. A test
asserts that the two observations are equal, so a change that makes the virtual
network drift from the kernel fails a test.

Every real run is bounded by :data:`REAL_TIMEOUT` seconds, and every virtual one
by :data:`VIRTUAL_TIMEOUT` simulated seconds.
"""

from __future__ import annotations

import dataclasses
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from trionet.testing import VirtualNetwork

T = TypeVar("T")

REAL_TIMEOUT = 10.0
VIRTUAL_TIMEOUT = 600.0

#: How long :meth:`World.settle` lets the virtual network run (mock time, free).
VIRTUAL_SETTLE = 0.05

#: Linux's TCP states (``include/net/tcp_states.h``), as ``TCP_INFO`` reports them.
TCP_STATES = {
    "ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT1": 4, "FIN_WAIT2": 5,
    "TIME_WAIT": 6, "CLOSE": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9, "LISTEN": 10, "CLOSING": 11,
}


@dataclasses.dataclass
class World:
    """What a scenario may ask of where it runs.

    Attributes:
      name: ``"real"`` or ``"virtual"``.
      net: The virtual network, or ``None`` on real sockets.
    """

    name: str
    net: VirtualNetwork | None = None

    @property
    def virtual(self) -> bool:
        return self.net is not None

    async def settle(self, sock: Any, *, state: str | None = None, readable: bool = False) -> None:
        """Wait until the kernel has done what a scenario waits for, without reading anything.

        On real sockets, until ``sock``'s TCP state is ``state`` (read from
        ``TCP_INFO``) or, with ``readable``, until it has something to read
        (``poll``): checked between scheduler checkpoints, bounded in count and
        by the run's :data:`REAL_TIMEOUT`. On loopback the kernel acts within
        the sending call or microseconds after it. On the virtual network,
        whose events are due after the link's latency, the mock clock runs
        :data:`VIRTUAL_SETTLE` (free and deterministic).
        """
        if state is None and not readable:
            raise ValueError("settle() needs a state or readable=True")
        if self.net is not None:
            await trio.sleep(VIRTUAL_SETTLE)
            return
        for _ in range(1_000_000):
            if state is not None and _tcp_state(sock) == TCP_STATES[state]:
                return
            if readable and _has_input(sock):
                return
            await trio.lowlevel.checkpoint()
        raise AssertionError(f"{sock!r} never became {state or 'readable'}")


def _tcp_state(sock: Any) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]  # type: ignore[no-any-return]


def _has_input(sock: Any) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


Scenario = Callable[[World], Awaitable[T]]


def run_real(scenario: Scenario[T]) -> T:
    """Run ``scenario`` on the machine's loopback (real clock, bounded)."""

    async def main() -> T:
        with trio.fail_after(REAL_TIMEOUT):
            return await scenario(World("real"))

    return trio.run(main)


def run_virtual(scenario: Scenario[T], *, seed: int | str = 0, **options: Any) -> T:
    """Run ``scenario`` on a virtual host that owns loopback (mock clock, bounded).

    ``options`` are :class:`~trionet.testing.VirtualNetwork` keyword arguments.
    """

    async def main() -> T:
        net = VirtualNetwork(seed=seed, **options)
        net.add_host("local", "10.0.0.1")
        with net.install(default_host="local"), trio.fail_after(VIRTUAL_TIMEOUT):
            return await scenario(World("virtual", net))

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def both(scenario: Scenario[T], **options: Any) -> tuple[T, T]:
    """``(real observations, virtual observations)`` of one scenario."""
    return run_real(scenario), run_virtual(scenario, **options)
