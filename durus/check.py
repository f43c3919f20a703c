"""Offline consistency check of a storage file (``durus -k FILE``).

Owns the read-only scan of the three file formats (SHELF-1, DFS20, SQLite):
every transaction is framed, every object record is unpacked, its class
pickle and state pickle are decoded, and every reference must resolve to a
live record. The result is a ``CheckReport`` (census, unreachable count,
damage with byte offsets); ``check_main`` is the thin command-line wrapper.

Never writes: files are opened ``'rb'`` and SQLite databases with
``mode=ro``, so checking a damaged file cannot make it worse. Never imports
application classes: pickles are decoded by ``_NamingUnpickler``, which
replaces every global the pickle names with an inert stand-in class that
records the dotted name (only ``_codecs.encode``, needed to rebuild oid
bytes, is given real behaviour, limited to latin-1). So a file can be
checked on a machine without the application's code, and a hostile pickle
cannot run anything.

After the independent scan, the storage class itself (FileStorage,
FileStorage2) opens the file read-only and must return the same live
records; a refusal to open is reported as damage too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import optparse
import os
import pickle
import sqlite3
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from durus.error import RecordFormatError
from durus.logger import logger as durus_logger
from durus.record import pack_record, unpack_record
from durus.utils import OID_SIZE_BYTES, ROOT_OID, int8_to_str, str_to_int4, str_to_int8

SHELF_PREFIX = b"SHELF-1\n"
DFS20_MAGIC = b"DFS20\x00"
SQLITE_PREFIX = b"SQLite format "
MAX_STATE_BYTES = 256 * 1024 * 1024  # an inflated state pickle larger than this is damage
MAX_INDEX_BYTES = 1024 * 1024 * 1024  # inflated DFS20 index pickle
MAX_DAMAGE_KEPT = 1000  # damage entries kept in a report; the rest are only counted
DIGEST_BYTES = 16

ProgressCallback = Callable[[int, int, str], None]  # (done, total, unit)


class CheckError(Exception):
    """The file cannot be checked at all (missing, unreadable, unknown format)."""


@dataclass(frozen=True)
class Damage:
    """One problem found; ``offset`` is a byte offset in the file, when one applies."""

    message: str
    offset: int | None = None
    oid: bytes | None = None

    def __str__(self) -> str:
        where = [] if self.offset is None else [f"offset {self.offset}"]
        if self.oid is not None:
            where.append(f"oid {str_to_int8(self.oid)}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass(frozen=True)
class RecordSite:
    """A record found by a scanner: where it is and its bytes."""

    oid: bytes
    offset: int | None  # file offset of the record's frame (None in SQLite: the oid is the row)
    record: bytes


@dataclass
class LiveRecord:
    """What the checker keeps per live oid (not the record itself)."""

    offset: int | None
    class_name: str
    refs: tuple[bytes, ...]
    digest: bytes


@dataclass
class CheckReport:
    """The outcome of ``check_storage_file``."""

    path: str
    format_name: str = "?"
    transaction_count: int = 0
    record_count: int = 0  # every record in the file, superseded versions included
    live: dict[bytes, LiveRecord] = field(default_factory=dict)
    unreachable: list[bytes] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    damage_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no damage was found."""
        return not self.damage and not self.damage_dropped

    def census(self) -> dict[str, int]:
        """Live records per dotted class name."""
        counts: dict[str, int] = {}
        for info in self.live.values():
            counts[info.class_name] = counts.get(info.class_name, 0) + 1
        assert sum(counts.values()) == len(self.live)
        return counts

    def add_damage(self, damage: Damage) -> None:
        """Keep ``damage`` (up to MAX_DAMAGE_KEPT entries; later ones are counted)."""
        if len(self.damage) < MAX_DAMAGE_KEPT:
            self.damage.append(damage)
        else:
            self.damage_dropped += 1


class ScanStop(Exception):
    """Framing damage after which the rest of the file cannot be trusted."""

    def __init__(self, damage: Damage) -> None:
        Exception.__init__(self, str(damage))
        self.damage = damage


# ---------------------------------------------------------------- pickle decoding


