"""Tests of durus.check on damaged files: every kind of damage ``durus -k`` can report.

Each test damages a copy of a vector file (or builds a small one) and checks
what a user reads: the damage message, the byte offset and oid it names, the
notes, the verdict, and that the checked file is left exactly as it was.
"""

from __future__ import annotations

import io
import os
import pickle
import sqlite3
import sys
import types
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durus import check
from durus.check import CheckError, CheckReport, RecordSite, check_record, check_storage_file
from durus.file_storage import FileStorage
from durus.record import pack_record
from durus.utils import int4_to_str, int8_to_str
from tests.conftest import DATA_DIR

CLASS_PICKLE = b"\x80\x02cmy.module\nThing\nq\x00."
OID_3 = int8_to_str(3)


def damaged_copy(tmp_path: Path, vector: str, edits: dict[int, bytes]) -> Path:
    """A copy of ``vector`` with ``edits`` (offset -> bytes) written over it."""
    content = bytearray((DATA_DIR / vector).read_bytes())
    for offset, replacement in edits.items():
        content[offset : offset + len(replacement)] = replacement
    target = tmp_path / vector
    target.write_bytes(bytes(content))
    return target


def checked_unchanged(path: Path) -> CheckReport:
    """The report on ``path``, after checking that the check left the file as it was."""
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    report = check_storage_file(str(path))
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    return report


def damage_lines(report: CheckReport) -> list[str]:
    return [str(damage) for damage in report.damage]


def site_for(data: bytes, refs: bytes = b"") -> RecordSite:
    return RecordSite(OID_3, 100, pack_record(OID_3, data, refs))


# ---------------------------------------------------------------- record decoding

# A state pickle using every opcode that fills a container or sets a state, on an
# instance of a class the pickle names, and a ``_codecs.encode`` call that is not
# the latin-1 one oid references use: all are decoded without running anything.
EVERY_CONTAINER_OPCODE = (
    b"\x80\x04cmy.module\nBag\n)\x81"  # an instance of my.module.Bag (NEWOBJ)
    b"(K\x01K\x02e"  # APPENDS: extend
    b"K\x03a"  # APPEND
    b"K\x04K\x05s"  # SETITEM
    b"(K\x06\x90"  # ADDITEMS: add
    b"}b"  # BUILD: __setstate__
    b"c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00utf-8\x86R"
    b"cmy.module\nBag\n"  # the same global named a second time
    b"\x87."
)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "compressed"])
def test_any_container_shape_in_a_state_decodes_without_damage(compress: bool) -> None:
    state = zlib.compress(EVERY_CONTAINER_OPCODE) if compress else EVERY_CONTAINER_OPCODE
    live, damage = check_record(site_for(CLASS_PICKLE + state))
    assert damage == []
    assert live is not None and live.class_name == "my.module.Thing" and live.refs == ()


class _Ref:
    def __init__(self, pid: Any) -> None:
        self.pid = pid


class _RefPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return obj.pid if isinstance(obj, _Ref) else None


def state_with_reference(pid: Any) -> bytes:
    stream = io.BytesIO()
    _RefPickler(stream, protocol=2).dump({"ref": _Ref(pid)})
    return stream.getvalue()


STATE = pickle.dumps({"x": 1}, protocol=2)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"K\x01." + STATE, "RecordFormatError: the class pickle holds int, not a class"),
        (CLASS_PICKLE + state_with_reference(b"abc"), "persistent reference b'abc'"),
        (CLASS_PICKLE + zlib.compress(STATE)[:-4], "the compressed state is cut short"),
        (CLASS_PICKLE + zlib.compress(STATE) + b"zz", "2 bytes follow the compressed state"),
        (CLASS_PICKLE + STATE + b"zz", "2 unexpected bytes after the state pickle"),
        (CLASS_PICKLE + b"\x80\x02garbage", "UnpicklingError"),
        (CLASS_PICKLE + b"\x78\x9cnot zlib", "the compressed state does not inflate"),
    ],
    ids=["not-a-class", "bad-reference", "cut-zlib", "after-zlib", "after-raw", "junk", "bad-zlib"],
)
def test_undecodable_record_data_is_damage_naming_offset_and_oid(data: bytes, words: str) -> None:
    live, damage = check_record(site_for(data))
    assert live is None
    assert [(d.offset, d.oid) for d in damage] == [(100, OID_3)]
    assert damage[0].message.startswith("record data does not decode (")
    assert words in damage[0].message


