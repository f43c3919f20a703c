"""Backends for the client-vs-spec machines: where the real clients' storage lives.

Owns the ways the stateful tests put several real ``Connection`` clients on one
database: the in-process server core reached through loopback sockets (with
MemoryStorage or FileStorage behind it), a FileStorage used directly by one
client, and a real ``durus -s`` server in a subprocess reached over a Unix
socket. Also owns ``Cell``, the persistent class the machines store (it lives
here so that its pickled module name is the same in every test).

Never decides what an outcome should be (that is ``spec.model``) and never
reaches into the server's state: a test sees only what a client sees, plus the
hooks a backend offers (run the packer to completion; run code between two
messages of one client).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from durus.client_storage import ClientStorage
from durus.file_storage import FileStorage
from durus.persistent import Persistent
from durus.server_core import LoopbackSocket, ServerCore
from durus.storage import MemoryStorage, Storage

SERVER_START_TIMEOUT_S = 20.0
ABANDON_COMMIT = b"\x00\x00\x00\x00"


class Cell(Persistent):
    """A stored object of the machines: ``value`` (an int) and ``refs`` (a tuple of Cells)."""

    def __init__(self, value: int = 0, refs: tuple[Any, ...] = ()) -> None:
        self.value = value
        self.refs = refs


def oid_int(oid: bytes) -> int:
    """The spec's int for an 8-byte oid."""
    assert isinstance(oid, bytes) and len(oid) == 8
    return int.from_bytes(oid, "big")


def oid_bytes(oid: int) -> bytes:
    """The 8-byte oid for a spec int."""
    assert 0 <= oid < 2**64
    return oid.to_bytes(8, "big")


class Backend:
    """One database that clients open storages on. Subclasses fill in the hooks."""

    name = "abstract"
    packs = False  # pack() really removes unreachable objects
    pack_timing_known = True  # the test knows when a pack has finished
    steps_packs = False  # run_pack_steps can leave a pack running between client steps
    interleaves = False  # run_inside_commit is available
    max_clients = 4

    def open_storage(self) -> Storage:
        raise NotImplementedError

    def close_storage(self, storage: Storage) -> None:
        storage.close()

    def after_pack(self) -> None:
        """Called after a client asked for a pack: let the pack finish."""

    def pack_running(self) -> bool:
        """True while a pack started by a client has not finished."""
        return False

    def run_pack_steps(self, steps: int) -> None:
        """Let a running pack make ``steps`` steps (as an idle server would)."""

    def stored_oids(self) -> set[int]:
        """Every oid with a record in the storage (to see what a pack removed)."""
        raise NotImplementedError

    def run_inside_commit(self, storage: Storage, action: Callable[[], None]) -> list[bool]:
        """Arrange for ``action`` to run after ``storage`` received its commit's invalidation
        list and before it sends the transaction (only if it sends one). Returns a list that
        holds True once ``action`` ran."""
        raise NotImplementedError

    def close(self) -> None:
        """Release everything (files, processes)."""


class LoopbackBackend(Backend):
    """The server core in this process; each client a ClientStorage on a LoopbackSocket."""

    interleaves = True

    def __init__(self, storage: Storage, name: str, packs: bool) -> None:
        self.core = ServerCore(storage)
        self.name = name
        self.packs = packs

    def open_storage(self) -> Storage:
        return ClientStorage(socket=LoopbackSocket(self.core))

    def after_pack(self) -> None:
        self.core.run_until_idle()

    def pack_running(self) -> bool:
        return self.core.packer is not None

    def run_pack_steps(self, steps: int) -> None:
        for _ in range(steps):
            if not self.core.run_idle_step():
                return

    def stored_oids(self) -> set[int]:
        return {oid_int(oid) for oid, _record in self.core.storage.gen_oid_record()}

    def run_inside_commit(self, storage: Storage, action: Callable[[], None]) -> list[bool]:
        sock = storage.s  # type: ignore[attr-defined]
        assert isinstance(sock, LoopbackSocket)
        fired: list[bool] = []
        previous: list[bytes] = [b""]

        def before_send(_sock: LoopbackSocket, data: bytes) -> None:
            if previous[0] == b"C" and not fired and data != ABANDON_COMMIT:
                fired.append(True)
                sock.before_send = None
                action()
            previous[0] = data

        sock.before_send = before_send
        return fired

    def disarm(self, storage: Storage) -> None:
        storage.s.before_send = None  # type: ignore[attr-defined]

    def close(self) -> None:
        self.core.storage.close()


