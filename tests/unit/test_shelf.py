"""Tests of durus.shelf: every SHELF-1 vector, the offset map, scanning and damage, store."""

from __future__ import annotations

import io
import json
import logging
import shutil
import zlib
from pathlib import Path
from typing import Any

import pytest

from durus.error import DurusError
from durus.file import File
from durus.record import unpack_record
from durus.shelf import (
    EMPTY_SHELF,
    FileFormatError,
    NotAShelfError,
    OffsetMap,
    Shelf,
    build_offset_map,
    bytes_per_word,
    needs_padding,
    read_transaction_offsets,
    scan_transactions,
)
from durus.utils import int8_to_str, str_to_int8

DATA = Path(__file__).parent.parent / "data"
EXPECTED = json.loads((DATA / "expected.json").read_text())
SHELF_VECTORS = sorted(name for name, entry in EXPECTED.items() if entry.get("format") == "SHELF-1")


def open_vector(name: str) -> Shelf:
    return Shelf(str(DATA / name), readonly=True, check_record_names=True)


def all_records(entry: dict[str, Any]) -> list[dict[str, Any]]:
    records = list(entry["initial_transaction"]["records"])
    for transaction in entry["transactions"]:
        records.extend(transaction["records"])
    return records


def copy_vector(name: str, tmp_path: Path) -> str:
    target = tmp_path / name
    shutil.copyfile(DATA / name, target)
    target.chmod(0o644)
    return str(target)


def test_every_shelf_vector_is_covered() -> None:
    assert len(SHELF_VECTORS) == 8


@pytest.mark.parametrize("name", SHELF_VECTORS)
def test_vector_index_and_layout(name: str) -> None:
    entry = EXPECTED[name]
    shelf = open_vector(name)
    try:
        assert (DATA / name).stat().st_size == entry["size"]
        index = {str(str_to_int8(oid)): position for oid, position in shelf.iterindex()}
        assert index == {k: v for k, v in entry["index"].items()}
        assert sorted(str_to_int8(n) for n in shelf) == sorted(int(k) for k in entry["index"])
        offset_map = shelf.get_offset_map()
        expected_map = entry["offset_map"]
        assert offset_map.start == expected_map["offset"]
        assert offset_map.bytes_per_word == expected_map["bytes_per_word"]
        assert len(offset_map) == expected_map["number_of_words"]
        assert [offset_map[i] for i in range(len(offset_map))] == [
            w["value"] for w in expected_map["words"]
        ]
        assert list(offset_map.gen_holes()) == expected_map["holes_in_allocation_order"]
        memory_positions = [r["position"] for t in entry["transactions"] for r in t["records"]]
        assert set(shelf.index.values()) <= set(memory_positions)
    finally:
        shelf.close()


@pytest.mark.parametrize("name", SHELF_VECTORS)
def test_vector_records_read_back(name: str) -> None:
    entry = EXPECTED[name]
    shelf = open_vector(name)
    try:
        for described in all_records(entry):
            oid, value = shelf.get_item_at_position(described["position"])
            assert str_to_int8(oid) == described["oid"]
            assert len(value) + 8 == described["length_field"]
            record_oid, data, refs = unpack_record(value)
            assert record_oid == oid and len(data) == described["data_length"]
            assert [str_to_int8(refs[i : i + 8]) for i in range(0, len(refs), 8)] == described[
                "refs"
            ]
            class_pickle_end = described["class_pickle_length"]
            stored_state = data[class_pickle_end:]
            assert len(stored_state) == described["stored_state_length"]
            if described["state_compressed"]:
                zlib.decompress(stored_state)
        for oid_text, position in entry["index"].items():
            oid = int8_to_str(int(oid_text))
            assert shelf.get_position(oid) == position
            assert oid in shelf
            assert shelf.get_value(oid) == shelf.get_item_at_position(position)[1]
    finally:
        shelf.close()


@pytest.mark.parametrize("name", SHELF_VECTORS)
def test_vector_next_names(name: str) -> None:
    shelf = open_vector(name)
    try:
        names = [str_to_int8(shelf.next_name()) for _ in range(5)]
    finally:
        shelf.close()
    assert names == EXPECTED[name]["first_five_new_oids"]


