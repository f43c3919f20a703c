"""Tests for durus.postgres_storage against a real, throwaway PostgreSQL server.

Each test gets its own PostgreSQL schema (tests/support/postgres.py), so the
tests are independent and share one server start. Several PostgresStorage
objects on one schema are several clients (each its own PostgreSQL
connection); the expected behaviour is the Durus server's (PROTOCOL.md 3-5).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed")

from durus.connection import Connection  # noqa: E402
from durus.error import (  # noqa: E402
    DurusKeyError,
    ReadConflictError,
    WriteConflictError,
)
from durus.persistent import Persistent  # noqa: E402
from durus.persistent_dict import PersistentDict  # noqa: E402
from durus.postgres_storage import (  # noqa: E402
    SCHEMA_VERSION,
    PostgresOpenError,
    PostgresStorage,
    SchemaVersionError,
    storage_from_dsn,
)
from durus.record import pack_record  # noqa: E402
from durus.utils import ROOT_OID  # noqa: E402
from tests.support import postgres as postgres_support  # noqa: E402
from tests.support.records import accept_invalidations, oid, record  # noqa: E402
from tests.support.records import commit as commit_records  # noqa: E402

postgres_dsn = postgres_support.postgres_dsn  # the fixtures this module uses
schema_dsn = postgres_support.schema_dsn

# a client that read nothing (never conflicts), unless a test passes its own handler
commit = partial(commit_records, handler=accept_invalidations)


class Recorder:
    """An invalidation handler that records its calls and may raise a conflict."""

    def __init__(self, conflict_on: Iterable[bytes] = ()) -> None:
        self.calls: list[list[bytes]] = []
        self.conflict_on = set(conflict_on)

    def __call__(self, oids: list[bytes]) -> None:
        self.calls.append(list(oids))
        hits = [o for o in oids if o in self.conflict_on]
        if hits:
            raise WriteConflictError(hits)


@pytest.fixture
def open_storage(schema_dsn: str) -> Iterator[Any]:
    """``open_storage(**options)`` opens a client on this test's schema; all closed after."""
    opened: list[PostgresStorage] = []

    def opener(**options: Any) -> PostgresStorage:
        storage = PostgresStorage(schema_dsn, **options)
        opened.append(storage)
        return storage

    yield opener
    for storage in opened:
        storage.close()


def sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(statement, args or None)
        return cursor.fetchall() if cursor.description else []


# -- schema ----------------------------------------------------------------------------


def test_schema_is_created_on_first_use_and_versioned(open_storage: Any, schema_dsn: str) -> None:
    storage = open_storage()
    assert storage.schema_version == SCHEMA_VERSION
    tables = {
        name
        for (name,) in sql(
            schema_dsn,
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()",
        )
    }
    assert {"durus_meta", "durus_objects", "durus_log", "durus_clients"} <= tables
    assert sql(schema_dsn, "SELECT schema_version, pruned_through FROM durus_meta") == [(1, 0)]
    open_storage()  # a second open finds the schema and keeps it
    assert sql(schema_dsn, "SELECT count(*) FROM durus_meta") == [(1,)]


def test_a_newer_schema_version_is_refused(open_storage: Any, schema_dsn: str) -> None:
    open_storage()
    sql(schema_dsn, "UPDATE durus_meta SET schema_version = %s", SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="upgrade durus"):
        PostgresStorage(schema_dsn)


def test_a_meta_table_without_its_row_is_refused(open_storage: Any, schema_dsn: str) -> None:
    open_storage()
    sql(schema_dsn, "DELETE FROM durus_meta")
    with pytest.raises(SchemaVersionError, match="not a Durus database"):
        PostgresStorage(schema_dsn)


def test_concurrent_first_opens_create_the_schema_once(schema_dsn: str) -> None:
    storages: list[PostgresStorage] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            storages.append(PostgresStorage(schema_dsn))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(storages) == 4
    for storage in storages:
        storage.close()


