"""durus.serialize: byte-exact records, persistent references, reading back.

The vectors in tests/data were written by Durus 4.3; every record must come
out of ObjectWriter byte for byte (the compressed ones too when the zlib
library is the one the vectors were made with, 1.2.13).
"""

from __future__ import annotations

import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

import pytest
import vectorclasses

import durus.record
import durus.serialize as serialize
from durus.persistent import (
    GHOST,
    ConnectionBase,
    Persistent,
    PersistentObject,
    is_tracking_class,
    new_ghost,
    real_class,
    untrack,
)
from durus.serialize import (
    COMPRESSED_START_BYTE,
    PICKLE_PROTOCOL,
    ObjectReader,
    ObjectWriter,
    pack_record,
    persistent_load,
    unpack_record,
)
from durus.utils import int8_to_str

DATA_DIR = Path(__file__).parent.parent / "data"
EXPECTED = json.loads((DATA_DIR / "expected.json").read_text())
RECORD_NAMES = sorted(name for name in EXPECTED if name.startswith("record_"))
SAME_ZLIB = zlib.ZLIB_RUNTIME_VERSION == "1.2.13"


class FakeCache:
    def __init__(self) -> None:
        self.objects: dict[bytes, Any] = {}


class FakeConnection(ConnectionBase):
    """Hands out oids from a counter; keeps a dict cache for the reader."""

    __slots__ = ("next_oid", "cache")

    def __init__(self, first_oid: int = 10) -> None:
        self.next_oid = first_oid
        self.cache = FakeCache()

    def new_oid(self) -> bytes:
        oid = int8_to_str(self.next_oid)
        self.next_oid += 1
        return oid

    def note_access(self, obj: Any) -> None:
        obj._p_serial = self.transaction_serial


def oid(n: int) -> bytes:
    return int8_to_str(n)


def stored(obj: Any, connection: Any, n: int) -> Any:
    obj._p_oid = oid(n)
    obj._p_connection = connection
    return obj


@pytest.fixture
def compressed() -> Any:
    saved = serialize.WRITE_COMPRESSED_STATE_PICKLES
    serialize.WRITE_COMPRESSED_STATE_PICKLES = True
    yield
    serialize.WRITE_COMPRESSED_STATE_PICKLES = saved


@pytest.fixture
def uncompressed() -> Any:
    saved = serialize.WRITE_COMPRESSED_STATE_PICKLES
    serialize.WRITE_COMPRESSED_STATE_PICKLES = False
    yield
    serialize.WRITE_COMPRESSED_STATE_PICKLES = saved


def vector(name: str) -> bytes:
    return (DATA_DIR / name).read_bytes()


def split_data(name: str, data: bytes) -> tuple[bytes, bytes]:
    """(class pickle, inflated state pickle) of a record's data."""
    class_length = EXPECTED[name]["class_pickle_length"]
    state = data[class_length:]
    if EXPECTED[name]["state_compressed"]:
        state = zlib.decompress(state)
    return data[:class_length], state


def test_constants_and_reexports() -> None:
    assert PICKLE_PROTOCOL == 2
    assert serialize.WRITE_COMPRESSED_STATE_PICKLES is True
    assert COMPRESSED_START_BYTE == 0x78
    for name in ("pack_record", "unpack_record", "split_oids", "extract_class_name"):
        assert getattr(serialize, name) is getattr(durus.record, name)


# -- ObjectWriter


def test_note_record_is_byte_identical(compressed: Any) -> None:
    connection = FakeConnection()
    note = stored(vectorclasses.Note("first", "body text", ["a", "b"]), connection, 4)
    writer = ObjectWriter(connection)
    data, refs = writer.get_state(note)
    writer.close()
    record = pack_record(note._p_oid, data, refs)
    name = "record_oid4_Note.bin"
    assert split_data(name, data) == split_data(name, unpack_record(vector(name))[1])
    if SAME_ZLIB:
        assert record == vector(name)


def test_pair_records_are_byte_identical(compressed: Any) -> None:
    connection = FakeConnection()
    note = stored(vectorclasses.Note("first", "body text", ["a", "b"]), connection, 4)
    untrack(note)  # a twin instance must still be referenced by its real class
    pair = stored(vectorclasses.Pair(note, 7), connection, 5)
    data, refs = ObjectWriter(connection).get_state(pair)
    assert refs == oid(4)
    if SAME_ZLIB:
        assert pack_record(oid(5), data, refs) == vector("record_oid5_Pair.bin")
    name = "record_oid5_Pair.bin"
    assert split_data(name, data) == split_data(name, unpack_record(vector(name))[1])


