"""Tests for durus.file_storage2 (DFS20): vector d, commits, packs, damage, crashes."""

from __future__ import annotations

import io
import json
import logging
import pickle
import random
import shutil
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus.error import DurusKeyError
from durus.file import File, ReadOnlyFileError
from durus.file_storage2 import (
    IN_PROGRESS_MARKER,
    NEW_FILE_BYTES,
    FileFormatError,
    FileStorage2,
    NotADFS20FileError,
    decode_index,
    encode_index_record,
    encode_transaction,
    scan_transactions,
    straddles_sector,
)
from durus.record import pack_record
from durus.utils import ROOT_OID, int4_to_str, int8_to_str
from tests.crash.crash_points import count
from tests.support.faulty_disk import FaultyDisk, RandomChooser
from tests.support.records import commit, oid, reachable, record

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
SIM = "/sim/db"


def contents(storage: FileStorage2) -> dict[bytes, bytes]:
    return dict(storage.gen_oid_record())


def numbered(index: dict[bytes, int]) -> dict[str, int]:
    return {str(int.from_bytes(k, "big")): v for k, v in index.items()}


def shelf_a_records() -> dict[bytes, bytes]:
    """The 20 current records of shelf_a.durus (the standard content)."""
    raw = (DATA / "shelf_a.durus").read_bytes()
    records = {}
    for oid_text, position in EXPECTED["shelf_a.durus"]["index"].items():
        length = int.from_bytes(raw[position : position + 8], "big")
        records[oid(int(oid_text))] = raw[position + 16 : position + 8 + length]
    return records


