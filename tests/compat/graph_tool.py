"""Build, change, pack and dump a Durus database with whichever ``durus`` is importable.

Run by the compatibility tests under both implementations (ours, and Durus
4.3 in its own venv):

    python graph_tool.py KIND PATH COMMAND [COMMAND ...]

KIND is ``file`` (FileStorage, SHELF-1), ``file2`` (FileStorage2, DFS20) or
``sqlite`` (SqliteStorage). Each COMMAND opens the storage, does one thing,
closes it, and prints one JSON line ``{"command": ..., "result": ...}``:

* ``build:standard`` / ``build:big`` -- write the standard content (every
  container, BTrees of five node degrees, user classes with ``__dict__`` and
  ``__slots__``, a ComputedAttribute, a 1 MB record) or 100,000 small objects;
* ``mutate:N`` -- round N of deterministic changes (inserts, deletes, new
  objects, new garbage) in one commit, plus an aborted change;
  ``mutate:N:inserts`` / ``mutate:N:notrees`` leave out BTree deletes / all
  BTree changes;
* ``treeops:<BNodeClass>:<seed>`` -- a random insert/delete workload on a new
  BTree, with a check of the B-tree invariants; ``treeinsert`` -- one insert
  into a small BNode tree (which nodes does a commit rewrite?);
* ``pack`` -- ``Connection.pack()``;
* ``nocompress`` -- later commands of this run store state pickles uncompressed;
* ``dump`` -- the canonical form of everything reachable from the root, plus
  which oids the storage can load; ``digest`` -- its SHA-256 and counts.

The canonical form names each persistent object by oid and gives its class,
its ``__getstate__()`` with persistent references replaced by ``{"ref": oid}``
and an API-level view (items, lengths, BTree depth...), so two
implementations reading the same file must print identical dumps.

Must stay runnable by Durus 4.3: standard library plus the public Durus API
only, no test framework, nothing from this checkout but ``compatclasses``.
Prints nothing but the JSON lines on stdout. The one concession to a 4.3
defect: under 4.3 (COMPAT_SIDE=peer) a reopened SQLite file first burns the
in-use oid its ``new_oid()`` would hand out (FORMATS.md 9.2 item 1).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import sys

from compatclasses import Account, Color, Ledger, Point, Point3, Small, Tagged

from durus import btree
from durus.connection import Connection
from durus.persistent import PersistentBase
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.utils import int8_to_str, str_to_int8

BLOB_SIZE_BYTES = 1 << 20
BIG_OBJECT_COUNT = 100_000
LOADABLE_MARGIN = 64
TREE_SPECS = (
    # name, node class, number of keys, key maker
    ("bnode", "BNode", 200, lambda i: i),
    ("bnode4", "BNode4", 300, lambda i: f"k{i:05d}"),
    ("bnode16", "BNode16", 1000, lambda i: i * 7),
    ("bnode64", "BNode64", 1500, lambda i: (i % 50, i)),
    ("bnode512", "BNode512", 50, lambda i: float(i) / 4),
)
IS_PEER = os.environ.get("COMPAT_SIDE") == "peer"


def open_storage(kind: str, path: str):
    if kind == "file":
        from durus.file_storage import FileStorage

        return FileStorage(path)
    if kind == "file2":
        from durus.file_storage2 import FileStorage2

        return FileStorage2(path)
    if kind == "sqlite":
        from durus.sqlite_storage import SqliteStorage

        existed = os.path.exists(path) and os.path.getsize(path) > 0
        storage = SqliteStorage(path)
        if IS_PEER and existed:
            _skip_peer_sqlite_reused_oid(storage)
        return storage
    raise SystemExit(f"unknown storage kind {kind!r}")


def _skip_peer_sqlite_reused_oid(storage) -> None:
    """Durus 4.3's SqliteStorage restarts new oids at max(id), an oid in use: burn it."""
    candidate = storage.new_oid()
    try:
        storage.load(candidate)
    except KeyError:
        raise SystemExit("peer SqliteStorage no longer reuses max(id): drop this") from None


# ---------------------------------------------------------------- content