def test_bad_arguments(schema_dsn: str) -> None:
    with pytest.raises(ValueError, match="oid_pool_size"):
        PostgresStorage(schema_dsn, oid_pool_size=0)
    with pytest.raises(ValueError, match="log_retention_s"):
        PostgresStorage(schema_dsn, log_retention_s=0)
    with pytest.raises(PostgresOpenError, match="--dsn"):
        storage_from_dsn("  ")


def test_storage_from_dsn_turns_connection_failures_into_one_line(tmp_path: Any) -> None:
    dsn = f"host={tmp_path} port=1 dbname=none password=sekrit connect_timeout=2"
    with pytest.raises(PostgresOpenError) as caught:
        storage_from_dsn(dsn)
    message = str(caught.value)
    assert "cannot open a Durus storage on PostgreSQL" in message
    assert "sekrit" not in message and "\n" not in message


def test_storage_from_dsn_reports_a_newer_schema(schema_dsn: str) -> None:
    PostgresStorage(schema_dsn).close()
    sql(schema_dsn, "UPDATE durus_meta SET schema_version = 99")
    with pytest.raises(PostgresOpenError, match="version 99"):
        storage_from_dsn(schema_dsn)


def test_storage_from_dsn_opens_a_working_storage(schema_dsn: str) -> None:
    storage = storage_from_dsn(schema_dsn)
    try:
        assert "PostgresStorage(" in str(storage)
        connection = Connection(storage)
        connection.root["a"] = 1
        connection.commit()
    finally:
        storage.close()
    storage = storage_from_dsn(schema_dsn)
    try:
        assert Connection(storage).root["a"] == 1
    finally:
        storage.close()


def test_str_hides_the_password(schema_dsn: str) -> None:
    storage = PostgresStorage(schema_dsn + " password=hunter2")
    try:
        assert "hunter2" not in str(storage)
    finally:
        storage.close()


# -- oids, load, store, commit ----------------------------------------------------------


def test_first_oid_of_a_new_database_is_the_root_and_pools_do_not_overlap(
    open_storage: Any,
) -> None:
    a, b = open_storage(oid_pool_size=4), open_storage(oid_pool_size=4)
    first = a.new_oid()
    assert first == ROOT_OID
    handed = [first] + [a.new_oid() for _ in range(6)] + [b.new_oid() for _ in range(6)]
    assert len(set(handed)) == len(handed)
    assert handed[:4] == [oid(n) for n in range(4)]  # lowest first within a batch


def test_store_load_and_missing(open_storage: Any) -> None:
    storage = open_storage()
    commit(storage, record(0, 1), record(1, data=b"one"))
    assert storage.load(ROOT_OID) == record(0, 1)
    assert list(storage.bulk_load([oid(1), ROOT_OID])) == [record(1, data=b"one"), record(0, 1)]
    with pytest.raises(DurusKeyError):
        storage.load(oid(7))
    commit(storage, record(1, data=b"uno"))
    assert storage.load(oid(1)) == record(1, data=b"uno")
    assert dict(storage.gen_oid_record()) == {
        ROOT_OID: record(0, 1),
        oid(1): record(1, data=b"uno"),
    }
    assert [o for o, _r in storage.gen_oid_record(start_oid=ROOT_OID)] == [ROOT_OID, oid(1)]


def test_store_refuses_bad_records_before_keeping_anything(open_storage: Any) -> None:
    storage = open_storage()
    storage.begin()
    with pytest.raises(ValueError, match="stored under"):
        storage.store(oid(2), record(3))
    storage.store(oid(3), record(3))
    with pytest.raises(ValueError, match="twice"):
        storage.store(oid(3), record(3))
    with pytest.raises(ValueError, match="bigint"):
        storage.store(b"\xff" * 8, pack_record(b"\xff" * 8, b"x", b""))
    storage.end()
    assert storage.load(oid(3)) == record(3)


