"""durus.error: messages for oids that are not 8 bytes still render.

An application may catch a DurusKeyError or ConflictError built from a bad
oid (a str, a short bytes value, None inside the list): printing it must show
that value as it is, never fail.
"""

from __future__ import annotations

import pytest

from durus.error import DurusKeyError, RecordFormatError, WriteConflictError


@pytest.mark.parametrize("oid", [b"\x05", "5", 5, None, bytearray(3)])
def test_key_error_shows_an_oid_that_is_not_8_bytes_by_its_repr(oid: object) -> None:
    assert str(DurusKeyError(oid)) == repr(oid)


def test_key_error_of_an_8_byte_bytearray_is_decimal() -> None:
    assert str(DurusKeyError(bytearray(b"\x00" * 6 + b"\x01\x00"))) == "256"


def test_conflict_error_with_odd_oids_renders_them_by_repr() -> None:
    err = WriteConflictError([b"\x01\x02"])
    assert str(err) == "oids=[b'\\x01\\x02']"
    err = WriteConflictError(iter([None, b"\x00" * 8]))  # type: ignore[arg-type]
    assert str(err) == "oids=[None ...]" and err.oids == [None, b"\x00" * 8]


def test_record_format_error_is_caught_as_value_error_with_its_message() -> None:
    with pytest.raises(ValueError, match="bad record"):
        raise RecordFormatError("bad record")