class _StandIn:
    """Base of the inert classes that replace every global named by a pickle."""

    dotted_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> Any:
    """``_codecs.encode`` as oid references use it; anything else stays inert."""
    if isinstance(text, str) and encoding.replace("-", "").lower() == "latin1":
        return text.encode("latin1")
    return _StandIn()


class _NamingUnpickler(pickle.Unpickler):
    """Unpickler that imports nothing: globals become named stand-ins."""

    def __init__(self, file: IO[bytes]) -> None:
        pickle.Unpickler.__init__(self, file, encoding="latin1")
        self.referenced_oids: set[bytes] = set()
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        key = (module, name)
        if key not in self._stand_ins:
            namespace = {"dotted_name": f"{module}.{name}", "__module__": module}
            self._stand_ins[key] = type(name, (_StandIn,), namespace)
        return self._stand_ins[key]

    def persistent_load(self, pid: Any) -> Any:
        oid = pid[0] if isinstance(pid, tuple) and len(pid) == 2 else pid
        if not isinstance(oid, bytes) or len(oid) != OID_SIZE_BYTES:
            raise RecordFormatError(f"persistent reference {pid!r} does not hold an 8-byte oid")
        self.referenced_oids.add(oid)
        return _StandIn()


@dataclass(frozen=True)
class DecodedData:
    """What the checker learns from a record's data without importing anything."""

    class_name: str
    referenced_oids: frozenset[bytes]


def _class_pickle_end(data: bytes) -> tuple[str, int]:
    """The dotted class name of ``data``'s class pickle and the offset after it."""
    stream = io.BytesIO(data)
    klass = _NamingUnpickler(stream).load()
    if not (isinstance(klass, type) and issubclass(klass, _StandIn)):
        raise RecordFormatError(f"the class pickle holds {type(klass).__name__}, not a class")
    return klass.dotted_name, stream.tell()


def _inflate_state(stored: bytes) -> tuple[bytes, str | None]:
    """The state pickle from its stored form, as Durus reads it, and why inflating failed.

    Durus inflates data starting with 0x78 and falls back to the raw bytes
    when that fails (a raw pickle starts with 0x80), so a failure is only
    damage if the raw bytes do not decode either; the reason is kept for that case.
    """
    if not stored.startswith(b"\x78"):
        return stored, None
    inflater = zlib.decompressobj()
    try:
        state = inflater.decompress(stored, MAX_STATE_BYTES)
    except zlib.error as exc:
        return stored, f"the compressed state does not inflate ({exc})"
    if inflater.unconsumed_tail:
        raise RecordFormatError(f"the state inflates to more than {MAX_STATE_BYTES} bytes")
    if not inflater.eof:
        return stored, "the compressed state is cut short"
    if inflater.unused_data:
        raise RecordFormatError(f"{len(inflater.unused_data)} bytes follow the compressed state")
    return state, None


def decode_record_data(data: bytes) -> DecodedData:
    """Decode class and state pickles of ``data``; an exception (of any kind) on damage.

    The state is read by the same unpickler right after the class (its memo
    refers back to the class), so both are fed as one stream.
    """
    class_name, state_start = _class_pickle_end(data)
    state, inflate_problem = _inflate_state(data[state_start:])
    stream = io.BytesIO(data[:state_start] + state)
    unpickler = _NamingUnpickler(stream)
    unpickler.load()
    try:
        unpickler.load()
    except Exception as exc:
        if inflate_problem is None:
            raise
        raise RecordFormatError(inflate_problem) from exc
    if stream.tell() != state_start + len(state):
        extra = state_start + len(state) - stream.tell()
        raise RecordFormatError(f"{extra} unexpected bytes after the state pickle")
    assert class_name != "?"
    return DecodedData(class_name, frozenset(unpickler.referenced_oids))


