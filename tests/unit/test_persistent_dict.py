"""durus.persistent_dict: PersistentDict behaviour, change notes and stored state (API.md §3)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest

from durus.persistent import SAVED, UNSAVED, real_class
from durus.persistent_dict import PersistentDict
from tests.support.fake_connection import FakeConnection, ghost_of, saved


class Defaulting(PersistentDict):
    __slots__ = ()

    def __missing__(self, key: Any) -> Any:
        return ("missing", key)


class WithDict(PersistentDict):
    """A subclass that has a __dict__ for extra attributes."""


def test_construction_slots_and_class_attributes() -> None:
    assert PersistentDict().data == {}
    assert PersistentDict({"a": 1}, b=2).data == {"a": 1, "b": 2}
    assert PersistentDict([("x", 1)]).data == {"x": 1}
    assert PersistentDict.__slots__ == ["data"]
    assert PersistentDict.data_is is dict
    pd = PersistentDict()
    with pytest.raises(AttributeError):
        pd.other = 1  # type: ignore[attr-defined]
    assert isinstance(pd, MutableMapping) and isinstance(pd, Mapping)
    assert issubclass(PersistentDict, MutableMapping)
    assert pd._p_status == UNSAVED and pd._p_oid is None


def test_state_is_data_only() -> None:
    pd = PersistentDict(a=1)
    assert pd.__getstate__() == {"data": {"a": 1}}
    assert list(pd.__getstate__()) == ["data"]
    clone = pickle.loads(pickle.dumps(pd, 2))
    assert real_class(clone) is PersistentDict and clone.data == {"a": 1}


def test_reading_methods() -> None:
    pd = PersistentDict([("b", 2), ("a", 1)])
    assert len(pd) == 2 and "a" in pd and "z" not in pd
    assert list(pd) == ["b", "a"]
    assert pd.get("a") == 1 and pd.get("z") is None and pd.get("z", 5) == 5
    assert pd.has_key("b") and not pd.has_key("z")
    assert pd.keys() == ["b", "a"] and isinstance(pd.keys(), list)
    assert pd.values() == [2, 1] and isinstance(pd.values(), list)
    assert pd.items() == [("b", 2), ("a", 1)] and isinstance(pd.items(), list)
    assert list(pd.iterkeys()) == ["b", "a"]
    assert list(pd.itervalues()) == [2, 1]
    assert list(pd.iteritems()) == [("b", 2), ("a", 1)]
    assert not isinstance(pd.iterkeys(), list)


def test_getitem_missing_and_dunder_missing() -> None:
    pd = PersistentDict(a=1)
    assert pd["a"] == 1
    with pytest.raises(KeyError) as caught:
        pd["z"]
    assert caught.value.args == ("z",)
    d = Defaulting(a=1)
    assert d["a"] == 1
    assert d["z"] == ("missing", "z")
    assert d.get("z") is None and "z" not in d
    assert "z" not in d.data


def test_reading_never_notes_a_change() -> None:
    connection = FakeConnection()
    pd = saved(PersistentDict(a=1), connection)
    _ = (len(pd), "a" in pd, list(pd), pd.get("a"), pd["a"], pd.keys(), pd.values())
    _ = (pd.items(), list(pd.iteritems()), pd.has_key("a"), pd == {}, pd.copy())
    assert pd.setdefault("a", 5) == 1
    assert connection.changed == [] and pd._p_status == SAVED


@pytest.mark.parametrize(
    "mutate",
    [
        lambda pd: pd.__setitem__("k", 1),
        lambda pd: pd.__delitem__("a"),
        lambda pd: pd.clear(),
        lambda pd: pd.update({"x": 1}),
        lambda pd: pd.pop("a"),
        lambda pd: pd.pop("zz", None),
        lambda pd: pd.popitem(),
        lambda pd: pd.setdefault("new", 3),
    ],
)
def test_mutators_note_the_change(mutate: Any) -> None:
    connection = FakeConnection()
    pd = saved(PersistentDict(a=1), connection)
    mutate(pd)
    assert connection.changed == [pd] and pd._p_status == UNSAVED


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda pd: pd.__delitem__("missing"), KeyError),
        (lambda pd: pd.pop("missing"), KeyError),
        (lambda pd: PersistentDict.popitem(pd), KeyError),
        (lambda pd: pd.update({}, {}), TypeError),
    ],
)
def test_mutators_note_the_change_even_when_they_fail(mutate: Any, error: type) -> None:
    connection = FakeConnection()
    pd = saved(PersistentDict(), connection)
    with pytest.raises(error):
        mutate(pd)
    assert connection.changed == [pd]


def test_update_forms() -> None:
    pd = PersistentDict(a=1)
    pd.update(PersistentDict(b=2))
    pd.update({"c": 3})
    pd.update([("d", 4)])

    class KeysOnly:
        def keys(self) -> list[str]:
            return ["e"]

        def __getitem__(self, key: str) -> int:
            return 5

    pd.update(KeysOnly())
    pd.update(f=6)
    pd.update()
    assert pd.data == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}
    with pytest.raises(TypeError, match="at most 1 argument, got 2"):
        pd.update({}, {})


def test_setdefault_pop_popitem() -> None:
    pd = PersistentDict(a=1)
    assert pd.setdefault("a", 9) == 1
    assert pd.setdefault("b") is None and pd.data == {"a": 1, "b": None}
    assert pd.pop("b") is None and pd.pop("zz", "d") == "d"
    assert pd.popitem() == ("a", 1) and len(pd) == 0
    with pytest.raises(KeyError):
        pd.popitem()
    pd["x"] = 1
    del pd["x"]
    pd["y"] = 2
    pd.clear()
    assert pd.data == {}


def test_copy_is_a_shallow_unsaved_copy_of_the_same_class() -> None:
    connection = FakeConnection()
    inner: list[int] = []
    original = saved(WithDict(a=inner), connection)
    original.__dict__["note"] = "extra"
    duplicate = original.copy()
    assert real_class(duplicate) is WithDict and type(duplicate) is WithDict
    assert duplicate.data == {"a": []} and duplicate.data is not original.data
    assert duplicate.data["a"] is inner
    assert duplicate.note == "extra"  # type: ignore[attr-defined]
    assert duplicate._p_oid is None and duplicate._p_connection is None
    assert duplicate._p_status == UNSAVED
    assert connection.changed == []


def test_copy_and_reads_of_a_ghost_load_it() -> None:
    connection = FakeConnection()
    ghost = ghost_of(Defaulting(a=1), connection)
    assert type(ghost) is not Defaulting and real_class(ghost) is Defaulting
    duplicate = ghost.copy()
    assert real_class(duplicate) is Defaulting and duplicate.data == {"a": 1}
    assert ghost._p_status == SAVED
    other_ghost = ghost_of(Defaulting(a=1), connection, oid=8)
    assert other_ghost["nope"] == ("missing", "nope")


def test_fromkeys_builds_the_called_class() -> None:
    pd = PersistentDict.fromkeys(["a", "b"])
    assert real_class(pd) is PersistentDict and pd.data == {"a": None, "b": None}
    d = Defaulting.fromkeys("xy", 0)
    assert real_class(d) is Defaulting and d.data == {"x": 0, "y": 0}


def test_equality_rules() -> None:
    pd = PersistentDict(a=1)
    assert pd == PersistentDict(a=1) and not pd != PersistentDict(a=1)
    assert pd == Defaulting(a=1)
    assert pd != PersistentDict(a=2)
    assert not pd == {"a": 1} and not {"a": 1} == pd
    assert pd != {"a": 1} and {"a": 1} != pd
    with pytest.raises(TypeError):
        hash(pd)
    with pytest.raises(TypeError):
        reversed(pd)  # type: ignore[call-overload]


def test_mixin_methods_from_the_abc() -> None:
    pd = PersistentDict(a=1, b=2)
    assert pd == PersistentDict(b=2, a=1)
    assert set(Mapping.keys(pd)) == {"a", "b"}
    pd.update(c=3)
    assert MutableMapping.pop(pd, "c") == 3
