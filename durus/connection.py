"""The Connection: one client's view of a storage, its cache and its transactions.

Owns moving objects between a storage and memory (API.md section 7): loading
records into ghosts, collecting changed objects and committing them, the
conflict rules (7.2), the cache and its eviction policy (7.3), and the
transaction boundary that resets read tracking (see durus.persistent: objects
read in a transaction are instances of their real class until the boundary
switches them back to their tracking twin).

Never does I/O itself and never pickles by hand: records go through the
Storage interface, bytes through durus.serialize. Misuse guards are real
exceptions, never ``assert`` (they must survive ``python -O``):

* committing or loading while a conflict is pending without ``abort()`` raises
  ``durus.error.StillConflictedError`` (an AssertionError subclass);
* a storage that is not a ``durus.storage.Storage``, or a stored root that is
  not of the ``root_class`` asked for, raises ``ConnectionTypeError``, a
  ``TypeError`` that is also an ``AssertionError`` (what Durus 4.3 raised);
* any failure during ``commit()`` (a conflict, an unpicklable attribute, a
  storage error) undoes the oids given to new objects, so no later commit can
  write a reference to an oid without a record.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterator
from time import perf_counter
from typing import Any
from weakref import KeyedRef

from durus.error import DurusError, ReadConflictError, StillConflictedError, WriteConflictError
from durus.logger import is_logging, log
from durus.persistent import (
    GHOST,
    SAVED,
    UNSAVED,
    ConnectionBase,
    _connection_get,
    _connection_set,
    _oid_get,
    _oid_set,
    _serial_get,
    _serial_set,
    _set_class,
    _status_get,
    _status_set,
    _twin_by_class,
    real_class,
)
from durus.record import pack_record, unpack_record
from durus.serialize import ObjectReader, ObjectWriter, persistent_load
from durus.storage import Storage
from durus.utils import ROOT_OID, as_bytes, check_oid, int8_to_str

__all__ = [
    "Connection",
    "ROOT_OID",
    "Cache",
    "ObjectDictionary",
    "ReferenceContainer",
    "touch_every_reference",
    "gen_every_instance",
    "ConnectionTypeError",
]

MAX_OID_INT = 2**64 - 1
DEAD_KEYS_PURGE_MIN = 1000
SHRINK_LOG_LEVEL = 10
MAX_LOAD_ATTEMPTS = 8  # loads of one oid per get_stored_pickle, each after a sync
_consume: Any = deque(maxlen=0).extend  # runs an iterator to its end in C


class ConnectionTypeError(TypeError, AssertionError, DurusError):
    """A Connection was given a storage, or found a root, of the wrong type."""


def _oid_from_key(oid: Any) -> bytes:
    """An 8-byte oid from an int or 8 bytes; a clear TypeError/ValueError otherwise."""
    if isinstance(oid, int) and not isinstance(oid, bool):
        if not 0 <= oid <= MAX_OID_INT:
            raise ValueError(f"an oid int must be in 0..2**64-1, got {oid}")
        return int8_to_str(oid)
    return check_oid(oid)


class Connection(ConnectionBase):
    """Moves objects between ``storage`` and memory for one client.

    ``storage`` is a Storage or a str path (opened as a FileStorage).
    ``root_class`` (default PersistentDict) is the class of the root created
    on an empty storage; when given, a stored root of another class raises
    ConnectionTypeError.
    """

    def __init__(self, storage: Any, cache_size: int = 100000, root_class: Any = None) -> None:
        if isinstance(storage, str):
            from durus.file_storage import FileStorage

            storage = FileStorage(storage)
        if not isinstance(storage, Storage):
            raise ConnectionTypeError(f"{storage!r} is not a durus.storage.Storage")
        self.storage = storage
        self.new_oid = storage.new_oid
        self.cache = Cache(cache_size)
        self.reader = ObjectReader(self)
        self.changed: dict[bytes, Any] = {}
        self.invalid_oids: set[bytes] = set()
        # Objects read in this transaction, in order; also the cache's pending
        # recent objects (merged into its map in bulk, not one by one).
        self._accessed: list[Any] = self.cache.recent_objects.pending
        if type(self).note_access is Connection.note_access:
            self.access_log = self._accessed  # the read hook appends inline
        self.root = self.get(ROOT_OID)
        if self.root is None:
            self.root = self._create_root(root_class)
        elif root_class is not None and real_class(self.root) is not root_class:
            found = real_class(self.root).__name__
            raise ConnectionTypeError(f"the stored root is a {found}, not a {root_class.__name__}")
        assert self.root._p_oid == ROOT_OID

    def _create_root(self, root_class: Any) -> Any:
        """Create, register and commit the root of an empty storage."""
        if root_class is None:
            from durus.persistent_dict import PersistentDict

            root_class = PersistentDict
        oid = self.new_oid()
        if oid != ROOT_OID:
            raise DurusError(f"storage without a root gave the first oid {oid!r}, not ROOT_OID")
        root = root_class.__new__(root_class)
        root_class.__init__(root)
        root._p_oid = ROOT_OID
        root._p_connection = self
        self.cache[ROOT_OID] = root
        self.changed[ROOT_OID] = root
        self.commit()
        assert _status_get(root) == SAVED
        return root

    # -- accessors

    def get_storage(self) -> Storage:
        return self.storage

    def get_cache(self) -> Cache:
        return self.cache

    def get_root(self) -> Any:
        return self.root

    def get_reader(self) -> ObjectReader:
        return self.reader

    def get_transaction_serial(self) -> int:
        return self.transaction_serial

    def get_load_count(self) -> int:
        return self.reader.get_load_count()

    def get_cache_count(self) -> int:
        return self.cache.get_count()

    def get_cache_size(self) -> int:
        return self.cache.get_size()

    def set_cache_size(self, size: int) -> None:
        self.cache.set_size(size)

    # -- loading

    def get(self, oid: Any) -> Any:
        """The object with ``oid`` (int or 8 bytes), cached or loaded; None if not stored."""
        oid = _oid_from_key(oid)
        obj = self.cache.get(oid)
        if obj is not None:
            return obj
        try:
            data = self.get_stored_pickle(oid)
        except KeyError:
            return None
        ghost = self.reader.get_ghost(data)
        _oid_set(ghost, oid)
        _connection_set(ghost, self)
        self.cache[oid] = ghost
        ghost.__setstate__(self.reader.get_state(data))
        _status_set(ghost, SAVED)
        assert self.cache.get(oid) is ghost
        return ghost

    __getitem__ = get

    def get_stored_pickle(self, oid: bytes) -> bytes:
        """The data (class pickle + state) stored for ``oid``."""
        if oid in self.invalid_oids:
            raise StillConflictedError()
        record = self._load_record(oid)
        record_oid, data, _refs = unpack_record(record)
        if record_oid != oid:
            raise DurusError(f"storage returned the record of {record_oid!r} for oid {oid!r}")
        return data

    def _load_record(self, oid: bytes) -> bytes:
        """``storage.load(oid)``; after a ReadConflictError, sync, process the
        invalidations (which raise ReadConflictError if something this transaction
        read is stale) and try again, at most MAX_LOAD_ATTEMPTS loads in all: other
        clients may invalidate ``oid`` again between a sync and the next load."""
        for _attempt in range(MAX_LOAD_ATTEMPTS - 1):
            try:
                return self.storage.load(oid)
            except ReadConflictError:
                self._handle_invalidations(self.storage.sync(), read_oid=oid)
        return self.storage.load(oid)

    def load_state(self, obj: Any) -> None:
        """Load the stored state into the ghost ``obj``; ReadConflictError if gone."""
        oid = _oid_get(obj)
        assert _status_get(obj) == GHOST, f"load_state() of {obj!r}, which is not a ghost"
        assert _connection_get(obj) is self
        try:
            data = self.get_stored_pickle(oid)
        except KeyError:
            raise ReadConflictError([oid]) from None
        obj.__setstate__(self.reader.get_state(data))

    def get_crawler(self, start_oid: bytes = ROOT_OID, batch_size: int = 100) -> Iterator[Any]:
        """Every object reachable from ``start_oid``, each with its state loaded."""
        for oid, record in self.storage.gen_oid_record(start_oid=start_oid, batch_size=batch_size):
            obj = self.cache.get(oid)
            if obj is None or _status_get(obj) == GHOST:
                data = unpack_record(record)[1]
                if obj is None:
                    klass = real_class(self.reader.get_ghost(data))
                    obj = self.cache.get_instance(oid, klass, self)
                obj.__setstate__(self.reader.get_state(data))
                _status_set(obj, SAVED)
            yield obj

    # -- the persistence hooks

    def note_access(self, obj: Any) -> None:
        """Record that ``obj`` is read in this transaction (keeps a strong reference).

        The read hook of durus.persistent does the same inline through
        ``access_log``; keep the two in step.
        """
        _serial_set(obj, self.transaction_serial)
        self._accessed.append(obj)

    def note_change(self, obj: Any) -> None:
        """Register ``obj`` to be written at the next commit."""
        if _connection_get(obj) is not self:
            raise ValueError(f"{obj!r} does not belong to this connection")
        self.changed[_oid_get(obj)] = obj

    # -- transactions

    def commit(self) -> None:
        """Write every changed object (and new objects they reach) in one transaction."""
        if self.changed:
            if self.invalid_oids:
                raise StillConflictedError()
            self._commit_changes()
        else:
            self._sync()
        self.shrink_cache()
        self._end_transaction()

    def _commit_changes(self) -> None:
        """Serialize and store; on any failure undo the oids given to new objects."""
        writers: list[ObjectWriter] = []
        written: list[Any] = []
        try:
            self.storage.begin()
            for changed in list(self.changed.values()):
                writer = ObjectWriter(self)
                writers.append(writer)
                for obj in writer.gen_new_objects(changed):
                    self._store_object(writer, obj)
                    written.append(obj)
                writer.close()
            self.storage.end(self._handle_invalidations)
        except BaseException:
            self._undo_new_objects(writers)
            raise
        for obj in written:
            _status_set(obj, SAVED)
            self.note_access(obj)
            assert self.cache.get(_oid_get(obj)) is obj
        self.changed.clear()

    def _store_object(self, writer: ObjectWriter, obj: Any) -> None:
        """Add the record of ``obj`` to the storage's pending transaction."""
        oid = _oid_get(obj)
        if self.cache.get(oid) is not obj:
            self.cache[oid] = obj
        data, refs = writer.get_state(obj)
        record = pack_record(oid, data, refs)
        assert record[:8] == oid and record[12 : 12 + len(data)] == data, "record layout"
        self.storage.store(oid, record)

    def _undo_new_objects(self, writers: list[ObjectWriter]) -> None:
        """Forget the oids that a failed commit gave to new objects."""
        for writer in writers:
            writer.close()
            for obj in writer.objects_found:
                oid = _oid_get(obj)
                if self.cache.get(oid) is obj:
                    del self.cache.objects[oid]
                self.cache.recent_objects.discard(obj)
                _oid_set(obj, None)
                _connection_set(obj, None)
                _status_set(obj, UNSAVED)
                _set_class(obj, real_class(obj))
                assert obj._p_oid is None

    def abort(self) -> None:
        """Drop uncommitted changes (ghosting changed objects) and end the transaction."""
        for obj in self.changed.values():
            obj._p_set_status_ghost()
            assert obj._p_status == GHOST
        self.changed.clear()
        self._sync()
        self.shrink_cache()
        self._end_transaction()

    def pack(self) -> None:
        """abort(), then ask the storage to pack."""
        self.abort()
        self.storage.pack()

    def _end_transaction(self) -> None:
        """Switch the objects read in this transaction back to tracking; next serial.

        One pass in C over the access log (no Python-level loop): each object
        gets the twin of its class (a twin maps to itself). An object whose
        ``_p_connection`` was reset by hand still becomes a twin instance,
        which is harmless: its next read finds no connection and switches back.
        """
        accessed = self._accessed
        if accessed:
            _consume(
                map(_set_class, accessed, map(_twin_by_class.__getitem__, map(type, accessed)))
            )
            self.cache.recent_objects.merge_pending(clear=True)
        self.transaction_serial += 1
        assert not accessed and self.access_log in (None, accessed)

    def _sync(self) -> None:
        """Ghost every object invalidated by others (and those pending a conflict)."""
        oids = set(self.storage.sync())
        oids.update(self.invalid_oids)
        for oid in oids:
            obj = self.cache.get(oid)
            if obj is not None:
                obj._p_set_status_ghost()
        self.invalid_oids.clear()
        assert not self.invalid_oids

    def _handle_invalidations(self, oids: Any, read_oid: bytes | None = None) -> None:
        """Ghost invalidated objects this transaction neither read nor changed;
        conflict on the others (ghosting a changed object would drop its write)."""
        conflicts = []
        for oid in oids:
            obj = self.cache.get(oid)
            if obj is None:
                continue
            if _serial_get(obj) == self.transaction_serial or oid in self.changed:
                conflicts.append(oid)
            else:
                obj._p_set_status_ghost()
        if conflicts:
            self.invalid_oids.update(conflicts)
            if read_oid is None:
                raise WriteConflictError(conflicts)
            raise ReadConflictError([read_oid])

    def shrink_cache(self) -> None:
        self.cache.shrink(self)


