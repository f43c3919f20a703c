"""PostgresStorage: many clients on one PostgreSQL database, with no Durus server between.

Owns the PostgreSQL layout (schema version 1, created on first use) and the
client side of the multi-client rules that ``durus -s`` enforces for its
clients (PROTOCOL.md sections 3-5), re-expressed over a shared transaction log:

* ``durus_meta``: one row (``id = 1``) with ``schema_version`` and
  ``pruned_through`` (log rows with ``tid <= pruned_through`` may be gone).
  Locking this row ``FOR UPDATE`` is the commit lock: every commit and pack
  writes its log row while holding it, so log ``tid`` order is commit order.
* ``durus_objects(oid bigint primary key, data bytea, refs bytea)``: the
  current record of every object, rebuilt as ``oid | int4 len(data) | data |
  refs`` on load.
* ``durus_log(tid bigserial primary key, kind, oids bigint[], committed_at)``:
  one row per committed transaction (kind ``C``) with the oids it wrote, and
  one per pack with the oids it removed (kind ``P``, then ``R`` once reported).
* ``durus_oid_seq``: the oid sequence (starts at 0, so the root of an empty
  database is oid 0); each storage takes ``oid_pool_size`` oids per request.
* ``durus_clients(client_id, last_tid, seen_at)``: what every open storage has
  seen, for pruning the log.

Each storage remembers ``last_tid``, the newest log row whose oids it has
reported. Its *invalid set* (the server's per-client set) is the oids of the
log rows after ``last_tid``: ``load`` of such an oid raises ReadConflictError;
``sync`` returns them and advances ``last_tid``; ``end`` reports them to the
connection's handler before writing, then takes the commit lock, reports any
that arrived meanwhile, writes, and sets ``last_tid`` to its own row (nothing
older is skipped: everything before it was reported under the lock). Without
a handler (a server in front, a tool) a commit that finds any is refused with
WriteConflictError, as a server answers 'I'. As in the server, a pack's
removals join every invalid set only at the next sync or commit by any
client (its row turns from ``P`` to ``R``; storages opened meanwhile get them
too): until then a load of a removed oid just finds nothing.

Log pruning (``prune_log``, run by pack and every ``prune_every_commits``
commits): rows are deleted up to the oldest ``last_tid`` of the storages seen
within ``log_retention_s``, and rows older than ``log_retention_s`` are
deleted whatever any storage has seen. A storage whose ``last_tid`` is below
``pruned_through`` has missed invalidations it can no longer list: its next
``sync``/``end``/``load`` reports every oid in the database (the connection
ghosts its whole cache), never nothing.

Must never report a commit that PostgreSQL did not commit, never let two
commits interleave between the conflict check and the write, never skip
another client's log row, and never open a schema newer than it knows.
One storage is one PostgreSQL connection and is not thread-safe: give each
thread its own storage. psycopg 3 is imported only when a storage is made,
so ``import durus`` stays stdlib-only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from durus.error import (
    ConflictError,
    DurusError,
    DurusKeyError,
    ReadConflictError,
    WriteConflictError,
)
from durus.logger import log
from durus.record import (
    MAX_ROW_OID,
    oid_to_row_id,
    record_to_row,
    row_to_record,
)
from durus.storage import InvalidationHandler, Packer, Storage
from durus.utils import ROOT_OID, check_oid, int8_to_str, str_to_int8

SCHEMA_VERSION = 1
MAX_PG_OID = MAX_ROW_OID
DEFAULT_OID_POOL_SIZE = 32
MAX_OID_POOL_SIZE = 10_000
DEFAULT_LOG_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_PRUNE_EVERY_COMMITS = 1000
PACK_BATCH_OIDS = 1000
MAX_STORE_RECORDS = 10_000_000
CONNECT_TIMEOUT_S = 30
SCHEMA_LOCK_KEY = 0x6475_7275_735F_7367  # advisory lock while creating the schema
PACK_LOCK_KEY = 0x6475_7275_735F_706B  # advisory lock held by the running pack

SCHEMA_SQL = [
    "CREATE TABLE IF NOT EXISTS durus_meta (id integer PRIMARY KEY CHECK (id = 1),"
    " schema_version integer NOT NULL, pruned_through bigint NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS durus_objects (oid bigint PRIMARY KEY CHECK (oid >= 0),"
    " data bytea NOT NULL, refs bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS durus_log (tid bigserial PRIMARY KEY,"
    " kind char(1) NOT NULL CHECK (kind IN ('C', 'P', 'R')), oids bigint[] NOT NULL,"
    " committed_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS durus_log_unreported_packs ON durus_log (tid) WHERE kind = 'P'",
    "CREATE SEQUENCE IF NOT EXISTS durus_oid_seq MINVALUE 0 START 0",
    "CREATE TABLE IF NOT EXISTS durus_clients (client_id bigserial PRIMARY KEY,"
    " last_tid bigint NOT NULL, seen_at timestamptz NOT NULL DEFAULT now())",
    f"INSERT INTO durus_meta (id, schema_version) VALUES (1, {SCHEMA_VERSION})"
    " ON CONFLICT (id) DO NOTHING",
]

# The newest tid every reader may rely on: the log's last row, or the prune mark.
HEAD_TID_SQL = (
    "greatest((SELECT pruned_through FROM durus_meta WHERE id = 1),"
    " (SELECT coalesce(max(tid), 0) FROM durus_log))"
)
# A new storage starts at the head, but also owes its connection the removals of packs
# nobody has reported yet; its durus_clients row keeps those rows from being pruned.
REGISTER_SQL = f"""
WITH head AS (SELECT {HEAD_TID_SQL} AS tid),
late AS (SELECT array(SELECT tid FROM durus_log WHERE kind = 'P' ORDER BY tid) AS tids),
registered AS (
    INSERT INTO durus_clients (last_tid)
    SELECT least((SELECT tid FROM head),
                 coalesce((SELECT tids[1] - 1 FROM late), (SELECT tid FROM head)))
    RETURNING client_id)