def test_a_failed_database_write_commits_nothing(open_storage: Any, schema_dsn: str) -> None:
    storage = open_storage()
    commit(storage, record(0))
    sql(schema_dsn, "ALTER TABLE durus_objects ADD CONSTRAINT small CHECK (length(data) < 10)")
    with pytest.raises(psycopg.errors.CheckViolation):
        commit(storage, record(0, data=b"x"), record(1, data=b"much too long data"))
    assert storage.load(ROOT_OID) == record(0)
    assert sql(schema_dsn, "SELECT count(*) FROM durus_log") == [(1,)]


def test_closed_storage_refuses_work(open_storage: Any) -> None:
    storage = open_storage()
    storage.close()
    storage.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        storage.load(ROOT_OID)


def test_close_unregisters_the_client(open_storage: Any, schema_dsn: str) -> None:
    a = open_storage()
    open_storage()
    assert sql(schema_dsn, "SELECT count(*) FROM durus_clients") == [(2,)]
    a.close()
    assert sql(schema_dsn, "SELECT count(*) FROM durus_clients") == [(1,)]


# -- invalidations: sync, load, end ------------------------------------------------------


def test_sync_reports_others_commits_once_and_never_ones_own(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0, 1), record(1))
    assert a.sync() == []
    assert b.sync() == [ROOT_OID, oid(1)]
    assert b.sync() == []
    commit(b, record(1, data=b"b"))
    assert a.sync() == [oid(1)] and b.sync() == []


