"""StorageServer's socket loop under socket trouble: slow readers, resets, accept and TLS failures.

Every server runs in a thread of the test process, so the loop's error
paths are measured. Each test checks what a user relies on: the troubled
client alone is closed (with a logged reason), the other clients go on, and
nothing stored changes. Every socket wait is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from durus.client_storage import ClientStorage
from durus.file_storage import FileStorage
from durus.protocol import STATUS_OKAY, int4
from durus.storage import MemoryStorage
from durus.storage_server import InheritedSocket, StorageServer, wait_for_server
from tests.support.records import commit, oid, record
from tests.support.server_fixtures import (
    WAIT_S,
    LogCapture,
    ThreadedServer,
    has_openssl,
    make_tls_files,
    recv_exactly,
    wait_until,
)

needs_openssl = pytest.mark.skipif(not has_openssl(), reason="the openssl command is missing")
BIG_DATA = bytes(range(256)) * 400  # a 100 kB record


def storage_with_big_record() -> MemoryStorage:
    storage = MemoryStorage()
    commit(storage, record(1, data=BIG_DATA))
    return storage


def small_buffer_socket(threaded: ThreadedServer) -> socket.socket:
    """A client socket whose connection has small buffers at both ends, so sends soon block."""
    known = set(threaded.server.connections)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_S)
    sock.connect(threaded.address)
    assert wait_until(lambda: set(threaded.server.connections) - known)
    [new_id] = set(threaded.server.connections) - known
    server_end = threaded.server.connections[new_id].sock
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock


def read_load_reply(sock: socket.socket) -> bytes:
    status = recv_exactly(sock, 1)
    assert status == STATUS_OKAY, status
    size = struct.unpack(">I", recv_exactly(sock, 4))[0]
    return recv_exactly(sock, size)


def pending_output(server: StorageServer) -> int:
    return sum(len(c.outbuf) for c in list(server.connections.values()))


@contextmanager
def serving(server: StorageServer) -> Iterator[StorageServer]:
    """Run ``server`` in a thread; shut it down (bounded) afterwards."""
    thread = threading.Thread(target=server.serve_until_quit, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(WAIT_S)
        assert not thread.is_alive()


# ---------------------------------------------------------------- slow and vanishing readers


def test_a_slow_reader_gets_every_reply_while_others_are_served() -> None:
    storage = storage_with_big_record()
    loads = 40  # 4 MB of replies: far more than the socket buffers and the outbox limit
    with ThreadedServer(storage, max_outbox_bytes=64 * 1024) as threaded:
        slow = small_buffer_socket(threaded)
        slow.sendall((b"L" + oid(1)) * loads)
        assert wait_until(lambda: pending_output(threaded.server) > 0)  # its sends blocked
        other = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        assert other.load(oid(1)) == record(1, data=BIG_DATA)  # not held up by the slow reader
        replies = [read_load_reply(slow) for _ in range(loads)]
        assert replies == [record(1, data=BIG_DATA)] * loads
        slow.sendall(b"L" + oid(2))
        assert recv_exactly(slow, 1) == b"K"  # the slow reader is still served normally
        slow.close()
        other.close()
    assert storage.load(oid(1)) == record(1, data=BIG_DATA)


def test_a_reader_that_resets_mid_reply_is_dropped_alone() -> None:
    storage = storage_with_big_record()
    with LogCapture() as captured, ThreadedServer(storage, max_outbox_bytes=64 * 1024) as threaded:
        other = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        vanishing = small_buffer_socket(threaded)
        vanishing.sendall((b"L" + oid(1)) * 40)
        assert wait_until(lambda: pending_output(threaded.server) > 0)
        vanishing.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        vanishing.close()  # a reset, with replies still queued for it
        assert wait_until(lambda: len(threaded.server.connections) == 1)
        assert "send failed: [Errno 104] Connection reset by peer" in captured.text()
        assert other.load(oid(1)) == record(1, data=BIG_DATA)
        other.close()
    assert storage.load(oid(1)) == record(1, data=BIG_DATA)


def test_a_client_resetting_inside_a_commit_changes_nothing() -> None:
    storage = MemoryStorage()
    with ThreadedServer(storage) as threaded:
        first = ClientStorage(address=threaded.address, timeout_s=WAIT_S)
        new = first.new_oid()
        raw = socket.create_connection(threaded.address, timeout=WAIT_S)
        raw.sendall(b"C")
        assert recv_exactly(raw, 4) == int4(0)  # its commit turn: the other waits
        raw.sendall(int4(100) + b"\0" * 10)  # part of the transaction data, then a reset
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        first.begin()
        first.store(new, record(int.from_bytes(new, "big"), data=b"mine"))
        first.end()  # the turn passed on when the reset client was dropped
        assert first.load(new) == record(int.from_bytes(new, "big"), data=b"mine")
        first.close()
    assert list(storage.gen_oid_record()) == [
        (new, record(int.from_bytes(new, "big"), data=b"mine"))
    ]


# ---------------------------------------------------------------- accepting


class FlakyListener(socket.socket):
    """A listening socket whose first accept() fails as when the process is out of descriptors."""

    failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures == 0:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


def test_an_accept_failure_is_logged_and_the_client_is_accepted_later() -> None:
    listener = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    server = StorageServer(MemoryStorage(), address=InheritedSocket(listener))
    assert str(server.address) == f"inherited socket ('127.0.0.1', {port})"
    with LogCapture() as captured, serving(server):
        client = ClientStorage(port=port, timeout_s=WAIT_S)  # served on a later pass
        assert client.sync() == []
        client.close()
        assert "accept() failed: [Errno 24] Too many open files" in captured.text()
    assert listener.failures == 1


def test_a_burst_larger_than_one_pass_of_accepts_is_served() -> None:
    from durus.storage_server import MAX_ACCEPTS_PER_PASS

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(MAX_ACCEPTS_PER_PASS + 16)
    burst = [
        socket.create_connection(listener.getsockname(), timeout=WAIT_S)
        for _ in range(MAX_ACCEPTS_PER_PASS + 6)
    ]  # all waiting before the server starts: more than one pass may accept
    server = StorageServer(MemoryStorage(), address=InheritedSocket(listener))
    with serving(server):
        for sock in burst:
            sock.sendall(b"V" + int4(1))
        assert all(recv_exactly(sock, 4) == int4(1) for sock in burst)
        assert len(server.connections) == len(burst)
    for sock in burst:
        sock.close()


# ---------------------------------------------------------------- TLS


class FailingOnceContext(ssl.SSLContext):
    """A server context whose next wrap_socket() fails (e.g. out of memory in the TLS library)."""

    fail_next = False

    def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.fail_next:
            self.fail_next = False
            raise ssl.SSLError("TLS library out of memory")
        return super().wrap_socket(*args, **kwargs)


@needs_openssl
def test_a_failed_tls_setup_closes_that_connection_only(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    context = FailingOnceContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with LogCapture() as captured, ThreadedServer(tls=context) as threaded:
        client = ClientStorage(address=threaded.address, tls=cert, timeout_s=WAIT_S)
        assert client.sync() == []  # every earlier connection (the start-up probe) is accepted
        context.fail_next = True
        refused = threaded.connect_raw()
        assert refused.recv(1) == b""  # closed at once
        refused.close()
        assert client.sync() == []
        again = ClientStorage(address=threaded.address, tls=cert, timeout_s=WAIT_S)
        assert again.sync() == []
        again.close()
        client.close()
        assert "TLS set-up failed" in captured.text() and "out of memory" in captured.text()


@needs_openssl
def test_a_tls_client_that_shuts_down_cleanly_is_dropped_quietly(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=cert)
    with LogCapture() as captured, ThreadedServer(tls=server_context) as threaded:
        raw = threaded.connect_raw()
        tls = client_context.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"V" + int4(1))
        assert recv_exactly(tls, 4) == int4(1)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):  # sends close_notify, the TLS end of stream
            tls.unwrap()  # (then fails: the server closes without answering in kind)
        assert wait_until(lambda: not threaded.server.connections)
        tls.close()
        assert "connection closed by the client" in captured.text()


# ---------------------------------------------------------------- group writes


class StuckEndStorage(FileStorage):
    """A FileStorage (fsync on: group writes run in a thread) whose end() hangs until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.ending = threading.Event()

    def end(self, handle_invalidations: Any = None) -> None:
        self.ending.set()
        self.release.wait(WAIT_S)
        super().end(handle_invalidations)


