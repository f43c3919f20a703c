"""Tests of FileStorage2's error paths: damaged indexes, refused records, failed writes
and renames, packers that cannot run, and iteration across a pack.

Every failure is explicit and leaves the committed records readable; no commit that
was acknowledged is lost.
"""

from __future__ import annotations

import logging
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest

from durus.error import DurusKeyError
from durus.file import File
from durus.file_storage import StorageUsageError
from durus.file_storage2 import FileFormatError, FileStorage2, encode_transaction
from durus.utils import ROOT_OID, int8_to_str
from tests.conftest import DATA_DIR
from tests.support.failing_fs import FailingFileSystem
from tests.support.records import commit, oid, record

PACKED = (DATA_DIR / "dfs20_d_packed.durus").read_bytes()
PACKED_INDEX_AT = 4074  # the index record of dfs20_d_packed runs to the end of the file


def storage_on_failing_fs(
    tmp_path: Path, **options: Any
) -> tuple[FailingFileSystem, Path, FileStorage2]:
    """A new FileStorage2 at ``tmp_path/d.durus`` whose file system fails when told to."""
    fs = FailingFileSystem()
    path = tmp_path / "d.durus"
    return fs, path, FileStorage2(str(path), file_system=fs, **options)


def assert_a_last_commit_is_kept(storage: FileStorage2, path: Path, data: bytes) -> None:
    """Commit a root holding ``data``, close, and find that root in the reopened file."""
    commit(storage, record(0, data=data))
    storage.close()
    reopened = FileStorage2(str(path), readonly=True)
    assert reopened.load(ROOT_OID) == record(0, data=data)
    reopened.close()


def test_an_index_key_that_is_not_latin1_is_damage(tmp_path: Path) -> None:
    euros = "\u20ac" * 8
    compressed = zlib.compress(pickle.dumps({euros: 14}, protocol=4))
    path = tmp_path / "d.durus"
    content = PACKED[:PACKED_INDEX_AT] + int8_to_str(len(compressed)) + compressed
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as info:
        FileStorage2(str(path))
    assert info.value.offset == PACKED_INDEX_AT
    assert str(info.value) == (
        f"{str(path)!r} is damaged at offset 4074: index key {euros!r} is not a byte string"
    )
    assert path.read_bytes() == content


def test_a_damaged_file_given_as_a_file_is_left_open_for_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "d.durus"
    path.write_bytes(PACKED[:6] + int8_to_str(10**6) + PACKED[14:])
    file = File(str(path))
    with pytest.raises(FileFormatError, match="index offset 1000000 is outside the file"):
        FileStorage2(file)
    assert not file.is_closed() and file.has_lock
    file.close()


def test_records_too_short_for_dfs20_are_refused() -> None:
    with pytest.raises(ValueError, match="a record of 5 bytes cannot be stored in DFS20"):
        encode_transaction([b"short"], 14)


def test_unfinished_final_transaction_is_cut_without_fsync(tmp_path: Path) -> None:
    path = tmp_path / "d.durus"
    complete = (DATA_DIR / "dfs20_d.durus").read_bytes()
    path.write_bytes(complete[:-4])  # the final transaction lost its terminator
    storage = FileStorage2(str(path), fsync=False)
    assert path.stat().st_size == 125  # cut back to the end of the first transaction
    assert storage.load(ROOT_OID) == complete[39:121]  # int4 length at 35, terminator at 121
    storage.close()


