"""Tutorial step 1b: nursery.start, task_status.started() and functools.partial.

What it teaches: ``nursery.start(f)`` starts ``f`` as a child task, like
``start_soon``, but waits until ``f`` says it is ready by calling
``task_status.started(value)``, and returns that value. A server uses it to say
"I am listening, on this port": the code after ``await nursery.start(...)`` can
connect at once. Your own functions can be startable too: take a
``task_status`` keyword argument and call ``started()`` once.

Run it::

    python examples/tutorial/startable.py

It needs nothing else running: it starts its own servers on free ports of
127.0.0.1, talks to each once, and stops them.
"""

import functools

import trio

import trionet


async def greet(conn: trionet.TCPConnection) -> None:
    await conn.channel.send(b"hello from the server")


# A startable function of our own: five lines. nursery.start() passes
# task_status; started() hands the port back and lets the caller go on.
async def serve_greetings(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    async with trionet.open_tcp_server(greet, port, host="127.0.0.1", codec=trionet.Lines()) as server:
        task_status.started(server.port)
        await trio.sleep_forever()  # serve until cancelled


async def ask(port: int) -> str:
    async with await trionet.connect_tcp("127.0.0.1", port, codec=trionet.Lines()) as conn:
        return (await conn.channel.receive()).decode()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        # 1. Our own startable function: start() returns what started() was given.
        port: int = await nursery.start(serve_greetings, 0)
        print("serve_greetings is ready; the client got:", await ask(port))

        # 2. trionet.serve_tcp is startable the same way, and returns its TCPServer.
        #    nursery.start() passes on positional arguments only, so the keyword
        #    arguments go in with functools.partial. start() returns Any: the
        #    annotation lets a type checker check what follows.
        server: trionet.TCPServer = await nursery.start(
            functools.partial(trionet.serve_tcp, greet, 0, host="127.0.0.1", codec=trionet.Lines())
        )
        print("serve_tcp is ready; the client got:", await ask(server.port))

        # 3. Without partial, the keyword argument reaches nursery.start() itself.
        try:
            await nursery.start(trionet.serve_tcp, greet, 0, codec=trionet.Lines())  # type: ignore[call-arg]
        except TypeError:
            print("nursery.start(serve_tcp, ..., codec=...) raised TypeError: use functools.partial")

        nursery.cancel_scope.cancel()  # stops both servers
    print("the nursery has exited: both servers stopped, every socket closed")


if __name__ == "__main__":
    trio.run(main)
