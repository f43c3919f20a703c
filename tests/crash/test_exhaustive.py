"""Every crash state of small fixed cases, enumerated rather than sampled.

* Every byte-boundary truncation of a file opens, without ``repair``, to
  exactly the transactions that lie wholly before the cut. (Durus 4.3 opens
  only 2 of the 138 truncation points of a two-transaction file without
  ``repair``; here every one must open.)
* Every crash state of the last commit under the sector model, at every event
  of that commit, for transactions placed so that the length field lands just
  before, on and after a 512-byte sector boundary.
* Every crash state of every event of a pack (sampled where one event has too
  many states to list), with and without commits arriving during the pack.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import settings

from durus.file_storage import FileFormatError
from durus.record import pack_record
from durus.utils import ROOT_OID, int8_to_str
from tests.crash.crash_points import count
from tests.crash.harness import PATH, Session, commit_records, judge_image, open_storage
from tests.crash.history import Commit, Violation, mismatch, read_all_records
from tests.crash.layout import read_layout
from tests.support.faulty_disk import (
    FaultyDisk,
    RandomChooser,
    Write,
    enumerate_choices,
    image_key,
)

EMPTY_SHELF_BYTES = 40
THOROUGH = settings().max_examples > 100
ENUMERATION_LIMIT = 400_000 if THOROUGH else 40_000
SAMPLES_PER_PACK_EVENT = 60 if THOROUGH else 6


def _oid(number: int) -> bytes:
    return int8_to_str(number)


def _root(serial: int, refs: list[int], size_bytes: int = 8) -> bytes:
    data = (b"root %d " % serial).ljust(size_bytes, b".")
    return pack_record(ROOT_OID, data, b"".join(_oid(n) for n in refs))


def _object(number: int, serial: int, size_bytes: int) -> bytes:
    data = (b"obj %d/%d " % (number, serial) * (size_bytes // 8 + 1))[:size_bytes]
    return pack_record(_oid(number), data, b"")


def _run(commits: list[dict[bytes, bytes]], disk: FaultyDisk | None = None) -> Session:
    """Commit each transaction in turn (fsync on); the Session with its history."""
    session = Session(disk or FaultyDisk())
    storage = session.open()
    for records in commits:
        for oid in records:
            if oid != ROOT_OID and storage.shelf.get_position(oid) is None:
                storage.allocated_unused_oids.add(oid)
        entry = Commit(records, start_event=len(session.disk.events))
        commit_records(storage, records)
        entry.ack_event = len(session.disk.events)
        session.history.commits.append(entry)
    return session


TWO_SMALL = [
    {ROOT_OID: _root(1, [])},
    {ROOT_OID: _root(2, [1]), _oid(1): _object(1, 2, 3)},
]
MIXED = [
    {ROOT_OID: _root(1, [1, 2]), _oid(1): _object(1, 1, 0), _oid(2): _object(2, 1, 1500)},
    {_oid(2): _object(2, 2, 20)},
    {ROOT_OID: _root(3, [1, 2, 3]), _oid(3): _object(3, 3, 700), _oid(1): _object(1, 3, 9)},
]


def _truncation_expectations(content: bytes, commit_count: int) -> list[tuple[int, int]]:
    """(cut length, number of transactions wholly before it) for every cut."""
    layout = read_layout(content)
    assert len(layout.transactions) == commit_count
    ends = [t.end for t in layout.transactions]
    return [(cut, sum(end <= cut for end in ends)) for cut in range(len(content) + 1)]


@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("commits", [TWO_SMALL, MIXED], ids=["two-small", "mixed"])
def test_every_truncation_point_opens_to_the_transactions_before_it(
    commits: list[dict[bytes, bytes]], readonly: bool
) -> None:
    session = _run(commits)
    session.close()
    content = session.disk.read_file(PATH)
    checked = 0
    for cut, complete in _truncation_expectations(content, len(commits)):
        if readonly and cut < EMPTY_SHELF_BYTES:
            continue  # an unfinished creation: read-only opens refuse it, writable ones redo it
        disk = FaultyDisk({PATH: content[:cut]})
        try:
            storage = open_storage(disk, readonly=readonly)
        except Exception as error:
            raise Violation(f"cut at {cut} of {len(content)}: open failed: {error!r}") from None
        try:
            expected = session.history.state_of(range(complete))
            reason = mismatch(storage, read_all_records(storage), expected)
            assert reason is None, f"cut at {cut}: {reason}"
        finally:
            storage.close()
        if readonly:
            assert disk.read_file(PATH) == content[:cut], "a read-only open changed the file"
        checked += 1
    count("exhaustive: truncation points", checked)


def _placed(start_offset: int) -> list[dict[bytes, bytes]]:
    """Two commits; the second transaction starts at ``start_offset``."""
    # A new shelf is 40 bytes; the first transaction is 8 + 16 + 12 + len(data) bytes.
    first = {ROOT_OID: _root(1, [], size_bytes=start_offset - 76)}
    second = {
        ROOT_OID: _root(2, [1, 2]),
        _oid(1): _object(1, 2, 40),
        _oid(2): _object(2, 2, 2100 if THOROUGH else 150),
    }
    return [first, second]


@pytest.mark.parametrize("start_offset", [500, 504, 505, 508, 511, 512, 1020])
def test_every_crash_state_of_the_last_commit(start_offset: int) -> None:
    session = _run(_placed(start_offset))
    assert read_layout(session.disk.read_file(PATH)).transactions[0].end == start_offset
    last = session.history.commits[-1]
    assert last.ack_event is not None
    checked = 0
    for event_index in range(last.start_event, last.ack_event + 1):
        for image in session.disk.crash_images(event_index, ENUMERATION_LIMIT):
            judge_image(image, session.history, event_index)
            checked += 1
    count("exhaustive: last-commit crash states", checked)


def _packable_session(commits_during_pack: bool) -> tuple[Session, list[int]]:
    """A file with garbage, packed (optionally with commits between packer steps)."""
    session = _run(
        [
            {ROOT_OID: _root(1, [1, 2, 3]), **{_oid(n): _object(n, 1, 90 * n) for n in (1, 2, 3)}},
            {ROOT_OID: _root(2, [2]), _oid(2): _object(2, 2, 30)},
        ]
    )
    session.workload.reset_to(session.history.state_of(range(2)))
    session.workload.serial = 10
    storage = session.open()
    pack_start = len(session.disk.events)
    steps = []
    for step, _progress in enumerate(storage.get_packer()):
        steps.append(len(session.disk.events))
        if commits_during_pack and step in (0, 2):
            session.commit(new_sizes=[600], drop_indexes=[0] if step else [])
    pack_events = list(range(pack_start, len(session.disk.events) + 1))
    return session, pack_events


@pytest.mark.parametrize("commits_during_pack", [False, True])
def test_every_event_of_a_pack_keeps_every_committed_object(commits_during_pack: bool) -> None:
    session, pack_events = _packable_session(commits_during_pack)
    rng = random.Random(1)
    checked = 0
    for event_index in pack_events:
        state = session.disk.state_at(event_index)
        try:
            images = [dict(i) for i in {image_key(i): i for i in _all(state)}.values()]
        except RuntimeError:
            images = [state.crash_image(RandomChooser(rng)) for _ in range(SAMPLES_PER_PACK_EVENT)]
        for image in images:
            judge_image(image, session.history, event_index)
            checked += 1
    count("exhaustive: pack crash states", checked)


def _all(state: object) -> list[dict[str, bytes]]:
    return list(enumerate_choices(state.crash_image, limit=2_000))  # type: ignore[attr-defined]


def _transaction_bytes(number: int) -> bytes:
    """A complete, valid SHELF-1 transaction holding one record for oid ``number``."""
    record = pack_record(_oid(number), b"fake", b"")
    shelf_record = int8_to_str(8 + len(record)) + _oid(number) + record
    return int8_to_str(len(shelf_record)) + shelf_record


def _torn_blob_commit(payload: bytes) -> tuple[Session, bytes, Write]:
    """One durable root, then a commit of the root and a blob object cut before its fsync."""
    session = _run([{ROOT_OID: _root(1, [])}])
    durable = session.disk.read_file(PATH)
    session.history.commits.append(Commit({}, start_event=len(session.disk.events)))
    storage = session.open()
    oid = storage.new_oid()
    records = {ROOT_OID: _root(2, [1]), oid: pack_record(oid, payload, b"")}
    session.history.commits[-1].records = records
    commit_records(storage, records)
    first_write = session.disk.events[session.history.commits[-1].start_event]
    assert isinstance(first_write, Write) and first_write.offset == len(durable)
    return session, durable, first_write


def test_a_torn_commit_of_data_that_looks_like_a_transaction_opens_without_repair() -> None:
    embedded = _transaction_bytes(7)
    session, durable, first_write = _torn_blob_commit(b"user blob:" + embedded + b"more")
    # The crash keeps the first write (placeholder and records, not yet fsynced) and
    # the file ends right after the embedded transaction: allowed by the fault model.
    cut = first_write.data.index(embedded) + len(embedded)
    image = {PATH: durable + first_write.data[:cut]}
    judge_image(image, session.history, session.history.commits[-1].start_event + 1)


def test_a_torn_blob_commit_that_lost_its_record_header_is_reported_never_dropped() -> None:
    """The one crash state SHELF-1's bytes cannot tell from damage (tests/crash/README.md).

    The sector holding the blob record's header is lost (zeros) while a later
    sector, inside the blob and holding a well-formed transaction that reaches
    the cut, persisted: that looks exactly like a wiped transaction header in
    the middle of the log followed by valid data. The open errs on the side of
    an explicit, repairable error naming the offset; it never drops data silently.
    """
    embedded = _transaction_bytes(7)
    session, durable, first_write = _torn_blob_commit(b"x" * 700 + embedded + b"more")
    cut = first_write.data.index(embedded) + len(embedded)
    torn = bytearray(first_write.data[:cut])
    first_sector_end = 512 - len(durable)
    assert 0 < first_sector_end < torn.index(embedded)
    torn[:first_sector_end] = bytes(first_sector_end)
    disk = FaultyDisk({PATH: durable + bytes(torn)})
    with pytest.raises(FileFormatError, match=f"at byte {len(durable)}") as raised:
        open_storage(disk)
    assert raised.value.offset == len(durable)
    repaired = open_storage(disk, repair=True)
    try:
        assert read_all_records(repaired) == session.history.state_of(range(1))
    finally:
        repaired.close()
