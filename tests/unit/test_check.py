"""Tests of durus.check: the offline checker (``durus -k``) on the vectors and on damaged copies."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus import check
from durus.check import CheckError, RecordSite, check_record, check_storage_file
from durus.record import pack_record
from durus.utils import int8_to_str

DATA_DIR = Path(__file__).parent.parent / "data"
EXPECTED = json.loads((DATA_DIR / "expected.json").read_text())
VECTOR_FILES = sorted(name for name in EXPECTED if name.endswith(".durus"))
SUBPROCESS_TIMEOUT_S = 60


def _records_described(entry: dict) -> list[dict]:
    """Every record description of a vector entry in expected.json."""
    found = list(entry.get("rows", []))
    if "initial_transaction" in entry:
        found += entry["initial_transaction"]["records"]
    for transaction in entry.get("transactions", []):
        found += transaction["records"]
    for key in ("transactions_before_index", "transactions_after_index"):
        for transaction in entry.get(key, []):
            found += transaction
    return found


def _expected_live(entry: dict) -> dict[int, dict]:
    """oid -> description of the live record (the one the index names)."""
    records = _records_described(entry)
    if "rows" in entry:
        return {r["oid"]: r for r in records}
    index = {int(oid): position for oid, position in entry["index"].items()}
    return {r["oid"]: r for r in records if index.get(r["oid"]) == r.get("position")}


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_vector_census_offsets_and_soundness(name: str) -> None:
    entry = EXPECTED[name]
    live = _expected_live(entry)
    report = check_storage_file(str(DATA_DIR / name))
    assert report.ok, report.damage
    assert report.format_name == entry["format"]
    expected_census = Counter(f"{r['class_module']}.{r['class_name']}" for r in live.values())
    assert report.census() == dict(expected_census)
    assert {int.from_bytes(oid, "big") for oid in report.live} == set(live)
    if "rows" not in entry:
        for oid, info in report.live.items():
            assert info.offset == live[int.from_bytes(oid, "big")]["position"]


def test_unreachable_records_are_counted_not_damage() -> None:
    report = check_storage_file(str(DATA_DIR / "shelf_c_multi.durus"))
    assert report.ok
    assert report.unreachable == [int8_to_str(1)]  # the dropped PersistentDict


def test_check_never_changes_the_file(tmp_path: Path) -> None:
    for name in ("shelf_a.durus", "dfs20_d.durus", "sqlite_e.durus"):
        copy = tmp_path / name
        shutil.copyfile(DATA_DIR / name, copy)
        before = (copy.read_bytes(), os.stat(copy).st_mtime_ns)
        check_storage_file(str(copy))
        assert (copy.read_bytes(), os.stat(copy).st_mtime_ns) == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name)) == [name]


def test_flipped_state_byte_is_damage_at_the_record_offset(tmp_path: Path) -> None:
    copy = tmp_path / "bad.durus"
    content = bytearray((DATA_DIR / "shelf_a.durus").read_bytes())
    position = EXPECTED["shelf_a.durus"]["index"]["4"]  # the Note, oid 4
    # m (8) + name (8) + oid (8) + int4 (4) + class pickle (25) + 2 bytes of zlib header
    content[position + 8 + 8 + 12 + 25 + 6] ^= 0xFF
    copy.write_bytes(bytes(content))
    report = check_storage_file(str(copy))
    assert not report.ok
    assert [d.offset for d in report.damage] == [position]
    assert report.damage[0].oid == int8_to_str(4)
    assert "does not decode" in report.damage[0].message


def test_truncated_last_record_body_is_found(tmp_path: Path) -> None:
    # The gap FileStorage 4.3 missed: a cut inside the last record's value.
    copy = tmp_path / "cut.durus"
    copy.write_bytes((DATA_DIR / "shelf_c_multi.durus").read_bytes()[:1200])
    report = check_storage_file(str(copy))
    assert not report.ok
    assert report.damage[0].offset == 968  # the last transaction's start
    assert "1200" in report.damage[0].message


def test_torn_transaction_header(tmp_path: Path) -> None:
    copy = tmp_path / "torn.durus"
    copy.write_bytes((DATA_DIR / "shelf_c_multi.durus").read_bytes()[:971])
    report = check_storage_file(str(copy))
    assert [d.offset for d in report.damage][:1] == [968]
    assert report.census()  # records before the damage are still checked


def test_dfs20_missing_terminator(tmp_path: Path) -> None:
    copy = tmp_path / "dfs.durus"
    copy.write_bytes((DATA_DIR / "dfs20_d.durus").read_bytes()[:-4])
    report = check_storage_file(str(copy))
    assert not report.ok
    assert report.damage[0].offset == 125
    assert "terminator" in report.damage[0].message


def test_sqlite_damaged_row(tmp_path: Path) -> None:
    copy = tmp_path / "e.durus"
    shutil.copyfile(DATA_DIR / "sqlite_e.durus", copy)
    with sqlite3.connect(copy) as database:
        database.execute("UPDATE objects SET data = ? WHERE id = 5", (b"garbage",))
        database.execute("UPDATE objects SET refs = ? WHERE id = 1", (int8_to_str(77),))
    database.close()
    report = check_storage_file(str(copy))
    messages = [(d.oid, d.message.split(" (")[0]) for d in report.damage]
    assert all(d.offset is None for d in report.damage)  # rows have no byte offsets
    assert (int8_to_str(5), "record data does not decode") in messages
    assert (int8_to_str(1), "refs field [77] differs from the state's references [6]") in messages
    assert (int8_to_str(1), "refers to oid 77, which has no record") in messages
    assert (int8_to_str(6),) not in [(oid,) for oid, _m in messages]


def _shelf_file(records: list[bytes]) -> bytes:
    """A SHELF-1 file holding ``records`` in one transaction after an empty map."""
    body = b"".join(int8_to_str(8 + len(r)) + r[:8] + r for r in records)
    header = b"SHELF-1\n" + int8_to_str(0) + int8_to_str(16) + int8_to_str(1) + int8_to_str(0)
    return header + int8_to_str(len(body)) + body


def test_dangling_reference_and_missing_root(tmp_path: Path) -> None:
    pair = (DATA_DIR / "record_oid5_Pair.bin").read_bytes()  # refers to oid 4
    copy = tmp_path / "dangling.durus"
    copy.write_bytes(_shelf_file([pair]))
    report = check_storage_file(str(copy))
    messages = [str(d) for d in report.damage]
    assert "offset 48, oid 5: refers to oid 4, which has no record" in messages
    assert "there is no root record (oid 0)" in messages
    assert report.unreachable == [int8_to_str(5)]


@pytest.mark.parametrize(
    "vector", sorted(p.name for p in DATA_DIR.glob("record_*.bin")), ids=lambda n: n[7:-4]
)
def test_record_vectors_decode_without_imports(vector: str) -> None:
    entry = EXPECTED[vector]
    record = (DATA_DIR / vector).read_bytes()
    oid = int8_to_str(entry["oid"])
    live, damage = check_record(RecordSite(oid, 0, record))
    assert damage == []
    assert live is not None
    assert live.class_name == f"{entry['class_module']}.{entry['class_name']}"
    assert [int.from_bytes(r, "big") for r in live.refs] == entry["refs"]


def test_decoding_never_calls_what_a_pickle_names(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class_pickle = b"\x80\x02cos\nsystem\nq\x00."
    state = zlib.compress(pickle.dumps({"x": Evil()}, protocol=2))
    record = pack_record(int8_to_str(3), class_pickle + state, b"")
    live, damage = check_record(RecordSite(int8_to_str(3), 0, record))
    assert damage == [] and live is not None
    assert live.class_name.endswith(".system")
    assert not marker.exists()


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    check_storage_file(str(DATA_DIR / "shelf_a.durus"), lambda *call: calls.append(call))
    assert calls[-1] == (4450, 4450, "bytes")
    calls.clear()
    check_storage_file(str(DATA_DIR / "sqlite_e.durus"), lambda *call: calls.append(call))
    assert calls == [(20, 20, "rows")]


def test_unusable_inputs_raise_check_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "junk").write_bytes(b"hello world, not a storage")
    for name, words in (("missing", "no such file"), ("empty", "empty"), ("junk", "unknown")):
        with pytest.raises(CheckError, match=words):
            check_storage_file(str(tmp_path / name))


def test_format_report_lines() -> None:
    report = check_storage_file(str(DATA_DIR / "shelf_c_multi.durus"))
    lines = check.format_report(report)
    assert lines[0].endswith("SHELF-1, 4 transactions, 8 records, 3 live objects")
    assert "         2  durus.persistent_dict.PersistentDict" in lines
    assert "unreachable: 1" in lines and lines[-1] == "damage: none"


def _run_k(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durus", "-k", *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def test_cli_exit_status_and_output(tmp_path: Path) -> None:
    sound = _run_k(str(DATA_DIR / "dfs20_d.durus"))
    assert sound.returncode == 0, sound.stderr
    assert "13  durus.btree.BNode16" in sound.stdout and "damage: none" in sound.stdout
    copy = tmp_path / "cut.durus"
    copy.write_bytes((DATA_DIR / "shelf_c_multi.durus").read_bytes()[:1200])
    damaged = _run_k(str(copy))
    assert damaged.returncode == 1
    assert "offset 968:" in damaged.stdout
    missing = _run_k(str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_terminal_progress_draws_and_clears() -> None:
    stream = io.StringIO()
    progress = check.TerminalProgress(stream, "checking", interval_s=0.0)
    progress(5, 10, "records")
    progress(10, 10, "records")
    progress.clear()
    assert "\rchecking:  50% (5 of 10 records)\x1b[K" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_quiet_report_shows_only_damage(tmp_path: Path) -> None:
    copy = tmp_path / "cut.durus"
    copy.write_bytes((DATA_DIR / "shelf_c_multi.durus").read_bytes()[:1200])
    lines = check.format_report(check_storage_file(str(copy)), quiet=True)
    assert lines[0] == "damage: 1"
    assert lines[1].startswith("  offset 968: transaction declares 332 bytes")
    assert "cut off by a crash" in lines[1]
    assert check.format_report(check_storage_file(str(DATA_DIR / "shelf_a.durus")), True) == [
        "damage: none"
    ]


def test_damage_in_a_superseded_record_is_found(tmp_path: Path) -> None:
    copy = tmp_path / "old.durus"
    content = bytearray((DATA_DIR / "shelf_a.durus").read_bytes())
    content[48 + 8 + 8 + 8 + 4 + 2] ^= 0xFF  # the first root's class pickle (superseded at 154)
    copy.write_bytes(bytes(content))
    report = check_storage_file(str(copy))
    assert [(d.offset, d.oid) for d in report.damage] == [(48, int8_to_str(0))]
    assert report.census()["durus.persistent_dict.PersistentDict"] == 1
    assert report.unreachable == []


def _committed_file(path: Path, batches: list[list[int]]) -> list[int]:
    """A FileStorage file with one commit per batch; the file size after each commit."""
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_list import PersistentList

    storage = FileStorage(str(path))
    try:
        connection = Connection(storage)
        sizes = [path.stat().st_size]
        for number, batch in enumerate(batches):
            connection.get_root()[number] = PersistentList(batch)
            connection.commit()
            sizes.append(path.stat().st_size)
    finally:
        storage.close()
    return sizes


@pytest.mark.skipif(
    not all(
        importlib.util.find_spec(name)
        for name in ("durus.connection", "durus.file_storage", "durus.persistent_list")
    ),
    reason="the connection, file storage or list module is not available yet",
)
@given(
    batches=st.lists(st.lists(st.integers(), max_size=5), min_size=1, max_size=4),
    cut_fraction=st.floats(min_value=0, max_value=1),
)
def test_any_cut_is_sound_at_a_commit_boundary_else_damage_at_its_start(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[int]], cut_fraction: float
) -> None:
    directory = tmp_path_factory.mktemp("cuts")
    path = directory / "cut.durus"
    sizes = _committed_file(path, batches)
    content = path.read_bytes()
    cut = 40 + round(cut_fraction * (len(content) - 40))
    path.write_bytes(content[:cut])
    report = check_storage_file(str(path))
    boundaries = [40, *sizes]  # the empty shelf, the root's commit, then one per batch
    if cut in boundaries:
        assert report.ok, report.damage
        lists = sum(1 for size in sizes[1:] if size <= cut)
        assert report.census().get("durus.persistent_list.PersistentList", 0) == lists
    else:
        start = max(size for size in boundaries if size < cut)
        assert [d.offset for d in report.damage] == [start]
