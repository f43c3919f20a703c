"""Objects to records and back: the pickling half of the record format.

Owns how a persistent object's ``data`` is produced and read (FORMATS.md
sections 3 and 4): one protocol-2 pickler writes the class pickle and then the
state pickle with a shared memo, the state part is zlib-compressed when
``WRITE_COMPRESSED_STATE_PICKLES`` is true, and every persistent instance met
on the way becomes the persistent id ``(oid, application class)``. The record
byte layout itself lives in ``durus.record`` and is re-exported here.

Never touches a storage or a file: the writer gets new oids from the
connection and returns bytes; the reader turns bytes into state and ghosts.
The connection decides what to write and when.

Records must be byte-identical to Durus 4.3. ``type(obj)`` of an object not
yet read in the current transaction is its tracking twin (durus.persistent),
so everything pickled here names ``real_class(obj)`` instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from io import BytesIO
from pickle import Pickler, Unpickler, UnpicklingError, loads
from typing import Any

from durus.persistent import (
    GHOST,
    PersistentBase,
    _connection_get,
    _oid_get,
    _real_by_twin,
    new_ghost,
    real_class,
)
from durus.record import extract_class_name, pack_record, split_oids, unpack_record
from durus.utils import check_oid

__all__ = [
    "PICKLE_PROTOCOL",
    "WRITE_COMPRESSED_STATE_PICKLES",
    "COMPRESSED_START_BYTE",
    "pack_record",
    "unpack_record",
    "split_oids",
    "extract_class_name",
    "ObjectWriter",
    "ObjectReader",
    "persistent_load",
]

PICKLE_PROTOCOL = 2
WRITE_COMPRESSED_STATE_PICKLES = True
COMPRESSED_START_BYTE = zlib.compress(b"")[0]
assert COMPRESSED_START_BYTE == 0x78
_COMPRESSED_START = bytes((COMPRESSED_START_BYTE,))

# Every zlib.compress call allocates and frees about 256 KiB of deflate state in
# 64 KiB blocks. With glibc's initial thresholds, whether those frees give the
# memory back to the system (and the next call faults in and zeroes fresh pages)
# depends on where the blocks happen to land in the heap: in one process small
# commits ran at 13k/s, in another with the same code at 38k/s (strace: one brk
# per compress call). Allocating and freeing one block larger than glibc's mmap
# threshold raises that threshold, and the heap's trim threshold with it, to the
# block's size, so deflate's blocks stay in the heap between calls. Elsewhere
# this is one harmless allocation.
_ALLOCATOR_HEADROOM_BYTES = 1 << 20


def _keep_deflate_memory_between_calls() -> None:
    headroom = bytearray(_ALLOCATOR_HEADROOM_BYTES)
    assert len(headroom) == _ALLOCATOR_HEADROOM_BYTES
    del headroom


_keep_deflate_memory_between_calls()


class _RecordPickler(Pickler):
    """A protocol-2 pickler that turns persistent instances into ``(oid, class)``."""

    def __init__(self, file: BytesIO, writer: ObjectWriter) -> None:
        Pickler.__init__(self, file, PICKLE_PROTOCOL)
        self.writer: ObjectWriter | None = writer

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, PersistentBase):
            writer = self.writer
            assert writer is not None, "persistent_id() after close()"
            return writer._persistent_id(obj)
        return None


class ObjectWriter:
    """Serializes the objects of one commit; assigns oids to newly reached objects."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.objects_found: list[Any] = []
        self.refs: set[bytes] = set()
        self.sio = BytesIO()  # the pickler's file; holds the latest dump
        self.pickler: _RecordPickler | None = _RecordPickler(self.sio, self)
        self._class_pickles: dict[type, tuple[bytes, dict[int, Any]]] = {}
        self._new_objects_generated = False

    def _persistent_id(self, obj: Any) -> tuple[bytes, type]:
        """The persistent id of ``obj``, giving it an oid if it has none."""
        oid = _oid_get(obj)
        if oid is None:
            oid = check_oid(self.connection.new_oid())
            obj._p_oid = oid
            obj._p_connection = self.connection
            self.objects_found.append(obj)
        elif _connection_get(obj) is not self.connection:
            raise ValueError(f"Reference to {obj!r} has a different connection.")
        self.refs.add(oid)
        return oid, real_class(obj)

    def gen_new_objects(self, obj: Any) -> Iterator[Any]:
        """``obj``, then every object discovered while serializing (the list grows)."""
        if self._new_objects_generated:
            raise RuntimeError("gen_new_objects() already called.")
        self._new_objects_generated = True
        return self._gen_new_objects(obj)

    def _gen_new_objects(self, obj: Any) -> Iterator[Any]:
        yield obj
        yield from self.objects_found  # appended to while the caller serializes

    def get_state(self, obj: Any) -> tuple[bytes, bytes]:
        """``(data, refs)`` of ``obj``: class pickle + (compressed) state pickle, sorted refs.

        The class pickle and the memo it leaves (the class in slot 0, where the
        state pickle refers to it) are made once per class and writer; each
        record then only pickles its state, starting from a copy of that memo.
        """
        pickler = self.pickler
        if pickler is None:
            raise RuntimeError("ObjectWriter used after close()")
        klass = real_class(obj)
        found = self._class_pickles.get(klass)
        if found is None:
            found = self._class_pickles[klass] = self._pickle_class(pickler, klass)
        class_pickle, memo = found
        self.refs.clear()
        pickler.memo = memo  # copied by the pickler: ``memo`` itself stays as it is
        state_pickle = self._dump(pickler, obj.__getstate__())
        assert state_pickle[:2] == b"\x80\x02"
        if WRITE_COMPRESSED_STATE_PICKLES:
            state_pickle = zlib.compress(state_pickle)
        self.refs.discard(_oid_get(obj))
        refs = b"".join(sorted(self.refs))
        self.refs.clear()
        assert len(refs) % 8 == 0 and class_pickle[-1:] == b"."
        return class_pickle + state_pickle, refs

    def _pickle_class(self, pickler: _RecordPickler, klass: type) -> tuple[bytes, dict[int, Any]]:
        """The class pickle of ``klass`` and the pickler's memo right after it."""
        pickler.clear_memo()
        class_pickle = self._dump(pickler, klass)
        memo: dict[int, Any] = pickler.memo.copy()
        assert class_pickle[:2] == b"\x80\x02" and class_pickle[-1:] == b"."
        return class_pickle, memo

    def _dump(self, pickler: _RecordPickler, value: Any) -> bytes:
        """The pickle of ``value`` (the memo carries over from earlier dumps)."""
        sio = self.sio
        sio.seek(0)
        sio.truncate()
        pickler.dump(value)
        pickled = sio.getvalue()
        assert pickled[-1:] == b"."
        return pickled

    def close(self) -> None:
        """Break the pickler/writer reference cycle."""
        if self.pickler is not None:
            self.pickler.writer = None
        self.pickler = None


