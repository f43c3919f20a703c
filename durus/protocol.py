"""Sans-IO codec of the Durus client/server protocol, version 1 (PROTOCOL.md).

Owns the bytes of every request and reply, and the per-connection state that
decides how the next bytes are framed. It must never touch a socket, a clock,
a storage, or the object layer (no persistent, connection or pickle
imports): the server and the client are thin loops around it, which is what
lets tests drive every interleaving, and every hostile byte string, without
a network.

Theory of operation
-------------------
A connection is two byte streams. Requests carry no length prefix: one
command byte is followed by arguments whose size the command defines, so a
decoder must know the command before it knows where the message ends.
Replies are worse: their shape depends on the request they answer (a load
reply, an oid list, a status byte...), so the client-side decoder must
remember what it asked.

Each side therefore holds a small state machine:

* ``ServerProtocol`` turns the client's stream into ``Request`` events.
  After a ``Commit`` (``'C'``) the next message from the client is not a
  command but the transaction data (``int4 T`` + ``T`` bytes), which arrives
  as a ``CommitData`` event (with no items when the client abandons). After
  ``Quit``, ``Goodbye`` (``'.'``) or an unknown command byte the machine is
  closed: the server drops such a client.
* ``ClientProtocol`` encodes requests with ``send(request) -> bytes``,
  remembers the reply each one expects, and turns the server's stream into
  ``Reply`` events in request order.

Both have the same pull interface, after the style of h11::

    proto.receive_data(data)        # bytes from the peer, any split
    event = proto.next_event()      # a message, or NeedData(min_bytes)

``next_event`` returns one complete message, or ``NeedData`` telling how
many more bytes are needed at least before anything can be decoded (an exact
count, so a blocking caller may read exactly that many). Bytes that can
never form a valid message raise ``durus.error.ProtocolError``; that is the
only exception bytes from outside can cause, and after it the machine is
closed. Everything a peer declares (record sizes, oid counts, commit sizes)
is checked against ``Limits`` before any buffering of that size happens.

Encoding is pure: ``encode_request`` and ``encode_reply`` map a message to
its bytes, and decoding then re-encoding a well-formed stream gives back the
same bytes.

Authentication extension (not in Durus 4.3)
-------------------------------------------
A server given a shared secret demands a mutual challenge-response before
any other command. It uses a command byte Durus 4.3 never sends, so with
authentication off the protocol is byte-identical to protocol 1 (the byte
is then an unknown command, as in 4.3)::

    client  'A' + client_nonce (32 bytes)
    server  server_nonce (32) + HMAC-SHA256(secret, SERVER_LABEL + cn + sn)
    client  HMAC-SHA256(secret, CLIENT_LABEL + cn + sn)          (32 bytes)
    server  'O'   (a wrong proof: the server closes the connection)

The client checks the server's MAC before proving itself, so a client never
talks to (and never unpickles records from) a server that lacks the
secret. The two labels differ, so neither side's MAC can be replayed as the
other's. A server that requires authentication answers a first ``V`` with
``AUTH_REQUIRED_VERSION`` (a Durus 4.3 client then raises "Protocol version
mismatch.") and closes; any other first command just closes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import deque
from dataclasses import dataclass

from durus.error import ProtocolError

PROTOCOL_VERSION = 1
OID_BYTES = 8
INT4_BYTES = 4
RECORD_HEADER_BYTES = OID_BYTES + INT4_BYTES
MAX_NEW_OIDS = 255  # the count of 'M' is one byte

STATUS_OKAY = b"O"
STATUS_KEYERROR = b"K"
STATUS_INVALID = b"I"

CMD_VERSION = b"V"
CMD_LOAD = b"L"
CMD_BULK_LOAD = b"B"
CMD_COMMIT = b"C"
CMD_SYNC = b"S"
CMD_NEW_OID = b"N"
CMD_NEW_OIDS = b"M"
CMD_PACK = b"P"
CMD_QUIT = b"Q"
CMD_GOODBYE = b"."
CMD_AUTHENTICATE = b"A"  # the authentication extension; never sent by Durus 4.3

AUTH_NONCE_BYTES = 32
AUTH_MAC_BYTES = 32
AUTH_REQUIRED_VERSION = 0x41555448  # b"AUTH": the V reply of a server that requires auth
AUTH_SERVER_LABEL = b"durus-auth-1 server"
AUTH_CLIENT_LABEL = b"durus-auth-1 client"

MiB = 1024 * 1024
_int4 = struct.Struct(">I")


@dataclass(frozen=True)
class Limits:
    """Upper bounds on everything a peer declares; exceeding one is a ProtocolError."""

    max_record_bytes: int = 256 * MiB
    max_commit_bytes: int = 256 * MiB
    max_commit_records: int = 2_000_000
    max_bulk_load_oids: int = 100_000
    max_invalidation_oids: int = 10_000_000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()


def int4(n: int) -> bytes:
    """4 big-endian bytes of ``n``; ValueError when it does not fit."""
    if not 0 <= n <= 0xFFFFFFFF:
        raise ValueError(f"{n} does not fit in an unsigned 32-bit integer")
    return _int4.pack(n)


def _read_int4(buffer: bytes | bytearray | memoryview, pos: int) -> int:
    value: int = _int4.unpack_from(buffer, pos)[0]
    return value


def _check_oid(oid: bytes) -> bytes:
    if not isinstance(oid, bytes) or len(oid) != OID_BYTES:
        raise ValueError(f"an oid must be 8 bytes, got {oid!r}")
    return oid


def check_record(oid: bytes, record: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """ProtocolError unless ``record`` is a well-formed object record of ``oid``."""
    if len(record) < RECORD_HEADER_BYTES:
        raise ProtocolError(f"record of {len(record)} bytes is shorter than its header")
    if len(record) > limits.max_record_bytes:
        raise ProtocolError(f"record of {len(record)} bytes exceeds {limits.max_record_bytes}")
    if record[:OID_BYTES] != oid:
        raise ProtocolError(f"record begins with oid {record[:OID_BYTES]!r}, expected {oid!r}")
    data_end = RECORD_HEADER_BYTES + _read_int4(record, OID_BYTES)
    if data_end > len(record) or (len(record) - data_end) % OID_BYTES:
        raise ProtocolError(f"record of oid {oid!r} has a malformed data length or refs")


def auth_mac(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA256 of ``label + client_nonce + server_nonce`` under ``secret``."""
    if len(client_nonce) != AUTH_NONCE_BYTES or len(server_nonce) != AUTH_NONCE_BYTES:
        raise ValueError(f"authentication nonces must be {AUTH_NONCE_BYTES} bytes")
    mac = hmac.new(secret, label + client_nonce + server_nonce, hashlib.sha256).digest()
    assert len(mac) == AUTH_MAC_BYTES
    return mac


