"""FileStorage against MemoryStorage at the record level, driven by Hypothesis.

Every step does the same thing to a FileStorage and to a MemoryStorage model
(records built with durus.record.pack_record); after every step the two must
hold the same records. Pack removes from the model what is unreachable from the
root, and FileStorage must report exactly those oids through sync().
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from durus.error import DurusKeyError
from durus.file_storage import FileStorage
from durus.record import pack_record, record_refs
from durus.storage import MemoryStorage
from durus.utils import ROOT_OID, int8_to_str
from tests.support.records import reachable


class FileStorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="durus-machine-")
        self.path = os.path.join(self.directory, "db.durus")
        self.storage = FileStorage(self.path, fsync=False)
        self.model = MemoryStorage()
        self.handed_out: set[bytes] = set()
        assert self.storage.new_oid() == ROOT_OID
        self._commit({ROOT_OID: pack_record(ROOT_OID, b"root", b"")})

    def teardown(self) -> None:
        self.storage.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _commit(self, records: dict[bytes, bytes]) -> None:
        self.storage.begin()
        self.model.begin()
        for oid, record in records.items():
            self.storage.store(oid, record)
            self.model.store(oid, record)
        self.storage.end()
        self.model.end()
        self.handed_out.difference_update(records)

    def _existing(self, data: Any) -> bytes:
        return data.draw(st.sampled_from(sorted(self.model.records)))

    def _record(self, data: Any, oid: bytes, candidates: list[bytes]) -> bytes:
        refs = data.draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True))
        payload = data.draw(st.binary(max_size=40))
        refs_bytes = b"".join(sorted(r for r in refs if r != oid))
        return pack_record(oid, payload, refs_bytes)

    @rule(data=st.data(), count=st.integers(1, 3))
    def commit_new_objects(self, data: Any, count: int) -> None:
        new = []
        for _ in range(count):
            oid = self.storage.new_oid()
            assert oid not in self.model.records and oid not in self.handed_out
            new.append(oid)
        self.handed_out.update(new)
        # The root (or another existing object) refers to the new objects.
        parent = self._existing(data)
        parent_refs = set(record_refs(self.model.records[parent])) | set(new)
        parent_refs.discard(parent)
        records = {parent: pack_record(parent, b"parent", b"".join(sorted(parent_refs)))}
        candidates = sorted(self.model.records) + new
        for oid in new:
            records[oid] = self._record(data, oid, candidates)
        self._commit(records)

    @rule(data=st.data())
    def update_existing(self, data: Any) -> None:
        oid = self._existing(data)
        self._commit({oid: self._record(data, oid, sorted(self.model.records))})

    @rule()
    def allocate_and_abandon(self) -> None:
        oid = self.storage.new_oid()
        assert oid not in self.model.records and oid not in self.handed_out
        self.handed_out.add(oid)

    @rule()
    def pack(self) -> None:
        before = set(self.model.records)
        live = set(reachable(self.model.records))
        self.storage.pack()
        for oid in before - live:
            del self.model.records[oid]
        assert set(self.storage.sync()) == before - live

    @rule()
    def pack_with_a_commit_in_the_middle(self) -> None:
        packer = self.storage.get_packer()
        next(packer)
        oid = self.storage.new_oid()
        self.handed_out.add(oid)
        root_refs = set(record_refs(self.model.records[ROOT_OID])) | {oid}
        self._commit(
            {
                ROOT_OID: pack_record(ROOT_OID, b"root", b"".join(sorted(root_refs))),
                oid: pack_record(oid, b"during pack", b""),
            }
        )
        for _step in packer:
            pass
        before = set(self.model.records)
        live = set(reachable(self.model.records))
        for gone in before - live:
            del self.model.records[gone]
        assert set(self.storage.sync()) == before - live

    @rule(fsync=st.booleans())
    def reopen(self, fsync: bool) -> None:
        self.storage.close()
        self.storage = FileStorage(self.path, fsync=fsync)
        self.handed_out.clear()

    @rule(cut_bytes=st.integers(0, 40), data=st.data())
    def reopen_after_a_torn_append(self, cut_bytes: int, data: Any) -> None:
        """A transaction cut short at the end (a crash) is dropped; nothing else changes."""
        self.storage.close()
        oid = self._existing(data)
        record = pack_record(oid, b"never acknowledged", b"")
        body = int8_to_str(8 + len(record)) + oid + record
        tail = (int8_to_str(len(body)) + body)[: 8 + cut_bytes]
        with open(self.path, "ab") as f:
            f.write(tail)
        size_with_tail = os.path.getsize(self.path)
        logging.getLogger("durus").disabled = True
        try:
            reader = FileStorage(self.path, readonly=True)
            assert dict(reader.gen_oid_record()) == self.model.records
            reader.close()
            assert os.path.getsize(self.path) == size_with_tail
            self.storage = FileStorage(self.path, fsync=False)
        finally:
            logging.getLogger("durus").disabled = False
        # The cut transaction is gone, and with it any empty transactions just before it.
        dropped_empty_bytes = size_with_tail - len(tail) - os.path.getsize(self.path)
        assert dropped_empty_bytes >= 0 and dropped_empty_bytes % 8 == 0
        self.handed_out.clear()

    @rule()
    def read_only_view_matches(self) -> None:
        reader = FileStorage(self.path, readonly=True)
        try:
            assert dict(reader.gen_oid_record()) == self.model.records
        finally:
            reader.close()

    @rule(number=st.integers(0, 40))
    def load_missing(self, number: int) -> None:
        oid = int8_to_str(number)
        if oid in self.model.records:
            assert self.storage.load(oid) == self.model.records[oid]
        else:
            try:
                self.storage.load(oid)
            except DurusKeyError:
                pass
            else:
                raise AssertionError(f"oid {number} should have no record")

    @invariant()
    def same_records(self) -> None:
        assert dict(self.storage.gen_oid_record()) == self.model.records
        for oid, record in self.model.records.items():
            assert self.storage.load(oid) == record


TestFileStorageMachine = FileStorageMachine.TestCase