def check_record(site: RecordSite) -> tuple[LiveRecord | None, list[Damage]]:
    """Unpack and decode one record; its summary, or damage entries."""
    try:
        oid, data, refs_bytes = unpack_record(site.record)
    except RecordFormatError as exc:
        return None, [Damage(f"record does not unpack: {exc}", site.offset, site.oid)]
    if oid != site.oid:
        message = f"the record names oid {str_to_int8(oid)}, its frame names another"
        return None, [Damage(message, site.offset, site.oid)]
    refs = tuple(refs_bytes[i : i + OID_SIZE_BYTES] for i in range(0, len(refs_bytes), 8))
    try:
        decoded = decode_record_data(data)
    except Exception as exc:  # untrusted bytes: any failure is damage
        message = f"record data does not decode ({type(exc).__name__}: {exc})"
        return None, [Damage(message, site.offset, oid)]
    damage = []
    # Compared as sets: order and repeats do not matter to packing, a missing or extra oid does.
    expected_refs = tuple(sorted(decoded.referenced_oids - {oid}))
    if set(refs) - {oid} != set(expected_refs):
        message = (
            f"refs field {_oid_list(refs)} differs from the state's references"
            f" {_oid_list(expected_refs)}"
        )
        damage.append(Damage(message, site.offset, oid))
    digest = hashlib.blake2b(site.record, digest_size=DIGEST_BYTES).digest()
    return LiveRecord(site.offset, decoded.class_name, refs, digest), damage


def _oid_list(oids: tuple[bytes, ...]) -> str:
    return "[" + ", ".join(str(str_to_int8(oid)) for oid in oids) + "]"


# ---------------------------------------------------------------- framing scanners

# What the scanners keep per oid: the decoded summary, or None for a record that is
# present but damaged (its damage is already in the report).
Present = dict[bytes, LiveRecord | None]


class _Reader:
    """Bounded reads at absolute offsets of a read-only binary file."""

    def __init__(
        self, file: IO[bytes], size_bytes: int, progress: ProgressCallback | None = None
    ) -> None:
        self.file = file
        self.size_bytes = size_bytes
        self.progress = progress

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or ScanStop naming ``what``."""
        if length < 0 or offset + length > self.size_bytes:
            message = (
                f"{what} needs {length} bytes but the file ends at {self.size_bytes}"
                f" ({self.size_bytes - offset} left)"
            )
            raise ScanStop(Damage(message, offset))
        self.file.seek(offset)
        chunk = self.file.read(length)
        if len(chunk) != length:
            raise ScanStop(Damage(f"{what}: short read ({len(chunk)} of {length})", offset))
        return chunk

    def int8_at(self, offset: int, what: str) -> int:
        return str_to_int8(self.read_at(offset, 8, what))

    def int4_at(self, offset: int, what: str) -> int:
        return str_to_int4(self.read_at(offset, 4, what))

    def report_progress(self, offset: int) -> None:
        if self.progress is not None:
            self.progress(offset, self.size_bytes, "bytes")


class _Visitor:
    """Decodes each record as a scanner frames it; keeps its damage and summary only."""

    def __init__(self, report: CheckReport) -> None:
        self.report = report

    def __call__(self, site: RecordSite) -> LiveRecord | None:
        self.report.record_count += 1
        summary, damage = check_record(site)
        for item in damage:
            self.report.add_damage(item)
        assert summary is not None or damage
        return summary


def _shelf_transaction(reader: _Reader, start: int, what: str) -> Iterator[RecordSite]:
    """The records of the SHELF-1 transaction whose int8 length is at ``start``."""
    length = reader.int8_at(start, f"{what} length")
    end = start + 8 + length
    if end > reader.size_bytes:
        message = f"{what} declares {length} bytes but the file ends at {reader.size_bytes}"
        if what == "transaction":
            message += " (an unfinished final commit, cut off by a crash: never acknowledged)"
        raise ScanStop(Damage(message, start))
    position = start + 8
    while position < end:
        record_length = reader.int8_at(position, "shelf record length")
        if record_length < 8 or position + 8 + record_length > end:
            message = f"shelf record of {record_length} bytes overruns its {what} (ends at {end})"
            raise ScanStop(Damage(message, position))
        name = reader.read_at(position + 8, 8, "shelf record name")
        value = reader.read_at(position + 16, record_length - 8, "object record")
        yield RecordSite(name, position, value)
        position += 8 + record_length
        reader.report_progress(position)
    assert position == end


def scan_shelf(reader: _Reader, report: CheckReport, visit: _Visitor, present: Present) -> None:
    """Frame and visit every record of a SHELF-1 file; the current ones go into ``present``."""
    if reader.read_at(0, 8, "prefix") != SHELF_PREFIX:
        raise ScanStop(Damage("the file does not start with SHELF-1", 0))
    base: dict[int, tuple[bytes, LiveRecord | None]] = {}
    for site in _shelf_transaction(reader, 8, "initial transaction"):
        assert site.offset is not None
        base[site.offset] = (site.oid, visit(site))
    report.transaction_count += 1 if base else 0  # a pack's base; empty in an unpacked file
    map_start = 16 + reader.int8_at(8, "initial transaction length")
    present.update(_shelf_offset_map(reader, map_start, base, report))
    position = map_start + 8 + reader.int8_at(map_start, "offset map length")
    while position < reader.size_bytes:
        visited = [
            (site.oid, visit(site)) for site in _shelf_transaction(reader, position, "transaction")
        ]
        report.transaction_count += 1
        present.update(visited)
        position += 8 + reader.int8_at(position, "transaction length")
    assert position == reader.size_bytes


def _shelf_offset_map(
    reader: _Reader,
    start: int,
    base: dict[int, tuple[bytes, LiveRecord | None]],
    report: CheckReport,
) -> Present:
    """Check the offset map at ``start``; the initial transaction's records it names."""
    total, word_bytes, word_count = (
        reader.int8_at(start + 8 * i, "offset map header") for i in range(3)
    )
    if not 1 <= word_bytes <= 8 or total != 16 + word_bytes * word_count:
        message = f"offset map header is inconsistent (total={total}, bpw={word_bytes})"
        raise ScanStop(Damage(message, start))
    words = reader.read_at(start + 24, word_bytes * word_count, "offset map words")
    blank = (1 << (8 * word_bytes)) - 1
    named: dict[int, bytes] = {}
    for index in range(word_count):
        word_offset = start + 24 + index * word_bytes
        value = int.from_bytes(words[index * word_bytes : (index + 1) * word_bytes], "big")
        if value == blank or start <= value < start + word_count:
            continue  # no entry, or a link in the chain of holes
        if value >= start:
            report.add_damage(Damage(f"hole link {value} leaves the offset map", word_offset))
        elif value not in base or str_to_int8(base[value][0]) != index:
            message = f"offset map entry for oid {index} points to {value}, not to its record"
            report.add_damage(Damage(message, word_offset))
        else:
            named[value] = base[value][0]
    for offset in sorted(set(base) - set(named)):
        report.add_damage(Damage("record is missing from the offset map", offset))
    return {oid: base[offset][1] for offset, oid in named.items()}


