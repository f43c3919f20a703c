"""The server workload's client roles against ZEO (ZODB's server), for comparison.

Run by bench/server_bench.py under the venv holding ZODB and ZEO as
``python -P worker_zeo.py --role setup|writer|reader ARGS`` from a working
directory outside the repository; the server itself is ZEO's own ``runzeo`` on a
FileStorage (which fsyncs once per transaction, in ``tpc_finish``). The roles
do what server_bench.py's roles do against a Durus server: the setup gives
every writer its own mapping, each writer changes its own mapping in a loop for
a fixed time, and the reader syncs and loads the hot object every 2 ms. Prints
one JSON object per role. Never imports ``durus``: it runs under a peer's
interpreter, and the figures must be ZEO's alone.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import transaction
import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage
from ZODB.POSException import ConflictError

READ_PAUSE_S = 0.002  # the same pause as server_bench.py's reader
CONNECT_TIMEOUT_S = 30.0
MAX_WRITERS = 1000

# ZEO's client cache logs a warning for every commit whose invalidation echoes a
# tid it already holds; written to stderr unconfigured, that is a write per commit
# that a deployed client (logging to a file, or above WARNING) would not pay.
logging.getLogger("ZEO.cache").setLevel(logging.ERROR)


def connect(port: int, server_sync: bool = False) -> ClientStorage:
    """A client storage on the local server; ``server_sync`` makes ``sync()`` a round trip."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    storage = ClientStorage(
        ("127.0.0.1", port), wait_timeout=CONNECT_TIMEOUT_S, server_sync=server_sync
    )
    assert storage.is_connected(), "ClientStorage returned before connecting"
    return storage


def wait_until(start_s: float) -> None:
    while time.time() < start_s:
        time.sleep(0.001)


def role_setup(port: int, writers: int) -> None:
    """Root holds ``w0`` .. ``w{writers-1}``, one mapping per writer, each with n = 0."""
    if not 0 < writers <= MAX_WRITERS:
        raise ValueError(f"writers must be 1..{MAX_WRITERS}, not {writers}")
    db = ZODB.DB(connect(port))
    connection = db.open()
    root = connection.root()
    for index in range(writers):
        root[f"w{index}"] = PersistentMapping(n=0)
    transaction.commit()
    assert len([key for key in root if key.startswith("w")]) >= writers
    db.close()


def role_writer(port: int, index: int, start_s: float, end_s: float) -> None:
    """Change this writer's own mapping and commit, until ``end_s``; print the counts."""
    if end_s <= start_s:
        raise ValueError(f"end {end_s} is not after start {start_s}")
    db = ZODB.DB(connect(port))
    connection = db.open()
    counter = connection.root()[f"w{index}"]
    first_n = counter["n"]
    commits = conflicts = 0
    wait_until(start_s)
    while time.time() < end_s:
        counter["n"] = counter["n"] + 1
        try:
            transaction.commit()
            commits += 1
        except ConflictError:
            transaction.abort()
            conflicts += 1
    assert counter["n"] == first_n + commits, "a commit was counted but not kept"
    print(json.dumps({"commits": commits, "conflicts": conflicts, "n": counter["n"]}))
    db.close()


def role_reader(port: int, start_s: float, end_s: float) -> None:
    """Every 2 ms: a sync round trip, then a load of ``w0``; print the latencies.

    The load is served by ZEO's client cache when no commit invalidated ``w0``
    since the last load; writer 0 changes it all the time, so most loads go to
    the server, as every load does in the Durus reader.
    """
    if end_s <= start_s:
        raise ValueError(f"end {end_s} is not after start {start_s}")
    storage = connect(port, server_sync=True)
    db = ZODB.DB(storage)
    hot_oid = db.open().root()["w0"]._p_oid
    latencies_s = []
    wait_until(start_s)
    while time.time() < end_s:
        began = time.perf_counter()
        storage.sync()
        storage.load(hot_oid)
        latencies_s.append(time.perf_counter() - began)
        time.sleep(READ_PAUSE_S)
    assert all(latency >= 0 for latency in latencies_s)
    print(json.dumps({"latencies_s": latencies_s}))
    db.close()


def main(argv: list[str]) -> None:
    if argv[:1] != ["--role"] or len(argv) < 2:
        raise SystemExit("usage: worker_zeo.py --role setup|writer|reader ARGS")
    role, args = argv[1], argv[2:]
    if role == "setup":
        role_setup(int(args[0]), int(args[1]))
    elif role == "writer":
        role_writer(int(args[0]), int(args[1]), float(args[2]), float(args[3]))
    elif role == "reader":
        role_reader(int(args[0]), float(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