def test_record_files_match_shelf_a_records() -> None:
    shelf = open_vector("shelf_a.durus")
    try:
        for path in sorted(DATA.glob("record_oid*.bin")):
            if "uncompressed" in path.name:
                continue
            oid = int8_to_str(EXPECTED[path.name]["oid"])
            assert shelf.get_value(oid) == path.read_bytes()
    finally:
        shelf.close()
    shelf = open_vector("shelf_uncompressed.durus")
    try:
        assert (
            shelf.get_value(int8_to_str(0))
            == (DATA / "record_oid0_root_uncompressed.bin").read_bytes()
        )
        assert (
            shelf.get_value(int8_to_str(1))
            == (DATA / "record_oid1_Pair_uncompressed.bin").read_bytes()
        )
    finally:
        shelf.close()


def test_generate_shelf_reproduces_the_packed_vectors(tmp_path: Path) -> None:
    for source, packed in [
        ("shelf_b_packed.durus", "shelf_b_packed.durus"),
        ("shelf_c_packed.durus", "shelf_c_packed.durus"),
    ]:
        shelf = open_vector(source)
        items = [
            shelf.get_item_at_position(p) for _n, p in sorted(shelf.iterindex(), key=lambda x: x[1])
        ]
        shelf.close()
        target = File(str(tmp_path / ("new-" + packed)))
        progress = list(Shelf.generate_shelf(target, items))
        assert progress == list(range(1, len(items) + 1))
        target.close()
        assert (tmp_path / ("new-" + packed)).read_bytes() == (DATA / packed).read_bytes()


def test_offset_map_building() -> None:
    assert build_offset_map(16, {}) == EMPTY_SHELF[16:]
    c_map = (DATA / "shelf_c_packed.durus").read_bytes()[348:]
    assert build_offset_map(348, {0: 16, 2: 221}) == c_map
    assert bytes_per_word(16) == 1 and bytes_per_word(352) == 2 and bytes_per_word(254) == 1
    assert bytes_per_word(255) == 2
    # holes 2, 5, 7 and the spare 11 are walked 7, 5, 2, 11
    positions = {oid: 16 + oid for oid in range(11) if oid not in (2, 5, 7)}
    encoded = build_offset_map(100, positions)
    offset_map = OffsetMap(io.BytesIO(b"\0" * 100 + encoded), 100, 1, 12)
    assert list(offset_map.gen_holes()) == [7, 5, 2, 11]
    assert dict(offset_map.iteritems()) == positions
    assert offset_map.get(2) is None and offset_map.get(3) == 19 and offset_map.get(99) is None


