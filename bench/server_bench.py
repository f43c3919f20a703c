"""Server throughput: small commits per second from 1, 4 and 8 client processes.

Compares this package's StorageServer on a FileStorage with fsync on (durable,
group commit) and off, with Durus 4.3's server (``durus -s``, never fsyncs),
each with its own clients (Durus 4.3's clients run under its venv's
interpreter, from a working directory outside the repository, with ``-P``).
Every writer process changes its own PersistentDict in a loop for a fixed
time; one reader process meanwhile syncs and loads one hot object every 2 ms
and reports the latency of that round trip. Prints a table; not a test,
nothing here asserts a timing.

    python bench/server_bench.py [--seconds 3] [--clients 1,4,8] [--only ours-fsync,...]

The same file is the worker: ``--role writer|reader|setup|server-ours``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEER_PYTHON = BENCH / "venvs" / "peer-durus43" / "bin" / "python"
START_DELAY_S = 1.5  # time for every worker to start and connect before the common start
READ_PAUSE_S = 0.002
WAIT_S = 30.0

CONFIGS = {
    # name: (server, client interpreter)
    "ours-fsync": ("ours-fsync", "ours"),
    "ours-nofsync": ("ours-nofsync", "ours"),
    "ours-fsync-inline": ("ours-fsync-inline", "ours"),  # group writes in the loop thread
    "durus43": ("durus43", "durus43"),
    "ours-fsync/43-clients": ("ours-fsync", "durus43"),
    "ours-nofsync/43-clients": ("ours-nofsync", "durus43"),
    "durus43/our-clients": ("durus43", "ours"),
}


# ---------------------------------------------------------------- worker roles


def connect(port: int) -> object:
    from durus.client_storage import ClientStorage

    return ClientStorage(port=port)


def role_setup(port: int, writers: int) -> None:
    from durus.connection import Connection
    from durus.persistent_dict import PersistentDict

    connection = Connection(connect(port))
    root = connection.get_root()
    for i in range(writers):
        root[f"w{i}"] = PersistentDict(n=0)
    connection.commit()


def wait_until(start_s: float) -> None:
    while time.time() < start_s:
        time.sleep(0.001)


def role_writer(port: int, index: int, start_s: float, end_s: float) -> None:
    from durus.connection import Connection
    from durus.error import ConflictError

    connection = Connection(connect(port))
    counter = connection.get_root()[f"w{index}"]
    counter["n"]
    commits = conflicts = 0
    wait_until(start_s)
    while time.time() < end_s:
        counter["n"] = counter["n"] + 1
        try:
            connection.commit()
            commits += 1
        except ConflictError:
            connection.abort()
            conflicts += 1
    print(json.dumps({"commits": commits, "conflicts": conflicts, "n": counter["n"]}))


def role_reader(port: int, start_s: float, end_s: float) -> None:
    from durus.connection import Connection
    from durus.error import ReadConflictError

    storage = connect(port)
    hot_oid = Connection(storage).get_root()["w0"]._p_oid
    latencies_s = []
    wait_until(start_s)
    while time.time() < end_s:
        began = time.perf_counter()
        while True:  # a commit may land between the sync and the load: sync again
            storage.sync()  # type: ignore[attr-defined]
            try:
                storage.load(hot_oid)  # type: ignore[attr-defined]
                break
            except ReadConflictError:
                pass
        latencies_s.append(time.perf_counter() - began)
        time.sleep(READ_PAUSE_S)
    print(json.dumps({"latencies_s": latencies_s}))


def role_server_ours(path: str, port: int, kind: str) -> None:
    from durus.file_storage import FileStorage
    from durus.storage_server import StorageServer

    server = StorageServer(FileStorage(path, fsync=kind != "ours-nofsync"), port=port)
    if kind == "ours-fsync-inline":
        server.core.write_groups_in_background = False
    profile_path = os.environ.get("SERVER_BENCH_PROFILE")
    if profile_path:  # e.g. SERVER_BENCH_PROFILE=/tmp/server.prof, then pstats
        import cProfile

        cProfile.runctx("server.serve_until_quit()", globals(), locals(), profile_path)
    else:
        server.serve_until_quit()
    core = server.core
    print(json.dumps({"ends": core.groups_flushed, "commits": core.group_commits_flushed}))


# ---------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def interpreter(kind: str) -> list[str]:
    return [str(PEER_PYTHON) if kind == "durus43" else sys.executable, "-P"]


def worker(kind: str, *args: object) -> list[str]:
    return [*interpreter(kind), str(Path(__file__).resolve()), *map(str, args)]


def start_server(kind: str, path: str, port: int, cwd: str) -> subprocess.Popen[bytes]:
    if kind == "durus43":
        command = [*interpreter(kind), "-m", "durus", "-s", "--file", path, "--port", str(port)]
    else:
        command = worker("ours", "--role", "server-ours", path, port, kind)
    log = open(os.path.join(cwd, "server.log"), "wb")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=log)
    log.close()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")


def stop_server(process: subprocess.Popen[bytes], port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"Q")
    out, _ = process.communicate(timeout=WAIT_S)
    lines = out.decode().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_json(commands: list[list[str]], cwd: str) -> list[dict]:
    processes = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE) for c in commands]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=WAIT_S * 4)
        if process.returncode != 0:
            raise RuntimeError(f"worker failed ({process.returncode}): {process.args!r}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def measure(config: str, writers: int, seconds: float, with_reader: bool) -> dict:
    server_kind, client_kind = CONFIGS[config]
    cwd = tempfile.mkdtemp(prefix="server_bench_")  # outside the repository
    port = free_port()
    try:
        server = start_server(server_kind, os.path.join(cwd, "bench.durus"), port, cwd)
        try:
            subprocess.run(
                worker(client_kind, "--role", "setup", port, writers), cwd=cwd, check=True
            )
            start_s = time.time() + START_DELAY_S
            end_s = start_s + seconds
            commands = [
                worker(client_kind, "--role", "writer", port, i, start_s, end_s)
                for i in range(writers)
            ]
            if with_reader:
                commands.append(worker(client_kind, "--role", "reader", port, start_s, end_s))
            results = run_json(commands, cwd)
            written = results[:writers]
            read = results[writers] if with_reader else {"latencies_s": []}
        finally:
            groups = stop_server(server, port)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    commits = sum(w["commits"] for w in written)
    latencies_s = read["latencies_s"]
    ends = groups.get("ends")
    return {
        "config": config,
        "clients": writers,
        "commits_per_s": commits / seconds,
        "conflicts": sum(w["conflicts"] for w in written),
        "commits_per_end": (groups["commits"] / ends) if ends else None,
        "read_p50_ms": percentile(latencies_s, 0.50) * 1e3,
        "read_p99_ms": percentile(latencies_s, 0.99) * 1e3,
        "reads": len(latencies_s),
    }


def print_table(rows: list[dict]) -> None:
    header = f"{'server/clients':<24}{'clients':>8}{'commits/s':>11}{'commits/end':>13}"
    print(header + f"{'read p50 ms':>13}{'read p99 ms':>13}{'conflicts':>11}")
    for row in rows:
        per_end = row["commits_per_end"]
        per_end_text = f"{per_end:.1f}" if per_end is not None else "-"
        print(
            f"{row['config']:<24}{row['clients']:>8}{row['commits_per_s']:>11.0f}"
            f"{per_end_text:>13}{row['read_p50_ms']:>13.2f}{row['read_p99_ms']:>13.2f}"
            f"{row['conflicts']:>11}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--only", default="ours-fsync,ours-nofsync,durus43")
    parser.add_argument("--rounds", type=int, default=1, help="median of this many runs")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--no-reader", action="store_true", help="writers only")
    options = parser.parse_args()
    configs = options.only.split(",")
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    if any(CONFIGS[c][0] == "durus43" or CONFIGS[c][1] == "durus43" for c in configs):
        if not PEER_PYTHON.exists():
            parser.error(f"{PEER_PYTHON} is missing (nox -s bench makes it)")
    rows = []
    for writers in (int(n) for n in options.clients.split(",")):
        for config in configs:
            runs = [
                measure(config, writers, options.seconds, not options.no_reader)
                for _ in range(options.rounds)
            ]
            best = statistics.median_low([r["commits_per_s"] for r in runs])
            rows.append(next(r for r in runs if r["commits_per_s"] == best))
    print_table(rows)
    if options.json:
        Path(options.json).write_text(json.dumps(rows, indent=1))


def worker_main(argv: list[str]) -> None:
    role, *args = argv
    if role == "setup":
        role_setup(int(args[0]), int(args[1]))
    elif role == "writer":
        role_writer(int(args[0]), int(args[1]), float(args[2]), float(args[3]))
    elif role == "reader":
        role_reader(int(args[0]), float(args[1]), float(args[2]))
    elif role == "server-ours":
        role_server_ours(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--role"]:
        worker_main(sys.argv[2:])
    else:
        main()
