"""Soak, chaos and hostile-input runs: what trionet survives, measured.

Run from the repository root (it needs the ``test`` extra: hypothesis, trustme)::

    .venv/bin/python -m tests.soak           # short form (the CI sizes), about 30 s
    .venv/bin/python -m tests.soak --long    # long form, about 5 minutes
    .venv/bin/python -m tests.soak --quick   # seconds; a smoke test, numbers meaningless

The scenarios are the code the tests in ``tests/test_soak_*.py`` run (the tests
run the short form's sizes, or smaller where noted); each is a module of this
package:

chaos (``tests/soak/chaos.py``)
    Clients and an echo server with a codec over loopback, every ``send()`` and
    ``receive()`` on both sides under a random ``move_on_after``: no frame
    corrupted, lost after a ``send()`` returned, duplicated or reordered; no
    task or file descriptor left over.
hostile (``tests/soak/hostile.py``)
    Hypothesis-drawn hostile byte streams, then floods built to fill buffers,
    against a server for each codec, many connections at once: each ends with
    the documented error, well-behaved clients are served meanwhile, nothing is
    logged above WARNING, and the peak of Python allocations (tracemalloc)
    stays under a bound derived from ``max_size``, the read size and the
    connections open at once.
peers (``tests/soak/peers.py``)
    Slow-loris and silent connections against a server with ``frame_timeout``
    and ``idle_timeout``, on real sockets under a virtual clock: all shed on
    time, a well-behaved client served within its deadline throughout.
load (``tests/soak/load.py``)
    Thousands of clients connected at once to one echo server over loopback,
    each echoing numbered messages, then a graceful shutdown while a few
    handlers are busy and every other connection is open and quiet: all
    served, the busy requests answered, the shutdown within its grace plus
    one second, no connection counted active and one close event each after.
udp-cancel (``tests/soak/udp.py``)
    ``request()`` cancelled at random moments during its retransmissions over
    real loopback: every request ends by its cancellation, and file
    descriptors and tasks are the same before and after.
udp-proxy (``tests/soak/udp_proxy.py``)
    ``serve_udp`` with duplicate suppression behind a loopback proxy that drops
    30 % and duplicates 10 % of datagrams each way: every request answered
    with its own reply, each handled exactly once.
udp (``tests/soak/udp.py``)
    Requests over trionet's virtual network at 20% loss and 5% duplication
    each way, against ``serve_udp`` with duplicate suppression: every request
    answered, each handled exactly once.

Each scenario runs in a fresh process (so that its peak RSS is its own); its
figures are printed as a table, followed by ``PASS:`` or ``FAIL:`` and the
violations. The exit status is 1 if any scenario failed. ``--json PATH`` also
writes every figure; ``--only chaos,udp`` runs some scenarios; ``--seed N``
changes the random choices. The machine line and the tables are formatted as
the benchmarks' are (``benchmarks/_common.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from benchmarks._common import machine_description, markdown_table

from .chaos import ChaosReport, run_chaos
from .common import peak_rss, reset_peak_rss, tls_contexts
from .hostile import CODECS, AttackReport, Hostile, attack, flood_streams, hostile_streams
from .load import LoadReport, run_load
from .peers import PeersReport, run_slow_and_idle
from .udp import CancelReport, UdpReport, run_request_cancellations, run_udp_under_loss
from .udp_proxy import ProxyReport, run_udp_behind_proxy

__all__ = ["FORMS", "Sizes", "main"]

T = TypeVar("T")

SCENARIOS: Final = ("chaos", "hostile", "peers", "load", "udp-cancel", "udp-proxy", "udp")


@dataclass(frozen=True)
class Sizes:
    """How large each scenario runs in one form."""

    chaos_clients: int
    chaos_messages: int
    hostile_per_codec: int
    flood_per_codec: int
    flood_bytes: int
    slow: int
    idle: int
    udp_requests: int
    load_connections: int
    load_messages: int
    udp_cancellations: int
    udp_proxy_requests: int


#: The forms: ``short`` is what CI runs (tests/test_soak_*.py), ``long`` the soak.
FORMS: Final = {
    "quick": Sizes(20, 2_000, 20, 20, 1 << 16, 20, 20, 500, 50, 5, 50, 100),
    "short": Sizes(200, 100_000, 200, 100, 1 << 20, 500, 500, 10_000, 2_000, 10, 1_000, 2_000),
    "long": Sizes(200, 1_000_000, 1_000, 1_000, 1 << 20, 2_000, 2_000, 100_000, 5_000, 40, 10_000, 20_000),
}
#: Hostile connections open at once.
HOSTILE_CONCURRENCY: Final = 50


@dataclass
class Outcome:
    """One scenario's result: its figures as a table, and its violations."""

    name: str
    rows: list[Sequence[str]]
    problems: list[str]
    data: dict[str, Any]
    headers: Sequence[str] = ("measurement", "value")


