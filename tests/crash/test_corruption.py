"""Corruption, not crash: a damaged byte in the MIDDLE of the log.

For every byte of the middle transaction of small real databases (objects
committed through Connection, with compressed and with uncompressed state
pickles), three kinds of damage (one bit flipped, all bits flipped, zeroed)
are applied, the file is opened without ``repair`` and every object is read
back. Each case ends in one of:

* ``open``: the open raised an error naming the file and a byte offset;
* ``load``: the open succeeded, reading some object raised;
* ``same``: everything read back equal (the byte did not matter, e.g. a pickle
  memo index);
* ``wrong``: everything read back without error, but a value differs;
* ``lost``: objects of the transactions after the damage vanished without an
  error (silent truncation).

What SHELF-1 promises, and these tests hold it to (tests/crash/README.md has
the full table): structural damage (lengths, names, record oids, data-length
fields that break the record's arithmetic) is reported on open with its
offset; damage inside a zlib-compressed state is reported on load; nothing is
ever silently truncated (``lost`` never happens). Damage inside uncompressed
pickle bytes or inside the refs list may go unnoticed (``wrong``/``same``):
the format has no checksum there, so nothing more is promised.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import durus.serialize
from durus.connection import Connection
from durus.error import ReadConflictError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.record import pack_record
from durus.shelf import FileFormatError
from durus.utils import ROOT_OID
from tests.crash.crash_points import count
from tests.crash.harness import PATH
from tests.crash.layout import RecordSpan, ShelfLayout, read_layout
from tests.support.faulty_disk import FaultyDisk

DAMAGES: dict[str, Callable[[int], int]] = {
    "flip-low-bit": lambda byte: byte ^ 0x01,
    "invert": lambda byte: byte ^ 0xFF,
    "zero": lambda byte: 0,
}


PAYLOAD_FIELDS = ["class pickle", "state pickle", "refs"]


def _build(compressed: bool) -> tuple[bytes, dict[str, Any]]:
    """A four-transaction database; the file bytes and the expected contents."""
    disk = FaultyDisk()
    saved = durus.serialize.WRITE_COMPRESSED_STATE_PICKLES
    durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = compressed
    try:
        connection = Connection(FileStorage(PATH, file_system=disk))
        root = connection.get_root()
        root["first"] = PersistentDict(text="alpha " * 5, number=1)
        connection.commit()
        root["first"]["number"] = 2
        child = PersistentDict(leaf="reached only from middle")
        root["middle"] = PersistentDict(text="the middle transaction", items=[1, 2, 3], child=child)
        connection.commit()
        root["last"] = PersistentDict(text="omega")
        connection.commit()
        connection.storage.close()
    finally:
        durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = saved
    expected = {
        "first": {"text": "alpha " * 5, "number": 2},
        "middle": {
            "text": "the middle transaction",
            "items": [1, 2, 3],
            "child": {"leaf": "reached only from middle"},
        },
        "last": {"text": "omega"},
    }
    return disk.read_file(PATH), expected


def _plain(value: Any) -> Any:
    """The database contents as plain Python values (loads every object)."""
    if isinstance(value, PersistentDict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _class_pickle_end(data: bytes) -> int:
    """Length of the class pickle at the start of a record's data."""
    stream = io.BytesIO(data)
    unpickler = pickle.Unpickler(stream)
    unpickler.persistent_load = lambda pid: None  # type: ignore[assignment]
    unpickler.load()
    return stream.tell()


def field_of(content: bytes, layout: ShelfLayout, offset: int) -> str:
    """Which SHELF-1 field the byte at ``offset`` belongs to."""
    for transaction in (*layout.transactions,):
        if not transaction.start <= offset < transaction.end:
            continue
        if offset < transaction.start + 8:
            return "transaction length"
        record = next(r for r in transaction.records if r.position <= offset < r.end)
        field = _record_field(content, record, offset)
        later = (t for t in layout.transactions if t.start > transaction.start)
        if field in PAYLOAD_FIELDS and any(r.oid == record.oid for t in later for r in t.records):
            return "superseded " + field
        return field
    return "outside"


def _record_field(content: bytes, record: RecordSpan, offset: int) -> str:
    data_length = int.from_bytes(content[record.data_offset - 4 : record.data_offset], "big")
    data = content[record.data_offset : record.data_offset + data_length]
    class_end = record.data_offset + _class_pickle_end(data)
    data_end = record.data_offset + data_length
    boundaries = [
        (record.name_offset, "record length"),
        (record.record_offset, "record name"),
        (record.record_offset + 8, "record oid"),
        (record.data_offset, "data length"),
        (class_end, "class pickle"),
        (data_end, "state pickle"),
        (record.end, "refs"),
    ]
    for end, name in boundaries:
        if offset < end:
            return name
    raise AssertionError(f"offset {offset} is outside record {record}")


