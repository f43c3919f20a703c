"""Tests of the Storage base class and MemoryStorage misuse, and of the row form of
records (durus.record.row_to_record) when a database row is not a record.
"""

from __future__ import annotations

import pytest

from durus.error import RecordFormatError
from durus.record import MAX_ROW_OID, row_to_record
from durus.storage import MemoryStorage
from durus.utils import ROOT_OID
from tests.support.records import commit, oid, record


def test_memory_storage_end_before_begin() -> None:
    storage = MemoryStorage()
    assert str(storage) == "MemoryStorage()"
    with pytest.raises(RuntimeError, match=r"end\(\) called before begin\(\)"):
        storage.end()
    assert storage.records == {}


def test_a_record_referred_to_twice_is_listed_once() -> None:
    storage = MemoryStorage()
    commit(storage, record(0, 1, 2), record(1, 2, 0), record(2, 2))
    listed = [listed_oid for listed_oid, _record in storage.gen_oid_record(batch_size=1)]
    assert listed == [ROOT_OID, oid(1), oid(2)]


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ((-1, b"", b""), "row id -1 is not an oid"),
        ((MAX_ROW_OID + 1, b"", b""), f"row id {MAX_ROW_OID + 1} is not an oid"),
        (("7", b"", b""), "row id '7' is not an oid"),
        ((7, "text", b""), "row 7: data and refs must be byte strings"),
        ((7, b"", 5), "row 7: data and refs must be byte strings"),
        ((7, b"", b"\x00" * 7), "row 7: .*multiple of 8"),
    ],
    ids=["negative", "too-big", "str-id", "str-data", "int-refs", "short-refs"],
)
def test_rows_that_are_not_records(row: tuple[object, object, object], words: str) -> None:
    with pytest.raises(RecordFormatError, match=words):
        row_to_record(*row)  # type: ignore[arg-type]


def test_a_row_without_refs_is_a_record_without_refs() -> None:
    assert row_to_record(7, b"data", None) == record(7)