def loopback_memory() -> Backend:
    return LoopbackBackend(MemoryStorage(), "loopback+memory", packs=False)


class _TempDirBackend(Backend):
    def __init__(self) -> None:
        self._tempdir = tempfile.TemporaryDirectory(prefix="durus-spec-")
        self.directory = Path(self._tempdir.name)

    def close(self) -> None:
        self._tempdir.cleanup()


class LoopbackFileBackend(LoopbackBackend):
    """The server core over a file storage in a temporary directory (packs work)."""

    steps_packs = True

    def __init__(self, open_file: Callable[[str], Storage] | None = None, name: str = "") -> None:
        self._tempdir = tempfile.TemporaryDirectory(prefix="durus-spec-")
        path = os.path.join(self._tempdir.name, "db.durus")
        opener = open_file or (lambda p: FileStorage(p, fsync=False))
        super().__init__(opener(path), name or "loopback+file", packs=True)

    def close(self) -> None:
        super().close()
        self._tempdir.cleanup()


def loopback_file() -> Backend:
    return LoopbackFileBackend()


def loopback_file2() -> Backend:
    from durus.file_storage2 import FileStorage2

    return LoopbackFileBackend(lambda p: FileStorage2(p, fsync=False), "loopback+file2")


def loopback_sqlite() -> Backend:
    from durus.sqlite_storage import SqliteStorage

    return LoopbackFileBackend(SqliteStorage, "loopback+sqlite")


class DirectFileBackend(_TempDirBackend):
    """One client using a FileStorage directly (no server): only pack invalidations."""

    name = "direct-file"
    packs = True
    max_clients = 1

    def __init__(self) -> None:
        super().__init__()
        self.storage = FileStorage(str(self.directory / "db.durus"), fsync=False)

    def open_storage(self) -> Storage:
        return self.storage

    def close_storage(self, storage: Storage) -> None:
        """The storage outlives its connections; close() closes it."""

    def stored_oids(self) -> set[int]:
        return {oid_int(oid) for oid, _record in self.storage.gen_oid_record()}

    def close(self) -> None:
        self.storage.close()
        super().close()


def direct_file() -> Backend:
    return DirectFileBackend()


class SocketServerBackend(_TempDirBackend):
    """A real ``durus -s`` server process over a Unix socket, with a FileStorage file.

    The server packs asynchronously (only when idle) and a client cannot learn
    when a pack ends, so this backend does not offer packs to the machines.
    """

    name = "socket-server"
    pack_timing_known = False

    def __init__(self) -> None:
        super().__init__()
        self.address = str(self.directory / "server.sock")
        log_path = self.directory / "server.log"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        command = [sys.executable, "-m", "durus", "-s", "--file", str(self.directory / "db")]
        command += ["--address", self.address, "--logginglevel", "30"]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_listening()

    def _wait_until_listening(self) -> None:
        deadline_s = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"durus -s exited with status {self.process.returncode}")
            if os.path.exists(self.address):
                try:
                    ClientStorage(address=self.address).close()
                    return
                except (OSError, AssertionError):
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"durus -s did not listen on {self.address} in time")

    def open_storage(self) -> Storage:
        return ClientStorage(address=self.address, timeout_s=30)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
        super().close()


def socket_server() -> Backend:
    return SocketServerBackend()
