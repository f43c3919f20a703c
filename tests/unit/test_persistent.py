"""durus.persistent: states, transitions, exempt names, access tracking, twins.

A small fake connection stands in for durus.connection: it serves states from
a dict and records every hook call, so each rule of API.md section 2 can be
checked without a storage.
"""

from __future__ import annotations

import abc
import copy
import pickle
import sys
import weakref
from typing import Any

import pytest

import durus.persistent as persistent_module
from durus.persistent import (
    GHOST,
    SAVED,
    UNSAVED,
    ComputedAttribute,
    ConnectionBase,
    Persistent,
    PersistentBase,
    PersistentObject,
    _delattribute,
    _getattribute,
    _hasattribute,
    _setattribute,
    call_if_persistent,
    is_tracking_class,
    new_ghost,
    real_class,
    tracking_class,
    untrack,
)


class FakeConnection(ConnectionBase):
    """Serves states from ``stored`` and records the hook calls."""

    __slots__ = ("stored", "loads", "accessed", "changes")

    def __init__(self) -> None:
        self.stored: dict[bytes, Any] = {}
        self.loads: list[Any] = []
        self.accessed: list[Any] = []
        self.changes: list[Any] = []

    def load_state(self, obj: Any) -> None:
        self.loads.append(obj)
        obj.__setstate__(self.stored[obj._p_oid])

    def note_access(self, obj: Any) -> None:
        obj._p_serial = self.transaction_serial
        self.accessed.append(obj)

    def note_change(self, obj: Any) -> None:
        self.changes.append(obj)

    def end_transaction(self) -> None:
        for obj in self.accessed:
            untrack(obj)
        self.accessed = []
        self.transaction_serial += 1


class Item(Persistent):
    kind = "item"

    def __init__(self, name: str = "x") -> None:
        self.name = name

    @property
    def shout(self) -> str:
        return self.name.upper()

    def __len__(self) -> int:
        return len(self.name)


class Slotted(PersistentObject):
    __slots__ = ["a", "__secret", "b"]


class StringSlot(Slotted):
    __slots__ = "c"


class MixedDict(Slotted):
    """Slots from the base plus a __dict__ of its own."""


class WithFallback(Persistent):
    def __getattr__(self, name: str) -> str:
        return "fallback:" + name


class AbstractItem(Persistent, metaclass=abc.ABCMeta):
    @abc.abstractmethod
    def kind(self) -> str: ...


class ConcreteItem(AbstractItem):
    def kind(self) -> str:
        return "concrete"


class Bare(PersistentBase):
    __slots__ = ("v",)


class CountingChanges(Persistent):
    calls = 0

    def _p_note_change(self) -> None:
        CountingChanges.calls += 1
        Persistent._p_note_change(self)


OID = b"\x00" * 7 + b"\x05"


def stored_ghost(klass: type, state: Any, oid: bytes = OID) -> tuple[Any, FakeConnection]:
    connection = FakeConnection()
    connection.stored[oid] = state
    return new_ghost(klass, oid, connection), connection


def loaded(klass: type, state: Any) -> tuple[Any, FakeConnection]:
    """A SAVED object, loaded, not yet read in the connection's transaction."""
    obj, connection = stored_ghost(klass, state)
    obj._p_load_state()
    assert obj._p_status == SAVED and is_tracking_class(type(obj))
    return obj, connection


# -- constants and base types


def test_status_constants() -> None:
    assert (UNSAVED, SAVED, GHOST) == (1, 0, -1)


def test_persistent_base_initial_slots_and_layout() -> None:
    obj = PersistentBase(1, 2, key=3)
    assert (obj._p_status, obj._p_serial, obj._p_connection, obj._p_oid) == (UNSAVED, 0, None, None)
    assert not hasattr(obj, "__dict__")
    with pytest.raises(TypeError):
        weakref.ref(obj)
    assert PersistentBase.__qualname__ == "PersistentBase"
    assert PersistentBase.__module__ == "durus.persistent"


def test_p_status_must_be_a_status_int() -> None:
    obj = Item()
    with pytest.raises(TypeError):
        obj._p_status = "saved"
    with pytest.raises(TypeError):
        obj._p_status = 7
    obj._p_status = SAVED
    assert obj._p_status == SAVED


def test_p_connection_must_be_a_connection_base() -> None:
    obj = Item()
    with pytest.raises(TypeError):
        obj._p_connection = object()
    connection = FakeConnection()
    obj._p_connection = connection
    assert obj._p_connection is connection
    obj._p_connection = None


def test_connection_base() -> None:
    connection = ConnectionBase(1, x=2)
    assert connection.transaction_serial == 1
    assert not hasattr(connection, "__dict__")
    for name in ("note_access", "note_change", "load_state"):
        with pytest.raises(NotImplementedError):
            getattr(connection, name)(Item())


