"""Tutorial step 2: many clients in one nursery, and what happens when one fails.

What it teaches: ten clients run as ten tasks of one nursery, and the nursery
waits for all of them. When one raises an exception, the nursery cancels the
others (each sees ``trio.Cancelled`` at its next ``await``), waits for them to
finish unwinding, then raises the error, wrapped in an ``ExceptionGroup``:
an error is never lost and no task outlives its nursery. With ``--isolate``
each client handles its own errors instead, and the others go on; that is what
``serve_tcp`` does by default for its connection handlers. The exit status is
1 when any client failed, 0 when all ten finished.

Run it (with the echo server of step 1 running on port 8000)::

    python examples/tutorial/many_clients.py              # all ten succeed
    python examples/tutorial/many_clients.py --fail 3     # client 3 fails; the rest are cancelled
    python examples/tutorial/many_clients.py --fail 3 --isolate
"""

import argparse
import sys
from collections import Counter

import trio

import trionet

CLIENTS = 10


def describe(error: BaseException) -> str:
    """An error on one line: its type and its message.

    A ConnectError's message has a line per attempt, with its timing; here
    each attempt is its address and cause, so that equal failures read equal.
    """
    if isinstance(error, trionet.ConnectError) and error.attempts:
        head = str(error).splitlines()[0].rstrip(":")
        return f"ConnectError: {head}: {'; '.join(map(str, error.attempts))}"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def leaves(error: BaseException) -> list[BaseException]:
    """The errors inside an exception group (and the groups nested in it)."""
    nested = getattr(error, "exceptions", None)
    if nested is None:
        return [error]
    return [leaf for inner in nested for leaf in leaves(inner)]


async def client(number: int, args: argparse.Namespace, failed: list[int]) -> None:
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
        failed.append(number)
        print(f"client {number}: failed with {describe(error)}; the others go on")


async def main(args: argparse.Namespace) -> int:
    failed: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            for number in range(CLIENTS):
                nursery.start_soon(client, number, args, failed)
    except Exception as error:
        # Ten clients refused at once are ten equal errors: print each kind once, with a count.
        errors = Counter(describe(leaf) for leaf in leaves(error))
        print(f"the nursery raised {type(error).__name__} with {sum(errors.values())} error(s):")
        for text, count in errors.items():
            print(f"  {count} x {text}" if count > 1 else f"  {text}")
        return 1
    if failed:
        print(f"the nursery exited normally: {CLIENTS - len(failed)} of {CLIENTS} clients finished")
        return 1
    print("the nursery exited normally: every client finished")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fail", type=int, default=None, help="the number of a client that fails")
    parser.add_argument("--isolate", action="store_true", help="each client handles its own errors")
    sys.exit(trio.run(main, parser.parse_args()))