def macs_match(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two MACs."""
    return hmac.compare_digest(expected, received)


# ---------------------------------------------------------------- messages


@dataclass(frozen=True)
class NeedData:
    """No complete message yet: at least ``min_bytes`` more bytes are needed."""

    min_bytes: int


@dataclass(frozen=True)
class Version:
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Load:
    oid: bytes


@dataclass(frozen=True)
class BulkLoad:
    oids: tuple[bytes, ...]


@dataclass(frozen=True)
class Commit:
    """``'C'``: the client asks to commit; the server answers with its invalidations."""


@dataclass(frozen=True)
class CommitData:
    """The second half of a commit: ``(oid, record)`` items; none means abandoned."""

    items: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def abandoned(self) -> bool:
        return not self.items

    @property
    def tdata_bytes(self) -> int:
        """T, the byte length of the items on the wire."""
        return sum(INT4_BYTES + OID_BYTES + len(record) for _oid, record in self.items)


@dataclass(frozen=True)
class Sync:
    pass


@dataclass(frozen=True)
class NewOid:
    pass


@dataclass(frozen=True)
class NewOids:
    count: int


@dataclass(frozen=True)
class Pack:
    pass


@dataclass(frozen=True)
class Quit:
    pass


@dataclass(frozen=True)
class Goodbye:
    """``'.'``: what ClientStorage.close() sends; the server drops the connection."""


@dataclass(frozen=True)
class UnknownCommand:
    code: bytes


@dataclass(frozen=True)
class Authenticate:
    """``'A'`` + the client's nonce: the first message on an authenticating connection."""

    client_nonce: bytes


@dataclass(frozen=True)
class AuthProof:
    """The client's MAC, the message right after the server's challenge."""

    mac: bytes


Request = (
    Version | Load | BulkLoad | Commit | CommitData | Sync | NewOid | NewOids | Pack | Quit
    | Goodbye | UnknownCommand | Authenticate | AuthProof
)  # fmt: skip


@dataclass(frozen=True)
class VersionReply:
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class LoadReply:
    """``status`` is STATUS_OKAY (with the record), STATUS_KEYERROR or STATUS_INVALID."""

    status: bytes
    record: bytes = b""


@dataclass(frozen=True)
class BulkLoadReply:
    replies: tuple[LoadReply, ...]


@dataclass(frozen=True)
class InvalidationsReply:
    """The oids invalidated for this client: the answer to ``'S'`` and to ``'C'``."""

    oids: tuple[bytes, ...]


@dataclass(frozen=True)
class CommitStatus:
    status: bytes


@dataclass(frozen=True)
class NewOidsReply:
    oids: tuple[bytes, ...]


@dataclass(frozen=True)
class PackReply:
    status: bytes = STATUS_OKAY


@dataclass(frozen=True)
class AuthChallenge:
    """The server's nonce and its proof that it knows the secret."""

    server_nonce: bytes
    server_mac: bytes


@dataclass(frozen=True)
class AuthAccepted:
    """``'O'``: the client's proof was right; normal commands may follow."""

    status: bytes = STATUS_OKAY


Reply = (
    VersionReply | LoadReply | BulkLoadReply | InvalidationsReply | CommitStatus | NewOidsReply
    | PackReply | AuthChallenge | AuthAccepted
)  # fmt: skip


# ---------------------------------------------------------------- encoders


def encode_tdata(items: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]]) -> bytes:
    """``int4 T`` followed by the items, each ``int4(8 + len(record)) + oid + record``."""
    parts = []
    for oid, record in items:
        parts.append(int4(OID_BYTES + len(record)))
        parts.append(_check_oid(oid))
        parts.append(record)
    body = b"".join(parts)
    encoded = int4(len(body)) + body
    assert len(encoded) == INT4_BYTES + sum(12 + len(r) for _o, r in items)
    return encoded