def test_new_shelf_and_store(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    shelf = Shelf(path)
    assert (tmp_path / "s").read_bytes() == EMPTY_SHELF
    a, b = int8_to_str(0), int8_to_str(1)
    changes = shelf.store([(a, b"first"), (b, b"second")])
    assert changes == [(a, None, 48), (b, None, 69)]
    changes = shelf.store([(a, b"third")])
    assert changes == [(a, 48, 99)]
    assert shelf.get_value(a) == b"third" and shelf.get_value(b) == b"second"
    assert shelf.get_value(int8_to_str(5)) is None
    assert dict(shelf.iteritems()) == {a: b"third", b: b"second"}
    assert list(shelf) == [a, b]
    with pytest.raises(ValueError, match="8 bytes"):
        shelf.get_position(b"short")
    with pytest.raises(ValueError, match="8 bytes"):
        shelf.store([(b"bad", b"x")])
    shelf.close()
    again = Shelf(path, readonly=True)
    assert dict(again.items()) == {a: b"third", b: b"second"}
    again.close()
    with pytest.raises(ValueError):
        Shelf(path, items=[(a, b"x")])


def test_store_that_fails_while_iterating_writes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    shelf = Shelf(path)

    def pairs() -> Any:
        yield int8_to_str(0), b"value"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        shelf.store(pairs())
    assert (tmp_path / "s").read_bytes() == EMPTY_SHELF
    assert shelf.get_position(int8_to_str(0)) is None
    shelf.close()


def test_next_name_never_repeats_and_skips_stored(tmp_path: Path) -> None:
    shelf = Shelf(str(tmp_path / "s"))
    shelf.store([(int8_to_str(1), b"x")])
    names = [str_to_int8(shelf.next_name()) for _ in range(4)]
    assert names == [0, 2, 3, 4]
    shelf.close()


def test_has_format_and_items_on_new_shelf(tmp_path: Path) -> None:
    assert Shelf.has_format(io.BytesIO(EMPTY_SHELF))
    assert not Shelf.has_format(io.BytesIO(b"DFS20\0"))
    shelf = Shelf(str(tmp_path / "s"), items=[(int8_to_str(3), b"three")])
    assert shelf.get_value(int8_to_str(3)) == b"three"
    assert [str_to_int8(shelf.next_name()) for _ in range(4)] == [2, 1, 0, 4]
    shelf.close()
    assert Shelf.prefix == b"SHELF-1\n"


def test_read_only_file_like_object() -> None:
    shelf = Shelf(io.BytesIO((DATA / "shelf_c_multi.durus").read_bytes()), readonly=True)
    assert {str_to_int8(n): p for n, p in shelf.iterindex()} == {0: 976, 1: 390, 2: 1181}
    assert read_transaction_offsets(io.BytesIO((DATA / "shelf_c_multi.durus").read_bytes()))


@pytest.mark.parametrize(
    "content",
    [b"", b"SHELF-1", b"SHELF-1\n\0\0", EMPTY_SHELF[:30], b"DFS20\0" + b"\0" * 40, b"x" * 100],
)
def test_not_a_shelf_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(NotAShelfError) as info:
        Shelf(str(path), readonly=True)
    error = info.value
    assert isinstance(error, AssertionError) and isinstance(error, DurusError)
    assert str(path) in str(error) and "SHELF-1" in str(error)


def test_bad_offset_map_header(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(EMPTY_SHELF[:24] + int8_to_str(9) + int8_to_str(0))
    with pytest.raises(FileFormatError, match="offset map"):
        Shelf(str(path), readonly=True)


# --- scanning: torn tails versus damage --------------------------------------------

C_MULTI = (DATA / "shelf_c_multi.durus").read_bytes()
C_T4 = 968  # the last transaction of shelf_c_multi
C_T3 = 607


def scan(content: bytes) -> Any:
    return scan_transactions(io.BytesIO(content), 40, check_names=True)


def test_scan_clean_file() -> None:
    result = scan(C_MULTI)
    assert result.good_end == len(C_MULTI) and not result.torn_tail and result.damage is None


@pytest.mark.parametrize("cut", [971, 976, 980, 1000, 1185, 1200, 1300])
def test_scan_cut_final_transaction_is_a_torn_tail(cut: int) -> None:
    result = scan(C_MULTI[:cut])
    assert result.torn_tail and result.damage is None and result.good_end == C_T4
    assert str_to_int8(b"\0" * 7 + b"\2") not in result.index or result.index[int8_to_str(2)] == 851


def test_scan_unpatched_placeholder_is_a_torn_tail() -> None:
    content = C_MULTI[:C_T4] + int8_to_str(0) + C_MULTI[C_T4 + 8 :]
    result = scan(content)
    assert result.torn_tail and result.good_end == C_T4
    # ... also when sectors of the records were lost (read as zeros)
    lost = bytearray(content)
    lost[1024:1308] = bytes(284)
    result = scan(bytes(lost))
    assert result.torn_tail and result.good_end == C_T4
    # a placeholder and nothing else is a valid empty transaction
    result = scan(C_MULTI[:C_T4] + int8_to_str(0))
    assert not result.torn_tail and result.good_end == C_T4 + 8


def test_scan_bad_length_in_the_middle_is_damage() -> None:
    for bad_length in (100, 10_000, 2**63):
        content = C_MULTI[:C_T3] + int8_to_str(bad_length) + C_MULTI[C_T3 + 8 :]
        result = scan(content)
        assert result.damage is not None and result.damage_offset == C_T3, bad_length
        assert "607" in str(result.damage)


def test_scan_name_differing_from_record_oid_is_damage() -> None:
    content = bytearray(C_MULTI)
    content[615 + 8 + 7] = 9  # the name of the root record in T3
    result = scan(bytes(content))
    assert result.damage is not None and result.damage_offset == C_T3
    assert "name and record oid differ" in str(result.damage)
    plain = scan_transactions(io.BytesIO(bytes(content)), 40, check_names=False)
    assert plain.damage is None


def test_scan_damage_after_an_empty_transaction_followed_by_good_data() -> None:
    t3 = C_MULTI[C_T3:C_T4]
    bad_t3 = int8_to_str(len(t3) - 8) + t3[8:20] + b"\xff" * 8 + t3[28:]
    content = C_MULTI[:C_T3] + int8_to_str(0) + bad_t3 + C_MULTI[C_T4:]
    result = scan(content)
    assert result.damage is not None and result.damage_offset == C_T3 + 8


def test_open_drops_torn_tail_with_warning(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "c"
    path.write_bytes(C_MULTI[:1200])
    with caplog.at_level(logging.WARNING, logger="durus"):
        reader = Shelf(str(path), readonly=True, check_record_names=True)
    assert path.read_bytes() == C_MULTI[:1200]  # read-only never modifies
    assert reader.get_position(int8_to_str(2)) == 851
    reader.close()
    assert any("unfinished final transaction" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    writer = Shelf(str(path), check_record_names=True)
    assert path.read_bytes() == C_MULTI[:C_T4]
    writer.store([(int8_to_str(0), C_MULTI[992:1181]), (int8_to_str(2), C_MULTI[1197:1308])])
    writer.close()
    assert path.read_bytes() == C_MULTI


def test_open_damage_fails_closes_and_repair_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_bytes(C_MULTI[:C_T3] + int8_to_str(100) + C_MULTI[C_T3 + 8 :])
    with pytest.raises(FileFormatError) as info:
        Shelf(str(path), check_record_names=True)
    assert info.value.offset == C_T3 and str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, DurusError)
    # the failed open released its lock, and read-only repair leaves the file alone
    reader = Shelf(str(path), readonly=True, repair=True, check_record_names=True)
    assert len(path.read_bytes()) == len(C_MULTI)
    reader.close()
    repaired = Shelf(str(path), repair=True, check_record_names=True)
    assert repaired.get_position(int8_to_str(0)) == 154
    repaired.close()
    assert path.read_bytes() == C_MULTI[:C_T3]


def test_padding_keeps_length_fields_inside_a_sector() -> None:
    assert not needs_padding(504) and needs_padding(505) and needs_padding(511)
    assert not needs_padding(512) and not needs_padding(40)


def test_fsync_store_pads_across_sector_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "s"
    shelf = Shelf(str(path), fsync=True)
    name = int8_to_str(0)
    # 40 + 8 + 16 + v = 507 puts the next transaction's length field across 512
    shelf.store([(name, b"v" * (507 - 40 - 8 - 16))])
    assert shelf.end_offset == 507
    changes = shelf.store([(name, b"w")])
    assert changes == [(name, 48, 507 + 8 + 8)]
    shelf.close()
    content = path.read_bytes()
    assert content[507:515] == bytes(8)  # the empty padding transaction
    assert str_to_int8(content[515:523]) == 17
    again = Shelf(str(path), readonly=True)
    assert again.get_value(name) == b"w"
    again.close()
    unsynced = tmp_path / "u"
    shelf = Shelf(str(unsynced), fsync=False)
    shelf.store([(name, b"v" * (507 - 40 - 8 - 16))])
    shelf.store([(name, b"w")])
    shelf.close()
    assert unsynced.read_bytes() == content[:507] + content[515:]


@pytest.mark.parametrize("transaction", [40, 146, C_T3])
def test_scan_zeroed_length_in_the_middle_is_damage(transaction: int) -> None:
    content = C_MULTI[:transaction] + int8_to_str(0) + C_MULTI[transaction + 8 :]
    result = scan(content)
    assert result.damage is not None and result.damage_offset == transaction
    assert not result.torn_tail


def test_scan_wiped_transaction_header_in_the_middle_is_damage() -> None:
    # the length of T2 and the length of its first record both read 0
    content = C_MULTI[:146] + bytes(16) + C_MULTI[162:]
    result = scan(content)
    assert result.damage is not None and result.damage_offset == 146


def test_scan_lengths_claiming_past_the_end_in_the_middle_is_damage() -> None:
    content = bytearray(C_MULTI)
    content[146] = 0x01  # T2 claims 2**56 more bytes ...
    content[154] = 0x01  # ... and so does its first record
    result = scan(bytes(content))
    assert result.damage is not None and result.damage_offset == 146
    # the same damage in the final transaction is a cut final transaction
    content = bytearray(C_MULTI)
    content[C_T4] = 0x01
    content[C_T4 + 8] = 0x01
    result = scan(bytes(content))
    assert result.torn_tail and result.good_end == C_T4
