"""Tutorial step 2: many clients in one nursery, and what happens when one fails.

What it teaches: ten clients run as ten tasks of one nursery, and the nursery
waits for all of them. When one raises an exception, the nursery cancels the
others (each sees ``trio.Cancelled`` at its next ``await``), waits for them to
finish unwinding, then raises the error, wrapped in an ``ExceptionGroup``:
an error is never lost and no task outlives its nursery. With ``--isolate``
each client handles its own errors instead, and the others go on; that is what
``serve_tcp`` does by default for its connection handlers.

Run it (with the echo server of step 1 running on port 8000)::

    python examples/tutorial/many_clients.py              # all ten succeed
    python examples/tutorial/many_clients.py --fail 3     # client 3 fails; the rest are cancelled
    python examples/tutorial/many_clients.py --fail 3 --isolate
"""

import argparse

import trio

import trionet


async def client(number: int, args: argparse.Namespace) -> None:
    try:
        async with await trionet.connect_tcp("127.0.0.1", args.port, codec=trionet.Lines()) as conn:
            for turn in range(3):
                await conn.channel.send(b"client %d, turn %d" % (number, turn))
                await conn.channel.receive()
                if number == args.fail and turn == 1:
                    raise RuntimeError(f"client {number} gives up")
                await trio.sleep(0.05)
        print(f"client {number}: done")
    except trio.Cancelled:
        print(f"client {number}: cancelled")
        raise  # always let Cancelled propagate: it is how the nursery stops us
    except Exception as error:
        if not args.isolate:
            raise
        print(f"client {number}: failed with {error!r}; the others go on")


async def main(args: argparse.Namespace) -> None:
    try:
        async with trio.open_nursery() as nursery:
            for number in range(10):
                nursery.start_soon(client, number, args)
        print("the nursery exited normally: every client finished")
    except Exception as error:
        print(f"the nursery raised {error!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fail", type=int, default=None, help="the number of a client that fails")
    parser.add_argument("--isolate", action="store_true", help="each client handles its own errors")
    trio.run(main, parser.parse_args())
