"""Fuzz a real StorageServer over TCP while well-behaved clients keep working.

The server runs in a subprocess on a FileStorage (so an oid nobody allocated
is refused by the storage, as in Durus). Three kinds of peers share it:

* good clients: threads with ClientStorage + Connection, each committing to
  its own PersistentDict and checking what it reads back;
* a victim: a raw connection that takes oids with ``M`` and never uses them,
  so commits of "oids allocated to another client" always target live ones;
* the fuzzer: many short connections, each a batch of random and mutated
  messages (valid messages with fields changed, truncated, oversized
  lengths, unknown command bytes, commits whose record oid differs from the
  item's, oids never allocated, the victim's oids, huge counts in B and M, a
  disconnect in the middle of a message), sent pipelined; then the fuzzer
  half-closes and reads until the server closes.

Every fuzz record carries a marker: ``REJECT`` in commits the server must
refuse, ``MAYBE`` in commits it may accept (they only touch oids the fuzz
connection was given itself). A local ``ServerProtocol`` model screens every
candidate message: one that would decode as ``Q`` (stop the server) or as a
commit touching oids that are not the connection's own is redrawn.

Afterwards: the server is still up, its log has no traceback, the good
clients' data is exactly what they committed, and no ``REJECT`` record
exists in the file. ``DURUS_FUZZ_MESSAGES`` (default 10,000) and
``DURUS_FUZZ_SEED`` (default fixed, so CI is reproducible) tune the run.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.error import ConflictError, ProtocolError
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from durus.protocol import (
    CommitData,
    NeedData,
    Quit,
    ServerProtocol,
    encode_tdata,
    int4,
)
from durus.record import pack_record
from tests.support.server_fixtures import WAIT_S, ServerProcess, recv_exactly

MESSAGES = int(os.environ.get("DURUS_FUZZ_MESSAGES", "10000"))
SEED = int(os.environ.get("DURUS_FUZZ_SEED", "4343"))
MAX_MESSAGE_BYTES = 64 * 1024
GOOD_CLIENTS = 2
FUZZ_SOCKET_TIMEOUT_S = 5.0
TIME_BUDGET_S = 40.0 * max(1.0, MESSAGES / 10_000)  # bounded, also for long runs
PAUSE_S = 0.01
HOSTILE_SHARE = 0.15
NEVER_ALLOCATED_BASE = 1 << 40
COMMANDS = b"VLBCSNMP."


def as_oid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def fuzz_record(oid: bytes, marker: bytes, rng: random.Random, size: int = 0) -> bytes:
    payload = marker + b"-" + str(rng.getrandbits(40)).encode() + bytes(size)
    return pack_record(oid, payload, b"")


@dataclass
class FuzzConnection:
    """What the fuzzer knows about one of its connections."""

    own_oids: list[bytes]
    victim_oids: list[bytes]
    stream: bytearray = field(default_factory=bytearray)
    closed: bool = False  # the server will close it after the stream so far


def screen(conn: FuzzConnection, candidate: bytes) -> tuple[bool, bool]:
    """(acceptable, closes): decode stream + candidate the way the server will.

    Not acceptable: it would decode as Quit, or as a commit touching oids
    that are not this connection's own (those could be legitimate writes to
    other clients' objects, which the test could not tell from corruption),
    unless one of them makes the server refuse the whole commit for sure.
    """
    model = ServerProtocol()
    model.receive_data(bytes(conn.stream) + candidate)
    own = set(conn.own_oids)
    while True:
        try:
            event = model.next_event()
        except ProtocolError:
            return True, True
        if isinstance(event, NeedData):
            return True, False
        if isinstance(event, Quit):
            return False, True
        if isinstance(event, CommitData):
            oids = {o for o, _r in event.items}
            if not oids <= own:
                return surely_refused(oids - own, conn), True
            if any(b"REJECT" in r for _o, r in event.items):
                return False, True  # e.g. a cut message shifted the stream: redraw
        if model.state == "closed":
            return True, True


def surely_refused(oids: set[bytes], conn: FuzzConnection) -> bool:
    """True when the server must refuse a commit writing ``oids`` (whatever else it holds)."""
    return any(
        o in conn.victim_oids or int.from_bytes(o, "big") >= NEVER_ALLOCATED_BASE for o in oids
    )


class MessageMaker:
    """Random messages for one fuzz connection; ``make`` returns (bytes, fatal)."""

    def __init__(self, rng: random.Random, conn: FuzzConnection) -> None:
        self.rng = rng
        self.conn = conn

    def any_oid(self) -> bytes:
        rng = self.rng
        choice = rng.random()
        if choice < 0.3:
            return rng.choice(self.conn.own_oids)
        if choice < 0.5:
            return rng.choice(self.conn.victim_oids)
        if choice < 0.7:
            return as_oid(rng.randrange(0, 64))
        return as_oid(NEVER_ALLOCATED_BASE + rng.getrandbits(32))

    def valid_commit(self, marker: bytes = b"MAYBE") -> bytes:
        oids = self.rng.sample(self.conn.own_oids, self.rng.randint(1, 3))
        items = [(o, fuzz_record(o, marker, self.rng, self.rng.choice((0, 10, 300)))) for o in oids]
        return b"C" + encode_tdata(items)

    def rejected_commit(self) -> bytes:
        """A commit the server must refuse (REJECT records only)."""
        rng = self.rng
        own = rng.choice(self.conn.own_oids)
        kind = rng.randrange(7)
        good_item = (own, fuzz_record(own, b"REJECT", rng))
        if kind == 0:  # record oid differs from the item's oid
            other = own[:-1] + bytes([own[-1] ^ rng.randrange(1, 256)])
            return b"C" + encode_tdata([(own, fuzz_record(other, b"REJECT", rng))])
        if kind == 1:  # an oid nobody ever allocated
            stranger = as_oid(NEVER_ALLOCATED_BASE + rng.getrandbits(32))
            return b"C" + encode_tdata(
                [good_item, (stranger, fuzz_record(stranger, b"REJECT", rng))]
            )
        if kind == 2:  # an oid allocated to another (live) client
            foreign = rng.choice(self.conn.victim_oids)
            return b"C" + encode_tdata([good_item, (foreign, fuzz_record(foreign, b"REJECT", rng))])
        if kind == 3:  # T larger than the limit
            return b"C" + int4(MAX_MESSAGE_BYTES + rng.randrange(1, 1 << 20)) + bytes(16)
        if kind == 4:  # item lengths that overrun T
            body = encode_tdata([good_item])[4:]
            return b"C" + int4(len(body)) + int4(len(body) + rng.randrange(1, 500)) + body[4:]
        if kind == 5:  # the same oid twice
            return b"C" + encode_tdata([good_item, good_item])
        # item length too short to hold a record header
        body = encode_tdata([good_item])[4:]
        return b"C" + int4(len(body)) + int4(rng.randrange(0, 20)) + body[4:]

    def plain(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0:
            return b"L" + self.any_oid()
        if kind == 1:
            count = rng.randrange(0, 12)
            return b"B" + int4(count) + b"".join(self.any_oid() for _ in range(count))
        if kind == 2:
            return b"S"
        if kind == 3:
            return b"N"
        if kind == 4:
            return b"M" + bytes([rng.choice((0, 1, 32, 255))])
        if kind == 5:
            return b"V" + int4(1)
        if kind == 6:
            return b"P" if rng.random() < 0.05 else b"S"
        return self.valid_commit()

    def hostile(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(8)
        if kind == 0:
            return self.rejected_commit()
        if kind == 1:  # unknown command byte
            return bytes([rng.choice([b for b in range(256) if b not in b"VLBCSNMPQA."])])
        if kind == 2:  # huge count in B (over the limit, or a promise never kept)
            return b"B" + int4(rng.choice((0xFFFFFFFF, MAX_MESSAGE_BYTES, 4000)))
        if kind == 3:  # wrong protocol version
            return b"V" + int4(rng.choice((0, 2, 0xFFFFFFFF)))
        if kind == 4:  # random bytes
            return rng.randbytes(rng.randrange(1, 64))
        if kind == 5:  # a valid message with random bytes changed
            return self.mutate(self.plain())
        if kind == 6:  # a valid message cut short (the stream then runs on into the next)
            message = self.plain()
            return message[: rng.randrange(1, max(2, len(message)))]
        return self.mutate(self.valid_commit())

    def mutate(self, message: bytes) -> bytes:
        rng = self.rng
        data = bytearray(message)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[position] = rng.randrange(256)
            elif action == 1 and len(data) > 1:
                del data[position]
            else:
                data.insert(position, rng.randrange(256))
        return bytes(data)


def rejected(message: bytes) -> bool:
    return b"REJECT" in message


class Victim:
    """Holds oids handed out by the server and never uses them."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = server.connect_raw()
        self.sock.sendall(b"V" + int4(1) + b"M" + bytes([40]))
        reply = recv_exactly(self.sock, 4 + 40 * 8)
        self.oids = [reply[4 + 8 * i : 12 + 8 * i] for i in range(40)]

    def close(self) -> None:
        self.sock.close()


