"""Tests for durus.sqlite_storage: vector e, commits, packs, warts 22 and 23."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus.error import DurusKeyError
from durus.file import ReadOnlyFileError
from durus.record import pack_record
from durus.sqlite_storage import TABLE_SQL, SqliteStorage
from durus.utils import ROOT_OID, int8_to_str
from tests.support.records import commit, reachable, record

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def shelf_a_records() -> dict[bytes, bytes]:
    """The 20 current records of shelf_a.durus, cut out at the positions expected.json gives."""
    raw = (DATA / "shelf_a.durus").read_bytes()
    records = {}
    for oid_text, position in EXPECTED["shelf_a.durus"]["index"].items():
        length = int.from_bytes(raw[position : position + 8], "big")
        oid = int8_to_str(int(oid_text))
        assert raw[position + 8 : position + 16] == oid
        records[oid] = raw[position + 16 : position + 8 + length]
    return records


@pytest.fixture
def vector_e(tmp_path: Path) -> Path:
    path = tmp_path / "e.durus"
    shutil.copyfile(DATA / "sqlite_e.durus", path)
    return path


@pytest.fixture
def storage(tmp_path: Path):
    s = SqliteStorage(tmp_path / "db.sqlite")
    yield s
    s.close()


class TestVectorE:
    def test_rebuilds_the_records_of_shelf_a(self, vector_e: Path) -> None:
        expected = shelf_a_records()
        s = SqliteStorage(vector_e)
        try:
            assert len(expected) == 20
            for oid, record in expected.items():
                assert s.load(oid) == record
            assert dict(s.gen_oid_record()) == expected
            assert [oid for oid, _ in s.gen_oid_record()] == sorted(expected)
        finally:
            s.close()

    def test_record_files_match(self, vector_e: Path) -> None:
        s = SqliteStorage(vector_e)
        try:
            for path in sorted(DATA.glob("record_oid[0-8]_*.bin")):
                if "uncompressed" in path.name:
                    continue
                record = path.read_bytes()
                assert s.load(record[:8]) == record
        finally:
            s.close()

    def test_table_sql_and_rows_match_expected(self, vector_e: Path) -> None:
        facts = EXPECTED["sqlite_e.durus"]
        assert facts["table_sql"] == TABLE_SQL
        db = sqlite3.connect(vector_e)
        rows = db.execute("SELECT id, length(data), length(refs) FROM objects ORDER BY id")
        assert [(r["oid"], r["data_length"], r["refs_blob_length"]) for r in facts["rows"]] == list(
            rows
        )
        db.close()

    def test_wart_22_new_oids_continue_after_the_highest(self, vector_e: Path) -> None:
        s = SqliteStorage(vector_e)
        assert [s.new_oid() for _ in range(5)] == [int8_to_str(n) for n in range(20, 25)]
        commit(s, record(20))
        s.close()
        s = SqliteStorage(vector_e)
        assert s.new_oid() == int8_to_str(21)
        assert s.load(int8_to_str(19)) == shelf_a_records()[int8_to_str(19)]
        s.close()

    def test_depth_first_walk_from_a_start_oid(self, vector_e: Path) -> None:
        s = SqliteStorage(vector_e)
        walked = [oid for oid, _ in s.gen_oid_record(ROOT_OID)]
        assert sorted(walked) == sorted(shelf_a_records()) and walked[0] == ROOT_OID
        s.close()


class TestNewDatabase:
    def test_exact_schema_and_blob_types(self, storage: SqliteStorage) -> None:
        commit(storage, record(0, 1), record(1))
        db = sqlite3.connect(storage.get_filename())
        assert db.execute("SELECT sql FROM sqlite_master").fetchall() == [(TABLE_SQL,)]
        assert (
            db.execute("SELECT typeof(id), typeof(data), typeof(refs) FROM objects").fetchall()
            == [("integer", "blob", "blob")] * 2
        )
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        db.close()

    def test_round_trip_and_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "x.sqlite"
        s = SqliteStorage(path)
        assert [s.new_oid(), s.new_oid()] == [ROOT_OID, int8_to_str(1)]
        commit(s, record(0, 1), record(1, data=b"one"))
        commit(s, record(1, data=b"uno"))
        assert s.load(int8_to_str(1)) == record(1, data=b"uno")
        s.close()
        s = SqliteStorage(path)
        assert dict(s.gen_oid_record()) == {
            ROOT_OID: record(0, 1),
            int8_to_str(1): record(1, data=b"uno"),
        }
        with pytest.raises(DurusKeyError):
            s.load(int8_to_str(7))
        s.close()

    def test_wart_23_empty_database_reopens(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.sqlite"
        SqliteStorage(path).close()
        s = SqliteStorage(path)
        assert s.new_oid() == ROOT_OID
        assert list(s.gen_oid_record()) == []
        assert list(s.gen_oid_record(ROOT_OID)) == []
        s.close()

    def test_wart_23_gen_oid_record_without_start_lists_unreachable_too(
        self, storage: SqliteStorage
    ) -> None:
        commit(storage, record(0), record(5))
        assert [oid for oid, _ in storage.gen_oid_record()] == [ROOT_OID, int8_to_str(5)]

    def test_many_rows_are_listed_in_batches(self, storage: SqliteStorage) -> None:
        commit(storage, *(record(n) for n in range(1234)))
        assert [oid for oid, _ in storage.gen_oid_record()] == [int8_to_str(n) for n in range(1234)]

    def test_depth_first_order(self, storage: SqliteStorage) -> None:
        commit(storage, record(0, 1, 2), record(1), record(2))
        assert [oid[-1] for oid, _ in storage.gen_oid_record(ROOT_OID)] == [0, 2, 1]


class TestCommit:
    def test_begin_discards_pending(self, storage: SqliteStorage) -> None:
        storage.begin()
        storage.store(ROOT_OID, record(0, data=b"aborted"))
        storage.begin()
        storage.store(int8_to_str(1), record(1))
        storage.end()
        with pytest.raises(KeyError):
            storage.load(ROOT_OID)

    def test_store_rejects_a_mismatched_or_malformed_record(self, storage: SqliteStorage) -> None:
        storage.begin()
        with pytest.raises(ValueError):
            storage.store(ROOT_OID, record(1))
        with pytest.raises(ValueError):
            storage.store(ROOT_OID, b"short")
        with pytest.raises(ValueError):
            storage.store(b"\xff" * 8, pack_record(b"\xff" * 8, b"", b""))
        assert storage.pending_records == []

    def test_a_failed_commit_writes_nothing(self, storage: SqliteStorage) -> None:
        db = sqlite3.connect(storage.get_filename())
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON objects WHEN NEW.id = 5 "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        db.commit()
        db.close()
        storage.begin()
        storage.store(int8_to_str(4), record(4))
        storage.store(int8_to_str(5), record(5))
        with pytest.raises(sqlite3.IntegrityError):
            storage.end()
        assert not storage.connection.in_transaction
        with pytest.raises(KeyError):
            storage.load(int8_to_str(4))


class TestPack:
    def test_pack_deletes_unreachable_and_reports_them(self, storage: SqliteStorage) -> None:
        commit(storage, record(0, 1), record(1, 3), record(2), record(3), record(4, 2))
        storage.pack()
        assert [oid[-1] for oid, _ in storage.gen_oid_record()] == [0, 1, 3]
        assert storage.sync() == [int8_to_str(2), int8_to_str(4)]
        assert storage.sync() == []
        with pytest.raises(DurusKeyError):
            storage.load(int8_to_str(2))
        assert storage.new_oid() == int8_to_str(5)

    def test_commit_during_pack_is_kept(self, storage: SqliteStorage) -> None:
        commit(storage, record(0, *range(1, 250)), *(record(n) for n in range(1, 250)))
        packer = storage.get_packer()
        assert str(next(packer)).startswith("started ")
        assert next(packer) is None
        commit(storage, record(0, 300), record(300, 301), record(301))
        steps = list(packer)
        # Marked before the commit, so kept by this pack (a pack never removes
        # what was reachable while it ran); the next pack removes them.
        assert steps[-1].endswith("252 live objects, 0 removed")
        assert storage.pack_extra is None
        steps = list(storage.get_packer())
        assert steps[-1].endswith("3 live objects, 249 removed")
        assert [oid for oid, _ in storage.gen_oid_record()] == [
            int8_to_str(n) for n in (0, 300, 301)
        ]
        assert storage.pack_extra is None

    def test_no_pack_while_records_are_pending(self, storage: SqliteStorage) -> None:
        storage.begin()
        storage.store(ROOT_OID, record(0))
        assert list(storage.get_packer()) == []

    def test_a_packer_never_started_blocks_nothing(self, storage: SqliteStorage) -> None:
        commit(storage, record(0), record(1))
        unused = storage.get_packer()
        storage.pack()
        assert storage.sync() == [int8_to_str(1)]
        assert list(unused)[-1].endswith("1 live objects, 0 removed")  # a later, fresh pack

    def test_an_abandoned_packer_resets_the_pack_state(self, storage: SqliteStorage) -> None:
        commit(storage, record(0), record(1))
        packer = storage.get_packer()
        next(packer)
        assert list(storage.get_packer()) == []
        packer.close()
        storage.pack()
        assert storage.sync() == [int8_to_str(1)]


class TestOpening:
    def test_str_and_queries(self, storage: SqliteStorage) -> None:
        assert str(storage) == f"SqliteStorage({storage.get_filename()!r})"
        assert not storage.is_temporary() and not storage.is_readonly()

    def test_second_writer_is_refused(self, storage: SqliteStorage) -> None:
        with pytest.raises(BlockingIOError):
            SqliteStorage(storage.get_filename())

    def test_readonly(self, tmp_path: Path, storage: SqliteStorage) -> None:
        with pytest.raises(FileNotFoundError):
            SqliteStorage(tmp_path / "missing.sqlite", readonly=True)
        commit(storage, record(0))
        reader = SqliteStorage(storage.get_filename(), readonly=True)
        assert reader.is_readonly() and reader.load(ROOT_OID) == record(0)
        reader.begin()
        reader.store(ROOT_OID, record(0, data=b"x"))
        with pytest.raises(ReadOnlyFileError):
            reader.end()
        assert list(reader.get_packer()) == []
        reader.close()
        assert storage.load(ROOT_OID) == record(0)

    def test_not_a_database(self, tmp_path: Path) -> None:
        path = tmp_path / "junk"
        path.write_bytes(b"not sqlite at all" * 100)
        with pytest.raises(ValueError, match="not a usable SQLite database"):
            SqliteStorage(path)
        other = tmp_path / "other.sqlite"
        db = sqlite3.connect(other)
        db.execute("CREATE TABLE t (x)")
        db.commit()
        db.close()
        with pytest.raises(ValueError, match="objects"):
            SqliteStorage(other)

    def test_failed_open_releases_the_lock(self, tmp_path: Path) -> None:
        path = tmp_path / "junk"
        path.write_bytes(b"x" * 4096)
        for _attempt in range(2):
            with pytest.raises(ValueError):
                SqliteStorage(path)

    def test_create_from_records(self, tmp_path: Path) -> None:
        s = SqliteStorage(tmp_path / "c.sqlite")
        s.create_from_records(shelf_a_records().items())
        assert dict(s.gen_oid_record()) == shelf_a_records()
        assert s.new_oid() == int8_to_str(20)
        with pytest.raises(ValueError):
            s.create_from_records([(ROOT_OID, record(0))])
        s.close()


def test_connection_sees_the_standard_root(vector_e: Path) -> None:
    connection_module = pytest.importorskip("durus.connection")
    pytest.importorskip("vectorclasses")
    facts = EXPECTED["sqlite_e.durus"]["root"]
    connection = connection_module.Connection(SqliteStorage(vector_e))
    root = connection.get_root()
    assert sorted(root.keys()) == sorted(facts)
    for key in ("int", "str", "bytes", "float", "none", "tuple"):
        assert repr(root[key]) == facts[key]
    assert list(root["plist"])[:2] == [1, 2]
    assert root["btree"][199] == 39601
    assert root["note"].title == "first" and root["pair"].left is root["note"]
    connection.storage.close()


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("commit"),
            st.lists(
                st.tuples(st.integers(0, 12), st.lists(st.integers(0, 12), max_size=3)),
                min_size=1,
                max_size=5,
            ),
        ),
        st.tuples(st.just("pack")),
        st.tuples(st.just("reopen")),
    ),
    max_size=10,
)


@given(operations)
def test_random_workload_matches_a_model(ops: list) -> None:
    memory_backed = "/dev/shm" if Path("/dev/shm").is_dir() else None  # cheap fsyncs
    with tempfile.TemporaryDirectory(dir=memory_backed) as directory:
        path = Path(directory) / "model.sqlite"
        s = SqliteStorage(path)
        model: dict[bytes, bytes] = {}
        for op in ops:
            if op[0] == "commit":
                records = [record(n, *sorted(set(refs) - {n})) for n, refs in op[1]]
                commit(s, *records)
                model.update((record[:8], record) for record in records)
            elif op[0] == "pack":
                s.pack()
                assert set(s.sync()) == set(model) - set(reachable(model))
                model = reachable(model)
            else:
                s.close()
                s = SqliteStorage(path)
            assert dict(s.gen_oid_record()) == model
            assert int.from_bytes(s.new_oid(), "big") > max(
                (int.from_bytes(k, "big") for k in model), default=-1
            )
        s.close()
