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
from typing import final

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
        details = " ".join(f"{key}={value}" for key, value in self.details.items())
        return f"{self.time:9.3f}s  {self.kind:<20} {details}".rstrip()


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
        """The events, one per line, with times relative to ``start`` (the first event's by default)."""
        if not self.events:
            return ""
        origin = self.events[0].time if start is None else start
        lines = []
        for event in self.events:
            details = " ".join(f"{key}={value}" for key, value in event.details.items())
            lines.append(f"{(event.time - origin) * 1000:9.1f} ms  {event.kind:<20} {details}".rstrip())
        return "\n".join(lines)

