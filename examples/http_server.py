"""An HTTP/1.1 server: h11 parses the protocol, trionet runs the connections.

What it teaches: a protocol library that does its own parsing (h11 here;
wsproto and h2 work the same way) takes the connection's raw stream,
``conn.stream``: read bytes, feed them to the library, send what it produces.
There is no codec, so no ``frame_timeout``: the handler bounds the wait for a
request head itself, with a cancel scope, which is what stops a slow-loris
client. trionet still owns the server's lifetime: connection limits, the idle
timeout, and a graceful shutdown that lets a request in progress finish.

Needs h11 (``pip install h11``). Run it::

    python examples/http_server.py                  # port 8080; or give another
    curl http://127.0.0.1:8080/                      # in a second terminal
    curl -d 'hello' http://127.0.0.1:8080/echo

Ctrl-C stops it gracefully: keep-alive connections are closed between requests.
"""

import signal
import sys

import h11
import trio

import trionet

MAX_HEAD = 16 * 1024  # bytes of request line and headers (h11 refuses more)
HEAD_TIMEOUT = 10.0  # seconds a request head may take: the raw stream's frame_timeout
READ_SIZE = 65536


async def next_event(conn: trionet.TCPConnection, http: h11.Connection) -> object:
    """The next h11 event, reading from the stream as long as h11 needs data."""
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event
        http.receive_data(bytes(await conn.stream.receive_some(READ_SIZE)))  # b"": the client hung up


async def send(conn: trionet.TCPConnection, http: h11.Connection, *events: h11.Event) -> None:
    for event in events:
        data = http.send(event)
        if data:
            await conn.stream.send_all(data)


async def respond(conn: trionet.TCPConnection, http: h11.Connection, status: int, body: bytes) -> None:
    close = conn.shutdown_requested  # shutting down: this is the connection's last response
    headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
    if close:
        headers.append(("connection", "close"))
    await send(conn, http, h11.Response(status_code=status, headers=headers, reason=b"OK"),
               h11.Data(data=body),
               h11.EndOfMessage())


async def handle(conn: trionet.TCPConnection) -> None:
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        # The head must arrive within HEAD_TIMEOUT, and between requests a
        # shutdown closes the connection at once: either cancels the wait.
        request = None
        with trio.move_on_after(HEAD_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_shutdown, conn, nursery.cancel_scope)
                request = await next_event(conn, http)
                nursery.cancel_scope.cancel()
        if not isinstance(request, h11.Request):
            return  # timed out, shutting down, or the client hung up (ConnectionClosed)
        body = b""
        while not isinstance(event := await next_event(conn, http), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += event.data
        if request.target == b"/echo":
            await respond(conn, http, 200, body)
        else:
            await respond(conn, http, 200, f"hello from {conn.local}, {conn.peer}\n".encode())
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            return  # a response with connection: close, or a client that asked for it
        http.start_next_cycle()


async def _cancel_on_shutdown(conn: trionet.TCPConnection, scope: trio.CancelScope) -> None:
    await conn.wait_shutdown_requested()
    scope.cancel()


async def main(port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trionet.open_tcp_server(handle, port, shutdown_grace=10) as server:
            print(f"listening on http://127.0.0.1:{server.port}/", flush=True)
            async for _ in signals:
                break
    print("server stopped: requests in progress finished, every connection closed")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