def make_tree(node_class_name: str, count: int, key_of, value_of):
    tree = btree.BTree(getattr(btree, node_class_name))
    for i in range(count):
        tree[key_of(i)] = value_of(i)
    return tree


def build_standard(connection) -> dict:
    root = connection.get_root()
    rng = random.Random(4321)
    shared = Account("shared", 5)
    selfish = Account("selfish")
    selfish.me = selfish
    a, b = Account("a"), Account("b")
    a.peer, b.peer = b, a
    root["int"] = 42
    root["big"] = 2**80 + 1
    root["neg"] = -7
    root["float"] = 2.5
    root["str"] = "h\u00e9llo \u2603 unicode"
    root["bytes"] = bytes(range(256))
    root["none"] = None
    root["bool"] = True
    root["tuple"] = (1, "two", 3.0, (4,), b"\x00")
    root["list"] = [1, [2, 3], {"k": "v"}]
    root["dict"] = {"a": 1, 2: "b", (3, 4): None}
    root["set"] = {1, 2, 3}
    root["frozenset"] = frozenset(["x", "y"])
    root["color"] = Color("teal", (0, 128, 128))
    root["pdict"] = PersistentDict({"x": 1, "nested": PersistentDict(inner=[1, 2])})
    root["plist"] = PersistentList([1, "two", shared, PersistentList(["x", "y"])])
    root["pset"] = PersistentSet([1, 2, 3, "three", (4, 5)])
    trees = PersistentDict()
    for name, node_class_name, count, key_of in TREE_SPECS:
        trees[name] = make_tree(node_class_name, count, key_of, lambda i: i * i)
    trees["bnode16"][7] = shared
    trees["bnode16"][14] = Account("in-tree", 1)
    trees["empty"] = btree.BTree()
    root["trees"] = trees
    root["accounts"] = PersistentList(Account(f"acct{i}", i * 10) for i in range(20))
    root["accounts"][3].deposit(15)
    root["shared_again"] = shared
    root["cycle"] = a
    root["selfish"] = selfish
    root["points"] = PersistentList(
        [Point(1, 2, "p"), Point(3, 4), Point3(5, 6, 7, "q"), Tagged(8, 9, color="red", size=3)]
    )
    ledger = Ledger("main")
    ledger.add(10)
    ledger.add(32)
    root["ledger"] = ledger
    root["blob"] = Small(rng.randbytes(BLOB_SIZE_BYTES))
    root["garbage"] = PersistentList([Account("doomed")])
    connection.commit()
    return {"objects": len(root)}


def build_big(connection) -> dict:
    root = connection.get_root()
    items = PersistentList(Small(i) for i in range(BIG_OBJECT_COUNT))
    root["items"] = items
    root["index"] = btree.BTree(btree.BNode64)
    for i in range(0, BIG_OBJECT_COUNT, 100):
        root["index"][i] = items[i]
    connection.commit()
    return {"objects": BIG_OBJECT_COUNT}


def mutate(connection, argument: str) -> dict:
    """Round N of changes: ``mutate:N``, or without BTree deletes (``mutate:N:inserts``) or
    without any BTree change (``mutate:N:notrees``), where both sides must write the same bytes."""
    round_number_text, _, variant = argument.partition(":")
    round_number = int(round_number_text)
    root = connection.get_root()
    rng = random.Random(round_number)
    root["counter"] = root.get("counter", 0) + 1
    root["pdict"][f"r{round_number}"] = round_number
    root["pdict"]["nested"]["inner"] = [round_number]
    root["pdict"]["nested"]._p_note_change()
    plist = root["plist"]
    plist.append(round_number)
    plist.insert(0, Account(f"new{round_number}"))
    del plist[1]
    pset = root["pset"]
    pset.add(round_number * 100)
    pset.discard(2)
    if variant != "notrees":
        _mutate_trees(root["trees"], rng, round_number, deletes=variant != "inserts")
    accounts = root["accounts"]
    for i in range(0, len(accounts), 3):
        accounts[i].deposit(round_number)
    points = root["points"]
    points[0].x += round_number
    if hasattr(points[0], "label"):
        del points[0].label
    else:
        points[0].label = f"r{round_number}"
    points[1].label = f"r{round_number}"
    points[3].size = round_number
    root["ledger"].add(round_number)
    root["garbage"] = PersistentList([Account(f"doomed{round_number}")])
    connection.commit()
    _aborted_change(connection, round_number)
    return {"counter": root["counter"]}