@pytest.fixture
def copy_of(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(DATA / name, target)
        return target

    return copy


@pytest.fixture
def sim_storage():
    disk = FaultyDisk()
    storage = FileStorage2(SIM, file_system=disk)
    yield disk, storage
    storage.close()


# ---------------------------------------------------------------------------
# Vectors


class TestVectorD:
    @pytest.mark.parametrize("name", ["dfs20_d.durus", "dfs20_d_packed.durus"])
    def test_index_records_and_new_oids(self, copy_of, name: str) -> None:
        facts = EXPECTED[name]
        for readonly in (True, False):
            s = FileStorage2(copy_of(name), readonly=readonly)
            try:
                assert numbered(s.index) == facts["index"]
                assert contents(s) == shelf_a_records()
                for path in DATA.glob("record_oid[0-8]_*.bin"):
                    if "uncompressed" not in path.name:
                        assert s.load(path.read_bytes()[:8]) == path.read_bytes()
                new = [int.from_bytes(s.new_oid(), "big") for _ in range(5)]
                assert new == facts["first_five_new_oids"]
            finally:
                s.close()

    def test_transactions_are_where_expected(self) -> None:
        raw = (DATA / "dfs20_d.durus").read_bytes()
        facts = EXPECTED["dfs20_d.durus"]
        result = scan_transactions(lambda at, n: raw[at : at + n], 35, len(raw))
        assert result.problem is None and result.end == len(raw)
        last = {str(r["oid"]): r["position"] for t in facts["transactions_after_index"] for r in t}
        assert numbered(result.index) == last == facts["index"]

    def test_pack_is_byte_identical_to_durus(self, copy_of) -> None:
        path = copy_of("dfs20_d.durus")
        s = FileStorage2(path)
        s.pack()
        assert s.sync() == []
        assert path.read_bytes() == (DATA / "dfs20_d_packed.durus").read_bytes()
        assert numbered(s.index) == EXPECTED["dfs20_d_packed.durus"]["index"]
        assert contents(s) == shelf_a_records()
        s.close()
        assert sorted(p.name for p in path.parent.iterdir()) == ["dfs20_d.durus"]

    def test_packed_file_keeps_working(self, copy_of) -> None:
        path = copy_of("dfs20_d_packed.durus")
        s = FileStorage2(path)
        new = s.new_oid()
        commit(s, record(0, 20), pack_record(new, b"new", b""))
        s.close()
        s = FileStorage2(path)
        assert s.load(ROOT_OID) == record(0, 20) and s.load(new) == pack_record(new, b"new", b"")
        s.pack()
        assert sorted(s.sync()) == [oid(n) for n in range(1, 20)]
        assert contents(s) == {ROOT_OID: record(0, 20), new: pack_record(new, b"new", b"")}
        s.close()

    @pytest.mark.parametrize("name", ["dfs20_d.durus", "dfs20_d_packed.durus"])
    def test_connection_sees_the_standard_root(self, copy_of, name: str) -> None:
        connection_module = pytest.importorskip("durus.connection")
        pytest.importorskip("vectorclasses")
        facts = EXPECTED[name]["root"]
        connection = connection_module.Connection(FileStorage2(copy_of(name)))
        root = connection.get_root()
        assert sorted(root.keys()) == sorted(facts)
        for key in ("int", "str", "bytes", "float", "none", "tuple"):
            assert repr(root[key]) == facts[key]
        assert list(root["plist"])[:2] == [1, 2] and list(root["plist"][2]) == ["x", "y"]
        assert set(root["pset"]) == {1, 2, 3}
        assert root["btree"][199] == 39601 and len(list(root["btree"].items())) == 200
        assert root["note"].title == "first" and root["pair"].left is root["note"]
        root["int"] = 43
        connection.commit()
        connection.storage.close()


# ---------------------------------------------------------------------------
# Pure codecs


class TestCodecs:
    def test_new_file_bytes(self) -> None:
        assert NEW_FILE_BYTES == bytes.fromhex(
            "444653323000000000000000000e000000000000000d789c6b60a99da20700056201c4"
        )

    def test_transaction_encoding(self) -> None:
        transaction, positions = encode_transaction([record(0), record(1)], 100)
        assert transaction == b"".join(
            [int4_to_str(16), record(0), int4_to_str(16), record(1), int4_to_str(0)]
        )
        assert positions == {oid(0): 100, oid(1): 120}
        assert encode_transaction([], 7) == (int4_to_str(0), {})

    def test_index_round_trip(self) -> None:
        index = {oid(n): 14 + 20 * n for n in range(300)}
        encoded = encode_index_record(index)
        assert decode_index(encoded[8:], 1 << 20) == index

    def test_python2_str_keys_including_bytes_over_127(self) -> None:
        # What Python 2's cPickle.dumps (protocol 0) writes: str keys, int values.
        pickled = b"(dp0\nS'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x85'\np1\nI14\ns."
        assert decode_index(zlib.compress(pickled), 1000) == {oid(0x85): 14}

    @pytest.mark.parametrize(
        "value",
        [
            [1, 2],
            {b"short": 14},
            {oid(1): "14"},
            {oid(1): 3},
            {oid(1): True},
        ],
    )
    def test_index_must_be_a_dict_of_oids_to_positions(self, value: object) -> None:
        with pytest.raises(ValueError):
            decode_index(zlib.compress(pickle.dumps(value)), 1000)

    def test_index_unpickler_refuses_every_global(self) -> None:
        class Evil:
            def __reduce__(self):  # type: ignore[no-untyped-def]
                return (print, ("never printed",))

        for value in ({oid(1): Evil()}, io.BytesIO, {oid(1): 14, "x": frozenset()}):
            with pytest.raises(ValueError):
                decode_index(zlib.compress(pickle.dumps(value)), 1000)

    def test_index_decompression_is_bounded(self) -> None:
        with pytest.raises(ValueError, match="over"):
            decode_index(zlib.compress(pickle.dumps({oid(n): 14 for n in range(100)})), 100)
        with pytest.raises(ValueError):
            decode_index(b"not zlib", 100)

    def test_sector_straddling(self) -> None:
        assert [n for n in range(500, 530) if straddles_sector(n)] == [509, 510, 511]


# ---------------------------------------------------------------------------
# Commits and the Storage interface


class TestCommits:
    def test_new_file_round_trip_and_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "x.dfs20"
        s = FileStorage2(str(path))
        assert path.read_bytes() == NEW_FILE_BYTES
        assert [s.new_oid(), s.new_oid()] == [ROOT_OID, oid(1)]
        commit(s, record(0, 1), record(1))
        commit(s, record(1, data=b"again"))
        s.close()
        s = FileStorage2(path)
        assert contents(s) == {ROOT_OID: record(0, 1), oid(1): record(1, data=b"again")}
        assert s.new_oid() == oid(2)
        with pytest.raises(DurusKeyError):
            s.load(oid(9))
        assert str(s) == f"FileStorage2({str(path)!r})" and s.get_filename() == str(path)
        assert not s.is_temporary() and not s.is_readonly()
        s.close()

    def test_wart_19_begin_discards_pending_records(self, tmp_path: Path) -> None:
        path = tmp_path / "w19"
        s = FileStorage2(path)
        commit(s, record(0, data=b"kept"))
        s.begin()
        s.store(ROOT_OID, record(0, data=b"aborted"))  # a commit that then fails
        s.begin()
        s.store(oid(1), record(1))
        s.end()
        s.close()
        s = FileStorage2(path)
        assert s.load(ROOT_OID) == record(0, data=b"kept")
        s.close()

    def test_store_validates_records(self, sim_storage) -> None:
        _disk, s = sim_storage
        s.begin()
        for bad_oid, bad_record in [
            (ROOT_OID, record(1)),
            (ROOT_OID, b"junk"),
            (b"short", record(0)),
        ]:
            with pytest.raises(ValueError):
                s.store(bad_oid, bad_record)
        assert s.pending_records == {}

    def test_empty_commit_writes_nothing(self, sim_storage) -> None:
        disk, s = sim_storage
        before = disk.read_file(SIM)
        s.begin()
        s.end()
        assert disk.read_file(SIM) == before

    def test_commit_write_order(self, sim_storage) -> None:
        disk, s = sim_storage
        commit(s, record(0))
        kinds = [type(e).__name__ for e in disk.events]
        assert kinds[-6:] == ["Write", "FileSync", "Write", "FileSync", "Write", "FileSync"]
        assert disk.events[-6].data == IN_PROGRESS_MARKER
        assert disk.events[-2].data == int4_to_str(len(record(0)))

    def test_padding_keeps_the_commit_field_inside_one_sector(self, sim_storage) -> None:
        disk, s = sim_storage
        filler = 510 - len(NEW_FILE_BYTES) - 4 - 4  # next transaction starts at 510
        commit(s, record(1, data=b"f" * (filler - 12)))
        assert disk.size(SIM) == 510
        commit(s, record(0))
        assert disk.read_file(SIM)[510:514] == int4_to_str(0)  # an empty transaction
        assert s.index[ROOT_OID] == 514
        s.close()
        again = FileStorage2(SIM, file_system=disk)
        assert again.load(ROOT_OID) == record(0)
        again.close()

    def test_fsync_false_is_one_write(self) -> None:
        disk = FaultyDisk()
        s = FileStorage2(SIM, file_system=disk, fsync=False)
        events = len(disk.events)
        commit(s, record(0), record(1))
        assert [type(e).__name__ for e in disk.events[events:]] == ["Write"]
        s.close()

    def test_failed_write_leaves_the_file_as_it_was(self, sim_storage) -> None:
        disk, s = sim_storage
        commit(s, record(0))
        before = disk.read_file(SIM)
        disk.fail_write(after_calls=1, partial_bytes=5)
        s.begin()
        s.store(oid(1), record(1))
        with pytest.raises(OSError):
            s.end()
        assert disk.read_file(SIM) == before
        commit(s, record(2))
        assert contents(s) == {ROOT_OID: record(0), oid(2): record(2)}

    @pytest.mark.parametrize("failing_fsync", [0, 1, 2])
    def test_a_failed_fsync_never_lets_the_commit_come_back(self, failing_fsync: int) -> None:
        disk = FaultyDisk()
        s = FileStorage2(SIM, file_system=disk)
        commit(s, record(0))
        disk.fail_fsync(after_calls=failing_fsync)
        s.begin()
        s.store(oid(1), record(1))
        with pytest.raises(OSError):
            s.end()
        for image in disk.crash_images():
            reopened = FileStorage2(SIM, file_system=FaultyDisk(image))
            assert contents(reopened) == {ROOT_OID: record(0)}
            reopened.close()
        assert contents(s) == {ROOT_OID: record(0)}

    def test_gen_oid_record(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0, 2), record(1), record(2))
        assert list(contents(s)) == [ROOT_OID, oid(1), oid(2)]
        assert [o for o, _ in s.gen_oid_record(ROOT_OID)] == [ROOT_OID, oid(2)]

    def test_has_format(self, sim_storage, tmp_path: Path) -> None:
        _disk, s = sim_storage
        assert FileStorage2.has_format(s.fp)
        assert FileStorage2.has_format(io.BytesIO(NEW_FILE_BYTES))
        assert not FileStorage2.has_format(io.BytesIO(b"SHELF-1\n"))

    def test_temporary_storage(self) -> None:
        s = FileStorage2()
        assert s.is_temporary()
        commit(s, record(0))
        assert list(s.get_packer()) == []
        s.create_from_records([(oid(3), record(3))])
        assert contents(s) == {oid(3): record(3)}
        name = s.get_filename()
        s.close()
        assert not Path(name).exists()
        with pytest.raises(AssertionError):
            FileStorage2(None, readonly=True)