@pytest.mark.parametrize("fsync", [True, False])
def test_a_commit_after_a_failed_commit_that_could_not_be_cut_away_is_kept(
    tmp_path: Path, fsync: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fs, path, storage = storage_on_failing_fs(tmp_path, fsync=fsync)
    commit(storage, record(0, data=b"first"))
    fs.fail_write = fs.fail_truncate = True
    with caplog.at_level(logging.ERROR, logger="durus"):
        with pytest.raises(OSError, match="No space left on device"):
            commit(storage, record(0, data=b"second" * 20))
    assert any("could not truncate a failed commit" in r.getMessage() for r in caplog.records)
    assert storage.load(ROOT_OID) == record(0, data=b"first")
    # the next commit cuts the failed commit's bytes away first
    assert_a_last_commit_is_kept(storage, path, b"third")


def test_a_commit_fails_while_the_failed_commit_still_cannot_be_cut(tmp_path: Path) -> None:
    fs, path, storage = storage_on_failing_fs(tmp_path)
    commit(storage, record(0, data=b"first"))
    fs.fail_write = fs.fail_truncate = True
    with pytest.raises(OSError):
        commit(storage, record(0, data=b"second"))
    fs.fail_truncate = True
    with pytest.raises(OSError, match="I/O error"):
        commit(storage, record(0, data=b"third"))
    assert_a_last_commit_is_kept(storage, path, b"fourth")


def test_a_failed_pack_rename_keeps_the_old_file(tmp_path: Path) -> None:
    fs, path, storage = storage_on_failing_fs(tmp_path)
    commit(storage, record(0, 1), record(1), record(2))
    content = path.read_bytes()
    fs.fail_replace = True
    with pytest.raises(OSError, match="I/O error"):
        storage.pack()
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == [
        "d.durus"
    ]
    assert storage.load(oid(2)) == record(2)  # nothing was removed
    storage.pack()
    with pytest.raises(DurusKeyError):
        storage.load(oid(2))
    storage.close()


def test_a_pack_that_cannot_create_its_file_leaves_the_storage_usable(tmp_path: Path) -> None:
    path = tmp_path / "d.durus"
    storage = FileStorage2(str(path))
    commit(storage, record(0, 1), record(1), record(2))
    (tmp_path / "d.durus.pack").mkdir()
    with pytest.raises(IsADirectoryError):
        storage.pack()
    assert storage.pack_extra is None
    commit(storage, record(3))
    assert storage.load(oid(3)) == record(3) and storage.load(oid(2)) == record(2)
    storage.close()


def test_a_second_packer_made_before_the_first_ran_does_nothing(tmp_path: Path) -> None:
    storage = FileStorage2(str(tmp_path / "d.durus"))
    live = [record(0, *range(1, 30)), record(1, 2)] + [record(n) for n in range(2, 30)]
    commit(storage, *live, record(30))  # oid 2 is referred to twice; oid 30 by nothing
    first, second = storage.get_packer(), storage.get_packer()
    next(first)  # the first packer gets going (it yields every 20 records)
    assert list(second) == []
    for _step in first:
        pass
    assert storage.sync() == [oid(30)]
    assert dict(storage.gen_oid_record()) == {record[:8]: record for record in live}
    storage.close()


def test_packing_a_storage_without_a_root_keeps_nothing(tmp_path: Path) -> None:
    storage = FileStorage2(str(tmp_path / "d.durus"))
    commit(storage, record(1))  # no root record: nothing is reachable
    storage.pack()
    assert storage.sync() == [oid(1)] and list(storage.gen_oid_record()) == []
    storage.close()


def test_iterating_across_a_pack_skips_what_the_pack_removed(tmp_path: Path) -> None:
    storage = FileStorage2(str(tmp_path / "d.durus"))
    commit(storage, record(0, 2), record(1), record(2))
    records = storage.gen_oid_record()
    assert next(records) == (ROOT_OID, record(0, 2))
    storage.pack()  # removes oid 1
    assert list(records) == [(oid(2), record(2))]
    storage.close()


def test_no_rewrite_with_a_commit_in_progress(tmp_path: Path) -> None:
    path = tmp_path / "d.durus"
    storage = FileStorage2(str(path))
    commit(storage, record(0))
    content = path.read_bytes()
    storage.begin()
    storage.store(ROOT_OID, record(0, data=b"pending"))
    with pytest.raises(StorageUsageError, match="cannot rewrite with a commit or pack in progress"):
        storage.create_from_records([(ROOT_OID, record(0, data=b"new"))])
    assert path.read_bytes() == content
    storage.close()


class _ClaimsOver4GiB(bytes):
    """A well-formed record that reports a length beyond DFS20's int4 field."""

    def __len__(self) -> int:
        return 1 << 32


def test_a_record_too_long_for_dfs20_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.durus"
    storage = FileStorage2(str(path))
    commit(storage, record(0))
    content = path.read_bytes()
    storage.begin()
    with pytest.raises(ValueError, match="a record of 4294967296 bytes cannot be stored in DFS20"):
        storage.store(ROOT_OID, _ClaimsOver4GiB(record(0, data=b"huge")))
    storage.end()
    assert storage.pending_records == {} and path.read_bytes() == content
    storage.close()
