"""What the virtual network's parts know of each other: small structural types.

The modules are layered, lowest first: trace, events, link settings and DNS;
these types; sockets, flows and the calls that wait on them; TCP and UDP; hosts
(which make sockets); the network (which makes hosts and wires them together).
A lower module never imports a higher one, not even for type checking
(``tests/test_testing_layering.py`` checks it). Where a lower part needs a
higher one, it is handed the object and names one of these Protocols for it:

- :class:`Network`: the network as hosts, sockets and flows see it (the clock,
  routing, link settings, the trace and counters).
- :class:`Host`: a host as its sockets and the network see it (port tables,
  addresses, its live sockets).
- :class:`Socket`: a socket as its host's port tables and a crash see it.

The members are the implementations' own (mostly private) ones: these types
name what crosses a layer, they do not add a second interface to maintain.
"""

from __future__ import annotations

import collections
import random
import socket
from typing import Protocol

from ._vdns import DnsTable
from ._vevents import EventQueue
from ._vlink import LinkConfig

__all__ = ["Address", "Host", "Network", "Retryable", "Socket"]

#: An (ip, port) pair, the ip normalised.
Address = tuple[str, int]


class Socket(Protocol):
    """A socket as its host's port tables (and a crash of the host) see it."""

    @property
    def family(self) -> socket.AddressFamily: ...

    @property
    def type(self) -> socket.SocketKind: ...

    @property
    def _closed(self) -> bool: ...

    @property
    def _options(self) -> dict[tuple[int, int], int]: ...

    def _crash(self, now: float) -> None: ...

    def _listening(self) -> bool: ...

    def _connected_peer(self) -> Address | None: ...

    def _exit_process(self, now: float) -> None: ...


class Retryable(Protocol):
    """Packets held at a sender while the path is cut (a TCP flow)."""

    def retry(self, now: float) -> bool:
        """Release held packets if the path has opened; return whether it has."""
        ...


class Host(Protocol):
    """A host as its sockets, its flows and the network see it."""

    @property
    def name(self) -> str: ...

    @property
    def addresses(self) -> tuple[str, ...]: ...

    @property
    def network(self) -> Network: ...

    @property
    def _sockets(self) -> dict[Socket, None]: ...

    def address_of(self, family: int) -> str | None: ...

    def _owns(self, ip: str) -> bool: ...

    def _bind(self, sock: Socket, ip: str | None, port: int) -> int: ...

    def _unbind(self, sock: Socket, ip: str | None, port: int) -> None: ...

    def _check_listen(self, sock: Socket, ip: str | None, port: int) -> None: ...

    def _enter_time_wait(self, sock: Socket, ip: str | None, port: int, now: float) -> None: ...

    def _add_child(self, sock: Socket, ip: str, port: int) -> None: ...

    def _bound(self, kind: int, ip: str, port: int, src: Address | None = None) -> list[Socket]: ...

    def _lookup(
        self, kind: int, family: int, ip: str, port: int, src: Address | None = None
    ) -> Socket | None: ...


class Network(Protocol):
    """The network as hosts, sockets and flows see it."""

    @property
    def seed(self) -> int | str: ...

    @property
    def tcp_buffer_size(self) -> int | None: ...

    @property
    def tcp_rmem(self) -> tuple[int, ...]: ...

    @property
    def tcp_wmem(self) -> tuple[int, ...]: ...

    @property
    def udp_buffer_size(self) -> int: ...

    @property
    def udp_accounting(self) -> str: ...

    @property
    def tcp_connect_timeout(self) -> float: ...

    @property
    def tcp_user_timeout(self) -> float: ...

    @property
    def tcp_syn_retransmits(self) -> tuple[float, ...]: ...

    @property
    def arp_timeout(self) -> float | None: ...

    @property
    def _events(self) -> EventQueue: ...

    @property
    def _dns(self) -> DnsTable: ...

    @property
    def _default_host(self) -> Host | None: ...

    @property
    def _open(self) -> dict[Socket, None]: ...

    @property
    def _stalled(self) -> list[Retryable]: ...

    @property
    def _counts(self) -> collections.Counter[str]: ...

    def _record(
        self,
        now: float,
        host: Host | None,
        event: str,
        src: Address | None,
        dst: Address | None,
        size: int = 0,
        note: str = "",
    ) -> None: ...

    def _rng(self, key: str) -> random.Random: ...

    def _host_for(self, src: Host, ip: str) -> Host | None: ...

    def _all_hosts(self) -> list[Host]: ...

    def is_partitioned(self, a: str, b: str) -> bool: ...

    def _blocked(self, src: Host, ip: str) -> str | None: ...

    def _link_between(self, a: Host, b: Host) -> LinkConfig: ...

    def _depart(self, now: float, a: Host, b: Host, size: int, link: LinkConfig) -> float: ...
