"""FileStorage2: the DFS20 file format (FORMATS.md section 6), kept for existing files.

Owns the DFS20 bytes: the ``DFS20\\0`` header and index offset, the index
record (a zlib-compressed pickle of ``{oid: position}`` written by a pack),
the transactions appended after it (``int4 len | record`` entries closed by an
int4 0), their scan on open, the commit write order, and the pack. File I/O
goes through ``durus.file.File`` only; it never unpickles anything but the
index, and that with an unpickler that refuses every global.

Differences from Durus 4.3, all deliberate (the bytes stay readable by 4.3):

* ``begin()`` discards pending records (wart 19); ``load`` of a missing oid
  raises ``DurusKeyError`` (wart 21), so a ghost whose record a pack removed
  becomes a ReadConflictError in the Connection, as with FileStorage.
* The index pickle is checked: a dict of 8-byte oids to positions inside the
  file (Python 2 ``str`` keys are converted through latin-1, so Python 2
  files with oids >= 128 open too).
* Opening drops an unfinished final transaction (cut at end of file, missing
  its terminator, a record running past the end, or still carrying the
  in-progress marker described below) with a warning on the ``durus``
  logger; the file is truncated only when opened writable. Damage anywhere
  else raises ``FileFormatError`` naming the file and offset, unless
  ``repair=True``, which truncates there. A failed open closes the file.
* A new file is written with one write, fsynced, and its directory fsynced;
  the remains of an interrupted creation (a prefix of those 35 bytes, zeros
  where lost, or Durus 4.3's unpatched index offset) open as a new file.
* Pack: the new file is fsynced and atomically renamed over ``<file>`` (the
  name never disappears), then the directory is fsynced. No ``.prepack`` copy
  is kept, as with FileStorage; a stale one is removed. A pack that fails or
  is abandoned resets the pack state and removes ``<file>.pack``.
  ``get_packer()`` returns an empty iterator for temporary and read-only
  storages, as FileStorage does (Durus 4.3 raised AssertionError).

Commit write order (``fsync=True``), and why it is needed
---------------------------------------------------------
Fault model (durus.file): a crash keeps every fsynced byte and any subset of
the writes since, torn at 512-byte sectors; unpersisted sectors that extended
the file read as zeros. A single write of ``records + int4 0`` followed by one
fsync is NOT enough, although the lengths and the 0 terminator must line up
exactly at end of file: the terminator is four zero bytes, which is exactly
what a lost sector reads as. A transaction whose second length field sat in a
lost sector ends early at those zeros, and its first record (with a zeroed
stretch inside its body) is accepted as committed. Nothing in DFS20 (no
checksum) can tell such a record from a good one. So a commit at end offset E
is written in three steps:

1. at E: an int4 1 (the in-progress marker; 1 is an impossible record length),
   preceded by an empty transaction (4 zero bytes, valid DFS20) when the
   4-byte field at E would straddle a sector boundary; fsync. A crash here
   leaves zeros (empty transactions, harmless), a short file, or the marker.
2. after the marker: the transaction without its first length field; fsync.
   A crash here leaves the durable marker first: the tail is dropped on open.
3. the real first length over the marker (one 4-byte write inside one sector,
   so it is atomic); fsync. Only now does ``end()`` return.

A crash therefore leaves the transaction whole or recognisably unfinished. A
writer never writes past a marker it has not replaced, so a marker can only
start the final transaction. Step 1 needs its own fsync: written together with
the body, the marker's sector could be lost while later sectors persist, and
the scan would read zeros (an empty transaction) and then a torn body. The
crash tests enumerate the crash images of a commit: all pass with this order,
while a single write + fsync gave a wrong state for about half of them. The
price is three fsyncs per commit; DFS20 is kept for existing files, and
FileStorage (SHELF-1) is the storage to use for speed. With ``fsync=False`` (Durus 4.3 never fsynced
SHELF-1, but did fsync DFS20) the transaction is one write with no fsync:
safe against a process crash (a write is cut, not holed), not a power cut.
"""

from __future__ import annotations

