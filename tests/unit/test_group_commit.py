"""Group commit in durus.server_core (serialize_commits=True) and over real sockets.

The core is driven with explicit times (``commit_pending(now_s)``): it never
reads a clock. A storage wrapper counts ``end()`` calls and checks, at
every step, that the storage holds no commit that was not acknowledged.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from durus.protocol import (
    STATUS_INVALID,
    STATUS_KEYERROR,
    STATUS_OKAY,
    CommitData,
    InvalidationsReply,
    Load,
    LoadReply,
    Sync,
    encode_oid_list,
    encode_request,
)
from durus.server_core import ServerCore
from durus.storage import MemoryStorage
from tests.support.records import oid, record
from tests.support.server_fixtures import WAIT_S, RawClient, ThreadedServer


class CountingStorage(MemoryStorage):
    """A MemoryStorage that counts end() calls and can fail them or one oid's store()."""

    def __init__(self) -> None:
        super().__init__()
        self.end_calls = 0
        self.end_sizes: list[int] = []
        self.fail_next_end: Exception | None = None
        self.surprise_oid: bytes | None = None

    def store(self, oid_: bytes, record_: bytes) -> None:
        if oid_ == self.surprise_oid:
            self.transaction = {}  # as FileStorage does: the whole transaction is dropped
            raise ValueError(f"oid {oid_!r} is a surprise")
        super().store(oid_, record_)

    def end(self, handle_invalidations: Any = None) -> None:
        self.end_calls += 1
        error, self.fail_next_end = self.fail_next_end, None
        if error is not None:
            raise error
        assert self.transaction is not None
        self.end_sizes.append(len(self.transaction))
        super().end(handle_invalidations)


def new_core(**kwargs: Any) -> tuple[ServerCore, CountingStorage]:
    storage = CountingStorage()
    return ServerCore(storage, serialize_commits=True, **kwargs), storage


def clients_with_oids(core: ServerCore, count: int) -> list[RawClient]:
    """``count`` clients; client i holds oid i unused (handed out while no group is open)."""
    clients = [RawClient(core) for _ in range(count)]
    for client in clients:
        client.send_bytes(b"N")
    return clients


def start_commit(core: ServerCore, client: RawClient, now_s: float) -> bytes:
    core.feed(client.client_id, b"C")
    core.commit_pending(now_s)
    return core.take_output(client.client_id).data


def send_items(core: ServerCore, client: RawClient, items: dict[int, bytes], now_s: float) -> None:
    data = CommitData(tuple((oid(n), rec) for n, rec in items.items()))
    core.feed(client.client_id, encode_request(data))
    core.commit_pending(now_s)


def output(core: ServerCore, client: RawClient) -> bytes:
    return core.take_output(client.client_id).data


def oid_list(*numbers: int) -> bytes:
    return encode_oid_list([oid(n) for n in numbers])


def test_commits_ready_together_share_one_end_and_see_each_other() -> None:
    core, storage = new_core()
    a, b, c = clients_with_oids(core, 3)
    assert start_commit(core, a, 0.0) == oid_list()
    assert start_commit(core, b, 0.0) == b""  # waits for the turn
    assert start_commit(core, c, 0.0) == b""
    send_items(core, a, {0: record(0, data=b"a")}, 0.0001)
    assert output(core, a) == b"" and core.has_open_group()  # stored, not durable: no answer
    assert output(core, b) == oid_list(0)  # b's turn: its list names a's commit
    assert storage.end_calls == 0 and storage.records == {}
    send_items(core, b, {1: record(1, data=b"b")}, 0.0002)
    assert output(core, c) == oid_list(0, 1)
    assert output(core, a) == output(core, b) == b""
    send_items(core, c, {2: record(2, data=b"c")}, 0.0003)  # turn free, nobody waits: flush
    assert storage.end_calls == 1 and storage.end_sizes == [3]
    assert [output(core, x) for x in (a, b, c)] == [STATUS_OKAY] * 3
    assert set(storage.records) == {oid(0), oid(1), oid(2)}
    assert (core.groups_flushed, core.group_commits_flushed) == (1, 3)
    assert not core.has_open_group() and core.next_deadline_s() is None