class TestLockingAndReadOnly:
    def test_second_writer_is_refused_reader_is_not(self, tmp_path: Path) -> None:
        path = tmp_path / "locked"
        writer = FileStorage2(path)
        commit(writer, record(0))
        with pytest.raises(BlockingIOError):
            FileStorage2(path)
        reader = FileStorage2(path, readonly=True)
        assert reader.load(ROOT_OID) == record(0) and reader.is_readonly()
        reader.begin()
        reader.store(ROOT_OID, record(0, data=b"x"))
        with pytest.raises(ReadOnlyFileError):
            reader.end()
        assert list(reader.get_packer()) == []
        with pytest.raises(ReadOnlyFileError):
            reader.create_from_records([])
        reader.close()
        writer.close()

    def test_readonly_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            FileStorage2(tmp_path / "missing", readonly=True)

    def test_accepts_a_file_object(self, tmp_path: Path) -> None:
        f = File(str(tmp_path / "f"))
        with pytest.raises(AssertionError):
            FileStorage2(f, readonly=True)
        s = FileStorage2(f)
        commit(s, record(0))
        assert s.fp is f
        s.close()
        reader = FileStorage2(File(str(tmp_path / "f"), readonly=True), readonly=True)
        assert reader.load(ROOT_OID) == record(0) and reader.is_readonly()
        reader.close()

    def test_load_checks_the_record_it_finds(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0), record(1))
        s.index[ROOT_OID] = s.index[oid(1)]  # as if the file had changed underneath
        with pytest.raises(FileFormatError, match="not there"):
            s.load(ROOT_OID)
        s.index[ROOT_OID] = 10**6
        with pytest.raises(FileFormatError):
            s.load(ROOT_OID)


