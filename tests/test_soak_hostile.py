"""Hostile input against a real server over loopback, for every codec.

Short form of ``python -m tests.soak`` (see docs/reliability.rst): hypothesis
draws hostile streams (random bytes, oversized headers, truncated frames,
delimiters past the limit, endless varints, malformed netstrings) and a server
must end each connection with the documented error, keep serving well-behaved
clients, log nothing above WARNING and hold bounded memory.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.soak.hostile import CODECS, attack, flood_streams, hostile_streams

EXAMPLES_PER_CODEC = 40
FLOOD_CONNECTIONS = 100
FLOOD_CONCURRENCY = 50
FLOOD_BYTES = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def frozen_heap() -> Iterator[None]:
    """Keep the objects alive before these tests out of every garbage collection.

    Each hypothesis example counts file descriptors before and after its attack,
    each count after a full ``gc.collect()`` (so that sockets only garbage holds
    are closed first). With the session's heap scanned each time, those
    collections took three quarters of this module's time (about 16 s of 21 s,
    some 400 of them at 30-40 ms). Frozen (``gc.freeze``), the objects that were
    alive before the first test here are not scanned; everything the attacks
    create is collected as before, so the counts, and what they catch, are the
    same.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.mark.parametrize("name", list(CODECS))
@settings(max_examples=EXAMPLES_PER_CODEC, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_each_hostile_connection_ends_with_its_documented_error_and_others_are_served(
    name: str, data: st.DataObject
) -> None:
    streams = data.draw(st.lists(hostile_streams(name), min_size=1, max_size=4), label="streams")
    for hostile in streams:
        event(hostile.kind)
    report = await attack(name, streams, concurrency=1, good_every=1, time_limit=30)
    # Each ended as the sans-IO decoder says it must (same frames, same error
    # at the same offset), no task or descriptor was left, nothing logged
    # above WARNING: see tests/soak/hostile.py.
    assert report.problems == []
    # A bad peer is worth an INFO line at most.
    assert set(report.log_levels) <= {"DEBUG", "INFO"}
    # One well-behaved client after each hostile one, and one at the end.
    assert report.good_clients == len(streams) + 1
    assert sum(report.endings.values()) == len(streams)


@pytest.mark.parametrize("name", list(CODECS))
async def test_a_flood_of_hostile_peers_holds_memory_within_the_limits(name: str) -> None:
    streams = flood_streams(name, FLOOD_CONNECTIONS, FLOOD_BYTES)
    report = await attack(
        name, streams, concurrency=FLOOD_CONCURRENCY, good_every=10, trace_memory=True, time_limit=60
    )
    assert report.problems == []
    assert report.good_clients == FLOOD_CONNECTIONS // 10 + 1
    half = FLOOD_CONNECTIONS // 2
    assert report.endings == {"FrameTooLarge": half, "IncompleteFrame": half}
    # The bound means something: well below what the peers sent at once.
    assert report.memory_bound < FLOOD_CONCURRENCY * FLOOD_BYTES
    assert 0 < report.peak_memory <= report.memory_bound