SELECT (SELECT client_id FROM registered), (SELECT tid FROM head), (SELECT tids FROM late)
"""
REREGISTER_SQL = "INSERT INTO durus_clients (last_tid) VALUES (%s) RETURNING client_id"
# One snapshot: the prune mark, the newest row after last_tid and the oids of those rows;
# the storage's row in durus_clients is brought up to date in the same statement.
CHANGES_SQL = """
WITH changes AS (
    SELECT tid, oids FROM durus_log WHERE tid > %(last)s OR tid = ANY(%(late)s::bigint[])),
reported AS (UPDATE durus_log SET kind = 'R' WHERE kind = 'P' RETURNING 1),
touched AS (
    UPDATE durus_clients SET seen_at = now(),
        last_tid = greatest(last_tid, coalesce((SELECT max(tid) FROM changes), %(last)s))
    WHERE client_id = %(client)s RETURNING 1)
SELECT (SELECT pruned_through FROM durus_meta WHERE id = 1),
    (SELECT max(tid) FROM changes),
    array(SELECT DISTINCT unnest(oids) FROM changes),
    (SELECT count(*) FROM touched), (SELECT count(*) FROM reported)
"""
EVERYTHING_SQL = f"""
SELECT {HEAD_TID_SQL},
    array(SELECT oid FROM durus_objects UNION SELECT unnest(oids) FROM durus_log)
"""
# Records of the wanted oids and, from the same snapshot, whether each is invalid.
LOAD_SQL = """
WITH wanted AS (SELECT unnest(%(oids)s::bigint[]) AS oid),
changed AS (SELECT DISTINCT unnest(oids) AS oid FROM durus_log
    WHERE (tid > %(last)s OR tid = ANY(%(late)s::bigint[])) AND kind IN ('C', 'R'))
SELECT w.oid, o.data, o.refs,
    w.oid IN (SELECT oid FROM changed)
    OR (SELECT pruned_through FROM durus_meta WHERE id = 1) > %(last)s