# ---------------------------------------------------------------------------
# Pack


class TestPack:
    def test_wart_21_removed_record_is_a_durus_key_error(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0, 1), record(1, 3), record(2), record(3), record(4, 2))
        s.pack()
        assert sorted(s.sync()) == [oid(2), oid(4)] and s.sync() == []
        with pytest.raises(DurusKeyError):
            s.load(oid(2))
        assert contents(s) == {ROOT_OID: record(0, 1), oid(1): record(1, 3), oid(3): record(3)}
        assert s.new_oid() == oid(5)  # holes are never reused

    def test_wart_21_ghost_of_a_packed_away_object_is_a_read_conflict(self, tmp_path: Path) -> None:
        connection_module = pytest.importorskip("durus.connection")
        from durus.error import ReadConflictError
        from durus.persistent_dict import PersistentDict

        path = tmp_path / "conflict"
        connection = connection_module.Connection(FileStorage2(path))
        connection.get_root()["d"] = PersistentDict()
        connection.commit()
        connection.get_storage().close()
        connection = connection_module.Connection(FileStorage2(path))
        root = connection.get_root()
        ghost = root["d"]  # never loaded
        del root["d"]
        connection.commit()
        connection.get_storage().pack()
        with pytest.raises(ReadConflictError):
            ghost.keys()
        connection.get_storage().close()

    def test_pack_order_is_by_old_file_position(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0, 2, 3), record(1), record(3))
        commit(s, record(2, 1))  # oid 2 is now newer than oid 3
        s.pack()
        assert sorted(s.index, key=s.index.__getitem__) == [oid(0), oid(3), oid(2), oid(1)]

    def test_commit_during_pack_is_kept(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0, *range(1, 60)), *(record(n) for n in range(1, 60)))
        packer = s.get_packer()
        assert next(packer) is None
        assert list(s.get_packer()) == []  # one pack at a time
        new = s.new_oid()
        commit(s, record(0, 1, 60), record(60, data=b"during"))
        list(packer)
        assert s.pack_extra is None
        live = contents(s)
        assert live[oid(60)] == record(60, data=b"during") and live[ROOT_OID] == record(0, 1, 60)
        assert new == oid(60)
        s.close()

    def test_a_packer_never_started_blocks_nothing(self, sim_storage) -> None:
        _disk, s = sim_storage
        commit(s, record(0), record(1))
        unused = s.get_packer()
        s.pack()
        assert s.sync() == [oid(1)] and s.pack_extra is None
        assert list(unused) == [] and s.index == {ROOT_OID: 14}  # a later, fresh pack

    def test_no_pack_while_records_are_pending(self, sim_storage) -> None:
        _disk, s = sim_storage
        s.begin()
        s.store(ROOT_OID, record(0))
        assert list(s.get_packer()) == []

    def test_a_failed_pack_resets_and_removes_the_pack_file(self, sim_storage) -> None:
        disk, s = sim_storage
        commit(s, record(0), record(1))
        disk.fail_fsync()
        with pytest.raises(OSError):
            s.pack()
        assert s.pack_extra is None and not disk.exists(SIM + ".pack")
        s.pack()
        assert s.sync() == [oid(1)]

    def test_stale_prepack_is_removed_and_missing_file_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "db"
        FileStorage2(path).close()
        path.with_name("db.prepack").write_bytes(b"old")
        s = FileStorage2(path)
        commit(s, record(0))
        s.pack()
        s.close()
        assert not path.with_name("db.prepack").exists()
        path.rename(path.with_name("db.pack"))
        with pytest.raises(OSError, match="interrupted"):
            FileStorage2(path)

    def test_create_from_records(self, sim_storage) -> None:
        disk, s = sim_storage
        commit(s, record(0), record(27))
        s.create_from_records(shelf_a_records().items())
        assert contents(s) == shelf_a_records()
        assert s.new_oid() == oid(28)
        assert s.sync() == [oid(27)]
        with pytest.raises(ValueError):
            s.create_from_records([(ROOT_OID, record(1))])
        assert contents(s) == shelf_a_records()
        assert not disk.exists(SIM + ".pack")