import heapq
import io
import logging
import os
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durus.error import DurusKeyError
from durus.file import File, FileSystem, ReadOnlyFileError
from durus.file_storage import StorageUsageError, abandon_pack_file, refuse_interrupted_pack
from durus.logger import log
from durus.record import record_oid, record_refs, unpack_record
from durus.shelf import FileFormatError
from durus.storage import InvalidationHandler, Storage
from durus.utils import (
    OID_SIZE_BYTES,
    ROOT_OID,
    check_oid,
    int4_to_str,
    int8_to_str,
    str_to_int4,
    str_to_int8,
)

__all__ = ["FileStorage2", "FileFormatError", "NotADFS20FileError"]

logger = logging.getLogger("durus")

MAGIC = b"DFS20\x00"
INDEX_OFFSET_AT = len(MAGIC)
HEADER_BYTES = INDEX_OFFSET_AT + 8
LENGTH_BYTES = 4
RECORD_HEADER_BYTES = OID_SIZE_BYTES + 4
MIN_RECORD_BYTES = RECORD_HEADER_BYTES
MAX_RECORD_BYTES = 0xFFFFFFFF
TERMINATOR = int4_to_str(0)
IN_PROGRESS_MARKER = int4_to_str(1)
SECTOR_BYTES = 512
SCAN_CHUNK_BYTES = 1 << 20
INDEX_PICKLE_PROTOCOL = 4
MAX_PICKLED_BYTES_PER_INDEX_ENTRY = 64


class NotADFS20FileError(FileFormatError, AssertionError):
    """The file does not start with the DFS20 header (an AssertionError, as in Durus 4.3)."""


# ---------------------------------------------------------------------------
# Pure encoders and decoders (no I/O)


def encode_index_record(index: dict[bytes, int]) -> bytes:
    """``int8 len | zlib(pickle protocol 4 of index)``, as Durus 4.3 writes it."""
    compressed = zlib.compress(pickle.dumps(dict(index), protocol=INDEX_PICKLE_PROTOCOL))
    encoded = int8_to_str(len(compressed)) + compressed
    assert decode_index(compressed, len(index) * MAX_PICKLED_BYTES_PER_INDEX_ENTRY + 64) == index
    return encoded


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles plain containers only: every global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the index may not name {module}.{name}")