def _run(fn: Callable[[], Awaitable[T]], *, virtual_time: bool = False) -> tuple[T, int]:
    """Run ``fn`` in a fresh ``trio.run``; return its result and the peak RSS meanwhile."""
    reset_peak_rss()
    clock = trio.testing.MockClock(autojump_threshold=0) if virtual_time else None
    result = trio.run(fn, clock=clock)
    return result, peak_rss()


def _mib(size: float) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _count(n: int) -> str:
    return f"{n:,}"


def _chaos_rows(report: ChaosReport, rss: int) -> list[str]:
    return [
        _count(report.clients),
        _count(report.attempted),
        _count(report.delivered),
        _count(report.echoed),
        f"{report.cancelled_client_sends:,} / {report.cancelled_server_sends:,}",
        f"{report.cancelled_client_receives:,} / {report.cancelled_server_receives:,}",
        _count(report.sends_finished_after_cancel),
        _count(report.receives_cancelled_with_bytes_buffered),
        f"{report.slowest_send_after_cancel:.2f} s",
        _count(report.broken_connections),
        _count(report.corrupted),
        f"{report.tasks_before} / {report.tasks_after}",
        f"{report.fds_before} / {report.fds_after}",
        _mib(rss),
        f"{report.seconds:.1f} s",
    ]


_CHAOS_MEASUREMENTS: Final = (
    "clients",
    "messages attempted",
    "delivered (client send() returned)",
    "echoed (handler send() returned)",
    "cancelled sends: client / server",
    "cancelled receives: client / server",
    "sends that returned after their timeout fired",
    "receives cancelled with bytes buffered",
    "slowest send() to return after its timeout",
    "connections broken by abort_timeout",
    "corrupted frames",
    "tasks before / after",
    "fds before / after",
    "peak RSS",
    "time",
)


def _chaos(sizes: Sizes, seed: int) -> Outcome:
    plain: ChaosReport
    plain, plain_rss = _run(
        lambda: run_chaos(clients=sizes.chaos_clients, messages=sizes.chaos_messages, seed=seed)
    )
    # The other write paths (TLS: whole writes shielded; idle tracking) at a tenth.
    contexts = tls_contexts()
    tls: ChaosReport
    tls, tls_rss = _run(
        lambda: run_chaos(
            clients=max(1, sizes.chaos_clients // 2), messages=max(1, sizes.chaos_messages // 10),
            seed=seed, tls=contexts, idle_timeout=3600.0,
        )
    )
    columns = zip(_CHAOS_MEASUREMENTS, _chaos_rows(plain, plain_rss), _chaos_rows(tls, tls_rss),
                  strict=True)
    problems = plain.problems + [f"TLS: {problem}" for problem in tls.problems]
    data = {
        "tcp": dataclasses.asdict(plain) | {"peak_rss": plain_rss},
        "tls_idle_timeout": dataclasses.asdict(tls) | {"peak_rss": tls_rss},
    }
    return Outcome(
        "chaos", [list(row) for row in columns], problems, data,
        headers=("measurement", "TCP", "TLS + idle_timeout"),
    )


def draw_examples(name: str, count: int, seed: int) -> list[Hostile]:
    """``count`` hostile streams for codec ``name``, drawn by hypothesis (no shrinking)."""
    drawn: list[Hostile] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=count, database=None, phases=[Phase.generate], deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_streams(name))
    def collect(hostile: Hostile) -> None:
        drawn.append(hostile)

    collect()
    return drawn


