"""trionet: nursery-scoped networking for trio.

Public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing

from ._adapters.activation import listen_fds as listen_fds
from ._adapters.activity import ActivityTracker as ActivityTracker
from ._adapters.channel import DEFAULT_ABORT_TIMEOUT as DEFAULT_ABORT_TIMEOUT
from ._adapters.channel import DEFAULT_READ_SIZE as DEFAULT_READ_SIZE
from ._adapters.channel import MessageChannel as MessageChannel
from ._adapters.channel import MessageChannelStatistics as MessageChannelStatistics
from ._adapters.happy_eyeballs_input import RESOLUTION_DELAY as RESOLUTION_DELAY
from ._adapters.happy_eyeballs_input import FamilyAnswer as FamilyAnswer
from ._adapters.happy_eyeballs_input import resolve_happy_eyeballs as resolve_happy_eyeballs
from ._adapters.listen import bind_listening_sockets as bind_listening_sockets
from ._adapters.observe import Event as Event
from ._adapters.observe import EventLog as EventLog
from ._adapters.observe import LoggingObserver as LoggingObserver
from ._adapters.observe import Observer as Observer
from ._adapters.resolver import DEFAULT_LOOKUP_TIMEOUT as DEFAULT_LOOKUP_TIMEOUT
from ._adapters.resolver import DEFAULT_MAX_CACHE_BYTES as DEFAULT_MAX_CACHE_BYTES
from ._adapters.resolver import DEFAULT_MAX_CACHE_ENTRIES as DEFAULT_MAX_CACHE_ENTRIES
from ._adapters.resolver import DEFAULT_MAX_CONCURRENT_LOOKUPS as DEFAULT_MAX_CONCURRENT_LOOKUPS
from ._adapters.resolver import DEFAULT_NEGATIVE_TTL as DEFAULT_NEGATIVE_TTL
from ._adapters.resolver import DEFAULT_TTL as DEFAULT_TTL
from ._adapters.resolver import Resolver as Resolver
from ._adapters.resolver import ResolverStatistics as ResolverStatistics
from ._adapters.resolver import default_resolver as default_resolver
from ._adapters.resolver import resolve as resolve
from ._adapters.resolver_backend import GetaddrinfoBackend as GetaddrinfoBackend
from ._adapters.resolver_backend import LookupResult as LookupResult
from ._adapters.resolver_backend import ResolverBackend as ResolverBackend
from ._adapters.resolver_dns import DnsPythonBackend as DnsPythonBackend
from ._adapters.udp import DEFAULT_MAX_OUTSTANDING_PER_PEER as DEFAULT_MAX_OUTSTANDING_PER_PEER
from ._adapters.udp import DEFAULT_MAX_RECEIVE_SIZE as DEFAULT_MAX_RECEIVE_SIZE
from ._adapters.udp import DEFAULT_RECEIVE_QUEUE_BYTES as DEFAULT_RECEIVE_QUEUE_BYTES
from ._adapters.udp import DEFAULT_RECEIVE_QUEUE_SIZE as DEFAULT_RECEIVE_QUEUE_SIZE
from ._adapters.udp import DEFAULT_RETRY_POLICY as DEFAULT_RETRY_POLICY
from ._adapters.udp import Datagram as Datagram
from ._adapters.udp import UDPEndpoint as UDPEndpoint
from ._adapters.udp import UDPEndpointStatistics as UDPEndpointStatistics
from ._adapters.udp import open_udp_endpoint as open_udp_endpoint
from ._endpoints.connection import TCPConnection as TCPConnection
from ._endpoints.connection import UnixConnection as UnixConnection
from ._endpoints.options import DEFAULT_FRAME_TIMEOUT as DEFAULT_FRAME_TIMEOUT
from ._endpoints.options import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._endpoints.options import DEFAULT_MAX_PENDING_HANDSHAKES as DEFAULT_MAX_PENDING_HANDSHAKES
from ._endpoints.options import DEFAULT_SHUTDOWN_GRACE as DEFAULT_SHUTDOWN_GRACE
from ._endpoints.options import DEFAULT_TLS_HANDSHAKE_TIMEOUT as DEFAULT_TLS_HANDSHAKE_TIMEOUT
from ._endpoints.server_base import ServerStatistics as ServerStatistics
from ._endpoints.tcp_client import HAPPY_EYEBALLS_DELAY as HAPPY_EYEBALLS_DELAY
from ._endpoints.tcp_client import ConnectAttempt as ConnectAttempt
from ._endpoints.tcp_client import connect_tcp as connect_tcp
from ._endpoints.tcp_server import TCPServer as TCPServer
from ._endpoints.tcp_server import open_tcp_server as open_tcp_server
from ._endpoints.tcp_server import serve_tcp as serve_tcp
from ._endpoints.udp_server import DEFAULT_MAX_CONCURRENCY as DEFAULT_MAX_CONCURRENCY
from ._endpoints.udp_server import UDPServer as UDPServer
from ._endpoints.udp_server import UDPServerStatistics as UDPServerStatistics
from ._endpoints.udp_server import open_udp_server as open_udp_server
from ._endpoints.udp_server import serve_udp as serve_udp
from ._endpoints.unix import UnixServer as UnixServer
from ._endpoints.unix import open_unix_server as open_unix_server
from ._endpoints.unix import serve_unix as serve_unix
from ._endpoints.unix_client import connect_unix as connect_unix
from ._sansio.addresses import Address as Address
from ._sansio.addresses import HostPort as HostPort
from ._sansio.addresses import parse_host_port as parse_host_port
from ._sansio.addresses import wildcard_addresses as wildcard_addresses
from ._sansio.codecs import Codec as Codec
from ._sansio.codecs import Decoder as Decoder
from ._sansio.codecs import Delimited as Delimited
from ._sansio.codecs import LengthPrefixed as LengthPrefixed
from ._sansio.codecs import Lines as Lines
from ._sansio.codecs import Netstring as Netstring
from ._sansio.codecs import Varint as Varint
from ._sansio.framing import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from ._sansio.framing import DEFAULT_MAX_LINE_SIZE as DEFAULT_MAX_LINE_SIZE
from ._sansio.framing import BufferedDecoder as BufferedDecoder
from ._sansio.matching import ReplyMatcher as ReplyMatcher
from ._sansio.matching import match_address_only as match_address_only
from ._sansio.matching import match_bytes as match_bytes
from ._sansio.matching import match_coap_message_id as match_coap_message_id
from ._sansio.matching import match_dns_id as match_dns_id
from ._sansio.ordering import interleave_families as interleave_families
from ._sansio.proxy import ProxyHeader as ProxyHeader
from ._sansio.replies import DEFAULT_REPLY_CACHE_BYTES as DEFAULT_REPLY_CACHE_BYTES
from ._sansio.replies import DEFAULT_REPLY_CACHE_LIFETIME as DEFAULT_REPLY_CACHE_LIFETIME
from ._sansio.replies import DEFAULT_REPLY_CACHE_SIZE as DEFAULT_REPLY_CACHE_SIZE
from ._sansio.retry import RetryPolicy as RetryPolicy
from ._sansio.retry import RttEstimator as RttEstimator
from .errors import AddressError as AddressError
from .errors import AddressTypeError as AddressTypeError
from .errors import ConnectError as ConnectError
from .errors import DatagramTooLarge as DatagramTooLarge
from .errors import FrameTimeout as FrameTimeout
from .errors import FrameTooLarge as FrameTooLarge
from .errors import FramingError as FramingError
from .errors import IncompleteFrame as IncompleteFrame
from .errors import InvalidMessage as InvalidMessage
from .errors import PeerUnreachable as PeerUnreachable
from .errors import ProtocolError as ProtocolError
from .errors import ProxyProtocolError as ProxyProtocolError
from .errors import RequestTimeout as RequestTimeout
from .errors import ResolutionError as ResolutionError
from .errors import TrionetError as TrionetError

__version__ = "0.1.0.dev0"

__all__ = [
    # Message channels and their codecs
    "MessageChannel",
    "MessageChannelStatistics",
    "ActivityTracker",
    "Codec",
    "Decoder",
    "BufferedDecoder",
    "LengthPrefixed",
    "Varint",
    "Delimited",
    "Lines",
    "Netstring",
    "DEFAULT_READ_SIZE",
    "DEFAULT_ABORT_TIMEOUT",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    # Addresses and resolution
    "Address",
    "HostPort",
    "parse_host_port",
    "wildcard_addresses",
    "interleave_families",
    "Resolver",
    "ResolverStatistics",
    "resolve",
    "default_resolver",
    "ResolverBackend",
    "LookupResult",
    "GetaddrinfoBackend",
    "DnsPythonBackend",
    "DEFAULT_TTL",
    "DEFAULT_NEGATIVE_TTL",
    "DEFAULT_MAX_CONCURRENT_LOOKUPS",
    "DEFAULT_LOOKUP_TIMEOUT",
    "DEFAULT_MAX_CACHE_ENTRIES",
    "DEFAULT_MAX_CACHE_BYTES",
    "FamilyAnswer",
    "resolve_happy_eyeballs",
    "RESOLUTION_DELAY",
    "bind_listening_sockets",
    "listen_fds",
    # TCP and Unix-socket servers and clients
    "serve_tcp",
    "open_tcp_server",
    "TCPServer",
    "TCPConnection",
    "ProxyHeader",
    "ServerStatistics",
    "connect_tcp",
    "ConnectAttempt",
    "serve_unix",
    "open_unix_server",
    "UnixServer",
    "UnixConnection",
    "connect_unix",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "DEFAULT_SHUTDOWN_GRACE",
    "HAPPY_EYEBALLS_DELAY",
    # UDP
    "open_udp_endpoint",
    "UDPEndpoint",
    "UDPEndpointStatistics",
    "Datagram",
    "PeerUnreachable",
    "RetryPolicy",
    "RttEstimator",
    "ReplyMatcher",
    "match_dns_id",
    "match_coap_message_id",
    "match_bytes",
    "match_address_only",
    "serve_udp",
    "open_udp_server",
    "UDPServer",
    "UDPServerStatistics",
    "DEFAULT_MAX_RECEIVE_SIZE",
    "DEFAULT_RECEIVE_QUEUE_SIZE",
    "DEFAULT_RECEIVE_QUEUE_BYTES",
    "DEFAULT_MAX_OUTSTANDING_PER_PEER",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_REPLY_CACHE_LIFETIME",
    "DEFAULT_REPLY_CACHE_SIZE",
    "DEFAULT_REPLY_CACHE_BYTES",
    # Observability
    "Event",
    "EventLog",
    "LoggingObserver",
    "Observer",
    # Errors
    "TrionetError",
    "FramingError",
    "FrameTooLarge",
    "ProtocolError",
    "ProxyProtocolError",
    "InvalidMessage",
    "IncompleteFrame",
    "FrameTimeout",
    "AddressError",
    "AddressTypeError",
    "ResolutionError",
    "ConnectError",
    "DatagramTooLarge",
    "RequestTimeout",
]


def _evaluate_annotations(cls: type) -> None:
    """Replace a class's own string annotations by what they name.

    ``typing.get_type_hints()`` evaluates them in the module that ``__module__``
    names: once that is the public module, which lacks the private module's
    imports, it could not (``Literal``, ``socket``...).
    """
    own = inspect.get_annotations(cls)
    if not own:
        return
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError:  # a name imported for type checkers only: leave them as text
        return
    cls.__annotations__ = {name: hints[name] for name in own}


def _publish(module: types.ModuleType) -> None:
    """Make the classes and functions in ``module.__all__`` report ``module`` as theirs.

    They are defined in private modules (``trionet._adapters.channel``...). Reporting
    the module users import them from, as trio does, gives tracebacks, reprs,
    pickles and the reference documentation the public path, and keeps the
    private layout free to change. Methods and classes defined inside an
    exported class follow it. Constants, instances and type aliases keep their
    type's module (``__module__`` is not theirs to report).
    """
    public = module.__name__
    seen: set[int] = set()

    def fix(obj: object, qualname: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (staticmethod, classmethod)):
            fix(obj.__func__, qualname)
        elif isinstance(obj, property):
            for accessor in (obj.fget, obj.fset, obj.fdel):
                fix(accessor, qualname)
        elif isinstance(obj, (type, types.FunctionType)):
            # Only what is defined here: a name exported under another name, or a
            # helper class stored on a class, keeps the module it can be found in.
            if obj.__qualname__ != qualname or not obj.__module__.startswith(public + "."):
                return
            if isinstance(obj, type):
                _evaluate_annotations(obj)
            obj.__module__ = public
            if isinstance(obj, type):
                for name, member in vars(obj).items():
                    fix(member, f"{qualname}.{name}")
            elif hasattr(obj, "__wrapped__"):  # a decorator's wrapper (functools.wraps)
                fix(obj.__wrapped__, qualname)

    for name in module.__all__:
        fix(getattr(module, name), name)


_publish(sys.modules[__name__])
