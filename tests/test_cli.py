"""``python -m trionet``: the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trionet._cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trionet", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_demo_runs_a_server_and_clients_and_exits_cleanly() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "listening on 127.0.0.1:" in out
    assert "alice     -> b'hello'   <- b'HELLO'" in out
    assert "bob       -> b'every task has a parent'   <- b'EVERY TASK HAS A PARENT'" in out
    # The slow client's half line survived the server's timed-out receive.
    assert "(9 bytes kept)" in out
    assert "<- b'HALF A LINE, THEN THE REST'" in out
    assert out.rstrip().endswith("no task is left running and every socket is closed")
    assert result.stderr == ""


def test_unknown_command_is_a_usage_error_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