# ---------------------------------------------------------------------------
# Damage, truncation and crashes


def two_transaction_file() -> tuple[bytes, list[dict[bytes, bytes]], list[int]]:
    """A small DFS20 file of two commits; the contents and file size after 0, 1, 2 commits."""
    disk = FaultyDisk()
    s = FileStorage2(SIM, file_system=disk, fsync=False)
    states: list[dict[bytes, bytes]] = [{}]
    sizes = [disk.size(SIM)]
    commit(s, record(0, 1), record(1, data=b"one"))
    states.append(contents(s))
    sizes.append(disk.size(SIM))
    commit(s, record(1, data=b"uno"), record(2, data=b"two"))
    states.append(contents(s))
    sizes.append(disk.size(SIM))
    s.close()
    assert sizes == [35, 35 + 4 + 24 + 4 + 15 + 4, 86 + 4 + 15 + 4 + 15 + 4]
    return disk.read_file(SIM), states, sizes


class TestDamage:
    def test_every_truncation_opens_to_a_prefix_state(self, caplog) -> None:
        raw, states, boundaries = two_transaction_file()
        caplog.set_level(logging.WARNING, logger="durus")
        for cut in range(len(raw) + 1):
            committed = sum(1 for b in boundaries[1:] if b <= cut)
            for readonly in (False, True):
                disk = FaultyDisk({SIM: raw[:cut]})
                if readonly and cut == 0:
                    continue
                s = FileStorage2(SIM, file_system=disk, readonly=readonly)
                assert contents(s) == states[committed], cut
                s.close()
                if not readonly:
                    kept = max(len(NEW_FILE_BYTES), boundaries[committed])
                    assert disk.read_file(SIM) == raw[:kept], cut
        count("dfs20 truncations", 2 * len(raw))
        assert "unfinished final transaction" in caplog.text

    def test_durus_verified_cuts_of_vector_d(self, copy_of) -> None:
        raw = (DATA / "dfs20_d.durus").read_bytes()
        path = copy_of("dfs20_d.durus")
        for size in (2000, len(raw) - 4):
            path.write_bytes(raw[:size])
            s = FileStorage2(path)
            assert s.load(ROOT_OID) == raw[39:121]
            s.close()
            assert path.stat().st_size == 125

    def test_damage_in_the_middle_needs_repair(self, tmp_path: Path) -> None:
        raw, states, sizes = two_transaction_file()
        first_end = sizes[1]
        damaged = raw[:first_end] + int4_to_str(5) + raw[first_end + 4 :]
        path = tmp_path / "damaged"
        path.write_bytes(damaged)
        with pytest.raises(FileFormatError) as info:
            FileStorage2(path)
        assert info.value.offset == first_end and str(path) in str(info.value)
        assert "repair=True" in str(info.value)
        reader = FileStorage2(path, readonly=True, repair=True)
        assert contents(reader) == states[1]
        reader.close()
        assert path.read_bytes() == damaged
        s = FileStorage2(path, repair=True)  # the failed open released its lock
        assert contents(s) == states[1]
        s.close()
        assert path.read_bytes() == raw[:first_end]

    def test_a_bad_record_header_is_damage(self, tmp_path: Path) -> None:
        raw, _states, _sizes = two_transaction_file()
        at = 35 + 4 + 8  # the data length of the first record
        path = tmp_path / "bad"
        path.write_bytes(raw[:at] + int4_to_str(1000) + raw[at + 4 :])
        with pytest.raises(FileFormatError, match="data length"):
            FileStorage2(path)

    @pytest.mark.parametrize(
        "damage, message",
        [
            (lambda raw: b"DFS21\x00" + raw[6:], "not a DFS20 file"),
            (lambda raw: raw[:6] + int8_to_str(3) + raw[14:], "index offset"),
            (lambda raw: raw[:6] + int8_to_str(10**6) + raw[14:], "index offset"),
            (lambda raw: raw[:14] + int8_to_str(10**6) + raw[22:], "overruns"),
            (lambda raw: raw[:22] + b"\x00" * 13 + raw[35:], "zlib"),
        ],
    )
    def test_bad_header_or_index(self, tmp_path: Path, damage, message: str) -> None:
        raw, _states, _sizes = two_transaction_file()
        path = tmp_path / "bad"
        path.write_bytes(damage(raw))
        with pytest.raises(FileFormatError, match=message):
            FileStorage2(path)
        with pytest.raises(FileFormatError):
            FileStorage2(path, readonly=True)
        FileStorage2(path.with_name("fresh")).close()

    def test_not_a_dfs20_file_is_an_assertion_error(self, tmp_path: Path) -> None:
        path = tmp_path / "shelf"
        shutil.copyfile(DATA / "shelf_a.durus", path)
        with pytest.raises(AssertionError):
            FileStorage2(path)
        assert issubclass(NotADFS20FileError, FileFormatError)

    def test_index_pointing_past_itself_is_damage(self, tmp_path: Path) -> None:
        index_record = encode_index_record({ROOT_OID: 500})
        path = tmp_path / "bad_index"
        path.write_bytes(b"DFS20\x00" + int8_to_str(14) + index_record)
        with pytest.raises(FileFormatError, match="after the index"):
            FileStorage2(path)

    def test_interrupted_creation_is_a_new_file(self) -> None:
        for cut in range(1, len(NEW_FILE_BYTES)):
            for content in (NEW_FILE_BYTES[:cut], bytes(cut)):
                disk = FaultyDisk({SIM: content})
                FileStorage2(SIM, file_system=disk).close()
                assert disk.read_file(SIM) == NEW_FILE_BYTES
        durus_cut = NEW_FILE_BYTES[:6] + bytes(8) + NEW_FILE_BYTES[14:]
        disk = FaultyDisk({SIM: durus_cut})
        FileStorage2(SIM, file_system=disk).close()
        assert disk.read_file(SIM) == NEW_FILE_BYTES