def scan_dfs20(reader: _Reader, report: CheckReport, visit: _Visitor, present: Present) -> None:
    """Frame and visit every record of a DFS20 file; the current ones go into ``present``."""
    if reader.read_at(0, 6, "magic") != DFS20_MAGIC:
        raise ScanStop(Damage("the file does not start with DFS20", 0))
    index_offset = reader.int8_at(6, "index offset")
    if not 14 <= index_offset < reader.size_bytes:
        raise ScanStop(Damage(f"index offset {index_offset} is outside the file", 6))
    packed: dict[int, tuple[bytes, LiveRecord | None]] = {}
    for site in _dfs20_transactions(reader, 14, index_offset, report):
        if site is not None and site.offset is not None:
            packed[site.offset] = (site.oid, visit(site))
    for oid, position in _dfs20_index(reader, index_offset).items():
        if position not in packed or packed[position][0] != oid:
            message = f"index entry for oid {str_to_int8(oid)} points to {position}, not its record"
            report.add_damage(Damage(message, index_offset, oid))
        else:
            present[oid] = packed[position][1]
    start = index_offset + 8 + reader.int8_at(index_offset, "index record length")
    visited: list[tuple[bytes, LiveRecord | None]] = []
    for site in _dfs20_transactions(reader, start, reader.size_bytes, report):
        if site is None:  # the end of a transaction: its records become current
            present.update(visited)
            visited = []
        else:
            visited.append((site.oid, visit(site)))
    assert not visited


