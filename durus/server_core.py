"""The storage server's semantics, without sockets: what each client's bytes do.

Owns the state PROTOCOL.md sections 3-5 give a server: for each client its
``invalid`` set and ``unused_oids`` set; storage-wide the running packer and
``bytes_since_pack``. Bytes in, bytes out: ``ServerCore`` never touches a
socket, a selector or a clock, so tests (and ``LoopbackSocket``) drive it
in-process, single-threaded and deterministically. ``durus.storage_server``
is the thin non-blocking loop that connects it to real sockets.

Interface::

    core = ServerCore(storage, gcbytes=0)
    client_id = core.connect()
    output = core.receive(client_id, data)  # feed + commit + gc check + take_output
    output.data          # bytes to send back to that client
    output.close_reason  # not None: send output.data, then drop the client
    core.quit_requested  # a client sent 'Q': close the storage and stop serving
    core.run_idle_step() # one packer step; True when a pack is running
    core.disconnect(client_id)

The socket loop uses the finer-grained steps behind ``receive``: ``feed``
every readable client, then one ``commit_pending(now_s)`` for the whole
pass, then ``after_pass`` and ``take_output`` per client; it waits no longer
than ``next_deadline_s()``. Replies may also appear for a
client that sent nothing (its commit turn came, see below), so the loop
collects output from every client each pass. ``LoopbackSocket(core)`` is a
socket-like object for ``ClientStorage(socket=...)`` on top of ``receive``.

Robustness (API.md section 23, warts 6-8, 10): malformed bytes, a refused
commit or any exception while handling one client's request closes that
client only, with a logged reason, and nothing stored changes; an exception
from a packer step abandons the pack and the server carries on. A commit to
a storage that cannot write (e.g. read-only) is handled the same way: the
client is dropped with a logged reason (it sees the connection close).

Commits inside commits. Conflict detection is the client's (PROTOCOL.md
5.4): it compares the invalidation list it gets at the start of its commit
with what it read. That is only sound if no other commit lands between the
list and the transaction data, which Durus's blocking server guaranteed by
serving one request at a time. This core offers two sound choices:

* ``serialize_commits=True`` (what StorageServer uses): a client's ``'C'``
  waits while another client is inside its commit, then gets its list;
  loads and syncs are never held up.
* ``serialize_commits=False`` (the default, for single-threaded in-process
  drivers that cannot block): commits interleave, and a commit is refused
  with STATUS_INVALID when anything was committed after its list was sent,
  since the server cannot know whether the client read it.

In both modes the server also refuses (STATUS_INVALID) a commit that writes
an oid its own invalidation list named: a real client never does that, a
careless one would silently overwrite a change it was told about.

Group commit (``serialize_commits=True``). Commits stay serialized per
turn, but the turns of several clients form one group that shares one
storage transaction. A commit that passes its checks joins the open group:
its in-memory effects apply at once (its oids leave its ``unused_oids`` and
enter every other client's ``invalid`` set, so the next turn holder's list
names them) and the turn passes on, but its STATUS_OKAY waits. The group is
written, a ``GroupWrite``: ``begin()``, every member's records, one
``end()`` (for FileStorage one write and its fsyncs), when the commit turn
is free and nobody waits for it, when it holds ``max_group_commits``
commits or ``max_group_bytes`` of transaction data, or ``max_group_delay_s``
after its first member joined (the loop passes ``now_s``; the core never
reads a clock). Only then are the members told STATUS_OKAY, in order.
While a group is open or being written nothing else may observe its
commits before they are durable: every request other than the commit
exchange itself (loads, syncs, new oids, packs, quit...) waits, buffered,
until the write ends, and members send nothing more until their answer. If
``end()`` fails, the pending records are discarded and every member is
closed with a logged reason (a storage ConflictError answers each member
STATUS_INVALID instead); the invalidations already given to other clients
stay, which only makes them reload. So the storage never holds a commit that
was not acknowledged, except when the process dies between ``end()`` and
the replies (durable but unacknowledged, as with any crash after a write).
With ``write_groups_in_background`` the loop takes each write
(``take_group_write``), runs it in a thread while the next group forms, and
reports it (``finish_group_write``); otherwise the core runs it in place.
``receive()``, the in-process driver, writes at the end of each call: it
has no clock and a single-threaded caller cannot wait for a deadline.

Never unpickles. Records from clients are bytes: ``durus.protocol`` checks
their framing (``check_record``), the storage stores them, other clients
get them back. Nothing here (or in protocol, storage_server, the storages'
store/end paths) calls pickle, so a hostile client cannot run code in the
server; a test checks this module imports no pickle.

Authentication (``auth_secret``, see durus.protocol): until a client has
passed the challenge-response, its only accepted messages are the
extension's two; a first ``V`` is answered with ``AUTH_REQUIRED_VERSION``
(a Durus 4.3 client raises "Protocol version mismatch.") and any other
request closes the connection, both logged as "authentication required".
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from durus.error import ConflictError, ProtocolError, ReadConflictError
from durus.logger import log
from durus.protocol import (
    AUTH_CLIENT_LABEL,
    AUTH_NONCE_BYTES,
    AUTH_REQUIRED_VERSION,
    AUTH_SERVER_LABEL,
    DEFAULT_LIMITS,
    MAX_NEW_OIDS,
    PROTOCOL_VERSION,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    Authenticate,
    AuthProof,
    BulkLoad,
    Commit,
    CommitData,
    Goodbye,
    Limits,
    Load,
    NeedData,
    NewOid,
    NewOids,
    Pack,
    Quit,
    Request,
    ServerProtocol,
    Sync,
    UnknownCommand,
    Version,
    auth_mac,
    encode_oid_list,
    int4,
    macs_match,
)

DEFAULT_GCBYTES = 0
DEFAULT_REPLY_BACKLOG_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_GROUP_COMMITS = 64
DEFAULT_MAX_GROUP_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_GROUP_DELAY_S = 0.002
COMMIT_OVERHEAD_BYTES = 8  # bytes_since_pack grows by T + 8 per commit (PROTOCOL.md 5.4)


class ClientError(Exception):
    """A reason to drop one client; the server keeps serving the others."""


@dataclass(frozen=True)
class ClientOutput:
    """What to do for one client: send ``data``, then close when ``close_reason`` is set."""

    data: bytes = b""
    close_reason: str | None = None


class _Client:
    """The server's state for one connected client."""

    def __init__(self, client_id: int, limits: Limits, authentication: bool = False) -> None:
        self.client_id = client_id
        self.protocol = ServerProtocol(limits, authentication)
        self.authenticated = not authentication
        self.auth_nonces: tuple[bytes, bytes] | None = None  # (client, server) while pending
        self.invalid: set[bytes] = set()
        self.unused_oids: set[bytes] = set()
        self.outbox = bytearray()
        self.close_reason: str | None = None
        self.pending_commit: CommitData | None = None
        self.commit_list_sent: frozenset[bytes] = frozenset()
        self.waiting_for_commit_turn = False  # its 'C' waits for another client's commit
        self.paused = False  # handling stopped because too many reply bytes wait
        self.awaiting_ack = False  # its commit is in the open group, not yet durable
        self.deferred: Request | None = None  # a request held back while a group is open

    def __repr__(self) -> str:
        return f"<client {self.client_id}>"

    @property
    def live(self) -> bool:
        return self.close_reason is None


