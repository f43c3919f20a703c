"""ServerCore's guards: misbehaving storages, bad calls, failing packs, LoopbackSocket misuse.

All in-process and deterministic (no sockets, no clock). Each test checks
that the trouble reaches only the client it belongs to, with a clear
reason, and that nothing stored changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from durus.protocol import (
    DEFAULT_LIMITS,
    STATUS_OKAY,
    ClientProtocol,
    Commit,
    CommitData,
    InvalidationsReply,
    Load,
    NewOid,
    NewOidsReply,
    Pack,
    PackReply,
    Sync,
    int4,
)
from durus.server_core import GroupWrite, LoopbackSocket, ServerCore, _Client
from durus.storage import MemoryStorage
from tests.support.records import oid, record
from tests.support.server_fixtures import RawClient, committed


def stored(storage: MemoryStorage) -> dict[bytes, bytes]:
    return dict(storage.records)


def new_oids(client: RawClient) -> list[bytes]:
    reply = client.request(NewOid())
    assert isinstance(reply, NewOidsReply)
    return list(reply.oids)


# ---------------------------------------------------------------- bad calls and bad settings


def test_group_limits_are_validated() -> None:
    for bad in (dict(max_group_commits=0), dict(max_group_bytes=0), dict(max_group_delay_s=-1)):
        with pytest.raises(ValueError, match="group commit limits must be positive"):
            ServerCore(MemoryStorage(), **bad)  # type: ignore[arg-type]


def test_unknown_client_ids_are_a_key_error_and_disconnect_is_idempotent() -> None:
    core = ServerCore(MemoryStorage())
    client = RawClient(core)
    assert repr(core.clients[client.client_id]) == f"<client {client.client_id}>"
    core.disconnect(client.client_id)
    core.disconnect(client.client_id)  # again: nothing happens
    for call in (core.take_output, core.has_output, lambda cid: core.feed(cid, b"S")):
        with pytest.raises(KeyError, match=f"no connected client {client.client_id}"):
            call(client.client_id)
    assert core.buffered_bytes(client.client_id) == 0 and not core.is_paused(client.client_id)
    assert not core.is_authenticated(client.client_id)


def test_bytes_after_a_close_are_ignored() -> None:
    core = ServerCore(MemoryStorage())
    client = RawClient(core)
    client.send_bytes(b"Z")  # unknown command: closed, not yet disconnected by the loop
    assert client.closed and "No such command" in (client.closed_reason or "")
    assert client.send_bytes(b"S") == b""  # a closed client's bytes are ignored
    assert core.take_output(client.client_id).close_reason == client.closed_reason


# ---------------------------------------------------------------- misbehaving storages


class WrongTypeStorage(MemoryStorage):
    """A storage whose load() returns text for one oid (a broken storage class)."""

    def load(self, oid_: bytes) -> Any:
        if oid_ == oid(7):
            return "not bytes"
        return super().load(oid_)


def test_a_storage_returning_a_non_record_drops_only_that_reader() -> None:
    storage = WrongTypeStorage()
    core = ServerCore(storage)
    reader, other = RawClient(core), RawClient(core)
    [first] = new_oids(other)
    committed(other, {0: record(0)})
    reader.send(Load(oid(7)))
    assert reader.closed and "ClientError" in (reader.closed_reason or "")
    assert "storage returned str for oid" in (reader.closed_reason or "")
    assert other.request(Sync()) is not None and first == oid(0)
    assert stored(storage) == {oid(0): record(0)}


class StuckOidStorage(MemoryStorage):
    """A storage whose new_oid() hands out the same oid again and again."""

    def new_oid(self) -> bytes:
        return oid(5)


def test_a_storage_repeating_oids_in_use_drops_the_asking_client() -> None:
    core = ServerCore(StuckOidStorage())
    first, second = RawClient(core), RawClient(core)
    assert new_oids(first) == [oid(5)]
    second.send(NewOid())
    assert second.closed
    assert "storage keeps handing out oids that are in use" in (second.closed_reason or "")
    assert not first.closed and oid(5) in core.clients[first.client_id].unused_oids


class FailingEndStorage(MemoryStorage):
    """end() fails with ``error``; with ``begin_fails`` the clean-up begin() fails too."""

    def __init__(self, error: BaseException, begin_fails: bool = False) -> None:
        super().__init__()
        self.error = error
        self.begin_fails = begin_fails
        self.begins = 0

    def begin(self) -> None:
        self.begins += 1
        if self.begin_fails and self.begins > 1:
            raise OSError("begin failed too")
        super().begin()

    def end(self, handle_invalidations: Any = None) -> None:
        raise self.error


@pytest.mark.parametrize("serialize_commits", [False, True])
def test_a_failing_end_and_failing_cleanup_drop_the_committer_only(
    serialize_commits: bool, caplog: pytest.LogCaptureFixture
) -> None:
    storage = FailingEndStorage(OSError("disk gone"), begin_fails=True)
    core = ServerCore(storage, serialize_commits=serialize_commits)
    committer, reader = RawClient(core), RawClient(core)
    [new] = new_oids(committer)
    with caplog.at_level(logging.DEBUG, logger="durus"):
        committer.commit({int.from_bytes(new, "big"): record(int.from_bytes(new, "big"))})
    assert committer.closed and "commit refused by the storage" in (committer.closed_reason or "")
    assert "disk gone" in (committer.closed_reason or "")
    assert "begin() after a failed commit" in caplog.text  # the clean-up failure is logged
    assert reader.request(Load(new)) is not None and not reader.closed
    assert stored(storage) == {}


def test_an_interrupt_inside_a_group_write_is_not_swallowed() -> None:
    storage = FailingEndStorage(KeyboardInterrupt())
    client = _Client(1, DEFAULT_LIMITS)
    job = GroupWrite(storage, [(client, CommitData(((oid(0), record(0)),)))])
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert job.done and isinstance(job.error, KeyboardInterrupt)
    assert storage.transaction == {} and stored(storage) == {}  # the pending records are gone


# ---------------------------------------------------------------- packing


class UnpackableStorage(MemoryStorage):
    def get_packer(self) -> Iterator[int]:
        raise OSError("no room for the packed copy")


def test_a_pack_that_cannot_start_is_abandoned_and_the_client_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = UnpackableStorage()
    core = ServerCore(storage)
    client = RawClient(core)
    [new] = new_oids(client)
    committed(client, {int.from_bytes(new, "big"): record(0)})
    with caplog.at_level(logging.ERROR, logger="durus"):
        assert client.request(Pack()) == PackReply()
    assert "Pack failed and was abandoned" in caplog.text and "no room" in caplog.text
    assert core.packer is None and not client.closed
    assert stored(storage) == {oid(0): record(0)}


class EndlessPackStorage(MemoryStorage):
    def get_packer(self) -> Iterator[int]:
        step = 0
        while True:
            step += 1
            yield step


def test_run_until_idle_is_bounded() -> None:
    core = ServerCore(EndlessPackStorage())
    core.start_pack()
    with pytest.raises(RuntimeError, match="pack still running after 5 steps"):
        core.run_until_idle(max_steps=5)


def test_a_pack_waits_while_a_group_write_is_in_flight() -> None:
    storage = MemoryStorage()
    core = ServerCore(storage, serialize_commits=True)
    core.write_groups_in_background = True
    client = RawClient(core)
    [new] = new_oids(client)
    rec = record(int.from_bytes(new, "big"))
    client.request(Commit())
    core.feed(client.client_id, client.protocol.send(CommitData(((new, rec),))))
    core.commit_pending(0.0)
    job = core.take_group_write()
    assert job is not None and core.take_group_write() is None  # handed out once
    core.start_pack()  # while the write is in flight: nothing starts
    assert core.packer is None and stored(storage) == {}
    job.run()
    core.finish_group_write(job, 0.0)
    assert core.take_output(client.client_id).data == STATUS_OKAY
    assert stored(storage) == {new: rec}
    with pytest.raises(RuntimeError, match="current, finished write"):
        core.finish_group_write(job)


# ---------------------------------------------------------------- LoopbackSocket misuse


def test_loopback_socket_after_close_and_sever() -> None:
    core = ServerCore(MemoryStorage())
    sock = LoopbackSocket(core)
    sock.close()
    sock.close()  # idempotent
    with pytest.raises(OSError, match="send on a closed LoopbackSocket"):
        sock.sendall(b"S")
    with pytest.raises(OSError, match="recv on a closed LoopbackSocket"):
        sock.recv(1)
    severed = LoopbackSocket(core)
    severed.sever("server stopped")
    severed.sever("again")  # idempotent: the first reason stays
    assert severed.recv(4) == b"" and severed.close_reason == "server stopped"
    severed.settimeout(1.0)
    severed.setsockopt(0, 0, 0)
    assert core.clients == {}


def test_loopback_socket_sees_a_close_that_came_with_a_late_reply() -> None:
    core = ServerCore(MemoryStorage(), serialize_commits=True)
    holder = RawClient(core)
    holder.request(Commit())
    waiting = LoopbackSocket(core)
    waiting.sendall(b"V" + int4(1))
    assert waiting.recv(4) == int4(1)
    waiting.sendall(b"C")  # waits for the holder's commit turn: no reply yet
    waiting.sendall(int4(3) + b"bad")  # its (malformed) transaction data, buffered
    holder.send(CommitData(()))  # the holder abandons: the turn passes to the waiting socket
    assert waiting.recv(4) == int4(0)  # its list, produced after its last send
    assert waiting.recv(1) == b"" and "protocol error" in (waiting.close_reason or "")
    assert waiting.client_id not in core.clients


# ---------------------------------------------------------------- pipelining and pack removals


@pytest.mark.parametrize("serialize_commits", [False, True])
def test_two_pipelined_commits_are_answered_in_order(serialize_commits: bool) -> None:
    storage = MemoryStorage()
    core = ServerCore(storage, serialize_commits=serialize_commits)
    client = RawClient(core)
    first, second = new_oids(client), new_oids(client)
    rec_1, rec_2 = record(int.from_bytes(first[0], "big")), record(int.from_bytes(second[0], "big"))
    protocol = ClientProtocol()
    stream = b"".join(
        protocol.send(request)
        for request in (
            Commit(), CommitData(((first[0], rec_1),)), Commit(), CommitData(((second[0], rec_2),)),
        )
    )  # fmt: skip
    replies = client.send_bytes(stream)
    assert replies == int4(0) + STATUS_OKAY + int4(0) + STATUS_OKAY
    assert stored(storage) == {first[0]: rec_1, second[0]: rec_2}


class RemovingStorage(MemoryStorage):
    """A storage whose next sync() reports oids a pack removed."""

    removed: list[bytes] = []

    def sync(self) -> list[bytes]:
        removed, self.removed = self.removed, []
        return removed


def test_removed_oids_reach_live_clients_only() -> None:
    storage = RemovingStorage()
    core = ServerCore(storage)
    closing, live, asking = RawClient(core), RawClient(core), RawClient(core)
    closing.send_bytes(b"Z")  # closed; the loop has not disconnected it yet
    storage.removed = [oid(3)]
    assert asking.request(Sync()) == InvalidationsReply((oid(3),))
    assert live.request(Sync()) == InvalidationsReply((oid(3),))
    assert core.clients[closing.client_id].invalid == set()
