"""durus.connection: loading, committing, aborting, the cache, and conflicts.

Conflicts need several clients, so this file has a tiny multi-client storage:
``SharedRecords`` holds the committed records; each ``ClientView`` is one
client's Storage. A commit through one view queues invalidations for the
others; ``sync()`` and ``end()`` report them, and ``load()`` of an oid the
client has not yet been told about raises ReadConflictError (what the server
does for ClientStorage).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from durus.connection import (
    MAX_LOAD_ATTEMPTS,
    ROOT_OID,
    Cache,
    Connection,
    ConnectionTypeError,
    ObjectDictionary,
    ReferenceContainer,
    gen_every_instance,
    touch_every_reference,
)
from durus.error import (
    DurusError,
    DurusKeyError,
    ReadConflictError,
    StillConflictedError,
    WriteConflictError,
)
from durus.persistent import (
    GHOST,
    SAVED,
    UNSAVED,
    ComputedAttribute,
    Persistent,
    is_tracking_class,
    real_class,
)
from durus.persistent_dict import PersistentDict
from durus.record import unpack_record
from durus.storage import MemoryStorage, Storage
from durus.utils import int8_to_str


class Item(Persistent):
    def __init__(self, value: Any = None) -> None:
        self.value = value


class OtherItem(Persistent):
    pass


class Root(Persistent):
    def __init__(self) -> None:
        self.items: dict[Any, Any] = {}


class SharedRecords:
    """The committed state that several ClientViews share."""

    def __init__(self) -> None:
        self.records: dict[bytes, bytes] = {}
        self.next_oid = 0
        self.views: list[ClientView] = []


class ClientView(Storage):
    """One client's storage over SharedRecords, reporting other clients' commits."""

    def __init__(self, shared: SharedRecords) -> None:
        self.shared = shared
        self.invalid: set[bytes] = set()
        self.pending: dict[bytes, bytes] | None = None
        self.packs = 0
        shared.views.append(self)

    def load(self, oid: bytes) -> bytes:
        if oid in self.invalid:
            raise ReadConflictError([oid])
        try:
            return self.shared.records[oid]
        except KeyError:
            raise DurusKeyError(oid) from None

    def begin(self) -> None:
        self.pending = {}

    def store(self, oid: bytes, record: bytes) -> None:
        assert self.pending is not None
        self.pending[oid] = record

    def end(self, handle_invalidations: Any = None) -> None:
        assert self.pending is not None
        invalid = self.sync()
        if invalid and handle_invalidations is not None:
            handle_invalidations(invalid)
        self.shared.records.update(self.pending)
        for view in self.shared.views:
            if view is not self:
                view.invalid.update(self.pending)
        self.pending = None

    def sync(self) -> list[bytes]:
        invalid = sorted(self.invalid)
        self.invalid.clear()
        return invalid

    def new_oid(self) -> bytes:
        oid = int8_to_str(self.shared.next_oid)
        self.shared.next_oid += 1
        return oid

    def pack(self) -> None:
        self.packs += 1


def two_clients(**kwargs: Any) -> tuple[Connection, Connection]:
    shared = SharedRecords()
    first = Connection(ClientView(shared), root_class=Root, **kwargs)
    second = Connection(ClientView(shared), root_class=Root, **kwargs)
    return first, second


def oid(n: int) -> bytes:
    return int8_to_str(n)


def committed_items(connection: Connection, count: int) -> list[Item]:
    items = [Item(i) for i in range(count)]
    connection.root.items.update(enumerate(items))
    connection.root._p_note_change()
    connection.commit()
    return items


# -- construction


def test_new_storage_gets_a_committed_root() -> None:
    storage = MemoryStorage()
    connection = Connection(storage)
    assert connection.transaction_serial == 2
    assert real_class(connection.root) is PersistentDict and connection.root._p_status == SAVED
    assert ROOT_OID in storage.records and connection.get_root() is connection.root
    again = Connection(storage)
    assert again.transaction_serial == 1 and real_class(again.root) is PersistentDict
    assert again.get_storage() is storage and isinstance(again.get_cache(), Cache)
    assert again.changed == {} and again.invalid_oids == set() and again.new_oid == storage.new_oid


def test_root_class_is_used_and_checked() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    assert real_class(connection.root) is Root and connection.root.items == {}
    with pytest.raises(ConnectionTypeError, match="Root, not a OtherItem") as info:
        Connection(storage, root_class=OtherItem)
    assert isinstance(info.value, TypeError) and isinstance(info.value, AssertionError)


def test_storage_must_be_a_storage() -> None:
    with pytest.raises(ConnectionTypeError):
        Connection(object())
    with pytest.raises(ConnectionTypeError):
        Connection(b"/tmp/x.durus")


def test_str_path_opens_a_file_storage(tmp_path: Any) -> None:
    from durus.file_storage import FileStorage

    connection = Connection(str(tmp_path / "db.durus"))
    try:
        assert isinstance(connection.storage, FileStorage)
    finally:
        connection.storage.close()


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache target size must be > 0"):
        Connection(MemoryStorage(), cache_size=0)
    connection = Connection(MemoryStorage(), cache_size=5)
    assert connection.get_cache_size() == 5
    connection.set_cache_size(7)
    assert connection.get_cache_size() == 7
    with pytest.raises(ValueError):
        connection.set_cache_size(-1)


def test_first_oid_must_be_root() -> None:
    storage = MemoryStorage()
    storage.oid = 3
    with pytest.raises(DurusError, match="not ROOT_OID"):
        Connection(storage)


# -- loading


def test_get_by_int_and_bytes_and_missing() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    item = committed_items(connection, 1)[0]
    assert connection.get(1) is item and connection[oid(1)] is item
    assert connection.get(99) is None and connection[99] is None
    with pytest.raises(TypeError):
        connection.get("x" * 8)
    with pytest.raises(ValueError):
        connection.get(b"short")
    with pytest.raises(ValueError):
        connection.get(-1)
    with pytest.raises(ValueError):
        connection.get(2**64)


def test_get_loads_a_saved_tracked_object() -> None:
    storage = MemoryStorage()
    writer = Connection(storage, root_class=Root)
    committed_items(writer, 2)
    writer.root.items.clear()  # unreferenced records stay in a MemoryStorage
    writer.root._p_note_change()
    writer.commit()
    connection = Connection(storage, root_class=Root)
    loads = connection.get_load_count()
    item = connection.get(2)
    assert item._p_status == SAVED and is_tracking_class(type(item))
    assert connection.get_load_count() == loads + 1
    assert connection.get_cache_count() >= 2
    assert item.value == 1 and type(item) is Item


def test_get_stored_pickle_and_load_state() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    item = committed_items(connection, 1)[0]
    assert connection.get_stored_pickle(oid(1)) == unpack_record(storage.records[oid(1)])[1]
    item._p_set_status_ghost()
    del storage.records[oid(1)]
    with pytest.raises(ReadConflictError) as info:
        item.value  # noqa: B018
    assert info.value.oids == [oid(1)] and item._p_status == GHOST


class FlakyLoads(MemoryStorage):
    """Reports an oid invalid on its next ``conflicts`` loads (each sync reports it)."""

    def __init__(self) -> None:
        MemoryStorage.__init__(self)
        self.conflicts = 0
        self.loads = 0

    def load(self, oid: bytes) -> bytes:
        self.loads += 1
        if self.conflicts:
            self.conflicts -= 1
            raise ReadConflictError([oid])
        return MemoryStorage.load(self, oid)


def test_a_load_is_retried_after_each_sync_a_bounded_number_of_times() -> None:
    storage = FlakyLoads()
    connection = Connection(storage, root_class=Root)
    committed_items(connection, 1)
    connection.abort()
    storage.conflicts, storage.loads = MAX_LOAD_ATTEMPTS - 1, 0
    assert connection.get_stored_pickle(oid(1)) == unpack_record(storage.records[oid(1)])[1]
    assert storage.loads == MAX_LOAD_ATTEMPTS
    storage.conflicts, storage.loads = MAX_LOAD_ATTEMPTS, 0
    with pytest.raises(ReadConflictError):
        connection.get_stored_pickle(oid(1))
    assert storage.loads == MAX_LOAD_ATTEMPTS


def test_storage_returning_a_foreign_record_is_an_error() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    committed_items(connection, 2)
    storage.records[oid(9)] = storage.records[oid(1)]
    with pytest.raises(DurusError, match="returned the record"):
        connection.get(9)


def test_get_crawler_loads_everything_reachable() -> None:
    storage = MemoryStorage()
    committed_items(Connection(storage, root_class=Root), 5)
    connection = Connection(storage, root_class=Root)
    connection.get(3)._p_set_status_ghost()
    crawled = list(connection.get_crawler(batch_size=2))
    assert [o._p_oid for o in crawled] == [oid(n) for n in range(6)]
    assert all(o._p_status == SAVED for o in crawled)
    assert crawled[0] is connection.root and crawled[3] is connection.get(3)


# -- commit and abort


def test_commit_stores_new_objects_and_tracks_them() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    serial = connection.transaction_serial
    items = committed_items(connection, 3)
    assert connection.transaction_serial == serial + 1 and connection.changed == {}
    assert [i._p_oid for i in items] == [oid(1), oid(2), oid(3)]
    assert all(i._p_status == SAVED and i._p_connection is connection for i in items)
    assert all(is_tracking_class(type(i)) for i in items)
    assert set(storage.records) == {oid(n) for n in range(4)}
    assert Connection(storage, root_class=Root).get(2).value == 1


def test_commit_without_changes_just_ends_the_transaction() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    serial = connection.transaction_serial
    connection.commit()
    assert connection.transaction_serial == serial + 1


def test_reads_are_tracked_once_per_transaction() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    item = committed_items(connection, 1)[0]
    recent = connection.cache.recent_objects
    assert item.value == 0 and type(item) is Item
    assert item._p_serial == connection.transaction_serial and item in recent
    connection.abort()
    assert is_tracking_class(type(item)) and item._p_serial != connection.transaction_serial
    assert item.value == 0 and item._p_serial == connection.transaction_serial


def test_abort_ghosts_changes_and_forgets_new_objects() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    item = committed_items(connection, 1)[0]
    item.value = "changed"
    fresh = Item("new")
    connection.root.items["fresh"] = fresh
    connection.root._p_note_change()
    serial = connection.transaction_serial
    connection.abort()
    assert connection.transaction_serial == serial + 1 and connection.changed == {}
    assert item._p_status == GHOST and item.value == 0
    assert fresh._p_oid is None and fresh._p_status == UNSAVED
    assert "fresh" not in connection.root.items


def test_pack_aborts_then_packs() -> None:
    shared = SharedRecords()
    view = ClientView(shared)
    connection = Connection(view, root_class=Root)
    connection.root.items["x"] = 1
    connection.root._p_note_change()
    connection.pack()
    assert view.packs == 1 and connection.changed == {} and connection.root.items == {}


def test_reference_to_another_connection_fails_and_is_undone() -> None:
    storage = MemoryStorage()
    first = Connection(storage, root_class=Root)
    foreign = committed_items(Connection(MemoryStorage(), root_class=Root), 1)[0]
    fresh = Item("new")
    first.root.items["fresh"] = fresh
    first.root.items["foreign"] = foreign
    first.root._p_note_change()
    with pytest.raises(ValueError, match="different connection"):
        first.commit()
    assert fresh._p_oid is None and fresh._p_connection is None and fresh._p_status == UNSAVED
    assert first.cache.get(oid(1)) is None
    first.abort()
    assert first.root.items == {}


def test_unpicklable_state_stores_nothing_and_undoes_oids() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    before = dict(storage.records)
    fresh, inner = Item("new"), Item("inner")
    fresh.inner = inner
    inner.bad = lambda: None
    connection.root.items["fresh"] = fresh
    connection.root._p_note_change()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        connection.commit()
    assert storage.records == before
    for obj in (fresh, inner):
        assert (obj._p_oid, obj._p_connection, obj._p_status) == (None, None, UNSAVED)
        assert type(obj) is Item
    connection.abort()
    del inner.bad
    connection.root.items["again"] = fresh
    connection.root._p_note_change()
    connection.commit()
    reopened = Connection(storage, root_class=Root)
    assert reopened.root.items["again"].inner.value == "inner"
    for record in storage.records.values():
        for ref in unpack_record(record)[2:]:
            for n in range(0, len(ref), 8):
                assert ref[n : n + 8] in storage.records  # no dangling references


def test_note_change_rejects_foreign_objects() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    with pytest.raises(ValueError):
        connection.note_change(Item())


def test_computed_attribute_is_stored_as_none() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    computed = ComputedAttribute()
    computed.get(lambda: 5)
    connection.root.items["c"] = computed
    connection.root._p_note_change()
    connection.commit()
    data = unpack_record(storage.records[computed._p_oid])[1]
    assert connection.reader.get_state_pickle(data) == b"\x80\x02N."


# -- conflicts


def test_write_conflict_then_still_conflicted_until_abort() -> None:
    first, second = two_clients()
    committed_items(first, 2)
    second.abort()
    a_first = first.root.items[0]
    assert a_first.value == 0  # first reads A
    a_second = second.root.items[0]
    a_second.value = "second"
    second.commit()
    first.root.items[1].value = "first"  # first changes B
    with pytest.raises(WriteConflictError) as info:
        first.commit()
    assert info.value.oids == [a_first._p_oid]
    assert first.invalid_oids == {a_first._p_oid}
    with pytest.raises(StillConflictedError, match="missing abort"):
        first.commit()
    with pytest.raises(StillConflictedError):
        first.get_stored_pickle(a_first._p_oid)
    first.abort()
    assert first.invalid_oids == set() and a_first.value == "second"
    first.root.items[1].value = "first"
    first.commit()


def test_blind_write_conflicts() -> None:
    first, second = two_clients()
    committed_items(first, 1)
    second.abort()
    item = first.get(1)
    assert item.value == 0
    first.abort()  # item stays loaded (SAVED) but is not read in the new transaction
    second.get(1).value = "second"
    second.commit()
    item.value = "blind"  # never read by the application
    with pytest.raises(WriteConflictError):
        first.commit()


def test_blind_write_then_read_conflict_keeps_the_write() -> None:
    first, second = two_clients()
    committed_items(first, 1)
    second.abort()
    first.abort()  # the root stays loaded but unread in the new transaction
    second.root.items["new"] = Item("new")
    second.root._p_note_change()
    second.commit()
    first.root._p_note_change()  # a blind write of the stale root
    new_oid = second.root.items["new"]._p_oid
    with pytest.raises(ReadConflictError) as info:
        first.get(new_oid)
    assert info.value.oids == [new_oid] and ROOT_OID in first.invalid_oids
    assert first.root._p_status == UNSAVED and first.changed == {ROOT_OID: first.root}
    with pytest.raises(StillConflictedError):
        first.commit()
    first.abort()
    assert "new" in first.root.items


def test_invalidation_of_unread_objects_ghosts_them_and_commit_proceeds() -> None:
    first, second = two_clients()
    items = committed_items(first, 2)
    second.abort()
    second.root.items[0].value = "second"
    second.commit()
    first.abort()  # new transaction: nothing read yet
    first.root.items[1].value = "first"
    first.commit()
    assert items[0]._p_status == GHOST or items[0].value == "second"
    assert items[0].value == "second"


def test_commit_without_changes_syncs_and_never_raises() -> None:
    first, second = two_clients()
    items = committed_items(first, 1)
    second.abort()
    assert items[0].value == 0
    second.root.items[0].value = "second"
    second.commit()
    first.commit()
    assert items[0]._p_status == GHOST and items[0].value == "second"


def test_read_conflict_example_from_the_contract() -> None:
    first, second = two_clients()
    a, b = committed_items(first, 2)
    b._p_set_status_ghost()
    second.abort()
    assert a.value == 0  # client 1 reads A
    second.root.items[0].value = "A2"
    second.root.items[1].value = "B2"
    second.commit()
    with pytest.raises(ReadConflictError) as info:
        b.value  # noqa: B018 - client 1 loads B
    assert info.value.oids == [b._p_oid] and a._p_oid in first.invalid_oids
    with pytest.raises(StillConflictedError):
        first.get_stored_pickle(a._p_oid)
    first.abort()
    assert (a.value, b.value) == ("A2", "B2")


def test_read_without_stale_reads_retries_and_succeeds() -> None:
    first, second = two_clients()
    a, b = committed_items(first, 2)
    b._p_set_status_ghost()
    first.abort()
    second.abort()
    second.root.items[0].value = "A2"
    second.root.items[1].value = "B2"
    second.commit()
    assert b.value == "B2"  # A was not read in this transaction
    assert a._p_status == GHOST and a.value == "A2"


def test_still_conflicted_guard_survives_python_optimize() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_connection import two_clients, committed_items
        from durus.error import StillConflictedError, WriteConflictError
        first, second = two_clients()
        committed_items(first, 2)
        second.abort()
        first.root.items[0].value
        second.root.items[0].value = 'x'
        second.commit()
        first.root.items[1].value = 'y'
        try:
            first.commit()
        except WriteConflictError:
            pass
        try:
            first.commit()
        except StillConflictedError:
            print('guarded')
        """
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "guarded", result.stderr