def outcome(damaged: bytes, expected: dict[str, Any]) -> tuple[str, str]:
    """(outcome, detail) of opening and reading a damaged database."""
    try:
        storage = FileStorage(PATH, file_system=FaultyDisk({PATH: damaged}))
    except FileFormatError as error:
        assert error.offset is not None, "damage reported without an offset"
        assert PATH in str(error) and str(error.offset) in str(error)
        return "open", type(error).__name__
    try:
        contents = _plain(Connection(storage).get_root())
    except Exception as error:  # noqa: BLE001 - any error is a detection
        return "load", type(error).__name__
    finally:
        storage.close()
    if contents == expected:
        return "same", ""
    if set(contents) < set(expected):
        return "lost", f"missing {sorted(set(expected) - set(contents))}"
    return "wrong", ""


def study(compressed: bool) -> Iterator[tuple[str, str, str, str]]:
    """(field, damage, outcome, detail) for every byte of the middle transaction."""
    content, expected = _built(compressed)
    layout = read_layout(content)
    # The transaction that wrote "first" (rewritten) and "middle": live records, mid-log.
    middle = max(layout.transactions[:-1], key=lambda t: len(t.records))
    for offset in range(middle.start, middle.end):
        field = field_of(content, layout, offset)
        for damage_name, damage in DAMAGES.items():
            new_byte = damage(content[offset])
            if new_byte == content[offset]:
                continue
            damaged = content[:offset] + bytes([new_byte]) + content[offset + 1 :]
            result, detail = outcome(damaged, expected)
            yield field, damage_name, result, detail


STUDIES: dict[bool, list[tuple[str, str, str, str]]] = {}


def _study(compressed: bool) -> list[tuple[str, str, str, str]]:
    if compressed not in STUDIES:
        STUDIES[compressed] = list(study(compressed))
        count("[other] corruption: damaged files opened", len(STUDIES[compressed]))
    return STUDIES[compressed]


def table(rows: list[tuple[str, str, str, str]]) -> dict[str, Counter[str]]:
    by_field: dict[str, Counter[str]] = {}
    for field, _damage, result, _detail in rows:
        by_field.setdefault(field, Counter())[result] += 1
    return by_field


STRUCTURAL_FIELDS = ["transaction length", "record length", "record name", "record oid"]


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
@pytest.mark.parametrize("field", STRUCTURAL_FIELDS)
def test_structural_damage_is_reported_on_open_with_its_offset(
    compressed: bool, field: str
) -> None:
    results = table(_study(compressed))[field]
    assert set(results) == {"open"}, results


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
def test_data_length_damage_is_reported_on_open_or_load(compressed: bool) -> None:
    results = table(_study(compressed))["data length"]
    assert set(results) <= {"open", "load"}, results


def test_damage_inside_a_compressed_state_is_reported_on_load() -> None:
    results = table(_study(True))["state pickle"]
    assert set(results) <= {"load"}, results


def test_class_pickle_damage_never_silently_loses_objects() -> None:
    for compressed in (True, False):
        results = table(_study(compressed))["class pickle"]
        assert "lost" not in results, results


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "uncompressed"])
def test_damage_in_the_middle_is_never_silent_truncation(compressed: bool) -> None:
    lost = [row for row in _study(compressed) if row[2] == "lost"]
    assert not lost, lost[:5]


GARBAGE = st.one_of(
    st.integers(1, 600).map(bytes),  # zeros, as a lost or wiped sector reads
    st.binary(min_size=1, max_size=64),
)


@given(data=st.data(), garbage=GARBAGE, compressed=st.booleans())
def test_garbage_in_the_middle_is_never_silent_truncation(
    data: st.DataObject, garbage: bytes, compressed: bool
) -> None:
    content, expected = _built(compressed)
    layout = read_layout(content)
    final_start = layout.transactions[-1].start
    start = data.draw(st.integers(layout.first_transaction, final_start - 1), label="start")
    end = min(start + len(garbage), final_start)
    damaged = content[:start] + garbage[: end - start] + content[end:]
    if damaged == content:
        return
    result, detail = outcome(damaged, expected)
    count("[other] corruption: damaged files opened", 1)
    assert result != "lost", (start, end, detail)
    if compressed and result == "wrong":
        fields = {field_of(content, layout, offset) for offset in range(start, end)}
        assert "class pickle" in fields, (start, end, fields)


_BUILT: dict[bool, tuple[bytes, dict[str, Any]]] = {}


def _built(compressed: bool) -> tuple[bytes, dict[str, Any]]:
    if compressed not in _BUILT:
        _BUILT[compressed] = _build(compressed)
    return _BUILT[compressed]


def _two_transactions_first_with_two_records() -> bytes:
    disk = FaultyDisk()
    storage = FileStorage(PATH, file_system=disk)
    oid = storage.new_oid()
    oid = storage.new_oid() if oid == ROOT_OID else oid
    root = pack_record(ROOT_OID, b"root 1", oid)
    storage.begin()
    storage.store(ROOT_OID, root)
    storage.store(oid, pack_record(oid, b"obj", b""))
    storage.end()
    storage.begin()
    storage.store(ROOT_OID, pack_record(ROOT_OID, b"root 2", oid))
    storage.end()
    storage.close()
    return disk.read_file(PATH)


