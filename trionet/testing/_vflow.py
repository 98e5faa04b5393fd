"""The reliable flows TCP sends over links between virtual hosts.

A :class:`Flow` is one direction of a TCP connection. Packets leave in order and
arrive in order (a packet never overtakes the one before it, whatever the jitter).
A link's loss becomes delay: each lost transmission costs a retransmission
timeout. When the path is cut (a partition, or a black-holed destination) packets
are *held* at the sender, which stands for TCP retransmitting in vain; when the
path opens again they leave at once, in order. If data has been held for longer
than the network's TCP user timeout, the sender gives up (``ETIMEDOUT``), as Linux
does after ``tcp_retries2`` retransmissions.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, final

from ._vevents import Callback
from ._vtrace import format_address
from ._vtypes import Address, Host, Network

__all__ = ["TCP_RTO_MIN", "Flow", "send_rst"]

# Linux's TCP_RTO_MIN (include/net/tcp.h): the shortest retransmission timeout,
# used as the cost of one lost TCP transmission; it doubles per retry (RFC 6298 5.5).
TCP_RTO_MIN: Final = 0.2
# Linux's tcp_retries2 default (ip-tcp(7)): lost transmissions of one segment
# counted before we stop adding delay (loss=1.0 must not loop forever).
_MAX_RETRIES: Final = 15


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
        net: Network,
        host: Host,
        src: Address,
        dst: Address,
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

    @property
    def holding(self) -> bool:
        """Whether packets wait at the sender for the path to open."""
        return bool(self._held)

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


def send_rst(net: Network, host: Host, src: Address, dst: Address, arrive: Callback, now: float) -> None:
    """Send a lone RST from ``src`` on ``host`` to ``dst``, outside any connection."""
    Flow(net, host, src, dst).send(now, "rst", 0, arrive)
