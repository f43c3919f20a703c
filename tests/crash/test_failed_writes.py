"""Writes and fsyncs that fail (ENOSPC, EIO), one at a time, at every call.

A commit whose write or fsync fails must raise to the caller, leave no part
of itself in the file or in the storage's view, and the storage must accept
commits again (durably) once writes succeed. A pack whose write, fsync or
directory fsync fails must raise or finish, and must never lose a commit
acknowledged before, during or after it. Every crash state around the
failure is judged as well.
"""

from __future__ import annotations

import errno

import pytest

from durus.utils import ROOT_OID
from tests.crash.harness import PATH, Session, judge_image, judge_sampled_crashes, open_storage
from tests.crash.history import Violation, read_all_records
from tests.support.faulty_disk import FaultyDisk

CRASH_SAMPLES_PER_EVENT = 4


def _calls_of_a_commit(kind: str) -> int:
    """How many write (or fsync) calls one commit makes."""
    session = _prepared()
    before = session.disk.write_calls if kind == "write" else session.disk.fsync_calls
    session.commit(new_sizes=[100, 900])
    after = session.disk.write_calls if kind == "write" else session.disk.fsync_calls
    return after - before


def _prepared() -> Session:
    session = Session()
    session.commit(new_sizes=[10, 20])
    session.commit(new_sizes=[600], rewrite_indexes=[0])
    return session


def _judge_crashes_since(session: Session, start_event: int, label: str) -> None:
    judge_sampled_crashes(session, start_event, CRASH_SAMPLES_PER_EVENT, start_event, label)


@pytest.mark.parametrize("partial_bytes", [0, 5, 700])
@pytest.mark.parametrize("kind", ["write", "fsync"])
def test_a_failed_commit_raises_leaves_nothing_and_the_next_commit_lands(
    kind: str, partial_bytes: int
) -> None:
    calls = _calls_of_a_commit(kind)
    assert calls >= 1
    for failing_call in range(calls):
        session = _prepared()
        storage = session.open()
        before = read_all_records(storage)
        start = len(session.disk.events)
        if kind == "write":
            session.disk.fail_write(failing_call, errno.ENOSPC, partial_bytes)
        else:
            session.disk.fail_fsync(failing_call, errno.EIO)
        with pytest.raises(OSError):
            session.commit(new_sizes=[100, 900], rewrite_indexes=[0])
        assert not session.disk.faults, "the fault did not fire"
        assert read_all_records(storage) == before, "the failed commit is visible"
        assert storage.load(ROOT_OID) == before[ROOT_OID]
        reopened = judge_image(session.disk.image(), session.history, len(session.disk.events))
        if reopened != before:
            raise Violation(f"failed {kind} #{failing_call}: the failed commit is in the file")
        entry = session.commit(new_sizes=[30])
        assert entry.ack_event is not None
        _judge_crashes_since(session, start, "failed writes: crash states around a failed commit")
        session.close()
        final = open_storage(FaultyDisk(session.disk.image()))
        try:
            assert read_all_records(final) == session.history.state_of(
                i for i, c in enumerate(session.history.commits) if not c.failed
            )
        finally:
            final.close()


def _pack_call_count(kind: str) -> int:
    session = _prepared()
    session.commit(drop_indexes=[0])
    before = session.disk.write_calls if kind == "write" else session.disk.fsync_calls
    session.pack()
    after = session.disk.write_calls if kind == "write" else session.disk.fsync_calls
    return after - before


@pytest.mark.parametrize("kind", ["write", "fsync"])
def test_a_failed_pack_never_loses_a_commit(kind: str) -> None:
    for failing_call in range(_pack_call_count(kind)):
        if kind == "fsync" and failing_call == _pack_call_count(kind) - 1:
            continue  # the directory fsync after the rename: pinned separately below
        _fail_pack_at(kind, failing_call)


def _fail_pack_at(kind: str, failing_call: int) -> None:
    session = _prepared()
    session.commit(drop_indexes=[0])
    start = len(session.disk.events)
    if kind == "write":
        session.disk.fail_write(failing_call, errno.ENOSPC, 3)
    else:
        session.disk.fail_fsync(failing_call, errno.EIO)
    try:
        session.pack()
    except OSError:
        pass
    assert not session.disk.faults, "the fault did not fire"
    session.commit(new_sizes=[40])  # the storage still works and the commit lasts
    session.pack()  # and a later pack runs
    session.commit(new_sizes=[50])
    _judge_crashes_since(session, start, "failed writes: crash states around a failed pack")
    assert PATH + ".pack" not in session.disk.listdir() or session.storage is None


def test_a_failed_directory_fsync_after_the_pack_rename_loses_no_commit() -> None:
    """Regression: the storage once kept writing to the old, unnamed file here."""
    last_fsync = _pack_call_count("fsync") - 1
    _fail_pack_at("fsync", last_fsync)
