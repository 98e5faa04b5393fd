"""Where trionet's random decisions draw from: a source that a test can seed.

trionet draws random numbers in one place today, the spread of a request's first
retransmission timeout (:class:`~trionet.RetryPolicy`, RFC 7252 section 4.8).
A policy given its own ``rng`` uses it; otherwise the trio adapters pass the
*current random source*, read from a context variable here: the global
:func:`random.random` unless someone set another. A
:class:`~trionet.testing.VirtualNetwork` sets one seeded from its own seed for
as long as it is installed, so that a simulated run is reproducible from that
seed alone.

A context variable, rather than a global, because it follows the task tree: the
tasks started inside ``with net.install():`` see the network's source, and other
trio runs (other threads) are untouched. Nothing here performs I/O.
"""

from __future__ import annotations

import contextvars
import random
from collections.abc import Callable

__all__ = ["RandomSource", "current_random", "random_source"]

#: Returns a float in [0, 1), as :func:`random.random` does.
RandomSource = Callable[[], float]

#: The source :func:`current_random` returns; set it with ``random_source.set()``
#: and restore it with ``random_source.reset(token)``.
random_source: contextvars.ContextVar[RandomSource] = contextvars.ContextVar(
    "trionet.random_source", default=random.random
)


def current_random() -> RandomSource:
    """The random source trionet draws from in the current context."""
    return random_source.get()
