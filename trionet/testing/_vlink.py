"""Links between virtual hosts, and the reliable flows TCP sends over them.

A :class:`LinkConfig` describes one direction of the path between two hosts:
latency, jitter, loss, duplication, reordering, bandwidth and MTU. Datagrams
(UDP) meet all of it. TCP is reliable, so for TCP a link's loss becomes delay
(each lost transmission costs a retransmission timeout) and duplication and
reordering are invisible, as TCP hides them.

A :class:`Flow` is one direction of a TCP connection. Packets leave in order and
arrive in order (a packet never overtakes the one before it, whatever the jitter).
When the path is cut (a partition, or a black-holed destination) packets are
*held* at the sender, which stands for TCP retransmitting in vain; when the path
opens again they leave at once, in order. If data has been held for longer than
the network's TCP user timeout, the sender gives up (``ETIMEDOUT``), as Linux does
after ``tcp_retries2`` retransmissions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ._vtrace import format_address

if TYPE_CHECKING:
    from ._vevents import Callback
    from ._vhost import VirtualHost
    from ._vnet import VirtualNetwork

__all__ = ["Flow", "LinkConfig", "describe"]

# Linux's TCP_RTO_MIN (include/net/tcp.h): the shortest retransmission timeout,
# used as the cost of one lost TCP transmission; it doubles per retry (RFC 6298 5.5).
TCP_RTO_MIN: Final = 0.2
# Linux's tcp_retries2 default (ip-tcp(7)): lost transmissions of one segment
# counted before we stop adding delay (loss=1.0 must not loop forever).
_MAX_RETRIES: Final = 15
# Smallest MTU every IPv4 link must carry (RFC 791).
_MIN_MTU: Final = 68


@final
@dataclass(frozen=True, kw_only=True)
class LinkConfig:
    """How one direction of the path between two hosts treats packets.

    Attributes:
      latency: One-way delay in seconds.
      jitter: Extra delay drawn uniformly from ``[0, jitter]`` per packet. For
          datagrams this reorders naturally; TCP keeps its order.
      loss: Probability that a datagram vanishes. For TCP, the probability that
          a transmission is lost and must be retransmitted after
          ``TCP_RTO_MIN`` (0.2 s), doubling per retry.
      duplicate: Probability that a datagram arrives twice (the copy gets its
          own jitter). No effect on TCP.
      reorder: Probability that a datagram skips the latency and jitter and
          arrives at once, overtaking those sent before it, as netem(8)'s
          ``reorder`` does. Needs ``latency > 0`` to have an effect. No effect
          on TCP.
      bandwidth: Bytes of payload per second the link carries, or ``None`` for
          unlimited. Packets queue behind each other (no drops for queueing).
      mtu: Largest IP packet in bytes, or ``None`` for no limit beyond the
          protocol's. Datagrams that would exceed it fail with ``EMSGSIZE``
          (headers: 28 bytes for IPv4, 48 for IPv6). TCP is not affected.

    Raises:
      ValueError: If a delay is negative or not finite, a probability is outside
          ``[0, 1]``, the bandwidth is not positive or the MTU is below 68.
    """

    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    bandwidth: float | None = None
    mtu: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "jitter"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")
        if self.bandwidth is not None and not (self.bandwidth > 0):
            raise ValueError(f"bandwidth must be > 0 bytes/s or None, not {self.bandwidth!r}")
        if self.mtu is not None and self.mtu < _MIN_MTU:
            raise ValueError(f"mtu must be at least {_MIN_MTU} or None, not {self.mtu!r}")


@final
class _Held:
    __slots__ = ("callback", "counted", "kind", "since", "size")

    def __init__(self, kind: str, size: int, callback: Callback, counted: bool, since: float):
        self.kind = kind
        self.size = size
        self.callback = callback
        self.counted = counted
        self.since = since


@final
class Flow:
    """One direction of a TCP connection through the virtual network.

    Args:
      net: The network.
      host: The sending host.
      src: Sending (ip, port).
      dst: Receiving (ip, port).
      on_timeout: Called with the time when data has been held for longer than
          the network's TCP user timeout.
    """

    def __init__(
        self,
        net: VirtualNetwork,
        host: VirtualHost,
        src: tuple[str, int],
        dst: tuple[str, int],
        *,
        on_timeout: Callback | None = None,
    ) -> None:
        self._net = net
        self.host = host
        self.src = src
        self.dst = dst
        self.key = f"tcp {format_address(*src)}>{format_address(*dst)}"
        self._rng = net._rng(self.key)
        self._on_timeout = on_timeout
        self._last_arrival = -math.inf
        self._held: deque[_Held] = deque()
        self._timer_pending = False
        self.dead = False

    def send(self, now: float, kind: str, size: int, callback: Callback, *, counted: bool = False) -> None:
        """Send a packet; ``callback(arrival_time)`` runs when it arrives.

        Args:
          now: The sending time.
          kind: What it is (``"data"``, ``"syn"``, ...), for the trace.
          size: Payload bytes (0 for control packets).
          callback: Runs at the receiver when the packet arrives.
          counted: Whether holding it counts towards the user timeout (data and FIN).
        """
        if self.dead:
            return
        if self._held:
            self._hold(now, kind, size, callback, counted)
            return
        reason = self._net._blocked(self.host, self.dst[0])
        if reason is not None:
            self._net._record(now, self.host, "tcp.stall", self.src, self.dst, size, reason)
            self._net._stalled.append(self)
            self._hold(now, kind, size, callback, counted)
            return
        self._launch(now, size, callback)

    def retry(self, now: float) -> bool:
        """Release held packets if the path has opened; return whether it has."""
        if self.dead or not self._held:
            return True
        if self._net._blocked(self.host, self.dst[0]) is not None:
            return False
        waited = now - self._held[0].since
        self._net._record(now, self.host, "tcp.resume", self.src, self.dst, 0, f"after {waited:.3f} s")
        while self._held:
            held = self._held.popleft()
            self._launch(now, held.size, held.callback)
        return True

    def discard(self, *, dead: bool = True) -> None:
        """Drop held packets; unless ``dead=False``, send nothing more either."""
        self._held.clear()
        self.dead = dead

    def _hold(self, now: float, kind: str, size: int, callback: Callback, counted: bool) -> None:
        self._held.append(_Held(kind, size, callback, counted, now))
        if counted and not self._timer_pending and self._on_timeout is not None:
            self._timer_pending = True
            timeout = self._net.tcp_user_timeout
            self._net._events.schedule(now + timeout, self.key, self._check_timeout)

    def _check_timeout(self, now: float) -> None:
        self._timer_pending = False
        if self.dead:
            return
        oldest = next((h.since for h in self._held if h.counted), None)
        if oldest is None:
            return
        deadline = oldest + self._net.tcp_user_timeout
        if now >= deadline:
            assert self._on_timeout is not None
            self._on_timeout(now)
        else:
            self._timer_pending = True
            self._net._events.schedule(deadline, self.key, self._check_timeout)

    def _launch(self, now: float, size: int, callback: Callback) -> None:
        net = self._net
        dst_host = net._host_for(self.host, self.dst[0])
        assert dst_host is not None  # an unowned address counts as blocked
        link = net._link_between(self.host, dst_host)
        departure = net._depart(now, self.host, dst_host, size, link)
        delay = link.latency
        if link.jitter:
            delay += self._rng.uniform(0.0, link.jitter)
        if link.loss:
            rto = max(TCP_RTO_MIN, 2 * link.latency)
            for _ in range(_MAX_RETRIES):
                if self._rng.random() >= link.loss:
                    break
                delay += rto
                rto *= 2
        arrival = max(self._last_arrival, departure + delay)
        self._last_arrival = arrival
        net._events.schedule(arrival, self.key, callback)


def describe(config: LinkConfig) -> str:
    """``"latency=0.01 loss=0.2"``: the settings that differ from a perfect link."""
    default = LinkConfig()
    parts = [
        f"{name}={getattr(config, name)}"
        for name in ("latency", "jitter", "loss", "duplicate", "reorder", "bandwidth", "mtu")
        if getattr(config, name) != getattr(default, name)
    ]
    return " ".join(parts) or "perfect"
