"""durus.storage: the abstract interface, MemoryStorage and the census tools."""

from __future__ import annotations

import pytest

from durus.error import DurusKeyError
from durus.storage import (
    MemoryStorage,
    Storage,
    gen_oid_class,
    gen_referring_oid_record,
    get_census,
    get_reference_index,
)
from durus.utils import ROOT_OID
from tests.support.records import class_record, commit, oid


def filled_storage() -> MemoryStorage:
    """Root -> 1, 2; 2 -> 3; 4 is unreachable."""
    storage = MemoryStorage()
    commit(
        storage,
        class_record(0, b"Root", 1, 2),
        class_record(1, b"Leaf"),
        class_record(2, b"Node", 3),
        class_record(3, b"Leaf"),
        class_record(4, b"Lost"),
    )
    return storage


def test_storage_is_abstract() -> None:
    with pytest.raises(RuntimeError, match="abstract"):
        Storage()
    storage = MemoryStorage()
    assert Storage.get_packer(storage) is None
    assert Storage.pack(storage) is None
    for method in ("load", "begin", "store", "end", "sync", "new_oid"):
        args = (oid(0), b"") if method == "store" else (oid(0),) if method == "load" else ()
        with pytest.raises(NotImplementedError):
            getattr(Storage, method)(storage, *args)


def test_memory_storage_transactions() -> None:
    storage = MemoryStorage()
    assert storage.new_oid() == ROOT_OID and storage.new_oid() == oid(1)
    with pytest.raises(RuntimeError):
        storage.store(oid(0), class_record(0, b"Root"))
    storage.begin()
    storage.store(oid(0), class_record(0, b"Root"))
    with pytest.raises(DurusKeyError):
        storage.load(oid(0))  # not visible before end()
    storage.end()
    assert storage.load(oid(0)) == class_record(0, b"Root")
    assert storage.sync() == []
    with pytest.raises(KeyError):
        storage.load(oid(9))
    storage.begin()
    with pytest.raises(ValueError, match="differs"):
        storage.store(oid(1), class_record(0, b"Root"))


def test_gen_oid_record_traverses_reachable_lowest_first() -> None:
    storage = filled_storage()
    assert [o for o, _ in storage.gen_oid_record()] == [oid(0), oid(1), oid(2), oid(3)]
    assert [o for o, _ in storage.gen_oid_record(batch_size=1)] == [oid(0), oid(1), oid(2), oid(3)]
    assert [o for o, _ in storage.gen_oid_record(start_oid=oid(2))] == [oid(2), oid(3)]
    with pytest.raises(ValueError):
        list(storage.gen_oid_record(batch_size=0))


def test_gen_oid_record_skips_dangling_references() -> None:
    storage = MemoryStorage()
    commit(storage, class_record(0, b"Root", 7))
    assert [o for o, _ in storage.gen_oid_record()] == [oid(0)]


def test_tools() -> None:
    storage = filled_storage()
    assert [o for o, _ in gen_referring_oid_record(storage, oid(3))] == [oid(2)]
    assert list(gen_oid_class(storage, b"Leaf")) == [(oid(1), b"Leaf"), (oid(3), b"Leaf")]
    assert list(gen_oid_class(storage, "Leaf")) == [(oid(1), b"Leaf"), (oid(3), b"Leaf")]
    assert get_census(storage) == {b"Root": 1, b"Leaf": 2, b"Node": 1}
    assert get_reference_index(storage) == {oid(1): [oid(0)], oid(2): [oid(0)], oid(3): [oid(2)]}