def test_stopping_with_a_hung_group_write_fails_loudly_not_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import durus.storage_server

    monkeypatch.setattr(durus.storage_server, "GROUP_WRITE_JOIN_S", 0.05)
    storage = StuckEndStorage(str(tmp_path / "a.durus"))
    server = StorageServer(storage, port=0, max_group_commits=1)
    assert server.core.max_group_commits == 1 and server.core.write_groups_in_background
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server.address = InheritedSocket(listener)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_until_quit()
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname(), timeout=WAIT_S)
        raw.sendall(b"M\x01")
        new = recv_exactly(raw, 8)
        raw.sendall(b"C")
        assert recv_exactly(raw, 4) == int4(0)
        rec = record(int.from_bytes(new, "big"), data=b"slow")
        raw.sendall(int4(4 + 8 + len(rec)) + int4(8 + len(rec)) + new + rec)
        assert storage.ending.wait(WAIT_S)  # the group write is stuck in end()
        server.shutdown()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        assert len(outcome) == 1 and "did not end within 0.05 s" in str(outcome[0])
    finally:
        storage.release.set()
    raw.close()
    group_thread = server._group_thread
    if group_thread is not None:
        group_thread.join(WAIT_S)
    storage.close()


def test_wait_for_server_succeeds_once_something_listens() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        wait_for_server(address=listener.getsockname(), maxtries=1, sleeptime=0)
