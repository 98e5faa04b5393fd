"""Smoke test of ``python -m tests.soak``: the documented command runs and reports.

Only the shape of the report is checked: ``--quick`` runs every scenario with
tiny counts, so its figures mean nothing. The scenarios themselves are tested
at their CI sizes in the other tests/test_soak_*.py files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["chaos", "hostile", "peers", "load", "udp-cancel", "udp-proxy", "udp"]


def test_the_quick_form_runs_every_scenario_in_its_own_process_and_passes(tmp_path: Path) -> None:
    results = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "tests.soak", "--quick", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS:", "FAIL:"))]
    assert verdicts == [f"PASS: {name}" for name in SCENARIOS]
    report = json.loads(results.read_text(encoding="utf-8"))
    assert report["form"] == "quick"
    assert list(report["scenarios"]) == SCENARIOS
    assert all(scenario["problems"] == [] for scenario in report["scenarios"].values())
    chaos = report["scenarios"]["chaos"]["figures"]["tcp"]
    assert chaos["corrupted"] == 0
    assert chaos["fds_before"] == chaos["fds_after"]


def test_an_unknown_scenario_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--only", "chaos,nonsense"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "unknown scenarios: nonsense" in done.stderr
