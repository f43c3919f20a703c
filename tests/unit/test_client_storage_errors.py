"""ClientStorage when its connection fails at awkward moments, and its socket options.

In-process (LoopbackSocket) unless TLS is needed. A lost connection is
reported once, clearly, and never masked by a second error; closing always
releases the socket; nothing is committed that the server did not confirm.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from durus.client_storage import ClientStorage, ServerConnectionLost, open_client_socket
from durus.protocol import int4
from durus.server_core import LoopbackSocket, ServerCore
from durus.socket_address import HostPortAddress
from durus.storage import MemoryStorage
from durus.utils import str_to_int8
from tests.support.records import commit, record
from tests.support.server_fixtures import (
    WAIT_S,
    ThreadedServer,
    has_openssl,
    make_tls_files,
    recv_exactly,
)


def test_a_connection_lost_between_the_two_halves_of_a_commit_is_reported_once() -> None:
    storage = MemoryStorage()
    core = ServerCore(storage)
    writer = ClientStorage(socket=LoopbackSocket(core))
    other = ClientStorage(socket=LoopbackSocket(core))
    first = writer.new_oid()
    commit(writer, record(str_to_int8(first)))
    new = other.new_oid()
    other.begin()
    other.store(new, record(str_to_int8(new)))
    seen: list[list[bytes]] = []

    def handler(oids: list[bytes]) -> None:
        seen.append(oids)
        other.s.sever("the server went away")  # between the list and the transaction data

    with pytest.raises(ServerConnectionLost, match="during CommitData: .* the server went away"):
        other.end(handler)
    assert seen == [[first]]
    with pytest.raises(ServerConnectionLost, match="during CommitData"):
        other.sync()  # every later call says the same, without touching the socket
    other.close()
    assert dict(storage.gen_oid_record()) == {first: record(str_to_int8(first))}
    writer.close()


def test_close_releases_a_socket_that_already_failed() -> None:
    core = ServerCore(MemoryStorage())
    sock = LoopbackSocket(core)
    storage = ClientStorage(socket=sock)
    sock.close()  # closed under the storage: the goodbye cannot be sent
    storage.close()
    storage.close()  # idempotent
    assert sock.closed and core.clients == {}


class NoCloseSocket:
    """A socket-like object with recv/send only (no close method)."""

    def __init__(self, inner: LoopbackSocket) -> None:
        self.inner = inner

    def recv(self, size: int) -> bytes:
        return self.inner.recv(size)

    def send(self, data: Any) -> int:
        return self.inner.send(data)


def test_a_socket_like_object_without_close_is_accepted() -> None:
    core = ServerCore(MemoryStorage())
    storage = ClientStorage(socket=NoCloseSocket(LoopbackSocket(core)))
    assert storage.sync() == []
    assert storage.address.get_connected_socket() is None  # an injected socket: no reconnecting
    storage.close()
    assert all(not client.live for client in core.clients.values())  # it said goodbye


def test_bad_tls_and_secret_settings_close_the_socket() -> None:
    for settings, error, message in (
        (dict(tls=123), TypeError, "tls must be an ssl.SSLContext or a CA file path"),
        (dict(auth_secret=b""), ValueError, "secret must be non-empty bytes"),
        (dict(tls=ssl.create_default_context()), ValueError, "server_hostname"),
    ):
        left, right = socket.socketpair()
        with pytest.raises(error, match=message):
            ClientStorage(socket=left, timeout_s=1.0, **settings)  # type: ignore[arg-type]
        assert left.fileno() == -1  # closed
        right.close()


@pytest.mark.skipif(not has_openssl(), reason="the openssl command is missing")
def test_a_tls_client_socket_offers_the_blocking_socket_calls(tmp_path: Path) -> None:
    cert, key = make_tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with ThreadedServer(tls=context) as threaded:
        sock = open_client_socket(HostPortAddress(*threaded.address), tls=cert)
        sock.settimeout(WAIT_S)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        sock.sendall(b"V" + int4(1))
        assert recv_exactly(sock, 4) == int4(1)  # type: ignore[arg-type]
        sock.sendall(b"Q")
        threaded.thread.join(WAIT_S)
        assert not threaded.thread.is_alive() and threaded.server.core.quit_requested
        sock.close()
