"""Peer-controlled text never reaches a log record or an event string raw (issue 15 item 5).

The tests below drive the paths where peer text used to leak (a Unix client's
bound name, a handler's exception quoting what the peer sent) and the per-peer
rate limit on the tracebacks that a flood of bad datagrams used to write. The
escaping function itself and the record limiter are tested in
``test_sansio_internals.py``, the CLI's print mode in ``test_cli.py``.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from types import MappingProxyType

import pytest
import trio
import trio.testing

from trionet import (
    Datagram,
    Event,
    EventLog,
    Lines,
    TCPConnection,
    UnixConnection,
    open_tcp_server,
    open_udp_endpoint,
    serve_udp,
    serve_unix,
)
from trionet.testing import VirtualNetwork

from .peer_text import HOSTILE_NAME, unsafe_chars

TIMEOUT = 30


# ---------------------------------------------------------------------- events


def test_event_strings_and_timelines_escape_peer_text_but_keep_the_raw_details() -> None:
    log = EventLog()
    log(Event("unix.accept", 0.0, MappingProxyType({"peer": HOSTILE_NAME, "error": ValueError("\r\x1b[2K")})))
    log(Event("unix.\x1b[2K", 0.001, MappingProxyType({"\nkey": b"bytes"})))
    for text in (str(log.events[0]), str(log.events[1]), log.format_timeline()):
        assert unsafe_chars(text.replace("\n", "")) == []
    assert len(log.format_timeline().splitlines()) == 2
    assert log.events[0].details["peer"] == HOSTILE_NAME


# ------------------------------------------------------------------ Unix peers


@pytest.fixture
def short_dir() -> Iterator[str]:
    # Not tmp_path: socket paths are limited to about 100 bytes.
    directory = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class Records(logging.Handler):
    """Every record of the trionet logger, and the bytes a UTF-8 log file would get."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.file = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
        self.stream = logging.StreamHandler(self.file)
        self.stream.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(peer)s: %(message)s"))
        self.failed = 0
        self.stream.handleError = self._count_failure  # type: ignore[method-assign]

    def _count_failure(self, record: logging.LogRecord) -> None:
        self.failed += 1

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " server listening on " in message or " stopped after " in message:
            return  # a server's start and stop, not what these tests count
        self.records.append(record)
        if not hasattr(record, "peer"):
            record.peer = "-"
        self.stream.emit(record)

    def written(self) -> bytes:
        self.file.flush()
        buffer = self.file.buffer
        assert isinstance(buffer, io.BytesIO)
        return buffer.getvalue()


@pytest.fixture
def trionet_log() -> Iterator[Records]:
    logger = logging.getLogger("trionet")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# (name, what the peer's name shows as: escape_text's rendering, spelled out)
HOSTILE_NAMES = [
    (HOSTILE_NAME, "evil\\nCRITICAL forged line \\x1b[2K\\x1b]0;pwned\\x07\\u202e"),
    (os.fsdecode(b"not-utf8-\xff\xfe\x1b[2K"), "not-utf8-\\udcff\\udcfe\\x1b[2K"),
]


@pytest.mark.parametrize(("name", "shown"), HOSTILE_NAMES, ids=["controls", "not-utf-8"])
async def test_a_unix_clients_hostile_name_reaches_no_log_record_or_event_raw(
    name: str, shown: str, short_dir: str, trionet_log: Records
) -> None:
    server_path = os.path.join(short_dir, "server.sock")
    client_path = os.path.join(short_dir, name)
    seen: list[str] = []
    events = EventLog()
    closed = trio.Event()

    def observe(event: Event) -> None:
        events(event)
        if event.kind == "unix.closed":
            closed.set()

    async def refuse(conn: UnixConnection) -> None:
        seen.append(conn.peer)
        # A handler that puts the peer's raw name in its exception's message.
        raise ValueError(f"refusing {conn.socket.getpeername()}")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(serve_unix, refuse, server_path, observer=observe))
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                await client.bind(client_path)
                await client.connect(server_path)
                await closed.wait()
            nursery.cancel_scope.cancel()

    assert seen == [os.path.join(short_dir, shown)]  # the directory is printable: unchanged
    assert unsafe_chars(seen[0]) == []
    assert trionet_log.records, "the handler error was not logged"
    for record in trionet_log.records:
        message = record.getMessage()
        assert unsafe_chars(message) == [], message
        assert unsafe_chars(str(getattr(record, "peer", ""))) == []
    assert trionet_log.failed == 0  # nothing vanished from the UTF-8 log file
    assert shown.encode() in trionet_log.written()
    assert events.of_kind("unix.handler_error")
    for event in events:
        assert unsafe_chars(str(event)) == [], str(event)
    timeline = events.format_timeline()
    assert unsafe_chars(timeline.replace("\n", "")) == []
    assert len(timeline.splitlines()) == len(events)


# --------------------------------------------------------------- UDP flood


DATAGRAMS = 1000
LOG_BOUND = 10 * 1024


