"""The oracle of the crash tests: which database states a crash may leave.

Owns the record-level workload (records built with ``durus.record.pack_record``,
a root that refers to every live object, objects that may refer to each other)
and the judgement of a reopened storage against the commits issued so far:

* the reopened database must equal the state after some PREFIX of the commits
  (commits that failed with an error may each be present or absent, since the
  caller was told they failed, not that they were undone);
* every commit acknowledged before the crash (its ``end()`` returned, with
  fsync on) must be in that prefix;
* every record reachable from the root in that state loads, byte for byte;
* every record the storage lists equals that state's record for its oid
  (garbage may have been packed away, but nothing may be partial or wrong).

Knows nothing about disks or files: the storage is any object with ``load``
and ``gen_oid_record``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from durus.record import pack_record, record_refs
from durus.utils import ROOT_OID, int8_to_str, str_to_int8
from tests.support.records import reachable

MAX_OPTIONAL_FAILED_COMMITS = 6


@dataclass
class Commit:
    records: dict[bytes, bytes]
    start_event: int  # disk event index when the commit began
    ack_event: int | None = None  # event index when end() returned; None: not acknowledged
    failed: bool = False  # end() raised


class Violation(AssertionError):
    """A reopened storage holds a state the fault model does not allow."""


@dataclass
class History:
    commits: list[Commit] = field(default_factory=list)

    def state_of(self, included: Iterable[int]) -> dict[bytes, bytes]:
        state: dict[bytes, bytes] = {}
        for index in included:
            state.update(self.commits[index].records)
        return state

    def allowed_inclusions(self, event_index: int) -> list[tuple[int, ...]]:
        """The commit index lists a crash at ``event_index`` may leave, longest first."""
        started = [i for i, c in enumerate(self.commits) if c.start_event < event_index]
        acked = [
            i
            for i, c in enumerate(self.commits)
            if c.ack_event is not None and c.ack_event <= event_index
        ]
        lowest = max(acked) + 1 if acked else 0
        options = []
        for length in range(len(started), lowest - 1, -1):
            prefix = list(range(length))
            optional = [i for i in prefix if self.commits[i].failed][-MAX_OPTIONAL_FAILED_COMMITS:]
            for dropped_count in range(len(optional) + 1):
                for dropped in itertools.combinations(optional, dropped_count):
                    options.append(tuple(i for i in prefix if i not in dropped))
        assert options
        return options

    def judge(self, storage: Any, event_index: int) -> tuple[int, ...]:
        """The commits the reopened ``storage`` holds; Violation if no allowed state fits."""
        listed = read_all_records(storage)
        reasons = []
        for included in self.allowed_inclusions(event_index):
            reason = mismatch(storage, listed, self.state_of(included))
            if reason is None:
                return included
            reasons.append(f"  commits {list(included)}: {reason}")
        raise Violation(
            f"reopened storage matches no allowed state at event {event_index}:\n"
            + "\n".join(reasons[:8])
        )


def read_all_records(storage: Any) -> dict[bytes, bytes]:
    """Every (oid, record) the storage lists; duplicates of an oid are a violation."""
    listed: dict[bytes, bytes] = {}
    for oid, record in storage.gen_oid_record():
        if oid in listed:
            raise Violation(f"oid {str_to_int8(oid)} listed twice")
        listed[oid] = record
    return listed


def mismatch(storage: Any, listed: dict[bytes, bytes], state: dict[bytes, bytes]) -> str | None:
    """Why ``storage`` does not hold ``state`` (None when it does)."""
    for oid, record in listed.items():
        if state.get(oid) != record:
            return f"lists oid {str_to_int8(oid)} with a record that state lacks"
    for oid, record in reachable(state).items():
        try:
            loaded = storage.load(oid)
        except KeyError:
            return f"reachable oid {str_to_int8(oid)} is missing"
        if loaded != record:
            return f"reachable oid {str_to_int8(oid)} loads a different record"
    return None


# ----------------------------------------------------------------------------
# The workload


def payload(oid: bytes, serial: int, size_bytes: int) -> bytes:
    """Distinct, recognisable object data of a given size."""
    stamp = b"%d:%d;" % (str_to_int8(oid), serial)
    return (stamp * (size_bytes // len(stamp) + 1))[:size_bytes]


@dataclass
class Workload:
    """Builds commits: new objects, rewritten objects, objects dropped from the root."""

    records: dict[bytes, bytes] = field(default_factory=dict)  # last committed (or built)
    live: list[bytes] = field(default_factory=list)  # oids the root refers to
    serial: int = 0

    def build(
        self,
        new_oids: list[bytes],
        new_sizes: list[int],
        rewrite_indexes: list[int],
        drop_indexes: list[int],
        link: bool,
    ) -> dict[bytes, bytes]:
        """The records of the next commit (root first), not yet applied."""
        self.serial += 1
        live = [oid for i, oid in enumerate(self.live) if i not in set(drop_indexes)]
        transaction: dict[bytes, bytes] = {}
        for oid, size_bytes in zip(new_oids, new_sizes, strict=True):
            refs = b"".join(live[-1:]) if link else b""
            transaction[oid] = pack_record(oid, payload(oid, self.serial, size_bytes), refs)
        for index in rewrite_indexes:
            if index < len(live):
                oid = live[index]
                size_bytes = len(self.records[oid]) % 700 + 1
                transaction[oid] = pack_record(oid, payload(oid, self.serial, size_bytes), b"")
        root_refs = sorted(set(live + list(new_oids)))
        root = pack_record(ROOT_OID, b"root %d" % self.serial, b"".join(root_refs))
        records = {ROOT_OID: root, **transaction}
        assert all(oid != ROOT_OID for oid in transaction)
        return records

    def apply(self, records: dict[bytes, bytes]) -> None:
        """Make ``records`` the current state (after the commit is issued)."""
        self.records.update(records)
        self.live = [oid for oid in record_refs(records[ROOT_OID])]
        assert all(oid in self.records for oid in self.live)

    def reset_to(self, state: dict[bytes, bytes]) -> None:
        """After a crash: continue from the recovered state."""
        self.records = dict(state)
        self.live = record_refs(state[ROOT_OID]) if ROOT_OID in state else []


def oid_of(number: int) -> bytes:
    return int8_to_str(number)
