"""What the Linux kernel knows of a TCP connection: ``getsockopt(TCP_INFO)``.

Two users read it: the idle timer (:class:`~trionet._adapters.idle.KernelActivity`:
when data last moved) and the server's ``closed`` event (how many bytes the
connection carried). Reading the kernel's counters costs one system call when
asked and nothing on the data path.

Offsets are those of ``struct tcp_info`` in ``include/uapi/linux/tcp.h``: after
8 one-byte fields come 32-bit ones, ``tcpi_last_data_sent`` at 44 and
``tcpi_last_data_recv`` at 52 (milliseconds before now; pure ACKs move neither);
then, since Linux 4.2, ``tcpi_bytes_received`` at 128 (payload bytes received),
and since Linux 4.19 ``tcpi_bytes_sent`` at 200 and ``tcpi_bytes_retrans`` at
208 (payload bytes sent, retransmissions included, and those retransmitted).
A kernel that has fewer fields returns a shorter buffer, which is how the
readers below tell.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .channel import MessageChannel

__all__ = [
    "LAST_DATA_RECV",
    "LAST_DATA_SENT",
    "TCP_INFO_ACTIVITY_SIZE",
    "connection_byte_counts",
    "kernel_byte_counts",
]

TCP_INFO_ACTIVITY_SIZE: Final = 56
LAST_DATA_SENT: Final = 44
LAST_DATA_RECV: Final = 52
_BYTES_RECEIVED: Final = 128
_BYTES_SENT: Final = 200
_BYTES_RETRANS: Final = 208
_BYTES_SIZE: Final = 216


def kernel_byte_counts(sock: socket.socket | None) -> tuple[int, int] | None:
    """``(bytes received, bytes sent)`` of a TCP socket's payload, as the kernel counted them.

    Sent bytes count each byte once, however often it was retransmitted.
    ``None`` where the kernel does not say: not Linux (or older than 4.19), not
    a system socket (the virtual network's), not TCP, or already closed.
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if sock is None or tcp_info is None or sock.type != socket.SOCK_STREAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _BYTES_SIZE)
    except OSError:
        return None
    if len(info) < _BYTES_SIZE:  # pragma: no cover - a kernel older than 4.19
        return None
    (received,) = struct.unpack_from("Q", info, _BYTES_RECEIVED)
    sent, retransmitted = struct.unpack_from("QQ", info, _BYTES_SENT)
    return int(received), int(sent - retransmitted)


def connection_byte_counts(
    sock: socket.socket | None,
    channel: MessageChannel[Any] | None,
    at_close: tuple[int, int] | None,
) -> tuple[int, int] | None:
    """``(bytes in, bytes out)`` of a server's connection, for its ``closed`` event.

    With a codec, what the channel read and wrote (above TLS: the application's
    bytes); without one, the TCP payload as the kernel counts it now, or as it
    counted it when the handler closed the connection (``at_close``); ``None``
    where nothing counted (a Unix socket, another system, the virtual network).
    """
    if channel is not None:
        stats = channel.statistics()
        return stats.bytes_received, stats.bytes_sent
    counts = kernel_byte_counts(sock)
    return at_close if counts is None else counts
