"""The benchmark workloads against ZODB (FileStorage, OOBTree), for comparison.

Run by bench/run.py under a venv holding ZODB as
``python -P worker_zodb.py WORKLOAD DIR OBJECTS``; prints one JSON object. The
connection cache is sized like Durus's default (100,000 objects) so that warm
workloads compare caches of the same size.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import persistent
import transaction
import ZODB
import ZODB.FileStorage
from BTrees.OOBTree import OOBTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from warm_reads import best_times_s, make_read_loop  # noqa: E402

COMMIT_EVERY = 1000
WARM_OBJECTS = 10_000
TOUCH_ROUNDS = 20
SMALL_COMMITS = 2000
CACHE_OBJECTS = 100_000


class Item(persistent.Persistent):
    def __init__(self, number: int) -> None:
        self.a = number
        self.b = 1
        self.name = f"item-{number}"


class PlainItem:
    def __init__(self, number: int) -> None:
        self.a = number
        self.b = 1
        self.name = f"item-{number}"


def open_db(path: str, read_only: bool = False):
    storage = ZODB.FileStorage.FileStorage(path, read_only=read_only)
    db = ZODB.DB(storage, cache_size=CACHE_OBJECTS)
    return db, db.open()


def build(path: str, objects: int):
    db, connection = open_db(path)
    tree = connection.root()["tree"] = OOBTree()
    for number in range(objects):
        tree[number] = Item(number)
        if number % COMMIT_EVERY == COMMIT_EVERY - 1:
            transaction.commit()
    transaction.commit()
    return db, connection


def insert(path: str, objects: int) -> dict:
    start = time.perf_counter()
    db, _connection = build(path, objects)
    elapsed_s = time.perf_counter() - start
    db.close()
    return {"insert_objects_per_s": objects / elapsed_s}


def open_file(path: str, objects: int) -> dict:
    start = time.perf_counter()
    _db, connection = open_db(path)
    connection.root()["tree"]
    return {"open_s": time.perf_counter() - start}


def cold_read(path: str, objects: int) -> dict:
    start = time.perf_counter()
    _db, connection = open_db(path)
    total = 0
    for _key, item in connection.root()["tree"].items():
        total += item.a
    elapsed_s = time.perf_counter() - start
    assert total == objects * (objects - 1) // 2
    return {"cold_read_objects_per_s": objects / elapsed_s}


def warm(path: str, objects: int) -> dict:
    """Warm reads against plain objects, and one touch per object per transaction."""
    _db, connection = open_db(path)
    tree = connection.root()["tree"]
    items = [tree[number] for number in range(min(WARM_OBJECTS, objects))]
    plain = [PlainItem(number) for number in range(len(items))]
    read_plain, read_persistent, touch = make_read_loop(), make_read_loop(), make_read_loop()
    read_persistent(items)
    plain_s, persistent_s = best_times_s([(read_plain, plain), (read_persistent, items)])
    touch_s = []
    for _ in range(TOUCH_ROUNDS):
        transaction.abort()
        start = time.perf_counter()
        touch(items)
        touch_s.append(time.perf_counter() - start)
    touch_s.sort()
    return {
        "warm_vs_plain": plain_s / persistent_s,
        "touch_once_us": touch_s[len(touch_s) // 2] / len(items) * 1e6,
    }


def small_commits(path: str, objects: int) -> dict:
    _db, connection = build(path, min(objects, 1000))
    tree = connection.root()["tree"]
    items = [tree[number] for number in range(len(tree))]
    start = time.perf_counter()
    for count in range(SMALL_COMMITS):
        items[count % len(items)].b += 1
        transaction.commit()
    return {"small_commits_per_s": SMALL_COMMITS / (time.perf_counter() - start)}


def pack(path: str, objects: int) -> dict:
    db, connection = build(path, objects)
    tree = connection.root()["tree"]
    for number in range(0, objects, 2):
        del tree[number]
        if number % COMMIT_EVERY == 0:
            transaction.commit()
    transaction.commit()
    start = time.perf_counter()
    db.pack()
    return {"pack_s": time.perf_counter() - start}


def main() -> None:
    workload, directory, objects = sys.argv[1], sys.argv[2], int(sys.argv[3])
    path = os.path.join(directory, "bench.fs")
    handler = {
        "insert": insert,
        "open": open_file,
        "cold_read": cold_read,
        "warm": warm,
        "commits_fsync": small_commits,
        "pack": pack,
    }[workload]
    result = handler(path, objects)
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


if __name__ == "__main__":
    main()
