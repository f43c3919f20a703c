"""durus.error: the hierarchy and messages that never fail to render."""

from __future__ import annotations

import pytest

from durus.error import (
    ConflictError,
    DurusError,
    DurusKeyError,
    ProtocolError,
    ReadConflictError,
    RecordFormatError,
    StillConflictedError,
    WriteConflictError,
)

OID_5 = b"\x00" * 7 + b"\x05"


def test_hierarchy() -> None:
    assert issubclass(DurusKeyError, KeyError) and issubclass(DurusKeyError, DurusError)
    assert issubclass(WriteConflictError, ConflictError)
    assert issubclass(ReadConflictError, ConflictError)
    assert issubclass(ProtocolError, DurusError)
    assert issubclass(StillConflictedError, AssertionError)
    assert issubclass(RecordFormatError, ValueError)


def test_durus_key_error_renders_the_oid() -> None:
    err = DurusKeyError(OID_5)
    assert err.args == (OID_5,)
    assert str(err) == "5"
    assert str(DurusKeyError()) == "no such oid"


@pytest.mark.parametrize(
    ("oids", "text"),
    [
        (None, "conflicting oids not available"),
        ([], "oids=[]"),
        ([OID_5], "oids=[5]"),
        ([OID_5, b"\x00" * 8], "oids=[5 ...]"),
    ],
)
def test_conflict_error_messages(oids: list[bytes] | None, text: str) -> None:
    err = ReadConflictError(oids)
    assert str(err) == text
    assert err.oids == oids
    assert err.args == (oids,)


def test_still_conflicted_message() -> None:
    assert str(StillConflictedError()) == "still conflicted: missing abort()"
