"""The sans-IO core of trionet.

Nothing in this package performs I/O or imports trio, asyncio or the socket
layer: it is pure computation over bytes, addresses and timers, usable from any
event loop (the h11/wsproto pattern). ``tests/test_layering.py`` enforces this.
The trio adapters in the parent package build on it.
"""