def test_bare_base_subclass_write_semantics() -> None:
    obj = Bare()
    obj.v = 1  # UNSAVED: no _p_note_change call (C-extension semantics)
    obj._p_status = SAVED
    with pytest.raises(AttributeError):
        obj.v = 2  # SAVED: calls the missing _p_note_change


# -- low-level helpers


def test_helpers_bypass_hooks_on_ghosts() -> None:
    ghost, connection = stored_ghost(Item, {"name": "n"})
    assert not _hasattribute(ghost, "name")
    _setattribute(ghost, "name", "direct")
    assert _getattribute(ghost, "name") == "direct"
    _delattribute(ghost, "name")
    with pytest.raises(AttributeError):
        _getattribute(ghost, "name")
    assert _hasattribute(ghost, "_p_oid")
    assert ghost._p_status == GHOST
    assert connection.loads == [] and connection.accessed == [] and connection.changes == []


def test_hasattribute_propagates_errors_other_than_attribute_error() -> None:
    class Broken(Persistent):
        @property
        def bad(self) -> int:
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        _hasattribute(Broken(), "bad")


def test_call_if_persistent() -> None:
    assert call_if_persistent(id, 3) is None
    item = Item()
    assert call_if_persistent(id, item) == id(item)


# -- PersistentObject state handling


def test_persistent_object_layout() -> None:
    obj = PersistentObject()
    weakref.ref(obj)
    with pytest.raises(AttributeError):
        obj.a = 1  # type: ignore[attr-defined]
    assert obj.__getstate__() == {}


def test_getstate_order_and_private_and_string_slots() -> None:
    obj = StringSlot()
    obj.a = 1
    obj._Slotted__secret = 2  # type: ignore[attr-defined]
    obj.c = 3
    state = obj.__getstate__()
    assert list(state.items()) == [("c", 3), ("a", 1), ("_Slotted__secret", 2)]
    copy_ = StringSlot.__new__(StringSlot)
    copy_.__setstate__(state)
    assert copy_.__getstate__() == state
    assert list(copy_._p_gen_data_slots()) == ["c", "a", "_Slotted__secret"]


def test_getstate_dict_entries_come_first_and_state_is_new() -> None:
    obj = MixedDict()
    obj.b = 2
    obj.z = 9
    state = obj.__getstate__()
    assert list(state.items()) == [("z", 9), ("b", 2)]
    state["z"] = 0
    assert obj.z == 9


def test_setstate_clears_then_sets_without_noting_a_change() -> None:
    obj, connection = loaded(MixedDict, {"a": 1, "extra": 2})
    obj.__setstate__({"b": 5})
    assert obj.__getstate__() == {"b": 5}
    assert connection.changes == [] and obj._p_status == SAVED
    obj.__setstate__(None)
    assert obj.__getstate__() == {}


def test_setstate_unknown_key_on_slotted_class() -> None:
    with pytest.raises(AttributeError):
        Slotted().__setstate__({"nope": 1})


def test_repr_forms_never_load() -> None:
    item = Item()
    assert repr(item) == f"<Item @{id(item):x}>"
    ghost, connection = stored_ghost(Item, {"name": "n"}, oid=b"\x00" * 6 + b"\x01\x00")
    assert repr(ghost) == "<Item 256>"
    assert ghost._p_status == GHOST and connection.loads == []


def test_format_oid() -> None:
    item = Item()
    assert item._p_format_oid() == "None"
    item._p_oid = b"\x00" * 7 + b"\x07"
    assert item._p_format_oid() == "7"
    item._p_oid = "\x00" * 7 + "\x08"
    assert item._p_format_oid() == "8"


def test_status_methods() -> None:
    obj, connection = loaded(Item, {"name": "n"})
    assert obj._p_is_saved() and not obj._p_is_ghost() and not obj._p_is_unsaved()
    obj._p_set_status_unsaved()
    assert obj._p_is_unsaved() and connection.changes == []
    obj._p_set_status_saved()
    assert obj._p_is_saved()
    obj._p_set_status_ghost()
    assert obj._p_is_ghost() and _getattribute(obj, "__dict__") == {}
    assert is_tracking_class(type(obj))
    obj._p_set_status_unsaved()  # loads first
    assert obj._p_is_unsaved() and _getattribute(obj, "__dict__") == {"name": "n"}


def test_load_state_requires_a_ghost_and_a_connection() -> None:
    obj, _connection = loaded(Item, {"name": "n"})
    with pytest.raises(AssertionError):
        obj._p_load_state()
    orphan = new_ghost(Item, None, None)
    with pytest.raises(ValueError):
        orphan._p_load_state()


# -- transitions through ordinary reads and writes