def test_uncompressed_pair_record(uncompressed: Any) -> None:
    connection = FakeConnection()
    pair = stored(vectorclasses.Pair("left", [1, 2]), connection, 1)
    data, refs = ObjectWriter(connection).get_state(pair)
    assert pack_record(oid(1), data, refs) == vector("record_oid1_Pair_uncompressed.bin")


def test_twin_instance_pickles_real_class(uncompressed: Any) -> None:
    connection = FakeConnection()
    pair = stored(vectorclasses.Pair("left", [1, 2]), connection, 1)
    untrack(pair)
    assert is_tracking_class(type(pair))
    data, _refs = ObjectWriter(connection).get_state(pair)
    assert data.startswith(b"\x80\x02cvectorclasses\nPair\nq\x00.")


def test_refs_sorted_unique_and_without_own_oid(uncompressed: Any) -> None:
    connection = FakeConnection()
    a, b = stored(Persistent(), connection, 3), stored(Persistent(), connection, 1)
    holder = stored(Persistent(), connection, 2)
    holder.items = [a, b, a, holder]
    data, refs = ObjectWriter(connection).get_state(holder)
    assert refs == oid(1) + oid(3)
    assert holder._p_status == 1  # writing never changes status


def test_new_objects_get_oids_and_are_generated_in_order(uncompressed: Any) -> None:
    connection = FakeConnection(first_oid=20)
    root = stored(Persistent(), connection, 0)
    child, grandchild = Persistent(), Persistent()
    child.next = grandchild
    root.child = child
    writer = ObjectWriter(connection)
    seen = []
    for obj in writer.gen_new_objects(root):
        writer.get_state(obj)
        seen.append(obj)
    assert seen == [root, child, grandchild]
    assert child._p_oid == oid(20) and grandchild._p_oid == oid(21)
    assert child._p_connection is connection and writer.objects_found == [child, grandchild]
    with pytest.raises(RuntimeError, match="already called"):
        writer.gen_new_objects(root)


def test_reference_to_another_connection_is_refused() -> None:
    connection, other = FakeConnection(), FakeConnection()
    foreign = stored(Persistent(), other, 9)
    holder = stored(Persistent(), connection, 1)
    holder.ref = foreign
    with pytest.raises(ValueError, match="<Persistent 9> has a different connection"):
        ObjectWriter(connection).get_state(holder)


def test_writer_after_close() -> None:
    connection = FakeConnection()
    writer = ObjectWriter(connection)
    writer.close()
    writer.close()
    with pytest.raises(RuntimeError):
        writer.get_state(stored(Persistent(), connection, 1))


def test_computed_state_is_none(uncompressed: Any) -> None:
    from durus.persistent import ComputedAttribute

    connection = FakeConnection()
    data, refs = ObjectWriter(connection).get_state(stored(ComputedAttribute(), connection, 1))
    assert data.endswith(b"\x80\x02N.") and refs == b""


# -- ObjectReader


def test_reader_states_and_load_count() -> None:
    connection = FakeConnection()
    reader = ObjectReader(connection)
    data = unpack_record(vector("record_oid5_Pair.bin"))[1]
    state = reader.get_state(data)
    assert state["right"] == 7 and state["left"]._p_oid == oid(4)
    assert state["left"]._p_status == GHOST and real_class(state["left"]) is vectorclasses.Note
    assert connection.cache.objects[oid(4)] is state["left"]
    pickle_bytes = reader.get_state_pickle(data)
    assert pickle_bytes.hex() == EXPECTED["record_oid5_Pair.bin"]["state_pickle_hex"]
    assert reader.get_load_count() == 2 and reader.load_count == 2


def test_reader_uncompressed_and_false_zlib_start() -> None:
    reader = ObjectReader(FakeConnection())
    data = unpack_record(vector("record_oid1_Pair_uncompressed.bin"))[1]
    assert reader.get_state(data) == {"left": "left", "right": [1, 2]}
    class_pickle = pickle.dumps(vectorclasses.Pair, 2)
    fake = class_pickle + b"\x78not zlib"
    assert reader.get_state(fake, load=False) == b"\x78not zlib"


def test_get_ghost() -> None:
    reader = ObjectReader(FakeConnection())
    ghost = reader.get_ghost(unpack_record(vector("record_oid4_Note.bin"))[1])
    assert ghost._p_status == GHOST and ghost._p_oid is None and ghost._p_connection is None
    assert ghost.__class__ is vectorclasses.Note and is_tracking_class(type(ghost))
    assert reader.load_count == 0


def test_reader_rejects_data_not_starting_with_a_class() -> None:
    with pytest.raises(TypeError):
        ObjectReader(FakeConnection()).get_state(pickle.dumps(3, 2))


