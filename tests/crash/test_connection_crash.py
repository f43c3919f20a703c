"""Crashes under an application: Connection commits of PersistentDicts on the faulty disk.

The storage-level tests build records by hand; here the records come from
real pickling (compressed and not), with objects added, changed and dropped.
After a crash at any event, the reopened database, read through a new
Connection, must equal the application's view after some commit that had
started, and at least the last one whose ``commit()`` returned.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import durus.serialize
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.persistent_dict import PersistentDict
from tests.crash.crash_points import count
from tests.crash.harness import PATH
from tests.crash.history import Violation
from tests.support.faulty_disk import FaultyDisk, HypothesisChooser

THOROUGH = settings().max_examples > 100
CRASHES_PER_EXAMPLE = 10 if THOROUGH else 4

keys = st.sampled_from(["a", "b", "c", "d", "e"])
values = st.one_of(
    st.integers(-5, 5),
    st.text(max_size=20),
    st.integers(0, 3000).map(lambda n: "v" * n),
)
changes = st.lists(
    st.tuples(st.sampled_from(["set", "new dict", "delete"]), keys, values),
    min_size=1,
    max_size=4,
)


def _plain(value: Any) -> Any:
    if isinstance(value, PersistentDict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _apply(root: Any, change: tuple[str, str, Any]) -> None:
    action, key, value = change
    if action == "set":
        root[key] = value
    elif action == "new dict":
        root[key] = PersistentDict(payload=value)
    elif key in root:
        del root[key]


@given(
    transactions=st.lists(changes, min_size=1, max_size=6),
    compressed=st.booleans(),
    data=st.data(),
)
def test_a_crash_leaves_the_view_after_some_commit(
    transactions: list[list[tuple[str, str, Any]]], compressed: bool, data: st.DataObject
) -> None:
    disk = FaultyDisk()
    saved = durus.serialize.WRITE_COMPRESSED_STATE_PICKLES
    durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = compressed
    try:
        connection = Connection(FileStorage(PATH, file_system=disk))
        views = [(0, len(disk.events), _plain(connection.get_root()))]  # (start, ack, view)
        for transaction in transactions:
            start = len(disk.events)
            for change in transaction:
                _apply(connection.get_root(), change)
            connection.commit()
            views.append((start, len(disk.events), _plain(connection.get_root())))
        connection.storage.close()
    finally:
        durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = saved
    for _ in range(CRASHES_PER_EXAMPLE):
        event_index = data.draw(st.integers(0, len(disk.events)), label="crash event")
        image = disk.crash_image(HypothesisChooser(data), event_index)
        allowed = [
            view
            for position, (start, ack, view) in enumerate(views)
            if position == 0 or start < event_index or ack <= event_index
            if all(later_ack > event_index for _s, later_ack, _v in views[position + 1 :])
        ]
        _check_reopened(image, allowed, event_index)
        count("connection: crash states")


def _check_reopened(image: dict[str, bytes], allowed: list[Any], event_index: int) -> None:
    storage = FileStorage(PATH, file_system=FaultyDisk(image))
    try:
        view = _plain(Connection(storage).get_root())
    finally:
        storage.close()
    if view not in allowed:
        raise Violation(f"crash after event {event_index}: view {view!r} not in {allowed!r}")
