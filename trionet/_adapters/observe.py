"""Structured events: what trionet is doing, for an optional observer.

Servers, connectors and UDP endpoints take ``observer=``: a plain callable that
receives an :class:`Event` for each step (a connect attempt started, failed or
won; a connection accepted or shed by a limit; a retransmission scheduled...).
:class:`EventLog` is a ready-made observer that keeps the events and prints them
as a timeline, which is how the examples and the CLI show a Happy Eyeballs race
or a request being retransmitted.

An event's details are the raw values (a peer's address, the exception a
handler raised), which may hold text a peer chose; its string form and the
timeline show them through :func:`~trionet._sansio.escape.escape_text`, so no
control character from a peer reaches a terminal. :func:`log_peer_error` does
the same for the servers' log records, and rate-limits them per peer.
"""

from __future__ import annotations

import logging
import traceback as tb
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, final

import trio

from .._sansio.addresses import Address
from .._sansio.escape import escape_text
from .._sansio.loglimit import Admission, RecordLimiter

__all__ = [
    "Event",
    "EventLog",
    "LoggingObserver",
    "Observer",
    "emit",
    "emit_at",
    "log_handler_error",
    "log_peer_error",
    "log_server_stopped",
]


@final
@dataclass(frozen=True, slots=True)
class Event:
    """One thing trionet did.

    Attributes:
      kind: A dotted name, such as ``"tcp.connect.attempt"`` or ``"udp.retransmit"``.
          Each component documents the kinds it reports.
      time: :func:`trio.current_time` when it happened.
      details: What it concerns: addresses, sizes, timeouts, errors. These are
          the raw values, which may hold peer-controlled text (a Unix peer's
          socket name, an exception's message): escape them before showing
          them, as ``str(event)`` and :meth:`EventLog.format_timeline` do.
    """

    kind: str
    time: float
    details: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        """One line: the time, the kind and the details, escaped (no control characters)."""
        kind = escape_text(self.kind)
        return f"{self.time:9.3f}s  {kind:<{_KIND_WIDTH}} {_format_details(self.details)}".rstrip()


# The kind column's width: room for "tcp.connect.cancelled" and "udp.duplicate_replayed";
# a longer kind widens the column of a timeline (never overflows into details).
_KIND_WIDTH: Final = 22


def _format_value(value: object) -> str:
    """A detail as text; floats to the microsecond, so 0.7 never shows as 0.7000000000000001.

    Text a peer chose (a Unix socket name, an exception's message) is escaped.
    """
    if isinstance(value, float):
        return repr(round(value, 6))
    return escape_text(str(value))


def _format_details(details: Mapping[str, object]) -> str:
    return " ".join(f"{escape_text(key)}={_format_value(value)}" for key, value in details.items())


#: Receives events. It is called synchronously from the task that acts, so it
#: must be quick and must not block; an exception it raises propagates.
Observer = Callable[[Event], None]


def emit(observer: Observer | None, kind: str, **details: object) -> None:
    """Report an event to ``observer``, if there is one, stamped with trio's clock."""
    if observer is not None:
        observer(Event(kind, trio.current_time(), MappingProxyType(details)))


def emit_at(observer: Observer | None, time: float, kind: str, **details: object) -> None:
    """Report an event that happened at ``time`` (earlier), noticed only now."""
    if observer is not None:
        observer(Event(kind, time, MappingProxyType(details)))


