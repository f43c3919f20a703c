"""The Storage interface that Connection requires, MemoryStorage, and census tools.

Owns the contract between a Connection and any storage: records (bytes) go
in through begin/store/end and come out through load/bulk_load; sync reports
oids to invalidate; new_oid allocates. Knows nothing of pickling beyond the
record layout (durus.record).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from durus.error import DurusKeyError
from durus.record import extract_class_name, record_oid, record_refs
from durus.utils import ROOT_OID, check_oid, int8_to_str

InvalidationHandler = Callable[[list[bytes]], None]
Packer = Iterator[Any]


class Storage:
    """Abstract storage. Concrete storages subclass it without calling __init__."""

    def __init__(self) -> None:
        raise RuntimeError("Storage is abstract")

    def load(self, oid: bytes) -> bytes:
        """The record of ``oid``; DurusKeyError when there is none."""
        raise NotImplementedError

    def begin(self) -> None:
        """Start collecting a transaction, discarding anything pending."""
        raise NotImplementedError

    def store(self, oid: bytes, record: bytes) -> None:
        """Add a record to the pending transaction."""
        raise NotImplementedError

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        """Commit the pending records atomically."""
        raise NotImplementedError

    def sync(self) -> list[bytes]:
        """Oids to invalidate since the last call (changed by others, removed by pack)."""
        raise NotImplementedError

    def new_oid(self) -> bytes:
        """An unused oid; the first one of an empty storage is ROOT_OID."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""

    def get_packer(self) -> Packer | None:
        """An incremental packer (each step does a bit of work), or None."""
        return None

    def pack(self) -> None:
        """Remove records unreachable from the root, where supported."""
        return None

    def bulk_load(self, oids: Iterable[bytes]) -> Iterator[bytes]:
        """The records of ``oids``, in order."""
        for oid in oids:
            yield self.load(oid)

    def gen_oid_record(
        self, start_oid: bytes | None = None, batch_size: int = 100, **ignored: Any
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(oid, record)`` for every record reachable from ``start_oid`` (default root).

        Each oid once; batches of up to ``batch_size`` loaded through
        bulk_load, taking the lowest discovered oids first.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = ROOT_OID if start_oid is None else check_oid(start_oid)
        seen = {start}
        todo = [start]
        while todo:
            batch = [heapq.heappop(todo) for _ in range(min(batch_size, len(todo)))]
            try:
                records = list(self.bulk_load(batch))
            except KeyError:
                records = [r for r in self._load_present(batch)]
            for record in records:
                oid = record_oid(record)
                for ref in record_refs(record):
                    if ref not in seen:
                        seen.add(ref)
                        heapq.heappush(todo, ref)
                yield oid, record

    def _load_present(self, oids: list[bytes]) -> Iterator[bytes]:
        """Records of those ``oids`` that exist (dangling references are skipped)."""
        for oid in oids:
            try:
                yield self.load(oid)
            except KeyError:
                continue


class MemoryStorage(Storage):
    """Records in a dict: a single-client storage for tests and scratch work."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.transaction: dict[bytes, bytes] | None = None
        self.oid = 0

    def __str__(self) -> str:
        return "MemoryStorage()"

    def new_oid(self) -> bytes:
        oid = int8_to_str(self.oid)
        self.oid += 1
        assert oid not in self.records or oid == ROOT_OID and not self.records
        return oid

    def load(self, oid: bytes) -> bytes:
        record = self.records.get(check_oid(oid))
        if record is None:
            raise DurusKeyError(oid)
        return record

    def begin(self) -> None:
        self.transaction = {}

    def store(self, oid: bytes, record: bytes) -> None:
        if self.transaction is None:
            raise RuntimeError("store() called before begin()")
        if record_oid(record) != check_oid(oid):
            raise ValueError(f"record oid {record_oid(record)!r} differs from {oid!r}")
        self.transaction[oid] = record

    def end(self, handle_invalidations: InvalidationHandler | None = None) -> None:
        if self.transaction is None:
            raise RuntimeError("end() called before begin()")
        self.records.update(self.transaction)
        self.transaction = None

    def sync(self) -> list[bytes]:
        return []


def gen_referring_oid_record(
    storage: Storage, referred_oid: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """``(oid, record)`` of every record whose refs include ``referred_oid``."""
    for oid, record in storage.gen_oid_record():
        if referred_oid in record_refs(record):
            yield oid, record


def gen_oid_class(storage: Storage, *classes: bytes | str) -> Iterator[tuple[bytes, bytes]]:
    """``(oid, class_name)`` pairs, names as bytes; filtered by ``classes`` when given.

    Filter values may be bytes or str (Durus 4.3 silently matched nothing for str).
    """
    wanted = {c.encode("latin1") if isinstance(c, str) else c for c in classes}
    for oid, record in storage.gen_oid_record():
        name = extract_class_name(record)
        if not wanted or name in wanted:
            yield oid, name


def get_census(storage: Storage) -> dict[bytes, int]:
    """Instance count per class name (bytes)."""
    census: dict[bytes, int] = {}
    for _oid, name in gen_oid_class(storage):
        census[name] = census.get(name, 0) + 1
    return census


def get_reference_index(storage: Storage) -> dict[bytes, list[bytes]]:
    """``oid -> [oids of records referring to it]`` for every referred-to oid."""
    index: dict[bytes, list[bytes]] = {}
    for oid, record in storage.gen_oid_record():
        for ref in record_refs(record):
            index.setdefault(ref, []).append(oid)
    return index
