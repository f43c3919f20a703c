"""StorageServer: serves one Storage to many ClientStorage clients over sockets.

Owns the socket loop only: accepting connections, non-blocking reads and
writes with a buffer per client, idle-time packing, stopping. What the bytes
mean (invalidations, oid pools, commits, packs) belongs to
``durus.server_core.ServerCore``; the wire format to ``durus.protocol``. This
module must never parse protocol bytes itself.

Differences from Durus 4.3 (API.md section 23, warts 5-9):

* One client that stalls in the middle of a message never delays the
  others: every socket is non-blocking, bytes are buffered per client, and
  only complete messages reach the core. A client whose partial message or
  unsent reply makes no progress for ``client_timeout_s`` (default
  ``TIMEOUT`` = 10 s) is dropped; an idle client between messages is not.
* Malformed or oversized messages, refused commits (including any commit to
  a read-only storage) and any exception while handling one client's
  request drop that client with a logged reason; the server keeps serving
  and nothing stored changes. A failing pack step abandons the pack.
* Commits are serialized as in Durus 4.3 (``serialize_commits=True``): while
  one client is between its commit's invalidation list and its transaction
  data, another client's commit request waits, so no commit can land inside
  another and none is refused for that. The client inside its commit is
  dropped after ``client_timeout_s`` without progress.
* Group commit: commits of clients that are ready together share one
  ``storage.end()`` (with FileStorage(fsync=True): one write and its fsyncs),
  and are acknowledged only after it; see ``durus.server_core``. The loop
  passes the time to the core and never sleeps in select() past the open
  group's deadline (``max_group_delay_s``, 2 ms by default). A storage
  whose ``fsync`` attribute is False (e.g. ``FileStorage(fsync=False)``)
  gets groups of one (``max_group_commits``): its ``end()`` costs one
  buffered write, so grouping would only delay answers. With a file storage
  whose fsync is on, a group's write runs in a write thread (one for the
  server's lifetime, stopped when serving ends) while the loop serves the
  next group's commit turns (two groups in flight at most), so waiting on
  the disk and the clients' round trips overlap.
* ``wait_for_server`` raises ``ServerTimeoutError`` (a TimeoutError), not
  SystemExit.

Limits (docs/security.md): ``max_message_bytes`` (largest request: a
commit's transaction data, a bulk load), ``max_commit_records``,
``max_clients`` (connections beyond it are accepted and closed at once,
logged) and ``idle_timeout_s`` (0 = off: a client silent between messages
for longer is dropped; off by default because ClientStorage never
reconnects, so a dropped idle client fails on its next call). Each hit
closes that client with a logged reason: protocol 1 has no error reply.

Access control: ``auth_secret`` requires the challenge-response of
``durus.protocol`` within ``auth_timeout_s`` of connecting; ``tls`` (a
server-side ``ssl.SSLContext``) wraps every accepted connection. The TLS
handshake runs inside the loop like any other I/O (want-read/want-write),
and bytes the TLS layer has already decrypted (``pending()``) are drained
after each read, since the selector cannot see them.

``serve()`` keeps the 4.3 contract (after a quit request it closes the
storage and raises SystemExit); ``serve_until_quit()`` does the same work
and returns, and ``shutdown()`` stops a server running in another thread.
"""

from __future__ import annotations