def test_state_inflating_past_the_limit_is_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "MAX_STATE_BYTES", 100)
    live, damage = check_record(site_for(CLASS_PICKLE + zlib.compress(b"\x80\x02" + b"N" * 500)))
    assert live is None
    assert "the state inflates to more than 100 bytes" in damage[0].message


def test_record_that_does_not_unpack_is_damage() -> None:
    live, damage = check_record(RecordSite(OID_3, 64, OID_3 + b"\x00\x00"))
    assert live is None
    assert str(damage[0]).startswith("offset 64, oid 3: record does not unpack:")


def test_record_naming_another_oid_than_its_frame_is_damage() -> None:
    record = pack_record(int8_to_str(7), CLASS_PICKLE + STATE, b"")
    live, damage = check_record(RecordSite(OID_3, 64, record))
    assert live is None
    assert damage_lines(CheckReport("x", damage=damage)) == [
        "offset 64, oid 3: the record names oid 7, its frame names another"
    ]


# ---------------------------------------------------------------- SHELF-1 framing

# shelf_a.durus: empty offset map at 16; the first transaction at 40 (length 98)
# holds the first root record at 48 (m = 90; its record starts at 64).


def test_shelf_prefix_damage_stops_the_scan_and_file_storage_refuses(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {0: b"SHELF-1X"}))
    assert report.format_name == "SHELF-1" and not report.ok
    lines = damage_lines(report)
    assert lines[0] == "offset 0: the file does not start with SHELF-1"
    assert any(
        line.startswith("FileStorage refuses to open the file: NotAShelfError:") for line in lines
    )
    assert "the scan stopped at the first framing damage" in report.notes
    assert report.live == {}


def test_initial_transaction_overrunning_the_file(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {8: int8_to_str(10**6)}))
    first = str(report.damage[0])
    assert first == "offset 8: initial transaction declares 1000000 bytes but the file ends at 4450"
    assert "cut off by a crash" not in first  # only a final commit can be unfinished


def test_shelf_record_overrunning_its_transaction(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {48: int8_to_str(4)}))
    assert str(report.damage[0]) == (
        "offset 48: shelf record of 4 bytes overruns its transaction (ends at 146)"
    )


def test_inconsistent_offset_map_header(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {24: int8_to_str(9)}))
    assert str(report.damage[0]) == (
        "offset 16: offset map header is inconsistent (total=16, bpw=9)"
    )


def test_shelf_name_differing_from_the_record_oid(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {56: int8_to_str(7)}))
    lines = damage_lines(report)
    assert "offset 48, oid 7: the record names oid 0, its frame names another" in lines
    assert any(
        line.startswith("FileStorage refuses to open the file: FileFormatError:") for line in lines
    )
    assert report.census()["durus.persistent_dict.PersistentDict"] == 1  # the later root


def test_record_data_length_past_the_record(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "shelf_a.durus", {72: int4_to_str(10**6)}))
    assert str(report.damage[0]).startswith("offset 48, oid 0: record does not unpack:")


def test_file_shrinking_while_read_is_damage_not_a_crash() -> None:
    reader = check._Reader(io.BytesIO(b"abc"), size_bytes=10)
    with pytest.raises(check.ScanStop) as info:
        reader.read_at(0, 8, "transaction length")
    assert str(info.value.damage) == "offset 0: transaction length: short read (3 of 8)"


# shelf_c_packed.durus: records of oid 0 at 16 and oid 2 at 221; offset map at 348,
# 2 bytes per word, words at 372: [16, hole link 351, 221, hole link 349].


def test_offset_map_hole_link_leaving_the_map(tmp_path: Path) -> None:
    path = damaged_copy(tmp_path, "shelf_c_packed.durus", {374: (358).to_bytes(2, "big")})
    report = checked_unchanged(path)
    assert damage_lines(report)[0] == "offset 374: hole link 358 leaves the offset map"


def test_offset_map_entry_pointing_at_another_record(tmp_path: Path) -> None:
    path = damaged_copy(tmp_path, "shelf_c_packed.durus", {376: (16).to_bytes(2, "big")})
    lines = damage_lines(checked_unchanged(path))
    assert "offset 376: offset map entry for oid 2 points to 16, not to its record" in lines
    assert "offset 221: record is missing from the offset map" in lines


# ---------------------------------------------------------------- DFS20 framing

# dfs20_d.durus: empty index at 14 (record of 13 bytes); the first transaction at 35.
# dfs20_d_packed.durus: records from 14, the index record at 4074 up to the end (4224).


