"""durus.server_core: server semantics in-process (PROTOCOL.md sections 3-5), no sockets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from durus.error import ConflictError, DurusKeyError
from durus.protocol import (
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    BulkLoad,
    BulkLoadReply,
    Commit,
    CommitData,
    CommitStatus,
    InvalidationsReply,
    Load,
    LoadReply,
    NewOid,
    NewOids,
    NewOidsReply,
    Pack,
    PackReply,
    Quit,
    Sync,
    Version,
    encode_request,
    int4,
)
from durus.server_core import LoopbackSocket, LoopbackStall, ServerCore
from durus.storage import MemoryStorage
from tests.support.records import oid, record
from tests.support.server_fixtures import RawClient, committed

CAPTURE = Path(__file__).parents[1] / "data" / "protocol_capture.json"


def new_core(**kwargs: object) -> ServerCore:
    return ServerCore(MemoryStorage(), **kwargs)  # type: ignore[arg-type]


def allocate(client: RawClient, count: int) -> list[int]:
    reply = client.request(NewOids(count))
    assert isinstance(reply, NewOidsReply)
    return [int.from_bytes(o, "big") for o in reply.oids]


# ---------------------------------------------------------------- the 4.3 capture, replayed


def test_replaying_the_captured_client_streams_gives_the_captured_replies() -> None:
    """Every byte the real 4.3 server sent, reproduced by the core over MemoryStorage."""
    core = new_core()
    ids: dict[int, int] = {}
    expected_out: dict[int, bytes] = {}
    actual_out: dict[int, bytes] = {}
    closed: set[int] = set()
    for step in json.loads(CAPTURE.read_text())["steps"]:
        for chunk in step["chunks"]:
            conn, data = chunk["conn"], bytes.fromhex(chunk["hex"])
            if conn not in ids:
                ids[conn] = core.connect()
            if chunk["dir"] == "S>C":
                expected_out[conn] = expected_out.get(conn, b"") + data
                continue
            output = core.receive(ids[conn], data)
            actual_out[conn] = actual_out.get(conn, b"") + output.data
            if output.close_reason is not None:
                closed.add(conn)
                core.disconnect(ids[conn])
    assert actual_out == {c: expected_out.get(c, b"") for c in actual_out}
    assert closed == {1, 2, 3, 4, 5, 6}  # '.', '.', V 2, 'Z', foreign oid, 'Q'
    assert core.quit_requested


# ---------------------------------------------------------------- invalidations


def test_commit_invalidates_other_clients_only() -> None:
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 2)
    committed(a, {0: record(0), 1: record(1)})
    assert a.request(Sync()) == InvalidationsReply(())
    assert b.request(Load(oid(0))) == LoadReply(STATUS_INVALID)
    assert b.request(Load(oid(0))) == LoadReply(STATUS_INVALID)  # not cleared by a load
    assert b.request(Sync()) == InvalidationsReply((oid(0), oid(1)))
    assert b.request(Load(oid(0))) == LoadReply(STATUS_OKAY, record(0))
    assert b.request(Sync()) == InvalidationsReply(())


def test_commit_first_half_sends_and_clears_invalidations() -> None:
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 1)
    committed(a, {0: record(0)})
    assert b.request(Commit()) == InvalidationsReply((oid(0),))
    assert b.request(CommitData(())) is None  # abandoned: nothing is sent back
    assert b.request(Sync()) == InvalidationsReply(())
    assert b.request(Load(oid(0))) == LoadReply(STATUS_OKAY, record(0))


def test_bulk_load_answers_each_oid_in_order() -> None:
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 2)
    committed(a, {0: record(0), 1: record(1)})
    b.request(Sync())
    committed(a, {1: record(1, data=b"new")})
    reply = b.request(BulkLoad((oid(0), oid(1), oid(9))))
    assert reply == BulkLoadReply(
        (LoadReply(STATUS_OKAY, record(0)), LoadReply(STATUS_INVALID), LoadReply(STATUS_KEYERROR))
    )
    assert b.request(BulkLoad(())) is None


# ---------------------------------------------------------------- oids


def test_new_oids_are_distinct_and_start_at_zero() -> None:
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    assert allocate(a, 32) == list(range(32))
    assert b.request(NewOid()) == NewOidsReply((oid(32),))
    assert b.request(NewOids(0)) is None
    assert b.send_bytes(b"M\x00") == b""


class ScriptedOidStorage(MemoryStorage):
    """A MemoryStorage whose new_oid() returns a given sequence first."""

    def __init__(self, script: list[int]) -> None:
        super().__init__()
        self.script = list(script)

    def new_oid(self) -> bytes:
        if self.script:
            return oid(self.script.pop(0))
        return super().new_oid()


def test_new_oids_skip_oids_invalid_for_any_client() -> None:
    core = ServerCore(ScriptedOidStorage([0, 5, 6, 7]))
    a, b = RawClient(core), RawClient(core)
    allocate(a, 1)
    committed(a, {0: record(0)})
    core.clients[b.client_id].invalid.add(oid(5))
    assert allocate(a, 2) == [6, 7]


def test_commit_using_another_live_clients_unused_oid_drops_the_committer() -> None:
    core = new_core()
    owner, thief, bystander = RawClient(core), RawClient(core), RawClient(core)
    allocate(owner, 3)
    invalidations, status = thief.commit({1: record(1)})
    assert invalidations == InvalidationsReply(()) and status is None
    assert thief.closed and "invalid oid" in (thief.closed_reason or "")
    assert repr(oid(1)) in (thief.closed_reason or "")  # names the offending oid (wart 10)
    with pytest.raises(DurusKeyError):
        core.storage.load(oid(1))
    assert bystander.request(Load(oid(1))) == LoadReply(STATUS_KEYERROR)
    committed(owner, {1: record(1)})


def test_unused_oids_of_a_disconnected_client_no_longer_block_commits() -> None:
    core = new_core()
    owner, other = RawClient(core), RawClient(core)
    allocate(owner, 2)
    core.disconnect(owner.client_id)
    committed(other, {1: record(1)})
    assert allocate(other, 1) == [2]  # never reissued


def test_commit_removes_oids_from_the_committers_unused_set() -> None:
    core = new_core()
    a = RawClient(core)
    allocate(a, 3)
    committed(a, {0: record(0), 2: record(2)})
    assert core.clients[a.client_id].unused_oids == {oid(1)}


# ---------------------------------------------------------------- conflicts the server sees


def test_writing_an_oid_from_the_list_just_sent_is_refused() -> None:
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 1)
    committed(a, {0: record(0, data=b"a")})
    invalidations, status = b.commit({0: record(0, data=b"b")})
    assert invalidations == InvalidationsReply((oid(0),))
    assert status == CommitStatus(STATUS_INVALID)
    assert core.storage.load(oid(0)) == record(0, data=b"a")
    committed(b, {0: record(0, data=b"b")})  # now b knows; the retry goes through


def test_commit_racing_between_the_two_halves_is_refused() -> None:
    """A's list was empty, then B committed oid 0, then A's data writes oid 0."""
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 1)
    committed(a, {0: record(0, data=b"v1")})
    b.request(Sync())
    assert a.request(Commit()) == InvalidationsReply(())
    committed(b, {0: record(0, data=b"by b")})
    assert a.request(CommitData(((oid(0), record(0, data=b"by a")),))) == CommitStatus(
        STATUS_INVALID
    )
    assert core.storage.load(oid(0)) == record(0, data=b"by b")
    assert a.request(Sync()) == InvalidationsReply((oid(0),))


def test_group_commit_checks_in_arrival_order() -> None:
    core = new_core()
    a, b, c = RawClient(core), RawClient(core), RawClient(core)
    allocate(a, 3)
    committed(a, {0: record(0), 1: record(1), 2: record(2)})
    for client in (b, c):
        client.request(Sync())
        assert client.request(Commit()) == InvalidationsReply(())
    core.feed(b.client_id, encode_request(CommitData(((oid(0), record(0, data=b"b")),))))
    core.feed(c.client_id, encode_request(CommitData(((oid(0), record(0, data=b"c")),))))
    core.commit_pending()
    assert core.take_output(b.client_id).data == STATUS_OKAY
    assert core.take_output(c.client_id).data == STATUS_INVALID
    assert a.request(Commit()) == InvalidationsReply((oid(0),))
    assert core.storage.load(oid(0)) == record(0, data=b"b")


def test_requests_pipelined_behind_a_commit_are_answered_after_it() -> None:
    core = new_core()
    a = RawClient(core)
    allocate(a, 1)
    a.request(Commit())
    tdata = encode_request(CommitData(((oid(0), record(0)),)))
    assert a.send_bytes(tdata + b"L" + oid(0)) == STATUS_OKAY + b"O" + int4(16) + record(0)


def test_storage_conflict_error_on_end_answers_invalid() -> None:
    class Conflicting(MemoryStorage):
        def end(self, handle_invalidations: object = None) -> None:
            self.transaction = None
            raise ConflictError([oid(0)])

    core = ServerCore(Conflicting())
    a = RawClient(core)
    allocate(a, 1)
    assert a.commit({0: record(0)})[1] == CommitStatus(STATUS_INVALID)
    assert not a.closed


# ---------------------------------------------------------------- robustness (warts 6-8)


def test_malformed_commit_drops_only_that_client_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = new_core()
    good, bad = RawClient(core), RawClient(core)
    allocate(good, 1)
    committed(good, {0: record(0)})
    bad.request(Commit())
    with caplog.at_level(logging.WARNING, logger="durus"):
        bad.send_bytes(int4(28) + int4(200) + bytes(24))  # item claims 200 of 28 bytes
    assert bad.closed and "protocol error" in (bad.closed_reason or "")
    assert "Dropping client" in caplog.text
    assert core.storage.load(oid(0)) == record(0)
    assert good.request(Load(oid(0))) == LoadReply(STATUS_OKAY, record(0))


class SurprisedStorage(MemoryStorage):
    """Raises like FileStorage does for an oid it never handed out."""

    def store(self, oid_: bytes, record_: bytes) -> None:
        if oid_ not in self.records and oid_ != oid(0):
            self.transaction = {}
            raise ValueError(f"oid {oid_!r} is a surprise")
        super().store(oid_, record_)


def test_storage_error_during_commit_drops_the_client_and_discards_pending() -> None:
    core = ServerCore(SurprisedStorage())
    good, bad = RawClient(core), RawClient(core)
    committed(good, {0: record(0)})
    bad.request(Sync())
    assert bad.commit({0: record(0, data=b"x"), 77: record(77)})[1] is None
    assert bad.closed and "surprise" in (bad.closed_reason or "")
    assert core.storage.transaction == {}  # begin() called again: nothing left pending
    assert core.storage.load(oid(0)) == record(0)
    committed(good, {0: record(0, data=b"again")})


def test_commit_to_a_readonly_storage_drops_the_client_and_keeps_serving() -> None:
    class ReadOnly(MemoryStorage):
        def is_readonly(self) -> bool:
            return True

    core = ServerCore(ReadOnly())
    core.storage.records[oid(0)] = record(0)
    a, b = RawClient(core), RawClient(core)
    assert a.commit({0: record(0, data=b"x")})[1] is None
    assert a.closed and "read-only" in (a.closed_reason or "")
    assert b.request(Load(oid(0))) == LoadReply(STATUS_OKAY, record(0))


def test_storage_error_during_load_drops_only_that_client() -> None:
    class Broken(MemoryStorage):
        def load(self, oid_: bytes) -> bytes:
            raise OSError("disk on fire")

    core = ServerCore(Broken())
    a, b = RawClient(core), RawClient(core)
    assert a.request(Load(oid(0))) is None
    assert a.closed and "disk on fire" in (a.closed_reason or "")
    assert b.request(Sync()) == InvalidationsReply(())


def test_version_mismatch_answers_then_closes() -> None:
    core = new_core()
    x = RawClient(core, handshake=False)
    assert x.send(Version(2)) == int4(1)
    assert x.closed and "mismatch" in (x.closed_reason or "")


@pytest.mark.parametrize("code", [b".", b"Z", b"\x00"])
def test_goodbye_and_unknown_commands_close_silently(code: bytes) -> None:
    core = new_core()
    x = RawClient(core)
    assert x.send_bytes(code + b"S") == b""
    assert x.closed


def test_quit_sets_the_flag_and_answers_nothing() -> None:
    core = new_core()
    x = RawClient(core, handshake=False)
    assert x.send(Quit()) == b""
    assert core.quit_requested


def test_commands_are_accepted_without_a_handshake() -> None:
    core = new_core()
    x = RawClient(core, handshake=False)
    assert x.request(Load(oid(0))) == LoadReply(STATUS_KEYERROR)


def test_gcbytes_must_be_a_number() -> None:
    with pytest.raises(TypeError):
        ServerCore(MemoryStorage(), gcbytes="100")  # type: ignore[arg-type]


# ---------------------------------------------------------------- packing


class PackingStorage(MemoryStorage):
    """A MemoryStorage with an incremental packer that removes given oids."""

    def __init__(self, steps: int = 3, fail_at: int | None = None) -> None:
        super().__init__()
        self.steps = steps
        self.fail_at = fail_at
        self.removed: list[bytes] = []
        self.packs_started = 0
        self.steps_run = 0

    def get_packer(self) -> Iterator[int]:
        self.packs_started += 1
        return self._packer()

    def _packer(self) -> Iterator[int]:
        for step in range(self.steps):
            if step == self.fail_at:
                raise OSError("pack step failed")
            self.steps_run += 1
            yield step
        for removed in [o for o in self.records if o != oid(0)]:
            del self.records[removed]
            self.removed.append(removed)

    def sync(self) -> list[bytes]:
        removed, self.removed = self.removed, []
        return removed


def test_pack_answers_at_once_and_steps_only_when_idle() -> None:
    storage = PackingStorage(steps=3)
    core = ServerCore(storage)
    a, b = RawClient(core), RawClient(core)
    allocate(a, 2)
    committed(a, {0: record(0), 1: record(1)})
    assert a.request(Pack()) == PackReply()
    assert storage.steps_run == 0 and core.packer is not None
    assert a.request(Pack()) == PackReply() and storage.packs_started == 1
    core.run_until_idle()
    assert storage.steps_run == 3 and core.packer is None and core.bytes_since_pack == 0
    # removed oids reach every client, including the one that asked, at its next S or C
    assert a.request(Sync()) == InvalidationsReply((oid(1),))
    assert b.request(Commit()) == InvalidationsReply((oid(0), oid(1)))


def test_failing_pack_step_abandons_the_pack_and_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = PackingStorage(steps=3, fail_at=1)
    core = ServerCore(storage)
    a = RawClient(core)
    a.request(Pack())
    with caplog.at_level(logging.ERROR, logger="durus"):
        core.run_until_idle()
    assert core.packer is None and "Pack failed" in caplog.text
    assert a.request(Pack()) == PackReply() and storage.packs_started == 2


def test_gcbytes_starts_a_pack_once_enough_bytes_are_committed() -> None:
    storage = PackingStorage(steps=1)
    core = ServerCore(storage, gcbytes=400)
    a = RawClient(core)
    allocate(a, 1)
    sizes = []
    for data_bytes in (70, 258, 70):  # tdata 94, 282, 94 as in PROTOCOL.md 5.6
        before = core.bytes_since_pack
        committed(a, {0: record(0, data=bytes(data_bytes))})
        sizes.append(core.bytes_since_pack - before)
        if len(sizes) < 3:
            assert storage.packs_started == 0
    assert sizes == [102, 290, 102] and storage.packs_started == 1
    core.run_until_idle()
    assert core.bytes_since_pack == 0


def test_gcbytes_with_a_storage_without_packer_packs_at_once() -> None:
    core = new_core(gcbytes=10)
    a = RawClient(core)
    allocate(a, 1)
    committed(a, {0: record(0)})
    assert core.bytes_since_pack == 0 and core.packer is None


# ---------------------------------------------------------------- LoopbackSocket


def test_loopback_socket_basics() -> None:
    core = new_core()
    sock = LoopbackSocket(core)
    with pytest.raises(LoopbackStall):
        sock.recv(4)
    sock.sendall(b"V" + int4(1))
    assert sock.recv(2) + sock.recv(10) == int4(1)
    sock.sendall(b"Z")
    assert sock.recv(1) == b"" and "No such command" in (sock.close_reason or "")
    with pytest.raises(BrokenPipeError):
        sock.sendall(b"S")
    sock.close()
    assert core.clients == {}


def test_loopback_before_send_hook_can_interleave_another_client() -> None:
    core = new_core()
    other = RawClient(core)
    allocate(other, 1)
    committed(other, {0: record(0)})
    seen = []

    def commit_by_other_first(sock: LoopbackSocket, data: bytes) -> None:
        seen.append(data)
        committed(other, {0: record(0, data=b"meanwhile")})

    sock = LoopbackSocket(core, before_send=commit_by_other_first)
    sock.sendall(b"S")
    assert seen == [b"S"] and sock.recv(100) == int4(1) + oid(0)
    sock.close()
    assert list(core.clients) == [other.client_id]


def feed_commit(core: ServerCore, client: RawClient, items: dict[int, bytes]) -> None:
    """Both halves of a commit through feed() only, so nothing is written yet."""
    core.feed(client.client_id, b"C")
    assert core.take_output(client.client_id).data == int4(0)
    data = CommitData(tuple((oid(n), rec) for n, rec in items.items()))
    core.feed(client.client_id, encode_request(data))


def test_of_two_commits_ready_in_one_pass_only_the_first_lands() -> None:
    """Both lists were sent before either landed: the second may rest on stale reads."""
    core = new_core()
    a, b = RawClient(core), RawClient(core)
    allocate(a, 1)
    allocate(b, 1)
    feed_commit(core, a, {0: record(0)})
    feed_commit(core, b, {1: record(1)})
    core.commit_pending()
    assert core.take_output(a.client_id).data == STATUS_OKAY
    assert core.take_output(b.client_id).data == STATUS_INVALID
    assert b.request(Sync()) == InvalidationsReply((oid(0),))
    committed(b, {1: record(1)})


def test_serialized_commits_wait_for_their_turn() -> None:
    core = ServerCore(MemoryStorage(), serialize_commits=True)
    a, b, c = RawClient(core), RawClient(core), RawClient(core)
    allocate(a, 2)
    assert a.send(Commit()) == int4(0)
    assert core.holds_commit_turn(a.client_id)
    assert b.send(Commit()) == b""  # waits: a is inside its commit
    assert c.request(Sync()) == InvalidationsReply(())  # others are still served
    assert c.send(Commit()) == b""
    assert a.send(CommitData(((oid(0), record(0)),))) == STATUS_OKAY
    assert core.take_output(b.client_id).data == int4(1) + oid(0)  # b's turn, fresh list
    assert core.holds_commit_turn(b.client_id)
    core.disconnect(b.client_id)  # leaving inside its commit passes the turn on
    assert core.take_output(c.client_id).data == int4(1) + oid(0)
    assert c.send(CommitData(())) == b""  # abandoned: the turn is free again
    assert core.commit_turn is None
    assert a.request(Commit()) == InvalidationsReply(())
    assert a.request(CommitData(((oid(1), record(1)),))) == CommitStatus(STATUS_OKAY)


def test_reply_backlog_pauses_handling_until_output_is_taken() -> None:
    core = ServerCore(MemoryStorage(), max_reply_backlog_bytes=50)
    writer = RawClient(core)
    committed(writer, {0: record(0, data=bytes(80))})
    reader = core.connect()
    core.feed(reader, (b"L" + oid(0)) * 10)
    one_reply = b"O" + int4(len(record(0, data=bytes(80)))) + record(0, data=bytes(80))
    assert core.take_output(reader).data == one_reply  # paused after the first reply
    assert core.buffered_bytes(reader) == 9 * 9
    core.feed(reader, b"")
    assert core.take_output(reader).data == one_reply
    assert core.receive(reader, b"L").data == one_reply * 8  # receive() drains it all
    assert core.buffered_bytes(reader) == 1


# ---------------------------------------------------------------- hostile clients, many at once

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_fragments = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"V" + int4(1), b"S", b"C", b"N", b"M\x03", b"P", b"L" + oid(0), int4(0), b"B" + int4(1)]
    ),
    st.builds(lambda n: encode_request(CommitData(((oid(n), record(n)),))), st.integers(0, 5)),
)


@given(st.lists(st.tuples(st.integers(0, 2), _fragments), max_size=30))
def test_any_bytes_from_any_clients_never_break_the_core(
    script: list[tuple[int, bytes]],
) -> None:
    storage = MemoryStorage()
    core = ServerCore(storage)
    ids = [core.connect() for _ in range(3)]
    closed: set[int] = set()
    for index, data in script:
        if ids[index] in closed:
            continue
        output = core.receive(ids[index], data)
        if output.close_reason is not None:
            closed.add(ids[index])
            core.disconnect(ids[index])
        core.run_idle_step()
    for oid_, stored in storage.records.items():
        assert stored[:8] == oid_
    survivor = RawClient(core)
    assert survivor.request(Sync()) == InvalidationsReply(())


def test_gcbytes_pack_on_a_file_storage_invalidates_removed_oids(tmp_path: Path) -> None:
    file_storage = pytest.importorskip("durus.file_storage")
    storage = file_storage.FileStorage(str(tmp_path / "gc.durus"))
    core = ServerCore(storage, gcbytes=100)
    a, b = RawClient(core), RawClient(core)
    assert allocate(a, 2) == [0, 1]
    committed(a, {0: record(0, 1), 1: record(1)})
    assert core.packer is None and core.bytes_since_pack == 72
    committed(a, {0: record(0)})  # oid 1 is now unreachable; 108 bytes >= 100
    assert core.packer is not None
    core.run_until_idle()
    assert core.packer is None and core.bytes_since_pack == 0
    assert 1 not in allocate(b, 3)  # not reused before every client has been told
    assert a.request(Sync()) == InvalidationsReply((oid(1),))
    assert b.request(Sync()) == InvalidationsReply((oid(0), oid(1)))
    assert b.request(Load(oid(1))) == LoadReply(STATUS_KEYERROR)
    storage.close()


def test_loopback_picks_up_a_reply_produced_after_its_send() -> None:
    core = ServerCore(MemoryStorage(), serialize_commits=True)
    holder = RawClient(core)
    assert holder.send(Commit()) == int4(0)
    waiting = LoopbackSocket(core)
    waiting.sendall(b"C")
    with pytest.raises(LoopbackStall):
        waiting.recv(4)
    assert holder.send(CommitData(())) == b""  # abandons: the turn passes to `waiting`
    assert waiting.recv(4) == int4(0)


def test_core_imports_no_sockets_clocks_or_object_layer() -> None:
    import ast

    source = Path(__file__).parents[2] / "durus" / "server_core.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not imported & {"socket", "selectors", "time", "pickle", "durus.connection"}


# ---------------------------------------------------------------- authentication


def authenticated_core() -> ServerCore:
    return new_core(auth_secret=b"the secret 0123456789", nonce_source=lambda n: b"\x07" * n)


def test_authentication_then_normal_requests() -> None:
    from durus.protocol import (
        AUTH_CLIENT_LABEL,
        AUTH_SERVER_LABEL,
        AuthAccepted,
        AuthChallenge,
        Authenticate,
        AuthProof,
        auth_mac,
    )

    core = authenticated_core()
    client = RawClient(core, handshake=False)
    assert not core.is_authenticated(client.client_id)
    nonce = bytes(range(32))
    challenge = client.request(Authenticate(nonce))
    assert isinstance(challenge, AuthChallenge) and challenge.server_nonce == b"\x07" * 32
    secret = b"the secret 0123456789"
    assert challenge.server_mac == auth_mac(secret, AUTH_SERVER_LABEL, nonce, b"\x07" * 32)
    proof = auth_mac(secret, AUTH_CLIENT_LABEL, nonce, b"\x07" * 32)
    assert client.request(AuthProof(proof)) == AuthAccepted()
    assert core.is_authenticated(client.client_id)
    client.request(Version())
    committed(client, {0: record(0)})
    assert core.storage.load(oid(0)) == record(0)
    client.send_bytes(b"A" + bytes(32))  # authenticating twice: dropped
    assert client.closed


@pytest.mark.parametrize(
    ("first", "reply"),
    [
        (b"V" + int4(1), int4(0x41555448)),
        (b"L" + bytes(8), b""),
        (b"Q", b""),
        (b"C", b""),
        (b"A" + bytes(32) + bytes(32), None),  # a wrong proof
    ],
)
def test_without_authentication_nothing_else_is_served(first: bytes, reply: bytes | None) -> None:
    core = authenticated_core()
    client = RawClient(core, handshake=False)
    data = client.send_bytes(first)
    if reply is not None:
        assert data == reply
        assert client.closed_reason is not None
        assert "authentication required" in client.closed_reason
    else:
        assert len(data) == 64 and client.closed_reason == "authentication failed: wrong proof"
    assert not core.quit_requested and not core.storage.records


def test_auth_secret_is_validated() -> None:
    with pytest.raises(ValueError):
        new_core(auth_secret=b"")
    with pytest.raises(ValueError):
        new_core(auth_secret="text")


def test_no_server_module_imports_pickle() -> None:
    """The server never unpickles client data: none of its modules can."""
    import ast

    root = Path(__file__).parents[2] / "durus"
    names = ("protocol", "server_core", "storage_server", "socket_address", "auth", "record")
    for name in names:
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & {"pickle", "_pickle", "marshal"}, name
            elif isinstance(node, ast.ImportFrom):
                assert node.module not in ("pickle", "_pickle", "marshal", "durus.serialize"), name