FROM wanted w LEFT JOIN durus_objects o ON o.oid = w.oid
"""
COMMIT_LOCK_SQL = "SELECT pruned_through FROM durus_meta WHERE id = 1 FOR UPDATE"
UPSERT_SQL = (
    "INSERT INTO durus_objects (oid, data, refs) VALUES (%s, %s, %s)"
    " ON CONFLICT (oid) DO UPDATE SET data = EXCLUDED.data, refs = EXCLUDED.refs"
)
APPEND_LOG_SQL = """
WITH logged AS (INSERT INTO durus_log (kind, oids) VALUES (%(kind)s, %(oids)s) RETURNING tid),
touched AS (
    UPDATE durus_clients SET last_tid = (SELECT tid FROM logged), seen_at = now()
    WHERE client_id = %(client)s AND %(kind)s = 'C' RETURNING 1)
SELECT (SELECT tid FROM logged), (SELECT count(*) FROM touched)
"""
NEW_OIDS_SQL = "SELECT nextval('durus_oid_seq') FROM generate_series(1, %s)"
PRUNE_MARK_SQL = """
SELECT least((SELECT coalesce(max(tid), 0) FROM durus_log), greatest(
    coalesce((SELECT min(last_tid) FROM durus_clients
              WHERE seen_at > now() - make_interval(secs => %(retention)s)),
             (SELECT coalesce(max(tid), 0) FROM durus_log)),
    (SELECT coalesce(max(tid), 0) FROM durus_log
     WHERE committed_at < now() - make_interval(secs => %(retention)s))))
