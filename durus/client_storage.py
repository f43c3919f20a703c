"""ClientStorage: a Storage whose records live in a StorageServer (API.md section 17).

Owns the client end of one server connection: the oid pool, the pending
transaction's records, and turning server replies into the exceptions a
Connection expects (ReadConflictError, DurusKeyError, WriteConflictError,
ProtocolError). The bytes themselves are made and parsed by
``durus.protocol.ClientProtocol``; this module is the thin blocking loop
around it and never frames or parses bytes itself (one codec for both ends
keeps them in step). All socket I/O goes through ``durus.utils.read`` and
``write``, so tests may substitute any object with ``recv``/``send`` (or
``read``/``write``) methods. A socket is read in large ``recv`` calls (a
server sends nothing unasked, so a reply usually takes one call; the codec
buffers whatever arrives); a file-like object is read for exactly the bytes
the codec still needs.

Also differs from 4.3 where a commit is refused with STATUS_INVALID: the
transaction's new oids go back to the pool (as after a handler conflict).

Connecting:

* ``ClientStorage(host, port)`` or ``ClientStorage(address=...)`` connects at
  once (TCP, Unix path or '@name'); nothing listening raises
  ``CouldNotConnectError`` ("Could not connect to <address>"), which is both a
  ConnectionRefusedError and, as in Durus 4.3, an AssertionError.
* ``ClientStorage(socket=sock)`` (or ``ClientStorage.from_socket(sock)``)
  uses an already connected socket-like object instead, e.g.
  ``durus.storage_server.LoopbackSocket(core)`` for an in-process server.
* ``timeout_s`` (default None, no timeout, as in Durus) bounds each wait
  for the server.
* ``auth_secret`` (bytes) or ``auth_file`` (a file readable by its owner
  only) runs the shared-secret handshake of ``durus.auth`` before anything
  else; the server must prove it knows the secret too. Against a server
  that requires authentication, a client without a secret raises
  ``AuthenticationError`` (a Durus 4.3 client raises "Protocol version
  mismatch.").
* ``tls`` wraps the connection in TLS: an ``ssl.SSLContext``, or the path
  of a CA certificate file to verify the server with (hostname checked
  against the host, or ``tls_server_hostname``). An SSL socket's
  ``read``/``write`` return partial records, so the socket is adapted to
  plain ``recv``/``send`` for ``durus.utils``.

Differences from Durus 4.3, all in the direction of not losing data:
``bulk_load`` always reads every reply of its request before raising; the
pool size is validated (1..255); a lost connection raises
``ServerConnectionLost`` (an OSError) with the address and the request, and
every later call raises it again instead of reading a desynchronised stream.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from typing import Any

from durus.auth import AuthenticationError, authenticate_socket, read_secret_file
from durus.error import (
    ConflictError,
    DurusError,
    DurusKeyError,
    ProtocolError,
    ReadConflictError,
    WriteConflictError,
)
from durus.protocol import (
    AUTH_REQUIRED_VERSION,
    DEFAULT_LIMITS,
    MAX_NEW_OIDS,
    OID_BYTES,
    PROTOCOL_VERSION,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    BulkLoad,
    BulkLoadReply,
    ClientProtocol,
    Commit,
    CommitData,
    CommitStatus,
    Goodbye,
    InvalidationsReply,
    Limits,
    Load,
    LoadReply,
    NeedData,
    NewOids,
    NewOidsReply,
    Pack,
    PackReply,
    Reply,
    Request,
    Sync,
    Version,
    VersionReply,
)
from durus.socket_address import HostPortAddress, SocketAddress
from durus.storage import InvalidationHandler, Storage
from durus.utils import RECV_CHUNK_MAX_BYTES, ShortRead, read, write

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972
DEFAULT_OID_POOL_SIZE = 32
RECEIVE_BYTES = 4096  # one recv() asks for up to this much (a reply is usually smaller)


class CouldNotConnectError(ConnectionRefusedError, AssertionError):
    """No server answered at the address. Also an AssertionError, as in Durus 4.3."""


class ServerConnectionLost(ShortRead):
    """The connection to the server broke (closed, reset or timed out) mid-conversation."""


class StoreError(DurusError, ValueError, AssertionError):
    """``store()`` got a malformed oid or the same oid twice (Durus asserted this)."""


class ClientStorage(Storage):
    """A Storage served by a StorageServer over one socket."""

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, address: Any = None, *,
        socket: Any = None, timeout_s: float | None = None, limits: Limits = DEFAULT_LIMITS,
        auth_secret: bytes | None = None, auth_file: str | None = None,
        tls: ssl.SSLContext | str | None = None, tls_server_hostname: str | None = None,
    ) -> None:  # fmt: skip
        if auth_file is not None:
            if auth_secret is not None:
                raise ValueError("give auth_secret or auth_file, not both")
            auth_secret = read_secret_file(auth_file)
        if address is None and socket is not None:
            address = _InjectedSocketAddress(socket)
        self.address = SocketAddress.new(address if address is not None else (host, port))
        socket = open_client_socket(
            self.address, socket, timeout_s, auth_secret, tls, tls_server_hostname
        )
        self.s = socket
        self._send, self._receive = _transfer_functions(socket)
        self.protocol = ClientProtocol(limits)
        self.oid_pool: list[bytes] = []
        self._oid_pool_size = DEFAULT_OID_POOL_SIZE
        self.records: dict[bytes, bytes] = {}
        self.transaction_new_oids: list[bytes] = []
        self._lost: str | None = None
        self._closed = False
        try:
            self._handshake()
        except BaseException:
            _close_socket(socket)
            raise

    def _handshake(self) -> None:
        reply = self._exchange(Version(PROTOCOL_VERSION))
        assert isinstance(reply, VersionReply)
        if reply.protocol == AUTH_REQUIRED_VERSION:
            raise AuthenticationRequiredError(
                f"the server at {self.address} requires authentication "
                "(give auth_secret or auth_file; durus -c/-p --auth-file)"
            )
        if reply.protocol != PROTOCOL_VERSION:
            raise ProtocolError("Protocol version mismatch.")

    @classmethod
    def from_socket(cls, sock: Any, address: Any = None, **kwargs: Any) -> ClientStorage:
        """A ClientStorage on an already connected socket-like object."""
        return cls(address=address, socket=sock, **kwargs)

    def __str__(self) -> str:
        return f"ClientStorage({self.address})"

    @property
    def oid_pool_size(self) -> int:
        return self._oid_pool_size

    @oid_pool_size.setter
    def oid_pool_size(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_NEW_OIDS:
            raise ValueError(f"oid_pool_size must be an int in 1..{MAX_NEW_OIDS}, got {size!r}")
        self._oid_pool_size = size

    # ------------------------------------------------------------ I/O

    def _exchange(self, request: Request) -> Reply | None:
        """Send ``request``; return its reply (None when it expects none)."""
        if self._lost is not None:
            raise ServerConnectionLost(self._lost)
        protocol = self.protocol
        data = protocol.send(request)
        expected = protocol.replies_pending
        self._io(self._send, data, request)
        if not expected:
            return None
        while True:
            event = protocol.next_event()
            if not isinstance(event, NeedData):
                return event
            protocol.receive_data(self._io(self._receive, event.min_bytes, request))

    def _io(self, operation: Any, argument: Any, request: Request) -> Any:
        try:
            return operation(self.s, argument)
        except OSError as error:
            self._lost = (
                f"lost the connection to the server at {self.address} "
                f"during {type(request).__name__}: {error}"
            )
            raise ServerConnectionLost(self._lost) from error

    # ------------------------------------------------------------ Storage interface

    def new_oid(self) -> bytes:
        if not self.oid_pool:
            reply = self._exchange(NewOids(self._oid_pool_size))
            assert isinstance(reply, NewOidsReply) and len(reply.oids) == self._oid_pool_size
            self.oid_pool.extend(reply.oids)
        oid = self.oid_pool.pop(0)
        self.transaction_new_oids.append(oid)
        return oid

    def load(self, oid: bytes) -> bytes:
        reply = self._exchange(Load(_valid_oid(oid)))
        assert isinstance(reply, LoadReply)
        return _record_or_raise(oid, reply)

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """The records of ``oids`` in order; every reply is read before any error is raised."""
        oid_list = [_valid_oid(oid) for oid in oids]
        step = self.protocol.limits.max_bulk_load_oids
        for start in range(0, len(oid_list), step):
            batch = tuple(oid_list[start : start + step])
            reply = self._exchange(BulkLoad(batch))
            assert isinstance(reply, BulkLoadReply) and len(reply.replies) == len(batch)
            records = [
                _record_or_raise(oid, r) for oid, r in zip(batch, reply.replies, strict=True)
            ]
            yield from records

    def begin(self) -> None:
        self.records = {}
        self.transaction_new_oids = []

    def store(self, oid: bytes, record: bytes) -> None:
        if not isinstance(oid, bytes) or len(oid) != OID_BYTES:
            raise StoreError(f"an oid must be 8 bytes, got {oid!r}")
        if oid in self.records:
            raise StoreError(f"oid {oid!r} stored twice in one transaction")
        self.records[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Commit: take the server's invalidations, then send the records or abandon."""
        reply = self._exchange(Commit())
        assert isinstance(reply, InvalidationsReply)
        oids = list(reply.oids)
        if oids and handle_invalidations is not None:
            try:
                handle_invalidations(oids)
            except ConflictError:
                self._abandon_commit(return_oids=True)
                raise
            except BaseException:
                self._abandon_commit(return_oids=False)
                raise
        items = tuple(self.records.items())
        if not items:
            self._exchange(CommitData(()))
            return
        status = self._exchange(CommitData(items))
        assert isinstance(status, CommitStatus)
        if status.status == STATUS_INVALID:
            self._return_new_oids()
            raise WriteConflictError()
        assert status.status == STATUS_OKAY
        self.records = {}
        self.transaction_new_oids = []

    def _abandon_commit(self, return_oids: bool) -> None:
        """Tell the server the commit is off (int4 0); optionally reuse its new oids."""
        if return_oids:
            self._return_new_oids()
        if self._lost is None:
            self._exchange(CommitData(()))

    def _return_new_oids(self) -> None:
        """Put this transaction's new oids back at the front of the pool, in order."""
        self.oid_pool[:0] = self.transaction_new_oids
        self.transaction_new_oids = []

    def sync(self) -> list[bytes]:
        reply = self._exchange(Sync())
        assert isinstance(reply, InvalidationsReply)
        return list(reply.oids)

    def pack(self) -> None:
        """Ask the server to start packing; returns before the pack is done."""
        reply = self._exchange(Pack())
        assert isinstance(reply, PackReply)

    def close(self) -> None:
        """Say goodbye ('.') and close the socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._lost is None and not self.protocol.closed:
                self._exchange(Goodbye())
        except (OSError, ProtocolError):
            pass
        finally:
            _close_socket(self.s)


class AuthenticationRequiredError(AuthenticationError, ProtocolError):
    """The server requires authentication and this client has no secret."""


def open_client_socket(
    address: SocketAddress, sock: Any = None, timeout_s: float | None = None,
    auth_secret: bytes | None = None, tls: ssl.SSLContext | str | None = None,
    tls_server_hostname: str | None = None,
) -> Any:  # fmt: skip
    """A connected socket to ``address`` (or ``sock``), with TLS and authentication done.

    CouldNotConnectError when nothing listens; AuthenticationError or
    ssl.SSLError when the handshakes fail (the socket is then closed).
    """
    if sock is None:
        sock = address.get_connected_socket(timeout_s=timeout_s)
        if sock is None:
            raise CouldNotConnectError(f"Could not connect to {address}")
    try:
        if timeout_s is not None and hasattr(sock, "settimeout"):
            sock.settimeout(timeout_s)
        if tls is not None:
            sock = _wrap_tls(sock, address, tls, tls_server_hostname)
        if auth_secret is not None:
            authenticate_socket(sock, auth_secret, f"the server at {address}")
    except BaseException:
        _close_socket(sock)
        raise
    return sock


def _wrap_tls(
    sock: Any, address: SocketAddress, tls: ssl.SSLContext | str, server_hostname: str | None
) -> Any:
    if isinstance(tls, str):
        tls = ssl.create_default_context(cafile=tls)
    if not isinstance(tls, ssl.SSLContext):
        raise TypeError(f"tls must be an ssl.SSLContext or a CA file path, not {tls!r}")
    if server_hostname is None and isinstance(address, HostPortAddress):
        server_hostname = address.host
    return _TlsSocket(tls.wrap_socket(sock, server_hostname=server_hostname))


class _TlsSocket:
    """An SSLSocket seen through recv/send only (its read/write return partial records)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def send(self, data: Any) -> int:
        return self.sock.send(data)

    def recv_into(self, buffer: Any) -> int:
        return self.sock.recv_into(buffer)

    def sendall(self, data: Any) -> None:
        self.sock.sendall(data)

    def settimeout(self, timeout_s: float | None) -> None:
        self.sock.settimeout(timeout_s)

    def version(self) -> str | None:
        return self.sock.version()

    def close(self) -> None:
        self.sock.close()


