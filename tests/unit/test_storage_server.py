"""durus.storage_server: the socket loop, end to end over TCP and Unix sockets.

Most tests start the server in a subprocess (tests/support/run_server.py) on a
free port; a few run it in a thread of this process. Every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from durus.client_storage import ClientStorage, ServerConnectionLost
from durus.error import ReadConflictError
from durus.protocol import int4
from durus.storage import MemoryStorage
from durus.storage_server import (
    DEFAULT_GCBYTES,
    DEFAULT_HOST,
    DEFAULT_PORT,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    TIMEOUT,
    ServerTimeoutError,
    StorageServer,
    wait_for_server,
)
from tests.support.records import commit, oid, record
from tests.support.server_fixtures import (
    REPO_ROOT,
    RUN_SERVER,
    WAIT_S,
    ServerProcess,
    free_port,
    recv_exactly,
)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with ServerProcess() as process:
        yield process


def client(server: ServerProcess) -> ClientStorage:
    return ClientStorage(address=server.address, timeout_s=WAIT_S)


def test_constants() -> None:
    assert (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_GCBYTES, TIMEOUT) == ("127.0.0.1", 2972, 0, 10)
    assert (STATUS_OKAY, STATUS_KEYERROR, STATUS_INVALID) == (b"O", b"K", b"I")
    assert StorageServer.protocol == int4(1)


def test_constructor_does_not_bind_and_checks_gcbytes() -> None:
    server = StorageServer(MemoryStorage(), port=free_port(), gcbytes=1.5)
    assert server.gcbytes == 1.5 and server.bytes_since_pack == 0 and server.packer is None
    assert server.clients == [] and server.sockets == []
    with pytest.raises(AssertionError):
        StorageServer(MemoryStorage(), gcbytes="10")


# ---------------------------------------------------------------- two clients over TCP


def test_invalidations_between_two_clients(server: ServerProcess) -> None:
    a, b = client(server), client(server)
    assert [a.new_oid(), a.new_oid()] == [oid(0), oid(1)]
    commit(a, record(0), record(1))
    assert sorted(b.sync()) == [oid(0), oid(1)]
    commit(a, record(0, data=b"v2"))
    with pytest.raises(ReadConflictError):
        b.load(oid(0))
    assert b.sync() == [oid(0)] and b.load(oid(0)) == record(0, data=b"v2")
    a.close()
    b.close()


def test_a_stalled_half_message_does_not_delay_other_clients(server: ServerProcess) -> None:
    stalled = server.connect_raw()
    stalled.sendall(b"V" + int4(1) + b"L\x00\x00")  # 'L' and 2 of its 8 oid bytes
    assert recv_exactly(stalled, 4) == int4(1)
    started = time.monotonic()
    other = client(server)
    assert other.sync() == []
    assert time.monotonic() - started < 2.0  # Durus 4.3 took the full 10 s here
    stalled.sendall(bytes(6))  # the rest arrives late: still answered
    assert recv_exactly(stalled, 1) == STATUS_KEYERROR
    stalled.close()
    other.close()


def test_malformed_commit_closes_only_that_client_and_changes_nothing(
    server: ServerProcess,
) -> None:
    good = client(server)
    commit(good, record(0))
    bad = server.connect_raw()
    bad.sendall(b"V" + int4(1) + b"C")
    assert recv_exactly(bad, 8) == int4(1) + int4(0)
    bad.sendall(int4(28) + int4(200) + bytes(24))  # item overruns the transaction
    assert bad.recv(1) == b""  # dropped, no status byte
    bad.close()
    assert good.load(oid(0)) == record(0)
    third = client(server)
    assert third.load(oid(0)) == record(0)
    good.close()
    third.close()
    server.quit()
    assert "protocol error" in server.output()


def test_foreign_unused_oid_commit_is_refused(server: ServerProcess) -> None:
    owner, thief = client(server), client(server)
    stolen = owner.new_oid()
    thief.begin()
    thief.store(stolen, record(int.from_bytes(stolen, "big")))
    with pytest.raises(ServerConnectionLost):
        thief.end()
    owner.begin()
    owner.store(stolen, record(int.from_bytes(stolen, "big"), data=b"mine"))
    owner.end()
    owner.close()


def test_version_mismatch_over_tcp(server: ServerProcess) -> None:
    raw = server.connect_raw()
    raw.sendall(b"V" + int4(2))
    assert recv_exactly(raw, 5) == int4(1)  # answered, then closed
    raw.close()


def test_server_stopped_while_clients_are_connected(server: ServerProcess) -> None:
    a = client(server)
    a.sync()
    server.quit()
    assert server.process.returncode == 0
    with pytest.raises(ServerConnectionLost, match="lost the connection"):
        a.sync()
    with pytest.raises(ServerConnectionLost):
        a.load(oid(0))
    a.close()
    with pytest.raises(AssertionError, match="Could not connect"):
        client(server)


def test_connections_with_durus_connection(server: ServerProcess) -> None:
    connection_module = pytest.importorskip("durus.connection")
    from durus.error import ConflictError

    c1 = connection_module.Connection(client(server))
    c2 = connection_module.Connection(client(server))
    c1.get_root()["x"] = 1
    c1.commit()
    c2.abort()
    assert c2.get_root()["x"] == 1
    c2.get_root()["x"] = 2
    c1.get_root()["x"] = 3
    c1.commit()
    with pytest.raises(ConflictError):
        c2.commit()
    c2.abort()
    assert c2.get_root()["x"] == 3
    c1.get_storage().close()
    c2.get_storage().close()


# ---------------------------------------------------------------- Unix sockets


def test_unix_socket_path_is_served_and_removed_on_quit() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "durus.sock")
        with ServerProcess(address=path) as server:
            a = client(server)
            commit(a, record(0))
            assert str(a).startswith(f"ClientStorage({path}")
            a.close()
            server.quit()
        assert not os.path.exists(path)


def test_abstract_unix_address() -> None:
    with ServerProcess(address=f"@durus@test-{os.getpid()}") as server:
        a = client(server)
        assert a.sync() == []
        a.close()
        server.quit()


# ---------------------------------------------------------------- systemd socket activation


def test_systemd_inherited_socket_is_used() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(40)
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(RUN_SERVER), "--port", "1", "--systemd-fd", str(listener.fileno())],
        pass_fds=[listener.fileno()],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listener.close()
    try:
        wait_for_server(port=port, maxtries=100, sleeptime=0.05)
        a = ClientStorage(port=port, timeout_s=WAIT_S)
        assert a.sync() == []
        a.close()
        quitter = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        quitter.sendall(b"Q")
        quitter.close()
        assert process.wait(timeout=WAIT_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT_S)


# ---------------------------------------------------------------- FileStorage behind the server


def test_file_storage_survives_a_server_restart() -> None:
    pytest.importorskip("durus.file_storage")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "data.durus")
        with ServerProcess("--file", path) as server:
            a = client(server)
            commit(a, record(0, data=b"kept"))
            a.close()
            server.quit()
        with ServerProcess("--file", path) as server:
            b, surprising = client(server), client(server)
            assert b.load(oid(0)) == record(0, data=b"kept")
            commit(surprising, record(0, data=b"lost"))  # fine: oid 0 exists
            assert b.sync() == [oid(0)]
            surprising.begin()
            surprising.store(oid(77), record(77))  # never handed out: FileStorage refuses
            with pytest.raises(ServerConnectionLost):
                surprising.end()
            commit(b, record(0, data=b"kept"))
            b.pack()
            assert b.load(oid(0)) == record(0, data=b"kept")
            b.close()
            server.quit()
            assert "surprise" in server.output()
        with ServerProcess("--file", path, "--readonly") as server:
            writer, reader = client(server), client(server)
            writer.begin()
            writer.store(oid(0), record(0, data=b"refused"))
            with pytest.raises(ServerConnectionLost):
                writer.end()
            assert reader.load(oid(0)) == record(0, data=b"kept")
            reader.close()
            server.quit()
            assert "read-only" in server.output()


# ---------------------------------------------------------------- in-process (threaded) server


class ThreadedServer:
    def __init__(self, **kwargs: object) -> None:
        self.port = free_port()
        self.server = StorageServer(MemoryStorage(), port=self.port, **kwargs)  # type: ignore
        self.thread = threading.Thread(target=self.server.serve_until_quit, daemon=True)
        self.thread.start()
        wait_for_server(port=self.port, maxtries=100, sleeptime=0.02)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def test_a_client_stuck_mid_message_is_dropped_after_the_timeout() -> None:
    threaded = ThreadedServer(client_timeout_s=0.3)
    try:
        stuck = socket.create_connection(("127.0.0.1", threaded.port), timeout=WAIT_S)
        stuck.sendall(b"B" + int4(5))
        started = time.monotonic()
        assert stuck.recv(1) == b""
        assert 0.2 < time.monotonic() - started < 3.0
        idle = socket.create_connection(("127.0.0.1", threaded.port), timeout=WAIT_S)
        time.sleep(0.6)  # idle between messages: never dropped
        idle.sendall(b"S")
        assert recv_exactly(idle, 4) == int4(0)
        idle.close()
        stuck.close()
    finally:
        threaded.stop()


def test_shutdown_leaves_storage_open_and_removes_nothing_else() -> None:
    threaded = ThreadedServer()
    a = ClientStorage(port=threaded.port, timeout_s=WAIT_S)
    commit(a, record(0))
    threaded.stop()
    assert threaded.server.storage.load(oid(0)) == record(0)
    with pytest.raises(ServerConnectionLost):
        a.sync()


def test_serve_raises_system_exit_after_quit() -> None:
    port = free_port()
    server = StorageServer(MemoryStorage(), port=port)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            server.serve()
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for_server(port=port, maxtries=100, sleeptime=0.02)
    quitter = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    quitter.sendall(b"Q")
    quitter.close()
    thread.join(WAIT_S)
    assert len(outcome) == 1 and isinstance(outcome[0], SystemExit)


def test_many_pipelined_loads_with_a_slow_reader() -> None:
    """Replies pile up while the client does not read; nothing is lost or reordered."""
    threaded = ThreadedServer(max_outbox_bytes=4096)
    try:
        writer = ClientStorage(port=threaded.port, timeout_s=WAIT_S)
        commit(writer, record(0, data=bytes(1000)))
        raw = socket.create_connection(("127.0.0.1", threaded.port), timeout=WAIT_S)
        raw.sendall((b"L" + oid(0)) * 500)
        time.sleep(0.2)
        expected = (b"O" + int4(1012) + record(0, data=bytes(1000))) * 500
        assert recv_exactly(raw, len(expected)) == expected
        raw.close()
        writer.close()
    finally:
        threaded.stop()


def test_wait_for_server_times_out_with_an_ordinary_exception() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(ServerTimeoutError, match=f"Timeout waiting for address: 127.0.0.1:{port}"):
        wait_for_server(port=port, maxtries=3, sleeptime=0.01)
    assert time.monotonic() - started < 2.0
    assert issubclass(ServerTimeoutError, TimeoutError)
    assert not issubclass(ServerTimeoutError, SystemExit)


def test_commits_are_serialized_and_a_stalled_committer_is_dropped() -> None:
    threaded = ThreadedServer(client_timeout_s=0.5)
    try:
        inside = socket.create_connection(("127.0.0.1", threaded.port), timeout=WAIT_S)
        inside.sendall(b"C")
        assert recv_exactly(inside, 4) == int4(0)  # inside its commit, then silent
        other = ClientStorage(port=threaded.port, timeout_s=WAIT_S)
        assert other.sync() == []  # loads and syncs are not held up
        started = time.monotonic()
        commit(other, record(0))  # waits for its turn until `inside` is dropped
        assert 0.3 < time.monotonic() - started < 4.0
        assert inside.recv(1) == b""
        inside.close()
        other.close()
    finally:
        threaded.stop()
