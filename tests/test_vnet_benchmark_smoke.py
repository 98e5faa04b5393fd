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
    assert "| connections |" in done.stdout
    assert "| idle connections |" in done.stdout
    report = json.loads(results.read_text(encoding="utf-8"))
    tables = [("rows", "connections", [20, 40], "connection"), ("idle_rows", "idle", [0, 20], "round_trip")]
    for table, size, sizes, unit in tables:
        rows = report[table]
        assert [row[size] for row in rows] == sizes
        for row in rows:
            medians = row[f"median_s_per_{unit}"]
            assert set(medians) == {"real loopback", "virtual network"}
            assert all(value > 0 for value in medians.values())
            assert row["virtual_over_real"] == medians["virtual network"] / medians["real loopback"]
