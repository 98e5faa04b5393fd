"""The virtual network: hosts, links, partitions, black holes, crashes, DNS, install.

Installing sets trio's socket factory and hostname resolver for the current
``trio.run`` (restoring the previous ones on exit), so unchanged code that uses
:mod:`trio.socket` runs on the simulation. The host a task acts as is a context
variable set by :meth:`VirtualNetwork.host`; trio copies context variables into
the tasks a task starts, so a server's handler tasks act as the server too. A
walk-through is in ``docs/howto/virtual-network.rst``.

Determinism: all randomness derives from ``seed``. Each flow (a source and
destination address pair) draws from its own generator, seeded with the seed and
the flow's name, so what one flow sees does not depend on how trio interleaved
other tasks. Same seed and same operations give the same trace.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import random
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, final

import trio

from .._sansio.randomness import random_source
from . import _vtcp
from ._vdns import DnsTable, VirtualResolver
from ._vevents import EventQueue
from ._vhost import SocketFactory, VirtualHost, current_host, host_address
from ._vlink import LinkConfig, describe
from ._vtrace import NetworkStatistics, TraceEvent, TraceLog
from ._vtypes import Address, Host, Retryable, Socket
from ._vwire import Wire, pairs, seed_trio_scheduler

__all__ = ["VirtualNetwork"]

# Linux's net.core.rmem_default.
DEFAULT_UDP_BUFFER_SIZE: Final = 212992
# How UDP receive buffers are charged: "truesize" as Linux does (see _vudp).
DEFAULT_UDP_ACCOUNTING: Final = "truesize"
_UDP_ACCOUNTINGS: Final = ("truesize", "payload")
# Linux's tcp_retries2 = 15 gives up on unacknowledged data after a
# "hypothetical timeout of 924.6 seconds" (ip-tcp(7)).
DEFAULT_TCP_USER_TIMEOUT: Final = 924.6


@final
class VirtualNetwork(Wire):
    """A deterministic simulated network for trio programs.

    Example::

        net = VirtualNetwork(seed=1)
        net.add_host("server", "10.0.0.1", "fd00::1")
        net.add_host("client", "10.0.0.2", "fd00::2")
        net.link("client", "server", latency=0.010, loss=0.05)
        with net.install():
            with net.host("server"):
                await nursery.start(trio.serve_tcp, handler, 7)
            with net.host("client"):
                stream = await trio.open_tcp_stream("server", 7)

    Args:
      seed: Seeds every random decision (loss, jitter, duplication, reordering).
      link: The :class:`LinkConfig` between hosts that :meth:`link` did not
          configure. Default: perfect (no delay, no loss).
      trace: Whether to record :class:`TraceEvent` entries in :attr:`trace`.
      tcp_buffer_size: If given, every TCP socket's ``SO_SNDBUF`` and
          ``SO_RCVBUF`` are this many bytes, never autotuned. Default:
          ``None``, Linux's autotuning within ``tcp_rmem`` and ``tcp_wmem``.
      tcp_rmem: Linux's ``net.ipv4.tcp_rmem`` ``(min, default, max)``:
          ``SO_RCVBUF`` starts at ``default``, doubles up to ``max`` for a
          reader that keeps up.
      tcp_wmem: Linux's ``net.ipv4.tcp_wmem``: ``SO_SNDBUF`` is ``default``,
          ``max`` once connected (as Linux on loopback).
      udp_buffer_size: Default ``SO_RCVBUF`` of UDP sockets (Linux's
          ``net.core.rmem_default``).
      udp_accounting: What a queued datagram costs against ``SO_RCVBUF``:
          ``"truesize"`` (the default), the kernel memory Linux charges (832
          bytes for a datagram of up to about 200 bytes, 2,304 for 1,000 bytes);
          ``"payload"``, its payload bytes.
      tcp_connect_timeout: Seconds a ``connect()`` whose SYN gets no answer
          waits before failing with ``ETIMEDOUT``. Default: 131, Linux's.
      tcp_syn_retransmits: Seconds after ``connect()`` at which an unanswered
          SYN (e.g. dropped by a full backlog) is resent. Default: Linux's 1,
          2, 3, 4, 5, 7, 11, 19, 35, 67.
      arp_timeout: Seconds after which a ``connect()`` to an unowned address
          in the same /24 (IPv4) or /64 (IPv6) as one of the connecting host's
          fails with ``EHOSTUNREACH`` (Linux: 3 s); unowned addresses elsewhere
          hang until ``tcp_connect_timeout``. ``None``: on-link ones hang too.
      tcp_user_timeout: Seconds data may stay unacknowledged (held by a
          partition or black hole) before the sender resets the connection:
          its calls fail with ``ETIMEDOUT``, and the peer gets ``ECONNRESET``
          when the path opens. Idle connections never time out (no keepalive).
    """

    def __init__(
        self,
        *,
        seed: int | str = 0,
        link: LinkConfig | None = None,
        trace: bool = True,
        tcp_buffer_size: int | None = None,
        tcp_rmem: tuple[int, int, int] = _vtcp.DEFAULT_TCP_RMEM,
        tcp_wmem: tuple[int, int, int] = _vtcp.DEFAULT_TCP_WMEM,
        udp_buffer_size: int = DEFAULT_UDP_BUFFER_SIZE,
        udp_accounting: str = DEFAULT_UDP_ACCOUNTING,
        tcp_connect_timeout: float = _vtcp.DEFAULT_TCP_CONNECT_TIMEOUT,
        tcp_user_timeout: float = DEFAULT_TCP_USER_TIMEOUT,
        tcp_syn_retransmits: Sequence[float] = _vtcp.DEFAULT_TCP_SYN_RETRANSMITS,
        arp_timeout: float | None = _vtcp.DEFAULT_ARP_TIMEOUT,
    ) -> None:
        if min(1 if tcp_buffer_size is None else tcp_buffer_size, udp_buffer_size) <= 0:
            raise ValueError("buffer sizes must be positive")
        if not (tcp_connect_timeout > 0 and tcp_user_timeout > 0):
            raise ValueError("timeouts must be positive")
        if udp_accounting not in _UDP_ACCOUNTINGS:
            raise ValueError(f"udp_accounting must be one of {_UDP_ACCOUNTINGS}, not {udp_accounting!r}")
        tcp = _vtcp.check_tcp_options(tcp_rmem, tcp_wmem, tcp_syn_retransmits, arp_timeout)
        self.seed = seed
        self.default_link = link or LinkConfig()
        self.tcp_buffer_size = tcp_buffer_size
        self.tcp_rmem, self.tcp_wmem, self.tcp_syn_retransmits, self.arp_timeout = tcp
        self.udp_buffer_size = udp_buffer_size
        self.udp_accounting = udp_accounting
        self.tcp_connect_timeout = tcp_connect_timeout
        self.tcp_user_timeout = tcp_user_timeout
        self._events = EventQueue()
        self._hosts: dict[str, VirtualHost] = {}
        self._owners: dict[str, VirtualHost] = {}
        self._links: dict[tuple[str, str], LinkConfig] = {}
        self._cuts: set[frozenset[str]] = set()
        self._blackholes: set[str] = set()
        self._dns = DnsTable()
        self._busy: dict[tuple[str, str], float] = {}
        self._rngs: dict[str, random.Random] = {}
        self._stalled: list[Retryable] = []  # TCP flows holding packets
        self._log = TraceLog(enabled=trace)
        self._counts: collections.Counter[str] = collections.Counter()
        self._open: dict[Socket, None] = {}
        self._default_host: VirtualHost | None = None

    # ---- hosts and installation -------------------------------------------

    def add_host(self, name: str, *addresses: str) -> VirtualHost:
        """Add a host owning ``addresses`` and register ``name`` -> ``addresses`` in DNS.

        Args:
          name: A new host name (DNS lookups of it are case-insensitive).
          *addresses: IPv4/IPv6 addresses, in the order DNS returns them. Every
              host also reaches itself through ``127.0.0.1`` and ``::1``.

        Returns:
          The :class:`VirtualHost`.

        Raises:
          ValueError: If the name is taken, or an address is malformed, special
              (loopback, unspecified, multicast, IPv4-mapped) or already owned.
        """
        if not name or name in self._hosts:
            raise ValueError(f"host name {name!r} is empty or already used")
        normalised = tuple(host_address(a) for a in addresses)
        for address in normalised:
            if address in self._owners:
                raise ValueError(f"{address} already belongs to {self._owners[address].name!r}")
        if len(set(normalised)) != len(normalised):
            raise ValueError(f"duplicate address in {addresses!r}")
        host = VirtualHost(self, name, normalised)
        self._hosts[name] = host
        for address in normalised:
            self._owners[address] = host
        self._dns.set(name, normalised, replace=False)
        return host

    @property
    def hosts(self) -> Mapping[str, VirtualHost]:
        """The hosts by name (read-only)."""
        return types.MappingProxyType(self._hosts)

    @contextlib.contextmanager
    def host(self, name: str) -> Iterator[VirtualHost]:
        """Act as host ``name`` inside the ``with`` block, and in tasks started there.

        Sockets made by ``trio.socket.socket()`` (directly or through trio's and
        trionet's helpers) belong to this host.
        """
        token = current_host.set(self._get(name))
        try:
            yield self._hosts[name]
        finally:
            current_host.reset(token)

    @contextlib.contextmanager
    def install(self, *, default_host: str | None = None) -> Iterator[VirtualNetwork]:
        """Make trio's sockets and name lookups use this network inside the block.

        Must be used inside ``trio.run``; affects that run only. On exit the
        previous socket factory and resolver are restored (sockets made inside
        keep working until closed).

        It also sets trionet's random source (the spread of
        :class:`~trionet.RetryPolicy` timeouts, for a policy without its own
        ``rng``) to a generator seeded from the network's seed, for the
        tasks started inside the block, restoring the previous one on exit.

        It also seeds, from the network's seed, the generator with which
        trio's scheduler orders tasks woken at the same instant (trio shuffles
        them on purpose, so that no program relies on an order): the same
        program on the same seed then runs its simultaneous steps (the AAAA and
        A lookups of :func:`~trionet.connect_tcp`, two clients connecting at
        once) in the same order, and gives the same trace, every time. That
        generator is private to trio (``trio._core._run._r``, which trio's
        own Hypothesis integration seeds the same way); if a version of trio
        has none, the order of simultaneous steps is trio's own again.

        Args:
          default_host: Host for tasks that did not choose one with
              :meth:`host`. Without it, making a socket outside
              ``with net.host(...)`` raises :class:`RuntimeError`.
        """
        default = self._get(default_host) if default_host is not None else None
        self._log.start(trio.current_time())
        seed_trio_scheduler(f"{self.seed!r}|scheduler")
        old_factory = trio.socket.set_custom_socket_factory(SocketFactory(self))
        old_resolver = trio.socket.set_custom_hostname_resolver(VirtualResolver(self))
        old_default, self._default_host = self._default_host, default
        source = random_source.set(random.Random(f"{self.seed!r}|trionet").random)
        try:
            yield self
        finally:
            random_source.reset(source)
            self._default_host = old_default
            trio.socket.set_custom_socket_factory(old_factory)
            trio.socket.set_custom_hostname_resolver(old_resolver)

    def _get(self, name: str) -> VirtualHost:
        try:
            return self._hosts[name]
        except KeyError:
            raise KeyError(f"no host named {name!r} on this network") from None

    # ---- links, partitions, black holes, crashes ----------------------------

    def link(
        self,
        a: str,
        b: str,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        bandwidth: float | None = None,
        mtu: int | None = None,
        one_way: bool = False,
    ) -> LinkConfig:
        """Configure the path between hosts ``a`` and ``b`` (both ways unless ``one_way``).

        The options are those of :class:`LinkConfig`. Packets already in flight
        keep the delay they were given. ``link(a, a, ...)`` configures a host's
        traffic to itself (perfect by default).

        Returns:
          The new :class:`LinkConfig`.
        """
        config = LinkConfig(
            latency=latency,
            jitter=jitter,
            loss=loss,
            duplicate=duplicate,
            reorder=reorder,
            bandwidth=bandwidth,
            mtu=mtu,
        )
        self.set_link(a, b, config, one_way=one_way)
        return config

    def set_link(self, a: str, b: str, config: LinkConfig, *, one_way: bool = False) -> None:
        """Like :meth:`link`, with a ready-made :class:`LinkConfig`."""
        self._get(a), self._get(b)
        now = self._events.advance()
        self._links[(a, b)] = config
        if not one_way:
            self._links[(b, a)] = config
        arrow = "->" if one_way else "<->"
        self._record(now, None, "net.link", None, None, 0, f"{a} {arrow} {b}: {describe(config)}")

    def link_config(self, a: str, b: str) -> LinkConfig:
        """The :class:`LinkConfig` for traffic from ``a`` to ``b``."""
        return self._link_between(self._get(a), self._get(b))

    def partition(self, *groups: str | Iterable[str]) -> None:
        """Cut every path between hosts of different groups.

        ``partition("client", "server")`` separates two hosts;
        ``partition(["a", "b"], ["c"])`` separates ``c`` from ``a`` and ``b``.
        Datagrams across a cut vanish; TCP packets wait at the sender (see
        ``tcp_user_timeout``); packets already in flight arrive.

        Raises:
          ValueError: With fewer than two groups. KeyError: Unknown host.
        """
        sets = self._groups(groups)
        if len(sets) < 2:
            raise ValueError("partition() needs at least two groups of hosts")
        now = self._events.advance()
        for cut in pairs(sets):
            self._cuts.add(cut)
        note = " | ".join(", ".join(g) for g in sets)
        self._record(now, None, "net.partition", None, None, 0, note)

    def heal(self, *groups: str | Iterable[str]) -> None:
        """Restore the paths cut between ``groups``, or all of them if none are given.

        Held TCP packets leave at once, in order.

        Raises:
          ValueError: With exactly one group. KeyError: Unknown host.
        """
        sets = self._groups(groups)
        if len(sets) == 1:
            raise ValueError("heal() takes no groups (heal everything) or at least two")
        now = self._events.advance()
        if sets:
            self._cuts.difference_update(pairs(sets))
        else:
            self._cuts.clear()
        note = " | ".join(", ".join(g) for g in sets) if sets else "all"
        self._record(now, None, "net.heal", None, None, 0, note)
        self._retry_stalled(now)

    def is_partitioned(self, a: str, b: str) -> bool:
        """Whether the path between hosts ``a`` and ``b`` is cut."""
        self._get(a), self._get(b)
        return frozenset((a, b)) in self._cuts

    def blackhole(self, *addresses: str) -> None:
        """Make packets to ``addresses`` vanish: datagrams are dropped, and TCP
        connects hang (until the caller's timeout or ``tcp_connect_timeout``).
        """
        now = self._events.advance()
        for address in addresses:
            ip = host_address(address)
            self._blackholes.add(ip)
            self._record(now, None, "net.blackhole", None, None, 0, ip)

    def unblackhole(self, *addresses: str) -> None:
        """Undo :meth:`blackhole`; held TCP packets leave at once."""
        now = self._events.advance()
        for address in addresses:
            ip = host_address(address)
            self._blackholes.discard(ip)
            self._record(now, None, "net.unblackhole", None, None, 0, ip)
        self._retry_stalled(now)

    def crash(self, name: str) -> None:
        """Crash host ``name``'s processes: every socket it has dies at once.

        Its TCP peers are reset (``ECONNRESET``, "host 'name' crashed") once the
        RST crosses the link, its listeners stop (new connects are refused),
        its UDP ports close. Calls on the dead sockets wait until the
        application closes them (the crashed code never runs again), so cancel
        the host's tasks to clean up. The host itself stays up: new sockets
        made on it work (a restarted server).

        A process that merely exits (or is killed) is :meth:`exit_process`.
        """
        host = self._get(name)
        now = self._events.advance()
        self._record(now, host, "net.crash", None, None, 0, f"{len(host._sockets)} sockets")
        for sock in list(host._sockets):
            if not sock._closed:
                sock._crash(now)
        self._events.notify()

    def exit_process(self, name: str) -> None:
        """The processes of host ``name`` exit: the kernel closes every socket they had.

        As Linux does when a process exits or is killed, each socket is closed
        as by ``close()``: a TCP connection sends its pending data, then FIN
        (the peer reads a clean ``b""``), or RST if unread data was left
        (``ECONNRESET``); listeners stop; UDP ports close. As after
        :meth:`crash`, calls on the sockets wait until the application closes
        them (cancel the host's tasks), and new sockets on the host work.
        """
        host = self._get(name)
        now = self._events.advance()
        self._record(now, host, "net.exit", None, None, 0, f"{len(host._sockets)} sockets")
        for sock in list(host._sockets):
            if not sock._closed:
                sock._exit_process(now)
        self._events.notify()

    # ---- DNS ----------------------------------------------------------------

    def set_dns(self, name: str, *addresses: str, ipv4_delay: float = 0.0, ipv6_delay: float = 0.0) -> None:
        """Make ``name`` resolve to ``addresses``, in this order.

        Args:
          name: A host name (case-insensitive; a trailing dot is ignored).
          *addresses: IPv4/IPv6 addresses; any, owned by a host or not.
          ipv4_delay: Seconds an ``AF_INET`` lookup takes.
          ipv6_delay: Seconds an ``AF_INET6`` lookup takes; ``AF_UNSPEC``
              lookups take the longer of the two.
        """
        self._dns.set(name, addresses, ipv4_delay=ipv4_delay, ipv6_delay=ipv6_delay)

    def remove_dns(self, name: str) -> None:
        """Make ``name`` unknown (lookups fail with ``EAI_NONAME``)."""
        self._dns.remove(name)

    # ---- trace and statistics -------------------------------------------------

    @property
    def trace(self) -> list[TraceEvent]:
        """The recorded :class:`TraceEvent` entries, oldest first (a new list each time).

        Events at the same instant are ordered by address pair (network-wide
        and DNS events first), keeping their order within a pair, so the order
        does not depend on how trio scheduled simultaneous tasks.
        """
        self._events.advance()
        return self._log.events()

    def clear_trace(self) -> None:
        """Forget the events recorded so far."""
        self._events.advance()
        self._log.clear()

    def statistics(self) -> NetworkStatistics:
        """Current counters, as a frozen :class:`NetworkStatistics`."""
        self._events.advance()
        counted = [f.name for f in dataclasses.fields(NetworkStatistics) if f.name != "sockets"]
        return NetworkStatistics(sockets=len(self._open), **{n: self._counts[n] for n in counted})

    def _record(
        self,
        now: float,
        host: Host | None,
        event: str,
        src: Address | None,
        dst: Address | None,
        size: int = 0,
        note: str = "",
    ) -> None:
        self._log.record(now, host.name if host else "", event, src, dst, size, note)

    def _record_here(self, event: str, *, note: str) -> None:
        host = current_host.get() or self._default_host
        self._record(self._events.advance(), host, event, None, None, 0, note)

    def _all_hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def _groups(self, groups: tuple[str | Iterable[str], ...]) -> list[list[str]]:
        sets = [[g] if isinstance(g, str) else list(g) for g in groups]
        for name in itertools.chain.from_iterable(sets):
            self._get(name)
        return sets

