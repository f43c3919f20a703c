"""Server hardening: authentication, TLS, limits, access control, faults, slow clients.

Servers run in a thread of the test process (``ThreadedServer``) unless a
test needs a process of its own. Every socket wait is bounded by a timeout.
See docs/security.md for the model these tests hold the server to.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from durus.auth import (
    AuthenticationError,
    InsecureSecretFileError,
    authenticate_socket,
    read_secret_file,
)
from durus.client_storage import (
    AuthenticationRequiredError,
    ClientStorage,
    ServerConnectionLost,
)
from durus.connection import Connection
from durus.error import ProtocolError, WriteConflictError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.protocol import (
    AUTH_NONCE_BYTES,
    AUTH_REQUIRED_VERSION,
    PROTOCOL_VERSION,
    int4,
)
from durus.storage import MemoryStorage
from durus.storage_server import DEFAULT_HOST, StorageServer, wait_for_server
from tests.support.records import commit, oid, record
from tests.support.server_fixtures import (
    WAIT_S,
    LogCapture,
    ThreadedServer,
    has_openssl,
    make_tls_files,
    recv_exactly,
    wait_until,
    write_secret,
)

SECRET = b"correct horse battery staple 0123"


def allocate_and_commit(storage: ClientStorage, data: bytes) -> bytes:
    """Commit one new record with a server-allocated oid; return the oid."""
    new = storage.new_oid()
    commit(storage, record(int.from_bytes(new, "big"), data=data))
    return new


# ---------------------------------------------------------------- access control basics


def test_the_server_binds_to_loopback_by_default() -> None:
    server = StorageServer(MemoryStorage())
    assert DEFAULT_HOST == "127.0.0.1"
    assert server.address.socket_address() == ("127.0.0.1", 2972)


def test_a_unix_socket_gets_the_umask_it_is_given(tmp_path: Path) -> None:
    path = str(tmp_path / "durus.sock")
    from durus.socket_address import SocketAddress

    server = StorageServer(MemoryStorage(), address=SocketAddress.new(path, umask=0o077))
    thread = threading.Thread(target=server.serve_until_quit, daemon=True)
    thread.start()
    try:
        # The file appears at bind(), a moment before listen(): wait for a connection.
        wait_for_server(address=path, maxtries=int(WAIT_S / 0.05), sleeptime=0.05)
        assert os.stat(path).st_mode & 0o777 == 0o700
        assert ClientStorage(address=path, timeout_s=WAIT_S).sync() == []
    finally:
        server.shutdown()
        thread.join(WAIT_S)
    assert not os.path.exists(path)


# ---------------------------------------------------------------- the secret file


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "secret", SECRET)
    assert read_secret_file(path) == SECRET
    for mode in (0o640, 0o604, 0o620, 0o660):
        os.chmod(path, mode)
        with pytest.raises(InsecureSecretFileError, match="readable by its owner only"):
            read_secret_file(path)
    os.chmod(path, 0o600)
    Path(path).write_bytes(b"short\n")
    with pytest.raises(ValueError, match="16..4096 bytes"):
        read_secret_file(path)


# ---------------------------------------------------------------- authentication


@pytest.fixture
def auth_server() -> Any:
    with ThreadedServer(auth_secret=SECRET, auth_timeout_s=0.5) as threaded:
        yield threaded


def test_authenticated_clients_work_with_connections(auth_server: ThreadedServer) -> None:
    a = ClientStorage(address=auth_server.address, auth_secret=SECRET, timeout_s=WAIT_S)
    b = ClientStorage(address=auth_server.address, auth_secret=SECRET, timeout_s=WAIT_S)
    ca, cb = Connection(a), Connection(b)
    ca.get_root()["x"] = PersistentDict(value=1)
    ca.commit()
    cb.abort()
    assert cb.get_root()["x"]["value"] == 1
    a.close()
    b.close()


def test_auth_file_option_of_client_storage(auth_server: ThreadedServer, tmp_path: Path) -> None:
    path = write_secret(tmp_path / "secret", SECRET)
    storage = ClientStorage(address=auth_server.address, auth_file=path, timeout_s=WAIT_S)
    assert storage.sync() == []
    storage.close()
    with pytest.raises(ValueError, match="not both"):
        ClientStorage(address=auth_server.address, auth_file=path, auth_secret=SECRET)


def test_wrong_secret_is_refused_and_the_server_keeps_serving(
    auth_server: ThreadedServer,
) -> None:
    with LogCapture() as captured:
        with pytest.raises(AuthenticationError, match="failed to prove"):
            ClientStorage(address=auth_server.address, auth_secret=b"x" * 32, timeout_s=WAIT_S)
    good = ClientStorage(address=auth_server.address, auth_secret=SECRET, timeout_s=WAIT_S)
    assert good.sync() == []
    good.close()
    assert "authentication" not in captured.text() or "Dropping" in captured.text()


def test_a_wrong_client_proof_closes_the_connection(auth_server: ThreadedServer) -> None:
    """A client that knows the protocol but not the secret: the server closes, logged."""
    with LogCapture() as captured:
        sock = auth_server.connect_raw()
        sock.sendall(b"A" + bytes(AUTH_NONCE_BYTES))
        assert len(recv_exactly(sock, 64)) == 64
        sock.sendall(bytes(32))
        assert sock.recv(1) == b""
        sock.close()
        assert wait_until(lambda: "authentication failed" in captured.text())


def test_a_client_without_secret_gets_a_clear_error(auth_server: ThreadedServer) -> None:
    with pytest.raises(AuthenticationRequiredError, match="requires authentication"):
        ClientStorage(address=auth_server.address, timeout_s=WAIT_S)
    assert issubclass(AuthenticationRequiredError, ProtocolError)


def test_a_durus43_style_client_sees_a_version_mismatch(auth_server: ThreadedServer) -> None:
    """What a 4.3 ClientStorage does: send V 1; it then raises 'Protocol version mismatch.'"""
    with LogCapture() as captured:
        sock = auth_server.connect_raw()
        sock.sendall(b"V" + int4(PROTOCOL_VERSION))
        reply = recv_exactly(sock, 4)
        assert reply == int4(AUTH_REQUIRED_VERSION) != int4(PROTOCOL_VERSION)
        assert sock.recv(1) == b""
        sock.close()
        other = auth_server.connect_raw()
        other.sendall(b"L" + oid(0))  # any other first command: closed, nothing sent
        assert other.recv(1) == b""
        other.close()
        assert wait_until(lambda: captured.text().count("Dropping client") == 2)


def test_an_unauthenticated_connection_is_dropped_after_the_auth_timeout(
    auth_server: ThreadedServer,
) -> None:
    sock = auth_server.connect_raw()
    started = time.monotonic()
    assert sock.recv(1) == b""  # said nothing at all
    assert 0.3 < time.monotonic() - started < 5.0
    sock.close()


def test_a_client_with_a_secret_refuses_a_server_without_authentication() -> None:
    with ThreadedServer() as plain:
        with pytest.raises(AuthenticationError, match="refused authentication"):
            ClientStorage(address=plain.address, auth_secret=SECRET, timeout_s=WAIT_S)
        raw = plain.connect_raw()  # with auth off, 'A' is an unknown command, as in 4.3
        raw.sendall(b"A" + bytes(AUTH_NONCE_BYTES))
        assert raw.recv(1) == b""
        raw.close()
        assert ClientStorage(address=plain.address, timeout_s=WAIT_S).sync() == []


def test_stop_needs_the_secret(tmp_path: Path) -> None:
    from durus.cli import ClientAccess, stop_durus

    threaded = ThreadedServer(auth_secret=SECRET)
    try:
        quitter = threaded.connect_raw()
        quitter.sendall(b"Q")  # unauthenticated quit: refused
        assert quitter.recv(1) == b""
        quitter.close()
        assert threaded.thread.is_alive()
        access = ClientAccess(write_secret(tmp_path / "secret", SECRET))
        assert stop_durus(threaded.address, access)
        threaded.thread.join(WAIT_S)
        assert not threaded.thread.is_alive()
    finally:
        threaded.stop()


def test_authenticate_socket_against_a_fake_server() -> None:
    """A server that does not know the secret never gets the client's proof."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def fake_server() -> None:
        conn, _ = listener.accept()
        conn.settimeout(WAIT_S)
        received.append(recv_exactly(conn, 1 + AUTH_NONCE_BYTES))
        conn.sendall(bytes(64))  # a nonce and a made-up MAC
        received.append(conn.recv(64))  # the client closes instead of proving itself
        conn.close()

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    sock = socket.create_connection(listener.getsockname(), timeout=WAIT_S)
    with pytest.raises(AuthenticationError, match="failed to prove"):
        authenticate_socket(sock, SECRET)
    sock.close()
    thread.join(WAIT_S)
    listener.close()
    assert received[1] == b""


