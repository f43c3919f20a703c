"""SHELF-1: the byte format of FileStorage files, read and written through ``durus.file``.

Owns the layout of FORMATS.md section 5: the prefix, the initial transaction, the
on-disk offset map (``OffsetMap``), appended transactions, the memory index built
by scanning them, the order in which unused names are handed out, and the
all-or-nothing append protocol of a commit. It moves bytes only: it never
imports ``persistent``, ``connection`` or ``pickle``, and it calls no ``os``
function on storage files (``durus.file`` does).

Commit ordering (``Shelf.store`` with ``fsync=True``), and why it is safe
-------------------------------------------------------------------------
Fault model: a crash keeps every fsynced byte and any subset of the writes since
the last fsync, each torn at 512-byte sector boundaries (lost sectors read as
zeros, or the file is shorter). The append of transaction T at offset p is:

1. one write at p: ``int8 0`` (a placeholder length) followed by every record;
2. fsync;
3. one write of the real 8-byte length over the placeholder;
4. fsync. Only now does ``store`` return.

Before step 2 completes, the file holds the earlier, durable transactions and
then bytes that start with a zero length field (or end early): on open that is
a zero-length transaction followed by a tail that does not parse, which is
recognised as an unfinished final transaction and dropped (``scan_transactions``).
After step 2 every record byte is durable; the only byte range still in doubt is
the length field. It never straddles a 512-byte boundary (when it would, an
empty transaction, 8 zero bytes that Durus 4.3 reads as a valid empty
transaction, is written first in the same write, moving the field past the
boundary), so a crash leaves it either all 0 (T is dropped as above: it was
never acknowledged) or all the real length (T is complete). Hence a crash at
any moment leaves T entirely or not at all, and after step 4 T is durable.
Two fsyncs are the minimum without a checksum in the format: with a single
fsync, a persisted length beside a lost (zeroed) sector inside a record body
would read as a valid transaction holding wrong bytes.

With ``fsync=False`` (Durus 4.3's behaviour) the transaction, with its real
length, is written with one write and never fsynced.

Damage found on open (``scan_transactions``)
--------------------------------------------
Records are checked as they are indexed: each lies inside its transaction and
the file, and (for FileStorage) its name equals its record's oid and its data
length fits. The first transaction that fails is a *torn tail* (dropped with a
warning; truncated only by a writable open) when it runs into the end of the
file with intact bytes before that, or when it follows a zero-length
transaction (an unpatched placeholder), and in both cases no valid transaction
with records can be found after the last intact record that runs exactly to the
end of the file (``_valid_data_follows``). Anything else is *damage*:
``FileFormatError`` naming the file and offset, unless ``repair``. After an
unpatched placeholder, the search skips the claimed extent of an intact record
header that runs past the end of the file (``_record_runs_past_end``): that is
the record the commit was writing, and its own data may hold bytes that look
like transactions (a stored database file, a backup). Where that header itself
was lost (a zeroed sector) the bytes are the same as a wiped header in the
middle of the log followed by valid data, and the search errs on the side of
reporting: damage (an explicit error, repairable), never silent loss.

The sidecar index
-----------------
``<file>.shelf-index`` holds the memory index as a dense array of positions,
the end of the data it covers, and a digest of the data file's first and last
4 KiB below that end plus a digest of itself. It is used only when all of that
checks out; the transactions after the covered end are then scanned as usual.
It is written (to a temporary name, then renamed) when a writable shelf with at
least SIDECAR_MIN_ENTRIES appended records is closed, and removed by a pack.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from durus.error import DurusError
from durus.file import File, FileSystem, ReadOnlyFileError
from durus.utils import OID_SIZE_BYTES, int8_to_str, str_to_int8

__all__ = [
    "Shelf",
    "OffsetMap",
    "read_transaction_offsets",
    "FileFormatError",
    "NotAShelfError",
    "scan_transactions",
    "ScanResult",
    "build_offset_map",
    "EMPTY_SHELF",
]

logger = logging.getLogger("durus")

PREFIX = b"SHELF-1\n"
INT8_BYTES = 8
SECTOR_BYTES = 512
NAME_BYTES = OID_SIZE_BYTES
RECORD_HEADER_BYTES = OID_SIZE_BYTES + 4  # object record: oid + int4 data length
SCAN_CHUNK_BYTES = 1 << 20
READ_PEEK_BYTES = 4096
FAST_SCAN_MAX_BYTES = 16 << 20
EMPTY_TRANSACTION = int8_to_str(0)
EMPTY_SHELF = PREFIX + EMPTY_TRANSACTION + int8_to_str(16) + int8_to_str(1) + int8_to_str(0)
MAX_WORD_BYTES = 8

_int8 = struct.Struct(">Q")
_record_header = struct.Struct(">Q8s8sI")  # m, name, record oid, int4 data length


class FileFormatError(DurusError, ValueError):
    """A storage file's bytes are damaged or not in the expected format.

    The message names the file and the byte offset of the damage.
    """

    def __init__(self, message: str, filename: str | None = None, offset: int | None = None):
        DurusError.__init__(self, message)
        self.filename = filename
        self.offset = offset


class NotAShelfError(FileFormatError, AssertionError):
    """The file does not start with a SHELF-1 header.

    Also an AssertionError because Durus 4.3 asserted the prefix.
    """


def _describe(file: Any) -> str:
    """The file as an error message names it: its name, else the caller's object."""
    name = getattr(file, "name", None) or getattr(file, "get_name", lambda: None)()
    if name:
        return repr(name)
    return repr(file.fileobj) if isinstance(file, _FileLikeReader) else repr(file)


# ---------------------------------------------------------------------------
# Pure encoders (no I/O)


def encode_record(name: bytes, value: bytes) -> bytes:
    """``int8 m | name | value`` with ``m = 8 + len(value)``."""
    encoded = b"".join((_int8.pack(NAME_BYTES + len(value)), name, value))
    assert len(encoded) == INT8_BYTES + NAME_BYTES + len(value)
    return encoded


