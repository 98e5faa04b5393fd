"""Thousands of connections to one server, then a graceful shutdown within its grace.

The scenario is ``tests/soak/load.py``; ``python -m tests.soak --only load``
runs it at full size with its figures. Real loopback sockets and the real clock.
"""

from __future__ import annotations

from tests.soak.load import run_load


async def test_two_thousand_echoing_connections_are_all_served_and_shut_down_within_the_grace() -> None:
    report = await run_load(connections=2000, messages=5, busy=20, busy_seconds=0.3, grace=3.0)
    assert report.problems == []
    assert report.echoed == 2000 * 5
    assert report.busy_answered == 20
    assert report.shutdown_seconds <= 3.0 + 1.0
    assert report.active_after == 0
    assert report.closed_events == report.accepted == 2000
    assert (report.fds_before, report.tasks_before) == (report.fds_after, report.tasks_after)