def test_ghost_read_loads_notes_access_and_untracks() -> None:
    ghost, connection = stored_ghost(Item, {"name": "n"})
    assert is_tracking_class(type(ghost))
    assert ghost.name == "n"
    assert ghost._p_status == SAVED
    assert connection.loads == [ghost] and connection.accessed == [ghost]
    assert ghost._p_serial == connection.transaction_serial
    assert type(ghost) is Item  # tracked reads now run at plain speed
    assert ghost.shout == "N" and connection.accessed == [ghost]


def test_exempt_names_never_load_or_track() -> None:
    ghost, connection = stored_ghost(Item, {"name": "n"})
    assert ghost.__class__ is Item
    repr(ghost)
    assert ghost._p_oid == OID
    ghost.__setstate__  # noqa: B018
    assert ghost._p_status == GHOST and connection.loads == [] and connection.accessed == []


def test_transaction_boundary_tracks_the_next_read_again() -> None:
    obj, connection = loaded(Item, {"name": "n"})
    assert obj.name == "n"
    connection.end_transaction()
    assert is_tracking_class(type(obj)) and obj._p_status == SAVED
    assert obj.kind == "item"
    assert connection.accessed == [obj] and obj._p_serial == connection.transaction_serial


def test_special_methods_load_ghosts() -> None:
    ghost, connection = stored_ghost(Item, {"name": "four"})
    assert len(ghost) == 4
    assert connection.loads == [ghost]


def test_write_to_unsaved_notes_nothing() -> None:
    item = Item()
    item.name = "y"
    del item.name
    assert item._p_status == UNSAVED


def test_write_to_saved_notes_change_once() -> None:
    obj, connection = loaded(Item, {"name": "n"})
    obj.name = "m"
    obj.other = 1
    assert obj._p_status == UNSAVED and connection.changes == [obj]
    assert obj.name == "m"


def test_write_to_ghost_loads_then_becomes_unsaved() -> None:
    ghost, connection = stored_ghost(Item, {"name": "n", "keep": 1})
    ghost.name = "m"
    assert ghost._p_status == UNSAVED and connection.loads == [ghost]
    assert connection.changes == [ghost]
    assert ghost.keep == 1 and ghost.name == "m"


def test_delattr_notes_change() -> None:
    obj, connection = loaded(Item, {"name": "n"})
    del obj.name
    assert obj._p_status == UNSAVED and connection.changes == [obj]
    assert not hasattr(obj, "name")


def test_p_writes_have_no_side_effects() -> None:
    obj, connection = loaded(Item, {"name": "n"})
    obj._p_serial = 42
    assert connection.changes == [] and obj._p_status == SAVED


def test_note_change_only_when_not_unsaved() -> None:
    CountingChanges.calls = 0
    fresh = CountingChanges()
    fresh.a = 1
    assert CountingChanges.calls == 0
    obj, connection = loaded(CountingChanges, {})
    obj.a = 1
    obj.b = 2
    assert CountingChanges.calls == 1 and connection.changes == [obj]


def test_p_note_change_is_safe_on_new_objects() -> None:
    item = Item()
    item._p_note_change()
    assert item._p_status == UNSAVED


def test_p_note_change_requires_connection_when_stored() -> None:
    item = Item()
    item._p_status = SAVED
    with pytest.raises(ValueError):
        item._p_note_change()


# -- twins and real classes


def test_twin_identity_and_names() -> None:
    twin = tracking_class(Item)
    assert tracking_class(Item) is twin and tracking_class(twin) is twin
    assert issubclass(twin, Item) and twin is not Item
    assert (twin.__name__, twin.__qualname__, twin.__module__) == (
        "Item",
        Item.__qualname__,
        Item.__module__,
    )
    assert twin.__basicsize__ == Item.__basicsize__
    assert real_class(twin.__new__(twin)) is Item
    assert real_class(Item()) is Item and real_class(3) is int
    assert is_tracking_class(twin) and not is_tracking_class(Item)
    with pytest.raises(TypeError):
        tracking_class(int)


def test_untracked_object_is_instance_and_reports_real_class() -> None:
    obj, _connection = loaded(Item, {"name": "n"})
    assert isinstance(obj, Item) and isinstance(obj, Persistent)
    assert obj.__class__ is Item and real_class(obj) is Item


def test_untrack_is_idempotent() -> None:
    item = Item()
    untrack(item)
    untrack(item)
    assert is_tracking_class(type(item)) and real_class(item) is Item


def test_new_ghost() -> None:
    connection = FakeConnection()
    ghost = new_ghost(Slotted, OID, connection)
    assert ghost._p_status == GHOST and ghost._p_oid == OID
    assert ghost._p_connection is connection and real_class(ghost) is Slotted


