"""durus.serialize's shortcuts give exactly what the plain way gives.

The writer pickles each class once per writer and starts every state pickle
from the memo the class pickle left; the reader reads self-contained state
pickles with ``pickle.loads``. Both are checked here against the plain way
(one pickler per record dumping the class and then the state; one unpickler
over both pickles), byte for byte and state for state.
"""

from __future__ import annotations

import io
import pickle
import zlib
from typing import Any

import pytest

import durus.serialize as serialize
from durus.persistent import ConnectionBase, Persistent, real_class
from durus.serialize import ObjectReader, ObjectWriter
from durus.utils import int8_to_str


class FakeCache:
    def __init__(self) -> None:
        self.objects: dict[bytes, Any] = {}


class FakeConnection(ConnectionBase):
    """Hands out oids from a counter; keeps a dict cache for the reader."""

    __slots__ = ("next_oid", "cache")

    def __init__(self) -> None:
        self.next_oid = 100
        self.cache = FakeCache()

    def new_oid(self) -> bytes:
        self.next_oid += 1
        return int8_to_str(self.next_oid)

    def note_access(self, obj: Any) -> None:
        obj._p_serial = self.transaction_serial


class Leaf(Persistent):
    pass


class Branch(Persistent):
    pass


def stored(obj: Any, connection: Any, number: int) -> Any:
    obj._p_oid = int8_to_str(number)
    obj._p_connection = connection
    return obj


class _PlainPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Persistent):
            return obj._p_oid, real_class(obj)
        return None


def plain_data(obj: Any) -> bytes:
    """The record data the way Durus 4.3 makes it: one pickler, class then state."""
    sio = io.BytesIO()
    pickler = _PlainPickler(sio, 2)
    pickler.dump(real_class(obj))
    class_end = sio.tell()
    pickler.dump(obj.__getstate__())
    data = sio.getvalue()
    return data[:class_end] + zlib.compress(data[class_end:])


def make_objects(connection: Any) -> list[Any]:
    """Objects of two classes, with references to each other and to their classes."""
    leaves = [stored(Leaf(), connection, n) for n in range(1, 4)]
    for number, leaf in enumerate(leaves):
        leaf.number = number
        leaf.text = "PQ" * number  # the reader's hook bytes inside data
    branch = stored(Branch(), connection, 10)
    branch.children = leaves
    branch.kind = Branch  # the record's own class again: BINGET of memo slot 0
    branch.other_kind = Leaf
    leaves[0].parent = branch
    leaves[1].me = leaves[1]  # a reference to itself
    plain = stored(Leaf(), connection, 5)  # no reference, no hook byte: pickle.loads
    plain.number, plain.text = 7, "abc"
    return [*leaves, branch, leaves[2], plain]


def test_writer_records_match_the_plain_way() -> None:
    connection = FakeConnection()
    objects = make_objects(connection)
    writer = ObjectWriter(connection)
    for obj in objects:  # one writer: the per-writer class pickles are reused
        data, _refs = writer.get_state(obj)
        assert data == plain_data(obj)
    writer.close()


def test_writer_after_a_failed_state_pickle() -> None:
    connection = FakeConnection()
    good, bad = stored(Leaf(), connection, 1), stored(Leaf(), connection, 2)
    good.value = [1, 2]
    bad.value = lambda: None  # not picklable
    writer = ObjectWriter(connection)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        writer.get_state(bad)
    assert writer.get_state(good)[0] == plain_data(good)


def test_writer_keeps_sio_as_the_pickler_file() -> None:
    connection = FakeConnection()
    leaf = stored(Leaf(), connection, 1)
    leaf.value = 5
    writer = ObjectWriter(connection)
    writer.get_state(leaf)
    assert pickle.loads(writer.sio.getvalue()) == {"value": 5}


def general_state(data: bytes, connection: Any) -> Any:
    """The state by the general path: one unpickler over class and state pickle."""
    return ObjectReader(connection)._get_state_general(data, True)


def test_reader_states_match_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = []

    def counting_loads(state_pickle: bytes) -> Any:
        loaded.append(state_pickle)
        return pickle.loads(state_pickle)

    monkeypatch.setattr(serialize, "loads", counting_loads)
    writer_connection = FakeConnection()
    records = [
        ObjectWriter(writer_connection).get_state(obj)[0] for obj in make_objects(writer_connection)
    ]
    fast_connection, general_connection = FakeConnection(), FakeConnection()
    reader = ObjectReader(fast_connection)
    for data in records:
        fast = reader.get_state(data)
        general = general_state(data, general_connection)
        assert fast.keys() == general.keys()
        for key, value in fast.items():
            if isinstance(value, Persistent):
                assert real_class(value) is real_class(general[key])
                assert value._p_oid == general[key]._p_oid
            elif isinstance(value, list):
                assert [item._p_oid for item in value] == [item._p_oid for item in general[key]]
            else:
                assert value == general[key]
    assert reader.get_load_count() == len(records)
    assert len(loaded) == 1  # only the plain leaf is self-contained


@pytest.mark.parametrize(
    ("state_pickle", "self_contained"),
    [
        (pickle.dumps({"a": 1, "name": "item"}, 2), True),
        (pickle.dumps({"a": 1, "name": "Paris"}, 2), False),  # "P" in data
        (pickle.dumps({"a": 81}, 2), False),  # 81 is "Q"
        (pickle.dumps({"a": 1}, 0), False),  # not protocol 2
        (b"\x80\x02K\x00Q.", False),  # BINPERSID
        (b"\x80\x02h\x00.", False),  # BINGET 0
        (b"\x80\x02j\x00\x00\x00\x00.", False),  # LONG_BINGET 0
    ],
)
def test_is_self_contained(state_pickle: bytes, self_contained: bool) -> None:
    assert serialize._is_self_contained(state_pickle) is self_contained


def test_text_get_of_the_class_slot_falls_back_to_the_unpickler() -> None:
    """Pickle never writes a text GET at protocol 2, but such a record still reads."""
    connection = FakeConnection()
    class_pickle = pickle.dumps(Leaf, 2)
    assert class_pickle.endswith(b"q\x00.")
    state_pickle = b"\x80\x02}q\x01X\x04\x00\x00\x00kindq\x02g0\ns."
    assert serialize._is_self_contained(state_pickle)
    state = ObjectReader(connection).get_state(class_pickle + state_pickle)
    assert state == {"kind": Leaf}