class GroupWrite:
    """One group's storage transaction: store every member's records, then one ``end()``.

    ``run()`` touches only the storage, so the socket loop may call it in
    another thread while the core serves commit turns; the core reads the
    results in ``finish_group_write``. A member whose records the storage
    refuses in ``store()`` (e.g. an oid it never handed out) is left out and
    the transaction is rebuilt from the others (a storage may drop the whole
    pending transaction on such an error); an exception from ``end()`` fails
    every remaining member, and the pending records are discarded.
    """

    def __init__(self, storage: Any, members: list[tuple[_Client, CommitData]]) -> None:
        assert members
        self.storage = storage
        self.members = members
        self.written: list[tuple[_Client, CommitData]] = []
        self.refused: list[tuple[_Client, Exception]] = []
        self.error: BaseException | None = None
        self.taken = False
        self.done = False

    def run(self) -> None:
        try:
            self._store_members()
            if self.written:
                self.storage.end()
        except BaseException as error:  # reported to every member by the core
            logging.getLogger("durus").debug("group write failed", exc_info=True)
            self.error = error
            _discard_pending(self.storage)
            if not isinstance(error, Exception):
                raise
        finally:
            self.done = True

    def _store_members(self) -> None:
        """Store every member that the storage accepts, in order, into one transaction."""
        accepted = list(self.members)
        for _attempt in range(len(self.members) + 1):
            self.storage.begin()
            failure = None
            for index, (client, data) in enumerate(accepted):
                try:
                    for oid, record in data.items:
                        self.storage.store(oid, record)
                except Exception as error:
                    failure = (index, client, error)
                    break
            if failure is None:
                self.written = accepted
                return
            failed_index, failed_client, store_error = failure
            self.refused.append((failed_client, store_error))
            del accepted[failed_index]
        # Unreachable: each failed attempt removes a member, so one of the
        # len(members) + 1 attempts has nothing left to fail.
        raise AssertionError("each attempt removes one member")  # pragma: no cover


def _discard_pending(storage: Any) -> None:
    """Drop pending records after a failure, so they never reach the file later."""
    try:
        storage.begin()
    except Exception:
        logging.getLogger("durus").debug("begin() after a failed commit", exc_info=True)


