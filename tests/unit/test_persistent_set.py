"""durus.persistent_set: PersistentSet behaviour, change notes and stored state (API.md §5)."""

from __future__ import annotations

import operator
from collections.abc import MutableSet, Set
from typing import Any

import pytest

from durus.persistent import SAVED, UNSAVED, real_class
from durus.persistent_set import PersistentSet
from durus.utils import int8_to_str
from tests.support.fake_connection import FakeConnection, ghost_of, saved


class Sub(PersistentSet):
    __slots__ = ()


def test_construction_slots_and_class_attributes() -> None:
    assert PersistentSet().s == set() and PersistentSet([1, 1, 2]).s == {1, 2}
    assert PersistentSet.__slots__ == ["s"] and PersistentSet.s_is is set
    ps = PersistentSet()
    with pytest.raises(AttributeError):
        ps.other = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        PersistentSet([1], [2])  # type: ignore[call-arg]
    assert isinstance(ps, MutableSet) and isinstance(ps, Set)
    assert PersistentSet([3]).__getstate__() == {"s": {3}}


def test_repr() -> None:
    ps = PersistentSet([1, 2])
    assert repr(ps) == f"<PersistentSet @{id(ps):x} [1, 2]>"
    ps._p_oid = int8_to_str(5)
    assert repr(ps) == "<PersistentSet 5 [1, 2]>"
    assert repr(Sub([3])).startswith("<Sub @") and repr(Sub([3])).endswith(" [3]>")


def test_repr_of_a_ghost_loads_it() -> None:
    connection = FakeConnection()
    ghost = ghost_of(PersistentSet([4]), connection)
    assert repr(ghost) == "<PersistentSet 7 [4]>"
    assert ghost._p_status == SAVED


def test_reading_methods() -> None:
    ps = PersistentSet([1, 2, 3])
    assert 1 in ps and 9 not in ps and len(ps) == 3 and sorted(ps) == [1, 2, 3]
    assert ps.issubset([1, 2, 3, 4]) and not ps.issubset(PersistentSet([1]))
    assert ps.issuperset(PersistentSet([1])) and not ps.issuperset([9])
    assert ps.isdisjoint([7, 8]) and not ps.isdisjoint(PersistentSet([3]))


def test_set_building_methods_return_the_same_class() -> None:
    sub = Sub([1, 2, 3])
    cases = [
        (sub.copy(), {1, 2, 3}),
        (sub.difference([1]), {2, 3}),
        (sub.difference(PersistentSet([1, 2])), {3}),
        (sub.intersection([1, 2], PersistentSet([2, 3])), {2}),
        (sub.intersection(), {1, 2, 3}),
        (sub.union([4], PersistentSet([5])), {1, 2, 3, 4, 5}),
        (sub.union(), {1, 2, 3}),
        (sub.symmetric_difference([3, 4]), {1, 2, 4}),
        (sub & {1, 9}, {1}),
        (sub | frozenset([9]), {1, 2, 3, 9}),
        (sub - PersistentSet([1]), {2, 3}),
        (sub ^ {3, 4}, {1, 2, 4}),
        ({1, 9} & sub, {1}),
        (frozenset([9]) | sub, {1, 2, 3, 9}),
        ({1, 2, 3, 4} - sub, {4}),
        ({3, 4} ^ sub, {1, 2, 4}),
    ]
    mutable = frozenset([9]) | sub
    mutable.add(10)
    ab, bc = PersistentSet("ab"), PersistentSet("bc")
    cases += [
        (sub.__rand__(bc), {"b"} & sub.s),
        (ab.__rand__(bc), {"b"}),
        (ab.__ror__(bc), {"a", "b", "c"}),
        (ab.__rsub__(bc), {"c"}),
        (ab.__rxor__(bc), {"a", "c"}),
    ]
    for result, expected in cases:
        assert real_class(result) in (Sub, PersistentSet) and result.s == expected
        assert type(result.s) is set
    assert sub.copy().s is not sub.s
    assert sub.s == {1, 2, 3}


def test_argument_count_rules() -> None:
    ps = PersistentSet([1])
    with pytest.raises(TypeError):
        ps.symmetric_difference([1], [2])
    with pytest.raises(TypeError):
        ps.symmetric_difference()
    with pytest.raises(TypeError):
        ps.difference([1], [2])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ps & [1]  # type: ignore[operator]


