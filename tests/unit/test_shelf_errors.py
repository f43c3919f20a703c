"""Tests of durus.shelf's error paths: bad arguments, damaged headers and records, the
sidecar index when it cannot be read or written, failed writes, and file-like readers.

Every error must be explicit (its type, the file and byte offset in its message) and
leave the stored bytes as they were.
"""

from __future__ import annotations

import io
import logging
import os
from array import array
from pathlib import Path

import pytest

import durus.shelf as shelf_module
from durus.file import ReadOnlyFileError
from durus.shelf import (
    EMPTY_SHELF,
    SIDECAR_SUFFIX,
    FileFormatError,
    NotAShelfError,
    OffsetMap,
    Shelf,
    read_transaction_offsets,
    scan_transactions,
)
from durus.utils import int8_to_str
from tests.conftest import DATA_DIR
from tests.support.failing_fs import FailingFileSystem

C_MULTI = (DATA_DIR / "shelf_c_multi.durus").read_bytes()
C_T3 = 607  # the third transaction of shelf_c_multi
C_PACKED = (DATA_DIR / "shelf_c_packed.durus").read_bytes()  # oid 0 at 16, oid 2 at 221
C_PACKED_WORDS_AT = 372  # its offset map words: 2 bytes each


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


# ---------------------------------------------------------------- opening


@pytest.mark.parametrize("flag", ["readonly", "repair"])
def test_a_temporary_shelf_cannot_be_read_only_or_repaired(flag: str) -> None:
    with pytest.raises(ValueError, match="a temporary shelf cannot be read-only or repaired"):
        Shelf(None, **{flag: True})


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "writable"])
def test_offset_map_running_past_the_end_of_the_file(tmp_path: Path, readonly: bool) -> None:
    content = EMPTY_SHELF[:16] + int8_to_str(116) + int8_to_str(1) + int8_to_str(100)
    path = write(tmp_path / "f", content)
    with pytest.raises(NotAShelfError) as info:
        Shelf(path, readonly=readonly)
    assert info.value.offset == 16 and info.value.filename == path
    assert str(info.value) == (
        f"{path!r} has a damaged SHELF-1 header at byte 16: "
        "offset map runs past the end of the file"
    )
    assert Path(path).read_bytes() == content


def test_read_transaction_offsets_reports_damage_unless_repairing() -> None:
    content = C_MULTI[:C_T3] + int8_to_str(100) + C_MULTI[C_T3 + 8 :]
    with pytest.raises(FileFormatError) as info:
        read_transaction_offsets(io.BytesIO(content))
    assert info.value.offset == C_T3 and f"at byte {C_T3}" in str(info.value)
    index = read_transaction_offsets(io.BytesIO(content), repair=True)
    assert index == read_transaction_offsets(io.BytesIO(C_MULTI[:C_T3]))
    assert index[int8_to_str(0)] == 154


def test_a_cut_final_transaction_is_dropped_without_name_checks() -> None:
    index = read_transaction_offsets(io.BytesIO(C_MULTI[:1200]))
    assert index == read_transaction_offsets(io.BytesIO(C_MULTI[:968]))


C_T4 = 968  # the final transaction of shelf_c_multi


def test_an_unpatched_final_placeholder_is_dropped_without_name_checks() -> None:
    content = C_MULTI[:C_T4] + int8_to_str(0) + C_MULTI[C_T4 + 8 :]
    result = scan_transactions(io.BytesIO(content), 40, check_names=False)
    assert result.torn_tail and result.damage is None and result.good_end == C_T4
    assert read_transaction_offsets(io.BytesIO(content)) == read_transaction_offsets(
        io.BytesIO(C_MULTI[:C_T4])
    )


def test_a_zeroed_length_in_the_middle_is_damage_without_name_checks() -> None:
    content = C_MULTI[:C_T3] + int8_to_str(0) + C_MULTI[C_T3 + 8 :]
    result = scan_transactions(io.BytesIO(content), 40, check_names=False)
    assert not result.torn_tail and result.damage_offset == C_T3


# ---------------------------------------------------------------- the offset map


def test_offset_map_cut_short_is_a_format_error() -> None:
    offset_map = OffsetMap(io.BytesIO(EMPTY_SHELF[:30]), 16, 1, 10)
    with pytest.raises(FileFormatError, match="offset map of .* cut short"):
        offset_map[0]


def test_offset_map_bounds() -> None:
    offset_map = OffsetMap(io.BytesIO(C_PACKED), 348, 2, 4)
    assert len(offset_map) == 4 and offset_map[2] == 221
    with pytest.raises(IndexError):
        offset_map[4]
    assert offset_map.get(4, "none") == "none" and offset_map.get(-1) is None
    assert offset_map.get(1) is None  # a hole link, not a position


@pytest.mark.parametrize("last_word", [0xFF, 0x10], ids=["blank", "out-of-range"])
def test_a_broken_hole_chain_ends_the_reuse_list(last_word: int) -> None:
    content = bytes(24) + bytes([0x00, last_word])
    assert list(OffsetMap(io.BytesIO(content), 0, 1, 2).gen_holes()) == []


