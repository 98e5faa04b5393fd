"""The virtual network's example runs by itself and prints a lossy timeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lossy_timeline.py"


def run_example() -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == ""
    return result.stdout


def test_lossy_timeline_prints_losses_duplicates_and_answers_the_same_every_time() -> None:
    output = run_example()
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("time (ms)"))
    assert lines[start].split() == ["time", "(ms)", "host", "event", "from", "to", "bytes", "note"]
    timeline = [line.split() for line in lines[start + 1 : lines.index("", start)]]
    events = [row[2] for row in timeline]
    assert {"udp.send", "udp.deliver", "udp.drop", "udp.duplicate"} == set(events)
    assert all(row[-1] == "loss" for row in timeline if row[2] == "udp.drop")
    times = [float(row[0]) for row in timeline]
    assert times == sorted(times)
    assert "    0.000  client  udp.send" in output
    for number in range(2, 6):
        assert f"request {number}: {number}={number * number} after" in output
    assert output == run_example()
