"""trionet's pytest plugin: a virtual network, and a server on it, one fixture each.

pytest loads it through the ``pytest11`` entry point whenever trionet is
installed. It only defines fixtures and a marker, so tests that do not ask for
them are unaffected. The fixtures are async: they need `pytest-trio
<https://pytest-trio.readthedocs.io>`__ (``trio_mode = true``, or
``@pytest.mark.trio`` on the test).

* ``virtual_network``: a :class:`~trionet.testing.VirtualNetwork` installed for
  the test, which runs on trio's autojump clock
  (``MockClock(autojump_threshold=0)``, unless it asks for a clock of its own):
  host ``server`` (``10.0.0.1`` and ``fd00::1``, named ``server.test``) and
  host ``client`` (``10.0.0.2``, ``fd00::2``), which is where the test's own
  code runs. ``@pytest.mark.virtual_network(latency=0.01, loss=0.1, seed=3)``
  sets the link between them (any :class:`~trionet.testing.LinkConfig`
  option) and the seed.
* ``virtual_server``: starts a server on host ``server`` in one line, for the
  length of the test::

      async def test_echo(virtual_server: StartServer) -> None:
          await virtual_server(trionet.serve_tcp, echo, 7, codec=trionet.Lines())
          async with await trionet.connect_tcp("server.test", 7, codec=trionet.Lines()) as conn:
              await conn.channel.send(b"hi")
              assert await conn.channel.receive() == b"hi"
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from ._vnet import VirtualNetwork

__all__ = ["StartServer", "virtual_network", "virtual_server"]

#: The hosts and the name of the network the fixtures build.
SERVER_ADDRESSES = ("10.0.0.1", "fd00::1")
CLIENT_ADDRESSES = ("10.0.0.2", "fd00::2")
SERVER_NAME = "server.test"


class StartServer(Protocol):
    """The ``virtual_server`` fixture: ``await virtual_server(serve, handler, port, **options)``.

    ``serve`` is a startable server (:func:`trionet.serve_tcp`,
    :func:`trionet.serve_udp`, ``trio.serve_tcp``...); it runs on host
    ``server`` until the test ends, and what its ``task_status.started()``
    reported (the server object) is returned.
    """

    def __call__(
        self, serve: Callable[..., Awaitable[object]], handler: object, port: int, /,
        **options: object,
    ) -> Awaitable[Any]: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_network(seed=0, **link): the seed and the client-server link "
        "(LinkConfig options) of trionet's virtual_network fixture",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-trio picks the run's clock from the test's own arguments only, so
    # a fixture cannot ask for one; its "trio" marker can name the runner,
    # which here picks the autojump clock unless the test asked for a clock
    # itself. (trio_mode marks every async test with run=trio.run: the first
    # marker found wins, so this one goes first; another runner, such as
    # qtrio's, is left alone.)
    for item in items:
        if "virtual_network" in getattr(item, "fixturenames", ()) and all(
            marker.kwargs.get("run", trio.run) is trio.run for marker in item.iter_markers("trio")
        ):
            item.add_marker(pytest.mark.trio(run=_run_on_autojump_clock), append=False)


def _run_on_autojump_clock(
    fn: Callable[[], Awaitable[object]], *, clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> object:
    return trio.run(fn, clock=clock or trio.testing.MockClock(autojump_threshold=0),
                    instruments=instruments)


@pytest.fixture
async def virtual_network(request: pytest.FixtureRequest) -> AsyncIterator[VirtualNetwork]:
    """A :class:`~trionet.testing.VirtualNetwork` with hosts ``server`` and ``client``, installed."""
    marker = request.node.get_closest_marker("virtual_network")
    options = dict(marker.kwargs) if marker is not None else {}
    network = VirtualNetwork(seed=options.pop("seed", 0))
    network.add_host("server", *SERVER_ADDRESSES)
    network.add_host("client", *CLIENT_ADDRESSES)
    network.set_dns(SERVER_NAME, *SERVER_ADDRESSES)
    if options:
        network.link("client", "server", **options)
    with network.install(default_host="client"):
        yield network


@pytest.fixture
async def virtual_server(virtual_network: VirtualNetwork, nursery: trio.Nursery) -> StartServer:
    """Start a server on host ``server`` of ``virtual_network``, for the rest of the test."""

    async def start(
        serve: Callable[..., Awaitable[object]], handler: object, port: int, /, **options: object
    ) -> Any:
        with virtual_network.host("server"):
            return await nursery.start(functools.partial(serve, handler, port, **options))

    return start