def test_load_of_an_oid_changed_since_the_last_sync_is_a_read_conflict(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    b.sync()
    assert b.load(oid(1)) == record(1)
    commit(a, record(1, data=b"new"))
    assert b.load(ROOT_OID) == record(0)  # unchanged oids load as usual
    with pytest.raises(ReadConflictError) as caught:
        b.load(oid(1))
    assert caught.value.oids == [oid(1)]
    with pytest.raises(ReadConflictError):
        list(b.bulk_load([ROOT_OID, oid(1)]))
    assert b.sync() == [oid(1)]
    assert b.load(oid(1)) == record(1, data=b"new")


def test_end_reports_others_commits_to_the_handler_before_writing(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    b.sync()
    commit(a, record(1, data=b"a"))
    handler = Recorder()
    commit(b, record(2), handler=handler)
    assert handler.calls == [[oid(1)]]
    assert b.sync() == []  # delivered by end, like the server's commit list


def test_a_conflict_in_the_handler_writes_nothing_and_returns_the_oids(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    b.sync()
    commit(a, record(1, data=b"a"))
    b.begin()
    new = [b.new_oid() for _ in range(3)][-1]  # 0 and 1 exist already
    b.store(oid(1), record(1, data=b"b"))
    b.store(new, pack_record(new, b"n", b""))
    with pytest.raises(WriteConflictError):
        b.end(Recorder(conflict_on={oid(1)}))
    assert a.load(oid(1)) == record(1, data=b"a")
    with pytest.raises(DurusKeyError):
        a.load(new)
    assert [b.new_oid() for _ in range(3)][
        -1
    ] == new  # the retry reuses the abandoned transaction's oid
    assert b.sync() == []  # the list was delivered (and cleared) even though it conflicted


def test_end_without_a_handler_refuses_a_commit_after_others_and_keeps_the_oids(
    open_storage: Any,
) -> None:
    """As a server answers 'I': nobody could judge the others' oids, so the commit fails."""
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    with pytest.raises(WriteConflictError):
        commit(b, record(2), handler=None)
    with pytest.raises(DurusKeyError):
        a.load(oid(2))
    with pytest.raises(ReadConflictError):
        b.load(oid(1))
    assert b.sync() == [ROOT_OID, oid(1)]
    commit(b, record(2), handler=None)
    assert a.sync() == [oid(2)]
    assert a.load(oid(2)) == record(2)


def test_a_commit_that_slips_in_before_the_lock_is_reported_under_the_lock(
    open_storage: Any,
) -> None:
    a, b, c = open_storage(), open_storage(), open_storage()
    commit(a, record(0), record(1), record(2))
    b.sync()
    c.sync()
    commit(a, record(1, data=b"first"))
    b.before_commit_lock = lambda: commit(c, record(2, data=b"slipped"))
    handler = Recorder()
    commit(b, record(3), handler=handler)
    assert handler.calls == [[oid(1)], [oid(2)]]
    assert b.sync() == []  # its own commit does not hide the others', nor repeat them
    commit(c, record(1, data=b"c"))
    assert b.sync() == [oid(1)]
    assert a.sync() == [oid(1), oid(2), oid(3)]


def test_a_conflict_found_under_the_lock_rolls_back(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    b.sync()
    b.before_commit_lock = lambda: commit(a, record(1, data=b"a"))
    with pytest.raises(WriteConflictError):
        commit(b, record(1, data=b"b"), handler=Recorder(conflict_on={oid(1)}))
    assert b.load(oid(1)) == record(1, data=b"a")


def test_commits_of_many_threads_are_serialised(open_storage: Any) -> None:
    storages = [open_storage() for _ in range(6)]
    commit(storages[0], record(0))
    errors: list[BaseException] = []

    def work(storage: PostgresStorage, base: int) -> None:
        try:
            for n in range(10):
                commit(storage, record(base + n), handler=Recorder())
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=work, args=(s, 100 * (i + 1))) for i, s in enumerate(storages)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    observer = open_storage()
    assert len(dict(observer.gen_oid_record())) == 61
    for storage in storages:  # each saw exactly the other clients' commits
        reported = set(storage.sync())
        assert not reported & {oid(n) for n in range(1000) if n // 100 == 0}


# -- through Connection -------------------------------------------------------------------


class Note(Persistent):
    def __init__(self, text: str = "") -> None:
        self.text = text


def two_connections(open_storage: Any) -> tuple[Connection, Connection]:
    first = Connection(open_storage())
    first.root["a"] = Note("a")
    first.root["b"] = Note("b")
    first.commit()
    return first, Connection(open_storage())


def assert_a_conflict_then_a_retry(
    winner: Connection, loser: Connection, winner_text: str, loser_text: str
) -> None:
    """``loser`` has read note "a"; ``winner`` changes it and commits first. ``loser``'s
    change conflicts; after an abort it sees ``winner_text``, and its retry commits."""
    winner.root["a"].text = winner_text
    winner.commit()
    loser.root["a"].text = loser_text
    with pytest.raises(WriteConflictError):
        loser.commit()
    loser.abort()
    assert loser.root["a"].text == winner_text
    loser.root["a"].text = loser_text
    loser.commit()
    winner.abort()
    assert winner.root["a"].text == loser_text


def test_connection_sees_others_commits_after_abort(open_storage: Any) -> None:
    c1, c2 = two_connections(open_storage)
    assert c2.root["a"].text == "a"
    c1.root["a"].text = "a2"
    c1.commit()
    assert c2.root["a"].text == "a"  # the same transaction keeps its view
    c2.abort()
    assert c2.root["a"].text == "a2"


def test_write_conflict_through_connection(open_storage: Any) -> None:
    c1, c2 = two_connections(open_storage)
    assert c2.root["a"].text == "a"
    assert_a_conflict_then_a_retry(c1, c2, "from c1", "from c2")


def test_read_conflict_through_connection_api_example(open_storage: Any) -> None:
    """API.md 7.2: client 1 reads A; client 2 commits A and B; client 1 loads B."""
    writer, reader = two_connections(open_storage)
    a = reader.root["a"]
    assert a.text == "a"
    b = reader.root["b"]  # a ghost until read
    writer.root["a"].text = "a2"
    writer.root["b"].text = "b2"
    writer.commit()
    with pytest.raises(ReadConflictError):
        b.text  # noqa: B018
    reader.abort()
    assert (reader.root["a"].text, reader.root["b"].text) == ("a2", "b2")


def test_a_load_that_touches_nothing_stale_just_loads(open_storage: Any) -> None:
    writer, reader = two_connections(open_storage)
    b = reader.root["b"]
    writer.root["a"].text = "a2"
    writer.root["b"].text = "b2"
    writer.commit()
    assert b.text == "b2"  # reader accessed nothing writer changed (the root is unchanged)


def test_disjoint_writes_do_not_conflict(open_storage: Any) -> None:
    c1, c2 = two_connections(open_storage)
    c2.root["b"].text = "b2"
    c1.root["a"].text = "a2"
    c1.commit()
    c2.commit()
    c1.abort()
    assert (c1.root["a"].text, c1.root["b"].text) == ("a2", "b2")


# -- pack -----------------------------------------------------------------------------------


def test_pack_removes_unreachable_records_and_reports_them_to_every_client(
    open_storage: Any,
) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0, 1), record(1, 2), record(2), record(3, 4), record(4))
    b.sync()
    a.pack()
    assert sorted(o for o, _r in a.gen_oid_record()) == [ROOT_OID, oid(1), oid(2)]
    with pytest.raises(DurusKeyError):  # nobody has reported the pack yet: simply gone
        b.load(oid(3))
    assert a.sync() == [oid(3), oid(4)]  # the packer too, as the server does
    with pytest.raises(ReadConflictError):  # reported now: invalid for every client
        b.load(oid(3))
    assert b.sync() == [oid(3), oid(4)]
    with pytest.raises(DurusKeyError):
        b.load(oid(3))


def test_a_client_that_opens_before_the_pack_is_reported_still_gets_its_removals(
    open_storage: Any, schema_dsn: str
) -> None:
    a = open_storage()
    commit(a, record(0, 1), record(1), record(2))
    a.pack()
    late = open_storage()  # opened after the pack, before anyone synced
    assert sql(schema_dsn, "SELECT kind FROM durus_log WHERE kind <> 'C'") == [("P",)]
    a.prune_log()
    assert a.sync() == [oid(2)]
    a.prune_log()  # the row stays while ``late`` still needs it
    with pytest.raises(ReadConflictError):
        late.load(oid(2))
    assert late.sync() == [oid(2)]
    assert late.sync() == []
    commit(a, record(1, data=b"x"))
    assert late.sync() == [oid(1)]


def test_pack_keeps_what_is_committed_while_it_runs(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0, 1), record(1), record(2), record(3))
    packer = a.get_packer()
    assert next(packer).startswith("started")
    next(packer)  # the root's batch is marked in the snapshot
    commit(b, record(0, 1, 2), handler=Recorder())  # relinks 2 during the pack
    for _step in packer:
        pass
    assert sorted(o for o, _r in a.gen_oid_record()) == [ROOT_OID, oid(1), oid(2)]


def test_only_one_pack_runs_at_a_time(open_storage: Any) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0), record(1))
    first = a.get_packer()
    next(first)
    assert list(b.get_packer()) == ["another pack is running"]
    for _step in first:
        pass
    assert [o for o, _r in b.gen_oid_record()] == [ROOT_OID]


