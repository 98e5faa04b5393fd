"""examples/resp_server.py: a codec of one's own, served to redis-py.

The example runs as a program; redis-py, a client nobody here wrote, talks to
it: binary values, a pipeline of 1,000 commands, 100 clients at once. The
codec itself passes trionet.testing.check_codec, and its decoder yields parsed
commands.
"""

from __future__ import annotations

import functools
import importlib.util
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import pytest
import trio

import trionet
from trionet.testing import check_codec
from trionet.testing.pytest_plugin import StartServer

from .processes import EXAMPLES, running

redis = pytest.importorskip("redis")
TIMEOUT = 60


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("resp_server_example", EXAMPLES / "resp_server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_codec_passes_check_codec_and_its_decoder_yields_parsed_commands() -> None:
    example = load_example()
    messages = [[b"SET", b"key", bytes(range(256))], b"", example.NIL, "OK", 42, -7,
                example.Error("ERR no"), [], [[b"a"], [1, [example.NIL]]]]
    check_codec(example.Resp(max_size=300), messages)
    decoder = example.Resp().decoder()
    decoder.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv\n\r\n*1\r\n$4\r\nPI")
    assert decoder.next_frame() == [b"SET", b"k", b"v\n"]
    assert decoder.next_frame() is None  # the second command is not whole yet


def talk_to_it_with_redis_py(port: int) -> dict[str, object]:
    # protocol=2: the example speaks RESP2, and redis-py 8.1 (the release pip
    # picks on Python 3.10) opens with "HELLO 3" and gives up on its error.
    client = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    results: dict[str, object] = {}
    value = bytes(range(256)) * 4  # binary, CR and LF included
    client.set(b"binary\r\nkey", value)
    results["binary"] = client.get(b"binary\r\nkey") == value
    results["missing"] = client.get("no such key")
    pipe = client.pipeline(transaction=False)
    for number in range(500):
        pipe.set(f"key{number}", number)
        pipe.get(f"key{number}")
    replies = pipe.execute()
    results["pipeline"] = (len(replies), replies[1], replies[-1])

    def increment(_: int) -> None:
        own = redis.Redis(host="127.0.0.1", port=port, protocol=2)
        for _ in range(10):
            own.incr("counter")
        own.close()

    with ThreadPoolExecutor(max_workers=100) as pool:
        list(pool.map(increment, range(100)))
    results["counter"] = int(client.get("counter"))
    try:
        client.execute_command("FLUSHALL")
    except redis.ResponseError as exc:
        results["unknown"] = str(exc)
    client.close()
    return results


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_redis_py_sets_gets_pipelines_and_counts_with_100_clients() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([sys.executable, str(EXAMPLES / "resp_server.py"), "0"]) as server:
            line = await server.stdout.until("listening on port")
            port = int(line.rsplit(" ", 1)[1])
            results = await trio.to_thread.run_sync(talk_to_it_with_redis_py, port)
            status, lines = await server.stop(signal.SIGINT)
    assert results["binary"] is True
    assert results["missing"] is None
    assert results["pipeline"] == (1000, b"0", b"499")
    assert results["counter"] == 1000  # 100 clients, 10 increments each, none lost
    assert "unknown command" in str(results["unknown"])
    assert status == 0
    assert lines[-1] == "server stopped; 502 keys were held"


# A user's test of the Redis app with the pytest plugin's fixture: six lines.
async def test_set_then_get_with_the_plugin(virtual_server: StartServer) -> None:
    resp = load_example()
    await virtual_server(trionet.serve_tcp, functools.partial(resp.serve_client, data={}), 6379,
                         codec=resp.Resp())
    async with await trionet.connect_tcp("server.test", 6379, codec=resp.Resp()) as conn:
        await conn.channel.send([b"SET", b"greeting", b"hello"])
        assert await conn.channel.receive() == "OK"
