"""Hypothesis drives FileStorage through commits, packs, failed writes and crashes.

After every crash (at any event since the last operation began, including
every phase of a pack, with ``.pack`` files left behind) the storage is
reopened without ``repair`` and judged by tests/crash/history.py: some prefix
of the commits, every acknowledged commit present, nothing partial, the same
state on a second open, and new commits accepted. The machine then carries on
from the crashed disk, so later packs meet leftovers of earlier ones.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.crash.crash_points import count
from tests.crash.harness import PATH, Session, judge_image
from tests.crash.history import Violation
from tests.support.faulty_disk import HypothesisChooser, InjectedFault

THOROUGH = settings().max_examples > 100
CRASH_IMAGES_PER_RULE = 12 if THOROUGH else 6

record_sizes = st.one_of(st.integers(0, 16), st.integers(100, 700), st.integers(1000, 5000))
new_object_sizes = st.lists(record_sizes, max_size=6)
indexes = st.lists(st.integers(0, 30), max_size=3)


class CrashMachine(RuleBasedStateMachine):
    """A FileStorage on a simulated disk, crashed and rebooted at random moments."""

    @initialize(sizes=new_object_sizes)
    def start(self, sizes: list[int]) -> None:
        self.session = Session()
        self.operation_start = 0
        self.session.commit(new_sizes=sizes or [1])

    @rule(sizes=new_object_sizes, rewrites=indexes, drops=indexes, link=st.booleans())
    def commit(self, sizes: list[int], rewrites: list[int], drops: list[int], link: bool) -> None:
        self.operation_start = len(self.session.disk.events)
        self.session.commit(sizes, rewrites, drops, link)

    @rule(
        between=st.dictionaries(st.integers(0, 6), st.lists(record_sizes, max_size=2), max_size=3)
    )
    def pack(self, between: dict[int, list[int]]) -> None:
        self.operation_start = len(self.session.disk.events)
        self.session.pack(between)

    @rule(
        kind=st.sampled_from(["write", "fsync"]),
        after_calls=st.integers(0, 3),
        partial_bytes=st.integers(0, 700),
        sizes=new_object_sizes,
    )
    def failed_commit(
        self, kind: str, after_calls: int, partial_bytes: int, sizes: list[int]
    ) -> None:
        self.session.open()  # an open may write (dropping a torn tail): not under test here
        self.operation_start = len(self.session.disk.events)
        disk = self.session.disk
        if kind == "write":
            disk.fail_write(after_calls, errno.ENOSPC, partial_bytes)
        else:
            disk.fail_fsync(after_calls, errno.EIO)
        try:
            entry = self.session.commit(sizes)
        except InjectedFault:
            entry = self.session.history.commits[-1]
            self._check_failed_commit_left_nothing(entry.records)
        finally:
            disk.faults.clear()
        count("[other] machine: failed commits judged", 1)
        assert entry.failed or entry.ack_event is not None

    def _check_failed_commit_left_nothing(self, records: dict[bytes, bytes]) -> None:
        storage = self.session.open()
        for oid, record in records.items():
            try:
                if storage.load(oid) == record:
                    raise Violation(f"failed commit's record for {oid!r} is visible")
            except KeyError:
                pass
        live = judge_image(self.session.disk.image(), self.session.history, 10**9)
        for oid, record in records.items():
            if live.get(oid) == record:
                raise Violation(f"failed commit's record for {oid!r} is in the file")

    @rule(data=st.data(), anywhere=st.booleans())
    def crash(self, data: st.DataObject, anywhere: bool) -> None:
        now = len(self.session.disk.events)
        low = 0 if anywhere else self.operation_start
        chooser = HypothesisChooser(data)
        rebooted = None
        for _ in range(CRASH_IMAGES_PER_RULE):
            event_index = data.draw(st.integers(low, now), label="crash event")
            rebooted = self.session.crash(chooser, event_index, "machine: crash states")
        assert rebooted is not None
        self.session.close()
        self.session = rebooted
        self.operation_start = 0

    @precondition(lambda self: self.session.storage is not None)
    @rule()
    def reopen_cleanly(self) -> None:
        self.session.close()
        storage = self.session.open()
        assert self.session.history.judge(storage, len(self.session.disk.events)) is not None

    @invariant()
    def leftover_files_are_known(self) -> None:
        names = set(self.session.disk.listdir())
        allowed = {PATH + suffix for suffix in ("", ".pack", ".prepack", ".shelf-index")}
        assert names <= allowed, names

    def teardown(self) -> None:
        self.session.close()


TestCrashMachine = CrashMachine.TestCase
TestCrashMachine.settings = settings(
    settings(), stateful_step_count=min(settings().stateful_step_count, 40)
)


@pytest.fixture(autouse=True)
def _quiet_storage_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="durus")
