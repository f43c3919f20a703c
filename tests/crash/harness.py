"""Driving FileStorage on the faulty disk: commit, pack, crash, reboot, judge.

Owns the glue between the fault model (tests/support/faulty_disk.py), the
oracle (tests/crash/history.py) and the storage under test
(``durus.file_storage.FileStorage`` with ``file_system=`` the simulated disk).
A crash check reboots from a crash image and demands, without ``repair``:
the open succeeds, the state is an allowed one, a second open sees the same
records, and the storage accepts and keeps a new commit.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from durus.file_storage import FileStorage
from durus.record import pack_record
from durus.utils import ROOT_OID, str_to_int8
from tests.crash.crash_points import count
from tests.crash.history import Commit, History, Violation, Workload, read_all_records
from tests.support.faulty_disk import Chooser, FaultyDisk, FileSync, RandomChooser, Write

PATH = "/sim/data.durus"


def open_storage(disk: FaultyDisk, **options: Any) -> FileStorage:
    return FileStorage(PATH, file_system=disk, **options)


def commit_records(storage: FileStorage, records: dict[bytes, bytes]) -> None:
    storage.begin()
    for oid, record in records.items():
        storage.store(oid, record)
    storage.end()


def describe_crash(disk: FaultyDisk, event_index: int, image: dict[str, bytes]) -> str:
    """A short account of a crash: the events before it since the last file sync."""
    events = disk.events[:event_index]
    last_sync = max((i for i, e in enumerate(events) if isinstance(e, FileSync)), default=-1)
    recent = []
    for event in events[max(last_sync - 3, 0) :]:
        if isinstance(event, Write):
            recent.append(f"Write(offset={event.offset}, {len(event.data)} bytes)")
        else:
            recent.append(repr(event))
    sizes = {name: len(content) for name, content in image.items()}
    return f"crash after event {event_index}; files {sizes}; recent events: {recent}"


@dataclass
class Session:
    """One simulated machine running a FileStorage, with the history of its commits."""

    disk: FaultyDisk = field(default_factory=FaultyDisk)
    history: History = field(default_factory=History)
    workload: Workload = field(default_factory=Workload)
    storage: FileStorage | None = None

    def open(self) -> FileStorage:
        if self.storage is None:
            self.storage = open_storage(self.disk)
        return self.storage

    def commit(
        self,
        new_sizes: Iterable[int] = (),
        rewrite_indexes: Iterable[int] = (),
        drop_indexes: Iterable[int] = (),
        link: bool = False,
    ) -> Commit:
        """Build and commit one transaction; the Commit records whether it was acknowledged."""
        storage = self.open()
        new_sizes = list(new_sizes)
        new_oids = [storage.new_oid() for _ in new_sizes]
        if ROOT_OID in new_oids:
            new_oids.remove(ROOT_OID)
            new_sizes.pop()
        records = self.workload.build(
            new_oids, new_sizes, list(rewrite_indexes), list(drop_indexes), link
        )
        entry = Commit(records, start_event=len(self.disk.events))
        self.history.commits.append(entry)
        try:
            commit_records(storage, records)
        except OSError:
            entry.failed = True
            raise
        entry.ack_event = len(self.disk.events)
        self.workload.apply(records)
        return entry

    def pack(self, commits_between_steps: dict[int, list[int]] | None = None) -> None:
        """Run the packer, committing (new objects of the given sizes) between steps."""
        storage = self.open()
        between = commits_between_steps or {}
        for step, _progress in enumerate(storage.get_packer()):
            for size_bytes in between.get(step, []):
                self.commit(new_sizes=[size_bytes], drop_indexes=[0] if step % 2 else [])

    def crash(self, chooser: Chooser, event_index: int | None, label: str) -> Session:
        """Crash at ``event_index`` (default now), reboot, judge; the rebooted Session."""
        index = len(self.disk.events) if event_index is None else event_index
        image = self.disk.crash_image(chooser, index)
        try:
            state = judge_image(image, self.history, index)
        except Violation as violation:
            raise Violation(f"{violation}\n{describe_crash(self.disk, index, image)}") from None
        count(label)
        rebooted = Session(FaultyDisk(image))
        rebooted.history.commits.append(Commit(state, start_event=-1, ack_event=0))
        rebooted.workload.reset_to(state)
        rebooted.workload.serial = self.workload.serial
        return rebooted

    def close(self) -> None:
        if self.storage is not None:
            self.storage.close()
            self.storage = None


def judge_image(image: dict[str, bytes], history: History, event_index: int) -> dict[bytes, bytes]:
    """Reboot on ``image`` and check it (module docstring); the recovered records."""
    disk = FaultyDisk(image)
    try:
        storage = open_storage(disk)
    except Exception as error:
        raise Violation(f"open without repair failed: {type(error).__name__}: {error}") from None
    try:
        included = history.judge(storage, event_index)
        recovered = read_all_records(storage)
    finally:
        storage.close()
    again = open_storage(disk)
    try:
        if read_all_records(again) != recovered:
            raise Violation("a second open shows different records than the first")
        check_accepts_commit(again, disk, recovered)
    finally:
        again.close()
    assert included is not None
    return recovered


def judge_sampled_crashes(
    session: Session, start_event: int, samples_per_event: int, seed: int, label: str
) -> None:
    """Judge ``samples_per_event`` random crash images at every event from
    ``start_event`` on (``seed`` makes them reproducible); count them under ``label``."""
    rng = random.Random(seed)
    checked = 0
    for event_index in range(start_event, len(session.disk.events) + 1):
        for _ in range(samples_per_event):
            image = session.disk.crash_image(RandomChooser(rng), event_index)
            judge_image(image, session.history, event_index)
            checked += 1
    assert checked == samples_per_event * (len(session.disk.events) + 1 - start_event)
    count(label, checked)


def check_accepts_commit(
    storage: FileStorage, disk: FaultyDisk, before: dict[bytes, bytes]
) -> None:
    """A new commit on the recovered storage lands, and a reopen shows it."""
    oid = storage.new_oid()
    if oid in before:
        raise Violation(f"new_oid() handed out oid {str_to_int8(oid)}, which has a record")
    record = pack_record(oid, b"after the crash", b"")
    commit_records(storage, {oid: record})
    storage.close()
    reopened = open_storage(disk)
    try:
        after = read_all_records(reopened)
    finally:
        reopened.close()
    if after != {**before, oid: record}:
        raise Violation("a commit after recovery was not kept exactly")
