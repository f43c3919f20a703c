"""Tests of durus.file_storage: vectors, allocation, surprises, durability, pack, recovery."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import durus.shelf as shelf_module
from durus.error import DurusError, DurusKeyError
from durus.file import File, FileLockedError, OsFileSystem
from durus.file_storage import (
    FileFormatError,
    FileStorage,
    InterruptedPackError,
    NotAShelfError,
    TempFileStorage,
)
from durus.record import pack_record
from durus.shelf import EMPTY_SHELF, SIDECAR_SUFFIX, Shelf
from durus.utils import ROOT_OID, int8_to_str, str_to_int8
from tests.support.failing_fs import FailingFileSystem
from tests.support.records import commit, oid, record

DATA = Path(__file__).parent.parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
SHELF_VECTORS = sorted(n for n, e in EXPECTED.items() if e.get("format") == "SHELF-1")


def copy_vector(name: str, tmp_path: Path, target: str | None = None) -> str:
    path = tmp_path / (target or name)
    shutil.copyfile(DATA / name, path)
    path.chmod(0o644)
    return str(path)


def value_at(content: bytes, position: int) -> bytes:
    """The object record of the shelf record at ``position``."""
    m = str_to_int8(content[position : position + 8])
    return content[position + 16 : position + 8 + m]


def contents(storage: FileStorage) -> dict[bytes, bytes]:
    return dict(storage.gen_oid_record())


# --- vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHELF_VECTORS)
def test_vector_first_new_oids_and_records(name: str, tmp_path: Path) -> None:
    entry = EXPECTED[name]
    storage = FileStorage(copy_vector(name, tmp_path))
    assert [str_to_int8(storage.new_oid()) for _ in range(5)] == entry["first_five_new_oids"]
    index = {str(str_to_int8(o)): p for o, p in storage.shelf.iterindex()}
    assert index == entry["index"]
    for oid_text in entry["index"]:
        assert storage.load(oid(int(oid_text)))[:8] == oid(int(oid_text))
    storage.close()
    assert (DATA / name).read_bytes() == Path(tmp_path / name).read_bytes()


@pytest.mark.parametrize("name", SHELF_VECTORS)
def test_vector_opens_through_connection(name: str) -> None:
    connection_module = pytest.importorskip("durus.connection")
    expected_root = EXPECTED[name].get("root")
    storage = FileStorage(str(DATA / name), readonly=True)
    try:
        if expected_root is None:
            assert not list(storage.gen_oid_record())
            return
        root = connection_module.Connection(storage).get_root()
        described = {key: describe(value) for key, value in root.items()}
        assert described == expected_root
    finally:
        storage.close()


def describe(value: Any) -> str:
    if hasattr(value, "_p_oid") and value._p_oid is not None:
        from durus.persistent import real_class

        cls = real_class(value)
        return f"<{cls.__module__}.{cls.__name__} oid={str_to_int8(value._p_oid)}>"
    return repr(value)


def test_new_file_with_root_record_is_byte_exact(tmp_path: Path) -> None:
    expected = (DATA / "shelf_root_only.durus").read_bytes()
    root = Shelf(str(DATA / "shelf_root_only.durus"), readonly=True).get_value(ROOT_OID)
    assert root is not None
    for fsync in (False, True):
        path = tmp_path / f"root-{fsync}"
        storage = FileStorage(str(path), fsync=fsync)
        assert path.read_bytes() == EMPTY_SHELF == (DATA / "shelf_empty.durus").read_bytes()
        assert storage.new_oid() == ROOT_OID
        commit(storage, root)
        storage.close()
        assert path.read_bytes() == expected


@pytest.mark.parametrize(
    "source, packed",
    [("shelf_a.durus", "shelf_b_packed.durus"), ("shelf_c_multi.durus", "shelf_c_packed.durus")],
)
def test_pack_gives_the_packed_vector(source: str, packed: str, tmp_path: Path) -> None:
    path = copy_vector(source, tmp_path)
    storage = FileStorage(path)
    before = contents(storage)
    storage.pack()
    assert Path(path).read_bytes() == (DATA / packed).read_bytes()
    assert sorted(os.listdir(tmp_path)) == [source]  # no .pack, no .prepack left
    after = contents(storage)
    assert all(before[o] == r for o, r in after.items())
    storage.close()


def test_pack_invalidations_and_reuse(tmp_path: Path) -> None:
    storage = FileStorage(copy_vector("shelf_c_multi.durus", tmp_path))
    storage.pack()
    assert storage.sync() == [oid(1)]
    assert storage.sync() == []
    assert [str_to_int8(storage.new_oid()) for _ in range(5)] == [1, 3, 4, 5, 6]
    with pytest.raises(DurusKeyError):
        storage.load(oid(1))
    storage.close()


# --- oid allocation (FORMATS.md 5.6 "Verified sequences") --------------------------


def test_allocation_after_uncommitted_oids_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    storage = FileStorage(path)
    assert storage.new_oid() == ROOT_OID
    commit(storage, record(0))
    assert [str_to_int8(storage.new_oid()) for _ in range(4)] == [1, 2, 3, 4]
    commit(storage, record(4))
    storage.close()
    storage = FileStorage(path)
    assert [str_to_int8(storage.new_oid()) for _ in range(5)] == [1, 2, 3, 5, 6]
    storage.close()


def make_holes_2_5_7(path: str) -> None:
    storage = FileStorage(path)
    oids = [storage.new_oid() for _ in range(11)]
    assert oids == [oid(i) for i in range(11)]
    live = [i for i in range(1, 11) if i not in (2, 5, 7)]
    commit(storage, record(0, *live), *[record(i) for i in range(1, 11)])
    storage.close()


def test_allocation_after_pack_same_session_and_reopened(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    make_holes_2_5_7(path)
    storage = FileStorage(path)
    storage.pack()
    assert list(storage.shelf.get_offset_map().gen_holes()) == [7, 5, 2, 11]
    assert [str_to_int8(storage.new_oid()) for _ in range(2)] == [11, 12]
    assert sorted(storage.sync()) == [oid(2), oid(5), oid(7)]
    storage.close()
    storage = FileStorage(path)
    assert storage.new_oid() == oid(7)
    commit(storage, record(7))
    storage.close()
    storage = FileStorage(path)
    assert [str_to_int8(storage.new_oid()) for _ in range(5)] == [5, 2, 11, 12, 13]
    storage.close()


def test_invalidations_include_garbage_above_the_new_map(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "f"))
    for i in range(4):
        assert storage.new_oid() == oid(i)
    commit(storage, record(0, 1), record(1), record(2), record(3))
    storage.pack()  # map n = 3 (max_oid 1): hole 2; oid 3 lies above the map
    assert sorted(storage.sync()) == [oid(2), oid(3)]
    assert [str_to_int8(storage.new_oid()) for _ in range(2)] == [2, 3]
    storage.close()


# --- the Storage interface ----------------------------------------------------------


def test_surprise_oid_discards_pending(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "f"))
    storage.begin()
    storage.store(ROOT_OID, record(0))
    with pytest.raises(ValueError, match="is a surprise"):
        storage.store(oid(5), record(5))
    assert storage.pending_records == {}
    new = storage.new_oid()
    assert new == ROOT_OID  # never committed, still the first candidate
    other = storage.new_oid()
    storage.begin()
    storage.store(other, pack_record(other, b"x", b""))
    storage.end()
    storage.begin()
    storage.store(other, pack_record(other, b"y", b""))  # has a record: not a surprise
    with pytest.raises(ValueError):
        storage.store(other, pack_record(oid(9), b"y", b""))  # record for another oid
    assert storage.pending_records == {}
    storage.close()


def test_load_errors_and_begin_discards(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "f"))
    with pytest.raises(DurusKeyError):
        storage.load(oid(3))
    with pytest.raises(ValueError):
        storage.load(b"short")
    storage.begin()
    storage.store(ROOT_OID, record(0))
    storage.begin()
    storage.end()
    with pytest.raises(KeyError):
        storage.load(ROOT_OID)
    assert storage.sync() == []
    storage.close()
    with pytest.raises(ValueError):
        storage.load(ROOT_OID)


def test_gen_oid_record_all_and_reachable(tmp_path: Path) -> None:
    storage = FileStorage(copy_vector("shelf_c_multi.durus", tmp_path))
    assert sorted(str_to_int8(o) for o, _r in storage.gen_oid_record()) == [0, 1, 2]
    reachable = [str_to_int8(o) for o, _r in storage.gen_oid_record(ROOT_OID)]
    assert reachable == [0, 2]
    seen: set[int] = {2}
    assert [str_to_int8(o) for o, _r in storage.gen_oid_record(ROOT_OID, seen=seen)] == [0]
    storage.close()


def test_names_formats_and_temporary(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    storage = FileStorage(path)
    assert storage.get_filename() == path and str(storage) == f"FileStorage({path!r})"
    assert not storage.is_temporary()
    with open(path, "rb") as f:
        assert FileStorage.has_format(f)
    storage.close()
    temporary = TempFileStorage()
    name = temporary.get_filename()
    assert temporary.is_temporary() and os.path.exists(name)
    commit(temporary, record(0))
    assert list(temporary.get_packer()) == []
    temporary.close()
    assert not os.path.exists(name)
    with pytest.raises(AssertionError):
        FileStorage(None, readonly=True)
    with pytest.raises(AssertionError):
        FileStorage(None, repair=True)


def test_read_only_storage_is_a_snapshot(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    with pytest.raises(OSError, match='No ".*" found.'):
        FileStorage(path, readonly=True)
    writer = FileStorage(path)
    commit(writer, record(0, data=b"one"))
    reader = FileStorage(path, readonly=True)
    commit(writer, record(0, data=b"two"))
    assert reader.load(ROOT_OID) == record(0, data=b"one")
    assert list(reader.get_packer()) == []
    reader.begin()
    reader.store(ROOT_OID, record(0, data=b"three"))
    with pytest.raises(AssertionError):
        reader.end()
    reader.close()
    with pytest.raises(BlockingIOError) as info:
        FileStorage(path)
    assert isinstance(info.value, FileLockedError) and "locked" in str(info.value)
    writer.close()


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"not a durus file at all", b"DFS20\0" + bytes(40), b"SHELF-1\n\0\0\0\0\0\0\0\5"]
)
def test_not_a_shelf_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(NotAShelfError) as info:
        FileStorage(str(path))
    assert isinstance(info.value, AssertionError) and str(path) in str(info.value)
    assert path.read_bytes() == content
    File(str(path)).close()  # the failed open released the lock


@pytest.mark.parametrize("content", [b"", b"SHELF-1\n", EMPTY_SHELF[:39], bytes(40), bytes(7)])
def test_unfinished_creation(tmp_path: Path, content: bytes, caplog: Any) -> None:
    """A file holding a cut-short new-shelf header (or zeros) has no data."""
    path = tmp_path / "f"
    path.write_bytes(content)
    with pytest.raises(NotAShelfError, match="creation did not finish"):
        FileStorage(str(path), readonly=True)
    assert path.read_bytes() == content
    with caplog.at_level(logging.WARNING, logger="durus"):
        storage = FileStorage(str(path))
    assert bool(caplog.records) == bool(content)
    assert storage.new_oid() == ROOT_OID
    storage.close()
    assert path.read_bytes() == EMPTY_SHELF


def test_failed_open_releases_lock_then_repair(tmp_path: Path) -> None:
    path = tmp_path / "f"
    c_multi = (DATA / "shelf_c_multi.durus").read_bytes()
    path.write_bytes(c_multi[:607] + int8_to_str(10**6) + c_multi[615:])
    with pytest.raises(FileFormatError) as info:
        FileStorage(str(path))
    assert isinstance(info.value, DurusError) and info.value.offset == 607
    assert "607" in str(info.value) and str(path) in str(info.value)
    storage = FileStorage(str(path), repair=True)
    assert path.read_bytes() == c_multi[:607]
    assert storage.load(ROOT_OID) == value_at(c_multi, 154)
    storage.close()


def test_torn_tail_dropped_with_warning(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "f"
    c_multi = (DATA / "shelf_c_multi.durus").read_bytes()
    path.write_bytes(c_multi[:1200])  # wart 14: the last record's body runs past EOF
    with caplog.at_level(logging.WARNING, logger="durus"):
        reader = FileStorage(str(path), readonly=True)
        assert path.read_bytes() == c_multi[:1200]
        reader.close()
        storage = FileStorage(str(path))
    assert path.read_bytes() == c_multi[:968]
    assert sum("unfinished final transaction" in r.getMessage() for r in caplog.records) == 2
    assert storage.load(oid(2)) == value_at(c_multi, 851)
    storage.close()


def test_interrupted_durus_pack_is_not_mistaken_for_a_new_database(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    shutil.copyfile(DATA / "shelf_b_packed.durus", path + ".pack")
    with pytest.raises(InterruptedPackError) as info:
        FileStorage(path)
    assert ".pack" in str(info.value)
    assert not os.path.exists(path)


# --- every truncation point ----------------------------------------------------------


def test_every_truncation_opens_to_a_prefix_state(tmp_path: Path) -> None:
    c_multi = (DATA / "shelf_c_multi.durus").read_bytes()
    boundaries = [40, 146, 607, 968, 1308]
    states = []
    for end in boundaries:
        (tmp_path / "p").write_bytes(c_multi[:end])
        s = FileStorage(str(tmp_path / "p"), readonly=True)
        states.append(contents(s))
        s.close()
    logging.getLogger("durus").disabled = True
    try:
        for cut in range(40, len(c_multi) + 1):
            path = tmp_path / "cut"
            path.write_bytes(c_multi[:cut])
            reader = FileStorage(str(path), readonly=True)
            state = contents(reader)
            reader.close()
            assert state in states, cut
            writer = FileStorage(str(path), fsync=False)
            assert contents(writer) == state
            writer.close()
            assert len(path.read_bytes()) in boundaries
    finally:
        logging.getLogger("durus").disabled = False


# --- durability and failed writes -------------------------------------------------------


@pytest.mark.parametrize("failure", ["write", "sync"])
def test_failed_write_leaves_no_partial_transaction(tmp_path: Path, failure: str) -> None:
    fs = FailingFileSystem()
    path = tmp_path / "f"
    storage = FileStorage(str(path), file_system=fs)
    commit(storage, record(0, data=b"first"))
    before = path.read_bytes()
    setattr(fs, f"fail_{failure}", True)
    fs.partial_bytes = 20
    storage.begin()
    storage.store(ROOT_OID, record(0, data=b"second" * 100))
    with pytest.raises(OSError):
        storage.end()
    assert path.read_bytes() == before
    assert storage.load(ROOT_OID) == record(0, data=b"first")
    commit(storage, record(0, data=b"third"))
    storage.close()
    reopened = FileStorage(str(path))
    assert reopened.load(ROOT_OID) == record(0, data=b"third")
    reopened.close()


def test_commit_protocol_one_write_then_length(tmp_path: Path) -> None:
    fs = FailingFileSystem()
    storage = FileStorage(str(tmp_path / "f"), file_system=fs)
    fs.calls.clear()
    commit(storage, record(0), record(0)[:0] or record(0, data=b"other"))
    assert fs.calls == ["write", "sync", "write", "sync"]
    storage.close()
    fs = FailingFileSystem()
    storage = FileStorage(str(tmp_path / "g"), fsync=False, file_system=fs)
    fs.calls.clear()
    commit(storage, record(0))
    assert fs.calls == ["write"]
    storage.close()


# --- pack ---------------------------------------------------------------------------


def test_pack_with_commits_interleaved(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    storage = FileStorage(path)
    for _ in range(4):
        storage.new_oid()
    commit(storage, record(0, 1, 2), record(1), record(2), record(3))
    packer = storage.get_packer()
    steps = [next(packer)]
    assert steps[0].startswith("started")
    new = storage.new_oid()
    commit(storage, record(0, 1, 2, str_to_int8(new), data=b"root2"), record(str_to_int8(new)))
    assert list(storage.get_packer()) == []  # a pack is already running
    steps.extend(packer)
    assert steps[-1].startswith("finished") and storage.pack_extra is None
    assert any(isinstance(s, str) and s.startswith("base written") for s in steps)
    assert storage.load(ROOT_OID) == record(0, 1, 2, str_to_int8(new), data=b"root2")
    assert storage.load(new) == record(str_to_int8(new))
    assert storage.sync() == [oid(3)]
    storage.close()
    reopened = FileStorage(path, readonly=True)
    assert sorted(str_to_int8(o) for o, _ in reopened.gen_oid_record()) == [0, 1, 2, 4]
    reopened.close()


def test_pack_refused_with_pending_records(tmp_path: Path) -> None:
    storage = FileStorage(str(tmp_path / "f"))
    commit(storage, record(0))
    storage.begin()
    storage.store(ROOT_OID, record(0))
    assert list(storage.get_packer()) == []
    storage.close()


def test_failed_pack_resets_state(tmp_path: Path) -> None:
    class NoPackFileSystem(OsFileSystem):
        def open(self, path: str, readonly: bool, create: bool) -> Any:
            if path.endswith(".pack"):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return super().open(path, readonly, create)

    path = str(tmp_path / "f")
    storage = FileStorage(path, file_system=NoPackFileSystem())
    commit(storage, record(0))
    with pytest.raises(PermissionError):
        storage.pack()
    assert storage.pack_extra is None
    commit(storage, record(0, data=b"after"))
    storage.file_system = None
    storage.pack()
    assert storage.load(ROOT_OID) == record(0, data=b"after")
    storage.close()


def test_pack_abandoned_midway_removes_pack_file(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    storage = FileStorage(path)
    commit(storage, record(0))
    packer = storage.get_packer()
    next(packer)
    next(packer)
    assert os.path.exists(path + ".pack")
    packer.close()
    assert storage.pack_extra is None and not os.path.exists(path + ".pack")
    storage.pack()
    storage.close()


def test_pack_reuses_leftover_pack_and_removes_stale_prepack(tmp_path: Path) -> None:
    path = copy_vector("shelf_a.durus", tmp_path, "f")
    Path(path + ".pack").write_bytes(b"junk from an interrupted pack")
    Path(path + ".prepack").write_bytes(b"an old copy")
    storage = FileStorage(path)
    storage.pack()
    storage.close()
    assert sorted(os.listdir(tmp_path)) == ["f"]
    assert Path(path).read_bytes() == (DATA / "shelf_b_packed.durus").read_bytes()


def test_commit_after_pack_goes_to_the_new_file(tmp_path: Path) -> None:
    path = copy_vector("shelf_c_multi.durus", tmp_path, "f")
    storage = FileStorage(path)
    storage.pack()
    storage.sync()
    new = storage.new_oid()
    assert new == oid(1)
    commit(storage, record(0, 1, 2), record(1))
    storage.close()
    reopened = FileStorage(path, readonly=True)
    assert reopened.load(oid(1)) == record(1)
    assert [str_to_int8(o) for o, _ in reopened.gen_oid_record(ROOT_OID)] == [0, 1, 2]
    reopened.close()


# --- crash states (the fault model of tests/support/faulty_disk.py) ---------------------


def test_every_crash_state_holds_a_prefix_of_acknowledged_commits() -> None:
    """Commits and a pack on a simulated disk; every crash image opens to an allowed state.

    Allowed: the state after the last acknowledged commit, or after the one in
    flight; never a mixture, never an error.
    """
    faulty_disk = pytest.importorskip("tests.support.faulty_disk")
    disk = faulty_disk.FaultyDisk()
    path = "/sim/db"
    storage = FileStorage(path, file_system=disk)
    states: list[dict[bytes, bytes]] = [{}]
    acknowledged_at = [disk.checkpoint()]
    current: dict[bytes, bytes] = {}
    for number, size in enumerate([30, 700, 5, 1100]):
        new = storage.new_oid()
        current = {**current, new: pack_record(new, bytes([65 + number]) * size, b"")}
        refs = b"".join(sorted(o for o in current if o != ROOT_OID))
        current[ROOT_OID] = pack_record(ROOT_OID, b"root" * (number + 1), refs)
        commit(storage, current[ROOT_OID], current[new])
        states.append(current)
        acknowledged_at.append(disk.checkpoint())
        if number == 2:
            storage.pack()
            states.append(current)
            acknowledged_at.append(disk.checkpoint())
    storage.close()
    logging.getLogger("durus").disabled = True
    checked = 0
    try:
        for event_index in range(len(disk.events) + 1):
            floor = max((i for i, at in enumerate(acknowledged_at) if at <= event_index), default=0)
            for image in disk.crash_images(event_index):
                for readonly in (True, False):
                    state = open_crash_image(faulty_disk, image, path, readonly)
                    if state is None:
                        assert floor == 0
                        continue
                    allowed = [i for i, s in enumerate(states) if s == state]
                    assert any(floor <= i <= floor + 2 for i in allowed), (event_index, allowed)
                    checked += 1
    finally:
        logging.getLogger("durus").disabled = False
    assert checked > 1000


def open_crash_image(
    faulty_disk: Any, image: dict[str, bytes], path: str, readonly: bool
) -> dict[bytes, bytes] | None:
    """The records in a crash image, or None when the database was never created."""
    if path not in image:
        return None
    try:
        storage = FileStorage(path, readonly=readonly, file_system=faulty_disk.FaultyDisk(image))
    except NotAShelfError:
        assert readonly and len(image[path]) <= len(EMPTY_SHELF)
        return None
    try:
        return contents(storage)
    finally:
        storage.close()


# --- the sidecar index ------------------------------------------------------------------


@pytest.fixture
def sidecar_always(monkeypatch: Any) -> None:
    monkeypatch.setattr(shelf_module, "SIDECAR_MIN_ENTRIES", 1)


def scanned_contents(path: Path) -> dict[bytes, bytes]:
    """The records of ``path`` found by scanning, ignoring any sidecar."""
    reader = FileStorage(
        str(path), readonly=True, file_system=HidingFileSystem(str(path) + SIDECAR_SUFFIX)
    )
    try:
        assert not reader.shelf.index.base
        return contents(reader)
    finally:
        reader.close()


class HidingFileSystem(OsFileSystem):
    def __init__(self, hidden: str) -> None:
        self.hidden = hidden

    def exists(self, path: str) -> bool:
        return path != self.hidden and super().exists(path)


def make_committed(path: Path, count: int) -> None:
    storage = FileStorage(str(path), fsync=False)
    oids = [storage.new_oid() for _ in range(count)]
    commit(storage, *[pack_record(o, b"v%d" % i, b"") for i, o in enumerate(oids)])
    storage.close()


def test_sidecar_written_on_close_and_used_on_open(tmp_path: Path, sidecar_always: None) -> None:
    path = tmp_path / "f"
    make_committed(path, 50)
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    assert sidecar.exists()
    storage = FileStorage(str(path))
    assert len(storage.shelf.index.base) == 50 and not storage.shelf.index.recent
    assert contents(storage) == scanned_contents(path)
    assert [str_to_int8(storage.new_oid()) for _ in range(2)] == [50, 51]
    commit(storage, record(0, data=b"changed"), record(50))
    storage.close()
    reopened = FileStorage(str(path), readonly=True)
    assert reopened.load(ROOT_OID) == record(0, data=b"changed") and reopened.load(oid(50))
    assert contents(reopened) == scanned_contents(path)
    reopened.close()


def test_sidecar_does_not_change_the_data_file(tmp_path: Path, sidecar_always: None) -> None:
    root = Shelf(str(DATA / "shelf_root_only.durus"), readonly=True).get_value(ROOT_OID)
    assert root is not None
    path = tmp_path / "f"
    storage = FileStorage(str(path))
    commit(storage, root)
    storage.close()
    assert path.read_bytes() == (DATA / "shelf_root_only.durus").read_bytes()
    assert Path(str(path) + SIDECAR_SUFFIX).exists()


def test_sidecar_older_than_the_file_is_completed_by_scanning(
    tmp_path: Path, sidecar_always: None
) -> None:
    path = tmp_path / "f"
    make_committed(path, 20)
    storage = FileStorage(str(path), fsync=False)
    commit(storage, record(0, data=b"later"))
    storage.shelf.get_file().close()  # as if the process died: no new sidecar
    reopened = FileStorage(str(path), readonly=True)
    assert reopened.shelf.index.base and reopened.load(ROOT_OID) == record(0, data=b"later")
    assert contents(reopened) == scanned_contents(path)
    reopened.close()


@pytest.mark.parametrize("damage", ["sidecar byte", "data rewritten", "data truncated"])
def test_stale_or_damaged_sidecar_is_ignored(
    tmp_path: Path, sidecar_always: None, damage: str
) -> None:
    path = tmp_path / "f"
    make_committed(path, 30)
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    if damage == "sidecar byte":
        blob = bytearray(sidecar.read_bytes())
        blob[60] ^= 1
        sidecar.write_bytes(bytes(blob))
    elif damage == "data rewritten":
        saved = sidecar.read_bytes()
        path.unlink()
        make_committed(path, 29)
        storage = FileStorage(str(path), fsync=False)
        commit(storage, record(0, data=b"other root, same size"[:2]))
        storage.shelf.get_file().close()
        sidecar.write_bytes(saved)
    else:
        content = path.read_bytes()
        path.write_bytes(content[:-200])
    reader = FileStorage(str(path), readonly=True)
    assert not reader.shelf.index.base
    reader.close()
    storage = FileStorage(str(path))
    assert contents(storage) == scanned_contents(path)
    storage.close()


def test_pack_replaces_the_sidecar(tmp_path: Path, sidecar_always: None) -> None:
    path = tmp_path / "f"
    make_committed(path, 10)
    storage = FileStorage(str(path))
    storage.pack()  # root has no refs: only oid 0 survives
    assert not Path(str(path) + SIDECAR_SUFFIX).exists()
    storage.close()
    reopened = FileStorage(str(path), readonly=True)
    assert sorted(contents(reopened)) == [ROOT_OID]
    reopened.close()


def test_small_files_get_no_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "f"
    make_committed(path, 10)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_failed_directory_fsync_after_pack_is_retried_before_the_next_commit(
    tmp_path: Path,
) -> None:
    class DirectorySyncFails(OsFileSystem):
        def __init__(self) -> None:
            self.failures = 0
            self.directory_syncs = 0

        def sync_directory(self, path: str) -> None:
            self.directory_syncs += 1
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EIO, "I/O error", path)
            super().sync_directory(path)

    fs = DirectorySyncFails()
    path = str(tmp_path / "f")
    storage = FileStorage(path, file_system=fs)
    commit(storage, record(0))
    fs.failures = 2
    storage.pack()  # the rename happened; making it durable failed (and its quick retry)
    assert storage.get_filename() == path and not os.path.exists(path + ".pack")
    fs.failures = 1
    storage.begin()
    storage.store(ROOT_OID, record(0, data=b"not acknowledged"))
    with pytest.raises(OSError):
        storage.end()  # the directory is still not durable: nothing is acknowledged
    syncs = fs.directory_syncs
    commit(storage, record(0, data=b"acknowledged"))
    assert fs.directory_syncs == syncs + 1
    storage.close()
    reopened = FileStorage(path, readonly=True)
    assert reopened.load(ROOT_OID) == record(0, data=b"acknowledged")
    reopened.close()