class TestCrashes:
    @pytest.mark.parametrize("filler_bytes", [400, 427])  # 427: the commit needs a pad
    def test_a_crash_during_a_commit_leaves_it_whole_or_absent(self, filler_bytes: int) -> None:
        disk = FaultyDisk()
        s = FileStorage2(SIM, file_system=disk)
        commit(s, record(0, 1), record(1, data=b"x" * filler_bytes))
        before = contents(s)
        assert straddles_sector(disk.size(SIM)) == (filler_bytes == 427)
        start = disk.checkpoint()
        commit(s, record(0, 1, 2), record(1, data=b"y" * 700), record(2, data=b"z" * 50))
        after = contents(s)
        s.close()
        checked = 0
        for event_index in range(start, len(disk.events) + 1):
            allowed = [after] if event_index == len(disk.events) else [before, after]
            for image in disk.crash_images(event_index):
                reopened = FileStorage2(SIM, file_system=FaultyDisk(image))
                assert contents(reopened) in allowed, event_index
                reopened.close()
                checked += 1
        count("dfs20 commit crash images", checked)
        assert checked > 100

    def test_a_crash_during_a_pack_loses_nothing(self) -> None:
        disk = FaultyDisk()
        s = FileStorage2(SIM, file_system=disk)
        commit(s, record(0, 1), record(1, data=b"x" * 300), record(2, data=b"garbage"))
        live = {ROOT_OID: record(0, 1), oid(1): record(1, data=b"x" * 300)}
        start = disk.checkpoint()
        s.pack()
        s.close()
        checked = 0
        rng = random.Random(20)  # a seeded sample; all 3339 images pass too (about 6 s)
        for event_index in range(start, len(disk.events) + 1):
            for _sample in range(150):
                image = disk.crash_image(RandomChooser(rng), event_index)
                reopened = FileStorage2(SIM, file_system=FaultyDisk(image))
                reachable = dict(reopened.gen_oid_record(ROOT_OID))
                assert reachable == live, event_index
                reopened.close()
                checked += 1
        count("dfs20 pack crash images", checked)


