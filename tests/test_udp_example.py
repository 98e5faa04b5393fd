"""examples/udp_ping.py runs as a program does, in bounded time, and prints what it promises."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "udp_ping.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_the_example_says_what_it_teaches_and_how_to_run_it() -> None:
    docstring = ast.get_docstring(ast.parse(EXAMPLE.read_text()))
    assert docstring is not None
    assert "What it teaches" in docstring
    assert "Run it" in docstring
    assert "python examples/udp_ping.py" in docstring


def test_five_pings_to_the_built_in_loopback_server_all_come_back() -> None:
    done = run("--count", "5", "--interval", "0.01")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    replies = [line for line in lines if line.startswith("seq=")]
    assert len(replies) == 5
    assert all(re.fullmatch(r"seq=\d reply from 127\.0\.0\.1:\d+: time=[\d.]+ ms, 1 transmission\(s\)",
                            line) for line in replies)
    assert "5 sent, 5 received, 0% loss, 0 retransmissions" in lines
    assert any(line.startswith("rtt min/avg/max/mdev = ") for line in lines)
    assert any(line.startswith("estimator: srtt=") and "(5 samples;" in line for line in lines)
    timeline = lines[lines.index("Timeline:") + 1:]
    assert [line.split()[2] for line in timeline] == ["udp.transmit", "udp.reply"] * 5


def test_pings_the_server_ignores_are_retransmitted_on_loopback() -> None:
    done = run("--count", "8", "--interval", "0", "--drop", "0.5", "--timeout", "0.05")
    assert done.returncode == 0, done.stderr
    assert "udp.retransmit" in done.stdout
    assert re.search(r"8 sent, \d received, \d+% loss, [1-9]\d* retransmissions", done.stdout)


def test_the_virtual_lossy_link_shows_retransmissions_replays_and_give_ups_in_no_time() -> None:
    done = run("--virtual", "--loss", "0.3", "--count", "6")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "6 sent, 6 received, 0% loss, 6 retransmissions" in out
    assert "reply from 10.0.0.1:7" in out
    kinds = {line.split()[2] for line in out.split("Timeline:\n")[1].splitlines()}
    assert {"udp.transmit", "udp.retransmit", "udp.reply", "udp.duplicate_replayed"} <= kinds
    assert "(3 samples; retransmitted pings are not sampled)" in out  # Karn's rule
    assert run("--virtual", "--loss", "0.3", "--count", "6").stdout == out  # deterministic


def test_with_total_loss_every_ping_gives_up_and_the_exit_status_says_so() -> None:
    done = run("--virtual", "--loss", "1.0", "--count", "2", "--attempts", "3")
    assert done.returncode == 1
    assert done.stdout.count("no reply after 3 transmissions") == 2
    assert done.stdout.count("udp.give_up") == 2


def test_bad_arguments_are_refused_with_status_2() -> None:
    done = run("--count", "0")
    assert done.returncode == 2
    assert "--count" in done.stderr