class ObjectDictionary:
    """oid -> object, weakly held; removals are recorded in ``dead`` and purged lazily."""

    def __init__(self) -> None:
        self.mapping: dict[Any, KeyedRef[Any, Any]] = {}
        self.dead: set[Any] = set()
        mapping = self.mapping
        dead = self.dead

        def callback(ref: KeyedRef[Any, Any]) -> None:
            key = ref.key
            if key not in mapping:
                return
            if isinstance(ref, KeyedRef) and mapping[key] is not ref:
                return  # the key was rebound to another object before this one died
            dead.add(key)

        self.callback = callback

    def get(self, key: Any, default: Any = None) -> Any:
        ref = self.mapping.get(key)
        if ref is None or key in self.dead:
            return default
        obj = ref()
        if obj is None:
            return default
        return obj

    def __setitem__(self, key: Any, obj: Any) -> None:
        self.mapping[key] = KeyedRef(obj, self.callback, key)
        self.dead.discard(key)
        if len(self.dead) > DEAD_KEYS_PURGE_MIN + len(self.mapping) // 2:
            self._purge()  # keeps a cache under its target size from growing forever

    def __delitem__(self, key: Any) -> None:
        if key in self.mapping:
            self.dead.add(key)

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.mapping) - len(self.dead)

    def _purge(self) -> None:
        dead_keys = list(self.dead)
        for key in dead_keys:
            self.mapping.pop(key, None)
        self.dead.difference_update(dead_keys)
        assert self.dead.issubset(self.mapping)

    def __iter__(self) -> Iterator[Any]:
        self._purge()
        return iter(list(self.mapping))