# ---------------------------------------------------------------------------
# Our files as Durus 4.3 reads them, and a random workload against a model


def durus_reader_view(raw: bytes) -> dict[bytes, bytes]:
    """The records a Durus 4.3 reader finds: index, then transactions to the end.

    Written independently of durus.file_storage2, following FORMATS.md 6.1-6.2.
    """
    assert raw[:6] == b"DFS20\x00"
    index_at = int.from_bytes(raw[6:14], "big")
    index_bytes = int.from_bytes(raw[index_at : index_at + 8], "big")
    index = pickle.loads(zlib.decompress(raw[index_at + 8 : index_at + 8 + index_bytes]))
    position, pending = index_at + 8 + index_bytes, {}
    while position < len(raw):
        length = int.from_bytes(raw[position : position + 4], "big")
        if length == 0:
            index.update(pending)
            pending = {}
        else:
            pending[raw[position + 4 : position + 12]] = position
        position += 4 + length
    assert position == len(raw) and not pending
    records = {}
    for key, at in index.items():
        length = int.from_bytes(raw[at : at + 4], "big")
        records[key] = raw[at + 4 : at + 4 + length]
    return records


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("commit"),
            st.lists(
                st.tuples(st.integers(0, 12), st.lists(st.integers(0, 12), max_size=3)),
                min_size=1,
                max_size=5,
            ),
            st.integers(0, 700),
        ),
        st.tuples(st.just("pack")),
        st.tuples(st.just("reopen")),
    ),
    max_size=12,
)