def test_reading_never_notes_a_change() -> None:
    connection = FakeConnection()
    ps = saved(PersistentSet([1, 2]), connection)
    _ = (len(ps), 1 in ps, list(ps), ps.copy(), ps.union([3]), ps & {1}, {1} - ps, repr(ps))
    _ = (ps == PersistentSet(), ps < PersistentSet([1, 2, 3]), ps.isdisjoint([5]))
    assert connection.changed == [] and ps._p_status == SAVED


MUTATORS = [
    lambda s: s.add(9),
    lambda s: s.discard(1),
    lambda s: s.discard(99),
    lambda s: s.remove(1),
    lambda s: s.clear(),
    lambda s: s.difference_update([1]),
    lambda s: s.intersection_update([1, 2], [2]),
    lambda s: s.symmetric_difference_update([1, 7]),
    lambda s: s.update([5], [6]),
    lambda s: s.__iand__({1, 2}),
    lambda s: s.__ior__({8}),
    lambda s: s.__isub__({1}),
    lambda s: s.__ixor__({1, 7}),
]


@pytest.mark.parametrize("mutate", MUTATORS)
def test_mutators_note_the_change(mutate: Any) -> None:
    connection = FakeConnection()
    ps = saved(PersistentSet([1, 2, 3]), connection)
    expected = {1, 2, 3}
    result = mutate(ps)
    mutate(expected)
    assert ps.s == expected
    assert result is None or result is ps
    assert connection.changed == [ps] and ps._p_status == UNSAVED


def test_in_place_operators_return_self_and_accept_persistent_sets() -> None:
    ps = PersistentSet([1, 2, 3])
    same = ps
    ps |= PersistentSet([4])
    ps &= PersistentSet([1, 2, 4])
    ps -= PersistentSet([1])
    ps ^= PersistentSet([2, 5])
    assert ps is same and ps.s == {4, 5}
    ps |= ps
    assert ps.s == {4, 5}
    ps.update(PersistentSet([6]))
    ps.intersection_update(PersistentSet([5, 6]))
    ps.difference_update(PersistentSet([5]))
    ps.symmetric_difference_update(PersistentSet([6, 7]))
    assert ps.s == {7}


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda s: s.remove(99), KeyError),
        (lambda s: PersistentSet.pop(s), KeyError),
        (lambda s: s.__iand__([1]), TypeError),
        (lambda s: s.update([1], 5), TypeError),
    ],
)
def test_mutators_note_the_change_even_when_they_fail(mutate: Any, error: type) -> None:
    connection = FakeConnection()
    ps = saved(PersistentSet(), connection)
    with pytest.raises(error):
        mutate(ps)
    assert connection.changed == [ps]


def test_pop() -> None:
    ps = PersistentSet([4])
    assert ps.pop() == 4 and len(ps) == 0


def test_equality_and_ordering() -> None:
    ps = PersistentSet([1, 2])
    assert ps == PersistentSet([2, 1]) and ps == Sub([1, 2]) and not ps != PersistentSet([1, 2])
    assert not ps == {1, 2} and not {1, 2} == ps and ps != {1, 2} and {1, 2} != ps
    assert ps < PersistentSet([1, 2, 3]) and ps <= PersistentSet([1, 2])
    assert ps > PersistentSet([1]) and ps >= PersistentSet([1, 2])
    assert not ps < PersistentSet([1, 2])
    for other in ({1, 2}, frozenset([1]), [1], None):
        for compare in (operator.lt, operator.le, operator.gt, operator.ge):
            with pytest.raises(TypeError, match="^can only compare to a PersistentSet$"):
                compare(ps, other)
    with pytest.raises(TypeError, match="can only compare to a PersistentSet"):
        {1} < ps  # noqa: B015
    with pytest.raises(TypeError):
        hash(ps)


def test_operations_on_a_ghost_use_the_real_class() -> None:
    connection = FakeConnection()
    ghost = ghost_of(Sub([1]), connection)
    assert type(ghost) is not Sub
    result = ghost | {2}
    assert type(result) is Sub and result.s == {1, 2}
