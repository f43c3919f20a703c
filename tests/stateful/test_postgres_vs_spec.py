"""The multi-client machines and the bank workload, run against PostgresStorage.

Owns the PostgreSQL backend for the machines of test_clients_vs_spec.py and
test_bank.py (reused, not copied): every client is its own PostgresStorage,
so its own PostgreSQL connection, on a schema made fresh for each example.
The spec (spec/model.py) decides every outcome, exactly as for the server.

Never changes the machines or the spec. The machines' commit-inside-commit
rule is not offered: the spec requires a commit to fail when another lands
between its invalidation list and its data (the server cannot show the client
the late oids), whereas PostgresStorage shows them to the connection's handler
under its commit lock and fails only on a real conflict; that path is covered
by tests/unit/test_postgres_storage.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed")

for _path in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from spec_backends import Backend, oid_int  # noqa: E402
from test_bank import (  # noqa: E402
    PAIR,
    PHASES,
    run_interleaved,
    run_threaded_bank,
)
from test_clients_vs_spec import machine_for, run_machine, scaled  # noqa: E402

from durus.postgres_storage import PostgresStorage  # noqa: E402
from durus.storage import Storage  # noqa: E402
from tests.support import postgres as postgres_support  # noqa: E402

postgres_dsn = postgres_support.postgres_dsn  # the session fixture
new_schema_dsn = postgres_support.new_schema_dsn

BASE_DSN: list[str] = []  # set by the tests from the session fixture


class PostgresBackend(Backend):
    """Clients are PostgresStorage objects on one fresh PostgreSQL schema."""

    name = "postgres"
    packs = True  # pack() runs to completion before it returns
    max_clients = 4

    def __init__(self) -> None:
        assert BASE_DSN, "the postgres_dsn fixture must run first"
        self.dsn = new_schema_dsn(BASE_DSN[0])

    def open_storage(self) -> Storage:
        return PostgresStorage(self.dsn)

    def stored_oids(self) -> set[int]:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            rows = connection.execute("SELECT oid FROM durus_objects").fetchall()
        return {oid_int(number.to_bytes(8, "big")) for (number,) in rows}


def postgres() -> Backend:
    return PostgresBackend()


@pytest.fixture(scope="module")
def base_dsn(postgres_dsn: str) -> str:
    BASE_DSN[:] = [postgres_dsn]
    return postgres_dsn


def test_clients_vs_spec_postgres(base_dsn: str) -> None:
    run_machine(machine_for(postgres), max_examples=scaled(0.5))


def test_blind_writes_postgres(base_dsn: str) -> None:
    run_machine(machine_for(postgres, blind=True), max_examples=scaled(0.25))


@settings(max_examples=max(5, settings().max_examples // 4), phases=PHASES)
@given(
    plans=st.lists(st.lists(PAIR, min_size=1, max_size=4), min_size=2, max_size=4),
    schedule=st.lists(st.integers(0, 3), max_size=80),
)
def test_bank_interleaved_postgres(
    base_dsn: str, plans: list[list[tuple[int, int]]], schedule: list[int]
) -> None:
    backend = postgres()
    try:
        run_interleaved(backend, plans, schedule)
    finally:
        backend.close()


def test_bank_eight_threads_postgres(base_dsn: str) -> None:
    """8 clients, each a thread with its own PostgresStorage (its own DB connection)."""
    run_threaded_bank(postgres(), clients=8, transfers_each=25, accounts=5)
