"""``python -m trionet connect`` when the server hangs up while standard input is still open.

The client reads standard input in a worker thread. Once the server has hung
up, that thread is still blocked in a read (stdin is a pipe nobody closes) and
is abandoned at exit. It used to block inside ``sys.stdin.buffer``, whose lock
the interpreter's shutdown then wanted: "Fatal Python error:
_enter_buffered_busy", exit status 134, 5 times out of 5 (issue 17.3). The
documented exit codes are 0 (the server ended the session) and 1 (the
connection was lost).
"""

from __future__ import annotations

import functools
import subprocess

import pytest
import trio

from .processes import CLI

TIMEOUT = 20


async def hang_up_after_one_line(stream: trio.SocketStream) -> None:
    await stream.send_all(b"bye\n")
    await stream.aclose()


@pytest.mark.parametrize("attempt", range(5))
async def test_a_server_hanging_up_ends_connect_cleanly_with_stdin_still_open(attempt: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, hang_up_after_one_line, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            process = await trio.lowlevel.open_process(
                [*CLI, "connect", "127.0.0.1", str(port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            assert process.stdin is not None
            assert process.stdout is not None
            assert process.stderr is not None
            out = err = b""
            async with process.stdin:  # open, never written: the client's reader blocks
                while chunk := await process.stdout.receive_some():
                    out += chunk
                while chunk := await process.stderr.receive_some():
                    err += chunk
                status = await process.wait()
            await process.stdout.aclose()
            await process.stderr.aclose()
            nursery.cancel_scope.cancel()
    assert status == 0, err.decode()
    assert out == b"bye\n"
    assert err == b""
