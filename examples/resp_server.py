"""A Redis-protocol server: a codec of your own, whose decoder yields parsed commands.

What it teaches: writing a codec. RESP, the protocol Redis speaks, frames
values: ``+OK\\r\\n`` (a simple string), ``$5\\r\\nhello\\r\\n`` (a bulk string),
``:42\\r\\n``, ``-ERR ...\\r\\n``, and ``*2\\r\\n...`` (an array of values: a client's
command is an array of bulk strings). ``Resp`` encodes Python values to those
frames, and its decoder, a ``trionet.BufferedDecoder``, parses each frame once:
the handler receives ``[b"SET", b"key", b"value"]`` and parses nothing.
``MessageChannel[RespValue]`` is typed end to end under ``mypy --strict``.

Run it::

    python examples/resp_server.py                  # port 6380; or give another
    redis-cli -p 6380 set greeting hello             # or redis-py, or any Redis client
    redis-cli -p 6380 get greeting

The data lives in a dict in memory, for as long as the server runs.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

import trio

import trionet


@dataclass(frozen=True)
class Error:
    """A RESP error reply: ``-ERR message``."""

    message: str


@dataclass(frozen=True)
class Nil:
    """RESP's null (``$-1``), what GET answers for a missing key.

    Not ``None``: a decoder's ``next_frame()`` returns ``None`` for "no whole
    frame yet", so no message may be ``None``.
    """


NIL = Nil()

# bytes: a bulk string; str: a simple string.
RespValue: TypeAlias = bytes | str | int | Nil | Error | list["RespValue"]

CRLF = b"\r\n"
MAX_DEPTH = 8  # arrays within arrays, at most


# Codec is a protocol: any class with its methods is one. Saying so explicitly lets
# mypy infer the message type from ``codec=Resp()`` alone (connect_tcp's, for one):
# it cannot infer it from the structure when the type, RespValue, is recursive.
@dataclass(frozen=True)
class Resp(trionet.Codec[RespValue]):
    """The RESP2 wire format, as a trionet codec of RespValue messages."""

    max_size: int = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len

    def encode(self, message: RespValue) -> bytes:
        out = bytearray()
        self.encode_into(out, message)
        return bytes(out)

    def encode_into(self, out: bytearray, message: RespValue) -> None:
        if isinstance(message, bytes):
            if len(message) > self.max_size:
                raise trionet.FrameTooLarge(len(message), self.max_size)
            out += b"$%d\r\n%b\r\n" % (len(message), message)
        elif isinstance(message, str):
            if "\r" in message or "\n" in message:
                raise trionet.InvalidMessage("a simple string cannot contain CR or LF")
            out += b"+%b\r\n" % message.encode()
        elif isinstance(message, bool) or not isinstance(message, (int, Nil, Error, list)):
            raise trionet.InvalidMessage(f"RESP cannot carry {type(message).__name__}")
        elif isinstance(message, int):
            out += b":%d\r\n" % message
        elif isinstance(message, Nil):
            out += b"$-1\r\n"
        elif isinstance(message, Error):
            out += b"-%b\r\n" % message.message.replace("\r", " ").replace("\n", " ").encode()
        else:
            out += b"*%d\r\n" % len(message)
            for item in message:
                self.encode_into(out, item)

    def encode_many(self, messages: Iterable[RespValue]) -> bytes:
        out = bytearray()
        for message in messages:
            self.encode_into(out, message)
        return bytes(out)

    def decoder(self) -> RespDecoder:
        return RespDecoder(self.max_size)


class RespDecoder(trionet.BufferedDecoder[RespValue]):
    """Parses one RESP value per frame; the base class keeps the bytes and the offsets."""

    __slots__ = ("max_size",)

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size

    def parse(self, buffer: bytes | bytearray, start: int) -> tuple[RespValue, int] | None:
        return self._value(buffer, start, 0)

    def _value(self, buffer: bytes | bytearray, start: int, depth: int) -> tuple[RespValue, int] | None:
        line_end = buffer.find(CRLF, start)
        if line_end < 0:
            if len(buffer) - start > 64:  # a type byte and a number, or a simple string's first bytes
                self._check_line(buffer, start, len(buffer))
            return None
        kind, line = buffer[start:start + 1], bytes(buffer[start + 1:line_end])
        after = line_end + 2
        if kind == b"+":
            return line.decode(errors="replace"), after
        if kind == b"-":
            return Error(line.decode(errors="replace")), after
        if kind == b":":
            return self._integer(line, start), after
        if kind == b"$":
            size = self._integer(line, start)
            if size == -1:
                return NIL, after
            if not 0 <= size <= self.max_size:  # checked on the header, before the payload
                raise trionet.FrameTooLarge(size, self.max_size, self.stream_offset(start))
            end = after + size + 2
            if len(buffer) < end:
                return None
            if buffer[end - 2:end] != CRLF:
                raise trionet.ProtocolError("bulk string not followed by CRLF", self.stream_offset(end - 2))
            return bytes(buffer[after:end - 2]), end
        if kind == b"*":
            count = self._integer(line, start)
            if count == -1:
                return NIL, after
            if depth >= MAX_DEPTH or not 0 <= count <= 1024 * 1024:
                raise trionet.ProtocolError(f"array of {count} at depth {depth}", self.stream_offset(start))
            items: list[RespValue] = []
            position = after
            for _ in range(count):
                found = self._value(buffer, position, depth + 1)
                if found is None:
                    return None  # the whole array is parsed again when more bytes come
                item, position = found
                items.append(item)
            return items, position
        raise trionet.ProtocolError(f"unknown RESP type {kind!r}", self.stream_offset(start))

    def _check_line(self, buffer: bytes | bytearray, start: int, end: int) -> None:
        if buffer[start:start + 1] in (b"$", b"*", b":") or end - start > 64 * 1024:
            raise trionet.ProtocolError("RESP header line too long", self.stream_offset(start))

    def _integer(self, line: bytes, start: int) -> int:
        try:
            return int(line)
        except ValueError:
            raise trionet.ProtocolError(f"not an integer: {line[:20]!r}", self.stream_offset(start)) from None


# ------------------------------------------------------------------- the server


async def serve_client(conn: trionet.TCPConnection[RespValue], data: dict[bytes, bytes]) -> None:
    async for command in conn.channel:
        await conn.channel.send(execute(command, data))


def execute(command: RespValue, data: dict[bytes, bytes]) -> RespValue:
    if not isinstance(command, list) or not command or not all(isinstance(a, bytes) for a in command):
        return Error("ERR a command is an array of bulk strings")
    name, *args = [arg for arg in command if isinstance(arg, bytes)]
    match name.upper(), args:
        case b"PING", []:
            return "PONG"
        case b"ECHO", [message]:
            return message
        case b"SET", [key, value]:
            data[key] = value
            return "OK"
        case b"GET", [key]:
            return data.get(key, NIL)
        case b"DEL", [*keys] if keys:
            return sum(data.pop(key, None) is not None for key in keys)
        case b"EXISTS", [*keys] if keys:
            return sum(key in data for key in keys)
        case (b"INCR", [key]) | (b"INCRBY", [key, _]):
            try:
                number = int(data.get(key, b"0")) + (int(args[1]) if len(args) == 2 else 1)
            except ValueError:
                return Error("ERR value is not an integer or out of range")
            data[key] = b"%d" % number
            return number
    return Error(f"ERR unknown command or wrong arguments: {name.decode(errors='replace')[:40]}")


async def main(port: int) -> None:
    data: dict[bytes, bytes] = {}

    async def handler(conn: trionet.TCPConnection[RespValue]) -> None:
        await serve_client(conn, data)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trionet.open_tcp_server(handler, port, host="127.0.0.1", codec=Resp(),
                                           shutdown_grace=5) as server:
            print(f"listening on port {server.port}", flush=True)
            async for _ in signals:
                break
    print(f"server stopped; {len(data)} keys were held")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 6380)
