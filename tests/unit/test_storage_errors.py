"""Tests of the Storage base class and MemoryStorage misuse, and of the row form of
records (durus.record.row_to_record) when a database row is not a record.
"""

from __future__ import annotations

import pytest

from durus.error import RecordFormatError
from durus.record import MAX_ROW_OID, pack_record, row_to_record
from durus.storage import MemoryStorage
from durus.utils import ROOT_OID, int8_to_str


def rec(n: int, *refs: int) -> bytes:
    return pack_record(int8_to_str(n), b"data", b"".join(int8_to_str(r) for r in refs))


def test_memory_storage_end_before_begin() -> None:
    storage = MemoryStorage()
    assert str(storage) == "MemoryStorage()"
    with pytest.raises(RuntimeError, match=r"end\(\) called before begin\(\)"):
        storage.end()
    assert storage.records == {}


def test_a_record_referred_to_twice_is_listed_once() -> None:
    storage = MemoryStorage()
    storage.begin()
    for record in (rec(0, 1, 2), rec(1, 2, 0), rec(2, 2)):
        storage.store(record[:8], record)
    storage.end()
    listed = [oid for oid, _record in storage.gen_oid_record(batch_size=1)]
    assert listed == [ROOT_OID, int8_to_str(1), int8_to_str(2)]


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
    assert row_to_record(7, b"data", None) == rec(7)
