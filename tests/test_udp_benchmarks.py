"""Smoke tests of the UDP benchmarks: the documented commands run and report.

Only the shape of the reports is checked, never a number: ``--quick`` runs on a
shared machine mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import run_benchmark


def table_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("| ")][2:]


def test_the_request_benchmark_compares_trionet_with_raw_trio_and_asyncio(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = run_benchmark("udp_request", "--quick", "--json", str(results))
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row.split("|")[1].strip() for row in rows] == [
        "request() -> plain echo", "request() -> serve_udp",
    ]
    assert all("n/a" not in row.split("|")[3] for row in rows)
    assert any(line.startswith(("PASS: trionet request() >= 0.85x raw trio",
                                "FAIL: trionet request() >= 0.85x raw trio"))
               for line in done.stdout.splitlines())
    report = json.loads(results.read_text(encoding="utf-8"))
    for row in report["rows"]:
        assert {"raw trio", "trionet", "asyncio"} <= set(row["results"])
        assert all(cell["median"] > 0 for cell in row["results"].values())


def test_the_blast_benchmark_reports_what_each_receiver_kept() -> None:
    done = run_benchmark("udp_blast", "--quick")
    assert done.returncode == 0, done.stderr
    names = [row.split("|")[1].strip() for row in table_rows(done.stdout)]
    assert names == [
        "plain thread (no event loop)", "trio recvfrom loop", "trionet receive()",
        "trionet receive() + receive_nowait()", "... receive_buffer_size=4 MiB",
    ]
    assert "idle meanwhile" in done.stdout
    assert any(line.startswith(("PASS:", "FAIL:")) and ">= 99%" in line
               for line in done.stdout.splitlines())


def test_the_server_benchmark_floods_three_servers_from_another_process() -> None:
    done = run_benchmark("udp_server", "--quick")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row.split("|")[1].strip() for row in rows] == ["blocking", "plain trio", "serve_udp"]
    assert all(float(row.split("|")[2].strip().rstrip("k")) > 0 for row in rows)
    assert any(line.startswith(("PASS: serve_udp", "FAIL: serve_udp"))
               for line in done.stdout.splitlines())


def test_benchmarks_refuse_fewer_than_three_runs() -> None:
    for module in ("udp_request", "udp_blast", "udp_server"):
        done = run_benchmark(module, "--runs", "2")
        assert done.returncode == 2
        assert "--runs must be at least 3" in done.stderr