# -- the cache


def test_tiny_cache_ghosts_unread_objects_but_never_unsaved_or_current() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root, cache_size=2)
    items = committed_items(connection, 10)
    connection.abort()  # items were accessed by the commit; now they are old
    connection.abort()
    assert all(i._p_status == GHOST for i in items)
    assert connection.get_cache_count() <= 12
    values = [i.value for i in items]
    items[0].value = "unsaved"
    connection.shrink_cache()
    assert all(i._p_status != GHOST for i in items)  # all read in this transaction
    connection.commit()
    assert values == list(range(10))


def test_shrink_drops_unreferenced_objects() -> None:
    storage = MemoryStorage()
    committed_items(Connection(storage, root_class=Root), 20)
    connection = Connection(storage, root_class=Root, cache_size=3)
    for n in range(1, 21):
        assert connection.get(n).value == n - 1
    connection.root._p_set_status_ghost()
    assert connection.get_cache_count() == 21
    connection.abort()
    connection.abort()
    gc.collect()
    assert connection.get_cache_count() <= 3


def test_cache_api() -> None:
    cache = Cache(10)
    assert cache.get_size() == 10 and cache.get_count() == 0 and cache.finger == 0
    with pytest.raises(ValueError, match="must be > 0"):
        cache.set_size(0)
    with pytest.raises(TypeError):
        cache.set_size("3")  # type: ignore[arg-type]
    connection = Connection(MemoryStorage(), root_class=Root)
    item = Item()
    item._p_oid = oid(5)
    cache[oid(5)] = item
    assert cache.get(oid(5)) is item and list(cache) == [item]
    with pytest.raises(ValueError):
        del cache[oid(5)]
    item._p_oid = None
    del cache[oid(5)]
    assert cache.get(oid(5)) is None and cache.get_count() == 0
    ghost = cache.get_instance(oid(6), Item, connection)
    assert ghost._p_status == GHOST and cache.get(oid(6)) is ghost
    assert cache.get_instance(oid(6), Item, connection) is ghost