def test_connection_pack_then_using_a_removed_object_conflicts(open_storage: Any) -> None:
    c1, c2 = two_connections(open_storage)
    c2.abort()
    kept = c2.root["b"]
    assert kept.text == "b"
    del c1.root["b"]
    c1.commit()
    c1.pack()
    c2.root["b2"] = kept  # c2 links the removed object again
    with pytest.raises(WriteConflictError):
        c2.commit()
    c2.abort()
    assert "b" not in c2.root


# -- log pruning ------------------------------------------------------------------------------


def test_pruning_keeps_rows_a_live_client_still_needs(open_storage: Any, schema_dsn: str) -> None:
    a, b = open_storage(), open_storage()
    commit(a, record(0))
    commit(a, record(1))
    mark = a.prune_log()
    assert mark == 0  # b has seen nothing yet
    assert b.sync() == [ROOT_OID, oid(1)]
    mark = a.prune_log()
    assert mark == 2
    assert sql(schema_dsn, "SELECT count(*) FROM durus_log") == [(0,)]
    commit(a, record(2))
    assert b.sync() == [oid(2)]


def test_commits_prune_the_log_every_n_commits(open_storage: Any, schema_dsn: str) -> None:
    a = open_storage(prune_every_commits=3)
    for n in range(3):
        commit(a, record(n))
    assert sql(schema_dsn, "SELECT count(*) FROM durus_log") == [(0,)]
    assert sql(schema_dsn, "SELECT pruned_through FROM durus_meta") == [(3,)]