class ServerCore:
    """Server semantics for any Storage, driven by bytes; see the module docstring."""

    def __init__(
        self, storage: Any, gcbytes: int | float = DEFAULT_GCBYTES,
        limits: Limits = DEFAULT_LIMITS, max_reply_backlog_bytes: int = DEFAULT_REPLY_BACKLOG_BYTES,
        serialize_commits: bool = False, auth_secret: bytes | None = None,
        nonce_source: Callable[[int], bytes] = os.urandom,
        max_group_commits: int = DEFAULT_MAX_GROUP_COMMITS,
        max_group_bytes: int = DEFAULT_MAX_GROUP_BYTES,
        max_group_delay_s: float = DEFAULT_MAX_GROUP_DELAY_S,
    ) -> None:  # fmt: skip
        if isinstance(gcbytes, bool) or not isinstance(gcbytes, (int, float)):
            raise TypeError(f"gcbytes must be a number, not {type(gcbytes).__name__}")
        if auth_secret is not None and (not isinstance(auth_secret, bytes) or not auth_secret):
            raise ValueError("auth_secret must be non-empty bytes (or None for no authentication)")
        self.auth_secret = auth_secret
        self.nonce_source = nonce_source
        self.storage = storage
        self.gcbytes = gcbytes
        self.limits = limits
        self.max_reply_backlog_bytes = max_reply_backlog_bytes
        self.bytes_since_pack = 0
        self.packer: Any = None
        self.quit_requested = False
        self.clients: dict[int, _Client] = {}
        self._next_client_id = 1
        self._commit_queue: list[_Client] = []
        self.serialize_commits = serialize_commits
        self.commit_turn: _Client | None = None  # inside its commit (serialize_commits)
        self._commit_turn_waiters: deque[_Client] = deque()
        if max_group_commits < 1 or max_group_bytes < 1 or not max_group_delay_s >= 0:
            raise ValueError("group commit limits must be positive (the delay >= 0)")
        self.max_group_commits = max_group_commits
        self.max_group_bytes = max_group_bytes
        self.max_group_delay_s = max_group_delay_s
        self._group: list[tuple[_Client, CommitData]] = []  # accepted, not yet written
        self._group_oids: set[bytes] = set()
        self._group_bytes = 0
        self._group_opened_s: float | None = None
        self._writing: GroupWrite | None = None  # the group whose storage write runs
        self._deferring: set[_Client] = set()  # clients with a request held back by a group
        self.write_groups_in_background = False  # the loop runs them: see take_group_write
        self.groups_flushed = 0  # storage.end() calls for groups (successful or not)
        self.group_commits_flushed = 0  # commits those calls made durable

    # ------------------------------------------------------------ connections

    def connect(self) -> int:
        """Register a new client; its id is used in every later call."""
        client_id = self._next_client_id
        self._next_client_id += 1
        self.clients[client_id] = _Client(client_id, self.limits, self.auth_secret is not None)
        assert client_id in self.clients
        return client_id

    def disconnect(self, client_id: int) -> None:
        """Forget a client (idempotent); its unused oids are never handed out again."""
        client = self.clients.pop(client_id, None)
        if client is not None:
            self._commit_queue = [c for c in self._commit_queue if c is not client]
            self._deferring.discard(client)
            self._end_commit_turn(client)
            log(10, "Client %s disconnected", client_id)
        assert client_id not in self.clients

    def receive(self, client_id: int, data: bytes) -> ClientOutput:
        """Handle ``data`` from one client completely and return everything to send it."""
        self.feed(client_id, data)
        chunks = []
        while True:
            self._commit_and_flush()
            self.after_pass()
            output = self.take_output(client_id)
            chunks.append(output.data)
            backlog = self.buffered_bytes(client_id)
            if output.close_reason is not None or not backlog:
                return ClientOutput(b"".join(chunks), output.close_reason)
            self.feed(client_id, b"")
            if self.buffered_bytes(client_id) == backlog and not self.has_output(client_id):
                return ClientOutput(b"".join(chunks), None)  # only a partial message is left

    def _commit_and_flush(self) -> None:
        """Commit everything received and flush the group: no clock, and nobody can wait."""
        while True:
            self.commit_pending()
            self.flush_group()
            if not self._commit_queue:
                break
        assert not self._group or self._writing is not None

    def feed(self, client_id: int, data: bytes) -> None:
        """Buffer ``data`` and handle complete requests; commits wait for commit_pending.

        Handling pauses while more than ``max_reply_backlog_bytes`` of replies
        wait in the outbox; ``feed(client_id, b"")`` after ``take_output``
        resumes it.
        """
        client = self._client(client_id)
        if client.live:
            client.protocol.receive_data(data)
            self._dispatch(client)

    def take_output(self, client_id: int) -> ClientOutput:
        """The bytes produced for a client since the last call, and whether to close it."""
        client = self._client(client_id)
        output = ClientOutput(bytes(client.outbox), client.close_reason)
        client.outbox.clear()
        return output

    def has_output(self, client_id: int) -> bool:
        return bool(self._client(client_id).outbox)

    def clients_with_output(self) -> list[int]:
        """The clients with bytes to send or a reason to close (one pass over all clients)."""
        return [
            client_id
            for client_id, client in self.clients.items()
            if client.outbox or client.close_reason is not None
        ]

    def paused_clients(self) -> list[int]:
        """The live clients whose handling paused for reply backlog."""
        return [
            client_id
            for client_id, client in self.clients.items()
            if client.paused and client.close_reason is None
        ]

    def buffered_bytes(self, client_id: int) -> int:
        """Received bytes of a client not yet handled (a partial message); 0 if unknown."""
        client = self.clients.get(client_id)
        return 0 if client is None or not client.live else client.protocol.buffered_bytes

    def _client(self, client_id: int) -> _Client:
        client = self.clients.get(client_id)
        if client is None:
            raise KeyError(f"no connected client {client_id}")
        return client

    def _close(self, client: _Client, reason: str, level: int = logging.WARNING) -> None:
        """Mark ``client`` for closing; it is no longer live for oid checks."""
        if client.live:
            log(level, "Dropping client %s: %s", client.client_id, reason)
            client.close_reason = reason
            client.unused_oids.clear()
            client.invalid.clear()
            client.pending_commit = None
            client.deferred = None
            self._deferring.discard(client)
            self._end_commit_turn(client)
        assert not client.live and client not in self._deferring

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, client: _Client) -> None:
        """Handle the client's complete requests until it waits on a commit or closes."""
        while client.live and client.pending_commit is None and not self.quit_requested:
            if client.waiting_for_commit_turn or client.awaiting_ack:
                return
            client.paused = len(client.outbox) >= self.max_reply_backlog_bytes
            if client.paused:
                return
            event = self._next_request(client)
            if event is None:
                return
            try:
                self._handle(client, event)
            except Exception as error:  # a storage failure must not take down the server
                logging.getLogger("durus").debug("request failed", exc_info=True)
                self._close(client, f"error handling {type(event).__name__}: {error!r}")

    def _next_request(self, client: _Client) -> Request | None:
        """The client's next request to handle now; None when there is none or it must wait.

        While a group is open only the commit exchange goes on; any other
        request is kept in ``client.deferred`` until the flush. Once some
        request waits, new commits wait too (a ``Commit`` is deferred like the
        rest), so groups cannot follow each other forever: the waiting
        requests are answered after at most the groups already under way.
        """
        event = client.deferred
        client.deferred = None
        self._deferring.discard(client)
        if event is None:
            try:
                next_event = client.protocol.next_event()
            except ProtocolError as error:
                self._close(client, f"protocol error: {error}")
                return None
            if isinstance(next_event, NeedData):
                return None
            event = next_event
        if self.has_open_group() and self._must_wait(event):
            client.deferred = event
            self._deferring.add(client)
            return None
        assert client.deferred is None and client not in self._deferring
        return event

    def _must_wait(self, event: Request) -> bool:
        """True when ``event`` waits for the open group (see ``_next_request``)."""
        if isinstance(event, CommitData):
            return False
        return not isinstance(event, Commit) or bool(self._deferring)

    def is_paused(self, client_id: int) -> bool:
        """True when handling stopped for reply backlog; ``feed(client_id, b"")`` resumes."""
        client = self.clients.get(client_id)
        return client is not None and client.live and client.paused

    def is_authenticated(self, client_id: int) -> bool:
        """True once the client passed authentication (always, when none is required)."""
        client = self.clients.get(client_id)
        return client is not None and client.authenticated

    def _handle(self, client: _Client, request: Request) -> None:
        if not client.authenticated or isinstance(request, (Authenticate, AuthProof)):
            self._handle_authentication(client, request)
        elif isinstance(request, Load):
            client.outbox += self._load_reply(client, request.oid)
        elif isinstance(request, BulkLoad):
            for oid in request.oids:
                client.outbox += self._load_reply(client, oid)
        elif isinstance(request, Commit):
            self._begin_commit(client)
        elif isinstance(request, Sync):
            self._send_invalidations(client, committing=False)
        elif isinstance(request, CommitData):
            self._receive_commit_data(client, request)
        elif isinstance(request, (NewOid, NewOids)):
            count = request.count if isinstance(request, NewOids) else 1
            client.outbox += b"".join(self._new_oids(client, count))
        elif isinstance(request, Version):
            client.outbox += int4(PROTOCOL_VERSION)
            if request.protocol != PROTOCOL_VERSION:
                self._close(client, f"protocol version mismatch: client sent {request.protocol}")
        elif isinstance(request, Pack):
            self.start_pack()
            client.outbox += STATUS_OKAY
        elif isinstance(request, Quit):
            log(20, "Quit")
            self.quit_requested = True
            self._close(client, "quit", logging.DEBUG)
        elif isinstance(request, Goodbye):
            self._close(client, "goodbye", logging.DEBUG)
        else:
            assert isinstance(request, UnknownCommand)
            self._close(client, f"No such command code: {request.code!r}", logging.DEBUG)

    def _handle_authentication(self, client: _Client, request: Request) -> None:
        """The challenge-response of durus.protocol; anything else first is refused."""
        secret = self.auth_secret
        if secret is None or client.authenticated:
            self._close(client, f"unexpected authentication message {type(request).__name__}")
        elif isinstance(request, Authenticate) and client.auth_nonces is None:
            server_nonce = self.nonce_source(AUTH_NONCE_BYTES)
            assert len(server_nonce) == AUTH_NONCE_BYTES
            client.auth_nonces = (request.client_nonce, server_nonce)
            client.outbox += server_nonce
            client.outbox += auth_mac(secret, AUTH_SERVER_LABEL, *client.auth_nonces)
        elif isinstance(request, AuthProof) and client.auth_nonces is not None:
            expected = auth_mac(secret, AUTH_CLIENT_LABEL, *client.auth_nonces)
            client.auth_nonces = None
            if not macs_match(expected, request.mac):
                self._close(client, "authentication failed: wrong proof")
                return
            client.authenticated = True
            client.outbox += STATUS_OKAY
            log(10, "Client %s authenticated", client.client_id)
        else:
            if isinstance(request, Version):
                client.outbox += int4(AUTH_REQUIRED_VERSION)
            self._close(client, f"authentication required (got {type(request).__name__} first)")

    def _load_reply(self, client: _Client, oid: bytes) -> bytes:
        if oid in client.invalid:
            return STATUS_INVALID
        try:
            record = self.storage.load(oid)
        except ReadConflictError:
            return STATUS_INVALID
        except KeyError:
            return STATUS_KEYERROR
        if not isinstance(record, (bytes, bytearray)):
            raise ClientError(f"storage returned {type(record).__name__} for oid {oid!r}")
        return STATUS_OKAY + int4(len(record)) + bytes(record)

    # ------------------------------------------------------------ invalidations and oids

    def _sync_storage(self) -> None:
        """Oids the storage reports (removed by a pack) become invalid for every client."""
        removed = self.storage.sync()
        if removed:
            log(8, "Storage reported %s invalidations", len(removed))
            for other in self.clients.values():
                if other.live:
                    other.invalid.update(removed)

    def _send_invalidations(self, client: _Client, committing: bool) -> None:
        self._sync_storage()
        oids = sorted(client.invalid)
        client.outbox += encode_oid_list(oids)
        client.invalid.clear()
        client.commit_list_sent = frozenset(oids) if committing else frozenset()
        assert not client.invalid

    def _new_oids(self, client: _Client, count: int) -> list[bytes]:
        """``count`` fresh oids from the storage, skipping any client's invalid oids."""
        assert 0 <= count <= MAX_NEW_OIDS
        max_skips = sum(len(c.invalid) + len(c.unused_oids) for c in self.clients.values())
        oids: list[bytes] = []
        skips = 0
        while len(oids) < count:
            oid = self.storage.new_oid()
            if self._oid_is_claimed(oid):
                skips += 1
                if skips > max_skips:
                    raise ClientError("storage keeps handing out oids that are in use")
                continue
            oids.append(oid)
        client.unused_oids.update(oids)
        assert len(set(oids)) == count
        return oids

    def _oid_is_claimed(self, oid: bytes) -> bool:
        return any(oid in c.invalid or oid in c.unused_oids for c in self.clients.values())

    # ------------------------------------------------------------ commits

    def _begin_commit(self, client: _Client) -> None:
        """Send the commit's invalidation list now, or when the client's turn comes."""
        if self.serialize_commits and self.commit_turn not in (None, client):
            client.waiting_for_commit_turn = True
            self._commit_turn_waiters.append(client)
            return
        if self.serialize_commits:
            self.commit_turn = client
        self._send_invalidations(client, committing=True)
        assert not self.serialize_commits or self.commit_turn is client

    def _end_commit_turn(self, client: _Client) -> None:
        """``client`` left its commit (done, abandoned or dropped): the next waiter goes on."""
        if client in self._commit_turn_waiters:
            self._commit_turn_waiters.remove(client)
        if self.commit_turn is not client:
            return
        self.commit_turn = None
        while self._commit_turn_waiters and self.commit_turn is None:
            waiter = self._commit_turn_waiters.popleft()
            waiter.waiting_for_commit_turn = False
            if waiter.live and self.clients.get(waiter.client_id) is waiter:
                self._begin_commit(waiter)
                self._dispatch(waiter)  # its transaction data may be buffered already

    def holds_commit_turn(self, client_id: int) -> bool:
        """True while the client is between its commit's list and its transaction data."""
        turn = self.commit_turn
        return turn is not None and turn.client_id == client_id

    def _receive_commit_data(self, client: _Client, data: CommitData) -> None:
        if data.abandoned:
            client.commit_list_sent = frozenset()
            self._end_commit_turn(client)
            return
        client.pending_commit = data
        self._commit_queue.append(client)
        assert client in self._commit_queue

    def commit_pending(self, now_s: float | None = None) -> None:
        """Handle every commit received so far, in arrival order.

        With ``serialize_commits`` each joins the open group (see the module
        docstring), which is flushed when due at ``now_s`` (None: no clock,
        so no deadline); otherwise each is checked and written at once.
        """
        while self.serialize_commits:
            self._join_group(now_s)
            self._flush_group_if_due(now_s)  # may hand held-back requests on, even a commit
            if not self._commit_queue:
                return
        while self._commit_queue:
            group = [c for c in self._commit_queue if c.live and c.pending_commit is not None]
            self._commit_queue = []
            accepted = self._check_group(group)
            written = self._write_group(accepted)
            for client, data in written:
                self._apply_commit(client, data)
            for client in group:
                client.pending_commit = None
                client.commit_list_sent = frozenset()
                self._end_commit_turn(client)
                self._dispatch(client)  # requests pipelined behind the commit

    # ------------------------------------------------------------ group commit

    def _join_group(self, now_s: float | None) -> None:
        """Check each queued commit; an accepted one joins the open group."""
        while self._commit_queue:
            client = self._commit_queue.pop(0)
            data = client.pending_commit
            client.pending_commit = None
            client.commit_list_sent, list_sent = frozenset(), client.commit_list_sent
            if client.live and data is not None and self._may_join(client, data, list_sent):
                self._add_member(client, data, now_s)
            if self._group_is_full():
                self._flush_group_if_due(now_s)
            self._end_commit_turn(client)
            self._dispatch(client)
        assert not self._commit_queue

    def _may_join(self, client: _Client, data: CommitData, list_sent: frozenset[bytes]) -> bool:
        """Check one commit against its list and the open group; answer or drop it if refused."""
        assert not data.abandoned and self.serialize_commits
        oids = [oid for oid, _record in data.items]
        if client.invalid or not list_sent.isdisjoint(oids):
            log(10, "Commit by client %s refused: its view is stale", client.client_id)
            client.outbox += STATUS_INVALID
            return False
        if not self._group_oids.isdisjoint(oids):  # e.g. a blind write by a new client
            log(10, "Commit by client %s refused: it overlaps the open group", client.client_id)
            client.outbox += STATUS_INVALID
            return False
        foreign = self._foreign_unused_oid(client, oids)
        if foreign is not None:
            self._close(client, f"invalid oid: {foreign!r} belongs to another client")
            return False
        if _is_readonly(self.storage):
            self._close(client, "commit refused: the storage is read-only")
            return False
        return True

    def _add_member(self, client: _Client, data: CommitData, now_s: float | None) -> None:
        """Add a checked commit to the open group and apply its effects on the other clients."""
        oids = [oid for oid, _record in data.items]
        assert self._group_oids.isdisjoint(oids), "checked by _may_join"
        if not self._group:
            self._group_opened_s = now_s
        self._group.append((client, data))
        self._group_oids.update(oids)
        self._group_bytes += data.tdata_bytes
        client.awaiting_ack = True
        client.unused_oids.difference_update(oids)
        for other in self.clients.values():
            if other is not client and other.live:
                other.invalid.update(oids)
        assert client.awaiting_ack and self._group[-1][0] is client

    def _group_is_full(self) -> bool:
        """True when the open group is due for writing by its size.

        While a write is in flight the next group may grow past the limits
        (it cannot be written yet); each client adds at most one commit.
        """
        return (
            len(self._group) >= self.max_group_commits or self._group_bytes >= self.max_group_bytes
        )

    def next_deadline_s(self) -> float | None:
        """When the open group must be flushed at the latest (None: nothing to do by then).

        None too while a group write is in flight: the next group waits for
        it, and its end is reported by ``finish_group_write``.
        """
        if not self._group or self._group_opened_s is None or self._writing is not None:
            return None
        return self._group_opened_s + self.max_group_delay_s

    def has_open_group(self) -> bool:
        """True while commits are accepted but not yet durable nor acknowledged."""
        return bool(self._group) or self._writing is not None

    def _flush_group_if_due(self, now_s: float | None) -> None:
        if not self._group or self._writing is not None:
            return
        turn_free = self.commit_turn is None and not self._commit_turn_waiters
        deadline_s = self.next_deadline_s()
        late = now_s is not None and deadline_s is not None and now_s >= deadline_s
        if turn_free or late or self._group_is_full():
            self._start_group_write(now_s)

    def flush_group(self) -> None:
        """Write the open group now, in this thread (unless a write is in flight)."""
        if self._group and self._writing is None:
            self._start_group_write(None, in_background=False)
        assert self._writing is not None or not self._group

    def _start_group_write(self, now_s: float | None, in_background: bool | None = None) -> None:
        """Hand the open group to a GroupWrite: run here, or by the loop when in_background."""
        job = GroupWrite(self.storage, self._group)
        self._writing = job
        self._group = []
        self._group_oids = set()
        self._group_bytes = 0
        self._group_opened_s = None
        if in_background is None:
            in_background = self.write_groups_in_background
        if not in_background:
            job.run()
            self.finish_group_write(job, now_s)

    def take_group_write(self) -> GroupWrite | None:
        """A group write the caller must ``run()`` (e.g. in a thread), then pass back.

        Only with ``write_groups_in_background``; each write is handed out once.
        While it runs the core does not touch the storage (loads, new oids,
        packs and syncs wait for the flush; commit turns call only
        ``storage.sync()``, which FileStorage answers from a set a pack fills).
        """
        job = self._writing
        if job is None or job.taken or job.done:
            return None
        job.taken = True
        return job

    def finish_group_write(self, job: GroupWrite, now_s: float | None = None) -> None:
        """Answer the members of a finished group write; start the next group when due."""
        if job is not self._writing or not job.done:
            raise RuntimeError("finish_group_write() needs the core's current, finished write")
        self._writing = None
        self.groups_flushed += bool(job.written)
        for client, error in job.refused:
            self._close(client, f"commit refused by the storage: {error!r}")
        if job.error is None:
            self._acknowledge(job.written)
        elif isinstance(job.error, ConflictError):
            for client, _data in job.written:
                client.outbox += STATUS_INVALID
        else:
            reason = f"commit refused by the storage: {job.error!r} (group of {len(job.written)})"
            for client, _data in job.written:
                self._close(client, reason)
        for client, _data in job.members:
            client.awaiting_ack = False
        self._flush_group_if_due(now_s)
        if self._writing is None:
            for client in list(self.clients.values()):  # requests held back by the group
                self._dispatch(client)

    def _acknowledge(self, written: list[tuple[_Client, CommitData]]) -> None:
        self.group_commits_flushed += len(written)
        for client, data in written:
            self.bytes_since_pack += data.tdata_bytes + COMMIT_OVERHEAD_BYTES
            client.outbox += STATUS_OKAY
            log(10, "Client %s committed %s records", client.client_id, len(data.items))
        if written:
            log(10, "Group commit: %s commits in one storage transaction", len(written))

    def _check_group(self, group: list[_Client]) -> list[tuple[_Client, CommitData]]:
        """The commits of ``group`` that may be written; the others are answered now."""
        accepted: list[tuple[_Client, CommitData]] = []
        written_oids: set[bytes] = set()
        for client in group:
            data = client.pending_commit
            assert data is not None and not data.abandoned
            oids = [oid for oid, _record in data.items]
            if self._is_stale(client, oids, bool(written_oids)):
                log(10, "Commit by client %s refused: its view is stale", client.client_id)
                client.outbox += STATUS_INVALID
                continue
            foreign = self._foreign_unused_oid(client, oids)
            if foreign is not None:
                self._close(client, f"invalid oid: {foreign!r} belongs to another client")
                continue
            written_oids.update(oids)
            accepted.append((client, data))
        return accepted

    def _is_stale(self, client: _Client, oids: list[bytes], others_landed: bool) -> bool:
        """True when the client's commit may rest on data changed since its list was sent.

        The server does not know what the client read, so any commit that
        landed after the list was sent (its oids are now in ``client.invalid``,
        or it was accepted earlier in this group) makes this one unsafe; so
        does writing an oid the list itself named.
        """
        return bool(client.invalid) or others_landed or not client.commit_list_sent.isdisjoint(oids)

    def _foreign_unused_oid(self, client: _Client, oids: Iterable[bytes]) -> bytes | None:
        """The first of ``oids`` handed to another live client and not used by it yet."""
        for oid in oids:
            for other in self.clients.values():
                if other is not client and other.live and oid in other.unused_oids:
                    return oid
        return None

    def _write_group(
        self, accepted: list[tuple[_Client, CommitData]]
    ) -> list[tuple[_Client, CommitData]]:
        """Write the accepted transactions, each its own begin/store/end; return those written.

        Only without ``serialize_commits`` (in-process drivers): there at most
        one commit of a pass lands, so there is nothing to share. The serialized
        mode shares writes through ``GroupWrite`` (see the module docstring).
        """
        written = []
        for client, data in accepted:
            if self._write_one(client, data):
                written.append((client, data))
        return written

    def _write_one(self, client: _Client, data: CommitData) -> bool:
        storage = self.storage
        if _is_readonly(storage):
            self._close(client, "commit refused: the storage is read-only")
            return False
        try:
            storage.begin()
            for oid, record in data.items:
                storage.store(oid, record)
            storage.end()
        except ConflictError:
            self._discard_pending()
            client.outbox += STATUS_INVALID
            return False
        except Exception as error:
            logging.getLogger("durus").debug("commit failed", exc_info=True)
            self._discard_pending()
            self._close(client, f"commit refused by the storage: {error!r}")
            return False
        return True

    def _discard_pending(self) -> None:
        """Drop records a failed commit left pending, so they never reach the file later."""
        try:
            self.storage.begin()
        except Exception:
            logging.getLogger("durus").debug("begin() after a failed commit", exc_info=True)

    def _apply_commit(self, client: _Client, data: CommitData) -> None:
        oids = [oid for oid, _record in data.items]
        client.unused_oids.difference_update(oids)
        for other in self.clients.values():
            if other is not client and other.live:
                other.invalid.update(oids)
        self.bytes_since_pack += data.tdata_bytes + COMMIT_OVERHEAD_BYTES
        client.outbox += STATUS_OKAY
        log(10, "Client %s committed %s records", client.client_id, len(oids))

    # ------------------------------------------------------------ packing

    def start_pack(self) -> None:
        """Start an incremental pack unless one runs; pack at once if the storage has no packer."""
        if self.packer is not None:
            return
        self.flush_group()  # a pack never runs beside commits that are not yet durable
        if self.has_open_group():
            return  # a group write is in flight: the pack request waits for the next one
        try:
            packer = self.storage.get_packer()
            if packer is None:
                log(20, "Pack started")
                self.storage.pack()
                self._pack_finished()
                return
        except Exception as error:
            log(logging.ERROR, "Pack failed and was abandoned: %r", error)
            return
        log(20, "Pack started")
        self.packer = iter(packer)

    def run_idle_step(self) -> bool:
        """Run one packer step (call when no client is waiting); True if a pack is running."""
        if self.packer is None or self.has_open_group():
            return self.packer is not None
        try:
            step = next(self.packer)
        except StopIteration:
            self._pack_finished()
            return False
        except Exception as error:
            logging.getLogger("durus").debug("pack step failed", exc_info=True)
            log(logging.ERROR, "Pack failed and was abandoned: %r", error)
            self.packer = None
            return False
        log(15, "Pack step %s", step)
        return True

    def run_until_idle(self, max_steps: int = 10_000_000) -> None:
        """Run packer steps until no pack is running (bounded by ``max_steps``)."""
        for _ in range(max_steps):
            if not self.run_idle_step():
                return
        raise RuntimeError(f"pack still running after {max_steps} steps")

    def _pack_finished(self) -> None:
        self.packer = None
        self.bytes_since_pack = 0
        log(20, "Pack finished")

    def after_pass(self) -> None:
        """End of a loop pass: start a pack when gcbytes worth of commits have accumulated."""
        if (
            self.packer is None
            and not self.has_open_group()
            and 0 < self.gcbytes <= self.bytes_since_pack
        ):
            log(20, "gc started")
            self.start_pack()
            if self.packer is None:
                self.bytes_since_pack = 0  # nothing ran incrementally: do not retry every pass


