"""durus.client_storage: the bytes it sends, the errors it raises, its oid pool."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from durus.client_storage import (
    ClientStorage,
    CouldNotConnectError,
    ServerConnectionLost,
    StoreError,
)
from durus.error import (
    ConflictError,
    DurusKeyError,
    ProtocolError,
    ReadConflictError,
    WriteConflictError,
)
from durus.protocol import (
    BulkLoad,
    Commit,
    CommitData,
    Goodbye,
    Load,
    NeedData,
    NewOids,
    Pack,
    ServerProtocol,
    Sync,
    Version,
    int4,
)
from durus.server_core import LoopbackSocket, ServerCore
from durus.storage import MemoryStorage
from tests.support.records import oid, record
from tests.support.server_fixtures import free_port

CAPTURE = Path(__file__).parents[1] / "data" / "protocol_capture.json"


class FakeSocket:
    """Replies from a script; records every byte sent. recv past the script is EOF."""

    def __init__(self, replies: bytes = b"") -> None:
        self.replies = bytearray(replies)
        self.sent = bytearray()
        self.closed = False

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def recv(self, size: int) -> bytes:
        chunk = bytes(self.replies[:size])
        del self.replies[:size]
        return chunk

    def close(self) -> None:
        self.closed = True


class FakeFile:
    """A file-like fake (read/write): read(n) must be asked for exactly what it holds."""

    def __init__(self, replies: bytes) -> None:
        self.replies = bytearray(replies)
        self.written = bytearray()
        self.read_sizes: list[int] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def read(self, size: int) -> bytes:
        self.read_sizes.append(size)
        chunk = bytes(self.replies[:size])
        del self.replies[:size]
        return chunk


def loopback_client(core: ServerCore) -> ClientStorage:
    return ClientStorage(socket=LoopbackSocket(core))


# ---------------------------------------------------------------- byte-exact sessions


def capture_streams() -> dict[int, dict[str, bytes]]:
    streams: dict[int, dict[str, bytes]] = {}
    for step in json.loads(CAPTURE.read_text())["steps"]:
        for chunk in step["chunks"]:
            by_dir = streams.setdefault(chunk["conn"], {"C>S": b"", "S>C": b""})
            by_dir[chunk["dir"]] += bytes.fromhex(chunk["hex"])
    return streams


def refuse(oids: list[bytes]) -> None:
    raise WriteConflictError(oids)


def replay_with_client_storage(requests: list, storage: ClientStorage) -> None:
    """Make the ClientStorage calls that produce ``requests`` (after the handshake)."""
    for request in requests[1:]:
        if isinstance(request, Load):
            try:
                storage.load(request.oid)
            except (KeyError, ReadConflictError):
                pass
        elif isinstance(request, BulkLoad):
            list(storage.bulk_load(request.oids))
        elif isinstance(request, NewOids):
            assert not storage.oid_pool
            storage.new_oid()
        elif isinstance(request, CommitData):
            storage.begin()
            for item_oid, item_record in request.items:
                storage.store(item_oid, item_record)
            if request.abandoned:
                with pytest.raises(WriteConflictError):
                    storage.end(refuse)
            else:
                storage.end()
        elif isinstance(request, Sync):
            storage.sync()
        elif isinstance(request, Pack):
            storage.pack()
        elif isinstance(request, Goodbye):
            storage.close()
        else:
            assert isinstance(request, Commit)


@pytest.mark.parametrize("conn", [1, 2])
def test_client_storage_sends_the_captured_bytes(conn: int) -> None:
    stream = capture_streams()[conn]
    server = ServerProtocol()
    server.receive_data(stream["C>S"])
    requests = []
    while server.state != "closed":
        event = server.next_event()
        if isinstance(event, NeedData):
            break
        requests.append(event)
    assert requests[0] == Version(1)
    fake = FakeSocket(stream["S>C"])
    replay_with_client_storage(requests, ClientStorage(socket=fake))
    assert bytes(fake.sent) == stream["C>S"]
    assert not fake.replies and fake.closed


def test_reads_exactly_what_each_reply_needs_from_a_file_like_object() -> None:
    rec = record(0)
    fake = FakeFile(int4(1) + b"O" + int4(len(rec)) + rec + b"K")
    storage = ClientStorage(socket=fake)
    assert storage.load(oid(0)) == rec
    with pytest.raises(DurusKeyError):
        storage.load(oid(1))
    assert fake.read_sizes == [4, 1, 4, len(rec), 1]
    assert bytes(fake.written) == b"V" + int4(1) + b"L" + oid(0) + b"L" + oid(1)


# ---------------------------------------------------------------- connecting


def test_version_mismatch_raises_protocol_error_and_closes_the_socket() -> None:
    fake = FakeSocket(int4(2))
    with pytest.raises(ProtocolError, match="Protocol version mismatch"):
        ClientStorage(socket=fake)
    assert fake.closed


def test_nothing_listening_on_tcp() -> None:
    port = free_port()
    with pytest.raises(AssertionError, match=f"Could not connect to 127.0.0.1:{port}"):
        ClientStorage(port=port)
    with pytest.raises(ConnectionRefusedError):
        ClientStorage(port=port)


def test_nothing_listening_on_a_unix_path() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "missing.sock")
        with pytest.raises(CouldNotConnectError, match="Could not connect to"):
            ClientStorage(address=path)
        open(path, "w").close()  # a regular file, not a socket
        with pytest.raises(CouldNotConnectError):
            ClientStorage(address=path)


def test_timeout_bounds_waiting_for_a_silent_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts at the kernel level, never answers
        port = listener.getsockname()[1]
        with pytest.raises(ServerConnectionLost, match="during Version"):
            ClientStorage(port=port, timeout_s=0.2)


def test_str_and_from_socket() -> None:
    core = ServerCore(MemoryStorage())
    storage = ClientStorage.from_socket(LoopbackSocket(core))
    assert str(storage).startswith("ClientStorage(LoopbackSocket(client ")
    storage.close()


# ---------------------------------------------------------------- loads


def test_load_maps_statuses_to_errors() -> None:
    core = ServerCore(MemoryStorage())
    a, b = loopback_client(core), loopback_client(core)
    a.begin()
    a.store(a.new_oid(), record(0))
    a.end()
    with pytest.raises(ReadConflictError) as conflict:
        b.load(oid(0))
    assert conflict.value.oids == [oid(0)]
    assert b.sync() == [oid(0)]
    assert b.load(oid(0)) == record(0)
    with pytest.raises(DurusKeyError) as missing:
        b.load(oid(5))
    assert missing.value.args == (oid(5),)


def test_unexpected_load_status_is_a_protocol_error() -> None:
    storage = ClientStorage(socket=FakeSocket(int4(1) + b"X"))
    with pytest.raises(ProtocolError, match="status=b'X'"):
        storage.load(oid(3))


def test_a_record_for_the_wrong_oid_is_a_protocol_error() -> None:
    rec = record(7)
    storage = ClientStorage(socket=FakeSocket(int4(1) + b"O" + int4(len(rec)) + rec))
    with pytest.raises(ProtocolError, match="record of"):
        storage.load(oid(3))


def test_bulk_load_drains_every_reply_before_raising() -> None:
    """Wart 30: the next request must not read the rest of a failed bulk load."""
    core = ServerCore(MemoryStorage())
    a, b = loopback_client(core), loopback_client(core)
    a.begin()
    for n in range(3):
        a.store(a.new_oid(), record(n))
    a.end()
    assert sorted(b.sync()) == [oid(0), oid(1), oid(2)]
    a.begin()
    a.store(oid(0), record(0, data=b"new"))
    a.end()
    with pytest.raises(ReadConflictError):
        list(b.bulk_load([oid(0), oid(1), oid(9), oid(2)]))
    assert b.sync() == [oid(0)]
    assert list(b.bulk_load([oid(1), oid(2)])) == [record(1), record(2)]
    with pytest.raises(DurusKeyError):
        list(b.bulk_load([oid(1), oid(9)]))
    assert list(b.bulk_load([])) == []


# ---------------------------------------------------------------- oid pool


def test_oid_pool_hands_out_the_servers_oids_in_order() -> None:
    core = ServerCore(MemoryStorage())
    storage = loopback_client(core)
    assert [storage.new_oid() for _ in range(33)] == [oid(n) for n in range(33)]
    assert len(storage.oid_pool) == 31


@pytest.mark.parametrize("size", [0, 256, -1, "32", True, 1.5])
def test_oid_pool_size_is_validated(size: Any) -> None:
    storage = loopback_client(ServerCore(MemoryStorage()))
    with pytest.raises(ValueError, match="oid_pool_size"):
        storage.oid_pool_size = size
    assert storage.oid_pool_size == 32


def test_oid_pool_size_255_works() -> None:
    storage = loopback_client(ServerCore(MemoryStorage()))
    storage.oid_pool_size = 255
    storage.new_oid()
    assert len(storage.oid_pool) == 254


def make_conflict(core: ServerCore) -> tuple[ClientStorage, ClientStorage]:
    """Two clients; a commits oid 0 after b connected, so oid 0 is invalid for b."""
    a, b = loopback_client(core), loopback_client(core)
    a.begin()
    a.store(a.new_oid(), record(0))
    a.end()
    return a, b


def test_conflict_in_the_handler_abandons_and_returns_oids_in_order() -> None:
    core = ServerCore(MemoryStorage())
    a, b = make_conflict(core)
    b.begin()
    new = [b.new_oid(), b.new_oid()]
    for n in new:
        b.store(n, record(int.from_bytes(n, "big")))
    with pytest.raises(WriteConflictError):
        b.end(refuse)
    assert b.oid_pool[:2] == new and b.transaction_new_oids == []
    assert b.sync() == []  # the stream is still in step: the list came with 'C'
    b.begin()
    assert [b.new_oid(), b.new_oid()] == new
    with pytest.raises(DurusKeyError):
        a.load(new[0])


def test_other_handler_errors_abandon_without_reusing_oids() -> None:
    core = ServerCore(MemoryStorage())
    _a, b = make_conflict(core)
    b.begin()
    first = b.new_oid()
    b.store(first, record(int.from_bytes(first, "big")))

    def broken(oids: list[bytes]) -> None:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        b.end(broken)
    assert first not in b.oid_pool
    assert b.sync() == []


def test_handler_that_accepts_lets_the_commit_through() -> None:
    core = ServerCore(MemoryStorage())
    a, b = make_conflict(core)
    seen: list[list[bytes]] = []
    b.begin()
    n = b.new_oid()
    b.store(n, record(int.from_bytes(n, "big")))
    b.end(seen.append)
    assert seen == [[oid(0)]]
    assert a.sync() == [n]


def test_invalid_status_raises_write_conflict_and_returns_oids() -> None:
    core = ServerCore(MemoryStorage())
    a, b = make_conflict(core)
    b.begin()
    n = b.new_oid()
    b.store(oid(0), record(0, data=b"stale"))  # b was told oid 0 is invalid, ignores it
    b.store(n, record(int.from_bytes(n, "big")))
    with pytest.raises(WriteConflictError) as error:
        b.end(None)
    assert error.value.oids is None
    assert b.oid_pool[0] == n
    assert a.load(oid(0)) == record(0)


def test_empty_transaction_reads_no_status() -> None:
    fake = FakeSocket(int4(1) + int4(0))
    storage = ClientStorage(socket=fake)
    storage.begin()
    storage.end()
    assert bytes(fake.sent) == b"V" + int4(1) + b"C" + int4(0)


def test_store_guards_are_real_exceptions() -> None:
    storage = loopback_client(ServerCore(MemoryStorage()))
    storage.begin()
    storage.store(oid(0), record(0))
    with pytest.raises(StoreError):
        storage.store(oid(0), record(0))
    with pytest.raises(AssertionError):
        storage.store(b"short", record(0))
    with pytest.raises(ValueError):
        storage.load(b"short")


# ---------------------------------------------------------------- pack, close, lost server


def test_pack_and_close() -> None:
    core = ServerCore(MemoryStorage())
    storage = loopback_client(core)
    storage.pack()
    storage.close()
    storage.close()
    assert core.clients == {}


def test_bad_pack_status_is_a_protocol_error() -> None:
    storage = ClientStorage(socket=FakeSocket(int4(1) + b"K"))
    with pytest.raises(ProtocolError):
        storage.pack()


def test_close_sends_goodbye() -> None:
    fake = FakeSocket(int4(1))
    ClientStorage(socket=fake).close()
    assert bytes(fake.sent) == b"V" + int4(1) + b"." and fake.closed


def test_lost_server_gives_a_clear_error_on_every_later_call() -> None:
    fake = FakeSocket(int4(1))
    storage = ClientStorage(socket=fake)
    with pytest.raises(ServerConnectionLost, match="during Sync") as lost:
        storage.sync()
    assert isinstance(lost.value, OSError)
    sent = len(fake.sent)
    with pytest.raises(ServerConnectionLost):
        storage.load(oid(0))
    assert len(fake.sent) == sent  # nothing more was sent on a broken stream
    storage.close()
    assert fake.closed


def test_conflict_error_is_what_connection_catches() -> None:
    assert issubclass(WriteConflictError, ConflictError)


# ---------------------------------------------------------------- with durus.connection


def test_connections_through_loopback_see_conflicts_and_reuse_oids() -> None:
    connection_module = pytest.importorskip("durus.connection")
    from durus.persistent_dict import PersistentDict

    core = ServerCore(MemoryStorage())
    c1 = connection_module.Connection(loopback_client(core))
    c2 = connection_module.Connection(loopback_client(core))
    c1.get_root()["shared"] = PersistentDict()
    c1.commit()
    c2.abort()
    shared2 = c2.get_root()["shared"]
    shared2["by"] = 2
    c1.get_root()["shared"]["by"] = 1
    c1.commit()
    c2.get_root()["extra"] = PersistentDict()  # takes a new oid from a fresh pool
    with pytest.raises(ConflictError):
        c2.commit()
    pool = c2.get_storage().oid_pool
    assert len(pool) == 32 and pool == sorted(pool)  # the oid it took went back first
    returned = pool[0]
    c2.abort()
    assert c2.get_root()["shared"]["by"] == 1
    c2.get_root()["extra"] = PersistentDict()
    c2.commit()
    assert c2.get_root()["extra"]._p_oid == returned
    c1.abort()
    assert "extra" in c1.get_root()


def test_severed_loopback_gives_a_clear_error() -> None:
    core = ServerCore(MemoryStorage())
    sock = LoopbackSocket(core)
    storage = ClientStorage(socket=sock)
    sock.sever()
    assert core.clients == {}
    with pytest.raises(ServerConnectionLost, match="during Sync"):
        storage.sync()
    storage.close()
