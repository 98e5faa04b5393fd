"""Testing tools for trio networking code: a deterministic virtual network.

:class:`VirtualNetwork` simulates hosts, links (latency, jitter, loss,
duplication, reordering, bandwidth), partitions, black holes, crashes and DNS,
and plugs into trio's socket and resolver hooks, so unchanged code built on
:mod:`trio.socket` (``trio.open_tcp_stream``, ``trio.serve_tcp``, trionet)
runs on it, exactly and instantly under ``trio.testing.MockClock``.

:func:`check_message_channel` is a conformance suite for message channels, and
:func:`check_codec` one for codecs and their decoders.
"""

import sys

from .. import _publish
from ._check_channel import check_message_channel as check_message_channel
from ._check_codec import check_codec as check_codec
from ._vhost import VirtualHost as VirtualHost
from ._vlink import LinkConfig as LinkConfig
from ._vnet import VirtualNetwork as VirtualNetwork
from ._vsocket import VirtualSocket as VirtualSocket
from ._vtrace import NetworkStatistics as NetworkStatistics
from ._vtrace import TraceEvent as TraceEvent
from ._vtrace import format_trace as format_trace

__all__ = [
    "VirtualNetwork",
    "VirtualHost",
    "LinkConfig",
    "TraceEvent",
    "NetworkStatistics",
    "VirtualSocket",
    "format_trace",
    "check_message_channel",
    "check_codec",
]

_publish(sys.modules[__name__])
