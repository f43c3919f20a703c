"""Tests of SqliteStorage's error paths: a closed storage, row ids that are not oids,
running out of oids, empty commits and a packer made while another runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from durus.record import MAX_ROW_OID
from durus.sqlite_storage import TABLE_SQL, SqliteStorage
from durus.utils import ROOT_OID, int8_to_str
from tests.support.records import commit, record


def database_with_rows(path: Path, *row_ids: int) -> Path:
    database = sqlite3.connect(path)
    try:
        database.execute(TABLE_SQL)
        database.executemany(
            "INSERT INTO objects VALUES (?, ?, ?)", [(row_id, b"x", b"") for row_id in row_ids]
        )
        database.commit()
    finally:
        database.close()
    return path


def rows(path: Path) -> list[tuple[int, bytes, bytes]]:
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(database.execute("SELECT id, data, refs FROM objects ORDER BY id"))
    finally:
        database.close()


def test_a_closed_storage_says_so(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    storage = SqliteStorage(path)
    commit(storage, record(0))
    storage.close()
    with pytest.raises(ValueError, match=rf"SqliteStorage\('{path}'\) is closed"):
        storage.load(ROOT_OID)
    assert rows(path) == [(0, record(0)[12:], b"")]


def test_a_negative_highest_row_id_is_refused_and_the_file_released(tmp_path: Path) -> None:
    path = database_with_rows(tmp_path / "s.sqlite", -5)
    with pytest.raises(ValueError, match="s.sqlite': row id -5 is not an oid"):
        SqliteStorage(path)
    assert rows(path) == [(-5, b"x", b"")]
    with pytest.raises(ValueError, match="row id -5"):
        SqliteStorage(path)  # not FileLockedError: the failed open released its lock


def test_no_oids_left_after_the_highest_row_id(tmp_path: Path) -> None:
    path = database_with_rows(tmp_path / "s.sqlite", 0, MAX_ROW_OID)
    storage = SqliteStorage(path)
    with pytest.raises(ValueError, match="no oids left below 2\\*\\*63 for SQLite"):
        storage.new_oid()
    storage.close()


def test_an_empty_commit_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    storage = SqliteStorage(path)
    commit(storage, record(0))
    before = rows(path)
    storage.begin()
    storage.end()
    assert rows(path) == before
    storage.close()


def test_a_second_packer_made_before_the_first_ran_does_nothing(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "s.sqlite")
    commit(storage, record(0), record(1))
    first, second = storage.get_packer(), storage.get_packer()
    assert str(next(first)).startswith("started")
    assert list(second) == []
    for _step in first:
        pass
    assert storage.sync() == [int8_to_str(1)]
    storage.close()
