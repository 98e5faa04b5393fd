"""Smoke test of the virtual-network benchmark: the documented command runs and reports.

Only the report's shape is checked, never a timing: a ``--quick`` run's numbers
on a shared machine mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import run_benchmark


def test_quick_run_reports_both_worlds_for_every_count(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = run_benchmark("vnet_connections", "--quick", "--json", str(results))
    assert done.returncode == 0, done.stderr
    assert "| virtual / real |" in done.stdout
    rows = json.loads(results.read_text(encoding="utf-8"))["rows"]
    assert [row["connections"] for row in rows] == [20, 40]
    for row in rows:
        medians = row["median_s_per_connection"]
        assert set(medians) == {"real loopback", "virtual network"}
        assert all(value > 0 for value in medians.values())
        assert row["virtual_over_real"] == medians["virtual network"] / medians["real loopback"]
    assert "| idle connections |" in done.stdout
    idle_rows = json.loads(results.read_text(encoding="utf-8"))["idle_rows"]
    assert [row["idle"] for row in idle_rows] == [0, 20]
    for row in idle_rows:
        medians = row["median_s_per_round_trip"]
        assert set(medians) == {"real loopback", "virtual network"}
        assert all(value > 0 for value in medians.values())