def test_other_requests_wait_until_the_group_is_flushed() -> None:
    core, storage = new_core()
    a, b, reader = clients_with_oids(core, 3)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    output(core, b)
    core.feed(reader.client_id, encode_request(Load(oid(0))) + b"S" + b"N")
    core.feed(a.client_id, b"S")  # a member pipelining: held back too
    core.commit_pending(0.001)
    assert output(core, reader) == b"" and output(core, a) == b""
    send_items(core, b, {1: record(1)}, 0.0015)
    assert storage.end_calls == 1
    reply = output(core, reader)
    assert reply.startswith(STATUS_INVALID + oid_list(0, 1))  # then the oid from N
    assert len(reply) == 1 + len(oid_list(0, 1)) + 8
    assert output(core, a) == STATUS_OKAY + oid_list(1)
    assert reader.request(Load(oid(0))) == LoadReply(STATUS_OKAY, record(0))


def test_writing_an_oid_of_an_earlier_member_is_refused_and_the_group_goes_on() -> None:
    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    assert a.commit({0: record(0, data=b"v0")})[1] is not None
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0, data=b"by a")}, 0.0)
    assert output(core, b) == oid_list(0)
    send_items(core, b, {0: record(0, data=b"by b")}, 0.0001)  # writes what its list named
    assert output(core, b) == STATUS_INVALID
    assert output(core, a) == STATUS_OKAY and storage.end_calls == 2  # root, then the group
    assert storage.records[oid(0)] == record(0, data=b"by a")


def test_a_member_whose_client_abandons_after_reading_the_list() -> None:
    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    assert output(core, b) == oid_list(0)
    send_items(core, b, {}, 0.0001)  # int4 0: the client saw a conflict and gave up
    assert output(core, a) == STATUS_OKAY and output(core, b) == b""
    assert storage.end_calls == 1 and core.commit_turn is None


def test_the_deadline_flushes_the_group_without_a_stalled_turn_holder() -> None:
    core, storage = new_core(max_group_delay_s=0.002)
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 10.0)
    start_commit(core, b, 10.0)
    send_items(core, a, {0: record(0)}, 10.0)
    assert core.next_deadline_s() == 10.002
    core.commit_pending(10.0019)
    assert output(core, a) == b"" and storage.end_calls == 0
    core.commit_pending(10.002)
    assert output(core, a) == STATUS_OKAY and storage.end_calls == 1
    assert core.holds_commit_turn(b.client_id)  # still inside its commit
    assert output(core, b) == oid_list(0)
    send_items(core, b, {1: record(1)}, 11.0)  # late data: a group of its own
    assert output(core, b) == STATUS_OKAY and storage.end_sizes == [1, 1]


def test_a_full_group_is_flushed_even_while_others_wait() -> None:
    core, storage = new_core(max_group_commits=2)
    a, b, c = clients_with_oids(core, 3)
    for client in (a, b, c):
        start_commit(core, client, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    send_items(core, b, {1: record(1)}, 0.0)
    assert storage.end_sizes == [2]
    assert output(core, a) == STATUS_OKAY and output(core, b) == oid_list(0) + STATUS_OKAY
    assert output(core, c) == oid_list(0, 1)
    send_items(core, c, {2: record(2)}, 0.0)
    assert storage.end_sizes == [2, 1]


def test_a_failing_end_closes_every_member_and_stores_nothing() -> None:
    core, storage = new_core()
    a, b, other = clients_with_oids(core, 3)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    storage.fail_next_end = OSError(errno.ENOSPC, "No space left on device")
    send_items(core, b, {1: record(1)}, 0.0)
    for member in (a, b):
        result = core.take_output(member.client_id)
        assert result.data == oid_list(0) * (member is b)
        assert result.close_reason is not None and "No space left" in result.close_reason
        core.disconnect(member.client_id)
    assert storage.records == {} and not core.has_open_group()
    assert other.request(Sync()) == InvalidationsReply((oid(0), oid(1)))  # spurious, harmless
    assert other.request(Load(oid(0))) == LoadReply(STATUS_KEYERROR)
    assert other.commit({2: record(2)})[1] is not None  # nothing of the failed group is left
    assert set(storage.records) == {oid(2)}


def test_a_storage_conflict_on_end_answers_every_member_invalid() -> None:
    from durus.error import ConflictError

    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    storage.fail_next_end = ConflictError([oid(0)])
    send_items(core, b, {1: record(1)}, 0.0)
    assert output(core, a) == STATUS_INVALID
    assert output(core, b) == oid_list(0) + STATUS_INVALID
    assert storage.records == {}


def test_a_failing_store_drops_that_member_only() -> None:
    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    storage.surprise_oid = oid(1)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    send_items(core, b, {1: record(1)}, 0.0)
    assert core.take_output(b.client_id).close_reason is not None
    assert output(core, a) == STATUS_OKAY
    assert set(storage.records) == {oid(0)}  # a's records were stored again


def test_a_blind_write_overlapping_the_open_group_is_refused() -> None:
    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0, data=b"a")}, 0.0)
    late = RawClient(core, handshake=False)  # connected after a's commit joined the group
    assert start_commit(core, late, 0.0) == b""
    send_items(core, b, {}, 0.0)  # b gives up; late's turn: its list does not name oid 0
    assert output(core, late) == oid_list()
    assert output(core, a) == b""
    send_items(core, late, {0: record(0, data=b"late")}, 0.0)
    assert output(core, late) == STATUS_INVALID
    assert output(core, a) == STATUS_OKAY and storage.records[oid(0)] == record(0, data=b"a")


