"""Structured events: what trionet is doing, for an optional observer.

Servers, connectors and UDP endpoints take ``observer=``: a plain callable that
receives an :class:`Event` for each step (a connect attempt started, failed or
won; a connection accepted or shed by a limit; a retransmission scheduled...).
:class:`EventLog` is a ready-made observer that keeps the events and prints them
as a timeline, which is how the examples and the CLI show a Happy Eyeballs race
or a request being retransmitted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final

import trio

__all__ = ["Event", "EventLog", "Observer", "emit"]


@final
@dataclass(frozen=True, slots=True)
class Event:
    """One thing trionet did.

    Attributes:
      kind: A dotted name, such as ``"connect.attempt"`` or ``"udp.retransmit"``.
          Each component documents the kinds it reports.
      time: :func:`trio.current_time` when it happened.
      details: What it concerns: addresses, sizes, timeouts, errors.
    """

    kind: str
    time: float
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        return f"{self.time:9.3f}s  {self.kind:<{_KIND_WIDTH}} {_format_details(self.details)}".rstrip()


# The kind column's width: room for "connect.cancelled" and "udp.retransmit";
# a longer kind widens the column of a timeline (never overflows into details).
_KIND_WIDTH: Final = 20


def _format_value(value: object) -> str:
    """A detail as text; floats to the microsecond, so 0.7 never shows as 0.7000000000000001."""
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def _format_details(details: Mapping[str, object]) -> str:
    return " ".join(f"{key}={_format_value(value)}" for key, value in details.items())


#: Receives events. It is called synchronously from the task that acts, so it
#: must be quick and must not block; an exception it raises propagates.
Observer = Callable[[Event], None]


def emit(observer: Observer | None, kind: str, **details: object) -> None:
    """Report an event to ``observer``, if there is one, stamped with trio's clock."""
    if observer is not None:
        observer(Event(kind, trio.current_time(), MappingProxyType(details)))


@final
class EventLog:
    """An observer that records events, for tests and timelines.

    Example::

        log = EventLog()
        stream = await connect_tcp("example.net", 80, observer=log)
        print(log.format_timeline())

    Args:
      kinds: If given, only events whose kind starts with one of these prefixes
          are kept.
    """

    def __init__(self, kinds: tuple[str, ...] | None = None) -> None:
        self._kinds = kinds
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        if self._kinds is None or event.kind.startswith(self._kinds):
            self.events.append(event)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of_kind(self, kind: str) -> list[Event]:
        """The events whose kind is ``kind`` exactly, in order."""
        return [event for event in self.events if event.kind == kind]

    def format_timeline(self, *, start: float | None = None) -> str:
        """The events, one per line, with times relative to ``start`` (the first event's by default).

        Times are in milliseconds to a tenth; float details are rounded to
        the microsecond; the kind column is as wide as the longest kind.
        """
        if not self.events:
            return ""
        origin = self.events[0].time if start is None else start
        width = max(_KIND_WIDTH, *(len(event.kind) for event in self.events))
        lines = []
        for event in self.events:
            details = _format_details(event.details)
            lines.append(f"{(event.time - origin) * 1000:9.1f} ms  {event.kind:<{width}} {details}".rstrip())
        return "\n".join(lines)

