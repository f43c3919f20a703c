"""Small durable commits by 8 clients: PostgresStorage versus the Durus file server.

Run on its own: ``python bench/postgres_bench.py [--clients 8] [--commits 200]``.
Starts a throwaway PostgreSQL server (fsync and synchronous_commit on, as a
real deployment) with tests/support/postgres.py, and ``python -m durus -s``
over a FileStorage file (fsync on, its default) on a Unix socket; then, for
each, runs ``--clients`` client processes that each commit one small change to
their own object ``--commits`` times (no conflicts), and prints commits/s and
per-commit latency percentiles. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SERVER_START_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 300.0


def open_storage(kind: str, target: str) -> Any:
    if kind == "postgres":
        from durus.postgres_storage import PostgresStorage

        return PostgresStorage(target)
    from durus.client_storage import ClientStorage

    return ClientStorage(address=target, timeout_s=60)


def client(kind: str, target: str, index: int, commits: int, start_at: float, out: Any) -> None:
    """One client process: ``commits`` commits of its own counter; latencies to ``out``."""
    from durus.connection import Connection

    try:
        connection = Connection(open_storage(kind, target))
        counter = connection.root[f"counter{index}"]  # this client's own object: no conflicts
        latencies_s = []
        while time.time() < start_at:
            time.sleep(0.001)
        for number in range(commits):
            counter["n"] = number
            begin_s = time.perf_counter()
            connection.commit()
            latencies_s.append(time.perf_counter() - begin_s)
        connection.storage.close()
        out.put(latencies_s)
    except BaseException as error:  # the parent reports it
        out.put(repr(error))


def prepare(kind: str, target: str, clients: int) -> None:
    """Create the root with one entry per client, so the runs start from the same state."""
    from durus.connection import Connection
    from durus.persistent_dict import PersistentDict

    connection = Connection(open_storage(kind, target))
    for index in range(clients):
        connection.root[f"counter{index}"] = PersistentDict()
    connection.commit()
    connection.storage.close()


def run(kind: str, target: str, clients: int, commits: int) -> dict[str, float]:
    prepare(kind, target, clients)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start_at = time.time() + 2.0  # every process connected before the clock starts
    processes = [
        context.Process(target=client, args=(kind, target, i, commits, start_at, out))
        for i in range(clients)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=CLIENT_TIMEOUT_S) for _ in processes]
    elapsed_s = time.time() - start_at
    for process in processes:
        process.join(timeout=CLIENT_TIMEOUT_S)
    failures = [result for result in results if isinstance(result, str)]
    if failures:
        raise RuntimeError(f"{kind}: a client failed: {failures[0]}")
    latencies_ms = sorted(1000 * s for result in results for s in result)
    return {
        "commits_per_s": len(latencies_ms) / elapsed_s,
        "median_ms": statistics.median(latencies_ms),
        "p99_ms": latencies_ms[int(0.99 * (len(latencies_ms) - 1))],
    }


def start_durus_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    address = str(directory / "durus.sock")
    command = [sys.executable, "-m", "durus", "-s", "--file", str(directory / "bench.durus")]
    command += ["--address", address, "--logginglevel", "40"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline_s = time.monotonic() + SERVER_START_TIMEOUT_S
    while not os.path.exists(address):
        if time.monotonic() > deadline_s or process.poll() is not None:
            process.kill()
            raise RuntimeError("durus -s did not start")
        time.sleep(0.05)
    return process, address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--commits", type=int, default=200, help="commits per client")
    arguments = parser.parse_args()
    from tests.support.postgres import start_server

    signal.signal(signal.SIGTERM, lambda *_args: sys.exit(143))  # so the servers stop
    postgres = start_server(durable=True)
    directory = Path(tempfile.mkdtemp(prefix="durus-bench-"))
    durus_server, address = start_durus_server(directory)
    try:
        figures = {
            "durus -s (FileStorage, fsync)": run("server", address, **vars(arguments)),
            "PostgresStorage (fsync)": run("postgres", postgres.dsn, **vars(arguments)),
        }
    finally:
        durus_server.terminate()
        durus_server.wait(timeout=10)
        postgres.stop()
    print(f"{arguments.clients} clients x {arguments.commits} small commits each")
    print(f"{'backend':32} {'commits/s':>10} {'median ms':>10} {'p99 ms':>10}")
    for name, row in figures.items():
        print(
            f"{name:32} {row['commits_per_s']:10.0f} {row['median_ms']:10.2f} {row['p99_ms']:10.2f}"
        )


if __name__ == "__main__":
    main()
