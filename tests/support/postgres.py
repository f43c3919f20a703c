"""A throwaway PostgreSQL server for the PostgresStorage tests and benchmark.

Owns finding (or, on a fresh root CI machine with apt, installing) the
PostgreSQL server binaries, creating a cluster in a temporary directory with
initdb, starting it with pg_ctl on a Unix socket in that directory, waiting
(bounded) until it accepts connections, and stopping it and removing the
directory afterwards. PostgreSQL refuses to run as root, so when the tests run
as root the cluster is created and run by the ``postgres`` system user (created
if missing), and the directory is handed to that user.

Never touches a PostgreSQL server it did not start (unless the
``DURUS_TEST_POSTGRES_DSN`` environment variable names one to use instead) and
never leaves a server running: the server is stopped in the pytest finalizer
and again at interpreter exit.

``postgres_dsn`` is a session fixture; import it into a test module. Every
caller in one process shares one server. ``new_schema_dsn(dsn)`` gives each
test its own empty PostgreSQL schema (cheap, unlike a new database).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 120.0
INSTALL_TIMEOUT_S = 600.0
SERVICE_USER = "postgres"
ENV_DSN = "DURUS_TEST_POSTGRES_DSN"
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_schema_numbers = itertools.count(1)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, and they could not be installed."""


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if os.access(os.path.join(directory, "pg_ctl"), os.X_OK):
            return Path(directory)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    return None


def install_with_apt() -> None:
    """``apt-get install -y postgresql`` (root only); PostgresUnavailable on failure."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL binaries not found (initdb/pg_ctl) and not root+apt")
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        result = subprocess.run(
            command, env=environment, capture_output=True, timeout=INSTALL_TIMEOUT_S
        )
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace")[-500:]
            raise PostgresUnavailable(f"{' '.join(command)} failed: {tail}")


def ensure_service_user() -> None:
    """Create the ``postgres`` system user when running as root and it is missing."""
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", SERVICE_USER], capture_output=True).returncode == 0:
        return
    subprocess.run(
        ["useradd", "--system", "--no-create-home", SERVICE_USER],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def as_service_user(command: list[str]) -> list[str]:
    """``command`` run as the postgres user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


class PostgresServer:
    """One temporary cluster: ``start()``, ``dsn``, ``stop()`` (idempotent)."""

    def __init__(self, bin_dir: Path, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.directory = Path(tempfile.mkdtemp(prefix="durus-pg-"))
        self.data_dir = self.directory / "data"
        self.port = 5432
        self.running = False

    @property
    def dsn(self) -> str:
        return f"host={self.directory} port={self.port} user={SERVICE_USER} dbname=postgres"

    def _run(self, *args: str) -> None:
        command = as_service_user([str(self.bin_dir / args[0]), *args[1:]])
        result = subprocess.run(command, capture_output=True, timeout=COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise PostgresUnavailable(f"{args[0]} failed ({result.returncode}): {output}")

    def start(self) -> None:
        if os.geteuid() == 0:
            ensure_service_user()
            shutil.chown(self.directory, SERVICE_USER, SERVICE_USER)
        self._run("initdb", "-D", str(self.data_dir), "-U", SERVICE_USER, "--auth=trust", "-E",
                  "UTF8", "--no-sync")  # fmt: skip
        settings = ["listen_addresses=''", f"unix_socket_directories={self.directory}"]
        settings += ["max_connections=100"]
        if not self.durable:
            settings += list(FAST_SETTINGS)
        options = " ".join(f"-c {setting}" for setting in settings)
        log_file = self.directory / "server.log"
        self.running = True
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(log_file), "-o", options,
                  "-w", "-t", str(int(START_TIMEOUT_S)), "start")  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline_s = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline_s:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server(durable: bool = False, install: bool = True) -> PostgresServer:
    """A started throwaway server (installing PostgreSQL first on a fresh root+apt machine)."""
    bin_dir = find_bin_dir()
    if bin_dir is None and install:
        install_with_apt()
        bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found")
    server = PostgresServer(bin_dir, durable=durable)
    atexit.register(server.stop)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


_shared: list[PostgresServer] = []


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """The DSN of a PostgreSQL server for this test session (skips loudly if none)."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install psycopg[binary]")
    if os.environ.get(ENV_DSN):
        yield os.environ[ENV_DSN]
        return
    if not _shared:
        try:
            _shared.append(start_server())
        except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as error:
            pytest.skip(f"NO POSTGRESQL SERVER: PostgreSQL tests skipped: {error}")
    server = _shared[0]
    request.addfinalizer(server.stop)
    yield server.dsn


def new_schema_dsn(dsn: str) -> str:
    """``dsn`` with its search_path set to a fresh, empty schema."""
    import psycopg

    name = f"durus_test_{os.getpid()}_{next(_schema_numbers)}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {name}")
    return f"{dsn} options='-c search_path={name}'"


@pytest.fixture
def schema_dsn(postgres_dsn: str) -> str:
    """A DSN whose tables live in a schema of their own (one per test)."""
    return new_schema_dsn(postgres_dsn)