class ReferenceContainer:
    """Strong references keyed by identity."""

    def __init__(self) -> None:
        self.map: dict[int, Any] = {}

    def add(self, x: Any) -> None:
        self.map[id(x)] = x

    def discard(self, x: Any) -> None:
        self.map.pop(id(x), None)

    def __contains__(self, x: Any) -> bool:
        return id(x) in self.map

    def __len__(self) -> int:
        return len(self.map)


class _RecentObjects(ReferenceContainer):
    """The cache's recent objects: a ReferenceContainer fed in bulk.

    ``pending`` is the connection's access log (objects read in the current
    transaction, strongly held there). Its entries are merged into ``map`` in
    one C-level ``dict.update`` before any query and at the transaction
    boundary, instead of one dict store per first read.
    """

    def __init__(self) -> None:
        self._map: dict[int, Any] = {}
        self.pending: list[Any] = []
        self._merged_count = 0

    @property
    def map(self) -> dict[int, Any]:  # type: ignore[override]
        self.merge_pending()
        return self._map

    def merge_pending(self, clear: bool = False) -> None:
        """Put the pending objects not merged yet into ``map``; with ``clear``, empty
        ``pending`` (the transaction boundary)."""
        pending = self.pending
        if self._merged_count < len(pending):
            fresh = pending[self._merged_count :]
            self._map.update(zip(map(id, fresh), fresh, strict=True))
            self._merged_count = len(pending)
        if clear:
            pending.clear()
            self._merged_count = 0
        assert self._merged_count == len(pending)

    def add(self, x: Any) -> None:
        self.merge_pending()
        self._map[id(x)] = x

    def discard(self, x: Any) -> None:
        self.merge_pending()
        self._map.pop(id(x), None)

    def __contains__(self, x: Any) -> bool:
        self.merge_pending()
        return id(x) in self._map

    def __len__(self) -> int:
        self.merge_pending()
        return len(self._map)


