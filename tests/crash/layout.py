"""An independent map of a well-formed SHELF-1 file's bytes, for aiming damage.

Owns nothing but a strict reading of FORMATS.md section 5 layout: where each
transaction and each record (and each record's fields) lies. The corruption
and truncation tests use it to pick which byte to flip or where to cut. It
never decides what a storage should do with damage, and never imports the
storage under test (so a bug there cannot hide a bug here).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = b"SHELF-1\n"
INT8_BYTES = 8


def _int8(content: bytes, offset: int) -> int:
    if offset + INT8_BYTES > len(content):
        raise ValueError(f"int8 at {offset} runs past the end ({len(content)} bytes)")
    return int.from_bytes(content[offset : offset + INT8_BYTES], "big")


@dataclass(frozen=True)
class RecordSpan:
    """One shelf record: ``int8 m | name | oid | int4 n | data | refs``."""

    position: int  # offset of the int8 m field
    oid: bytes
    end: int  # first byte after the record

    @property
    def name_offset(self) -> int:
        return self.position + INT8_BYTES

    @property
    def record_offset(self) -> int:
        """Where the object record (starting with the oid again) begins."""
        return self.position + 2 * INT8_BYTES

    @property
    def data_offset(self) -> int:
        return self.record_offset + INT8_BYTES + 4


@dataclass(frozen=True)
class TransactionSpan:
    start: int  # offset of the int8 length field
    end: int
    records: tuple[RecordSpan, ...]


@dataclass(frozen=True)
class ShelfLayout:
    map_start: int  # S
    first_transaction: int  # where commits begin (after the offset map)
    initial: TransactionSpan
    transactions: tuple[TransactionSpan, ...]


def _transaction_at(content: bytes, start: int) -> TransactionSpan:
    end = start + INT8_BYTES + _int8(content, start)
    if end > len(content):
        raise ValueError(f"transaction at {start} ends at {end}, past the end")
    records = []
    position = start + INT8_BYTES
    while position < end:
        record_end = position + INT8_BYTES + _int8(content, position)
        oid = content[position + INT8_BYTES : position + 2 * INT8_BYTES]
        if record_end > end or content[position + 16 : position + 24] != oid:
            raise ValueError(f"malformed record at {position}")
        records.append(RecordSpan(position, oid, record_end))
        position = record_end
    assert position == end
    return TransactionSpan(start, end, tuple(records))


def read_layout(content: bytes) -> ShelfLayout:
    """The layout of a complete, undamaged SHELF-1 file; ValueError otherwise."""
    if not content.startswith(PREFIX):
        raise ValueError("no SHELF-1 prefix")
    initial = _transaction_at(content, len(PREFIX))
    map_start = initial.end
    map_end = map_start + INT8_BYTES + _int8(content, map_start)
    transactions = []
    position = map_end
    while position < len(content):
        transaction = _transaction_at(content, position)
        transactions.append(transaction)
        position = transaction.end
    layout = ShelfLayout(map_start, map_end, initial, tuple(transactions))
    assert position == len(content)
    return layout
