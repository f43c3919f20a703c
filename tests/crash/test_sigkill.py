"""Real processes: a storage server killed with SIGKILL while clients commit.

A ``python -c`` launcher runs ``durus.storage_server.StorageServer`` over a
``FileStorage`` on a temporary file. Several clients (``ClientStorage`` and
``Connection``, one thread each) commit to their own ``PersistentDict``
under the root, and one of them asks for a pack every few commits; at a
random moment the server is killed with SIGKILL, then restarted on the same
file. Every commit whose ``commit()`` returned must be
there, and the file must open without ``repair``. Bounded in rounds and time.

A process kill keeps the operating system's page cache, so this checks the
server's ordering (reply only after the transaction is written), not power
loss; power loss is the simulated disk's job (the other tests here).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from tests.crash.crash_points import count

THOROUGH = settings().max_examples > 100
ROUNDS = 12 if THOROUGH else 3
CLIENTS = 3
ROUND_TIMEOUT_S = 10.0
PACKING_CLIENT = "client0"
PACK_EVERY_COMMITS = 5
SERVER_START_TIMEOUT_S = 10.0

LAUNCHER = (
    "import sys\n"
    "from durus.file_storage import FileStorage\n"
    "from durus.storage_server import StorageServer\n"
    "StorageServer(FileStorage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2])).serve()\n"
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(path: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            error = server.stderr.read().decode() if server.stderr else ""
            raise AssertionError(f"the server did not start (without repair): {error}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise AssertionError("the server did not start listening in time")


def _connect(port: int) -> Connection:
    return Connection(ClientStorage(host="127.0.0.1", port=port, timeout_s=ROUND_TIMEOUT_S))


def _client_loop(port: int, name: str, first: int, acked: list[int], stop: threading.Event) -> None:
    """Commit ``root[name][i] = payload(i)`` for i = first, first+1, ... until it fails."""
    try:
        connection = _connect(port)
    except OSError:
        return
    number = first
    while not stop.is_set():
        try:
            connection.get_root()[name][number] = _payload(name, number)
            connection.commit()
        except ConflictError:
            connection.abort()
            continue
        except Exception:  # noqa: BLE001 - the server died: stop
            return
        acked.append(number)
        number += 1
        if name == PACKING_CLIENT and number % PACK_EVERY_COMMITS == 0:
            try:
                connection.pack()  # the server packs between requests: killed mid-pack too
            except Exception:  # noqa: BLE001 - the server died: stop
                return


def _payload(name: str, number: int) -> str:
    return f"{name}:{number}:" + "x" * (number % 7 * 300)


def _check(port: int, acked: dict[str, list[int]]) -> int:
    """Every acknowledged commit is present with its value; the next number to use."""
    connection = _connect(port)
    root = connection.get_root()
    highest = 0
    for name, numbers in acked.items():
        stored = root[name]
        for number in numbers:
            if stored.get(number) != _payload(name, number):
                raise AssertionError(f"acknowledged commit {name}[{number}] is missing")
        highest = max([highest, *stored.keys()])
    connection.storage.close()
    return highest + 1


def _setup(port: int, names: list[str]) -> None:
    connection = _connect(port)
    root = connection.get_root()
    for name in names:
        root[name] = PersistentDict()
    connection.commit()
    connection.storage.close()


def _kill(server: subprocess.Popen[bytes]) -> None:
    os.kill(server.pid, signal.SIGKILL)
    server.wait(ROUND_TIMEOUT_S)


def _run_round(
    server: subprocess.Popen[bytes],
    port: int,
    acked: dict[str, list[int]],
    first: int,
    rng: random.Random,
) -> None:
    """Clients commit until the server is killed at a random moment."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(port, name, first, acked[name], stop))
        for name in acked
    ]
    for thread in threads:
        thread.start()
    time.sleep(rng.uniform(0.05, 0.6))
    _kill(server)
    stop.set()
    for thread in threads:
        thread.join(ROUND_TIMEOUT_S)
        assert not thread.is_alive(), "a client hung after the server died"


def test_sigkill_during_commits_keeps_every_acknowledged_commit(tmp_path: Path) -> None:
    path = tmp_path / "killed.durus"
    rng = random.Random(4)
    names = [f"client{k}" for k in range(CLIENTS)]
    acked: dict[str, list[int]] = {name: [] for name in names}
    port = _free_port()
    server = _start_server(path, port)
    try:
        _setup(port, names)
        first = 0
        for _round in range(ROUNDS):
            _run_round(server, port, acked, first, rng)
            count("real processes: SIGKILL of the server")
            port = _free_port()
            server = _start_server(path, port)
            first = _check(port, acked)
        assert sum(map(len, acked.values())) > 0, "no commit was acknowledged at all"
    finally:
        server.kill()
        server.wait(ROUND_TIMEOUT_S)
    FileStorage(str(path), readonly=True).close()  # opens without repair
