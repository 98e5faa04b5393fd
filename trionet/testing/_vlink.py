"""Links between virtual hosts: how one direction of a path treats packets.

A :class:`LinkConfig` describes one direction of the path between two hosts:
latency, jitter, loss, duplication, reordering, bandwidth and MTU. Datagrams
(UDP) meet all of it. TCP is reliable, so for TCP a link's loss becomes delay
(each lost transmission costs a retransmission timeout) and duplication and
reordering are invisible, as TCP hides them: :mod:`._vflow` carries TCP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, final

__all__ = ["LinkConfig", "describe"]

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


def describe(config: LinkConfig) -> str:
    """``"latency=0.01 loss=0.2"``: the settings that differ from a perfect link."""
    default = LinkConfig()
    parts = [
        f"{name}={getattr(config, name)}"
        for name in ("latency", "jitter", "loss", "duplicate", "reorder", "bandwidth", "mtu")
        if getattr(config, name) != getattr(default, name)
    ]
    return " ".join(parts) or "perfect"
