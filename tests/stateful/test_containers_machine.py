"""PersistentDict/List/Set behave exactly like dict/list/set, stored or not.

Each machine applies random operations to a persistent container held in the
root of a MemoryStorage connection and to a plain builtin model, comparing
results (or exception types) after every step. Rules also commit, abort
(the model falls back to the last committed copy), ghost the container, shrink
a tiny cache, reopen the storage in a fresh connection, and read the committed
state through a second connection.

Also here: the container records among the Durus 4.3 vectors re-encode to
the same bytes (FORMATS.md section 3.3).
"""

from __future__ import annotations

import copy
import operator
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import durus.serialize
from durus.connection import Connection
from durus.persistent import SAVED, ConnectionBase, real_class
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.record import pack_record, unpack_record
from durus.serialize import ObjectReader, ObjectWriter
from durus.storage import MemoryStorage

DATA_DIR = Path(__file__).parent.parent / "data"
VECTOR_ZLIB_VERSION = "1.2.13"

keys = st.one_of(st.integers(-3, 12), st.sampled_from(["a", "b", "é", ""]))
values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.tuples(st.integers(0, 3)))
elements = st.integers(0, 15)
small_sets = st.frozensets(elements, max_size=6)
indexes = st.integers(-8, 8)


def outcome(action: Callable[[], Any]) -> tuple[str, Any]:
    """``('ok', result)`` or ``('raised', exception type)`` of ``action()``."""
    try:
        return "ok", action()
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return "raised", type(error)


def plain(value: Any) -> Any:
    """A persistent container's builtin contents; anything else unchanged."""
    if isinstance(value, (PersistentDict, PersistentList)):
        return value.data
    if isinstance(value, PersistentSet):
        return value.s
    return value


class StoredContainerMachine(RuleBasedStateMachine):
    """A container in the root of a MemoryStorage connection, compared with a model."""

    def new_container(self) -> Any:
        raise NotImplementedError

    def new_model(self) -> Any:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.connection = Connection(self.storage, cache_size=1)
        self.connection.get_root()["c"] = self.new_container()
        self.connection.commit()
        self.model = self.new_model()
        self.committed = copy.deepcopy(self.model)

    @property
    def container(self) -> Any:
        return self.connection.get_root()["c"]

    def same(self, on_model: Callable[[Any], Any], on_container: Callable[[Any], Any]) -> None:
        """Run an operation on both; results (containers as builtins) or errors must agree."""
        expected = outcome(lambda: on_model(self.model))
        kind, result = outcome(lambda: on_container(self.container))
        assert (kind, plain(result)) == expected

    @rule()
    def commit(self) -> None:
        self.connection.commit()
        self.committed = copy.deepcopy(self.model)

    @rule()
    def abort(self) -> None:
        self.connection.abort()
        self.model = copy.deepcopy(self.committed)

    @rule()
    def commit_and_ghost(self) -> None:
        self.commit()
        container = self.container
        container._p_set_status_ghost()
        assert container._p_is_ghost() and real_class(container) is type(self.new_container())

    @rule()
    def commit_and_shrink_cache(self) -> None:
        self.commit()
        self.connection.abort()  # a transaction that reads nothing: the tiny cache evicts

    @rule()
    def commit_and_reopen(self) -> None:
        self.commit()
        self.connection = Connection(self.storage, cache_size=1)
        assert self.container._p_is_ghost()

    @rule()
    def commit_and_read_elsewhere(self) -> None:
        self.commit()
        other = Connection(self.storage)
        assert plain(other.get_root()["c"]) == self.model

    @invariant()
    def matches_the_model(self) -> None:
        container = self.container
        assert plain(container) == self.model
        assert len(container) == len(self.model)


class DictMachine(StoredContainerMachine):
    def new_container(self) -> Any:
        return PersistentDict()

    def new_model(self) -> Any:
        return {}

    @rule(key=keys, value=values)
    def setitem(self, key: Any, value: Any) -> None:
        self.same(lambda d: d.__setitem__(key, value), lambda d: d.__setitem__(key, value))

    @rule(key=keys)
    def delitem(self, key: Any) -> None:
        self.same(lambda d: d.__delitem__(key), lambda d: d.__delitem__(key))

    @rule(key=keys)
    def getitem(self, key: Any) -> None:
        self.same(lambda d: d[key], lambda d: d[key])
        self.same(lambda d: (d.get(key), key in d), lambda d: (d.get(key), key in d))

    @rule(key=keys, default=st.none() | values)
    def pop(self, key: Any, default: Any) -> None:
        if default is None:
            self.same(lambda d: d.pop(key), lambda d: d.pop(key))
        else:
            self.same(lambda d: d.pop(key, default), lambda d: d.pop(key, default))

    @rule()
    def popitem(self) -> None:
        self.same(lambda d: d.popitem(), lambda d: d.popitem())

    @rule(key=keys, value=values)
    def setdefault(self, key: Any, value: Any) -> None:
        self.same(lambda d: d.setdefault(key, value), lambda d: d.setdefault(key, value))

    @rule(pairs=st.lists(st.tuples(keys, values), max_size=4), wrap=st.booleans())
    def update(self, pairs: list[tuple[Any, Any]], wrap: bool) -> None:
        other = PersistentDict(pairs) if wrap else dict(pairs)
        self.same(lambda d: d.update(dict(pairs)), lambda d: d.update(other))

    @rule(value=values)
    def update_keywords(self, value: Any) -> None:
        self.same(lambda d: d.update(x=value), lambda d: d.update(x=value))

    @rule()
    def clear(self) -> None:
        self.same(lambda d: d.clear(), lambda d: d.clear())

    @rule()
    def views(self) -> None:
        self.same(
            lambda d: (list(d), list(d.keys()), list(d.values()), list(d.items())),
            lambda d: (list(d), d.keys(), d.values(), d.items()),
        )

    @rule()
    def copy_is_equal(self) -> None:
        container = self.container
        duplicate = container.copy()
        assert duplicate == container and duplicate.data == self.model
        assert duplicate._p_oid is None