def test_a_client_away_past_the_retention_window_invalidates_everything(
    open_storage: Any, schema_dsn: str
) -> None:
    a, b = open_storage(log_retention_s=60), open_storage(log_retention_s=60)
    commit(a, record(0, 1), record(1))
    b.sync()
    commit(a, record(1, data=b"x"))
    sql(
        schema_dsn,
        "UPDATE durus_clients SET seen_at = now() - interval '1 hour' WHERE client_id = %s",
        b.client_id,
    )
    sql(schema_dsn, "UPDATE durus_log SET committed_at = now() - interval '1 hour'")
    a.prune_log()
    assert sql(schema_dsn, "SELECT count(*) FROM durus_log") == [(0,)]
    with pytest.raises(ReadConflictError):
        b.load(ROOT_OID)  # even an oid nobody changed: b cannot know
    assert b.sync() == [ROOT_OID, oid(1)]  # every oid: the whole cache is invalidated
    assert b.load(oid(1)) == record(1, data=b"x")
    commit(a, record(0, 1, data=b"again"))
    assert b.sync() == [ROOT_OID]  # back to precise reports (and registered again)
    assert sql(schema_dsn, "SELECT count(*) FROM durus_clients") == [(2,)]


def test_a_client_behind_the_prune_mark_conflicts_on_commit(
    open_storage: Any, schema_dsn: str
) -> None:
    a, b = open_storage(log_retention_s=60), open_storage(log_retention_s=60)
    commit(a, record(0), record(1))
    b.sync()
    commit(a, record(1, data=b"x"))
    sql(schema_dsn, "UPDATE durus_log SET committed_at = now() - interval '1 hour'")
    a.prune_log()
    handler = Recorder(conflict_on={oid(1)})
    with pytest.raises(WriteConflictError):
        commit(b, record(1, data=b"b"), handler=handler)
    assert handler.calls == [[ROOT_OID, oid(1)]]


def test_connection_over_a_pruned_log_sees_the_latest_state(open_storage: Any) -> None:
    c1, c2 = two_connections(open_storage)
    c2.abort()
    assert c2.root["a"].text == "a"
    c2.abort()
    c1.root["a"].text = "a2"
    c1.commit()
    c1.storage.log_retention_s = 1e-6
    c1.storage.prune_log()
    c2.abort()
    assert c2.root["a"].text == "a2"
    assert isinstance(c2.root, PersistentDict)


# -- a Durus server in front of PostgreSQL (what ``durus -s --dsn`` runs) ----------------------


def test_server_clients_and_direct_clients_share_one_database(open_storage: Any) -> None:
    from durus.client_storage import ClientStorage
    from durus.server_core import LoopbackSocket, ServerCore

    core = ServerCore(open_storage())
    direct = Connection(open_storage())
    direct.root["a"] = Note("a")
    direct.commit()
    served = Connection(ClientStorage(socket=LoopbackSocket(core)))
    assert served.root["a"].text == "a"
    # the conflict shows that the server forwarded the direct commit
    assert_a_conflict_then_a_retry(direct, served, "direct", "served")
    served.storage.close()