def encode_request(request: Request) -> bytes:
    """The bytes of one request (for CommitData: the tdata message)."""
    if isinstance(request, Version):
        return CMD_VERSION + int4(request.protocol)
    if isinstance(request, Load):
        return CMD_LOAD + _check_oid(request.oid)
    if isinstance(request, BulkLoad):
        oids = b"".join(_check_oid(oid) for oid in request.oids)
        return CMD_BULK_LOAD + int4(len(request.oids)) + oids
    if isinstance(request, CommitData):
        return encode_tdata(request.items)
    if isinstance(request, NewOids):
        if not 0 <= request.count <= MAX_NEW_OIDS:
            raise ValueError(f"M asks for 0..{MAX_NEW_OIDS} oids, not {request.count}")
        return CMD_NEW_OIDS + bytes((request.count,))
    if isinstance(request, UnknownCommand):
        if len(request.code) != 1 or request.code in _ALL_COMMANDS:
            raise ValueError(f"{request.code!r} is not an unknown command byte")
        return request.code
    if isinstance(request, Authenticate):
        return CMD_AUTHENTICATE + _check_size(request.client_nonce, AUTH_NONCE_BYTES)
    if isinstance(request, AuthProof):
        return _check_size(request.mac, AUTH_MAC_BYTES)
    for code, kind in _SIMPLE_REQUESTS.items():
        if isinstance(request, kind):
            return code
    raise TypeError(f"not a request: {request!r}")


def encode_load_reply(reply: LoadReply) -> bytes:
    if reply.status == STATUS_OKAY:
        return STATUS_OKAY + int4(len(reply.record)) + reply.record
    if reply.status in (STATUS_KEYERROR, STATUS_INVALID) and not reply.record:
        return reply.status
    raise ValueError(f"not a load reply: {reply!r}")


