"""durus.record: the object record codec, checked against Durus 4.3's records."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durus.error import RecordFormatError
from durus.record import (
    MAX_DATA_BYTES,
    extract_class_name,
    pack_record,
    record_oid,
    record_refs,
    split_oids,
    unpack_record,
)
from durus.utils import int8_to_str
from tests.conftest import DATA_DIR

EXPECTED = json.loads((DATA_DIR / "expected.json").read_text())
RECORD_FILES = sorted(name for name in EXPECTED if name.startswith("record_"))

oids = st.integers(0, 2**64 - 1).map(int8_to_str)


@pytest.mark.parametrize("name", RECORD_FILES)
def test_vector_records_unpack_as_described(name: str) -> None:
    record = (DATA_DIR / name).read_bytes()
    facts = EXPECTED[name]
    oid, data, refs = unpack_record(record)
    assert int.from_bytes(oid, "big") == facts["oid"]
    assert len(data) == facts["data_length"]
    assert [int.from_bytes(r, "big") for r in split_oids(refs)] == facts["refs"]
    assert extract_class_name(record) == facts["class_name"].encode()
    assert pack_record(oid, data, refs) == record


@given(oids, st.binary(max_size=200), st.lists(oids, max_size=5))
def test_pack_unpack_round_trip(oid: bytes, data: bytes, ref_list: list[bytes]) -> None:
    refs = b"".join(ref_list)
    record = pack_record(oid, data, refs)
    assert unpack_record(record) == (oid, data, refs)
    assert record_oid(record) == oid
    assert record_refs(record) == ref_list


@given(st.binary(max_size=64))
def test_unpack_arbitrary_bytes_never_raises_anything_else(raw: bytes) -> None:
    try:
        oid, data, refs = unpack_record(raw)
    except RecordFormatError:
        return
    assert len(oid) == 8 and len(refs) % 8 == 0


def test_malformed_records_are_explicit_errors() -> None:
    with pytest.raises(RecordFormatError, match="shorter than its header"):
        unpack_record(b"\x00" * 11)
    with pytest.raises(RecordFormatError, match="overruns"):
        unpack_record(b"\x00" * 8 + b"\x00\x00\x00\x09" + b"abc")
    with pytest.raises(RecordFormatError, match="multiple of 8"):
        unpack_record(b"\x00" * 8 + b"\x00\x00\x00\x00" + b"abc")
    with pytest.raises(ValueError):
        pack_record(b"short", b"", b"")


def test_split_oids() -> None:
    assert split_oids(b"") == [] and split_oids("") == []
    assert split_oids(b"\x00" * 16) == [b"\x00" * 8, b"\x00" * 8]
    with pytest.raises(AssertionError):  # compatible with Durus 4.3's assert
        split_oids(b"\x00" * 9)


def test_extract_class_name_failure_is_bytes() -> None:
    assert extract_class_name(pack_record(b"\x00" * 8, b"no newline", b"")) == b"?"
    assert extract_class_name(b"junk") == b"?"


class _ClaimsHugeLength(bytes):
    """Bytes that report a length beyond the int4 field, without allocating it."""

    def __len__(self) -> int:
        return MAX_DATA_BYTES + 1


def test_pack_record_rejects_bad_refs_and_oversized_data() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_record(b"\x00" * 8, b"", b"\x00" * 7)
    with pytest.raises(ValueError, match="4 GiB"):
        pack_record(b"\x00" * 8, _ClaimsHugeLength(), b"")
