"""The object record: the unit every storage stores and the server sends.

Owns the byte layout ``oid (8) | int4 len(data) | data | refs (8 * k)``
(FORMATS.md section 2). Pure functions on bytes: no pickling, no I/O. Bytes
that come from outside are checked with explicit errors; assertions state
what our own code guarantees.
"""

from __future__ import annotations

from durus.error import RecordFormatError
from durus.utils import OID_SIZE_BYTES, check_oid, int4_to_str, str_to_int4

RECORD_HEADER_BYTES = OID_SIZE_BYTES + 4
MAX_DATA_BYTES = 0xFFFFFFFF


def pack_record(oid: bytes, data: bytes, refs: bytes) -> bytes:
    """``oid + int4(len(data)) + data + refs``; ValueError for a bad oid or refs.

    raises: ValueError
    post: len(__return__) == RECORD_HEADER_BYTES + len(data) + len(refs)
    post: unpack_record(__return__) == (oid, data, refs)
    """
    if len(oid) != OID_SIZE_BYTES:
        raise ValueError(f"an oid must be 8 bytes, got {len(oid)}")
    if len(refs) % OID_SIZE_BYTES:
        raise ValueError(f"refs length {len(refs)} is not a multiple of 8")
    if len(data) > MAX_DATA_BYTES:
        raise ValueError(f"record data of {len(data)} bytes exceeds the 4 GiB limit")
    record = b"".join((oid, int4_to_str(len(data)), data, refs))
    assert len(record) == RECORD_HEADER_BYTES + len(data) + len(refs)
    return record


def unpack_record(record: bytes) -> tuple[bytes, bytes, bytes]:
    """``(oid, data, refs)`` of a record; RecordFormatError when malformed.

    raises: RecordFormatError
    post: pack_record(*__return__) == record
    """
    if len(record) < RECORD_HEADER_BYTES:
        raise RecordFormatError(f"record of {len(record)} bytes is shorter than its header")
    oid = record[:OID_SIZE_BYTES]
    data_end = RECORD_HEADER_BYTES + str_to_int4(record[OID_SIZE_BYTES:RECORD_HEADER_BYTES])
    if data_end > len(record):
        raise RecordFormatError(
            f"record data length overruns the record ({data_end} > {len(record)} bytes)"
        )
    refs = record[data_end:]
    if len(refs) % OID_SIZE_BYTES:
        raise RecordFormatError(f"record refs length {len(refs)} is not a multiple of 8")
    data = record[RECORD_HEADER_BYTES:data_end]
    assert len(oid) + 4 + len(data) + len(refs) == len(record)
    return oid, data, refs


def split_oids(s: bytes | str) -> list[bytes]:
    """The 8-byte oids concatenated in ``s``; RecordFormatError for a ragged length.

    A str (Durus 4.3 accepted one) is taken as latin-1 bytes; a str that is
    not latin-1 is a RecordFormatError too.

    raises: RecordFormatError
    post: all(len(oid) == OID_SIZE_BYTES for oid in __return__)
    post: b"".join(__return__) == (s.encode("latin1") if isinstance(s, str) else s)
    """
    if not s:
        return []
    if isinstance(s, str):
        try:
            s = s.encode("latin1")
        except UnicodeEncodeError as error:
            raise RecordFormatError(f"an oid list str must be latin-1 bytes: {error}") from None
    if len(s) % OID_SIZE_BYTES:
        raise RecordFormatError(f"oid list length {len(s)} is not a multiple of 8")
    oids = [s[i : i + OID_SIZE_BYTES] for i in range(0, len(s), OID_SIZE_BYTES)]
    assert b"".join(oids) == s
    return oids


def record_oid(record: bytes) -> bytes:
    """The oid a record begins with.

    raises: RecordFormatError
    post: len(__return__) == OID_SIZE_BYTES and record.startswith(__return__)
    """
    if len(record) < RECORD_HEADER_BYTES:
        raise RecordFormatError(f"record of {len(record)} bytes is shorter than its header")
    return record[:OID_SIZE_BYTES]


def record_refs(record: bytes) -> list[bytes]:
    """The oids a record refers to.

    raises: RecordFormatError
    post: b"".join(__return__) == unpack_record(record)[2]
    """
    return split_oids(unpack_record(record)[2])


def extract_class_name(record: bytes) -> bytes:
    """The class name between the first two newlines of the data, e.g. ``b'BNode16'``.

    Returns ``b'?'`` when the record has no such name (Durus 4.3 returned the
    str ``'?'`` there, so a bytes filter could never match it). The name never
    holds a newline (byte 10).

    post: isinstance(__return__, bytes) and 10 not in __return__
    """
    try:
        data = unpack_record(record)[1]
    except RecordFormatError:
        return b"?"
    parts = data.split(b"\n", 2)
    if len(parts) < 3:
        return b"?"
    return parts[1]


# ---------------------------------------------------------------------------
# The row form: a record kept as an SQL row (SQLite, PostgreSQL)

MAX_ROW_OID = (1 << 63) - 1  # SQL integers are signed 64-bit


def oid_to_row_id(oid: bytes) -> int:
    """The SQL integer of an 8-byte oid; ValueError beyond the signed 64-bit range."""
    number = int.from_bytes(check_oid(oid), "big")
    if number > MAX_ROW_OID:
        raise ValueError(
            f"oid {number} is beyond the signed 64-bit range of SQL integers"
            " (SQLite INTEGER, PostgreSQL bigint)"
        )
    return number


def row_to_record(row_id: int, data: object, refs: object) -> bytes:
    """The record rebuilt from an ``(id, data, refs)`` row; RecordFormatError if malformed."""
    if not isinstance(row_id, int) or not 0 <= row_id <= MAX_ROW_OID:
        raise RecordFormatError(f"row id {row_id!r} is not an oid")
    if not isinstance(data, bytes) or not isinstance(refs, (bytes, type(None))):
        raise RecordFormatError(f"row {row_id}: data and refs must be byte strings")
    try:
        record = pack_record(row_id.to_bytes(OID_SIZE_BYTES, "big"), data, refs or b"")
    except ValueError as error:
        raise RecordFormatError(f"row {row_id}: {error}") from None
    assert unpack_record(record)[1] == data
    return record


def record_to_row(oid: bytes, record: bytes) -> tuple[int, bytes, bytes]:
    """``(id, data, refs)`` of ``oid``'s record; ValueError when it is another oid's."""
    record_oid_bytes, data, refs = unpack_record(bytes(record))
    if record_oid_bytes != check_oid(oid):
        raise ValueError(f"record for oid {record_oid_bytes!r} stored under {oid!r}")
    row = (oid_to_row_id(oid), data, refs)
    assert pack_record(oid, data, refs) == record
    return row