class _InjectedSocketAddress(SocketAddress):
    """Names a socket-like object given to ClientStorage (it cannot be reconnected)."""

    def __init__(self, sock: Any) -> None:
        self.label = repr(sock)

    def __str__(self) -> str:
        return self.label

    def get_connected_socket(self, timeout_s: float | None = None) -> None:
        return None


def _transfer_functions(sock: Any) -> tuple[Any, Any]:
    """How to send to and receive from ``sock``: ``send(sock, data)``, ``receive(sock, n)``.

    A socket (``recv``) is asked for up to RECEIVE_BYTES at once, never less
    than the codec needs: protocol 1 has at most one reply in flight and a
    server sends nothing unasked, so one ``recv`` usually brings a whole
    reply, and whatever it brings the codec buffers. A file-like object
    (``read``/``write``) is read exactly (``durus.utils``).
    """
    if hasattr(sock, "read") or not hasattr(sock, "recv"):
        return write, read
    sendall = write if getattr(sock, "sendall", None) is None else _sendall
    receive = _SocketReader() if hasattr(sock, "recv_into") else _receive_some
    return sendall, receive


def _sendall(sock: Any, data: bytes) -> None:
    sock.sendall(data)


def _receive_some(sock: Any, min_bytes: int) -> bytes:
    """At least one byte (and what else is there, up to RECEIVE_BYTES); EOF raises."""
    data: bytes = sock.recv(min(max(min_bytes, RECEIVE_BYTES), RECV_CHUNK_MAX_BYTES))
    if not data:
        raise ShortRead(f"connection closed with {min_bytes} bytes still expected")
    return data