def encode_oid_list(oids: tuple[bytes, ...] | list[bytes]) -> bytes:
    """``int4 k`` followed by ``k`` oids."""
    return int4(len(oids)) + b"".join(_check_oid(oid) for oid in oids)


def encode_reply(reply: Reply) -> bytes:
    """The bytes of one reply."""
    if isinstance(reply, VersionReply):
        return int4(reply.protocol)
    if isinstance(reply, LoadReply):
        return encode_load_reply(reply)
    if isinstance(reply, BulkLoadReply):
        return b"".join(encode_load_reply(r) for r in reply.replies)
    if isinstance(reply, InvalidationsReply):
        return encode_oid_list(reply.oids)
    if isinstance(reply, CommitStatus):
        if reply.status not in (STATUS_OKAY, STATUS_INVALID):
            raise ValueError(f"not a commit status: {reply.status!r}")
        return reply.status
    if isinstance(reply, NewOidsReply):
        return b"".join(_check_oid(oid) for oid in reply.oids)
    if isinstance(reply, PackReply):
        return reply.status
    if isinstance(reply, AuthChallenge):
        nonce = _check_size(reply.server_nonce, AUTH_NONCE_BYTES)
        return nonce + _check_size(reply.server_mac, AUTH_MAC_BYTES)
    if isinstance(reply, AuthAccepted):
        return reply.status
    raise TypeError(f"not a reply: {reply!r}")


def _check_size(value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"expected {size} bytes, got {value!r}")
    return value


_SIMPLE_REQUESTS: dict[bytes, type] = {
    CMD_COMMIT: Commit,
    CMD_SYNC: Sync,
    CMD_NEW_OID: NewOid,
    CMD_PACK: Pack,
    CMD_QUIT: Quit,
    CMD_GOODBYE: Goodbye,
}
_ALL_COMMANDS = frozenset(_SIMPLE_REQUESTS) | {CMD_VERSION, CMD_LOAD, CMD_BULK_LOAD, CMD_NEW_OIDS}


# ---------------------------------------------------------------- decoding helpers


