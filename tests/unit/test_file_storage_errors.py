"""Tests of FileStorage's error paths: a record stored under another oid, a commit of
an oid a pack removed, and a pack whose rename fails. Each is an explicit error that
leaves the file and the committed records as they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from durus.error import DurusKeyError
from durus.file_storage import FileStorage
from durus.shelf import FileFormatError
from durus.utils import ROOT_OID, int8_to_str
from tests.conftest import DATA_DIR
from tests.support.failing_fs import FailingFileSystem
from tests.support.records import commit, record


def new_storage(path: Path, **kwargs: object) -> FileStorage:
    """A new storage holding a root that refers to oid 1, and unreferenced oids 2 and 3."""
    storage = FileStorage(str(path), **kwargs)  # type: ignore[arg-type]
    assert [storage.new_oid() for _ in range(4)] == [int8_to_str(n) for n in range(4)]
    commit(storage, record(0, 1), record(1), record(2), record(3))
    return storage


def test_a_packed_record_naming_another_oid_is_a_format_error(tmp_path: Path) -> None:
    content = bytearray((DATA_DIR / "shelf_c_packed.durus").read_bytes())
    content[237:245] = int8_to_str(0)  # the record of oid 2 (at 221) now says oid 0
    path = tmp_path / "c.durus"
    path.write_bytes(bytes(content))
    storage = FileStorage(str(path), readonly=True)
    assert storage.load(ROOT_OID)[:8] == ROOT_OID
    with pytest.raises(FileFormatError) as info:
        storage.load(int8_to_str(2))
    assert str(info.value) == (
        f"FileStorage({str(path)!r}): the record stored for oid {int8_to_str(2)!r}"
        " is for another oid"
    )
    storage.close()
    assert path.read_bytes() == bytes(content)


def test_committing_an_oid_a_pack_removed_without_a_handler_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.durus"
    storage = new_storage(path)
    storage.pack()  # removes 2 and 3; sync() has not reported them yet
    content = path.read_bytes()
    storage.begin()
    storage.store(int8_to_str(2), record(2, data=b"again"))  # accepted until end()
    with pytest.raises(
        ValueError, match=r"oid b'\\x00.*\\x02' is a surprise \(removed by a pack\)"
    ):
        storage.end()
    assert storage.pending_records == {} and path.read_bytes() == content
    with pytest.raises(DurusKeyError):
        storage.load(int8_to_str(2))
    assert sorted(storage.sync()) == [int8_to_str(2), int8_to_str(3)]
    storage.close()


def test_a_pack_whose_rename_fails_keeps_the_old_file(tmp_path: Path) -> None:
    fs = FailingFileSystem()
    path = tmp_path / "f.durus"
    storage = new_storage(path, file_system=fs)
    content = path.read_bytes()
    fs.fail_replace = True
    with pytest.raises(OSError, match="I/O error"):
        storage.pack()
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.durus"]  # no .pack left behind
    assert storage.load(int8_to_str(3)) == record(3) and storage.sync() == []
    commit(storage, record(0, 1, data=b"later"))
    storage.pack()  # a later pack works
    assert sorted(storage.sync()) == [int8_to_str(2), int8_to_str(3)]
    assert storage.load(ROOT_OID) == record(0, 1, data=b"later")
    storage.close()


def test_the_invalidation_handler_hears_of_removed_oids_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.durus"
    storage = new_storage(path)
    storage.pack()
    content = path.read_bytes()
    heard: list[list[bytes]] = []

    def refuse(oids: list[bytes]) -> None:
        heard.append(oids)
        raise RuntimeError("conflict")

    storage.begin()
    storage.store(int8_to_str(1), record(1, 2))  # would re-link the removed oid 2
    with pytest.raises(RuntimeError, match="conflict"):
        storage.end(refuse)
    assert heard == [[int8_to_str(2), int8_to_str(3)]]
    assert path.read_bytes() == content and storage.sync() == []  # reported once
    storage.close()


def test_dangling_references_are_skipped_when_listing_reachable_records(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "f.durus"))
    assert [storage.new_oid() for _ in range(2)] == [ROOT_OID, int8_to_str(1)]
    commit(storage, record(0, 1, 7), record(1, 0))  # oid 7 has no record
    listed = [oid for oid, _record in storage.gen_oid_record(ROOT_OID)]
    assert listed == [ROOT_OID, int8_to_str(1)]
    storage.pack()
    assert sorted(dict(storage.gen_oid_record())) == [ROOT_OID, int8_to_str(1)]
    storage.close()