def _dfs20_transactions(
    reader: _Reader, start: int, end: int, report: CheckReport
) -> Iterator[RecordSite | None]:
    """The records between ``start`` and ``end``; None after each transaction's int4 0."""
    position = transaction_start = start
    while position < end:
        length = reader.int4_at(position, "record length")
        if length == 0:
            position += 4
            transaction_start = position
            report.transaction_count += 1
            reader.report_progress(position)
            yield None
            continue
        if length < 12 or position + 4 + length > end:
            message = f"record length {length} is impossible here (the region ends at {end})"
            raise ScanStop(Damage(message, position))
        record = reader.read_at(position + 4, length, "object record")
        yield RecordSite(record[:8], position, record)
        position += 4 + length
    if transaction_start != position:
        message = f"transaction is incomplete: no terminator before {end}"
        raise ScanStop(Damage(message, transaction_start))
    assert position == end


class _IndexUnpickler(pickle.Unpickler):
    """Reads the DFS20 index (a dict of oid -> int); refuses every global."""

    def find_class(self, module: str, name: str) -> Any:
        raise RecordFormatError(f"the index pickle names a global ({module}.{name})")


def _dfs20_index(reader: _Reader, index_offset: int) -> dict[bytes, int]:
    """The DFS20 index record at ``index_offset``, decoded and type-checked."""
    length = reader.int8_at(index_offset, "index record length")
    stored = reader.read_at(index_offset + 8, length, "index record")
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(stored, MAX_INDEX_BYTES)
        index = _IndexUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # untrusted bytes: any failure is damage
        raise ScanStop(Damage(f"index record does not decode: {exc}", index_offset)) from exc
    if not isinstance(index, dict):
        raise ScanStop(Damage("index record is not a dict", index_offset))
    result = {}
    for key, position in index.items():
        oid = key.encode("latin1") if isinstance(key, str) else key
        if not isinstance(oid, bytes) or len(oid) != 8 or not isinstance(position, int):
            raise ScanStop(Damage(f"index entry {key!r}: {position!r} is malformed", index_offset))
        result[oid] = position
    assert len(result) == len(index)
    return result


def scan_sqlite(
    path: str,
    report: CheckReport,
    visit: _Visitor,
    present: Present,
    progress: ProgressCallback | None = None,
) -> None:
    """Visit every row of an SQLite storage, opened read-only (sites have no byte offsets)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        database = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise CheckError(f"{path}: cannot open the SQLite database: {exc}") from exc
    try:
        _sqlite_rows(database, report, visit, present, progress)
    except sqlite3.Error as exc:
        raise ScanStop(Damage(f"SQLite refuses to read the objects table: {exc}")) from exc
    finally:
        database.close()


def _sqlite_rows(
    database: sqlite3.Connection,
    report: CheckReport,
    visit: _Visitor,
    present: Present,
    progress: ProgressCallback | None,
) -> None:
    verdict = database.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        report.add_damage(Damage(f"SQLite quick_check: {verdict}"))
    row_count = database.execute("SELECT count(*) FROM objects").fetchone()[0]
    rows = database.execute("SELECT id, data, refs FROM objects ORDER BY id")
    for done, (row_id, data, refs) in enumerate(rows, 1):
        if progress is not None and (done % 256 == 0 or done == row_count):
            progress(done, row_count, "rows")
        if not isinstance(row_id, int) or not 0 <= row_id < 1 << 63:
            report.add_damage(Damage(f"row id {row_id!r} is not an oid"))
            continue
        oid = int8_to_str(row_id)
        if not isinstance(data, bytes) or not isinstance(refs, bytes):
            report.add_damage(Damage(f"row {row_id}: data and refs must be blobs", None, oid))
            present[oid] = None
            continue
        present[oid] = visit(RecordSite(oid, None, pack_record(oid, data, refs)))
    report.transaction_count = 1 if present else 0


# ---------------------------------------------------------------- the check


def sniff_format(path: str) -> str:
    """``'SHELF-1'``, ``'DFS20'`` or ``'SQLite'`` from the file's first bytes; else CheckError."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(16)
    except FileNotFoundError:
        raise CheckError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for magic, name in ((b"SHELF-1", "SHELF-1"), (b"DFS20", "DFS20"), (SQLITE_PREFIX, "SQLite")):
        if prefix.startswith(magic):
            return name
    if not prefix:
        raise CheckError(f"{path}: the file is empty (nothing to check)")
    raise CheckError(f"{path}: unknown storage type (the file starts with {prefix[:8]!r})")