def open_fuzz_connection(
    server: ServerProcess, victim: Victim, rng: random.Random
) -> tuple[socket.socket, FuzzConnection]:
    sock = socket.create_connection(server.address, timeout=FUZZ_SOCKET_TIMEOUT_S)
    sock.sendall(b"V" + int4(1) + b"M" + bytes([6]))
    reply = recv_exactly(sock, 4 + 48)
    own = [reply[4 + 8 * i : 12 + 8 * i] for i in range(6)]
    assert len(own) == 6 and all(len(o) == 8 for o in own), reply
    return sock, FuzzConnection(own, rng.sample(victim.oids, 10))


def run_fuzz_connection(
    server: ServerProcess, victim: Victim, rng: random.Random, budget: int
) -> int:
    """One connection: a batch of messages, then half-close and drain. Returns messages sent."""
    sock, conn = open_fuzz_connection(server, victim, rng)
    maker = MessageMaker(rng, conn)
    sent = 0
    try:
        for _ in range(rng.randint(1, min(budget, 60))):
            message = pick_message(maker, conn)
            if message is None:
                break
            conn.stream += message
            sent += 1
            if conn.closed:
                break
        try:
            if rng.random() < 0.1 and len(conn.stream) > 1:  # disconnect mid-message
                sock.sendall(conn.stream[: rng.randrange(1, len(conn.stream))])
                return sent
            sock.sendall(conn.stream)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the server closed first: expected for hostile input
    finally:
        sock.close()
    return sent


