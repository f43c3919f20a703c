"""Warm attribute reads and per-transaction touches: plain objects, durus, Durus 4.3.

Measures, in one process per implementation:

* warm reads: a function loops over 10,000 loaded persistent objects reading
  two attributes of each, inside one transaction, compared with the same loop
  over plain Python objects in the same process (speed ratio plain/persistent
  time: 1.0 means "as fast as plain objects");
* touches: each of the 10,000 objects read once per transaction, then
  ``abort()`` (microseconds per object, the cost of read tracking plus the
  transaction boundary).

The Durus 4.3 side runs this same file as a subprocess in the virtualenv
bench/venvs/peer-durus43 (made by ``nox -s bench``, or with ``--make-venv``). bench/run.py
reuses ``make_read_loop`` and ``best_times_s`` for its warm workload.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OBJECT_COUNT = 10_000
READ_PASSES = 20
REPEATS = 15
TOUCH_TRANSACTIONS = 40
VENV_DIR = Path(__file__).resolve().parent / "venvs" / "peer-durus43"
SUBPROCESS_TIMEOUT_S = 600


class PlainItem:
    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b


READ_LOOP_SOURCE = """
def read_all(items):
    total = 0
    for item in items:
        total += item.a + item.b
    return total
"""


def make_read_loop() -> Any:
    """A fresh copy of the read loop, with its own code object.

    CPython keeps its specialized attribute-lookup caches in the code object,
    so each kind of object gets its own loop; sharing one would measure cache
    thrashing between the kinds instead of the reads.
    """
    namespace: dict[str, Any] = {}
    exec(READ_LOOP_SOURCE, namespace)
    return namespace["read_all"]


read_all = make_read_loop()  # used to load the objects


def best_times_s(loops: list[tuple[Any, list[Any]]]) -> list[float]:
    """Best time of READ_PASSES calls of each ``(loop, items)``, rounds interleaved.

    Interleaving the rounds makes load from other processes hit every kind of
    object alike; the minimum over REPEATS rounds is the least disturbed run.
    """
    best = [float("inf")] * len(loops)
    for _ in range(REPEATS):
        for index, (loop, items) in enumerate(loops):
            start = time.perf_counter()
            for _ in range(READ_PASSES):
                loop(items)
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def loaded_items() -> tuple[Any, list[Any]]:
    """A fresh connection whose 10,000 items are loaded (SAVED), and the items."""
    from durus.connection import Connection
    from durus.persistent import Persistent
    from durus.storage import MemoryStorage

    class Item(Persistent):
        def __init__(self, a: int, b: int) -> None:
            self.a = a
            self.b = b

    globals()["Item"] = Item  # records name the class by module and name
    Item.__module__ = __name__
    Item.__qualname__ = "Item"
    storage = MemoryStorage()
    writer = Connection(storage)
    writer.get_root()["items"] = [Item(i, 1) for i in range(OBJECT_COUNT)]
    writer.commit()
    connection = Connection(storage, cache_size=4 * OBJECT_COUNT)
    items = connection.get_root()["items"]
    read_all(items)  # load every ghost
    connection.abort()
    return connection, items


def measure() -> dict[str, float]:
    """All figures for the durus importable in this process."""
    import durus

    plain = [PlainItem(i, 1) for i in range(OBJECT_COUNT)]
    connection, items = loaded_items()
    read_plain, read_persistent, touch_loop = make_read_loop(), make_read_loop(), make_read_loop()
    read_persistent(items)  # first read of this transaction: tracking happens here
    reads = 2 * OBJECT_COUNT * READ_PASSES
    plain_s, persistent_s = best_times_s([(read_plain, plain), (read_persistent, items)])
    connection.abort()  # every object is now unread in the new transaction
    transaction_s = []
    for _ in range(TOUCH_TRANSACTIONS):
        start = time.perf_counter()
        touch_loop(items)
        connection.abort()
        transaction_s.append(time.perf_counter() - start)
    transaction_s.sort()
    return {
        "version": durus.__version__,
        "module": durus.__file__,
        "plain_read_ns": plain_s / reads * 1e9,
        "read_ns": persistent_s / reads * 1e9,
        "read_speed_ratio": plain_s / persistent_s,
        "touch_us_per_object": transaction_s[0] / OBJECT_COUNT * 1e6,
        "touch_median_us_per_object": transaction_s[len(transaction_s) // 2] / OBJECT_COUNT * 1e6,
        "plain_touch_us_per_object": plain_s / READ_PASSES / OBJECT_COUNT * 1e6,
    }


def measure_durus43() -> dict[str, float] | None:
    python = VENV_DIR / "bin" / "python"
    if not python.exists():
        return None
    result = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--side"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        cwd="/",
    )
    if result.returncode != 0:
        print("Durus 4.3 side failed:\n" + result.stderr, file=sys.stderr)
        return None
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def make_venv() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    pip = VENV_DIR / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", "Durus==4.3"], check=True)


def print_table(ours: dict[str, float], durus43: dict[str, float] | None) -> None:
    def cell(figures: dict[str, float] | None, key: str, fmt: str) -> str:
        return format(figures[key], fmt) if figures else "n/a"

    rows = [
        ("warm read, plain object (ns/attr)", "plain_read_ns", ".1f"),
        ("warm read, persistent object (ns/attr)", "read_ns", ".1f"),
        ("warm read speed vs plain (x)", "read_speed_ratio", ".2f"),
        ("loop over plain objects (us/object)", "plain_touch_us_per_object", ".3f"),
        (
            "touch once per transaction + abort, median (us/obj)",
            "touch_median_us_per_object",
            ".3f",
        ),
        ("touch once per transaction + abort, best (us/object)", "touch_us_per_object", ".3f"),
    ]
    print(f"{OBJECT_COUNT} objects, Python {sys.version.split()[0]}")
    print(f"{'measure':<55} {'durus (ours)':>14} {'Durus 4.3':>14}")
    for label, key, fmt in rows:
        print(f"{label:<55} {cell(ours, key, fmt):>14} {cell(durus43, key, fmt):>14}")
    if durus43:
        speedup = durus43["touch_median_us_per_object"] / ours["touch_median_us_per_object"]
        print(f"{'touch cost (median), Durus 4.3 / ours (x)':<55} {speedup:>14.2f}")
        read_gain = durus43["read_ns"] / ours["read_ns"]
        print(f"{'warm read time, Durus 4.3 / ours (x)':<55} {read_gain:>14.2f}")
    else:
        print("Durus 4.3 venv not found; run with --make-venv to create it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", action="store_true", help="measure this process; print JSON")
    parser.add_argument("--make-venv", action="store_true", help="create the Durus 4.3 venv")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(measure()))
        return
    if args.make_venv and not VENV_DIR.exists():
        make_venv()
    ours = measure()
    print_table(ours, measure_durus43())


if __name__ == "__main__":
    main()
