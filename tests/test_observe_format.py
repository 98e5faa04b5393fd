"""EventLog timelines: rounded figures and a kind column that fits every kind (issue 14 item 9)."""

from __future__ import annotations

from types import MappingProxyType

from trionet import Event, EventLog


def _log(*events: tuple[str, float, dict[str, object]]) -> EventLog:
    log = EventLog()
    for kind, time, details in events:
        log(Event(kind, time, MappingProxyType(details)))
    return log


def test_float_details_are_rounded_not_printed_with_float_noise() -> None:
    log = _log(("udp.give_up", 0.0, {"attempts": 3, "elapsed": 0.1 * 7}))
    assert 0.1 * 7 == 0.7000000000000001  # the noise the timeline must not show
    assert log.format_timeline() == "      0.0 ms  udp.give_up            attempts=3 elapsed=0.7"
    assert str(log.events[0]) == "    0.000s  udp.give_up            attempts=3 elapsed=0.7"


def test_a_long_kind_widens_the_column_for_every_line() -> None:
    long_kind = "server.connection_shed_by_a_limit"
    log = _log(("tcp.accepted", 0.0, {"peer": "127.0.0.1:5"}), (long_kind, 0.0201, {"reason": "limit"}))
    lines = log.format_timeline().splitlines()
    assert lines == [
        f"      0.0 ms  {'tcp.accepted':<{len(long_kind)}} peer=127.0.0.1:5",
        f"     20.1 ms  {long_kind} reason=limit",
    ]
    # The details start in the same column on every line.
    assert lines[0].index("peer=") == lines[1].index("reason=")
