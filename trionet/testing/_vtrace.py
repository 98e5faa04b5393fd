"""The virtual network's trace: what crossed the wire, when, and what happened to it.

A :class:`~trionet.testing.VirtualNetwork` made with ``trace=True`` (the default)
records one :class:`TraceEvent` per interesting thing: a datagram sent, lost,
duplicated or delivered, a TCP segment sent or delivered, a connection attempt,
a reset, a partition. Tests assert on ``net.trace``; examples print it with
:func:`format_trace` as a timeline.

Event names are ``"<layer>.<what>"``:

.. code-block:: text

    udp.send udp.deliver udp.drop udp.duplicate udp.unreachable
    tcp.connect tcp.syn tcp.backlog tcp.retransmit tcp.established tcp.refused
    tcp.unreachable tcp.send tcp.deliver tcp.fin tcp.reset tcp.stall tcp.resume
    tcp.timeout
    dns.resolve dns.fail
    net.partition net.heal net.blackhole net.unblackhole net.crash net.exit net.link
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

__all__ = ["NetworkStatistics", "TraceEvent", "TraceLog", "format_address", "format_trace"]

# Column headings of format_trace, in order.
_HEADINGS: Final = ("time", "host", "event", "from", "to", "bytes", "note")


@final
@dataclass(frozen=True)
class TraceEvent:
    """One thing that happened on a virtual network.

    Attributes:
      time: Seconds since the network was first installed, on trio's clock
          (exact under :class:`trio.testing.MockClock`), rounded to the nanosecond.
      host: Name of the host where it happened; ``""`` for network-wide events
          such as a partition.
      event: What happened, ``"<layer>.<what>"``, e.g. ``"udp.drop"``.
      source: Sending address as ``"ip:port"`` (``"[ip]:port"`` for IPv6), or ``""``.
      destination: Receiving address in the same form, or ``""``.
      size: Payload bytes involved (0 for control packets).
      note: Detail, e.g. why a datagram was dropped (``"loss"``, ``"partition"``).
    """

    time: float
    host: str
    event: str
    source: str = ""
    destination: str = ""
    size: int = 0
    note: str = ""


@final
@dataclass(frozen=True)
class NetworkStatistics:
    """Counters of a :class:`VirtualNetwork` (see :meth:`VirtualNetwork.statistics`).

    Attributes:
      sockets: Virtual sockets created and not yet closed.
      datagrams_sent: UDP datagrams handed to the network.
      datagrams_delivered: Datagrams put in a receive queue (duplicates count).
      datagrams_dropped: Datagrams lost, blocked, refused or not fitting a queue.
      connections: TCP handshakes completed.
      resets: TCP endpoints reset by their peer.
      stream_bytes: TCP payload bytes delivered.
    """

    sockets: int
    datagrams_sent: int
    datagrams_delivered: int
    datagrams_dropped: int
    connections: int
    resets: int
    stream_bytes: int


@final
class TraceLog:
    """Where a network keeps its events.

    Events are returned ordered by time, then by address pair (events without
    addresses first), keeping the recording order within a pair: trio runs tasks
    that wake at the same instant in a random order, and this keeps that order
    out of the trace.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._epoch: float | None = None  # trio time of the network's first install
        self._entries: list[tuple[float, str, TraceEvent]] = []

    def start(self, now: float) -> None:
        """Count time from ``now`` (the first install); later calls change nothing."""
        if self._epoch is None:
            self._epoch = now

    def record(
        self,
        now: float,
        host: str,
        event: str,
        src: tuple[str, int] | None,
        dst: tuple[str, int] | None,
        size: int,
        note: str,
    ) -> None:
        if not self.enabled:
            return
        source = format_address(*src) if src is not None else ""
        destination = format_address(*dst) if dst is not None else ""
        # Rounded to the nanosecond so that runs started at different clock
        # readings give equal traces; configuration before install() is at 0.
        since = 0.0 if self._epoch is None else round(now - self._epoch, 9)
        pair = "|".join(sorted((source, destination))) if source or destination else ""
        entry = TraceEvent(since, host, event, source, destination, size, note)
        self._entries.append((now, pair, entry))

    def events(self) -> list[TraceEvent]:
        ordered = sorted(self._entries, key=lambda entry: (entry[0], entry[1]))
        return [event for _now, _pair, event in ordered]

    def clear(self) -> None:
        self._entries.clear()


def format_address(ip: str, port: int) -> str:
    """Format an address the way traces and error messages show it.

    Args:
      ip: An IPv4 or IPv6 address.
      port: A port number.

    Returns:
      ``"10.0.0.1:80"`` or ``"[fd00::1]:80"``.
    """
    if ":" in ip:
        return f"[{ipaddress.ip_address(ip).compressed}]:{port}"
    return f"{ip}:{port}"


def format_trace(events: Iterable[TraceEvent], *, unit: str = "ms") -> str:
    """Render trace events as an aligned, human-readable timeline.

    Args:
      events: The events, e.g. ``net.trace``; they are printed in the order given.
      unit: ``"ms"`` (default) or ``"s"`` for the time column.

    Returns:
      One line per event under a heading line, columns separated by two spaces,
      ending with a newline. Empty input gives just the heading line.

    Raises:
      ValueError: If ``unit`` is neither ``"ms"`` nor ``"s"``.
    """
    if unit == "ms":
        scale, digits = 1000.0, 3
    elif unit == "s":
        scale, digits = 1.0, 6
    else:
        raise ValueError(f"unit must be 'ms' or 's', not {unit!r}")
    rows = [(f"time ({unit})", *_HEADINGS[1:])]
    for ev in events:
        rows.append(
            (
                f"{ev.time * scale:.{digits}f}",
                ev.host or "-",
                ev.event,
                ev.source,
                ev.destination,
                str(ev.size) if ev.size else "",
                ev.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADINGS))]
    lines = []
    for row in rows:
        cells = [row[0].rjust(widths[0])]
        cells += [cell.ljust(width) for cell, width in zip(row[1:5], widths[1:5], strict=True)]
        cells.append(row[5].rjust(widths[5]))
        cells.append(row[6])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