def test_getattr_fallback_and_abc_metaclass_work_on_twins() -> None:
    obj, _connection = loaded(WithFallback, {})
    assert obj.missing == "fallback:missing"
    concrete, _connection = loaded(ConcreteItem, {})
    assert concrete.kind() == "concrete" and isinstance(concrete, AbstractItem)


def test_connection_none_twin_read_just_untracks() -> None:
    item = Item()
    untrack(item)
    assert item.name == "x" and type(item) is Item


def test_load_failure_keeps_object_ghost_and_tracked() -> None:
    ghost, connection = stored_ghost(Item, {})
    connection.stored.clear()
    with pytest.raises(KeyError):
        ghost.name  # noqa: B018
    assert ghost._p_status == GHOST and is_tracking_class(type(ghost))


# -- pickling and copying see the real class


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_tracked_and_untracked(protocol: int) -> None:
    obj, _connection = loaded(Item, {"name": "n"})
    for _ in range(2):
        clone = pickle.loads(pickle.dumps(obj, protocol))
        assert type(clone) is Item and clone.name == "n"
        assert (clone._p_status, clone._p_oid, clone._p_connection) == (UNSAVED, None, None)
        untrack(obj)


def test_copy_and_deepcopy_of_twin_instances() -> None:
    obj, _connection = loaded(StringSlot, {"a": [1], "c": 3})
    for copier in (copy.copy, copy.deepcopy):
        untrack(obj)
        clone = copier(obj)
        assert type(clone) is StringSlot and clone.__getstate__() == {"c": 3, "a": [1]}
        assert clone._p_status == UNSAVED and clone._p_oid is None
    untrack(obj)
    assert copy.deepcopy(obj).a is not obj.a


# -- Persistent and ComputedAttribute


def test_persistent_getstate_is_live_dict() -> None:
    item = Item("a")
    assert item.__getstate__() is item.__dict__
    with pytest.raises(TypeError):
        item.__setstate__(None)
    other = Item("a")
    assert item != other and item == item and {item: 1}[item] == 1


def test_persistent_getstate_loads_ghost() -> None:
    ghost, connection = stored_ghost(Item, {"name": "g"})
    assert Item.__getstate__(ghost) == {"name": "g"}
    assert connection.loads == [ghost]


def test_computed_attribute() -> None:
    ghost, connection = stored_ghost(ComputedAttribute, None)
    calls = []

    def compute() -> int:
        calls.append(1)
        return 42

    assert ghost.get(compute) == 42
    assert ghost._p_status == SAVED and connection.loads == []
    assert ghost.get(compute) == 42 and calls == [1]
    assert ghost.__getstate__() is None and connection.changes == []
    ghost.invalidate()
    assert ghost._p_status == UNSAVED and connection.changes == [ghost]
    assert ghost.get(compute) == 42 and calls == [1, 1]
    with pytest.raises(AssertionError):
        ghost._p_load_state()


def test_computed_attribute_ghosting_drops_value() -> None:
    obj = ComputedAttribute()
    obj.get(lambda: 1)
    obj._p_set_status_ghost()
    assert not _hasattribute(obj, "value")


def test_module_reexports() -> None:
    for name in ("str_to_int8", "iteritems", "as_bytes", "IS_PYPY", "stderr"):
        assert hasattr(persistent_module, name)


def test_persistent_object_getstate_loads_ghost() -> None:
    ghost, connection = stored_ghost(Slotted, {"a": 1})
    assert PersistentObject.__getstate__(ghost) == {"a": 1}
    assert connection.loads == [ghost] and ghost._p_status == SAVED


def test_persistent_setstate_interns_keys_and_keeps_key_aliases() -> None:
    interned = sys.intern("name")
    key = "".join(["na", "me"])  # a fresh, uninterned str
    assert key is not interned
    item = Item()
    item.__setstate__({key: key, "other": [key]})
    ((stored_key, value),) = [(k, v) for k, v in item.__dict__.items() if k == "name"]
    assert stored_key is interned and value is interned


def test_p_slot_writes_from_outside_keep_reads_tracked() -> None:
    connection = FakeConnection()
    connection.stored[OID] = {"name": "stored"}
    item = Item("n")
    item._p_oid = OID
    item._p_connection = connection  # attached by hand, as Durus's own tests do
    item._p_status = SAVED
    assert item.name == "n" and connection.accessed == [item]
    item._p_status = GHOST  # a ghost made by hand loads on its next read
    assert item.name == "stored" and connection.loads == [item]
    item._p_serial = 0  # a forgotten access is noted again
    assert item.name == "stored" and connection.accessed == [item, item, item]
    fresh = Item()
    fresh._p_serial = 3
    assert type(fresh) is Item  # no connection: stays a plain instance