def test_cache_shrink_skips_current_serial_and_unsaved() -> None:
    cache = Cache(1)
    connection = Connection(MemoryStorage(), root_class=Root)
    objects = []
    for n, (serial, status) in enumerate([(1, SAVED), (5, SAVED), (1, UNSAVED)]):
        obj = Item()
        obj._p_oid = oid(n + 10)
        obj._p_serial = serial
        obj._p_status = status
        obj._p_connection = connection
        cache[obj._p_oid] = obj
        cache.recent_objects.add(obj)
        objects.append(obj)
    connection.transaction_serial = 5
    cache.shrink(connection)
    assert [o._p_status for o in objects] == [GHOST, SAVED, UNSAVED]
    assert objects[1] in cache.recent_objects and objects[0] not in cache.recent_objects


def test_object_dictionary() -> None:
    objects = ObjectDictionary()
    a, b = Item(), Item()
    objects["a"] = a
    objects["b"] = b
    assert objects.get("a") is a and objects.get("z", 7) == 7 and "a" in objects
    assert len(objects) == 2
    del objects["missing"]  # ignored (Durus 4.3 made len() negative)
    del objects["a"]
    assert objects.get("a") is None and "a" not in objects and len(objects) == 1
    objects["a"] = a
    assert objects.get("a") is a and len(objects) == 2
    del b
    gc.collect()
    assert len(objects) == 1 and objects.get("b") is None and "b" in objects.dead
    assert list(objects) == ["a"] and objects.dead == set()
    replaced = Item()
    objects["a"] = replaced
    del a
    gc.collect()
    assert objects.get("a") is replaced and len(objects) == 1
    assert callable(objects.callback) and set(objects.mapping) == {"a"}