import dataclasses
import queue
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from durus.logger import log
from durus.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    Limits,
    int4,
)
from durus.server_core import (
    DEFAULT_GCBYTES,
    DEFAULT_MAX_GROUP_COMMITS,
    DEFAULT_MAX_GROUP_DELAY_S,
    ClientError,
    ClientOutput,
    GroupWrite,
    LoopbackSocket,
    LoopbackStall,
    ServerCore,
    _Client,
)
from durus.socket_address import (
    TIMEOUT,
    HostPortAddress,
    SocketAddress,
    UnixAbstractAddress,
    UnixDomainSocketAddress,
)
from durus.systemd_socket import get_systemd_socket

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_GCBYTES", "TIMEOUT", "STATUS_OKAY",
    "STATUS_KEYERROR", "STATUS_INVALID", "StorageServer", "ServerCore", "LoopbackSocket",
    "LoopbackStall", "ClientError", "SocketAddress", "HostPortAddress",
    "UnixDomainSocketAddress", "UnixAbstractAddress", "InheritedSocket", "wait_for_server",
    "ServerTimeoutError", "_Client",
]  # fmt: skip

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2972
RECV_CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_OUTBOX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CLIENTS = 1000
DEFAULT_IDLE_TIMEOUT_S = 0.0  # off: ClientStorage holds its connection for the process lifetime
DEFAULT_AUTH_TIMEOUT_S = 10.0
DEFAULT_MAX_MESSAGE_BYTES = DEFAULT_LIMITS.max_commit_bytes
DEFAULT_MAX_COMMIT_RECORDS = DEFAULT_LIMITS.max_commit_records
MAX_ACCEPTS_PER_PASS = 64
GROUP_WRITE_JOIN_S = 120.0  # a write and its fsyncs; longer means the disk is gone
IDLE_POLL_S = 1.0
STALL_CHECK_INTERVAL_S = 0.05  # timeouts are checked this often, not on every pass


class ServerTimeoutError(TimeoutError):
    """wait_for_server gave up: nothing accepted connections at the address."""


class GcbytesError(TypeError, AssertionError):
    """gcbytes is not a number (Durus 4.3 asserted this)."""


class InheritedSocket(SocketAddress):
    """An already listening socket, e.g. from systemd socket activation."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family

    def __str__(self) -> str:
        return f"inherited socket {self.sock.getsockname()!r}"

    def get_listening_socket(self) -> socket.socket:
        return self.sock


class _Connection:
    """The loop's view of one accepted socket."""

    def __init__(self, sock: socket.socket, client_id: int, now_s: float) -> None:
        self.sock = sock
        self.client_id = client_id
        self.outbuf = bytearray()
        self.close_reason: str | None = None
        self.last_progress_s = now_s
        self.connected_s = now_s
        self.tls_handshaking = isinstance(sock, ssl.SSLSocket)
        self.tls_wants_write = False
        self.registered_events = 0  # what the selector watches for (0: not registered)