# -- persistent_load


def test_persistent_load_reuses_exact_class_and_replaces_others() -> None:
    connection = FakeConnection()
    cache: dict[bytes, Any] = {}
    first = persistent_load(connection, cache, (oid(3), vectorclasses.Note))
    assert cache[oid(3)] is first and first._p_connection is connection
    assert persistent_load(connection, cache, (oid(3), vectorclasses.Note)) is first
    first._p_status = 0
    untrack(first)
    assert persistent_load(connection, cache, (oid(3), vectorclasses.Note)) is first
    replaced = persistent_load(connection, cache, (oid(3), Persistent))
    assert replaced is not first and real_class(replaced) is Persistent
    assert cache[oid(3)] is replaced


def test_persistent_load_rejects_bad_ids() -> None:
    connection = FakeConnection()
    with pytest.raises(TypeError):
        persistent_load(connection, {}, oid(1))
    with pytest.raises(ValueError):
        persistent_load(connection, {}, (b"short", Persistent))
    with pytest.raises(TypeError):
        persistent_load(connection, {}, (oid(1), int))


def test_persistent_load_of_a_subclass_is_not_the_cached_base() -> None:
    class Sub(PersistentObject):
        __slots__ = ()

    connection = FakeConnection()
    cache: dict[bytes, Any] = {oid(1): new_ghost(PersistentObject, oid(1), connection)}
    assert real_class(persistent_load(connection, cache, (oid(1), Sub))) is Sub


# -- every vector round-trips through a connection


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_vector_round_trip(name: str) -> None:
    pytest.importorskip("durus.btree")
    from durus.connection import Connection
    from durus.storage import MemoryStorage

    storage = MemoryStorage()
    uncompressed_set = "uncompressed" in name
    for other in RECORD_NAMES:
        if ("uncompressed" in other) == uncompressed_set:
            record = vector(other)
            storage.records[record[:8]] = record
    storage.oid = 1000
    connection = Connection(storage)
    record = vector(name)
    obj = connection.get(record[:8])
    saved = serialize.WRITE_COMPRESSED_STATE_PICKLES
    serialize.WRITE_COMPRESSED_STATE_PICKLES = not uncompressed_set
    try:
        writer = ObjectWriter(connection)
        data, refs = writer.get_state(obj)
        writer.close()
    finally:
        serialize.WRITE_COMPRESSED_STATE_PICKLES = saved
    expected = EXPECTED[name]
    class_pickle, state_pickle = split_data(name, data)
    assert class_pickle.hex() == expected["class_pickle_hex"]
    if name != "record_oid1_Pair_uncompressed.bin":  # its value aliases a slot name
        assert state_pickle.hex() == expected["state_pickle_hex"]
    assert [int.from_bytes(r, "big") for r in serialize.split_oids(refs)] == expected["refs"]
    if SAME_ZLIB and name != "record_oid1_Pair_uncompressed.bin":
        assert pack_record(record[:8], data, refs) == record


def test_writer_attributes() -> None:
    connection = FakeConnection()
    writer = ObjectWriter(connection)
    assert writer.connection is connection and writer.objects_found == []
    assert writer.refs == set() and writer.sio.getvalue() == b""
    assert isinstance(writer.pickler, pickle.Pickler)
    writer.close()
    assert writer.pickler is None


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_reader_fast_path_matches_the_general_path(name: str) -> None:
    """get_state's class table and memo prefix give what unpickling both pickles gives."""
    from durus.connection import Connection
    from durus.storage import MemoryStorage

    data = unpack_record(vector(name))[1]
    fast_reader = Connection(MemoryStorage()).reader
    general_reader = Connection(MemoryStorage()).reader
    fast = fast_reader.get_state(data)
    general = general_reader._get_state_general(data, load=True)
    assert fast_reader._class_by_pickle  # the fast path was taken
    assert _as_plain_pickle(fast) == _as_plain_pickle(general)


def _as_plain_pickle(state: Any) -> bytes:
    """``state`` pickled with every persistent object as ``(oid, class name)``."""
    sio = io.BytesIO()
    pickler = pickle.Pickler(sio, 2)

    def persistent_id(obj: Any) -> Any:
        if isinstance(obj, PersistentObject):
            return obj._p_oid, real_class(obj).__qualname__
        return None

    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(state)
    return sio.getvalue()


def test_reader_data_without_a_state_pickle() -> None:
    reader = ObjectReader(FakeConnection())
    with pytest.raises(EOFError):
        reader.get_state(pickle.dumps(vectorclasses.Pair, 2))