def test_reference_container() -> None:
    container = ReferenceContainer()
    item = Item()
    container.add(item)
    container.add(item)
    assert len(container) == 1 and item in container and container.map == {id(item): item}
    container.discard(item)
    container.discard(item)
    assert len(container) == 0


# -- module functions


def test_touch_every_reference_and_gen_every_instance() -> None:
    storage = MemoryStorage()
    connection = Connection(storage, root_class=Root)
    committed_items(connection, 3)
    connection.root.items["other"] = OtherItem()
    connection.root._p_note_change()
    connection.commit()
    found = list(gen_every_instance(connection, Item))
    assert sorted(o._p_oid for o in found) == [oid(1), oid(2), oid(3)]
    assert list(gen_every_instance(connection)) == []
    assert [real_class(o) for o in gen_every_instance(connection, OtherItem)] == [OtherItem]
    touch_every_reference(connection, "OtherItem")
    assert set(connection.changed) == {ROOT_OID, oid(4)}
    connection.abort()
    touch_every_reference(connection, b"nothing-matches")
    assert connection.changed == {}


def test_small_accessors_and_note_access() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    assert connection.get_transaction_serial() == connection.transaction_serial == 2
    assert (
        connection.get_reader() is connection.reader and connection.reader.connection is connection
    )
    item = committed_items(connection, 1)[0]
    connection.abort()
    assert is_tracking_class(type(item))
    connection.note_access(item)
    assert item._p_serial == connection.transaction_serial
    assert item in connection.cache.recent_objects
    connection.abort()  # the boundary switches a noted object back to its twin
    assert is_tracking_class(type(item))


