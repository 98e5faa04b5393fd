"""Smoke test of the TCP accept benchmark: the documented command runs and reports.

Only the shape of the report is checked, never a number: a ``--quick`` run on a
shared machine measures nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import run_benchmark

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_quick_run_prints_the_table_and_writes_every_sample(tmp_path: Path) -> None:
    samples = tmp_path / "samples.json"
    result = run_benchmark("tcp_accept", "--quick", "--json", str(samples))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TCP accept benchmark over loopback, median of 1 run (--quick")
    header = next(line for line in lines if line.startswith("| measurement"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "measurement", "trio.serve_tcp", "trionet", "trionet/trio", "target",
    ]
    assert any(line.startswith("| accepted connections/s") for line in lines)
    assert any(line.startswith("| accept latency with 50 busy connections") for line in lines)
    for config in ("trionet", "+ codec", "+ idle_timeout", "+ idle + frame timeouts"):
        assert any(line.startswith(f"| memory per idle connection, 100 connections, {config} ")
                   for line in lines), config
    assert lines[-1].startswith("Targets ")
    data = json.loads(samples.read_text())
    assert set(data["accept_rates"]) == {"trio.serve_tcp", "trionet"}
    assert all(rate > 0 for rates in data["accept_rates"].values() for rate in rates)
    assert all(0 < latency < 30 for values in data["accept_latencies"].values()
               for latency in values)
    assert set(data["memory_per_connection"]) == {
        "trio.serve_tcp 100", "trionet 100", "trionet + codec 100", "trionet + idle_timeout 100",
        "trionet + idle + frame timeouts 100",
    }


def test_fewer_than_three_runs_is_refused_outside_quick_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.tcp_accept", "--runs", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "at least 3" in result.stderr
