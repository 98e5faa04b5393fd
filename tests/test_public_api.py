"""The public namespaces speak one vocabulary: public paths, named defaults, picklable errors.

* Every class and function in ``trionet.__all__`` and ``trionet.testing.__all__``
  reports the module users import it from, as trio's names do, so tracebacks,
  reprs, pickles and the reference never show a private path.
* Every exported default is the value the entry points that take the option
  use, so code that derives its settings from ``trionet.DEFAULT_*`` gets what
  it would get by passing nothing.
* Every exception in ``trionet.errors`` survives pickling (a worker process, a
  ``concurrent.futures`` pool), message, attributes and notes included.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import traceback
import types
import typing
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

import trionet
import trionet.errors
import trionet.testing

PUBLIC_MODULES = [trionet, trionet.testing]


def public_names() -> list[tuple[ModuleType, str]]:
    return [(module, name) for module in PUBLIC_MODULES for name in module.__all__]


def is_class_or_function(obj: object) -> bool:
    # A parametrised alias (Observer = Callable[[Event], None]) claims to be a
    # type on Python 3.10 (isinstance(list[int], type) was True there).
    if isinstance(obj, types.GenericAlias):
        return False
    return isinstance(obj, type) or inspect.isfunction(obj)


# ---- public __module__ --------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, name in public_names()
     if is_class_or_function(getattr(module, name))],
    ids=lambda value: value.__name__ if isinstance(value, ModuleType) else value,
)
def test_every_public_class_and_function_reports_the_module_it_is_imported_from(
    module: ModuleType, name: str
) -> None:
    obj = getattr(module, name)
    assert obj.__module__ == module.__name__
    assert obj.__qualname__ == name
    # The path it reports leads back to it (what pickle and Sphinx follow).
    assert getattr(importlib.import_module(obj.__module__), obj.__qualname__) is obj


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_the_methods_of_public_classes_report_the_public_module(module: ModuleType) -> None:
    private = []
    for name in module.__all__:
        cls = getattr(module, name)
        if not isinstance(cls, type):
            continue
        for attr, member in vars(cls).items():
            function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            # (Methods that collections.namedtuple writes keep their module.)
            if (inspect.isfunction(function) and function.__qualname__ == f"{name}.{attr}"
                    and function.__module__.startswith("trionet.")
                    and function.__module__ != module.__name__):
                private.append(f"{name}.{attr}: {function.__module__}")
    assert private == []


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, name in public_names() if isinstance(getattr(module, name), type)],
    ids=lambda value: value.__name__ if isinstance(value, ModuleType) else value,
)
def test_the_annotations_of_a_public_class_still_evaluate(module: ModuleType, name: str) -> None:
    # get_type_hints() evaluates string annotations in the module __module__ names.
    typing.get_type_hints(getattr(module, name))


def test_constants_and_instances_keep_their_values_and_types() -> None:
    # __module__ is not theirs to report; the fix-up must leave them alone.
    assert type(trionet.match_dns_id) is trionet.ReplyMatcher
    assert type(trionet.DEFAULT_RETRY_POLICY) is trionet.RetryPolicy
    assert isinstance(trionet.DEFAULT_IDLE_TIMEOUT, float)


def test_a_traceback_names_the_public_path_of_an_error() -> None:
    error = trionet.FrameTooLarge(10, 5)
    line = traceback.format_exception_only(type(error), error)[-1]
    assert line == "trionet.FrameTooLarge: frame of 10 bytes exceeds max_size=5\n"
    assert repr(trionet.IncompleteFrame(3)).startswith("IncompleteFrame(")
    assert repr(trionet.MessageChannel) == "<class 'trionet.MessageChannel'>"
    assert repr(trionet.testing.VirtualNetwork) == "<class 'trionet.testing.VirtualNetwork'>"


def test_trionet_errors_and_trionet_export_the_same_exceptions() -> None:
    for name in trionet.errors.__all__:
        assert name in trionet.__all__
        assert getattr(trionet, name) is getattr(trionet.errors, name)
    exceptions = {name for name in trionet.__all__
                  if isinstance(getattr(trionet, name), type)
                  and issubclass(getattr(trionet, name), BaseException)}
    assert exceptions == set(trionet.errors.__all__)


def test_a_bool_port_raises_the_public_address_type_error() -> None:
    with pytest.raises(trionet.AddressTypeError) as raised:
        trionet.Address("127.0.0.1", True)
    assert isinstance(raised.value, trionet.AddressError)
    assert isinstance(raised.value, TypeError)
    assert trionet.errors.AddressTypeError is trionet.AddressTypeError


# ---- exported defaults --------------------------------------------------------

# Each exported default, and every entry point that takes its option ("entry"
# is a name in trionet.__all__, a class standing for its constructor).
DEFAULT_USERS: dict[str, list[tuple[str, str]]] = {
    "DEFAULT_READ_SIZE": [
        ("MessageChannel", "read_size"),
        ("connect_tcp", "read_size"),
        ("connect_unix", "read_size"),
    ],
    "DEFAULT_ABORT_TIMEOUT": [
        ("MessageChannel", "abort_timeout"),
        ("connect_tcp", "abort_timeout"),
        ("connect_unix", "abort_timeout"),
        ("serve_tcp", "abort_timeout"),
        ("open_tcp_server", "abort_timeout"),
        ("serve_unix", "abort_timeout"),
        ("open_unix_server", "abort_timeout"),
    ],
    "DEFAULT_MAX_FRAME_SIZE": [("Varint", "max_size"), ("Netstring", "max_size")],
    "DEFAULT_MAX_LINE_SIZE": [("Delimited", "max_size"), ("Lines", "max_size")],
    "DEFAULT_TTL": [("Resolver", "ttl")],
    "DEFAULT_NEGATIVE_TTL": [("Resolver", "negative_ttl")],
    "DEFAULT_MAX_CONCURRENT_LOOKUPS": [("Resolver", "max_concurrent_lookups")],
    "DEFAULT_LOOKUP_TIMEOUT": [("Resolver", "lookup_timeout")],
    "DEFAULT_MAX_CACHE_ENTRIES": [("Resolver", "max_cache_entries")],
    "DEFAULT_MAX_CACHE_BYTES": [("Resolver", "max_cache_bytes")],
    "RESOLUTION_DELAY": [("resolve_happy_eyeballs", "resolution_delay"),
                         ("connect_tcp", "resolution_delay")],
    "HAPPY_EYEBALLS_DELAY": [("connect_tcp", "happy_eyeballs_delay")],
    "DEFAULT_IDLE_TIMEOUT": [
        ("serve_tcp", "idle_timeout"),
        ("open_tcp_server", "idle_timeout"),
        ("serve_unix", "idle_timeout"),
        ("open_unix_server", "idle_timeout"),
    ],
    "DEFAULT_FRAME_TIMEOUT": [
        ("connect_tcp", "frame_timeout"),
        ("connect_unix", "frame_timeout"),
        ("serve_tcp", "frame_timeout"),
        ("open_tcp_server", "frame_timeout"),
        ("serve_unix", "frame_timeout"),
        ("open_unix_server", "frame_timeout"),
    ],
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT": [
        ("serve_tcp", "tls_handshake_timeout"),
        ("open_tcp_server", "tls_handshake_timeout"),
        ("serve_unix", "tls_handshake_timeout"),
        ("open_unix_server", "tls_handshake_timeout"),
        ("connect_tcp", "tls_handshake_timeout"),
        ("connect_unix", "tls_handshake_timeout"),
    ],
    "DEFAULT_MAX_PENDING_HANDSHAKES": [
        ("serve_tcp", "max_pending_handshakes"),
        ("open_tcp_server", "max_pending_handshakes"),
        ("serve_unix", "max_pending_handshakes"),
        ("open_unix_server", "max_pending_handshakes"),
    ],
    "DEFAULT_SHUTDOWN_GRACE": [
        # shutdown(grace=None) and shutdown_nowait() use the server's shutdown_grace.
        ("serve_tcp", "shutdown_grace"),
        ("serve_unix", "shutdown_grace"),
        ("serve_udp", "shutdown_grace"),
        ("open_tcp_server", "shutdown_grace"),
        ("open_unix_server", "shutdown_grace"),
        ("open_udp_server", "shutdown_grace"),
    ],
    "DEFAULT_MAX_RECEIVE_SIZE": [
        ("open_udp_endpoint", "max_receive_size"),
        ("serve_udp", "max_receive_size"),
        ("open_udp_server", "max_receive_size"),
    ],
    "DEFAULT_RECEIVE_QUEUE_SIZE": [
        ("open_udp_endpoint", "receive_queue_size"),
        ("serve_udp", "receive_queue_size"),
        ("open_udp_server", "receive_queue_size"),
    ],
    "DEFAULT_RECEIVE_QUEUE_BYTES": [
        ("open_udp_endpoint", "receive_queue_bytes"),
        ("serve_udp", "receive_queue_bytes"),
        ("open_udp_server", "receive_queue_bytes"),
    ],
    "DEFAULT_MAX_OUTSTANDING_PER_PEER": [("open_udp_endpoint", "max_outstanding_per_peer")],
    "DEFAULT_RETRY_POLICY": [("UDPEndpoint.request", "policy")],
    "DEFAULT_MAX_CONCURRENCY": [("serve_udp", "max_concurrency"), ("open_udp_server", "max_concurrency")],
    "DEFAULT_REPLY_CACHE_LIFETIME": [("serve_udp", "reply_cache_lifetime"),
                                     ("open_udp_server", "reply_cache_lifetime")],
    "DEFAULT_REPLY_CACHE_SIZE": [("serve_udp", "reply_cache_size"), ("open_udp_server", "reply_cache_size")],
    "DEFAULT_REPLY_CACHE_BYTES": [("serve_udp", "reply_cache_bytes"),
                                  ("open_udp_server", "reply_cache_bytes")],
}

# Parameters named like an option whose default is deliberately not the constant.
NOT_THE_DEFAULT = {
    # A channel made directly has no frame timeout; the servers pass theirs.
    ("MessageChannel", "frame_timeout"),
    # None: DEFAULT_MAX_FRAME_SIZE capped by what the width can express (checked below).
    ("LengthPrefixed", "max_size"),
    # A count of bytes held, not the option.
    ("UDPServerStatistics", "reply_cache_bytes"),
}


def public_entry_points() -> Iterator[tuple[str, Callable[..., object]]]:
    """Every public function, class (its constructor) and public method, by name."""
    for name in trionet.__all__:
        obj = getattr(trionet, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif is_class_or_function(obj) and not issubclass(obj, BaseException):
            yield name, obj
            for attr in dir(obj):
                member = inspect.getattr_static(obj, attr)
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield f"{name}.{attr}", member


def entry_point(name: str) -> Callable[..., object]:
    return dict(public_entry_points())[name]


@pytest.mark.parametrize(
    ("constant", "entry", "parameter"),
    [(constant, entry, parameter)
     for constant, users in DEFAULT_USERS.items() for entry, parameter in users],
)
def test_an_exported_default_is_the_default_of_each_entry_point_that_takes_the_option(
    constant: str, entry: str, parameter: str
) -> None:
    default = inspect.signature(entry_point(entry)).parameters[parameter].default
    value = getattr(trionet, constant)
    assert default == value
    if not isinstance(value, (int, float)):
        assert default is value


def test_every_entry_point_that_takes_an_option_with_a_named_default_is_listed() -> None:
    options = {parameter for users in DEFAULT_USERS.values() for _, parameter in users}
    listed = {user for users in DEFAULT_USERS.values() for user in users}
    found = set()
    for name, function in public_entry_points():
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in options and parameter.default is not inspect.Parameter.empty:
                found.add((name, parameter.name))
    assert found - NOT_THE_DEFAULT == listed


def test_every_exported_default_is_checked_against_the_signatures() -> None:
    defaults = {name for name in trionet.__all__ if name.startswith("DEFAULT_") or name.endswith("_DELAY")}
    assert defaults == set(DEFAULT_USERS)


def test_length_prefixed_defaults_to_the_default_frame_size_where_its_width_allows() -> None:
    assert trionet.LengthPrefixed().max_size == trionet.DEFAULT_MAX_FRAME_SIZE
    assert trionet.LengthPrefixed(8).max_size == trionet.DEFAULT_MAX_FRAME_SIZE
    assert trionet.LengthPrefixed(1).max_size == 255


# ---- pickling errors --------------------------------------------------------------

ERROR_SAMPLES: dict[str, Callable[[], BaseException]] = {
    "TrionetError": lambda: trionet.TrionetError("something"),
    "FramingError": lambda: trionet.FramingError("bad framing"),
    "FrameTooLarge": lambda: trionet.FrameTooLarge(70000, 65536, 12, at_least=True),
    "ProtocolError": lambda: trionet.ProtocolError("not a digit", 7),
    "ProxyProtocolError": lambda: trionet.ProxyProtocolError("PROXY v1 line is malformed"),
    "InvalidMessage": lambda: trionet.InvalidMessage("the message contains the delimiter"),
    "IncompleteFrame": lambda: trionet.IncompleteFrame(3),
    "FrameTimeout": lambda: trionet.FrameTimeout(60.0, 5),
    "AddressError": lambda: trionet.AddressError("bad address"),
    "AddressTypeError": lambda: trionet.AddressTypeError("port must be an int, not True"),
    "ResolutionError": lambda: trionet.ResolutionError("example.invalid", 80, "Name or service not known"),
    "ConnectError": lambda: trionet.ConnectError("all attempts failed", ("one", "two")),
    "DatagramTooLarge": lambda: trionet.DatagramTooLarge(70000, 65507),
    "PeerUnreachable": lambda: trionet.PeerUnreachable(trionet.Address("192.0.2.1", 53), "host unreachable"),
    "RequestTimeout": lambda: trionet.RequestTimeout("no reply after 5 attempts", 5),
}


def test_every_error_class_has_a_pickling_sample() -> None:
    assert set(ERROR_SAMPLES) == set(trionet.errors.__all__)


def same_error(original: BaseException, copied: BaseException) -> None:
    assert type(copied) is type(original)
    assert str(copied) == str(original)
    assert repr(copied) == repr(original)
    assert copied.args == original.args
    assert vars(copied) == vars(original)
    if isinstance(original, OSError):
        assert isinstance(copied, OSError)
        assert (copied.errno, copied.strerror) == (original.errno, original.strerror)


@pytest.mark.parametrize("name", sorted(ERROR_SAMPLES))
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_an_error_survives_pickling(name: str, protocol: int) -> None:
    error = ERROR_SAMPLES[name]()
    # Attributes set after construction (as add_note() sets __notes__) come along.
    setattr(error, "__notes__", ["while testing"])  # noqa: B010
    same_error(error, pickle.loads(pickle.dumps(error, protocol)))


@pytest.mark.parametrize("name", sorted(ERROR_SAMPLES))
def test_an_error_survives_copying(name: str) -> None:
    error = ERROR_SAMPLES[name]()
    same_error(error, copy.copy(error))
    same_error(error, copy.deepcopy(error))


def test_a_pickled_error_names_only_public_paths() -> None:
    for make in ERROR_SAMPLES.values():
        assert b"trionet._" not in pickle.dumps(make(), 0)
