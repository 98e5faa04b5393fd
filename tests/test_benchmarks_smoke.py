"""Smoke test of the framed-echo benchmark: the documented command runs and reports.

Only the shape of the report is checked, never a timing: the numbers of a
``--quick`` run on a shared machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.processes import run_benchmark as run_module

SCENARIOS = {
    "ping-pong": "ping-pong, receive() per frame (round trips/s)",
    "streaming-each": "streaming, receive() per frame (messages/s)",
    "streaming": "streaming, receive_many() (messages/s)",
    "streaming-batched": "streaming, send_many() 256 per write (messages/s)",
}
PAYLOADS = {16: "16 B", 256: "256 B", 4096: "4 KiB", 65536: "64 KiB"}


def run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("framed_echo", *args)


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_run_reports_every_scenario_and_payload_for_every_implementation(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.json"
    done = run_benchmark("--quick", "--json", str(results))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

    report = json.loads(results.read_text(encoding="utf-8"))
    measured = {(row["scenario"], row["payload"]) for row in report["rows"]}
    assert measured == {(s, p) for s in SCENARIOS for p in PAYLOADS}
    implementations = {"raw trio", "trionet", "asyncio"}
    if uvloop_installed():
        implementations.add("uvloop")
    for row in report["rows"]:
        assert set(row["results"]) == implementations, row
        for name, cell in row["results"].items():
            assert len(cell["rates"]) == 1, (row["scenario"], row["payload"], name)
            assert cell["median"] > 0, (row["scenario"], row["payload"], name)

    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    header, _rule, *rows = table
    assert "trionet/raw" in header
    assert "trionet/asyncio" in header
    for title in SCENARIOS.values():
        for label in PAYLOADS.values():
            matching = [r for r in rows if r.startswith(f"| {title} ") and f"| {label} " in r]
            assert len(matching) == 1, (title, label)
            assert "n/a" not in matching[0].split("|")[3:6], matching[0]  # raw, trionet, ratio
    assert len(rows) == len(SCENARIOS) * len(PAYLOADS)

    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS:", "FAIL:"))]
    assert len(verdicts) == 4, done.stdout
    assert any("0.9x raw trio in every row" in line for line in verdicts)
    assert any("receive() per frame >= 1.3x raw trio" in line for line in verdicts)
    assert any("receive_many()/send_many() >= 1.2x raw trio" in line for line in verdicts)
    assert any("send_many 16 B >= asyncio" in line for line in verdicts)


@pytest.mark.parametrize("runs", ["0", "2"])
def test_fewer_than_three_runs_are_refused_outside_quick_mode(runs: str) -> None:
    done = run_benchmark("--runs", runs, "--payloads", "16", "--scenarios", "ping-pong")
    assert done.returncode == 2
    assert "--runs must be at least 3" in done.stderr