def encode_transaction_body(items: list[tuple[bytes, bytes]]) -> tuple[bytes, list[int]]:
    """The records of a transaction back to back, and each record's offset in them."""
    parts = []
    offsets = []
    offset = 0
    for name, value in items:
        record = encode_record(name, value)
        offsets.append(offset)
        parts.append(record)
        offset += len(record)
    body = b"".join(parts)
    assert len(body) == offset
    return body, offsets


def needs_padding(transaction_offset: int) -> bool:
    """True when an 8-byte length field at this offset would straddle a sector boundary."""
    return transaction_offset % SECTOR_BYTES > SECTOR_BYTES - INT8_BYTES


def bytes_per_word(maximum_int: int) -> int:
    """Bytes needed for ``maximum_int + 1`` (the blank must exceed every stored value)."""
    return max(1, ((maximum_int + 1).bit_length() + 7) // 8)


def build_offset_map(start: int, positions: dict[int, int]) -> bytes:
    """The offset map at ``start`` for records at ``positions`` (oid -> position).

    FORMATS.md 5.3: n = max_oid + 2 words (0 when empty); holes stitched into a
    chain that is walked in descending order, ending at the spare slot n - 1.
    """
    max_oid = max(positions) if positions else -2
    n = max_oid + 2
    bpw = bytes_per_word(start + max_oid + 2)
    words = [-1] * n
    for oid, position in positions.items():
        assert 0 <= position < start
        words[oid] = position
    last = n - 1
    for index in range(n):
        if words[index] < 0:
            words[index] = last + start
            last = index
    assert all(0 <= word < start + n for word in words)
    body = b"".join(word.to_bytes(bpw, "big") for word in words)
    encoded = _int8.pack(16 + bpw * n) + _int8.pack(bpw) + _int8.pack(n) + body
    assert len(encoded) == 24 + bpw * n
    return encoded


# ---------------------------------------------------------------------------
# Reading helpers


class _Window:
    """Reads a file through one cached chunk, so scanning costs few system calls."""

    def __init__(self, file: Any, end: int, chunk_bytes: int = SCAN_CHUNK_BYTES) -> None:
        self.file = file
        self.end = end
        self.chunk_bytes = chunk_bytes
        self.base = 0
        self.data = b""

    def get(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only past ``end``)."""
        local = offset - self.base
        if 0 <= local and local + size <= len(self.data):
            return self.data[local : local + size]
        want = min(max(size, self.chunk_bytes), max(0, self.end - offset))
        self.base = offset
        self.data = _read_at(self.file, offset, want) if want else b""
        return self.data[:size]


def _read_at(file: Any, offset: int, size: int) -> bytes:
    data: bytes
    if hasattr(file, "read_at"):
        data = file.read_at(offset, size)
        return data
    file.seek(offset)
    data = file.read(size)
    return data


def _file_size(file: Any) -> int:
    size: int
    if hasattr(file, "size"):
        size = file.size()
        return size
    file.seek(0, 2)
    size = file.tell()
    return size


# ---------------------------------------------------------------------------
# Scanning transactions


class _Defect(Exception):
    """Where and why a transaction failed to parse; ``short`` means it ran into EOF."""

    def __init__(self, offset: int, reason: str, short: bool, claimed_end: int) -> None:
        Exception.__init__(self, reason)
        self.offset = offset
        self.reason = reason
        self.short = short
        self.claimed_end = claimed_end


class ScanResult:
    """What scanning the appended transactions found.

    A plain slotted class rather than a dataclass: importing ``dataclasses``
    (and the ``inspect`` it pulls in) costs every process that opens a file.
    """

    __slots__ = ("index", "good_end", "file_end", "torn_tail", "damage", "damage_offset")

    def __init__(self, file_end: int = 0) -> None:
        self.index: dict[bytes, int] = {}
        self.good_end = 0  # end of the last transaction to keep
        self.file_end = file_end  # size of the file when scanned
        self.torn_tail = False  # the bytes after good_end are an unfinished final transaction
        self.damage: FileFormatError | None = None  # damage that is not a torn tail
        self.damage_offset: int | None = None  # start of the damaged transaction


def _parse_records(
    window: _Window, start: int, end: int, file_end: int, check_names: bool
) -> list[tuple[bytes, int]]:
    """``(name, position)`` of the records in ``[start, end)``; raises _Defect."""
    if end <= file_end and end - start <= FAST_SCAN_MAX_BYTES:
        window.get(start, end - start)
        fast = _parse_records_in_buffer(window.data, window.base, start, end, check_names)
        if fast is not None:
            return fast
    found = []
    position = start
    short_end = end > file_end
    while position < end:
        header = window.get(position, _record_header.size)
        if len(header) < INT8_BYTES + NAME_BYTES:
            raise _Defect(position, "record header cut short", short_end, end)
        m = _int8.unpack_from(header)[0]
        name = header[INT8_BYTES : INT8_BYTES + NAME_BYTES]
        record_end = position + INT8_BYTES + m
        if m < NAME_BYTES:
            raise _Defect(position, f"record length {m} is too small", False, end)
        if record_end > end:
            raise _Defect(position, "record runs past its transaction's end", False, end)
        if check_names:
            _check_record_header(header, position, m, record_end > file_end)
        if record_end > file_end:
            raise _Defect(position, "record runs past the end of the file", True, end)
        found.append((name, position))
        position = record_end
    assert position == end
    return found


def _parse_records_in_buffer(
    buffer: bytes, base: int, start: int, end: int, check_names: bool
) -> list[tuple[bytes, int]] | None:
    """The fast path of _parse_records for well-formed records held in ``buffer``.

    Returns None at the first irregularity; the careful path then says what it is.
    """
    found = []
    unpack = _record_header.unpack_from
    minimum = NAME_BYTES + RECORD_HEADER_BYTES
    limit = len(buffer) - _record_header.size
    position = start
    while position < end:
        local = position - base
        if local < 0 or local > limit:
            return None
        m, name, record_oid, data_bytes = unpack(buffer, local)
        refs_bytes = m - minimum - data_bytes
        if m < minimum or position + INT8_BYTES + m > end:
            return None
        if check_names and (record_oid != name or refs_bytes < 0 or refs_bytes % 8):
            return None
        found.append((name, position))
        position += INT8_BYTES + m
    return found


def _check_record_header(header: bytes, position: int, m: int, cut: bool) -> None:
    """The object record must begin with the shelf name and fit its length."""
    if len(header) < _record_header.size:
        raise _Defect(position, "object record header cut short", cut, 0)
    _m, name, record_oid, data_bytes = _record_header.unpack(header)
    if record_oid != name:
        raise _Defect(position, "record name and record oid differ", False, 0)
    refs_bytes = m - NAME_BYTES - RECORD_HEADER_BYTES - data_bytes
    if refs_bytes < 0 or refs_bytes % OID_SIZE_BYTES:
        raise _Defect(position, "object record data length does not fit the record", False, 0)


def _parse_transaction(
    window: _Window, start: int, file_end: int, check_names: bool
) -> tuple[list[tuple[bytes, int]], int]:
    """The records of the transaction at ``start`` and its end; raises _Defect."""
    length_field = window.get(start, INT8_BYTES)
    if len(length_field) < INT8_BYTES:
        raise _Defect(start, "transaction length field cut short", True, file_end)
    end = start + INT8_BYTES + _int8.unpack(length_field)[0]
    try:
        records = _parse_records(window, start + INT8_BYTES, end, file_end, check_names)
    except _Defect as defect:
        defect.claimed_end = end
        defect.short = defect.short and end > file_end
        raise
    return records, end


def _parses_to_end(window: _Window, start: int, file_end: int, check_names: bool) -> bool:
    """True when ``[start, file_end)`` holds one or more valid transactions with records."""
    position = start
    saw_records = False
    while position < file_end:
        length_field = window.get(position, INT8_BYTES)
        if len(length_field) < INT8_BYTES:
            return False
        if position + INT8_BYTES + _int8.unpack(length_field)[0] > file_end:
            return False  # cannot end exactly at the end of the file
        try:
            records, position = _parse_transaction(window, position, file_end, check_names)
        except _Defect:
            return False
        saw_records = saw_records or bool(records)
    return saw_records and position == file_end


def scan_transactions(
    file: Any, start: int, check_names: bool = False, file_end: int | None = None
) -> ScanResult:
    """Index the transactions from ``start`` to the end of the file.

    Classifies the first transaction that does not parse:
    - a torn tail (never acknowledged; dropped with a warning): it runs into the
      end of the file (length field or record cut short, records present are
      intact), or it follows a zero-length transaction (an unpatched
      placeholder) and nothing after it parses;
    - damage (reported, never silently cut): anything else.
    """
    file_end = _file_size(file) if file_end is None else file_end
    window = _Window(file, file_end)
    result = ScanResult(file_end=file_end)
    position = start
    zero_run_start: int | None = None
    while position < file_end:
        try:
            records, end = _parse_transaction(window, position, file_end, check_names)
        except _Defect as defect:
            _classify(result, window, defect, position, zero_run_start, check_names, file)
            return result
        if records:
            zero_run_start = None
            result.index.update(records)
        elif zero_run_start is None:
            zero_run_start = position
        position = end
    result.good_end = position
    assert result.good_end == file_end and not result.torn_tail
    return result


def _record_starts(window: _Window, start: int, file_end: int, check_names: bool) -> Iterator[int]:
    """The starts of a run of valid records from ``start`` (ignoring transactions),
    then the position where the run stops."""
    position = start
    while position < file_end:
        yield position
        header = window.get(position, _record_header.size)
        if len(header) < _record_header.size:
            return
        m = _int8.unpack_from(header)[0]
        if m < NAME_BYTES + RECORD_HEADER_BYTES or position + INT8_BYTES + m > file_end:
            return
        if check_names:
            try:
                _check_record_header(header, position, m, False)
            except _Defect:
                return
        position += INT8_BYTES + m
    yield position


def _record_run_end(window: _Window, start: int, file_end: int, check_names: bool) -> int:
    """Where a run of valid records starting at ``start`` (ignoring transactions) stops."""
    *_, end = _record_starts(window, start, file_end, check_names)
    assert start <= end
    return end


def _damage_after_placeholder(
    window: _Window, defect: _Defect, position: int, file_end: int, check_names: bool
) -> int | None:
    """Where the damage is, when what follows a zero-length transaction is not a torn tail.

    An unpatched placeholder is followed by the records of one transaction and
    then only by zeros or the end of the file. Two kinds of damage look alike at
    first but are followed by valid transactions: a zeroed length in the middle
    (its records, then the next transactions) and a bad length after a real
    empty transaction (the data after its claimed end).
    """
    # The transactions after a zeroed length start at one of its record boundaries
    # (with names checked, the run stops right there; without, it runs on through them).
    for boundary in _record_starts(window, position, file_end, check_names):
        if position < boundary < file_end and _parses_to_end(
            window, boundary, file_end, check_names
        ):
            return position - INT8_BYTES
    claimed_end = defect.claimed_end
    if position < claimed_end < file_end and _parses_to_end(
        window, claimed_end, file_end, check_names
    ):
        return position
    return None


# A record header: a length below 2**32 but not 0, then a name repeated as the record oid.
_RECORD_HEADER_PATTERN = re.compile(rb"(?s)(?=\x00{4}(?!\x00{4}).{4}(.{8})\1)")
MAX_RESYNC_BYTES = 64 << 20


def _valid_data_follows(window: _Window, start: int, file_end: int, check_names: bool) -> bool:
    """True when valid transactions with records start somewhere after ``start`` and
    run exactly to the end of the file: then the damage at ``start`` is not a torn tail.

    Candidates are the places that look like a record header (a plausible length,
    then a name followed by the same 8 bytes, its record oid); needs
    ``check_names``. Searches at most MAX_RESYNC_BYTES.
    """
    if not check_names:
        return False
    tail_bytes = min(file_end - start, MAX_RESYNC_BYTES)
    tail = _read_at(window.file, start, tail_bytes)
    for match in _RECORD_HEADER_PATTERN.finditer(tail):
        record = start + match.start()
        transaction = record - INT8_BYTES
        if transaction <= start:
            continue
        header = tail[record - start : record - start + _record_header.size]
        m = _int8.unpack_from(header)[0] if len(header) == _record_header.size else 0
        if m < NAME_BYTES + RECORD_HEADER_BYTES or record + INT8_BYTES + m > file_end:
            continue
        if _parses_to_end(window, transaction, file_end, check_names):
            return True
    return False


def _record_runs_past_end(window: _Window, start: int, file_end: int, check_names: bool) -> bool:
    """True when an intact record header at ``start`` claims bytes past the end of the file.

    After an unpatched placeholder that is the record our commit was writing when
    it was cut: whatever lies inside its claimed extent is its own data (which
    may itself hold bytes that look like transactions), so it is not searched
    for valid data. Needs ``check_names`` (the name must repeat as the record oid).
    """
    header = window.get(start, _record_header.size)
    if not check_names or len(header) < _record_header.size:
        return False
    m = _int8.unpack_from(header)[0]
    if m < NAME_BYTES + RECORD_HEADER_BYTES or start + INT8_BYTES + m <= file_end:
        return False
    try:
        _check_record_header(header, start, m, False)
    except _Defect:
        return False
    assert start + INT8_BYTES + m > file_end
    return True


def _classify(
    result: ScanResult,
    window: _Window,
    defect: _Defect,
    position: int,
    zero_run_start: int | None,
    check_names: bool,
    file: Any,
) -> None:
    damaged_at: int | None = position
    if defect.short:
        damaged_at = None
    elif zero_run_start is not None:
        damaged_at = _damage_after_placeholder(
            window, defect, position, result.file_end, check_names
        )
    if damaged_at is None:
        # Resynchronise after the last intact record: a torn tail has nothing valid there.
        if defect.short:
            search_start = defect.offset
        else:
            search_start = _record_run_end(window, position, result.file_end, check_names)
        torn_record = zero_run_start is not None and _record_runs_past_end(
            window, search_start, result.file_end, check_names
        )
        if not torn_record and _valid_data_follows(
            window, search_start, result.file_end, check_names
        ):
            damaged_at = position if zero_run_start is None else zero_run_start
    if damaged_at is None:
        result.torn_tail = True
        result.good_end = zero_run_start if zero_run_start is not None else position
        assert result.good_end <= position < result.file_end
        return
    assert damaged_at <= position
    result.good_end = damaged_at
    result.damage_offset = damaged_at
    result.damage = FileFormatError(
        f"damaged transaction in {_describe(file)} at byte {damaged_at}: {defect.reason} "
        f"(at byte {defect.offset}); more data follows it. Open with repair=True to "
        f"truncate the file to {damaged_at} bytes, losing everything from there on.",
        filename=getattr(file, "name", None),
        offset=damaged_at,
    )


def read_transaction_offsets(file: Any, repair: bool = False) -> dict[bytes, int]:
    """``name -> position`` for the transactions after the offset map of a shelf file.

    Raises FileFormatError for damage; a torn final transaction is ignored. With
    ``repair`` damage is ignored too (the file is never modified here).
    """
    header = _read_header(file, _file_size(file))
    result = scan_transactions(file, header.transactions_start)
    if result.damage is not None and not repair:
        raise result.damage
    return result.index


# ---------------------------------------------------------------------------
# The offset map


class _Header(NamedTuple):
    map_start: int
    bytes_per_word: int
    word_count: int
    transactions_start: int


def _read_header(file: Any, file_end: int) -> _Header:
    """Check the prefix and offset-map header; NotAShelfError / FileFormatError."""
    head = _read_at(file, 0, len(PREFIX) + INT8_BYTES)
    if _is_unborn(file, file_end):
        raise NotAShelfError(
            f"{_describe(file)} holds no SHELF-1 data ({file_end} bytes): it is empty or "
            "its creation did not finish; open it writable to initialize it",
            filename=getattr(file, "name", None),
            offset=0,
        )
    if head[: len(PREFIX)] != PREFIX or len(head) < len(PREFIX) + INT8_BYTES:
        raise NotAShelfError(
            f"{_describe(file)} is not a SHELF-1 file (Durus FileStorage): it does not start "
            f"with {PREFIX!r} and a header ({len(head)} header bytes read, starting "
            f"{head[:8]!r}); FileStorage2 (DFS20) and SqliteStorage files are opened "
            "with their own classes",
            filename=getattr(file, "name", None),
            offset=0,
        )
    map_start = 16 + _int8.unpack_from(head, len(PREFIX))[0]
    map_header = _read_at(file, map_start, 24) if map_start + 24 <= file_end else b""
    if len(map_header) < 24:
        raise _bad_header(file, map_start, "offset map header missing or cut short")
    total, bpw, n = struct.unpack(">QQQ", map_header)
    if not 1 <= bpw <= MAX_WORD_BYTES or total != 16 + bpw * n:
        raise _bad_header(file, map_start, f"bad offset map header {total}, {bpw}, {n}")
    transactions_start = map_start + 24 + bpw * n
    if transactions_start > file_end:
        raise _bad_header(file, map_start, "offset map runs past the end of the file")
    return _Header(map_start, bpw, n, transactions_start)


def _bad_header(file: Any, offset: int, reason: str) -> FileFormatError:
    return NotAShelfError(
        f"{_describe(file)} has a damaged SHELF-1 header at byte {offset}: {reason}",
        filename=getattr(file, "name", None),
        offset=offset,
    )


class OffsetMap:
    """The on-disk index written by pack: word[oid] is a position or a hole link.

    The words are read into memory once (n * bytes_per_word bytes); nothing else
    of the initial transaction is read at open.
    """

    def __init__(self, file: Any, start: int, bytes_per_word: int, word_count: int) -> None:
        self.file = file
        self.start = start
        self.bytes_per_word = bytes_per_word
        self.word_count = word_count
        self.blank = (1 << (8 * bytes_per_word)) - 1
        self._words: bytes | None = None

    def __len__(self) -> int:
        return self.word_count

    def _all_words(self) -> bytes:
        if self._words is None:
            size = self.bytes_per_word * self.word_count
            self._words = _read_at(self.file, self.start + 24, size)
            if len(self._words) != size:
                raise FileFormatError(f"offset map of {_describe(self.file)} cut short")
        return self._words

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.word_count:
            raise IndexError(index)
        bpw = self.bytes_per_word
        return int.from_bytes(self._all_words()[index * bpw : (index + 1) * bpw], "big")

    def get(self, index: int, default: int | None = None) -> int | None:
        """The position of oid ``index`` in the initial transaction, or ``default``."""
        if not 0 <= index < self.word_count:
            return default
        word = self[index]
        if word >= self.start:  # a hole link or the blank
            return default
        return word

    def iteritems(self) -> Iterator[tuple[int, int]]:
        """``(oid, position)`` for every oid with a record in the initial transaction."""
        for index in range(self.word_count):
            word = self[index]
            if word < self.start:
                yield index, word

    items = iteritems

    def gen_holes(self) -> Iterator[int]:
        """Holes in reuse order: descending, ending with the spare slot n - 1."""
        n = self.word_count
        j = n - 1
        for _step in range(n):
            word = self[j]
            if word == self.blank or not self.start <= word < self.start + n:
                return
            hole = word - self.start
            assert 0 <= hole < n
            yield hole
            if hole == n - 1:
                return
            j = hole


# ---------------------------------------------------------------------------
# The memory index and its sidecar file


SIDECAR_SUFFIX = ".shelf-index"
SIDECAR_MAGIC = b"SHELF-1 index 2\n"  # 1 used BLAKE2b-128 digests
SIDECAR_MIN_ENTRIES = 20_000  # below this, scanning is already fast enough
SIDECAR_SPAN_BYTES = 4096  # bytes of the data file's head and tail in the digest
_sidecar_header = struct.Struct(">16sQQQ4s")  # magic, covered_end, map_start, words, digest
_DIGEST_BYTES = 4
_NO_POSITION = -1
_crc32 = struct.Struct(">I")


class MemoryIndex:
    """name -> position of the records appended after the offset map.

    Two parts: ``base``, a dense array indexed by oid number (-1: no entry) loaded
    from a sidecar file, and ``recent``, a dict of every entry found or written
    since. ``recent`` wins.
    """

    def __init__(self, base: array[int] | None = None) -> None:
        self.base: array[int] = base if base is not None else array("q")
        self.recent: dict[bytes, int] = {}

    def get(self, name: bytes, default: int | None = None) -> int | None:
        position = self.recent.get(name)
        if position is not None:
            return position
        if self.base:
            number = int.from_bytes(name, "big")
            if number < len(self.base) and self.base[number] >= 0:
                return self.base[number]
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and self.get(name) is not None

    def __setitem__(self, name: bytes, position: int) -> None:
        self.recent[name] = position

    def __getitem__(self, name: bytes) -> int:
        position = self.get(name)
        if position is None:
            raise KeyError(name)
        return position

    def update(self, pairs: Iterable[tuple[bytes, int]]) -> None:
        self.recent.update(pairs)

    def items(self) -> Iterator[tuple[bytes, int]]:
        recent = self.recent
        for number, position in enumerate(self.base):
            if position >= 0:
                name = int8_to_str(number)
                if name not in recent:
                    yield name, position
        yield from list(recent.items())

    def values(self) -> Iterator[int]:
        for _name, position in self.items():
            yield position

    def __iter__(self) -> Iterator[bytes]:
        for name, _position in self.items():
            yield name

    def __len__(self) -> int:
        if not self.base:
            return len(self.recent)
        base_count = len(self.base) - self.base.count(_NO_POSITION)
        in_base = sum(1 for name in self.recent if self._in_base(name))
        return base_count + len(self.recent) - in_base

    def _in_base(self, name: bytes) -> bool:
        number = int.from_bytes(name, "big")
        return number < len(self.base) and self.base[number] >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (dict, MemoryIndex)):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _digest(*parts: bytes | memoryview) -> bytes:
    """CRC-32 of ``parts``: it guards against accidental damage and a data file that
    changed under the sidecar, not against forgery (whoever can write the sidecar
    can write the data). Four times cheaper than BLAKE2b, and it needs no OpenSSL
    import, which cost an open of a 100k-object file more than the rest of it."""
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return _crc32.pack(crc)


def data_file_digest(file: Any, covered_end: int) -> bytes:
    """A digest of the data file's first and last SIDECAR_SPAN_BYTES before ``covered_end``."""
    head = _read_at(file, 0, min(SIDECAR_SPAN_BYTES, covered_end))
    tail_start = max(0, covered_end - SIDECAR_SPAN_BYTES)
    tail = _read_at(file, tail_start, covered_end - tail_start)
    return _digest(int8_to_str(covered_end), head, tail)


def encode_sidecar(
    index: MemoryIndex, covered_end: int, map_start: int, data_digest: bytes
) -> bytes | None:
    """The sidecar bytes for ``index``, or None when its oids are too sparse for one."""
    numbers = [int.from_bytes(name, "big") for name in index.recent]
    word_count = max(len(index.base), max(numbers, default=-1) + 1)
    entry_count = len(index)
    if word_count > 2 * entry_count + 1024:
        return None
    positions = array("q", index.base)
    positions.extend(array("q", [_NO_POSITION]) * (word_count - len(positions)))
    for number, position in zip(numbers, index.recent.values(), strict=True):
        positions[number] = position
    if sys.byteorder == "little":
        positions.byteswap()
    header = _sidecar_header.pack(SIDECAR_MAGIC, covered_end, map_start, word_count, data_digest)
    body = header + positions.tobytes()
    assert len(body) == _sidecar_header.size + 8 * word_count
    return body + _digest(body)


def decode_sidecar(blob: bytes) -> tuple[int, int, bytes, array[int]] | None:
    """``(covered_end, map_start, data_digest, positions)``, or None if not intact."""
    if len(blob) < _sidecar_header.size + _DIGEST_BYTES:
        return None
    body, digest = memoryview(blob)[:-_DIGEST_BYTES], blob[-_DIGEST_BYTES:]
    magic, covered_end, map_start, word_count, data_digest = _sidecar_header.unpack_from(body)
    if magic != SIDECAR_MAGIC or len(body) != _sidecar_header.size + 8 * word_count:
        return None
    if _digest(body) != digest:
        return None
    positions = array("q")
    positions.frombytes(body[_sidecar_header.size :])
    if sys.byteorder == "little":
        positions.byteswap()
    assert len(positions) == word_count
    return covered_end, map_start, data_digest, positions


# ---------------------------------------------------------------------------
# The shelf


class Shelf:
    """Names (8 bytes) -> values (bytes) in an append-only SHELF-1 file.

    ``Shelf(file=None, items=None, repair=False, readonly=False, fsync=True,
    check_record_names=False, file_system=None)``. ``check_record_names`` makes
    the scan require each value to be an object record starting with its name
    (FileStorage sets it).
    """

    prefix = PREFIX

    def __init__(
        self,
        file: Any = None,
        items: Iterable[tuple[bytes, bytes]] | None = None,
        repair: bool = False,
        readonly: bool = False,
        fsync: bool = True,
        check_record_names: bool = False,
        file_system: FileSystem | None = None,
    ) -> None:
        if file is None and (readonly or repair):
            raise ValueError("a temporary shelf cannot be read-only or repaired")
        self.file = _as_file(file, readonly, file_system)
        self.fsync = fsync
        self.check_record_names = check_record_names
        self.index = MemoryIndex()
        self._tail_dirty = False
        self._sidecar_end: int | None = None
        self._read_ahead = _ReadAhead()
        try:
            self._open(items, repair)
        except BaseException:
            self.file.close()
            raise
        self._name_candidates = self._gen_name_candidates()

    def _open(self, items: Iterable[tuple[bytes, bytes]] | None, repair: bool) -> None:
        readonly = _is_readonly(self.file)
        size = _file_size(self.file)
        if not readonly and _is_unborn(self.file, size):
            if size:
                logger.warning(
                    "%s: %d bytes left by an unfinished creation (no data); initializing",
                    _describe(self.file),
                    size,
                )
                self.file.truncate_at(0)
            self._initialize(items or ())
            size = _file_size(self.file)
        elif items is not None:
            raise ValueError("items can only be given for a new (empty) shelf file")
        header = _read_header(self.file, size)
        self.offset_map = OffsetMap(
            self.file, header.map_start, header.bytes_per_word, header.word_count
        )
        base, scan_start = self._load_sidecar(header, size)
        scan = scan_transactions(self.file, scan_start, self.check_record_names, size)
        self._accept_scan(scan, repair, readonly)
        self.index = MemoryIndex(base)
        self.index.update(scan.index.items())

    def _initialize(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Write a new shelf into the empty file; durable (file and name) when fsync is on."""
        for _progress in self.generate_shelf(self.file, items):
            pass
        if self.fsync:
            self.file.fsync()
            if not self.file.is_temporary():
                fs = self.file.file_system
                fs.sync_directory(os.path.dirname(os.path.abspath(self.file.get_name())))

    def _accept_scan(self, scan: ScanResult, repair: bool, readonly: bool) -> None:
        if scan.damage is not None and not repair:
            raise scan.damage
        dropped = scan.file_end - scan.good_end
        if dropped:
            what = "an unfinished final transaction" if scan.torn_tail else "damaged data"
            action = "ignored (read-only)" if readonly else "truncated"
            logger.warning(
                "%s: %s of %d bytes at byte %d %s",
                _describe(self.file),
                what,
                dropped,
                scan.good_end,
                action,
            )
            if not readonly:
                self.file.truncate_at(scan.good_end)
                if self.fsync:
                    self.file.fsync()
        self.end_offset = scan.good_end
        assert self.end_offset <= scan.file_end

    @classmethod
    def has_format(cls, file: Any) -> bool:
        """True when the file-like object starts with the SHELF-1 prefix."""
        file.seek(0)
        return bool(file.read(len(PREFIX)) == PREFIX)

    @classmethod
    def generate_shelf(cls, file: Any, items: Iterable[tuple[bytes, bytes]]) -> Iterator[int]:
        """Write a complete new shelf holding ``items`` into the empty ``file``.

        Yields a progress count after each item. Does not fsync.
        """
        if _file_size(file) != 0:
            raise ValueError(f"{_describe(file)} is not empty")
        buffered: list[bytes] = [PREFIX, EMPTY_TRANSACTION]
        buffered_bytes = len(PREFIX) + INT8_BYTES
        offset = 0
        positions: dict[int, int] = {}
        for count, (name, value) in enumerate(items, 1):
            _check_name(name)
            record = encode_record(name, value)
            positions[str_to_int8(name)] = offset + buffered_bytes
            buffered.append(record)
            buffered_bytes += len(record)
            if buffered_bytes >= SCAN_CHUNK_BYTES:
                file.write_at(offset, b"".join(buffered))
                offset, buffered, buffered_bytes = offset + buffered_bytes, [], 0
            yield count
        map_start = offset + buffered_bytes
        offset_map = build_offset_map(map_start, positions)
        initial_length = int8_to_str(map_start - 16)
        if offset == 0:  # all in memory: one write (a new empty shelf is one 40-byte write)
            buffered[1] = initial_length
            file.write_at(0, b"".join(buffered) + offset_map)
        else:
            file.write_at(offset, b"".join(buffered) + offset_map)
            file.write_at(len(PREFIX), initial_length)
        assert _file_size(file) == map_start + len(offset_map)

    # -- reading

    def get_position(self, name: bytes) -> int | None:
        """Position of the current record of ``name``, or None."""
        if not isinstance(name, (bytes, bytearray)) or len(name) != NAME_BYTES:
            raise ValueError("Expected a string with 8 bytes.")
        position = self.index.get(name)
        if position is None:
            position = self.offset_map.get(str_to_int8(name))
        return position

    def get_item_at_position(self, position: int) -> tuple[bytes, bytes]:
        """``(name, value)`` of the record whose length field is at ``position``."""
        head = _read_at(self.file, position, READ_PEEK_BYTES)
        if len(head) < INT8_BYTES + NAME_BYTES:
            raise self._bad_record(position, "record header runs past the end of the file")
        m = _int8.unpack_from(head)[0]
        wanted = INT8_BYTES + m
        data = head[:wanted]
        if len(data) < wanted:
            data = head + _read_at(self.file, position + len(head), wanted - len(head))
        if len(data) != wanted or m < NAME_BYTES:
            raise self._bad_record(position, "record runs past the end of the file")
        name, value = data[INT8_BYTES : INT8_BYTES + NAME_BYTES], data[INT8_BYTES + NAME_BYTES :]
        assert len(name) == NAME_BYTES and len(value) == m - NAME_BYTES
        return name, value

    def _bad_record(self, position: int, reason: str) -> FileFormatError:
        return FileFormatError(
            f"{_describe(self.file)}: bad record at byte {position}: {reason}",
            filename=getattr(self.file, "name", None),
            offset=position,
        )

    def get_value(self, name: bytes) -> bytes | None:
        """The current value of ``name``, or None."""
        position = self.get_position(name)
        if position is None:
            return None
        stored_name, value = self.get_item_at_position(position)
        if stored_name != name:
            raise self._bad_record(position, f"holds name {stored_name!r}, not {name!r}")
        return value

    def get_value_read_ahead(self, name: bytes) -> bytes | None:
        """``get_value(name)``, from bytes read ahead by an earlier call when they
        hold the record (see ``_ReadAhead``). Anything unusual (a record longer
        than the window, a bad length, another name) goes to ``get_value``,
        which reads exactly what the record claims and raises its errors."""
        position = self.get_position(name)
        if position is None:
            return None
        value = self._read_ahead.value_at(self.file, position, self.end_offset, name)
        return self.get_value(name) if value is None else value

    def iterindex(self) -> Iterator[tuple[bytes, int]]:
        """``(name, position)``: offset-map entries not overridden, then the memory index."""
        for oid, position in self.offset_map.iteritems():
            name = int8_to_str(oid)
            if name not in self.index:
                yield name, position
        yield from list(self.index.items())

    def __iter__(self) -> Iterator[bytes]:
        for name, _position in self.iterindex():
            yield name

    def iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for name, position in self.iterindex():
            yield name, self.get_item_at_position(position)[1]

    items = iteritems

    def __contains__(self, name: bytes) -> bool:
        return self.get_position(name) is not None

    def get_offset_map(self) -> OffsetMap:
        return self.offset_map

    def get_file(self) -> Any:
        return self.file

    def close(self) -> None:
        """Close the file; a writable shelf first saves its sidecar index (if worth it)."""
        if not _is_readonly(self.file) and not getattr(self.file, "is_closed", bool)():
            try:
                self._save_sidecar()
            except Exception as error:  # the sidecar is only an optimisation
                logger.warning("%s: sidecar index not saved: %s", _describe(self.file), error)
        self.file.close()

    # -- the sidecar index (fast open of files with many appended records)

    def _sidecar_name(self) -> str | None:
        file = self.file
        if not isinstance(file, File) or file.is_temporary():
            return None
        return file.get_name() + SIDECAR_SUFFIX

    def _load_sidecar(self, header: _Header, size: int) -> tuple[array[int] | None, int]:
        """``(base positions, where to start scanning)`` from a valid sidecar, if any."""
        name = self._sidecar_name()
        if name is None or not self.file.file_system.exists(name):
            return None, header.transactions_start
        try:
            with File(name, readonly=True, file_system=self.file.file_system) as sidecar:
                decoded = decode_sidecar(sidecar.read_at(0, sidecar.size()))
        except OSError:
            decoded = None
        if decoded is None:
            return None, header.transactions_start
        self._sidecar_end = decoded[0]
        covered_end, map_start, data_digest, positions = decoded
        if (
            map_start != header.map_start
            or not header.transactions_start <= covered_end <= size
            or data_file_digest(self.file, covered_end) != data_digest
        ):
            return None, header.transactions_start
        return positions, covered_end

    def _save_sidecar(self) -> None:
        name = self._sidecar_name()
        if name is None or self._tail_dirty:
            return
        if self._sidecar_end == self.end_offset and not self.index.recent:
            return  # the sidecar read at open is still exact
        fs = self.file.file_system
        blob = None
        if len(self.index) >= SIDECAR_MIN_ENTRIES:
            digest = data_file_digest(self.file, self.end_offset)
            blob = encode_sidecar(self.index, self.end_offset, self.offset_map.start, digest)
        if blob is None:
            self.discard_sidecar()
            return
        temporary_name = name + ".new"
        with File(temporary_name, file_system=fs) as sidecar:
            sidecar.truncate_at(0)
            sidecar.write_at(0, blob)
        fs.replace(temporary_name, name)

    def discard_sidecar(self) -> None:
        """Remove the sidecar index file, if there is one."""
        name = self._sidecar_name()
        if name is not None and self.file.file_system.exists(name):
            self.file.file_system.remove(name)

    # -- names

    def _gen_name_candidates(self) -> Iterator[bytes]:
        for hole in self.offset_map.gen_holes():
            name = int8_to_str(hole)
            if name not in self.index:
                yield name
        number = len(self.offset_map)
        while True:
            name = int8_to_str(number)
            if name not in self.index:
                yield name
            number += 1

    def next_name(self) -> bytes:
        """The next unused name (FORMATS.md 5.6); never the same one twice."""
        name = next(self._name_candidates)
        assert len(name) == NAME_BYTES
        return name

    # -- writing

    def store(self, name_value_pairs: Iterable[tuple[bytes, bytes]]) -> list[Any]:
        """Append one transaction; ``[(name, old_position_or_None, new_position)]``.

        All-or-nothing (see the module docstring). If anything raises, nothing of
        the transaction stays in the file or in the index.
        """
        if _is_readonly(self.file):
            raise ReadOnlyFileError(f"{_describe(self.file)} is open read-only")
        items = list(name_value_pairs)
        for name, value in items:
            _check_name(name)
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError(f"a shelf value must be bytes, not {type(value).__name__}")
        if self._tail_dirty:
            self._truncate_tail()
        body, offsets = encode_transaction_body(items)
        start = self.end_offset
        transaction_start = self._write_transaction(start, body)
        first = transaction_start + INT8_BYTES
        changes = []
        for (name, _value), offset in zip(items, offsets, strict=True):
            changes.append((name, self.get_position(name), first + offset))
        for name, _old, position in changes:
            self.index[name] = position
        assert all(self.index.get(name) == position for name, _old, position in changes)
        assert self.end_offset == first + len(body)
        return changes

    def _write_transaction(self, start: int, body: bytes) -> int:
        """Write a transaction at ``start``; return the offset of its length field."""
        length = int8_to_str(len(body))
        transaction_start = start
        try:
            if not self.fsync:
                self.file.write_at(start, length + body)
            else:
                padding = b""
                if needs_padding(start):
                    padding = EMPTY_TRANSACTION
                    transaction_start += INT8_BYTES
                self.file.write_at(start, padding + EMPTY_TRANSACTION + body)
                self.file.fsync()
                assert not needs_padding(transaction_start)
                self.file.write_at(transaction_start, length)
                self.file.fsync()
            assert self.file.read_at(transaction_start, INT8_BYTES) == length
        except BaseException:
            self._tail_dirty = True
            self._try_truncate_tail()
            raise
        self.end_offset = transaction_start + INT8_BYTES + len(body)
        return transaction_start

    def _try_truncate_tail(self) -> None:
        try:
            self._truncate_tail()
        except Exception as error:
            logger.warning("%s: could not remove a failed transaction: %s", self.file, error)

    def _truncate_tail(self) -> None:
        self.file.truncate_at(self.end_offset)
        if self.fsync:
            self.file.fsync()
        self._tail_dirty = False


def _is_unborn(file: Any, size: int) -> bool:
    """True for a file holding no shelf yet: empty, or cut short while being created.

    Creating a shelf writes the 40-byte EMPTY_SHELF; a crash before it is durable
    can leave any prefix of it, or zeros. Such a file can hold no data.
    """
    if size > len(EMPTY_SHELF):
        return False
    content = _read_at(file, 0, size)
    return (size < len(EMPTY_SHELF) and EMPTY_SHELF.startswith(content)) or not content.strip(b"\0")


def _check_name(name: Any) -> None:
    if not isinstance(name, (bytes, bytearray)) or len(name) != NAME_BYTES:
        raise ValueError("Expected a string with 8 bytes.")


def _is_readonly(file: Any) -> bool:
    is_readonly = getattr(file, "is_readonly", None)
    return True if is_readonly is None else bool(is_readonly())


class _FileLikeReader:
    """Read access to a seekable file-like object, for read-only shelves."""

    def __init__(self, fileobj: Any) -> None:
        self.fileobj = fileobj
        self.name = getattr(fileobj, "name", None)

    def read_at(self, offset: int, size: int) -> bytes:
        self.fileobj.seek(offset)
        return bytes(self.fileobj.read(size))

    def size(self) -> int:
        self.fileobj.seek(0, 2)
        return int(self.fileobj.tell())

    def seek(self, n: int, whence: int = 0) -> int:
        return int(self.fileobj.seek(n, whence))

    def read(self, n: int = -1) -> bytes:
        return bytes(self.fileobj.read(n))

    def is_readonly(self) -> bool:
        return True

    def is_temporary(self) -> bool:
        return False

    def get_name(self) -> str | None:
        return self.name

    def close(self) -> None:
        close = getattr(self.fileobj, "close", None)
        if close is not None:
            close()


READ_AHEAD_MAX_BYTES = 1 << 16


class _ReadAhead:
    """One read of a shelf's file, larger than the record asked for, so that the
    records next to it (a traversal in the order the objects were committed)
    are served without a system call each.

    Holds bytes below the shelf's ``end_offset`` at the time of the read only:
    those are committed and never rewritten while the shelf is open (appends
    and tail truncations happen after ``end_offset``; a pack makes a new
    shelf). Reads start at ``READ_PEEK_BYTES`` (what reading one record costs
    anyway); a miss shortly after the window's start (reading forward) doubles
    the next read, up to ``READ_AHEAD_MAX_BYTES``, and a miss anywhere else starts
    again from ``READ_PEEK_BYTES``, so scattered loads read no more than before.
    """

    def __init__(self) -> None:
        self.window: tuple[int, bytes] = (0, b"")  # (file offset, bytes): replaced whole
        self.read_bytes = READ_PEEK_BYTES

    def value_at(self, file: Any, position: int, end_offset: int, name: bytes) -> bytes | None:
        """The value of the record at ``position`` if it is whole in the window
        (else read from ``position`` on) and named ``name``; None otherwise."""
        base, data = self.window
        local = position - base
        if 0 <= local <= len(data) - INT8_BYTES - NAME_BYTES:
            value = _value_in(data, local, name)
            if value is not None:
                return value
        return _value_in(self._read(file, position, end_offset, local), 0, name)

    def _read(self, file: Any, position: int, end_offset: int, local: int) -> bytes:
        """Read the window at ``position``: larger when ``position`` follows the last one."""
        if 0 <= local < 2 * READ_AHEAD_MAX_BYTES and self.window[1]:
            size = self.read_bytes = min(2 * self.read_bytes, READ_AHEAD_MAX_BYTES)
        else:
            size = self.read_bytes = READ_PEEK_BYTES
        if size > end_offset - position:
            size = max(0, end_offset - position)
        data = _read_at(file, position, size)
        self.window = (position, data)
        assert len(data) <= size
        return data


def _value_in(data: bytes, local: int, name: bytes) -> bytes | None:
    """The value of the record at ``data[local:]`` (``local`` >= 0) named ``name``,
    if whole there."""
    start = local + INT8_BYTES + NAME_BYTES
    if start > len(data) or data[local + INT8_BYTES : start] != name:
        return None
    end = local + INT8_BYTES + _int8.unpack_from(data, local)[0]
    if not start <= end <= len(data):
        return None
    value = data[start:end]
    assert len(value) == end - start
    return value


def _as_file(file: Any, readonly: bool, file_system: FileSystem | None) -> Any:
    if file is None:
        return File(file_system=file_system)
    if isinstance(file, (str, bytes, os.PathLike)):
        path = os.fsdecode(file)
        return File(path, readonly=readonly, file_system=file_system)
    if isinstance(file, File):
        return file
    return _FileLikeReader(file)