@final
class EventLog:
    """An observer that records events, for tests and timelines.

    Example::

        log = EventLog()
        async with await trionet.connect_tcp("example.net", 80, observer=log) as conn:
            ...
        print(log.format_timeline())

    Args:
      kinds: If given, only events whose kind starts with one of these prefixes
          are kept.
      maxlen: Keep only the latest ``maxlen`` events (a ring), so that a
          long-running server can keep a log; ``None`` (the default): all.

    Attributes:
      events: The events kept, oldest first (a ``collections.deque`` when
          ``maxlen`` is given, a :class:`list` otherwise).
    """

    def __init__(self, kinds: tuple[str, ...] | None = None, *, maxlen: int | None = None) -> None:
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1):
            raise ValueError(f"maxlen must be an int >= 1 or None, not {maxlen!r}")
        self._kinds = kinds
        self.events: list[Event] | deque[Event] = [] if maxlen is None else deque(maxlen=maxlen)

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

        Events are in the order of their times (those at the same time in the
        order reported): an event noticed after it happened, such as a lookup's
        answer held back by a resolution delay, is shown when it happened.
        Times are in milliseconds to a tenth; float details are rounded to
        the microsecond; the kind column is as wide as the longest kind.
        """
        if not self.events:
            return ""
        events = sorted(self.events, key=lambda event: event.time)
        origin = events[0].time if start is None else start
        kinds = [escape_text(event.kind) for event in events]
        width = max(_KIND_WIDTH, *(len(kind) for kind in kinds))
        lines = []
        for event, kind in zip(events, kinds, strict=True):
            details = _format_details(event.details)
            lines.append(f"{(event.time - origin) * 1000:9.1f} ms  {kind:<{width}} {details}".rstrip())
        return "\n".join(lines)



@final
class LoggingObserver:
    """An observer that logs each event through :mod:`logging`.

    Each event becomes one record of ``logger`` (``trionet.events`` by
    default) whose message is the event's kind and details, escaped as in a
    timeline, and whose ``extra`` carries them as fields for structured
    handlers (JSON loggers): ``record.trionet_event`` (the kind) and
    ``record.trionet_details`` (a dict of the details, as text)::

        logging.basicConfig(level=logging.INFO)
        async with trionet.open_tcp_server(handler, 8000, observer=trionet.LoggingObserver()):
            ...

    Args:
      logger: The logger, or its name.
      level: The level of every record (INFO by default); or a callable from
          the event's kind to a level, to log some kinds louder than others.
      kinds: If given, only events whose kind starts with one of these prefixes
          are logged.
    """

    def __init__(
        self,
        logger: logging.Logger | str = "trionet.events",
        *,
        level: int | Callable[[str], int] = logging.INFO,
        kinds: tuple[str, ...] | None = None,
    ) -> None:
        self._logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self._level = level
        self._kinds = kinds

    def __call__(self, event: Event) -> None:
        if self._kinds is not None and not event.kind.startswith(self._kinds):
            return
        level = self._level(event.kind) if callable(self._level) else self._level
        if not self._logger.isEnabledFor(level):
            return
        details = {escape_text(key): _format_value(value) for key, value in event.details.items()}
        self._logger.log(
            level, "%s %s", escape_text(event.kind), _format_details(event.details),
            extra={"trionet_event": event.kind, "trionet_details": details},
        )


# ----------------------------------------------------------------- logging

# One limiter per server, created on its first error and gone with the server.
_LogKey = tuple[int, str, str]  # level, peer host, error type
_LIMITERS: Final[weakref.WeakKeyDictionary[object, RecordLimiter[_LogKey]]] = (
    weakref.WeakKeyDictionary()
)


def _peer_host(peer: object) -> str:
    """What a peer's records are grouped by: its host (not its port), or its text."""
    return escape_text(peer.host if isinstance(peer, Address) else str(peer))


def log_handler_error(
    logger: logging.Logger,
    owner: object,
    peer: object,
    error: Exception,
    *,
    peer_errors: tuple[type[BaseException], ...],
    peer_endings: Counter[str],
    ended: str,
    raised: str,
) -> None:
    """The servers' one policy for a handler's exception (TCP, Unix and UDP alike).

    One the peer caused (an instance of ``peer_errors``: garbage, a reset) is
    counted by type in ``peer_endings`` (which the summary at stop reports,
    :func:`log_server_stopped`) and logged at DEBUG without a traceback (a
    server under load sees resets all the time), as ``ended`` (``%s`` for the
    peer and the error's type) followed by the error; any other at ERROR with
    its traceback, as ``raised``. Both go through :func:`log_peer_error`:
    escaped, and rate-limited per peer host and error type.
    """
    peer_caused = peer_leaf(error, peer_errors)
    if peer_caused is not None:
        # A handler that runs a nursery of its own (a reader and a writer task)
        # gets the peer's reset in an exception group: it is still the peer's
        # doing, and is reported as its first leaf (issue 17.4).
        name = type(peer_caused).__name__
        peer_endings[name] += 1
        log_peer_error(logger, owner, logging.DEBUG, ended + ": %s", peer, name, peer_caused,
                       peer=peer, error=peer_caused, traceback=False)
        return
    log_peer_error(logger, owner, logging.ERROR, raised, peer, type(error).__name__,
                   peer=peer, error=error, traceback=True)


def peer_leaf(
    error: BaseException, peer_errors: tuple[type[BaseException], ...]
) -> BaseException | None:
    """The error a peer caused, if ``error`` is one, or a group made only of such errors.

    Returns ``error`` itself, or for an exception group whose every leaf is an
    instance of ``peer_errors`` (nested groups included), its first leaf;
    ``None`` when anything in it is not the peer's doing.
    """
    # Duck-typed: BaseExceptionGroup is built in from Python 3.11 only (trio
    # uses the exceptiongroup backport before); both have .exceptions.
    inner_errors = getattr(error, "exceptions", None)
    if isinstance(inner_errors, tuple):
        leaves = [peer_leaf(inner, peer_errors) for inner in inner_errors]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
        return None
    return error if isinstance(error, peer_errors) else None


