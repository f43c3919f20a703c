"""durus.storage: MemoryStorage misuse is refused without losing records, and
the base traversal visits an object reached by several paths (or a cycle) once.
"""

from __future__ import annotations

import pytest

from durus.storage import MemoryStorage
from tests.support.records import class_record, commit, oid


def stored(*records: bytes) -> MemoryStorage:
    storage = MemoryStorage()
    commit(storage, *records)
    return storage


def test_str_names_the_storage() -> None:
    assert str(MemoryStorage()) == "MemoryStorage()"


def test_end_before_begin_is_refused_and_keeps_the_records() -> None:
    storage = stored(class_record(0, b"Root"))
    with pytest.raises(RuntimeError, match="end\\(\\) called before begin\\(\\)"):
        storage.end()
    assert storage.load(oid(0)) == class_record(0, b"Root")


def test_a_second_end_is_refused_too() -> None:
    storage = MemoryStorage()
    storage.begin()
    storage.store(oid(0), class_record(0, b"Root"))
    storage.end()
    with pytest.raises(RuntimeError, match="before begin"):
        storage.end()
    assert storage.load(oid(0)) == class_record(0, b"Root")


def test_traversal_visits_a_shared_object_once() -> None:
    # root -> 1, 2; both 1 and 2 -> 3
    storage = stored(
        class_record(0, b"Root", 1, 2),
        class_record(1, b"A", 3),
        class_record(2, b"B", 3),
        class_record(3, b"Shared"),
    )
    assert [o for o, _ in storage.gen_oid_record()] == [oid(0), oid(1), oid(2), oid(3)]


def test_traversal_of_a_cycle_ends() -> None:
    # root -> 1 -> 2 -> root
    storage = stored(
        class_record(0, b"Root", 1), class_record(1, b"A", 2), class_record(2, b"B", 0)
    )
    assert [o for o, _ in storage.gen_oid_record(batch_size=1)] == [oid(0), oid(1), oid(2)]