def check_storage_file(path: str, progress: ProgressCallback | None = None) -> CheckReport:
    """Check the storage file at ``path`` without changing it.

    Raises CheckError when the file cannot be checked at all; everything
    found wrong is in the report's ``damage``. ``progress(done, total, unit)``
    is called now and then while the file is read. Memory use grows with the
    number of objects (a small summary each), not with the file's size.
    """
    report = CheckReport(path, sniff_format(path))
    present: Present = {}
    visit = _Visitor(report)
    try:
        if report.format_name == "SQLite":
            scan_sqlite(path, report, visit, present, progress)
        else:
            with open(path, "rb") as file:
                reader = _Reader(file, os.fstat(file.fileno()).st_size, progress)
                scanner = scan_shelf if report.format_name == "SHELF-1" else scan_dfs20
                scanner(reader, report, visit, present)
    except ScanStop as stop:
        report.add_damage(stop.damage)
        report.notes.append("the scan stopped at the first framing damage")
    report.live = {oid: summary for oid, summary in present.items() if summary is not None}
    _check_references(report, set(present))
    _compare_with_storage_class(report, set(present))
    assert report.record_count >= len(report.live)
    return report


def _check_references(report: CheckReport, present_oids: set[bytes]) -> None:
    """Dangling references are damage; records the root cannot reach are counted.

    A reference to a record that exists but is damaged is not reported again.
    """
    for oid, info in report.live.items():
        for ref in info.refs:
            if ref not in present_oids:
                message = f"refers to oid {str_to_int8(ref)}, which has no record"
                report.add_damage(Damage(message, info.offset, oid))
    if report.live and ROOT_OID not in present_oids:
        report.add_damage(Damage("there is no root record (oid 0)"))
    reached: set[bytes] = set()
    todo = [ROOT_OID] if ROOT_OID in report.live else []
    while todo:
        oid = todo.pop()
        if oid in reached or oid not in report.live:
            continue
        reached.add(oid)
        todo.extend(report.live[oid].refs)
    report.unreachable = sorted(set(report.live) - reached)
    assert len(reached) + len(report.unreachable) == len(report.live)


_STORAGE_CLASS_BY_FORMAT = {
    "SHELF-1": ("durus.file_storage", "FileStorage"),
    "DFS20": ("durus.file_storage2", "FileStorage2"),
}


def _compare_with_storage_class(report: CheckReport, present_oids: set[bytes]) -> None:
    """The storage class, opened read-only, must serve exactly the live records found."""
    if report.format_name not in _STORAGE_CLASS_BY_FORMAT:
        return  # SQLite rows were read through sqlite3 itself; there is no read-only class
    module_name, class_name = _STORAGE_CLASS_BY_FORMAT[report.format_name]
    try:
        storage_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        report.notes.append(f"not compared with {class_name}: {exc}")
        return
    with _durus_warnings_as_notes(report, class_name):
        try:
            storage = storage_class(report.path, readonly=True)
        except Exception as exc:  # the storage's own verdict on the file is part of the report
            report.add_damage(
                Damage(f"{class_name} refuses to open the file: {describe_exception(exc)}")
            )
            return
        try:
            _compare_records(storage, class_name, report, present_oids)
        finally:
            storage.close()


class _NoteHandler(logging.Handler):
    def __init__(self, report: CheckReport, source: str) -> None:
        logging.Handler.__init__(self, logging.WARNING)
        self.report = report
        self.source = source

    def emit(self, record: logging.LogRecord) -> None:
        self.report.notes.append(f"{self.source} says: {record.getMessage()}")


@contextlib.contextmanager
def _durus_warnings_as_notes(report: CheckReport, source: str) -> Iterator[None]:
    """Warnings the storage logs while it is compared become notes of the report."""
    handler = _NoteHandler(report, source)
    propagate = durus_logger.propagate
    durus_logger.addHandler(handler)
    durus_logger.propagate = False
    try:
        yield
    finally:
        durus_logger.removeHandler(handler)
        durus_logger.propagate = propagate


