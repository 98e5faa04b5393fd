"""The options of a UDP endpoint, checked once: EndpointOptions.

:func:`~trionet.open_udp_endpoint` (and :func:`~trionet.serve_udp` through it)
takes these as keyword arguments and packs them into one frozen
:class:`EndpointOptions`, which checks every value as it is built; the socket
opener and the receiving, sending and requesting parts of the endpoint read
them from it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final, final

__all__ = [
    "DEFAULT_MAX_OUTSTANDING_PER_PEER",
    "DEFAULT_MAX_RECEIVE_SIZE",
    "DEFAULT_RECEIVE_QUEUE_BYTES",
    "DEFAULT_RECEIVE_QUEUE_SIZE",
    "EndpointOptions",
]

# The largest UDP payload on any family (the 16-bit UDP length field), so that by
# default no datagram is ever truncated.
DEFAULT_MAX_RECEIVE_SIZE: Final = 65535
# trionet's choice: 4096 datagrams is about 15 times what Linux's default
# receive buffer holds of small datagrams (net.core.rmem_default = 212992 bytes,
# charged about 1 KiB each, the kernel's per-packet overhead included). Memory
# is at most receive_queue_size * max_receive_size bytes.
DEFAULT_RECEIVE_QUEUE_SIZE: Final = 4096
# trionet's choice (issue 15.2): the queue also holds at most 4 MiB of payload,
# about 20 times Linux's default receive buffer, so that a sender of large
# datagrams cannot make an endpoint that is not reading hold
# receive_queue_size * 64 KiB (268 MB); one datagram is always let in.
DEFAULT_RECEIVE_QUEUE_BYTES: Final = 4 * 1024 * 1024
# One outstanding request per peer: CoAP's NSTART = 1 (RFC 7252 section 4.7),
# the limit RFC 8085 section 3.1.3 recommends to applications that, like most
# request/response protocols over UDP, run without congestion control.
DEFAULT_MAX_OUTSTANDING_PER_PEER: Final = 1


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointOptions:
    """What a UDP endpoint was asked for, each value checked.

    The fields are the keyword options of :func:`~trionet.open_udp_endpoint`
    with the same names and defaults, and documented there.

    Raises:
      ValueError: A value is out of range or of the wrong type.
    """

    family: int = 0
    reuse_port: bool = False
    broadcast: bool = False
    max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE
    receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES
    receive_buffer_size: int | None = None
    max_outstanding_per_peer: int | None = DEFAULT_MAX_OUTSTANDING_PER_PEER

    def __post_init__(self) -> None:
        if self.family not in (0, socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"family must be 0, AF_INET or AF_INET6, not {self.family!r}")
        _check_int("max_receive_size", self.max_receive_size, 1, DEFAULT_MAX_RECEIVE_SIZE)
        _check_int("receive_queue_size", self.receive_queue_size, 1)
        _check_int("receive_queue_bytes", self.receive_queue_bytes, 1)
        if self.receive_buffer_size is not None:
            _check_int("receive_buffer_size", self.receive_buffer_size, 1)
        if self.max_outstanding_per_peer is not None:
            _check_int("max_outstanding_per_peer", self.max_outstanding_per_peer, 1)


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an int {bound}, not {value!r}")