def _check_cache_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"cache target size must be an int, not {size!r}")
    if size <= 0:
        raise ValueError("cache target size must be > 0")
    return size


class Cache:
    """The connection's objects by oid, with a target size and LRU-by-serial eviction."""

    def __init__(self, size: int) -> None:
        self.objects = ObjectDictionary()
        self.recent_objects = _RecentObjects()
        self.size = _check_cache_size(size)
        self.finger = 0

    def get_size(self) -> int:
        return self.size

    def set_size(self, size: int) -> None:
        self.size = _check_cache_size(size)

    def get_count(self) -> int:
        return len(self.objects)

    def get(self, oid: bytes) -> Any:
        return self.objects.get(oid)

    def __setitem__(self, oid: bytes, obj: Any) -> None:
        assert _oid_get(obj) == oid
        self.objects[oid] = obj

    def __delitem__(self, oid: bytes) -> None:
        obj = self.objects.get(oid)
        if obj is not None and _oid_get(obj) is not None:
            raise ValueError(f"only objects without an oid may be dropped, not {obj!r}")
        del self.objects[oid]

    def get_instance(self, oid: bytes, klass: type, connection: Any) -> Any:
        return persistent_load(connection, self.objects, (oid, klass))

    def __iter__(self) -> Iterator[Any]:
        for oid in self.objects:
            yield self.objects.get(oid)

    def shrink(self, connection: Any) -> None:
        """Evict (ghost and release) objects least recently used, by transaction serial."""
        excess = len(self.objects) - self.size
        if excess <= 0:
            return
        start_s = perf_counter()
        candidates = self._eviction_candidates(connection.transaction_serial, 2 * excess)
        for _serial, oid in candidates:
            if len(self.objects) <= self.size:
                break
            self._evict(oid)
        if is_logging(SHRINK_LOG_LEVEL):
            log(
                SHRINK_LOG_LEVEL,
                "shrink: %d candidates, %d objects left, %.6f s",
                len(candidates),
                len(self.objects),
                perf_counter() - start_s,
            )

    def _eviction_candidates(self, current_serial: int, wanted: int) -> list[tuple[int, bytes]]:
        """``(serial, oid)`` of up to ``wanted`` objects not read now, scanning from finger."""
        oids = list(self.objects)
        count = len(oids)
        start = self.finger % count if count else 0
        candidates: list[tuple[int, bytes]] = []
        scanned = 0
        while scanned < count and len(candidates) < wanted:
            oid = oids[(start + scanned) % count]
            scanned += 1
            obj = self.objects.get(oid)
            if obj is not None:
                serial = _serial_get(obj)
                if serial != current_serial:
                    candidates.append((serial, oid))
        self.finger = start + scanned
        candidates.sort()
        return candidates

    def _evict(self, oid: bytes) -> None:
        """Ghost the object if it is SAVED and drop our strong reference to it."""
        obj = self.objects.get(oid)
        if obj is None:
            return
        if _status_get(obj) == SAVED:
            obj._p_set_status_ghost()
        self.recent_objects.discard(obj)


def touch_every_reference(connection: Connection, *words: str | bytes) -> None:
    """Note a change on every stored object whose record mentions any of ``words``."""
    needles = [as_bytes(word) for word in words]
    reader = connection.reader
    for oid, record in connection.get_storage().gen_oid_record():
        data = unpack_record(record)[1]
        state_pickle = reader.get_state_pickle(data)
        if any(needle in data or needle in state_pickle for needle in needles):
            obj = connection.get(oid)
            obj._p_note_change()


def gen_every_instance(connection: Connection, *classes: type) -> Iterator[Any]:
    """``connection.get(oid)`` for every stored object whose class subclasses ``classes``."""
    for oid, record in connection.get_storage().gen_oid_record():
        klass = pickle.loads(unpack_record(record)[1])
        if isinstance(klass, type) and issubclass(klass, classes):
            yield connection.get(oid)