"""


class SchemaVersionError(DurusError):
    """The database holds a Durus schema this version does not know (or no usable one)."""


# The row form of a record lives in durus.record (shared with SqliteStorage).
oid_to_pg = oid_to_row_id


def connect(dsn: str) -> Any:
    """An autocommit psycopg 3 connection; ImportError with the install hint if missing."""
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            'PostgresStorage needs psycopg 3: pip install "durus-verified[postgres]"'
        ) from None
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


def ensure_schema(db: Any) -> int:
    """Create the tables if the database has none; return the schema version found.

    SchemaVersionError for a newer version. Creation runs under an advisory
    lock in one transaction, so concurrent first opens create it once.
    """
    if db.execute("SELECT to_regclass('durus_meta')").fetchone()[0] is None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            for statement in SCHEMA_SQL:
                db.execute(statement)
    row = db.execute("SELECT schema_version FROM durus_meta WHERE id = 1").fetchone()
    if row is None:
        raise SchemaVersionError("durus_meta has no row 1: not a Durus database")
    version = row[0]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has Durus schema version {version!r}; this code knows up to "
            f"{SCHEMA_VERSION}: upgrade durus before opening it"
        )
    assert 1 <= version <= SCHEMA_VERSION
    return version


class PostgresStorage(Storage):
    """Records in PostgreSQL; any number of storages (processes, machines) share them."""

    def __init__(
        self,
        dsn: str,
        oid_pool_size: int = DEFAULT_OID_POOL_SIZE,
        log_retention_s: float = DEFAULT_LOG_RETENTION_S,
        prune_every_commits: int = DEFAULT_PRUNE_EVERY_COMMITS,
    ) -> None:
        if not 1 <= oid_pool_size <= MAX_OID_POOL_SIZE:
            raise ValueError(f"oid_pool_size must be 1..{MAX_OID_POOL_SIZE}, got {oid_pool_size}")
        if not log_retention_s > 0 or prune_every_commits < 1:
            raise ValueError("log_retention_s must be > 0 and prune_every_commits >= 1")
        self.dsn = dsn
        self.oid_pool_size = oid_pool_size
        self.log_retention_s = float(log_retention_s)
        self.prune_every_commits = prune_every_commits
        self.oid_pool: list[bytes] = []
        self.transaction_new_oids: list[bytes] = []
        self.pending_records: dict[bytes, bytes] = {}
        self.unreported: set[bytes] = set()  # delivered by end() without a handler
        self.commits_since_prune = 0
        self.before_commit_lock: Callable[[], None] | None = None  # a test hook
        # Packs before we registered whose removals no one has reported yet: the server
        # gives those to every client, new ones too, at the next sync by anyone.
        self.late_tids: list[int] = []
        self.connection: Any = None
        self.connection = connect(dsn)
        try:
            self.schema_version = ensure_schema(self.connection)
            self.client_id, self.last_tid, self.late_tids = self._db.execute(
                REGISTER_SQL
            ).fetchone()
        except BaseException:
            self.close()
            raise
        assert self.last_tid >= 0

    @property
    def _db(self) -> Any:
        if self.connection is None:
            raise ValueError(f"{self} is closed")
        return self.connection

    def __str__(self) -> str:
        return f"PostgresStorage({_redact(self.dsn)!r})"

    # -- oids

    def new_oid(self) -> bytes:
        if not self.oid_pool:
            rows = self._db.execute(NEW_OIDS_SQL, (self.oid_pool_size,)).fetchall()
            numbers = sorted(number for (number,) in rows)
            if numbers[-1] > MAX_PG_OID:
                raise ValueError("durus_oid_seq is beyond PostgreSQL's bigint range")
            self.oid_pool = [int8_to_str(number) for number in reversed(numbers)]
        oid = self.oid_pool.pop()
        self.transaction_new_oids.append(oid)
        assert len(oid) == 8
        return oid

    # -- loading

    def load(self, oid: bytes) -> bytes:
        for record in self.bulk_load([oid]):
            return record
        # Unreachable: bulk_load yields one record per oid or raises.
        raise AssertionError("bulk_load of one oid yielded nothing")  # pragma: no cover

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """The records of ``oids`` in order, read in one statement; invalid ones raise
        ReadConflictError (as the server answers 'I'), missing ones DurusKeyError."""
        wanted = [check_oid(oid) for oid in oids]
        if not wanted:
            return
        rows = self._db.execute(
            LOAD_SQL,
            {
                "oids": [oid_to_pg(oid) for oid in wanted],
                "last": self.last_tid,
                "late": self.late_tids,
            },
        ).fetchall()
        by_oid = {number: (data, refs, invalid) for number, data, refs, invalid in rows}
        for oid in wanted:
            data, refs, invalid = by_oid[str_to_int8(oid)]
            if invalid or oid in self.unreported:
                raise ReadConflictError([oid])
            if data is None:
                raise DurusKeyError(oid)
            yield row_to_record(str_to_int8(oid), data, refs)

    # -- invalidations

    def _take_changes(self) -> list[bytes]:
        """Oids committed (or packed away) by anyone since ``last_tid``; advances it.

        Everything in the database when this storage has fallen behind the prune mark.
        """
        pruned_through, newest, numbers, touched, _reported = self._db.execute(
            CHANGES_SQL, {"last": self.last_tid, "late": self.late_tids, "client": self.client_id}
        ).fetchone()
        self.late_tids = []
        if not touched:
            self._reregister()
        if pruned_through > self.last_tid:
            log(20, "%s missed pruned log rows: invalidating everything", self)
            newest, numbers = self._db.execute(EVERYTHING_SQL).fetchone()
        before = self.last_tid
        self.last_tid = max(self.last_tid, newest or 0)
        assert self.last_tid >= before
        return [int8_to_str(number) for number in numbers]

    def _reregister(self) -> None:
        """Our durus_clients row was pruned (we were away): add a new one."""
        (self.client_id,) = self._db.execute(REREGISTER_SQL, (self.last_tid,)).fetchone()

    def sync(self) -> list[bytes]:
        """Oids changed by other storages or removed by a pack since the last call."""
        oids = set(self._take_changes())
        oids.update(self.unreported)
        self.unreported.clear()
        return sorted(oids)

    def _report(self, oids: list[bytes], handle_invalidations: InvalidationHandler | None) -> None:
        """Give ``oids`` to the handler (which may raise a conflict). Without a handler
        (a server in front of this storage, or a tool) nobody can judge them: keep them
        for the next sync and refuse the commit if there are any, as the server answers
        'I' (its client will abort, sync and retry)."""
        if handle_invalidations is None:
            self.unreported.update(oids)
            if self.unreported:
                raise WriteConflictError(sorted(self.unreported))
            return
        oids = sorted(set(oids) | self.unreported)
        self.unreported.clear()
        if oids:
            handle_invalidations(oids)

    # -- committing

    def begin(self) -> None:
        self.pending_records = {}
        self.transaction_new_oids = []

    def store(self, oid: bytes, record: bytes) -> None:
        record_to_row(oid, record)  # validates before anything is kept
        if oid in self.pending_records:
            raise ValueError(f"oid {oid!r} stored twice in one transaction")
        if len(self.pending_records) >= MAX_STORE_RECORDS:
            raise ValueError(f"more than {MAX_STORE_RECORDS} records in one transaction")
        self.pending_records[bytes(oid)] = bytes(record)

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Report others' commits, then write the pending records as one PostgreSQL
        transaction under the commit lock. A conflict writes nothing and returns the
        transaction's new oids to the pool."""
        pending, self.pending_records = self.pending_records, {}
        rows = [record_to_row(oid, record) for oid, record in pending.items()]
        try:
            self._report(self._take_changes(), handle_invalidations)
            if not rows:
                return
            if self.before_commit_lock is not None:
                self.before_commit_lock()
            tid = self._write_locked(rows, handle_invalidations)
        except ConflictError:
            self._return_new_oids()
            raise
        self.transaction_new_oids = []
        self.last_tid = tid
        log(20, "Transaction %s at [%s] %s records", tid, datetime.now(), len(rows))
        self.commits_since_prune += 1
        if self.commits_since_prune >= self.prune_every_commits:
            self.prune_log()

    def _write_locked(
        self, rows: list[tuple[int, bytes, bytes]], handle: InvalidationHandler | None
    ) -> int:
        """Lock, report commits that slipped in since the first report, write; the tid."""
        db = self._db
        with db.transaction():
            db.execute(COMMIT_LOCK_SQL)
            self._report(self._take_changes(), handle)
            with db.cursor() as cursor:
                cursor.executemany(UPSERT_SQL, rows)
            tid, touched = db.execute(
                APPEND_LOG_SQL,
                {"kind": "C", "oids": [row[0] for row in rows], "client": self.client_id},
            ).fetchone()
            if not touched:
                self._reregister()
        assert tid > self.last_tid
        return int(tid)

    def _return_new_oids(self) -> None:
        """Put the abandoned transaction's new oids back, to be handed out first again."""
        self.oid_pool.extend(reversed(self.transaction_new_oids))
        self.transaction_new_oids = []

    # -- log pruning

    def prune_log(self) -> int:
        """Delete log rows no storage needs (see the module docstring); the new prune mark."""
        self.commits_since_prune = 0
        retention = {"retention": self.log_retention_s}
        db = self._db
        with db.transaction():
            db.execute(COMMIT_LOCK_SQL)  # first, so pruning never deadlocks with a commit
            (mark,) = db.execute(PRUNE_MARK_SQL, retention).fetchone()
            db.execute("DELETE FROM durus_log WHERE tid <= %s AND kind <> 'P'", (mark,))
            db.execute(
                "UPDATE durus_meta SET pruned_through = greatest(pruned_through, %s) WHERE id = 1",
                (mark,),
            )
            db.execute(
                "DELETE FROM durus_clients"
                " WHERE seen_at < now() - make_interval(secs => %(retention)s)",
                retention,
            )
        log(20, "Pruned the transaction log through tid %s", mark)
        assert mark >= 0
        return int(mark)

    # -- packing

    def get_packer(self) -> Packer:
        """Mark from the root in a snapshot, then, under the commit lock, mark from what
        was committed meanwhile and delete the rest; the removed oids are logged (kind
        'P') so every storage's next sync reports them."""
        return self._gen_pack_steps()

    def pack(self) -> None:
        for _step in self.get_packer():
            pass

    def _gen_pack_steps(self) -> Iterator[Any]:
        packer_db = connect(self.dsn)
        try:
            if not packer_db.execute(
                "SELECT pg_try_advisory_lock(%s)", (PACK_LOCK_KEY,)
            ).fetchone()[0]:
                yield "another pack is running"
                return
            yield f"started {datetime.now()}"
            reachable: set[int] = set()
            with packer_db.transaction():
                packer_db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                (start_tid,) = packer_db.execute(f"SELECT {HEAD_TID_SQL}").fetchone()
                yield from _mark(packer_db, [str_to_int8(ROOT_OID)], reachable)
            removed = self._sweep(packer_db, start_tid, reachable)
            yield f"finished {datetime.now()}, {len(reachable)} live objects, {removed} removed"
        finally:
            packer_db.close()
        self.prune_log()

    def _sweep(self, db: Any, start_tid: int, reachable: set[int]) -> int:
        """Under the commit lock: keep what was committed since ``start_tid`` (and what it
        reaches), delete every other unreachable record, log the removal. The count."""
        with db.transaction():
            db.execute(COMMIT_LOCK_SQL)
            (since,) = db.execute(
                "SELECT array(SELECT DISTINCT unnest(oids) FROM durus_log"
                " WHERE tid > %s AND kind = 'C')",
                (start_tid,),
            ).fetchone()
            for _step in _mark(db, since, reachable):
                pass
            doomed = [
                number
                for (number,) in db.execute("SELECT oid FROM durus_objects").fetchall()
                if number not in reachable
            ]
            if doomed:
                db.execute("DELETE FROM durus_objects WHERE oid = ANY(%s)", (doomed,))
                db.execute(APPEND_LOG_SQL, {"kind": "P", "oids": doomed, "client": self.client_id})
        assert reachable.isdisjoint(doomed)
        return len(doomed)

    # -- listing

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **ignored: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every record in oid order when ``start_oid`` is None; else the base traversal."""
        if start_oid is not None:
            yield from super().gen_oid_record(start_oid, batch_size)
            return
        after = -1
        while True:
            rows = self._db.execute(
                "SELECT oid, data, refs FROM durus_objects WHERE oid > %s ORDER BY oid LIMIT %s",
                (after, PACK_BATCH_OIDS),
            ).fetchall()
            for number, data, refs in rows:
                yield int8_to_str(number), row_to_record(number, data, refs)
            if len(rows) < PACK_BATCH_OIDS:
                return
            after = rows[-1][0]

    def close(self) -> None:
        if self.connection is not None:
            try:
                if getattr(self, "client_id", None) is not None and not self.connection.closed:
                    self.connection.execute(
                        "DELETE FROM durus_clients WHERE client_id = %s", (self.client_id,)
                    )
            except Exception:  # the row ages out by the retention rule anyway
                log(20, "could not unregister %s", self)
            finally:
                self.connection.close()
                self.connection = None


def _mark(db: Any, start: Iterable[int], reachable: set[int]) -> Iterator[None]:
    """Add to ``reachable`` every oid reachable from ``start`` (breadth-first, in
    batches of PACK_BATCH_OIDS; dangling refs are skipped). Yields once per batch.
    The refs of ``start`` are read even when marked already: they may have changed."""
    todo = list(dict.fromkeys(start))
    reachable.update(todo)
    while todo:
        batch, todo = todo[:PACK_BATCH_OIDS], todo[PACK_BATCH_OIDS:]
        rows = db.execute("SELECT refs FROM durus_objects WHERE oid = ANY(%s)", (batch,)).fetchall()
        for (refs,) in rows:
            for index in range(0, len(refs), 8):
                number = str_to_int8(refs[index : index + 8])
                if number not in reachable:
                    reachable.add(number)
                    todo.append(number)
        yield None


def _redact(dsn: str) -> str:
    """``dsn`` without a password (for messages and logs)."""
    dsn = re.sub(r"password\s*=\s*('[^']*'|\S+)", "password=***", dsn)
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", dsn)


class PostgresOpenError(DurusError, ValueError):
    """A storage could not be opened from a DSN; the message is one line for an operator."""


def storage_from_dsn(dsn: str, **options: Any) -> PostgresStorage:
    """A PostgresStorage for the command line's ``--dsn`` (``host=... dbname=...`` or
    ``postgresql://user@host/db``). Every foreseeable failure (empty DSN, no psycopg,
    no server, no privileges, a newer schema) is a PostgresOpenError with a clear message."""
    if not dsn or not dsn.strip():
        raise PostgresOpenError("--dsn needs a PostgreSQL connection string, e.g. 'dbname=durus'")
    try:
        storage = PostgresStorage(dsn.strip(), **options)
    except (ImportError, SchemaVersionError) as error:
        raise PostgresOpenError(str(error)) from None
    except Exception as error:
        if type(error).__module__.split(".")[0] != "psycopg":
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PostgresOpenError(
            f"cannot open a Durus storage on PostgreSQL ({_redact(dsn)}): {first_line}"
        ) from None
    assert storage.connection is not None
    return storage


__all__ = ["PostgresOpenError", "PostgresStorage", "SchemaVersionError", "storage_from_dsn"]