def decode_index(compressed: bytes, max_pickle_bytes: int) -> dict[bytes, int]:
    """The index dict from its compressed pickle; ValueError when it is not one."""
    inflater = zlib.decompressobj()
    try:
        pickled = inflater.decompress(compressed, max_pickle_bytes)
    except zlib.error as error:
        raise ValueError(f"index is not zlib data: {error}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"index pickle is truncated or over {max_pickle_bytes} bytes")
    try:
        loaded = _IndexUnpickler(io.BytesIO(pickled), encoding="latin1").load()
    except Exception as error:  # any malformed pickle: the unpickler raises many types
        raise ValueError(f"index is not a plain pickle: {error!r}") from None
    return _check_index(loaded)


def _check_index(loaded: object) -> dict[bytes, int]:
    if not isinstance(loaded, dict):
        raise ValueError(f"index is a {type(loaded).__name__}, not a dict")
    index: dict[bytes, int] = {}
    for key, position in loaded.items():
        if isinstance(key, str):
            try:
                key = key.encode("latin1")
            except UnicodeEncodeError:
                raise ValueError(f"index key {key!r} is not a byte string") from None
        if not isinstance(key, bytes) or len(key) != OID_SIZE_BYTES:
            raise ValueError(f"index key {key!r} is not an 8-byte oid")
        if type(position) is not int or position < HEADER_BYTES:
            raise ValueError(f"index position {position!r} of oid {key!r} is not a file offset")
        index[key] = position
    return index


NEW_FILE_BYTES = MAGIC + int8_to_str(HEADER_BYTES) + encode_index_record({})


def encode_transaction(records: Iterable[bytes], offset: int) -> tuple[bytes, dict[bytes, int]]:
    """``int4 len | record`` for each record, then the int4 0; with each oid's position."""
    parts = []
    positions: dict[bytes, int] = {}
    position = offset
    for record in records:
        if not MIN_RECORD_BYTES <= len(record) <= MAX_RECORD_BYTES:
            raise ValueError(f"a record of {len(record)} bytes cannot be stored in DFS20")
        parts.append(int4_to_str(len(record)) + record)
        positions[record_oid(record)] = position
        position += LENGTH_BYTES + len(record)
    parts.append(TERMINATOR)
    transaction = b"".join(parts)
    assert len(transaction) == position + LENGTH_BYTES - offset
    return transaction, positions


def checked_record(oid: bytes, record: bytes) -> bytes:
    """``record`` as bytes after checking it is a well-formed record of ``oid``."""
    stored_oid, _data, _refs = unpack_record(bytes(record))
    if stored_oid != oid:
        raise ValueError(f"record for oid {stored_oid!r} stored under oid {oid!r}")
    if len(record) > MAX_RECORD_BYTES:
        raise ValueError(f"a record of {len(record)} bytes cannot be stored in DFS20")
    return bytes(record)


def straddles_sector(offset: int, size_bytes: int = LENGTH_BYTES) -> bool:
    """True when ``size_bytes`` bytes at ``offset`` would cross a 512-byte boundary."""
    return offset % SECTOR_BYTES > SECTOR_BYTES - size_bytes


def is_interrupted_creation(content: bytes) -> bool:
    """True for the remains of a new-file write cut short (a prefix, zeros where lost).

    Also covers Durus 4.3's creation cut before it patched the index offset.
    """
    if not content or len(content) > len(NEW_FILE_BYTES) or content == NEW_FILE_BYTES:
        return False
    pairs = zip(content, NEW_FILE_BYTES[: len(content)], strict=True)
    return all(byte in (0, expected) for byte, expected in pairs)


@dataclass
class TailProblem:
    """Why the scan stopped before the end of the file."""

    unfinished: bool  # True: a final transaction cut short or still in progress
    transaction_offset: int  # where the bad transaction starts (the truncation point)
    offset: int  # where the problem was found
    reason: str


@dataclass
class ScanResult:
    """What the transactions after the index record add to it."""

    index: dict[bytes, int] = field(default_factory=dict)
    end: int = 0  # end of the last complete transaction
    problem: TailProblem | None = None


class _ChunkReader:
    """Reads through ``read_at`` in large chunks, so a scan is not one call per record."""

    def __init__(self, read_at: Callable[[int, int], bytes]) -> None:
        self.read_at = read_at
        self.chunk_offset = 0
        self.chunk = b""

    def read(self, offset: int, size_bytes: int) -> bytes:
        start = offset - self.chunk_offset
        if start < 0 or start + size_bytes > len(self.chunk):
            self.chunk_offset = offset
            self.chunk = self.read_at(offset, max(size_bytes, SCAN_CHUNK_BYTES))
            start = 0
        return self.chunk[start : start + size_bytes]


def scan_transactions(
    read_at: Callable[[int, int], bytes], start: int, file_end: int
) -> ScanResult:
    """Index the complete transactions from ``start``; describe any bad tail."""
    reader = _ChunkReader(read_at)
    result = ScanResult(end=start)
    pending: list[tuple[bytes, int]] = []
    position = start
    while True:
        head = reader.read(position, LENGTH_BYTES + RECORD_HEADER_BYTES)
        if position == file_end and position == result.end:
            return result
        problem = _check_entry(head, position, result.end, file_end)
        if problem is not None:
            result.problem = problem
            return result
        length = str_to_int4(head[:LENGTH_BYTES])
        if length == 0:
            result.index.update(pending)
            pending = []
            position += LENGTH_BYTES
            result.end = position
        else:
            pending.append((head[LENGTH_BYTES : LENGTH_BYTES + OID_SIZE_BYTES], position))
            position += LENGTH_BYTES + length


def _check_entry(
    head: bytes, position: int, transaction_offset: int, file_end: int
) -> TailProblem | None:
    """The problem with the entry at ``position`` (a length and a record header), if any."""

    def unfinished(reason: str) -> TailProblem:
        return TailProblem(True, transaction_offset, position, reason)

    if len(head) < LENGTH_BYTES:
        return unfinished("the file ends where a record length or terminator belongs")
    length = str_to_int4(head[:LENGTH_BYTES])
    if length == 0:
        return None
    if head[:LENGTH_BYTES] == IN_PROGRESS_MARKER and position == transaction_offset:
        return unfinished("the transaction was never completed (in-progress marker)")
    if length < MIN_RECORD_BYTES:
        return TailProblem(False, transaction_offset, position, f"record length {length} < 12")
    if position + LENGTH_BYTES + length > file_end:
        return unfinished(f"a record of {length} bytes runs past the end of the file")
    data_bytes = str_to_int4(head[LENGTH_BYTES + OID_SIZE_BYTES :])
    refs_bytes = length - RECORD_HEADER_BYTES - data_bytes
    if refs_bytes < 0 or refs_bytes % OID_SIZE_BYTES:
        reason = f"record of {length} bytes has a data length of {data_bytes}"
        return TailProblem(False, transaction_offset, position, reason)
    return None


# ---------------------------------------------------------------------------
# The storage


class FileStorage2(Storage):
    """A storage in one DFS20 file. See the module docstring for what differs from Durus."""

    MAGIC = MAGIC
    _PACK_INCREMENT = 20

    def __init__(
        self,
        file: str | os.PathLike[str] | File | None = None,
        readonly: bool = False,
        repair: bool = False,
        fsync: bool = True,
        file_system: FileSystem | None = None,
    ) -> None:
        if file is None and (readonly or repair):
            raise StorageUsageError("a temporary FileStorage2 cannot be read-only or repaired")
        self.fsync = fsync
        self.pending_records: dict[bytes, bytes] = {}
        self.pack_extra: list[bytes] | None = None
        self.invalid: set[bytes] = set()
        self.index: dict[bytes, int] = {}
        self.oid = -1
        # Where a failed commit began, when cutting it away failed too: the next commit
        # cuts there first (a commit appended after its bytes would be lost on open).
        self.failed_commit_at: int | None = None
        self.fp = self._open_file(file, readonly, file_system)
        try:
            self._read_file(repair)
        except BaseException:
            if not isinstance(file, File):
                self.fp.close()
            raise
        self.oid = max((str_to_int8(oid) for oid in self.index), default=-1)
        assert self.fp.size() >= len(NEW_FILE_BYTES) or self.fp.is_readonly()

    @staticmethod
    def _open_file(
        file: str | os.PathLike[str] | File | None, readonly: bool, file_system: FileSystem | None
    ) -> File:
        if isinstance(file, File):
            if readonly and not file.is_readonly():
                raise StorageUsageError("readonly=True needs a File opened read-only")
            return file
        if file is None:
            return File(None, file_system=file_system, prefix="durus_dfs20_")
        name = os.fspath(file)
        refuse_interrupted_pack(name, readonly, file_system)
        return File(name, readonly=readonly, file_system=file_system)

    # -- opening

    def _read_file(self, repair: bool) -> None:
        size = self.fp.size()
        head = self.fp.read_at(0, len(NEW_FILE_BYTES) + 1)
        if size == 0 or is_interrupted_creation(head):
            if not self.fp.is_readonly():
                self._write_new_file()
            return
        index_end = self._read_index(size)
        result = scan_transactions(self.fp.read_at, index_end, size)
        self.index.update(result.index)
        if result.problem is not None:
            self._handle_tail(result.problem, size, repair)

    def _write_new_file(self) -> None:
        self.fp.truncate_at(0)
        self.fp.write_at(0, NEW_FILE_BYTES)
        if self.fsync:
            self.fp.fsync()
            if not self.is_temporary():  # make the new name itself durable
                directory = os.path.dirname(os.path.abspath(self.get_filename()))
                self.fp.file_system.sync_directory(directory)
        assert self.fp.read_at(0, len(NEW_FILE_BYTES) + 1) == NEW_FILE_BYTES

    def _read_index(self, size: int) -> int:
        """Load the index record into ``self.index``; return the offset just after it."""
        header = self.fp.read_at(0, HEADER_BYTES)
        if header[: len(MAGIC)] != MAGIC:
            raise NotADFS20FileError(
                f"{self.fp.get_name()!r} is not a DFS20 file (starts {header[:8]!r})",
                self.fp.get_name(),
                0,
            )
        index_offset = str_to_int8(header[INDEX_OFFSET_AT:]) if len(header) == HEADER_BYTES else 0
        if not HEADER_BYTES <= index_offset <= size - 8:
            raise self._damage(INDEX_OFFSET_AT, f"index offset {index_offset} is outside the file")
        compressed_bytes = str_to_int8(self.fp.read_at(index_offset, 8))
        index_end = index_offset + 8 + compressed_bytes
        if index_end > size:
            raise self._damage(index_offset, f"index record of {compressed_bytes} bytes overruns")
        limit = (index_offset // (LENGTH_BYTES + MIN_RECORD_BYTES) + 1) * (
            MAX_PICKLED_BYTES_PER_INDEX_ENTRY
        )
        try:
            index = decode_index(self.fp.read_at(index_offset + 8, compressed_bytes), limit)
        except ValueError as error:
            raise self._damage(index_offset, str(error)) from None
        bad = [
            oid for oid, at in index.items() if at + LENGTH_BYTES + MIN_RECORD_BYTES > index_offset
        ]
        if bad:
            raise self._damage(index_offset, f"index places oid {bad[0]!r} after the index")
        self.index = index
        return index_end

    def _damage(self, offset: int, reason: str) -> FileFormatError:
        name = self.fp.get_name()
        return FileFormatError(f"{name!r} is damaged at offset {offset}: {reason}", name, offset)

    def _handle_tail(self, problem: TailProblem, size: int, repair: bool) -> None:
        """Drop an unfinished final transaction; damage needs ``repair``."""
        if not problem.unfinished and not repair:
            raise self._damage(
                problem.offset,
                f"{problem.reason} (transaction at {problem.transaction_offset}); "
                "open with repair=True to truncate the file there",
            )
        action = "ignoring" if self.fp.is_readonly() else "truncating"
        logger.warning(
            "%s: %s the %s transaction at offset %s (%s bytes): %s",
            self.fp.get_name(),
            action,
            "unfinished final" if problem.unfinished else "damaged",
            problem.transaction_offset,
            size - problem.transaction_offset,
            problem.reason,
        )
        if not self.fp.is_readonly():
            self.fp.truncate_at(problem.transaction_offset)
            if self.fsync:
                self.fp.fsync()
            assert self.fp.size() == problem.transaction_offset

    # -- queries

    def __str__(self) -> str:
        return f"FileStorage2({self.get_filename()!r})"

    __repr__ = __str__

    @classmethod
    def has_format(cls, file: Any) -> bool:
        """True when the file-like object (or File) starts with the DFS20 magic."""
        if hasattr(file, "read_at"):
            return bool(file.read_at(0, len(MAGIC)) == MAGIC)
        file.seek(0)
        return bool(file.read(len(MAGIC)) == MAGIC)

    def get_filename(self) -> str:
        return str(self.fp.get_name())

    def is_temporary(self) -> bool:
        return bool(self.fp.is_temporary())

    def is_readonly(self) -> bool:
        return bool(self.fp.is_readonly())

    # -- the Storage interface

    def new_oid(self) -> bytes:
        self.oid += 1
        oid = int8_to_str(self.oid)
        assert oid not in self.index
        return oid

    def load(self, oid: bytes) -> bytes:
        """The record of ``oid``; DurusKeyError when there is none (also after a pack)."""
        position = self.index.get(check_oid(oid))
        if position is None:
            raise DurusKeyError(oid)
        head = self.fp.read_at(position, LENGTH_BYTES)
        record = b""
        if len(head) == LENGTH_BYTES:
            record = self.fp.read_at(position + LENGTH_BYTES, str_to_int4(head))
        if len(record) < MIN_RECORD_BYTES or record_oid(record) != oid:
            raise self._damage(position, f"the record of oid {oid!r} is not there")
        assert len(record) == str_to_int4(head)
        return record

    def begin(self) -> None:
        """Start a transaction: records left pending by a failed commit are discarded."""
        self.pending_records.clear()

    def store(self, oid: bytes, record: bytes) -> None:
        """Add ``record`` to the pending transaction; ValueError for a malformed one."""
        oid = check_oid(oid)
        self.pending_records[oid] = checked_record(oid, record)

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Append the pending records as one transaction (durable on return when fsync)."""
        records = self.pending_records
        self.pending_records = {}
        if self.is_readonly():
            raise ReadOnlyFileError(f"{self} is read-only: cannot commit")
        if not records:
            return
        positions = self._append_transaction(list(records.values()))
        self.index.update(positions)
        self.oid = max(self.oid, *(str_to_int8(oid) for oid in records))
        if self.pack_extra is not None:
            self.pack_extra.extend(records)
        log(20, "Transaction at [%s] end=%s", datetime.now(), self.fp.size())

    def _append_transaction(self, records: list[bytes]) -> dict[bytes, int]:
        """Write one transaction at the end of the file in the order the docstring proves."""
        if self.failed_commit_at is not None:
            self._cut_failed_commit(self.failed_commit_at)
        end = self.fp.size()
        pad = TERMINATOR if self.fsync and straddles_sector(end) else b""
        start = end + len(pad)
        transaction, positions = encode_transaction(records, start)
        try:
            if self.fsync:
                self.fp.write_at(end, pad + IN_PROGRESS_MARKER)
                self.fp.fsync()
                self.fp.write_at(start + LENGTH_BYTES, transaction[LENGTH_BYTES:])
                self.fp.fsync()
                self.fp.write_at(start, transaction[:LENGTH_BYTES])
                self.fp.fsync()
            else:
                self.fp.write_at(start, transaction)
        except BaseException:
            self._undo_append(end)
            raise
        assert self.fp.read_at(start, LENGTH_BYTES) == transaction[:LENGTH_BYTES]
        return positions

    def _undo_append(self, end: int) -> None:
        """Best effort after a failed write: cut the partial transaction away, durably.

        A failed commit must not come back after a power cut, even if all of it
        reached the disk before the error (say, only the last fsync failed).
        """
        try:
            self._cut_failed_commit(end)
        except OSError:
            self.failed_commit_at = end
            logger.error("%s: could not truncate a failed commit at %s", self, end)

    def _cut_failed_commit(self, end: int) -> None:
        """Truncate the file to ``end``, durably; OSError if that fails."""
        self.fp.truncate_at(end)
        if self.fsync:
            self.fp.fsync()
        self.failed_commit_at = None
        assert self.fp.size() == end

    def sync(self) -> list[bytes]:
        """Oids removed by packs since the last call."""
        invalid = list(self.invalid)
        self.invalid.clear()
        return invalid

    def close(self) -> None:
        self.fp.close()

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **ignored: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every indexed record in file order (``start_oid`` None), else those reachable."""
        if start_oid is not None:
            return Storage.gen_oid_record(self, start_oid, batch_size)
        return self._gen_all_records()

    def _gen_all_records(self) -> Iterator[tuple[bytes, bytes]]:
        for oid, _position in sorted(self.index.items(), key=lambda item: item[1]):
            if oid in self.index:
                yield oid, self.load(oid)

    # -- pack and rewrite

    def get_packer(self) -> Iterator[Any]:
        """An incremental packer, or an empty iterator when a pack cannot run now."""
        if (
            self.pending_records
            or self.pack_extra is not None
            or self.is_temporary()
            or self.is_readonly()
        ):
            return iter(())
        return self._packer()

    def pack(self) -> None:
        for _step in self.get_packer():
            pass

    def _packer(self) -> Iterator[None]:
        """The pack; the pack state is set by its first step, so an unused packer costs nothing."""
        if self.pack_extra is not None:
            return  # another packer got going first
        self.pack_extra = []
        pack_file: File | None = None
        finished = False
        try:
            pack_file = self._new_pack_file()
            writer = _RewriteWriter(pack_file)
            for count, (oid, record) in enumerate(self._gen_live_records(), 1):
                writer.add(oid, record)
                if count % self._PACK_INCREMENT == 0:
                    writer.flush()
                    yield None
            self._switch_to(writer.finish(), writer.index)
            finished = True
        finally:
            if not finished:
                self._abandon_pack(pack_file)

    def _new_pack_file(self) -> File:
        if self.is_temporary():
            return File(None, file_system=self.fp.file_system, prefix="durus_dfs20_")
        pack_file = File(self.get_filename() + ".pack", file_system=self.fp.file_system)
        pack_file.truncate_at(0)
        return pack_file

    def _gen_live_records(self) -> Iterator[tuple[bytes, bytes]]:
        """Reachable records, oldest position first; oids committed meanwhile go first (LIFO).

        Reads ``self.pack_extra`` and ``self.index`` afresh at every step, because
        commits may happen between the packer's steps.
        """
        heap: list[tuple[int, bytes]] = [(0, ROOT_OID)]
        seen: set[bytes] = set()
        while True:
            if self.pack_extra:
                oid = self.pack_extra.pop()
            elif heap:
                oid = heapq.heappop(heap)[1]
                if oid in seen:
                    continue
            else:
                return
            seen.add(oid)
            if oid not in self.index:
                continue  # a dangling reference: nothing to copy
            record = self.load(oid)
            for ref in record_refs(record):
                if ref not in seen and ref in self.index:
                    heapq.heappush(heap, (self.index[ref], ref))
            yield oid, record

    def _switch_to(self, new_file: File, new_index: dict[bytes, int]) -> None:
        """Make the rewritten file the storage file (atomic rename) and use it."""
        name = self.get_filename()
        if not self.is_temporary():
            try:
                new_file.rename(name)
            except OSError as error:
                if new_file.get_name() != name:
                    raise  # not renamed: the old file is still the storage
                # Renamed, not yet durable: the new file is the storage now, and its
                # next fsync (before any commit is acknowledged) retries the directory.
                log(30, "%s: directory fsync after the pack failed (%s)", self, error)
        old_file, self.fp = self.fp, new_file
        old_file.close()
        self.failed_commit_at = None  # its bytes stay behind in the old file
        self.invalid.update(oid for oid in self.index if oid not in new_index)
        self.index = new_index
        self.pack_extra = None
        fs = new_file.file_system
        if not self.is_temporary() and fs.exists(name + ".prepack"):
            fs.remove(name + ".prepack")
            fs.sync_directory(os.path.dirname(os.path.abspath(name)))

    def _abandon_pack(self, pack_file: File | None) -> None:
        self.pack_extra = None
        abandon_pack_file(pack_file, self.get_filename())

    def create_from_records(self, oid_records: Iterable[tuple[bytes, bytes]]) -> None:
        """Replace the whole file by one holding these ``(oid, record)`` pairs."""
        if self.is_readonly():
            raise ReadOnlyFileError(f"{self} is read-only: cannot rewrite it")
        if self.pending_records or self.pack_extra is not None:
            raise StorageUsageError(f"{self}: cannot rewrite with a commit or pack in progress")
        new_file: File | None = None
        try:
            new_file = self._new_pack_file()
            writer = _RewriteWriter(new_file)
            for oid, record in oid_records:
                writer.add(check_oid(oid), checked_record(oid, record))
            self._switch_to(writer.finish(), writer.index)
            new_file = None
        finally:
            if new_file is not None:
                self._abandon_pack(new_file)
        self.oid = max([self.oid, *(str_to_int8(oid) for oid in self.index)])


class _RewriteWriter:
    """Writes a packed DFS20 file: header, one transaction, the index record, the offset."""

    def __init__(self, file: File) -> None:
        self.file = file
        self.index: dict[bytes, int] = {}
        self.buffer: list[bytes] = [MAGIC + int8_to_str(0)]
        self.end = 0  # bytes already written
        self.buffered_bytes = HEADER_BYTES

    def add(self, oid: bytes, record: bytes) -> None:
        assert record_oid(record) == oid
        entry = int4_to_str(len(record)) + record
        self.index[oid] = self.end + self.buffered_bytes
        self.buffer.append(entry)
        self.buffered_bytes += len(entry)

    def flush(self) -> None:
        data = b"".join(self.buffer)
        assert len(data) == self.buffered_bytes
        self.file.write_at(self.end, data)
        self.end += len(data)
        self.buffer = []
        self.buffered_bytes = 0

    def finish(self) -> File:
        """Write the terminator, the index record and the index offset; fsync (always)."""
        self.buffer.append(TERMINATOR)
        self.buffered_bytes += LENGTH_BYTES
        self.flush()
        index_offset = self.end
        self.buffer.append(encode_index_record(self.index))
        self.buffered_bytes += len(self.buffer[-1])
        self.flush()
        self.file.write_at(INDEX_OFFSET_AT, int8_to_str(index_offset))
        self.file.fsync()
        assert str_to_int8(self.file.read_at(INDEX_OFFSET_AT, 8)) == index_offset
        return self.file