def log_peer_error(
    logger: logging.Logger,
    owner: object,
    level: int,
    message: str,
    *args: object,
    peer: object,
    error: BaseException,
    traceback: bool,
) -> None:
    """Log an error a peer's traffic led to: escaped, and rate-limited per peer.

    Every argument of ``message`` is shown with :func:`escape_text` (so
    ``message`` must use ``%s`` placeholders only), and so is the ``peer``
    attribute of the record, so no control character from a peer reaches the
    log. The record carries ``error``'s traceback if ``traceback`` is true.

    Records are rate-limited with a :class:`~trionet._sansio.loglimit.RecordLimiter`
    per ``owner`` (the server), keyed by the peer's host and the error's type:
    the first ``DEFAULT_LOG_BURST`` records of a key in each
    ``DEFAULT_LOG_WINDOW`` seconds are logged in full, the next one as a
    single line without traceback saying that similar records are suppressed,
    and the rest are only counted, until a later record of that server reports
    ``suppressed N similar records``. The caller's own statistics count every
    error regardless.
    """
    if not logger.isEnabledFor(level):
        return
    limiter = _LIMITERS.get(owner)
    if limiter is None:
        limiter = _LIMITERS[owner] = RecordLimiter()
    now = trio.current_time()
    for key, count in limiter.expire(now):
        what = "from other peers" if key is None else f"{key[2]} from {key[1]}"
        logger.log(logging.WARNING if key is None else key[0],
                   "suppressed %s similar records (%s) in %s s", count, what, limiter.window)
    host = _peer_host(peer)
    name = type(error).__name__
    admission = limiter.admit((level, host, name), now)
    if admission is Admission.SUPPRESS:
        return
    escaped = tuple(escape_text(arg if isinstance(arg, (str, bytes)) else str(arg)) for arg in args)
    extra = {"peer": escape_text(str(peer))}
    if admission is Admission.NOTICE:
        logger.log(level, message + "; further %s records from %s are suppressed for %s s",
                   *escaped, name, host, limiter.window, extra=extra, stacklevel=2)
    elif not traceback:
        logger.log(level, message, *escaped, extra=extra, stacklevel=2)
    else:
        # The record keeps the exception (exc_info, for handlers that want the
        # object), and its text is pre-rendered escaped (exc_text, which every
        # logging.Formatter uses as it is once set): an exception's message
        # may quote what the peer sent.
        filename, lineno, function, _ = logger.findCaller(False, 2)
        record = logger.makeRecord(
            logger.name, level, filename, lineno, message, escaped,
            (type(error), error, error.__traceback__), function, extra,
        )
        record.exc_text = escaped_traceback(error)
        logger.handle(record)


def escaped_traceback(error: BaseException) -> str:
    """``error``'s traceback as :mod:`logging` shows it, with no control character from its messages.

    Each exception's message (and notes) in the chain is escaped with
    :func:`escape_text`, so a message cannot add a line; the lines of the
    traceback are escaped too, which covers what the first step cannot reach.
    """
    exception = tb.TracebackException.from_exception(error)
    _escape_messages(exception, set())
    text = "".join(exception.format()).removesuffix("\n")
    return "\n".join(escape_text(line) for line in text.split("\n"))


def _escape_messages(exception: tb.TracebackException, seen: set[int]) -> None:
    # TracebackException keeps str(exception) in _str (CPython 3.10 to 3.13):
    # escaping it there keeps the traceback's layout; without it, the lines
    # are still escaped one by one by escaped_traceback.
    if id(exception) in seen:
        return
    seen.add(id(exception))
    message = getattr(exception, "_str", None)
    if isinstance(message, str):
        setattr(exception, "_str", escape_text(message))  # noqa: B010
    notes = getattr(exception, "__notes__", None)
    if isinstance(notes, list):
        setattr(exception, "__notes__", [escape_text(str(note)) for note in notes])  # noqa: B010
    nested = getattr(exception, "exceptions", None) or []
    for inner in (exception.__cause__, exception.__context__, *nested):
        if isinstance(inner, tb.TracebackException):
            _escape_messages(inner, seen)


def log_server_stopped(
    logger: logging.Logger, what: str, served: int, peer_endings: Mapping[str, int]
) -> None:
    """The summary a server logs at INFO when it stops: how much it served, what peers ended."""
    ended = sum(peer_endings.values())
    if ended:
        kinds = ", ".join(f"{name}: {count}" for name, count in sorted(peer_endings.items()))
        logger.info("%s stopped after %d; %d ended by the peer (%s)", what, served, ended, kinds)
    else:
        logger.info("%s stopped after %d", what, served)
