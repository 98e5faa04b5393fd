"""Which reply answers which request: ready-made matchers for ``UDPEndpoint.request``.

Sans-IO: a :class:`ReplyMatcher` compares a request's payload with a candidate
reply's payload and nothing else (no clock, no socket, no trio). The endpoint
checks the sender's address and port first; a matcher decides among the
datagrams from that peer.

A UDP reply is authenticated by nothing but its source address and port, which
anyone on the path (or able to forge that source) can claim. An id echoed from
the request narrows what a reply can be taken for: it is what tells a reply to
this request from a late reply to a cancelled or retransmitted one. It is no
defence against a forger who sees the requests; that needs a protocol with its
own authentication (DTLS, signed messages).
"""

from __future__ import annotations

from typing import Final, final

__all__ = [
    "ReplyMatcher",
    "match_address_only",
    "match_bytes",
    "match_coap_message_id",
    "match_dns_id",
]


@final
class ReplyMatcher:
    """Matches a reply to a request by an id at a fixed place in both payloads.

    Made by :func:`match_bytes` (or one of the ready-made matchers, such as
    :data:`match_dns_id`); pass it as ``match=`` to
    :meth:`~trionet.UDPEndpoint.request`. A reply answers the request when the
    ``length`` bytes at ``offset`` of its payload equal those of the request's.

    Attributes:
      offset: Where the id starts, in bytes from the start of the payload.
      length: The id's length in bytes; 0 for :data:`match_address_only`,
          which accepts any payload.
    """

    __slots__ = ("length", "name", "offset")

    def __init__(self, offset: int, length: int, *, name: str | None = None) -> None:
        for what, value in (("offset", offset), ("length", length)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{what} must be an int >= 0, not {value!r}")
        self.offset: Final = offset
        self.length: Final = length
        self.name: Final = name or f"match_bytes({offset}, {length})"

    def key(self, request: bytes | bytearray | memoryview) -> bytes:
        """The id a reply to ``request`` must carry.

        Raises:
          ValueError: ``request`` is too short to hold the id (no reply could
              ever match it).
        """
        end = self.offset + self.length
        if len(request) < end:
            raise ValueError(
                f"{self.name} compares bytes {self.offset} to {end - 1} of the request, "
                f"but the request has only {len(request)} bytes"
            )
        return bytes(request[self.offset:end])

    def matches(self, request: bytes | bytearray | memoryview, reply: bytes) -> bool:
        """Whether ``reply`` carries the id of ``request``.

        Raises:
          ValueError: ``request`` is too short to hold the id.
        """
        return reply[self.offset:self.offset + self.length] == self.key(request)

    def __repr__(self) -> str:
        return f"<ReplyMatcher {self.name}>"


def match_bytes(offset: int, length: int) -> ReplyMatcher:
    """A matcher for an id of ``length`` bytes at ``offset`` in request and reply.

    ::

        reply = await endpoint.request(b"\\x00\\x2a" + query, peer, match=match_bytes(0, 2))

    A reply shorter than ``offset + length`` never matches; a request shorter
    than that is a :exc:`ValueError` from :meth:`~trionet.UDPEndpoint.request`.

    Raises:
      ValueError: ``offset`` is negative or ``length`` is below 1.
    """
    matcher = ReplyMatcher(offset, length)
    if length < 1:
        raise ValueError(f"length must be >= 1, not {length!r} (match_address_only matches anything)")
    return matcher


#: The 16-bit message ID of DNS (RFC 1035 section 4.1.1): the first 2 bytes of
#: a reply equal those of the query. Choose the ID at random per query (RFC 5452).
match_dns_id: Final = ReplyMatcher(0, 2, name="match_dns_id")

#: CoAP's 16-bit Message ID (RFC 7252 section 3): bytes 2 and 3 of the header,
#: which an ACK or RST echoes. (A separate response carries a new Message ID and
#: is matched by its token instead: use :func:`match_bytes` over the token.)
match_coap_message_id: Final = ReplyMatcher(2, 2, name="match_coap_message_id")

#: Any datagram from the peer answers the request: the sender's address and
#: port are the only check. **Unsafe** with retransmission (a reply to an
#: earlier copy, or a duplicate, can answer the next request) and with
#: concurrent requests to one peer (replies can be swapped). Use it only for a
#: protocol without ids, with one request at a time, knowing that.
match_address_only: Final = ReplyMatcher(0, 0, name="match_address_only")