def test_dfs20_magic_damage_and_file_storage2_refuses(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "dfs20_d.durus", {5: b"\x01"}))
    lines = damage_lines(report)
    assert report.format_name == "DFS20"
    assert lines[0] == "offset 0: the file does not start with DFS20"
    assert any(line.startswith("FileStorage2 refuses to open the file:") for line in lines)


def test_dfs20_index_offset_outside_the_file(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "dfs20_d.durus", {6: int8_to_str(10**6)}))
    assert damage_lines(report)[0] == "offset 6: index offset 1000000 is outside the file"


def test_dfs20_impossible_record_length(tmp_path: Path) -> None:
    report = checked_unchanged(damaged_copy(tmp_path, "dfs20_d.durus", {35: int4_to_str(5)}))
    assert damage_lines(report)[0] == (
        "offset 35: record length 5 is impossible here (the region ends at 4185)"
    )


PACKED_INDEX_AT = 4074


def with_index_record(tmp_path: Path, compressed: bytes) -> Path:
    content = (DATA_DIR / "dfs20_d_packed.durus").read_bytes()[:PACKED_INDEX_AT]
    target = tmp_path / "index.durus"
    target.write_bytes(content + int8_to_str(len(compressed)) + compressed)
    return target


def test_dfs20_index_entry_pointing_elsewhere(tmp_path: Path) -> None:
    index = {int8_to_str(0): 14, int8_to_str(1): 999}
    path = with_index_record(tmp_path, zlib.compress(pickle.dumps(index, protocol=4)))
    lines = damage_lines(checked_unchanged(path))
    assert "offset 4074, oid 1: index entry for oid 1 points to 999, not its record" in lines


@pytest.mark.parametrize(
    ("index", "words"),
    [
        ({int8_to_str(0): OrderedDict()}, "does not decode: the index pickle names a global"),
        ([14, 440], "index record is not a dict"),
        ({b"short": 14}, "index entry b'short': 14 is malformed"),
        (None, "index record does not decode"),
    ],
    ids=["global", "list", "malformed", "not-zlib"],
)
def test_dfs20_undecodable_index_stops_the_scan(tmp_path: Path, index: Any, words: str) -> None:
    compressed = b"garbage" if index is None else zlib.compress(pickle.dumps(index, protocol=4))
    report = checked_unchanged(with_index_record(tmp_path, compressed))
    assert report.damage[0].offset == PACKED_INDEX_AT
    assert words in report.damage[0].message
    assert "the scan stopped at the first framing damage" in report.notes


# ---------------------------------------------------------------- SQLite


def sqlite_copy(tmp_path: Path, *statements: str) -> Path:
    target = tmp_path / "e.durus"
    target.write_bytes((DATA_DIR / "sqlite_e.durus").read_bytes())
    database = sqlite3.connect(target)
    try:
        for statement in statements:
            database.execute(statement)
        database.commit()
    finally:
        database.close()
    return target


def test_sqlite_without_an_objects_table(tmp_path: Path) -> None:
    path = sqlite_copy(tmp_path, "DROP TABLE objects", "CREATE TABLE other (x)")
    report = checked_unchanged(path)
    assert report.format_name == "SQLite"
    assert damage_lines(report) == [
        "SQLite refuses to read the objects table: no such table: objects"
    ]


def test_sqlite_rows_that_are_not_records_and_a_failed_quick_check(tmp_path: Path) -> None:
    path = sqlite_copy(
        tmp_path,
        "INSERT INTO objects VALUES (-1, x'00', x'')",
        "UPDATE objects SET refs = NULL WHERE id = 5",
        "PRAGMA writable_schema = ON",
        "UPDATE sqlite_master SET sql = 'CREATE TABLE objects (id integer primary key,"
        " data blob, refs blob NOT NULL)' WHERE name = 'objects'",
    )
    lines = damage_lines(checked_unchanged(path))
    assert "SQLite quick_check: NULL value in objects.refs" in lines
    assert "row id -1 is not an oid" in lines
    assert "oid 5: row 5: data and refs must be blobs" in lines
    assert "oid 4: refers to oid 5, which has no record" not in lines  # damaged, not missing


def test_sqlite_that_cannot_be_opened_is_a_check_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(check.sqlite3, "connect", refuse)
    path = tmp_path / "e.durus"
    path.write_bytes((DATA_DIR / "sqlite_e.durus").read_bytes())
    with pytest.raises(CheckError, match="e.durus: cannot open the SQLite database: unable"):
        check_storage_file(str(path))


# ---------------------------------------------------------------- the storage class cross-check