_ENDINGS: Final = ("EndOfChannel", "IncompleteFrame", "FrameTooLarge", "ProtocolError")
_HOSTILE_HEADERS: Final = (
    "codec", "streams", "connections", "MiB offered", *_ENDINGS, "good clients served",
    "peak traced", "bound", "fds before/after", "time",
)


def _hostile(sizes: Sizes, seed: int) -> Outcome:
    rows: list[Sequence[str]] = []
    problems: list[str] = []
    data: dict[str, Any] = {}
    started = time.perf_counter()
    reset_peak_rss()
    for name in CODECS:
        drawn = draw_examples(name, sizes.hostile_per_codec, seed)
        floods = flood_streams(name, sizes.flood_per_codec, sizes.flood_bytes)
        for kind, streams in (("drawn", drawn), ("flood", floods)):
            report: AttackReport = trio.run(
                functools.partial(
                    attack, name, streams, concurrency=HOSTILE_CONCURRENCY, good_every=10,
                    trace_memory=True, time_limit=600,
                )
            )
            rows.append([
                name, kind, _count(report.connections), f"{report.bytes_offered / (1 << 20):.1f}",
                *(_count(report.endings.get(ending, 0)) for ending in _ENDINGS),
                _count(report.good_clients), _mib(report.peak_memory), _mib(report.memory_bound),
                f"{report.fds_before}/{report.fds_after}", f"{report.seconds:.1f} s",
            ])
            problems.extend(f"{name}, {kind}: {problem}" for problem in report.problems)
            data[f"{name}/{kind}"] = dataclasses.asdict(report)
    total = time.perf_counter() - started
    rss = peak_rss()
    rows.append(["all", "", "", "", "", "", "", "", "", f"RSS {_mib(rss)}", "", "", f"{total:.1f} s"])
    data["peak_rss"] = rss
    return Outcome("hostile", rows, problems, data, headers=_HOSTILE_HEADERS)


def _peers(sizes: Sizes, seed: int) -> Outcome:
    del seed  # nothing random
    report: PeersReport
    report, rss = _run(lambda: run_slow_and_idle(slow=sizes.slow, idle=sizes.idle), virtual_time=True)

    def span(times: list[float]) -> str:
        return f"{min(times):.2f} to {max(times):.2f} s" if times else "none"

    rows: list[Sequence[str]] = [
        ("slow lorises (1 byte/s) / silent peers", f"{report.slow:,} / {report.idle:,}"),
        ("slow lorises shed after first byte (frame_timeout 10 s)", span(report.slow_shed_after)),
        ("silent peers shed after connecting (idle_timeout 30 s)", span(report.idle_shed_after)),
        ("FrameTimeout in handlers / idle sheds", f"{report.frame_timeouts:,} / {report.idle_sheds:,}"),
        ("well-behaved probes served / slowest (deadline 1 s)",
         f"{len(report.probe_latencies)} / {max(report.probe_latencies, default=0):.3f} s"),
        ("tasks before / after", f"{report.tasks_before} / {report.tasks_after}"),
        ("fds before / after", f"{report.fds_before} / {report.fds_after}"),
        ("peak RSS", _mib(rss)),
        ("time (virtual / wall)", f"{report.virtual_seconds:.1f} s / {report.seconds:.1f} s"),
    ]
    data = dataclasses.asdict(report) | {"peak_rss": rss}
    for key in ("slow_shed_after", "idle_shed_after", "probe_latencies"):
        values = data.pop(key)
        data[key] = {"count": len(values), "min": min(values, default=None), "max": max(values, default=None)}
    return Outcome("peers", rows, report.problems, data)


