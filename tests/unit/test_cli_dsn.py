"""durus -s/-c/-p --dsn: the command line on a PostgresStorage."""

from __future__ import annotations

import pytest

from tests.support import postgres as postgres_support
from tests.unit.test_cli import assert_one_line_error, durus

postgres_dsn = postgres_support.postgres_dsn
schema_dsn = postgres_support.schema_dsn


def test_each_mode_offers_dsn() -> None:
    for mode in ("-s", "-c", "-p"):
        result = durus(mode, "--help")
        assert result.returncode == 0 and "--dsn" in result.stdout


@pytest.mark.parametrize("mode", ["-c", "-p"])
def test_dsn_and_file_together_is_a_one_line_error(mode: str, tmp_path) -> None:
    result = durus(mode, "--dsn", "dbname=x", "--file", str(tmp_path / "f.durus"))
    assert_one_line_error(result, "--dsn", "--file")


def test_an_unreachable_dsn_is_a_one_line_error(tmp_path) -> None:
    result = durus("-p", "--dsn", f"host={tmp_path} dbname=none connect_timeout=2")
    assert_one_line_error(result)


def test_console_and_pack_on_postgres(schema_dsn: str) -> None:
    commands = "root['answer'] = 42\nconnection.commit()\nprint('stored', root['answer'])\n"
    result = durus("-c", "--dsn", schema_dsn, stdin=commands)
    assert result.returncode == 0, result.stderr
    assert "stored 42" in result.stdout
    packed = durus("-p", "--dsn", schema_dsn)
    assert packed.returncode == 0, packed.stderr
    again = durus("-c", "--dsn", schema_dsn, stdin="print('found', root['answer'])\n")
    assert "found 42" in again.stdout, again.stderr
