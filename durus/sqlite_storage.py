"""SqliteStorage: object records kept as rows of an SQLite database.

Owns the SQLite layout of FORMATS.md section 7: one table ``objects(id integer
primary key, data blob, refs blob)``, one row per live object, rebuilt into
the record ``oid | int4 len(data) | data | refs`` on load. Every commit is one
SQLite transaction of INSERT OR REPLACE statements, so SQLite's journal makes
it all-or-nothing. Uses only the standard library's sqlite3.

It must never hand out an oid that already has a row, never report success
for a commit SQLite did not commit, and never let a pack drop a row silently:
removed oids are reported through sync(). Durus 4.3 got all three wrong
(API.md section 23, warts 22 and 23; FORMATS.md 9.2).

Decisions:
- ``readonly=True`` opens the database through SQLite's read-only URI mode
  (Durus 4.3 raised NotImplementedError). A read-only storage refuses commits
  (ReadOnlyFileError, an AssertionError like File's) and its packer is empty,
  as with FileStorage; it sees later commits of a writer (SQLite reads are
  live), but it is never told which objects changed: use it for snapshots
  and tools, not beside a writer whose changes it must notice.
- ``repair`` is accepted and ignored: SQLite repairs its own journal.
- A writable open also takes the exclusive advisory lock FileStorage takes
  (through durus.file.File), so a second writer fails at once with
  BlockingIOError instead of silently allocating the same oids. The lock fd
  stays open until close(), after SQLite's connection is closed, so SQLite's
  own POSIX locks are never dropped by closing it.
- Oids must be below 2**63 (SQLite integers are signed 64-bit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from durus.error import DurusKeyError
from durus.file import File, ReadOnlyFileError
from durus.logger import log
from durus.record import (
    MAX_ROW_OID,
    oid_to_row_id,
    record_refs,
    record_to_row,
    row_to_record,
)
from durus.storage import InvalidationHandler, Packer, Storage
from durus.utils import ROOT_OID, check_oid, int8_to_str, str_to_int8

TABLE_SQL = (
    "CREATE TABLE objects (\n    id integer primary key,\n    data blob,\n    refs blob\n    )"
)
CREATE_SCRIPT = f"BEGIN TRANSACTION;\n{TABLE_SQL};\nCOMMIT;"
MAX_SQLITE_OID = MAX_ROW_OID
SCAN_BATCH_ROWS = 500
BUSY_TIMEOUT_S = 5.0


# The row form of a record lives in durus.record (shared with PostgresStorage).
oid_to_id = oid_to_row_id


class SqliteStorage(Storage):
    """Records in an SQLite database file; one row per object."""

    _PACK_INCREMENT = 100

    def __init__(self, filename: str | Path, readonly: bool = False, repair: bool = False) -> None:
        self.filename = str(filename)
        self.readonly = bool(readonly)
        self.pending_records: list[tuple[bytes, bytes]] = []
        self.pack_extra: set[bytes] | None = None
        self.invalid: set[bytes] = set()
        self.lock_file: File | None = None
        self.connection: sqlite3.Connection | None = None
        try:
            self._open()
            self.oid = self._next_free_id()
        except BaseException:
            self.close()
            raise
        assert self.connection is not None

    def _open(self) -> None:
        path = Path(self.filename)
        if self.readonly:
            if not path.exists():
                raise FileNotFoundError(f'No "{self.filename}" found.')
            uri = path.absolute().as_uri() + "?mode=ro"
            self.connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            self.lock_file = File(self.filename)  # creates a missing file
            self.lock_file.obtain_lock()
            self.connection = sqlite3.connect(
                self.filename, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
        self._check_schema(is_new=path.stat().st_size == 0)

    def _check_schema(self, is_new: bool) -> None:
        """Create the table in a new database, or check an existing one has it."""
        try:
            if is_new and not self.readonly:
                self._db.executescript(CREATE_SCRIPT)
            columns = [r[1] for r in self._db.execute("PRAGMA table_info(objects)")]
        except sqlite3.DatabaseError as error:
            raise ValueError(
                f"{self.filename!r} is not a usable SQLite database: {error}"
            ) from None
        if columns[:3] != ["id", "data", "refs"]:
            raise ValueError(f"{self.filename!r} has no Durus objects(id, data, refs) table")

    @property
    def _db(self) -> sqlite3.Connection:
        if self.connection is None:
            raise ValueError(f"{self} is closed")
        return self.connection

    def _next_free_id(self) -> int:
        """One past the highest row id, 0 for an empty table (warts 22 and 23)."""
        (highest,) = self._db.execute("SELECT max(id) FROM objects").fetchone()
        if highest is not None and not 0 <= highest <= MAX_SQLITE_OID:
            raise ValueError(f"{self.filename!r}: row id {highest} is not an oid")
        return 0 if highest is None else highest + 1

    def __str__(self) -> str:
        return f"SqliteStorage({self.filename!r})"

    def get_filename(self) -> str:
        return self.filename

    def is_temporary(self) -> bool:
        return False

    def is_readonly(self) -> bool:
        return self.readonly

    def new_oid(self) -> bytes:
        if self.oid > MAX_SQLITE_OID:
            raise ValueError("no oids left below 2**63 for SQLite")
        oid = int8_to_str(self.oid)
        self.oid += 1
        return oid

    def load(self, oid: bytes) -> bytes:
        row = self._db.execute(
            "SELECT data, refs FROM objects WHERE id = ?", (oid_to_id(oid),)
        ).fetchone()
        if row is None:
            raise DurusKeyError(oid)
        return row_to_record(str_to_int8(oid), row[0], row[1])

    def begin(self) -> None:
        self.pending_records = []

    def store(self, oid: bytes, record: bytes) -> None:
        record_to_row(oid, record)  # validates before anything is kept
        self.pending_records.append((bytes(oid), bytes(record)))

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Write every pending record in one SQLite transaction."""
        pending, self.pending_records = self.pending_records, []
        self._check_writable("commit")
        if not pending:
            return
        rows = [record_to_row(oid, record) for oid, record in pending]
        self._write_rows("INSERT OR REPLACE INTO objects (id, data, refs) VALUES (?, ?, ?)", rows)
        if self.pack_extra is not None:
            self.pack_extra.update(oid for oid, _record in pending)
        self.oid = max([self.oid] + [row[0] + 1 for row in rows])
        log(20, "Transaction at [%s] %s rows", datetime.now(), len(rows))

    def _check_writable(self, action: str) -> None:
        if self.readonly:
            raise ReadOnlyFileError(f"cannot {action}: {self} is read-only")

    def _write_rows(self, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Run ``statement`` for every row inside one SQLite transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(statement, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        assert not db.in_transaction

    def sync(self) -> list[bytes]:
        """Oids removed by packs since the last call."""
        invalid = sorted(self.invalid)
        self.invalid.clear()
        return invalid

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.lock_file is not None:
            self.lock_file.close()
            self.lock_file = None

    def create_from_records(self, oid_records: Iterable[tuple[bytes, bytes]]) -> None:
        """Fill an empty database with ``(oid, record)`` pairs in one transaction."""
        self._check_writable("create_from_records")
        if self._next_free_id() != 0:
            raise ValueError(f"create_from_records needs an empty database, {self} has rows")
        rows = [record_to_row(oid, record) for oid, record in oid_records]
        self._write_rows("INSERT OR REPLACE INTO objects (id, data, refs) VALUES (?, ?, ?)", rows)
        self.oid = max([self.oid] + [row[0] + 1 for row in rows])

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **ignored: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every row in oid order when ``start_oid`` is None; else a depth-first walk from it."""
        if start_oid is None:
            return self._gen_all_rows()
        return self._gen_reachable(check_oid(start_oid))

    def _gen_all_rows(self) -> Iterator[tuple[bytes, bytes]]:
        """All rows, read in id-ordered batches so no cursor stays open across yields."""
        after = -1
        while True:
            rows = self._db.execute(
                "SELECT id, data, refs FROM objects WHERE id > ? ORDER BY id LIMIT ?",
                (after, SCAN_BATCH_ROWS),
            ).fetchall()
            for row_id, data, refs in rows:
                yield int8_to_str(row_id), row_to_record(row_id, data, refs)
            if len(rows) < SCAN_BATCH_ROWS:
                return
            after = rows[-1][0]

    def _gen_reachable(
        self, start_oid: bytes, seen: set[bytes] | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Depth-first over refs from ``start_oid``, adding to ``seen``; dangling refs skipped."""
        seen = set() if seen is None else seen
        seen.add(start_oid)
        stack = [start_oid]
        while stack:
            oid = stack.pop()
            try:
                record = self.load(oid)
            except KeyError:
                continue
            for ref in record_refs(record):
                if ref not in seen:
                    seen.add(ref)
                    stack.append(ref)
            yield oid, record

    def get_packer(self) -> Packer:
        """A generator that removes rows unreachable from the root, step by step."""
        if self.readonly or self.pending_records or self.pack_extra is not None:
            return iter(())
        return self._gen_pack_steps()

    def pack(self) -> None:
        for _step in self.get_packer():
            pass

    def _gen_pack_steps(self) -> Iterator[Any]:
        """Mark, then delete. The pack state is reset however the generator ends (wart 16).

        The state is set by the first step, so a packer that is never run costs nothing.
        """
        if self.pack_extra is not None:
            return  # another packer got going first
        self.pack_extra = set()
        try:
            yield f"started {datetime.now()}"
            reachable: set[bytes] = set()
            for count, _item in enumerate(self._gen_reachable(ROOT_OID, reachable), 1):
                if count % self._PACK_INCREMENT == 0:
                    yield None
            assert self.pack_extra is not None
            for oid in list(self.pack_extra):  # committed during the pack: keep them
                for _item in self._gen_reachable(oid, reachable):
                    pass
            removed = self._delete_unreachable(reachable)
            yield f"finished {datetime.now()}, {len(reachable)} live objects, {removed} removed"
        finally:
            self.pack_extra = None

    def _delete_unreachable(self, reachable: set[bytes]) -> int:
        """Delete every row not in ``reachable``; note them for sync(). Returns the count."""
        doomed = [
            row_id
            for (row_id,) in self._db.execute("SELECT id FROM objects WHERE id >= 0")
            if int8_to_str(row_id) not in reachable
        ]
        self._write_rows("DELETE FROM objects WHERE id = ?", [(row_id,) for row_id in doomed])
        self.invalid.update(int8_to_str(row_id) for row_id in doomed)
        assert all(int8_to_str(row_id) in self.invalid for row_id in doomed)
        return len(doomed)