@given(operations)
def test_random_workload_matches_a_model_and_the_durus_reader(ops: list) -> None:
    disk = FaultyDisk()
    s = FileStorage2(SIM, file_system=disk)
    model: dict[bytes, bytes] = {}
    for op in ops:
        if op[0] == "commit":
            records = [record(n, *sorted(set(refs) - {n}), data=b"v" * op[2]) for n, refs in op[1]]
            commit(s, *records)
            model.update((record[:8], record) for record in records)
        elif op[0] == "pack":
            s.pack()
            removed = set(model) - set(reachable(model))
            assert set(s.sync()) == removed
            model = reachable(model)
        else:
            s.close()
            s = FileStorage2(SIM, file_system=disk)
        assert contents(s) == model
        assert durus_reader_view(disk.read_file(SIM)) == model
    s.close()


def test_a_failed_directory_fsync_after_the_pack_rename_loses_no_commit() -> None:
    """The packed file already has the storage's name: commits must go to it, durably."""
    disk = FaultyDisk()
    s = FileStorage2(SIM, file_system=disk)
    commit(s, record(0, 1), record(1), record(2))  # oid 2 is garbage
    probe_disk = FaultyDisk(disk.image())
    probe = FileStorage2(SIM, file_system=probe_disk)
    fsyncs_before = probe_disk.fsync_calls
    probe.pack()
    last_fsync_of_pack = probe_disk.fsync_calls - fsyncs_before - 1  # the directory fsync
    probe.close()
    disk.fail_fsync(after_calls=last_fsync_of_pack)
    s.pack()  # renamed, not yet durable: logged; the next commit's fsync retries it
    assert not disk.faults, "the fault did not fire"
    commit(s, record(3))  # acknowledged: every crash from now on must keep it
    live = {ROOT_OID: record(0, 1), oid(1): record(1), oid(3): record(3)}
    for image in disk.crash_images():
        reopened = FileStorage2(SIM, file_system=FaultyDisk(image))
        found = contents(reopened)
        reopened.close()
        found.pop(oid(2), None)  # the failed pack may or may not have removed the garbage
        assert found == live
    s.close()
