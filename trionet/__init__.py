"""trionet: nursery-scoped networking for trio.

Public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

from ._channel import MessageChannel as MessageChannel
from ._channel import MessageChannelStatistics as MessageChannelStatistics
from ._sansio.codecs import Codec as Codec
from ._sansio.codecs import Decoder as Decoder
from ._sansio.codecs import Delimited as Delimited
from ._sansio.codecs import LengthPrefixed as LengthPrefixed
from ._sansio.codecs import Lines as Lines
from ._sansio.codecs import Netstring as Netstring
from ._sansio.codecs import Varint as Varint
from .errors import AddressError as AddressError
from .errors import ConnectError as ConnectError
from .errors import DatagramTooLarge as DatagramTooLarge
from .errors import FrameTooLarge as FrameTooLarge
from .errors import FramingError as FramingError
from .errors import IncompleteFrame as IncompleteFrame
from .errors import InvalidMessage as InvalidMessage
from .errors import ProtocolError as ProtocolError
from .errors import RequestTimeout as RequestTimeout
from .errors import ResolutionError as ResolutionError
from .errors import TrionetError as TrionetError

__version__ = "0.1.0.dev0"

__all__ = [
    # Message channels and their codecs
    "MessageChannel",
    "MessageChannelStatistics",
    "Codec",
    "Decoder",
    "LengthPrefixed",
    "Varint",
    "Delimited",
    "Lines",
    "Netstring",
    # Errors
    "TrionetError",
    "FramingError",
    "FrameTooLarge",
    "ProtocolError",
    "InvalidMessage",
    "IncompleteFrame",
    "AddressError",
    "ResolutionError",
    "ConnectError",
    "DatagramTooLarge",
    "RequestTimeout",
]