class _SocketReader:
    """Receives into one reusable buffer: a small reply costs no allocation.

    (A fresh ``recv(RECEIVE_BYTES)`` buffer per call made the allocator grow
    and trim the heap, one ``brk`` system call per reply.) The view it
    returns is valid until the next call; the codec copies it at once.
    """

    def __init__(self) -> None:
        self.view = memoryview(bytearray(RECEIVE_BYTES))

    def __call__(self, sock: Any, min_bytes: int) -> bytes | memoryview:
        if min_bytes > RECEIVE_BYTES:
            return _receive_some(sock, min_bytes)
        size: int = sock.recv_into(self.view)
        if not size:
            raise ShortRead(f"connection closed with {min_bytes} bytes still expected")
        assert 0 < size <= RECEIVE_BYTES
        return self.view[:size]


def _close_socket(sock: Any) -> None:
    close = getattr(sock, "close", None)
    if close is not None:
        close()


def _valid_oid(oid: bytes) -> bytes:
    if not isinstance(oid, bytes) or len(oid) != OID_BYTES:
        raise ValueError(f"an oid must be 8 bytes, got {oid!r}")
    return oid


def _record_or_raise(oid: bytes, reply: LoadReply) -> bytes:
    if reply.status == STATUS_INVALID:
        raise ReadConflictError([oid])
    if reply.status == STATUS_KEYERROR:
        raise DurusKeyError(oid)
    assert reply.status == STATUS_OKAY
    if reply.record[:OID_BYTES] != oid:
        raise ProtocolError(f"server sent a record of {reply.record[:OID_BYTES]!r} for {oid!r}")
    return reply.record