class ListMachine(StoredContainerMachine):
    def new_container(self) -> Any:
        return PersistentList()

    def new_model(self) -> Any:
        return []

    @rule(item=elements)
    def append(self, item: int) -> None:
        self.same(lambda x: x.append(item), lambda x: x.append(item))

    @rule(index=indexes, item=elements)
    def insert(self, index: int, item: int) -> None:
        self.same(lambda x: x.insert(index, item), lambda x: x.insert(index, item))

    @rule(index=st.none() | indexes)
    def pop(self, index: int | None) -> None:
        if index is None:
            self.same(lambda x: x.pop(), lambda x: x.pop())
        else:
            self.same(lambda x: x.pop(index), lambda x: x.pop(index))

    @rule(item=elements)
    def remove(self, item: int) -> None:
        self.same(lambda x: x.remove(item), lambda x: x.remove(item))

    @rule(index=indexes, item=elements)
    def setitem(self, index: int, item: int) -> None:
        self.same(lambda x: x.__setitem__(index, item), lambda x: x.__setitem__(index, item))

    @rule(start=indexes, stop=indexes, items=st.lists(elements, max_size=3))
    def set_slice(self, start: int, stop: int, items: list[int]) -> None:
        part = slice(start, stop)
        self.same(lambda x: x.__setitem__(part, items), lambda x: x.__setitem__(part, iter(items)))

    @rule(index=indexes)
    def delitem(self, index: int) -> None:
        self.same(lambda x: x.__delitem__(index), lambda x: x.__delitem__(index))

    @rule(start=indexes, stop=indexes, step=st.sampled_from([None, 1, 2, -1]))
    def del_and_get_slice(self, start: int, stop: int, step: int | None) -> None:
        part = slice(start, stop, step)
        self.same(lambda x: x[part], lambda x: x[part])
        self.same(lambda x: x.__delitem__(part), lambda x: x.__delitem__(part))

    @rule(items=st.lists(elements, max_size=3), how=st.sampled_from(["extend", "iadd", "wrap"]))
    def extend(self, items: list[int], how: str) -> None:
        def on_container(x: Any) -> Any:
            if how == "extend":
                return x.extend(tuple(items))
            if how == "wrap":
                return x.extend(PersistentList(items))
            result = x.__iadd__(items)
            assert result is x
            return None

        self.same(lambda x: x.extend(items), on_container)

    @rule(n=st.integers(-1, 2))
    def imul(self, n: int) -> None:
        if len(self.model) * max(n, 0) > 40:
            n = 1

        def multiply(x: Any) -> None:
            assert x.__imul__(n) is x

        self.same(multiply, multiply)

    @rule(descending=st.booleans())
    def sort_and_reverse(self, descending: bool) -> None:
        self.same(lambda x: x.sort(reverse=descending), lambda x: x.sort(reverse=descending))
        self.same(lambda x: x.reverse(), lambda x: x.reverse())

    @rule()
    def clear(self) -> None:
        self.same(lambda x: x.clear(), lambda x: x.clear())

    @rule(item=elements, other=st.lists(elements, max_size=3))
    def reading(self, item: int, other: list[int]) -> None:
        self.same(lambda x: (x.count(item), item in x), lambda x: (x.count(item), item in x))
        self.same(lambda x: x.index(item), lambda x: x.index(item))
        self.same(
            lambda x: (x == other, x < other, x >= other, x + other, other + x, x * 2),
            lambda x: (x == other, x < other, x >= other, (x + other).data, (other + x).data,
                       (x * 2).data),
        )  # fmt: skip
        self.same(lambda x: (list(x), list(reversed(x))), lambda x: (list(x), list(reversed(x))))