def _is_readonly(storage: Any) -> bool:
    is_readonly = getattr(storage, "is_readonly", None)
    return bool(is_readonly()) if callable(is_readonly) else False


class LoopbackSocket:
    """A connected socket-like object whose peer is a ServerCore in this process.

    ``ClientStorage(socket=LoopbackSocket(core))`` talks to ``core`` with no
    network and no threads: ``send``/``sendall`` hand the bytes to the core
    at once and queue its reply, ``recv`` returns queued reply bytes. A
    ``recv`` with nothing queued cannot block (nothing else would ever run),
    so it raises ``LoopbackStall``; after the server dropped this client it
    returns ``b""`` like a closed socket. ``before_send(sock, data)``, when
    given, runs before each send is delivered, so a test can slip another
    client's actions in between two messages of this one. ``sever()``
    simulates the server going away (the client then sees EOF).
    """

    def __init__(self, core: ServerCore, before_send: Any = None) -> None:
        self.core = core
        self.client_id = core.connect()
        self.before_send = before_send
        self.closed = False
        self.peer_closed = False
        self.close_reason: str | None = None
        self._inbox = bytearray()

    def __repr__(self) -> str:
        return f"LoopbackSocket(client {self.client_id})"

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise OSError("send on a closed LoopbackSocket")
        if self.peer_closed:
            raise BrokenPipeError(f"the server closed this connection: {self.close_reason}")
        if self.before_send is not None:
            self.before_send(self, bytes(data))
        output = self.core.receive(self.client_id, bytes(data))
        self._inbox += output.data
        if output.close_reason is not None:
            self.peer_closed = True
            self.close_reason = output.close_reason
            self.core.disconnect(self.client_id)
        assert self.peer_closed or self.client_id in self.core.clients

    def _take_late_output(self) -> None:
        """Replies produced since the last send, e.g. a commit list sent when a turn came."""
        if self.client_id in self.core.clients:
            output = self.core.take_output(self.client_id)
            self._inbox += output.data
            if output.close_reason is not None:
                self.peer_closed = True
                self.close_reason = output.close_reason
                self.core.disconnect(self.client_id)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        if self.closed:
            raise OSError("recv on a closed LoopbackSocket")
        if not self._inbox and not self.peer_closed:
            self._take_late_output()
        if not self._inbox:
            if self.peer_closed:
                return b""
            raise LoopbackStall("recv() would block forever: the server has no reply pending")
        chunk = bytes(self._inbox[:size])
        del self._inbox[:size]
        return chunk

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.peer_closed:
                self.core.disconnect(self.client_id)

    def sever(self, reason: str = "severed by the test") -> None:
        """Act as if the server dropped this connection (e.g. it stopped): EOF from now on."""
        if not self.peer_closed:
            self.peer_closed = True
            self.close_reason = reason
            self.core.disconnect(self.client_id)
        assert self.client_id not in self.core.clients

    def settimeout(self, timeout_s: float | None) -> None:
        """Accepted and ignored: a loopback never waits."""

    def setsockopt(self, *args: Any) -> None:
        """Accepted and ignored."""


class LoopbackStall(OSError):
    """A LoopbackSocket was asked to receive bytes that the server will never send."""