def pick_message(maker: MessageMaker, conn: FuzzConnection) -> bytes | None:
    for _ in range(20):
        candidate = maker.hostile() if maker.rng.random() < HOSTILE_SHARE else maker.plain()
        acceptable, closes = screen(conn, candidate)
        if acceptable:
            conn.closed = closes
            return candidate
    return None


class GoodClient(threading.Thread):
    """Commits to its own PersistentDict and checks what it reads back, until told to stop."""

    def __init__(self, server: ServerProcess, name: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.key = name
        self.stop_event = stop
        self.expected: dict[int, int] = {}
        self.commits = 0
        self.conflicts = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def _work(self) -> None:
        storage = ClientStorage(address=self.server.address, timeout_s=WAIT_S)
        connection = Connection(storage)
        counter = 0
        while not self.stop_event.is_set() or self.commits < 5:
            counter += 1
            try:
                mine = connection.get_root()[self.key]
                mine[counter % 50] = counter
                connection.commit()
            except ConflictError:
                connection.abort()
                self.conflicts += 1
                continue
            self.expected[counter % 50] = counter
            self.commits += 1
            connection.abort()
            assert dict(connection.get_root()[self.key].items()) == self.expected
            time.sleep(PAUSE_S)  # leave the fuzzer (same process) most of the CPU
        storage.close()


def test_fuzzing_a_live_server_changes_nothing_it_must_refuse(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.durus"
    rng = random.Random(SEED)
    server = ServerProcess(
        "--file", str(path), "--client-timeout", "2", "--log-level", "20",
        "--max-message-bytes", str(MAX_MESSAGE_BYTES), log_path=tmp_path / "server.log",
    )  # fmt: skip
    stop = threading.Event()
    good: list[GoodClient] = []
    try:
        setup = Connection(ClientStorage(address=server.address, timeout_s=WAIT_S))
        for i in range(GOOD_CLIENTS):
            setup.get_root()[f"good{i}"] = PersistentDict()
        setup.commit()
        setup.get_storage().close()
        victim = Victim(server)
        good = [GoodClient(server, f"good{i}", stop) for i in range(GOOD_CLIENTS)]
        for client in good:
            client.start()
        sent = connections = 0
        started = time.monotonic()
        while sent < MESSAGES:
            assert time.monotonic() - started < TIME_BUDGET_S, f"only {sent} messages sent"
            sent += run_fuzz_connection(server, victim, rng, MESSAGES - sent)
            connections += 1
        stop.set()
        for client in good:
            client.join(WAIT_S * 2)
            assert not client.is_alive() and client.error is None, client.error
            assert client.commits >= 5
        assert server.process.poll() is None, server.output()
        check_a_fresh_client_still_works(server)
        victim.close()
        server.quit()
    finally:
        stop.set()
        server.stop()
    log_text = server.output()
    assert "Traceback" not in log_text
    for reason in ("protocol error", "invalid oid", "is a surprise", "version mismatch"):
        assert reason in log_text, reason
    check_file(path, good)
    elapsed_s = time.monotonic() - started
    commits = sum(c.commits for c in good)
    print(f"fuzz: {sent} messages, {connections} connections, {commits} good commits,")
    print(f"      {elapsed_s:.1f} s, seed {SEED}")


def check_a_fresh_client_still_works(server: ServerProcess) -> None:
    storage = ClientStorage(address=server.address, timeout_s=WAIT_S)
    connection = Connection(storage)
    assert set(connection.get_root()) >= {f"good{i}" for i in range(GOOD_CLIENTS)}
    storage.close()


def check_file(path: Path, good: list[GoodClient]) -> None:
    storage = FileStorage(str(path), readonly=True)
    try:
        records = dict(storage.gen_oid_record())
        refused = [o for o, r in records.items() if b"REJECT" in r]
        assert not refused, f"refused commits reached the file: {refused[:5]}"
        connection = Connection(storage)
        root = connection.get_root()
        for client in good:
            assert dict(root[client.key].items()) == client.expected
    finally:
        storage.close()


def test_screen_refuses_quit_and_foreign_commits() -> None:
    conn = FuzzConnection([as_oid(5)], [as_oid(6)])
    assert screen(conn, b"Q") == (False, True)
    assert screen(conn, b"S") == (True, False)
    assert screen(conn, b"Z") == (True, True)

    def commit_of(n: int, data: bytes = b"x") -> bytes:
        return b"C" + encode_tdata([(as_oid(n), pack_record(as_oid(n), data, b""))])

    assert screen(conn, commit_of(5)) == (True, False)  # own oid: may be accepted
    assert screen(conn, commit_of(6)) == (True, True)  # the victim's: surely refused
    assert screen(conn, commit_of(9)) == (False, True)  # someone else's object: redrawn
    assert screen(conn, commit_of(5, b"REJECT")) == (False, True)  # would be accepted: redrawn
    conn.stream += b"C"
    assert screen(conn, b"\x00") == (True, False)  # inside the commit: data, not a command