def _refused_and_kept(damaged: bytes) -> FileFormatError:
    """The error of opening ``damaged``, which must be left exactly as it was."""
    disk = FaultyDisk({PATH: damaged})
    try:
        with pytest.raises(FileFormatError) as caught:
            FileStorage(PATH, file_system=disk).close()
    finally:
        assert disk.read_file(PATH) == damaged, "the damaged file was truncated"
    return caught.value


def test_zeroed_length_of_a_middle_transaction_is_reported() -> None:
    """Regression: this zeroed byte once dropped both transactions and truncated the file."""
    content = _two_transactions_first_with_two_records()
    layout = read_layout(content)
    first = layout.transactions[0]
    assert first.start == 40 and len(first.records) == 2 and len(layout.transactions) == 2
    assert content[first.start : first.start + 7] == bytes(7)  # length < 256: one byte
    damaged = bytearray(content)
    damaged[first.start + 7] = 0
    assert _refused_and_kept(bytes(damaged)).offset == first.start


def test_a_wiped_middle_transaction_header_is_reported() -> None:
    """Regression: 16 zeroed bytes here once dropped both transactions and truncated."""
    content = _two_transactions_first_with_two_records()
    first = read_layout(content).transactions[0]
    damaged = bytearray(content)
    damaged[first.start : first.start + 16] = bytes(16)
    _refused_and_kept(bytes(damaged))


def test_damaged_lengths_claiming_past_the_end_are_reported() -> None:
    """Regression: these lengths once made the open take the file for a cut-short tail."""
    content = _two_transactions_first_with_two_records()
    first = read_layout(content).transactions[0]
    damaged = bytearray(content)
    damaged[first.start] = 0x01  # the transaction now claims 2**56 more bytes
    damaged[first.start + 8] = 0x01  # and so does its first record
    assert _refused_and_kept(bytes(damaged)).offset == first.start


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    """The outcome table, as written into tests/crash/README.md."""
    outcomes = ["open", "load", "same", "wrong", "lost"]
    lines = ["| field | " + " | ".join(outcomes) + " |", "|---" * (len(outcomes) + 1) + "|"]
    for field, results in table(rows).items():
        lines.append(f"| {field} | " + " | ".join(str(results[o]) for o in outcomes) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # print the README tables
    for compressed in (True, False):
        print("compressed" if compressed else "uncompressed")
        print(format_table(list(study(compressed))))


def test_refs_damage_goes_unnoticed_until_a_pack_drops_the_object() -> None:
    """Refs are read only by pack: damage there is silent, and a pack then loses the child.

    What is promised afterwards: reading the lost child raises; it never
    returns another object's state (while its oid has not been reused).
    """
    content, expected = _built(True)
    layout = read_layout(content)
    middle = max(layout.transactions[:-1], key=lambda t: len(t.records))
    refs_offsets = [
        o for o in range(middle.start, middle.end) if field_of(content, layout, o) == "refs"
    ]
    assert len(refs_offsets) == 8  # "middle" refers to its child only
    damaged = bytearray(content)
    damaged[refs_offsets[-1]] ^= 0x40  # the ref now names an oid that does not exist
    disk = FaultyDisk({PATH: bytes(damaged)})
    storage = FileStorage(PATH, file_system=disk)
    assert _plain(Connection(storage).get_root()) == expected  # not detected
    storage.pack()
    storage.close()
    storage = FileStorage(PATH, file_system=disk)
    try:
        root = Connection(storage).get_root()
        assert _plain(root["first"]) == expected["first"]
        with pytest.raises((KeyError, ReadConflictError)):
            _plain(root["middle"])
    finally:
        storage.close()


def test_a_data_length_shrunk_by_a_multiple_of_8_passes_the_open_but_not_the_load() -> None:
    """The one data-length damage the open cannot see: the record still adds up.

    Zeroing the second byte of a 300-odd-byte record's int4 data length shrinks
    the data by 256 bytes, which become 32 "refs": the record's arithmetic is
    intact, so the open and the storage-level load accept it. Decoding the
    truncated pickle fails, so the application gets an error, not wrong data.
    """
    disk = FaultyDisk()
    saved = durus.serialize.WRITE_COMPRESSED_STATE_PICKLES
    durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = False
    try:
        connection = Connection(FileStorage(PATH, file_system=disk))
        connection.get_root()["big"] = PersistentDict(text="y" * 300)
        connection.commit()
        connection.get_root()["later"] = 1
        connection.commit()
        connection.storage.close()
    finally:
        durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = saved
    content = disk.read_file(PATH)
    layout = read_layout(content)
    big = next(
        r
        for t in layout.transactions[:-1]
        for r in t.records
        if int.from_bytes(content[r.data_offset - 4 : r.data_offset], "big") >= 256
    )
    damaged = bytearray(content)
    damaged[big.data_offset - 2] = 0
    storage = FileStorage(PATH, file_system=FaultyDisk({PATH: bytes(damaged)}))
    try:
        assert len(storage.load(big.oid)) == big.end - big.record_offset  # accepted
        with pytest.raises(Exception) as caught:  # noqa: B017 - any decoding error counts
            _plain(Connection(storage).get_root()["big"])
        assert not isinstance(caught.value, KeyError), "reported as a missing object"
    finally:
        storage.close()
