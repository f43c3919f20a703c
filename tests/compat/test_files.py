"""Files written by one implementation, read and changed by the other (and packed by each).

For each storage format (SHELF-1 FileStorage, DFS20 FileStorage2, SQLite
SqliteStorage) and each direction, a database is built by one side and then
passed back and forth: every change or pack by one side is followed by a full
canonical dump from both sides, which must be identical. The content covers
every container, BTrees of five node degrees, ``__dict__`` and ``__slots__``
user classes, a ComputedAttribute, a 1 MB record, cycles and shared objects.
"""

from __future__ import annotations

import pytest

from tests.compat.dumps import assert_packed, assert_same_dump

KINDS = ["file", "file2", "sqlite"]

# Turns of the round trip: (actor, commands). "a" built the file, "b" is the other
# implementation. Every turn starts by dumping what the previous turn left and
# dumps again after each change, so each state is read by both sides.
ROUND_TRIP_TURNS = [
    ("a", ["build:standard", "dump"]),
    ("b", ["dump", "mutate:1", "dump", "pack", "dump"]),
    ("a", ["dump", "mutate:2", "dump", "pack", "dump"]),
    ("b", ["dump", "mutate:3", "dump"]),
    ("a", ["dump", "mutate:4", "dump"]),
    ("b", ["dump"]),
]


def check_standard_content(dump: dict) -> None:
    """The dump really holds the standard content (guards against two equally empty reads)."""
    classes = {entry["class"] for entry in dump["objects"].values()}
    for name in (
        "durus.persistent_dict.PersistentDict",
        "durus.persistent_list.PersistentList",
        "durus.persistent_set.PersistentSet",
        "durus.btree.BTree",
        "durus.btree.BNode",
        "durus.btree.BNode4",
        "durus.btree.BNode16",
        "durus.btree.BNode64",
        "durus.btree.BNode512",
        "durus.persistent.ComputedAttribute",
        "compatclasses.Account",
        "compatclasses.Point",
        "compatclasses.Point3",
        "compatclasses.Tagged",
        "compatclasses.Ledger",
        "compatclasses.Small",
    ):
        assert name in classes, f"{name} missing from the dump"
    blobs = [
        value
        for entry in dump["objects"].values()
        if entry["class"] == "compatclasses.Small"
        for _key, value in entry["state"]["dict"]
    ]
    assert {"bytes_len": 1 << 20} in [{"bytes_len": b.get("bytes_len")} for b in blobs]


@pytest.mark.parametrize("writer", ["ours", "peer"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind, writer, sides, tmp_path):
    other = "peer" if writer == "ours" else "ours"
    actors = {"a": sides[writer], "b": sides[other]}
    path = tmp_path / f"db.{kind}"
    previous = None  # (dump, what) of the last state the previous turn left
    for actor, commands in ROUND_TRIP_TURNS:
        side = actors[actor]
        results = side.tool(kind, path, *commands)
        for position, (command, result) in enumerate(zip(commands, results, strict=True)):
            if command != "dump":
                continue
            if position == 0:
                assert previous is not None
                assert_same_dump(previous[0], result, f"{previous[1]}, read by {side.name}")
            elif commands[position - 1] == "pack":
                assert_packed(result, f"{kind} file packed by {side.name}")
            previous = (result, f"{kind} file after {side.name} ran {commands[position - 1]}")
    check_standard_content(previous[0])
    assert ["counter", {"int": "4"}] in previous[0]["objects"]["0"]["view"]["items"]["dict"]


@pytest.mark.parametrize("writer", ["ours", "peer"])
def test_uncompressed_states_cross(writer, sides, tmp_path):
    """States stored without zlib (WRITE_COMPRESSED_STATE_PICKLES off) read and changed by both."""
    other = "peer" if writer == "ours" else "ours"
    path = tmp_path / "raw.durus"
    _, _, written = sides[writer].tool("file", path, "nocompress", "build:standard", "dump")
    read, _, changed = sides[other].tool("file", path, "dump", "mutate:1", "dump")
    assert_same_dump(written, read, f"uncompressed file of {writer}, read by {other}")
    (reread,) = sides[writer].tool("file", path, "dump")
    assert_same_dump(changed, reread, f"change by {other}, read by {writer}")
