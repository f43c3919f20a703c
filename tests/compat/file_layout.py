"""Independent readers of the storage files, for explaining byte differences.

Owns a tiny SHELF-1 transaction walker (FORMATS.md 5.1-5.2) and an SQLite row
reader (FORMATS.md 7), written from the format documents and sharing no code
with ``durus``, so a byte mismatch between the implementations can be
reported as "transaction N holds these oids" rather than a raw offset.

Never writes a file and never trusts a length it reads: every length is
checked against the file size.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

SHELF_PREFIX = b"SHELF-1\n"


def _int8(data: bytes, offset: int) -> int:
    if offset + 8 > len(data):
        raise ValueError(f"int8 at {offset} runs past the end ({len(data)} bytes)")
    return int(struct.unpack(">Q", data[offset : offset + 8])[0])


def shelf_transactions(path: Path) -> list[list[tuple[int, bytes]]]:
    """The transactions after the offset map: for each, its (oid, object record) pairs."""
    data = path.read_bytes()
    if not data.startswith(SHELF_PREFIX):
        raise ValueError(f"{path} is not a SHELF-1 file")
    map_start = 16 + _int8(data, 8)
    position = map_start + 8 + _int8(data, map_start)
    transactions = []
    while position < len(data):
        end = position + 8 + _int8(data, position)
        if end > len(data):
            raise ValueError(f"transaction at {position} runs past the end")
        records, cursor = [], position + 8
        while cursor < end:
            length = _int8(data, cursor)
            records.append((_int8(data, cursor + 8), data[cursor + 16 : cursor + 8 + length]))
            cursor += 8 + length
        transactions.append(records)
        position = end
    return transactions


def first_byte_difference(left: Path, right: Path) -> int | None:
    a, b = left.read_bytes(), right.read_bytes()
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def explain_shelf_difference(left: Path, right: Path) -> str:
    """Which transaction differs first, and how (oid order, or which record's bytes)."""
    ours, theirs = shelf_transactions(left), shelf_transactions(right)
    for number, (mine, other) in enumerate(zip(ours, theirs, strict=False)):
        if mine == other:
            continue
        mine_oids, other_oids = [oid for oid, _ in mine], [oid for oid, _ in other]
        if mine_oids != other_oids:
            return (
                f"transaction {number} stores oids {mine_oids[:30]} (left) vs "
                f"{other_oids[:30]} (right)"
            )
        changed = [oid for (oid, r1), (_, r2) in zip(mine, other, strict=False) if r1 != r2]
        return f"transaction {number}: records of oids {changed[:20]} differ"
    return f"{len(ours)} vs {len(theirs)} transactions, or the initial part differs"


def sqlite_rows(path: Path) -> list[tuple[int, bytes, bytes]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT id, data, refs FROM objects ORDER BY id").fetchall()
    finally:
        connection.close()
    return [(int(oid), bytes(data), bytes(refs)) for oid, data, refs in rows]
