"""PostgresStorage edge cases: no psycopg, oversized transactions, batches, lost rows, bad closes.

The tests that need a database use the throwaway server of
tests/support/postgres.py, each on its own schema; the others run without one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

import durus.postgres_storage as postgres_storage
from durus.postgres_storage import PostgresOpenError, PostgresStorage, storage_from_dsn
from tests.support import postgres as postgres_support
from tests.support.records import accept_invalidations, record
from tests.support.records import commit as commit_records
from tests.support.server_fixtures import LogCapture

postgres_dsn = postgres_support.postgres_dsn  # the fixtures this module uses
schema_dsn = postgres_support.schema_dsn

# a client that read nothing (never conflicts)
commit = partial(commit_records, handler=accept_invalidations)


def sql(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(statement, args or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def storage(schema_dsn: str) -> Iterator[PostgresStorage]:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    opened = PostgresStorage(schema_dsn)
    yield opened
    opened.close()


# ---------------------------------------------------------------- without a database


def test_without_psycopg_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ImportError, match=r'pip install "durus-verified\[postgres\]"'):
        PostgresStorage("dbname=durus")
    with pytest.raises(PostgresOpenError, match="PostgresStorage needs psycopg 3"):
        storage_from_dsn("dbname=durus")


def test_storage_from_dsn_lets_programming_errors_through() -> None:
    with pytest.raises(TypeError):
        storage_from_dsn("dbname=durus", no_such_option=1)


# ---------------------------------------------------------------- with a database


def test_bulk_load_of_nothing_asks_nothing(storage: PostgresStorage) -> None:
    assert list(storage.bulk_load([])) == []


def test_a_transaction_over_the_record_limit_is_refused_before_it_is_sent(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_storage, "MAX_STORE_RECORDS", 2)
    oids = [storage.new_oid() for _ in range(3)]
    storage.begin()
    storage.store(oids[0], record(int.from_bytes(oids[0], "big")))
    storage.store(oids[1], record(int.from_bytes(oids[1], "big")))
    with pytest.raises(ValueError, match="more than 2 records in one transaction"):
        storage.store(oids[2], record(int.from_bytes(oids[2], "big")))
    assert set(storage.pending_records) == set(oids[:2])  # the refused one was not kept


def test_an_oid_sequence_past_the_oid_range_is_refused(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_storage, "MAX_PG_OID", 1)
    storage.oid_pool = []
    storage.oid_pool_size = 4
    with pytest.raises(ValueError, match="beyond PostgreSQL's bigint range"):
        storage.new_oid()
    assert storage.oid_pool == [] and storage.transaction_new_oids == []


def test_listing_reads_every_record_in_batches(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    oids = [storage.new_oid() for _ in range(5)]
    commit(storage, *(record(int.from_bytes(o, "big")) for o in oids))
    monkeypatch.setattr(postgres_storage, "PACK_BATCH_OIDS", 2)
    listed = list(storage.gen_oid_record())
    assert listed == [(o, record(int.from_bytes(o, "big"))) for o in sorted(oids)]


def test_a_commit_after_the_client_row_was_pruned_registers_again(
    storage: PostgresStorage, schema_dsn: str
) -> None:
    sql(schema_dsn, "DELETE FROM durus_clients")  # as the retention rule does to an absent client
    first = storage.new_oid()
    commit(storage, record(int.from_bytes(first, "big")))
    assert sql(schema_dsn, "SELECT count(*) FROM durus_clients") == [(1,)]
    assert storage.load(first) == record(int.from_bytes(first, "big"))


def test_a_client_row_pruned_just_before_the_commit_lock_is_registered_again(
    storage: PostgresStorage, schema_dsn: str
) -> None:
    first = storage.new_oid()
    storage.before_commit_lock = lambda: sql(schema_dsn, "DELETE FROM durus_clients")
    commit(storage, record(int.from_bytes(first, "big")))
    assert sql(schema_dsn, "SELECT count(*) FROM durus_clients") == [(1,)]
    storage.before_commit_lock = None
    second = storage.new_oid()
    commit(storage, record(int.from_bytes(second, "big")))
    assert list(storage.bulk_load([first, second])) == [
        record(int.from_bytes(first, "big")),
        record(int.from_bytes(second, "big")),
    ]


def test_close_after_the_database_dropped_the_connection(schema_dsn: str) -> None:
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    doomed = PostgresStorage(schema_dsn)
    backend = doomed.connection.info.backend_pid
    sql(schema_dsn, "SELECT pg_terminate_backend(%s)", backend)
    with LogCapture() as captured:
        doomed.close()  # cannot unregister: logged, not raised
    assert doomed.connection is None
    assert "could not unregister" in captured.text()