def test_crawler_from_an_uncached_start_and_shrink_logging(caplog: Any) -> None:
    storage = MemoryStorage()
    writer = Connection(storage, root_class=Root)
    committed_items(writer, 3)
    writer.root.items.clear()  # the items stay stored but unreferenced
    writer.root._p_note_change()
    writer.commit()
    connection = Connection(storage, root_class=Root, cache_size=1)
    crawled = list(connection.get_crawler(start_oid=oid(2)))
    assert [o.value for o in crawled] == [1] and crawled[0]._p_status == SAVED
    connection.abort()
    caplog.set_level(10, logger="durus")
    connection.abort()
    assert any("shrink" in record.getMessage() for record in caplog.records)


def test_object_dictionary_callback_called_by_hand() -> None:
    objects = ObjectDictionary()
    item = Item()
    item.key = "ok"
    objects["ok"] = item
    objects.callback(item)  # Durus's own tests call it with anything having .key
    assert "ok" in objects.dead and "ok" in objects.mapping and len(objects) == 0
    stray = Item()
    stray.key = "absent"
    objects.callback(stray)
    assert "absent" not in objects.dead


def test_object_dictionary_purges_dead_keys_as_it_grows() -> None:
    objects = ObjectDictionary()
    for n in range(3000):
        objects[n] = Item()  # each dies at once: only the mapping could grow
    assert len(objects) == 0
    assert len(objects.mapping) < 2500 and objects.dead.issubset(objects.mapping)


