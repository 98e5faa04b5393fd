"""The hook through which a MessageChannel reports progress: ActivityTracker.

A server's idle timer must know when bytes last moved on each connection. The
channel does not know the timer, nor how it tracks time: it is handed an
:class:`ActivityTracker` (``MessageChannel(..., activity=...)``) and updates
its two attributes as bytes move. The server's wrappers (``idle.py``) are such
trackers. Under TLS the tracker may also follow the TLS records below the
:class:`trio.SSLStream` (a :class:`RecordClock`): the channel then sets the
deadlines that bound a frame whose record has started, and a wait that would
pass one raises :exc:`FrameLate`.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["ActivityTracker", "FrameLate", "RecordClock"]


class ActivityTracker(Protocol):
    """What a :class:`~trionet.MessageChannel` updates as its bytes move.

    Pass one as ``MessageChannel(stream, codec, activity=tracker)`` to learn
    when the channel last made progress, as trionet's servers do for their
    ``idle_timeout``. Any object with these two attributes will do.

    Attributes:
      last_activity: The channel sets it to :func:`trio.current_time` when
          bytes of a message arrive and when a send starts and finishes (a send
          stuck because the peer reads nothing is not progress).
      sending: The channel adds 1 while a send is in progress and takes it
          away when it ends: non-zero at an idle timeout means the peer stopped
          reading.
    """

    last_activity: float
    sending: int


class RecordClock(ActivityTracker, Protocol):
    """An :class:`ActivityTracker` that follows the TLS records under a :class:`trio.SSLStream`.

    A channel over ``SSLStream(clock, ...)`` given ``activity=clock`` reports
    application bytes as progress, and bounds a frame from the first byte of
    the TLS record that carries it (a record trickled a byte at a time reaches
    nobody): ``partial_since`` says when the incomplete record began;
    ``frame_deadline`` and ``arm_after`` are set by the channel while it
    receives; ``inner`` is the stream under the records.
    """

    inner: trio.abc.Stream
    partial_since: float | None
    frame_deadline: float
    arm_after: float | None


class FrameLate(Exception):
    """Raised by a :class:`RecordClock`'s ``receive_some`` when a wait would pass ``frame_deadline``.

    It crosses the :class:`trio.SSLStream` above (whose receiving side stays
    usable, as after a cancellation) and the channel turns it into
    :exc:`~trionet.FrameTimeout`.
    """
