"""Events for long-running servers: EventLog(maxlen=...), and LoggingObserver into logging."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

import trionet
from trionet import Event, EventLog, LoggingObserver, TCPConnection
from trionet.testing import VirtualNetwork


def event(kind: str, **details: object) -> Event:
    return Event(kind, 1.5, details)


def test_an_event_log_with_maxlen_keeps_the_latest_events() -> None:
    log = EventLog(maxlen=3)
    for number in range(10):
        log(event("udp.transmit", attempt=number))
    assert [e.details["attempt"] for e in log] == [7, 8, 9]
    assert len(log) == 3
    assert log.format_timeline().count("\n") == 2
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="maxlen"):
            EventLog(maxlen=bad)  # type: ignore[arg-type]


def test_the_logging_observer_logs_each_event_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet.events")
    observer = LoggingObserver(kinds=("tcp.",), level=lambda kind: (
        logging.WARNING if kind.endswith("handler_error") else logging.INFO))
    observer(event("tcp.accept", peer=trionet.Address("192.0.2.1", 4242), active=1))
    observer(event("tcp.handler_error", peer="x", error=ValueError("bad\x1b[31m")))
    observer(event("udp.transmit", attempt=1))  # not a tcp. kind: left out
    first, second = caplog.records
    assert (first.name, first.levelno) == ("trionet.events", logging.INFO)
    assert first.getMessage() == "tcp.accept peer=192.0.2.1:4242 active=1"
    assert first.trionet_event == "tcp.accept"  # type: ignore[attr-defined]
    assert first.trionet_details == {"peer": "192.0.2.1:4242", "active": "1"}  # type: ignore[attr-defined]
    assert second.levelno == logging.WARNING
    assert "\x1b" not in second.getMessage()  # a peer's text is escaped


@pytest.mark.net(default_host="server")
async def test_a_server_observed_through_logging(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trionet.events")

    async def hello(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"hi")

    async with trionet.open_tcp_server(hello, 80, observer=LoggingObserver(), shutdown_grace=0):
        with net.host("client"):
            stream = await trio.open_tcp_stream("10.0.0.1", 80)
            assert await stream.receive_some() == b"hi"
            await stream.aclose()
    kinds = [record.trionet_event for record in caplog.records]  # type: ignore[attr-defined]
    assert kinds[:3] == ["tcp.listening", "tcp.accept", "tcp.closed"]
    assert kinds[-1] == "tcp.shutdown.done"
