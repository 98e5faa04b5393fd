"""The soak scenarios: correctness checks at scale, shared by tests and a runner.

Each module runs one scenario in the caller's ``trio.run`` and returns a report
of what it measured with the contract violations it saw (``problems``):
``chaos`` (random cancellations on both sides of a channel), ``hostile``
(byte streams built to break the framing), ``peers`` (slow and silent peers),
``load`` (thousands of connections, then a graceful shutdown), ``udp`` (loss,
duplication and cancelled requests) and ``udp_proxy`` (a lossy, duplicating
proxy on real loopback); ``common`` holds what they share.

The tests in ``tests/test_soak_*.py`` run them at CI sizes and assert on the
reports; ``python -m tests.soak`` (``__main__.py``) runs them at full size,
each in a process of its own, and prints their figures. See
``docs/reliability.rst``.
"""
