"""durus.persistent_list: PersistentList behaviour, change notes and stored state (API.md §4)."""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

import pytest

from durus.persistent import SAVED, UNSAVED, real_class
from durus.persistent_list import PersistentList
from tests.support.fake_connection import FakeConnection, ghost_of, saved


class Sub(PersistentList):
    __slots__ = ()


def test_construction_slots_and_class_attributes() -> None:
    assert PersistentList().data == []
    assert PersistentList((1, 2)).data == [1, 2]
    assert PersistentList.__slots__ == ["data"] and PersistentList.data_is is list
    pl = PersistentList()
    with pytest.raises(AttributeError):
        pl.other = 1  # type: ignore[attr-defined]
    assert isinstance(pl, MutableSequence) and isinstance(pl, Sequence)
    assert not hasattr(pl, "copy")
    assert pl.__getstate__() == {"data": []}


def test_reading_methods() -> None:
    pl = PersistentList([3, 1, 3, 2])
    assert len(pl) == 4 and 3 in pl and 9 not in pl
    assert pl[0] == 3 and pl[-1] == 2
    assert pl[1:3] == [1, 3] and type(pl[1:3]) is list
    assert pl.count(3) == 2 and pl.index(3) == 0 and pl.index(3, 1) == 2
    with pytest.raises(ValueError):
        pl.index(9)
    assert list(pl) == [3, 1, 3, 2] and list(reversed(pl)) == [2, 3, 1, 3]
    with pytest.raises(IndexError):
        pl[10]


def test_iteration_goes_through_getitem() -> None:
    class Doubling(PersistentList):
        __slots__ = ()

        def __getitem__(self, index: Any) -> Any:
            return 2 * self.data[index]

    assert list(Doubling([1, 2])) == [2, 4]


def test_reading_never_notes_a_change() -> None:
    connection = FakeConnection()
    pl = saved(PersistentList([1, 2]), connection)
    _ = (len(pl), 1 in pl, list(pl), pl[0], pl[:], pl.count(1), pl.index(2), pl == [1, 2])
    _ = (pl < [3], pl + [3], [0] + pl, pl * 2, 2 * pl, list(reversed(pl)))
    assert connection.changed == [] and pl._p_status == SAVED


MUTATORS = [
    lambda pl: pl.__setitem__(0, 9),
    lambda pl: pl.__setitem__(slice(0, 1), iter([7, 8])),
    lambda pl: pl.__delitem__(0),
    lambda pl: pl.__delitem__(slice(0, 2)),
    lambda pl: pl.append(5),
    lambda pl: pl.insert(0, 5),
    lambda pl: pl.pop(),
    lambda pl: pl.pop(0),
    lambda pl: pl.remove(1),
    lambda pl: pl.reverse(),
    lambda pl: pl.sort(),
    lambda pl: pl.sort(key=lambda x: -x, reverse=True),
    lambda pl: pl.extend([4]),
    lambda pl: pl.extend(PersistentList([4])),
    lambda pl: pl.__iadd__((4,)),
    lambda pl: pl.__imul__(2),
    lambda pl: pl.clear(),
]


@pytest.mark.parametrize("mutate", MUTATORS)
def test_mutators_note_the_change(mutate: Any) -> None:
    connection = FakeConnection()
    pl = saved(PersistentList([1, 2, 3]), connection)
    expected = [1, 2, 3]
    mutate(pl)
    mutate(expected)
    assert pl.data == expected
    assert connection.changed == [pl] and pl._p_status == UNSAVED


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda pl: pl.__setitem__(5, 1), IndexError),
        (lambda pl: pl.__delitem__(5), IndexError),
        (lambda pl: pl.pop(), IndexError),
        (lambda pl: pl.remove(9), ValueError),
        (lambda pl: pl.clear(), None),
    ],
)
def test_mutators_note_the_change_even_when_they_fail(mutate: Any, error: Any) -> None:
    connection = FakeConnection()
    pl = saved(PersistentList(), connection)
    if error is None:
        mutate(pl)
    else:
        with pytest.raises(error):
            mutate(pl)
    assert connection.changed == [pl]


def test_in_place_operators_return_self() -> None:
    pl = PersistentList([1])
    same = pl
    pl += [2]
    pl += PersistentList([3])
    pl += (4,)
    assert pl is same and pl.data == [1, 2, 3, 4]
    pl *= 2
    assert pl is same and pl.data == [1, 2, 3, 4] * 2
    pl.extend(pl)
    assert len(pl) == 16


def test_add_and_mul_return_the_same_class() -> None:
    sub = Sub([1, 2])
    for result in (sub + [3], sub + (3,), sub + PersistentList([3]), sub + iter([3])):
        assert real_class(result) is Sub and result.data == [1, 2, 3]
    for result in ([0] + sub, (0,) + sub):  # type: ignore[operator]
        assert real_class(result) is Sub and result.data == [0, 1, 2]
    assert (PersistentList([0]) + sub).data == [0, 1, 2]
    for result in (sub * 2, 2 * sub):
        assert real_class(result) is Sub and result.data == [1, 2, 1, 2]
    assert sub.data == [1, 2]


def test_operators_on_a_ghost_use_the_real_class() -> None:
    connection = FakeConnection()
    ghost = ghost_of(Sub([1]), connection)
    assert type(ghost) is not Sub
    result = ghost + [2]
    assert type(result) is Sub and result.data == [1, 2]
    assert ghost._p_status == SAVED


def test_comparisons() -> None:
    pl = PersistentList([1, 2])
    assert pl == [1, 2] and [1, 2] == pl and pl == PersistentList([1, 2])
    assert pl != (1, 2) and not pl == (1, 2)
    assert pl != [1] and not pl != [1, 2]
    assert pl < [1, 3] and pl <= [1, 2] and pl > [1] and pl >= [1, 2]
    assert pl < PersistentList([2]) and PersistentList([2]) > pl
    assert [0] < pl and [1, 2, 3] > pl
    with pytest.raises(TypeError):
        pl < (1, 2)  # noqa: B015
    nan_list = PersistentList([float("nan")])
    assert nan_list == nan_list
    with pytest.raises(TypeError):
        hash(pl)


def test_ghost_loads_on_length() -> None:
    connection = FakeConnection()
    ghost = ghost_of(PersistentList([1, 2, 3]), connection)
    assert ghost._p_is_ghost()
    assert len(ghost) == 3 and ghost._p_status == SAVED
