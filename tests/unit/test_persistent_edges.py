"""durus.persistent: the read hook of classes with their own attribute lookup,
non-str state keys, and ComputedAttribute without a cached value.

Classes defining ``__getattr__`` or ``__getattribute__`` get the general
tracking hook; these tests hold it to the same rules as the fast one (API.md
section 2): exempt names never load, the first read loads a ghost and notes one
access, a fallback runs once per miss.
"""

from __future__ import annotations

from typing import Any

import pytest

from durus.persistent import (
    GHOST,
    SAVED,
    UNSAVED,
    ComputedAttribute,
    Persistent,
    is_tracking_class,
    real_class,
    untrack,
)
from tests.unit.test_persistent import stored_ghost


class CountedFallback(Persistent):
    """A ``__getattr__`` fallback that counts its calls."""

    fallback_calls = 0

    def __getattr__(self, name: str) -> str:
        CountedFallback.fallback_calls += 1
        return "fallback:" + name


class UpperLookup(Persistent):
    """Its own ``__getattribute__``: names starting with ``up_`` read upper-cased."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("up_"):
            value = Persistent.__getattribute__(self, name[3:])
            return value.upper()
        return Persistent.__getattribute__(self, name)


@pytest.mark.parametrize("klass", [CountedFallback, UpperLookup])
def test_general_hook_class_and_p_reads_never_load_a_ghost(klass: type) -> None:
    ghost, connection = stored_ghost(klass, {"name": "x"})
    assert ghost.__class__ is klass
    assert ghost._p_status == GHOST and ghost._p_oid is not None
    assert ghost._p_connection is connection
    assert connection.loads == [] and connection.accessed == []
    assert is_tracking_class(type(ghost)) and real_class(ghost) is klass


def test_general_hook_first_read_of_a_ghost_loads_once_and_notes_one_access() -> None:
    ghost, connection = stored_ghost(UpperLookup, {"name": "abc"})
    assert ghost.up_name == "ABC"
    assert connection.loads == [ghost] and connection.accessed == [ghost]
    assert ghost._p_status == SAVED and type(ghost) is UpperLookup
    assert ghost.name == "abc" and connection.accessed == [ghost]
    connection.end_transaction()
    assert is_tracking_class(type(ghost))
    assert ghost.up_name == "ABC" and connection.loads == [ghost]
    assert connection.accessed == [ghost]


def test_general_hook_fallback_runs_once_per_miss_on_a_ghost() -> None:
    ghost, connection = stored_ghost(CountedFallback, {"name": "x"})
    before = CountedFallback.fallback_calls
    assert ghost.missing == "fallback:missing"
    assert CountedFallback.fallback_calls == before + 1
    assert connection.loads == [ghost] and connection.accessed == [ghost]
    assert ghost.name == "x" and CountedFallback.fallback_calls == before + 1


def test_general_hook_without_a_connection_only_switches_the_class() -> None:
    obj = UpperLookup()
    obj.name = "new"
    untrack(obj)
    assert is_tracking_class(type(obj))
    assert obj.up_name == "NEW" and type(obj) is UpperLookup
    assert obj._p_status == UNSAVED


def test_general_hook_load_failure_leaves_a_tracked_ghost() -> None:
    ghost, connection = stored_ghost(UpperLookup, {"name": "x"})
    connection.stored.clear()
    with pytest.raises(KeyError):
        ghost.up_name  # noqa: B018
    assert ghost._p_status == GHOST and is_tracking_class(type(ghost))
    assert connection.accessed == []


def test_persistent_state_keeps_non_str_keys_as_they_are() -> None:
    obj = Persistent()
    key = (1, "pair")
    obj.__setstate__({"name": "x", 7: "seven", key: "tuple"})
    state = obj.__getstate__()
    assert state == {"name": "x", 7: "seven", key: "tuple"}
    assert next(k for k in state if k == key) is key


def test_computed_attribute_invalidate_without_a_value_still_notes_a_change() -> None:
    ghost, connection = stored_ghost(ComputedAttribute, None)
    ghost._p_load_state()
    assert ghost._p_status == SAVED and connection.changes == []
    ghost.invalidate()
    assert ghost._p_status == UNSAVED and connection.changes == [ghost]
    assert ghost.get(lambda: 5) == 5


def test_computed_attribute_invalidate_of_a_new_object_notes_nothing() -> None:
    obj = ComputedAttribute()
    obj.invalidate()
    assert obj._p_status == UNSAVED and obj._p_connection is None
    assert obj.get(lambda: "v") == "v"