class _Buffer:
    """Received bytes with a read position; consumed bytes are dropped lazily."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0

    def __len__(self) -> int:
        return len(self.data) - self.pos

    def append(self, data: bytes) -> None:
        if self.pos and self.pos * 2 >= len(self.data):
            del self.data[: self.pos]
            self.pos = 0
        self.data += data

    def peek(self, size: int, offset: int = 0) -> bytes:
        start = self.pos + offset
        assert start + size <= len(self.data)
        return bytes(self.data[start : start + size])

    def int4_at(self, offset: int) -> int:
        return _read_int4(self.data, self.pos + offset)

    def take(self, size: int) -> bytes:
        assert size <= len(self)
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk


def _split_oids(blob: bytes) -> tuple[bytes, ...]:
    assert len(blob) % OID_BYTES == 0
    return tuple(blob[i : i + OID_BYTES] for i in range(0, len(blob), OID_BYTES))


def parse_tdata(body: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[tuple[bytes, bytes], ...]:
    """The ``(oid, record)`` items of transaction data ``body`` (without its int4 T).

    ProtocolError when the item lengths do not add up to exactly ``len(body)``,
    a record is malformed or does not begin with its item's oid, an oid
    repeats, or there are more than ``limits.max_commit_records`` items.
    """
    items: list[tuple[bytes, bytes]] = []
    seen: set[bytes] = set()
    pos = 0
    while pos < len(body):
        if len(body) - pos < INT4_BYTES:
            raise ProtocolError(f"transaction data ends inside an item length at {pos}")
        item_bytes = _read_int4(body, pos)
        end = pos + INT4_BYTES + item_bytes
        if item_bytes < OID_BYTES + RECORD_HEADER_BYTES or end > len(body):
            raise ProtocolError(f"item length {item_bytes} at {pos} overruns the transaction")
        oid = body[pos + INT4_BYTES : pos + INT4_BYTES + OID_BYTES]
        record = body[pos + INT4_BYTES + OID_BYTES : end]
        check_record(oid, record, limits)
        if oid in seen:
            raise ProtocolError(f"oid {oid!r} appears twice in one transaction")
        if len(items) >= limits.max_commit_records:
            raise ProtocolError(f"more than {limits.max_commit_records} records in one commit")
        seen.add(oid)
        items.append((oid, record))
        pos = end
    assert pos == len(body)
    return tuple(items)


# ---------------------------------------------------------------- server side

AWAITING_COMMAND = "awaiting command"
AWAITING_TDATA = "awaiting transaction data"
AWAITING_AUTH_PROOF = "awaiting authentication proof"
CLOSED = "closed"


class ServerProtocol:
    """The server's view of one client: bytes in, ``Request`` events out.

    With ``authentication=False`` (protocol 1 exactly) the byte ``'A'`` is an
    unknown command; with True it starts the authentication extension.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS, authentication: bool = False) -> None:
        self.limits = limits
        self.authentication = authentication
        self.state = AWAITING_COMMAND
        self._buffer = _Buffer()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the client. Bytes arriving after the close are ignored."""
        if self.state != CLOSED:
            self._buffer.append(data)

    def next_event(self) -> Request | NeedData:
        """The next complete request, or NeedData; ProtocolError for invalid bytes."""
        if self.state == CLOSED:
            raise ProtocolError("the connection is closed: no more requests")
        try:
            event: Request | NeedData
            if self.state == AWAITING_TDATA:
                event = self._next_tdata()
            elif self.state == AWAITING_AUTH_PROOF:
                event = self._next_auth_proof()
            else:
                event = self._next_command()
        except ProtocolError:
            self.state = CLOSED
            raise
        self._advance_state(event)
        return event

    def _advance_state(self, event: Request | NeedData) -> None:
        if isinstance(event, Commit):
            self.state = AWAITING_TDATA
        elif isinstance(event, Authenticate):
            self.state = AWAITING_AUTH_PROOF
        elif isinstance(event, (CommitData, AuthProof)):
            self.state = AWAITING_COMMAND
        elif isinstance(event, (Quit, Goodbye, UnknownCommand)):
            self.state = CLOSED

    def _next_tdata(self) -> CommitData | NeedData:
        buffer = self._buffer
        if len(buffer) < INT4_BYTES:
            return NeedData(INT4_BYTES - len(buffer))
        tdata_bytes = buffer.int4_at(0)
        if tdata_bytes > self.limits.max_commit_bytes:
            raise ProtocolError(
                f"transaction of {tdata_bytes} bytes exceeds {self.limits.max_commit_bytes}"
            )
        if len(buffer) < INT4_BYTES + tdata_bytes:
            return NeedData(INT4_BYTES + tdata_bytes - len(buffer))
        buffer.take(INT4_BYTES)
        items = parse_tdata(buffer.take(tdata_bytes), self.limits)
        assert bool(items) == (tdata_bytes > 0)
        return CommitData(items)

    def _next_auth_proof(self) -> AuthProof | NeedData:
        if len(self._buffer) < AUTH_MAC_BYTES:
            return NeedData(AUTH_MAC_BYTES - len(self._buffer))
        return AuthProof(self._buffer.take(AUTH_MAC_BYTES))

    def _next_command(self) -> Request | NeedData:
        buffer = self._buffer
        if not buffer:
            return NeedData(1)
        code = buffer.peek(1)
        if code == CMD_AUTHENTICATE and self.authentication:
            return self._fixed(AUTH_NONCE_BYTES, Authenticate)
        if code in _SIMPLE_REQUESTS:
            buffer.take(1)
            request: Request = _SIMPLE_REQUESTS[code]()
            return request
        if code == CMD_VERSION:
            return self._fixed(INT4_BYTES, lambda b: Version(_read_int4(b, 0)))
        if code == CMD_LOAD:
            return self._fixed(OID_BYTES, Load)
        if code == CMD_NEW_OIDS:
            return self._fixed(1, lambda b: NewOids(b[0]))
        if code == CMD_BULK_LOAD:
            return self._next_bulk_load()
        buffer.take(1)
        return UnknownCommand(code)

    def _fixed(self, size: int, build: object) -> Request | NeedData:
        """A command byte followed by ``size`` argument bytes given to ``build``."""
        buffer = self._buffer
        if len(buffer) < 1 + size:
            return NeedData(1 + size - len(buffer))
        buffer.take(1)
        request: Request = build(buffer.take(size))  # type: ignore[operator]
        return request

    def _next_bulk_load(self) -> BulkLoad | NeedData:
        buffer = self._buffer
        if len(buffer) < 1 + INT4_BYTES:
            return NeedData(1 + INT4_BYTES - len(buffer))
        count = buffer.int4_at(1)
        if count > self.limits.max_bulk_load_oids:
            raise ProtocolError(
                f"bulk load of {count} oids exceeds {self.limits.max_bulk_load_oids}"
            )
        size = 1 + INT4_BYTES + count * OID_BYTES
        if len(buffer) < size:
            return NeedData(size - len(buffer))
        buffer.take(1 + INT4_BYTES)
        oids = _split_oids(buffer.take(count * OID_BYTES))
        assert len(oids) == count
        return BulkLoad(oids)


# ---------------------------------------------------------------- client side


class _Expected:
    """One reply the client is waiting for, and what it asked."""

    __slots__ = ("kind", "request", "collected")

    def __init__(self, kind: str, request: Request) -> None:
        self.kind = kind
        self.request = request
        self.collected: list[LoadReply] = []  # a bulk load's replies so far


class ClientProtocol:
    """The client's view of its connection: requests out, ``Reply`` events in."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.closed = False
        self._buffer = _Buffer()
        self._expected: deque[_Expected] = deque()
        self._commit_open = False
        self._decoders = {
            "version": self._version_reply,
            "load": self._load_reply_of,
            "bulk": self._bulk_reply,
            "oid_list": self._oid_list,
            "new_oids": self._new_oids_reply,
            "auth_challenge": self._auth_challenge,
            "commit_status": self._commit_status,
            "pack_status": self._status,
            "auth_status": self._status,
        }

    @property
    def replies_pending(self) -> int:
        return len(self._expected)

    def send(self, request: Request) -> bytes:
        """The bytes of ``request``; the reply it expects is queued in order."""
        if self.closed:
            raise ProtocolError("the connection is closed")
        if isinstance(request, CommitData) != self._commit_open:
            raise ProtocolError(
                "transaction data must follow a commit request, and only it"
                if self._commit_open
                else f"{type(request).__name__} sent outside a commit"
            )
        data = encode_request(request)
        kind = _reply_kind(request)
        if kind is not None:
            self._expected.append(_Expected(kind, request))
        self._commit_open = isinstance(request, Commit)
        if isinstance(request, (Quit, Goodbye, UnknownCommand)):
            self.closed = True
        return data

    def receive_data(self, data: bytes) -> None:
        self._buffer.append(data)

    def next_event(self) -> Reply | NeedData:
        """The next complete reply, or NeedData; ProtocolError for invalid bytes."""
        if not self._expected:
            if self._buffer:
                self.closed = True
                raise ProtocolError(f"{len(self._buffer)} bytes arrived that nobody asked for")
            raise ProtocolError("no reply is expected")
        expected = self._expected[0]
        try:
            reply = self._decoders[expected.kind](expected)
        except ProtocolError:
            self.closed = True
            self._expected.clear()
            raise
        if not isinstance(reply, NeedData):
            self._expected.popleft()
        return reply

    def _fixed(self, size: int, build: object) -> Reply | NeedData:
        available = len(self._buffer)
        if available < size:
            return NeedData(size - available)
        reply: Reply = build(self._buffer.take(size))  # type: ignore[operator]
        return reply

    def _version_reply(self, expected: _Expected) -> Reply | NeedData:
        return self._fixed(INT4_BYTES, lambda b: VersionReply(_read_int4(b, 0)))

    def _new_oids_reply(self, expected: _Expected) -> Reply | NeedData:
        count = expected.request.count if isinstance(expected.request, NewOids) else 1
        return self._fixed(count * OID_BYTES, lambda b: NewOidsReply(_split_oids(b)))

    def _auth_challenge(self, expected: _Expected) -> Reply | NeedData:
        return self._fixed(
            AUTH_NONCE_BYTES + AUTH_MAC_BYTES,
            lambda b: AuthChallenge(b[:AUTH_NONCE_BYTES], b[AUTH_NONCE_BYTES:]),
        )

    def _commit_status(self, expected: _Expected) -> Reply | NeedData:
        buffer = self._buffer
        if not buffer:
            return NeedData(1)
        status = buffer.take(1)
        if status != STATUS_OKAY and status != STATUS_INVALID:
            raise ProtocolError(f"server returned invalid status {status!r}")
        return CommitStatus(status)

    def _status(self, expected: _Expected) -> Reply | NeedData:
        """The one-byte answer to a pack or to the authentication proof: only 'O'."""
        kind = expected.kind
        assert kind in ("pack_status", "auth_status")
        if not self._buffer:
            return NeedData(1)
        status = self._buffer.take(1)
        if status != STATUS_OKAY:
            raise ProtocolError(f"server returned invalid status {status!r} to {kind}")
        return PackReply(status) if kind == "pack_status" else AuthAccepted(status)

    def _load_reply_of(self, expected: _Expected) -> LoadReply | NeedData:
        return self._load_reply(expected.request)

    def _load_reply(self, request: Request) -> LoadReply | NeedData:
        buffer = self._buffer
        available = len(buffer)
        if not available:
            return NeedData(1)
        status = buffer.peek(1)
        if status in (STATUS_KEYERROR, STATUS_INVALID):
            buffer.take(1)
            return LoadReply(status)
        if status != STATUS_OKAY:
            oid = getattr(request, "oid", None)
            raise ProtocolError(f"status={status!r}, oid={oid!r}")
        if available < 1 + INT4_BYTES:
            return NeedData(1 + INT4_BYTES - available)
        size = buffer.int4_at(1)
        if size > self.limits.max_record_bytes:
            raise ProtocolError(f"record of {size} bytes exceeds {self.limits.max_record_bytes}")
        if available < 1 + INT4_BYTES + size:
            return NeedData(1 + INT4_BYTES + size - available)
        buffer.take(1 + INT4_BYTES)
        return LoadReply(STATUS_OKAY, buffer.take(size))

    def _bulk_reply(self, expected: _Expected) -> BulkLoadReply | NeedData:
        assert isinstance(expected.request, BulkLoad)
        oids = expected.request.oids
        while len(expected.collected) < len(oids):
            reply = self._load_reply(Load(oids[len(expected.collected)]))
            if isinstance(reply, NeedData):
                return reply
            expected.collected.append(reply)
        assert len(expected.collected) == len(oids)
        return BulkLoadReply(tuple(expected.collected))

    def _oid_list(self, expected: _Expected) -> InvalidationsReply | NeedData:
        buffer = self._buffer
        available = len(buffer)
        if available < INT4_BYTES:
            return NeedData(INT4_BYTES - available)
        count = buffer.int4_at(0)
        if count > self.limits.max_invalidation_oids:
            raise ProtocolError(f"list of {count} oids exceeds {self.limits.max_invalidation_oids}")
        size = INT4_BYTES + count * OID_BYTES
        if available < size:
            return NeedData(size - available)
        buffer.take(INT4_BYTES)
        return InvalidationsReply(_split_oids(buffer.take(count * OID_BYTES)) if count else ())


def _reply_kind(request: Request) -> str | None:
    """The kind of reply ``request`` expects, or None when it expects none."""
    if isinstance(request, Version):
        return "version"
    if isinstance(request, Load):
        return "load"
    if isinstance(request, BulkLoad):
        return "bulk" if request.oids else None
    if isinstance(request, (Commit, Sync)):
        return "oid_list"
    if isinstance(request, CommitData):
        return None if request.abandoned else "commit_status"
    if isinstance(request, NewOid):
        return "new_oids"
    if isinstance(request, NewOids):
        return "new_oids" if request.count else None
    if isinstance(request, Pack):
        return "pack_status"
    if isinstance(request, Authenticate):
        return "auth_challenge"
    if isinstance(request, AuthProof):
        return "auth_status"
    return None