class SetMachine(StoredContainerMachine):
    def new_container(self) -> Any:
        return PersistentSet()

    def new_model(self) -> Any:
        return set()

    @rule(item=elements)
    def add_discard_remove(self, item: int) -> None:
        self.same(lambda s: s.add(item), lambda s: s.add(item))
        self.same(lambda s: s.discard(item + 1), lambda s: s.discard(item + 1))
        self.same(lambda s: s.remove(item + 2), lambda s: s.remove(item + 2))

    @rule()
    def pop(self) -> None:
        kind, result = outcome(self.container.pop)
        if kind == "ok":
            assert result in self.model
            self.model.remove(result)
        else:
            assert not self.model and result is KeyError

    @rule()
    def clear(self) -> None:
        self.same(lambda s: s.clear(), lambda s: s.clear())

    @rule(
        method=st.sampled_from(["update", "intersection_update"]),
        others=st.lists(small_sets, max_size=3),
        wrap=st.booleans(),
    )
    def multi_argument_update(self, method: str, others: list[frozenset[int]], wrap: bool) -> None:
        arguments = [PersistentSet(o) if wrap else o for o in others]
        self.same(lambda s: getattr(s, method)(*others), lambda s: getattr(s, method)(*arguments))

    @rule(
        method=st.sampled_from(["difference_update", "symmetric_difference_update"]),
        other=small_sets,
    )
    def single_argument_update(self, method: str, other: frozenset[int]) -> None:
        self.same(lambda s: getattr(s, method)(other), lambda s: getattr(s, method)(other))

    @rule(
        operator=st.sampled_from(["__iand__", "__ior__", "__isub__", "__ixor__"]), other=small_sets
    )
    def in_place_operator(self, operator: str, other: frozenset[int]) -> None:
        def on_container(s: Any) -> None:
            assert getattr(s, operator)(PersistentSet(other)) is s

        def on_model(s: Any) -> None:
            assert getattr(s, operator)(other) is s

        self.same(on_model, on_container)

    @rule(others=st.lists(small_sets, min_size=1, max_size=3))
    def building_methods(self, others: list[frozenset[int]]) -> None:
        first = others[0]
        for name in ("union", "intersection"):
            method = operator.methodcaller(name, *others)
            self.same(method, method)
        for name in ("difference", "symmetric_difference", "issubset", "issuperset", "isdisjoint"):
            method = operator.methodcaller(name, first)
            self.same(method, method)
        self.same(
            lambda s: (s & first, s | first, s - first, s ^ first, first - s, first ^ s),
            lambda s: (
                (s & first).s, (s | first).s, (s - first).s, (s ^ first).s,
                (first - s).s, (first ^ s).s,
            ),
        )  # fmt: skip
        wrapped = PersistentSet(first)
        self.same(
            lambda s: (s < first, s <= first, s > first, s >= first, s == first),
            lambda s: (s < wrapped, s <= wrapped, s > wrapped, s >= wrapped, s == wrapped),
        )


TestPersistentDictMachine = DictMachine.TestCase
TestPersistentListMachine = ListMachine.TestCase
TestPersistentSetMachine = SetMachine.TestCase


# -- record bytes of the Durus 4.3 vectors ------------------------------------------


class _VectorConnection(ConnectionBase):
    """Just enough of a connection for ObjectReader/ObjectWriter on stored oids."""

    def __init__(self) -> None:
        self.cache = type("VectorCache", (), {"objects": {}})()

    def new_oid(self) -> bytes:
        raise AssertionError("re-encoding a vector must not allocate oids")

    def note_access(self, obj: Any) -> None:
        pass

    def note_change(self, obj: Any) -> None:
        raise AssertionError("re-encoding a vector must not change anything")

    def load_state(self, obj: Any) -> None:
        raise AssertionError("re-encoding a vector must not load other records")


CONTAINER_VECTORS = [
    ("record_oid0_root_PersistentDict.bin", PersistentDict),
    ("record_oid0_root_uncompressed.bin", PersistentDict),
    ("record_oid1_PersistentList.bin", PersistentList),
    ("record_oid6_PersistentList_inner.bin", PersistentList),
    ("record_oid2_PersistentSet.bin", PersistentSet),
    ("record_oid3_BTree.bin", "BTree"),
    ("record_oid7_BNode16_internal.bin", "BNode16"),
    ("record_oid8_BNode16_leaf.bin", "BNode16"),
]


@pytest.mark.parametrize(("name", "klass"), CONTAINER_VECTORS)
def test_vector_container_records_reencode_identically(
    name: str, klass: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = (DATA_DIR / name).read_bytes()
    oid, data, refs = unpack_record(record)
    connection = _VectorConnection()
    reader = ObjectReader(connection)
    obj = reader.get_ghost(data)
    expected_class = klass if isinstance(klass, type) else real_class(obj)
    assert real_class(obj) is expected_class and real_class(obj).__name__ == (
        klass if isinstance(klass, str) else klass.__name__
    )
    obj.__setstate__(reader.get_state(data))
    obj._p_oid, obj._p_connection, obj._p_status = oid, connection, SAVED
    compressed = "uncompressed" not in name
    monkeypatch.setattr(durus.serialize, "WRITE_COMPRESSED_STATE_PICKLES", compressed)
    writer = ObjectWriter(connection)
    new_data, new_refs = writer.get_state(obj)
    writer.close()
    assert new_refs == refs
    assert reader.get_state_pickle(new_data) == reader.get_state_pickle(data)
    if not compressed or zlib.ZLIB_RUNTIME_VERSION == VECTOR_ZLIB_VERSION:
        assert pack_record(oid, new_data, new_refs) == record