def test_a_member_that_disconnects_is_still_written() -> None:
    core, storage = new_core()
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    start_commit(core, b, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    core.disconnect(a.client_id)  # durable but unacknowledged, as with a crash
    send_items(core, b, {1: record(1)}, 0.0)
    assert set(storage.records) == {oid(0), oid(1)} and storage.end_calls == 1


def test_with_background_writes_the_next_group_forms_while_one_is_written() -> None:
    core, storage = new_core()
    core.write_groups_in_background = True
    a, b, c, reader = clients_with_oids(core, 4)
    start_commit(core, a, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)  # turn free: a's group is due at once
    job = core.take_group_write()
    assert job is not None and core.take_group_write() is None  # handed out once
    assert storage.end_calls == 0 and output(core, a) == b""
    calls_before = storage.end_calls
    assert start_commit(core, b, 0.001) == oid_list(0)  # turns go on during the write
    start_commit(core, c, 0.001)
    send_items(core, b, {1: record(1)}, 0.001)
    assert output(core, c) == oid_list(0, 1)
    core.feed(reader.client_id, b"S")
    send_items(core, c, {2: record(2)}, 0.002)
    assert core.take_group_write() is None and core.next_deadline_s() is None  # one at a time
    assert output(core, reader) == b"" and storage.end_calls == calls_before
    job.run()  # what the loop's thread does
    core.finish_group_write(job, 0.003)
    assert output(core, a) == STATUS_OKAY and output(core, b) == b""
    second = core.take_group_write()
    assert second is not None and [m[0].client_id for m in second.members] == [
        b.client_id,
        c.client_id,
    ]
    second.run()
    core.finish_group_write(second, 0.004)
    assert output(core, b) == output(core, c) == STATUS_OKAY
    assert output(core, reader) == oid_list(0, 1, 2)  # answered after the flush
    assert storage.end_sizes == [1, 2]


def test_a_waiting_reader_is_not_starved_by_back_to_back_groups() -> None:
    core, _storage = new_core()
    core.write_groups_in_background = True
    a, b, reader = clients_with_oids(core, 3)
    start_commit(core, a, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    job = core.take_group_write()
    assert job is not None
    core.feed(reader.client_id, b"S")  # waits for the write
    assert start_commit(core, b, 0.001) == b""  # a request waits: new commits wait too
    job.run()
    core.finish_group_write(job, 0.002)
    assert output(core, reader) == oid_list(0)  # answered at the first chance
    assert output(core, b) == oid_list(0) and core.holds_commit_turn(b.client_id)
    assert output(core, a) == STATUS_OKAY


def test_finish_group_write_refuses_a_write_that_is_not_finished() -> None:
    import pytest

    core, _storage = new_core()
    core.write_groups_in_background = True
    (a,) = clients_with_oids(core, 1)
    start_commit(core, a, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    job = core.take_group_write()
    assert job is not None
    with pytest.raises(RuntimeError):
        core.finish_group_write(job)
    job.run()
    core.finish_group_write(job)
    assert output(core, a) == STATUS_OKAY and not core.has_open_group()


# ---------------------------------------------------------------- the invariant, any schedule


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=60), st.booleans())
def test_nothing_unacknowledged_is_durable_and_every_ack_is(
    script: list[tuple[int, int]], background: bool
) -> None:
    """Random interleavings of 4 clients: what the storage holds is exactly what was acked.

    With ``background`` the test plays the loop's write thread: a taken
    group write runs (and is finished) only on some steps.
    """
    core, storage = new_core(max_group_commits=3)
    core.write_groups_in_background = background
    clients = clients_with_oids(core, 4)
    job = None
    phase = ["idle"] * 4  # idle -> listed (sent C, maybe waiting) -> sent (data, maybe waiting)
    acked: dict[bytes, bytes] = {}
    sent: dict[int, bytes] = {}
    now_s = 0.0
    version = 0
    for index, action in script:
        client = clients[index]
        now_s += 0.0007 * action
        version += 1
        if phase[index] == "idle":
            core.feed(client.client_id, b"C")
            phase[index] = "listed"
        elif phase[index] == "listed" and core.holds_commit_turn(client.client_id):
            sent[index] = record(index, data=b"v%d" % version)
            core.feed(client.client_id, encode_request(CommitData(((oid(index), sent[index]),))))
            phase[index] = "sent"
        core.commit_pending(now_s)
        job = job or core.take_group_write()
        if job is not None and action >= 2:
            job.run()
            core.finish_group_write(job, now_s)
            job = None
        for i, other in enumerate(clients):
            data = output(core, other)
            if phase[i] == "sent" and data.endswith((STATUS_OKAY, STATUS_INVALID)):
                if data.endswith(STATUS_OKAY):
                    acked[oid(i)] = sent[i]
                phase[i] = "idle"
        assert storage.records == acked
    for _ in range(3):
        core.commit_pending(now_s + 1.0)
        job = job or core.take_group_write()
        if job is not None:
            job.run()
            core.finish_group_write(job, now_s + 1.0)
            job = None
    assert not core.has_open_group() or core.commit_turn is not None
    for i, other in enumerate(clients):
        if output(core, other).endswith(STATUS_OKAY) and phase[i] == "sent":
            acked[oid(i)] = sent[i]
    assert storage.records == acked


# ---------------------------------------------------------------- over real sockets


def test_eight_clients_over_sockets_form_groups_and_every_ack_is_durable(tmp_path: Path) -> None:
    from durus.client_storage import ClientStorage
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    from durus.persistent_dict import PersistentDict

    path = str(tmp_path / "group.durus")
    workers = 8
    server = ThreadedServer(FileStorage(path, fsync=True))
    try:
        setup = Connection(ClientStorage(port=server.port, timeout_s=WAIT_S))
        for i in range(workers):
            setup.get_root()[f"counter{i}"] = PersistentDict(count=0)
        setup.commit()
        setup.get_storage().close()
        core = server.server.core
        commits_before = core.group_commits_flushed  # the empty root and the counters
        acked = [0] * workers
        errors: list[BaseException] = []
        stop_at = time.monotonic() + 3.0

        def work(i: int) -> None:
            try:
                connection = Connection(ClientStorage(port=server.port, timeout_s=WAIT_S))
                counter = connection.get_root()[f"counter{i}"]
                while time.monotonic() < stop_at:
                    counter["count"] += 1
                    connection.commit()
                    acked[i] += 1
                connection.get_storage().close()
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S + 5.0)
        assert not errors, errors
        commits = sum(acked)
        assert core.group_commits_flushed - commits_before == commits
        assert core.groups_flushed - commits_before < commits / 2  # groups formed
    finally:
        server.stop()
        server.server.storage.close()
    reopened = Connection(FileStorage(path, readonly=True))
    root = reopened.get_root()
    assert [root[f"counter{i}"]["count"] for i in range(workers)] == acked
    reopened.get_storage().close()