#: The load scenario's shutdown: a few handlers busy for half a second, a 5 s grace.
LOAD_BUSY: Final = 20
LOAD_BUSY_SECONDS: Final = 0.5
LOAD_GRACE: Final = 5.0


def _load(sizes: Sizes, seed: int) -> Outcome:
    report: LoadReport
    report, rss = _run(
        lambda: run_load(
            connections=sizes.load_connections, messages=sizes.load_messages,
            busy=min(LOAD_BUSY, sizes.load_connections), busy_seconds=LOAD_BUSY_SECONDS,
            grace=LOAD_GRACE, seed=seed,
        )
    )
    rows: list[Sequence[str]] = [
        ("connections at once / messages each", f"{report.connections:,} / {report.messages:,}"),
        ("echoes intact and in order", _count(report.echoed)),
        ("all connected after", f"{report.connect_seconds:.2f} s"),
        ("echo phase (first message to last echo)", f"{report.echo_seconds:.2f} s"),
        ("busy handlers at shutdown / answered", f"{report.busy} / {report.busy_answered}"),
        ("shutdown took (grace)", f"{report.shutdown_seconds:.2f} s ({report.grace:g} s)"),
        ("accepted / close events / active after",
         f"{report.accepted:,} / {report.closed_events:,} / {report.active_after}"),
        ("tasks before / after", f"{report.tasks_before} / {report.tasks_after}"),
        ("fds before / after", f"{report.fds_before} / {report.fds_after}"),
        ("peak traced / peak RSS", f"{_mib(report.peak_traced)} / {_mib(rss)}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    return Outcome("load", rows, report.problems, dataclasses.asdict(report) | {"peak_rss": rss})


def _udp_cancel(sizes: Sizes, seed: int) -> Outcome:
    report: CancelReport
    report, rss = _run(lambda: run_request_cancellations(requests=sizes.udp_cancellations, seed=seed))
    rows: list[Sequence[str]] = [
        ("requests cancelled during retransmission", f"{report.cancelled:,} of {report.requests:,}"),
        ("transmissions the silent peer received", _count(report.transmissions)),
        ("tasks before / after", f"{report.tasks_before} / {report.tasks_after}"),
        ("fds before / after", f"{report.fds_before} / {report.fds_after}"),
        ("peak traced / peak RSS", f"{_mib(report.peak_memory)} / {_mib(rss)}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    return Outcome("udp-cancel", rows, report.problems, dataclasses.asdict(report) | {"peak_rss": rss})


def _udp_proxy(sizes: Sizes, seed: int) -> Outcome:
    report: ProxyReport
    report, rss = _run(lambda: run_udp_behind_proxy(requests=sizes.udp_proxy_requests, seed=seed))
    rows: list[Sequence[str]] = [
        ("requests / client endpoints", f"{report.requests:,} / {report.clients}"),
        ("proxy loss / duplication each way", f"{report.loss:.0%} / {report.duplicate:.0%}"),
        ("answered with their own reply", _count(report.answered)),
        ("handler runs / ids handled twice", f"{report.handler_runs:,} / {report.handled_twice:,}"),
        ("datagrams the proxy got / dropped / duplicated",
         f"{report.forwarded:,} / {report.dropped:,} / {report.duplicated:,}"),
        ("client retransmissions", _count(report.retransmissions)),
        ("tasks before / after", f"{report.tasks_before} / {report.tasks_after}"),
        ("fds before / after", f"{report.fds_before} / {report.fds_after}"),
        ("peak traced / peak RSS", f"{_mib(report.peak_memory)} / {_mib(rss)}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    return Outcome("udp-proxy", rows, report.problems, dataclasses.asdict(report) | {"peak_rss": rss})


def _udp(sizes: Sizes, seed: int) -> Outcome:
    report: UdpReport
    report, rss = _run(
        lambda: run_udp_under_loss(requests=sizes.udp_requests, seed=seed), virtual_time=True
    )
    rows: list[Sequence[str]] = [
        ("requests (loss / duplication each way)",
         f"{report.requests:,} ({report.loss:.0%} / {report.duplicate:.0%})"),
        ("replies / handler runs / handled twice",
         f"{report.replies:,} / {report.handler_runs:,} / {report.handled_twice:,}"),
        ("datagrams sent / lost / delivered",
         f"{report.datagrams_sent:,} / {report.datagrams_dropped:,} / {report.datagrams_delivered:,}"),
        ("client retransmissions", _count(report.retransmissions)),
        ("duplicates replayed from the cache / dropped in progress",
         f"{report.duplicates_replayed:,} / {report.duplicates_dropped:,}"),
        ("tasks before / after", f"{report.tasks_before} / {report.tasks_after}"),
        ("peak RSS", _mib(rss)),
        ("time (virtual / wall)", f"{report.virtual_seconds:.1f} s / {report.seconds:.1f} s"),
    ]
    return Outcome("udp", rows, report.problems, dataclasses.asdict(report) | {"peak_rss": rss})


_RUNNERS: Final[dict[str, Callable[[Sizes, int], Outcome]]] = {
    "chaos": _chaos,
    "hostile": _hostile,
    "peers": _peers,
    "load": _load,
    "udp-cancel": _udp_cancel,
    "udp-proxy": _udp_proxy,
    "udp": _udp,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak",
        description="Soak, chaos and hostile-input runs against trionet, with measured figures.",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--long", action="store_true", help="the long form: larger counts")
    form.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds sizes, timeouts and networks")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    # Run the scenarios here rather than one subprocess each (how each runs).
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    return parser


def _run_scenarios(chosen: list[str], sizes: Sizes, seed: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        outcome = _RUNNERS[name](sizes, seed)
        outcomes.append(outcome)
        print(markdown_table(outcome.headers, outcome.rows))
        if outcome.problems:
            print(f"\nFAIL: {name}: {len(outcome.problems)} violations")
            for problem in outcome.problems[:20]:
                print(f"  - {problem}")
        else:
            print(f"\nPASS: {name}")
        sys.stdout.flush()
    return outcomes


def _run_in_subprocesses(
    chosen: list[str], form: str, seed: int
) -> tuple[dict[str, Any], bool]:
    # One process per scenario: each starts from the same memory state, so the
    # peak RSS reported is the scenario's own.
    scenarios: dict[str, Any] = {}
    failed = False
    flags = {"long": ["--long"], "quick": ["--quick"], "short": []}[form]
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            path = os.path.join(tmp, f"{name}.json")
            done = subprocess.run(
                [sys.executable, *(f"-W{option}" for option in sys.warnoptions),
                 "-m", "tests.soak", *flags, "--only", name,
                 "--seed", str(seed), "--in-process", "--json", path],
                check=False,
            )
            failed |= done.returncode != 0
            if os.path.exists(path):
                with open(path, encoding="utf-8") as result:
                    scenarios.update(json.load(result)["scenarios"])
            else:
                scenarios[name] = {"problems": [f"exited with status {done.returncode}"]}
    return scenarios, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    form = "long" if args.long else "quick" if args.quick else "short"
    sizes = FORMS[form]
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    if not args.in_process:
        print(f"trionet soak, {form} form, seed {args.seed}")
        print(f"Machine: {machine_description()}", flush=True)
    if args.in_process or len(chosen) == 1:
        outcomes = _run_scenarios(chosen, sizes, args.seed)
        scenarios = {o.name: {"problems": o.problems, "figures": o.data} for o in outcomes}
        failed = any(outcome.problems for outcome in outcomes)
    else:
        scenarios, failed = _run_in_subprocesses(chosen, form, args.seed)
    if args.json:
        report = {
            "form": form,
            "seed": args.seed,
            "machine": machine_description(),
            "sizes": dataclasses.asdict(sizes),
            "scenarios": scenarios,
        }
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