# ---------------------------------------------------------------- TLS

needs_openssl = pytest.mark.skipif(not has_openssl(), reason="the openssl command is missing")


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@needs_openssl
def test_tls_with_several_clients_and_authentication(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    context = server_tls_context(cert, key)
    with ThreadedServer(tls=context, auth_secret=SECRET) as threaded:
        clients = [
            ClientStorage(address=threaded.address, tls=cert, auth_secret=SECRET, timeout_s=WAIT_S)
            for _ in range(4)
        ]
        assert clients[0].s.version() in ("TLSv1.2", "TLSv1.3")
        big = bytes(range(256)) * 2000  # 512 kB: many TLS records each way
        oids = [allocate_and_commit(c, big + bytes([i])) for i, c in enumerate(clients)]
        for reader in clients:
            reader.sync()
            for i, new in enumerate(oids):
                assert reader.load(new) == record(int.from_bytes(new, "big"), data=big + bytes([i]))
            assert list(reader.bulk_load(oids))[1] == reader.load(oids[1])
        for c in clients:
            c.close()


@needs_openssl
def test_tls_refuses_plain_clients_and_unverified_servers(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    other_cert, _other_key = make_tls_files(tmp_path, "other")
    with ThreadedServer(tls=server_tls_context(cert, key), client_timeout_s=1.0) as threaded:
        with pytest.raises((ServerConnectionLost, ProtocolError)):
            ClientStorage(address=threaded.address, timeout_s=WAIT_S)  # plain bytes
        with pytest.raises(ssl.SSLCertVerificationError):
            ClientStorage(address=threaded.address, tls=other_cert, timeout_s=WAIT_S)
        silent = threaded.connect_raw()  # connects and never starts the handshake
        good = ClientStorage(address=threaded.address, tls=cert, timeout_s=WAIT_S)
        assert good.sync() == []
        assert silent.recv(1) == b""  # dropped after client_timeout_s
        silent.close()
        good.close()


# ---------------------------------------------------------------- limits


def test_max_message_bytes_disconnects_the_sender_only() -> None:
    with LogCapture() as captured, ThreadedServer(max_message_bytes=4096) as threaded:
        good = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        small = allocate_and_commit(good, b"small")
        big = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        with pytest.raises(ServerConnectionLost):
            allocate_and_commit(big, bytes(5000))
        raw = threaded.connect_raw()
        raw.sendall(b"B" + int4(4096))  # 32 kB of oids announced: over the limit
        assert raw.recv(1) == b""
        raw.close()
        assert good.load(small)[8 + 4 :].startswith(b"small")
        assert wait_until(lambda: "exceeds 4096" in captured.text())
        assert wait_until(lambda: "exceeds 512" in captured.text())  # 4096 // 8 oids
        good.close()


def test_max_commit_records_disconnects_the_sender() -> None:
    with LogCapture() as captured, ThreadedServer(max_commit_records=2) as threaded:
        storage = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        oids = [storage.new_oid() for _ in range(3)]
        storage.begin()
        for new in oids[:2]:
            storage.store(new, record(int.from_bytes(new, "big")))
        storage.end()
        other = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        more = [other.new_oid() for _ in range(3)]
        other.begin()
        for new in more:
            storage_record = record(int.from_bytes(new, "big"))
            other.store(new, storage_record)
        with pytest.raises(ServerConnectionLost):
            other.end()
        assert wait_until(lambda: "more than 2 records" in captured.text())
        storage.sync()
        with pytest.raises(KeyError):
            storage.load(more[0])
        storage.close()


def test_max_clients_closes_extra_connections_at_once() -> None:
    with LogCapture() as captured, ThreadedServer(max_clients=2) as threaded:
        first = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        second = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        with pytest.raises((ServerConnectionLost, ConnectionError)):
            ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        assert wait_until(lambda: "Refusing a connection: 2 clients already" in captured.text())
        first.close()
        assert wait_until(lambda: len(threaded.server.connections) == 1)
        third = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        assert third.sync() == [] and second.sync() == []
        second.close()
        third.close()


def test_idle_timeout_disconnects_silent_clients() -> None:
    with LogCapture() as captured, ThreadedServer(idle_timeout_s=0.3) as threaded:
        idle = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        busy = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert busy.sync() == []  # active: never dropped
            time.sleep(0.05)
        with pytest.raises(ServerConnectionLost):
            idle.sync()
        assert "idle for more than 0.3 s" in captured.text()
        busy.close()


def test_limits_are_validated() -> None:
    for bad in (dict(max_message_bytes=0), dict(max_clients=0), dict(idle_timeout_s=-1)):
        with pytest.raises(ValueError):
            StorageServer(MemoryStorage(), **bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StorageServer(MemoryStorage(), tls="cert.pem")  # type: ignore[arg-type]


# ---------------------------------------------------------------- server-side checks


def test_writing_an_oid_the_commit_list_named_is_refused_over_tcp() -> None:
    """A careless client ignores the invalidation list its commit got: STATUS_INVALID."""
    with ThreadedServer() as threaded:
        a = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        b = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        target = allocate_and_commit(a, b"first")
        number = int.from_bytes(target, "big")
        b.sync()
        commit(a, record(number, data=b"a"))  # target is now invalid for b
        b.begin()
        b.store(target, record(number, data=b"b overwrites"))
        with pytest.raises(WriteConflictError):
            b.end()  # no handler: b sends its data anyway, the server answers 'I'
        assert a.load(target) == record(number, data=b"a")
        b.sync()
        commit(b, record(number, data=b"b after sync"))  # after a sync it may
        a.sync()
        assert a.load(target) == record(number, data=b"b after sync")
        a.close()
        b.close()


def test_a_commit_to_a_readonly_server_is_refused_and_reads_go_on(tmp_path: Path) -> None:
    path = str(tmp_path / "ro.durus")
    writer = FileStorage(path)
    connection = Connection(writer)
    connection.get_root()["k"] = 1
    connection.commit()
    writer.close()
    with LogCapture() as captured:
        with ThreadedServer(FileStorage(path, readonly=True)) as threaded:
            reader = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
            committer = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
            root = reader.load(oid(0))
            with pytest.raises(ServerConnectionLost):
                commit(committer, root)
            assert reader.load(oid(0)) == root
            assert Connection(ClientStorage(address=threaded.address)).get_root()["k"] == 1
        assert "read-only" in captured.text()


# ---------------------------------------------------------------- faults


class DiskFullStorage:
    """A FileStorage whose end() fails with ENOSPC while ``full`` is set."""

    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage
        self.full = False
        self.failures = 0

    def end(self, handle_invalidations: Any = None) -> None:
        if self.full:
            self.failures += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.storage.end(handle_invalidations)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def test_disk_full_during_a_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "full.durus")
    wrapped = DiskFullStorage(FileStorage(path))
    with LogCapture() as captured, ThreadedServer(wrapped) as threaded:
        a = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        kept = allocate_and_commit(a, b"kept")
        size_before = os.path.getsize(path)
        wrapped.full = True
        b = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        lost_oid = b.new_oid()
        b.begin()
        b.store(lost_oid, record(int.from_bytes(lost_oid, "big"), data=b"lost"))
        with pytest.raises(ServerConnectionLost):
            b.end()
        assert wrapped.failures == 1
        assert wait_until(lambda: "No space left on device" in captured.text())
        assert a.load(kept)[12:] == b"kept"  # reads go on
        assert os.path.getsize(path) == size_before
        wrapped.full = False  # space is back
        c = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        later = allocate_and_commit(c, b"later")
        a.close()
        c.close()
    wrapped.storage.close()
    reopened = FileStorage(path, readonly=True)
    records = dict(reopened.gen_oid_record())
    assert set(records) == {kept, later}
    assert lost_oid not in records
    reopened.close()


# ---------------------------------------------------------------- slow clients


def p99_latency_s(storage: ClientStorage, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        storage.load(oid(0))
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[int(len(samples) * 0.99) - 1]


def test_a_stalled_client_does_not_delay_the_others() -> None:
    """p99 of loads with a client stalled mid-message is within 2x (+20 ms) of without."""
    rounds = 300
    with ThreadedServer(client_timeout_s=30.0) as threaded:
        clients = [ClientStorage(address=threaded.address, timeout_s=WAIT_S) for _ in range(3)]
        commit(clients[0], record(0, data=bytes(2000)))
        for c in clients:
            c.sync()
            p99_latency_s(c, 20)  # warm up
        baseline = max(p99_latency_s(c, rounds) for c in clients)
        stalled = threaded.connect_raw()
        stalled.sendall(b"V" + int4(1))
        assert recv_exactly(stalled, 4) == int4(1)
        stalled.sendall(b"B" + int4(3) + oid(0)[:5])  # half a message, then nothing
        second_stall = threaded.connect_raw()
        second_stall.sendall(b"C")
        recv_exactly(second_stall, 4)
        second_stall.sendall(int4(100) + b"xx")  # inside its commit, half the data
        with_stall = max(p99_latency_s(c, rounds) for c in clients)
        assert with_stall <= 2 * baseline + 0.020, (baseline, with_stall)
        stalled.close()
        second_stall.close()
        for c in clients:
            c.close()


# ---------------------------------------------------------------- the server never unpickles


class _Trap:
    """Unpickling this runs ``open(path, 'w')``: the marker file appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_hostile_pickles_are_stored_and_packed_but_never_run(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "unpickled"
    hostile = pickle.dumps(_Trap(str(marker)))
    with ThreadedServer(FileStorage(str(tmp_path / "p.durus"))) as threaded:
        client = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        # the root itself holds the trap, as class pickle and as state, and refers to oid 1
        commit(client, record(0, 1, data=hostile + hostile))
        new = client.new_oid()
        commit(client, record(0, int.from_bytes(new, "big"), data=hostile))
        commit(client, record(int.from_bytes(new, "big"), data=hostile))
        client.pack()
        assert wait_until(lambda: threaded.server.packer is None)
        assert client.load(new)[12:] == hostile
        client.close()
    assert not marker.exists()


def test_a_write_error_inside_the_file_layer_during_a_commit() -> None:
    """ENOSPC from the raw file (part of the write reached the disk): same outcome."""
    from tests.support.faulty_disk import FaultyDisk

    disk = FaultyDisk()
    storage = FileStorage("db.durus", file_system=disk)
    with LogCapture() as captured, ThreadedServer(storage) as threaded:
        a = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        kept = allocate_and_commit(a, b"kept")
        size_before = len(disk.read_file("db.durus"))
        disk.fail_write(after_calls=0, partial_bytes=7)
        b = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        with pytest.raises(ServerConnectionLost):
            allocate_and_commit(b, b"lost" * 100)
        assert wait_until(lambda: "commit refused by the storage" in captured.text())
        assert a.load(kept)[12:] == b"kept"
        assert len(disk.read_file("db.durus")) == size_before  # the torn tail was removed
        later = allocate_and_commit(
            ClientStorage(address=threaded.address, timeout_s=WAIT_S), b"ok"
        )
        a.close()
    storage.close()
    reopened = FileStorage("db.durus", readonly=True, file_system=FaultyDisk(disk.image()))
    assert {o: r[12:] for o, r in reopened.gen_oid_record()} == {kept: b"kept", later: b"ok"}
    reopened.close()