def test_storage_class_not_importable_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(check._STORAGE_CLASS_BY_FORMAT, "SHELF-1", ("no_such_module_x", "Nope"))
    report = check_storage_file(str(DATA_DIR / "shelf_a.durus"))
    assert report.ok
    assert any(note.startswith("not compared with Nope:") for note in report.notes)


class _LyingStorage(FileStorage):
    """Serves a sound file but disagrees with it: what the cross-check must catch."""

    fail_listing = False

    def load(self, oid: bytes) -> bytes:
        if oid == int8_to_str(1):
            raise OSError("disk on fire")
        record = FileStorage.load(self, oid)
        return record + int8_to_str(0) if oid == int8_to_str(2) else record

    def gen_oid_record(self, *args: Any, **kwargs: Any) -> Iterator[tuple[bytes, bytes]]:
        if self.fail_listing:
            raise ValueError("cannot list")
        yield int8_to_str(99), b""


@pytest.fixture
def lying_storage(monkeypatch: pytest.MonkeyPatch) -> type[_LyingStorage]:
    module = types.ModuleType("lying_storage_module")
    module.Liar = _LyingStorage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lying_storage_module", module)
    monkeypatch.setitem(check._STORAGE_CLASS_BY_FORMAT, "SHELF-1", ("lying_storage_module", "Liar"))
    return _LyingStorage


def test_storage_class_disagreeing_with_the_scan_is_damage(
    lying_storage: type[_LyingStorage],
) -> None:
    lines = damage_lines(check_storage_file(str(DATA_DIR / "shelf_a.durus")))
    assert lines == [
        "offset 592, oid 1: Liar cannot load it: OSError: disk on fire",
        "offset 753, oid 2: Liar loads a different record",
        "oid 99: Liar lists a record the scan did not find",
    ]


def test_storage_class_failing_to_list_is_damage(
    lying_storage: type[_LyingStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lying_storage, "fail_listing", True)
    lines = damage_lines(check_storage_file(str(DATA_DIR / "shelf_a.durus")))
    assert lines[-1] == "Liar cannot list its records: ValueError: cannot list"


# ---------------------------------------------------------------- the report and the command


def test_damage_beyond_the_kept_limit_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = {374: (358).to_bytes(2, "big"), 376: (16).to_bytes(2, "big")}
    path = damaged_copy(tmp_path, "shelf_c_packed.durus", words)
    full = check_storage_file(str(path))
    assert len(full.damage) >= 3
    monkeypatch.setattr(check, "MAX_DAMAGE_KEPT", 2)
    capped = check_storage_file(str(path))
    assert capped.damage == full.damage[:2] and not capped.ok
    assert capped.damage_dropped == len(full.damage) - 2
    lines = check.format_report(capped, quiet=True)
    assert lines[0] == f"damage: {len(full.damage)}"
    assert lines[-1] == f"  ... and {len(full.damage) - 2} more"


def test_describe_exception() -> None:
    assert check.describe_exception(ValueError(*"cut short")) == "ValueError: cut short"
    assert check.describe_exception(KeyError()) == "KeyError"
    assert check.describe_exception(OSError("gone")) == "OSError: gone"


def test_terminal_progress_is_throttled_and_clears_once() -> None:
    stream = io.StringIO()
    progress = check.TerminalProgress(stream, "checking", interval_s=3600.0)
    progress.clear()  # nothing drawn yet: nothing to erase
    assert stream.getvalue() == ""
    progress(1, 10, "bytes")
    progress(2, 10, "bytes")  # too soon: skipped
    progress(10, 10, "bytes")  # the end is always drawn
    progress(0, 0)
    text = stream.getvalue()
    assert "(1 of 10 bytes)" in text and "(2 of 10" not in text and "(10 of 10 bytes)" in text
    assert text.endswith("\rchecking: 100% (0 of 0)\x1b[K")
    progress.clear()
    progress.clear()
    assert stream.getvalue().endswith("\x1b[K\r\x1b[K") and stream.getvalue().count("\r\x1b[K") == 1


def test_check_main_needs_exactly_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["a", "b"]):
        with pytest.raises(SystemExit) as info:
            check.check_main(args)
        assert info.value.code == 2
        assert "give exactly one storage file to check" in capsys.readouterr().err


def test_check_main_on_a_directory_is_not_checkable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check.check_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"durus: error: {tmp_path}: cannot read:") and err.count("\n") == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_check_main_on_a_terminal_draws_progress_then_erases_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert check.check_main([str(DATA_DIR / "shelf_a.durus")]) == 0
    assert "\rchecking: 100% (4450 of 4450 bytes)" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[K")
    assert capsys.readouterr().out.rstrip().endswith("damage: none")