# ---------------------------------------------------------------- the memory index


def test_memory_index_with_a_base_array() -> None:
    index = shelf_module.MemoryIndex(array("q", [100, -1, 300]))
    index[int8_to_str(2)] = 333
    index[int8_to_str(5)] = 500
    assert index[int8_to_str(0)] == 100 and index[int8_to_str(2)] == 333
    with pytest.raises(KeyError):
        index[int8_to_str(1)]
    assert int8_to_str(1) not in index and 0 not in index  # type: ignore[comparison-overlap]
    assert len(index) == 3
    expected = {int8_to_str(0): 100, int8_to_str(2): 333, int8_to_str(5): 500}
    assert dict(index.items()) == expected
    assert sorted(index) == sorted(expected) and sorted(index.values()) == [100, 333, 500]
    same = shelf_module.MemoryIndex()
    same.update(expected.items())
    assert index == expected and index == same and index != shelf_module.MemoryIndex()
    assert index != {int8_to_str(0): 100}
    assert index.__eq__([1]) is NotImplemented


def test_sidecar_codec_refuses_sparse_and_damaged_input() -> None:
    sparse = shelf_module.MemoryIndex()
    sparse[int8_to_str(10**6)] = 40
    assert shelf_module.encode_sidecar(sparse, 80, 16, bytes(16)) is None
    dense = shelf_module.MemoryIndex()
    dense[int8_to_str(1)] = 40
    blob = shelf_module.encode_sidecar(dense, 80, 16, bytes(16))
    assert blob is not None
    decoded = shelf_module.decode_sidecar(blob)
    assert decoded is not None and list(decoded[3]) == [-1, 40]
    assert shelf_module.decode_sidecar(blob[:20]) is None
    assert shelf_module.decode_sidecar(b"X" + blob[1:]) is None
    assert shelf_module.decode_sidecar(blob[:-1] + bytes([blob[-1] ^ 1])) is None


# ---------------------------------------------------------------- the sidecar at open and close


@pytest.fixture
def sidecar_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shelf_module, "SIDECAR_MIN_ENTRIES", 1)


def shelf_with_records(path: Path, count: int) -> None:
    shelf = Shelf(str(path), fsync=False)
    shelf.store((int8_to_str(n), b"value %d" % n) for n in range(count))
    shelf.close()


def test_an_unreadable_or_unwritable_sidecar_only_costs_a_scan(
    tmp_path: Path, sidecar_always: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f"
    shelf_with_records(path, 5)
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    sidecar.unlink()
    sidecar.mkdir()  # reading it fails, and so does renaming a new one over it
    content = path.read_bytes()
    shelf = Shelf(str(path))
    assert not shelf.index.base and shelf.get_value(int8_to_str(4)) == b"value 4"
    shelf.store([(int8_to_str(5), b"value 5")])
    with caplog.at_level(logging.WARNING, logger="durus"):
        shelf.close()
    assert shelf.get_file().is_closed()
    assert any("sidecar index not saved" in r.getMessage() for r in caplog.records)
    assert path.read_bytes().startswith(content) and sidecar.is_dir()
    reopened = Shelf(str(path), readonly=True)
    assert reopened.get_value(int8_to_str(5)) == b"value 5"
    reopened.close()


def test_an_exact_sidecar_is_not_rewritten(tmp_path: Path, sidecar_always: None) -> None:
    path = tmp_path / "f"
    shelf_with_records(path, 5)
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    before = (sidecar.read_bytes(), sidecar.stat().st_ino, sidecar.stat().st_mtime_ns)
    shelf = Shelf(str(path))
    assert len(shelf.index.base) == 5
    shelf.close()
    assert (sidecar.read_bytes(), sidecar.stat().st_ino, sidecar.stat().st_mtime_ns) == before


# ---------------------------------------------------------------- writing a new shelf


def test_generate_shelf_refuses_a_file_that_is_not_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"x")
    with open(path, "r+b") as file:
        with pytest.raises(ValueError, match="is not empty"):
            list(Shelf.generate_shelf(file, [(int8_to_str(0), b"v")]))
    assert Path(path).read_bytes() == b"x"


def test_a_new_shelf_larger_than_one_chunk_reads_back(tmp_path: Path) -> None:
    values = {int8_to_str(n): bytes([n]) * 400_000 for n in range(3)}
    path = str(tmp_path / "big")
    Shelf(path, items=values.items()).close()
    shelf = Shelf(path, readonly=True)
    assert {name: shelf.get_value(name) for name in shelf} == values
    assert shelf.get_offset_map()[2] < shelf.get_offset_map().start
    shelf.close()


# ---------------------------------------------------------------- reading damaged records


def packed_copy(tmp_path: Path, edits: dict[int, bytes]) -> str:
    content = bytearray(C_PACKED)
    for offset, replacement in edits.items():
        content[offset : offset + len(replacement)] = replacement
    return write(tmp_path / "packed", bytes(content))