# ---------------------------------------------------------------- the socket loop's part


def test_select_never_waits_past_the_open_groups_deadline() -> None:
    from durus.storage_server import IDLE_POLL_S, StorageServer

    server = StorageServer(CountingStorage(), port=0, max_group_delay_s=0.05)
    core = server.core
    assert server._select_timeout_s() == IDLE_POLL_S
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, time.monotonic())
    start_commit(core, b, time.monotonic())
    send_items(core, a, {0: record(0)}, time.monotonic())
    assert core.has_open_group()
    assert 0.0 <= server._select_timeout_s() <= 0.05
    server._close_everything(server.address.get_listening_socket())  # flushes first
    assert not core.has_open_group() and oid(0) in core.storage.records


def test_groups_of_one_for_a_storage_that_never_fsyncs(tmp_path: Path) -> None:
    from durus.file_storage import FileStorage
    from durus.server_core import DEFAULT_MAX_GROUP_COMMITS
    from durus.storage_server import default_max_group_commits, writes_groups_in_background

    for fsync, expected in ((False, 1), (True, DEFAULT_MAX_GROUP_COMMITS)):
        storage = FileStorage(str(tmp_path / f"f{fsync}.durus"), fsync=fsync)
        assert default_max_group_commits(storage) == expected
        assert writes_groups_in_background(storage) is fsync  # only a file that fsyncs
        storage.close()
    assert default_max_group_commits(MemoryStorage()) == DEFAULT_MAX_GROUP_COMMITS
    assert not writes_groups_in_background(MemoryStorage())