class StorageServer:
    """A non-blocking, single-threaded server around a ServerCore."""

    protocol = int4(PROTOCOL_VERSION)

    def __init__(
        self, storage: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
        address: Any = None, gcbytes: int | float = DEFAULT_GCBYTES, *,
        limits: Limits = DEFAULT_LIMITS, client_timeout_s: float = TIMEOUT,
        max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES, max_clients: int = DEFAULT_MAX_CLIENTS,
        max_message_bytes: int | None = None, max_commit_records: int | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, auth_secret: bytes | None = None,
        auth_timeout_s: float = DEFAULT_AUTH_TIMEOUT_S, tls: ssl.SSLContext | None = None,
        max_group_commits: int | None = None,
        max_group_delay_s: float = DEFAULT_MAX_GROUP_DELAY_S,
    ) -> None:  # fmt: skip
        if isinstance(gcbytes, bool) or not isinstance(gcbytes, (int, float)):
            raise GcbytesError(f"gcbytes must be an int or float, got {gcbytes!r}")
        _check_positive("max_clients", max_clients)
        _check_positive("client_timeout_s", client_timeout_s)
        _check_positive("auth_timeout_s", auth_timeout_s)
        if not isinstance(idle_timeout_s, (int, float)) or idle_timeout_s < 0:
            raise ValueError(f"idle_timeout_s must be >= 0 (0: off), got {idle_timeout_s!r}")
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls must be an ssl.SSLContext, not {tls!r}")
        limits = with_message_limits(limits, max_message_bytes, max_commit_records)
        self.storage = storage
        self.address = SocketAddress.new(address if address is not None else (host, port))
        if max_group_commits is None:
            max_group_commits = default_max_group_commits(storage)
        _check_positive("max_group_commits", max_group_commits)
        self.core = ServerCore(
            storage, gcbytes, limits, max_outbox_bytes, serialize_commits=True,
            auth_secret=auth_secret, max_group_commits=max_group_commits,
            max_group_delay_s=max_group_delay_s,
        )  # fmt: skip
        self.core.write_groups_in_background = writes_groups_in_background(storage)
        self._group_write: GroupWrite | None = None
        self._group_thread: threading.Thread | None = None  # runs every group write
        self._group_jobs: queue.SimpleQueue[GroupWrite | None] | None = None
        self.limits = limits
        self.client_timeout_s = client_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.auth_timeout_s = auth_timeout_s
        self.tls = tls
        self.max_outbox_bytes = max_outbox_bytes
        self.max_clients = max_clients
        self.load_record: dict[bytes, Any] = {}
        self.sockets: list[socket.socket] = []
        self.connections: dict[int, _Connection] = {}
        # A socket pair that wakes the select loop (shutdown(), finished group
        # writes); it exists only while serve_until_quit() runs.
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._stop_requested = False
        self._next_stall_check_s = 0.0

    @property
    def clients(self) -> list[_Client]:
        return list(self.core.clients.values())

    @property
    def packer(self) -> Any:
        return self.core.packer

    @property
    def gcbytes(self) -> int | float:
        return self.core.gcbytes

    @property
    def bytes_since_pack(self) -> int:
        return self.core.bytes_since_pack

    # ------------------------------------------------------------ running

    def serve(self) -> None:
        """Serve until a client sends quit; then close the storage and raise SystemExit."""
        self.serve_until_quit()
        raise SystemExit

    def serve_until_quit(self) -> None:
        """Serve until a quit request (storage closed) or shutdown() (storage left open)."""
        inherited = get_systemd_socket()
        if inherited is not None:
            self.address = InheritedSocket(inherited)
        listener = self.address.get_listening_socket()
        wake_pair = socket.socketpair()
        self._wake_reader, self._wake_writer = wake_pair
        try:
            self._serve_on(listener)
        finally:
            self._close_everything(listener)  # joins a group write still in flight
            self._wake_reader = self._wake_writer = None
            for wake in wake_pair:
                wake.close()
            if self.core.quit_requested:
                self.storage.close()

    def shutdown(self) -> None:
        """Ask a running serve loop (in another thread) to stop; it returns soon after."""
        self._stop_requested = True
        self._wake(b"x")

    def _wake(self, signal: bytes) -> None:
        """Wake the select loop, if it runs (from another thread)."""
        writer = self._wake_writer
        if writer is None:
            return
        try:
            writer.send(signal)
        except OSError:
            pass

    def _serve_on(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self.sockets = [listener]
        selector = selectors.DefaultSelector()
        self._selector = selector
        selector.register(listener, selectors.EVENT_READ, None)
        assert self._wake_reader is not None
        selector.register(self._wake_reader, selectors.EVENT_READ, "wake")
        log(20, "Ready on %s%s", self.address, self._access_description())
        try:
            while not self.core.quit_requested and not self._stop_requested:
                self._one_pass(selector, listener)
        finally:
            selector.close()

    def _access_description(self) -> str:
        """What protects the connections, for the start-up line of the log."""
        parts = ["TLS"] if self.tls is not None else []
        if self.core.auth_secret is not None:
            parts.append("authentication required")
        return f" ({', '.join(parts)})" if parts else ""

    def _one_pass(self, selector: selectors.BaseSelector, listener: socket.socket) -> None:
        """Wait, read every ready client, commit as a group, write, pack when idle."""
        self._update_interest(selector)
        events = selector.select(self._select_timeout_s())
        now_s = time.monotonic()
        client_was_ready = False
        for key, mask in events:
            if key.data is None:
                self._accept(listener, now_s)
            elif key.data == "wake":
                key.fileobj.recv(64)  # type: ignore[union-attr]
            else:
                client_was_ready = True
                self._service(key.data, mask, now_s)
        self._resume_backlogged()
        self.core.commit_pending(now_s)
        self._advance_group_write(now_s)
        self.core.after_pass()
        self._send_core_output(now_s)
        if now_s >= self._next_stall_check_s:
            self._next_stall_check_s = now_s + STALL_CHECK_INTERVAL_S
            self._drop_stalled(now_s)
        if not client_was_ready:
            self.core.run_idle_step()

    def _advance_group_write(self, now_s: float) -> None:
        """Report a finished group write to the core; hand the next one to the write thread."""
        job = self._group_write
        if job is not None and job.done:
            self._group_write = None
            self.core.finish_group_write(job, now_s)
            self.core.commit_pending(now_s)  # commits that were held back
        if self._group_write is None:
            job = self.core.take_group_write()
            if job is not None:
                self._group_write = job
                self._group_writer().put(job)

    def _group_writer(self) -> queue.SimpleQueue[GroupWrite | None]:
        """The write thread's queue; the thread starts with the first group write.

        One long-lived thread, not one per group: starting a thread waits
        until the new thread runs, which on a busy machine stalls the loop
        for a scheduler time slice.
        """
        if self._group_thread is None:
            self._group_jobs = queue.SimpleQueue()
            self._group_thread = threading.Thread(
                target=self._run_group_writes, args=(self._group_jobs,), name="durus group write",
                daemon=True,
            )  # fmt: skip
            self._group_thread.start()
        assert self._group_jobs is not None
        return self._group_jobs

    def _run_group_writes(self, jobs: queue.SimpleQueue[GroupWrite | None]) -> None:
        """In the write thread: each queued write, then wake the loop; None stops."""
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                job.run()
            except BaseException:  # noqa: S110  # job.error holds it; the core reports it
                pass
            finally:
                self._wake(b"w")

    def _join_group_thread(self) -> None:
        """Wait for the write in flight, then stop the write thread."""
        thread = self._group_thread
        if thread is None:
            return
        assert self._group_jobs is not None
        self._group_jobs.put(None)  # stops the thread once the write in flight ends
        thread.join(GROUP_WRITE_JOIN_S)
        if thread.is_alive():
            raise RuntimeError(f"the group write did not end within {GROUP_WRITE_JOIN_S} s")
        self._group_thread = None
        self._group_jobs = None

    def _select_timeout_s(self) -> float:
        """How long select() may wait: not past the open commit group's deadline."""
        core = self.core
        connections = self.connections
        busy = (
            core.packer is not None
            or any(client_id in connections for client_id in core.clients_with_output())
            or bool(self._resumable())
        )
        timeout_s = 0.0 if busy else IDLE_POLL_S
        deadline_s = self.core.next_deadline_s()
        if deadline_s is not None:
            timeout_s = min(timeout_s, max(0.0, deadline_s - time.monotonic()))
        assert 0.0 <= timeout_s <= IDLE_POLL_S
        return timeout_s

    def _resumable(self) -> list[_Connection]:
        """Connections whose requests the core paused and whose replies have drained."""
        resumable = []
        for client_id in self.core.paused_clients():
            connection = self.connections.get(client_id)
            if connection is not None and len(connection.outbuf) < self.max_outbox_bytes:
                resumable.append(connection)
        return resumable

    def _resume_backlogged(self) -> None:
        """Let the core handle requests it paused while their replies piled up."""
        for connection in self._resumable():
            self.core.feed(connection.client_id, b"")

    def _update_interest(self, selector: selectors.BaseSelector) -> None:
        """Tell the selector what each connection waits for; only changes cost a call."""
        max_outbox_bytes = self.max_outbox_bytes
        for connection in self.connections.values():
            outbuf = connection.outbuf
            events = 0
            if connection.close_reason is None and len(outbuf) < max_outbox_bytes:
                events = selectors.EVENT_READ
            if outbuf or connection.tls_wants_write:
                events |= selectors.EVENT_WRITE
            registered = connection.registered_events
            if events == registered:
                continue
            if events == 0:
                selector.unregister(connection.sock)
            elif registered == 0:
                selector.register(connection.sock, events, connection)
            else:
                selector.modify(connection.sock, events, connection)
            connection.registered_events = events

    # ------------------------------------------------------------ connections

    def _accept(self, listener: socket.socket, now_s: float) -> None:
        for _ in range(MAX_ACCEPTS_PER_PASS):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log(30, "accept() failed: %s", error)
                return
            if len(self.connections) >= self.max_clients:
                log(30, "Refusing a connection: %s clients already", len(self.connections))
                sock.close()
                continue
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (OSError, ValueError) as error:
                    log(30, "TLS set-up failed for %r: %s", peer, error)
                    sock.close()
                    continue
            client_id = self.core.connect()
            self.connections[client_id] = _Connection(sock, client_id, now_s)
            self.sockets.append(sock)
            log(10, "Client %s connected from %r", client_id, peer)

    def _service(self, connection: _Connection, mask: int, now_s: float) -> None:
        if connection.tls_handshaking:
            self._continue_tls_handshake(connection, now_s)
            if connection.tls_handshaking or connection.client_id not in self.connections:
                return
            mask |= selectors.EVENT_READ  # application bytes may have come with the handshake
        if mask & selectors.EVENT_WRITE:
            self._flush(connection, now_s)
        if mask & selectors.EVENT_READ and connection.close_reason is None:
            data = self._receive(connection)
            if data is None:
                return
            if not data:
                self._drop(connection, "connection closed by the client")
                return
            connection.last_progress_s = now_s
            self.core.feed(connection.client_id, data)

    def _receive(self, connection: _Connection) -> bytes | None:
        """The bytes available now (b"" at end of stream); None when none yet or dropped."""
        sock = connection.sock
        try:
            data = sock.recv(RECV_CHUNK_BYTES)
            if isinstance(sock, ssl.SSLSocket):
                while data and sock.pending():  # decrypted bytes the selector cannot see
                    data += sock.recv(sock.pending())
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except ssl.SSLZeroReturnError:
            return b""
        except OSError as error:
            self._drop(connection, f"receive failed: {error}")
            return None
        return data

    def _continue_tls_handshake(self, connection: _Connection, now_s: float) -> None:
        sock = connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            connection.tls_wants_write = False
            return
        except ssl.SSLWantWriteError:
            connection.tls_wants_write = True
            return
        except OSError as error:
            quiet = isinstance(error, (ssl.SSLEOFError, ConnectionError))  # a probe that hung up
            level = 10 if quiet else 30
            log(level, "Client %s: TLS handshake failed: %s", connection.client_id, error)
            self._drop(connection, f"TLS handshake failed: {error}")
            return
        connection.tls_handshaking = False
        connection.tls_wants_write = False
        connection.last_progress_s = now_s
        log(10, "Client %s: TLS %s established", connection.client_id, sock.version())

    def _send_core_output(self, now_s: float) -> None:
        """Move what the core produced to the connections' buffers and send it."""
        for client_id in self.core.clients_with_output():
            connection = self.connections.get(client_id)
            if connection is not None:
                self._collect_output(connection)
                self._flush(connection, now_s)

    def _collect_output(self, connection: _Connection) -> None:
        if connection.client_id not in self.core.clients:
            return
        output: ClientOutput = self.core.take_output(connection.client_id)
        connection.outbuf += output.data
        if output.close_reason is not None and connection.close_reason is None:
            connection.close_reason = output.close_reason

    def _flush(self, connection: _Connection, now_s: float) -> None:
        if connection.client_id not in self.connections:
            return
        while connection.outbuf:
            try:
                sent = connection.sock.send(connection.outbuf)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError as error:
                self._drop(connection, f"send failed: {error}")
                return
            del connection.outbuf[:sent]
            connection.last_progress_s = now_s
        if not connection.outbuf and connection.close_reason is not None:
            self._drop(connection, connection.close_reason)

    def _drop_stalled(self, now_s: float) -> None:
        """Drop clients stuck mid-message, unauthenticated too long, or idle too long."""
        reasons = {}
        for connection in self.connections.values():
            reason = self._overstay_reason(connection, now_s)
            if reason is not None:
                reasons[connection.client_id] = (connection, reason)
        for connection, reason in reasons.values():  # decided first: a drop may pass a turn on
            log(30, "Client %s: %s", connection.client_id, reason)
            self._drop(connection, reason)

    def _overstay_reason(self, connection: _Connection, now_s: float) -> str | None:
        silent_s = now_s - connection.last_progress_s
        if self._is_waiting_on(connection) and silent_s > self.client_timeout_s:
            return f"no progress for {self.client_timeout_s} s (stalled mid-message)"
        if (
            not self.core.is_authenticated(connection.client_id)
            and now_s - connection.connected_s > self.auth_timeout_s
        ):
            return f"not authenticated within {self.auth_timeout_s} s"
        if 0 < self.idle_timeout_s < silent_s:
            return f"idle for more than {self.idle_timeout_s} s (--idle-timeout)"
        return None

    def _is_waiting_on(self, connection: _Connection) -> bool:
        """True when the server waits for this client to read or to finish a message."""
        client_id = connection.client_id
        return (
            connection.tls_handshaking
            or bool(connection.outbuf)
            or self.core.buffered_bytes(client_id) > 0
            or self.core.holds_commit_turn(client_id)
        )

    def _drop(self, connection: _Connection, reason: str) -> None:
        if self.connections.pop(connection.client_id, None) is None:
            return
        log(10, "Closing client %s: %s", connection.client_id, reason)
        self.core.disconnect(connection.client_id)
        try:
            self._selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        if connection.sock in self.sockets:
            self.sockets.remove(connection.sock)
        connection.sock.close()

    def _close_everything(self, listener: socket.socket) -> None:
        self.core.write_groups_in_background = False  # from now on the core writes in place
        job = self._group_write
        self._join_group_thread()  # accepted commits become durable, though unacknowledged
        self._group_write = None
        if job is not None and job.done:
            self.core.finish_group_write(job)
        self.core.flush_group()
        for connection in list(self.connections.values()):
            self.core.disconnect(connection.client_id)
            connection.sock.close()
        self.connections.clear()
        self.sockets = []
        self.address.close(listener)


def writes_groups_in_background(storage: Any) -> bool:
    """True for a file storage with fsync on: its group writes run in a thread.

    While one group's write and fsyncs run, the loop serves the next group's
    commit turns (and nothing else: see ServerCore.take_group_write); only
    FileStorage and FileStorage2, whose ``sync()`` reads a set only packs
    fill, are known to allow that.
    """
    from durus.file_storage import FileStorage
    from durus.file_storage2 import FileStorage2

    return isinstance(storage, (FileStorage, FileStorage2)) and storage.fsync is True


def default_max_group_commits(storage: Any) -> int:
    """Commits per group: 1 (no grouping) for a storage that says it never fsyncs.

    There ``end()`` is one buffered write, so sharing it saves nothing and
    only delays the earlier members' answers; every other storage (fsync on,
    SQLite, memory) groups.
    """
    return 1 if getattr(storage, "fsync", None) is False else DEFAULT_MAX_GROUP_COMMITS


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def with_message_limits(
    limits: Limits, max_message_bytes: int | None, max_commit_records: int | None
) -> Limits:
    """``limits`` with the two operator-facing limits applied (None: keep)."""
    changes: dict[str, int] = {}
    if max_message_bytes is not None:
        _check_positive("max_message_bytes", max_message_bytes)
        changes["max_commit_bytes"] = max_message_bytes
        changes["max_record_bytes"] = min(limits.max_record_bytes, max_message_bytes)
        changes["max_bulk_load_oids"] = max(
            1, min(limits.max_bulk_load_oids, max_message_bytes // 8)
        )
    if max_commit_records is not None:
        _check_positive("max_commit_records", max_commit_records)
        changes["max_commit_records"] = max_commit_records
    result = dataclasses.replace(limits, **changes)
    assert max_message_bytes is None or result.max_commit_bytes == max_message_bytes
    return result


def wait_for_server(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, maxtries: int = 300,
    sleeptime: float = 2, address: Any = None,
) -> None:  # fmt: skip
    """Return once something accepts connections at the address; else ServerTimeoutError."""
    socket_address = SocketAddress.new(address if address is not None else (host, port))
    for attempt in range(maxtries):
        sock = socket_address.get_connected_socket(timeout_s=max(sleeptime, 1.0))
        if sock is not None:
            sock.close()
            return
        if attempt + 1 < maxtries:
            time.sleep(sleeptime)
    raise ServerTimeoutError(f"Timeout waiting for address: {socket_address}.")