def test_offset_map_entry_naming_another_record(tmp_path: Path) -> None:
    path = packed_copy(tmp_path, {C_PACKED_WORDS_AT + 4: (16).to_bytes(2, "big")})
    shelf = Shelf(path, readonly=True)
    with pytest.raises(FileFormatError) as info:
        shelf.get_value(int8_to_str(2))
    assert info.value.offset == 16 and info.value.filename == path
    assert str(info.value).startswith(f"{path!r}: bad record at byte 16: holds name")
    shelf.close()


def test_record_running_past_the_end_of_the_file(tmp_path: Path) -> None:
    path = packed_copy(tmp_path, {16: int8_to_str(10**6)})
    shelf = Shelf(path, readonly=True)
    with pytest.raises(FileFormatError, match="bad record at byte 16: record runs past the end"):
        shelf.get_value(int8_to_str(0))
    with pytest.raises(FileFormatError, match="at byte 376: record header runs past the end"):
        shelf.get_item_at_position(len(C_PACKED) - 4)
    shelf.close()
    assert Path(path).read_bytes()[16:24] == int8_to_str(10**6)


def test_a_record_longer_than_the_read_peek_reads_back_whole(tmp_path: Path) -> None:
    shelf = Shelf(str(tmp_path / "f"))
    value = bytes(range(256)) * 40
    shelf.store([(int8_to_str(0), value)])
    assert shelf.get_value(int8_to_str(0)) == value
    shelf.close()


# ---------------------------------------------------------------- storing


def test_store_refusals_write_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    shelf = Shelf(path)
    shelf.store([(int8_to_str(0), b"first")])
    content = Path(path).read_bytes()
    with pytest.raises(TypeError, match="a shelf value must be bytes, not str"):
        shelf.store([(int8_to_str(1), b"ok"), (int8_to_str(2), "text")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Expected a string with 8 bytes"):
        shelf.store([(b"short", b"v")])
    assert int8_to_str(1) not in shelf and Path(path).read_bytes() == content
    shelf.close()
    reader = Shelf(path, readonly=True)
    with pytest.raises(ReadOnlyFileError, match="is open read-only"):
        reader.store([(int8_to_str(0), b"second")])
    reader.close()
    assert Path(path).read_bytes() == content


@pytest.mark.parametrize("fsync", [True, False])
def test_a_failed_commit_that_cannot_be_cut_away_is_cut_by_the_next_store(
    tmp_path: Path, fsync: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fs = FailingFileSystem()
    path = tmp_path / "f"
    shelf = Shelf(str(path), fsync=fsync, file_system=fs)
    shelf.store([(int8_to_str(0), b"first")])
    content = path.read_bytes()
    fs.fail_write = fs.fail_truncate = True
    with caplog.at_level(logging.WARNING, logger="durus"):
        with pytest.raises(OSError, match="No space left on device"):
            shelf.store([(int8_to_str(0), b"second" * 10)])
    assert any("could not remove a failed transaction" in r.getMessage() for r in caplog.records)
    assert len(path.read_bytes()) > len(content)  # the partial write is still there
    assert shelf.get_value(int8_to_str(0)) == b"first"
    shelf.store([(int8_to_str(0), b"third")])
    shelf.close()
    reopened = Shelf(str(path), readonly=True)
    assert reopened.get_value(int8_to_str(0)) == b"third"
    reopened.close()
    assert path.read_bytes().startswith(content)


# ---------------------------------------------------------------- file-like objects


class _Unclosable:
    """A seekable file-like object without a close method."""

    def __init__(self, content: bytes) -> None:
        self.stream = io.BytesIO(content)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)


def test_a_file_like_object_opens_as_a_read_only_shelf() -> None:
    stream = io.BytesIO(C_PACKED)
    shelf = Shelf(stream)
    reader = shelf.get_file()
    assert reader.is_readonly() and not reader.is_temporary() and reader.get_name() is None
    assert Shelf.has_format(reader)
    assert shelf.get_value(int8_to_str(2)) is not None
    with pytest.raises(ReadOnlyFileError):
        shelf.store([(int8_to_str(0), b"v")])
    shelf.close()
    assert stream.closed
    unclosable = Shelf(_Unclosable(C_PACKED))
    assert sorted(unclosable) == [int8_to_str(0), int8_to_str(2)]
    unclosable.close()


def test_a_damaged_file_like_object_is_refused_and_closed() -> None:
    stream = io.BytesIO(b"not a shelf at all, longer than the forty bytes of a new one")
    with pytest.raises(NotAShelfError, match="is not a SHELF-1 file") as info:
        Shelf(stream)
    assert info.value.offset == 0 and stream.closed


def test_a_damaged_file_like_object_is_named_by_its_own_repr() -> None:
    stream = io.BytesIO(b"not a shelf at all, longer than the forty bytes of a new one")
    with pytest.raises(NotAShelfError, match="^<_io.BytesIO object at 0x[0-9a-f]+> is not a"):
        Shelf(stream)


def test_os_path_like_names_are_accepted(tmp_path: Path) -> None:
    shelf = Shelf(tmp_path / "f")
    assert shelf.get_file().get_name() == os.fspath(tmp_path / "f")
    shelf.close()
