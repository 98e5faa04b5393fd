"""RFC 8305 section 4 ordering: the first address kept, then families interleaved."""

from __future__ import annotations

import doctest
import socket
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionet import Address, interleave_families


@dataclass(frozen=True)
class Named:
    """A stand-in with a family, to show the function is generic."""

    name: str

    @property
    def family(self) -> int:
        return socket.AF_INET6 if self.name.startswith("v6") else socket.AF_INET


def named(*names: str) -> list[Named]:
    return [Named(name) for name in names]


def names(items: list[Named]) -> list[str]:
    return [item.name for item in items]


def test_families_alternate_after_the_first_address() -> None:
    given_order = named("v6a", "v6b", "v6c", "v4a", "v4b")
    assert names(interleave_families(given_order)) == ["v6a", "v4a", "v6b", "v4b", "v6c"]


def test_first_address_family_count_two() -> None:
    given_order = named("v6a", "v6b", "v6c", "v4a", "v4b")
    result = interleave_families(given_order, first_address_family_count=2)
    assert names(result) == ["v6a", "v6b", "v4a", "v6c", "v4b"]


@pytest.mark.parametrize(
    "given_order",
    [[], ["v6a"], ["v6a", "v6b", "v6c"], ["v4a", "v4b"], ["v4b", "v4a", "v4c"]],
)
@pytest.mark.parametrize("count", [1, 2, 5])
def test_single_family_input_is_unchanged(given_order: list[str], count: int) -> None:
    items = named(*given_order)
    result = interleave_families(items, first_address_family_count=count)
    assert result == items
    assert result is not items


def test_the_systems_first_preference_is_kept_when_it_is_ipv4() -> None:
    given_order = named("v4a", "v4b", "v4c", "v6a", "v6b")
    assert names(interleave_families(given_order)) == ["v4a", "v6a", "v4b", "v6b", "v4c"]


def test_mixed_input_keeps_each_familys_order() -> None:
    given_order = named("v6a", "v4a", "v4b", "v6b", "v4c")
    assert names(interleave_families(given_order)) == ["v6a", "v4a", "v6b", "v4b", "v4c"]


def test_a_count_larger_than_the_first_family_takes_all_of_it_first() -> None:
    given_order = named("v6a", "v4a", "v6b", "v4b")
    result = interleave_families(given_order, first_address_family_count=5)
    assert names(result) == ["v6a", "v6b", "v4a", "v4b"]


def test_works_on_addresses() -> None:
    parsed = [
        Address.parse(text)
        for text in [
            "[2001:db8::a]:1",
            "[2001:db8::b]:1",
            "[2001:db8::c]:1",
            "192.0.2.1:1",
            "192.0.2.2:1",
        ]
    ]
    v6a, v6b, v6c, v4a, v4b = parsed
    assert interleave_families(parsed) == [v6a, v4a, v6b, v4b, v6c]


def test_key_function_orders_getaddrinfo_entries() -> None:
    entries = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::a", 80, 0, 0)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::b", 80, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80)),
    ]
    result = interleave_families(entries, key=lambda entry: entry[0])
    assert [entry[4][0] for entry in result] == ["2001:db8::a", "192.0.2.1", "2001:db8::b"]


def test_more_than_two_families_round_robin() -> None:
    items = [("a", 1), ("b", 1), ("c", 2), ("d", 3), ("e", 2)]
    result = interleave_families(items, key=lambda item: item[1])
    assert [name for name, _ in result] == ["a", "c", "d", "b", "e"]


@pytest.mark.parametrize("count", [0, -1])
def test_a_first_address_family_count_below_one_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match=f"first_address_family_count must be at least 1, not {count}"):
        interleave_families(named("v6a"), first_address_family_count=count)


def test_a_non_int_first_address_family_count_is_refused() -> None:
    with pytest.raises(TypeError, match="must be an int"):
        interleave_families(named("v6a"), first_address_family_count=True)


def test_accepts_any_iterable() -> None:
    result = interleave_families(iter(named("v6a", "v6b", "v4a")))
    assert names(result) == ["v6a", "v4a", "v6b"]


def test_docstring_example_runs() -> None:
    globs = {"Address": Address, "interleave_families": interleave_families}
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(interleave_families, module=False, globs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0


families = st.lists(st.sampled_from(["v6", "v4"]), max_size=30)


@given(families, st.integers(1, 6))
def test_properties_of_the_order(kinds: list[str], count: int) -> None:
    items = [Named(f"{kind}-{index}") for index, kind in enumerate(kinds)]
    result = interleave_families(items, first_address_family_count=count)
    # The same items, the first one first, each family in its given order.
    assert sorted(names(result)) == sorted(names(items))
    if items:
        assert result[0] == items[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        assert [i for i in result if i.family == family] == [i for i in items if i.family == family]
    # The first `count` of the first family lead, then the families alternate
    # for as long as both have addresses left.
    if not items:
        return
    first = items[0].family
    lead = min(count, sum(1 for i in items if i.family == first))
    assert all(i.family == first for i in result[:lead])
    rest = result[lead:]
    for position in range(1, len(rest)):
        if rest[position].family == rest[position - 1].family:
            other = [i for i in rest[position:] if i.family != rest[position].family]
            assert not other, f"{names(result)}: families did not alternate at {position}"
    if rest and lead < len(result) and any(i.family != first for i in items):
        assert rest[0].family != first