def test_a_subclass_overriding_note_access_is_called_on_every_first_read() -> None:
    class CountingConnection(Connection):
        def note_access(self, obj: Any) -> None:
            self.noted = getattr(self, "noted", 0) + 1
            Connection.note_access(self, obj)

    storage = MemoryStorage()
    committed_items(Connection(storage, root_class=Root), 2)
    plain = Connection(storage, root_class=Root)
    counting = CountingConnection(storage, root_class=Root)
    assert plain.access_log is plain._accessed and counting.access_log is None
    items = list(counting.root.items.values())
    counting.abort()
    counting.noted = 0
    assert [item.value for item in items] == [0, 1] and counting.noted == 2
    assert all(item._p_serial == counting.transaction_serial for item in items)


def test_recent_objects_see_pending_reads_and_merge_at_the_boundary() -> None:
    connection = Connection(MemoryStorage(), root_class=Root)
    items = committed_items(connection, 3)
    connection.abort()
    recent = connection.cache.recent_objects
    for item in items:
        recent.discard(item)
    assert len(recent) == 1  # the root
    assert items[0].value == 0 and connection._accessed[-1] is items[0]
    assert items[0] in recent and id(items[0]) in recent.map and len(recent) == 2
    assert items[1].value == 1 and len(recent) == 3
    connection.abort()
    assert connection._accessed == [] and len(recent) == 3 and items[1] in recent
    assert all(is_tracking_class(type(item)) for item in items)
