"""``serve_udp`` behind a proxy that drops 30 % and duplicates 10 % (real loopback).

The scenario is ``tests/soak/udp_proxy.py``; ``python -m tests.soak
--only udp-proxy`` runs it with its figures.
"""

from __future__ import annotations

from tests.soak.udp_proxy import run_udp_behind_proxy


async def test_two_thousand_requests_behind_a_lossy_duplicating_proxy_are_each_handled_once() -> None:
    report = await run_udp_behind_proxy(requests=2000, clients=50, loss=0.3, duplicate=0.1, seed=3)
    assert report.problems == []
    assert report.answered == report.handler_runs == 2000
    assert report.handled_twice == 0
    # The proxy really lost and duplicated, and the clients really retransmitted.
    assert report.dropped > 0.2 * report.forwarded
    assert report.duplicated > 0.05 * report.forwarded
    assert report.retransmissions > 500
    assert (report.fds_before, report.tasks_before) == (report.fds_after, report.tasks_after)


async def test_without_request_key_the_same_proxy_runs_handlers_twice() -> None:
    # The control for the test above: its check can fail.
    report = await run_udp_behind_proxy(requests=300, clients=10, seed=3, deduplicate=False)
    assert report.handled_twice > 10
    assert any("more than once" in problem for problem in report.problems)