def _mutate_trees(trees, rng, round_number: int, deletes: bool) -> None:
    """Insert keys in every tree, delete keys from all but the BNode (t = 2) one."""
    for name, _node_class, count, key_of in TREE_SPECS:
        tree = trees[name]
        for _ in range(30):
            tree[key_of(count + rng.randrange(10 * count))] = round_number
        if name == "bnode" or not deletes:
            continue  # Durus 4.3 corrupts t=2 trees on delete (treeops covers ours)
        keys = list(tree.keys())
        for key in rng.sample(keys, min(len(keys) // 5, 40)):
            del tree[key]
    if round_number % 2 == 0:
        trees[f"late{round_number}"] = make_tree("BNode8", 100, lambda i: i, str)


def _aborted_change(connection, round_number: int) -> None:
    """Changes that are aborted must never reach the file."""
    root = connection.get_root()
    root["aborted"] = round_number
    root["plist"].append("aborted")
    root["trees"]["bnode16"][-1] = Account("aborted")
    connection.abort()
    assert "aborted" not in root


def tree_operations(connection, argument: str) -> dict:
    """``treeops:<NodeClass>:<seed>``: a random insert/delete workload on a new tree."""
    node_class_name, seed = argument.split(":")
    rng = random.Random(int(seed))
    keys = list(range(rng.randrange(20, 400)))
    rng.shuffle(keys)
    tree = btree.BTree(getattr(btree, node_class_name))
    connection.get_root()["ops"] = tree
    for key in keys:
        tree[key] = -key
    connection.commit()
    for key in rng.sample(keys, len(keys) * 2 // 3):
        del tree[key]
    connection.commit()
    return {"keys": list(tree.keys()), "problems": btree_problems(tree)}


def tree_insert(connection) -> dict:
    """``treeinsert``: ten even keys in a BNode tree, then one insert into a leaf."""
    tree = btree.BTree(btree.BNode)
    connection.get_root()["t"] = tree
    for key in range(0, 20, 2):
        tree[key] = key
    connection.commit()
    tree[5] = 5
    connection.commit()
    return {"depth": tree.get_depth()}


def btree_problems(tree) -> list:
    """Broken B-tree invariants (node sizes, equal leaf depth, key order), as text."""
    problems: list = []
    leaf_depths: set = set()
    keys: list = []

    def visit(node, depth: int, is_root: bool) -> None:
        t = node.minimum_degree
        count = len(node.items)
        if count > 2 * t - 1 or (not is_root and count < t - 1):
            problems.append(f"depth {depth}: {count} items (t={t})")
        if node.nodes is None:
            leaf_depths.add(depth)
            keys.extend(key for key, _value in node.items)
            return
        if len(node.nodes) != count + 1:
            problems.append(f"depth {depth}: {count} items but {len(node.nodes)} children")
        for index, child in enumerate(node.nodes):
            visit(child, depth + 1, False)
            if index < count:
                keys.append(node.items[index][0])

    visit(tree.root, 0, True)
    if len(leaf_depths) > 1:
        problems.append(f"leaves at depths {sorted(leaf_depths)}")
    if keys != sorted(keys):
        problems.append("keys out of order")
    return problems


# ---------------------------------------------------------------- canonical dump


def class_name(value) -> str:
    cls = value.__class__
    return f"{cls.__module__}.{cls.__name__}"


def canon(value, refs: list):
    """A JSON-able form of ``value`` that says exactly what it is."""
    if isinstance(value, PersistentBase):
        oid = value._p_oid
        if oid is None:
            raise SystemExit(f"unstored persistent object in a stored state: {value!r}")
        refs.append(str_to_int8(oid))
        return {"ref": str_to_int8(oid)}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()} if len(value) < 4096 else _long_bytes(value)
    if isinstance(value, tuple):
        return {"tuple": [canon(v, refs) for v in value]}
    if isinstance(value, list):
        return [canon(v, refs) for v in value]
    if isinstance(value, (set, frozenset)):
        members = sorted((canon(v, refs) for v in value), key=_sort_key)
        return {type(value).__name__: members}
    if isinstance(value, dict):
        pairs = [[canon(k, refs), canon(v, refs)] for k, v in value.items()]
        return {"dict": sorted(pairs, key=_sort_key)}
    state = getattr(value, "__dict__", None)
    return {"object": class_name(value), "state": canon(state, refs)}


def _long_bytes(value: bytes) -> dict:
    return {"bytes_len": len(value), "sha256": hashlib.sha256(value).hexdigest()}


def _sort_key(item) -> str:
    return repr(item)  # canonical forms are built in a fixed order, so repr is stable


def view_of(obj, refs: list):
    """What the public API shows for the containers (beyond their raw state)."""
    if isinstance(obj, btree.BTree):
        items = list(obj.items())
        return {
            "len": len(obj),
            "items": canon(items, refs),
            "reversed": canon(list(obj.items_backward())[:5], refs),
            "depth": obj.get_depth(),
            "node_count": obj.get_node_count(),
            "bool": bool(obj),
        }
    if isinstance(obj, PersistentDict):
        return {"len": len(obj), "items": canon(dict(obj.items()), refs)}
    if isinstance(obj, PersistentList):
        return {"len": len(obj), "list": canon(list(obj), refs)}
    if isinstance(obj, PersistentSet):
        return {"len": len(obj), "set": canon(set(obj), refs)}
    if isinstance(obj, Ledger):
        return {"total": obj.get_total()}
    return None


def walk(connection, with_view: bool = True) -> dict:
    """Every object reachable from the root, lowest oid first."""
    objects = {}
    heap = [0]
    while heap:
        oid_number = heapq.heappop(heap)
        if str(oid_number) in objects:
            continue
        obj = connection.get(int8_to_str(oid_number))
        if obj is None:
            objects[str(oid_number)] = {"missing": True}
            continue
        refs: list = []
        entry = {"class": class_name(obj), "state": canon(obj.__getstate__(), refs)}
        if with_view:
            entry["view"] = view_of(obj, refs)
        objects[str(oid_number)] = entry
        for ref in refs:
            heapq.heappush(heap, ref)
    return objects


def loadable_oids(storage, highest_oid: int) -> list:
    present = []
    for oid_number in range(highest_oid + LOADABLE_MARGIN):
        try:
            storage.load(int8_to_str(oid_number))
        except KeyError:
            continue
        present.append(oid_number)
    return present


def dump(connection) -> dict:
    objects = walk(connection)
    highest = max(int(oid) for oid in objects)
    return {"objects": objects, "loadable": loadable_oids(connection.get_storage(), highest)}


def digest(connection) -> dict:
    objects = walk(connection, with_view=False)
    text = json.dumps(objects, sort_keys=True)
    classes: dict = {}
    for entry in objects.values():
        classes[entry.get("class", "?")] = classes.get(entry.get("class", "?"), 0) + 1
    return {
        "count": len(objects),
        "classes": classes,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


# ---------------------------------------------------------------- driver


def run_command(kind: str, path: str, command: str):
    if command == "nocompress":
        import durus.serialize

        durus.serialize.WRITE_COMPRESSED_STATE_PICKLES = False
        return {"compressed": False}
    storage = open_storage(kind, path)
    try:
        connection = Connection(storage)
        name, _, argument = command.partition(":")
        if name == "build":
            return {"standard": build_standard, "big": build_big}[argument](connection)
        if name == "mutate":
            return mutate(connection, argument)
        if name == "treeinsert":
            return tree_insert(connection)
        if name == "treeops":
            return tree_operations(connection, argument)
        if name == "pack":
            connection.pack()
            return {"packed": True}
        if name == "dump":
            return dump(connection)
        if name == "digest":
            return digest(connection)
        raise SystemExit(f"unknown command {command!r}")
    finally:
        storage.close()


def main(argv: list) -> None:
    if len(argv) < 3:
        raise SystemExit(__doc__)
    kind, path, *commands = argv
    for command in commands:
        result = run_command(kind, path, command)
        sys.stdout.write(json.dumps({"command": command, "result": result}, sort_keys=True))
        sys.stdout.write("\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