def test_stopping_writes_the_group_in_flight_and_the_one_behind_it(tmp_path: Path) -> None:
    from durus.file_storage import FileStorage
    from durus.storage_server import StorageServer

    storage = FileStorage(str(tmp_path / "stop.durus"), fsync=True)
    server = StorageServer(storage, port=0)
    core = server.core
    assert core.write_groups_in_background
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    server._advance_group_write(0.0)  # a's write runs in the write thread
    start_commit(core, b, 0.0)
    send_items(core, b, {1: record(1)}, 0.0)  # b's group waits for a's write
    server._close_everything(server.address.get_listening_socket())
    assert not core.has_open_group() and core.group_commits_flushed == 2
    storage.close()
    reopened = FileStorage(str(tmp_path / "stop.durus"), readonly=True)
    assert reopened.load(oid(0)) == record(0) and reopened.load(oid(1)) == record(1)
    reopened.close()


class _Interrupted(BaseException):
    """Not an Exception: what a storage may raise that plain handlers would not catch."""


def _wait_for_write(server: Any, now_s: float) -> None:
    """Until the write thread finished the write in flight; then report it to the core."""
    job = server._group_write
    deadline = time.monotonic() + WAIT_S
    while job is not None and not job.done:
        assert time.monotonic() < deadline, "the group write did not finish"
        time.sleep(0.001)
    server._advance_group_write(now_s)


def test_one_write_thread_serves_every_group_and_outlives_a_failed_write(tmp_path: Path) -> None:
    from durus.file_storage import FileStorage
    from durus.storage_server import StorageServer

    class InterruptedOnce(FileStorage):
        interrupt = True

        def end(self, handle_invalidations: Any = None) -> None:
            if self.interrupt:
                self.interrupt = False
                raise _Interrupted("the disk went away")
            super().end(handle_invalidations)

    storage = InterruptedOnce(str(tmp_path / "thread.durus"), fsync=True)
    server = StorageServer(storage, port=0)
    core = server.core
    a, b = clients_with_oids(core, 2)
    start_commit(core, a, 0.0)
    send_items(core, a, {0: record(0)}, 0.0)
    server._advance_group_write(0.0)
    writer = server._group_thread
    assert writer is not None and writer.is_alive()
    _wait_for_write(server, 0.0)
    reason = core.clients[a.client_id].close_reason  # refused: closed, never acknowledged
    assert reason is not None and "the disk went away" in reason
    start_commit(core, b, 1.0)
    send_items(core, b, {1: record(1)}, 1.0)
    server._advance_group_write(1.0)
    _wait_for_write(server, 1.0)
    assert output(core, b).endswith(STATUS_OKAY)
    assert server._group_thread is writer and writer.is_alive()  # the same thread, still alive
    server._close_everything(server.address.get_listening_socket())
    assert server._group_thread is None and not writer.is_alive()
    assert storage.load(oid(1)) == record(1)
    storage.close()
