"""Cancellation chaos: 200 clients and an echo server, cancelled at random on both sides.

The CI form of ``python -m tests.soak`` (see docs/reliability.rst) runs the
full 100,000 messages over real loopback TCP; smaller runs cover the two other
write paths of MessageChannel: through an idle-tracking stream (``idle_timeout``)
and over TLS, where partial writes cannot be seen and whole writes are shielded.
The scenario is ``tests/soak/chaos.py``.
"""

from __future__ import annotations

import pytest

from tests.soak.chaos import ChaosReport, run_chaos
from tests.soak.common import tls_contexts

CLIENTS = 200
MESSAGES = 100_000


def assert_the_contract_held(report: ChaosReport, messages: int) -> None:
    # Per connection: the server received exactly what the client's send()
    # returned for, in order, and the client exactly what the handler's did;
    # no corrupted frame; no task or file descriptor left; nothing logged.
    assert report.problems == []
    assert report.corrupted == 0
    # No frame needed the channel's abort: cancelled mid-frame, every send()
    # finished its frame well within abort_timeout (10 s).
    assert report.broken_connections == 0
    assert report.slowest_send_after_cancel < 5.0
    assert report.tasks_after == report.tasks_before
    assert report.fds_after == report.fds_before
    # The run really was chaotic: every kind of cancellation happened often, and
    # both outcomes of a cancelled send() (nothing sent / all sent) occurred.
    for cancelled in (
        report.cancelled_client_sends,
        report.cancelled_server_sends,
        report.cancelled_client_receives,
        report.cancelled_server_receives,
    ):
        assert cancelled > messages // 50
    assert report.sends_finished_after_cancel > messages // 1000
    assert report.receives_cancelled_with_bytes_buffered > messages // 10_000
    assert messages // 4 < report.delivered < messages
    assert report.delivered // 4 < report.echoed < report.delivered


@pytest.mark.slow
async def test_random_cancellations_on_both_sides_lose_duplicate_reorder_and_corrupt_nothing(
    no_fd_leak: None,
) -> None:
    report = await run_chaos(clients=CLIENTS, messages=MESSAGES, seed=8, time_limit=150)
    assert_the_contract_held(report, MESSAGES)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("clients", "messages", "tls", "idle_timeout"),
    [(200, 20_000, False, 3600.0), (100, 10_000, True, 3600.0)],
    ids=["idle-tracking stream", "TLS"],
)
async def test_the_other_write_paths_hold_under_the_same_chaos(
    clients: int, messages: int, tls: bool, idle_timeout: float, no_fd_leak: None
) -> None:
    report = await run_chaos(
        clients=clients, messages=messages, seed=8, time_limit=100,
        tls=tls_contexts() if tls else None, idle_timeout=idle_timeout,
    )
    assert_the_contract_held(report, messages)