class _RecordUnpickler(Unpickler):
    """An unpickler resolving ``(oid, class)`` persistent ids through a reader."""

    def __init__(self, file: BytesIO, reader: ObjectReader) -> None:
        Unpickler.__init__(self, file)
        self.reader = reader

    def persistent_load(self, pid: Any) -> Any:
        return self.reader._persistent_load(pid)


class ObjectReader:
    """Turns record data into states and ghosts for one connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.load_count = 0
        self._class_by_pickle: dict[bytes, type] = {}
        self._fast_load: _FastPersistentLoad | None = None

    def _persistent_load(self, oid_class: Any) -> Any:
        return persistent_load(self.connection, self.connection.cache.objects, oid_class)

    def _class_and_unpickler(self, data: bytes) -> tuple[type, _RecordUnpickler, BytesIO]:
        """Load the class pickle; the unpickler is left positioned at the state pickle."""
        file = BytesIO(data)
        unpickler = _RecordUnpickler(file, self)
        klass = unpickler.load()
        if not isinstance(klass, type):
            raise TypeError(f"record data starts with {klass!r}, not a class")
        return klass, unpickler, file

    def _cached_class(self, data: bytes) -> tuple[type, int] | None:
        """``(class, end of the class pickle)`` for the usual class pickle
        ``PROTO 2, GLOBAL "module\\nname\\n", BINPUT 0, STOP``, looked up once per
        distinct pickle; None for any other shape (the caller unpickles it)."""
        if data[:3] != b"\x80\x02c":
            return None
        name_end = data.find(b"\n", data.find(b"\n", 3) + 1)
        class_end = name_end + 4
        if name_end < 0 or data[name_end + 1 : class_end] != b"q\x00.":
            return None
        class_pickle = data[:class_end]
        klass = self._class_by_pickle.get(class_pickle)
        if klass is None:
            klass = self._class_and_unpickler(class_pickle)[0]
            self._class_by_pickle[class_pickle] = klass
        assert data[class_end - 1 : class_end] == b"."
        return klass, class_end

    def get_state(self, data: bytes, load: bool = True) -> Any:
        """The unpickled state of record ``data`` (or, with ``load=False``, its pickle).

        Usual records skip unpickling the class pickle (slow: an import lookup
        each time): the class comes from a per-reader table, and the state
        pickle is read after ``_CLASS_MEMO_PREFIX``, which puts that class in
        memo slot 0 where the state pickle may refer to it. A state pickle that
        can refer to neither a persistent id nor that slot (the usual case for
        objects without references, see ``_is_self_contained``) is read by
        ``pickle.loads``, which costs a fraction of setting up an unpickler.
        """
        self.load_count += 1
        found = self._cached_class(data) if load else None
        if found is None:
            return self._get_state_general(data, load)
        klass, class_end = found
        if data[class_end : class_end + 1] == _COMPRESSED_START:
            try:
                state_pickle = zlib.decompress(memoryview(data)[class_end:])
            except zlib.error:
                return self._get_state_general(data, load)
        else:
            state_pickle = data[class_end:]
        if _is_self_contained(state_pickle):
            try:
                return loads(state_pickle)
            except UnpicklingError:
                pass  # e.g. a text GET of slot 0, which pickle never writes at protocol 2
        loader = self._fast_load
        if loader is None:
            loader = self._fast_load = _FastPersistentLoad(self.connection)
        unpickler = Unpickler(BytesIO(_CLASS_MEMO_PREFIX + state_pickle))
        unpickler.persistent_load = loader.load  # type: ignore[method-assign]
        loader.record_class = klass
        try:
            return unpickler.load()
        finally:
            loader.record_class = None

    def _get_state_general(self, data: bytes, load: bool) -> Any:
        """get_state for any data: one unpickler over the class and the state pickle."""
        _klass, unpickler, file = self._class_and_unpickler(data)
        position = file.tell()
        state_pickle = data[position:]
        if state_pickle[:1] == bytes((COMPRESSED_START_BYTE,)):
            try:
                state_pickle = zlib.decompress(state_pickle)
            except zlib.error:
                pass  # not compressed after all: read the raw bytes
            else:
                file.seek(position)
                file.write(state_pickle)
                file.truncate()
                file.seek(position)
        if not load:
            return state_pickle
        return unpickler.load()

    def get_state_pickle(self, data: bytes) -> bytes:
        """The (decompressed) state pickle of record ``data``."""
        state_pickle: bytes = self.get_state(data, load=False)
        return state_pickle

    def get_ghost(self, data: bytes) -> Any:
        """A new ghost of the class named by ``data``, with no oid and no connection."""
        found = self._cached_class(data)
        klass = found[0] if found is not None else self._class_and_unpickler(data)[0]
        ghost = new_ghost(klass, None, None)
        assert ghost._p_status == GHOST
        return ghost

    def get_load_count(self) -> int:
        return self.load_count


# PROTO 2, BININT1 0, BINPERSID, BINPUT 0, POP: memo[0] = persistent_load(0), the class.
_CLASS_MEMO_PREFIX = b"\x80\x02K\x00Qq\x000"

# Bytes whose absence from a protocol-2 pickle rules out every opcode that needs
# more than pickle.loads gives: the persistent id opcodes (PERSID "P", BINPERSID
# "Q") and the binary reads of memo slot 0 (BINGET 0, LONG_BINGET 0), the slot
# that the class pickle fills. An opcode's byte cannot be absent from the
# stream, so when none of these occurs anywhere the pickle has no such opcode
# (the converse does not hold: the bytes may sit inside data, and then the
# unpickler is used as for any other pickle).
_HOOK_BYTES = (b"Q", b"P", b"h\x00", b"j\x00\x00\x00\x00")


def _is_self_contained(state_pickle: bytes) -> bool:
    """True when ``state_pickle`` is protocol 2 and holds none of ``_HOOK_BYTES``
    (spelled out: a generator over them would cost more than the searches)."""
    return (
        state_pickle[:2] == b"\x80\x02"
        and b"Q" not in state_pickle
        and b"P" not in state_pickle
        and b"h\x00" not in state_pickle
        and b"j\x00\x00\x00\x00" not in state_pickle
    )


assert not any(_is_self_contained(b"\x80\x02" + hook) for hook in _HOOK_BYTES)


class _FastPersistentLoad:
    """``persistent_load`` bound to a connection's cache, for ObjectReader.get_state.

    The persistent id 0 answers ``record_class`` once (the class of the record
    being read, see ``_CLASS_MEMO_PREFIX``). A well-formed id whose object is
    cached, live and of that exact class is answered inline; everything else
    goes through ``persistent_load`` (which rejects bad ids).
    """

    def __init__(self, connection: Any) -> None:
        cache_objects = connection.cache.objects
        self.record_class: type | None = None
        self.load = self._make_load(connection, cache_objects)

    def _make_load(self, connection: Any, cache_objects: Any) -> Callable[[Any], Any]:
        # The inline paths read an ObjectDictionary's insides; any other mapping
        # (a test's plain dict) always takes the general path.
        mapping: dict[Any, Any] | None = getattr(cache_objects, "mapping", None)
        dead = getattr(cache_objects, "dead", None)
        inline = isinstance(mapping, dict) and isinstance(dead, set)
        real_by_twin_get = _real_by_twin.get

        def load(oid_class: Any) -> Any:
            if type(oid_class) is tuple and len(oid_class) == 2 and inline:
                oid, klass = oid_class
                ref = mapping.get(oid)  # type: ignore[union-attr]
                obj = None if ref is None or oid in dead else ref()  # type: ignore[operator]
                if obj is None:
                    if type(oid) is bytes and len(oid) == 8:  # what check_oid accepts
                        ghost = new_ghost(klass, oid, connection)
                        cache_objects[oid] = ghost
                        return ghost
                else:
                    found = type(obj)
                    if real_by_twin_get(found, found) is klass:
                        return obj
            elif oid_class == 0 and type(oid_class) is int and self.record_class is not None:
                klass = self.record_class
                self.record_class = None
                return klass
            return persistent_load(connection, cache_objects, oid_class)

        return load


def persistent_load(connection: Any, cache_objects: Any, oid_class: Any) -> Any:
    """The object for a persistent id ``(oid, class)``: the cached one if it is exactly
    of that class, else a new ghost of the class, cached in its place."""
    if not (isinstance(oid_class, tuple) and len(oid_class) == 2):
        raise TypeError(f"a persistent id must be an (oid, class) pair, not {oid_class!r}")
    oid, klass = oid_class
    oid = check_oid(oid)
    obj = cache_objects.get(oid)
    if obj is not None and real_class(obj) is klass:
        return obj
    ghost = new_ghost(klass, oid, connection)
    cache_objects[oid] = ghost
    assert ghost._p_oid == oid
    return ghost