def _compare_records(
    storage: Any, class_name: str, report: CheckReport, present_oids: set[bytes]
) -> None:
    for oid, info in report.live.items():
        try:
            record = storage.load(oid)
        except Exception as exc:
            message = f"{class_name} cannot load it: {describe_exception(exc)}"
            report.add_damage(Damage(message, info.offset, oid))
            continue
        if hashlib.blake2b(record, digest_size=DIGEST_BYTES).digest() != info.digest:
            report.add_damage(Damage(f"{class_name} loads a different record", info.offset, oid))
    try:
        listed = {oid for oid, _record in storage.gen_oid_record()}
    except Exception as exc:
        report.add_damage(
            Damage(f"{class_name} cannot list its records: {describe_exception(exc)}")
        )
        return
    for oid in sorted(listed - present_oids):
        report.add_damage(Damage(f"{class_name} lists a record the scan did not find", None, oid))


def describe_exception(exc: BaseException) -> str:
    """One readable line for an exception: its type and message."""
    text = str(exc)
    if len(exc.args) > 1 and all(isinstance(a, str) and len(a) == 1 for a in exc.args):
        text = "".join(exc.args)  # Durus 4.3's ShortRead stored its message one char per arg
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- command line


def format_report(report: CheckReport, quiet: bool = False) -> list[str]:
    """The report as the lines ``durus -k`` prints (``quiet``: only the damage part)."""
    lines = [] if quiet else _summary_lines(report)
    if report.ok:
        lines.append("damage: none")
        return lines
    lines.append(f"damage: {len(report.damage) + report.damage_dropped}")
    lines.extend(f"  {damage}" for damage in report.damage)
    if report.damage_dropped:
        lines.append(f"  ... and {report.damage_dropped} more")
    assert lines[-1].startswith("  ")
    return lines


def _summary_lines(report: CheckReport) -> list[str]:
    counts = (
        f"{_count(report.transaction_count, 'transaction')},"
        f" {_count(report.record_count, 'record')}, {_count(len(report.live), 'live object')}"
    )
    lines = [f"{report.path}: {report.format_name}, {counts}", "census (live objects per class):"]
    census = sorted(report.census().items(), key=lambda item: (-item[1], item[0]))
    lines.extend(f"{count:10d}  {name}" for name, count in census)
    lines.append(f"unreachable: {len(report.unreachable)}")
    lines.extend(f"note: {note}" for note in report.notes)
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class TerminalProgress:
    """Overwrites one line of ``stream`` with progress, at most every ``interval_s``."""

    def __init__(self, stream: IO[str], label: str, interval_s: float = 0.2) -> None:
        self.stream = stream
        self.label = label
        self.interval_s = interval_s
        self.last_s = 0.0
        self.shown = False

    def __call__(self, done: int, total: int, unit: str = "") -> None:
        now = time.monotonic()
        if now - self.last_s < self.interval_s and done < total:
            return
        self.last_s = now
        percent = 100 * done // total if total else 100
        counts = f"{done} of {total} {unit}".rstrip()
        self.stream.write(f"\r{self.label}: {percent:3d}% ({counts})\x1b[K")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the progress line, if one was drawn."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def check_main(args: list[str] | None = None) -> int:
    """``durus -k FILE``: check a storage file offline; 0 when sound, 1 on damage, 2 if unusable."""
    parser = optparse.OptionParser(
        prog="durus -k",
        usage="%prog [options] FILE",
        description="Check a storage file offline (read-only): framing of every transaction,"
        " every record's pickles, every reference; prints a census and any damage with"
        " byte offsets. Exit status: 0 sound, 1 damaged, 2 not checkable.",
    )
    parser.add_option("--quiet", action="store_true", help="print only damage and the verdict")
    options, positional = parser.parse_args(sys.argv[1:] if args is None else args)
    if len(positional) != 1:
        parser.error("give exactly one storage file to check")
    progress = TerminalProgress(sys.stderr, "checking") if sys.stderr.isatty() else None
    try:
        report = check_storage_file(positional[0], progress)
    except CheckError as exc:
        print(f"durus: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.clear()
    print("\n".join(format_report(report, options.quiet)))
    return 0 if report.ok else 1