async def test_a_flood_of_bad_datagrams_writes_bounded_log_bytes_and_counts_every_error(
    autojump_clock: trio.testing.MockClock, trionet_log: Records
) -> None:
    net = VirtualNetwork(seed=0)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    errors = 0
    handled = trio.lowlevel.ParkingLot()

    def observe(event: Event) -> None:
        nonlocal errors
        if event.kind == "udp.handler_error":
            errors += 1
            handled.unpark_all()

    async def fragile(datagram: Datagram) -> bytes:
        return bytes([256 // datagram.data[0]])  # a 1-byte b"\0" raises ZeroDivisionError

    with net.install(), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                server = await nursery.start(functools.partial(serve_udp, fragile, 7, observer=observe))
            with net.host("client"):
                async with open_udp_endpoint() as ep:
                    for sent in range(1, DATAGRAMS + 1):
                        await ep.send(b"\0", "server:7")
                        while errors < sent:
                            await handled.park()
            assert server.statistics().handler_errors == DATAGRAMS
            nursery.cancel_scope.cancel()
    written = trionet_log.written()
    assert len(written) < LOG_BOUND, f"{len(written)} bytes of log for {DATAGRAMS} bad datagrams"
    assert written.count(b"Traceback") >= 1  # the first errors still come with their traceback
    assert b"suppressed" in written
    print(f"{len(written)} bytes of log for {DATAGRAMS} bad datagrams", file=sys.stderr)


async def test_the_suppressed_count_is_reported_when_the_window_ends(
    autojump_clock: trio.testing.MockClock, trionet_log: Records
) -> None:
    net = VirtualNetwork(seed=0)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    errors = 0
    handled = trio.lowlevel.ParkingLot()

    def observe(event: Event) -> None:
        nonlocal errors
        if event.kind == "udp.handler_error":
            errors += 1
            handled.unpark_all()

    async def bad(datagram: Datagram) -> bytes:
        raise KeyError(datagram.data)

    with net.install(), trio.fail_after(600):  # virtual time, past the limiter's 60 s window
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                await nursery.start(functools.partial(serve_udp, bad, 7, observer=observe))
            with net.host("client"):
                async with open_udp_endpoint() as ep:
                    for sent in range(1, 21):
                        if sent == 20:
                            autojump_clock.jump(61)  # past the limiter's window
                        await ep.send(b"x", "server:7")
                        while errors < sent:
                            await handled.park()
            nursery.cancel_scope.cancel()
    messages = [record.getMessage() for record in trionet_log.records]
    summaries = [m for m in messages if m.startswith("suppressed")]
    # 19 errors in the first window: the first in full, a notice, 17 counted.
    assert summaries == ["suppressed 17 similar records (KeyError from 10.0.0.2) in 60.0 s"]
    with_traceback = [r for r in trionet_log.records if r.exc_info is not None]
    assert len(with_traceback) == 2  # the first of each window (issue 19.1: one traceback)
    assert len(messages) == 1 + 1 + 1 + 1  # first, notice, summary, the next window's first


# ------------------------------------------------------------------ TCP server


async def test_tcp_handler_errors_are_rate_limited_per_peer_and_every_one_is_counted(
    autojump_clock: trio.testing.MockClock, trionet_log: Records
) -> None:
    net = VirtualNetwork(seed=0)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    closed = 0
    done = trio.lowlevel.ParkingLot()

    def observe(event: Event) -> None:
        nonlocal closed
        if event.kind == "tcp.closed":
            closed += 1
            done.unpark_all()

    async def fragile(conn: TCPConnection) -> None:
        line = await conn.channel.receive()
        raise RuntimeError(f"cannot parse {line.decode()}")  # the peer's text, raw

    with net.install(), trio.fail_after(TIMEOUT), net.host("server"):
        async with open_tcp_server(fragile, 7, codec=Lines(), observer=observe) as server:
            with net.host("client"):
                for connected in range(1, 51):
                    stream = await trio.open_tcp_stream("10.0.0.1", 7)
                    async with stream:
                        await stream.send_all(b"forged\r\x1b[2K\x1b]0;title\x07\n")
                        while closed < connected:
                            await done.park()
            assert server.statistics().handler_errors == 50
    records = trionet_log.records
    # 50 identical errors: one traceback, then one line saying the rest are
    # counted (issue 19.1); the count comes with the window's summary.
    assert [r.levelno for r in records] == [logging.ERROR] * 2
    assert sum(r.exc_info is not None for r in records) == 1
    assert "further RuntimeError records from 10.0.0.2 are suppressed" in records[-1].getMessage()
    written = trionet_log.written().decode()
    assert "cannot parse forged\\r\\x1b[2K\\x1b]0;title\\x07" in written  # the traceback, escaped
    assert unsafe_chars(written.replace("\n", "")) == []


@pytest.mark.net(latency=0.001)
async def test_a_traceback_shows_every_message_in_its_chain_escaped_on_its_line(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, trionet_log: Records
) -> None:
    closed = trio.Event()

    def observe(event: Event) -> None:
        if event.kind == "tcp.closed":
            closed.set()

    async def fragile(conn: TCPConnection) -> None:
        try:
            raise ValueError("inner\nCRITICAL forged")
        except ValueError as inner:
            raise KeyError("outer\x1b[2K") from inner

    with trio.fail_after(TIMEOUT), net.host("server"):
        async with open_tcp_server(fragile, 7, observer=observe):
            with net.host("client"):
                async with await trio.open_tcp_stream("10.0.0.1", 7):
                    await closed.wait()
    (record,) = [r for r in trionet_log.records if r.exc_info is not None]
    text = record.exc_text  # what every logging.Formatter writes for the exception
    assert text is not None
    assert "ValueError: inner\\nCRITICAL forged" in text
    assert "KeyError: 'outer\\x1b[2K'" in text
    assert not any(line.startswith("CRITICAL") for line in text.split("\n"))
    assert unsafe_chars(text.replace("\n", "")) == []
    assert "ValueError: inner\\nCRITICAL forged" in trionet_log.written().decode()
