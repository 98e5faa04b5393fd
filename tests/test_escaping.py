"""Peer-controlled text never reaches a log record, an event string or the CLI raw (issue 15 item 5).

escape_text is the one function that makes peer text displayable; the tests
below drive the paths where peer text used to leak (a Unix client's bound
name, bytes printed by ``serve print``) and the per-peer rate limit on the
tracebacks that a flood of bad datagrams used to write.

Imports private ``escape_text``, ``RecordLimiter``, ``escaped_traceback`` and
``trionet._cli``: the escaping and log-limiting helpers are internal.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import unicodedata
from collections.abc import Iterator
from types import MappingProxyType

import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from tests.processes import CLI, running
from trionet import (
    Address,
    Datagram,
    Event,
    EventLog,
    LengthPrefixed,
    Lines,
    TCPConnection,
    UnixConnection,
    open_tcp_server,
    open_udp_endpoint,
    serve_udp,
    serve_unix,
)
from trionet._adapters.observe import escaped_traceback
from trionet._cli import commands as _cli_commands
from trionet._sansio.escape import escape_text
from trionet._sansio.loglimit import Admission, RecordLimiter
from trionet.testing import VirtualNetwork

TIMEOUT = 30
HOSTILE_NAME = "evil\nCRITICAL forged line \x1b[2K\x1b]0;pwned\x07\u202e"
# What a peer uses against a terminal or a log: line breaks, CSI and OSC
# sequences, a C1 CSI (U+009B), bidi overrides, separators, surrogates.
SPECIALS = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u202e",
            "\u2066", "\u200b", "\ufeff", "\udcff", "\ud800", "\\"]
ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates, which st.characters omits
    st.sampled_from(SPECIALS),
)
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def unsafe_chars(text: str) -> list[str]:
    """The characters of ``text`` that must not reach a log or a terminal."""
    return [char for char in text
            if unicodedata.category(char) in ("Cc", "Cs", "Cf", "Zl", "Zp") or char in BIDI_CONTROLS]


_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[ntr])")


def unescape_text(text: str) -> str:
    """The inverse of escape_text on text without backslashes (a test oracle)."""
    named = {"n": "\n", "t": "\t", "r": "\r"}
    return _ESCAPE.sub(lambda m: named.get(m[1]) or chr(int(m[1][1:], 16)), text)


def unescape_bytes(text: str) -> bytes:
    """The inverse of escape_text on bytes without backslashes."""
    out = bytearray()
    for piece in re.split(r"(\\x[0-9a-f]{2})", text):
        if piece.startswith("\\x"):
            out.append(int(piece[2:], 16))
        else:
            out += unescape_text(piece).encode("utf-8")
    return bytes(out)


# ------------------------------------------------------------------ escape_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (HOSTILE_NAME, "evil\\nCRITICAL forged line \\x1b[2K\\x1b]0;pwned\\x07\\u202e"),
        ("a\r\tb\x7f\x85", "a\\r\\tb\\x7f\\x85"),
        ("name-\udcff", "name-\\udcff"),
        ("\u2066rtl\u2069 \u2028", "\\u2066rtl\\u2069 \\u2028"),
        ("\U000e0001", "\\U000e0001"),
        ("Grüße, 東京, Ελλάδα, 🙂 C:\\dir", "Grüße, 東京, Ελλάδα, 🙂 C:\\dir"),
        (b"ok\n\x1b[2K\xff\xc3", "ok\\n\\x1b[2K\\xff\\xc3"),
        (b"\xc2\x85 \x85 caf\xc3\xa9", "\\u0085 \\x85 café"),  # decoded U+0085 vs the raw byte
        (b"\x00abstract", "\\x00abstract"),
    ],
)
def test_control_and_invisible_characters_are_shown_as_escapes(raw: str | bytes, shown: str) -> None:
    assert escape_text(raw) == shown


def test_escaping_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        escape_text(42)  # type: ignore[arg-type]


@given(st.text(ANY_CHAR))
@example(HOSTILE_NAME)
def test_escaped_text_is_printable_and_has_no_control_format_or_surrogate_character(text: str) -> None:
    shown = escape_text(text)
    assert shown.isprintable()
    assert unsafe_chars(shown) == []
    shown.encode("utf-8")  # no lone surrogate: a UTF-8 log file takes it


@given(st.text(st.characters(exclude_categories=())).filter(str.isprintable))
def test_printable_text_passes_unchanged(text: str) -> None:
    assert escape_text(text) is text or escape_text(text) == text


@given(st.text(ANY_CHAR).map(lambda text: text.replace("\\", "")))
def test_distinct_texts_stay_distinguishable(text: str) -> None:
    # The backslash passes unchanged, so only text without one can be decoded;
    # on that text the escaping is injective.
    assert unescape_text(escape_text(text)) == text


@given(st.binary())
@example(b"\xc2\x85\x85")
def test_bytes_are_shown_printable_and_distinguishable(data: bytes) -> None:
    shown = escape_text(data)
    assert shown.isprintable()
    if b"\\" not in data:
        assert unescape_bytes(shown) == data


# ---------------------------------------------------------------- RecordLimiter


def test_the_limiter_lets_a_burst_through_then_notes_once_and_reports_the_count_later() -> None:
    limiter: RecordLimiter[str] = RecordLimiter(burst=2, window=10.0)
    got = [limiter.admit("a", float(t)) for t in range(5)]
    assert got == [Admission.LOG, Admission.LOG, Admission.NOTICE, Admission.SUPPRESS,
                   Admission.SUPPRESS]
    assert limiter.admit("b", 5.0) is Admission.LOG  # another key has its own budget
    assert limiter.expire(9.9) == []
    assert limiter.expire(10.0) == [("a", 2)]
    assert limiter.admit("a", 10.0) is Admission.LOG
    assert limiter.expire(15.0) == []  # "b" held nothing back


def test_the_limiter_bounds_its_keys_and_new_keys_share_one_overflow_window() -> None:
    limiter: RecordLimiter[int] = RecordLimiter(burst=1, window=10.0, max_keys=3)
    admitted = [limiter.admit(key, 0.0) for key in range(1000)]
    assert admitted.count(Admission.LOG) == 4  # three keys and the overflow window
    assert admitted.count(Admission.NOTICE) == 1
    assert sorted(limiter.expire(10.0), key=str) == [(None, 995)]


@pytest.mark.parametrize("kwargs", [{"burst": 0}, {"window": 0.0}, {"window": float("nan")},
                                    {"max_keys": 0}, {"burst": True}])
def test_the_limiter_rejects_settings_out_of_range(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        RecordLimiter(**kwargs)  # type: ignore[arg-type]


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


@pytest.mark.parametrize("name", [HOSTILE_NAME, os.fsdecode(b"not-utf8-\xff\xfe\x1b[2K")],
                         ids=["controls", "not-utf-8"])
async def test_a_unix_clients_hostile_name_reaches_no_log_record_or_event_raw(
    name: str, short_dir: str, trionet_log: Records
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

    assert seen == [escape_text(client_path)]
    assert unsafe_chars(seen[0]) == []
    assert trionet_log.records, "the handler error was not logged"
    for record in trionet_log.records:
        message = record.getMessage()
        assert unsafe_chars(message) == [], message
        assert unsafe_chars(str(getattr(record, "peer", ""))) == []
    assert trionet_log.failed == 0  # nothing vanished from the UTF-8 log file
    assert escape_text(name).encode() in trionet_log.written()
    assert events.of_kind("unix.handler_error")
    for event in events:
        assert unsafe_chars(str(event)) == [], str(event)
    timeline = events.format_timeline()
    assert unsafe_chars(timeline.replace("\n", "")) == []
    assert len(timeline.splitlines()) == len(events)


# ------------------------------------------------------------------------ CLI


def test_udp_print_mode_prints_each_message_on_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(mode="print")
    peer = Address("127.0.0.1", 4444)

    async def send(data: bytes, address: Address) -> None:
        raise AssertionError("print mode sends nothing")

    hostile = b"hi\r\x1b[2K\x1b]0;owned\x07\n127.0.0.1:4444 connected\xc2\x9b31m\xff\xe2\x80\xae"
    trio.run(_cli_commands._answer, args, LengthPrefixed(), send, LengthPrefixed().encode(hostile), peer)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert unsafe_chars(out[:-1]) == []
    assert out == f"127.0.0.1:4444: {escape_text(hostile)}\n"


async def test_tcp_print_mode_lets_no_peer_forge_a_line_or_reach_the_terminal() -> None:
    hostile = (b"hello\r\x1b[2K\x1b]0;window title\x07\n127.0.0.1:4444 connected\n"
               b"\xc2\x9b2J \xe2\x80\xae \xff")
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "print", "--codec", "length", "--host", "127.0.0.1",
                            "--port", "0", "--exit-after", "1"]) as server:
            listening = await server.stdout.until("listening on")
            port = int(listening.split()[2].rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(LengthPrefixed().encode(hostile))
                await stream.send_eof()
                assert await stream.receive_some() == b""
            assert server.process.stdout is not None
            raw = b""
            while chunk := await server.process.stdout.receive_some():
                raw += chunk
            assert await server.process.wait() == 0
    text = raw.decode("utf-8")  # strict: the output is valid UTF-8
    lines = text.split("\n")
    assert lines[-1] == ""
    assert all(unsafe_chars(line) == [] for line in lines)
    client = lines[0].split()[0]
    assert lines[:-1] == [
        f"{client} connected",
        f"{client}: {escape_text(hostile)}",
        f"{client} disconnected",
        "stopped after 1 connection(s)",
    ]


def test_a_described_error_is_one_escaped_line() -> None:
    assert _cli_commands.describe(ValueError("bad\x1b[2K\r\nframe")) == "bad\\x1b[2K frame"


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
    assert summaries == ["suppressed 13 similar records (KeyError from 10.0.0.2) in 60.0 s"]
    with_traceback = [r for r in trionet_log.records if r.exc_info is not None]
    assert len(with_traceback) == 6  # 5 in the first window, 1 in the next
    assert len(messages) == 5 + 1 + 1 + 1  # burst, notice, summary, the next window's first


async def test_lines_print_mode_escapes_too(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(mode="print")

    async def send(data: bytes, address: Address) -> None:
        raise AssertionError("print mode sends nothing")

    await _cli_commands._answer(args, Lines(), send, b"a\x1b[31m\nb\r", Address("::1", 5))
    assert capsys.readouterr().out == "[::1]:5: a\\x1b[31m\n[::1]:5: b\\r\n"


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
    assert [r.levelno for r in records] == [logging.ERROR] * 6
    assert sum(r.exc_info is not None for r in records) == 5
    assert "further RuntimeError records from 10.0.0.2 are suppressed" in records[-1].getMessage()
    written = trionet_log.written().decode()
    assert "cannot parse forged\\r\\x1b[2K\\x1b]0;title\\x07" in written  # the traceback, escaped
    assert unsafe_chars(written.replace("\n", "")) == []


def test_a_traceback_shows_every_message_in_its_chain_escaped_on_its_line() -> None:
    try:
        try:
            raise ValueError("inner\nCRITICAL forged")
        except ValueError as inner:
            raise KeyError("outer\x1b[2K") from inner
    except KeyError as exc:
        text = escaped_traceback(exc)
    assert "ValueError: inner\\nCRITICAL forged" in text
    assert "KeyError: 'outer\\x1b[2K'" in text
    assert not any(line.startswith("CRITICAL") for line in text.split("\n"))
    assert unsafe_chars(text.replace("\n", "")) == []
