"""durus.serialize: references read through a connection's own cache.

A stored reference names an oid and a class. Reading it through a real
Connection (whose cache the reader consults directly) must follow the rule of
``persistent_load``: the cached object only if it is of exactly that class,
else a new ghost of the named class in its place; a malformed oid is refused
with a clear error and the stored records stay as they were.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest

from durus.connection import Connection
from durus.persistent import Persistent, real_class
from durus.persistent_dict import PersistentDict
from durus.record import pack_record
from durus.storage import MemoryStorage


class First(Persistent):
    pass


class Second(Persistent):
    pass


class Ref:
    """Stands for a persistent reference ``(oid, class)`` in a crafted state."""

    def __init__(self, oid: Any, klass: type) -> None:
        self.oid = oid
        self.klass = klass


def crafted_record(oid: bytes, klass: type, state: Any) -> bytes:
    """A record as the writer lays it out: class pickle, then state pickle."""
    sio = io.BytesIO()
    pickler = pickle.Pickler(sio, 2)

    def persistent_id(obj: Any) -> Any:
        return (obj.oid, obj.klass) if isinstance(obj, Ref) else None

    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(klass)
    pickler.dump(state)
    return pack_record(oid, sio.getvalue(), b"")


def storage_with_holder() -> tuple[MemoryStorage, bytes, bytes]:
    """Root -> 'x': a First, 'holder': a PersistentDict; returns their oids."""
    storage = MemoryStorage()
    connection = Connection(storage)
    root = connection.get_root()
    root["x"] = First()
    root["holder"] = PersistentDict()
    connection.commit()
    x_oid, holder_oid = root["x"]._p_oid, root["holder"]._p_oid
    assert x_oid is not None and holder_oid is not None
    return storage, x_oid, holder_oid


def replace_record(storage: MemoryStorage, record: bytes) -> None:
    storage.begin()
    storage.store(record[:8], record)
    storage.end()


def test_reference_naming_another_class_gets_a_ghost_of_that_class() -> None:
    storage, x_oid, holder_oid = storage_with_holder()
    state = {"data": {"x": Ref(x_oid, Second)}}
    replace_record(storage, crafted_record(holder_oid, PersistentDict, state))
    root = Connection(storage).get_root()
    cached = root["x"]
    assert real_class(cached) is First
    referenced = root["holder"]["x"]
    assert referenced is not cached and real_class(referenced) is Second
    assert referenced._p_oid == x_oid and referenced._p_is_ghost()
    assert root["holder"]["x"] is referenced  # now the cached one


def test_reference_naming_the_cached_class_is_the_cached_object() -> None:
    storage, x_oid, holder_oid = storage_with_holder()
    replace_record(
        storage, crafted_record(holder_oid, PersistentDict, {"data": {"x": Ref(x_oid, First)}})
    )
    root = Connection(storage).get_root()
    cached = root["x"]
    assert root["holder"]["x"] is cached


@pytest.mark.parametrize(("bad_oid", "error"), [(b"\x01\x02", ValueError), ("12345678", TypeError)])
def test_reference_with_a_malformed_oid_is_refused_and_nothing_is_lost(
    bad_oid: Any, error: type[Exception]
) -> None:
    storage, _x_oid, holder_oid = storage_with_holder()
    record = crafted_record(holder_oid, PersistentDict, {"data": {"x": Ref(bad_oid, First)}})
    replace_record(storage, record)
    before = dict(storage.records)
    root = Connection(storage).get_root()
    with pytest.raises(error, match="an oid must be 8 bytes"):
        root["holder"]["x"]  # noqa: B018
    assert storage.records == before and storage.load(holder_oid) == record
