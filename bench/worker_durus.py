"""One benchmark workload in this process, against whichever ``durus`` is importable.

Run by bench/run.py as ``python -P worker_durus.py WORKLOAD DIR OBJECTS`` under this
package's interpreter or under a venv holding Durus 4.3: the Durus API is the same, so
the same code measures both. Prints one JSON object with the figures on stdout.
"""

from __future__ import annotations

import inspect
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchclasses import Item  # noqa: E402
from warm_reads import best_times_s, make_read_loop  # noqa: E402

from durus.btree import BTree  # noqa: E402
from durus.connection import Connection  # noqa: E402
from durus.file_storage import FileStorage  # noqa: E402

COMMIT_EVERY = 1000
WARM_OBJECTS = 10_000
TOUCH_ROUNDS = 20
SMALL_COMMITS = 2000


def open_storage(path: str, fsync: bool | None = None) -> FileStorage:
    """FileStorage on ``path``; ``fsync`` only where the implementation has the option."""
    if fsync is not None and "fsync" in inspect.signature(FileStorage).parameters:
        return FileStorage(path, fsync=fsync)
    return FileStorage(path)


def build(path: str, objects: int, fsync: bool | None = None) -> Connection:
    connection = Connection(open_storage(path, fsync))
    tree = connection.get_root()["tree"] = BTree()
    for number in range(objects):
        tree[number] = Item(number)
        if number % COMMIT_EVERY == COMMIT_EVERY - 1:
            connection.commit()
    connection.commit()
    return connection


def insert(path: str, objects: int) -> dict:
    start = time.perf_counter()
    connection = build(path, objects)
    elapsed_s = time.perf_counter() - start
    connection.get_storage().close()
    return {"insert_objects_per_s": objects / elapsed_s}


def open_file(path: str, objects: int) -> dict:
    start = time.perf_counter()
    connection = Connection(open_storage(path))
    connection.get_root()["tree"]
    return {"open_s": time.perf_counter() - start}


def cold_read(path: str, objects: int) -> dict:
    start = time.perf_counter()
    connection = Connection(open_storage(path))
    total = 0
    for _key, item in connection.get_root()["tree"].items():
        total += item.a
    elapsed_s = time.perf_counter() - start
    assert total == objects * (objects - 1) // 2
    return {"cold_read_objects_per_s": objects / elapsed_s}


class PlainItem:
    def __init__(self, number: int) -> None:
        self.a = number
        self.b = 1
        self.name = f"item-{number}"


def warm(path: str, objects: int) -> dict:
    """Warm reads against plain objects, and one touch per object per transaction."""
    connection = Connection(open_storage(path))
    tree = connection.get_root()["tree"]
    items = [tree[number] for number in range(min(WARM_OBJECTS, objects))]
    plain = [PlainItem(number) for number in range(len(items))]
    read_plain, read_persistent, touch = make_read_loop(), make_read_loop(), make_read_loop()
    read_persistent(items)
    plain_s, persistent_s = best_times_s([(read_plain, plain), (read_persistent, items)])
    touch_s = []
    for _ in range(TOUCH_ROUNDS):
        connection.abort()
        start = time.perf_counter()
        touch(items)
        touch_s.append(time.perf_counter() - start)
    touch_s.sort()
    return {
        "warm_vs_plain": plain_s / persistent_s,
        "touch_once_us": touch_s[len(touch_s) // 2] / len(items) * 1e6,
    }


def small_commits(path: str, objects: int, fsync: bool | None) -> dict:
    connection = build(path, min(objects, 1000), fsync)
    tree = connection.get_root()["tree"]
    items = [tree[number] for number in range(len(tree))]
    start = time.perf_counter()
    for count in range(SMALL_COMMITS):
        items[count % len(items)].b += 1
        connection.commit()
    return {"small_commits_per_s": SMALL_COMMITS / (time.perf_counter() - start)}


def pack(path: str, objects: int) -> dict:
    connection = build(path, objects)
    tree = connection.get_root()["tree"]
    for number in range(0, objects, 2):
        del tree[number]
        if number % COMMIT_EVERY == 0:
            connection.commit()
    connection.commit()
    start = time.perf_counter()
    connection.pack()
    return {"pack_s": time.perf_counter() - start}


def main() -> None:
    workload, directory, objects = sys.argv[1], sys.argv[2], int(sys.argv[3])
    path = os.path.join(directory, "bench.durus")
    if workload == "commits_fsync":
        result = small_commits(path, objects, fsync=True)
    elif workload == "commits_nofsync":
        result = small_commits(path, objects, fsync=False)
    else:
        handler = {
            "insert": insert,
            "open": open_file,
            "cold_read": cold_read,
            "warm": warm,
            "pack": pack,
        }[workload]
        result = handler(path, objects)
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


if __name__ == "__main__":
    main()
